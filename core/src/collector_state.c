/* collector_state.c - the collector's state: a key/value table, the
 * exporters, their domains and templates (see collector.h), and creating,
 * expiring and freeing it all.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "collector.h"
#include "hash.h"

#define DEF_TEMPLATE_TIMEOUT (1800 * NS_PER_S)
#define DEF_HOLD_NS	     (5 * NS_PER_S)
#define DEF_HOLD_MAX	     256
#define DEF_MAX_EXPORTERS    65536
#define DEF_MAX_MEMORY	     (256ULL << 20)
#define MIN_MAX_MEMORY	     (64ULL << 10)
/* Exporter indexes share a 64-bit key with the domain id. */
#define MAX_EXPORTERS_CAP (1u << 24)
/* Per exporter, against a source that invents domains and templates:
 * beyond them it gives up its own least recently used ones (counted), so
 * one broken exporter does not push out the state of the others. */
#define MAX_DOMAINS   1024
#define MAX_TEMPLATES 4096

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

/* An array of n elements of size sz grown (doubling) to hold want,
 * charged to the state. */
static int grow_charged(struct sl_collector_msg *m, void **arr, uint32_t *cap,
			uint32_t want, size_t sz)
{
	uint32_t n = *cap ? *cap : 16;
	uint64_t more;
	void *p;

	if (want <= *cap)
		return 0;
	while (n < want) {
		if (n > UINT32_MAX / 2)
			return -ENOMEM;
		n *= 2;
	}
	more = (uint64_t)(n - *cap) * sz + (*cap ? 0 : ALLOC_OVERHEAD);
	if (collector_mem_charge(m, more))
		return -ENOSPC;
	p = realloc(*arr, (size_t)n * sz);
	if (!p) {
		collector_mem_uncharge(m, more);
		return -ENOMEM;
	}
	*arr = p;
	*cap = n;
	return 0;
}

/* ---- key/value table ---------------------------------------------------- */

static uint64_t table_bytes(uint32_t slots)
{
	return (uint64_t)slots * sizeof(struct kv) + ALLOC_OVERHEAD;
}

static int table_init(struct sl_collector_msg *m, struct table *t,
		      uint32_t slots)
{
	if (collector_mem_charge(m, table_bytes(slots)))
		return -ENOSPC;
	t->slot = calloc(slots, sizeof(*t->slot));
	if (!t->slot) {
		collector_mem_uncharge(m, table_bytes(slots));
		return -ENOMEM;
	}
	t->mask = slots - 1;
	t->n = 0;
	return 0;
}

static void *table_find(const struct table *t, uint64_t key)
{
	uint32_t i = (uint32_t)sl_mix64(key) & t->mask;

	for (;; i = (i + 1) & t->mask) {
		const struct kv *s = &t->slot[i];

		if (s->key == key)
			return s->val;
		if (!s->key)
			return NULL;
	}
}

static void table_put_slot(struct kv *slot, uint32_t mask, uint64_t key,
			   void *val)
{
	uint32_t i = (uint32_t)sl_mix64(key) & mask;

	while (slot[i].key)
		i = (i + 1) & mask;
	slot[i].key = key;
	slot[i].val = val;
}

/* Room for one more key (the table at most half full); may evict. */
static int table_reserve(struct sl_collector_msg *m, struct table *t)
{
	uint32_t slots = (t->mask + 1) * 2;
	struct kv *s;

	if ((t->n + 1) * 2 <= t->mask + 1)
		return 0;
	if (collector_mem_charge(m, table_bytes(slots)))
		return -ENOSPC;
	s = calloc(slots, sizeof(*s));
	if (!s) {
		collector_mem_uncharge(m, table_bytes(slots));
		return -ENOMEM;
	}
	for (uint32_t i = 0; i <= t->mask; i++)
		if (t->slot[i].key)
			table_put_slot(s, slots - 1, t->slot[i].key,
				       t->slot[i].val);
	free(t->slot);
	collector_mem_uncharge(m, table_bytes(t->mask + 1));
	t->slot = s;
	t->mask = slots - 1;
	return 0;
}

/* Adds a key known to be absent, after table_reserve(). */
static void table_put(struct table *t, uint64_t key, void *val)
{
	table_put_slot(t->slot, t->mask, key, val);
	t->n++;
}

