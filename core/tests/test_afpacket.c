/* test_afpacket.c - the AF_PACKET TPACKET_V3 source against a veth pair.
 *
 * As root: a network namespace and a veth pair private to this run (names
 * carry the pid; leftovers of crashed runs are removed). The source
 * captures on the host end; a forked child enters the namespace and sends
 * hand-built frames through the other end. Every frame carries its
 * sequence number, so each received one is rebuilt and compared byte for
 * byte. Without root (or CAP_NET_RAW) the test prints "skip: ...".
 */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <net/if.h>
#include <linux/if_ether.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sluice.h"
#include "source.h"
#include "test.h"
#include "live.h"

#define MAX_SEQ	  2048
#define FRAME_MAX 1600

static char tun[IF_NAMESIZE];

/* The generic entry points live in source_pcap.c, which this test is not
 * linked with when built alone: call through the ops table. */
static int src_next(struct sl_source *s, struct sl_packet_batch *b)
{
	return s->ops->next(s, b);
}

static int src_stats(struct sl_source *s, struct sl_source_stats *st)
{
	return s->ops->stats(s, st);
}

static void src_close(struct sl_source *s)
{
	if (s)
		s->ops->close(s);
}

/* ---- frames ----------------------------------------------------------- */

static const uint8_t dst_mac[6] = {0x02, 0, 0, 0, 0, 0x02}; /* not ours */
static const uint8_t src_mac[6] = {0x02, 0, 0, 0, 0, 0x01};

struct fspec {
	uint8_t proto; /* 17 or 6 */
	uint8_t ntags;
	uint16_t tpid[2];
	uint16_t tci[2];
	uint16_t sport, dport;
	uint32_t sip, dip;
	uint32_t plen; /* payload bytes, >= 4: the sequence number first */
	uint32_t seq;
};

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)get16(p) << 16 | get16(p + 2);
}

static uint16_t ip_csum(const uint8_t *p, size_t len)
{
	uint32_t sum = 0;
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += get16(p + i);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static uint32_t frame_build(const struct fspec *f, uint8_t *b)
{
	uint32_t off = 12, hl = f->proto == 17 ? 8 : 20, iplen, i;
	uint8_t *ip, *l4, *pay;

	memcpy(b, dst_mac, 6);
	memcpy(b + 6, src_mac, 6);
	for (i = 0; i < f->ntags; i++, off += 4) {
		put16(b + off, f->tpid[i]);
		put16(b + off + 2, f->tci[i]);
	}
	put16(b + off, ETH_P_IP);
	ip = b + off + 2;
	iplen = 20 + hl + f->plen;
	memset(ip, 0, 20 + hl);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)iplen);
	put16(ip + 4, (uint16_t)f->seq);
	put16(ip + 6, 0x4000);
	ip[8] = 64;
	ip[9] = f->proto;
	put32(ip + 12, f->sip);
	put32(ip + 16, f->dip);
	put16(ip + 10, ip_csum(ip, 20));
	l4 = ip + 20;
	put16(l4, f->sport);
	put16(l4 + 2, f->dport);
	if (f->proto == 17) {
		put16(l4 + 4, (uint16_t)(8 + f->plen));
	} else {
		put32(l4 + 4, f->seq);
		l4[12] = 0x50;
		l4[13] = 0x10; /* ACK */
		put16(l4 + 14, 65535);
	}
	pay = l4 + hl;
	put32(pay, f->seq);
	for (i = 4; i < f->plen; i++)
		pay[i] = (uint8_t)(f->seq + i);
	return off + 2 + iplen;
}

/* The sequence number of a received frame; -1 if it is not ours. */
static int frame_seq(const uint8_t *d, uint32_t caplen, uint32_t *seq)
{
	uint32_t off = 12, hl;
	const uint8_t *ip;

	while (off + 2 <= caplen &&
	       (get16(d + off) == 0x8100 || get16(d + off) == 0x88a8))
		off += 4;
	if (off + 2 + 20 > caplen || get16(d + off) != ETH_P_IP)
		return -1;
	ip = d + off + 2;
	if (ip[0] != 0x45 || (ip[9] != 17 && ip[9] != 6))
		return -1;
	hl = ip[9] == 17 ? 8 : 20;
	if (off + 2 + 20 + hl + 4 > caplen)
		return -1;
	*seq = get32(ip + 20 + hl);
	return 0;
}

