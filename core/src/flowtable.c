/* flowtable.c - the flow table: pool, hash, aliases and the bounded table.
 *
 * Flows live in a preallocated pool (pages are touched only as slots are
 * first used), chained by slot in a power-of-two hash table of canonical
 * keys. A flow can own extra keys (aliases, from sl_engine_update) in a
 * second hash table of the same size. With max_flows set the table is
 * bounded: at the limit it trims unprotected flows, lowest score first,
 * down to low_flows. The per-packet lookups are inline in flowtable.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "flowtable.h"

static int timeout_class(uint8_t proto)
{
	switch (proto) {
	case 6:
		return SL_TIMEOUT_TCP;
	case 17:
		return SL_TIMEOUT_UDP;
	case 1:
	case 58:
		return SL_TIMEOUT_ICMP;
	}
	return SL_TIMEOUT_OTHER;
}

/* Stops at the end of the chain: a slot not in it is left alone. */
static void hash_unlink(struct sl_engine *e, uint32_t slot)
{
	uint32_t *pp = bucket_of(e, e->pool[slot].hash);

	while (*pp && *pp != slot + 1)
		pp = &e->pool[*pp - 1].hnext;
	if (*pp)
		*pp = e->pool[slot].hnext;
}

static int slot_alloc(struct sl_engine *e, uint32_t *slot)
{
	if (e->free_head != SL_NIL) {
		*slot = e->free_head;
		e->free_head = e->pool[*slot].idle.next;
		return 0;
	}
	if (e->pool_used == e->pool_size)
		return SL_E_POOL;
	*slot = e->pool_used++;
	if (e->pool_used > e->prefault_at)
		sl_prefault_ask(e);
	return 0;
}

/* ---- aliases (extra keys from sl_engine_update) ----------------------- */

static uint32_t *abucket_of(struct sl_engine *e, uint32_t hash)
{
	return &e->abuckets[hash & e->bucket_mask];
}

struct sl_alias *sl_alias_lookup(struct sl_engine *e, const struct sl_key *ck,
				 uint32_t hash)
{
	if (!e->n_aliases)
		return NULL;
	for (uint32_t a = *abucket_of(e, hash); a;
	     a = e->aliases[a - 1].hnext) {
		struct sl_alias *al = &e->aliases[a - 1];

		if (al->hash == hash && key_equal(&al->key, ck))
			return al;
	}
	return NULL;
}

int sl_alias_reserve(struct sl_engine *e, uint32_t n)
{
	if (!e->abuckets) {
		e->abuckets =
		    calloc((size_t)e->bucket_mask + 1, sizeof(*e->abuckets));
		if (!e->abuckets)
			return -ENOMEM;
	}
	return sl_grow((void **)&e->aliases, &e->cap_aliases,
		       e->aliases_used + n, sizeof(*e->aliases));
}

void sl_alias_link(struct sl_engine *e, struct sl_flow *f,
		   const struct sl_key *ck, uint32_t hash, int swapped)
{
	struct sl_alias *al;
	uint32_t a, *b;

	if (e->alias_free) {
		a = e->alias_free;
		e->alias_free = e->aliases[a - 1].fnext;
	} else {
		a = ++e->aliases_used;
	}
	al = &e->aliases[a - 1];
	al->key = *ck;
	al->hash = hash;
	al->slot = slot_of(e, f);
	al->swapped = (uint8_t)swapped;
	b = abucket_of(e, hash);
	al->hnext = *b;
	*b = a;
	al->fnext = f->aliases;
	f->aliases = a;
	e->n_aliases++;
}

static void aliases_free(struct sl_engine *e, struct sl_flow *f)
{
	uint32_t a = f->aliases;

	while (a) {
		struct sl_alias *al = &e->aliases[a - 1];
		uint32_t next = al->fnext, *pp = abucket_of(e, al->hash);

		while (*pp != a)
			pp = &e->aliases[*pp - 1].hnext;
		*pp = al->hnext;
		al->fnext = e->alias_free;
		e->alias_free = a;
		e->n_aliases--;
		a = next;
	}
	f->aliases = 0;
}

/* ---- the bounded table ----------------------------------------------- */

