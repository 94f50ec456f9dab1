/* collector_data.c - NetFlow v9 and IPFIX data records, read by their
 * template into flat flow records (struct sl_collector_rec): the values,
 * the times in whichever form the exporter gave them, the addresses.
 *
 * Records without an IPv4 or IPv6 address (options data, or templates that
 * describe no flow) are not flows: they are counted in the sequence, not in
 * the output.
 */
#include <errno.h>
#include <string.h>

#include "collector.h"

#define NTP_UNIX_OFFSET 2208988800ULL /* 1900-01-01 to 1970-01-01, s */

/* One record's values while it is read. */
struct vals {
	uint64_t have;
	uint64_t v[F_SRC4];
	const uint8_t *addr[4];
};

/* Unsigned big-endian values of 1..8 bytes (reduced-size encoding). */
static inline uint64_t rdn(const uint8_t *p, uint32_t len)
{
	uint64_t v = 0;

	switch (len) {
	case 1:
		return p[0];
	case 2:
		return rd16(p);
	case 4:
		return rd32(p);
	case 8:
		return (uint64_t)rd32(p) << 32 | rd32(p + 4);
	}
	while (len--)
		v = v << 8 | *p++;
	return v;
}

static uint64_t ntp_ns(uint64_t v)
{
	uint64_t s = v >> 32, frac = v & 0xffffffffULL;

	/* NTP era 1 begins in 2036 */
	s = s >= NTP_UNIX_OFFSET ? s - NTP_UNIX_OFFSET
				 : s + (1ULL << 32) - NTP_UNIX_OFFSET;
	return s * NS_PER_S + (frac * NS_PER_S >> 32);
}

/* The time of a sysUpTime value. v9: against the header's uptime. IPFIX:
 * after systemInitTimeMilliseconds from the record or an options record;
 * without it the flow is taken to end at the export time. */
static uint64_t uptime_ns(const struct ctx *c, const struct vals *x,
			  uint64_t up)
{
	uint64_t export_ns = (uint64_t)c->export_s * NS_PER_S;
	const struct domain *d = c->dom;
	uint64_t end_up;

	if (c->version == 9)
		return uptime_at(export_ns, c->uptime, (uint32_t)up);
	if (x->have & BIT(F_INIT_MS))
		return (x->v[F_INIT_MS] + up) * NS_PER_MS;
	if (d->have_init)
		return (d->init_ms + up) * NS_PER_MS;
	end_up = x->v[x->have & BIT(F_END_UP) ? F_END_UP : F_START_UP];
	return export_ns - (end_up - up) * NS_PER_MS;
}

/* The start (end = 0) or end time in ns, the finest field first; 0 if
 * the record has none. */
static uint64_t rec_time(const struct ctx *c, const struct vals *x, int end)
{
	uint64_t h = x->have;

	if (h & BIT(F_START_NS + end))
		return ntp_ns(x->v[F_START_NS + end]);
	if (h & BIT(F_START_US + end))
		return ntp_ns(x->v[F_START_US + end]);
	if (h & BIT(F_START_MS + end))
		return x->v[F_START_MS + end] * NS_PER_MS;
	if (h & BIT(F_START_S + end))
		return x->v[F_START_S + end] * NS_PER_S;
	if (h & BIT(F_START_UP + end))
		return uptime_ns(c, x, x->v[F_START_UP + end]);
	if (h & BIT(F_START_DELTA + end))
		return (uint64_t)c->export_s * NS_PER_S -
		       x->v[F_START_DELTA + end] * NS_PER_US;
	return 0;
}

/* The first kind of a, b, c, d the record has, or F_COUNT. */
static int pick(uint64_t have, int a, int b, int k, int d)
{
	if (have & BIT(a))
		return a;
	if (have & BIT(b))
		return b;
	if (have & BIT(k))
		return k;
	if (have & BIT(d))
		return d;
	return F_COUNT;
}