/* ---- scenarios: which frame has which sequence number ----------------- */

enum { SC_MAIN, SC_VLAN, SC_FANOUT };

enum {
	MAIN_UDP = 1000,
	MAIN_TCP = 200,
	FANOUT_FLOWS = 64,
	FANOUT_PKTS = 20, /* per flow, alternating direction */
};

static uint32_t sc_count(int sc)
{
	switch (sc) {
	case SC_MAIN:
		return MAIN_UDP + MAIN_TCP;
	case SC_VLAN:
		return 40;
	default:
		return FANOUT_FLOWS * FANOUT_PKTS;
	}
}

static void sc_main(uint32_t seq, struct fspec *f)
{
	f->sip = 0x0a630001; /* 10.99.0.1 -> 10.99.0.2 */
	f->dip = 0x0a630002;
	if (seq < MAIN_UDP) {
		f->proto = 17;
		f->sport = (uint16_t)(10000 + seq % 16);
		f->dport = 53;
		f->plen = 4 + (seq * 37) % 1400;
	} else {
		f->proto = 6;
		f->sport = (uint16_t)(20000 + seq % 8);
		f->dport = 80;
		f->plen = 4 + (seq * 13) % 1000;
	}
}

/* 0-9 untagged, 10-19 802.1Q, 20-29 802.1ad + 802.1Q, 30-39 TCP. */
static void sc_vlan(uint32_t seq, struct fspec *f)
{
	f->proto = seq < 30 ? 17 : 6;
	f->sip = 0x0a630101;
	f->dip = 0x0a630102;
	f->sport = (uint16_t)(5000 + seq);
	f->dport = 7;
	f->plen = 900 + seq;
	if (seq >= 10 && seq < 20) {
		f->ntags = 1;
		f->tpid[0] = 0x8100;
		f->tci[0] = (uint16_t)(5 << 13 | (100 + seq));
	} else if (seq >= 20 && seq < 30) {
		f->ntags = 2;
		f->tpid[0] = 0x88a8;
		f->tci[0] = 200;
		f->tpid[1] = 0x8100;
		f->tci[1] = (uint16_t)(300 + seq);
	}
}

/* FANOUT_FLOWS flows, both directions, in rounds of one packet per flow;
 * each round starts one flow later, so that no flow's packets are spaced
 * evenly (a round-robin fanout would keep them together). */
static uint32_t fanout_flow(uint32_t seq)
{
	return (seq + seq / FANOUT_FLOWS) % FANOUT_FLOWS;
}

static void sc_fanout(uint32_t seq, struct fspec *f)
{
	uint32_t fl = fanout_flow(seq), back = seq / FANOUT_FLOWS % 2;
	uint32_t a = 0x0a620001 | fl << 8, b = 0x0a620002 | fl << 8;
	uint16_t pa = (uint16_t)(30000 + fl), pb = (uint16_t)(40000 + fl);

	f->proto = fl % 2 ? 6 : 17;
	f->sip = back ? b : a;
	f->dip = back ? a : b;
	f->sport = back ? pb : pa;
	f->dport = back ? pa : pb;
	f->plen = 4 + (seq * 7) % 200;
}

static uint32_t sc_frame(int sc, uint32_t seq, uint8_t *buf)
{
	struct fspec f;

	memset(&f, 0, sizeof(f));
	f.seq = seq;
	if (sc == SC_MAIN)
		sc_main(seq, &f);
	else if (sc == SC_VLAN)
		sc_vlan(seq, &f);
	else
		sc_fanout(seq, &f);
	return frame_build(&f, buf);
}

/* ---- sender: a child in the namespace --------------------------------- */

