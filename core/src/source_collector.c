/* source_collector.c - a collector: NetFlow v5/v9 and IPFIX messages from
 * exporters, over UDP (and IPFIX over TCP), decoded into flow records for
 * the engine.
 *
 * Datagrams are read in batches (recvmmsg) without waiting while any are
 * queued; the socket buffer is the only queue, so a slow policy shows up
 * as socket drops (SO_RXQ_OVFL, counted), never as memory. With several
 * workers the ports are shared (SO_REUSEPORT) and a classic BPF program
 * picks the socket by the exporter's address, so an exporter's templates
 * and sequence numbers stay with one worker.
 *
 * IPFIX over TCP: at most MAX_CONNS connections, MAX_CONNS_PER_ADDR from
 * one source address. A new connection past either bound closes the
 * longest idle one (of its address, or of all) rather than being refused,
 * and a connection without a whole message for tcp_idle_ms is closed:
 * idle connections never lock an exporter out. A message cut short by a
 * close is still handed to the decoder, which counts it (length). Every
 * close and refusal is counted (sl_collector_state).
 *
 * A stop (SIGTERM, SIGINT) takes what the kernel already queued, as live
 * capture does: those datagrams and bytes were accepted from the
 * exporters, and dropping them would be a loss no counter sees. The
 * drain is bounded by what is queued at the stop (each UDP socket's
 * memory, each connection's unread bytes, the connections waiting in the
 * backlog), so exporters that keep sending cannot keep the run alive.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "collector.h"
#include "source.h"

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif
#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif
#define MEMINFO_RMEM  0 /* SK_MEMINFO_RMEM_ALLOC */
#define MEMINFO_DROPS 8 /* SK_MEMINFO_DROPS */
#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

enum {
	MAX_SOCKS = 8,
	MAX_CONNS = 256,
	MAX_CONNS_PER_ADDR = 16,
	DEF_TCP_IDLE_MS = 300000,
	BATCH = 64,
	DGRAM_MAX = 65536,
	CONN_BUF = 2 * 65536,
	IPFIX_HDR = 16,
	/* a datagram takes more of the socket's memory than its payload;
	 * counting this much more per datagram keeps a drain of small ones
	 * near what was queued */
	DGRAM_OVERHEAD = 256,
};

struct listener {
	int fd;
	int tcp;
	int family;
	uint32_t drops; /* the kernel's count, from SO_RXQ_OVFL */
	uint64_t drain; /* stopping: bytes still to read (UDP) */
};

struct conn {
	int fd;
	int family;
	uint8_t addr[16];
	uint16_t port;
	uint32_t have;
	uint8_t *buf;
	uint64_t last_ns; /* monotonic: accepted, or its last whole message */
	uint32_t drain;	  /* stopping: bytes still to read */
};

struct collector_source {
	struct sl_source base;
	struct sl_collector_msg *msg;
	struct listener socks[MAX_SOCKS];
	uint32_t nsocks;
	struct conn conns[MAX_CONNS];
	uint32_t nconns;
	uint64_t tcp_idle_ns;
	uint64_t tcp_accepted, tcp_closed_idle, tcp_closed_limit, tcp_refused;
	uint32_t poll_ms, idle_exit_ms;
	uint64_t last_msg_ns; /* monotonic: the last message, or the start */
	uint64_t last_expire_ns;
	uint64_t messages;
	/* a stop came: drain what was queued then (set up at the next
	 * read, so that what it reads goes out with a batch), then end */
	uint8_t stopping, drain_ready;
	/* the records handed out: grow-only, reused */
	struct sl_collector_rec *recs;
	uint32_t nrecs, cap;
	/* recvmmsg buffers */
	struct mmsghdr mm[BATCH];
	struct iovec iov[BATCH];
	struct sockaddr_storage from[BATCH];
	char ctl[BATCH][CMSG_SPACE(sizeof(uint32_t))];
	uint8_t *dgrams;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* "udp:ADDR:PORT" / "tcp:[ADDR]:PORT" */
static int parse_listen(const char *spec, int *tcp, struct sockaddr_storage *sa,
			socklen_t *len)
{
	char host[64];
	const char *rest, *colon;
	long port;
	char *end;

	if (!strncmp(spec, "udp:", 4))
		*tcp = 0;
	else if (!strncmp(spec, "tcp:", 4))
		*tcp = 1;
	else
		return -EINVAL;
	rest = spec + 4;
	colon = strrchr(rest, ':');
	if (!colon || colon == rest || (size_t)(colon - rest) >= sizeof(host))
		return -EINVAL;
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 1 || port > 65535)
		return -EINVAL;
	if (rest[0] == '[') {
		if (colon[-1] != ']')
			return -EINVAL;
		memcpy(host, rest + 1, (size_t)(colon - rest - 2));
		host[colon - rest - 2] = 0;
	} else {
		memcpy(host, rest, (size_t)(colon - rest));
		host[colon - rest] = 0;
	}
	/* as --metrics and the sinks take it: no resolver behind a name */
	if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	memset(sa, 0, sizeof(*sa));
	struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;

	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		*len = sizeof(*v4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*v6);
		return 0;
	}
	return -EINVAL;
}

