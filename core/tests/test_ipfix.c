/* test_ipfix.c - IPFIX messages read back by a small collector written
 * here from RFC 7011 (not from ipfix.c): header, sets, templates, record
 * values (variable-length ones too), sequence numbers, message size
 * bounds, the flow-features templates. */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "sluice.h"
#include "test.h"

#define MS	    1000000ULL
#define PEN_REVERSE 29305
#define MAX_FIELDS  80
#define VARLEN	    65535
#define SL_PEN	    SL_IPFIX_PEN
#define MAX_RECORDS 2048
#define MAX_SETS    1024
#define T0	    (1700000000000ULL * MS)

/* ---- the collector ---------------------------------------------------- */

struct field {
	uint16_t id; /* without the enterprise bit */
	uint16_t len;
	uint32_t pen; /* 0: IETF */
};

struct template
{
	uint16_t id;
	uint16_t n;
	uint32_t rec_len; /* fixed fields; a variable one counts 0 */
	struct field f[MAX_FIELDS];
};

struct record {
	const struct template *t;
	const uint8_t *p;
	uint32_t len;
};

struct msg {
	uint16_t version;
	uint16_t length;
	uint32_t export_time;
	uint32_t seq;
	uint32_t domain;
	int template_sets;
	int templates_seen; /* template records in this message */
	int n_sets;	    /* data sets */
	uint16_t set_ids[MAX_SETS];
	int set_recs[MAX_SETS];
	int n_recs;
	struct record recs[MAX_RECORDS];
};

/* the base templates: fields, and record lengths for IPv4 and IPv6 */
enum { NBASE = 19, REC4 = 94, REC6 = 118 };

/* Templates persist across messages, as in a collector. */
static struct template tmpls[4];

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)rd16(p) << 16 | rd16(p + 2);
}

static uint64_t rdn(const uint8_t *p, uint16_t len)
{
	uint64_t v = 0;

	while (len--)
		v = v << 8 | *p++;
	return v;
}

static struct template *tmpl_slot(uint16_t id)
{
	if (id >= 256 && id <= 259)
		return &tmpls[id - 256];
	return NULL;
}

/* Returns 0, or -1 at the first structural error. */
static int parse_templates(const uint8_t *p, uint32_t len, struct msg *m)
{
	while (len >= 4) {
		struct template *t = tmpl_slot(rd16(p));
		uint16_t n = rd16(p + 2);

		if (!t || n > MAX_FIELDS)
			return -1;
		t->id = rd16(p);
		t->n = n;
		t->rec_len = 0;
		p += 4, len -= 4;
		for (uint16_t i = 0; i < n; i++) {
			struct field *f = &t->f[i];

			if (len < 4)
				return -1;
			f->id = rd16(p) & 0x7fff;
			f->len = rd16(p + 2);
			f->pen = 0;
			if (rd16(p) & 0x8000) {
				if (len < 8)
					return -1;
				f->pen = rd32(p + 4);
				p += 4, len -= 4;
			}
			p += 4, len -= 4;
			if (f->len != VARLEN)
				t->rec_len += f->len;
		}
		m->templates_seen++;
	}
	return len ? -1 : 0;
}

/* A field's value: its bytes and length (RFC 7011 7: a variable-length
 * one after a 1-byte length, or 255 and a 2-byte one); NULL past end. */
static const uint8_t *field_value(const struct field *f, const uint8_t *p,
				  const uint8_t *end, uint32_t *len)
{
	if (f->len != VARLEN) {
		*len = f->len;
	} else if (p < end && *p < 255) {
		*len = *p++;
	} else if (end - p >= 3) {
		*len = rd16(p + 1);
		p += 3;
	} else {
		return NULL;
	}
	return *len <= (uint32_t)(end - p) ? p : NULL;
}

/* A record's length, or 0 when it does not fit in [p, end). */
static uint32_t record_len(const struct template *t, const uint8_t *p,
			   const uint8_t *end)
{
	const uint8_t *start = p;
	uint32_t len;

	for (uint16_t i = 0; i < t->n; i++) {
		const uint8_t *v = field_value(&t->f[i], p, end, &len);

		if (!v)
			return 0;
		p = v + len;
	}
	return (uint32_t)(p - start);
}

static int parse_data(uint16_t id, const uint8_t *p, uint32_t len,
		      struct msg *m)
{
	const struct template *t = tmpl_slot(id);
	const uint8_t *end = p + len;
	uint32_t n;

	if (!t || !t->n || m->n_sets >= MAX_SETS)
		return -1;
	m->set_ids[m->n_sets] = id;
	m->set_recs[m->n_sets] = 0;
	/* no padding is sent, so the set holds whole records */
	while (p < end && m->n_recs < MAX_RECORDS &&
	       (n = record_len(t, p, end))) {
		m->recs[m->n_recs++] = (struct record){t, p, n};
		m->set_recs[m->n_sets]++;
		p += n;
	}
	m->n_sets++;
	return p == end ? 0 : -1;
}

