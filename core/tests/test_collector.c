/* test_collector.c - the collector's message decoder: NetFlow v5, v9 and IPFIX
 * messages built here byte by byte from the RFCs, real softflowd 1.1.0
 * exports (core/tests/data), sluice's own IPFIX export read back, every
 * malformed case, a mutation loop, and a decode rate.
 *
 * With "--corpus DIR" it writes the fuzzers' seed inputs instead (see
 * the fuzz targets in core/fuzz for their framing).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "collector.h" /* collector_msg_batch() */
#include "sluice.h"
#include "test.h"

#define MS	    1000000ULL
#define SEC	    1000000000ULL
#define PEN_REVERSE 29305
#define NTP_OFFSET  2208988800ULL
#define DATA_DIR    "core/tests/data/"

/* ---- message builder -------------------------------------------------- */

struct buf {
	uint32_t n;
	uint8_t b[65536];
};

static void b8(struct buf *b, uint8_t v)
{
	b->b[b->n++] = v;
}

static void b16(struct buf *b, uint16_t v)
{
	b8(b, (uint8_t)(v >> 8));
	b8(b, (uint8_t)v);
}

static void b32(struct buf *b, uint32_t v)
{
	b16(b, (uint16_t)(v >> 16));
	b16(b, (uint16_t)v);
}

static void b64(struct buf *b, uint64_t v)
{
	b32(b, (uint32_t)(v >> 32));
	b32(b, (uint32_t)v);
}

static void bmem(struct buf *b, const void *p, uint32_t n)
{
	memcpy(b->b + b->n, p, n);
	b->n += n;
}

static void bip4(struct buf *b, const char *s)
{
	uint8_t a[4];

	inet_pton(AF_INET, s, a);
	bmem(b, a, 4);
}

static void bip6(struct buf *b, const char *s)
{
	uint8_t a[16];

	inet_pton(AF_INET6, s, a);
	bmem(b, a, 16);
}

static void patch16(struct buf *b, uint32_t at, uint32_t v)
{
	b->b[at] = (uint8_t)(v >> 8);
	b->b[at + 1] = (uint8_t)v;
}

static uint32_t set_begin(struct buf *b, uint16_t id)
{
	uint32_t at = b->n;

	b16(b, id);
	b16(b, 0);
	return at;
}

static void set_end(struct buf *b, uint32_t at)
{
	patch16(b, at + 2, b->n - at);
}

static void ipfix_hdr(struct buf *b, uint32_t export_s, uint32_t seq,
		      uint32_t dom)
{
	b->n = 0;
	b16(b, 10);
	b16(b, 0);
	b32(b, export_s);
	b32(b, seq);
	b32(b, dom);
}

static void ipfix_end(struct buf *b)
{
	patch16(b, 2, b->n);
}

static void v9_hdr(struct buf *b, uint16_t count, uint32_t uptime,
		   uint32_t secs, uint32_t seq, uint32_t src)
{
	b->n = 0;
	b16(b, 9);
	b16(b, count);
	b32(b, uptime);
	b32(b, secs);
	b32(b, seq);
	b32(b, src);
}

/* A field specifier: id, length, and pen (0: IETF). */
struct fs {
	uint16_t id, len;
	uint32_t pen;
};

static void btemplate(struct buf *b, uint16_t tid, const struct fs *f, int n)
{
	b16(b, tid);
	b16(b, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		b16(b, (uint16_t)(f[i].id | (f[i].pen ? 0x8000 : 0)));
		b16(b, f[i].len);
		if (f[i].pen)
			b32(b, f[i].pen);
	}
}

/* ---- decoder helpers -------------------------------------------------- */

static const uint8_t EXA[4] = {192, 0, 2, 1};
static const uint8_t EXB[4] = {192, 0, 2, 2};
static const uint8_t EXC[4] = {192, 0, 2, 3};
static const uint8_t EXD[4] = {192, 0, 2, 4};
static const uint8_t EX6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x99};

static struct sl_collector_msg *msg_new(uint32_t hold_max, uint64_t hold_ns,
					uint64_t tmpl_ns, uint32_t max_exp)
{
	struct sl_collector_msg_opts o = {.template_timeout_ns = tmpl_ns,
					  .hold_ns = hold_ns,
					  .hold_max = hold_max,
					  .max_exporters = max_exp};
	struct sl_collector_msg *m = NULL;

	CHECK_EQ(sl_collector_msg_new(&m, &o), 0);
	return m;
}

static int dec(struct sl_collector_msg *m, const struct buf *b,
	       const uint8_t *a, uint64_t now)
{
	return sl_collector_msg_decode(m, b->b, b->n, a, 4, 2055, now);
}

static const struct sl_collector_rec *rec(struct sl_collector_msg *m, int i)
{
	return &sl_collector_msg_records(m)[i];
}

/* Stats of the exporter at EXA:2055 (the first one made: index 1). */
static const struct sl_exporter_stats *st(struct sl_collector_msg *m,
					  uint32_t i)
{
	return sl_collector_msg_exporter(m, i);
}

static int ip4_is(const uint8_t *a, const char *s)
{
	uint8_t want[16] = {0};

	inet_pton(AF_INET, s, want);
	return !memcmp(a, want, 16);
}

static int ip6_is(const uint8_t *a, const char *s)
{
	uint8_t want[16];

	inet_pton(AF_INET6, s, want);
	return !memcmp(a, want, 16);
}

static uint64_t dropped_total(const struct sl_exporter_stats *s)
{
	uint64_t n = 0;

	for (int i = 0; i < SL_COLLECTOR_DROP_COUNT; i++)
		n += s->dropped[i];
	return n;
}

/* ---- NetFlow v5 ------------------------------------------------------- */

struct v5rec {
	const char *src, *dst;
	uint32_t pkts, bytes, first, last;
	uint16_t sport, dport;
	uint8_t flags, proto;
};

static void v5_msg(struct buf *b, uint16_t count, uint32_t uptime,
		   uint32_t secs, uint32_t nsecs, uint32_t seq,
		   const struct v5rec *r, int n)
{
	b->n = 0;
	b16(b, 5);
	b16(b, count);
	b32(b, uptime);
	b32(b, secs);
	b32(b, nsecs);
	b32(b, seq);
	b8(b, 3); /* engine type */
	b8(b, 7); /* engine id */
	b16(b, 0);
	for (int i = 0; i < n; i++) {
		bip4(b, r[i].src);
		bip4(b, r[i].dst);
		b32(b, 0); /* next hop */
		b16(b, 1);
		b16(b, 2);
		b32(b, r[i].pkts);
		b32(b, r[i].bytes);
		b32(b, r[i].first);
		b32(b, r[i].last);
		b16(b, r[i].sport);
		b16(b, r[i].dport);
		b8(b, 0);
		b8(b, r[i].flags);
		b8(b, r[i].proto);
		b8(b, 0);
		b32(b, 0); /* AS numbers */
		b32(b, 0); /* masks, pad */
	}
}

static const struct v5rec v5r[3] = {
    {"10.0.0.1", "10.0.0.2", 10, 1500, 90000, 99000, 1234, 80, 0x1b, 6},
    {"10.0.0.3", "8.8.8.8", 1, 84, 99990, 99990, 0, 0x0303, 0, 1},
    /* stamped 5 ms after the header: clock skew */
    {"10.0.0.4", "10.0.0.5", 2, 120, 100005, 100005, 53, 5353, 0, 17},
};

static void test_v5(void)
{
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	const struct sl_exporter_stats *s;
	const struct sl_collector_rec *r;
	struct buf b;
	uint64_t hdr = 1700000000ULL * SEC + 250000000;

	v5_msg(&b, 3, 100000, 1700000000, 250000000, 0, v5r, 3);
	CHECK_EQ(dec(m, &b, EXA, 1), 3);
	r = rec(m, 0);
	CHECK(ip4_is(r->key.src, "10.0.0.1"));
	CHECK(ip4_is(r->key.dst, "10.0.0.2"));
	CHECK_EQ(r->key.ip_version, 4);
	CHECK_EQ(r->key.sport, 1234);
	CHECK_EQ(r->key.dport, 80);
	CHECK_EQ(r->key.proto, 6);
	CHECK_EQ(r->key.vlan, 0);
	CHECK_EQ(r->fwd.pkts, 10);
	CHECK_EQ(r->fwd.bytes, 1500);
	CHECK_EQ(r->rev.pkts, 0);
	CHECK_EQ(r->rev.bytes, 0);
	CHECK_EQ(r->tcp_flags, 0x1b);
	CHECK(r->first_ns == hdr - 10000 * MS);
	CHECK(r->last_ns == hdr - 1000 * MS);
	CHECK_EQ(r->version, 5);
	CHECK_EQ(r->domain, 3 << 8 | 7);
	CHECK_EQ(r->exporter, 1);
	CHECK_EQ(r->end_reason, 0);
	r = rec(m, 1);
	CHECK_EQ(r->key.proto, 1);
	CHECK_EQ(r->icmp_type, 3);
	CHECK_EQ(r->icmp_code, 3);
	CHECK(r->first_ns == hdr - 10 * MS);
	r = rec(m, 2);
	CHECK(r->first_ns == hdr + 5 * MS);
	CHECK_EQ(r->icmp_type, 0);

	/* sysUptime wrapped since the flow began */
	v5_msg(&b, 1, 1000, 1700000000, 0, 3, v5r, 1);
	patch16(&b, 24 + 24, 0xffff);
	patch16(&b, 24 + 26, 0xfed8); /* First = 2^32 - 296 */
	CHECK_EQ(dec(m, &b, EXA, 2), 1);
	CHECK(rec(m, 0)->first_ns == 1700000000ULL * SEC - 1296 * MS);

	CHECK_EQ(sl_collector_msg_exporters(m), 2);
	s = st(m, 1);
	CHECK(ip4_is(s->addr, "192.0.2.1"));
	CHECK_EQ(s->family, 4);
	CHECK_EQ(s->port, 2055);
	CHECK_EQ(s->messages, 2);
	CHECK_EQ(s->records, 4);
	CHECK_EQ(dropped_total(s), 0);
	CHECK_EQ(s->seq_lost, 0);
	/* index 0 is the slot of messages of no exporter */
	s = st(m, 0);
	CHECK_EQ(s->family, 0);
	CHECK_EQ(s->messages, 0);
	CHECK(st(m, 2) == NULL);
	sl_collector_msg_free(m);
}

static void test_v5_length(void)
{
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	struct buf b;

	/* count above what fits: the whole records present are taken */
	v5_msg(&b, 3, 100000, 1700000000, 0, 0, v5r, 2);
	CHECK_EQ(dec(m, &b, EXA, 1), 2);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_LENGTH], 1);
	/* and a partial record at the end */
	v5_msg(&b, 3, 100000, 1700000000, 0, 3, v5r, 3);
	b.n -= 10;
	CHECK_EQ(dec(m, &b, EXA, 2), 2);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_LENGTH], 2);
	/* count below: count records */
	v5_msg(&b, 1, 100000, 1700000000, 0, 6, v5r, 2);
	CHECK_EQ(dec(m, &b, EXA, 3), 1);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_LENGTH], 3);
	v5_msg(&b, 0, 100000, 1700000000, 0, 0, v5r, 0);
	CHECK_EQ(dec(m, &b, EXA, 4), 0);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_EMPTY], 1);
	b.n = 20;
	CHECK_EQ(dec(m, &b, EXA, 5), 0);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_SHORT], 1);
	CHECK_EQ(st(m, 1)->messages, 3);
	CHECK_EQ(st(m, 1)->records, 5);
	sl_collector_msg_free(m);
}

static void test_v5_seq(void)
{
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	const struct sl_exporter_stats *s;
	struct buf b;

	v5_msg(&b, 3, 1, 1, 0, 1000, v5r, 3);
	dec(m, &b, EXA, 1);
	v5_msg(&b, 2, 1, 1, 0, 1003, v5r, 2);
	dec(m, &b, EXA, 2);
	s = st(m, 1);
	CHECK_EQ(s->seq_lost, 0);
	/* 1005 expected: 10 flows lost */
	v5_msg(&b, 1, 1, 1, 0, 1015, v5r, 1);
	dec(m, &b, EXA, 3);
	CHECK_EQ(s->seq_lost, 10);
	CHECK_EQ(s->seq_resets, 0);
	/* a late message: neither loss nor reset */
	v5_msg(&b, 1, 1, 1, 0, 1004, v5r, 1);
	dec(m, &b, EXA, 4);
	CHECK_EQ(s->seq_lost, 10);
	CHECK_EQ(s->seq_resets, 0);
	v5_msg(&b, 1, 1, 1, 0, 1016, v5r, 1);
	dec(m, &b, EXA, 5);
	CHECK_EQ(s->seq_lost, 10);
	/* the exporter restarted */
	v5_msg(&b, 1, 1, 1, 0, 0, v5r, 1);
	dec(m, &b, EXA, 6);
	CHECK_EQ(s->seq_resets, 1);
	v5_msg(&b, 1, 1, 1, 0, 1, v5r, 1);
	dec(m, &b, EXA, 7);
	CHECK_EQ(s->seq_lost, 10);
	CHECK_EQ(s->seq_resets, 1);
	/* a jump too far forward to be a loss */
	v5_msg(&b, 2, 1, 1, 0, 0x80000000u, v5r, 2);
	dec(m, &b, EXA, 8);
	CHECK_EQ(s->seq_resets, 2);
	CHECK_EQ(s->seq_lost, 10);
	/* the counter wraps modulo 2^32 */
	v5_msg(&b, 2, 1, 1, 0, 0xffffffffu, v5r, 2);
	dec(m, &b, EXA, 9);
	CHECK_EQ(s->seq_resets, 3);
	v5_msg(&b, 1, 1, 1, 0, 1, v5r, 1);
	dec(m, &b, EXA, 9);
	CHECK_EQ(s->seq_lost, 10);
	CHECK_EQ(s->seq_resets, 3);
	/* another engine of the exporter has a sequence of its own */
	v5_msg(&b, 1, 1, 1, 0, 777, v5r, 1);
	b.b[21] = 8;
	dec(m, &b, EXA, 10);
	CHECK_EQ(s->seq_resets, 3);
	CHECK_EQ(rec(m, 0)->domain, 3 << 8 | 8);
	sl_collector_msg_free(m);
}

/* ---- NetFlow v9 --------------------------------------------------------- */

static const struct fs v9_t300[] = {
    {8, 4, 0},	{12, 4, 0}, {7, 2, 0},	 {11, 2, 0}, {4, 1, 0},
    {6, 1, 0},	{1, 8, 0},  {2, 4, 0},	 {22, 4, 0}, {21, 4, 0},
    {58, 2, 0}, {10, 2, 0}, {136, 1, 0}, {5, 3, 0},
};
#define V9_T300_LEN 45