/* The reuseport group's socket for a datagram: the exporter's address
 * (its last 32 bits for IPv6) modulo the workers. The family comes from
 * the datagram's own header, not the socket's: a dual-stack IPv6 socket
 * gets IPv4 datagrams with an IPv4 header, where the IPv6 offset is the
 * UDP ports. An IPv4 exporter is then spread alike on both kinds. */
static int attach_spread(int fd, uint32_t workers)
{
	struct sock_filter code[] = {
	    {BPF_LD | BPF_B | BPF_ABS, 0, 0, (uint32_t)SKF_NET_OFF},
	    {BPF_ALU | BPF_AND | BPF_K, 0, 0, 0xf0},
	    {BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 0x40},
	    {BPF_LD | BPF_W | BPF_ABS, 0, 0, (uint32_t)(SKF_NET_OFF + 12)},
	    {BPF_JMP | BPF_JA, 0, 0, 1},
	    {BPF_LD | BPF_W | BPF_ABS, 0, 0, (uint32_t)(SKF_NET_OFF + 20)},
	    {BPF_ALU | BPF_MOD | BPF_K, 0, 0, workers},
	    {BPF_RET | BPF_A, 0, 0, 0},
	};
	struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]),
				  .filter = code};

	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog,
		       sizeof(prog)))
		return -errno;
	return 0;
}

static int open_listener(struct collector_source *c, const char *spec,
			 struct sl_collector_opts *o)
{
	struct sockaddr_storage sa;
	socklen_t len;
	int tcp, fd, one = 1, rc;
	int rcvbuf = o->rcvbuf ? (int)o->rcvbuf : 8 << 20;
	struct listener *l = &c->socks[c->nsocks];

	if (c->nsocks == MAX_SOCKS)
		return -E2BIG;
	if (parse_listen(spec, &tcp, &sa, &len)) {
		snprintf(o->note, sizeof(o->note),
			 "bad listen address '%s' (udp:ADDR:PORT or "
			 "tcp:ADDR:PORT, IPv6 as [ADDR]:PORT)",
			 spec);
		return -EINVAL;
	}
	fd = socket(
	    sa.ss_family,
	    (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (o->workers > 1 &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one))) {
		rc = -errno;
		goto out_close;
	}
	if (!tcp) {
		/* root may go past rmem_max; others get what they may */
		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf,
			       sizeof(rcvbuf)))
			setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
				   sizeof(rcvbuf));
		setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one));
	}
	if (bind(fd, (struct sockaddr *)&sa, len)) {
		rc = -errno;
		snprintf(o->note, sizeof(o->note), "cannot listen on %s: %s",
			 spec, strerror(-rc));
		goto out_close;
	}
	if (tcp && listen(fd, 64)) {
		rc = -errno;
		goto out_close;
	}
	if (!tcp && o->workers > 1) {
		rc = attach_spread(fd, o->workers);
		if (rc)
			goto out_close;
	}
	l->fd = fd;
	l->tcp = tcp;
	l->family = sa.ss_family;
	c->nsocks++;
	return 0;

out_close:
	close(fd);
	return rc;
}

/* The exporter's address and port out of a sockaddr. */
static int peer_of(const struct sockaddr_storage *sa, uint8_t *addr,
		   uint16_t *port)
{
	if (sa->ss_family == AF_INET) {
		const struct sockaddr_in *v4 = (const void *)sa;

		memcpy(addr, &v4->sin_addr, 4);
		*port = ntohs(v4->sin_port);
		return 4;
	}
	const struct sockaddr_in6 *v6 = (const void *)sa;

	memcpy(addr, &v6->sin6_addr, 16);
	*port = ntohs(v6->sin6_port);
	return 6;
}