static void pin_cpu(void)
{
	cpu_set_t set;
	int i;

	if (sched_getaffinity(0, sizeof(set), &set))
		return;
	for (i = 0; i < CPU_SETSIZE && !CPU_ISSET(i, &set); i++)
		;
	CPU_ZERO(&set);
	CPU_SET(i, &set);
	(void)sched_setaffinity(0, sizeof(set), &set);
}

static int send_scenario(int fd, const void *arg)
{
	int sc = *(const int *)arg;
	uint8_t buf[FRAME_MAX];
	uint32_t seq, len;
	int tries;

	/* one CPU: one backlog queue, frames arrive in order */
	pin_cpu();
	for (seq = 0; seq < sc_count(sc); seq++) {
		len = sc_frame(sc, seq, buf);
		for (tries = 0; send(fd, buf, len, 0) != (ssize_t)len;
		     tries++) {
			if (tries > 1000 ||
			    (errno != ENOBUFS && errno != EAGAIN))
				return 13;
			usleep(100);
		}
		if (seq % 64 == 63)
			usleep(200);
	}
	return 0;
}

static pid_t sender_start(int sc)
{
	return fork_sender(pair.ns, pair.peer, send_scenario, &sc);
}

static void sender_wait(pid_t pid)
{
	int st = -1;

	CHECK(pid > 0);
	if (pid <= 0)
		return;
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st));
	CHECK_EQ(WEXITSTATUS(st), 0);
}

/* ---- receiver --------------------------------------------------------- */

struct rx {
	struct sl_source *src;
	uint32_t snaplen; /* expected clip */
	int err;
	uint32_t n, foreign, bad_len, mismatch, order_bad, ts_bad, ts_far;
	uint32_t bad_meta, bad_batch, eagain;
	uint64_t bytes, last_ts;
	int64_t last_seq;
	uint8_t seen[MAX_SEQ];
};

static void rx_init(struct rx *r, struct sl_source *src, uint32_t snaplen)
{
	memset(r, 0, sizeof(*r));
	r->src = src;
	r->snaplen = snaplen ? snaplen : 262144;
	r->last_seq = -1;
}

static void rx_packet(struct rx *r, int sc, const struct sl_packet *p)
{
	uint64_t now = now_ns(CLOCK_REALTIME);
	uint8_t exp[FRAME_MAX];
	uint32_t seq, len, cap;

	if (frame_seq(p->data, p->caplen, &seq) || seq >= sc_count(sc)) {
		if (r->foreign++ < 4)
			fprintf(
			    stderr,
			    "foreign packet: len %u, bytes 12-13 %02x%02x\n",
			    p->wirelen, p->caplen > 13 ? p->data[12] : 0,
			    p->caplen > 13 ? p->data[13] : 0);
		return;
	}
	len = sc_frame(sc, seq, exp);
	cap = len < r->snaplen ? len : r->snaplen;
	r->n++;
	r->seen[seq]++;
	r->bytes += p->wirelen;
	r->bad_len += p->wirelen != len;
	r->mismatch += p->caplen != cap || memcmp(p->data, exp, cap) != 0;
	r->order_bad += (int64_t)seq <= r->last_seq;
	r->last_seq = seq;
	r->ts_bad += p->ts_ns < r->last_ts;
	r->last_ts = p->ts_ns;
	r->ts_far += p->ts_ns + 5 * NS_PER_S < now || p->ts_ns > now + NS_PER_S;
	r->bad_meta +=
	    p->linktype != SL_LINK_EN10MB || p->ifindex != pair.host_index;
}

/* Reads all sources until want packets came (then 300 ms more, to catch
 * extras) or timeout_ms passed. */