static int parse(const uint8_t *p, int len, struct msg *m)
{
	uint32_t off = 16;

	memset(m, 0, sizeof(*m));
	if (len < 16)
		return -1;
	m->version = rd16(p);
	m->length = rd16(p + 2);
	m->export_time = rd32(p + 4);
	m->seq = rd32(p + 8);
	m->domain = rd32(p + 12);
	if (m->length != len)
		return -1;
	while (off < (uint32_t)len) {
		uint16_t id, slen;
		int rc;

		if (len - off < 4)
			return -1;
		id = rd16(p + off);
		slen = rd16(p + off + 2);
		if (slen < 4 || slen > len - off)
			return -1;
		if (id == 2) {
			m->template_sets++;
			rc = parse_templates(p + off + 4, slen - 4u, m);
		} else {
			rc = parse_data(id, p + off + 4, slen - 4u, m);
		}
		if (rc)
			return rc;
		off += slen;
	}
	return 0;
}

/* A field's bytes in a record and their number; NULL when absent. */
static const uint8_t *get_field(const struct record *r, uint16_t id,
				uint32_t pen, uint32_t *len)
{
	const uint8_t *p = r->p, *end = r->p + r->len;

	for (uint16_t i = 0; i < r->t->n; i++) {
		const struct field *f = &r->t->f[i];
		const uint8_t *v = field_value(f, p, end, len);

		if (!v || (f->id == id && f->pen == pen))
			return v;
		p = v + *len;
	}
	return NULL;
}

/* The field's value in a record; -1 (all ones) when absent. */
static uint64_t get(const struct record *r, uint16_t id, uint32_t pen)
{
	uint32_t len;
	const uint8_t *v = get_field(r, id, pen, &len);

	if (!v)
		return UINT64_MAX;
	return len > 8 ? 0 : rdn(v, (uint16_t)len);
}

static const uint8_t *get_bytes(const struct record *r, uint16_t id)
{
	uint32_t len;

	return get_field(r, id, 0, &len);
}

/* ---- records to send -------------------------------------------------- */

static struct sl_flow_rec flow4(uint64_t fid)
{
	struct sl_flow_rec f;

	memset(&f, 0, sizeof(f));
	f.fid = fid;
	f.key.ip_version = 4;
	inet_pton(AF_INET, "10.0.0.1", f.key.src);
	inet_pton(AF_INET, "192.168.7.2", f.key.dst);
	f.key.sport = 40000;
	f.key.dport = 443;
	f.key.proto = 6;
	f.key.vlan = 42;
	f.fwd = (struct sl_dir){.pkts = 4,
				.bytes = 334,
				.ip_bytes = 278,
				.first_ns = T0 + 1234567,
				.last_ns = T0 + 900 * MS,
				.tcp_flags = 0x1b};
	f.rev = (struct sl_dir){.pkts = 3,
				.bytes = 5000000000ULL,
				.ip_bytes = 4900000000ULL,
				.first_ns = T0 + 10 * MS,
				.last_ns = T0 + 2500 * MS + 999999,
				.tcp_flags = 0x13};
	f.reason_code = SL_END_FIN;
	return f;
}

static struct sl_flow_rec flow6(uint64_t fid)
{
	struct sl_flow_rec f;

	memset(&f, 0, sizeof(f));
	f.fid = fid;
	f.key.ip_version = 6;
	inet_pton(AF_INET6, "2001:db8::1", f.key.src);
	inet_pton(AF_INET6, "2001:db8:ffff::abcd", f.key.dst);
	f.key.sport = 5353;
	f.key.dport = 53;
	f.key.proto = 17;
	f.fwd = (struct sl_dir){.pkts = 1,
				.bytes = 90,
				.ip_bytes = 76,
				.first_ns = T0 + 5 * MS,
				.last_ns = T0 + 5 * MS};
	f.reason_code = SL_END_IDLE;
	return f;
}

static struct sl_ipfix *new_x(uint32_t domain, uint32_t max)
{
	struct sl_ipfix_opts o = {.domain = domain, .max_bytes = max};
	struct sl_ipfix *x = NULL;

	CHECK_EQ(sl_ipfix_new(&x, &o), 0);
	return x;
}

/* Takes the open message and parses it; returns its length. */
static int take(struct sl_ipfix *x, uint32_t t, struct msg *m)
{
	const uint8_t *data = NULL;
	int n = sl_ipfix_take(x, t, &data);

	if (n > 0)
		CHECK_EQ(parse(data, n, m), 0);
	return n;
}

static struct msg m;

/* ---- tests ------------------------------------------------------------ */

struct want_field {
	uint16_t id, len;
	uint32_t pen;
};

static void check_template(const struct template *t, int v6)
{
	const struct want_field want[] = {
	    {152, 8, 0},
	    {153, 8, 0},
	    {v6 ? 27 : 8, v6 ? 16 : 4, 0},
	    {v6 ? 28 : 12, v6 ? 16 : 4, 0},
	    {v6 ? 139 : 32, 2, 0},
	    {7, 2, 0},
	    {11, 2, 0},
	    {4, 1, 0},
	    {6, 2, PEN_REVERSE},
	    {6, 2, 0},
	    {58, 2, 0},
	    {136, 1, 0},
	    {148, 8, 0},
	    {1, 8, 0},
	    {2, 8, 0},
	    {1, 8, PEN_REVERSE},
	    {2, 8, PEN_REVERSE},
	    {352, 8, 0},
	    {352, 8, PEN_REVERSE},
	};
	int n = sizeof(want) / sizeof(want[0]);

	CHECK_EQ(t->id, v6 ? 257 : 256);
	CHECK_EQ(t->n, n);
	for (int i = 0; i < n && i < t->n; i++) {
		CHECK_EQ(t->f[i].id, want[i].id);
		CHECK_EQ(t->f[i].len, want[i].len);
		CHECK_EQ(t->f[i].pen, want[i].pen);
	}
}