static void v9_rec300(struct buf *b, const char *src, uint16_t sport,
		      uint64_t bytes, uint32_t first, uint32_t last)
{
	bip4(b, src);
	bip4(b, "192.168.1.1");
	b16(b, sport);
	b16(b, 443);
	b8(b, 6);
	b8(b, 0x12);
	b64(b, bytes);
	b32(b, 7);
	b32(b, first);
	b32(b, last);
	b16(b, 0x1064); /* vlan 100, priority bits */
	b16(b, 5);
	b8(b, 1);
	b8(b, 0);
	b16(b, 0);
}

static const struct fs v9_t301[] = {
    {27, 16, 0}, {28, 16, 0}, {4, 1, 0},  {32, 2, 0},
    {23, 4, 0},	 {24, 2, 0},  {22, 4, 0}, {21, 4, 0},
};

/* Templates 300 (IPv4) and 301 (IPv6, OUT_ counters only), an options
 * template 302, then data of each. */
static void v9_full(struct buf *b, uint32_t seq)
{
	uint32_t s;

	v9_hdr(b, 7, 100000, 1700000000, seq, 42);
	s = set_begin(b, 0);
	btemplate(b, 300, v9_t300, sizeof(v9_t300) / sizeof(v9_t300[0]));
	btemplate(b, 301, v9_t301, sizeof(v9_t301) / sizeof(v9_t301[0]));
	set_end(b, s);
	s = set_begin(b, 1);
	b16(b, 302);
	b16(b, 4); /* scope: System, 4 bytes */
	b16(b, 8);
	b16(b, 1);
	b16(b, 4);
	b16(b, 34);
	b16(b, 4);
	b16(b, 35);
	b16(b, 1);
	b16(b, 0); /* padding */
	set_end(b, s);
	s = set_begin(b, 300);
	v9_rec300(b, "10.1.1.1", 1111, 5000000000ULL, 90000, 99500);
	v9_rec300(b, "10.1.1.2", 2222, 77, 100005, 100005);
	b8(b, 0), b8(b, 0), b8(b, 0); /* padding */
	set_end(b, s);
	s = set_begin(b, 301);
	bip6(b, "2001:db8::1");
	bip6(b, "2001:db8::2");
	b8(b, 58);
	b16(b, 128 << 8);
	b32(b, 640);
	b16(b, 5);
	b32(b, 99000);
	b32(b, 99900);
	set_end(b, s);
	s = set_begin(b, 302);
	b32(b, 1);
	b32(b, 100);
	b8(b, 2);
	set_end(b, s);
}

static void test_v9(void)
{
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	const struct sl_exporter_stats *s;
	const struct sl_collector_rec *r;
	struct buf b;
	uint64_t hdr = 1700000000ULL * SEC;

	v9_full(&b, 1);
	CHECK_EQ(dec(m, &b, EXA, 1), 3);
	r = rec(m, 0);
	CHECK(ip4_is(r->key.src, "10.1.1.1"));
	CHECK(ip4_is(r->key.dst, "192.168.1.1"));
	CHECK_EQ(r->key.ip_version, 4);
	CHECK_EQ(r->key.sport, 1111);
	CHECK_EQ(r->key.dport, 443);
	CHECK_EQ(r->key.proto, 6);
	CHECK_EQ(r->key.vlan, 100);
	CHECK_EQ(r->tcp_flags, 0x12);
	CHECK(r->fwd.bytes == 5000000000ULL);
	CHECK_EQ(r->fwd.pkts, 7);
	CHECK(r->first_ns == hdr - 10000 * MS);
	CHECK(r->last_ns == hdr - 500 * MS);
	CHECK_EQ(r->end_reason, 1);
	CHECK_EQ(r->version, 9);
	CHECK_EQ(r->domain, 42);
	CHECK_EQ(r->exporter, 1);
	r = rec(m, 1);
	CHECK_EQ(r->key.sport, 2222);
	CHECK(r->first_ns == hdr + 5 * MS);
	r = rec(m, 2);
	CHECK_EQ(r->key.ip_version, 6);
	CHECK(ip6_is(r->key.src, "2001:db8::1"));
	CHECK(ip6_is(r->key.dst, "2001:db8::2"));
	CHECK_EQ(r->key.proto, 58);
	CHECK_EQ(r->icmp_type, 128);
	CHECK_EQ(r->icmp_code, 0);
	/* OUT_ counters stand in when IN_ ones are absent */
	CHECK_EQ(r->fwd.bytes, 640);
	CHECK_EQ(r->fwd.pkts, 5);
	CHECK(r->first_ns == hdr - 1000 * MS);
	CHECK(r->last_ns == hdr - 100 * MS);
	s = st(m, 1);
	CHECK_EQ(s->templates, 3);
	CHECK_EQ(s->records, 3);
	CHECK_EQ(s->messages, 1);
	CHECK_EQ(dropped_total(s), 0);

	/* the cached templates serve the next message */
	v9_hdr(&b, 1, 200000, 1700000100, 2, 42);
	{
		uint32_t at = set_begin(&b, 300);

		v9_rec300(&b, "10.1.1.9", 9, 1, 199000, 199999);
		set_end(&b, at);
	}
	CHECK_EQ(dec(m, &b, EXA, 2), 1);
	CHECK(rec(m, 0)->last_ns == 1700000100ULL * SEC - 1 * MS);
	/* another source id of the same exporter has none */
	b.b[19] = 43;
	CHECK_EQ(dec(m, &b, EXA, 3), 0);
	CHECK_EQ(s->held, 1);
	sl_collector_msg_free(m);
}

static void test_v9_seq(void)
{
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	const struct sl_exporter_stats *s;
	struct buf b;

	v9_full(&b, 1000);
	dec(m, &b, EXA, 1);
	s = st(m, 1);
	v9_full(&b, 1001);
	dec(m, &b, EXA, 2);
	CHECK_EQ(s->seq_lost, 0);
	/* v9 counts export packets: 1002, 1003 and 1004 never came */
	v9_full(&b, 1005);
	dec(m, &b, EXA, 3);
	CHECK_EQ(s->seq_lost, 3);
	/* late, not lost after all; a late one again fills nothing */
	v9_full(&b, 1004);
	dec(m, &b, EXA, 4);
	CHECK_EQ(s->seq_lost, 2);
	v9_full(&b, 1004);
	dec(m, &b, EXA, 4);
	CHECK_EQ(s->seq_lost, 2);
	CHECK_EQ(s->seq_resets, 0);
	v9_full(&b, 0);
	dec(m, &b, EXA, 5);
	CHECK_EQ(s->seq_resets, 1);
	v9_full(&b, 1);
	dec(m, &b, EXA, 6);
	CHECK_EQ(s->seq_lost, 2);
	CHECK_EQ(s->seq_resets, 1);
	sl_collector_msg_free(m);
}

/* ---- IPFIX -------------------------------------------------------------- */

/* Template 400: absolute ms times, enterprise and variable-length fields
 * we skip, RFC 5103 reverse counters and flags. */
static const struct fs t400[] = {
    {152, 8, 0},	 {153, 8, 0}, {8, 4, 0},       {12, 4, 0},
    {7, 2, 0},		 {11, 2, 0},  {4, 1, 0},       {6, 2, 0},
    {6, 1, PEN_REVERSE}, {1, 4, 0},   {2, 8, 0},       {1, 8, PEN_REVERSE},
    {2, 4, PEN_REVERSE}, {58, 2, 0},  {136, 1, 0},     {5, 3, 9999},
    {82, 65535, 0},	 {32, 2, 0},  {184, 65535, 0},
};

static void rec400(struct buf *b, const char *src, uint16_t varlen)
{
	b64(b, 1700000000123ULL);
	b64(b, 1700000004567ULL);
	bip4(b, src);
	bip4(b, "172.16.0.1");
	b16(b, 55555);
	b16(b, 22);
	b8(b, 6);
	b16(b, 0x011b); /* NS bit above the 8 flags */
	b8(b, 0x12);
	b32(b, 4000);
	b64(b, 40);
	b64(b, 6000000000ULL);
	b32(b, 30);
	b16(b, 7);
	b8(b, 3);
	b8(b, 1), b8(b, 2), b8(b, 3);
	b8(b, 4);
	bmem(b, "eth0", 4);
	b16(b, 0);
	if (varlen < 255) {
		b8(b, (uint8_t)varlen);
	} else {
		b8(b, 255);
		b16(b, varlen);
	}
	memset(b->b + b->n, 0xab, varlen);
	b->n += varlen;
}

/* Template 401: IPv6, seconds, total counters (and reverse totals). */
static const struct fs t401[] = {
    {150, 4, 0},	  {151, 4, 0}, {27, 16, 0},
    {28, 16, 0},	  {4, 1, 0},   {139, 2, 0},
    {85, 8, 0},		  {86, 8, 0},  {85, 8, PEN_REVERSE},
    {86, 8, PEN_REVERSE},
};

/* Template 402: NTP microseconds, ICMP as type and code elements. */
static const struct fs t402[] = {
    {154, 8, 0}, {155, 8, 0}, {8, 4, 0}, {12, 4, 0}, {4, 1, 0},
    {176, 1, 0}, {177, 1, 0}, {1, 8, 0}, {2, 8, 0},
};

/* Template 403: NTP nanoseconds, 4-byte and 3-byte counters. */
static const struct fs t403[] = {
    {156, 8, 0}, {157, 8, 0}, {8, 4, 0}, {12, 4, 0}, {1, 3, 0}, {2, 1, 0},
};

/* Template 404: sysUpTime, read after systemInitTimeMilliseconds. */
static const struct fs t404[] = {
    {22, 4, 0}, {21, 4, 0}, {8, 4, 0}, {12, 4, 0}, {1, 4, 0}, {2, 4, 0},
};

static uint64_t ntp(uint64_t unix_s, uint32_t frac)
{
	return (unix_s + NTP_OFFSET) << 32 | frac;
}

static void ipfix_templates(struct buf *b)
{
	uint32_t s = set_begin(b, 2);

	btemplate(b, 400, t400, sizeof(t400) / sizeof(t400[0]));
	btemplate(b, 401, t401, sizeof(t401) / sizeof(t401[0]));
	btemplate(b, 402, t402, sizeof(t402) / sizeof(t402[0]));
	btemplate(b, 403, t403, sizeof(t403) / sizeof(t403[0]));
	btemplate(b, 404, t404, sizeof(t404) / sizeof(t404[0]));
	set_end(b, s);
}

static void options_405(struct buf *b, uint64_t init_ms)
{
	uint32_t s = set_begin(b, 3);

	b16(b, 405);
	b16(b, 2);
	b16(b, 1);
	b16(b, 149); /* observationDomainId, the scope */
	b16(b, 4);
	b16(b, 160);
	b16(b, 8);
	set_end(b, s);
	s = set_begin(b, 405);
	b32(b, 5);
	b64(b, init_ms);
	set_end(b, s);
}

static void rec404(struct buf *b, const char *src, uint32_t start, uint32_t end)
{
	uint32_t s = set_begin(b, 404);

	b32(b, start);
	b32(b, end);
	bip4(b, src);
	bip4(b, "10.9.9.9");
	b32(b, 100);
	b32(b, 1);
	set_end(b, s);
}

static void ipfix_full(struct buf *b, uint32_t seq)
{
	uint32_t s;

	ipfix_hdr(b, 1700000010, seq, 77);
	ipfix_templates(b);
	s = set_begin(b, 400);
	rec400(b, "10.2.2.1", 3);
	rec400(b, "10.2.2.2", 300);
	set_end(b, s);
	s = set_begin(b, 401);
	b32(b, 1700000001);
	b32(b, 1700000002);
	bip6(b, "fe80::1");
	bip6(b, "ff02::fb");
	b8(b, 17);
	b16(b, 0);
	b64(b, 1234567);
	b64(b, 890);
	b64(b, 333);
	b64(b, 3);
	set_end(b, s);
	s = set_begin(b, 402);
	b64(b, ntp(1700000003, 0x80000000u));
	b64(b, ntp(1700000004, 0x40000000u));
	bip4(b, "10.3.3.3");
	bip4(b, "10.4.4.4");
	b8(b, 1);
	b8(b, 11);
	b8(b, 1);
	b64(b, 56);
	b64(b, 1);
	set_end(b, s);
	s = set_begin(b, 403);
	b64(b, ntp(1700000005, 0));
	b64(b, ntp(1700000006, 0xc0000000u));
	bip4(b, "10.5.5.5");
	bip4(b, "10.6.6.6");
	b8(b, 0x01), b8(b, 0x00), b8(b, 0x02); /* 65538 */
	b8(b, 9);
	set_end(b, s);
	/* uptime before any systemInitTime: the flow ends at export time */
	rec404(b, "10.7.7.7", 1000, 4000);
	options_405(b, 1699999000000ULL);
	rec404(b, "10.7.7.8", 1000, 4000);
	ipfix_end(b);
}

