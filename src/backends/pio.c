/*
 * pio: whole-range pread/pwrite.  See pio.h.
 */
#include "pio.h"

#include <errno.h>
#include <unistd.h>

int pio_full(bool write, int fd, uint8_t *buf, size_t len, uint64_t off,
	     size_t *done)
{
	ssize_t n;

	*done = 0;
	while (*done < len) {
		if (write)
			n = pwrite(fd, buf + *done, len - *done,
				   (off_t)(off + *done));
		else
			n = pread(fd, buf + *done, len - *done,
				  (off_t)(off + *done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		*done += (size_t)n;
	}
	return 0;
}
