/* flowmsg.c - NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011, biflows
 * RFC 5103) messages decoded into flat flow records (struct sl_coll_rec).
 *
 * Identity and state:
 * - An exporter is a source address and port (an IPv4-mapped IPv6 address is
 *   taken as the IPv4 address, so a dual-stack socket and an IPv4 socket see
 *   the same exporter). Exporter index 0 is reserved: it is no exporter but
 *   counts the messages that could not be given to one: from a new source
 *   beyond max_exporters (SL_COLL_EXPORTERS), or from a new source whose
 *   message has no known version (SL_COLL_SHORT, SL_COLL_VERSION), so that a
 *   port scan or stray traffic does not use up exporter slots.
 * - Per exporter, a domain is (version, observation domain / source id /
 *   engine). It holds the sequence state and, for IPFIX, the exporter's
 *   systemInitTimeMilliseconds when an options record told it.
 * - Templates are keyed by (domain, template id); two exporters, or two
 *   domains of one, never share one. A template is compiled once into a
 *   short list of operations (fields we do not map, when adjacent and of
 *   fixed length, cost nothing), so a record costs one pass over the fields
 *   that matter.
 *
 * Data that comes before its template is copied into a bounded FIFO (hold_max
 * sets and HOLD_BYTES_MAX bytes in all; the oldest goes first) and decoded,
 * in arrival order, when the template comes; what waited longer than hold_ns
 * or was pushed out counts as SL_COLL_NO_TEMPLATE.
 *
 * Sequence numbers: v5 and IPFIX count records before the message, v9 counts
 * packets. A forward gap adds to seq_lost; going back by more than a small
 * reorder window, or jumping forward by more than SEQ_JUMP, is a reset. Some
 * exporters (softflowd 1.1 in IPFIX) count the records of the message itself
 * too: a stream that matches that rule and not the RFC's is followed by it.
 * After a message that was not decoded whole (a set dropped or held), the
 * record count the exporter used is unknown, so the next message only
 * resynchronizes: the records we lost are already counted as drops.
 *
 * Records without an IPv4 or IPv6 address (options data, or templates that
 * describe no flow) are not flows: they are counted in the sequence, not in
 * the output.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

#define V5_HDR_LEN    24
#define V5_REC_LEN    48
#define V9_HDR_LEN    20
#define IPFIX_HDR_LEN 16
#define SET_HDR_LEN   4

#define V9_TEMPLATE_SET	   0
#define V9_OPTIONS_SET	   1
#define IPFIX_TEMPLATE_SET 2
#define IPFIX_OPTIONS_SET  3
#define MIN_DATA_SET	   256

#define ENTERPRISE_BIT 0x8000
#define PEN_REVERSE    29305 /* RFC 5103 reverse information elements */
#define VARLEN	       65535
#define VARLEN_LONG    255

#define NS_PER_US	1000ULL
#define NS_PER_MS	1000000ULL
#define NS_PER_S	1000000000ULL
#define NTP_UNIX_OFFSET 2208988800ULL /* 1900-01-01 to 1970-01-01, s */

#define DEF_TEMPLATE_TIMEOUT (1800 * NS_PER_S)
#define DEF_HOLD_NS	     (5 * NS_PER_S)
#define DEF_HOLD_MAX	     256
#define DEF_MAX_EXPORTERS    65536
/* Exporter indexes share a 64-bit key with the domain id. */
#define MAX_EXPORTERS_CAP (1u << 24)
/* Bounds against a source that invents domains and templates: beyond them
 * its messages or templates are refused and counted. */
#define MAX_DOMAINS 1024 /* per exporter */
#define MAX_TEMPLATES                                                          \
	4096		   /* per exporter, slots of withdrawn ones included   \
			    */
#define MAX_OPS	       256 /* per template, after merging unmapped fields */
#define HOLD_BYTES_MAX (4u << 20)

#define SEQ_REORDER_RECORDS 256
#define SEQ_REORDER_PACKETS 16
#define SEQ_JUMP	    (1u << 24)

#define IPPROTO_ICMP_	1
#define IPPROTO_ICMPV6_ 58

/* What a field of a template feeds. Start and end times come in pairs
 * (end = start + 1). */
enum fk {
	F_SKIP = 0,
	F_BYTES,
	F_PKTS,
	F_BYTES_TOT,
	F_PKTS_TOT,
	F_BYTES_OUT,
	F_PKTS_OUT,
	F_RBYTES,
	F_RPKTS,
	F_RBYTES_TOT,
	F_RPKTS_TOT,
	F_PROTO,
	F_FLAGS,
	F_RFLAGS,
	F_SPORT,
	F_DPORT,
	F_VLAN,
	F_ICMP,
	F_ICMP_TYPE,
	F_ICMP_CODE,
	F_END_REASON,
	F_START_S,
	F_END_S,
	F_START_MS,
	F_END_MS,
	F_START_US,
	F_END_US,
	F_START_NS,
	F_END_NS,
	F_START_UP,
	F_END_UP,
	F_START_DELTA,
	F_END_DELTA,
	F_INIT_MS,
	F_SRC4, /* addresses: the four last, pointers rather than values */
	F_DST4,
	F_SRC6,
	F_DST6,
	F_COUNT,
};

#define BIT(k)	    (1ULL << (k))
#define ADDR_BITS   (BIT(F_SRC4) | BIT(F_DST4) | BIT(F_SRC6) | BIT(F_DST6))
#define ADDR6_BITS  (BIT(F_SRC6) | BIT(F_DST6))
#define IS_ADDR(k)  ((k) >= F_SRC4)
#define ADDR_LEN(k) ((k) >= F_SRC6 ? 16 : 4)

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
    [178] = F_ICMP_TYPE,  [179] = F_ICMP_CODE,
};