static void test_first_message(void)
{
	struct sl_ipfix *x = new_x(77, 0);
	struct sl_flow_rec f = flow4(9);
	const struct record *r;
	const uint8_t *a;
	int n;

	memset(tmpls, 0, sizeof(tmpls));
	CHECK_EQ(sl_ipfix_pending(x), 0);
	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	CHECK_EQ(sl_ipfix_pending(x), 1);
	n = take(x, 1700000123, &m);
	CHECK(n > 0);
	CHECK_EQ(sl_ipfix_pending(x), 0);
	CHECK_EQ(m.version, 10);
	CHECK_EQ(m.length, n);
	CHECK_EQ(m.export_time, 1700000123);
	CHECK_EQ(m.seq, 0);
	CHECK_EQ(m.domain, 77);
	CHECK_EQ(m.template_sets, 1);
	CHECK_EQ(m.templates_seen, 2);
	check_template(&tmpls[0], 0);
	check_template(&tmpls[1], 1);
	CHECK_EQ(m.n_sets, 1);
	CHECK_EQ(m.set_ids[0], 256);
	CHECK_EQ(m.n_recs, 1);
	r = &m.recs[0];
	CHECK_EQ(get(r, 152, 0), (T0 + 1234567) / MS);
	/* the reverse direction ended last */
	CHECK_EQ(get(r, 153, 0), (T0 + 2500 * MS) / MS);
	a = get_bytes(r, 8);
	CHECK(a && !memcmp(a, f.key.src, 4));
	a = get_bytes(r, 12);
	CHECK(a && !memcmp(a, f.key.dst, 4));
	CHECK_EQ(get(r, 7, 0), 40000);
	CHECK_EQ(get(r, 11, 0), 443);
	CHECK_EQ(get(r, 32, 0), 0);
	CHECK_EQ(get(r, 4, 0), 6);
	CHECK_EQ(get(r, 6, 0), 0x1b);
	CHECK_EQ(get(r, 6, PEN_REVERSE), 0x13);
	CHECK_EQ(get(r, 58, 0), 42);
	CHECK_EQ(get(r, 136, 0), 3);
	CHECK_EQ(get(r, 148, 0), 9);
	/* octetDeltaCount: IP bytes; layer2OctetDeltaCount: frames' */
	CHECK_EQ(get(r, 1, 0), 278);
	CHECK_EQ(get(r, 352, 0), 334);
	CHECK(get(r, 352, PEN_REVERSE) == 5000000000ULL);
	CHECK_EQ(get(r, 2, 0), 4);
	CHECK(get(r, 1, PEN_REVERSE) == 4900000000ULL);
	CHECK_EQ(get(r, 2, PEN_REVERSE), 3);
	/* nothing more to send */
	CHECK_EQ(take(x, 1, &m), 0);
	sl_ipfix_free(x);
}

static void test_v6_and_end(void)
{
	struct sl_ipfix *x = new_x(1, 0);
	struct sl_flow_rec f = flow6(10);
	const struct record *r;
	const uint8_t *a;

	/* no reverse packets: its times mean nothing */
	f.rev.last_ns = T0 + 99000 * MS;
	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	CHECK(take(x, 5, &m) > 0);
	CHECK_EQ(m.n_sets, 1);
	CHECK_EQ(m.set_ids[0], 257);
	CHECK_EQ(m.n_recs, 1);
	r = &m.recs[0];
	CHECK_EQ(get(r, 152, 0), T0 / MS + 5);
	CHECK_EQ(get(r, 153, 0), T0 / MS + 5);
	a = get_bytes(r, 27);
	CHECK(a && !memcmp(a, f.key.src, 16));
	a = get_bytes(r, 28);
	CHECK(a && !memcmp(a, f.key.dst, 16));
	CHECK_EQ(get(r, 7, 0), 5353);
	CHECK_EQ(get(r, 11, 0), 53);
	CHECK_EQ(get(r, 139, 0), 0);
	CHECK_EQ(get(r, 4, 0), 17);
	CHECK_EQ(get(r, 136, 0), 1);
	CHECK_EQ(get(r, 1, 0), 76);
	CHECK_EQ(get(r, 352, 0), 90);
	CHECK_EQ(get(r, 2, 0), 1);
	CHECK_EQ(get(r, 1, PEN_REVERSE), 0);
	CHECK_EQ(get(r, 2, PEN_REVERSE), 0);
	sl_ipfix_free(x);
}