static void rx_collect(struct rx *rx, int nrx, int sc, uint32_t want,
		       uint32_t timeout_ms)
{
	static struct sl_packet_batch b;
	uint64_t start = now_ns(CLOCK_MONOTONIC), linger = 0, t;
	uint32_t total;
	int i, rc, k;

	for (;;) {
		t = now_ns(CLOCK_MONOTONIC);
		for (total = 0, i = 0; i < nrx; i++)
			total += rx[i].n + rx[i].foreign;
		if (!linger && total >= want)
			linger = t + 300 * NS_PER_MS;
		if (t > start + timeout_ms * NS_PER_MS ||
		    (linger && t > linger))
			break;
		for (i = 0; i < nrx; i++) {
			if (rx[i].err)
				continue;
			rc = src_next(rx[i].src, &b);
			if (rc == -EAGAIN) {
				rx[i].eagain++;
				continue;
			}
			if (rc <= 0) {
				rx[i].err = rc ? rc : -1;
				continue;
			}
			rx[i].bad_batch += b.count != (uint32_t)rc;
			for (k = 0; k < rc; k++)
				rx_packet(&rx[i], sc, &b.pkt[k]);
		}
	}
}

/* Every check that holds for any clean capture. */
static void rx_check_clean(const struct rx *r)
{
	CHECK_EQ(r->err, 0);
	CHECK_EQ(r->foreign, 0);
	CHECK_EQ(r->bad_len, 0);
	CHECK_EQ(r->mismatch, 0);
	CHECK_EQ(r->order_bad, 0);
	CHECK_EQ(r->ts_bad, 0);
	CHECK_EQ(r->ts_far, 0);
	CHECK_EQ(r->bad_meta, 0);
	CHECK_EQ(r->bad_batch, 0);
}

/* Sends scenario sc while reading rx[0..nrx) until want packets came (3 s
 * at most), then checks what holds for any clean capture. */
static void rx_run(struct rx *rx, int nrx, int sc, uint32_t want)
{
	pid_t pid = sender_start(sc);
	int i;

	rx_collect(rx, nrx, sc, want, 3000);
	sender_wait(pid);
	for (i = 0; i < nrx; i++)
		rx_check_clean(&rx[i]);
}

static int open_src(struct sl_source **s, struct sl_live_opts *o)
{
	int rc = sl_source_open_afpacket(s, o);

	if (rc)
		fprintf(stderr, "open %s: %d (%s)\n", o->ifname, rc, o->note);
	return rc;
}

/* ---- tests ------------------------------------------------------------ */

static void test_all_frames(void)
{
	struct sl_live_opts o = {.ifname = pair.host, .ignore_outgoing = 1};
	static struct rx r;
	struct sl_source_stats st;
	struct sl_source *s = NULL;
	uint8_t buf[FRAME_MAX];
	uint64_t bytes = 0, pos = 1, size = 1;
	uint32_t seq;

	CHECK_EQ(open_src(&s, &o), 0);
	if (!s)
		return;
	CHECK_EQ(s->ops->linktype(s), SL_LINK_EN10MB);
	for (seq = 0; seq < sc_count(SC_MAIN); seq++)
		bytes += sc_frame(SC_MAIN, seq, buf);
	rx_init(&r, s, 0);
	rx_run(&r, 1, SC_MAIN, sc_count(SC_MAIN));
	CHECK_EQ(r.n, sc_count(SC_MAIN));
	CHECK_EQ(r.bytes, bytes);
	for (seq = 0; seq < sc_count(SC_MAIN); seq++)
		if (r.seen[seq] != 1)
			break;
	CHECK_EQ(seq, sc_count(SC_MAIN));
	CHECK_EQ(src_stats(s, &st), 0);
	CHECK_EQ(st.received, r.n);
	CHECK_EQ(st.kernel_drops, 0);
	s->ops->progress(s, &pos, &size);
	CHECK_EQ(pos, r.n);
	CHECK_EQ(size, 0);
	src_close(s);
}

static unsigned long if_flags(const char *ifname)
{
	char path[128];
	unsigned long flags = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/net/%s/flags", ifname);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fscanf(f, "%lx", &flags) != 1)
		flags = 0;
	fclose(f);
	return flags;
}