/* Under PEN_REVERSE (RFC 5103), the same numbers. */
static const uint8_t rev_kind[] = {
    [1] = F_RBYTES,	 [2] = F_RPKTS,	     [6] = F_RFLAGS,
    [85] = F_RBYTES_TOT, [86] = F_RPKTS_TOT,
};

struct op {
	uint32_t off; /* fixed-length templates: offset in the record */
	uint16_t len; /* VARLEN (IPFIX): length in the record */
	uint8_t kind; /* enum fk */
	uint8_t pad;
};

struct tmpl {
	uint64_t key;
	uint64_t seen_ns; /* last (re)definition */
	uint64_t have;	  /* kinds a record of it carries (fixed length) */
	struct op *ops;
	uint32_t n_ops;
	uint32_t cap_ops;
	uint32_t min_len; /* the record length, or its minimum with VARLEN */
	uint32_t dom;
	uint32_t gen; /* the domain's generation when defined */
	uint16_t id;
	uint8_t valid;
	uint8_t opt; /* options template: no flows in its records */
	uint8_t var; /* has VARLEN fields: walk the ops in order */
	uint8_t pad[3];
};

struct seq {
	uint32_t last;	 /* sequence number of the newest message */
	uint32_t n_all;	 /* its data records */
	uint32_t n_flow; /* the same without options records */
	uint8_t valid;	 /* last and the counts can predict the next */
	uint8_t post;	 /* this exporter counts the message's own records */
	uint8_t pad[2];
};

struct domain {
	uint64_t key;	  /* its key in dom_tab (a recycled slot changes it) */
	uint64_t seen_ns; /* last message */
	uint32_t exp;
	uint32_t id;
	uint64_t init_ms; /* IPFIX systemInitTimeMilliseconds */
	struct seq seq;
	/* bumped by an all-templates withdrawal: [0] templates, [1] options
	 * templates; older templates are then dead at no cost */
	uint32_t gen[2];
	uint8_t version;
	uint8_t have_init;
	uint8_t pad[6];
};

struct exporter {
	struct sl_exporter_stats st; /* first: handed out as is */
	uint32_t n_domains;
	uint32_t n_tmpls;
};

/* Data waiting for its template; slots keep their buffer for reuse. */
struct held {
	uint8_t *buf;
	uint32_t cap;
	uint32_t len;
	uint64_t at_ns;
	uint32_t dom;
	uint32_t export_s; /* v9 unix_secs, IPFIX export time */
	uint32_t uptime;   /* v9 sys_uptime */
	uint16_t tid;
	uint8_t live;
	uint8_t pad;
};

/* Open addressing, linear probing; key 0 is an empty slot. */
struct kv {
	uint64_t key;
	uint32_t val;
	uint32_t pad;
};

struct table {
	struct kv *slot;
	uint32_t mask; /* slots - 1 */
	uint32_t n;
};

struct sl_flowmsg {
	uint64_t tmpl_timeout_ns;
	uint64_t hold_ns;
	uint32_t hold_max;
	uint32_t max_exporters;

	struct sl_coll_rec *recs; /* output of the last decode, grow-only */
	uint32_t n_recs;
	uint32_t cap_recs;

	struct exporter **exp; /* [0]: the messages of no exporter */
	uint32_t n_exp;
	uint32_t cap_exp;
	uint32_t *exp_hash; /* exporter index + 1, 0: empty */
	uint32_t exp_mask;

	struct domain *dom;
	uint32_t n_dom;
	uint32_t cap_dom;
	struct table dom_tab;

	struct tmpl *tmpl;
	uint32_t n_tmpl;
	uint32_t cap_tmpl;
	struct table tmpl_tab;

	struct op *scratch; /* a template being compiled */
	uint32_t cap_scratch;

	struct held *hold; /* ring of hold_max slots */
	uint32_t hold_head;
	uint32_t hold_count; /* slots in use from head, released ones too */
	uint32_t hold_live;
	uint32_t hold_bytes;
};

/* One message (or one held set) being decoded. */
struct ctx {
	struct sl_flowmsg *m;
	struct exporter *ex;
	uint32_t exp;
	uint32_t dom;
	uint64_t now;
	uint32_t export_s;
	uint32_t uptime;
	uint32_t n_all; /* data records, for the sequence */
	uint32_t n_flow;
	uint8_t version;
	uint8_t partial; /* a set was dropped or held */
	uint8_t pad[2];
};

/* One record's values while it is read. */
struct vals {
	uint64_t have;
	uint64_t v[F_SRC4];
	const uint8_t *addr[4];
};

/* ---- helpers ------------------------------------------------------------ */

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

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

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static void drop(struct ctx *c, int reason)
{
	c->ex->st.dropped[reason]++;
	c->partial = 1;
}

/* Grows *arr (of n elements of size sz) to at least want elements. */
static int grow(void **arr, uint32_t *cap, uint32_t want, size_t sz)
{
	uint32_t n = *cap ? *cap : 16;
	void *p;

	if (want <= *cap)
		return 0;
	while (n < want) {
		if (n > UINT32_MAX / 2)
			return -ENOMEM;
		n *= 2;
	}
	p = realloc(*arr, (size_t)n * sz);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = n;
	return 0;
}

/* ---- key/value table ---------------------------------------------------- */

static int table_init(struct table *t, uint32_t slots)
{
	t->slot = calloc(slots, sizeof(*t->slot));
	if (!t->slot)
		return -ENOMEM;
	t->mask = slots - 1;
	t->n = 0;
	return 0;
}