/* Decodes one message (stream: of a TCP session) and appends its
 * records. */
static int take_message(struct collector_source *c, const uint8_t *msg,
			uint32_t len, const uint8_t *addr, int family,
			uint16_t port, int stream)
{
	int n = collector_msg_decode(c->msg, msg, len, addr, family, port,
				     real_ns(), stream);

	c->messages++;
	c->last_msg_ns = mono_ns();
	if (n <= 0)
		return n;
	if (c->nrecs + (uint32_t)n > c->cap) {
		uint32_t cap = c->cap ? c->cap : 4096;
		struct sl_collector_rec *p;

		while (cap < c->nrecs + (uint32_t)n)
			cap *= 2;
		p = realloc(c->recs, (size_t)cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		c->recs = p;
		c->cap = cap;
	}
	memcpy(c->recs + c->nrecs, sl_collector_msg_records(c->msg),
	       (size_t)n * sizeof(*c->recs));
	c->nrecs += (uint32_t)n;
	return n;
}

static void note_drops(struct listener *l, struct msghdr *h)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm;
	     cm = CMSG_NXTHDR(h, cm)) {
		if (cm->cmsg_level == SOL_SOCKET &&
		    cm->cmsg_type == SO_RXQ_OVFL)
			memcpy(&l->drops, CMSG_DATA(cm), sizeof(l->drops));
	}
}

/* Reads what one UDP socket has queued (a batch); returns datagrams. */
static int read_udp(struct collector_source *c, struct listener *l)
{
	int n;

	for (int i = 0; i < BATCH; i++) {
		struct msghdr *h = &c->mm[i].msg_hdr;

		c->iov[i].iov_base = c->dgrams + (size_t)i * DGRAM_MAX;
		c->iov[i].iov_len = DGRAM_MAX;
		h->msg_name = &c->from[i];
		h->msg_namelen = sizeof(c->from[i]);
		h->msg_iov = &c->iov[i];
		h->msg_iovlen = 1;
		h->msg_control = c->ctl[i];
		h->msg_controllen = sizeof(c->ctl[i]);
		h->msg_flags = 0;
	}
	n = recvmmsg(l->fd, c->mm, BATCH, MSG_DONTWAIT, NULL);
	if (n < 0) {
		l->drain = 0; /* stopping: all that was queued is read */
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	}
	for (int i = 0; i < n; i++) {
		uint8_t addr[16];
		uint16_t port;
		int fam = peer_of(&c->from[i], addr, &port), rc;
		uint64_t took = (uint64_t)c->mm[i].msg_len + DGRAM_OVERHEAD;

		if (c->stopping)
			l->drain -= took < l->drain ? took : l->drain;
		note_drops(l, &c->mm[i].msg_hdr);
		rc = take_message(c, c->iov[i].iov_base, c->mm[i].msg_len, addr,
				  fam, port, 0);
		if (rc < 0)
			return rc;
	}
	return n;
}

/* Closes connection i; a message it cut short goes to the decoder
 * (counted there) unless flush is 0. The session's templates go with
 * it (RFC 7011 section 8). */
static void conn_close(struct collector_source *c, uint32_t i, int flush)
{
	struct conn *cn = &c->conns[i];

	if (flush && cn->have)
		take_message(c, cn->buf, cn->have, cn->addr, cn->family,
			     cn->port, 1);
	collector_session_end(c->msg, cn->addr, cn->family, cn->port);
	close(cn->fd);
	free(cn->buf);
	c->conns[i] = c->conns[--c->nconns];
}

static int same_addr(const struct conn *cn, const uint8_t *addr, int family)
{
	return cn->family == family &&
	       !memcmp(cn->addr, addr, family == 4 ? 4 : 16);
}

/* Room for a connection from addr: past MAX_CONNS_PER_ADDR of its
 * address, or MAX_CONNS in all, the longest idle one goes. */
