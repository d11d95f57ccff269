/*
 * guest: one UML guest launched and served by ebbd.
 *
 * Owns the guest's UML process (its own session, so the whole process
 * group can be killed), the console pipe the guest agent reads commands
 * from, the console log file, the per-guest run directory with its
 * vhost-user sockets, and the devices behind those sockets (the balloon).
 *
 * States (every move in guest_set_state(), checked against its table
 * allowed[][] in guest.c; this diagram is that table):
 *
 *   starting --a driver is ready--> running --process exited--> stopped
 *     |   |                           |                            ^
 *     |   +--stop asked--> stopping <-+ stop asked                 |
 *     |                       |                                    |
 *     |                       +--process exited (external: at once)+
 *     +--process exited before it came up--> failed
 *
 *   stopped and failed are final.
 *
 * An external guest has no process: ebbd only serves its device sockets
 * to whatever VMM connects, and stopping it just ends that service.  Its
 * VMM may connect no balloon (QEMU has no vhost-user balloon): it runs
 * once any of its drivers is ready, and its RAM is measured through a
 * disk's memory table.
 *
 * The UML command line is built here: the kernel connects to its device
 * sockets while booting, so they listen before the process starts.
 *
 * Threading: loop thread only.
 */
#ifndef EBB_GUEST_H
#define EBB_GUEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "balloon.h"
#include "blk.h"
#include "blkback.h"
#include "ebbdev.h"
#include "loop.h"

#define GUEST_NAME_MAX 32	/* bytes including the NUL */
#define GUEST_MAX_DISKS 4	/* virtio-blk devices per guest */
#define GUEST_ROLE_MAX 16	/* "swap", "disk": bytes including the NUL */

enum guest_state {
	GUEST_STARTING,
	GUEST_RUNNING,
	GUEST_STOPPING,
	GUEST_STOPPED,
	GUEST_FAILED,
	GUEST_NSTATES,
};

/* Daemon-wide settings every guest launch uses. */
struct guest_env {
	struct loop *loop;
	const char *run_dir;	/* sockets go to <run_dir>/<name>/ */
	const char *log_dir;	/* console logs go to <log_dir>/<name>.log */
	const char *kernel;	/* UML kernel binary */
	const char *initrd;	/* initramfs image */
	const char *ram_dir;	/* TMPDIR for the guest's RAM file */
	bool ram_hugepages;	/* a huge-page tmpfs per guest instead
				 * (hugeram.h), blocks kept whole */
	uint64_t keep_wait_ms;	/* how long a partly freed block waits */
	struct fdhold *hold;	/* where device fds are held across ebbd's
				 * death (fdhold.h); NULL: nowhere */
};

/* A block device for the guest: its storage and how the device shows it.
 * The guest sees them as /dev/vda, vdb, ... in this order. */
struct guest_disk {
	char role[GUEST_ROLE_MAX];	/* socket <role>.sock, log tag, and
					 * the device name in events */
	struct blkback back;		/* guest_start owns it, even on error */
	struct blk_params params;
};

struct guest_config {
	char name[GUEST_NAME_MAX];
	uint64_t mem_bytes;	/* configured memory */
	const char *cmdline;	/* extra kernel parameters, may be NULL */
	bool no_reporting;	/* do not offer free page reporting */
	bool external;		/* no process: another VMM connects to the
				 * device sockets (and owns the guest) */
	bool page_states;	/* serve the ebb device (page hinting); a
				 * kernel without its driver leaves it
				 * unbound and nothing changes */
	struct guest_disk disks[GUEST_MAX_DISKS];
	unsigned ndisks;
	const char *cgroup_procs;	/* the UML process joins this cgroup
					 * (its cgroup.procs) before exec;
					 * NULL: stays in ebbd's */
};

struct guest;
struct fdhold;

/* Things the daemon wants to hear about; any member may be NULL. */
struct guest_events {
	void (*state_changed)(void *opaque, struct guest *g,
			      enum guest_state old);
	void (*balloon_reached)(void *opaque, struct guest *g,
				uint64_t actual_bytes);
	/* Memory went back to the host: re-measure residency. */
	void (*memory_returned)(void *opaque, struct guest *g);
	void (*device_failed)(void *opaque, struct guest *g,
			      const char *device, const char *why);
	/* The guest's RAM file has arrived (guest_ram_file() works now).
	 * The guest kernel is in its device probe; guest_hold_boot() keeps it
	 * there. */
	void (*ram_ready)(void *opaque, struct guest *g);
};

struct guest_info {
	char name[GUEST_NAME_MAX];
	enum guest_state state;
	pid_t pid;
	int exit_status;	/* wait status once stopped, else 0 */
	uint64_t mem_bytes;
	uint64_t resident_bytes;	/* RAM file's allocated bytes, 0 unknown */
	bool ram_hugepages;	/* RAM on its own huge-page tmpfs */
	uint64_t huge_mapped_bytes;	/* RAM the UML process maps with 2 MiB
					 * pages (smaps ShmemPmdMapped) */
	uint64_t intact_blocks;	/* 2 MiB blocks of the RAM file fully
				 * allocated */
	uint64_t shattered_blocks;	/* partly allocated ones */
	struct balloon_info balloon;
	bool has_ebb;		/* the ebb device is served */
	struct ebbdev_info ebb;	/* its state and counters, if has_ebb */
};

