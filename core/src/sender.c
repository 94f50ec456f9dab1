/* sender.c - messages sent on a socket by a thread of their own.
 *
 * The capture thread copies each message into a slot of a ring and goes
 * on; the sender thread sends the slots in order. When the peer is slow the
 * ring fills and sl_sender_push() says -EAGAIN: the caller's queue, then
 * its lag counters, take over, and capture never waits.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "sluice.h"
#include "thread.h"

enum { WAKE_BATCH = 16, LAST_REFUSAL_WAIT_MS = 50 };

struct slot {
	uint32_t len;
	uint32_t records;
};

struct sl_sender {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	int fd;
	int stream;
	int stop;
	int joined;
	int idle;	  /* the thread waits for work */
	uint32_t wake_at; /* queued messages that wake it */
	uint32_t nslots, slot_bytes;
	uint32_t head;	 /* next slot to send */
	uint32_t queued; /* slots waiting */
	struct slot *slots;
	uint8_t *data;
	uint32_t pace;	   /* records per second, 0: as fast as the socket */
	double tokens;	   /* records that may go now */
	uint64_t paced_at; /* monotonic ns of the last refill */
	struct slot last;  /* datagrams: the last one sent, not yet refused */
	struct sl_sender_stats stats;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Without the lock: waits until records may go at the paced rate. A
 * datagram collector drops what its socket buffer cannot hold, silently
 * for us: pacing is how an export reaches a slow collector whole. The
 * bucket holds at most 10 ms of records (and one message). */
static void pace_wait(struct sl_sender *s, uint32_t pace, uint32_t records)
{
	double burst = (double)pace / 100;

	if (!pace)
		return;
	if (burst < records)
		burst = records;
	for (;;) {
		uint64_t now = mono_ns();

		s->tokens += (double)(now - s->paced_at) * pace / 1e9;
		s->paced_at = now;
		if (s->tokens > burst)
			s->tokens = burst;
		if (s->tokens >= records)
			break;
		double wait_ns = (records - s->tokens) * 1e9 / pace;
		struct timespec ts = {.tv_sec = (time_t)(wait_ns / 1e9),
				      .tv_nsec = (long)((uint64_t)wait_ns %
							1000000000ULL)};

		nanosleep(&ts, NULL);
	}
	s->tokens -= records;
}

/* Sends one message; 0 or a negative errno. Waits (bounded polls) while
 * the socket is full, giving up when the sender stops. */
static int send_msg(struct sl_sender *s, int fd, const uint8_t *p, uint32_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n >= 0) {
			if (!s->stream)
				return 0; /* a datagram goes whole */
			p += n;
			len -= (uint32_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};

		if (poll(&pfd, 1, 100) < 0 && errno != EINTR)
			return -errno;
		pthread_mutex_lock(&s->lock);
		int stop = s->stop;

		pthread_mutex_unlock(&s->lock);
		if (stop)
			return -ECANCELED;
	}
	return 0;
}

/* With the lock held: a datagram counted sent was refused after all (an
 * ICMP port unreachable; the socket reports it at the next call). */
static void refused_last(struct sl_sender *s)
{
	if (!s->last.records && !s->last.len)
		return;
	s->stats.messages--;
	s->stats.bytes -= s->last.len;
	s->stats.records -= s->last.records;
	s->stats.lost_messages++;
	s->stats.lost_records += s->last.records;
	s->stats.last_error = -ECONNREFUSED;
	memset(&s->last, 0, sizeof(s->last));
}

/* A stream: 0 while the peer is there, else why it is not (a negative
 * errno). A collector sends nothing, so a readable end is its close or
 * reset: the kernel would still take a message sent into it, the peer
 * answer it with a reset, and the message be lost while counted sent. */
static int peer_gone(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN | POLLRDHUP};
	socklen_t elen = sizeof(int);
	uint8_t junk[512];
	int err = 0;

	for (;;) {
		if (poll(&pfd, 1, 0) <= 0)
			return 0;
		if (pfd.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL))
			break;
		/* a peer that talks (not a collector) is drained, not
		 * taken for gone */
		ssize_t n = recv(fd, junk, sizeof(junk), MSG_DONTWAIT);

		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (n < 0)
			return -errno;
		break;
	}
	if (!getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) && err)
		return -err;
	return -EPIPE;
}

/* Sends one message as send_msg(), on a stream only while its peer is
 * there. A connected datagram socket answers the send after a refused
 * datagram with ECONNREFUSED without sending: the earlier one is counted
 * lost and this one sent again. */
static int send_counted(struct sl_sender *s, int fd, const uint8_t *p,
			uint32_t len)
{
	int rc = s->stream ? peer_gone(fd) : 0;

	if (rc)
		return rc;
	rc = send_msg(s, fd, p, len);

	if (rc == -ECONNREFUSED && !s->stream) {
		pthread_mutex_lock(&s->lock);
		refused_last(s);
		pthread_mutex_unlock(&s->lock);
		rc = send_msg(s, fd, p, len);
	}
	return rc;
}

/* With the lock held: drops every queued message, counted lost. */
static void drop_queued(struct sl_sender *s)
{
	while (s->queued) {
		struct slot *sl = &s->slots[s->head];

		s->stats.lost_messages++;
		s->stats.lost_records += sl->records;
		s->head = (s->head + 1) % s->nslots;
		s->queued--;
	}
}

