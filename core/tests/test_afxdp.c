/* test_afxdp.c - AF_XDP capture on a veth pair: a child in its own network
 * namespace sends hand-built Ethernet frames from the peer end, the source
 * captures them on the host end through libxdp's XSK program. Needs root;
 * prints "skip: ..." when the kernel refuses AF_XDP. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice.h"
#include "source.h"
#include "test.h"
#include "live.h"

#define NETNS	"sl_xdp_test"
#define HOST_IF "slxdp0"
#define PEER_IF "slxdp1"
#define MQ_IF	"slxdq0" /* a second pair, two queues, no traffic */
#define BIG_N	5
#define BIG_SZ	2514 /* more than a 2048-byte UMEM frame holds */

static uint8_t big[BIG_SZ];

static void teardown(void)
{
	pair_del();
	sh("ip link del " MQ_IF " 2>/dev/null");
}

/* ---- XDP state --------------------------------------------------------- */

/* Does `ip link show` list an XDP program (any mode) on ifname? */
static int xdp_attached_on(const char *ifname)
{
	char line[512];
	FILE *f;
	int found = 0;

	snprintf(line, sizeof(line), "ip link show dev %s", ifname);
	f = popen(line, "r");
	if (!f)
		return -1;
	/* "... mtu 1500 xdpgeneric qdisc ...", "prog/xdp id 42 ..." */
	while (fgets(line, sizeof(line), f))
		if (strstr(line, " xdp") || strstr(line, "prog/xdp"))
			found = 1;
	if (pclose(f))
		return -1;
	return found;
}

static int xdp_attached(void)
{
	return xdp_attached_on(HOST_IF);
}

static const char *skip_reason;

/* ---- tests ------------------------------------------------------------ */

static void test_errors(void)
{
	struct sl_live_opts o;
	struct sl_source *src = (struct sl_source *)1;

	check_open_errors(sl_source_open_afxdp, "slxdp_nope");

	/* skb mode always copies */
	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_SKB;
	o.zero_copy = SL_ZC_ON;
	CHECK_EQ(sl_source_open_afxdp(&src, &o), SL_E_OPTION);
	CHECK(strstr(o.note, "zero-copy") != NULL);
	CHECK_EQ(xdp_attached(), 0);
}

/* Opens in skb mode, the mode veth surely has; sets skip_reason when the
 * kernel will not do AF_XDP at all. */
static struct sl_source *open_or_skip(struct sl_live_opts *o)
{
	struct sl_source *src = NULL;
	static char why[300];
	int rc;

	rc = sl_source_open_afxdp(&src, o);
	if (rc == -EPERM || rc == -EACCES || rc == -EAFNOSUPPORT ||
	    rc == -EOPNOTSUPP || rc == -ENOSYS) {
		snprintf(why, sizeof(why), "AF_XDP refused: %s (%s)",
			 strerror(-rc), o->note);
		skip_reason = why;
		return NULL;
	}
	CHECK_EQ(rc, 0);
	if (rc)
		fprintf(stderr, "open %s: %d %s\n", o->ifname, rc, o->note);
	return src;
}

/* Capture of the frame set, then of many, in the mode o asks for. */
static void capture(struct sl_live_opts *o, const char *want_note)
{
	struct sl_source_stats st;
	struct sl_source *src;
	struct got g;
	pid_t pid;

	src = open_or_skip(o);
	if (!src)
		return;
	if (want_note && strcmp(o->note, want_note)) {
		fprintf(stderr, "note '%s', expected '%s'\n", o->note,
			want_note);
		CHECK(0);
	}
	CHECK_EQ(xdp_attached(), 1);
	check_idle_then_set(src);

	/* more than the UMEM has frames: they must come back to the ring;
	 * read while they are sent (the RX ring holds 2048) */
	pid = send_start(NETNS, PEER_IF, NULL, 0, 600 * NFRAMES);
	collect(src, 600 * NFRAMES, expect_all, &g);
	CHECK_EQ(sender_exit(pid), 0);
	CHECK_EQ(g.pkts, 600 * NFRAMES);
	CHECK_EQ(g.bytes, 600 * set_bytes(0));
	CHECK_EQ(g.bad_data, 0);
	CHECK(g.max_batch <= SL_BATCH_MAX);

	CHECK_EQ(src->ops->stats(src, &st), 0);
	CHECK_EQ(st.received, 601 * NFRAMES);
	CHECK_EQ(st.kernel_drops, 0);
	CHECK_EQ(st.filtered, 0);
	CHECK_EQ(st.ring_errors, 0);
	src->ops->close(src);
	/* libxdp removed its program with the last socket */
	CHECK_EQ(xdp_attached(), 0);
}