/* Nothing sent: -EAGAIN after poll_ms. Promiscuous while open. */
static void test_idle(void)
{
	struct sl_live_opts o = {
	    .ifname = pair.host, .poll_ms = 50, .promisc = 1};
	static struct sl_packet_batch b;
	struct sl_source *s = NULL;
	uint64_t t0, dt;
	int rc;

	CHECK_EQ(open_src(&s, &o), 0);
	if (!s)
		return;
	t0 = now_ns(CLOCK_MONOTONIC);
	rc = src_next(s, &b);
	dt = now_ns(CLOCK_MONOTONIC) - t0;
	CHECK_EQ(rc, -EAGAIN);
	CHECK_EQ(b.count, 0);
	CHECK(dt >= 45 * NS_PER_MS && dt < 1000 * NS_PER_MS);
	CHECK_EQ(src_next(s, &b), -EAGAIN);
	CHECK(if_flags(pair.host) & IFF_PROMISC);
	src_close(s);
	CHECK(!(if_flags(pair.host) & IFF_PROMISC));
}

static void test_filter(void)
{
	struct sl_live_opts o = {.ifname = pair.host, .filter = "udp"};
	static struct rx r;
	struct sl_source *s = NULL;
	uint32_t seq, udp = 0, tcp = 0;

	CHECK_EQ(open_src(&s, &o), 0);
	if (!s)
		return;
	rx_init(&r, s, 0);
	rx_run(&r, 1, SC_MAIN, MAIN_UDP);
	for (seq = 0; seq < sc_count(SC_MAIN); seq++) {
		if (seq < MAIN_UDP)
			udp += r.seen[seq] == 1;
		else
			tcp += r.seen[seq];
	}
	CHECK_EQ(r.n, MAIN_UDP);
	CHECK_EQ(udp, MAIN_UDP);
	CHECK_EQ(tcp, 0);
	src_close(s);
}

/* VLAN tags stripped by the kernel come back in the data; a snaplen cuts
 * the capture but not the wire length. Two sockets: each sees all. */
static void test_vlan_snaplen(void)
{
	struct sl_live_opts o1 = {.ifname = pair.host, .poll_ms = 20};
	struct sl_live_opts o2 = {
	    .ifname = pair.host, .poll_ms = 20, .snaplen = 100};
	static struct rx r[2];
	struct sl_source *a = NULL, *b = NULL;
	uint32_t n = sc_count(SC_VLAN);

	CHECK_EQ(open_src(&a, &o1), 0);
	CHECK_EQ(open_src(&b, &o2), 0);
	if (!a || !b)
		goto out;
	rx_init(&r[0], a, 0);
	rx_init(&r[1], b, 100);
	rx_run(r, 2, SC_VLAN, 2 * n);
	CHECK_EQ(r[0].n, n);
	CHECK_EQ(r[1].n, n);
	CHECK_EQ(r[0].bytes, r[1].bytes);
out:
	src_close(a);
	src_close(b);
}

/* Two sockets in one fanout group: disjoint, complete, one flow (both
 * directions) on one socket. */
static void test_fanout(void)
{
	uint32_t group = 1000 + (uint32_t)getpid() % 60000;
	struct sl_live_opts o1 = {
	    .ifname = pair.host, .poll_ms = 20, .fanout_group = group};
	struct sl_live_opts o2 = o1;
	static struct rx r[2];
	struct sl_source *a = NULL, *b = NULL;
	uint32_t n = sc_count(SC_FANOUT), seq, once = 0, split = 0, fl;
	int owner[FANOUT_FLOWS];

	CHECK_EQ(open_src(&a, &o1), 0);
	CHECK_EQ(open_src(&b, &o2), 0);
	if (!a || !b)
		goto out;
	rx_init(&r[0], a, 0);
	rx_init(&r[1], b, 0);
	rx_run(r, 2, SC_FANOUT, n);
	CHECK_EQ(r[0].n + r[1].n, n);
	CHECK(r[0].n > 0 && r[1].n > 0);
	for (fl = 0; fl < FANOUT_FLOWS; fl++)
		owner[fl] = -1;
	for (seq = 0; seq < n; seq++) {
		int who = r[0].seen[seq] ? 0 : 1;

		once += r[0].seen[seq] + r[1].seen[seq] == 1;
		fl = fanout_flow(seq);
		if (owner[fl] < 0)
			owner[fl] = who;
		split += owner[fl] != who;
	}
	CHECK_EQ(once, n);
	CHECK_EQ(split, 0);
out:
	src_close(a);
	src_close(b);
}

