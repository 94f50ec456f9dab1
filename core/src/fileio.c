/* fileio.c - opening inputs, writing whole buffers (see fileio.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/uio.h>

#include "fileio.h"
#include "sluice.h"

int sl_open_input(const char *path)
{
	for (;;) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);

		if (fd >= 0)
			return fd;
		if (errno != EINTR || sl_signal_pending())
			return -errno;
	}
}

int sl_write_iov_all(int fd, struct iovec *iov, int cnt, size_t *done)
{
	*done = 0;
	while (cnt > 0) {
		ssize_t rc;

		if (!iov->iov_len) {
			iov++, cnt--;
			continue;
		}
		rc = writev(fd, iov, cnt);
		if (rc < 0) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			poll(&pfd, 1, -1);
			continue;
		}
		if (rc == 0)
			return -EIO;
		*done += (size_t)rc;
		while (cnt > 0 && (size_t)rc >= iov->iov_len) {
			rc -= (ssize_t)iov->iov_len;
			iov++, cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + rc;
			iov->iov_len -= (size_t)rc;
		}
	}
	return 0;
}
