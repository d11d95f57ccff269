/*
 * size: human sizes for the CLI and the control protocol.
 *
 * Accepted: a decimal integer with an optional suffix K, M, G or T (also
 * KiB/MiB/GiB/TiB, KB/MB/GB/TB, any case), all binary (1K = 1024).  No
 * suffix means bytes.  Fractions ("1.5G") are accepted and rounded down to
 * a whole byte.  Overflow past UINT64_MAX, negative numbers, trailing junk
 * and empty strings are rejected.
 */
#ifndef EBB_SIZE_H
#define EBB_SIZE_H

#include <stddef.h>
#include <stdint.h>

/* Parse @s into *@bytes.  Returns 0 or -EINVAL (junk) / -ERANGE (overflow). */
int size_parse(const char *s, uint64_t *bytes);

/* Format @bytes as e.g. "256.0M" / "1.50G" / "512K" / "100B" into @buf.
 * Returns @buf. */
char *size_format(uint64_t bytes, char *buf, size_t len);

#endif
