/* ipfix.c - IPFIX (RFC 7011) messages of biflow records (RFC 5103).
 *
 * One message is built at a time in a buffer sized at creation, so adding
 * a record never allocates. Two templates, one per IP version, and with
 * flow features two more, built at creation from the exporter's features;
 * their data sets interleave in the order records arrive.
 *
 * Value choices:
 * - counters are delta counts: a flow record carries its totals (the delta
 *   since the flow began), a slice record its interval's deltas;
 * - octetDeltaCount counts the IP packets' bytes (RFC 7012), as their
 *   headers give them; layer2OctetDeltaCount the frames' (sluice's bytes);
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
#define TEMPLATE_V4_FEAT   258 /* the base fields, then the features */
#define TEMPLATE_V6_FEAT   259
#define ENTERPRISE_BIT	   0x8000
#define PEN_REVERSE	   29305 /* RFC 5103 reverse information elements */
#define NS_PER_MS	   1000000ULL
#define VARLEN		   65535 /* RFC 7011 7: a length prefix per value */

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
	/* per direction (RFC 5103: the reverse under PEN_REVERSE) */
	IE_SYN_COUNT = 218, /* tcpSynTotalCount */
	IE_FIN_COUNT = 219,
	IE_RST_COUNT = 220,
	IE_PSH_COUNT = 221,
	IE_ACK_COUNT = 222,
	IE_URG_COUNT = 223,
	IE_APP_NAME = 96,      /* applicationName */
	IE_APP_CATEGORY = 372, /* applicationCategoryName */
	IE_L2_OCTETS = 352,    /* layer2OctetDeltaCount: frames' bytes */
};

/* sluice's elements after the statistics' 1..96 (SL_IE_ID) */
enum sl_ie_id {
	SL_IE_SPLT_PACKETS = 97,
	SL_IE_SPLT_DIRECTION = 98,
	SL_IE_SPLT_PS = 99,
	SL_IE_SPLT_PIAT_NS = 100,
	SL_IE_SERVER_NAME = 101,
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
	uint16_t id; /* ENTERPRISE_BIT set: pen (0: PEN_REVERSE) follows */
	uint16_t len;
	uint32_t pen;
};

/* sluice's own elements (SL_IPFIX_PEN): stream s (0 src2dst, 1 dst2src,
 * 2 bidirectional), statistic k in the order of JSON lines (0 min_ps,
 * 1 mean_ps, 2 stddev_ps, 3 max_ps, 4..7 min, mean, stddev, max piat_ms,
 * 8..15 fin, syn, rst, psh, ack, urg, ece, cwr packets) is element
 * s * 32 + k + 1 (those sent: see SL_IE_STATS). Sizes: unsigned32
 * (min_ps, max_ps, the flag counts), float64 (the others). README.md
 * lists them. */
#define SL_IE_ID(s, k) ((uint16_t)((s) * 32 + (k) + 1) | ENTERPRISE_BIT)
#define SL_IE(s, k, len) {SL_IE_ID(s, k), len, SL_IPFIX_PEN}
#define SL_IE_MOMENTS(s)                                                       \
	SL_IE(s, 0, 4), SL_IE(s, 1, 8), SL_IE(s, 2, 8), SL_IE(s, 3, 4),        \
	    SL_IE(s, 4, 8), SL_IE(s, 5, 8), SL_IE(s, 6, 8), SL_IE(s, 7, 8)
/* a direction: the moments, the standard flag counts, ECE and CWR */
#define SL_IE_DIR(s, R)                                                        \
	SL_IE_MOMENTS(s), {R(IE_SYN_COUNT), 8, 0}, {R(IE_FIN_COUNT), 8, 0},    \
	    {R(IE_RST_COUNT), 8, 0}, {R(IE_PSH_COUNT), 8, 0},                  \
	    {R(IE_ACK_COUNT), 8, 0}, {R(IE_URG_COUNT), 8, 0}, SL_IE(s, 14, 4), \
	    SL_IE(s, 15, 4)
#define FWD(id) (id)
/* Both directions: the moments only. A packet goes one way, so the
 * bidirectional flag counts are the sums of the two directions'; without
 * them a template has 59 fields, within what Wireshark takes by default
 * (60, its cflow.max_template_fields). */
#define SL_IE_STATS SL_IE_DIR(0, FWD), SL_IE_DIR(1, REV), SL_IE_MOMENTS(2)