/* Does an entry whose home is k move to the hole at i, from j? Only if
 * k is not cyclically in (i, j]. */
static int shift_ok(uint32_t i, uint32_t j, uint32_t k)
{
	return i <= j ? (k <= i || k > j) : (k <= i && k > j);
}

/* Removes key (backward shift: no tombstones); returns its value. */
void *collector_table_del(struct table *t, uint64_t key)
{
	uint32_t i = (uint32_t)sl_mix64(key) & t->mask, j;
	void *val;

	while (t->slot[i].key != key) {
		if (!t->slot[i].key)
			return NULL;
		i = (i + 1) & t->mask;
	}
	val = t->slot[i].val;
	for (j = (i + 1) & t->mask; t->slot[j].key; j = (j + 1) & t->mask) {
		if (shift_ok(i, j, (uint32_t)sl_mix64(t->slot[j].key) & t->mask)) {
			t->slot[i] = t->slot[j];
			i = j;
		}
	}
	t->slot[i].key = 0;
	t->slot[i].val = NULL;
	t->n--;
	return val;
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

static uint32_t ident_hash(const uint8_t *addr, uint16_t port, uint8_t family)
{
	uint64_t a, b;

	memcpy(&a, addr, 8);
	memcpy(&b, addr + 8, 8);
	return (uint32_t)sl_mix64(a ^ sl_mix64(b ^ ((uint64_t)port << 8 | family)));
}

static uint32_t exp_home(const struct sl_collector_msg *m, uint32_t idx)
{
	const struct sl_exporter_stats *st = &m->exp[idx]->st;

	return ident_hash(st->addr, st->port, st->family) & m->exp_mask;
}

static int ident_is(const struct exporter *e, const struct ident *id)
{
	return e->st.port == id->port && e->st.family == id->family &&
	       !memcmp(e->st.addr, id->addr, 16);
}

uint32_t collector_exp_find(const struct sl_collector_msg *m,
			    const struct ident *id)
{
	uint32_t i = ident_hash(id->addr, id->port, id->family) & m->exp_mask;

	for (;; i = (i + 1) & m->exp_mask) {
		uint32_t x = m->exp_hash[i];

		if (!x)
			return 0;
		if (ident_is(m->exp[x - 1], id))
			return x - 1;
	}
}

static void exp_hash_put(struct sl_collector_msg *m, uint32_t *h, uint32_t mask,
			 uint32_t idx)
{
	const struct sl_exporter_stats *st = &m->exp[idx]->st;
	uint32_t i = ident_hash(st->addr, st->port, st->family) & mask;

	while (h[i])
		i = (i + 1) & mask;
	h[i] = idx + 1;
}

/* Room for one more exporter in the hash (at most half full). */
static int exp_hash_reserve(struct sl_collector_msg *m)
{
	uint32_t slots = (m->exp_mask + 1) * 2;
	uint64_t bytes = (uint64_t)slots * sizeof(uint32_t) + ALLOC_OVERHEAD;
	uint32_t *h;

	if ((m->exp_hashed + 1) * 2 <= m->exp_mask + 1)
		return 0;
	if (collector_mem_charge(m, bytes))
		return -ENOSPC;
	h = calloc(slots, sizeof(*h));
	if (!h) {
		collector_mem_uncharge(m, bytes);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i <= m->exp_mask; i++)
		if (m->exp_hash[i])
			exp_hash_put(m, h, slots - 1, m->exp_hash[i] - 1);
	free(m->exp_hash);
	collector_mem_uncharge(
	    m, (uint64_t)(m->exp_mask + 1) * sizeof(uint32_t) + ALLOC_OVERHEAD);
	m->exp_hash = h;
	m->exp_mask = slots - 1;
	return 0;
}

void collector_exp_unhash(struct sl_collector_msg *m, uint32_t idx)
{
	uint32_t i = exp_home(m, idx), j;

	while (m->exp_hash[i] != idx + 1)
		i = (i + 1) & m->exp_mask;
	for (j = (i + 1) & m->exp_mask; m->exp_hash[j];
	     j = (j + 1) & m->exp_mask) {
		if (shift_ok(i, j, exp_home(m, m->exp_hash[j] - 1))) {
			m->exp_hash[i] = m->exp_hash[j];
			i = j;
		}
	}
	m->exp_hash[i] = 0;
	m->exp_hashed--;
}

/* A new exporter's index; -ENOSPC when none may be evicted to make room
 * (max_exporters, or memory), -ENOMEM. At max_exporters the least
 * recently used one goes. */
int collector_exp_add(struct sl_collector_msg *m, const struct ident *id)
{
	const uint64_t cost = sizeof(struct exporter) + ALLOC_OVERHEAD;
	struct exporter *e;
	uint32_t idx;
	int rc;

	if (m->n_live_exp >= m->max_exporters) {
		struct link *l = m->exp_lru.prev;

		if (l == &m->exp_lru ||
		    link_entry(l, struct exporter, lru)->batch == m->batch)
			return -ENOSPC;
		collector_exp_evict(m, link_entry(l, struct exporter, lru));
	}
	rc = collector_mem_charge(m, cost);
	if (rc)
		return rc;
	if (!m->n_free) {
		rc = grow_charged(m, (void **)&m->exp, &m->cap_exp,
				  m->n_exp + 1, sizeof(*m->exp));
		if (!rc)
			rc =
			    grow_charged(m, (void **)&m->exp_free, &m->cap_free,
					 m->n_exp + 1, sizeof(*m->exp_free));
		if (rc)
			goto out_uncharge;
	}
	rc = exp_hash_reserve(m);
	if (rc)
		goto out_uncharge;
	rc = -ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e)
		goto out_uncharge;
	/* evictions above may have freed an index */
	idx = m->n_free ? m->exp_free[--m->n_free] : m->n_exp++;
	memcpy(e->st.addr, id->addr, 16);
	e->st.family = id->family;
	e->st.port = id->port;
	e->st.generation = ++m->exp_serial;
	e->idx = idx;
	link_init(&e->lru);
	link_init(&e->doms);
	link_init(&e->tmpls);
	m->exp[idx] = e;
	exp_hash_put(m, m->exp_hash, m->exp_mask, idx);
	m->exp_hashed++;
	m->n_live_exp++;
	collector_touch_exp(m, e);
	return (int)idx;
out_uncharge:
	collector_mem_uncharge(m, cost);
	return rc;
}

