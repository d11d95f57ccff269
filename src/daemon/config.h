/*
 * config: ebbd's configuration file, INI read with inih (libinih).
 *
 *   [daemon]   socket, run-dir, log-dir, state-dir
 *   [guests]   kernel, initrd, ram-dir, ram-hugepages, block-wait
 *   [memory]   budget, discard-below, test-evictor
 *   [tmem]     compressor
 *   [metrics]  port
 *
 * Every key is a row of options_table (options.h) and means what the
 * flag of the same row means; flags given on the command line are
 * applied after the file, so they win.  The file is all or nothing: an
 * unknown section or key, a bad value or a line that is not INI stops
 * ebbd's start with "FILE:LINE: ..." naming the key.
 */
#ifndef EBB_CONFIG_H
#define EBB_CONFIG_H

#include <stddef.h>

#include "options.h"

/* Where ebbd looks when no --config is given (sysconfdir/ebb/ebbd.conf). */
#ifndef EBB_DEFAULT_CONFIG
#define EBB_DEFAULT_CONFIG "/etc/ebb/ebbd.conf"
#endif

/*
 * Read @path into @o.  Returns 0; -ENOENT if the file does not exist
 * (@err says so; the caller decides whether a missing file matters);
 * -EINVAL with @err "PATH:LINE: ..." for the first error in the file
 * (settings before it are applied, so the caller must not start); or
 * -ENOMEM / another -errno when the file cannot be read.
 */
int config_load(const char *path, struct ebbd_options *o, char *err,
		size_t err_len);

/* The same from a string (for tests); @name stands for the file name. */
int config_load_string(const char *text, const char *name,
		       struct ebbd_options *o, char *err, size_t err_len);

#endif