/* nfdump 1.7.1 files a reverse element it has no reverse slot for under
 * the forward element: the reverse tcpControlBits comes first so that
 * the forward one, written after it, stays. The ICMP type/code element is
 * sent for every protocol, 0 outside ICMP, so one template serves all. */
#define BASE_IES(SRC, DST, ICMP, ALEN)                                         \
	{IE_START_MS, 8, 0}, {IE_END_MS, 8, 0}, {SRC, ALEN, 0},                \
	    {DST, ALEN, 0}, {ICMP, 2, 0}, {IE_SPORT, 2, 0}, {IE_DPORT, 2, 0},  \
	    {IE_PROTO, 1, 0}, {REV(IE_TCP_FLAGS), 2, 0},                       \
	    {IE_TCP_FLAGS, 2, 0}, {IE_VLAN, 2, 0}, {IE_END_REASON, 1, 0},      \
	    {IE_FLOW_ID, 8, 0}, {IE_OCTETS, 8, 0}, {IE_PACKETS, 8, 0},         \
	    {REV(IE_OCTETS), 8, 0}, {REV(IE_PACKETS), 8, 0},                   \
	    {IE_L2_OCTETS, 8, 0}, {REV(IE_L2_OCTETS), 8, 0}

static const struct ie tmpl_v4[] = {BASE_IES(IE_SRC4, IE_DST4, IE_ICMP4, 4)};
static const struct ie tmpl_v6[] = {BASE_IES(IE_SRC6, IE_DST6, IE_ICMP6, 16)};
#define NBASE (sizeof(tmpl_v4) / sizeof(tmpl_v4[0]))

/* The features templates' parts, in this order (sl_ipfix_new_features).
 * The splt arrays have the exporter's length (see feat_ies()); the label
 * strings are variable-length, each below 255 bytes (one-byte prefix). */
static const struct ie stats_ies[] = {SL_IE_STATS};
#define NSTATS (sizeof(stats_ies) / sizeof(stats_ies[0]))
#define NSPLT  4
static const struct ie label_ies[] = {
    {IE_APP_NAME, VARLEN, 0},
    {IE_APP_CATEGORY, VARLEN, 0},
    {SL_IE_SERVER_NAME | ENTERPRISE_BIT, VARLEN, SL_IPFIX_PEN},
};
#define NLABEL	     (sizeof(label_ies) / sizeof(label_ies[0]))
#define MAX_FEAT_IES (NBASE + NSTATS + NSPLT + NLABEL)

struct tmpl {
	uint16_t id;
	uint16_t n;
	uint16_t rec_len;   /* fixed fields and the prefixes of variable ones */
	uint16_t first_var; /* first variable-length field; n: none */
	const struct ie *ie;
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
	uint8_t feat;	 /* the features template, with these: */
	uint16_t splt_n; /* the exporter's splt length */
	const struct sl_flow_stats *stats;
	const struct sl_splt *splt;
	const struct sl_app_label *app; /* NULL: empty strings */
};

struct sl_ipfix {
	uint32_t domain;
	uint32_t max;	  /* message size bound */
	uint32_t seq;	  /* data records in messages taken so far */
	uint32_t pending; /* data records in the open message */
	uint32_t len;	  /* bytes of the open message; 0: none open */
	uint32_t set_off; /* open data set's header; 0: none */
	uint16_t set_id;
	uint16_t tset_len;   /* template set bytes */
	uint16_t splt_n;     /* splt arrays' length */
	uint32_t features;   /* enum sl_feature in templates 258/259 */
	uint8_t ntmpl;	     /* templates offered: 2, or 4 with features */
	uint8_t want_tmpl;   /* the next message opens with the templates */
	struct tmpl tmpl[4]; /* indexed by IPv6 + 2 * features */
	struct ie feat_ie[2][MAX_FEAT_IES];
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

/* The longest value of a variable-length element. */
static uint16_t var_max(uint16_t id)
{
	switch (id) {
	case IE_APP_NAME:
		return SL_APP_NAME_MAX - 1;
	case IE_APP_CATEGORY:
		return SL_APP_CATEGORY_MAX - 1;
	}
	return SL_APP_SERVER_MAX - 1;
}

static void tmpl_init(struct tmpl *t, uint16_t id, const struct ie *ie,
		      uint16_t n)
{
	*t = (struct tmpl){.id = id, .n = n, .first_var = n, .ie = ie};
	for (uint16_t i = 0; i < n; i++) {
		if (ie[i].len != VARLEN) {
			t->rec_len += ie[i].len;
			continue;
		}
		t->rec_len++;
		if (t->first_var == n)
			t->first_var = i;
	}
}

/* The largest record of a template. */
static uint32_t tmpl_max_len(const struct tmpl *t)
{
	uint32_t n = t->rec_len;

	for (uint16_t i = t->first_var; i < t->n; i++)
		if (t->ie[i].len == VARLEN)
			n += var_max(t->ie[i].id);
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
			put32(p, t->ie[i].pen ? t->ie[i].pen : PEN_REVERSE);
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
		return r->fwd.ip_bytes;
	case IE_L2_OCTETS:
		return r->fwd.bytes;
	case IE_PACKETS:
		return r->fwd.pkts;
	case REV(IE_OCTETS):
		return r->rev.ip_bytes;
	case REV(IE_L2_OCTETS):
		return r->rev.bytes;
	case REV(IE_PACKETS):
		return r->rev.pkts;
	}
	return 0;
}

