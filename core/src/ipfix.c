/* ipfix.c - IPFIX (RFC 7011) messages of biflow records (RFC 5103).
 *
 * One message is built at a time in a buffer sized at creation, so adding
 * a record never allocates. Two templates, one per IP version; their data
 * sets interleave in the order records arrive.
 *
 * Value choices:
 * - counters are delta counts: a flow record carries its totals (the delta
 *   since the flow began), a slice record its interval's deltas;
 * - flowEndReason uses the RFC 5102 codes; a live flow, or a slice of a
 *   flow that goes on, is sent as activeTimeout (2), the code an exporter
 *   gives the periodic record of a flow it keeps counting (0 is reserved);
 * - ICMP: see icmp_type_code().
 *
 * Checked against nfdump 1.7.1: it reads the RFC 5103 reverse octet and
 * packet counts as its "out" bytes and packets, and flowEndReason; it
 * ignores flowId.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

#define IPFIX_VERSION	   10
#define IPFIX_HDR_LEN	   16
#define IPFIX_SET_HDR_LEN  4
#define IPFIX_TEMPLATE_SET 2
#define TEMPLATE_V4	   256
#define TEMPLATE_V6	   257
#define ENTERPRISE_BIT	   0x8000
#define PEN_REVERSE	   29305 /* RFC 5103 reverse information elements */
#define NS_PER_MS	   1000000ULL

#define IPPROTO_ICMP_	1
#define IPPROTO_ICMPV6_ 58

/* Information element ids (IANA); REV() is the RFC 5103 reverse of one. */
enum ie_id {
	IE_OCTETS = 1,
	IE_PACKETS = 2,
	IE_PROTO = 4,
	IE_TCP_FLAGS = 6,
	IE_SPORT = 7,
	IE_SRC4 = 8,
	IE_DPORT = 11,
	IE_DST4 = 12,
	IE_ICMP4 = 32, /* icmpTypeCodeIPv4 */
	IE_SRC6 = 27,
	IE_DST6 = 28,
	IE_VLAN = 58,
	IE_ICMP6 = 139, /* icmpTypeCodeIPv6 */
	IE_END_REASON = 136,
	IE_FLOW_ID = 148,
	IE_START_MS = 152,
	IE_END_MS = 153,
};

#define REV(id) ((id) | ENTERPRISE_BIT)

/* RFC 5102 flowEndReason */
enum {
	END_IDLE = 1,
	END_ACTIVE = 2,
	END_DETECTED = 3,
	END_FORCED = 4,
	END_RESOURCES = 5,
};

struct ie {
	uint16_t id; /* ENTERPRISE_BIT set: PEN_REVERSE follows */
	uint16_t len;
};

/* nfdump 1.7.1 files a reverse element it has no reverse slot for under
 * the forward element: the reverse tcpControlBits comes first so that
 * the forward one, written after it, stays. The ICMP type/code element is
 * sent for every protocol, 0 outside ICMP, so one template serves all. */
static const struct ie tmpl_v4[] = {
    {IE_START_MS, 8},	 {IE_END_MS, 8},       {IE_SRC4, 4},
    {IE_DST4, 4},	 {IE_ICMP4, 2},	       {IE_SPORT, 2},
    {IE_DPORT, 2},	 {IE_PROTO, 1},	       {REV(IE_TCP_FLAGS), 2},
    {IE_TCP_FLAGS, 2},	 {IE_VLAN, 2},	       {IE_END_REASON, 1},
    {IE_FLOW_ID, 8},	 {IE_OCTETS, 8},       {IE_PACKETS, 8},
    {REV(IE_OCTETS), 8}, {REV(IE_PACKETS), 8},
};