/* ---- domains and templates ---------------------------------------------- */

static uint64_t dom_key(uint32_t exp, uint8_t version, uint32_t id)
{
	return 1ULL << 63 | (uint64_t)exp << 36 |
	       (uint64_t)(version & 15) << 32 | id;
}

/* serial: below 2^47 (a domain a microsecond for four years) */
static uint64_t tmpl_key(const struct domain *d, uint16_t tid)
{
	return 1ULL << 63 | (d->serial & ((1ULL << 47) - 1)) << 16 | tid;
}

/* The domain of the context's exporter (c->dom), created if new: past
 * MAX_DOMAINS the exporter gives up its least recently used one, so a
 * source inventing domains (a fuzzer, a broken exporter) cannot lock real
 * ones out. -ENOSPC: no memory could be freed for it. */
int collector_dom_get(struct ctx *c, uint32_t id)
{
	struct sl_collector_msg *m = c->m;
	const uint64_t cost = sizeof(struct domain) + ALLOC_OVERHEAD;
	uint64_t key = dom_key(c->exp, c->version, id);
	struct domain *d = table_find(&m->dom_tab, key);
	int rc;

	if (d)
		goto out_found;
	if (c->ex->n_domains >= MAX_DOMAINS)
		collector_dom_free(
		    m, link_entry(c->ex->doms.prev, struct domain, xsib), 1);
	rc = collector_mem_charge(m, cost);
	if (rc)
		return rc;
	rc = table_reserve(m, &m->dom_tab);
	if (rc)
		goto out_uncharge;
	rc = -ENOMEM;
	d = calloc(1, sizeof(*d));
	if (!d)
		goto out_uncharge;
	d->key = key;
	d->serial = ++m->dom_serial;
	d->ex = c->ex;
	d->exp = c->exp;
	d->id = id;
	d->version = c->version;
	link_init(&d->lru);
	link_init(&d->xsib);
	link_init(&d->tmpls);
	table_put(&m->dom_tab, key, d);
	c->ex->n_domains++;
	m->n_live_dom++;
out_found:
	d->seen_ns = c->now;
	collector_touch_dom(m, d);
	c->dom = d;
	return 0;
out_uncharge:
	collector_mem_uncharge(m, cost);
	return rc;
}