#define FWD_DELTAS                                                             \
	(BIT(F_BYTES) | BIT(F_PKTS) | BIT(F_INIT_BYTES) | BIT(F_INIT_PKTS))
#define REV_DELTAS                                                             \
	(BIT(F_RBYTES) | BIT(F_RPKTS) | BIT(F_RESP_BYTES) | BIT(F_RESP_PKTS))

/* A side counted by running totals alone: a later report replaces them. */
static int totals_only(uint64_t have, uint64_t totals, uint64_t deltas)
{
	return (have & totals) && !(have & deltas);
}

static uint64_t val_or0(const struct vals *x, int k)
{
	return k < F_SRC4 ? x->v[k] : 0;
}

/* The 1-in-N rate a record's own fields give, 0 if none: a packet
 * interval of every interval + space (RFC 5477), rounded, or N itself. */
static uint32_t rate_of(const struct vals *x)
{
	uint64_t h = x->have, n = 0;

	if (h & BIT(F_PKT_INTERVAL) && x->v[F_PKT_INTERVAL]) {
		uint64_t i = x->v[F_PKT_INTERVAL] & UINT32_MAX;
		uint64_t sp = h & BIT(F_PKT_SPACE) ? x->v[F_PKT_SPACE] : 0;

		sp = sp > UINT32_MAX ? UINT32_MAX : sp;
		n = (i + sp + i / 2) / i;
	} else if (h & BIT(F_SAMPLING)) {
		n = x->v[F_SAMPLING];
	}
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

static struct sampler *sampler_find(struct domain *d, uint64_t id)
{
	for (uint32_t i = 0; i < d->n_samplers; i++)
		if (d->samplers[i].id == id)
			return &d->samplers[i];
	return NULL;
}

/* A sampler's rate, as an options record describes it; a domain keeps a
 * few, the oldest described goes first: exporters have one or two. */
static void sampler_set(struct domain *d, uint64_t id, uint32_t rate)
{
	struct sampler *s = sampler_find(d, id);

	if (!s && d->n_samplers < DOM_SAMPLERS) {
		s = &d->samplers[d->n_samplers++];
	} else if (!s) {
		s = &d->samplers[d->next_sampler];
		d->next_sampler = (uint8_t)((d->next_sampler + 1) % DOM_SAMPLERS);
	}
	s->id = id;
	s->rate = rate;
}

/* The rate that applies to a flow record: its own, its sampler's, its
 * domain's; 0 if the exporter told none. */
static uint32_t rec_rate(const struct ctx *c, const struct vals *x)
{
	const struct sampler *s;
	uint32_t n = rate_of(x);

	if (n)
		return n;
	if (x->have & BIT(F_SAMPLER_ID)) {
		s = sampler_find(c->dom, x->v[F_SAMPLER_ID]);
		if (s)
			return s->rate;
	}
	return c->dom->rate;
}

void collector_sampled(struct ctx *c, struct sl_collector_rec *r,
		       uint32_t rate)
{
	r->sampling = rate;
	if (rate <= 1)
		return;
	rec_scale(r, rate);
	c->ex->st.sampled++;
	c->ex->st.sampling = rate;
}

static void rec_emit(struct ctx *c, const struct vals *x)
{
	struct sl_collector_rec *r = &c->m->recs[c->m->n_recs++];
	uint64_t h = x->have;
	int v6 = (h & ADDR6_BITS) != 0;
	int ks = v6 ? F_SRC6 : F_SRC4, kd = v6 ? F_DST6 : F_DST4;
	uint64_t t0, t1;

	memset(r, 0, sizeof(*r));
	if (h & BIT(ks))
		memcpy(r->key.src, x->addr[ks - F_SRC4], ADDR_LEN(ks));
	if (h & BIT(kd))
		memcpy(r->key.dst, x->addr[kd - F_SRC4], ADDR_LEN(kd));
	r->key.ip_version = v6 ? 6 : 4;
	/* a value of any kind the record lacks reads as 0 */
	r->key.sport = (uint16_t)(h & BIT(F_SPORT) ? x->v[F_SPORT] : 0);
	r->key.dport = (uint16_t)(h & BIT(F_DPORT) ? x->v[F_DPORT] : 0);
	r->key.proto = (uint8_t)(h & BIT(F_PROTO) ? x->v[F_PROTO] : 0);
	r->key.vlan = (uint16_t)(h & BIT(F_VLAN) ? x->v[F_VLAN] & 0xfff : 0);
	r->tcp_flags = (uint8_t)(h & BIT(F_FLAGS) ? x->v[F_FLAGS] : 0);
	r->tcp_flags_rev = (uint8_t)(h & BIT(F_RFLAGS) ? x->v[F_RFLAGS] : 0);
	r->end_reason =
	    (uint8_t)(h & BIT(F_END_REASON) ? x->v[F_END_REASON] : 0);
	/* octets count IP packets; frames' bytes where the exporter sends
	 * them (layer2OctetDeltaCount), else the IP packets' too. NSEL's
	 * initiator and responder counts are the two sides of a biflow.
	 * OUT_ (post*DeltaCount, RFC 5102) counts the same packets after a
	 * middlebox: only when nothing else counts them, never on top */
	r->fwd.ip_bytes = val_or0(
	    x, pick(h, F_BYTES, F_INIT_BYTES, F_BYTES_TOT, F_BYTES_OUT));
	r->fwd.bytes = h & BIT(F_L2BYTES) ? x->v[F_L2BYTES] : r->fwd.ip_bytes;
	r->fwd.pkts =
	    val_or0(x, pick(h, F_PKTS, F_INIT_PKTS, F_PKTS_TOT, F_PKTS_OUT));
	r->rev.ip_bytes =
	    val_or0(x, pick(h, F_RBYTES, F_RESP_BYTES, F_RBYTES_TOT, F_COUNT));
	r->rev.bytes = h & BIT(F_RL2BYTES) ? x->v[F_RL2BYTES] : r->rev.ip_bytes;
	r->rev.pkts =
	    val_or0(x, pick(h, F_RPKTS, F_RESP_PKTS, F_RPKTS_TOT, F_COUNT));
	r->totals = (uint8_t)(totals_only(h, BIT(F_BYTES_TOT) | BIT(F_PKTS_TOT),
					  FWD_DELTAS)
				  ? SL_REC_TOTAL_FWD
				  : 0);
	r->totals |= (uint8_t)(totals_only(h,
					   BIT(F_RBYTES_TOT) | BIT(F_RPKTS_TOT),
					   REV_DELTAS)
				   ? SL_REC_TOTAL_REV
				   : 0);
	if (h & BIT(F_ICMP)) {
		icmp_from(r, x->v[F_ICMP]);
	} else if (h & (BIT(F_ICMP_TYPE) | BIT(F_ICMP_CODE))) {
		r->icmp_type =
		    (uint8_t)(h & BIT(F_ICMP_TYPE) ? x->v[F_ICMP_TYPE] : 0);
		r->icmp_code =
		    (uint8_t)(h & BIT(F_ICMP_CODE) ? x->v[F_ICMP_CODE] : 0);
	} else if (is_icmp(r->key.proto)) {
		/* v5 habit kept by many: type and code in the port */
		icmp_from(r, r->key.dport);
	}
	t0 = rec_time(c, x, 0);
	t1 = rec_time(c, x, 1);
	if (!t0 && !t1)
		t0 = t1 = (uint64_t)c->export_s * NS_PER_S;
	r->first_ns = t0 ? t0 : t1;
	r->last_ns = t1 ? t1 : t0;
	r->exporter = c->exp;
	r->domain = c->dom->id;
	r->version = c->version;
	collector_sampled(c, r, rec_rate(c, x));
}

static inline void val_set(struct vals *x, uint8_t kind, const uint8_t *f,
			   uint32_t len)
{
	if (IS_ADDR(kind))
		x->addr[kind - F_SRC4] = f;
	else
		x->v[kind] = rdn(f, len);
}

/* A record of a template with variable-length fields; returns its length,
 * or 0 when a field runs past the set. */
static uint32_t read_var(const struct tmpl *t, const uint8_t *p, uint32_t len,
			 struct vals *x)
{
	uint32_t off = 0;

	x->have = 0;
	for (uint32_t i = 0; i < t->n_ops; i++) {
		const struct op *o = &t->ops[i];
		uint32_t flen = o->len;

		if (flen == VARLEN) {
			if (off >= len)
				return 0;
			flen = p[off++];
			if (flen == VARLEN_LONG) {
				if (len - off < 2)
					return 0;
				flen = rd16(p + off);
				off += 2;
			}
		}
		if (flen > len - off)
			return 0;
		/* a number must fit 1..8 bytes: other lengths are ignored */
		if (o->kind != F_SKIP &&
		    (IS_ADDR(o->kind) || (flen >= 1 && flen <= 8))) {
			val_set(x, o->kind, p + off, flen);
			x->have |= BIT(o->kind);
		}
		off += flen;
	}
	return off;
}

static void read_fixed(const struct tmpl *t, const uint8_t *p, struct vals *x)
{
	x->have = t->have;
	for (uint32_t i = 0; i < t->n_ops; i++) {
		const struct op *o = &t->ops[i];

		val_set(x, o->kind, p + o->off, o->len);
	}
}

static void options_record(struct ctx *c, const struct vals *x)
{
	struct domain *d = c->dom;
	uint32_t rate = rate_of(x);

	if (x->have & BIT(F_INIT_MS)) {
		d->init_ms = x->v[F_INIT_MS];
		d->have_init = 1;
	}
	if (!rate)
		return;
	if (x->have & BIT(F_SAMPLER_ID))
		sampler_set(d, x->v[F_SAMPLER_ID], rate);
	else
		d->rate = rate;
}

static void record_done(struct ctx *c, const struct tmpl *t,
			const struct vals *x)
{
	c->n_all++;
	if (t->opt) {
		options_record(c, x);
		return;
	}
	c->n_flow++;
	if (!(x->have & ADDR_BITS))
		return;
	rec_emit(c, x);
	c->ex->st.records++;
}

/* Records of one data set; what is left after the last whole record,
 * shorter than one, is padding. */
int collector_data_records(struct ctx *c, const struct tmpl *t,
			   const uint8_t *p, uint32_t len)
{
	struct vals x;
	uint32_t off = 0;

	/* a set must hold a record: less is not padding but damage */
	if (len < t->min_len) {
		drop(c, SL_COLLECTOR_DROP_RECORD);
		return 0;
	}
	if (!t->var) {
		uint32_t n = len / t->min_len;

		if (recs_reserve(c->m, n))
			return -ENOMEM;
		for (uint32_t i = 0; i < n; i++) {
			read_fixed(t, p + i * t->min_len, &x);
			record_done(c, t, &x);
		}
		return 0;
	}
	while (len - off >= t->min_len) {
		uint32_t rlen = read_var(t, p + off, len - off, &x);

		if (!rlen) {
			drop(c, SL_COLLECTOR_DROP_RECORD);
			return 0;
		}
		if (recs_reserve(c->m, 1))
			return -ENOMEM;
		record_done(c, t, &x);
		off += rlen;
	}
	return 0;
}

/* A data set: decoded now, or held until its template comes. */
int collector_data_set(struct ctx *c, uint16_t tid, const uint8_t *p,
		       uint32_t len)
{
	const struct tmpl *t = collector_tmpl_find(c, tid);

	if (!len)
		return 0;
	if (!t && collector_tmpl_withdrawn(c, tid)) {
		c->ex->st.dropped[SL_COLLECTOR_DROP_WITHDRAWN]++;
		c->partial = 1;
		return 0;
	}
	if (!t)
		return collector_hold_add(c, tid, p, len);
	return collector_data_records(c, t, p, len);
}