static void test_skb(void)
{
	struct sl_live_opts o;

	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_SKB;
	capture(&o, "skb mode, copy");
}

static void test_auto(void)
{
	struct sl_live_opts o;
	struct sl_source *src = NULL;
	int rc;

	/* veth has native XDP but no zero-copy */
	opts_init(&o, HOST_IF);
	o.zero_copy = SL_ZC_ON;
	rc = sl_source_open_afxdp(&src, &o);
	CHECK(rc < 0);
	CHECK(src == NULL);
	if (!strstr(o.note, "cannot do zero-copy on " HOST_IF)) {
		fprintf(stderr, "zero-copy note: '%s'\n", o.note);
		CHECK(0);
	}
	CHECK_EQ(xdp_attached(), 0);

	/* auto falls back to copy */
	opts_init(&o, HOST_IF);
	capture(&o, "drv mode, copy");

	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_DRV;
	o.zero_copy = SL_ZC_OFF;
	capture(&o, "drv mode, copy");
}

static void test_filter(void)
{
	struct sl_live_opts o;
	struct sl_source_stats st;
	struct sl_source *src;
	struct got g;
	pid_t pid;
	int rc, extra = 0;

	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_SKB;
	o.filter = "udp";
	src = open_or_skip(&o);
	if (!src)
		return;
	check_udp_only(src);
	CHECK_EQ(src->ops->stats(src, &st), 0);
	CHECK_EQ(st.received, 8);
	CHECK_EQ(st.filtered, 12);

	/* rejected frames are recycled at once: a long run of them */
	pid = send_start(NETNS, PEER_IF, NULL, 0, 600 * NFRAMES);
	collect(src, 2400, expect_udp, &g);
	CHECK_EQ(sender_exit(pid), 0);
	CHECK_EQ(g.pkts, 2400);
	CHECK_EQ(g.bad_data, 0);
	/* rejected frames may still sit in the ring behind the last UDP one:
	 * read until idle so every one of them is counted */
	while ((rc = src->ops->next(src, &batch)) > 0)
		extra += rc;
	CHECK_EQ(rc, -EAGAIN);
	CHECK_EQ(extra, 0);
	CHECK_EQ(src->ops->stats(src, &st), 0);
	CHECK_EQ(st.filtered, 12 + 600 * 6);
	CHECK_EQ(st.kernel_drops, 0);
	src->ops->close(src);
	CHECK_EQ(xdp_attached(), 0);
}

static void test_snaplen(void)
{
	struct sl_live_opts o;
	struct sl_source *src;

	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_SKB;
	o.snaplen = 64;
	src = open_or_skip(&o);
	if (!src)
		return;
	check_snaplen(src, 64);
	src->ops->close(src);
}

/* One socket per queue; the program stays while a socket is left. */
static void test_busy(void)
{
	struct sl_live_opts o, o2;
	struct sl_source *a, *b2 = NULL;

	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_SKB;
	a = open_or_skip(&o);
	if (!a)
		return;
	opts_init(&o2, HOST_IF);
	o2.xdp_mode = SL_XDP_SKB;
	CHECK_EQ(sl_source_open_afxdp(&b2, &o2), -EBUSY);
	CHECK(b2 == NULL);
	CHECK(strstr(o2.note, "busy") != NULL);
	CHECK_EQ(xdp_attached(), 1);
	a->ops->close(a);
	CHECK_EQ(xdp_attached(), 0);
}

