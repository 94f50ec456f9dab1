/* engine.c - the flow table, timeouts, slices and the event stream.
 *
 * One engine is owned by one thread. The packet path allocates nothing: flows
 * live in a preallocated pool (pages are touched only as slots are first
 * used), and the output arrays only grow, so after warm-up they are reused.
 * Timeouts are ordered lists, not scans: each idle list is ordered by last
 * activity because its timeout is the same for every member, and the age
 * list by start, so every expiry is found at a list head.
 */
#include <errno.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "source.h"

#define NS 1000000000ULL

static const uint64_t default_idle_ns[SL_TIMEOUT_COUNT] = {
    [SL_TIMEOUT_TCP] = 300 * NS,
    [SL_TIMEOUT_UDP] = 60 * NS,
    [SL_TIMEOUT_ICMP] = 30 * NS,
    [SL_TIMEOUT_OTHER] = 30 * NS,
};

enum { DEFAULT_POOL = 1 << 20 };

static uint32_t engines_made; /* engine numbers, from 1 */

/* ---- lists ---------------------------------------------------------- */

#define LINK(e, slot, member) (&(e)->pool[slot].member)

static void list_init(struct sl_list *l)
{
	l->head = l->tail = SL_NIL;
}

#define LIST_APPEND(e, list, slot, member)                                     \
	do {                                                                   \
		struct sl_link *_ln = LINK(e, slot, member);                   \
		_ln->prev = (list)->tail;                                      \
		_ln->next = SL_NIL;                                            \
		if ((list)->tail != SL_NIL)                                    \
			LINK(e, (list)->tail, member)->next = (slot);          \
		else                                                           \
			(list)->head = (slot);                                 \
		(list)->tail = (slot);                                         \
	} while (0)

#define LIST_REMOVE(e, list, slot, member)                                     \
	do {                                                                   \
		struct sl_link *_ln = LINK(e, slot, member);                   \
		if (_ln->prev != SL_NIL)                                       \
			LINK(e, _ln->prev, member)->next = _ln->next;          \
		else                                                           \
			(list)->head = _ln->next;                              \
		if (_ln->next != SL_NIL)                                       \
			LINK(e, _ln->next, member)->prev = _ln->prev;          \
		else                                                           \
			(list)->tail = _ln->prev;                              \
	} while (0)

/* ---- growable output arrays (grow only; reused after warm-up) -------- */