static int trim_order(const void *a, const void *b)
{
	const struct sl_trim_cand *x = a, *y = b;

	if (x->score != y->score)
		return x->score < y->score ? -1 : 1;
	if (x->idle_clock != y->idle_clock)
		return x->idle_clock < y->idle_clock ? -1 : 1;
	return x->fid < y->fid ? -1 : x->fid > y->fid;
}

static void cand_swap(struct sl_trim_cand *a, struct sl_trim_cand *b)
{
	struct sl_trim_cand t = *a;

	*a = *b;
	*b = t;
}

/* Moves the k smallest candidates (trim_order) to the front, in no
 * particular order: a trim needs which flows, not their order, and a full
 * sort per trim costs too much when low_flows is close to max_flows. */
static void select_smallest(struct sl_trim_cand *c, uint32_t n, uint32_t k)
{
	uint32_t lo = 0, hi = n - 1;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2, store = lo;

		cand_swap(&c[mid], &c[hi]); /* pivot to the end */
		for (uint32_t i = lo; i < hi; i++)
			if (trim_order(&c[i], &c[hi]) < 0)
				cand_swap(&c[i], &c[store++]);
		cand_swap(&c[store], &c[hi]);
		if (store == k)
			return;
		if (store < k)
			lo = store + 1;
		else
			hi = store - 1;
	}
}

/* Ends unprotected flows past their grace period, lowest score then least
 * recently active first, until low_flows remain. Returns how many ended. */
static int table_trim(struct sl_engine *e)
{
	uint32_t n = 0, target = e->cfg.low_flows, ended = 0;
	int rc;

	e->last_trim = e->now ? e->now : 1;
	e->stats.trims++;
	if (e->stats.flows_active <= target)
		return 0;
	rc = sl_grow((void **)&e->trim_list, &e->cap_trim,
		     (uint32_t)e->stats.flows_active, sizeof(*e->trim_list));
	if (rc)
		return rc;
	for (int c = 0; c < SL_TIMEOUT_COUNT; c++) {
		for (uint32_t s = e->idle[c].head; s != SL_NIL;
		     s = e->pool[s].idle.next) {
			const struct sl_flow *f = &e->pool[s];

			if (f->protect ||
			    e->now - f->start_clock < e->cfg.grace_ns)
				continue;
			e->trim_list[n++] = (struct sl_trim_cand){
			    f->score, f->idle_clock, f->rec.fid, s};
		}
	}
	if (n > e->stats.flows_active - target)
		select_smallest(e->trim_list, n,
				(uint32_t)(e->stats.flows_active - target));
	for (uint32_t i = 0; i < n && e->stats.flows_active > target; i++) {
		rc = sl_flow_end(e, &e->pool[e->trim_list[i].slot],
				 SL_END_TRIMMED, e->now);
		if (rc)
			return rc;
		ended++;
	}
	return (int)ended;
}

/* The bounded table: at max_flows, trim (at most once per silence period,
 * unless the pool is out); if nothing could be trimmed, refuse. */
static int table_admit(struct sl_engine *e)
{
	int pool_out = e->free_head == SL_NIL && e->pool_used == e->pool_size;
	uint32_t closed = e->idle[SL_TIMEOUT_TCP_CLOSED].head;

	/* a closed TCP flow only waits for late packets: it makes room
	 * first, ending with its own reason */
	if (closed != SL_NIL &&
	    (pool_out ||
	     (e->cfg.max_flows && e->stats.flows_active >= e->cfg.max_flows))) {
		if (sl_flow_end(e, &e->pool[closed], SL_END_TRIMMED, e->now) < 0)
			return -ENOMEM;
		pool_out = 0;
	}

	if (!e->cfg.max_flows || e->stats.flows_active < e->cfg.max_flows) {
		if (!pool_out)
			return 0;
		if (!e->cfg.max_flows)
			return SL_E_POOL;
	}
	if (pool_out || !e->last_trim ||
	    e->now - e->last_trim >= e->cfg.silence_ns) {
		if (table_trim(e) < 0)
			return -ENOMEM;
	}
	pool_out = e->free_head == SL_NIL && e->pool_used == e->pool_size;
	return pool_out ? SL_E_POOL : 0;
}