static void conn_make_room(struct collector_source *c, const uint8_t *addr,
			   int family)
{
	uint32_t same = 0, old_same = UINT32_MAX, old_all = UINT32_MAX;

	for (uint32_t i = 0; i < c->nconns; i++) {
		const struct conn *cn = &c->conns[i];

		if (old_all == UINT32_MAX ||
		    cn->last_ns < c->conns[old_all].last_ns)
			old_all = i;
		if (!same_addr(cn, addr, family))
			continue;
		same++;
		if (old_same == UINT32_MAX ||
		    cn->last_ns < c->conns[old_same].last_ns)
			old_same = i;
	}
	if (same >= MAX_CONNS_PER_ADDR) {
		conn_close(c, old_same, 1);
		c->tcp_closed_limit++;
	} else if (c->nconns == MAX_CONNS) {
		conn_close(c, old_all, 1);
		c->tcp_closed_limit++;
	}
}

static void accept_conns(struct collector_source *c, struct listener *l)
{
	for (;;) {
		struct sockaddr_storage sa;
		socklen_t len = sizeof(sa);
		int fd = accept4(l->fd, (struct sockaddr *)&sa, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		uint8_t addr[16] = {0};
		uint16_t port;
		struct conn *cn;
		uint8_t *buf;
		int family;

		if (fd < 0)
			return;
		family = peer_of(&sa, addr, &port);
		buf = malloc(CONN_BUF);
		if (!buf) {
			close(fd);
			c->tcp_refused++;
			continue;
		}
		conn_make_room(c, addr, family);
		cn = &c->conns[c->nconns++];
		cn->fd = fd;
		cn->buf = buf;
		cn->have = 0;
		cn->family = family;
		memcpy(cn->addr, addr, sizeof(cn->addr));
		cn->port = port;
		cn->last_ns = mono_ns();
		c->tcp_accepted++;
	}
}

/* Closes the connections without a whole message for tcp_idle_ns. */
static void close_idle(struct collector_source *c, uint64_t now)
{
	for (uint32_t i = 0; i < c->nconns;) {
		if (now - c->conns[i].last_ns >= c->tcp_idle_ns) {
			conn_close(c, i, 1);
			c->tcp_closed_idle++;
		} else {
			i++;
		}
	}
}

/* IPFIX over TCP: messages framed by their header's length. A stream that
 * is not IPFIX is handed to the decoder once (so it is counted with its
 * reason) and closed. Returns 1 if the connection was closed. */
static int read_conn(struct collector_source *c, uint32_t i)
{
	struct conn *cn = &c->conns[i];
	uint32_t room = CONN_BUF - cn->have, off = 0;
	ssize_t n;

	if (c->stopping && cn->drain < room)
		room = cn->drain;
	if (!room)
		return 0;
	n = recv(cn->fd, cn->buf + cn->have, room, MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_close(c, i, 1);
		return 1;
	}
	if (n < 0) {
		cn->drain = 0;
		return 0;
	}
	cn->drain -= c->stopping ? (uint32_t)n : 0;
	cn->have += (uint32_t)n;
	while (cn->have - off >= 4) {
		const uint8_t *m = cn->buf + off;
		uint32_t len = (uint32_t)m[2] << 8 | m[3];

		if (m[0] != 0 || m[1] != 10 || len < IPFIX_HDR) {
			take_message(c, m, cn->have - off, cn->addr, cn->family,
				     cn->port, 1);
			conn_close(c, i, 0);
			return 1;
		}
		if (cn->have - off < len)
			break;
		take_message(c, m, len, cn->addr, cn->family, cn->port, 1);
		cn->last_ns = mono_ns();
		off += len;
	}
	memmove(cn->buf, cn->buf + off, cn->have - off);
	cn->have -= off;
	return 0;
}

/* Everything readable now, without waiting; returns messages read. */
static int read_all(struct collector_source *c)
{
	int got = 0, rc;

	for (uint32_t s = 0; s < c->nsocks; s++) {
		struct listener *l = &c->socks[s];

		if (l->tcp) {
			if (!c->stopping)
				accept_conns(c, l);
			continue;
		}
		if (c->stopping && !l->drain)
			continue;
		rc = read_udp(c, l);
		if (rc < 0)
			return rc;
		got += rc;
	}
	for (uint32_t i = 0; i < c->nconns;) {
		uint64_t before = c->messages;

		if (!read_conn(c, i))
			i++;
		got += (int)(c->messages - before);
	}
	return got;
}

/* A UDP socket's queued bytes (its memory: a bound on the payload), or
 * its buffer's size when the kernel does not say. */
static uint64_t udp_queued(int fd)
{
	uint32_t mem[16] = {0};
	socklen_t len = sizeof(mem);
	int size = 0;

	if (!getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) &&
	    len > MEMINFO_RMEM * sizeof(uint32_t))
		return mem[MEMINFO_RMEM];
	len = sizeof(size);
	if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, &len) || size < 0)
		return DGRAM_MAX;
	return (uint64_t)size;
}

