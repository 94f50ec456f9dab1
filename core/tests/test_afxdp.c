/* test_afxdp.c - AF_XDP capture on a veth pair: a child in its own network
 * namespace sends hand-built Ethernet frames from the peer end, the source
 * captures them on the host end through libxdp's XSK program. Needs root;
 * prints "skip: ..." when the kernel refuses AF_XDP. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sluice.h"
#include "source.h"
#include "test.h"

#define NETNS	"sl_xdp_test"
#define HOST_IF "slxdp0"
#define PEER_IF "slxdp1"
#define NFRAMES 10
#define FMAX	9100
#define BIG_N	5
#define BIG_SZ	2514 /* more than a 2048-byte UMEM frame holds */

struct frames {
	uint8_t d[NFRAMES][FMAX];
	uint32_t len[NFRAMES];
	int udp[NFRAMES];
};

static uint8_t host_mac[6];
static const uint8_t peer_mac[6] = {0x02, 0x5c, 0x00, 0x00, 0x00, 0x01};
static struct frames fr;
static uint8_t big[BIG_SZ];

/* ---- environment ------------------------------------------------------ */

static int sh(const char *cmd)
{
	int rc = system(cmd);

	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

#define MQ_IF "slxdq0" /* a second pair, two queues, no traffic */

static void teardown(void)
{
	sh("ip netns del " NETNS " 2>/dev/null; "
	   "ip link del " HOST_IF " 2>/dev/null; "
	   "ip link del " MQ_IF " 2>/dev/null");
}

static int read_mac(const char *ifname, uint8_t mac[6])
{
	char path[128];
	unsigned m[6];
	FILE *f;
	int n;

	snprintf(path, sizeof(path), "/sys/class/net/%s/address", ifname);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fscanf(f, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4],
		   &m[5]);
	fclose(f);
	if (n != 6)
		return -1;
	for (n = 0; n < 6; n++)
		mac[n] = (uint8_t)m[n];
	return 0;
}

static int link_up(const char *ifname)
{
	char path[128], state[32] = "";
	FILE *f;
	int i;

	snprintf(path, sizeof(path), "/sys/class/net/%s/operstate", ifname);
	for (i = 0; i < 200; i++) {
		f = fopen(path, "r");
		if (f) {
			if (!fgets(state, sizeof(state), f))
				state[0] = '\0';
			fclose(f);
		}
		if (!strncmp(state, "up", 2))
			return 0;
		usleep(10000);
	}
	return -1;
}

/* A veth pair, the peer end in its own namespace, no IPv6 (so the kernel
 * sends nothing of its own: no addresses, no router solicitations). */
static int setup(void)
{
	teardown();
	if (sh("ip netns add " NETNS) ||
	    sh("ip link add " HOST_IF " type veth peer name " PEER_IF
	       " netns " NETNS) ||
	    sh("echo 1 > /proc/sys/net/ipv6/conf/" HOST_IF "/disable_ipv6") ||
	    sh("ip netns exec " NETNS " sh -c 'echo 1 > "
	       "/proc/sys/net/ipv6/conf/" PEER_IF "/disable_ipv6'") ||
	    sh("ip link set " HOST_IF " up") ||
	    sh("ip -n " NETNS " link set " PEER_IF " up"))
		return -1;
	if (link_up(HOST_IF) || read_mac(HOST_IF, host_mac))
		return -1;
	return 0;
}

static int set_mtu(int mtu)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd),
		 "ip link set " HOST_IF " mtu %d && "
		 "ip -n " NETNS " link set " PEER_IF " mtu %d",
		 mtu, mtu);
	return sh(cmd);
}

/* ---- frames ----------------------------------------------------------- */

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static uint32_t eth(uint8_t *f, unsigned type)
{
	memcpy(f, host_mac, 6);
	memcpy(f + 6, peer_mac, 6);
	put16(f + 12, type);
	return 14;
}