static void test_slice(void)
{
	struct sl_ipfix *x = new_x(1, 0);
	struct sl_slice_rec s;
	struct sl_flow_rec f = flow4(3);
	const struct record *r;

	memset(&s, 0, sizeof(s));
	s.fid = 3;
	s.key = f.key;
	s.start_ns = T0 + 5000 * MS;
	s.end_ns = T0 + 10000 * MS;
	s.delta_fwd = (struct sl_counts){7, 700, 602};
	s.delta_rev = (struct sl_counts){2, 120, 92};
	s.total_fwd = (struct sl_counts){70, 7000, 6020};
	s.total_rev = (struct sl_counts){20, 1200, 920};
	s.tcp_flags_fwd = 0x18;
	s.tcp_flags_rev = 0x10;
	CHECK_EQ(sl_ipfix_add_slice(x, &s), 0);
	s.reason_code = SL_END_RST;
	CHECK_EQ(sl_ipfix_add_slice(x, &s), 0);
	CHECK(take(x, 5, &m) > 0);
	CHECK_EQ(m.n_sets, 1);
	CHECK_EQ(m.n_recs, 2);
	r = &m.recs[0];
	CHECK_EQ(get(r, 152, 0), T0 / MS + 5000);
	CHECK_EQ(get(r, 153, 0), T0 / MS + 10000);
	CHECK_EQ(get(r, 1, 0), 602);
	CHECK_EQ(get(r, 352, 0), 700);
	CHECK_EQ(get(r, 2, 0), 7);
	CHECK_EQ(get(r, 1, PEN_REVERSE), 92);
	CHECK_EQ(get(r, 352, PEN_REVERSE), 120);
	CHECK_EQ(get(r, 2, PEN_REVERSE), 2);
	CHECK_EQ(get(r, 6, 0), 0x18);
	CHECK_EQ(get(r, 6, PEN_REVERSE), 0x10);
	CHECK_EQ(get(r, 148, 0), 3);
	/* the flow goes on: reported as an active timeout record */
	CHECK_EQ(get(r, 136, 0), 2);
	CHECK_EQ(get(&m.recs[1], 136, 0), 3);
	sl_ipfix_free(x);
}

static void test_end_reasons(void)
{
	static const int want[SL_END_COUNT] = {
	    [SL_END_NONE] = 2,	   [SL_END_FIN] = 3,	 [SL_END_RST] = 3,
	    [SL_END_IDLE] = 1,	   [SL_END_ACTIVE] = 2,	 [SL_END_EOF] = 4,
	    [SL_END_SHUTDOWN] = 4, [SL_END_TRIMMED] = 5, [SL_END_REUSED] = 3,
	};
	struct sl_ipfix *x = new_x(1, 0);
	struct sl_flow_rec f = flow4(1);

	for (int i = 0; i < SL_END_COUNT; i++) {
		f.reason_code = (uint8_t)i;
		CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	}
	CHECK(take(x, 5, &m) > 0);
	CHECK_EQ(m.n_recs, SL_END_COUNT);
	for (int i = 0; i < SL_END_COUNT && i < m.n_recs; i++)
		CHECK_EQ(get(&m.recs[i], 136, 0), want[i]);
	sl_ipfix_free(x);
}

/* ICMP type and code of the flow's first packet go out as icmpTypeCode
 * and as the destination port; the echo identifier in the key's ports
 * never goes out as a port. */
static void test_icmp(void)
{
	struct sl_ipfix *x = new_x(1, 0);
	struct sl_flow_rec f4 = flow4(1), f6 = flow6(2);

	f4.key.proto = 1;
	f4.key.sport = f4.key.dport = 0x1234;
	f4.icmp_type = 8;
	f6.key.proto = 58;
	f6.key.sport = f6.key.dport = 77;
	f6.icmp_type = 1; /* destination unreachable, code 4 */
	f6.icmp_code = 4;
	CHECK_EQ(sl_ipfix_add_flow(x, &f4), 0);
	CHECK_EQ(sl_ipfix_add_flow(x, &f6), 0);
	f4.icmp_type = 3;
	f4.icmp_code = 1;
	CHECK_EQ(sl_ipfix_add_flow(x, &f4), 0);
	CHECK(take(x, 5, &m) > 0);
	CHECK_EQ(m.n_recs, 3);
	CHECK_EQ(get(&m.recs[0], 32, 0), 8 << 8);
	CHECK_EQ(get(&m.recs[0], 11, 0), 8 << 8);
	CHECK_EQ(get(&m.recs[0], 7, 0), 0);
	CHECK_EQ(get(&m.recs[1], 139, 0), 1 << 8 | 4);
	CHECK_EQ(get(&m.recs[1], 11, 0), 1 << 8 | 4);
	CHECK_EQ(get(&m.recs[1], 7, 0), 0);
	CHECK_EQ(get(&m.recs[2], 32, 0), 3 << 8 | 1);
	CHECK_EQ(get(&m.recs[2], 11, 0), 3 << 8 | 1);
	sl_ipfix_free(x);
}

/* A data set per run of one template, in the order records came. */
static void test_interleave(void)
{
	struct sl_ipfix *x = new_x(1, 0);
	struct sl_flow_rec f4 = flow4(1), f6 = flow6(2);
	const struct sl_flow_rec *seq[] = {&f4, &f4, &f6, &f4, &f6, &f6, &f6};
	const int sets[] = {256, 257, 256, 257}, recs[] = {2, 1, 1, 3};

	for (int i = 0; i < 7; i++)
		CHECK_EQ(sl_ipfix_add_flow(x, seq[i]), 0);
	CHECK(take(x, 5, &m) > 0);
	CHECK_EQ(m.n_sets, 4);
	for (int i = 0; i < 4 && i < m.n_sets; i++) {
		CHECK_EQ(m.set_ids[i], sets[i]);
		CHECK_EQ(m.set_recs[i], recs[i]);
	}
	CHECK_EQ(m.n_recs, 7);
	CHECK_EQ(get(&m.recs[2], 148, 0), 2);
	CHECK_EQ(get(&m.recs[3], 148, 0), 1);
	sl_ipfix_free(x);
}

