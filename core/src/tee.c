/* tee.c - one stream (stdin, a FIFO) read by several worker processes.
 *
 * Workers that share an input each read all of it and keep their share of
 * the flows (sl_config.shared_input). A file each can open; a stream can
 * be read once, so the parent reads it and copies it into a pipe per
 * worker, from a thread of its own while it waits for the workers. The
 * copy paces the stream: a worker that reads slowly holds the others back
 * rather than lose data. A worker that is gone (its pipe closed) is
 * skipped; the copy ends at the end of the stream, on a read error, on
 * sl_tee_free(), or when no worker reads any more.
 *
 * Order of use: sl_tee_new() before forking; in each child
 * sl_tee_child() (the child's stdin becomes its pipe); in the parent,
 * once every child is forked, sl_tee_start(); at the end sl_tee_free().
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "sluice.h"
#include "thread.h"

enum { TEE_BUF = 1 << 20, TEE_PIPE = 1 << 20, TEE_POLL_MS = 200 };

struct sl_tee {
	int in_fd;
	uint32_t n;
	int *rd; /* pipe read ends, by worker (the children's) */
	int *wr; /* write ends (the parent's); -1 once that worker is gone */
	char *buf;
	pthread_t thread;
	int have_thread;
	volatile int stop;
	/* written by the thread, read after it is joined */
	uint64_t bytes;
	int error;
};

static void close_fds(int *fds, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

int sl_tee_new(struct sl_tee **out, const char *path, uint32_t n)
{
	struct sl_tee *t;
	int rc = -ENOMEM, p[2];

	if (n < 1 || n > 1024)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->in_fd = strcmp(path, "-") ? sl_open_input(path) : 0;
	if (t->in_fd < 0) {
		rc = t->in_fd;
		free(t);
		return rc;
	}
	t->rd = malloc(n * sizeof(int));
	t->wr = malloc(n * sizeof(int));
	t->buf = malloc(TEE_BUF);
	if (!t->rd || !t->wr || !t->buf)
		goto out_free;
	for (uint32_t i = 0; i < n; i++)
		t->rd[i] = t->wr[i] = -1;
	t->n = n;
	for (uint32_t i = 0; i < n; i++) {
		if (pipe2(p, O_CLOEXEC)) {
			rc = -errno;
			goto out_close;
		}
		t->rd[i] = p[0];
		t->wr[i] = p[1];
		/* fewer wake-ups; the default 64 KiB also works */
		fcntl(p[1], F_SETPIPE_SZ, TEE_PIPE);
	}
	*out = t;
	return 0;

out_close:
	close_fds(t->rd, n);
	close_fds(t->wr, n);
out_free:
	if (t->in_fd > 0)
		close(t->in_fd);
	free(t->rd);
	free(t->wr);
	free(t->buf);
	free(t);
	return rc;
}

int sl_tee_child(struct sl_tee *t, uint32_t worker)
{
	if (worker >= t->n)
		return -EINVAL;
	/* dup2 clears close-on-exec: the worker's stdin is its pipe */
	if (dup2(t->rd[worker], 0) < 0)
		return -errno;
	close_fds(t->rd, t->n);
	close_fds(t->wr, t->n);
	if (t->in_fd > 0)
		close(t->in_fd);
	t->in_fd = -1;
	return 0;
}

/* Waits until the stream has data (or ends); 0 when stopped first. */
static int wait_readable(struct sl_tee *t)
{
	struct pollfd pfd = {.fd = t->in_fd, .events = POLLIN};

	while (!t->stop) {
		int rc = poll(&pfd, 1, TEE_POLL_MS);

		if (rc > 0)
			return 1;
		if (rc < 0 && errno != EINTR)
			return 1; /* the read says what is wrong */
	}
	return 0;
}

/* Copies len bytes to every worker still reading; the number of them. */
static uint32_t copy_out(struct sl_tee *t, size_t len)
{
	uint32_t live = 0;

	for (uint32_t i = 0; i < t->n; i++) {
		if (t->wr[i] < 0)
			continue;
		struct iovec iov = {.iov_base = t->buf, .iov_len = len};
		size_t done;

		if (sl_write_iov_all(t->wr[i], &iov, 1, &done)) {
			/* EPIPE: the worker ended (it reports why) */
			close(t->wr[i]);
			t->wr[i] = -1;
			continue;
		}
		live++;
	}
	return live;
}

static void *tee_thread(void *arg)
{
	struct sl_tee *t = arg;
	sigset_t pipe_sig;

	/* a write to a gone worker's pipe fails with EPIPE, not the
	 * signal that would end the parent */
	sigemptyset(&pipe_sig);
	sigaddset(&pipe_sig, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_sig, NULL);
	while (wait_readable(t)) {
		ssize_t r = read(t->in_fd, t->buf, TEE_BUF);

		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0)
			t->error = -errno;
		if (r <= 0)
			break;
		t->bytes += (uint64_t)r;
		if (!copy_out(t, (size_t)r))
			break;
	}
	/* the workers see the end of their stream */
	close_fds(t->wr, t->n);
	return NULL;
}

int sl_tee_start(struct sl_tee *t)
{
	int rc;

	if (t->have_thread)
		return SL_E_STATE;
	close_fds(t->rd, t->n);
	rc = sl_thread_start(&t->thread, tee_thread, t);
	if (rc)
		return rc;
	t->have_thread = 1;
	return 0;
}

int sl_tee_finish(struct sl_tee *t, uint64_t *bytes)
{
	if (t->have_thread) {
		t->stop = 1;
		pthread_join(t->thread, NULL);
		t->have_thread = 0;
	}
	if (bytes)
		*bytes = t->bytes;
	return t->error;
}

void sl_tee_free(struct sl_tee *t)
{
	if (!t)
		return;
	sl_tee_finish(t, NULL);
	close_fds(t->rd, t->n);
	close_fds(t->wr, t->n);
	if (t->in_fd > 0)
		close(t->in_fd);
	free(t->rd);
	free(t->wr);
	free(t->buf);
	free(t);
}