static uint32_t *table_find(const struct table *t, uint64_t key)
{
	uint32_t i = (uint32_t)mix64(key) & t->mask;

	for (;; i = (i + 1) & t->mask) {
		struct kv *s = &t->slot[i];

		if (s->key == key)
			return &s->val;
		if (!s->key)
			return NULL;
	}
}

static void table_put_slot(struct kv *slot, uint32_t mask, uint64_t key,
			   uint32_t val)
{
	uint32_t i = (uint32_t)mix64(key) & mask;

	while (slot[i].key)
		i = (i + 1) & mask;
	slot[i].key = key;
	slot[i].val = val;
}

/* Adds a key known to be absent. */
static int table_add(struct table *t, uint64_t key, uint32_t val)
{
	if ((t->n + 1) * 2 > t->mask + 1) {
		uint32_t slots = (t->mask + 1) * 2;
		struct kv *s = calloc(slots, sizeof(*s));

		if (!s)
			return -ENOMEM;
		for (uint32_t i = 0; i <= t->mask; i++)
			if (t->slot[i].key)
				table_put_slot(s, slots - 1, t->slot[i].key,
					       t->slot[i].val);
		free(t->slot);
		t->slot = s;
		t->mask = slots - 1;
	}
	table_put_slot(t->slot, t->mask, key, val);
	t->n++;
	return 0;
}

/* ---- exporters ---------------------------------------------------------- */

struct ident {
	uint8_t addr[16];
	uint16_t port;
	uint8_t family;
};

static void ident_make(struct ident *id, const uint8_t *addr, int family,
		       uint16_t port)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
					   0, 0, 0, 0, 0xff, 0xff};

	memset(id, 0, sizeof(*id));
	id->port = port;
	if (family == 6 && memcmp(addr, mapped, sizeof(mapped))) {
		id->family = 6;
		memcpy(id->addr, addr, 16);
		return;
	}
	id->family = 4;
	memcpy(id->addr, family == 6 ? addr + 12 : addr, 4);
}

static uint32_t ident_hash(const struct ident *id)
{
	uint64_t a, b;

	memcpy(&a, id->addr, 8);
	memcpy(&b, id->addr + 8, 8);
	return (uint32_t)mix64(
	    a ^ mix64(b ^ ((uint64_t)id->port << 8 | id->family)));
}

static int ident_is(const struct exporter *e, const struct ident *id)
{
	return e->st.port == id->port && e->st.family == id->family &&
	       !memcmp(e->st.addr, id->addr, 16);
}

static uint32_t exp_find(const struct sl_flowmsg *m, const struct ident *id)
{
	uint32_t i = ident_hash(id) & m->exp_mask;

	for (;; i = (i + 1) & m->exp_mask) {
		uint32_t x = m->exp_hash[i];

		if (!x)
			return 0;
		if (ident_is(m->exp[x - 1], id))
			return x - 1;
	}
}

static void exp_hash_put(uint32_t *h, uint32_t mask, const struct ident *id,
			 uint32_t idx)
{
	uint32_t i = ident_hash(id) & mask;

	while (h[i])
		i = (i + 1) & mask;
	h[i] = idx + 1;
}

static int exp_hash_grow(struct sl_flowmsg *m)
{
	uint32_t slots = (m->exp_mask + 1) * 2;
	uint32_t *h = calloc(slots, sizeof(*h));

	if (!h)
		return -ENOMEM;
	for (uint32_t i = 1; i < m->n_exp; i++) {
		struct ident id = {.port = m->exp[i]->st.port,
				   .family = m->exp[i]->st.family};

		memcpy(id.addr, m->exp[i]->st.addr, 16);
		exp_hash_put(h, slots - 1, &id, i);
	}
	free(m->exp_hash);
	m->exp_hash = h;
	m->exp_mask = slots - 1;
	return 0;
}

static int exp_add(struct sl_flowmsg *m, const struct ident *id)
{
	struct exporter *e;

	if (m->n_exp * 2 > m->exp_mask && exp_hash_grow(m))
		return -ENOMEM;
	if (grow((void **)&m->exp, &m->cap_exp, m->n_exp + 1, sizeof(*m->exp)))
		return -ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	memcpy(e->st.addr, id->addr, 16);
	e->st.family = id->family;
	e->st.port = id->port;
	m->exp[m->n_exp] = e;
	exp_hash_put(m->exp_hash, m->exp_mask, id, m->n_exp);
	return (int)m->n_exp++;
}

/* ---- domains and templates ---------------------------------------------- */

static uint64_t dom_key(uint32_t exp, uint8_t version, uint32_t id)
{
	return 1ULL << 63 | (uint64_t)exp << 36 |
	       (uint64_t)(version & 15) << 32 | id;
}

static uint64_t tmpl_key(uint32_t dom, uint16_t tid)
{
	return 1ULL << 63 | (uint64_t)dom << 16 | tid;
}

static struct held *hold_at(const struct sl_flowmsg *m, uint32_t i);
static void hold_kill(struct sl_flowmsg *m, struct held *h, int counted);
static void hold_trim(struct sl_flowmsg *m);

/* An exporter at MAX_DOMAINS gives up its least recently heard domain:
 * a source inventing domains (a fuzzer, a broken exporter) cannot lock
 * real ones out. The slot's templates die with its generation, its held
 * data is dropped (counted). */
static uint32_t dom_recycle(struct ctx *c)
{
	struct sl_flowmsg *m = c->m;
	uint32_t best = UINT32_MAX;

	for (uint32_t i = 0; i < m->n_dom; i++)
		if (m->dom[i].exp == c->exp &&
		    (best == UINT32_MAX ||
		     m->dom[i].seen_ns < m->dom[best].seen_ns))
			best = i;
	for (uint32_t i = 0; i < m->hold_count; i++) {
		struct held *h = hold_at(m, i);

		if (h->live && h->dom == best)
			hold_kill(m, h, 1);
	}
	hold_trim(m);
	return best;
}