/* Ethernet + IPv4 + proto header + payload bytes. */
static uint32_t ip4(uint8_t *f, int proto, uint32_t payload, int seed)
{
	uint32_t l4 = proto == 6 ? 20 : 8, n = eth(f, 0x0800);
	uint8_t *ip = f + n, *l = ip + 20;
	uint32_t i;

	ip[0] = 0x45;
	put16(ip + 2, 20 + l4 + payload);
	ip[8] = 64;
	ip[9] = (uint8_t)proto;
	ip[12] = 10, ip[15] = 1;
	ip[16] = 10, ip[19] = 2;
	if (proto == 1) {
		l[0] = 8; /* echo request */
		put16(l + 4, (unsigned)seed);
	} else {
		put16(l, 1000 + (unsigned)seed);
		put16(l + 2, 53);
		if (proto == 6)
			l[12] = 5 << 4, l[13] = 0x02;
		else
			put16(l + 4, 8 + payload);
	}
	for (i = 0; i < payload; i++)
		l[l4 + i] = (uint8_t)(seed + i);
	return n + 20 + l4 + payload;
}

static uint32_t ip6_udp(uint8_t *f, uint32_t payload)
{
	uint32_t n = eth(f, 0x86dd), i;
	uint8_t *ip = f + n, *l = ip + 40;

	ip[0] = 0x60;
	put16(ip + 4, 8 + payload);
	ip[6] = 17;
	ip[7] = 64;
	ip[8] = 0xfd, ip[23] = 1;
	ip[24] = 0xfd, ip[39] = 2;
	put16(l, 5000);
	put16(l + 2, 5001);
	put16(l + 4, 8 + payload);
	for (i = 0; i < payload; i++)
		l[8 + i] = (uint8_t)i;
	return n + 40 + 8 + payload;
}

static uint32_t arp(uint8_t *f)
{
	uint32_t n = eth(f, 0x0806);
	uint8_t *a = f + n;

	memset(f, 0xff, 6);
	put16(a, 1);
	put16(a + 2, 0x0800);
	a[4] = 6, a[5] = 4;
	put16(a + 6, 1);
	memcpy(a + 8, peer_mac, 6);
	a[14] = 10, a[17] = 2;
	a[24] = 10, a[27] = 1;
	return n + 28;
}

static void build_frames(void)
{
	static const struct {
		int proto; /* 0: ARP, 17: UDP, 6: TCP, 1: ICMP, 41: UDP/IPv6 */
		uint32_t payload;
	} spec[NFRAMES] = {
	    {17, 18},	{6, 6}, {17, 200}, {1, 56},  {6, 1000},
	    {17, 1472}, {0, 0}, {41, 30},  {6, 300}, {1, 10},
	};
	int i;

	memset(&fr, 0, sizeof(fr));
	for (i = 0; i < NFRAMES; i++) {
		if (spec[i].proto == 0)
			fr.len[i] = arp(fr.d[i]);
		else if (spec[i].proto == 41)
			fr.len[i] = ip6_udp(fr.d[i], spec[i].payload);
		else
			fr.len[i] =
			    ip4(fr.d[i], spec[i].proto, spec[i].payload, i);
		fr.udp[i] = spec[i].proto == 17 || spec[i].proto == 41;
	}
	ip4(big, 17, BIG_SZ - 14 - 28, 7);
}

/* ---- sender ----------------------------------------------------------- */

/* Starts a child that sends the frame set (or one frame) count times from
 * ifname, inside netns when given. Returns its pid. */
static pid_t send_start(const char *netns, const char *ifname,
			const uint8_t *one, uint32_t one_len, int count)
{
	struct sockaddr_ll sll = {0};
	char path[128];
	pid_t pid;
	int fd, i;

	pid = fork();
	if (pid != 0)
		return pid;
	if (netns) {
		snprintf(path, sizeof(path), "/var/run/netns/%s", netns);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET))
			_exit(2);
		close(fd);
	}
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (fd < 0)
		_exit(3);
	sll.sll_family = AF_PACKET;
	sll.sll_ifindex = (int)if_nametoindex(ifname);
	if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof(sll)))
		_exit(4);
	for (i = 0; i < count; i++) {
		const uint8_t *d = one ? one : fr.d[i % NFRAMES];
		uint32_t n = one ? one_len : fr.len[i % NFRAMES];

		if (send(fd, d, n, 0) != (ssize_t)n)
			_exit(5);
		if (i % 64 == 63) /* stay under netdev_max_backlog */
			usleep(2000);
	}
	_exit(0);
}