/* A ring of four small blocks wraps several times: what arrives is intact
 * and in order, and what does not is counted as a kernel drop. Then a
 * ring nobody reads: it fills up, the rest is dropped. */
static void test_small_ring(void)
{
	struct sl_live_opts o = {.ifname = pair.host,
				 .block_size = 1 << 16,
				 .block_count = 4,
				 .block_timeout_ms = 10};
	static struct rx r;
	struct sl_source_stats st;
	struct sl_source *s = NULL;
	uint32_t n = sc_count(SC_MAIN);
	pid_t pid;

	CHECK_EQ(open_src(&s, &o), 0);
	if (!s)
		return;
	rx_init(&r, s, 0);
	rx_run(&r, 1, SC_MAIN, n);
	CHECK_EQ(src_stats(s, &st), 0);
	CHECK_EQ(st.received, r.n);
	CHECK_EQ(st.received + st.kernel_drops, n);
	printf("small ring, read along: %u received, %llu dropped\n", r.n,
	       (unsigned long long)st.kernel_drops);

	/* unread: two blocks fill, the rest is dropped */
	src_close(s);
	o.block_size = 1 << 12;
	o.block_count = 2;
	CHECK_EQ(open_src(&s, &o), 0);
	if (!s)
		return;
	pid = sender_start(SC_MAIN);
	sender_wait(pid);
	usleep(100000);
	rx_init(&r, s, 0);
	rx_collect(&r, 1, SC_MAIN, n, 300);
	rx_check_clean(&r);
	CHECK_EQ(src_stats(s, &st), 0);
	CHECK(r.n > 0 && r.n < 20);
	CHECK(st.kernel_drops > 0);
	CHECK_EQ(st.received + st.kernel_drops, n);
	src_close(s);
}

static void test_errors(void)
{
	struct sl_live_opts o;
	struct sl_source *s = (struct sl_source *)&o;

	memset(&o, 0, sizeof(o));
	o.ifname = pair.host;
	o.filter = "udp and and port";
	CHECK_EQ(sl_source_open_afpacket(&s, &o), SL_E_OPTION);
	CHECK(s == NULL);
	CHECK(strstr(o.note, "filter") != NULL);

	memset(&o, 0, sizeof(o));
	o.ifname = "slafp_nope0";
	CHECK_EQ(sl_source_open_afpacket(&s, &o), -ENODEV);
	CHECK(strstr(o.note, "slafp_nope0") != NULL);

	memset(&o, 0, sizeof(o));
	o.ifname = pair.host;
	o.block_size = 1000000; /* not a multiple of the page size */
	CHECK_EQ(sl_source_open_afpacket(&s, &o), SL_E_OPTION);
	CHECK(strstr(o.note, "block size") != NULL);

	memset(&o, 0, sizeof(o));
	o.ifname = pair.host;
	o.block_size = 1 << 16;
	o.frame_size = 100; /* not a multiple of TPACKET_ALIGNMENT */
	CHECK_EQ(sl_source_open_afpacket(&s, &o), SL_E_OPTION);
	CHECK(strstr(o.note, "frame size") != NULL);

	memset(&o, 0, sizeof(o));
	o.ifname = pair.host;
	o.block_size = 1 << 16;
	o.frame_size = 3072; /* block not a multiple of it */
	CHECK_EQ(sl_source_open_afpacket(&s, &o), SL_E_OPTION);

	memset(&o, 0, sizeof(o));
	o.ifname = pair.host;
	o.block_timeout_ms = 10001; /* a stop would wait 20 s and more */
	CHECK_EQ(sl_source_open_afpacket(&s, &o), SL_E_OPTION);
	CHECK(strstr(o.note, "ring timeout") != NULL);

	memset(&o, 0, sizeof(o));
	CHECK_EQ(sl_source_open_afpacket(&s, &o), SL_E_OPTION);
	CHECK(o.note[0] != '\0');
}

