/*
 * options: every ebbd setting, one table for the command line and the
 * config file (/etc/ebb/ebbd.conf, read by config.c).
 *
 * Each setting has one row: its flag (--budget), its place in the config
 * file ([memory] budget), whether it takes a value, and one parser that
 * checks the text and stores it.  The flag parser and the config reader
 * both call options_set(), so a value means the same and is refused with
 * the same words wherever it comes from, and no setting can exist in one
 * place but not the other (tests/unit/test_config.c walks the table).
 *
 * Ownership: struct ebbd_options owns its strings (copied in
 * options_set); options_free() releases them.  Not thread-safe: it is
 * filled before the daemon starts.
 */
#ifndef EBB_OPTIONS_H
#define EBB_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pagecomp_ops;

struct ebbd_options {
	char *socket;			/* control socket path */
	char *run_dir;			/* per-guest sockets */
	char *log_dir;			/* guest console logs */
	char *state_dir;		/* swap backing files */
	int fd_hold;			/* enum fdhold_mode (fdhold.h) */
	char *kernel;			/* UML guest kernel */
	char *initrd;			/* guest initramfs */
	char *ram_dir;			/* guests' RAM files (tmpfs) */
	bool ram_hugepages;		/* a huge-page tmpfs per guest */
	uint64_t keep_wait_ms;		/* --block-wait, in ms */
	uint64_t budget_bytes;		/* 0: from the host */
	const struct pagecomp_ops *comp; /* the tmem store's compressor */
	bool tmem_hugepages;		/* the store's arena on huge pages */
	uint64_t discard_below_bytes;	/* 0: no pressure discarding */
	uint64_t evict_pages_per_sec;	/* 0: no test evictor */
	unsigned metrics_port;		/* 0: no metrics endpoint */
	bool policy_on;			/* the host memory policy runs */
	uint64_t policy_low_bytes;	/* 0: from the budget */
	uint64_t policy_high_bytes;	/* 0: twice the low watermark */
	uint64_t policy_trim_bytes;	/* 0: no idle trim */
};

/* One setting (see the table in options.c). */
struct option_def {
	const char *flag;	/* long option name, without "--" */
	const char *section;	/* config file section */
	const char *key;	/* config file key */
	bool has_value;		/* false: a switch; the file takes a boolean */
	const char *arg;	/* the value's name in help text, or NULL */
	const char *help;	/* one line for --help and the man page */
	int (*set)(struct ebbd_options *o, const char *value, char *why,
		   size_t why_len);
};

extern const struct option_def options_table[];
extern const unsigned options_count;

/* The defaults: the paths ebbd uses when neither the file nor a flag sets
 * them (under systemd, the unit's RUNTIME_DIRECTORY, STATE_DIRECTORY and
 * LOGS_DIRECTORY when set).  @kernel and @initrd are where ebb's guest kernel and image were
 * found (options_find_guest()).  0 or -ENOMEM. */
int options_init(struct ebbd_options *o, const char *kernel,
		 const char *initrd);
void options_free(struct ebbd_options *o);

/* The row for a flag name, or for a config (section, key); NULL if none. */
const struct option_def *options_by_flag(const char *flag);
const struct option_def *options_by_key(const char *section, const char *key);

/*
 * Set @def's setting from @value (a switch from the command line passes
 * NULL, meaning true).  Returns 0, or -EINVAL with @why (a sentence
 * without the setting's name, e.g. "not a size: '12Q'") filled in, or
 * -ENOMEM.
 */
int options_set(struct ebbd_options *o, const struct option_def *def,
		const char *value, char *why, size_t why_len);

/*
 * Where ebb's guest kernel and image are: next to an installed ebbd
 * (@exe_dir/../lib/ebb/, so an install under DESTDIR or any prefix works
 * where it lands), else @build_kernel and @build_initrd (the build tree
 * ebbd was built in).  Fills @kernel and @initrd (each @len bytes).
 * 0, or -ENOENT when neither place has both (the build-tree paths are
 * then filled in, for the error message at start).
 */
int options_find_guest(const char *exe_dir, const char *build_kernel,
		       const char *build_initrd, char *kernel, char *initrd,
		       size_t len);

/* Print the effective settings as a config file would set them. */
void options_print(const struct ebbd_options *o, void *file);

#endif