/* The tables keep the keys of recycled slots (lookups check the slot's
 * own key); one is rebuilt from the slots' keys (at key_of(i)) when stale
 * entries outnumber the live ones. */
static int table_rebuild(struct table *tab, uint32_t n, const void *base,
			 size_t stride)
{
	struct table t = {0};
	uint32_t slots = 64;

	while (slots < n * 4)
		slots *= 2;
	if (table_init(&t, slots))
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t key;

		memcpy(&key, (const uint8_t *)base + (size_t)i * stride,
		       sizeof(key));
		if (table_add(&t, key, i)) {
			free(t.slot);
			return -ENOMEM;
		}
	}
	free(tab->slot);
	*tab = t;
	return 0;
}

static int stale(const struct table *t, uint32_t live)
{
	return t->n > 4 * live + 4096;
}

/* Index of the domain, created if new (or in a recycled slot). */
static int dom_get(struct ctx *c, uint32_t id)
{
	struct sl_flowmsg *m = c->m;
	uint64_t key = dom_key(c->exp, c->version, id);
	uint32_t *v = table_find(&m->dom_tab, key);
	struct domain *d;
	uint32_t i, gen[2] = {0, 0};

	if (v && m->dom[*v].key == key) {
		m->dom[*v].seen_ns = c->now;
		return (int)*v;
	}
	if (c->ex->n_domains >= MAX_DOMAINS) {
		i = dom_recycle(c);
		/* templates of the old domain must not match the new one */
		gen[0] = m->dom[i].gen[0] + 1;
		gen[1] = m->dom[i].gen[1] + 1;
	} else {
		if (grow((void **)&m->dom, &m->cap_dom, m->n_dom + 1,
			 sizeof(*m->dom)))
			return -ENOMEM;
		i = m->n_dom++;
		c->ex->n_domains++;
	}
	if (v) {
		*v = i; /* a stale entry of this key */
	} else {
		/* key is the first field of struct domain */
		if (stale(&m->dom_tab, m->n_dom) &&
		    table_rebuild(&m->dom_tab, m->n_dom, m->dom,
				  sizeof(*m->dom)))
			return -ENOMEM;
		if (table_add(&m->dom_tab, key, i))
			return -ENOMEM;
	}
	d = &m->dom[i];
	memset(d, 0, sizeof(*d));
	d->key = key;
	d->seen_ns = c->now;
	d->exp = c->exp;
	d->id = id;
	d->version = c->version;
	d->gen[0] = gen[0];
	d->gen[1] = gen[1];
	return (int)i;
}

/* Still usable at now: not withdrawn, expired, or replaced. */
static int tmpl_live(const struct sl_flowmsg *m, const struct tmpl *t,
		     uint64_t now)
{
	if (!t->valid || t->gen != m->dom[t->dom].gen[t->opt])
		return 0;
	return now <= t->seen_ns || now - t->seen_ns <= m->tmpl_timeout_ns;
}

/* The valid template of the context's domain, or NULL. */
static struct tmpl *tmpl_find(struct ctx *c, uint16_t tid)
{
	uint64_t key = tmpl_key(c->dom, tid);
	uint32_t *v = table_find(&c->m->tmpl_tab, key);
	struct tmpl *t;

	if (!v || c->m->tmpl[*v].key != key)
		return NULL;
	t = &c->m->tmpl[*v];
	if (!tmpl_live(c->m, t, c->now))
		t->valid = 0;
	return t->valid ? t : NULL;
}

/* The slot for (domain, tid), created if new; NULL past MAX_TEMPLATES or
 * on a failed allocation (*err says which). */
static struct tmpl *tmpl_slot(struct ctx *c, uint16_t tid, int *err)
{
	struct sl_flowmsg *m = c->m;
	uint64_t key = tmpl_key(c->dom, tid);
	uint32_t *v = table_find(&m->tmpl_tab, key);
	struct tmpl *t;

	uint32_t i;

	*err = 0;
	if (v && m->tmpl[*v].key == key)
		return &m->tmpl[*v];
	if (c->ex->n_tmpls >= MAX_TEMPLATES) {
		/* a slot of a dead template of this exporter (withdrawn,
		 * expired, or of a recycled domain) is taken over */
		for (i = 0; i < m->n_tmpl; i++)
			if (m->dom[m->tmpl[i].dom].exp == c->exp &&
			    !tmpl_live(m, &m->tmpl[i], c->now))
				break;
		if (i == m->n_tmpl)
			return NULL;
		free(m->tmpl[i].ops);
	} else {
		*err = -ENOMEM;
		if (grow((void **)&m->tmpl, &m->cap_tmpl, m->n_tmpl + 1,
			 sizeof(*m->tmpl)))
			return NULL;
		i = m->n_tmpl++;
		c->ex->n_tmpls++;
		m->tmpl[i].ops = NULL;
	}
	*err = -ENOMEM;
	if (v) {
		*v = i; /* a stale entry of this key */
	} else {
		/* key is the first field of struct tmpl */
		if (stale(&m->tmpl_tab, m->n_tmpl) &&
		    table_rebuild(&m->tmpl_tab, m->n_tmpl, m->tmpl,
				  sizeof(*m->tmpl)))
			return NULL;
		if (table_add(&m->tmpl_tab, key, i))
			return NULL;
	}
	*err = 0;
	t = &m->tmpl[i];
	memset(t, 0, sizeof(*t));
	t->key = key;
	t->dom = c->dom;
	t->id = tid;
	return t;
}