/* Bit of enum sl_tcp_flag order (FIN SYN RST PSH ACK URG) of a standard
 * tcp*TotalCount element. */
static int flag_bit(uint16_t id)
{
	static const uint8_t bit[] = {1, 0, 2, 3, 4, 5}; /* from 218 */

	return bit[(id & ~ENTERPRISE_BIT) - IE_SYN_COUNT];
}

static int is_flag_count(uint16_t id)
{
	id &= (uint16_t)~ENTERPRISE_BIT;
	return id >= IE_SYN_COUNT && id <= IE_URG_COUNT;
}

static uint64_t double_bits(double v)
{
	uint64_t u;

	memcpy(&u, &v, sizeof(u));
	return u;
}

/* A statistic of sluice's (SL_IE_ID(s, k)) as its bytes. */
static uint64_t stat_value(uint16_t id, const struct rec *r)
{
	unsigned n = (unsigned)(id & ~ENTERPRISE_BIT) - 1, k = n % 32;
	struct sl_stream_stats stream, *s = &stream;
	struct sl_moments m;

	sl_flow_stream_stats(r->stats, (int)(n / 32), s);
	if (k >= 8)
		return s->flag_packets[k - 8];
	switch (k) {
	case 0:
		return s->min_ps;
	case 3:
		return s->max_ps;
	case 4:
		return double_bits((double)s->min_piat_ns / 1e6);
	case 7:
		return double_bits((double)s->max_piat_ns / 1e6);
	}
	sl_stream_moments(s, &m);
	return double_bits(k == 1   ? m.mean_ps
			   : k == 2 ? m.stddev_ps
			   : k == 5 ? m.mean_piat_ms
				    : m.stddev_piat_ms);
}

/* Entries of the splt arrays that hold packets: a record made with
 * another length than the exporter's sends what fits. */
static uint16_t splt_used(const struct rec *r)
{
	uint16_t n = r->splt->n < r->splt->len ? r->splt->n : r->splt->len;

	return n < r->splt_n ? n : r->splt_n;
}

/* An splt array of e->len bytes: the packets, then 255 (direction) or 0
 * where the flow had fewer. */
static void put_splt(uint8_t *p, const struct ie *e, const struct rec *r)
{
	uint16_t id = e->id & ~ENTERPRISE_BIT, w = id == SL_IE_SPLT_PS ? 2 : 8;
	uint16_t n = splt_used(r);

	switch (id) {
	case SL_IE_SPLT_PACKETS:
		put_uint(p, e->len, n);
		return;
	case SL_IE_SPLT_DIRECTION:
		memset(p, 255, e->len);
		for (uint16_t i = 0; i < n; i++)
			p[i] = r->splt->reverse >> i & 1;
		return;
	}
	memset(p, 0, e->len);
	for (uint16_t i = 0; i < n; i++)
		put_uint(p + i * w, w,
			 id == SL_IE_SPLT_PS ? r->splt->ps[i]
					     : r->splt->piat_ns[i]);
}

/* A label string and its length; empty until nDPI named the flow. */
static uint8_t label(uint16_t id, const struct rec *r, const char **s)
{
	const struct sl_app_label *a = r->app;

	*s = "";
	if (!a || a->state != SL_DPI_DONE)
		return 0;
	*s = id == IE_APP_NAME	     ? a->application_name
	     : id == IE_APP_CATEGORY ? a->category
				     : a->server_name;
	/* bounded: a label whose NUL went missing cannot overrun */
	return (uint8_t)strnlen(*s, var_max(id));
}