static int grow(void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
	uint32_t ncap = *cap ? *cap : 1024;
	void *p;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*arr, (size_t)ncap * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

/* Events of a step go to its output; events caused between steps (an
 * update, the trim it triggers) go apart, so that what Lua is reading
 * never moves. */
static struct sl_event *event_push(struct sl_engine *e, uint32_t type,
				   uint32_t slot, uint64_t ts)
{
	struct sl_evbuf *b = e->in_step ? &e->step_ev : &e->late_ev;
	struct sl_event *ev;

	if (grow((void **)&b->ev, &b->cap, b->n + 1, sizeof(*b->ev)))
		return NULL;
	ev = &b->ev[b->n++];
	ev->type = type;
	ev->slot = slot;
	ev->ts_ns = ts;
	ev->flow = e->pool[slot].rec;
	ev->packet = 0;
	if (e->in_step) {
		e->out.events = b->ev;
		e->out.n_events = b->n;
	}
	return ev;
}

/* ---- keys ------------------------------------------------------------ */

static uint32_t key_hash(const struct sl_key *k)
{
	uint64_t w[6], h = 0x9e3779b97f4a7c15ULL;

	memcpy(w, k, sizeof(w));
	for (int i = 0; i < 6; i++) {
		h ^= w[i];
		h *= 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
	}
	return (uint32_t)h;
}

/* Orders the endpoints so both directions give one key; returns 1 if the
 * key had to be reversed. */
static int key_canonical(struct sl_key *k)
{
	int c = memcmp(k->src, k->dst, 16);
	uint8_t a[16];
	uint16_t p;

	if (c < 0 || (c == 0 && k->sport <= k->dport))
		return 0;
	memcpy(a, k->src, 16);
	memcpy(k->src, k->dst, 16);
	memcpy(k->dst, a, 16);
	p = k->sport;
	k->sport = k->dport;
	k->dport = p;
	return 1;
}

_Static_assert(sizeof(struct sl_key) == 48, "keys are hashed as 6 words");

/* Keys are 48 bytes with zeroed padding: six word compares, inlined. */
static inline int key_equal(const struct sl_key *a, const struct sl_key *b)
{
	uint64_t x[6], y[6], diff = 0;

	memcpy(x, a, sizeof(x));
	memcpy(y, b, sizeof(y));
	for (int i = 0; i < 6; i++)
		diff |= x[i] ^ y[i];
	return !diff;
}

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

/* ---- flow table ------------------------------------------------------- */

static uint32_t *bucket_of(struct sl_engine *e, uint32_t hash)
{
	return &e->buckets[hash & e->bucket_mask];
}

static struct sl_flow *flow_lookup(struct sl_engine *e, const struct sl_key *ck,
				   uint32_t hash)
{
	uint32_t s = *bucket_of(e, hash);

	while (s) {
		struct sl_flow *f = &e->pool[s - 1];

		if (f->hash == hash && key_equal(&f->ckey, ck))
			return f;
		s = f->hnext;
	}
	return NULL;
}

static void hash_unlink(struct sl_engine *e, uint32_t slot)
{
	uint32_t *pp = bucket_of(e, e->pool[slot].hash);

	while (*pp != slot + 1)
		pp = &e->pool[*pp - 1].hnext;
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
	return 0;
}

static int table_trim(struct sl_engine *e);

/* The bounded table: at max_flows, trim (at most once per silence period,
 * unless the pool is out); if nothing could be trimmed, refuse. */
static int table_admit(struct sl_engine *e)
{
	int pool_out = e->free_head == SL_NIL && e->pool_used == e->pool_size;

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

static struct sl_flow *flow_new(struct sl_engine *e, const struct sl_key *key,
				const struct sl_key *ck, uint32_t hash,
				int swapped, uint64_t ts)
{
	struct sl_flow *f;
	uint32_t slot, *b;

	if (table_admit(e) || slot_alloc(e, &slot))
		return NULL;
	f = &e->pool[slot];
	memset(f, 0, sizeof(*f));
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

static uint32_t slot_of(struct sl_engine *e, struct sl_flow *f)
{
	return (uint32_t)(f - e->pool);
}

/* ---- slices ----------------------------------------------------------- */

static int slice_record(struct sl_engine *e, struct sl_flow *f)
{
	struct sl_slice_rec *r;
	const struct sl_dir *d[2] = {&f->rec.fwd, &f->rec.rev};

	if (grow((void **)&e->slices, &e->cap_slices, e->n_slices + 1,
		 sizeof(*e->slices)))
		return -ENOMEM;
	r = &e->slices[e->n_slices++];
	memset(r, 0, sizeof(*r));
	r->fid = f->rec.fid;
	r->engine = e->id;
	r->key = f->rec.key;
	r->start_ns = e->slice_start;
	r->end_ns = e->slice_end;
	r->reason_code = f->rec.reason_code;
	r->icmp_type = f->rec.icmp_type;
	r->icmp_code = f->rec.icmp_code;
	for (int i = 0; i < 2; i++) {
		struct sl_counts *delta = i ? &r->delta_rev : &r->delta_fwd;
		struct sl_counts *total = i ? &r->total_rev : &r->total_fwd;

		total->pkts = d[i]->pkts;
		total->bytes = d[i]->bytes;
		delta->pkts = total->pkts - f->base[i].pkts;
		delta->bytes = total->bytes - f->base[i].bytes;
		f->base[i] = *total;
	}
	r->tcp_flags_fwd = f->slice_flags[0];
	r->tcp_flags_rev = f->slice_flags[1];
	f->slice_flags[0] = f->slice_flags[1] = 0;
	f->slice_epoch = 0;
	e->stats.slice_records++;
	return 0;
}

static int slice_touch(struct sl_engine *e, struct sl_flow *f)
{
	if (f->slice_epoch == e->slice_epoch)
		return 0;
	if (grow((void **)&e->touched, &e->cap_touched, e->n_touched + 1,
		 sizeof(*e->touched)))
		return -ENOMEM;
	f->slice_epoch = e->slice_epoch;
	e->touched[e->n_touched++] = slot_of(e, f);
	return 0;
}

static void slice_open(struct sl_engine *e, uint64_t t)
{
	e->slice_start = t - t % e->cfg.slice_ns;
	e->slice_end = e->slice_start + e->cfg.slice_ns;
	e->slice_epoch++;
	if (!e->slice_epoch) /* 0 means "not touched" */
		e->slice_epoch = 1;
	e->n_touched = 0;
}

/* Writes a record for every flow touched in the open interval (flows that
 * ended in it already wrote theirs) and publishes the batch; the next
 * interval collects its records in the other array. */
static int slice_close(struct sl_engine *e)
{
	struct sl_slice_rec *t;
	uint32_t cap;
	int rc;

	for (uint32_t i = 0; i < e->n_touched; i++) {
		struct sl_flow *f = &e->pool[e->touched[i]];

		/* a slot can be listed twice if it was freed and reused */
		if (!f->live || f->slice_epoch != e->slice_epoch)
			continue;
		rc = slice_record(e, f);
		if (rc)
			return rc;
	}
	t = e->slices_pub;
	e->slices_pub = e->slices;
	e->slices = t;
	cap = e->cap_slices_pub;
	e->cap_slices_pub = e->cap_slices;
	e->cap_slices = cap;
	e->out.slices = e->slices_pub;
	e->out.n_slices = e->n_slices;
	e->n_slices = 0;
	e->out.slice_start_ns = e->slice_start;
	e->out.slice_end_ns = e->slice_end;
	e->out.slice_ready = 1;
	e->stats.slices_closed++;
	return 0;
}

/* ---- ending flows ----------------------------------------------------- */

/* ---- aliases (extra keys from sl_engine_update) ----------------------- */

static uint32_t *abucket_of(struct sl_engine *e, uint32_t hash)
{
	return &e->abuckets[hash & e->bucket_mask];
}

static struct sl_alias *alias_lookup(struct sl_engine *e,
				     const struct sl_key *ck, uint32_t hash)
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

/* Room for n more aliases, so that linking cannot fail halfway. */
static int alias_reserve(struct sl_engine *e, uint32_t n)
{
	if (!e->abuckets) {
		e->abuckets =
		    calloc((size_t)e->bucket_mask + 1, sizeof(*e->abuckets));
		if (!e->abuckets)
			return -ENOMEM;
	}
	return grow((void **)&e->aliases, &e->cap_aliases, e->aliases_used + n,
		    sizeof(*e->aliases));
}

static void alias_link(struct sl_engine *e, struct sl_flow *f,
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

static int flow_end(struct sl_engine *e, struct sl_flow *f, int reason,
		    uint64_t ts)
{
	uint32_t slot = slot_of(e, f);
	int rc = 0;

	f->rec.reason_code = reason;
	if (e->cfg.slice_ns && f->slice_epoch == e->slice_epoch)
		rc = slice_record(e, f);
	if (!event_push(e, SL_EVENT_FLOW_END, slot, ts))
		rc = -ENOMEM;
	hash_unlink(e, slot);
	if (f->aliases)
		aliases_free(e, f);
	LIST_REMOVE(e, &e->idle[f->tclass], slot, idle);
	LIST_REMOVE(e, &e->age, slot, age);
	f->live = 0;
	f->idle.next = e->free_head;
	e->free_head = slot;
	e->stats.flows_ended++;
	e->stats.flows_active--;
	e->stats.ended_by[reason]++;
	return rc;
}

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
	rc = grow((void **)&e->trim_list, &e->cap_trim,
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
		rc = flow_end(e, &e->pool[e->trim_list[i].slot], SL_END_TRIMMED,
			      e->now);
		if (rc)
			return rc;
		ended++;
	}
	return (int)ended;
}

static struct sl_flow *flow_at(struct sl_engine *e, uint32_t slot, uint64_t fid)
{
	if (slot >= e->pool_used || !e->pool[slot].live ||
	    e->pool[slot].rec.fid != fid)
		return NULL;
	return &e->pool[slot];
}

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

static int key_is_tuple(const struct sl_key *k)
{
	return k->ip_version == 4 || k->ip_version == 6;
}

/* The live flow owning a canonical key (its own key or an alias). */
static struct sl_flow *key_owner(struct sl_engine *e, const struct sl_key *ck,
				 uint32_t hash)
{
	struct sl_flow *f = flow_lookup(e, ck, hash);
	const struct sl_alias *al;

	if (f)
		return f;
	al = alias_lookup(e, ck, hash);
	return al ? &e->pool[al->slot] : NULL;
}

static void update_counts(struct sl_engine *e, struct sl_flow *f,
			  const struct sl_update *u)
{
	const struct sl_counts *add[2] = {&u->add_fwd, &u->add_rev};
	struct sl_dir *dir[2] = {&f->rec.fwd, &f->rec.rev};
	uint32_t slot = slot_of(e, f);

	for (int i = 0; i < 2; i++) {
		if (!add[i]->pkts && !add[i]->bytes)
			continue;
		if (!dir[i]->pkts)
			dir[i]->first_ns = e->now;
		dir[i]->last_ns = e->now;
		dir[i]->pkts += add[i]->pkts;
		dir[i]->bytes += add[i]->bytes;
	}
	f->idle_clock = e->now;
	LIST_REMOVE(e, &e->idle[f->tclass], slot, idle);
	LIST_APPEND(e, &e->idle[f->tclass], slot, idle);
}

enum { UPDATE_MAX_KEYS = 16 };

int sl_engine_update(struct sl_engine *e, struct sl_update *u)
{
	struct sl_key ck[UPDATE_MAX_KEYS];
	uint32_t hash[UPDATE_MAX_KEYS], n = u->n_keys, n_new = 0;
	uint8_t sw[UPDATE_MAX_KEYS], known[UPDATE_MAX_KEYS];
	struct sl_flow *f = NULL;
	int rc;

	if (u->fid ? n != 0 : (n == 0 || n > UPDATE_MAX_KEYS))
		return -EINVAL;
	u->created = 0;
	if (u->fid) {
		f = flow_at(e, u->slot, u->fid);
		if (!f)
			return -ESRCH;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct sl_flow *o;

		ck[i] = u->keys[i];
		sw[i] =
		    key_is_tuple(&ck[i]) ? (uint8_t)key_canonical(&ck[i]) : 0;
		hash[i] = key_hash(&ck[i]);
		o = key_owner(e, &ck[i], hash[i]);
		if (o && f && o != f)
			return SL_E_CONFLICT;
		if (o)
			f = o;
		known[i] = o != NULL;
		for (uint32_t j = 0; j < i && !known[i]; j++)
			known[i] = key_equal(&ck[i], &ck[j]); /* repeated */
		n_new += !known[i];
	}
	if (n_new) {
		rc = alias_reserve(e, n_new);
		if (rc)
			return rc;
	}
	if (!f) {
		f = flow_new(e,
			     key_is_tuple(&u->keys[0]) ? &u->keys[0] : &ck[0],
			     &ck[0], hash[0], sw[0], e->now);
		if (!f) {
			e->stats.flows_refused++;
			return SL_E_POOL;
		}
		known[0] = 1;
		u->created = 1;
	}
	for (uint32_t i = 0; i < n; i++)
		if (!known[i])
			alias_link(e, f, &ck[i], hash[i], sw[i]);
	update_counts(e, f, u);
	if (e->cfg.slice_ns && e->slice_end) {
		rc = slice_touch(e, f);
		if (rc)
			return rc;
	}
	if (u->created &&
	    !event_push(e, SL_EVENT_FLOW_START, slot_of(e, f), e->now))
		return -ENOMEM;
	u->slot = slot_of(e, f);
	u->fid = f->rec.fid;
	return 0;
}

/* The earliest timeout deadline, and the flow and reason it belongs to. */
static uint64_t next_deadline(struct sl_engine *e, uint32_t *slot, int *reason)
{
	uint64_t best = UINT64_MAX;

	for (int c = 0; c < SL_TIMEOUT_COUNT; c++) {
		uint32_t h = e->idle[c].head;
		uint64_t d;

		if (h == SL_NIL)
			continue;
		d = e->pool[h].idle_clock + e->cfg.idle_timeout_ns[c];
		if (d < best) {
			best = d;
			*slot = h;
			*reason = SL_END_IDLE;
		}
	}
	if (e->age.head != SL_NIL) {
		uint32_t h = e->age.head;
		uint64_t d = e->pool[h].start_clock + e->cfg.active_timeout_ns;

		if (d < best) {
			best = d;
			*slot = h;
			*reason = SL_END_ACTIVE;
		}
	}
	return best;
}

/* Moves the clock to t, firing every timeout and slice boundary due by then
 * in time order. Returns 1 when an interval closed (the caller must hand
 * its batch out before going on), 0 when the clock is at t, or an error. */
static int clock_advance(struct sl_engine *e, uint64_t t)
{
	if (t > e->now)
		e->now = t;
	e->out.now_ns = e->now;
	for (;;) {
		uint32_t slot = 0;
		int reason = 0, rc;
		uint64_t d = next_deadline(e, &slot, &reason);

		if (e->cfg.slice_ns && e->slice_end && e->slice_end <= e->now &&
		    e->slice_end <= d) {
			rc = slice_close(e);
			slice_open(e, e->now);
			return rc ? rc : 1;
		}
		if (d > e->now)
			return 0;
		rc = flow_end(e, &e->pool[slot], reason, d);
		if (rc)
			return rc;
	}
}

/* ---- per packet ------------------------------------------------------- */

enum { H_SYN, H_SYNACK, H_ACK, H_DATA, H_FIN, H_RST };

static void history_add(struct sl_flow *f, int dir, int letter)
{
	static const char up[] = "SHADFR", low[] = "shadfr";

	if (f->hist_seen[dir] & (1u << letter))
		return;
	f->hist_seen[dir] |= 1u << letter;
	if (f->hist_len < sizeof(f->rec.hist))
		f->rec.hist[f->hist_len++] = dir ? low[letter] : up[letter];
}

/* Updates TCP state and history; returns an end reason when this packet
 * closes the flow, else 0. */
static int tcp_update(struct sl_flow *f, int dir, uint8_t flags,
		      uint16_t payload)
{
	int syn = flags & 0x02, ack = flags & 0x10, fin = flags & 0x01;
	uint8_t *st = &f->rec.state_code;

	if (syn)
		history_add(f, dir, ack ? H_SYNACK : H_SYN);
	if (payload)
		history_add(f, dir, H_DATA);
	else if (ack && !(flags & 0x07))
		history_add(f, dir, H_ACK);
	if (fin)
		history_add(f, dir, H_FIN);
	if (flags & 0x04) {
		history_add(f, dir, H_RST);
		*st = SL_TCP_RESET;
		return SL_END_RST;
	}

	if (*st == SL_TCP_NONE)
		*st = syn && !ack ? SL_TCP_SYN_SENT : SL_TCP_MIDSTREAM;
	else if (*st == SL_TCP_SYN_SENT && syn && ack && dir)
		*st = SL_TCP_SYN_RECEIVED;
	else if (*st == SL_TCP_SYN_RECEIVED && ack && !syn && !dir)
		*st = SL_TCP_ESTABLISHED;

	if (f->fin_seen == 3 && ack && !fin && !syn) {
		*st = SL_TCP_CLOSED;
		return SL_END_FIN;
	}
	if (fin) {
		f->fin_seen |= 1u << dir;
		*st = f->fin_seen == 3 ? SL_TCP_CLOSING : SL_TCP_FIN_WAIT;
	}
	return 0;
}

static void frag_remember(struct sl_engine *e, struct sl_decoded *d)
{
	struct sl_key *k = &d->key;
	struct sl_frag_ent *fe;
	struct sl_key probe = {0};

	memcpy(probe.src, k->src, 16);
	memcpy(probe.dst, k->dst, 16);
	probe.sport = (uint16_t)d->frag_id;
	probe.dport = (uint16_t)(d->frag_id >> 16);
	probe.proto = k->proto;
	fe = &e->frags[key_hash(&probe) % SL_FRAG_SLOTS];
	if (d->frag == SL_FRAG_FIRST) {
		memcpy(fe->src, k->src, 16);
		memcpy(fe->dst, k->dst, 16);
		fe->id = d->frag_id;
		fe->proto = k->proto;
		fe->vlan = k->vlan;
		fe->sport = k->sport;
		fe->dport = k->dport;
		fe->clock = e->now;
		fe->used = 1;
		return;
	}
	/* a later fragment: borrow the ports of its first fragment */
	if (fe->used && fe->id == d->frag_id && fe->proto == k->proto &&
	    fe->vlan == k->vlan && !memcmp(fe->src, k->src, 16) &&
	    !memcmp(fe->dst, k->dst, 16) && e->now - fe->clock <= 60 * NS) {
		k->sport = fe->sport;
		k->dport = fe->dport;
	} else {
		e->stats.frag_unmatched++;
	}
}

static void prep_hash(struct sl_prep *pp)
{
	pp->ckey = pp->d.key;
	pp->swapped = key_canonical(&pp->ckey);
	pp->hash = key_hash(&pp->ckey);
	pp->hashed = 1;
}

/* Decodes and hashes a whole batch first and prefetches the buckets: the
 * lookups that follow then mostly hit the cache. */
static void batch_prepare(struct sl_engine *e)
{
	for (uint32_t i = 0; i < e->batch.count; i++) {
		const struct sl_packet *p = &e->batch.pkt[i];
		struct sl_prep *pp = &e->prep[i];

		pp->hashed = 0;
		pp->wmask = 0;
		pp->fid = 0;
		pp->status = sl_decode(p->data, p->caplen, p->linktype, &pp->d);
		if (pp->status != SL_DECODE_OK || pp->d.frag == SL_FRAG_LATER)
			continue;
		prep_hash(pp);
		__builtin_prefetch(bucket_of(e, pp->hash));
	}
}

/* always_inline: gcc 12 drops a separate function whose only effect is a
 * prefetch */
static inline __attribute__((always_inline)) void
prefetch_flow(struct sl_engine *e, uint32_t i)
{
	uint32_t s;

	if (i >= e->batch.count || !e->prep[i].hashed)
		return;
	s = *bucket_of(e, e->prep[i].hash);
	if (s)
		__builtin_prefetch(&e->pool[s - 1]);
}

/* Runs the packet filters; a match becomes a packet event. */
static int packet_event(struct sl_engine *e, struct sl_flow *f,
			const struct sl_packet *p, const struct sl_decoded *d,
			int di)
{
	struct sl_packet_ev *pe;
	struct sl_event *ev;
	uint32_t match = 0, bits = e->filter_mask;

	if ((int)p->linktype != e->filter_linktype)
		return 0; /* pcapng: another interface's link type */
	while (bits) {
		int i = __builtin_ctz(bits);

		bits &= bits - 1;
		if (bpf_filter(e->filters[i]->bf_insns, p->data, p->wirelen,
			       p->caplen))
			match |= 1u << i;
	}
	if (!match)
		return 0;
	if (grow((void **)&e->packets, &e->cap_packets, e->out.n_packets + 1,
		 sizeof(*e->packets)))
		return -ENOMEM;
	ev = event_push(e, SL_EVENT_PACKET, slot_of(e, f), p->ts_ns);
	if (!ev)
		return -ENOMEM;
	ev->packet = e->out.n_packets;
	pe = &e->packets[e->out.n_packets++];
	e->out.packets = e->packets;
	pe->data = p->data;
	pe->ts_ns = p->ts_ns;
	pe->caplen = p->caplen;
	pe->wirelen = p->wirelen;
	pe->linktype = p->linktype;
	pe->match = match;
	pe->key = d->key;
	pe->l4_offset = d->l4_offset;
	pe->payload_offset = d->payload_offset;
	pe->payload_len = d->payload_len;
	pe->dir = (uint8_t)di;
	pe->tcp_flags = d->tcp_flags;
	pe->batch_index = (uint32_t)(p - e->batch.pkt);
	return 0;
}

static int packet_process(struct sl_engine *e, uint32_t i)
{
	const struct sl_packet *p = &e->batch.pkt[i];
	struct sl_prep *pp = &e->prep[i];
	struct sl_flow *f;
	struct sl_dir *dir;
	int di, swapped, reason = 0, fresh = 0, rc;

	prefetch_flow(e, i + 2);
	e->stats.packets++;
	e->stats.bytes += p->wirelen;
	if (pp->status == SL_DECODE_NOT_IP) {
		e->stats.not_ip++;
		return 0;
	}
	if (pp->status != SL_DECODE_OK) {
		e->stats.malformed++;
		e->stats.malformed_by[pp->d.malformed < SL_MAL_COUNT
					  ? pp->d.malformed
					  : 0]++;
		return 0;
	}
	if (pp->d.frag)
		frag_remember(e, &pp->d);
	if (!pp->hashed)
		prep_hash(pp);

	f = flow_lookup(e, &pp->ckey, pp->hash);
	swapped = pp->swapped;
	if (!f && e->n_aliases) {
		const struct sl_alias *al =
		    alias_lookup(e, &pp->ckey, pp->hash);

		/* a tuple linked to a flow by an update: its direction is
		 * the one the update gave */
		if (al) {
			f = &e->pool[al->slot];
			swapped ^= al->swapped ^ f->swapped;
		}
	}
	if (!f) {
		f = flow_new(e, &pp->d.key, &pp->ckey, pp->hash, pp->swapped,
			     p->ts_ns);
		if (!f) {
			e->stats.flows_refused++;
			return 0;
		}
		fresh = 1;
		f->rec.icmp_type = pp->d.icmp_type;
		f->rec.icmp_code = pp->d.icmp_code;
	}

	di = swapped ^ f->swapped;
	dir = di ? &f->rec.rev : &f->rec.fwd;
	if (!dir->pkts || p->ts_ns < dir->first_ns)
		dir->first_ns = p->ts_ns;
	if (p->ts_ns > dir->last_ns)
		dir->last_ns = p->ts_ns;
	dir->pkts++;
	dir->bytes += p->wirelen;
	dir->tcp_flags |= pp->d.tcp_flags;
	f->slice_flags[di] |= pp->d.tcp_flags;
	if (pp->d.key.proto == 6 && pp->d.frag != SL_FRAG_LATER)
		reason = tcp_update(f, di, pp->d.tcp_flags, pp->d.payload_len);

	f->idle_clock = e->now;
	LIST_REMOVE(e, &e->idle[f->tclass], slot_of(e, f), idle);
	LIST_APPEND(e, &e->idle[f->tclass], slot_of(e, f), idle);
	if (e->cfg.slice_ns) {
		rc = slice_touch(e, f);
		if (rc)
			return rc;
	}
	/* the start event is written after the first packet is counted, so
	 * handlers see what opened the flow */
	if (fresh &&
	    !event_push(e, SL_EVENT_FLOW_START, slot_of(e, f), p->ts_ns))
		return -ENOMEM;
	pp->fid = f->rec.fid;
	pp->wmask = f->capture ? (uint16_t)(1u << f->capture) : 0;
	if (e->filter_mask) {
		rc = packet_event(e, f, p, &pp->d, di);
		if (rc)
			return rc;
	}
	if (reason)
		return flow_end(e, f, reason, p->ts_ns);
	return 0;
}

/* ---- per collected record --------------------------------------------- */

static int engine_finish(struct sl_engine *e, int reason);

static void dir_add(struct sl_dir *d, const struct sl_counts *c,
		    const struct sl_coll_rec *r, uint8_t flags)
{
	if (!c->pkts && !c->bytes && !flags)
		return;
	if (!d->pkts || r->first_ns < d->first_ns)
		d->first_ns = r->first_ns;
	if (r->last_ns > d->last_ns)
		d->last_ns = r->last_ns;
	d->pkts += c->pkts;
	d->bytes += c->bytes;
	d->tcp_flags |= flags;
}

/* Exporters report each direction of a flow on its own (uniflows), in any
 * order: the flow's initiator is the side that sent first, as in capture,
 * so a reverse report with an earlier start turns the flow around. */
static void flow_turn(struct sl_flow *f)
{
	struct sl_dir d = f->rec.fwd;
	struct sl_key *k = &f->rec.key;
	uint8_t a[16];
	uint16_t p = k->sport;

	f->rec.fwd = f->rec.rev;
	f->rec.rev = d;
	memcpy(a, k->src, 16);
	memcpy(k->src, k->dst, 16);
	memcpy(k->dst, a, 16);
	k->sport = k->dport;
	k->dport = p;
	f->swapped ^= 1;
	p = f->slice_flags[0];
	f->slice_flags[0] = f->slice_flags[1];
	f->slice_flags[1] = (uint8_t)p;
	d.pkts = f->base[0].pkts;
	d.bytes = f->base[0].bytes;
	f->base[0] = f->base[1];
	f->base[1].pkts = d.pkts;
	f->base[1].bytes = d.bytes;
}

static int record_process(struct sl_engine *e, uint32_t i)
{
	const struct sl_coll_rec *r = &e->recs[i];
	struct sl_key ck = r->key;
	struct sl_event *ev;
	struct sl_flow *f;
	uint32_t hash;
	int swapped, di, rc;

	e->stats.records++;
	e->stats.packets += r->fwd.pkts + r->rev.pkts;
	e->stats.bytes += r->fwd.bytes + r->rev.bytes;
	swapped = key_canonical(&ck);
	hash = key_hash(&ck);
	f = flow_lookup(e, &ck, hash);
	if (!f && e->n_aliases) {
		const struct sl_alias *al = alias_lookup(e, &ck, hash);

		if (al) {
			f = &e->pool[al->slot];
			swapped ^= al->swapped ^ f->swapped;
		}
	}
	if (!f) {
		f = flow_new(e, &r->key, &ck, hash, swapped, r->first_ns);
		if (!f) {
			e->stats.flows_refused++;
			return 0;
		}
		f->rec.icmp_type = r->icmp_type;
		f->rec.icmp_code = r->icmp_code;
		dir_add(&f->rec.fwd, &r->fwd, r, r->tcp_flags);
		dir_add(&f->rec.rev, &r->rev, r, r->tcp_flags_rev);
		f->slice_flags[0] |= r->tcp_flags;
		f->slice_flags[1] |= r->tcp_flags_rev;
		if (e->cfg.slice_ns && (rc = slice_touch(e, f)))
			return rc;
		ev = event_push(e, SL_EVENT_FLOW_START, slot_of(e, f),
				r->first_ns);
		if (!ev)
			return -ENOMEM;
		ev->packet = i;
	} else {
		di = swapped ^ f->swapped;
		if (di && r->fwd.pkts && r->first_ns < f->rec.fwd.first_ns) {
			flow_turn(f);
			di = 0;
		}
		dir_add(di ? &f->rec.rev : &f->rec.fwd, &r->fwd, r,
			r->tcp_flags);
		dir_add(di ? &f->rec.fwd : &f->rec.rev, &r->rev, r,
			r->tcp_flags_rev);
		f->slice_flags[di] |= r->tcp_flags;
		f->slice_flags[!di] |= r->tcp_flags_rev;
		if (e->cfg.slice_ns && (rc = slice_touch(e, f)))
			return rc;
	}
	f->idle_clock = e->now;
	LIST_REMOVE(e, &e->idle[f->tclass], slot_of(e, f), idle);
	LIST_APPEND(e, &e->idle[f->tclass], slot_of(e, f), idle);
	return 0;
}

static uint64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

/* A collector's clock follows the records' times; while none come it runs
 * on with the wall clock, so idle flows still end and slices close. */
static int record_clock_tick(struct sl_engine *e)
{
	uint64_t now = wall_ns();

	if (!e->rec_wall || (e->cfg.slice_ns && !e->slice_end))
		return 0;
	if (now > e->rec_wall) {
		uint64_t t = e->now + (now - e->rec_wall);

		e->rec_wall = now;
		return clock_advance(e, t);
	}
	return 0;
}

static int step_records(struct sl_engine *e)
{
	int rc;

	if (e->rcursor >= e->rcount) {
		if (e->stopping)
			return engine_finish(e, SL_END_SHUTDOWN);
		e->rcursor = e->rcount = 0;
		rc = e->src->ops->records(e->src, &e->recs);
		if (rc == -EAGAIN) {
			rc = record_clock_tick(e);
			return rc < 0 ? rc : 1;
		}
		if (rc <= 0) {
			if (rc < 0)
				e->source_error = rc;
			return engine_finish(e, SL_END_EOF);
		}
		e->rcount = (uint32_t)rc;
		e->out.records = e->recs;
		e->rec_wall = wall_ns();
	}
	while (e->rcursor < e->rcount) {
		uint64_t t = e->recs[e->rcursor].last_ns;

		if (!t)
			t = e->now; /* an exporter without times */
		if (e->cfg.slice_ns && !e->slice_end)
			slice_open(e, t);
		rc = clock_advance(e, t);
		if (rc)
			return rc;
		rc = record_process(e, e->rcursor);
		e->rcursor++;
		if (rc)
			return rc;
	}
	return 1;
}

/* ---- the engine ------------------------------------------------------- */

int sl_engine_new(struct sl_engine **out, const struct sl_config *cfg)
{
	struct sl_engine *e;
	uint32_t nb = 1;
	int rc = -ENOMEM;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	if (cfg)
		e->cfg = *cfg;
	if (!e->cfg.pool_flows)
		e->cfg.pool_flows = DEFAULT_POOL;
	for (int c = 0; c < SL_TIMEOUT_COUNT; c++)
		if (!e->cfg.idle_timeout_ns[c])
			e->cfg.idle_timeout_ns[c] = default_idle_ns[c];
	if (!e->cfg.active_timeout_ns)
		e->cfg.active_timeout_ns = 1800 * NS;
	if (e->cfg.max_flows && !e->cfg.low_flows)
		e->cfg.low_flows = e->cfg.max_flows - e->cfg.max_flows / 10;
	if (e->cfg.max_flows && (e->cfg.low_flows >= e->cfg.max_flows ||
				 e->cfg.max_flows > e->cfg.pool_flows)) {
		rc = -EINVAL;
		goto out_free;
	}
	if (!e->cfg.silence_ns)
		e->cfg.silence_ns = 10 * NS;
	e->pool_size = e->cfg.pool_flows;
	/* calloc of this size maps fresh zero pages: only slots that get
	 * used become resident */
	e->pool = calloc(e->pool_size, sizeof(*e->pool));
	if (!e->pool)
		goto out_free;
	while (nb < e->pool_size && nb < (1u << 31))
		nb <<= 1;
	e->buckets = calloc(nb, sizeof(*e->buckets));
	if (!e->buckets)
		goto out_pool;
	e->bucket_mask = nb - 1;
	e->free_head = SL_NIL;
	e->next_id = 1 + e->cfg.worker;
	e->id = __atomic_add_fetch(&engines_made, 1, __ATOMIC_RELAXED);
	for (int c = 0; c < SL_TIMEOUT_COUNT; c++)
		list_init(&e->idle[c]);
	list_init(&e->age);
	*out = e;
	return 0;

out_pool:
	free(e->pool);
out_free:
	free(e);
	return rc;
}

static void filter_free(struct sl_engine *e, uint32_t i)
{
	if (!e->filters[i])
		return;
	pcap_freecode(e->filters[i]);
	free(e->filters[i]);
	e->filters[i] = NULL;
	e->filter_mask &= ~(1u << i);
}

int sl_engine_packet_filter(struct sl_engine *e, uint32_t index,
			    const char *expr, char *err, size_t errlen)
{
	struct bpf_program *prog;
	char note[256] = "";
	int rc;

	if (index >= SL_PACKET_FILTERS)
		return -EINVAL;
	if (!e->src)
		return SL_E_STATE;
	filter_free(e, index);
	if (!expr)
		return 0;
	prog = calloc(1, sizeof(*prog));
	if (!prog)
		return -ENOMEM;
	e->filter_linktype = sl_source_linktype(e->src);
	rc = sl_filter_compile(expr, e->filter_linktype, 0, prog, note,
			       sizeof(note));
	if (rc) {
		if (err && errlen)
			snprintf(err, errlen, "%s", note);
		free(prog);
		return rc;
	}
	e->filters[index] = prog;
	e->filter_mask |= 1u << index;
	return 0;
}

int sl_engine_add_writer(struct sl_engine *e, struct sl_pcap_writer *w)
{
	for (uint32_t i = 1; i <= SL_WRITERS; i++) {
		if (!e->writers[i]) {
			e->writers[i] = w;
			e->n_writers++;
			return (int)i;
		}
	}
	return -ENOSPC;
}

/* Marks the flow's packets of the current batch that are not written
 * yet for a writer; returns how many. A capture set from a handler (in
 * on_flow_start, usually) comes after the step that processed the flow's
 * first packets: marked, they are written in order at the next step. */
static uint32_t capture_mark(struct sl_engine *e, uint64_t fid,
			     uint32_t writer)
{
	uint32_t n = 0;

	for (uint32_t i = e->flushed; i < e->cursor && i < e->batch.count;
	     i++) {
		if (e->prep[i].fid == fid) {
			e->prep[i].wmask |= (uint16_t)(1u << writer);
			n++;
		}
	}
	return n;
}

/* Writes the marked packets of the batch read so far, in batch order. */
static void capture_flush(struct sl_engine *e)
{
	uint32_t end = e->cursor < e->batch.count ? e->cursor : e->batch.count;

	for (uint32_t i = e->flushed; e->n_writers && i < end; i++) {
		const struct sl_packet *p = &e->batch.pkt[i];
		uint32_t bits = e->prep[i].wmask;

		while (bits) {
			int w = __builtin_ctz(bits);

			bits &= bits - 1;
			if (e->writers[w])
				sl_pcap_writer_write(e->writers[w], p->ts_ns,
						     p->data, p->caplen,
						     p->wirelen);
		}
	}
	e->flushed = end;
}

int sl_engine_flow_capture(struct sl_engine *e, uint32_t slot, uint64_t fid,
			   uint32_t writer)
{
	struct sl_flow *f = flow_at(e, slot, fid);

	if (writer > SL_WRITERS || (writer && !e->writers[writer]))
		return -EINVAL;
	if (!f) /* it may have ended in the last step: its packets are here */
		return writer && capture_mark(e, fid, writer) ? 0 : -ESRCH;
	if (writer && !f->capture)
		capture_mark(e, fid, writer);
	f->capture = (uint8_t)writer;
	return 0;
}

void sl_engine_detach_writers(struct sl_engine *e)
{
	capture_flush(e);
	memset(e->writers, 0, sizeof(e->writers));
	e->n_writers = 0;
	e->capture_all = 0;
}

int sl_engine_packet_capture(struct sl_engine *e, const struct sl_packet_ev *pe,
			     uint32_t writer)
{
	if (writer == 0 || writer > SL_WRITERS || !e->writers[writer])
		return -EINVAL;
	if (pe < e->packets || pe >= e->packets + e->out.n_packets ||
	    pe->batch_index < e->flushed || pe->batch_index >= e->batch.count)
		return -ESTALE;
	e->prep[pe->batch_index].wmask |= (uint16_t)(1u << writer);
	return 0;
}

void sl_engine_capture_all(struct sl_engine *e, uint32_t writer)
{
	if (writer <= SL_WRITERS && (!writer || e->writers[writer]))
		e->capture_all = writer;
}

void sl_engine_free(struct sl_engine *e)
{
	if (!e)
		return;
	if (e->src)
		sl_source_close(e->src);
	free(e->pool);
	free(e->buckets);
	free(e->touched);
	free(e->trim_list);
	free(e->aliases);
	free(e->abuckets);
	free(e->step_ev.ev);
	free(e->late_ev.ev);
	free(e->late_out.ev);
	free(e->packets);
	free(e->slices);
	free(e->slices_pub);
	for (int i = 0; i < SL_PACKET_FILTERS; i++)
		filter_free(e, i);
	free(e);
}

int sl_engine_attach(struct sl_engine *e, struct sl_source *src)
{
	if (e->src)
		return SL_E_STATE;
	e->src = src;
	return 0;
}

/* End of input: every flow ends (oldest first), the last interval closes. */
static int engine_finish(struct sl_engine *e, int reason)
{
	int rc;

	while (e->age.head != SL_NIL) {
		rc = flow_end(e, &e->pool[e->age.head], reason, e->now);
		if (rc)
			return rc;
	}
	if (e->cfg.slice_ns && e->slice_end &&
	    (e->n_slices || e->n_touched)) {
		rc = slice_close(e);
		if (rc)
			return rc;
	}
	e->done = 1;
	return 1;
}

static int clock_tick(struct sl_engine *e)
{
	struct timespec ts;

	if (e->cfg.slice_ns && !e->slice_end)
		return 0; /* no packet yet: no interval to close */
	clock_gettime(CLOCK_REALTIME, &ts);
	return clock_advance(e,
			     (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec);
}

void sl_engine_shutdown(struct sl_engine *e)
{
	e->stopping = 1;
}

static int engine_step(struct sl_engine *e)
{
	int rc;

	if (e->src->ops->records)
		return step_records(e);
	if (e->stopping && e->cursor >= e->batch.count)
		return engine_finish(e, SL_END_SHUTDOWN);
	if (e->cursor >= e->batch.count) {
		rc = sl_source_next(e->src, &e->batch);
		e->cursor = e->flushed = 0;
		if (rc == -EAGAIN) {
			/* a live source with nothing to read: the wall clock
			 * still moves timeouts and slices */
			e->batch.count = 0;
			rc = clock_tick(e);
			return rc < 0 ? rc : 1;
		}
		if (rc <= 0) {
			e->batch.count = 0;
			if (rc < 0)
				e->source_error = rc;
			return engine_finish(e, SL_END_EOF);
		}
		batch_prepare(e);
	}
	while (e->cursor < e->batch.count) {
		const struct sl_packet *p = &e->batch.pkt[e->cursor];

		if (e->cfg.slice_ns && !e->slice_end)
			slice_open(e, p->ts_ns);
		rc = clock_advance(e, p->ts_ns);
		if (rc)
			return rc; /* 1: an interval closed before this packet
				    */
		rc = packet_process(e, e->cursor);
		e->cursor++;
		if (rc)
			return rc;
	}
	return 1;
}

int sl_engine_step(struct sl_engine *e)
{
	int rc;

	if (!e->src)
		return SL_E_STATE;
	/* what the last step read and handlers chose to capture goes out
	 * before the batch is reused */
	capture_flush(e);
	if (e->done)
		return 0;
	e->out.generation++;
	e->out.n_events = 0;
	e->out.n_packets = 0;
	e->step_ev.n = 0;
	e->out.slice_ready = 0;
	e->out.n_slices = 0;
	e->in_step = 1;
	rc = engine_step(e);
	e->in_step = 0;
	return rc;
}

uint32_t sl_engine_late(struct sl_engine *e, const struct sl_event **events)
{
	struct sl_evbuf t = e->late_out;

	e->late_out = e->late_ev;
	e->late_ev = t;
	e->late_ev.n = 0;
	e->out.generation++;
	*events = e->late_out.ev;
	return e->late_out.n;
}

const struct sl_flow_rec *sl_engine_flow_find(const struct sl_engine *e,
					      uint32_t slot, uint64_t fid)
{
	if (slot >= e->pool_used || !e->pool[slot].live ||
	    e->pool[slot].rec.fid != fid)
		return NULL;
	return &e->pool[slot].rec;
}

uint32_t sl_engine_id(const struct sl_engine *e)
{
	return e->id;
}

const struct sl_output *sl_engine_output(const struct sl_engine *e)
{
	return &e->out;
}

const struct sl_stats *sl_engine_stats(const struct sl_engine *e)
{
	return &e->stats;
}

int sl_engine_source_error(const struct sl_engine *e)
{
	return e->source_error;
}

const struct sl_source *sl_engine_source(const struct sl_engine *e)
{
	return e->src;
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