/* ---- output ------------------------------------------------------------- */

static int recs_reserve(struct sl_flowmsg *m, uint32_t more)
{
	if (m->n_recs + more <= m->cap_recs)
		return 0;
	if (more > UINT32_MAX - m->n_recs)
		return -ENOMEM;
	return grow((void **)&m->recs, &m->cap_recs, m->n_recs + more,
		    sizeof(*m->recs));
}

/* The time of sysUpTime value then, given base_ns at sysUpTime now. The
 * difference is what counts (uptime wraps after 49.7 days); a value a
 * little after now is clock skew, not a wrap. */
static uint64_t uptime_at(uint64_t base_ns, uint32_t now, uint32_t then)
{
	uint32_t diff = now - then;

	if (diff & 0x80000000u)
		return base_ns + (uint64_t)(uint32_t)-diff * NS_PER_MS;
	return base_ns - (uint64_t)diff * NS_PER_MS;
}

static void icmp_from(struct sl_coll_rec *r, uint64_t type_code)
{
	r->icmp_type = (uint8_t)(type_code >> 8);
	r->icmp_code = (uint8_t)type_code;
}

static int is_icmp(uint8_t proto)
{
	return proto == IPPROTO_ICMP_ || proto == IPPROTO_ICMPV6_;
}

/* ---- sequence numbers --------------------------------------------------- */

/* unit_pkts: v9 counts export packets, the others records. */
static void seq_track(struct ctx *c, struct seq *s, uint32_t seq, int unit_pkts)
{
	struct sl_exporter_stats *st = &c->ex->st;
	uint32_t n_all = unit_pkts ? 1 : c->n_all;
	uint32_t n_flow = unit_pkts ? 1 : c->n_flow;
	uint32_t window = unit_pkts ? SEQ_REORDER_PACKETS : SEQ_REORDER_RECORDS;
	uint32_t want, d;

	if (!s->valid)
		goto out_set;
	if (seq == s->last + s->n_all || seq == s->last + s->n_flow) {
		s->post = 0;
		goto out_set;
	}
	if (seq == s->last + n_all || seq == s->last + n_flow) {
		s->post = 1;
		goto out_set;
	}
	want = s->last + (s->post ? n_flow : s->n_all);
	d = seq - want;
	if (d < SEQ_JUMP) {
		st->seq_lost += d;
	} else if (want - seq <= window) {
		/* late or repeated: the newest message sets what comes next */
		return;
	} else {
		st->seq_resets++;
	}
out_set:
	s->last = seq;
	s->n_all = n_all;
	s->n_flow = n_flow;
	s->valid = unit_pkts || !c->partial;
}

/* ---- NetFlow v5 --------------------------------------------------------- */

static void v5_record(struct ctx *c, const uint8_t *p, uint64_t hdr_ns,
		      uint32_t uptime, uint32_t domain)
{
	struct sl_coll_rec *r = &c->m->recs[c->m->n_recs++];
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
	r->fwd.bytes = rd32(p + 20);
	r->first_ns = uptime_at(hdr_ns, uptime, first);
	r->last_ns = uptime_at(hdr_ns, uptime, last);
	if (is_icmp(r->key.proto))
		icmp_from(r, r->key.dport);
	r->exporter = c->exp;
	r->domain = domain;
	r->version = 5;
}

/* A count above what the datagram holds, or a datagram longer than the
 * count says, is SL_COLL_LENGTH; the whole records present are taken. */
static int decode_v5(struct ctx *c, const uint8_t *p, uint32_t len)
{
	uint32_t count, fit, domain, uptime;
	uint64_t hdr_ns;
	int d;

	if (len < V5_HDR_LEN) {
		drop(c, SL_COLL_SHORT);
		return 0;
	}
	count = rd16(p + 2);
	if (!count) {
		drop(c, SL_COLL_EMPTY);
		return 0;
	}
	domain = (uint32_t)p[20] << 8 | p[21];
	d = dom_get(c, domain);
	if (d < 0) {
		drop(c, SL_COLL_EXPORTERS);
		return d == -ENOSPC ? 0 : d;
	}
	c->dom = (uint32_t)d;
	fit = (len - V5_HDR_LEN) / V5_REC_LEN;
	if (count != fit || (len - V5_HDR_LEN) % V5_REC_LEN) {
		drop(c, SL_COLL_LENGTH);
		if (count > fit)
			count = fit;
	}
	if (recs_reserve(c->m, count))
		return -ENOMEM;
	uptime = rd32(p + 4);
	hdr_ns = (uint64_t)rd32(p + 8) * NS_PER_S + rd32(p + 12);
	for (uint32_t i = 0; i < count; i++)
		v5_record(c, p + V5_HDR_LEN + i * V5_REC_LEN, hdr_ns, uptime,
			  domain);
	c->ex->st.messages++;
	c->ex->st.records += count;
	c->n_all = c->n_flow = count;
	seq_track(c, &c->m->dom[c->dom].seq, rd32(p + 16), 0);
	return 0;
}