/* Templates open the first message and the one after want_templates. */
static void test_templates_when_wanted(void)
{
	struct sl_ipfix *x = new_x(1, 0);
	struct sl_flow_rec f = flow4(1);
	int with, without;

	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	with = take(x, 1, &m);
	CHECK_EQ(m.template_sets, 1);
	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	without = take(x, 2, &m);
	CHECK_EQ(m.template_sets, 0);
	CHECK_EQ(m.n_recs, 1);
	CHECK_EQ(with - without, 4 + 2 * (4 + (19 + 4) * 4));
	CHECK_EQ(tmpls[0].rec_len, REC4);
	CHECK_EQ(tmpls[1].rec_len, REC6);
	/* asked for while a message is open: the next one has them */
	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	sl_ipfix_want_templates(x);
	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	CHECK_EQ(take(x, 3, &m), without + REC4);
	CHECK_EQ(m.template_sets, 0);
	CHECK_EQ(m.n_recs, 2);
	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	CHECK_EQ(take(x, 4, &m), with);
	CHECK_EQ(m.template_sets, 1);
	CHECK_EQ(m.seq, 4);
	/* templates alone, e.g. on a reconnect before any flow */
	sl_ipfix_want_templates(x);
	CHECK_EQ(take(x, 5, &m), 16 + with - without);
	CHECK_EQ(m.template_sets, 1);
	CHECK_EQ(m.n_recs, 0);
	CHECK_EQ(m.seq, 5);
	CHECK_EQ(take(x, 6, &m), 0);
	sl_ipfix_free(x);
}

static uint32_t need(const struct sl_flow_rec *f, const struct msg *mm)
{
	int v6 = f->key.ip_version == 6;
	uint32_t n = tmpls[v6].rec_len;

	if (!mm->n_sets || mm->set_ids[mm->n_sets - 1] != 256 + v6)
		n += 4;
	return n;
}

/* Fills messages up to max_bytes; checks each message's bound, its
 * sequence number, and that -ENOBUFS came only when a record could not
 * fit. */
static void fill_messages(uint32_t max, uint32_t want_max, int total)
{
	struct sl_ipfix *x = new_x(5, max);
	struct sl_flow_rec f4 = flow4(0), f6 = flow6(0);
	uint32_t sent = 0, got = 0, msgs = 0;
	uint64_t next_fid = 1;
	int rc, n;

	memset(tmpls, 0, sizeof(tmpls));
	for (int i = 0; i < total; i++) {
		struct sl_flow_rec *f = i % 3 == 2 ? &f6 : &f4;

		f->fid = (uint64_t)i + 1;
		rc = sl_ipfix_add_flow(x, f);
		if (rc == -ENOBUFS) {
			uint32_t pend = sl_ipfix_pending(x);

			n = take(x, 9, &m);
			CHECK(n > 0 && (uint32_t)n <= want_max);
			/* the refused record did not fit, with the set header
			 * it needs if its template differs from the last */
			CHECK((uint32_t)n + need(f, &m) > want_max);
			CHECK_EQ(m.n_recs, pend);
			CHECK_EQ(m.seq, sent);
			CHECK_EQ(m.domain, 5);
			CHECK_EQ(m.template_sets, msgs == 0);
			for (int j = 0; j < m.n_recs; j++)
				CHECK_EQ(get(&m.recs[j], 148, 0), next_fid++);
			sent += pend;
			got += (uint32_t)m.n_recs;
			msgs++;
			rc = sl_ipfix_add_flow(x, f);
		}
		CHECK_EQ(rc, 0);
	}
	n = take(x, 9, &m);
	CHECK(n > 0 && (uint32_t)n <= want_max);
	CHECK_EQ(m.seq, sent);
	got += (uint32_t)m.n_recs;
	CHECK_EQ(got, total);
	CHECK(msgs > 0);
	sl_ipfix_free(x);
}

static void test_max_bytes(void)
{
	struct sl_ipfix *x;
	struct sl_ipfix_opts o = {.max_bytes = 200};

	fill_messages(0, SL_IPFIX_UDP_MESSAGE, 500);
	fill_messages(512, 512, 100);
	fill_messages(100000, 65535, 3000);
	fill_messages(65535, 65535, 3000);
	/* too small for the templates and one record */
	CHECK_EQ(sl_ipfix_new(&x, &o), -EINVAL);
	o.max_bytes = 16 + 4 + 2 * (4 + 23 * 4) + 4 + REC6;
	CHECK_EQ(o.max_bytes, SL_IPFIX_MIN_MESSAGE);
	CHECK_EQ(sl_ipfix_new(&x, &o), 0);
	sl_ipfix_free(x);
	o.max_bytes--;
	CHECK_EQ(sl_ipfix_new(&x, &o), -EINVAL);
}

