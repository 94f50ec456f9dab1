/* collector_decode.c - NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX
 * (RFC 7011, biflows RFC 5103) messages: the exporter they come from,
 * their headers and sets, their sequence numbers.
 *
 * Sequence numbers: v5 and IPFIX count records before the message, v9 counts
 * packets. A forward gap adds to seq_lost; a message that comes late
 * (back by less than a small reorder window) takes back what its absence
 * added; going back further, or jumping forward by more than SEQ_JUMP, is
 * a reset. Some exporters (softflowd 1.1 in IPFIX) count the records of
 * the message itself too. An RFC exporter that lost a message can look
 * like one of those for a message, and the other way round, so both
 * conventions are followed and the exporter's own is the one most of its
 * messages fit alone.
 * After a message that was not decoded whole (a set dropped or held), the
 * record count the exporter used is unknown, so the next message only
 * resynchronizes: the records we lost are already counted as drops.
 */
#include <errno.h>
#include <string.h>

#include "collector.h"

#define V5_HDR_LEN    24
#define V5_REC_LEN    48
#define V5_SAMPLING_INTERVAL 0x3fff
#define V9_HDR_LEN    20
#define IPFIX_HDR_LEN 16
#define SET_HDR_LEN   4

#define SEQ_REORDER_RECORDS 256
#define SEQ_REORDER_PACKETS 16
#define SEQ_JUMP	    (1u << 24)

/* ---- sequence numbers --------------------------------------------------- */

/* Where a message's records lie in each convention: [lo, hi), and the
 * same by its flow records only (exporters differ on options records). */
struct span {
	uint32_t lo, lo_alt, hi, hi_alt;
};

static void seq_spans(struct span sp[SEQ_CONVS], uint32_t seq, uint32_t n_all,
		      uint32_t n_flow)
{
	sp[SEQ_PRE] = (struct span){seq, seq, seq + n_all, seq + n_flow};
	sp[SEQ_POST] = (struct span){seq - n_flow, seq - n_all, seq, seq};
}

static int seq_fits(const struct seq_conv *cv, const struct span *sp)
{
	return sp->lo == cv->end || sp->lo == cv->end_alt ||
	       sp->lo_alt == cv->end || sp->lo_alt == cv->end_alt;
}

/* The exporter's seq_lost is the sum of its domains' losses in their
 * own conventions: a change of mind moves it by the difference. */
static void seq_vote(struct sl_exporter_stats *st, struct seq *s, int k)
{
	int mode;

	if (s->votes[k] < UINT32_MAX)
		s->votes[k]++;
	/* a tie is RFC 7011's */
	mode = s->votes[SEQ_POST] > s->votes[SEQ_PRE] ? SEQ_POST : SEQ_PRE;
	if (mode == s->mode)
		return;
	st->seq_lost =
	    st->seq_lost - s->conv[s->mode].lost + s->conv[mode].lost;
	s->mode = (uint8_t)mode;
}

static void seq_lose(struct sl_exporter_stats *st, struct seq *s, int k,
		     uint32_t lo, uint32_t hi)
{
	struct seq_conv *cv = &s->conv[k];

	cv->gap[cv->next_gap].lo = lo;
	cv->gap[cv->next_gap].hi = hi;
	cv->next_gap = (cv->next_gap + 1) % SEQ_GAPS;
	cv->lost += hi - lo;
	if (k == s->mode)
		st->seq_lost += hi - lo;
}

static void seq_put_gap(struct seq_conv *cv, uint32_t lo, uint32_t hi)
{
	for (int i = 0; i < SEQ_GAPS; i++) {
		if (cv->gap[i].lo == cv->gap[i].hi) {
			cv->gap[i].lo = lo;
			cv->gap[i].hi = hi;
			return;
		}
	}
	/* no room to remember it: it stays counted */
}

/* A late message: what it brings back is no longer lost. */
static void seq_fill(struct sl_exporter_stats *st, struct seq *s, int k,
		     const struct span *sp)
{
	struct seq_conv *cv = &s->conv[k];

	for (int i = 0; i < SEQ_GAPS; i++) {
		uint32_t glo = cv->gap[i].lo, len = cv->gap[i].hi - glo;
		/* offsets from the gap: both are within the reorder window */
		int64_t a = (int32_t)(sp->lo - glo);
		int64_t b = a + (sp->hi - sp->lo);
		int64_t from = a > 0 ? a : 0, to = b < len ? b : len;

		if (to <= from)
			continue;
		cv->lost -= (uint64_t)(to - from);
		if (k == s->mode)
			st->seq_lost -= (uint64_t)(to - from);
		/* what is left of the gap: before the late records, after
		 * them, or both */
		cv->gap[i].hi = glo + (uint32_t)from;
		if (to == len)
			continue;
		if (from) {
			seq_put_gap(cv, glo + (uint32_t)to, glo + len);
		} else {
			cv->gap[i].lo = glo + (uint32_t)to;
			cv->gap[i].hi = glo + len;
		}
	}
}