/* Is @name usable as a guest name (and as a file name)? */
bool guest_name_valid(const char *name);
/* A memory size UML can boot with: whole MiB (its mem= unit), at least
 * 32 MiB. */
bool guest_mem_valid(uint64_t bytes);
const char *guest_state_name(enum guest_state s);

/*
 * Create the run directory and sockets, then fork and exec the UML kernel.
 * Returns 0, or -errno (nothing is left behind on failure).  The disks'
 * backends belong to the guest from here on, also when it fails: they are
 * destroyed with their devices once the guest has stopped.
 */
int guest_start(const struct guest_env *env, const struct guest_config *cfg,
		const struct guest_events *ev, void *opaque,
		struct guest **out);
/*
 * What a restarted ebbd adopts a running guest with (issue 15): its
 * process (already checked to be the one recorded) and the device fds
 * held across the earlier ebbd's death.
 */
struct guest_adoption {
	pid_t pid;
	/* The held fd named @hold_name ("guest/<name>/<device>/<kind>"),
	 * a copy for the guest to own, or -1. */
	int (*take)(void *opaque, const char *hold_name);
	void *opaque;
	char why[400];		/* why it failed */
};

/*
 * Adopt a guest an earlier ebbd launched with @cfg (its disks' backends
 * already re-attached): serve its devices from the sessions they recorded
 * (vu_dev_adopt), reopen its console, watch its process.  Nothing of the
 * guest is touched on failure (-errno, reason in @a->why): not its
 * process, not the held fds, not the disks' backends (unlike guest_start,
 * they stay the caller's, whose to let go of without destroying their
 * contents).  On success the backends are the guest's, it is running (or
 * starting, if no driver had come up) and its devices are watched again;
 * guest_resume() makes them serve (so that a daemon adopting many guests
 * can adopt them all first).
 */
int guest_adopt(const struct guest_env *env, const struct guest_config *cfg,
		struct guest_adoption *a, const struct guest_events *ev,
		void *opaque, struct guest **out);
/* Serve an adopted guest's devices again (vu_dev_resume: the request left
 * unanswered, the requests left in flight, one pass over every ring). */
void guest_resume(struct guest *g);

/*
 * Ask the guest to power off (end of console input); after @grace_ms it is
 * killed.  @grace_ms 0 kills it at once.  Returns 0 or -errno.
 */
int guest_stop(struct guest *g, uint64_t grace_ms);
/* Free a stopped or failed guest (kills it first if it still runs). */
void guest_free(struct guest *g);

/* Put every device fd of the guest in env->hold again (the holder was
 * replaced). */
void guest_hold_again(struct guest *g);

/* Send one shell command line to the guest agent.  -EINVAL if it contains
 * a newline, -EPIPE if the guest no longer reads its console. */
int guest_exec(struct guest *g, const char *command);
/* Set the balloon so the guest keeps @target_bytes of its memory. */
int guest_balloon(struct guest *g, uint64_t target_bytes);
/* Refresh and return the resident size of the RAM file. */
int guest_refresh_resident(struct guest *g, uint64_t *out);
/* What is known of an adopted guest's resident size before its first
 * measurement (the claims record's): reported until then, not 0. */
void guest_seed_resident(struct guest *g, uint64_t bytes);
void guest_get_info(const struct guest *g, struct guest_info *out);
const char *guest_name(const struct guest *g);
enum guest_state guest_get_state(const struct guest *g);
/* The guest's RAM file as the balloon's memory table gave it: the fd
 * (owned by the device; dup it to keep it), the file offset where guest
 * memory starts and its size.  -ENOTCONN before the table arrives. */
int guest_ram_file(struct guest *g, int *fd, uint64_t *off, uint64_t *size);
/* From ram_ready only: hold the guest's boot (vu_dev_hold on the balloon)
 * until guest_release_boot(@token); a failed @result fails the guest's
 * balloon probe, so call it with 0 unless the guest is being killed. */
int guest_hold_boot(struct guest *g, uint64_t *token);
void guest_release_boot(struct guest *g, uint64_t token, int result);

/* Block device @i (0 <= i < number of disks): its role, socket and
 * counters.  -ENOENT past the last one or once the guest has stopped (its
 * devices are gone then). */
int guest_disk_info(const struct guest *g, unsigned i, const char **role,
		    const char **sock, struct blk_info *info);

/*
 * Page hinting through the ebb device: discard up to @max_pages pages in
 * @what per @how (ebbdev_discard), or one random evictor step
 * (ebbdev_evict).  -ENODEV if the guest has no ebb device or its driver
 * registered no table.  Memory given back triggers memory_returned.
 */
int guest_discard(struct guest *g, unsigned what, unsigned how,
		  uint64_t max_pages, struct pagestate_pass *out);
int guest_evict(struct guest *g, unsigned what, uint64_t max_pages,
		struct pagestate_pass *out);
/* Pages per state (counts[PS_STABLE .. PS_OTHER]); -ENODEV as above. */
int guest_page_states(const struct guest *g, uint64_t counts[PS_NSTATES + 1]);
/* The ebb device's socket path, NULL if the guest has none. */
const char *guest_ebb_socket(const struct guest *g);

/* The balloon device's vhost-user socket path. */
const char *guest_balloon_socket(const struct guest *g);
/* The balloon device, e.g. for its statistics. */
struct balloon *guest_balloon_dev(struct guest *g);

#endif
