/* live.h - what the live capture tests (test_afpacket.c, test_afxdp.c,
 * test_pcap_live.c) share: a veth pair whose peer end sits in a network
 * namespace of its own, a lock for the tests whose names are fixed, a
 * forked sender that enters the namespace and writes frames to a packet
 * socket on the peer end, and (AF_XDP, libpcap) a set of hand-built frames
 * with a reader that checks every captured packet against it, and the
 * checks that both those sources pass alike.
 *
 * Each test uses a part of it, so everything here is static inline. The
 * test names its pair with pair_add(). Needs root. */
#ifndef SL_LIVE_H
#define SL_LIVE_H

#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
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

#define NS_PER_S  1000000000ULL
#define NS_PER_MS 1000000ULL

/* ---- environment ------------------------------------------------------ */

/* Runs the shell command fmt makes: its exit status, -1 if it did not
 * exit. */
__attribute__((format(printf, 1, 2))) static inline int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static inline uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static inline int64_t mono_ms(void)
{
	return (int64_t)(now_ns(CLOCK_MONOTONIC) / NS_PER_MS);
}

static inline void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* One run at a time for a test whose names are fixed: waits for the lock
 * /tmp/NAME.lock, held until the process exits. 0, or -1. */
static inline int lock_run(const char *name)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "/tmp/%s.lock", name);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (flock(fd, LOCK_EX)) {
		close(fd);
		return -1;
	}
	return 0;
}

static inline int read_mac(const char *ifname, uint8_t mac[6])
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

/* Waits up to 2 s for ifname's operstate to be "up": 0, or -1. */
static inline int link_up(const char *ifname)
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

/* ---- the veth pair ---------------------------------------------------- */

/* The sources capture on host; peer, its other end, is in namespace ns. */
static struct {
	char ns[32];
	char host[IF_NAMESIZE], peer[IF_NAMESIZE];
	unsigned int host_index;
	uint8_t host_mac[6];
	int made; /* there is something for pair_del() to remove */
} pair;

/* Removes whatever stands under the pair's names. */
static inline void pair_remove(void)
{
	sh("ip netns del %s 2>/dev/null; ip link del %s 2>/dev/null", pair.ns,
	   pair.host);
}

/* Removes the pair and its namespace, once. */
static inline void pair_del(void)
{
	if (!pair.made)
		return;
	pair.made = 0;
	pair_remove();
}

/* Makes the pair with these names (what an earlier run left under them
 * goes first): both ends up and without IPv6, so the kernel sends nothing
 * of its own (no addresses, no router solicitations, no MLD reports).
 * NULL, or what failed; pair_del() then removes what was made. */
static inline const char *pair_add(const char *ns, const char *host,
				   const char *peer)
{
	snprintf(pair.ns, sizeof(pair.ns), "%s", ns);
	snprintf(pair.host, sizeof(pair.host), "%s", host);
	snprintf(pair.peer, sizeof(pair.peer), "%s", peer);
	pair_remove();
	if (sh("ip netns add %s", pair.ns))
		return "cannot create a network namespace";
	pair.made = 1;
	if (sh("ip link add %s type veth peer name %s netns %s", pair.host,
	       pair.peer, pair.ns))
		return "cannot create a veth pair";
	/* where IPv6 is missing altogether there is nothing to turn off */
	sh("echo 1 > /proc/sys/net/ipv6/conf/%s/disable_ipv6 2>/dev/null",
	   pair.host);
	sh("ip netns exec %s sh -c 'echo 1 > "
	   "/proc/sys/net/ipv6/conf/%s/disable_ipv6' 2>/dev/null",
	   pair.ns, pair.peer);
	if (sh("ip link set %s up", pair.host) ||
	    sh("ip -n %s link set %s up", pair.ns, pair.peer))
		return "cannot bring the veth pair up";
	if (link_up(pair.host))
		return "the veth pair does not come up";
	pair.host_index = if_nametoindex(pair.host);
	if (!pair.host_index || read_mac(pair.host, pair.host_mac))
		return "cannot read the host end's index and address";
	return NULL;
}

/* Both ends at once: a frame longer than the peer's MTU is not sent. */
static inline int set_mtu(int mtu)
{
	return sh("ip link set %s mtu %d && ip -n %s link set %s mtu %d",
		  pair.host, mtu, pair.ns, pair.peer, mtu);
}