static void test_bad_key(void)
{
	struct sl_ipfix *x = new_x(1, 0);
	struct sl_flow_rec f = flow4(1);

	f.key.ip_version = SL_KEY_ID;
	CHECK_EQ(sl_ipfix_add_flow(x, &f), -EAFNOSUPPORT);
	CHECK_EQ(sl_ipfix_pending(x), 0);
	sl_ipfix_free(x);
}

/* ---- flow features: templates 258/259 --------------------------------- */

#define SPLT_N 5

static struct test_features feat;

/* A flow with every feature: statistics, 3 of SPLT_N first packets (the
 * second one reversed), a label nDPI is done with. */
static struct sl_flow_rec feat_flow(struct sl_flow_rec f)
{
	memset(&feat, 0, sizeof(feat));
	feat.stats.s[0].min_ps = 60;
	feat.stats.s[0].flag_packets[1] = 2; /* SYN */
	feat.stats.s[1].flag_packets[4] = 7; /* ACK */
	feat.splt = (struct sl_splt){.n = 3, .len = SPLT_N, .reverse = 2};
	feat.splt.ps[0] = 74, feat.splt.ps[1] = 1514, feat.splt.ps[2] = 66;
	feat.splt.piat_ns[1] = 1234567890123ULL, feat.splt.piat_ns[2] = 5;
	feat.app.state = SL_DPI_DONE;
	strcpy(feat.app.application_name, "TLS.Google");
	strcpy(feat.app.category, "Web");
	strcpy(feat.app.server_name, "www.google.com");
	test_features_point(&f, &feat);
	return f;
}

static struct sl_ipfix *new_feat(uint32_t features, uint32_t splt_n,
				 uint32_t max)
{
	struct sl_ipfix_opts o = {.max_bytes = max, .splt_packets = splt_n};
	struct sl_ipfix *x = NULL;

	CHECK_EQ(sl_ipfix_new_features(&x, &o, features), 0);
	return x;
}

static int nfields(uint32_t features)
{
	return NBASE + (features & SL_FEATURE_STATS ? 40 : 0) +
	       (features & SL_FEATURE_SPLT ? 4 : 0) +
	       (features & SL_FEATURE_DPI ? 3 : 0);
}

/* The features' fields after the base ones and the statistics. */
static void check_feat_template(const struct template *t, uint32_t features,
				uint16_t splt_n)
{
	const struct want_field splt[] = {{97, 1, SL_PEN},
					  {98, splt_n, SL_PEN},
					  {99, (uint16_t)(2 * splt_n), SL_PEN},
					  {100, (uint16_t)(8 * splt_n),
					   SL_PEN}},
				label[] = {{96, VARLEN, 0},
					   {372, VARLEN, 0},
					   {101, VARLEN, SL_PEN}};
	int i = NBASE + (features & SL_FEATURE_STATS ? 40 : 0);

	CHECK_EQ(t->n, nfields(features));
	if (features & SL_FEATURE_STATS) {
		/* the statistics as before: src2dst_min_ps first */
		CHECK_EQ(t->f[NBASE].id, 1);
		CHECK_EQ(t->f[NBASE].pen, SL_PEN);
		CHECK_EQ(t->f[NBASE + 39].id, 72);
	}
	for (int k = 0; k < 4 && (features & SL_FEATURE_SPLT); k++, i++) {
		CHECK_EQ(t->f[i].id, splt[k].id);
		CHECK_EQ(t->f[i].len, splt[k].len);
		CHECK_EQ(t->f[i].pen, splt[k].pen);
	}
	for (int k = 0; k < 3 && (features & SL_FEATURE_DPI); k++, i++) {
		CHECK_EQ(t->f[i].id, label[k].id);
		CHECK_EQ(t->f[i].len, label[k].len);
		CHECK_EQ(t->f[i].pen, label[k].pen);
	}
}

static void check_string(const struct record *r, uint16_t id, uint32_t pen,
			 const char *want)
{
	uint32_t len;
	const uint8_t *v = get_field(r, id, pen, &len);

	CHECK(v != NULL);
	CHECK_EQ(len, strlen(want));
	CHECK(v && len == strlen(want) && !memcmp(v, want, len));
}

/* splt arrays of SPLT_N entries: the packets, then padding */
static void check_splt(const struct record *r, int n, const char *dir)
{
	uint32_t len;
	const uint8_t *d = get_field(r, 98, SL_PEN, &len),
		      *ps = get_field(r, 99, SL_PEN, &len),
		      *piat = get_field(r, 100, SL_PEN, &len);

	CHECK_EQ(get(r, 97, SL_PEN), n);
	CHECK(d && !memcmp(d, dir, SPLT_N));
	CHECK(ps && piat);
	for (int i = 0; ps && piat && i < SPLT_N; i++) {
		CHECK_EQ(rdn(ps + 2 * i, 2), i < n ? feat.splt.ps[i] : 0);
		CHECK(rdn(piat + 8 * i, 8) ==
		      (i < n ? feat.splt.piat_ns[i] : 0));
	}
}

/* Each combination of features: the templates, a flow's record, its
 * length, and the base templates unchanged. */
