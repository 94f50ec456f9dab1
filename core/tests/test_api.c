/* test_api.c - the holes of the C API: sl_strerror() has a text for every
 * code (all of sluice's own, down to SL_E_LAST, and a sample of errno's),
 * and every sl_source_* call gives its documented answer on every source
 * kind (a pcap buffer, a collector, and, as root, live capture on lo):
 * -ENOTSUP or zeros where it does not apply, never a NULL call. And a
 * parent's wait for its children (sl_signal_child_wait) misses none. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sluice.h"
#include "test.h"

/* ---- sl_strerror ------------------------------------------------------ */

/* A real text: present, not empty, not a fallback for unknown codes. */
static int real_text(const char *t)
{
	return t && t[0] && strcmp(t, "unknown error") &&
	       strncmp(t, "Unknown error", 13);
}

static void test_strerror(void)
{
	static const int errnos[] = {
	    EPERM,	ENOENT,		ESRCH,	     EINTR,	   EIO,
	    EBADF,	EAGAIN,		ENOMEM,	     EACCES,	   ENODEV,
	    EISDIR,	EINVAL,		EFBIG,	     ESPIPE,	   EPIPE,
	    EMSGSIZE,	ENOTSUP,	EOPNOTSUPP,  EAFNOSUPPORT, EADDRINUSE,
	    ENOBUFS,	ECONNREFUSED,	EINPROGRESS, ENETDOWN,	   ENXIO,
	    SL_EINTR,	SL_ENOENT,	SL_ESRCH,    SL_EAGAIN,	   SL_ENOMEM,
	    SL_EINVAL,	SL_EFBIG,	SL_EPIPE,    SL_EMSGSIZE,  SL_ENOTSUP,
	    SL_ENOBUFS, SL_EINPROGRESS,
	};
	const char *seen[SL_E_FORMAT - SL_E_LAST + 1];
	int code, i, n = 0, bad = 0;

	/* every sluice code has its own text */
	for (code = SL_E_FORMAT; code >= SL_E_LAST; code--) {
		const char *t = sl_strerror(code);

		if (!real_text(t)) {
			fprintf(stderr, "FAIL sl_strerror(%d): \"%s\"\n", code,
				t ? t : "(null)");
			bad++;
		}
		for (i = 0; i < n && t; i++)
			if (!strcmp(seen[i], t)) {
				fprintf(stderr,
					"FAIL sl_strerror(%d) repeats "
					"the text of %d\n",
					code, SL_E_FORMAT - i);
				bad++;
			}
		seen[n++] = t ? t : "";
	}
	CHECK_EQ(bad, 0);
	CHECK(n >= 6 && SL_E_LAST <= SL_E_CONFLICT);
	CHECK(real_text(sl_strerror(SL_E_CONFLICT)));

	/* past the marker there is no code (a new one below SL_E_LAST that
	 * did not move it fails here): the fallback shows, so the checks
	 * above could fail */
	CHECK(!real_text(sl_strerror(SL_E_LAST - 1)));
	CHECK(!real_text(sl_strerror(SL_E_FORMAT + 1 - 2000)));

	bad = 0;
	for (i = 0; i < (int)(sizeof(errnos) / sizeof(errnos[0])); i++) {
		const char *t = sl_strerror(-errnos[i]);

		if (!real_text(t) || strcmp(t, strerror(errnos[i]))) {
			fprintf(stderr, "FAIL sl_strerror(-%d): \"%s\"\n",
				errnos[i], t ? t : "(null)");
			bad++;
		}
	}
	CHECK_EQ(bad, 0);
	CHECK(!strcmp(sl_strerror(0), "success"));
	CHECK(!strcmp(sl_strerror(7), "success"));
}

/* ---- a tiny pcap in memory -------------------------------------------- */

static uint8_t pcap_img[24 + 16 + 42];

static void le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static void le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
}

/* Microsecond pcap, Ethernet, one UDP/IPv4 frame of 42 bytes. */
static void build_pcap(void)
{
	uint8_t *h = pcap_img, *r = h + 24, *f = r + 16;

	memset(pcap_img, 0, sizeof(pcap_img));
	le32(h, 0xa1b2c3d4);
	le16(h + 4, 2);
	le16(h + 6, 4);
	le32(h + 16, 65535);
	le32(h + 20, SL_LINK_EN10MB);
	le32(r, 1700000000);
	le32(r + 4, 250000);
	le32(r + 8, 42);
	le32(r + 12, 42);
	f[12] = 0x08; /* IPv4 */
	f += 14;
	f[0] = 0x45;
	f[3] = 28; /* total length */
	f[8] = 64;
	f[9] = 17;
	f[12] = 10, f[15] = 1;
	f[16] = 10, f[19] = 2;
	f[20] = 0x04, f[21] = 0xd2; /* 1234 */
	f[22] = 0x00, f[23] = 0x35; /* 53 */
	f[25] = 8;
}