static const struct ie tmpl_v6[] = {
    {IE_START_MS, 8},	 {IE_END_MS, 8},       {IE_SRC6, 16},
    {IE_DST6, 16},	 {IE_ICMP6, 2},	       {IE_SPORT, 2},
    {IE_DPORT, 2},	 {IE_PROTO, 1},	       {REV(IE_TCP_FLAGS), 2},
    {IE_TCP_FLAGS, 2},	 {IE_VLAN, 2},	       {IE_END_REASON, 1},
    {IE_FLOW_ID, 8},	 {IE_OCTETS, 8},       {IE_PACKETS, 8},
    {REV(IE_OCTETS), 8}, {REV(IE_PACKETS), 8},
};

struct tmpl {
	uint16_t id;
	uint16_t n;
	const struct ie *ie;
};

static const struct tmpl templates[2] = {
    {TEMPLATE_V4, sizeof(tmpl_v4) / sizeof(tmpl_v4[0]), tmpl_v4},
    {TEMPLATE_V6, sizeof(tmpl_v6) / sizeof(tmpl_v6[0]), tmpl_v6},
};

/* One data record's values, from a flow or a slice. */
struct rec {
	const struct sl_key *key;
	uint64_t start_ms;
	uint64_t end_ms;
	uint64_t fid;
	struct sl_counts fwd;
	struct sl_counts rev;
	uint8_t flags_fwd;
	uint8_t flags_rev;
	uint8_t reason;
	uint8_t icmp_type;
	uint8_t icmp_code;
};

struct sl_ipfix {
	uint32_t domain;
	uint32_t max;	  /* message size bound */
	uint32_t seq;	  /* data records in messages taken so far */
	uint32_t pending; /* data records in the open message */
	uint32_t len;	  /* bytes of the open message; 0: none open */
	uint32_t set_off; /* open data set's header; 0: none */
	uint16_t set_id;
	uint16_t tset_len; /* template set bytes */
	uint16_t rec_len[2];
	uint8_t want_tmpl; /* the next message opens with the templates */
	uint8_t msg[];
};

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

/* Unsigned values in len bytes, network order (reduced-size encoding). */
static void put_uint(uint8_t *p, uint16_t len, uint64_t v)
{
	while (len--) {
		p[len] = (uint8_t)v;
		v >>= 8;
	}
}

static uint16_t tmpl_rec_len(const struct tmpl *t)
{
	uint16_t n = 0;

	for (uint16_t i = 0; i < t->n; i++)
		n += t->ie[i].len;
	return n;
}

static uint16_t tmpl_def_len(const struct tmpl *t)
{
	uint16_t n = 4;

	for (uint16_t i = 0; i < t->n; i++)
		n += t->ie[i].id & ENTERPRISE_BIT ? 8 : 4;
	return n;
}

static uint32_t put_template(uint8_t *p, const struct tmpl *t)
{
	uint8_t *start = p;

	put16(p, t->id);
	put16(p + 2, t->n);
	p += 4;
	for (uint16_t i = 0; i < t->n; i++) {
		put16(p, t->ie[i].id);
		put16(p + 2, t->ie[i].len);
		p += 4;
		if (t->ie[i].id & ENTERPRISE_BIT) {
			put32(p, PEN_REVERSE);
			p += 4;
		}
	}
	return (uint32_t)(p - start);
}

static int is_icmp(const struct sl_key *k)
{
	return k->proto == IPPROTO_ICMP_ || k->proto == IPPROTO_ICMPV6_;
}

/* ICMP type * 256 + code (of the flow's first packet), sent both as
 * icmpTypeCodeIPv4/IPv6 and, as nfdump and softflowd expect, as
 * destinationTransportPort; the echo identifier in the key's ports is
 * never sent as a port. */
static uint16_t icmp_type_code(const struct rec *r)
{
	return (uint16_t)(r->icmp_type << 8 | r->icmp_code);
}