/* The stop's drain: what is queued now is what will be read. The
 * connections already made (in the backlog) are taken with their bytes;
 * no new one is accepted after. */
static void drain_start(struct collector_source *c)
{
	for (uint32_t s = 0; s < c->nsocks; s++) {
		struct listener *l = &c->socks[s];

		if (l->tcp)
			accept_conns(c, l);
		else
			l->drain = udp_queued(l->fd);
	}
	for (uint32_t i = 0; i < c->nconns; i++) {
		int unread = 0;

		/* a message cut short at the stop may need more bytes than
		 * are queued: it is left, counted when the run ends */
		if (ioctl(c->conns[i].fd, FIONREAD, &unread) || unread < 0)
			unread = 0;
		c->conns[i].drain = (uint32_t)unread;
	}
	c->drain_ready = 1;
}

static int drain_done(const struct collector_source *c)
{
	for (uint32_t s = 0; s < c->nsocks; s++)
		if (c->socks[s].drain)
			return 0;
	for (uint32_t i = 0; i < c->nconns; i++)
		if (c->conns[i].drain)
			return 0;
	return 1;
}

/* The drain is over: a message the stop cut short goes to the decoder,
 * which takes its whole sets and counts it (length), as at a close. */
static void flush_partial(struct collector_source *c)
{
	for (uint32_t i = 0; i < c->nconns; i++) {
		struct conn *cn = &c->conns[i];

		if (!cn->have)
			continue;
		take_message(c, cn->buf, cn->have, cn->addr, cn->family,
			     cn->port, 1);
		cn->have = 0;
	}
}

static int wait_input(struct collector_source *c)
{
	struct pollfd pfd[MAX_SOCKS + MAX_CONNS];
	uint32_t n = 0;

	for (uint32_t s = 0; s < c->nsocks; s++)
		pfd[n++] =
		    (struct pollfd){.fd = c->socks[s].fd, .events = POLLIN};
	for (uint32_t i = 0; i < c->nconns; i++)
		pfd[n++] =
		    (struct pollfd){.fd = c->conns[i].fd, .events = POLLIN};
	if (poll(pfd, n, (int)c->poll_ms) < 0 && errno != EINTR)
		return -errno;
	return 0;
}

static int collector_records(struct sl_source *src,
			     const struct sl_collector_rec **out)
{
	struct collector_source *c = (struct collector_source *)src;
	uint64_t now = mono_ns();
	int rc;

	c->nrecs = 0;
	*out = c->recs;
	/* the records of the last batch are done with: their exporters
	 * may be evicted now */
	collector_msg_batch(c->msg);
	if (now - c->last_expire_ns > 1000000000ULL) {
		sl_collector_msg_expire(c->msg, real_ns());
		close_idle(c, now);
		c->last_expire_ns = now;
	}
	if (c->stopping) {
		if (!c->drain_ready)
			drain_start(c);
		rc = read_all(c);
		if (rc < 0)
			return rc;
		if (!c->nrecs && drain_done(c))
			flush_partial(c);
		if (c->nrecs)
			return (int)c->nrecs;
		return drain_done(c) ? 0 : -EAGAIN;
	}
	for (int round = 0; round < 2; round++) {
		rc = read_all(c);
		if (rc < 0)
			return rc;
		if (c->nrecs) {
			*out = c->recs;
			return (int)c->nrecs;
		}
		if (rc > 0)
			return -EAGAIN; /* messages without records */
		if (round == 0) {
			rc = wait_input(c);
			if (rc)
				return rc;
		}
	}
	if (c->idle_exit_ms &&
	    mono_ns() - c->last_msg_ns >= (uint64_t)c->idle_exit_ms * 1000000)
		return 0;
	return -EAGAIN;
}

