/* test_pcap_live.c - libpcap live capture on a veth pair: a child in its
 * own network namespace sends hand-built Ethernet frames from the peer end,
 * the source captures them on the host end. Needs root. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
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

#define NETNS	 "sl_pcl_test"
#define HOST_IF	 "slpcl0"
#define PEER_IF	 "slpcl1"
#define NFRAMES	 10
#define FMAX	 9100
#define JUMBO_N	 600
#define JUMBO_SZ 9014

struct frames {
	uint8_t d[NFRAMES][FMAX];
	uint32_t len[NFRAMES];
	int udp[NFRAMES];
};

static uint8_t host_mac[6];
static const uint8_t peer_mac[6] = {0x02, 0x5c, 0x00, 0x00, 0x00, 0x01};
static struct frames fr;
static uint8_t jumbo[JUMBO_SZ];

/* ---- environment ------------------------------------------------------ */

static int sh(const char *cmd)
{
	int rc = system(cmd);

	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void teardown(void)
{
	sh("ip netns del " NETNS " 2>/dev/null; "
	   "ip link del " HOST_IF " 2>/dev/null");
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
	ip4(jumbo, 17, JUMBO_SZ - 14 - 28, 7);
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

static const uint8_t *expect_jumbo(uint64_t i, uint32_t *len)
{
	*len = JUMBO_SZ;
	return jumbo;
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

/* ---- tests ------------------------------------------------------------ */

static void test_errors(void)
{
	struct sl_live_opts o;
	struct sl_source *src = (struct sl_source *)1;

	opts_init(&o, "slpcl_nope");
	CHECK_EQ(sl_source_open_pcap_live(&src, &o), -ENODEV);
	CHECK(src == NULL);
	CHECK(o.note[0] != '\0');

	opts_init(&o, HOST_IF);
	o.filter = "udp and and";
	CHECK_EQ(sl_source_open_pcap_live(&src, &o), -EINVAL);
	CHECK(src == NULL);
	CHECK(strstr(o.note, "filter") != NULL);

	opts_init(&o, NULL);
	CHECK_EQ(sl_source_open_pcap_live(&src, &o), -EINVAL);
	CHECK_EQ(sl_source_open_pcap_live(NULL, &o), -EINVAL);
}

static void test_capture(void)
{
	struct sl_live_opts o;
	struct sl_source_stats st;
	struct sl_source *src = NULL;
	struct got g;
	int64_t t0;
	int rc;

	opts_init(&o, HOST_IF);
	rc = sl_source_open_pcap_live(&src, &o);
	CHECK_EQ(rc, 0);
	if (rc) {
		fprintf(stderr, "open: %s\n", o.note);
		return;
	}
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
	/* and nothing else */
	CHECK_EQ(src->ops->next(src, &batch), -EAGAIN);

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
	struct sl_source *src = NULL;
	struct got g;
	int rc;

	opts_init(&o, HOST_IF);
	o.filter = "udp";
	rc = sl_source_open_pcap_live(&src, &o);
	CHECK_EQ(rc, 0);
	if (rc)
		return;
	CHECK_EQ(send_set(2), 0);
	collect(src, 8, expect_udp, &g);
	CHECK_EQ(g.pkts, 8);
	CHECK_EQ(g.bytes, 2 * set_bytes(1));
	CHECK_EQ(g.bad_data, 0);
	CHECK_EQ(src->ops->next(src, &batch), -EAGAIN);
	src->ops->close(src);
}

static void test_snaplen(void)
{
	struct sl_live_opts o;
	struct sl_source *src = NULL;
	struct got g;
	uint64_t cap = 0;
	int rc, i;

	opts_init(&o, HOST_IF);
	o.snaplen = 64;
	rc = sl_source_open_pcap_live(&src, &o);
	CHECK_EQ(rc, 0);
	if (rc)
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

/* Packets from the host end itself are outgoing there. */
static void test_ignore_outgoing(void)
{
	struct sl_live_opts o;
	struct sl_source *src = NULL;
	struct got g;
	int rc;

	opts_init(&o, HOST_IF);
	o.ignore_outgoing = 1;
	rc = sl_source_open_pcap_live(&src, &o);
	CHECK_EQ(rc, 0);
	if (rc)
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
	rc = sl_source_open_pcap_live(&src, &o);
	CHECK_EQ(rc, 0);
	if (rc)
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
	struct sl_source *src = NULL;
	struct got g;
	int rc;

	CHECK_EQ(set_mtu(9000), 0);
	CHECK(link_up(HOST_IF) == 0);
	opts_init(&o, HOST_IF);
	rc = sl_source_open_pcap_live(&src, &o);
	CHECK_EQ(rc, 0);
	if (rc)
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
	struct sl_source *src = NULL;
	int rc, i;

	opts_init(&o, HOST_IF);
	rc = sl_source_open_pcap_live(&src, &o);
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
	CHECK_EQ(rc, -ENODEV);
	CHECK_EQ(batch.count, 0);
	CHECK_EQ(src->ops->next(src, &batch), -ENODEV);
	src->ops->close(src);
}

int main(void)
{
	int lock;

	if (geteuid() != 0) {
		printf("skip: needs root (network namespaces, raw sockets)\n");
		return test_done();
	}
	/* one run at a time: the names are fixed */
	lock = open("/tmp/" NETNS ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock < 0 || flock(lock, LOCK_EX)) {
		printf("skip: cannot lock /tmp/" NETNS ".lock\n");
		return test_done();
	}
	if (setup()) {
		teardown();
		printf("skip: cannot create netns/veth pair\n");
		return test_done();
	}
	atexit(teardown);
	build_frames();

	test_errors();
	test_capture();
	test_filter();
	test_snaplen();
	test_ignore_outgoing();
	test_jumbo();
	test_gone();
	return test_done();
}