/* A frame longer than a UMEM frame is dropped by the kernel and counted. */
static void test_too_big(void)
{
	struct sl_live_opts o;
	struct sl_source_stats st;
	struct sl_source *src;
	struct got g;

	CHECK_EQ(set_mtu(3000), 0);
	CHECK(link_up(HOST_IF) == 0);
	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_SKB;
	src = open_or_skip(&o);
	if (!src)
		goto out;
	CHECK_EQ(send_from(NETNS, PEER_IF, big, BIG_SZ, BIG_N), 0);
	CHECK_EQ(send_set(1), 0);
	collect(src, NFRAMES, expect_all, &g);
	CHECK_EQ(g.pkts, NFRAMES);
	CHECK_EQ(g.bad_data, 0);
	CHECK_EQ(src->ops->stats(src, &st), 0);
	CHECK_EQ(st.received, NFRAMES);
	CHECK_EQ(st.kernel_drops, BIG_N);
	src->ops->close(src);
out:
	set_mtu(1500);
}

/* Sockets on two queues share libxdp's program: it stays until the last
 * one closes. A queue the device does not have is refused. */
static void test_queues(void)
{
	struct sl_live_opts o0, o1;
	struct sl_source *q0, *q1 = NULL;
	int rc;

	if (sh("ip link add " MQ_IF " numrxqueues 2 numtxqueues 2 type veth "
	       "peer name slxdq1 numrxqueues 2 numtxqueues 2") ||
	    sh("ip link set " MQ_IF " up")) {
		CHECK(0);
		return;
	}
	opts_init(&o0, MQ_IF);
	o0.xdp_mode = SL_XDP_SKB;
	q0 = open_or_skip(&o0);
	if (!q0)
		goto out;
	opts_init(&o1, MQ_IF);
	o1.xdp_mode = SL_XDP_SKB;
	o1.queue = 1;
	rc = sl_source_open_afxdp(&q1, &o1);
	CHECK_EQ(rc, 0);
	CHECK_EQ(xdp_attached_on(MQ_IF), 1);
	q0->ops->close(q0);
	CHECK_EQ(xdp_attached_on(MQ_IF), 1);
	if (q1)
		q1->ops->close(q1);
	CHECK_EQ(xdp_attached_on(MQ_IF), 0);

	opts_init(&o1, MQ_IF);
	o1.xdp_mode = SL_XDP_SKB;
	o1.queue = 7;
	q1 = (struct sl_source *)1;
	CHECK_EQ(sl_source_open_afxdp(&q1, &o1), -EINVAL);
	CHECK(q1 == NULL);
	CHECK(strstr(o1.note, "queue 7") != NULL);
	CHECK_EQ(xdp_attached_on(MQ_IF), 0);
out:
	sh("ip link del " MQ_IF);
}

/* The interface goes away under an open source: an error, sticky, and
 * close still works. Runs last: the pair is gone afterwards. */
static void test_gone(void)
{
	struct sl_live_opts o;
	struct sl_source *src = NULL;
	int rc;

	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_SKB;
	rc = sl_source_open_afxdp(&src, &o);
	CHECK_EQ(rc, 0);
	if (rc)
		return;
	check_gone(src, -ENETDOWN);
	src->ops->close(src);
}

int main(void)
{
	/* in order until AF_XDP turns out to be refused; test_gone() is last:
	 * it removes the host end */
	static void (*const tests[])(void) = {
	    test_errors, test_skb,     test_auto,   test_filter, test_snaplen,
	    test_busy,	 test_too_big, test_queues, test_gone,
	};
	const char *why;
	size_t i;
	int fd;

	if (geteuid() != 0) {
		printf("skip: needs root (network namespaces, AF_XDP)\n");
		return test_done();
	}
	if (lock_run(NETNS)) {
		printf("skip: cannot lock /tmp/" NETNS ".lock\n");
		return test_done();
	}
	fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		printf("skip: no AF_XDP sockets: %s\n", strerror(errno));
		return test_done();
	}
	close(fd);
	teardown(); /* an earlier run's MQ_IF */
	why = pair_add(NETNS, HOST_IF, PEER_IF);
	if (why) {
		teardown();
		printf("skip: %s\n", why);
		return test_done();
	}
	atexit(teardown);
	build_frames();
	ip4(big, 17, BIG_SZ - 14 - 28, 7);

	for (i = 0; i < sizeof(tests) / sizeof(tests[0]) && !skip_reason; i++)
		tests[i]();
	if (skip_reason)
		printf("skip: %s\n", skip_reason);
	return test_done();
}