/* A new flow's slot, and its features when the run has them, zeroed. */
static void flow_clear(const struct sl_engine *e, struct sl_flow *f,
		       uint32_t slot)
{
	memset(f, 0, sizeof(*f));
	if (e->feat_stats) {
		memset(&e->feat_stats[slot], 0, sizeof(e->feat_stats[slot]));
		f->rec.stats = &e->feat_stats[slot];
	}
	if (e->feat_splt) {
		memset(&e->feat_splt[slot], 0, sizeof(e->feat_splt[slot]));
		e->feat_splt[slot].len = (uint16_t)e->cfg.splt_packets;
		f->rec.splt = &e->feat_splt[slot];
	}
	if (e->feat_app) {
		memset(&e->feat_app[slot], 0, sizeof(e->feat_app[slot]));
		f->rec.app = &e->feat_app[slot];
	}
}

/* ---- flows ------------------------------------------------------------ */

struct sl_flow *sl_flow_new(struct sl_engine *e, const struct sl_key *key,
			    const struct sl_key *ck, uint32_t hash, int swapped,
			    uint64_t ts)
{
	struct sl_flow *f;
	uint32_t slot, *b;

	if (table_admit(e) || slot_alloc(e, &slot))
		return NULL;
	f = &e->pool[slot];
	flow_clear(e, f, slot);
	f->rec.fid = e->next_id;
	f->rec.slot = slot;
	f->rec.engine = e->id;
	e->next_id += e->cfg.workers ? e->cfg.workers : 1;
	f->rec.key = *key;
	f->rec.fwd.first_ns = ts;
	f->ckey = *ck;
	f->hash = hash;
	f->swapped = swapped;
	f->tclass = timeout_class(key->proto);
	f->capture = e->capture_all;
	f->live = 1;
	f->start_clock = e->now;
	b = bucket_of(e, hash);
	f->hnext = *b;
	*b = slot + 1;
	LIST_APPEND(e, &e->idle[f->tclass], slot, idle);
	LIST_APPEND(e, &e->age, slot, age);
	e->stats.flows_started++;
	e->stats.flows_active++;
	return f;
}

void sl_flow_release(struct sl_engine *e, struct sl_flow *f)
{
	uint32_t slot = slot_of(e, f);

	hash_unlink(e, slot);
	if (f->aliases)
		aliases_free(e, f);
	LIST_REMOVE(e, &e->idle[f->tclass], slot, idle);
	LIST_REMOVE(e, &e->age, slot, age);
	f->live = 0;
	f->idle.next = e->free_head;
	e->free_head = slot;
}

/* ---- scores, protection, and flows by slot (the ABI) ------------------ */

int sl_engine_flow_score(struct sl_engine *e, uint32_t slot, uint64_t fid,
			 double score)
{
	struct sl_flow *f = flow_at(e, slot, fid);

	if (!f)
		return -ESRCH;
	f->score = score;
	return 0;
}

int sl_engine_flow_protect(struct sl_engine *e, uint32_t slot, uint64_t fid,
			   uint32_t bit, int on)
{
	struct sl_flow *f = flow_at(e, slot, fid);

	if (!f)
		return -ESRCH;
	if (bit >= 64)
		return -EINVAL;
	if (on)
		f->protect |= 1ULL << bit;
	else
		f->protect &= ~(1ULL << bit);
	return f->protect != 0;
}

uint32_t sl_engine_slots(const struct sl_engine *e)
{
	return e->pool_used;
}

const struct sl_flow_rec *sl_engine_flow(const struct sl_engine *e,
					 uint32_t slot)
{
	if (slot >= e->pool_used || !e->pool[slot].live)
		return NULL;
	return &e->pool[slot].rec;
}

const struct sl_flow_rec *sl_engine_flow_find(const struct sl_engine *e,
					      uint32_t slot, uint64_t fid)
{
	if (slot >= e->pool_used || !e->pool[slot].live ||
	    e->pool[slot].rec.fid != fid)
		return NULL;
	return &e->pool[slot].rec;
}