/* Small ring, loopback and an IP-only device (tun: raw IP link type, a
 * filter compiled for it, and a device that is down). */
static void test_devices(void)
{
	struct sl_live_opts o;
	static struct sl_packet_batch b;
	struct sl_source *s = NULL;

	memset(&o, 0, sizeof(o));
	o.ifname = "lo";
	o.block_size = 1 << 16;
	o.block_count = 4;
	o.filter = "udp port 9";
	CHECK_EQ(open_src(&s, &o), 0);
	if (s) {
		CHECK_EQ(s->ops->linktype(s), SL_LINK_EN10MB);
		src_close(s);
		s = NULL;
	}
	if (sh("ip tuntap add mode tun name %s 2>/dev/null", tun)) {
		printf("note: no tun device, raw link type not tested\n");
		return;
	}
	memset(&o, 0, sizeof(o));
	o.ifname = tun;
	o.filter = "udp";
	o.poll_ms = 30;
	CHECK_EQ(open_src(&s, &o), 0);
	if (s) {
		CHECK_EQ(s->ops->linktype(s), SL_LINK_RAW);
		CHECK_EQ(src_next(s, &b), -EAGAIN);
		CHECK_EQ(src_next(s, &b), -EAGAIN);
		src_close(s);
	}
	sh("ip link del %s 2>/dev/null", tun);
}

/* Without privileges: -EPERM and a note saying what is needed. */
static void test_eperm(void)
{
	int st = -1;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		struct sl_live_opts o = {.ifname = pair.host};
		struct sl_source *s = NULL;
		int rc;

		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			_exit(2);
		rc = sl_source_open_afpacket(&s, &o);
		_exit(rc == -EPERM && !s && strstr(o.note, "CAP_NET_RAW") ? 0
									  : 1);
	}
	CHECK(pid > 0);
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- setup ------------------------------------------------------------ */

static void teardown(void)
{
	if (!pair.made)
		return;
	sh("ip link del %s 2>/dev/null", tun);
	pair_del();
}

/* Removes interfaces and namespaces of earlier runs that died. */
static void reap_stale(void)
{
	struct dirent *de;
	DIR *d;
	int pid;
	char c;

	d = opendir("/sys/class/net");
	while (d && (de = readdir(d))) {
		if (sscanf(de->d_name, "slafp%d%c", &pid, &c) == 2 &&
		    kill(pid, 0) && errno == ESRCH)
			sh("ip link del %s 2>/dev/null", de->d_name);
	}
	if (d)
		closedir(d);
	d = opendir("/run/netns");
	while (d && (de = readdir(d))) {
		if (sscanf(de->d_name, "sl_afp_%d", &pid) == 1 &&
		    kill(pid, 0) && errno == ESRCH)
			sh("ip netns del %s 2>/dev/null", de->d_name);
	}
	if (d)
		closedir(d);
}

static const char *setup(void)
{
	char ns[32], host[IF_NAMESIZE], peer[IF_NAMESIZE];
	int pid = (int)getpid();

	snprintf(ns, sizeof(ns), "sl_afp_%d", pid);
	snprintf(host, sizeof(host), "slafp%da", pid);
	snprintf(peer, sizeof(peer), "slafp%db", pid);
	snprintf(tun, sizeof(tun), "slafp%dt", pid);
	reap_stale();
	return pair_add(ns, host, peer);
}

static const char *can_capture(void)
{
	int fd;

	if (geteuid() != 0)
		return "not root";
	fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (fd < 0)
		return errno == EPERM || errno == EACCES
			   ? "AF_PACKET not permitted"
			   : "no AF_PACKET sockets";
	close(fd);
	return NULL;
}

int main(void)
{
	const char *why;

	why = can_capture();
	if (!why)
		why = setup();
	if (why) {
		printf("skip: %s\n", why);
		teardown();
		return test_done();
	}
	atexit(teardown);
	test_idle();
	test_all_frames();
	test_filter();
	test_vlan_snaplen();
	test_fanout();
	test_small_ring();
	test_errors();
	test_devices();
	test_eperm();
	teardown();
	return test_done();
}