static void test_ipfix(void)
{
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	const struct sl_exporter_stats *s;
	const struct sl_collector_rec *r;
	struct buf b;

	ipfix_full(&b, 0);
	CHECK_EQ(dec(m, &b, EXA, 1), 7);
	for (int i = 0; i < 2; i++) {
		r = rec(m, i);
		CHECK(ip4_is(r->key.src, i ? "10.2.2.2" : "10.2.2.1"));
		CHECK(ip4_is(r->key.dst, "172.16.0.1"));
		CHECK_EQ(r->key.sport, 55555);
		CHECK_EQ(r->key.dport, 22);
		CHECK_EQ(r->key.proto, 6);
		CHECK_EQ(r->key.vlan, 7);
		CHECK_EQ(r->tcp_flags, 0x1b);
		CHECK_EQ(r->tcp_flags_rev, 0x12);
		CHECK_EQ(r->fwd.bytes, 4000);
		CHECK_EQ(r->fwd.pkts, 40);
		CHECK(r->rev.bytes == 6000000000ULL);
		CHECK_EQ(r->rev.pkts, 30);
		CHECK(r->first_ns == 1700000000123ULL * MS);
		CHECK(r->last_ns == 1700000004567ULL * MS);
		CHECK_EQ(r->end_reason, 3);
		CHECK_EQ(r->icmp_type, 0);
		CHECK_EQ(r->version, 10);
		CHECK_EQ(r->domain, 77);
	}
	r = rec(m, 2);
	CHECK_EQ(r->key.ip_version, 6);
	CHECK(ip6_is(r->key.src, "fe80::1"));
	CHECK(ip6_is(r->key.dst, "ff02::fb"));
	CHECK_EQ(r->key.proto, 17);
	CHECK_EQ(r->fwd.bytes, 1234567);
	CHECK_EQ(r->fwd.pkts, 890);
	CHECK_EQ(r->rev.bytes, 333);
	CHECK_EQ(r->rev.pkts, 3);
	CHECK(r->first_ns == 1700000001ULL * SEC);
	CHECK(r->last_ns == 1700000002ULL * SEC);
	r = rec(m, 3);
	CHECK_EQ(r->key.proto, 1);
	CHECK_EQ(r->icmp_type, 11);
	CHECK_EQ(r->icmp_code, 1);
	CHECK(r->first_ns == 1700000003ULL * SEC + 500 * MS);
	CHECK(r->last_ns == 1700000004ULL * SEC + 250 * MS);
	r = rec(m, 4);
	CHECK_EQ(r->fwd.bytes, 65538);
	CHECK_EQ(r->fwd.pkts, 9);
	CHECK(r->first_ns == 1700000005ULL * SEC);
	CHECK(r->last_ns == 1700000006ULL * SEC + 750 * MS);
	r = rec(m, 5);
	CHECK(ip4_is(r->key.src, "10.7.7.7"));
	CHECK(r->last_ns == 1700000010ULL * SEC);
	CHECK(r->first_ns == 1700000010ULL * SEC - 3000 * MS);
	r = rec(m, 6);
	CHECK(ip4_is(r->key.src, "10.7.7.8"));
	CHECK(r->first_ns == 1699999001000ULL * MS);
	CHECK(r->last_ns == 1699999004000ULL * MS);
	s = st(m, 1);
	CHECK_EQ(s->templates, 6);
	CHECK_EQ(s->records, 7);
	CHECK_EQ(dropped_total(s), 0);

	/* systemInitTime stays known for later messages */
	ipfix_hdr(&b, 1700000020, 8, 77);
	rec404(&b, "10.7.7.9", 5000, 6000);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 2), 1);
	CHECK(rec(m, 0)->first_ns == 1699999005000ULL * MS);
	CHECK_EQ(s->seq_lost, 0);
	sl_collector_msg_free(m);
}

static void test_ipfix_init_in_record(void)
{
	static const struct fs t[] = {
	    {22, 4, 0}, {21, 4, 0},  {160, 8, 0}, {8, 4, 0},
	    {12, 4, 0}, {158, 4, 0}, {159, 4, 0},
	};
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	struct buf b;
	uint32_t s;

	ipfix_hdr(&b, 1700000010, 0, 1);
	s = set_begin(&b, 2);
	btemplate(&b, 410, t, 5);
	btemplate(&b, 411, t + 3, 4);
	set_end(&b, s);
	s = set_begin(&b, 410);
	b32(&b, 10);
	b32(&b, 20);
	b64(&b, 1600000000000ULL);
	bip4(&b, "1.1.1.1");
	bip4(&b, "2.2.2.2");
	set_end(&b, s);
	/* flowStart/EndDeltaMicroseconds: before the export time */
	s = set_begin(&b, 411);
	bip4(&b, "1.1.1.1");
	bip4(&b, "2.2.2.2");
	b32(&b, 2500000);
	b32(&b, 1000);
	set_end(&b, s);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 1), 2);
	CHECK(rec(m, 0)->first_ns == 1600000000010ULL * MS);
	CHECK(rec(m, 0)->last_ns == 1600000000020ULL * MS);
	CHECK(rec(m, 1)->first_ns == 1700000010ULL * SEC - 2500 * MS);
	CHECK(rec(m, 1)->last_ns == 1700000010ULL * SEC - 1 * MS);
	sl_collector_msg_free(m);
}

/* A message of n records of template 404 (templates included). */
static void ipfix_n(struct buf *b, uint32_t seq, int n, int with_tmpl)
{
	ipfix_hdr(b, 1700000000, seq, 5);
	if (with_tmpl)
		ipfix_templates(b);
	for (int i = 0; i < n; i++)
		rec404(b, "10.0.0.1", 1, 2);
	ipfix_end(b);
}

static void test_ipfix_seq(void)
{
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	const struct sl_exporter_stats *s;
	struct buf b;

	ipfix_n(&b, 1000, 3, 1);
	dec(m, &b, EXA, 1);
	s = st(m, 1);
	ipfix_n(&b, 1003, 2, 0);
	dec(m, &b, EXA, 2);
	ipfix_n(&b, 1005, 0, 1);
	dec(m, &b, EXA, 3);
	ipfix_n(&b, 1005, 4, 0);
	dec(m, &b, EXA, 4);
	CHECK_EQ(s->seq_lost, 0);
	/* 1009 expected */
	ipfix_n(&b, 1020, 1, 0);
	dec(m, &b, EXA, 5);
	CHECK_EQ(s->seq_lost, 11);
	CHECK_EQ(s->seq_resets, 0);
	ipfix_n(&b, 3, 1, 0);
	dec(m, &b, EXA, 6);
	CHECK_EQ(s->seq_resets, 1);
	/* a domain has a sequence of its own */
	ipfix_n(&b, 5000, 1, 1);
	b.b[15] = 6;
	dec(m, &b, EXA, 7);
	CHECK_EQ(s->seq_resets, 1);
	CHECK_EQ(s->seq_lost, 11);
	sl_collector_msg_free(m);

	/* softflowd counts the message's own records too: followed as such */
	m = msg_new(0, 0, 0, 0);
	ipfix_n(&b, 3, 3, 1);
	dec(m, &b, EXA, 1);
	s = st(m, 1);
	ipfix_n(&b, 8, 5, 0);
	dec(m, &b, EXA, 2);
	ipfix_n(&b, 9, 1, 0);
	dec(m, &b, EXA, 3);
	ipfix_n(&b, 11, 2, 0);
	dec(m, &b, EXA, 4);
	CHECK_EQ(s->seq_lost, 0);
	/* a lost message of 4 records */
	ipfix_n(&b, 17, 2, 0);
	dec(m, &b, EXA, 5);
	CHECK_EQ(s->seq_lost, 4);
	CHECK_EQ(s->seq_resets, 0);
	sl_collector_msg_free(m);
}

/* ---- sampling: counts multiplied by the rate that applies ----------------- */

/* An options template (v9: scope System; IPFIX: scope observationDomainId)
 * and a record of it: one field of 4 bytes after the scope, or two. */
static void options_tmpl(struct buf *b, int v9, uint16_t tid,
			 const struct fs *f, int n)
{
	uint32_t s = set_begin(b, v9 ? 1 : 3);

	b16(b, tid);
	if (v9) {
		b16(b, 4); /* scope length */
		b16(b, (uint16_t)(4 * n));
		b16(b, 1); /* System */
		b16(b, 4);
	} else {
		b16(b, (uint16_t)(n + 1));
		b16(b, 1);
		b16(b, 149);
		b16(b, 4);
	}
	for (int i = 0; i < n; i++) {
		b16(b, f[i].id);
		b16(b, f[i].len);
	}
	set_end(b, s);
}

static void test_sampling_v5(void)
{
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	struct buf b;

	/* mode 01 (deterministic), 1 in 100 */
	v5_msg(&b, 2, 100000, 1700000000, 0, 0, v5r, 2);
	patch16(&b, 22, 1u << 14 | 100);
	CHECK_EQ(dec(m, &b, EXA, 1), 2);
	CHECK_EQ(rec(m, 0)->fwd.pkts, 1000);
	CHECK_EQ(rec(m, 0)->fwd.bytes, 150000);
	CHECK_EQ(rec(m, 0)->fwd.ip_bytes, 150000);
	CHECK_EQ(rec(m, 0)->sampling, 100);
	CHECK_EQ(rec(m, 1)->fwd.pkts, 100);
	CHECK_EQ(st(m, 1)->sampled, 2);
	CHECK_EQ(st(m, 1)->sampling, 100);
	/* a mode without an interval, or 1 in 1: the counts as sent */
	v5_msg(&b, 1, 100000, 1700000000, 0, 2, v5r, 1);
	patch16(&b, 22, 2u << 14);
	CHECK_EQ(dec(m, &b, EXA, 2), 1);
	CHECK_EQ(rec(m, 0)->fwd.pkts, 10);
	CHECK_EQ(rec(m, 0)->sampling, 0);
	patch16(&b, 22, 1);
	CHECK_EQ(dec(m, &b, EXA, 3), 1);
	CHECK_EQ(rec(m, 0)->fwd.pkts, 10);
	CHECK_EQ(rec(m, 0)->sampling, 1);
	CHECK_EQ(st(m, 1)->sampled, 2);
	sl_collector_msg_free(m);
}

/* v9 data: addresses, IN_BYTES, IN_PKTS, FLOW_SAMPLER_ID, SAMPLING_INTERVAL */
static const struct fs samp_t[] = {
    {8, 4, 0}, {12, 4, 0}, {1, 4, 0}, {2, 4, 0}, {48, 1, 0}, {34, 4, 0},
};

static void samp_rec(struct buf *b, uint32_t pkts, uint8_t sampler,
		     uint32_t own_rate)
{
	bip4(b, "10.0.0.1");
	bip4(b, "10.0.0.2");
	b32(b, pkts * 100);
	b32(b, pkts);
	b8(b, sampler);
	b32(b, own_rate);
}

static void test_sampling_v9(void)
{
	static const struct fs dom_f[] = {{34, 4, 0}, {35, 1, 0}};
	static const struct fs smp_f[] = {{48, 1, 0}, {50, 4, 0}};
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	struct buf b;
	uint32_t s;

	v9_hdr(&b, 4, 100000, 1700000000, 1, 7);
	s = set_begin(&b, 0);
	btemplate(&b, 256, samp_t, 6);
	set_end(&b, s);
	/* data before any rate is told: as sent */
	s = set_begin(&b, 256);
	samp_rec(&b, 10, 0, 0);
	set_end(&b, s);
	options_tmpl(&b, 1, 257, dom_f, 2);
	options_tmpl(&b, 1, 258, smp_f, 2);
	s = set_begin(&b, 257);
	b32(&b, 0);
	b32(&b, 100); /* SAMPLING_INTERVAL: the domain's */
	b8(&b, 1);
	set_end(&b, s);
	s = set_begin(&b, 258);
	b32(&b, 0);
	b8(&b, 5); /* sampler 5: 1 in 10 */
	b32(&b, 10);
	set_end(&b, s);
	s = set_begin(&b, 256);
	samp_rec(&b, 10, 0, 0); /* the domain's 100 */
	samp_rec(&b, 10, 5, 0); /* its sampler's 10 */
	samp_rec(&b, 10, 9, 0); /* an unknown sampler: the domain's */
	samp_rec(&b, 10, 5, 3); /* its own 3 */
	set_end(&b, s);
	CHECK_EQ(dec(m, &b, EXA, 1), 5);
	CHECK_EQ(rec(m, 0)->fwd.pkts, 10);
	CHECK_EQ(rec(m, 0)->sampling, 0);
	CHECK_EQ(rec(m, 1)->fwd.pkts, 1000);
	CHECK_EQ(rec(m, 1)->fwd.bytes, 100000);
	CHECK_EQ(rec(m, 1)->sampling, 100);
	CHECK_EQ(rec(m, 2)->fwd.pkts, 100);
	CHECK_EQ(rec(m, 2)->sampling, 10);
	CHECK_EQ(rec(m, 3)->fwd.pkts, 1000);
	CHECK_EQ(rec(m, 4)->fwd.pkts, 30);
	CHECK_EQ(rec(m, 4)->sampling, 3);
	CHECK_EQ(st(m, 1)->sampled, 4);
	CHECK_EQ(st(m, 1)->sampling, 3);
	/* another source id of the exporter has its own rate: none */
	v9_hdr(&b, 2, 100000, 1700000000, 1, 8);
	s = set_begin(&b, 0);
	btemplate(&b, 256, samp_t, 6);
	set_end(&b, s);
	s = set_begin(&b, 256);
	samp_rec(&b, 10, 0, 0);
	set_end(&b, s);
	CHECK_EQ(dec(m, &b, EXA, 2), 1);
	CHECK_EQ(rec(m, 0)->fwd.pkts, 10);
	sl_collector_msg_free(m);
}

static void test_sampling_ipfix(void)
{
	static const struct fs pkt_f[] = {{305, 4, 0}, {306, 4, 0}};
	static const struct fs t[] = {{8, 4, 0}, {12, 4, 0}, {1, 8, 0},
				      {2, 8, 0}, {86, 8, 0}};
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	struct buf b;
	uint32_t s;

	ipfix_hdr(&b, 1700000000, 0, 9);
	options_tmpl(&b, 0, 257, pkt_f, 2);
	s = set_begin(&b, 257);
	b32(&b, 9);
	b32(&b, 1); /* 1 packet of every 1 + 99 */
	b32(&b, 99);
	set_end(&b, s);
	s = set_begin(&b, 2);
	btemplate(&b, 256, t, 5);
	set_end(&b, s);
	s = set_begin(&b, 256);
	bip4(&b, "10.0.0.1");
	bip4(&b, "10.0.0.2");
	b64(&b, 1000);
	b64(&b, 10);
	b64(&b, 0);
	/* near 2^64: saturates, does not wrap */
	bip4(&b, "10.0.0.3");
	bip4(&b, "10.0.0.4");
	b64(&b, UINT64_MAX / 50);
	b64(&b, 1);
	b64(&b, 0);
	set_end(&b, s);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 1), 2);
	CHECK_EQ(rec(m, 0)->fwd.pkts, 1000);
	CHECK_EQ(rec(m, 0)->fwd.bytes, 100000);
	CHECK_EQ(rec(m, 0)->sampling, 100);
	CHECK(rec(m, 1)->fwd.bytes == UINT64_MAX);
	CHECK_EQ(rec(m, 1)->fwd.pkts, 100);
	sl_collector_msg_free(m);
}

/* ---- counters: NSEL initiator/responder, post (OUT_) counts -------------- */

/* Cisco ASA (NSEL): initiatorOctets/Packets count the initiator's side,
 * responderOctets/Packets the other: a biflow in one record. OUT_BYTES /
 * OUT_PKTS (postOctetDeltaCount, RFC 5102) count the same packets after
 * the observation point: never added, never the reverse side. */