static uint64_t ie_value(uint16_t id, const struct rec *r)
{
	switch (id) {
	case IE_ICMP4:
	case IE_ICMP6:
		return is_icmp(r->key) ? icmp_type_code(r) : 0;
	case IE_START_MS:
		return r->start_ms;
	case IE_END_MS:
		return r->end_ms;
	case IE_SPORT:
		return is_icmp(r->key) ? 0 : r->key->sport;
	case IE_DPORT:
		return is_icmp(r->key) ? icmp_type_code(r) : r->key->dport;
	case IE_PROTO:
		return r->key->proto;
	case IE_TCP_FLAGS:
		return r->flags_fwd;
	case REV(IE_TCP_FLAGS):
		return r->flags_rev;
	case IE_VLAN:
		return r->key->vlan;
	case IE_END_REASON:
		return r->reason;
	case IE_FLOW_ID:
		return r->fid;
	case IE_OCTETS:
		return r->fwd.bytes;
	case IE_PACKETS:
		return r->fwd.pkts;
	case REV(IE_OCTETS):
		return r->rev.bytes;
	case REV(IE_PACKETS):
		return r->rev.pkts;
	}
	return 0;
}

static void put_record(uint8_t *p, const struct tmpl *t, const struct rec *r)
{
	for (uint16_t i = 0; i < t->n; i++) {
		const struct ie *e = &t->ie[i];

		switch (e->id) {
		case IE_SRC4:
		case IE_SRC6:
			memcpy(p, r->key->src, e->len);
			break;
		case IE_DST4:
		case IE_DST6:
			memcpy(p, r->key->dst, e->len);
			break;
		default:
			put_uint(p, e->len, ie_value(e->id, r));
		}
		p += e->len;
	}
}

static void msg_open(struct sl_ipfix *x)
{
	x->len = IPFIX_HDR_LEN;
	x->set_off = 0;
	x->set_id = 0;
	x->pending = 0;
	if (!x->want_tmpl)
		return;
	x->want_tmpl = 0;
	put16(x->msg + x->len, IPFIX_TEMPLATE_SET);
	put16(x->msg + x->len + 2, x->tset_len);
	x->len += IPFIX_SET_HDR_LEN;
	for (int i = 0; i < 2; i++)
		x->len += put_template(x->msg + x->len, &templates[i]);
}

static int add_rec(struct sl_ipfix *x, const struct rec *r)
{
	int v6, new_set;
	const struct tmpl *t;
	uint32_t need;

	/* id and string keys have no addresses to send */
	if (r->key->ip_version != 4 && r->key->ip_version != 6)
		return -EAFNOSUPPORT;
	v6 = r->key->ip_version == 6;
	t = &templates[v6];
	if (!x->len)
		msg_open(x);
	new_set = x->set_id != t->id;
	need = x->rec_len[v6] + (new_set ? IPFIX_SET_HDR_LEN : 0);
	if (x->len + need > x->max)
		return -ENOBUFS;
	if (new_set) {
		x->set_off = x->len;
		x->set_id = t->id;
		put16(x->msg + x->set_off, t->id);
		x->len += IPFIX_SET_HDR_LEN;
	}
	put_record(x->msg + x->len, t, r);
	x->len += x->rec_len[v6];
	put16(x->msg + x->set_off + 2, (uint16_t)(x->len - x->set_off));
	x->pending++;
	return 0;
}

static uint8_t end_reason(int code)
{
	switch (code) {
	case SL_END_IDLE:
		return END_IDLE;
	case SL_END_FIN:
	case SL_END_RST:
		return END_DETECTED;
	case SL_END_EOF:
	case SL_END_SHUTDOWN:
		return END_FORCED;
	case SL_END_TRIMMED:
		return END_RESOURCES;
	}
	/* SL_END_ACTIVE, and a flow that goes on (SL_END_NONE) */
	return END_ACTIVE;
}

int sl_ipfix_add_flow(struct sl_ipfix *x, const struct sl_flow_rec *f)
{
	struct rec r;

	if (!x || !f)
		return -EINVAL;
	r = (struct rec){
	    .key = &f->key,
	    .start_ms = f->fwd.first_ns / NS_PER_MS,
	    .end_ms = f->fwd.last_ns / NS_PER_MS,
	    .fid = f->fid,
	    .fwd = {f->fwd.pkts, f->fwd.bytes},
	    .rev = {f->rev.pkts, f->rev.bytes},
	    .flags_fwd = f->fwd.tcp_flags,
	    .flags_rev = f->rev.tcp_flags,
	    .reason = end_reason(f->reason_code),
	    .icmp_type = f->icmp_type,
	    .icmp_code = f->icmp_code,
	};
	if (f->rev.pkts && f->rev.last_ns > f->fwd.last_ns)
		r.end_ms = f->rev.last_ns / NS_PER_MS;
	return add_rec(x, &r);
}