/* ---- sender ----------------------------------------------------------- */

/* What a sender child does with its packet socket: 0 when all was sent. */
typedef int (*send_fn)(int fd, const void *arg);

/* Forks a child that enters the namespace netns (NULL: stays in this one),
 * binds a packet socket to ifname there and exits with fn(fd, arg), or
 * with 2 to 4 when it does not get that far. Returns its pid (-1: none). */
static inline pid_t fork_sender(const char *netns, const char *ifname,
				send_fn fn, const void *arg)
{
	struct sockaddr_ll sll = {0};
	char path[128];
	pid_t pid;
	int fd;

	fflush(NULL);
	pid = fork();
	if (pid != 0)
		return pid;
	if (netns) {
		snprintf(path, sizeof(path), "/run/netns/%s", netns);
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
	_exit(fn(fd, arg));
}

/* The sender child's exit status (0: it sent everything), or -1. */
static inline int sender_exit(pid_t pid)
{
	int status;

	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- the frame set (test_afxdp.c, test_pcap_live.c) ------------------- */

#define NFRAMES 10
#define FMAX	9100

static const uint8_t peer_mac[6] = {0x02, 0x5c, 0x00, 0x00, 0x00, 0x01};

static struct frames {
	uint8_t d[NFRAMES][FMAX];
	uint32_t len[NFRAMES];
	int udp[NFRAMES];
} fr;

/* Ethernet header from the peer to the host end. */
static inline uint32_t eth(uint8_t *f, unsigned type)
{
	memcpy(f, pair.host_mac, 6);
	memcpy(f + 6, peer_mac, 6);
	put16(f + 12, type);
	return 14;
}

/* Ethernet + IPv4 + proto header + payload bytes. */
static inline uint32_t ip4(uint8_t *f, int proto, uint32_t payload, int seed)
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

static inline uint32_t ip6_udp(uint8_t *f, uint32_t payload)
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

static inline uint32_t arp(uint8_t *f)
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

/* After pair_add(): the frames carry the host end's address. */
static inline void build_frames(void)
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
}

struct send_job {
	const uint8_t *one; /* NULL: the frame set, in order */
	uint32_t one_len;
	int count;
};

static inline int send_frames(int fd, const void *arg)
{
	const struct send_job *j = arg;
	int i;

	for (i = 0; i < j->count; i++) {
		const uint8_t *d = j->one ? j->one : fr.d[i % NFRAMES];
		uint32_t n = j->one ? j->one_len : fr.len[i % NFRAMES];

		if (send(fd, d, n, 0) != (ssize_t)n)
			return 5;
		if (i % 64 == 63) /* stay under netdev_max_backlog */
			usleep(2000);
	}
	return 0;
}

/* Starts a child that sends the frame set (or one frame) count times from
 * ifname, inside netns when given. Returns its pid. */
static inline pid_t send_start(const char *netns, const char *ifname,
			       const uint8_t *one, uint32_t one_len, int count)
{
	struct send_job j = {one, one_len, count};

	return fork_sender(netns, ifname, send_frames, &j);
}

/* 0: the child sent everything. */
static inline int send_from(const char *netns, const char *ifname,
			    const uint8_t *one, uint32_t one_len, int count)
{
	return sender_exit(send_start(netns, ifname, one, one_len, count));
}

/* The frame set, rounds times, from the peer end. */
static inline int send_set(int rounds)
{
	return send_from(pair.ns, pair.peer, NULL, 0, rounds * NFRAMES);
}

/* ---- capture of the frame set ----------------------------------------- */

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

static inline void collect(struct sl_source *src, uint64_t want,
			   expect_fn expect, struct got *g)
{
	int idle = 0, rc, i;
	uint64_t now = now_ns(CLOCK_REALTIME);

	memset(g, 0, sizeof(*g));
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
			    p->ifindex != pair.host_index ||
			    p->ts_ns + 5 * NS_PER_S < now ||
			    p->ts_ns > now + 60 * NS_PER_S)
				g->bad_meta++;
			g->pkts++;
			g->bytes += p->wirelen;
			g->caplen += p->caplen;
		}
	}
}