static void test_counters(void)
{
	static const struct fs nsel_t[] = {
	    {8, 4, 0},	 {12, 4, 0},  {7, 2, 0},   {11, 2, 0},
	    {4, 1, 0},	 {231, 4, 0}, {232, 4, 0}, {298, 4, 0},
	    {299, 4, 0}, {233, 1, 0},
	};
	static const struct fs inout_t[] = {
	    {8, 4, 0}, {12, 4, 0}, {1, 4, 0}, {2, 4, 0}, {23, 4, 0}, {24, 4, 0},
	};
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	const struct sl_collector_rec *r;
	struct buf b;
	uint32_t s;

	v9_hdr(&b, 3, 100000, 1700000000, 1, 3);
	s = set_begin(&b, 0);
	btemplate(&b, 256, nsel_t, 10);
	btemplate(&b, 257, inout_t, 6);
	set_end(&b, s);
	s = set_begin(&b, 256);
	bip4(&b, "192.0.2.10");
	bip4(&b, "198.51.100.20");
	b16(&b, 40000);
	b16(&b, 443);
	b8(&b, 6);
	b32(&b, 1500); /* initiatorOctets */
	b32(&b, 9000); /* responderOctets */
	b32(&b, 10);
	b32(&b, 12);
	b8(&b, 2); /* firewallEvent: flow deleted */
	set_end(&b, s);
	s = set_begin(&b, 257);
	bip4(&b, "192.0.2.11");
	bip4(&b, "198.51.100.21");
	b32(&b, 1000);
	b32(&b, 10);
	b32(&b, 900); /* after a middlebox: the same packets */
	b32(&b, 9);
	set_end(&b, s);
	CHECK_EQ(dec(m, &b, EXA, 1), 2);
	r = rec(m, 0);
	CHECK_EQ(r->fwd.bytes, 1500);
	CHECK_EQ(r->fwd.ip_bytes, 1500);
	CHECK_EQ(r->fwd.pkts, 10);
	CHECK_EQ(r->rev.bytes, 9000);
	CHECK_EQ(r->rev.ip_bytes, 9000);
	CHECK_EQ(r->rev.pkts, 12);
	r = rec(m, 1);
	CHECK_EQ(r->fwd.bytes, 1000);
	CHECK_EQ(r->fwd.pkts, 10);
	CHECK_EQ(r->rev.bytes, 0);
	CHECK_EQ(r->rev.pkts, 0);
	CHECK_EQ(r->totals, 0);
	sl_collector_msg_free(m);
}

/* octetTotalCount / packetTotalCount alone: the record says its counts
 * are running totals (the engine takes their growth); with a delta beside
 * them, the delta counts. */
static void test_totals_flag(void)
{
	static const struct fs tot_t[] = {
	    {8, 4, 0}, {12, 4, 0}, {85, 8, 0}, {86, 8, 0},
	    {85, 8, PEN_REVERSE}, {86, 8, PEN_REVERSE},
	};
	static const struct fs mix_t[] = {{8, 4, 0}, {12, 4, 0}, {1, 4, 0},
					  {86, 8, 0}};
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	struct buf b;
	uint32_t s;

	ipfix_hdr(&b, 1700000000, 0, 1);
	s = set_begin(&b, 2);
	btemplate(&b, 256, tot_t, 6);
	btemplate(&b, 257, mix_t, 4);
	set_end(&b, s);
	s = set_begin(&b, 256);
	bip4(&b, "10.0.0.1");
	bip4(&b, "10.0.0.2");
	b64(&b, 3000);
	b64(&b, 30);
	b64(&b, 500);
	b64(&b, 5);
	set_end(&b, s);
	s = set_begin(&b, 257);
	bip4(&b, "10.0.0.3");
	bip4(&b, "10.0.0.4");
	b32(&b, 100);
	b64(&b, 30);
	set_end(&b, s);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 1), 2);
	CHECK_EQ(rec(m, 0)->totals, SL_REC_TOTAL_FWD | SL_REC_TOTAL_REV);
	CHECK_EQ(rec(m, 0)->fwd.pkts, 30);
	CHECK_EQ(rec(m, 0)->rev.bytes, 500);
	CHECK_EQ(rec(m, 1)->totals, 0);
	sl_collector_msg_free(m);
}

/* Messages (seq, records) given in order to a new decoder: its loss. */
struct seq_msg {
	uint32_t seq;
	int n;
};

static uint64_t ipfix_seq_lost(const struct seq_msg *list, int n)
{
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	uint64_t lost;
	struct buf b;

	for (int i = 0; i < n; i++) {
		ipfix_n(&b, list[i].seq, list[i].n, i == 0);
		dec(m, &b, EXA, (uint32_t)i + 1);
	}
	lost = st(m, 1)->seq_lost;
	CHECK_EQ(st(m, 1)->seq_resets, 0);
	sl_collector_msg_free(m);
	return lost;
}

#define SEQ_LOST(...)                                                          \
	ipfix_seq_lost((const struct seq_msg[]){__VA_ARGS__},                  \
		       (int)(sizeof((const struct seq_msg[]){__VA_ARGS__}) /   \
			     sizeof(struct seq_msg)))

/* Two adjacent messages swapped on the way: the gap the first one left
 * is filled by the late one (it stayed counted as lost). */
static void test_seq_reorder(void)
{
	struct sl_collector_msg *m;
	struct buf b;

	/* RFC 7011: records before the message */
	CHECK_EQ(SEQ_LOST({0, 10}, {20, 10}, {10, 10}, {30, 10}), 0);
	CHECK_EQ(SEQ_LOST({0, 10}, {10, 4}, {14, 6}, {27, 3}, {20, 7},
			  {30, 5}),
		 0);
	/* a real loss next to a swap stays */
	CHECK_EQ(SEQ_LOST({0, 10}, {20, 10}, {10, 10}, {35, 5}), 5);
	/* a repeated message fills nothing twice */
	CHECK_EQ(SEQ_LOST({0, 10}, {20, 10}, {10, 10}, {10, 10}, {30, 1}), 0);
	/* softflowd: the message's own records counted too */
	CHECK_EQ(SEQ_LOST({5, 5}, {15, 10}, {22, 7}, {42, 12}, {30, 8},
			  {50, 8}),
		 0);

	/* v9 counts packets */
	m = msg_new(0, 0, 0, 0);
	v9_full(&b, 1000);
	dec(m, &b, EXA, 1);
	v9_full(&b, 1002);
	dec(m, &b, EXA, 2);
	v9_full(&b, 1001);
	dec(m, &b, EXA, 3);
	v9_full(&b, 1003);
	dec(m, &b, EXA, 4);
	CHECK_EQ(st(m, 1)->seq_lost, 0);
	CHECK_EQ(st(m, 1)->seq_resets, 0);
	sl_collector_msg_free(m);
}

/* An RFC exporter that lost a message whose records and the previous
 * one's make the next one's: softflowd's rule (seq = last + this
 * message's records) matched it and the loss went uncounted. Which rule
 * an exporter follows is decided from the messages that only one fits. */
static void test_seq_convention(void)
{
	/* 10..14 lost */
	CHECK_EQ(SEQ_LOST({0, 10}, {15, 15}, {30, 10}), 5);
	CHECK_EQ(SEQ_LOST({0, 10}, {15, 15}, {30, 10}, {40, 2}, {42, 9}), 5);
	/* after a stream that showed its rule: 25..29 lost */
	CHECK_EQ(SEQ_LOST({0, 10}, {10, 5}, {15, 7}, {22, 3}, {30, 8},
			  {38, 4}),
		 5);
	/* softflowd, variable counts, nothing lost */
	CHECK_EQ(SEQ_LOST({3, 3}, {8, 5}, {9, 1}, {11, 2}, {15, 4}, {30, 15},
			  {31, 1}),
		 0);
	/* softflowd, its message (seq 19, 4 records) lost */
	CHECK_EQ(SEQ_LOST({3, 3}, {8, 5}, {9, 1}, {11, 2}, {15, 4}, {21, 2},
			  {30, 9}),
		 4);
}

/* ---- templates per exporter and domain, expiry, withdrawal -------------- */

static void tmpl_msg(struct buf *b, uint32_t dom, uint16_t tid,
		     const struct fs *f, int n)
{
	uint32_t s;

	ipfix_hdr(b, 1700000000, 0, dom);
	s = set_begin(b, 2);
	btemplate(b, tid, f, n);
	set_end(b, s);
	ipfix_end(b);
}

static const struct fs lay_a[] = {{8, 4, 0}, {12, 4, 0}, {1, 4, 0}};
static const struct fs lay_b[] = {{12, 4, 0}, {8, 4, 0}, {2, 4, 0}, {1, 8, 0}};

/* One data record of 16 bytes for template tid. */
static void data_msg(struct buf *b, uint32_t dom, uint16_t tid, uint32_t seq)
{
	uint32_t s;

	ipfix_hdr(b, 1700000000, seq, dom);
	s = set_begin(b, tid);
	bip4(b, "1.1.1.1");
	bip4(b, "2.2.2.2");
	b32(b, 0);
	b32(b, 9);
	set_end(b, s);
	ipfix_end(b);
}

/* The same with n zero bytes more in the record. */
static void data_msg_pad(struct buf *b, uint32_t dom, uint16_t tid, uint32_t n)
{
	data_msg(b, dom, tid, 0);
	memset(b->b + b->n, 0, n);
	b->n += n;
	patch16(b, 18, b->n - 16);
	ipfix_end(b);
}

static void test_template_scope(void)
{
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	uint8_t mapped[16] = {[10] = 0xff, [11] = 0xff, 192, 0, 2, 1};
	struct buf b;

	tmpl_msg(&b, 1, 500, lay_a, 3);
	dec(m, &b, EXA, 1);
	tmpl_msg(&b, 1, 500, lay_b, 4);
	dec(m, &b, EXB, 1);
	data_msg(&b, 1, 500, 0);
	/* A reads 12 bytes: src, dst, octets 0; 4 bytes of padding */
	CHECK_EQ(dec(m, &b, EXA, 2), 1);
	CHECK(ip4_is(rec(m, 0)->key.src, "1.1.1.1"));
	CHECK_EQ(rec(m, 0)->fwd.bytes, 0);
	CHECK_EQ(rec(m, 0)->exporter, 1);
	/* B's record is 20 bytes: the set is short of one */
	CHECK_EQ(dec(m, &b, EXB, 2), 0);
	CHECK_EQ(st(m, 2)->dropped[SL_COLLECTOR_DROP_RECORD], 1);
	data_msg_pad(&b, 1, 500, 4);
	CHECK_EQ(dec(m, &b, EXB, 2), 1);
	CHECK(ip4_is(rec(m, 0)->key.src, "2.2.2.2"));
	CHECK(ip4_is(rec(m, 0)->key.dst, "1.1.1.1"));
	CHECK_EQ(rec(m, 0)->fwd.pkts, 0);
	CHECK_EQ(rec(m, 0)->fwd.bytes, 9ULL << 32);
	CHECK_EQ(rec(m, 0)->exporter, 2);
	data_msg(&b, 1, 500, 0);
	/* the same address from another port is another exporter */
	CHECK_EQ(sl_collector_msg_decode(m, b.b, b.n, EXA, 4, 2056, 3), 0);
	CHECK_EQ(sl_collector_msg_exporters(m), 4);
	CHECK_EQ(st(m, 3)->held, 1);
	CHECK_EQ(st(m, 3)->port, 2056);
	/* an IPv4-mapped IPv6 source is the IPv4 exporter */
	CHECK_EQ(sl_collector_msg_decode(m, b.b, b.n, mapped, 6, 2055, 4), 1);
	CHECK_EQ(rec(m, 0)->exporter, 1);
	/* and a real IPv6 one is new */
	CHECK_EQ(sl_collector_msg_decode(m, b.b, b.n, EX6, 6, 2055, 5), 0);
	CHECK_EQ(st(m, 4)->family, 6);
	CHECK(!memcmp(st(m, 4)->addr, EX6, 16));
	/* another domain of A does not see A's domain 1 templates */
	data_msg(&b, 2, 500, 0);
	CHECK_EQ(dec(m, &b, EXA, 6), 0);
	CHECK_EQ(st(m, 1)->held, 1);
	sl_collector_msg_free(m);
}

static void test_template_life(void)
{
	struct sl_collector_msg *m = msg_new(0, 5 * SEC, 10 * SEC, 0);
	struct buf b;
	uint32_t s;

	tmpl_msg(&b, 1, 500, lay_a, 3);
	dec(m, &b, EXA, 0);
	data_msg(&b, 1, 500, 0);
	CHECK_EQ(dec(m, &b, EXA, 9 * SEC), 1);
	/* a use keeps it like a definition (IPFIX over TCP defines once) */
	CHECK_EQ(dec(m, &b, EXA, 18 * SEC), 1);
	/* 10 s after its last definition or use it is gone: data waits */
	CHECK_EQ(dec(m, &b, EXA, 29 * SEC), 0);
	CHECK_EQ(st(m, 1)->held, 1);
	/* the refresh brings the waiting record */
	tmpl_msg(&b, 1, 500, lay_a, 3);
	CHECK_EQ(dec(m, &b, EXA, 30 * SEC), 1);
	CHECK(ip4_is(rec(m, 0)->key.src, "1.1.1.1"));
	/* expire() forgets it too */
	sl_collector_msg_expire(m, 41 * SEC);
	data_msg(&b, 1, 500, 0);
	CHECK_EQ(dec(m, &b, EXA, 30 * SEC), 0);
	CHECK_EQ(st(m, 1)->held, 2);
	sl_collector_msg_expire(m, 36 * SEC);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_NO_TEMPLATE], 1);
	tmpl_msg(&b, 1, 500, lay_a, 3);
	CHECK_EQ(dec(m, &b, EXA, 37 * SEC), 0);

	/* withdrawal: field count 0 */
	ipfix_hdr(&b, 1700000000, 0, 1);
	s = set_begin(&b, 2);
	b16(&b, 500);
	b16(&b, 0);
	set_end(&b, s);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 38 * SEC), 0);
	/* data for it now is dropped, not held: a redefinition may give the
	 * id another layout (RFC 7011 section 8.1) */
	data_msg(&b, 1, 500, 0);
	CHECK_EQ(dec(m, &b, EXA, 38 * SEC), 0);
	CHECK_EQ(st(m, 1)->held, 2);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_WITHDRAWN], 1);
	sl_collector_msg_expire(m, 39 * SEC); /* the mark outlives expire() */
	CHECK_EQ(dec(m, &b, EXA, 39 * SEC), 0);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_WITHDRAWN], 2);
	/* all templates withdrawn at once: id 2 */
	tmpl_msg(&b, 1, 500, lay_a, 3);
	CHECK_EQ(dec(m, &b, EXA, 39 * SEC), 0); /* nothing held for it */
	data_msg(&b, 1, 500, 0);
	CHECK_EQ(dec(m, &b, EXA, 39 * SEC), 1);
	tmpl_msg(&b, 1, 501, lay_a, 3);
	dec(m, &b, EXA, 39 * SEC);
	ipfix_hdr(&b, 1700000000, 0, 1);
	s = set_begin(&b, 2);
	b16(&b, 2);
	b16(&b, 0);
	set_end(&b, s);
	ipfix_end(&b);
	dec(m, &b, EXA, 40 * SEC);
	data_msg(&b, 1, 500, 0);
	CHECK_EQ(dec(m, &b, EXA, 40 * SEC), 0);
	data_msg(&b, 1, 501, 0);
	CHECK_EQ(dec(m, &b, EXA, 40 * SEC), 0);
	CHECK_EQ(st(m, 1)->held, 2);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_WITHDRAWN], 4);
	/* withdrawing all options templates (id 3) leaves the others */
	tmpl_msg(&b, 1, 500, lay_a, 3);
	dec(m, &b, EXA, 40 * SEC);
	ipfix_hdr(&b, 1700000000, 0, 1);
	s = set_begin(&b, 3);
	b16(&b, 3);
	b16(&b, 0);
	set_end(&b, s);
	ipfix_end(&b);
	dec(m, &b, EXA, 40 * SEC);
	data_msg(&b, 1, 500, 0);
	CHECK_EQ(dec(m, &b, EXA, 40 * SEC), 1);
	/* a redefinition replaces the layout */
	tmpl_msg(&b, 1, 502, lay_a, 3);
	dec(m, &b, EXA, 41 * SEC);
	tmpl_msg(&b, 1, 502, lay_b, 4);
	dec(m, &b, EXA, 41 * SEC);
	data_msg_pad(&b, 1, 502, 4);
	CHECK_EQ(dec(m, &b, EXA, 41 * SEC), 1);
	CHECK(ip4_is(rec(m, 0)->key.src, "2.2.2.2"));
	CHECK_EQ(rec(m, 0)->fwd.pkts, 0);
	sl_collector_msg_free(m);
}