/* unit_pkts: v9 counts export packets, the others records. Both
 * conventions are followed; the messages only one of them fits show
 * which the exporter uses, and seq_lost is that one's count. A message
 * that comes late fills the gap its absence left. */
static void seq_track(struct ctx *c, struct seq *s, uint32_t seq, int unit_pkts)
{
	struct sl_exporter_stats *st = &c->ex->st;
	uint32_t n_all = unit_pkts ? 1 : c->n_all;
	uint32_t n_flow = unit_pkts ? 1 : c->n_flow;
	uint32_t window = unit_pkts ? SEQ_REORDER_PACKETS : SEQ_REORDER_RECORDS;
	struct span sp[SEQ_CONVS];
	const struct seq_conv *cv;
	int fit[SEQ_CONVS], k;

	seq_spans(sp, seq, n_all, n_flow);
	if (!s->valid)
		goto out_set;
	for (k = 0; k < SEQ_CONVS; k++)
		fit[k] = seq_fits(&s->conv[k], &sp[k]);
	if (fit[SEQ_PRE] != fit[SEQ_POST])
		seq_vote(st, s, fit[SEQ_PRE] ? SEQ_PRE : SEQ_POST);
	cv = &s->conv[s->mode];
	if (!fit[s->mode] && sp[s->mode].lo - cv->end >= SEQ_JUMP) {
		if (cv->end - sp[s->mode].lo <= window) {
			/* late or repeated: the newest message still sets
			 * what comes next */
			for (k = 0; k < SEQ_CONVS; k++)
				seq_fill(st, s, k, &sp[k]);
			return;
		}
		st->seq_resets++;
		for (k = 0; k < SEQ_CONVS; k++)
			memset(s->conv[k].gap, 0, sizeof(s->conv[k].gap));
		goto out_set;
	}
	for (k = 0; k < SEQ_CONVS; k++) {
		uint32_t end = s->conv[k].end;

		if (!fit[k] && sp[k].lo - end < SEQ_JUMP)
			seq_lose(st, s, k, end, sp[k].lo);
	}
out_set:
	for (k = 0; k < SEQ_CONVS; k++) {
		s->conv[k].end = sp[k].hi;
		s->conv[k].end_alt = sp[k].hi_alt;
	}
	s->valid = unit_pkts || !c->partial;
}

/* The message's domain in c->dom, pinned while the message is decoded:
 * 1, or 0 when no memory could be freed for a new one (the message is
 * dropped, counted), or -ENOMEM. */
static int domain_of(struct ctx *c, uint32_t id)
{
	int rc = collector_dom_get(c, id);

	if (rc == -ENOSPC) {
		drop(c, SL_COLLECTOR_DROP_MEMORY);
		return 0;
	}
	if (rc < 0)
		return rc;
	c->m->pin_dom = c->dom;
	return 1;
}

/* ---- NetFlow v5 --------------------------------------------------------- */

static void v5_record(struct ctx *c, const uint8_t *p, uint64_t hdr_ns,
		      uint32_t uptime, uint32_t domain, uint32_t rate)
{
	struct sl_collector_rec *r = &c->m->recs[c->m->n_recs++];
	uint32_t first = rd32(p + 24), last = rd32(p + 28);

	memset(r, 0, sizeof(*r));
	memcpy(r->key.src, p, 4);
	memcpy(r->key.dst, p + 4, 4);
	r->key.ip_version = 4;
	r->key.sport = rd16(p + 32);
	r->key.dport = rd16(p + 34);
	r->key.proto = p[38];
	r->tcp_flags = p[37];
	r->fwd.pkts = rd32(p + 16);
	r->fwd.bytes = r->fwd.ip_bytes = rd32(p + 20);
	r->first_ns = uptime_at(hdr_ns, uptime, first);
	r->last_ns = uptime_at(hdr_ns, uptime, last);
	if (is_icmp(r->key.proto))
		icmp_from(r, r->key.dport);
	r->exporter = c->exp;
	r->domain = domain;
	r->version = 5;
	collector_sampled(c, r, rate);
}