static void test_feature_combinations(void)
{
	for (uint32_t fs = 1; fs <= 7; fs++) {
		struct sl_ipfix *x = new_feat(fs, SPLT_N, SL_IPFIX_MAX_MESSAGE);
		struct sl_flow_rec f4 = feat_flow(flow4(1));
		struct sl_flow_rec f6 = feat_flow(flow6(2));
		uint32_t strs = fs & SL_FEATURE_DPI ? 3 + 10 + 3 + 14 : 0;
		uint32_t fixed = (fs & SL_FEATURE_STATS ? 280 : 0) +
				 (fs & SL_FEATURE_SPLT ? 1 + 11 * SPLT_N : 0);
		const struct record *r;

		memset(tmpls, 0, sizeof(tmpls));
		CHECK_EQ(sl_ipfix_add_flow(x, &f4), 0);
		CHECK_EQ(sl_ipfix_add_flow(x, &f6), 0);
		CHECK(take(x, 1, &m) > 0);
		CHECK_EQ(m.templates_seen, 4);
		check_template(&tmpls[0], 0);
		check_template(&tmpls[1], 1);
		check_feat_template(&tmpls[2], fs, SPLT_N);
		check_feat_template(&tmpls[3], fs, SPLT_N);
		CHECK_EQ(m.n_sets, 2);
		CHECK_EQ(m.set_ids[0], 258);
		CHECK_EQ(m.set_ids[1], 259);
		CHECK_EQ(m.n_recs, 2);
		CHECK_EQ(m.recs[0].len, REC4 + fixed + strs);
		CHECK_EQ(m.recs[1].len, REC6 + fixed + strs);
		for (int i = 0; i < m.n_recs; i++) {
			r = &m.recs[i];
			CHECK_EQ(get(r, 148, 0), i + 1);
			CHECK_EQ(get(r, 1, SL_PEN),
				 fs & SL_FEATURE_STATS ? 60 : UINT64_MAX);
			CHECK_EQ(get(r, 218, 0),
				 fs & SL_FEATURE_STATS ? 2 : UINT64_MAX);
			CHECK_EQ(get(r, 222, PEN_REVERSE),
				 fs & SL_FEATURE_STATS ? 7 : UINT64_MAX);
			if (fs & SL_FEATURE_SPLT)
				check_splt(r, 3, "\0\1\0\377\377");
			else
				CHECK_EQ(get(r, 97, SL_PEN), UINT64_MAX);
			if (!(fs & SL_FEATURE_DPI)) {
				CHECK_EQ(get(r, 96, 0), UINT64_MAX);
				continue;
			}
			check_string(r, 96, 0, "TLS.Google");
			check_string(r, 372, 0, "Web");
			check_string(r, 101, SL_PEN, "www.google.com");
		}
		sl_ipfix_free(x);
	}
}

/* A label nDPI is not done with goes out as empty strings; records
 * without the exporter's features, and slices, use the base templates. */
static void test_feature_records(void)
{
	struct sl_ipfix *x =
	    new_feat(SL_FEATURE_SPLT | SL_FEATURE_DPI, SPLT_N, 0);
	struct sl_flow_rec f = feat_flow(flow4(1)), plain = flow4(2),
			   some = feat_flow(flow4(3));
	struct sl_slice_rec s;

	memset(&s, 0, sizeof(s));
	s.key = f.key;
	feat.app.state = SL_DPI_INSPECTING;
	some.stats = NULL; /* splt and a label: not all the exporter's */
	some.app = NULL;
	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	CHECK_EQ(sl_ipfix_add_flow(x, &plain), 0);
	CHECK_EQ(sl_ipfix_add_flow(x, &some), 0);
	CHECK_EQ(sl_ipfix_add_slice(x, &s), 0);
	CHECK(take(x, 1, &m) > 0);
	CHECK_EQ(m.n_recs, 4);
	CHECK_EQ(m.n_sets, 2);
	CHECK_EQ(m.set_ids[0], 258);
	CHECK_EQ(m.set_ids[1], 256);
	CHECK_EQ(m.set_recs[1], 3);
	CHECK_EQ(m.recs[0].len, REC4 + 1 + 11 * SPLT_N + 3);
	check_string(&m.recs[0], 96, 0, "");
	check_string(&m.recs[0], 372, 0, "");
	check_string(&m.recs[0], 101, SL_PEN, "");
	check_splt(&m.recs[0], 3, "\0\1\0\377\377");
	CHECK_EQ(get(&m.recs[1], 148, 0), 2);
	CHECK_EQ(get(&m.recs[2], 148, 0), 3);
	sl_ipfix_free(x);
}

/* A record made with another splt length than the exporter's: the
 * entries that fit, then padding. */
static void test_splt_lengths(void)
{
	struct sl_ipfix *x = new_feat(SL_FEATURE_SPLT, SPLT_N, 0);
	struct sl_flow_rec f = feat_flow(flow4(1));

	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	feat.splt.len = 2;
	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	feat.splt.len = feat.splt.n = 8;
	feat.splt.reverse = 0xaa;
	feat.splt.ps[4] = 999;
	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	CHECK(take(x, 1, &m) > 0);
	CHECK_EQ(m.n_recs, 3);
	feat.splt.reverse = 2;
	check_splt(&m.recs[0], 3, "\0\1\0\377\377");
	check_splt(&m.recs[1], 2, "\0\1\377\377\377");
	feat.splt.reverse = 0xaa;
	check_splt(&m.recs[2], 5, "\0\1\0\1\0");
	sl_ipfix_free(x);
	/* 0: the default length */
	x = new_feat(SL_FEATURE_SPLT, 0, 0);
	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	CHECK(take(x, 1, &m) > 0);
	CHECK_EQ(tmpls[2].f[NBASE + 1].len, SL_SPLT_DEFAULT);
	CHECK_EQ(m.recs[0].len, REC4 + 1 + 11 * SL_SPLT_DEFAULT);
	sl_ipfix_free(x);
}

