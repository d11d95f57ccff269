/*
 * tool: the few helpers the static guest tools (memhog, pagecheck) share.
 *
 * These tools run inside the guest's busybox initramfs, linked statically
 * and on their own: they deliberately do not link libebb, so this file
 * carries its own small size parser instead of src/core/size.c.
 */
#ifndef EBB_GUEST_TOOL_H
#define EBB_GUEST_TOOL_H

#include <stdint.h>

/*
 * Parse a size: a decimal integer with an optional binary suffix K, M, G or
 * T (any case, optionally followed by "B" or "iB"; 1K = 1024).  No suffix
 * means bytes.  Returns 0, or -EINVAL for junk / -ERANGE for overflow.
 */
int tool_parse_size(const char *s, uint64_t *bytes);

/* Parse an unsigned integer (decimal, or hex with 0x): 0 or -EINVAL/-ERANGE. */
int tool_parse_u64(const char *s, uint64_t *out);

/* Monotonic clock in nanoseconds. */
uint64_t tool_now_ns(void);

/* Sleep @seconds, resuming after signal interruptions. */
void tool_sleep_s(uint64_t seconds);

#endif