/* The record's length in template t. */
static uint32_t rec_len(const struct tmpl *t, const struct rec *r)
{
	uint32_t n = t->rec_len;
	const char *s;

	for (uint16_t i = t->first_var; i < t->n; i++)
		if (t->ie[i].len == VARLEN)
			n += label(t->ie[i].id, r, &s);
	return n;
}

static uint8_t *put_value(uint8_t *p, const struct ie *e, const struct rec *r)
{
	const char *s;

	if (e->len == VARLEN) {
		*p = label(e->id, r, &s);
		memcpy(p + 1, s, *p);
		return p + 1 + *p;
	}
	if (e->pen == SL_IPFIX_PEN &&
	    (e->id & ~ENTERPRISE_BIT) >= SL_IE_SPLT_PACKETS) {
		put_splt(p, e, r);
	} else if (e->pen == SL_IPFIX_PEN) {
		put_uint(p, e->len, stat_value(e->id, r));
	} else if (is_flag_count(e->id)) {
		int d = e->id & ENTERPRISE_BIT ? SL_DIR_REV : SL_DIR_FWD;

		put_uint(p, e->len,
			 r->stats->s[d].flag_packets[flag_bit(e->id)]);
	} else if (e->id == IE_SRC4 || e->id == IE_SRC6) {
		memcpy(p, r->key->src, e->len);
	} else if (e->id == IE_DST4 || e->id == IE_DST6) {
		memcpy(p, r->key->dst, e->len);
	} else {
		put_uint(p, e->len, ie_value(e->id, r));
	}
	return p + e->len;
}

static void put_record(uint8_t *p, const struct tmpl *t, const struct rec *r)
{
	for (uint16_t i = 0; i < t->n; i++)
		p = put_value(p, &t->ie[i], r);
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
	for (int i = 0; i < x->ntmpl; i++)
		x->len += put_template(x->msg + x->len, &x->tmpl[i]);
}

static int add_rec(struct sl_ipfix *x, const struct rec *r)
{
	int new_set;
	const struct tmpl *t;
	uint32_t len, need;

	/* id and string keys have no addresses to send */
	if (r->key->ip_version != 4 && r->key->ip_version != 6)
		return -EAFNOSUPPORT;
	t = &x->tmpl[(r->key->ip_version == 6) + (r->feat ? 2 : 0)];
	if (!x->len)
		msg_open(x);
	new_set = x->set_id != t->id;
	len = rec_len(t, r);
	need = len + (new_set ? IPFIX_SET_HDR_LEN : 0);
	if (x->len + need > x->max)
		return -ENOBUFS;
	if (new_set) {
		x->set_off = x->len;
		x->set_id = t->id;
		put16(x->msg + x->set_off, t->id);
		x->len += IPFIX_SET_HDR_LEN;
	}
	put_record(x->msg + x->len, t, r);
	x->len += len;
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
	case SL_END_REUSED:
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
	    .fwd = {f->fwd.pkts, f->fwd.bytes, f->fwd.ip_bytes},
	    .rev = {f->rev.pkts, f->rev.bytes, f->rev.ip_bytes},
	    .flags_fwd = f->fwd.tcp_flags,
	    .flags_rev = f->rev.tcp_flags,
	    .reason = end_reason(f->reason_code),
	    .icmp_type = f->icmp_type,
	    .icmp_code = f->icmp_code,
	};
	/* a record without all the exporter's features: the base template */
	if (x->features &&
	    (f->stats || !(x->features & SL_FEATURE_STATS)) &&
	    (f->splt || !(x->features & SL_FEATURE_SPLT)) &&
	    (f->app || !(x->features & SL_FEATURE_DPI))) {
		r.feat = 1;
		r.splt_n = x->splt_n;
		r.stats = f->stats;
		r.splt = f->splt;
		r.app = f->app;
	}
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
	return sl_ipfix_new_features(out, o, 0);
}

/* Appends n elements to a features template. */
static uint16_t add_ies(struct ie *to, uint16_t at, const struct ie *ie,
			size_t n)
{
	memcpy(to + at, ie, n * sizeof(*ie));
	return (uint16_t)(at + n);
}