static inline const uint8_t *expect_all(uint64_t i, uint32_t *len)
{
	*len = fr.len[i % NFRAMES];
	return fr.d[i % NFRAMES];
}

static inline const uint8_t *expect_udp(uint64_t i, uint32_t *len)
{
	int k, n = (int)(i % 4); /* the n-th UDP frame of the set */

	for (k = 0; k < NFRAMES - 1; k++)
		if (fr.udp[k] && n-- == 0)
			break;
	*len = fr.len[k];
	return fr.d[k];
}

static inline uint64_t set_bytes(int udp_only)
{
	uint64_t sum = 0;
	int i;

	for (i = 0; i < NFRAMES; i++)
		if (!udp_only || fr.udp[i])
			sum += fr.len[i];
	return sum;
}

static inline void opts_init(struct sl_live_opts *o, const char *ifname)
{
	memset(o, 0, sizeof(*o));
	o->ifname = ifname;
	o->poll_ms = 50;
}

/* ---- checks any live source passes (test_afxdp.c, test_pcap_live.c) -- */

typedef int (*open_fn)(struct sl_source **out, struct sl_live_opts *o);

/* Refused: an interface that does not exist (nope), a filter that does
 * not compile, no interface, nowhere to put the source. */
static inline void check_open_errors(open_fn opener, const char *nope)
{
	struct sl_live_opts o;
	struct sl_source *src = (struct sl_source *)1;

	opts_init(&o, nope);
	CHECK_EQ(opener(&src, &o), -ENODEV);
	CHECK(src == NULL);
	CHECK(o.note[0] != '\0');

	opts_init(&o, pair.host);
	o.filter = "udp and and";
	CHECK_EQ(opener(&src, &o), SL_E_OPTION);
	CHECK(src == NULL);
	CHECK(strstr(o.note, "filter") != NULL);

	opts_init(&o, NULL);
	CHECK_EQ(opener(&src, &o), SL_E_OPTION);
	CHECK_EQ(opener(NULL, &o), -EINVAL);
}

/* Nothing on the wire: -EAGAIN after poll_ms. Then the frame set once:
 * every frame as sent, and nothing else. */
static inline void check_idle_then_set(struct sl_source *src)
{
	struct got g;
	int64_t t0;

	CHECK_EQ(src->ops->linktype(src), SL_LINK_EN10MB);
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
}

/* src opened with the filter "udp": of the set sent twice, only the UDP
 * frames come. */
static inline void check_udp_only(struct sl_source *src)
{
	struct got g;

	CHECK_EQ(send_set(2), 0);
	collect(src, 8, expect_udp, &g);
	CHECK_EQ(g.pkts, 8);
	CHECK_EQ(g.bytes, 2 * set_bytes(1));
	CHECK_EQ(g.bad_data, 0);
	CHECK_EQ(src->ops->next(src, &batch), -EAGAIN);
}

/* src opened with this snaplen: the frames come cut to it, their wire
 * lengths whole. */
static inline void check_snaplen(struct sl_source *src, uint32_t snaplen)
{
	struct got g;
	uint64_t cap = 0;
	int i;

	CHECK_EQ(send_set(1), 0);
	collect(src, NFRAMES, expect_all, &g);
	for (i = 0; i < NFRAMES; i++)
		cap += fr.len[i] < snaplen ? fr.len[i] : snaplen;
	CHECK_EQ(g.pkts, NFRAMES);
	CHECK_EQ(g.bytes, set_bytes(0));
	CHECK_EQ(g.caplen, cap);
	CHECK_EQ(g.bad_data, 0);
}

/* The host end goes away under src: within 10 reads the error err, which
 * then stays. Removes the host end: the last check of a run. */
static inline void check_gone(struct sl_source *src, int err)
{
	int rc = 0, i;

	CHECK_EQ(src->ops->next(src, &batch), -EAGAIN);
	CHECK_EQ(sh("ip link del %s", pair.host), 0);
	for (i = 0; i < 10; i++) {
		rc = src->ops->next(src, &batch);
		if (rc != -EAGAIN)
			break;
	}
	CHECK_EQ(rc, err);
	CHECK_EQ(batch.count, 0);
	CHECK_EQ(src->ops->next(src, &batch), err);
}

#endif
