/* test_pcap_live.c - libpcap live capture on a veth pair: a child in its
 * own network namespace sends hand-built Ethernet frames from the peer end,
 * the source captures them on the host end. Needs root. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sluice.h"
#include "source.h"
#include "test.h"
#include "live.h"

#define NETNS	 "sl_pcl_test"
#define HOST_IF	 "slpcl0"
#define PEER_IF	 "slpcl1"
#define JUMBO_N	 600
#define JUMBO_SZ 9014

static uint8_t jumbo[JUMBO_SZ];

static const uint8_t *expect_jumbo(uint64_t i, uint32_t *len)
{
	*len = JUMBO_SZ;
	return jumbo;
}

/* ---- tests ------------------------------------------------------------ */

/* Opens the capture o asks for, with one check that it opened. */
static struct sl_source *open_src(struct sl_live_opts *o)
{
	struct sl_source *src = NULL;
	int rc;

	rc = sl_source_open_pcap_live(&src, o);
	CHECK_EQ(rc, 0);
	if (rc)
		fprintf(stderr, "open %s: %d %s\n", o->ifname, rc, o->note);
	return src;
}

static void test_capture(void)
{
	struct sl_live_opts o;
	struct sl_source_stats st;
	struct sl_source *src;
	struct got g;

	opts_init(&o, HOST_IF);
	src = open_src(&o);
	if (!src)
		return;
	check_idle_then_set(src);

	/* many: batches of at most SL_BATCH_MAX */
	CHECK_EQ(send_set(300), 0);
	collect(src, 300 * NFRAMES, expect_all, &g);
	CHECK_EQ(g.pkts, 300 * NFRAMES);
	CHECK_EQ(g.bytes, 300 * set_bytes(0));
	CHECK_EQ(g.bad_data, 0);
	CHECK(g.max_batch <= SL_BATCH_MAX);
	CHECK(g.batches >= 300 * NFRAMES / SL_BATCH_MAX);

	CHECK_EQ(src->ops->stats(src, &st), 0);
	CHECK_EQ(st.received, 301 * NFRAMES);
	CHECK_EQ(st.kernel_drops, 0);
	CHECK_EQ(st.filtered, 0);
	src->ops->close(src);
}

static void test_filter(void)
{
	struct sl_live_opts o;
	struct sl_source *src;

	opts_init(&o, HOST_IF);
	o.filter = "udp";
	src = open_src(&o);
	if (!src)
		return;
	check_udp_only(src);
	src->ops->close(src);
}

static void test_snaplen(void)
{
	struct sl_live_opts o;
	struct sl_source *src;

	opts_init(&o, HOST_IF);
	o.snaplen = 64;
	src = open_src(&o);
	if (!src)
		return;
	check_snaplen(src, 64);
	src->ops->close(src);
}

/* Packets from the host end itself are outgoing there. */
static void test_ignore_outgoing(void)
{
	struct sl_live_opts o;
	struct sl_source *src;
	struct got g;

	opts_init(&o, HOST_IF);
	o.ignore_outgoing = 1;
	src = open_src(&o);
	if (!src)
		return;
	CHECK_EQ(send_from(NULL, HOST_IF, NULL, 0, NFRAMES), 0);
	CHECK_EQ(send_set(1), 0);
	collect(src, NFRAMES, expect_all, &g);
	CHECK_EQ(g.pkts, NFRAMES);
	CHECK_EQ(g.bad_data, 0);
	CHECK_EQ(src->ops->next(src, &batch), -EAGAIN);
	src->ops->close(src);

	/* without the option the host's own frames are seen too */
	opts_init(&o, HOST_IF);
	src = open_src(&o);
	if (!src)
		return;
	CHECK_EQ(send_from(NULL, HOST_IF, NULL, 0, NFRAMES), 0);
	collect(src, NFRAMES, expect_all, &g);
	CHECK_EQ(g.pkts, NFRAMES);
	src->ops->close(src);
}

/* Jumbo frames fill the arena before SL_BATCH_MAX packets: batches end
 * early and the rest waits in libpcap's ring. */
static void test_jumbo(void)
{
	struct sl_live_opts o;
	struct sl_source *src;
	struct got g;

	CHECK_EQ(set_mtu(9000), 0);
	CHECK(link_up(HOST_IF) == 0);
	opts_init(&o, HOST_IF);
	src = open_src(&o);
	if (!src)
		goto out;
	CHECK_EQ(send_from(NETNS, PEER_IF, jumbo, JUMBO_SZ, JUMBO_N), 0);
	collect(src, JUMBO_N, expect_jumbo, &g);
	CHECK_EQ(g.pkts, JUMBO_N);
	CHECK_EQ(g.bytes, (uint64_t)JUMBO_N * JUMBO_SZ);
	CHECK_EQ(g.caplen, (uint64_t)JUMBO_N * JUMBO_SZ);
	CHECK_EQ(g.bad_data, 0);
	CHECK(g.max_batch < SL_BATCH_MAX);
	src->ops->close(src);
out:
	set_mtu(1500);
}

/* The interface goes away under an open source: an error, sticky, and
 * close still works. Runs last: the pair is gone afterwards. */
static void test_gone(void)
{
	struct sl_live_opts o;
	struct sl_source *src;

	opts_init(&o, HOST_IF);
	src = open_src(&o);
	if (!src)
		return;
	check_gone(src, -ENODEV);
	src->ops->close(src);
}

int main(void)
{
	const char *why;

	if (geteuid() != 0) {
		printf("skip: needs root (network namespaces, raw sockets)\n");
		return test_done();
	}
	if (lock_run(NETNS)) {
		printf("skip: cannot lock /tmp/" NETNS ".lock\n");
		return test_done();
	}
	why = pair_add(NETNS, HOST_IF, PEER_IF);
	if (why) {
		pair_del();
		printf("skip: %s\n", why);
		return test_done();
	}
	atexit(pair_del);
	build_frames();
	ip4(jumbo, 17, JUMBO_SZ - 14 - 28, 7);

	check_open_errors(sl_source_open_pcap_live, "slpcl_nope");
	test_capture();
	test_filter();
	test_snaplen();
	test_ignore_outgoing();
	test_jumbo();
	test_gone(); /* last: it removes the host end */
	return test_done();
}