/* Templates 258/259: the base fields, then each feature's part. */
static uint16_t feat_ies(struct ie *to, const struct ie *base,
			 uint32_t features, uint16_t splt_n)
{
	const struct ie splt[NSPLT] = {
	    {SL_IE_SPLT_PACKETS | ENTERPRISE_BIT, 1, SL_IPFIX_PEN},
	    {SL_IE_SPLT_DIRECTION | ENTERPRISE_BIT, splt_n, SL_IPFIX_PEN},
	    {SL_IE_SPLT_PS | ENTERPRISE_BIT, (uint16_t)(splt_n * 2),
	     SL_IPFIX_PEN},
	    {SL_IE_SPLT_PIAT_NS | ENTERPRISE_BIT, (uint16_t)(splt_n * 8),
	     SL_IPFIX_PEN},
	};
	uint16_t n = add_ies(to, 0, base, NBASE);

	if (features & SL_FEATURE_STATS)
		n = add_ies(to, n, stats_ies, NSTATS);
	if (features & SL_FEATURE_SPLT)
		n = add_ies(to, n, splt, NSPLT);
	if (features & SL_FEATURE_DPI)
		n = add_ies(to, n, label_ies, NLABEL);
	return n;
}

static void tmpls_init(struct sl_ipfix *x)
{
	tmpl_init(&x->tmpl[0], TEMPLATE_V4, tmpl_v4, NBASE);
	tmpl_init(&x->tmpl[1], TEMPLATE_V6, tmpl_v6, NBASE);
	if (!x->features)
		return;
	tmpl_init(&x->tmpl[2], TEMPLATE_V4_FEAT, x->feat_ie[0],
		  feat_ies(x->feat_ie[0], tmpl_v4, x->features, x->splt_n));
	tmpl_init(&x->tmpl[3], TEMPLATE_V6_FEAT, x->feat_ie[1],
		  feat_ies(x->feat_ie[1], tmpl_v6, x->features, x->splt_n));
}

/* Without features, any record fits into a fresh message with the
 * templates. With the features templates a message may hold the
 * template set alone (add says -ENOBUFS, the caller takes it, the record
 * goes into the next one): the set and the largest record must each fit. */
static int check_max(const struct sl_ipfix *x, uint32_t max)
{
	uint32_t tset = IPFIX_SET_HDR_LEN, rec = 0;

	for (int i = 0; i < x->ntmpl; i++) {
		tset += tmpl_def_len(&x->tmpl[i]);
		if (tmpl_max_len(&x->tmpl[i]) > rec)
			rec = tmpl_max_len(&x->tmpl[i]);
	}
	if (max < IPFIX_HDR_LEN + tset ||
	    max < IPFIX_HDR_LEN + IPFIX_SET_HDR_LEN + rec ||
	    (x->ntmpl == 2 &&
	     max < IPFIX_HDR_LEN + tset + IPFIX_SET_HDR_LEN + rec))
		return -EINVAL;
	return (int)tset;
}

int sl_ipfix_new_features(struct sl_ipfix **out, const struct sl_ipfix_opts *o,
			  uint32_t features)
{
	struct sl_ipfix *x;
	uint32_t max = o && o->max_bytes ? o->max_bytes : SL_IPFIX_UDP_MESSAGE;
	uint32_t splt_n =
	    o && o->splt_packets ? o->splt_packets : SL_SPLT_DEFAULT;
	int tset;

	if (!out || splt_n > SL_SPLT_MAX ||
	    (features &
	     ~(uint32_t)(SL_FEATURE_STATS | SL_FEATURE_SPLT | SL_FEATURE_DPI)))
		return -EINVAL;
	if (max > SL_IPFIX_MAX_MESSAGE)
		max = SL_IPFIX_MAX_MESSAGE;
	x = calloc(1, sizeof(*x) + max);
	if (!x)
		return -ENOMEM;
	x->features = features;
	x->splt_n = (uint16_t)splt_n;
	x->ntmpl = features ? 4 : 2;
	tmpls_init(x);
	tset = check_max(x, max);
	if (tset < 0) {
		free(x);
		return tset;
	}
	x->domain = o ? o->domain : 0;
	x->max = max;
	x->tset_len = (uint16_t)tset;
	x->want_tmpl = 1;
	*out = x;
	return 0;
}

void sl_ipfix_free(struct sl_ipfix *x)
{
	free(x);
}