/* ---- every sl_source_* call on one source ----------------------------- */

enum kind { K_FILE, K_COLLECTOR, K_LIVE };

static struct sl_packet_batch batch;

/* Sends one UDP datagram over lo, so a live capture there has something
 * to read whatever else the machine does. */
static void poke_lo(void)
{
	struct sockaddr_in a = {0};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return;
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (!bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &alen))
		(void)sendto(fd, "sluice", 6, 0, (struct sockaddr *)&a,
			     sizeof(a));
	close(fd);
}

static void walk_next(struct sl_source *src, enum kind k)
{
	int rc, i, got = 0;

	batch.count = 77;
	rc = sl_source_next(src, &batch);
	switch (k) {
	case K_FILE:
		CHECK_EQ(rc, 1);
		CHECK_EQ(batch.count, 1);
		CHECK_EQ(batch.pkt[0].caplen, 42);
		CHECK_EQ(batch.pkt[0].wirelen, 42);
		CHECK_EQ(batch.pkt[0].linktype, SL_LINK_EN10MB);
		CHECK_EQ(batch.pkt[0].ts_ns, 1700000000250000000ULL);
		CHECK(batch.pkt[0].data == pcap_img + 40);
		CHECK_EQ(sl_source_next(src, &batch), 0); /* the end */
		CHECK_EQ(batch.count, 0);
		CHECK_EQ(sl_source_next(src, &batch), 0); /* stays */
		break;
	case K_COLLECTOR:
		CHECK_EQ(rc, -ENOTSUP);
		CHECK_EQ(batch.count, 0);
		CHECK_EQ(sl_source_next(src, &batch), -ENOTSUP);
		break;
	case K_LIVE:
		/* a count or -EAGAIN, never 0 or -ENOTSUP; the datagram
		 * sent to lo comes within a few polls */
		for (i = 0; i < 40 && !got; i++) {
			if (i % 10 == 0)
				poke_lo();
			if (i)
				rc = sl_source_next(src, &batch);
			if (rc > 0 && (uint32_t)rc == batch.count &&
			    batch.pkt[0].linktype == SL_LINK_EN10MB)
				got = rc;
			else if (rc != -EAGAIN || batch.count != 0)
				break;
		}
		if (!got)
			fprintf(stderr, "live next: %d (%s)\n", rc,
				sl_strerror(rc));
		CHECK(got > 0);
		break;
	}
	CHECK_EQ(sl_source_next(src, NULL), -EINVAL);
}

/* Engine calls that depend on the source kind; the engine closes src. */
static void walk_engine(struct sl_source *src, enum kind k)
{
	struct sl_config cfg = {0};
	struct sl_engine *e;
	char err[256] = "";

	if (sl_engine_new(&e, &cfg)) {
		CHECK(0);
		sl_source_close(src);
		return;
	}
	CHECK_EQ(sl_engine_attach(e, src), 0);
	/* a collector has no frames to filter */
	CHECK_EQ(sl_engine_packet_filter(e, 0, "udp", err, sizeof(err)),
		 k == K_COLLECTOR ? -ENOTSUP : 0);
	CHECK_EQ(sl_engine_packet_filter(e, 0, NULL, NULL, 0), 0);
	sl_engine_free(e);
}