static int tmpl_fresh(const struct sl_collector_msg *m, const struct tmpl *t,
		      uint64_t now)
{
	return t->stream || now <= t->seen_ns ||
	       now - t->seen_ns <= m->tmpl_timeout_ns;
}

/* Withdrawn, alone or with all of its domain's, and not defined again. */
static int tmpl_gone(const struct tmpl *t)
{
	return t->withdrawn || t->gen != t->dom->gen[t->opt];
}

/* Still usable at now: not withdrawn, expired, or replaced. */
static int tmpl_live(const struct sl_collector_msg *m, const struct tmpl *t,
		     uint64_t now)
{
	return t->valid && !tmpl_gone(t) && tmpl_fresh(m, t, now);
}

/* Data for tid now is for a withdrawn template (its mark is kept for the
 * template timeout): dropped, not held for a definition that may give the
 * id another layout. */
int collector_tmpl_withdrawn(struct ctx *c, uint16_t tid)
{
	const struct tmpl *t = table_find(&c->m->tmpl_tab, tmpl_key(c->dom, tid));

	return t && tmpl_gone(t) && tmpl_fresh(c->m, t, c->now);
}

/* The valid template of the context's domain (a use: it is touched), or
 * NULL. */
struct tmpl *collector_tmpl_find(struct ctx *c, uint16_t tid)
{
	struct tmpl *t = table_find(&c->m->tmpl_tab, tmpl_key(c->dom, tid));

	if (!t)
		return NULL;
	if (!tmpl_live(c->m, t, c->now)) {
		t->valid = 0;
		return NULL;
	}
	/* used: as alive as refreshed (IPFIX over TCP sends a template once
	 * per session, RFC 7011 section 8) */
	t->seen_ns = c->now;
	collector_touch_tmpl(c->m, t);
	return t;
}

/* The template for (domain, tid), created if new (not valid until
 * stored); past MAX_TEMPLATES the exporter gives up its least recently
 * used one. NULL with *err -ENOSPC (no memory could be freed for it) or
 * -ENOMEM. */
struct tmpl *collector_tmpl_slot(struct ctx *c, uint16_t tid, int *err)
{
	struct sl_collector_msg *m = c->m;
	const uint64_t cost = sizeof(struct tmpl) + ALLOC_OVERHEAD;
	uint64_t key = tmpl_key(c->dom, tid);
	struct tmpl *t = table_find(&m->tmpl_tab, key);

	*err = 0;
	if (t)
		return t;
	if (c->ex->n_tmpls >= MAX_TEMPLATES)
		collector_tmpl_free(
		    m, link_entry(c->ex->tmpls.prev, struct tmpl, xsib), 1);
	*err = collector_mem_charge(m, cost);
	if (*err)
		return NULL;
	*err = table_reserve(m, &m->tmpl_tab);
	if (*err)
		goto out_uncharge;
	*err = -ENOMEM;
	t = calloc(1, sizeof(*t));
	if (!t)
		goto out_uncharge;
	*err = 0;
	t->key = key;
	t->dom = c->dom;
	t->id = tid;
	link_init(&t->lru);
	link_init(&t->dsib);
	link_init(&t->xsib);
	link_front(&c->dom->tmpls, &t->dsib);
	table_put(&m->tmpl_tab, key, t);
	c->ex->n_tmpls++;
	m->n_live_tmpl++;
	collector_touch_tmpl(m, t);
	return t;
out_uncharge:
	collector_mem_uncharge(m, cost);
	return NULL;
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
	if (!m || index >= m->n_exp || !m->exp[index])
		return NULL;
	return &m->exp[index]->st;
}

/* Frees the templates that can no longer be used: withdrawn, expired,
 * replaced by an all-templates withdrawal. */