/* ---- template records --------------------------------------------------- */

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
static int compile_field(struct sl_flowmsg *m, uint32_t *n, uint8_t kind,
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
	if (grow((void **)&m->scratch, &m->cap_scratch, *n + 1,
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

static int tmpl_store(struct ctx *c, struct tmpl *t, const struct op *ops,
		      uint32_t n, uint32_t min_len, int var, int opt)
{
	uint32_t off = 0;

	if (grow((void **)&t->ops, &t->cap_ops, n, sizeof(*t->ops)))
		return -ENOMEM;
	t->have = 0;
	t->n_ops = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct op o = ops[i];

		o.off = off;
		if (!var)
			off += o.len;
		if (o.kind != F_SKIP)
			t->have |= BIT(o.kind);
		/* a fixed layout reads fields at their offsets: skips vanish */
		if (!var && o.kind == F_SKIP)
			continue;
		t->ops[t->n_ops++] = o;
	}
	t->min_len = min_len;
	t->var = (uint8_t)var;
	t->opt = (uint8_t)opt;
	t->valid = 1;
	t->seen_ns = c->now;
	t->gen = c->m->dom[c->dom].gen[opt];
	return 0;
}

static int data_records(struct ctx *c, const struct tmpl *t, const uint8_t *p,
			uint32_t len);

static int hold_release(struct ctx *c, uint16_t tid);

/* Withdrawal (IPFIX): one template, or with tid 2 / 3 all templates or all
 * options templates of the domain. */
static void withdraw(struct ctx *c, uint16_t tid, int opt)
{
	struct tmpl *t;

	if (tid == (opt ? IPFIX_OPTIONS_SET : IPFIX_TEMPLATE_SET)) {
		c->m->dom[c->dom].gen[opt]++;
		return;
	}
	t = tmpl_find(c, tid);
	if (t)
		t->valid = 0;
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
	t = tmpl_slot(c, tid, &err);
	if (!t)
		return err ? err : -EBADMSG;
	if (tmpl_store(c, t, c->m->scratch, (uint32_t)n_ops, min_len, var, opt))
		return -ENOMEM;
	c->ex->st.templates++;
	return c->m->hold_live ? hold_release(c, tid) : 0;
}

static int template_set(struct ctx *c, const uint8_t *p, uint32_t len, int opt)
{
	const uint8_t *end = p + len;

	while (p < end) {
		int rc = template_record(c, &p, end, opt);

		if (rc == 1)
			break;
		if (rc == -EBADMSG) {
			drop(c, SL_COLL_TEMPLATE);
			break;
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---- data records ------------------------------------------------------- */

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
	const struct domain *d = &c->m->dom[c->dom];
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

/* The first kind of a, b, c the record has, or F_COUNT. */
static int pick(uint64_t have, int a, int b, int k)
{
	if (have & BIT(a))
		return a;
	if (have & BIT(b))
		return b;
	if (have & BIT(k))
		return k;
	return F_COUNT;
}

static uint64_t val_or0(const struct vals *x, int k)
{
	return k < F_SRC4 ? x->v[k] : 0;
}

static void rec_emit(struct ctx *c, const struct vals *x)
{
	struct sl_coll_rec *r = &c->m->recs[c->m->n_recs++];
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
	r->fwd.bytes = val_or0(x, pick(h, F_BYTES, F_BYTES_TOT, F_BYTES_OUT));
	r->fwd.pkts = val_or0(x, pick(h, F_PKTS, F_PKTS_TOT, F_PKTS_OUT));
	r->rev.bytes = val_or0(x, pick(h, F_RBYTES, F_RBYTES_TOT, F_COUNT));
	r->rev.pkts = val_or0(x, pick(h, F_RPKTS, F_RPKTS_TOT, F_COUNT));
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
	r->domain = c->m->dom[c->dom].id;
	r->version = c->version;
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
	struct domain *d = &c->m->dom[c->dom];

	if (x->have & BIT(F_INIT_MS)) {
		d->init_ms = x->v[F_INIT_MS];
		d->have_init = 1;
	}
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
static int data_records(struct ctx *c, const struct tmpl *t, const uint8_t *p,
			uint32_t len)
{
	struct vals x;
	uint32_t off = 0;

	/* a set must hold a record: less is not padding but damage */
	if (len < t->min_len) {
		drop(c, SL_COLL_RECORD);
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
			drop(c, SL_COLL_RECORD);
			return 0;
		}
		if (recs_reserve(c->m, 1))
			return -ENOMEM;
		record_done(c, t, &x);
		off += rlen;
	}
	return 0;
}

/* ---- data held for its template --------------------------------------- */

static struct held *hold_at(const struct sl_flowmsg *m, uint32_t i)
{
	return &m->hold[(m->hold_head + i) % m->hold_max];
}

static void hold_kill(struct sl_flowmsg *m, struct held *h, int counted)
{
	if (counted)
		m->exp[m->dom[h->dom].exp]->st.dropped[SL_COLL_NO_TEMPLATE]++;
	h->live = 0;
	m->hold_live--;
	m->hold_bytes -= h->len;
}

/* Frees the head slots that are no longer live. */
static void hold_trim(struct sl_flowmsg *m)
{
	while (m->hold_count && !hold_at(m, 0)->live) {
		m->hold_head = (m->hold_head + 1) % m->hold_max;
		m->hold_count--;
	}
}

static int hold_too_old(const struct sl_flowmsg *m, const struct held *h,
			uint64_t now)
{
	return now > h->at_ns && now - h->at_ns > m->hold_ns;
}

static void hold_expire(struct sl_flowmsg *m, uint64_t now)
{
	for (uint32_t i = 0; i < m->hold_count; i++) {
		struct held *h = hold_at(m, i);

		if (h->live && hold_too_old(m, h, now))
			hold_kill(m, h, 1);
	}
	hold_trim(m);
}

/* Pushes out the oldest held sets until one of len bytes fits. */
static void hold_make_room(struct sl_flowmsg *m, uint32_t len)
{
	while (m->hold_count == m->hold_max ||
	       (m->hold_live && m->hold_bytes + len > HOLD_BYTES_MAX)) {
		struct held *h = hold_at(m, 0);

		if (h->live)
			hold_kill(m, h, 1);
		m->hold_head = (m->hold_head + 1) % m->hold_max;
		m->hold_count--;
		hold_trim(m);
	}
}

static int hold(struct ctx *c, uint16_t tid, const uint8_t *p, uint32_t len)
{
	struct sl_flowmsg *m = c->m;
	struct held *h;

	c->partial = 1;
	if (len > HOLD_BYTES_MAX) {
		drop(c, SL_COLL_NO_TEMPLATE);
		return 0;
	}
	hold_make_room(m, len);
	h = hold_at(m, m->hold_count);
	if (len > h->cap) {
		uint8_t *b = realloc(h->buf, len);

		if (!b)
			return -ENOMEM;
		h->buf = b;
		h->cap = len;
	}
	memcpy(h->buf, p, len);
	h->len = len;
	h->at_ns = c->now;
	h->dom = c->dom;
	h->export_s = c->export_s;
	h->uptime = c->uptime;
	h->tid = tid;
	h->live = 1;
	m->hold_count++;
	m->hold_live++;
	m->hold_bytes += len;
	c->ex->st.held++;
	return 0;
}

/* The template tid of the context's domain just came: its held sets are
 * decoded in the order they came, with their own messages' times. */
static int hold_release(struct ctx *c, uint16_t tid)
{
	struct sl_flowmsg *m = c->m;
	int rc = 0;

	hold_expire(m, c->now);
	for (uint32_t i = 0; i < m->hold_count && !rc; i++) {
		struct held *h = hold_at(m, i);
		struct ctx hc = *c;
		const struct tmpl *t;

		if (!h->live || h->dom != c->dom || h->tid != tid)
			continue;
		hc.export_s = h->export_s;
		hc.uptime = h->uptime;
		t = tmpl_find(&hc, tid);
		if (t)
			rc = data_records(&hc, t, h->buf, h->len);
		hold_kill(m, h, 0);
	}
	hold_trim(m);
	return rc;
}

/* ---- NetFlow v9 and IPFIX sets ------------------------------------------ */

static int data_set(struct ctx *c, uint16_t tid, const uint8_t *p, uint32_t len)
{
	const struct tmpl *t = tmpl_find(c, tid);

	if (!len)
		return 0;
	if (!t)
		return hold(c, tid, p, len);
	return data_records(c, t, p, len);
}

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
			drop(c, SL_COLL_SET);
			return 0;
		}
		if (id == tset)
			rc = template_set(c, body, slen - SET_HDR_LEN, 0);
		else if (id == oset)
			rc = template_set(c, body, slen - SET_HDR_LEN, 1);
		else if (id >= MIN_DATA_SET)
			rc = data_set(c, id, body, slen - SET_HDR_LEN);
		else
			drop(c, SL_COLL_SET); /* reserved id: skipped */
		off += slen;
	}
	/* v9 datagrams may be padded; IPFIX sets fill their message */
	if (!rc && off < len && c->version == 10)
		drop(c, SL_COLL_SET);
	return rc;
}

static int decode_v9(struct ctx *c, const uint8_t *p, uint32_t len)
{
	int d, rc;

	if (len < V9_HDR_LEN) {
		drop(c, SL_COLL_SHORT);
		return 0;
	}
	/* the count is not checked: exporters disagree on what it counts */
	if (len - V9_HDR_LEN < SET_HDR_LEN) {
		drop(c, SL_COLL_EMPTY);
		return 0;
	}
	d = dom_get(c, rd32(p + 16));
	if (d < 0) {
		drop(c, SL_COLL_EXPORTERS);
		return d == -ENOSPC ? 0 : d;
	}
	c->dom = (uint32_t)d;
	c->uptime = rd32(p + 4);
	c->export_s = rd32(p + 8);
	c->ex->st.messages++;
	rc = decode_sets(c, p + V9_HDR_LEN, len - V9_HDR_LEN);
	seq_track(c, &c->m->dom[c->dom].seq, rd32(p + 12), 1);
	return rc;
}

static int decode_ipfix(struct ctx *c, const uint8_t *p, uint32_t len)
{
	uint32_t hlen;
	int d, rc;

	if (len < IPFIX_HDR_LEN) {
		drop(c, SL_COLL_SHORT);
		return 0;
	}
	hlen = rd16(p + 2);
	if (hlen < IPFIX_HDR_LEN) {
		drop(c, SL_COLL_LENGTH);
		return 0;
	}
	/* a datagram cut short, or bytes after the message: what the
	 * header covers and the datagram holds is read */
	if (hlen != len) {
		drop(c, SL_COLL_LENGTH);
		if (hlen < len)
			len = hlen;
	}
	if (len == IPFIX_HDR_LEN) {
		drop(c, SL_COLL_EMPTY);
		return 0;
	}
	d = dom_get(c, rd32(p + 12));
	if (d < 0) {
		drop(c, SL_COLL_EXPORTERS);
		return d == -ENOSPC ? 0 : d;
	}
	c->dom = (uint32_t)d;
	c->export_s = rd32(p + 4);
	c->ex->st.messages++;
	rc = decode_sets(c, p + IPFIX_HDR_LEN, len - IPFIX_HDR_LEN);
	seq_track(c, &c->m->dom[c->dom].seq, rd32(p + 8), 0);
	return rc;
}

/* ---- API ---------------------------------------------------------------- */

static int known_version(uint16_t v)
{
	return v == 5 || v == 9 || v == 10;
}

/* The exporter's index, 0 when the message goes to the "no exporter"
 * slot (its reason already counted), or a negative error. */
static int exporter_of(struct sl_flowmsg *m, const uint8_t *msg, uint32_t len,
		       const struct ident *id)
{
	uint32_t i = exp_find(m, id);

	if (i)
		return (int)i;
	if (len < 2) {
		m->exp[0]->st.dropped[SL_COLL_SHORT]++;
		return 0;
	}
	if (!known_version(rd16(msg))) {
		m->exp[0]->st.dropped[SL_COLL_VERSION]++;
		return 0;
	}
	if (m->n_exp - 1 >= m->max_exporters) {
		m->exp[0]->st.dropped[SL_COLL_EXPORTERS]++;
		return 0;
	}
	return exp_add(m, id);
}

int sl_flowmsg_decode(struct sl_flowmsg *m, const uint8_t *msg, uint32_t len,
		      const uint8_t *addr, int family, uint16_t port,
		      uint64_t now_ns)
{
	struct ident id;
	struct ctx c;
	int rc, e;

	if (!m)
		return -EINVAL;
	m->n_recs = 0;
	if ((!msg && len) || !addr || (family != 4 && family != 6))
		return -EINVAL;
	ident_make(&id, addr, family, port);
	e = exporter_of(m, msg, len, &id);
	if (e <= 0)
		return e;
	if (m->hold_live)
		hold_expire(m, now_ns);
	memset(&c, 0, sizeof(c));
	c.m = m;
	c.exp = (uint32_t)e;
	c.ex = m->exp[e];
	c.now = now_ns;
	if (len < 2) {
		drop(&c, SL_COLL_SHORT);
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
		drop(&c, SL_COLL_VERSION);
		rc = 0;
	}
	return rc < 0 ? rc : (int)m->n_recs;
}

const struct sl_coll_rec *sl_flowmsg_records(const struct sl_flowmsg *m)
{
	return m ? m->recs : NULL;
}

uint32_t sl_flowmsg_exporters(const struct sl_flowmsg *m)
{
	return m ? m->n_exp : 0;
}

const struct sl_exporter_stats *sl_flowmsg_exporter(const struct sl_flowmsg *m,
						    uint32_t index)
{
	if (!m || index >= m->n_exp)
		return NULL;
	return &m->exp[index]->st;
}

void sl_flowmsg_expire(struct sl_flowmsg *m, uint64_t now_ns)
{
	if (!m)
		return;
	hold_expire(m, now_ns);
	for (uint32_t i = 0; i < m->n_tmpl; i++) {
		struct tmpl *t = &m->tmpl[i];

		if (!tmpl_live(m, t, now_ns))
			t->valid = 0;
		/* the slot stays for its key; its operations can go */
		if (!t->valid && t->ops) {
			free(t->ops);
			t->ops = NULL;
			t->cap_ops = 0;
		}
	}
}

const char *sl_coll_drop_name(int reason)
{
	static const char *const names[SL_COLL_COUNT] = {
	    [SL_COLL_OK] = "ok",
	    [SL_COLL_SHORT] = "short",
	    [SL_COLL_VERSION] = "version",
	    [SL_COLL_LENGTH] = "length",
	    [SL_COLL_SET] = "set",
	    [SL_COLL_TEMPLATE] = "template",
	    [SL_COLL_NO_TEMPLATE] = "no_template",
	    [SL_COLL_RECORD] = "record",
	    [SL_COLL_EMPTY] = "empty",
	    [SL_COLL_EXPORTERS] = "exporters",
	};

	if (reason < 0 || reason >= SL_COLL_COUNT)
		return "unknown";
	return names[reason];
}

void sl_flowmsg_free(struct sl_flowmsg *m)
{
	if (!m)
		return;
	for (uint32_t i = 0; i < m->n_exp; i++)
		free(m->exp[i]);
	for (uint32_t i = 0; i < m->n_tmpl; i++)
		free(m->tmpl[i].ops);
	for (uint32_t i = 0; m->hold && i < m->hold_max; i++)
		free(m->hold[i].buf);
	free(m->hold);
	free(m->exp);
	free(m->exp_hash);
	free(m->dom);
	free(m->dom_tab.slot);
	free(m->tmpl);
	free(m->tmpl_tab.slot);
	free(m->scratch);
	free(m->recs);
	free(m);
}

int sl_flowmsg_new(struct sl_flowmsg **out, const struct sl_flowmsg_opts *o)
{
	struct sl_flowmsg *m;
	int rc = -ENOMEM;

	if (!out)
		return -EINVAL;
	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->tmpl_timeout_ns = o && o->template_timeout_ns
				 ? o->template_timeout_ns
				 : DEF_TEMPLATE_TIMEOUT;
	m->hold_ns = o && o->hold_ns ? o->hold_ns : DEF_HOLD_NS;
	m->hold_max = o && o->hold_max ? o->hold_max : DEF_HOLD_MAX;
	m->max_exporters =
	    o && o->max_exporters ? o->max_exporters : DEF_MAX_EXPORTERS;
	if (m->max_exporters > MAX_EXPORTERS_CAP)
		m->max_exporters = MAX_EXPORTERS_CAP;
	m->hold = calloc(m->hold_max, sizeof(*m->hold));
	if (!m->hold)
		goto out_free;
	m->exp_mask = 15;
	m->exp_hash = calloc(m->exp_mask + 1, sizeof(*m->exp_hash));
	if (!m->exp_hash)
		goto out_free;
	if (table_init(&m->dom_tab, 16) || table_init(&m->tmpl_tab, 64))
		goto out_free;
	if (grow((void **)&m->exp, &m->cap_exp, 1, sizeof(*m->exp)))
		goto out_free;
	/* slot 0: the messages of no exporter */
	m->exp[0] = calloc(1, sizeof(*m->exp[0]));
	if (!m->exp[0])
		goto out_free;
	m->n_exp = 1;
	*out = m;
	return 0;
out_free:
	sl_flowmsg_free(m);
	return rc;
}