/* ---- data before its template ------------------------------------------ */

static void test_hold(void)
{
	struct sl_collector_msg *m = msg_new(3, 5 * SEC, 0, 0);
	struct buf b;

	/* records of 600 and 601 before their templates, in this order:
	 * 600 (seq 0), 601, 600 (seq 2) */
	data_msg(&b, 1, 600, 0);
	CHECK_EQ(dec(m, &b, EXA, 1 * SEC), 0);
	data_msg(&b, 1, 601, 1);
	b.b[16 + 4 + 3] = 7; /* src 1.1.1.7 */
	CHECK_EQ(dec(m, &b, EXA, 1 * SEC), 0);
	data_msg(&b, 1, 600, 2);
	b.b[16 + 4 + 3] = 3;
	CHECK_EQ(dec(m, &b, EXA, 2 * SEC), 0);
	CHECK_EQ(st(m, 1)->held, 3);
	CHECK_EQ(st(m, 1)->records, 0);
	/* 600's template comes with a record of its own after it */
	tmpl_msg(&b, 1, 600, lay_a, 3);
	{
		uint32_t s = set_begin(&b, 600);

		bip4(&b, "9.9.9.9");
		bip4(&b, "2.2.2.2");
		b32(&b, 5);
		set_end(&b, s);
		ipfix_end(&b);
	}
	CHECK_EQ(dec(m, &b, EXA, 3 * SEC), 3);
	CHECK(ip4_is(rec(m, 0)->key.src, "1.1.1.1"));
	CHECK(ip4_is(rec(m, 1)->key.src, "1.1.1.3"));
	CHECK(ip4_is(rec(m, 2)->key.src, "9.9.9.9"));
	CHECK_EQ(st(m, 1)->records, 3);
	/* 601's waited too long */
	tmpl_msg(&b, 1, 601, lay_a, 3);
	CHECK_EQ(dec(m, &b, EXA, 7 * SEC), 0);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_NO_TEMPLATE], 1);

	/* more than hold_max sets: the oldest goes */
	for (uint32_t i = 0; i < 4; i++) {
		data_msg(&b, 1, 602, i);
		b.b[16 + 4 + 3] = (uint8_t)(10 + i);
		CHECK_EQ(dec(m, &b, EXA, 10 * SEC), 0);
	}
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_NO_TEMPLATE], 2);
	tmpl_msg(&b, 1, 602, lay_a, 3);
	CHECK_EQ(dec(m, &b, EXA, 11 * SEC), 3);
	CHECK(ip4_is(rec(m, 0)->key.src, "1.1.1.11"));
	CHECK(ip4_is(rec(m, 2)->key.src, "1.1.1.13"));
	/* held data of one exporter is not released by another's template */
	data_msg(&b, 1, 603, 0);
	dec(m, &b, EXA, 12 * SEC);
	tmpl_msg(&b, 1, 603, lay_a, 3);
	CHECK_EQ(dec(m, &b, EXB, 12 * SEC), 0);
	CHECK_EQ(dec(m, &b, EXA, 12 * SEC), 1);

	/* a template later in the same message releases earlier data */
	ipfix_hdr(&b, 1700000000, 0, 3);
	{
		uint32_t s = set_begin(&b, 604);

		bip4(&b, "4.4.4.4");
		bip4(&b, "2.2.2.2");
		b32(&b, 5);
		set_end(&b, s);
		s = set_begin(&b, 2);
		btemplate(&b, 604, lay_a, 3);
		set_end(&b, s);
		ipfix_end(&b);
	}
	CHECK_EQ(dec(m, &b, EXA, 13 * SEC), 1);
	CHECK(ip4_is(rec(m, 0)->key.src, "4.4.4.4"));
	sl_collector_msg_free(m);
}

/* ---- malformed messages ------------------------------------------------- */

static void test_malformed(void)
{
	struct sl_collector_msg *m = msg_new(0, 0, 0, 2);
	const struct sl_exporter_stats *s;
	struct sl_collector_state cs;
	struct buf b;
	uint32_t at, gen;

	tmpl_msg(&b, 1, 500, lay_a, 3);
	dec(m, &b, EXA, 1);
	s = st(m, 1);

	/* SL_COLLECTOR_DROP_SET: a set past the end; the record before it is
	 * kept */
	data_msg(&b, 1, 500, 0);
	at = set_begin(&b, 500);
	b32(&b, 0);
	patch16(&b, at + 2, 100);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 2), 1);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_SET], 1);
	/* a set length below 4 */
	data_msg(&b, 1, 500, 0);
	set_begin(&b, 500);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 3), 1);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_SET], 2);
	/* a reserved set id is skipped, the sets after it are read */
	ipfix_hdr(&b, 1700000000, 0, 1);
	at = set_begin(&b, 7);
	b32(&b, 1);
	set_end(&b, at);
	at = set_begin(&b, 500);
	bip4(&b, "5.5.5.5");
	bip4(&b, "6.6.6.6");
	b32(&b, 1);
	set_end(&b, at);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 4), 1);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_SET], 3);
	/* trailing bytes after the last set */
	data_msg(&b, 1, 500, 0);
	b16(&b, 0x0002);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 4), 1);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_SET], 4);

	/* SL_COLLECTOR_DROP_TEMPLATE: more fields than the set holds; the data
	 * set after it is still read */
	ipfix_hdr(&b, 1700000000, 0, 1);
	at = set_begin(&b, 2);
	b16(&b, 510);
	b16(&b, 1000);
	b32(&b, 0x00080004);
	set_end(&b, at);
	at = set_begin(&b, 500);
	bip4(&b, "5.5.5.5");
	bip4(&b, "6.6.6.6");
	b32(&b, 1);
	set_end(&b, at);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 5), 1);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_TEMPLATE], 1);
	/* template id below 256 */
	tmpl_msg(&b, 1, 255, lay_a, 3);
	dec(m, &b, EXA, 6);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_TEMPLATE], 2);
	/* every field of length 0: a record of no bytes */
	{
		static const struct fs zero[] = {{8, 0, 0}, {1, 0, 0}};

		tmpl_msg(&b, 1, 511, zero, 2);
		dec(m, &b, EXA, 7);
		CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_TEMPLATE], 3);
	}
	/* options template with no scope field */
	ipfix_hdr(&b, 1700000000, 0, 1);
	at = set_begin(&b, 3);
	b16(&b, 512);
	b16(&b, 1);
	b16(&b, 0);
	b32(&b, 0x00a00008);
	set_end(&b, at);
	ipfix_end(&b);
	dec(m, &b, EXA, 8);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_TEMPLATE], 4);
	/* an enterprise field cut by the end of the set */
	ipfix_hdr(&b, 1700000000, 0, 1);
	at = set_begin(&b, 2);
	b16(&b, 513);
	b16(&b, 1);
	b32(&b, 0x80010004);
	b16(&b, 0);
	set_end(&b, at);
	ipfix_end(&b);
	dec(m, &b, EXA, 9);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_TEMPLATE], 5);
	/* v9: a template of no field */
	v9_hdr(&b, 1, 1, 1, 0, 0);
	at = set_begin(&b, 0);
	b16(&b, 300);
	b16(&b, 0);
	set_end(&b, at);
	dec(m, &b, EXA, 10);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_TEMPLATE], 6);
	CHECK_EQ(s->templates, 1);

	/* SL_COLLECTOR_DROP_RECORD: a variable-length field past the set */
	{
		static const struct fs var[] = {
		    {8, 4, 0}, {12, 4, 0}, {82, 65535, 0}};

		tmpl_msg(&b, 1, 520, var, 3);
		dec(m, &b, EXA, 11);
		ipfix_hdr(&b, 1700000000, 0, 1);
		at = set_begin(&b, 520);
		bip4(&b, "7.7.7.7");
		bip4(&b, "8.8.8.8");
		b8(&b, 2);
		b16(&b, 0);
		bip4(&b, "7.7.7.8");
		bip4(&b, "8.8.8.8");
		b8(&b, 255);
		b16(&b, 1000);
		b32(&b, 0);
		set_end(&b, at);
		ipfix_end(&b);
		CHECK_EQ(dec(m, &b, EXA, 12), 1);
		CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_RECORD], 1);
		/* the long form cut in its length */
		b.n = 16;
		at = set_begin(&b, 520);
		bip4(&b, "7.7.7.7");
		bip4(&b, "8.8.8.8");
		b8(&b, 255);
		b8(&b, 0);
		set_end(&b, at);
		ipfix_end(&b);
		CHECK_EQ(dec(m, &b, EXA, 13), 0);
		CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_RECORD], 2);
	}
	/* a set shorter than its template's record */
	ipfix_hdr(&b, 1700000000, 0, 1);
	at = set_begin(&b, 500);
	b32(&b, 0);
	set_end(&b, at);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 14), 0);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_RECORD], 3);

	/* SL_COLLECTOR_DROP_EMPTY */
	ipfix_hdr(&b, 1700000000, 0, 1);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 15), 0);
	v9_hdr(&b, 0, 1, 1, 0, 0);
	CHECK_EQ(dec(m, &b, EXA, 15), 0);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_EMPTY], 2);

	/* SL_COLLECTOR_DROP_LENGTH: the header says more than came... */
	data_msg(&b, 1, 500, 0);
	patch16(&b, 2, b.n + 8);
	CHECK_EQ(dec(m, &b, EXA, 16), 1);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_LENGTH], 1);
	/* ...or less: what it covers is read */
	data_msg(&b, 1, 500, 0);
	b32(&b, 0xdeadbeef);
	CHECK_EQ(dec(m, &b, EXA, 17), 1);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_LENGTH], 2);
	patch16(&b, 2, 8);
	CHECK_EQ(dec(m, &b, EXA, 18), 0);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_LENGTH], 3);

	/* SL_COLLECTOR_DROP_SHORT, SL_COLLECTOR_DROP_VERSION from a known
	 * exporter */
	CHECK_EQ(sl_collector_msg_decode(m, b.b, 10, EXA, 4, 2055, 19), 0);
	CHECK_EQ(sl_collector_msg_decode(m, b.b, 1, EXA, 4, 2055, 19), 0);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_SHORT], 2);
	b.b[1] = 7;
	CHECK_EQ(dec(m, &b, EXA, 20), 0);
	CHECK_EQ(s->dropped[SL_COLLECTOR_DROP_VERSION], 1);
	/* from an unknown source: slot 0, no exporter made */
	CHECK_EQ(dec(m, &b, EXC, 21), 0);
	CHECK_EQ(sl_collector_msg_decode(m, b.b, 0, EXC, 4, 1, 21), 0);
	CHECK_EQ(sl_collector_msg_exporters(m), 2);
	CHECK_EQ(st(m, 0)->dropped[SL_COLLECTOR_DROP_VERSION], 1);
	CHECK_EQ(st(m, 0)->dropped[SL_COLLECTOR_DROP_SHORT], 1);

	/* max_exporters is 2: a new source evicts the least recently used
	 * exporter (EXA, last heard at 20, not EXB at 22); its counters go
	 * to slot 0 and the new one takes its index, a new generation */
	data_msg(&b, 1, 500, 0);
	CHECK_EQ(dec(m, &b, EXA, 21), 1);
	CHECK_EQ(s->messages, 18);
	CHECK_EQ(dec(m, &b, EXB, 22), 0);
	CHECK_EQ(sl_collector_msg_exporters(m), 3);
	gen = st(m, 1)->generation;
	CHECK_EQ(dec(m, &b, EXC, 23), 0);
	s = NULL; /* EXA's counters are gone */
	CHECK_EQ(sl_collector_msg_exporters(m), 3);
	CHECK(!memcmp(st(m, 1)->addr, EXC, 4) && st(m, 1)->generation != gen);
	CHECK(!memcmp(st(m, 2)->addr, EXB, 4));
	CHECK_EQ(st(m, 0)->messages, 18);
	CHECK_EQ(st(m, 0)->dropped[SL_COLLECTOR_DROP_VERSION], 2);
	CHECK_EQ(st(m, 0)->dropped[SL_COLLECTOR_DROP_LENGTH], 3);
	CHECK_EQ(st(m, 0)->dropped[SL_COLLECTOR_DROP_EXPORTERS], 0);
	/* with EXA: its domains 1 and 2 and their templates */
	CHECK_EQ(st(m, 0)->evicted_domains, 2);
	CHECK_EQ(st(m, 0)->evicted_templates, 2);
	memset(&cs, 0, sizeof(cs));
	CHECK_EQ(sl_collector_msg_state(m, &cs), 0);
	CHECK_EQ(cs.evicted_exporters, 1);
	CHECK_EQ(cs.evicted_domains, 2);
	CHECK_EQ(cs.evicted_templates, 2);
	CHECK_EQ(cs.exporters, 2);
	/* EXA again is new: the template it gave is gone with it */
	CHECK_EQ(dec(m, &b, EXA, 24), 0);
	CHECK_EQ(st(m, 2)->held, 1);
	CHECK(!memcmp(st(m, 2)->addr, EXA, 4));
	/* SL_COLLECTOR_DROP_EXPORTERS: every exporter was heard in this
	 * batch (a collector source's records name them until the next) */
	collector_msg_batch(m);
	CHECK_EQ(dec(m, &b, EXA, 25), 0);
	CHECK_EQ(dec(m, &b, EXC, 25), 0);
	CHECK_EQ(dec(m, &b, EXB, 25), 0);
	CHECK_EQ(st(m, 0)->dropped[SL_COLLECTOR_DROP_EXPORTERS], 1);
	collector_msg_batch(m);
	CHECK_EQ(dec(m, &b, EXB, 26), 0);
	CHECK_EQ(st(m, 0)->dropped[SL_COLLECTOR_DROP_EXPORTERS], 1);
	CHECK(!memcmp(st(m, 2)->addr, EXB, 4)); /* in EXA's place */
	CHECK(sl_collector_msg_exporter(m, 3) == NULL);

	CHECK(!strcmp(sl_collector_drop_name(SL_COLLECTOR_DROP_NO_TEMPLATE),
		      "no_template"));
	CHECK(!strcmp(sl_collector_drop_name(SL_COLLECTOR_DROP_EXPORTERS),
		      "exporters"));
	CHECK(!strcmp(sl_collector_drop_name(99), "unknown"));
	CHECK_EQ(sl_collector_msg_decode(NULL, b.b, b.n, EXA, 4, 1, 0),
		 -EINVAL);
	CHECK_EQ(sl_collector_msg_decode(m, b.b, b.n, EXA, 5, 1, 0), -EINVAL);
	CHECK_EQ(sl_collector_msg_decode(m, NULL, 4, EXA, 4, 1, 0), -EINVAL);
	sl_collector_msg_free(m);
}

