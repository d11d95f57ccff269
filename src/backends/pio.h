/*
 * pio: whole-range positional file I/O for the block backends.
 *
 * pread/pwrite may transfer less than asked (signals, large requests);
 * the backends need all of a range or an error.  A zero-byte transfer
 * inside a range the caller knows exists means the file shrank under us
 * (someone outside ebb truncated it): that is -EIO, not a retry.
 */
#ifndef EBB_PIO_H
#define EBB_PIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Transfer all @len bytes between @buf and @fd at @off (pwrite if @write,
 * else pread).  *@done gets the bytes transferred, also on failure.
 * Returns 0, -EIO (end of file inside the range) or -errno. */
int pio_full(bool write, int fd, uint8_t *buf, size_t len, uint64_t off,
	     size_t *done);

#endif