/* A count above what the datagram holds, or a datagram longer than the
 * count says, is SL_COLLECTOR_DROP_LENGTH; the whole records present are taken.
 */
static int decode_v5(struct ctx *c, const uint8_t *p, uint32_t len)
{
	uint32_t count, fit, domain, uptime, rate;
	uint64_t hdr_ns;
	int d;

	if (len < V5_HDR_LEN) {
		drop(c, SL_COLLECTOR_DROP_SHORT);
		return 0;
	}
	count = rd16(p + 2);
	if (!count) {
		drop(c, SL_COLLECTOR_DROP_EMPTY);
		return 0;
	}
	domain = (uint32_t)p[20] << 8 | p[21];
	d = domain_of(c, domain);
	if (d <= 0)
		return d;
	fit = (len - V5_HDR_LEN) / V5_REC_LEN;
	if (count != fit || (len - V5_HDR_LEN) % V5_REC_LEN) {
		drop(c, SL_COLLECTOR_DROP_LENGTH);
		if (count > fit)
			count = fit;
	}
	if (recs_reserve(c->m, count))
		return -ENOMEM;
	uptime = rd32(p + 4);
	hdr_ns = (uint64_t)rd32(p + 8) * NS_PER_S + rd32(p + 12);
	/* sampling mode in the 2 top bits, the interval in the 14 others:
	 * some routers leave the mode 0, so the interval alone counts */
	rate = rd16(p + 22) & V5_SAMPLING_INTERVAL;
	for (uint32_t i = 0; i < count; i++)
		v5_record(c, p + V5_HDR_LEN + i * V5_REC_LEN, hdr_ns, uptime,
			  domain, rate);
	c->ex->st.messages++;
	c->ex->st.records += count;
	c->n_all = c->n_flow = count;
	seq_track(c, &c->dom->seq, rd32(p + 16), 0);
	return 0;
}

/* ---- NetFlow v9 and IPFIX sets ------------------------------------------ */

/* Walks the sets of a message body. A set header that is short or runs
 * past the end stops the walk: nothing after it can be found. */
static int decode_sets(struct ctx *c, const uint8_t *p, uint32_t len)
{
	int tset = c->version == 9 ? V9_TEMPLATE_SET : IPFIX_TEMPLATE_SET;
	int oset = c->version == 9 ? V9_OPTIONS_SET : IPFIX_OPTIONS_SET;
	uint32_t off = 0;
	int rc = 0;

	while (len - off >= SET_HDR_LEN && !rc) {
		uint16_t id = rd16(p + off), slen = rd16(p + off + 2);
		const uint8_t *body = p + off + SET_HDR_LEN;

		if (slen < SET_HDR_LEN || slen > len - off) {
			drop(c, SL_COLLECTOR_DROP_SET);
			return 0;
		}
		if (id == tset)
			rc = collector_template_set(c, body, slen - SET_HDR_LEN,
						    0);
		else if (id == oset)
			rc = collector_template_set(c, body, slen - SET_HDR_LEN,
						    1);
		else if (id >= MIN_DATA_SET)
			rc =
			    collector_data_set(c, id, body, slen - SET_HDR_LEN);
		else
			drop(c,
			     SL_COLLECTOR_DROP_SET); /* reserved id: skipped */
		off += slen;
	}
	/* v9 datagrams may be padded; IPFIX sets fill their message */
	if (!rc && off < len && c->version == 10)
		drop(c, SL_COLLECTOR_DROP_SET);
	return rc;
}

static int decode_v9(struct ctx *c, const uint8_t *p, uint32_t len)
{
	int d, rc;

	if (len < V9_HDR_LEN) {
		drop(c, SL_COLLECTOR_DROP_SHORT);
		return 0;
	}
	/* the count is not checked: exporters disagree on what it counts */
	if (len - V9_HDR_LEN < SET_HDR_LEN) {
		drop(c, SL_COLLECTOR_DROP_EMPTY);
		return 0;
	}
	d = domain_of(c, rd32(p + 16));
	if (d <= 0)
		return d;
	c->uptime = rd32(p + 4);
	c->export_s = rd32(p + 8);
	c->ex->st.messages++;
	rc = decode_sets(c, p + V9_HDR_LEN, len - V9_HDR_LEN);
	seq_track(c, &c->dom->seq, rd32(p + 12), 1);
	return rc;
}

