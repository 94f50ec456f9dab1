/* collector_state.c - the collector's state: a key/value table, the
 * exporters, their domains and templates (see collector.h), and creating,
 * expiring and freeing it all.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "collector.h"

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
	4096 /* per exporter, slots of withdrawn ones included                 \
	      */

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* Grows *arr (of n elements of size sz) to at least want elements. */
int collector_grow(void **arr, uint32_t *cap, uint32_t want, size_t sz)
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

void collector_ident_make(struct ident *id, const uint8_t *addr, int family,
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

uint32_t collector_exp_find(const struct sl_collector_msg *m,
			    const struct ident *id)
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

static int exp_hash_grow(struct sl_collector_msg *m)
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

int collector_exp_add(struct sl_collector_msg *m, const struct ident *id)
{
	struct exporter *e;

	if (m->n_exp * 2 > m->exp_mask && exp_hash_grow(m))
		return -ENOMEM;
	if (collector_grow((void **)&m->exp, &m->cap_exp, m->n_exp + 1,
			   sizeof(*m->exp)))
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

/* An exporter at MAX_DOMAINS gives up its least recently heard domain:
 * a source inventing domains (a fuzzer, a broken exporter) cannot lock
 * real ones out. The slot's templates die with its generation, its held
 * data is dropped (counted). */
static uint32_t dom_recycle(struct ctx *c)
{
	struct sl_collector_msg *m = c->m;
	uint32_t best = UINT32_MAX;

	for (uint32_t i = 0; i < m->n_dom; i++)
		if (m->dom[i].exp == c->exp &&
		    (best == UINT32_MAX ||
		     m->dom[i].seen_ns < m->dom[best].seen_ns))
			best = i;
	for (uint32_t i = 0; i < m->hold_count; i++) {
		struct held *h = collector_hold_at(m, i);

		if (h->live && h->dom == best)
			collector_hold_kill(m, h, 1);
	}
	collector_hold_trim(m);
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
int collector_dom_get(struct ctx *c, uint32_t id)
{
	struct sl_collector_msg *m = c->m;
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
		if (collector_grow((void **)&m->dom, &m->cap_dom, m->n_dom + 1,
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
static int tmpl_live(const struct sl_collector_msg *m, const struct tmpl *t,
		     uint64_t now)
{
	if (!t->valid || t->gen != m->dom[t->dom].gen[t->opt])
		return 0;
	return now <= t->seen_ns || now - t->seen_ns <= m->tmpl_timeout_ns;
}

/* The valid template of the context's domain, or NULL. */
struct tmpl *collector_tmpl_find(struct ctx *c, uint16_t tid)
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
struct tmpl *collector_tmpl_slot(struct ctx *c, uint16_t tid, int *err)
{
	struct sl_collector_msg *m = c->m;
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
		if (collector_grow((void **)&m->tmpl, &m->cap_tmpl,
				   m->n_tmpl + 1, sizeof(*m->tmpl)))
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

/* ---- API ---------------------------------------------------------------- */

const struct sl_collector_rec *
sl_collector_msg_records(const struct sl_collector_msg *m)
{
	return m ? m->recs : NULL;
}

uint32_t sl_collector_msg_exporters(const struct sl_collector_msg *m)
{
	return m ? m->n_exp : 0;
}

const struct sl_exporter_stats *
sl_collector_msg_exporter(const struct sl_collector_msg *m, uint32_t index)
{
	if (!m || index >= m->n_exp)
		return NULL;
	return &m->exp[index]->st;
}

void sl_collector_msg_expire(struct sl_collector_msg *m, uint64_t now_ns)
{
	if (!m)
		return;
	collector_hold_expire(m, now_ns);
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

const char *sl_collector_drop_name(int reason)
{
	static const char *const names[SL_COLLECTOR_DROP_COUNT] = {
	    [SL_COLLECTOR_DROP_OK] = "ok",
	    [SL_COLLECTOR_DROP_SHORT] = "short",
	    [SL_COLLECTOR_DROP_VERSION] = "version",
	    [SL_COLLECTOR_DROP_LENGTH] = "length",
	    [SL_COLLECTOR_DROP_SET] = "set",
	    [SL_COLLECTOR_DROP_TEMPLATE] = "template",
	    [SL_COLLECTOR_DROP_NO_TEMPLATE] = "no_template",
	    [SL_COLLECTOR_DROP_RECORD] = "record",
	    [SL_COLLECTOR_DROP_EMPTY] = "empty",
	    [SL_COLLECTOR_DROP_EXPORTERS] = "exporters",
	};

	if (reason < 0 || reason >= SL_COLLECTOR_DROP_COUNT)
		return "unknown";
	return names[reason];
}

void sl_collector_msg_free(struct sl_collector_msg *m)
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

int sl_collector_msg_new(struct sl_collector_msg **out,
			 const struct sl_collector_msg_opts *o)
{
	struct sl_collector_msg *m;
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
	if (collector_grow((void **)&m->exp, &m->cap_exp, 1, sizeof(*m->exp)))
		goto out_free;
	/* slot 0: the messages of no exporter */
	m->exp[0] = calloc(1, sizeof(*m->exp[0]));
	if (!m->exp[0])
		goto out_free;
	m->n_exp = 1;
	*out = m;
	return 0;
out_free:
	sl_collector_msg_free(m);
	return rc;
}