static void walk(struct sl_source *src, enum kind k)
{
	struct sl_source_stats st;
	uint64_t pos = 99, size = 99;
	int rc;

	CHECK_EQ(sl_source_linktype(src),
		 k == K_COLLECTOR ? -ENOTSUP : SL_LINK_EN10MB);

	sl_source_progress(src, &pos, &size);
	if (k == K_FILE) {
		CHECK_EQ(pos, 24); /* past the file header */
		CHECK_EQ(size, sizeof(pcap_img));
	} else {
		CHECK_EQ(pos, 0);
		CHECK_EQ(size, 0);
	}
	sl_source_progress(src, NULL, &size); /* either may be NULL */
	sl_source_progress(src, &pos, NULL);
	sl_source_progress(src, NULL, NULL);

	walk_next(src, k);

	pos = size = 99;
	sl_source_progress(src, &pos, &size);
	if (k == K_FILE) {
		CHECK_EQ(pos, sizeof(pcap_img)); /* all read */
		CHECK_EQ(size, sizeof(pcap_img));
	} else {
		/* live: what was captured (bytes or packets) */
		CHECK(k == K_LIVE ? pos > 0 : pos == 0);
		CHECK_EQ(size, 0);
	}

	memset(&st, 0xa5, sizeof(st));
	rc = sl_source_stats(src, &st);
	if (k == K_FILE) {
		CHECK_EQ(rc, -ENOTSUP);
		CHECK_EQ(rc, -EOPNOTSUPP); /* the documented value too */
		CHECK_EQ(st.received, 0);
		CHECK_EQ(st.kernel_drops, 0);
	} else {
		CHECK_EQ(rc, 0);
		CHECK(k == K_LIVE ? st.received >= 1 : st.received == 0);
		CHECK(st.kernel_drops < 1000000);
		CHECK_EQ(st.filtered, 0);
		CHECK_EQ(st.ring_errors, 0);
	}
	CHECK_EQ(sl_source_stats(src, NULL), -EINVAL);

	/* collector calls: a collector knows exporter 0 (refused messages,
	 * family 0), other kinds none */
	if (k == K_COLLECTOR) {
		struct sl_collector_state cs;

		CHECK_EQ(sl_collector_exporters(src), 1);
		CHECK(sl_collector_exporter(src, 0) != NULL &&
		      sl_collector_exporter(src, 0)->family == 0);
		CHECK(sl_collector_exporter(src, 1) == NULL);
		/* its state: the default bound, nothing held or evicted */
		memset(&cs, 0xff, sizeof(cs));
		CHECK_EQ(sl_collector_state(src, &cs), 0);
		CHECK_EQ(cs.max_memory, 256ULL << 20);
		CHECK(cs.memory > 0 && cs.memory < 65536);
		CHECK_EQ(cs.exporters + cs.domains + cs.templates, 0);
		CHECK_EQ(cs.evicted_exporters + cs.evicted_templates, 0);
		CHECK_EQ(cs.tcp_open + cs.tcp_accepted + cs.tcp_refused, 0);
		CHECK_EQ(sl_collector_state(src, NULL), -EINVAL);
	} else {
		struct sl_collector_state cs;

		CHECK_EQ(sl_collector_exporters(src), 0);
		CHECK(sl_collector_exporter(src, 0) == NULL);
		CHECK_EQ(sl_collector_state(src, &cs), -EINVAL);
	}
	walk_engine(src, k);
}

/* No source at all: -EINVAL, zeros, nothing done. */
static void test_null_source(void)
{
	struct sl_source_stats st;
	uint64_t pos = 5, size = 5;

	batch.count = 3;
	CHECK_EQ(sl_source_next(NULL, &batch), -EINVAL);
	CHECK_EQ(sl_source_linktype(NULL), -EINVAL);
	sl_source_progress(NULL, &pos, &size);
	CHECK_EQ(pos, 0);
	CHECK_EQ(size, 0);
	CHECK_EQ(sl_source_stats(NULL, &st), -EINVAL);
	CHECK_EQ(sl_collector_exporters(NULL), 0);
	CHECK(sl_collector_exporter(NULL, 0) == NULL);
	CHECK_EQ(sl_collector_state(NULL, NULL), -EINVAL);
	CHECK_EQ(sl_collector_msg_state(NULL, NULL), -EINVAL);
	sl_source_close(NULL);
}

/* Each open refuses a missing out pointer or options, and leaves *out
 * NULL when it fails. */
static void test_open_errors(void)
{
	struct sl_live_opts lo;
	struct sl_collector_opts co;
	struct sl_source *src;

	memset(&lo, 0, sizeof(lo));
	lo.ifname = "lo";
	memset(&co, 0, sizeof(co));
	CHECK_EQ(sl_source_open_file(NULL, "x"), -EINVAL);
	CHECK_EQ(sl_source_open_mem(NULL, pcap_img, sizeof(pcap_img)), -EINVAL);
	CHECK_EQ(sl_source_open_afpacket(NULL, &lo), -EINVAL);
	CHECK_EQ(sl_source_open_afxdp(NULL, &lo), -EINVAL);
	CHECK_EQ(sl_source_open_pcap_live(NULL, &lo), -EINVAL);
	CHECK_EQ(sl_source_open_collector(NULL, &co), -EINVAL);

	src = (struct sl_source *)&lo;
	CHECK_EQ(sl_source_open_mem(&src, (const uint8_t *)"nope", 4),
		 SL_E_FORMAT);
	CHECK(src == NULL);
	src = (struct sl_source *)&lo;
	CHECK_EQ(sl_source_open_file(&src, "/nonexistent/sluice.pcap"),
		 -ENOENT);
	CHECK(src == NULL);
	src = (struct sl_source *)&lo;
	CHECK_EQ(sl_source_open_collector(&src, &co), -EINVAL); /* no listen */
	CHECK(src == NULL);
	src = (struct sl_source *)&lo;
	CHECK_EQ(sl_source_open_collector(&src, NULL), -EINVAL);
	CHECK(src == NULL);
	src = (struct sl_source *)&co;
	CHECK_EQ(sl_source_open_pcap_live(&src, NULL), -EINVAL);
	CHECK(src == NULL);
	src = (struct sl_source *)&co;
	CHECK_EQ(sl_source_open_afxdp(&src, NULL), -EINVAL);
	CHECK(src == NULL);
	src = (struct sl_source *)&co;
	lo.ifname = NULL;
	CHECK_EQ(sl_source_open_afpacket(&src, &lo), SL_E_OPTION);
	CHECK(src == NULL);
}