/* ---- bounds ------------------------------------------------------------- */

static void test_limits(void)
{
	struct sl_collector_msg *m = msg_new(200, 0, 0, 0);
	static struct fs many[300];
	struct buf b;
	uint8_t a[4] = {10, 0, 0, 0};
	uint32_t s;
	int ok = 1;

	/* 300 exporters: the exporter table grows, indexes stay */
	tmpl_msg(&b, 1, 500, lay_a, 3);
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < 300; i++) {
			a[2] = (uint8_t)(i >> 8);
			a[3] = (uint8_t)i;
			if (!pass) {
				dec(m, &b, a, 1);
				continue;
			}
			data_msg(&b, 1, 500, 0);
			ok &= sl_collector_msg_decode(
				  m, b.b, b.n, a, 4, (uint16_t)(i % 3), 2) == 0;
			ok &= dec(m, &b, a, 2) == 1 &&
			      rec(m, 0)->exporter == (uint32_t)i + 1;
		}
	}
	CHECK(ok);
	CHECK_EQ(sl_collector_msg_exporters(m), 1 + 300 + 300);
	sl_collector_msg_free(m);

	/* more than 256 fields that each need reading: refused... */
	m = msg_new(200, 0, 0, 0);
	for (int i = 0; i < 300; i++)
		many[i] = (struct fs){1, 4, 0};
	tmpl_msg(&b, 1, 501, many, 300);
	dec(m, &b, EXA, 3);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_TEMPLATE], 1);
	/* ...while unmapped ones cost nothing */
	for (int i = 0; i < 300; i++)
		many[i] = (struct fs){(uint16_t)(1000 + i), 4, 0};
	many[299] = (struct fs){8, 4, 0};
	tmpl_msg(&b, 1, 502, many, 300);
	dec(m, &b, EXB, 3);
	CHECK_EQ(st(m, 2)->templates, 1);
	CHECK_EQ(dropped_total(st(m, 2)), 0);
	/* 4096 templates per exporter: past them it gives up its least
	 * recently used ones (1000..1103, not 1000 if data used it) */
	data_msg(&b, 1, 1000, 0);
	for (int k = 0; k < 2; k++) {
		ipfix_hdr(&b, 1700000000, 0, 1);
		s = set_begin(&b, 2);
		for (int i = 0; i < 2100; i++)
			btemplate(&b, (uint16_t)(1000 + k * 2100 + i), lay_a,
				  3);
		set_end(&b, s);
		if (k) {
			/* data for 1000: a use */
			s = set_begin(&b, 1000);
			bip4(&b, "1.1.1.1");
			bip4(&b, "2.2.2.2");
			b32(&b, 5);
			set_end(&b, s);
		}
		ipfix_end(&b);
		dec(m, &b, EXA, 4);
		if (!k) {
			data_msg(&b, 1, 1000, 0);
			CHECK_EQ(dec(m, &b, EXA, 4), 1);
		}
	}
	CHECK_EQ(st(m, 1)->templates, 4200);
	CHECK_EQ(st(m, 1)->evicted_templates, 4200 - 4096);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_TEMPLATE], 1);
	data_msg(&b, 1, 1000, 0);
	CHECK_EQ(dec(m, &b, EXA, 4), 1);
	data_msg(&b, 1, 1001, 0);
	CHECK_EQ(dec(m, &b, EXA, 4), 0);
	data_msg(&b, 1, 1105, 0);
	CHECK_EQ(dec(m, &b, EXA, 4), 1);
	/* 1024 domains per exporter: past them the least recently heard one
	 * is recycled, so a flood of invented domains locks nobody out */
	for (uint32_t d = 0; d < 1030; d++) {
		data_msg(&b, d, 500, 0);
		dec(m, &b, EXC, 5);
	}
	CHECK_EQ(st(m, 3)->dropped[SL_COLLECTOR_DROP_EXPORTERS], 0);
	CHECK_EQ(st(m, 3)->held, 1030);
	tmpl_msg(&b, 99999, 500, lay_a, 3);
	dec(m, &b, EXC, 6);
	data_msg(&b, 99999, 500, 0);
	CHECK_EQ(dec(m, &b, EXC, 6), 1);
	/* and a domain of the flood that was recycled starts afresh: its
	 * held data is gone, a new template works */
	tmpl_msg(&b, 0, 500, lay_a, 3);
	CHECK_EQ(dec(m, &b, EXC, 7), 0);
	data_msg(&b, 0, 500, 0);
	CHECK_EQ(dec(m, &b, EXC, 7), 1);
	sl_collector_msg_free(m);

	/* held bytes are bounded as well as held sets */
	m = msg_new(200, 0, 0, 0);
	for (int i = 0; i < 70; i++) {
		ipfix_hdr(&b, 1700000000, 0, 1);
		s = set_begin(&b, 700);
		memset(b.b + b.n, 1, 65000);
		b.n += 65000;
		set_end(&b, s);
		ipfix_end(&b);
		dec(m, &b, EXA, 6);
	}
	CHECK_EQ(st(m, 1)->held, 70);
	CHECK_EQ(st(m, 1)->dropped[SL_COLLECTOR_DROP_NO_TEMPLATE], 70 - 64);
	sl_collector_msg_free(m);
}

/* ---- the memory bound -----------------------------------------------------
 */

static uint32_t churn_state = 2463534242u;

static uint32_t churn_rnd(void)
{
	churn_state ^= churn_state << 13;
	churn_state ^= churn_state >> 17;
	churn_state ^= churn_state << 5;
	return churn_state;
}

/* Sums the evictions counted per exporter (slot 0 included: it holds
 * those of evicted exporters). */
static void evictions_of(struct sl_collector_msg *m, uint64_t *tmpls,
			 uint64_t *doms)
{
	*tmpls = *doms = 0;
	for (uint32_t i = 0; i < sl_collector_msg_exporters(m); i++) {
		const struct sl_exporter_stats *x = st(m, i);

		if (!x)
			continue;
		*tmpls += x->evicted_templates;
		*doms += x->evicted_domains;
	}
}

/* flood.py's churn (shared/repro): 4096 sources, a random domain each
 * message, 10 templates of random ids; against 1 MiB. A steady exporter
 * that sends data every 50 messages keeps its template; the state never
 * passes the bound; every eviction is counted, per exporter and in all. */
static void test_memory(void)
{
	struct sl_collector_msg_opts o = {.max_memory = 1 << 20};
	struct sl_collector_msg *m = NULL;
	struct sl_collector_state cs;
	uint64_t peak = 0, base, et, ed;
	uint8_t a[4] = {10, 1, 0, 0};
	uint32_t steady = 0, n = 40000, s, fails = 0;
	struct buf b;

	CHECK_EQ(sl_collector_msg_new(&m, &o), 0);
	CHECK_EQ(sl_collector_msg_state(m, &cs), 0);
	base = cs.memory;
	CHECK(base > 0 && base < 8192);
	CHECK_EQ(cs.max_memory, 1 << 20);
	tmpl_msg(&b, 1, 300, lay_a, 3);
	CHECK_EQ(dec(m, &b, EXA, 1), 0);
	for (uint32_t i = 0; i < n; i++) {
		a[2] = (uint8_t)(i >> 8 & 15);
		a[3] = (uint8_t)i;
		ipfix_hdr(&b, 1700000000, 0, churn_rnd());
		s = set_begin(&b, 2);
		for (int k = 0; k < 10; k++)
			btemplate(&b, (uint16_t)(256 + churn_rnd() % 65000),
				  lay_a, 1 + (int)(churn_rnd() % 3));
		set_end(&b, s);
		ipfix_end(&b);
		fails +=
		    sl_collector_msg_decode(m, b.b, b.n, a, 4, 4739, 2) != 0;
		sl_collector_msg_state(m, &cs);
		if (cs.memory > peak)
			peak = cs.memory;
		if (i % 50 == 0) {
			data_msg(&b, 1, 300, 0);
			steady += dec(m, &b, EXA, 2) == 1;
		}
	}
	CHECK_EQ(fails, 0);
	CHECK(peak <= 1 << 20);
	CHECK(peak > (1 << 20) - 4096);
	CHECK_EQ(steady, n / 50);
	CHECK_EQ(st(m, 1)->evicted_templates, 0);
	CHECK_EQ(st(m, 1)->evicted_domains, 0);
	CHECK_EQ(dropped_total(st(m, 1)), 0);
	sl_collector_msg_state(m, &cs);
	CHECK(cs.evicted_templates > n * 9);
	CHECK(cs.evicted_domains > n / 2);
	CHECK(cs.evicted_exporters > 0);
	CHECK(cs.exporters <= 4097 && cs.templates < 8000);
	evictions_of(m, &et, &ed);
	CHECK_EQ(et, cs.evicted_templates);
	CHECK_EQ(ed, cs.evicted_domains);
	/* nothing refused: there was always something older to evict */
	CHECK_EQ(st(m, 0)->dropped[SL_COLLECTOR_DROP_MEMORY], 0);
	CHECK_EQ(st(m, 0)->dropped[SL_COLLECTOR_DROP_EXPORTERS], 0);
	/* expiry frees what the state took for templates */
	sl_collector_msg_expire(m, 4000 * SEC);
	sl_collector_msg_state(m, &cs);
	CHECK_EQ(cs.templates, 0);
	CHECK(cs.expired_templates > 0);
	CHECK(cs.memory < peak);
	sl_collector_msg_free(m);

	/* the smallest bound: a template that cannot fit is refused,
	 * counted, when all else is in use by the message itself */
	o.max_memory = 1;
	CHECK_EQ(sl_collector_msg_new(&m, &o), 0);
	sl_collector_msg_state(m, &cs);
	CHECK_EQ(cs.max_memory, 64 << 10);
	ipfix_hdr(&b, 1700000000, 0, 1);
	s = set_begin(&b, 2);
	for (int k = 0; k < 2000; k++)
		btemplate(&b, (uint16_t)(256 + k), lay_b, 4);
	set_end(&b, s);
	ipfix_end(&b);
	CHECK_EQ(dec(m, &b, EXA, 1), 0);
	sl_collector_msg_state(m, &cs);
	CHECK(cs.memory <= 64 << 10);
	CHECK(cs.templates > 50 && cs.templates < 2000);
	CHECK_EQ(st(m, 1)->templates +
		     st(m, 1)->dropped[SL_COLLECTOR_DROP_MEMORY],
		 2000);
	CHECK_EQ(cs.templates + cs.evicted_templates, st(m, 1)->templates);
	sl_collector_msg_free(m);
}

/* ---- softflowd ---------------------------------------------------------- */

/* The captures are streams of [2-byte length][message]. */
static uint8_t *load(const char *name, uint32_t *len)
{
	char path[256];
	uint8_t *p = NULL;
	FILE *f;
	long n;

	snprintf(path, sizeof(path), DATA_DIR "%s", name);
	f = fopen(path, "rb");
	if (!f)
		return NULL;
	if (!fseek(f, 0, SEEK_END) && (n = ftell(f)) > 0) {
		p = malloc((size_t)n);
		rewind(f);
		if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
			free(p);
			p = NULL;
		}
		*len = (uint32_t)n;
	}
	fclose(f);
	return p;
}

struct sums {
	uint64_t recs, bytes, pkts, msgs;
};

/* Decodes a capture; the records that match src go to *found. */
static void replay(struct sl_collector_msg *m, const char *name,
		   struct sums *sum, const char *src, uint8_t proto,
		   struct sl_collector_rec *found, int n_found)
{
	uint32_t len = 0, off = 0;
	uint8_t *p = load(name, &len);
	uint8_t want[16] = {0};
	int k = 0;

	CHECK(p != NULL);
	if (!p)
		return;
	memset(found, 0, sizeof(*found) * (size_t)n_found);
	inet_pton(strchr(src, ':') ? AF_INET6 : AF_INET, src, want);
	memset(sum, 0, sizeof(*sum));
	while (off + 2 <= len) {
		uint32_t ml = (uint32_t)p[off] << 8 | p[off + 1];
		int n = sl_collector_msg_decode(m, p + off + 2, ml, EXA, 4,
						9995, sum->msgs * SEC);

		CHECK(n >= 0);
		for (int i = 0; i < n; i++) {
			const struct sl_collector_rec *r = rec(m, i);

			sum->bytes += r->fwd.bytes + r->rev.bytes;
			sum->pkts += r->fwd.pkts + r->rev.pkts;
			if (!memcmp(r->key.src, want, 16) && k < n_found &&
			    (!proto || r->key.proto == proto))
				found[k++] = *r;
		}
		sum->recs += (uint32_t)n;
		sum->msgs++;
		off += 2 + ml;
	}
	CHECK_EQ(off, len);
	CHECK(k >= 1);
	free(p);
}

/* softflowd 1.1.0 -r examples/sample.pcap -a -T vlan -6, to a UDP socket:
 * its own statistics give the totals (v5 has no IPv6 flows). */