static int decode_ipfix(struct ctx *c, const uint8_t *p, uint32_t len)
{
	uint32_t hlen;
	int d, rc;

	if (len < IPFIX_HDR_LEN) {
		drop(c, SL_COLLECTOR_DROP_SHORT);
		return 0;
	}
	hlen = rd16(p + 2);
	if (hlen < IPFIX_HDR_LEN) {
		drop(c, SL_COLLECTOR_DROP_LENGTH);
		return 0;
	}
	/* a datagram cut short, or bytes after the message: what the
	 * header covers and the datagram holds is read */
	if (hlen != len) {
		drop(c, SL_COLLECTOR_DROP_LENGTH);
		if (hlen < len)
			len = hlen;
	}
	if (len == IPFIX_HDR_LEN) {
		drop(c, SL_COLLECTOR_DROP_EMPTY);
		return 0;
	}
	d = domain_of(c, rd32(p + 12));
	if (d <= 0)
		return d;
	c->export_s = rd32(p + 4);
	c->ex->st.messages++;
	rc = decode_sets(c, p + IPFIX_HDR_LEN, len - IPFIX_HDR_LEN);
	seq_track(c, &c->dom->seq, rd32(p + 8), 0);
	return rc;
}

/* ---- API ---------------------------------------------------------------- */

static int known_version(uint16_t v)
{
	return v == 5 || v == 9 || v == 10;
}

/* The exporter's index, 0 when the message goes to the "no exporter"
 * slot (its reason already counted), or a negative error. */
static int exporter_of(struct sl_collector_msg *m, const uint8_t *msg,
		       uint32_t len, const struct ident *id)
{
	uint32_t i = collector_exp_find(m, id);
	int rc;

	if (i)
		return (int)i;
	if (len < 2) {
		m->exp[0]->st.dropped[SL_COLLECTOR_DROP_SHORT]++;
		return 0;
	}
	if (!known_version(rd16(msg))) {
		m->exp[0]->st.dropped[SL_COLLECTOR_DROP_VERSION]++;
		return 0;
	}
	rc = collector_exp_add(m, id);
	/* none could make room: all used in this batch */
	if (rc == -ENOSPC) {
		m->exp[0]->st.dropped[SL_COLLECTOR_DROP_EXPORTERS]++;
		return 0;
	}
	return rc;
}

int sl_collector_msg_decode(struct sl_collector_msg *m, const uint8_t *msg,
			    uint32_t len, const uint8_t *addr, int family,
			    uint16_t port, uint64_t now_ns)
{
	return collector_msg_decode(m, msg, len, addr, family, port, now_ns, 0);
}

int collector_msg_decode(struct sl_collector_msg *m, const uint8_t *msg,
			 uint32_t len, const uint8_t *addr, int family,
			 uint16_t port, uint64_t now_ns, int stream)
{
	struct ident id;
	struct ctx c;
	int rc, e;

	if (!m)
		return -EINVAL;
	m->n_recs = 0;
	if ((!msg && len) || !addr || (family != 4 && family != 6))
		return -EINVAL;
	collector_ident_make(&id, addr, family, port);
	/* without batches, the records of one decode name its exporter */
	if (!m->batched)
		m->batch++;
	e = exporter_of(m, msg, len, &id);
	if (e <= 0)
		return e;
	if (m->hold_live)
		collector_hold_expire(m, now_ns);
	memset(&c, 0, sizeof(c));
	c.m = m;
	c.exp = (uint32_t)e;
	c.ex = m->exp[e];
	c.now = now_ns;
	c.stream = stream != 0;
	/* pinned (this batch) before anything may need room */
	collector_touch_exp(m, c.ex);
	if (len < 2) {
		drop(&c, SL_COLLECTOR_DROP_SHORT);
		return 0;
	}
	c.version = (uint8_t)rd16(msg);
	switch (rd16(msg)) {
	case 5:
		rc = decode_v5(&c, msg, len);
		break;
	case 9:
		rc = decode_v9(&c, msg, len);
		break;
	case 10:
		rc = decode_ipfix(&c, msg, len);
		break;
	default:
		drop(&c, SL_COLLECTOR_DROP_VERSION);
		rc = 0;
	}
	/* parents after their children: see collector_memory.c */
	m->pin_dom = NULL;
	if (c.dom)
		collector_touch_dom(m, c.dom);
	collector_touch_exp(m, c.ex);
	return rc < 0 ? rc : (int)m->n_recs;
}