int sl_ipfix_add_slice(struct sl_ipfix *x, const struct sl_slice_rec *s)
{
	struct rec r;

	if (!x || !s)
		return -EINVAL;
	r = (struct rec){
	    .key = &s->key,
	    .start_ms = s->start_ns / NS_PER_MS,
	    .end_ms = s->end_ns / NS_PER_MS,
	    .fid = s->fid,
	    .fwd = s->delta_fwd,
	    .rev = s->delta_rev,
	    .flags_fwd = s->tcp_flags_fwd,
	    .flags_rev = s->tcp_flags_rev,
	    .reason = end_reason(s->reason_code),
	    .icmp_type = s->icmp_type,
	    .icmp_code = s->icmp_code,
	};
	return add_rec(x, &r);
}

int sl_ipfix_add_slices(struct sl_ipfix *x, const struct sl_slice_rec *s,
			uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		int rc = sl_ipfix_add_slice(x, &s[i]);

		if (rc < 0)
			return i ? (int)i : rc;
	}
	return (int)i;
}

uint32_t sl_ipfix_pending(const struct sl_ipfix *x)
{
	return x && x->len ? x->pending : 0;
}

void sl_ipfix_want_templates(struct sl_ipfix *x)
{
	if (x)
		x->want_tmpl = 1;
}

int sl_ipfix_take(struct sl_ipfix *x, uint32_t export_time_s,
		  const uint8_t **data)
{
	uint8_t *h;
	uint32_t len;

	if (!x || !data)
		return -EINVAL;
	if (!x->len) {
		if (!x->want_tmpl)
			return 0;
		msg_open(x);
	}
	h = x->msg;
	put16(h, IPFIX_VERSION);
	put16(h + 2, (uint16_t)x->len);
	put32(h + 4, export_time_s);
	put32(h + 8, x->seq);
	put32(h + 12, x->domain);
	/* RFC 7011 3.1: the count wraps modulo 2^32 */
	x->seq += x->pending;
	len = x->len;
	x->len = 0;
	x->pending = 0;
	*data = x->msg;
	return (int)len;
}

int sl_ipfix_new(struct sl_ipfix **out, const struct sl_ipfix_opts *o)
{
	struct sl_ipfix *x;
	uint32_t max = o && o->max_bytes ? o->max_bytes : SL_IPFIX_UDP_MESSAGE;
	uint16_t rec4 = tmpl_rec_len(&templates[0]);
	uint16_t rec6 = tmpl_rec_len(&templates[1]);
	uint16_t tset = IPFIX_SET_HDR_LEN + tmpl_def_len(&templates[0]) +
			tmpl_def_len(&templates[1]);

	if (!out)
		return -EINVAL;
	if (max > SL_IPFIX_MAX_MESSAGE)
		max = SL_IPFIX_MAX_MESSAGE;
	/* any record must fit into a fresh message with the templates */
	if (max < IPFIX_HDR_LEN + tset + IPFIX_SET_HDR_LEN +
		      (uint32_t)(rec6 > rec4 ? rec6 : rec4))
		return -EINVAL;
	x = calloc(1, sizeof(*x) + max);
	if (!x)
		return -ENOMEM;
	x->domain = o ? o->domain : 0;
	x->max = max;
	x->tset_len = tset;
	x->rec_len[0] = rec4;
	x->rec_len[1] = rec6;
	x->want_tmpl = 1;
	*out = x;
	return 0;
}

void sl_ipfix_free(struct sl_ipfix *x)
{
	free(x);
}
