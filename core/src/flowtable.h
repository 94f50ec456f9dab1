/* flowtable.h - the flow table's per-packet operations, inline.
 *
 * Keys (hash, canonical order, compare), the slot lists threaded through
 * the pool, the hash lookup, finding a flow by a key or one of its aliases,
 * and touching a flow. Every packet and every collected record goes
 * through them, from packet.c, record.c and update.c: they are static
 * inline here so that they still inline in each of those files, as they
 * did when the engine was one file. The rest of the table (creation,
 * aliases, trims) is in flowtable.c.
 */
#ifndef SL_FLOWTABLE_H
#define SL_FLOWTABLE_H

#include <string.h>

#include "engine.h"

/* ---- lists ----------------------------------------------------------- */

#define LINK(e, slot, member) (&(e)->pool[slot].member)

static inline void list_init(struct sl_list *l)
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

/* ---- keys ------------------------------------------------------------ */

_Static_assert(sizeof(struct sl_key) == 48, "keys are hashed as 6 words");

static inline uint32_t key_hash(const struct sl_key *k)
{
	uint64_t w[6];
	unsigned __int128 a, b, c;
	uint64_t h;

	memcpy(w, k, sizeof(w));
	/* three independent 64x64->128 products, then one multiply: every
	 * packet is hashed (twice with a shared input), and six multiplies
	 * in a row took 2-5% of a run; buckets and workers spread alike */
	a = (unsigned __int128)(w[0] ^ 0x9e3779b97f4a7c15ULL) *
	    (w[1] ^ 0xbf58476d1ce4e5b9ULL);
	b = (unsigned __int128)(w[2] ^ 0x94d049bb133111ebULL) *
	    (w[3] ^ 0xff51afd7ed558ccdULL);
	c = (unsigned __int128)(w[4] ^ 0xc4ceb9fe1a85ec53ULL) *
	    (w[5] ^ 0x2545f4914f6cdd1dULL);
	h = (uint64_t)a ^ (uint64_t)(a >> 64) ^ (uint64_t)b ^
	    (uint64_t)(b >> 64) ^ (uint64_t)c ^ (uint64_t)(c >> 64);
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 32;
	return (uint32_t)h;
}

/* Orders the endpoints so both directions give one key; returns 1 if the
 * key had to be reversed. */
static inline int addr_order(const uint8_t *a, const uint8_t *b)
{
	uint64_t x[2], y[2];

	/* memcmp's order, as two big-endian words: no call per packet */
	memcpy(x, a, 16);
	memcpy(y, b, 16);
	for (int i = 0; i < 2; i++) {
		uint64_t u = __builtin_bswap64(x[i]), v = __builtin_bswap64(y[i]);

		if (u != v)
			return u < v ? -1 : 1;
	}
	return 0;
}

static inline int key_canonical(struct sl_key *k)
{
	int c = addr_order(k->src, k->dst);
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

/* ---- lookup ---------------------------------------------------------- */

static inline uint32_t *bucket_of(struct sl_engine *e, uint32_t hash)
{
	return &e->buckets[hash & e->bucket_mask];
}

static inline uint32_t slot_of(struct sl_engine *e, struct sl_flow *f)
{
	return (uint32_t)(f - e->pool);
}

/* The live flow whose own key is ck, or NULL. */
static inline struct sl_flow *
flow_lookup(struct sl_engine *e, const struct sl_key *ck, uint32_t hash)
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

/* The live flow owning a canonical key: its own key, else one of its
 * aliases. *swapped (may be NULL) says whether the key was reversed to
 * canonical form; through an alias the flow's direction is the one its
 * update gave, so it is turned into that. */
static inline struct sl_flow *flow_find_key(struct sl_engine *e,
					    const struct sl_key *ck,
					    uint32_t hash, int *swapped)
{
	struct sl_flow *f = flow_lookup(e, ck, hash);
	const struct sl_alias *al;

	if (f || !e->n_aliases)
		return f;
	al = sl_alias_lookup(e, ck, hash);
	if (!al)
		return NULL;
	f = &e->pool[al->slot];
	if (swapped)
		*swapped ^= al->swapped ^ f->swapped;
	return f;
}

/* The flow in a slot if it is still the one with this id (a handle's). */
static inline struct sl_flow *flow_at(struct sl_engine *e, uint32_t slot,
				      uint64_t fid)
{
	if (slot >= e->pool_used || !e->pool[slot].live ||
	    e->pool[slot].rec.fid != fid)
		return NULL;
	return &e->pool[slot];
}

/* A TCP flow closed: it stays for SL_TIMEOUT_TCP_CLOSED after its last
 * packet (flow_touch moved it to its list's tail), then ends with reason. */
static inline void flow_close(struct sl_engine *e, struct sl_flow *f,
			      int reason)
{
	uint32_t slot = slot_of(e, f);

	f->close_reason = (uint8_t)reason;
	LIST_REMOVE(e, &e->idle[f->tclass], slot, idle);
	f->tclass = SL_TIMEOUT_TCP_CLOSED;
	LIST_APPEND(e, &e->idle[f->tclass], slot, idle);
}

/* Activity: the idle list is ordered by last activity, so the flow moves
 * to its tail and idle timeouts are found at the head. */
static inline void flow_touch(struct sl_engine *e, struct sl_flow *f)
{
	uint32_t slot = slot_of(e, f);

	f->idle_clock = e->now;
	LIST_REMOVE(e, &e->idle[f->tclass], slot, idle);
	LIST_APPEND(e, &e->idle[f->tclass], slot, idle);
}

#endif