/* max_bytes must hold the template set and the longest record (the
 * longest strings), each in a message of its own. */
static void test_feature_max_bytes(void)
{
	struct sl_ipfix_opts o = {.splt_packets = SL_SPLT_MAX};
	struct sl_ipfix *x = NULL;
	uint32_t dpi_splt = SL_FEATURE_SPLT | SL_FEATURE_DPI;
	/* IPv6: base, splt arrays of 32, three strings of 47, 31, 79 */
	uint32_t longest = REC6 + 1 + 11 * SL_SPLT_MAX + 3 + 47 + 31 + 79;
	/* the base templates (15 IETF, 4 reverse fields), and two of those
	 * and 4 + 3 more: 2 IETF */
	uint32_t tset = 4 + 2 * (4 + 15 * 4 + 4 * 8) +
			2 * (4 + 15 * 4 + 4 * 8 + 4 * 8 + 2 * 4 + 8);
	struct sl_flow_rec f = feat_flow(flow6(1));

	o.max_bytes = 16 + 4 + longest;
	CHECK(o.max_bytes > 16 + tset);
	CHECK_EQ(sl_ipfix_new_features(&x, &o, dpi_splt), 0);
	memset(feat.app.application_name, 'a', SL_APP_NAME_MAX - 1);
	memset(feat.app.category, 'c', SL_APP_CATEGORY_MAX - 1);
	memset(feat.app.server_name, 's', SL_APP_SERVER_MAX - 1);
	feat.splt.len = SL_SPLT_MAX;
	/* the template set alone, then the record alone */
	CHECK_EQ(sl_ipfix_add_flow(x, &f), -ENOBUFS);
	CHECK_EQ(take(x, 1, &m), 16 + tset);
	CHECK_EQ(sl_ipfix_add_flow(x, &f), 0);
	CHECK_EQ(take(x, 1, &m), 16 + 4 + longest);
	CHECK_EQ(m.n_recs, 1);
	CHECK_EQ(m.recs[0].len, longest);
	sl_ipfix_free(x);
	o.max_bytes--;
	CHECK_EQ(sl_ipfix_new_features(&x, &o, dpi_splt), -EINVAL);
	/* every feature: the template set is the bound */
	o.max_bytes = 16 + tset + 2 * 296;
	CHECK_EQ(sl_ipfix_new_features(&x, &o, dpi_splt | SL_FEATURE_STATS),
		 0);
	sl_ipfix_free(x);
	o.max_bytes--;
	CHECK_EQ(sl_ipfix_new_features(&x, &o, dpi_splt | SL_FEATURE_STATS),
		 -EINVAL);
	o.max_bytes = 0;
	o.splt_packets = SL_SPLT_MAX + 1;
	CHECK_EQ(sl_ipfix_new_features(&x, &o, SL_FEATURE_SPLT), -EINVAL);
	o.splt_packets = 0;
	CHECK_EQ(sl_ipfix_new_features(&x, &o, 8), -EINVAL);
}

/* Records of varying length fill messages: -ENOBUFS only when the
 * record did not fit, every record read back. */
static void test_feature_fill(void)
{
	struct sl_ipfix *x = new_feat(SL_FEATURE_DPI, 0, 600);
	struct sl_flow_rec f = feat_flow(flow4(0));
	int got = 0, total = 300, rc, n;

	memset(tmpls, 0, sizeof(tmpls));
	for (int i = 0; i < total; i++) {
		uint32_t len = (uint32_t)(i * 7) % SL_APP_SERVER_MAX;

		memset(feat.app.server_name, 0, SL_APP_SERVER_MAX);
		memset(feat.app.server_name, 'x', len);
		f.fid = (uint64_t)i;
		rc = sl_ipfix_add_flow(x, &f);
		if (rc == -ENOBUFS) {
			n = take(x, 1, &m);
			CHECK(n > 0 && n <= 600);
			/* the set is open: the record alone did not fit */
			CHECK((uint32_t)n + REC4 + 3 + 10 + 3 + len > 600);
			for (int j = 0; j < m.n_recs; j++)
				CHECK_EQ(get(&m.recs[j], 148, 0), got++);
			rc = sl_ipfix_add_flow(x, &f);
		}
		CHECK_EQ(rc, 0);
	}
	CHECK(take(x, 1, &m) > 0);
	for (int j = 0; j < m.n_recs; j++)
		CHECK_EQ(get(&m.recs[j], 148, 0), got++);
	CHECK_EQ(got, total);
	sl_ipfix_free(x);
}

int main(void)
{
	test_first_message();
	test_v6_and_end();
	test_slice();
	test_end_reasons();
	test_icmp();
	test_interleave();
	test_templates_when_wanted();
	test_max_bytes();
	test_bad_key();
	test_feature_combinations();
	test_feature_records();
	test_splt_lengths();
	test_feature_max_bytes();
	test_feature_fill();
	return test_done();
}