static void *sender_thread(void *arg)
{
	struct sl_sender *s = arg;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		while ((!s->queued || s->stats.broken) && !s->stop) {
			s->idle = 1;
			pthread_cond_wait(&s->cond, &s->lock);
			s->idle = 0;
		}
		if (s->stop)
			break;
		uint32_t i = s->head;
		struct slot sl = s->slots[i];
		int fd = s->fd;
		uint32_t pace = s->pace;

		pthread_mutex_unlock(&s->lock);
		pace_wait(s, pace, sl.records);
		int rc = send_counted(s, fd, s->data + (size_t)i * s->slot_bytes,
				      sl.len);
		pthread_mutex_lock(&s->lock);
		if (rc == -ECANCELED)
			break;
		if (rc) {
			s->stats.last_error = rc;
			s->stats.lost_messages++;
			s->stats.lost_records += sl.records;
		} else {
			s->stats.messages++;
			s->stats.bytes += sl.len;
			s->stats.records += sl.records;
			s->last = sl;
		}
		s->head = (i + 1) % s->nslots;
		s->queued--;
		/* a stream that failed has lost its framing: the rest waits
		 * for a new connection, dropped */
		if (rc && s->stream) {
			s->stats.broken = 1;
			drop_queued(s);
		}
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int sl_sender_new(struct sl_sender **out, int fd, int stream, uint32_t slots,
		  uint32_t slot_bytes)
{
	struct sl_sender *s;
	int rc = -ENOMEM;

	if (!slots || !slot_bytes)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->slots = calloc(slots, sizeof(*s->slots));
	s->data = malloc((size_t)slots * slot_bytes);
	if (!s->slots || !s->data)
		goto out_free;
	s->fd = fd;
	s->stream = stream;
	s->nslots = slots;
	s->slot_bytes = slot_bytes;
	s->wake_at = slots / 2 < WAKE_BATCH ? slots / 2 + 1 : WAKE_BATCH;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	rc = sl_thread_start(&s->thread, sender_thread, s);
	if (rc)
		goto out_sync;
	*out = s;
	return 0;

out_sync:
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
out_free:
	free(s->slots);
	free(s->data);
	free(s);
	return rc;
}

int sl_sender_push(struct sl_sender *s, const uint8_t *data, uint32_t len,
		   uint32_t records)
{
	uint32_t i;
	int rc = 0;

	if (len > s->slot_bytes)
		return -EMSGSIZE;
	pthread_mutex_lock(&s->lock);
	if (s->stop) {
		rc = -ECANCELED;
	} else if (s->stats.broken) {
		rc = -EPIPE;
	} else if (s->queued == s->nslots) {
		rc = -EAGAIN;
	} else {
		i = (s->head + s->queued) % s->nslots;
		/* the thread never touches a slot past head + queued */
		memcpy(s->data + (size_t)i * s->slot_bytes, data, len);
		s->slots[i].len = len;
		s->slots[i].records = records;
		s->queued++;
		/* waking the thread costs a system call and a context
		 * switch: it is woken for a batch, or by sl_sender_kick() */
		if (s->idle && s->queued >= s->wake_at)
			pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void sl_sender_set_fd(struct sl_sender *s, int fd)
{
	pthread_mutex_lock(&s->lock);
	s->fd = fd;
	s->stats.broken = 0;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

void sl_sender_kick(struct sl_sender *s)
{
	pthread_mutex_lock(&s->lock);
	if (s->queued)
		pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

int sl_sender_drain(struct sl_sender *s, int timeout_ms)
{
	struct timespec until;
	int left;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&s->lock);
	pthread_cond_broadcast(&s->cond);
	while (s->queued && !s->stats.broken &&
	       pthread_cond_timedwait(&s->cond, &s->lock, &until) == 0)
		;
	left = (int)s->queued;
	pthread_mutex_unlock(&s->lock);
	return left;
}

const struct sl_sender_stats *sl_sender_stats(const struct sl_sender *s)
{
	return &s->stats;
}

/* After the thread: was the last datagram refused? The ICMP error comes
 * a round trip later; wait for it a little (loopback answers at once). */
static void check_last_refused(struct sl_sender *s)
{
	struct pollfd pfd = {.fd = s->fd, .events = 0};
	socklen_t elen = sizeof(int);
	int err = 0;

	if (s->stream || s->fd < 0 || !s->last.len)
		return;
	if (poll(&pfd, 1, LAST_REFUSAL_WAIT_MS) <= 0 ||
	    !(pfd.revents & POLLERR))
		return;
	if (!getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &elen) &&
	    err == ECONNREFUSED)
		refused_last(s);
}

void sl_sender_stop(struct sl_sender *s)
{
	if (s->joined)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = 1;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	s->joined = 1;
	drop_queued(s);
	check_last_refused(s);
}

void sl_sender_free(struct sl_sender *s)
{
	if (!s)
		return;
	sl_sender_stop(s);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s->slots);
	free(s->data);
	free(s);
}

void sl_sender_pace(struct sl_sender *s, uint32_t records_per_sec)
{
	pthread_mutex_lock(&s->lock);
	s->pace = records_per_sec;
	s->tokens = 0;
	s->paced_at = mono_ns();
	pthread_mutex_unlock(&s->lock);
}
