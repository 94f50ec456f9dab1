/* fileio.h - opening inputs, writing whole buffers to files, pipes and
 * sockets (internal). */
#ifndef SLUICE_FILEIO_H
#define SLUICE_FILEIO_H

#include <stddef.h>
#include <sys/uio.h>

/* Writes every byte of iov[0..cnt), across short writes; *done says how
 * many went out, also on error. EINTR is retried and EAGAIN (a full
 * non-blocking pipe or socket) waited out: neither loses anything. The
 * iov array is consumed. Returns 0 or a negative errno. */
int sl_write_iov_all(int fd, struct iovec *iov, int cnt, size_t *done);

/* open(path, O_RDONLY | O_CLOEXEC), waiting as long as it takes: a FIFO's
 * waits for its writer, and a signal meanwhile (a reload) is no reason to
 * give up, but a stop is (sl_signal_pending(): -EINTR, which the run
 * reports as a stop before the input opened). The fd or a negative errno. */
int sl_open_input(const char *path);

#endif