static void test_file(void)
{
	struct sl_source *src = NULL;

	CHECK_EQ(sl_source_open_mem(&src, pcap_img, sizeof(pcap_img)), 0);
	if (src)
		walk(src, K_FILE);
}

/* A UDP port on 127.0.0.1 free a moment ago (the collector refuses port
 * 0: it has no call that would tell the port the kernel chose). */
static int free_udp_port(void)
{
	struct sockaddr_in a = {0};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), port = -1;

	if (fd < 0)
		return -1;
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (!bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &alen))
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static void test_collector(void)
{
	struct sl_collector_opts o;
	struct sl_source *src = NULL;
	char listen[64];
	int rc = -EADDRINUSE, tries;

	/* another process may take the port in between: try again */
	for (tries = 0; tries < 5 && rc == -EADDRINUSE; tries++) {
		snprintf(listen, sizeof(listen), "udp:127.0.0.1:%d",
			 free_udp_port());
		memset(&o, 0, sizeof(o));
		o.listen[0] = listen;
		o.n_listen = 1;
		o.poll_ms = 10;
		rc = sl_source_open_collector(&src, &o);
	}
	CHECK_EQ(rc, 0);
	if (rc)
		fprintf(stderr, "collector: %s (%s)\n", sl_strerror(rc),
			o.note);
	if (src)
		walk(src, K_COLLECTOR);
}

typedef int (*live_open)(struct sl_source **out, struct sl_live_opts *o);

static void test_live(const char *name, live_open opener)
{
	struct sl_live_opts o;
	struct sl_source *src = NULL;
	int rc;

	memset(&o, 0, sizeof(o));
	o.ifname = "lo";
	o.poll_ms = 50;
	o.snaplen = 256;
	o.block_size = 1 << 16; /* afpacket: a small ring */
	o.block_count = 4;
	rc = opener(&src, &o);
	CHECK_EQ(rc, 0);
	if (rc) {
		fprintf(stderr, "%s on lo: %s (%s)\n", name, sl_strerror(rc),
			o.note);
		return;
	}
	walk(src, K_LIVE);
}

/* ---- sl_signal_child_wait -------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The workers' parent sleeps in it: a child that ended before the call (the
 * race a poll with a sleep has) must still end the wait at once. */
static void test_child_wait(void)
{
	int status;
	double t;
	pid_t pid;

	CHECK_EQ(sl_signal_child_block(1), 0);
	t = now_s();
	CHECK_EQ(sl_signal_child_wait(50), 0); /* no child: the timeout */
	CHECK(now_s() - t >= 0.045);

	pid = fork();
	if (pid == 0)
		_exit(0);
	CHECK(pid > 0);
	/* the child has ended (and is not reaped) before the wait starts */
	CHECK_EQ(waitid(P_PID, (id_t)pid, NULL, WEXITED | WNOWAIT), 0);
	t = now_s();
	CHECK_EQ(sl_signal_child_wait(5000), 1);
	CHECK(now_s() - t < 1.0);
	CHECK_EQ(waitpid(pid, &status, 0), pid);

	pid = fork();
	if (pid == 0) {
		usleep(20000);
		_exit(0);
	}
	t = now_s();
	CHECK_EQ(sl_signal_child_wait(5000), 1); /* it ends while we sleep */
	CHECK(now_s() - t < 1.0);
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK_EQ(sl_signal_child_block(0), 0);
}

int main(void)
{
	test_strerror();
	build_pcap();
	test_null_source();
	test_open_errors();
	test_file();
	test_collector();
	test_child_wait();
	if (geteuid() != 0) {
		printf("skip: live sources on lo (pcap_live, afpacket) need "
		       "root\n");
	} else {
		test_live("pcap_live", sl_source_open_pcap_live);
		test_live("afpacket", sl_source_open_afpacket);
	}
	printf("skip: afxdp on lo: AF_XDP needs an XDP program on a NIC "
	       "queue (test_afxdp covers it on a veth pair)\n");
	return test_done();
}
