/* collector_template.c - NetFlow v9 and IPFIX template records (options
 * templates and IPFIX withdrawals included), each compiled once into a
 * short list of operations for the data records of collector_data.c.
 */
#include <errno.h>
#include <stdlib.h>

#include "collector.h"

#define ENTERPRISE_BIT 0x8000
#define PEN_REVERSE    29305 /* RFC 5103 reverse information elements */
#define MAX_OPS	       256   /* per template, after merging unmapped fields */

/* IETF information elements (v9 field types agree below 128; softflowd and
 * others send the IPFIX numbers above it in v9 too). */
static const uint8_t ie_kind[] = {
    [1] = F_BYTES,	  [2] = F_PKTS,		 [4] = F_PROTO,
    [6] = F_FLAGS,	  [7] = F_SPORT,	 [8] = F_SRC4,
    [11] = F_DPORT,	  [12] = F_DST4,	 [21] = F_END_UP,
    [22] = F_START_UP,	  [23] = F_BYTES_OUT,	 [24] = F_PKTS_OUT,
    [27] = F_SRC6,	  [28] = F_DST6,	 [32] = F_ICMP,
    [58] = F_VLAN,	  [85] = F_BYTES_TOT,	 [86] = F_PKTS_TOT,
    [136] = F_END_REASON, [139] = F_ICMP,	 [150] = F_START_S,
    [151] = F_END_S,	  [152] = F_START_MS,	 [153] = F_END_MS,
    [154] = F_START_US,	  [155] = F_END_US,	 [156] = F_START_NS,
    [157] = F_END_NS,	  [158] = F_START_DELTA, [159] = F_END_DELTA,
    [160] = F_INIT_MS,	  [176] = F_ICMP_TYPE,	 [177] = F_ICMP_CODE,
    [178] = F_ICMP_TYPE,  [179] = F_ICMP_CODE,	 [352] = F_L2BYTES,
    /* sampling, in options records (a domain's or a sampler's) or in
     * the flow records themselves */
    [34] = F_SAMPLING,	  [50] = F_SAMPLING,	 [48] = F_SAMPLER_ID,
    [302] = F_SAMPLER_ID, [305] = F_PKT_INTERVAL, [306] = F_PKT_SPACE,
    /* NSEL (Cisco ASA): the initiator's side and the responder's */
    [231] = F_INIT_BYTES, [232] = F_RESP_BYTES,	 [298] = F_INIT_PKTS,
    [299] = F_RESP_PKTS,
};

/* Under PEN_REVERSE (RFC 5103), the same numbers. */
static const uint8_t rev_kind[] = {
    [1] = F_RBYTES,	 [2] = F_RPKTS,	     [6] = F_RFLAGS,
    [85] = F_RBYTES_TOT, [86] = F_RPKTS_TOT, [352] = F_RL2BYTES,
};

static uint8_t field_kind(uint16_t id, uint32_t pen, uint16_t len, int var)
{
	uint8_t k = F_SKIP;

	if (!pen && id < sizeof(ie_kind))
		k = ie_kind[id];
	else if (pen == PEN_REVERSE && id < sizeof(rev_kind))
		k = rev_kind[id];
	if (k == F_SKIP)
		return F_SKIP;
	if (IS_ADDR(k))
		return !var && len == ADDR_LEN(k) ? k : F_SKIP;
	/* numbers: 1..8 bytes; a VARLEN one is checked per record */
	if (var || (len >= 1 && len <= 8))
		return k;
	return F_SKIP;
}

/* Appends one field to the template being compiled in m->scratch. */
static int compile_field(struct sl_collector_msg *m, uint32_t *n, uint8_t kind,
			 uint16_t len, int var)
{
	struct op *o;

	if (!var && !len)
		return 0;
	/* adjacent fixed fields we skip are one jump */
	if (kind == F_SKIP && !var && *n) {
		o = &m->scratch[*n - 1];
		if (o->kind == F_SKIP && o->len != VARLEN &&
		    o->len + (uint32_t)len < VARLEN) {
			o->len = (uint16_t)(o->len + len);
			return 0;
		}
	}
	if (*n >= MAX_OPS)
		return -E2BIG;
	if (collector_grow((void **)&m->scratch, &m->cap_scratch, *n + 1,
			   sizeof(*m->scratch)))
		return -ENOMEM;
	o = &m->scratch[(*n)++];
	o->kind = kind;
	o->len = var ? VARLEN : len;
	o->off = 0;
	o->pad = 0;
	return 0;
}

/* Reads n field specifiers at *pp (the first nscope of which are v9 scope
 * fields, which are not information elements) into m->scratch. Returns the
 * op count, -EBADMSG if they run past end or make a useless template,
 * -E2BIG or -ENOMEM. */
static int read_fields(struct ctx *c, const uint8_t **pp, const uint8_t *end,
		       uint32_t n, uint32_t nscope, uint32_t *min_len,
		       int *has_var)
{
	const uint8_t *p = *pp;
	uint32_t n_ops = 0, len_sum = 0;
	int rc;

	*has_var = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint16_t id, flen;
		uint32_t pen = 0;
		int var;

		if (end - p < 4)
			return -EBADMSG;
		id = rd16(p);
		flen = rd16(p + 2);
		p += 4;
		if (c->version == 10 && id & ENTERPRISE_BIT) {
			if (end - p < 4)
				return -EBADMSG;
			pen = rd32(p);
			id &= ~ENTERPRISE_BIT;
			p += 4;
		}
		var = c->version == 10 && flen == VARLEN;
		if (c->version == 9 && i < nscope)
			pen = UINT32_MAX; /* a scope type: maps to nothing */
		rc = compile_field(c->m, &n_ops, field_kind(id, pen, flen, var),
				   flen, var);
		if (rc)
			return rc;
		len_sum += var ? 1 : flen;
		*has_var |= var;
	}
	*pp = p;
	/* a record of no bytes could never be read past */
	if (!len_sum)
		return -EBADMSG;
	*min_len = len_sum;
	return (int)n_ops;
}