static void test_softflowd(void)
{
	struct sl_collector_rec f[4];
	struct sl_collector_msg *m;
	const struct sl_exporter_stats *s;
	struct sums sum;

	m = msg_new(0, 0, 0, 0);
	replay(m, "softflowd_v5.bin", &sum, "10.109.218.232", 0, f, 1);
	CHECK_EQ(sum.msgs, 9);
	CHECK_EQ(sum.recs, 244);
	CHECK_EQ(sum.bytes, 672 + 558371 + 60712);
	CHECK_EQ(sum.pkts, 8 + 1101 + 134);
	CHECK(ip4_is(f[0].key.dst, "198.18.1.16"));
	CHECK_EQ(f[0].key.sport, 60134);
	CHECK_EQ(f[0].key.dport, 443);
	CHECK_EQ(f[0].fwd.bytes, 262);
	CHECK_EQ(f[0].fwd.pkts, 3);
	CHECK_EQ(f[0].tcp_flags, 0x1a);
	/* header 1699999215.700138 s at uptime 15692 ms; First 447, Last 8708
	 */
	CHECK(f[0].first_ns == 1699999200455138000ULL);
	CHECK(f[0].last_ns == 1699999208716138000ULL);
	s = st(m, 1);
	CHECK_EQ(s->seq_lost, 0);
	CHECK_EQ(s->seq_resets, 0);
	CHECK_EQ(dropped_total(s), 0);
	sl_collector_msg_free(m);

	/* v9: templates 1024/1025 (IPv4, ICMP), 2048/2049 (IPv6), options
	 * template 256; FIRST/LAST_SWITCHED against the header's uptime,
	 * which has whole seconds only */
	m = msg_new(0, 0, 0, 0);
	replay(m, "softflowd_v9.bin", &sum, "10.109.218.232", 0, f, 1);
	CHECK_EQ(sum.msgs, 13);
	CHECK_EQ(sum.recs, 316);
	CHECK_EQ(sum.bytes, 808817);
	CHECK_EQ(sum.pkts, 1600);
	CHECK_EQ(f[0].fwd.bytes, 262);
	CHECK_EQ(f[0].end_reason, 3);
	CHECK(f[0].first_ns == (1699999215000ULL - 15692 + 447) * MS);
	CHECK(f[0].last_ns == (1699999215000ULL - 15692 + 8708) * MS);
	s = st(m, 1);
	CHECK_EQ(s->templates, 5);
	CHECK_EQ(s->seq_lost, 0);
	CHECK_EQ(s->seq_resets, 0);
	CHECK_EQ(dropped_total(s), 0);
	sl_collector_msg_free(m);

	/* IPFIX: the same templates; flowStart/EndSysUpTime after the
	 * systemInitTimeMilliseconds of an options record (template 256) */
	m = msg_new(0, 0, 0, 0);
	replay(m, "softflowd_ipfix.bin", &sum, "10.254.51.19", 1, f, 2);
	CHECK_EQ(sum.msgs, 13);
	CHECK_EQ(sum.recs, 316);
	CHECK_EQ(sum.bytes, 808817);
	CHECK_EQ(sum.pkts, 1600);
	CHECK_EQ(f[0].key.proto, 1);
	CHECK_EQ(f[0].icmp_type, 8);
	CHECK_EQ(f[0].icmp_code, 0);
	CHECK_EQ(f[0].fwd.bytes, 168);
	CHECK(f[0].first_ns == (1699999200007ULL + 3790) * MS);
	CHECK(f[0].last_ns == (1699999200007ULL + 6953) * MS);
	s = st(m, 1);
	CHECK_EQ(s->templates, 5);
	CHECK_EQ(s->seq_lost, 0);
	CHECK_EQ(s->seq_resets, 0);
	CHECK_EQ(dropped_total(s), 0);
	sl_collector_msg_free(m);
	m = msg_new(0, 0, 0, 0);
	replay(m, "softflowd_ipfix.bin", &sum,
	       "2001:db8:c:0:c7c4:ca77:abed:a695", 0, f, 1);
	CHECK_EQ(f[0].key.ip_version, 6);
	CHECK_EQ(f[0].key.vlan, 80);
	CHECK_EQ(f[0].key.proto, 17);
	CHECK_EQ(f[0].key.dport, 53);
	CHECK_EQ(f[0].fwd.bytes, 85);
	sl_collector_msg_free(m);

	/* -b: one biflow record with RFC 5103 reverse counters and flags */
	m = msg_new(0, 0, 0, 0);
	replay(m, "softflowd_ipfix_bidir.bin", &sum, "10.109.218.232", 0, f, 1);
	CHECK_EQ(sum.msgs, 9);
	CHECK_EQ(sum.recs, 177);
	CHECK_EQ(sum.bytes, 808817);
	CHECK_EQ(sum.pkts, 1600);
	CHECK_EQ(f[0].fwd.bytes, 262);
	CHECK_EQ(f[0].fwd.pkts, 3);
	CHECK_EQ(f[0].rev.bytes, 4690);
	CHECK_EQ(f[0].rev.pkts, 6);
	CHECK_EQ(f[0].tcp_flags, 0x1a);
	CHECK_EQ(f[0].tcp_flags_rev, 0x1e);
	CHECK(f[0].first_ns == (1699999200007ULL + 447) * MS);
	s = st(m, 1);
	CHECK_EQ(s->seq_lost, 0);
	CHECK_EQ(s->seq_resets, 0);
	CHECK_EQ(dropped_total(s), 0);
	sl_collector_msg_free(m);
}

/* ---- sluice's own export read back ------------------------------------ */

#define T0 (1700000000000ULL * MS)

static struct sl_flow_rec flow(int i)
{
	struct sl_flow_rec f;

	memset(&f, 0, sizeof(f));
	f.fid = (uint64_t)i + 1;
	switch (i % 4) {
	case 0:
		f.key.ip_version = 4;
		inet_pton(AF_INET, "10.0.0.1", f.key.src);
		inet_pton(AF_INET, "192.168.7.2", f.key.dst);
		f.key.sport = (uint16_t)(40000 + i);
		f.key.dport = 443;
		f.key.proto = 6;
		f.key.vlan = 42;
		f.reason_code = SL_END_FIN;
		break;
	case 1:
		f.key.ip_version = 6;
		inet_pton(AF_INET6, "2001:db8::1", f.key.src);
		inet_pton(AF_INET6, "2001:db8:ffff::abcd", f.key.dst);
		f.key.sport = 5353;
		f.key.dport = (uint16_t)i;
		f.key.proto = 17;
		f.reason_code = SL_END_IDLE;
		break;
	case 2:
		f.key.ip_version = 4;
		inet_pton(AF_INET, "10.0.0.9", f.key.src);
		inet_pton(AF_INET, "8.8.8.8", f.key.dst);
		f.key.sport = f.key.dport = 77; /* echo identifier */
		f.key.proto = 1;
		f.icmp_type = 8;
		f.reason_code = SL_END_TRIMMED;
		break;
	default:
		f.key.ip_version = 6;
		inet_pton(AF_INET6, "fe80::1", f.key.src);
		inet_pton(AF_INET6, "fe80::2", f.key.dst);
		f.key.proto = 58;
		f.icmp_type = 1;
		f.icmp_code = 4;
		f.reason_code = i & 4 ? SL_END_EOF : SL_END_NONE;
		break;
	}
	f.fwd = (struct sl_dir){.pkts = 4 + (uint64_t)i,
				.bytes = 334 + (uint64_t)i,
				.ip_bytes = 292 + (uint64_t)i,
				.first_ns = T0 + 1234567 + (uint64_t)i * SEC,
				.last_ns = T0 + 900 * MS + (uint64_t)i * SEC,
				.tcp_flags = 0x1b};
	if (i % 2 == 0)
		f.rev = (struct sl_dir){.pkts = 3,
					.bytes = 5000000000ULL + (uint64_t)i,
					.ip_bytes = 4000000000ULL + (uint64_t)i,
					.first_ns = T0 + 10 * MS,
					.last_ns = T0 + 2500 * MS + 999999 +
						   (uint64_t)i * SEC,
					.tcp_flags = 0x13};
	return f;
}

static uint8_t ipfix_reason(int code)
{
	switch (code) {
	case SL_END_IDLE:
		return 1;
	case SL_END_FIN:
	case SL_END_RST:
		return 3;
	case SL_END_EOF:
	case SL_END_SHUTDOWN:
		return 4;
	case SL_END_TRIMMED:
		return 5;
	}
	return 2;
}

static void check_round(const struct sl_collector_rec *r,
			const struct sl_flow_rec *f, uint32_t exporter)
{
	uint64_t last = f->fwd.last_ns;
	int icmp = f->key.proto == 1 || f->key.proto == 58;

	if (f->rev.pkts && f->rev.last_ns > last)
		last = f->rev.last_ns;
	CHECK(!memcmp(r->key.src, f->key.src, 16));
	CHECK(!memcmp(r->key.dst, f->key.dst, 16));
	CHECK_EQ(r->key.ip_version, f->key.ip_version);
	CHECK_EQ(r->key.proto, f->key.proto);
	CHECK_EQ(r->key.vlan, f->key.vlan);
	/* ICMP: the echo identifier is not sent; dport has type, code */
	CHECK_EQ(r->key.sport, icmp ? 0 : f->key.sport);
	CHECK_EQ(r->key.dport,
		 icmp ? f->icmp_type << 8 | f->icmp_code : f->key.dport);
	CHECK_EQ(r->icmp_type, f->icmp_type);
	CHECK_EQ(r->icmp_code, f->icmp_code);
	CHECK(r->fwd.pkts == f->fwd.pkts && r->fwd.bytes == f->fwd.bytes);
	CHECK(r->rev.pkts == f->rev.pkts && r->rev.bytes == f->rev.bytes);
	/* octetDeltaCount: IP bytes; layer2OctetDeltaCount: frames' */
	CHECK(r->fwd.ip_bytes == f->fwd.ip_bytes);
	CHECK(r->rev.ip_bytes == f->rev.ip_bytes);
	CHECK_EQ(r->tcp_flags, f->fwd.tcp_flags);
	CHECK_EQ(r->tcp_flags_rev, f->rev.tcp_flags);
	CHECK(r->first_ns == f->fwd.first_ns / MS * MS);
	CHECK(r->last_ns == last / MS * MS);
	CHECK_EQ(r->end_reason, ipfix_reason(f->reason_code));
	CHECK_EQ(r->version, 10);
	CHECK_EQ(r->domain, 31337);
	CHECK_EQ(r->exporter, exporter);
}

/* An export with the statistics templates (sl_ipfix_new_features): the
 * template set fills a message alone when a record does not fit after
 * it; the collector skips the enterprise elements it does not know and
 * reads the base fields of every flow, with or without statistics. */
static void test_roundtrip_stats(void)
{
	struct sl_ipfix_opts xo = {.domain = 31337, .max_bytes = 1000};
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	struct sl_ipfix *x = NULL;
	const uint8_t *data;
	int n, got = 0, msgs = 0, i = 0, alone = 0;

	/* the template set (932 bytes) does not fit 900 */
	xo.max_bytes = 900;
	CHECK_EQ(sl_ipfix_new_features(&x, &xo, SL_FEATURE_STATS), -EINVAL);
	CHECK_EQ(sl_ipfix_new_features(&x, &xo, 0), 0);
	sl_ipfix_free(x);
	x = NULL;
	CHECK_EQ(sl_ipfix_new_features(&x, &xo, 8), -EINVAL);
	xo.max_bytes = 1000;
	CHECK_EQ(sl_ipfix_new_features(&x, &xo, SL_FEATURE_STATS), 0);
	if (!x)
		return;
	while (i < 40) {
		struct sl_flow_rec f = flow(i);
		struct sl_flow_stats stats = {0};

		if (i % 3) { /* two in three carry statistics */
			f.stats = &stats;
			stats.s[SL_DIR_FWD].packets = 3;
			stats.s[SL_DIR_FWD].flag_packets[1] = 1;
		}
		if (sl_ipfix_add_flow(x, &f) == -ENOBUFS) {
			uint32_t pending = sl_ipfix_pending(x);
			int len = sl_ipfix_take(x, 1700000100, &data);
			int base = got;

			CHECK(len > 0 && len <= 1000);
			alone += !pending;
			n = sl_collector_msg_decode(m, data, (uint32_t)len, EXA,
						    4, 4739,
						    (uint64_t)msgs * SEC);
			CHECK_EQ(n, (int)pending);
			for (int k = 0; k < n; k++) {
				struct sl_flow_rec want = flow(base + k);

				check_round(rec(m, k), &want, 1);
			}
			got += n;
			msgs++;
			continue;
		}
		i++;
	}
	n = sl_ipfix_take(x, 1700000100, &data);
	n = sl_collector_msg_decode(m, data, (uint32_t)n, EXA, 4, 4739, 99);
	for (int k = 0; k < n; k++) {
		struct sl_flow_rec want = flow(got + k);

		check_round(rec(m, k), &want, 1);
	}
	got += n;
	CHECK_EQ(got, 40);
	CHECK_EQ(alone, 1); /* the first message: the templates alone */
	CHECK_EQ(st(m, 1)->seq_lost, 0);
	CHECK_EQ(st(m, 1)->templates, 4);
	CHECK_EQ(dropped_total(st(m, 1)), 0);
	sl_ipfix_free(x);
	sl_collector_msg_free(m);
}

/* An export with every feature: the collector skips the splt arrays
 * and the variable-length labels and reads every flow's base fields. */
static void test_roundtrip_all_features(void)
{
	struct sl_ipfix_opts xo = {.domain = 31337,
				   .max_bytes = SL_IPFIX_MAX_MESSAGE,
				   .splt_packets = 32};
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	struct sl_ipfix *x = NULL;
	struct test_features feat = {0};
	const uint8_t *data;
	int n;

	CHECK_EQ(sl_ipfix_new_features(&x, &xo,
				       SL_FEATURE_STATS | SL_FEATURE_SPLT |
					   SL_FEATURE_DPI),
		 0);
	if (!x)
		return;
	feat.splt.n = feat.splt.len = 32;
	feat.app.state = SL_DPI_DONE;
	strcpy(feat.app.category, "Web");
	for (int i = 0; i < 20; i++) {
		struct sl_flow_rec f = flow(i);

		test_features_point(&f, &feat);
		/* labels of 0 to 57 bytes */
		memset(feat.app.server_name, 0, sizeof(feat.app.server_name));
		memset(feat.app.server_name, 'a', (size_t)i * 3);
		CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	}
	n = sl_ipfix_take(x, 1700000100, &data);
	CHECK(n > 0);
	n = sl_collector_msg_decode(m, data, (uint32_t)n, EXA, 4, 4739, 99);
	CHECK_EQ(n, 20);
	for (int k = 0; k < n; k++) {
		struct sl_flow_rec want = flow(k);

		check_round(rec(m, k), &want, 1);
	}
	CHECK_EQ(st(m, 1)->templates, 4);
	CHECK_EQ(dropped_total(st(m, 1)), 0);
	sl_ipfix_free(x);
	sl_collector_msg_free(m);
}