void sl_collector_msg_expire(struct sl_collector_msg *m, uint64_t now_ns)
{
	struct link *l, *prev;

	if (!m)
		return;
	collector_hold_expire(m, now_ns);
	for (l = m->tmpl_lru.prev; l != &m->tmpl_lru; l = prev) {
		struct tmpl *t = link_entry(l, struct tmpl, lru);

		prev = l->prev;
		if (!tmpl_live(m, t, now_ns) &&
		    !(tmpl_gone(t) && tmpl_fresh(m, t, now_ns)))
			collector_tmpl_free(m, t, 0);
	}
}

void collector_session_end(struct sl_collector_msg *m, const uint8_t *addr,
			   int family, uint16_t port)
{
	struct exporter *ex;
	struct link *l, *next;
	struct ident id;
	uint32_t e;

	collector_ident_make(&id, addr, family, port);
	e = collector_exp_find(m, &id);
	if (!e)
		return; /* never sent a message, or evicted with them */
	ex = m->exp[e];
	for (l = ex->tmpls.next; l != &ex->tmpls; l = next) {
		struct tmpl *t = link_entry(l, struct tmpl, xsib);

		next = l->next;
		if (t->stream)
			collector_tmpl_free(m, t, 0);
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
	    [SL_COLLECTOR_DROP_MEMORY] = "memory",
	    [SL_COLLECTOR_DROP_WITHDRAWN] = "withdrawn",
	};

	if (reason < 0 || reason >= SL_COLLECTOR_DROP_COUNT)
		return "unknown";
	return names[reason];
}

void sl_collector_msg_free(struct sl_collector_msg *m)
{
	struct link *l, *next;

	if (!m)
		return;
	for (l = m->tmpl_lru.next; l && l != &m->tmpl_lru; l = next) {
		struct tmpl *t = link_entry(l, struct tmpl, lru);

		next = l->next;
		free(t->ops);
		free(t);
	}
	for (l = m->dom_lru.next; l && l != &m->dom_lru; l = next) {
		next = l->next;
		free(link_entry(l, struct domain, lru));
	}
	for (uint32_t i = 0; i < m->n_exp; i++)
		free(m->exp[i]);
	for (uint32_t i = 0; m->hold && i < m->hold_max; i++)
		free(m->hold[i].buf);
	free(m->hold);
	free(m->exp);
	free(m->exp_free);
	free(m->exp_hash);
	free(m->dom_tab.slot);
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
	link_init(&m->exp_lru);
	link_init(&m->dom_lru);
	link_init(&m->tmpl_lru);
	m->tmpl_timeout_ns = o && o->template_timeout_ns
				 ? o->template_timeout_ns
				 : DEF_TEMPLATE_TIMEOUT;
	m->hold_ns = o && o->hold_ns ? o->hold_ns : DEF_HOLD_NS;
	m->hold_max = o && o->hold_max ? o->hold_max : DEF_HOLD_MAX;
	m->max_exporters =
	    o && o->max_exporters ? o->max_exporters : DEF_MAX_EXPORTERS;
	if (m->max_exporters > MAX_EXPORTERS_CAP)
		m->max_exporters = MAX_EXPORTERS_CAP;
	m->max_mem = o && o->max_memory ? o->max_memory : DEF_MAX_MEMORY;
	if (m->max_mem < MIN_MAX_MEMORY)
		m->max_mem = MIN_MAX_MEMORY;
	m->hold = calloc(m->hold_max, sizeof(*m->hold));
	if (!m->hold)
		goto out_free;
	/* the fixed part: charged too, nothing to evict yet */
	m->exp_mask = 15;
	m->exp_hash = calloc(m->exp_mask + 1, sizeof(*m->exp_hash));
	if (!m->exp_hash)
		goto out_free;
	m->mem = (m->exp_mask + 1) * sizeof(*m->exp_hash) + ALLOC_OVERHEAD +
		 sizeof(*m->exp[0]) + ALLOC_OVERHEAD;
	if (table_init(m, &m->dom_tab, 16) || table_init(m, &m->tmpl_tab, 64))
		goto out_free;
	if (grow_charged(m, (void **)&m->exp, &m->cap_exp, 1,
			 sizeof(*m->exp)) ||
	    grow_charged(m, (void **)&m->exp_free, &m->cap_free, 1,
			 sizeof(*m->exp_free)))
		goto out_free;
	/* slot 0: the messages of no exporter, and evicted exporters */
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
