/* fileio.h - writing whole buffers to files, pipes and sockets (internal). */
#ifndef SLUICE_FILEIO_H
#define SLUICE_FILEIO_H

#include <stddef.h>
#include <sys/uio.h>

/* Writes every byte of iov[0..cnt), across short writes; *done says how
 * many went out, also on error. EINTR is retried and EAGAIN (a full
 * non-blocking pipe or socket) waited out: neither loses anything. The
 * iov array is consumed. Returns 0 or a negative errno. */
int sl_write_iov_all(int fd, struct iovec *iov, int cnt, size_t *done);

#endif