static void test_roundtrip(void)
{
	struct sl_ipfix_opts xo = {.domain = 31337, .max_bytes = 700};
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	struct sl_ipfix *x = NULL;
	struct sl_slice_rec sl;
	const uint8_t *data;
	int n, got = 0, msgs = 0, i = 0;

	CHECK_EQ(sl_ipfix_new(&x, &xo), 0);
	if (!x)
		return;
	/* 40 flows across several messages: templates in the first only */
	while (i < 40) {
		struct sl_flow_rec f = flow(i);

		if (sl_ipfix_add_flow(x, &f) == -ENOBUFS) {
			int len = sl_ipfix_take(x, 1700000100, &data);
			int base = got;

			n = sl_collector_msg_decode(m, data, (uint32_t)len, EXA,
						    4, 4739,
						    (uint64_t)msgs * SEC);
			for (int k = 0; k < n; k++) {
				struct sl_flow_rec want = flow(base + k);

				check_round(rec(m, k), &want, 1);
			}
			got += n;
			msgs++;
			continue;
		}
		i++;
	}
	n = sl_ipfix_take(x, 1700000100, &data);
	n = sl_collector_msg_decode(m, data, (uint32_t)n, EXA, 4, 4739, 99);
	for (int k = 0; k < n; k++) {
		struct sl_flow_rec want = flow(got + k);

		check_round(rec(m, k), &want, 1);
	}
	got += n;
	CHECK_EQ(got, 40);
	CHECK(msgs >= 3);
	CHECK_EQ(st(m, 1)->seq_lost, 0);
	CHECK_EQ(st(m, 1)->templates, 2);
	CHECK_EQ(dropped_total(st(m, 1)), 0);

	/* a slice record: its interval and deltas */
	memset(&sl, 0, sizeof(sl));
	sl.key = flow(0).key;
	sl.start_ns = T0 + 5 * SEC;
	sl.end_ns = T0 + 10 * SEC;
	sl.delta_fwd = (struct sl_counts){2, 200, 172};
	sl.delta_rev = (struct sl_counts){1, 1400, 1386};
	sl.tcp_flags_fwd = 0x10;
	CHECK_EQ(sl_ipfix_add_slice(x, &sl), 0);
	n = sl_ipfix_take(x, 1700000200, &data);
	CHECK_EQ(
	    sl_collector_msg_decode(m, data, (uint32_t)n, EXA, 4, 4739, 100),
	    1);
	CHECK(rec(m, 0)->first_ns == T0 + 5 * SEC);
	CHECK(rec(m, 0)->last_ns == T0 + 10 * SEC);
	CHECK_EQ(rec(m, 0)->fwd.bytes, 200);
	CHECK_EQ(rec(m, 0)->rev.bytes, 1400);
	CHECK_EQ(rec(m, 0)->fwd.ip_bytes, 172);
	CHECK_EQ(rec(m, 0)->rev.ip_bytes, 1386);
	CHECK_EQ(rec(m, 0)->end_reason, 2);
	CHECK_EQ(st(m, 1)->seq_lost, 0);
	sl_ipfix_free(x);
	sl_collector_msg_free(m);
}

/* ---- mutations ---------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

/* Seeds: valid messages of each version. */
static void seed(struct buf *b, int which)
{
	switch (which % 6) {
	case 0:
		v5_msg(b, 3, 100000, 1700000000, 0, rnd() % 100, v5r, 3);
		break;
	case 1:
		v9_full(b, rnd() % 10);
		break;
	case 2:
		ipfix_full(b, rnd() % 10);
		break;
	case 3:
		ipfix_n(b, rnd() % 10, 3, rnd() & 1);
		break;
	case 4:
		data_msg(b, 1, (uint16_t)(400 + rnd() % 8), 0);
		break;
	default:
		tmpl_msg(b, 1 + rnd() % 2, (uint16_t)(400 + rnd() % 8),
			 rnd() & 1 ? lay_a : lay_b, rnd() & 1 ? 3 : 2);
	}
}

static void mutate(struct buf *b)
{
	uint32_t k = rnd() % 8, n;

	if (!b->n)
		return;
	switch (k) {
	case 0: /* truncate */
		b->n = rnd() % b->n;
		break;
	case 1: /* flip bytes */
		for (n = 1 + rnd() % 8; n; n--)
			b->b[rnd() % b->n] ^= (uint8_t)(1 + rnd() % 255);
		break;
	case 2: /* a length or count anywhere */
		if (b->n >= 2) {
			uint32_t at = rnd() % (b->n - 1);

			patch16(b, at, rnd() % 5 ? rnd() % 64 : rnd() & 0xffff);
		}
		break;
	case 3: /* a zero-length set at a set boundary guess */
		if (b->n >= 24) {
			uint32_t at = 16 + (rnd() % ((b->n - 16) / 4)) * 4;

			patch16(b, at + 2, rnd() % 4);
		}
		break;
	case 4: /* junk appended */
		for (n = rnd() % 64; n && b->n < sizeof(b->b); n--)
			b->b[b->n++] = (uint8_t)rnd();
		break;
	case 5: /* random bytes after the version */
		b->n = 2 + rnd() % 200;
		for (n = 2; n < b->n; n++)
			b->b[n] = (uint8_t)rnd();
		break;
	case 6: /* field lengths to variable length or zero */
		if (b->n >= 4) {
			uint32_t at = rnd() % (b->n - 3);

			patch16(b, at, rnd() & 1 ? 65535 : 0);
		}
		break;
	default:
		break;
	}
}

static void test_mutations(void)
{
	struct sl_collector_msg *m = msg_new(16, 2 * SEC, 20 * SEC, 8);
	const uint8_t *ex[3] = {EXA, EXB, EXC};
	uint64_t now = 0;
	int bad = 0;
	struct buf b;

	for (int i = 0; i < 100000; i++) {
		int n;

		seed(&b, (int)(rnd() % 6));
		for (int k = (int)(rnd() % 3); k >= 0; k--)
			mutate(&b);
		now += rnd() % (SEC / 4);
		n = dec(m, &b, ex[rnd() % 3], now);
		bad += n < 0;
		for (int r = 0; r < n; r++) {
			const struct sl_collector_rec *c = rec(m, r);

			bad += c->key.ip_version != 4 && c->key.ip_version != 6;
			bad += c->exporter == 0 ||
			       c->exporter >= sl_collector_msg_exporters(m);
		}
		if (i % 1000 == 0)
			sl_collector_msg_expire(m, now);
	}
	CHECK_EQ(bad, 0);
	/* still decodes a valid message exactly (from an exporter the
	 * mutations told no sampling rate) */
	v9_full(&b, 1);
	CHECK_EQ(dec(m, &b, EXD, now + 1), 3);
	CHECK(ip4_is(rec(m, 0)->key.src, "10.1.1.1"));
	CHECK(rec(m, 0)->fwd.bytes == 5000000000ULL);
	CHECK_EQ(rec(m, 2)->icmp_type, 128);
	ipfix_full(&b, 0);
	CHECK_EQ(dec(m, &b, EXB, now + 2), 7);
	CHECK_EQ(rec(m, 0)->tcp_flags_rev, 0x12);
	CHECK(rec(m, 6)->first_ns == 1699999001000ULL * MS);
	sl_collector_msg_free(m);
}

/* ---- decode rate -------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_rate(void)
{
	struct sl_ipfix_opts xo = {.domain = 1, .max_bytes = 65535};
	struct sl_collector_msg *m = msg_new(0, 0, 0, 0);
	struct sl_ipfix *x = NULL;
	const uint8_t *data;
	uint64_t total = 0;
	double t0, dt;
	uint8_t *msg;
	int len, i = 0;

	CHECK_EQ(sl_ipfix_new(&x, &xo), 0);
	while (x) {
		struct sl_flow_rec f = flow(i++ % 2 ? 2 : 0);

		if (sl_ipfix_add_flow(x, &f))
			break;
	}
	len = sl_ipfix_take(x, 1700000000, &data);
	msg = malloc((size_t)len);
	if (!msg)
		return;
	memcpy(msg, data, (size_t)len);
	sl_collector_msg_decode(m, msg, (uint32_t)len, EXA, 4, 1, 0);
	/* the same message again: the templates are cached */
	t0 = now_s();
	while (total < 2000000) {
		int n = sl_collector_msg_decode(m, msg, (uint32_t)len, EXA, 4,
						1, 1);

		if (n <= 0)
			break;
		total += (uint32_t)n;
	}
	dt = now_s() - t0;
	printf("decode rate: %.1f M records/s (%llu IPv4 records of sluice's "
	       "template, %d per message)\n",
	       (double)total / dt / 1e6, (unsigned long long)total, i - 1);
	CHECK(total >= 2000000);
#if !defined(__SANITIZE_ADDRESS__)
	CHECK((double)total / dt > 1e6);
#endif
	free(msg);
	sl_ipfix_free(x);
	sl_collector_msg_free(m);
}

/* ---- fuzz seeds -----------------------------------------------------------
 */

static int write_file(const char *dir, const char *name, const uint8_t *p,
		      uint32_t n)
{
	char path[512];
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		return -1;
	ok = fwrite(p, 1, n, f) == n;
	return fclose(f) || !ok ? -1 : 0;
}

/* fuzz_v9 framing: [control][length, 2 bytes][datagram] per datagram. */
static void frame(struct buf *out, uint8_t ctl, const struct buf *msg)
{
	b8(out, ctl);
	b16(out, (uint16_t)msg->n);
	bmem(out, msg->b, msg->n);
}

/* A capture's first n messages: framed for fuzz_v9 (stream = 0), or as
 * fuzz_ipfix reads them, a control byte then the messages (stream = 1). */
static void from_capture(struct buf *out, const char *name, int n, int stream)
{
	uint32_t len = 0, off = 0;
	uint8_t *p = load(name, &len);

	out->n = 0;
	if (stream)
		b8(out, 0);
	while (p && off + 2 <= len && n--) {
		uint32_t ml = (uint32_t)p[off] << 8 | p[off + 1];

		if (out->n + 3 + ml > sizeof(out->b))
			break;
		if (!stream) {
			b8(out, 0);
			b16(out, (uint16_t)ml);
		}
		bmem(out, p + off + 2, ml);
		off += 2 + ml;
	}
	free(p);
}

static int write_corpus(const char *dir)
{
	static struct buf out, b;
	char sub[3][400];
	const char *names[3] = {"v5", "v9", "ipfix"};
	int rc = 0;

	mkdir(dir, 0755);
	for (int i = 0; i < 3; i++) {
		snprintf(sub[i], sizeof(sub[i]), "%s/%s", dir, names[i]);
		mkdir(sub[i], 0755);
	}
	/* v5: one datagram per input */
	v5_msg(&b, 3, 100000, 1700000000, 0, 0, v5r, 3);
	rc |= write_file(sub[0], "synthetic", b.b, b.n);
	from_capture(&out, "softflowd_v5.bin", 1, 0);
	rc |= write_file(sub[0], "softflowd", out.b + 3, out.n - 3);

	/* v9: template then data; data before its template */
	out.n = 0;
	v9_full(&b, 1);
	frame(&out, 0, &b);
	v9_full(&b, 2);
	frame(&out, 1, &b);
	rc |= write_file(sub[1], "synthetic", out.b, out.n);
	out.n = 0;
	v9_hdr(&b, 1, 200000, 1700000100, 2, 42);
	{
		uint32_t at = set_begin(&b, 300);

		v9_rec300(&b, "10.1.1.9", 9, 1, 199000, 199999);
		set_end(&b, at);
	}
	frame(&out, 0, &b);
	v9_full(&b, 3);
	frame(&out, 4, &b);
	rc |= write_file(sub[1], "held", out.b, out.n);
	from_capture(&out, "softflowd_v9.bin", 3, 0);
	rc |= write_file(sub[1], "softflowd", out.b, out.n);

	/* IPFIX streams */
	out.n = 0;
	b8(&out, 0x10);
	ipfix_full(&b, 0);
	bmem(&out, b.b, b.n);
	ipfix_n(&b, 7, 3, 0);
	bmem(&out, b.b, b.n);
	rc |= write_file(sub[2], "synthetic", out.b, out.n);
	out.n = 0;
	b8(&out, 0x04);
	data_msg(&b, 1, 500, 0);
	bmem(&out, b.b, b.n);
	tmpl_msg(&b, 1, 500, lay_a, 3);
	bmem(&out, b.b, b.n);
	ipfix_hdr(&b, 1700000000, 0, 1);
	{
		uint32_t s = set_begin(&b, 2);

		b16(&b, 500);
		b16(&b, 0);
		b16(&b, 2);
		b16(&b, 0);
		set_end(&b, s);
		ipfix_end(&b);
	}
	bmem(&out, b.b, b.n);
	rc |= write_file(sub[2], "hold_withdraw", out.b, out.n);
	from_capture(&out, "softflowd_ipfix.bin", 3, 1);
	rc |= write_file(sub[2], "softflowd", out.b, out.n);
	from_capture(&out, "softflowd_ipfix_bidir.bin", 2, 1);
	rc |= write_file(sub[2], "softflowd_bidir", out.b, out.n);
	{
		struct sl_ipfix_opts xo = {.domain = 9, .max_bytes = 1400};
		struct sl_ipfix *x = NULL;
		const uint8_t *data;
		int n;

		out.n = 0;
		b8(&out, 0);
		if (sl_ipfix_new(&x, &xo))
			return 1;
		for (int k = 0; k < 2; k++) {
			for (int i = 0; i < 12; i++) {
				struct sl_flow_rec f = flow(i);

				sl_ipfix_add_flow(x, &f);
			}
			n = sl_ipfix_take(x, 1700000000, &data);
			bmem(&out, data, (uint32_t)n);
		}
		sl_ipfix_free(x);
		rc |= write_file(sub[2], "sluice", out.b, out.n);
	}
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--corpus"))
		return write_corpus(argv[2]);
	test_v5();
	test_v5_length();
	test_v5_seq();
	test_v9();
	test_v9_seq();
	test_ipfix();
	test_ipfix_init_in_record();
	test_ipfix_seq();
	test_sampling_v5();
	test_sampling_v9();
	test_sampling_ipfix();
	test_counters();
	test_totals_flag();
	test_seq_reorder();
	test_seq_convention();
	test_template_scope();
	test_template_life();
	test_hold();
	test_malformed();
	test_limits();
	test_memory();
	test_softflowd();
	test_roundtrip();
	test_roundtrip_stats();
	test_roundtrip_all_features();
	test_mutations();
	test_rate();
	return test_done();
}