/* Sizes t->ops for n operations, exactly (templates are seldom
 * redefined), charged to the state; t is pinned meanwhile. */
static int ops_reserve(struct sl_collector_msg *m, struct tmpl *t, uint32_t n)
{
	uint64_t more;
	struct op *p;
	int rc;

	if (n <= t->cap_ops)
		return 0;
	more = (uint64_t)(n - t->cap_ops) * sizeof(*t->ops) +
	       (t->cap_ops ? 0 : ALLOC_OVERHEAD);
	m->pin_tmpl = t;
	rc = collector_mem_charge(m, more);
	m->pin_tmpl = NULL;
	if (rc)
		return rc;
	p = realloc(t->ops, (size_t)n * sizeof(*t->ops));
	if (!p) {
		collector_mem_uncharge(m, more);
		return -ENOMEM;
	}
	t->ops = p;
	t->cap_ops = n;
	return 0;
}

static int tmpl_store(struct ctx *c, struct tmpl *t, const struct op *ops,
		      uint32_t n, uint32_t min_len, int var, int opt)
{
	uint32_t off = 0, keep = 0;
	int rc;

	/* a fixed layout reads fields at their offsets: skips vanish */
	for (uint32_t i = 0; i < n; i++)
		keep += var || ops[i].kind != F_SKIP;
	t->valid = 0;
	rc = ops_reserve(c->m, t, keep ? keep : 1);
	if (rc)
		return rc;
	t->have = 0;
	t->n_ops = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct op o = ops[i];

		o.off = off;
		if (!var)
			off += o.len;
		if (o.kind != F_SKIP)
			t->have |= BIT(o.kind);
		if (!var && o.kind == F_SKIP)
			continue;
		t->ops[t->n_ops++] = o;
	}
	t->min_len = min_len;
	t->var = (uint8_t)var;
	t->opt = (uint8_t)opt;
	t->valid = 1;
	t->withdrawn = 0;
	t->stream = c->stream;
	t->seen_ns = c->now;
	t->gen = c->dom->gen[opt];
	collector_touch_tmpl(c->m, t);
	return 0;
}

/* Withdrawal (IPFIX): one template, or with tid 2 / 3 all templates or all
 * options templates of the domain (those then die by their generation and
 * are freed by sl_collector_msg_expire()). */
static void withdraw(struct ctx *c, uint16_t tid, int opt)
{
	struct tmpl *t;

	if (tid == (opt ? IPFIX_OPTIONS_SET : IPFIX_TEMPLATE_SET)) {
		c->dom->gen[opt]++;
		return;
	}
	/* kept, marked: data for it is dropped until it is defined again */
	t = collector_tmpl_find(c, tid);
	if (t) {
		t->withdrawn = 1;
		t->seen_ns = c->now;
	}
}

/* One template record at *pp; returns 0 to go on, 1 at padding, -EBADMSG
 * for a malformed record (the rest of the set is skipped), or -ENOMEM. */
static int template_record(struct ctx *c, const uint8_t **pp,
			   const uint8_t *end, int opt)
{
	const uint8_t *p = *pp;
	uint32_t n, nscope = 0, min_len = 0, hdr = opt ? 6 : 4;
	uint16_t tid;
	struct tmpl *t;
	int n_ops, var, err;

	/* shorter than a record header, or zeros: padding */
	if (end - p < 4 || !rd16(p))
		return 1;
	tid = rd16(p);
	n = rd16(p + 2);
	if (c->version == 10 && !n) {
		*pp = p + 4;
		c->ex->st.templates++;
		withdraw(c, tid, opt);
		return 0;
	}
	if (end - p < (long)hdr)
		return -EBADMSG;
	if (opt && c->version == 9) {
		uint32_t scope_len = rd16(p + 2), opt_len = rd16(p + 4);

		if (scope_len % 4 || opt_len % 4)
			return -EBADMSG;
		nscope = scope_len / 4;
		n = nscope + opt_len / 4;
	} else if (opt) {
		nscope = rd16(p + 4);
		if (!nscope || nscope > n)
			return -EBADMSG;
	}
	if (tid < MIN_DATA_SET || !n)
		return -EBADMSG;
	/* more fields than the set holds */
	if (n > (uint32_t)(end - p - hdr) / 4)
		return -EBADMSG;
	p += hdr;
	n_ops = read_fields(c, &p, end, n, nscope, &min_len, &var);
	if (n_ops == -ENOMEM)
		return n_ops;
	if (n_ops < 0)
		return -EBADMSG;
	*pp = p;
	t = collector_tmpl_slot(c, tid, &err);
	if (t)
		err = tmpl_store(c, t, c->m->scratch, (uint32_t)n_ops, min_len,
				 var, opt);
	/* no room, nothing to evict: this one is refused, counted */
	if (err == -ENOSPC) {
		drop(c, SL_COLLECTOR_DROP_MEMORY);
		return 0;
	}
	if (err)
		return err;
	c->ex->st.templates++;
	return c->m->hold_live ? collector_hold_release(c, tid) : 0;
}

int collector_template_set(struct ctx *c, const uint8_t *p, uint32_t len,
			   int opt)
{
	const uint8_t *end = p + len;

	while (p < end) {
		int rc = template_record(c, &p, end, opt);

		if (rc == 1)
			break;
		if (rc == -EBADMSG) {
			drop(c, SL_COLLECTOR_DROP_TEMPLATE);
			break;
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}