/* 0: the child sent everything. */
static int send_wait(pid_t pid)
{
	int status;

	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int send_from(const char *netns, const char *ifname, const uint8_t *one,
		     uint32_t one_len, int count)
{
	return send_wait(send_start(netns, ifname, one, one_len, count));
}

static int send_set(int rounds)
{
	return send_from(NETNS, PEER_IF, NULL, 0, rounds * NFRAMES);
}

/* ---- capture ---------------------------------------------------------- */

static struct sl_packet_batch batch;

struct got {
	uint64_t pkts, bytes, caplen;
	int bad_data; /* packets whose bytes differ from what was sent */
	int bad_meta; /* wrong linktype, ifindex or ts */
	int batches;
	int max_batch;
	int err; /* a next() result other than a count or -EAGAIN */
};

/* Reads until `want` packets came or ~1 s passed without any. Checks each
 * packet against the frame expected next: expect(i) gives frame i's bytes
 * and length. */
typedef const uint8_t *(*expect_fn)(uint64_t i, uint32_t *len);

static void collect(struct sl_source *src, uint64_t want, expect_fn expect,
		    struct got *g)
{
	int idle = 0, rc, i;
	uint64_t now;
	struct timespec ts;

	memset(g, 0, sizeof(*g));
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	while (g->pkts < want && idle < 20) {
		rc = src->ops->next(src, &batch);
		if (rc == -EAGAIN) {
			idle++;
			continue;
		}
		if (rc <= 0) {
			g->err = rc ? rc : -1;
			break;
		}
		idle = 0;
		g->batches++;
		if (rc > g->max_batch)
			g->max_batch = rc;
		if ((uint32_t)rc != batch.count)
			g->bad_meta++;
		for (i = 0; i < rc; i++) {
			const struct sl_packet *p = &batch.pkt[i];
			uint32_t len = 0;
			const uint8_t *d = expect(g->pkts, &len);
			uint32_t cmp = p->caplen < len ? p->caplen : len;

			if (p->wirelen != len || memcmp(p->data, d, cmp))
				g->bad_data++;
			if (p->linktype != SL_LINK_EN10MB ||
			    p->ifindex != if_nametoindex(HOST_IF) ||
			    p->ts_ns + 5000000000ULL < now ||
			    p->ts_ns > now + 60000000000ULL)
				g->bad_meta++;
			g->pkts++;
			g->bytes += p->wirelen;
			g->caplen += p->caplen;
		}
	}
}

static const uint8_t *expect_all(uint64_t i, uint32_t *len)
{
	*len = fr.len[i % NFRAMES];
	return fr.d[i % NFRAMES];
}

static const uint8_t *expect_udp(uint64_t i, uint32_t *len)
{
	int k, n = (int)(i % 4); /* the n-th UDP frame of the set */

	for (k = 0; k < NFRAMES - 1; k++)
		if (fr.udp[k] && n-- == 0)
			break;
	*len = fr.len[k];
	return fr.d[k];
}

static uint64_t set_bytes(int udp_only)
{
	uint64_t sum = 0;
	int i;

	for (i = 0; i < NFRAMES; i++)
		if (!udp_only || fr.udp[i])
			sum += fr.len[i];
	return sum;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void opts_init(struct sl_live_opts *o, const char *ifname)
{
	memset(o, 0, sizeof(*o));
	o->ifname = ifname;
	o->poll_ms = 50;
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

	opts_init(&o, "slxdp_nope");
	CHECK_EQ(sl_source_open_afxdp(&src, &o), -ENODEV);
	CHECK(src == NULL);
	CHECK(o.note[0] != '\0');

	opts_init(&o, HOST_IF);
	o.filter = "udp and and";
	CHECK_EQ(sl_source_open_afxdp(&src, &o), -EINVAL);
	CHECK(src == NULL);
	CHECK(strstr(o.note, "filter") != NULL);

	opts_init(&o, NULL);
	CHECK_EQ(sl_source_open_afxdp(&src, &o), -EINVAL);
	CHECK_EQ(sl_source_open_afxdp(NULL, &o), -EINVAL);

	/* skb mode always copies */
	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_SKB;
	o.zero_copy = SL_ZC_ON;
	CHECK_EQ(sl_source_open_afxdp(&src, &o), -EINVAL);
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
	int64_t t0;
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
	CHECK_EQ(src->ops->linktype(src), SL_LINK_EN10MB);

	/* idle: nothing on the wire; the wait is poll_ms */
	t0 = mono_ms();
	CHECK_EQ(src->ops->next(src, &batch), -EAGAIN);
	t0 = mono_ms() - t0;
	CHECK(t0 >= 40 && t0 < 1000);
	CHECK_EQ(batch.count, 0);

	CHECK_EQ(send_set(1), 0);
	collect(src, NFRAMES, expect_all, &g);
	CHECK_EQ(g.err, 0);
	CHECK_EQ(g.pkts, NFRAMES);
	CHECK_EQ(g.bytes, set_bytes(0));
	CHECK_EQ(g.caplen, set_bytes(0));
	CHECK_EQ(g.bad_data, 0);
	CHECK_EQ(g.bad_meta, 0);
	CHECK_EQ(src->ops->next(src, &batch), -EAGAIN);

	/* more than the UMEM has frames: they must come back to the ring;
	 * read while they are sent (the RX ring holds 2048) */
	pid = send_start(NETNS, PEER_IF, NULL, 0, 600 * NFRAMES);
	collect(src, 600 * NFRAMES, expect_all, &g);
	CHECK_EQ(send_wait(pid), 0);
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

	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_SKB;
	o.filter = "udp";
	src = open_or_skip(&o);
	if (!src)
		return;
	CHECK_EQ(send_set(2), 0);
	collect(src, 8, expect_udp, &g);
	CHECK_EQ(g.pkts, 8);
	CHECK_EQ(g.bytes, 2 * set_bytes(1));
	CHECK_EQ(g.bad_data, 0);
	CHECK_EQ(src->ops->next(src, &batch), -EAGAIN);
	CHECK_EQ(src->ops->stats(src, &st), 0);
	CHECK_EQ(st.received, 8);
	CHECK_EQ(st.filtered, 12);

	/* rejected frames are recycled at once: a long run of them */
	pid = send_start(NETNS, PEER_IF, NULL, 0, 600 * NFRAMES);
	collect(src, 2400, expect_udp, &g);
	CHECK_EQ(send_wait(pid), 0);
	CHECK_EQ(g.pkts, 2400);
	CHECK_EQ(g.bad_data, 0);
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
	struct got g;
	uint64_t cap = 0;
	int i;

	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_SKB;
	o.snaplen = 64;
	src = open_or_skip(&o);
	if (!src)
		return;
	CHECK_EQ(send_set(1), 0);
	collect(src, NFRAMES, expect_all, &g);
	for (i = 0; i < NFRAMES; i++)
		cap += fr.len[i] < 64 ? fr.len[i] : 64;
	CHECK_EQ(g.pkts, NFRAMES);
	CHECK_EQ(g.bytes, set_bytes(0));
	CHECK_EQ(g.caplen, cap);
	CHECK_EQ(g.bad_data, 0);
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
	int rc, i;

	opts_init(&o, HOST_IF);
	o.xdp_mode = SL_XDP_SKB;
	rc = sl_source_open_afxdp(&src, &o);
	CHECK_EQ(rc, 0);
	if (rc)
		return;
	CHECK_EQ(src->ops->next(src, &batch), -EAGAIN);
	CHECK_EQ(sh("ip link del " HOST_IF), 0);
	for (i = 0; i < 10; i++) {
		rc = src->ops->next(src, &batch);
		if (rc != -EAGAIN)
			break;
	}
	CHECK_EQ(rc, -ENETDOWN);
	CHECK_EQ(batch.count, 0);
	CHECK_EQ(src->ops->next(src, &batch), -ENETDOWN);
	src->ops->close(src);
}

int main(void)
{
	int lock, fd;

	if (geteuid() != 0) {
		printf("skip: needs root (network namespaces, AF_XDP)\n");
		return test_done();
	}
	/* one run at a time: the names are fixed */
	lock = open("/tmp/" NETNS ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock < 0 || flock(lock, LOCK_EX)) {
		printf("skip: cannot lock /tmp/" NETNS ".lock\n");
		return test_done();
	}
	fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		printf("skip: no AF_XDP sockets: %s\n", strerror(errno));
		return test_done();
	}
	close(fd);
	if (setup()) {
		teardown();
		printf("skip: cannot create netns/veth pair\n");
		return test_done();
	}
	atexit(teardown);
	build_frames();

	test_errors();
	test_skb();
	if (!skip_reason)
		test_auto();
	if (!skip_reason)
		test_filter();
	if (!skip_reason)
		test_snaplen();
	if (!skip_reason)
		test_busy();
	if (!skip_reason)
		test_too_big();
	if (!skip_reason)
		test_queues();
	if (!skip_reason)
		test_gone();
	if (skip_reason)
		printf("skip: %s\n", skip_reason);
	return test_done();
}