static void collector_stop(struct sl_source *src)
{
	((struct collector_source *)src)->stopping = 1;
}

static void collector_records_end(struct sl_source *src)
{
	struct collector_source *c = (struct collector_source *)src;

	collector_hold_drop_all(c->msg);
}

static int collector_stats(struct sl_source *src, struct sl_source_stats *st)
{
	struct collector_source *c = (struct collector_source *)src;

	memset(st, 0, sizeof(*st));
	st->received = c->messages;
	for (uint32_t s = 0; s < c->nsocks; s++) {
		uint32_t mem[16] = {0};
		socklen_t len = sizeof(mem);

		/* drops after the last datagram read are only in the
		 * socket's own counter; SO_RXQ_OVFL's is the fallback */
		if (!c->socks[s].tcp &&
		    !getsockopt(c->socks[s].fd, SOL_SOCKET, SO_MEMINFO, mem,
				&len) &&
		    len > MEMINFO_DROPS * sizeof(uint32_t))
			c->socks[s].drops = mem[MEMINFO_DROPS];
		st->kernel_drops += c->socks[s].drops;
	}
	return 0;
}

static void collector_close(struct sl_source *src)
{
	struct collector_source *c = (struct collector_source *)src;

	while (c->nconns)
		conn_close(c, 0, 0);
	for (uint32_t s = 0; s < c->nsocks; s++)
		close(c->socks[s].fd);
	sl_collector_msg_free(c->msg);
	free(c->recs);
	free(c->dgrams);
	free(c);
}

/* No packets: next, linktype and progress do not apply (the public
 * sl_source_* calls answer -ENOTSUP, or 0 and 0 for progress). */
static const struct sl_source_ops collector_ops = {
    .next = NULL,
    .linktype = NULL,
    .progress = NULL,
    .close = collector_close,
    .stop = collector_stop,
    .stats = collector_stats,
    .records = collector_records,
    .records_end = collector_records_end,
};

int sl_source_open_collector(struct sl_source **out,
			     struct sl_collector_opts *o)
{
	struct collector_source *c;
	int rc = -ENOMEM;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!o || !o->n_listen || o->n_listen > MAX_SOCKS)
		return -EINVAL;
	o->note[0] = 0;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->base.ops = &collector_ops;
	c->poll_ms = o->poll_ms ? o->poll_ms : 100;
	c->last_msg_ns = mono_ns();
	c->idle_exit_ms = o->idle_exit_ms;
	c->tcp_idle_ns =
	    (uint64_t)(o->tcp_idle_ms ? o->tcp_idle_ms : DEF_TCP_IDLE_MS) *
	    1000000ULL;
	c->dgrams = malloc((size_t)BATCH * DGRAM_MAX);
	if (!c->dgrams)
		goto out_free;
	rc = sl_collector_msg_new(&c->msg, &o->msg);
	if (rc)
		goto out_free;
	for (uint32_t i = 0; i < o->n_listen; i++) {
		rc = open_listener(c, o->listen[i], o);
		if (rc)
			goto out_close;
	}
	*out = &c->base;
	return 0;

out_close:
	collector_close(&c->base);
	return rc;
out_free:
	free(c->dgrams);
	free(c);
	return rc;
}

uint32_t sl_collector_exporters(const struct sl_source *src)
{
	if (!src || src->ops != &collector_ops)
		return 0;
	return sl_collector_msg_exporters(
	    ((const struct collector_source *)src)->msg);
}

const struct sl_exporter_stats *
sl_collector_exporter(const struct sl_source *src, uint32_t index)
{
	if (!src || src->ops != &collector_ops)
		return NULL;
	return sl_collector_msg_exporter(
	    ((const struct collector_source *)src)->msg, index);
}

int sl_collector_state(const struct sl_source *src,
		       struct sl_collector_state *out)
{
	const struct collector_source *c = (const struct collector_source *)src;
	int rc;

	if (!src || src->ops != &collector_ops || !out)
		return -EINVAL;
	rc = sl_collector_msg_state(c->msg, out);
	if (rc)
		return rc;
	out->tcp_open = c->nconns;
	out->tcp_accepted = c->tcp_accepted;
	out->tcp_closed_idle = c->tcp_closed_idle;
	out->tcp_closed_limit = c->tcp_closed_limit;
	out->tcp_refused = c->tcp_refused;
	return 0;
}
