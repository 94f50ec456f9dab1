/* query.c - batch queries: group the records of a slice batch by a key,
 * sum their counters, count distinct values per group, keep the top k.
 * Policies did this in Lua with a string key and a table insert per
 * record; here it is one pass over the array with two open-addressing
 * tables (groups, and (group, value) pairs for distinct counts) that keep
 * their memory between calls. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "sluice.h"

#define MIN_CAP 64

/* One (group, value) pair seen, for distinct counts; row 0 means empty. */
struct pair {
	uint32_t row_plus1;
	uint8_t ip_version;
	uint8_t pad;
	uint16_t port;
	uint8_t addr[16];
};

/* both are hashed as three 64-bit words */
_Static_assert(sizeof(struct sl_group_key) == 24, "group key: 24 bytes");
_Static_assert(sizeof(struct pair) == 24, "pair: 24 bytes");

struct sl_query {
	struct sl_group_row *rows;
	uint32_t n_rows, rows_cap;
	/* row index + 1 in the low half (0: empty), the key's hash in the
	 * high half, so a probe reads a row only when the hashes agree */
	uint64_t *slots; /* power of two */
	uint32_t slots_mask;
	struct pair *pairs; /* power of two */
	uint32_t pairs_mask, n_pairs;
	struct sl_group_row *scratch; /* top: the rows kept */
	uint32_t scratch_cap;
};

int sl_query_new(struct sl_query **out)
{
	struct sl_query *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	*out = q;
	return 0;
}

void sl_query_free(struct sl_query *q)
{
	if (!q)
		return;
	free(q->rows);
	free(q->slots);
	free(q->pairs);
	free(q->scratch);
	free(q);
}

static uint32_t pow2_at_least(uint64_t n)
{
	uint32_t c = MIN_CAP;

	while (c < n && c < (1u << 31))
		c <<= 1;
	return c;
}

/* Room for up to max_rows groups and max_pairs distinct pairs, tables at
 * most half full; emptied for a new call. */
static int reserve(struct sl_query *q, uint32_t max_rows, uint32_t max_pairs)
{
	uint32_t slots = pow2_at_least((uint64_t)max_rows * 2);

	if (max_rows > q->rows_cap) {
		void *r = realloc(q->rows, (size_t)max_rows * sizeof(*q->rows));

		if (!r)
			return -ENOMEM;
		q->rows = r;
		q->rows_cap = max_rows;
	}
	if (slots > q->slots_mask + 1 || !q->slots) {
		void *s = malloc((size_t)slots * sizeof(*q->slots));

		if (!s)
			return -ENOMEM;
		free(q->slots);
		q->slots = s;
		q->slots_mask = slots - 1;
	}
	memset(q->slots, 0, (size_t)(q->slots_mask + 1) * sizeof(*q->slots));
	if (max_pairs) {
		uint32_t cap = pow2_at_least((uint64_t)max_pairs * 2);

		if (cap > q->pairs_mask + 1 || !q->pairs) {
			void *p = malloc((size_t)cap * sizeof(*q->pairs));

			if (!p)
				return -ENOMEM;
			free(q->pairs);
			q->pairs = p;
			q->pairs_mask = cap - 1;
		}
		memset(q->pairs, 0,
		       (size_t)(q->pairs_mask + 1) * sizeof(*q->pairs));
	}
	q->n_rows = 0;
	q->n_pairs = 0;
	return 0;
}

/* The row of key, added zeroed when new. The tables were sized for every
 * record, so neither can fill. */
static struct sl_group_row *row_of(struct sl_query *q,
				   const struct sl_group_key *key)
{
	uint32_t hash = sl_hash24(key), i = hash & q->slots_mask;
	struct sl_group_row *r;

	for (;; i = (i + 1) & q->slots_mask) {
		uint64_t s = q->slots[i];

		if (!s)
			break;
		r = &q->rows[(uint32_t)s - 1];
		if ((uint32_t)(s >> 32) == hash && sl_equal24(&r->key, key))
			return r;
	}
	r = &q->rows[q->n_rows++];
	memset(r, 0, sizeof(*r));
	r->key = *key;
	q->slots[i] = (uint64_t)hash << 32 | q->n_rows;
	return r;
}

/* Counts value (an address of a version, or a port) once per row. */
static void count_distinct(struct sl_query *q, struct sl_group_row *r,
			   const uint8_t *addr, uint8_t ip_version,
			   uint16_t port)
{
	struct pair p = { .row_plus1 = (uint32_t)(r - q->rows) + 1,
			  .ip_version = ip_version,
			  .port = port };
	uint32_t i;

	if (addr)
		memcpy(p.addr, addr, 16);
	i = sl_hash24(&p);
	for (i &= q->pairs_mask;; i = (i + 1) & q->pairs_mask) {
		struct pair *s = &q->pairs[i];

		if (!s->row_plus1)
			break;
		if (sl_equal24(s, &p))
			return;
	}
	q->pairs[i] = p;
	q->n_pairs++;
	r->distinct_count++;
}

static void cut_prefix(uint8_t *addr, unsigned bits)
{
	unsigned byte = bits / 8;

	if (byte >= 16)
		return;
	addr[byte] &= (uint8_t)(0xff00u >> (bits % 8));
	memset(addr + byte + 1, 0, 15 - byte);
}

static int spec_valid(const struct sl_group_spec *s)
{
	return s->by < SL_GROUP_BY_COUNT && s->distinct < SL_DISTINCT_COUNT &&
	       s->prefix4 <= 32 && s->prefix6 <= 128 &&
	       (s->ip_version == 0 || s->ip_version == 4 ||
		s->ip_version == 6) &&
	       (s->n_skip == 0 || s->skip) &&
	       (s->by != SL_GROUP_ID || s->ids);
}

static int skipped(const struct sl_group_spec *s, uint64_t fid)
{
	uint32_t lo = 0, hi = s->n_skip;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (s->skip[mid] < fid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->n_skip && s->skip[lo] == fid;
}

/* One record's contribution to the group that its end `side` (0 src,
 * 1 dst) keys. Counters keep the record's direction (fwd: what the
 * initiator sent) unless swap: a host group's responder end, for which fwd
 * is what it sent. */
static void add_side(struct sl_query *q, const struct sl_group_spec *s,
		     const struct sl_slice_rec *recs, uint32_t i, int side,
		     int swap)
{
	const struct sl_slice_rec *rec = &recs[i];
	const struct sl_key *k = &rec->key;
	const struct sl_counts *fwd = swap ? &rec->delta_rev : &rec->delta_fwd;
	const struct sl_counts *rev = swap ? &rec->delta_fwd : &rec->delta_rev;
	const uint8_t *peer = side ? k->src : k->dst;
	uint16_t peer_port = side ? k->sport : k->dport;
	struct sl_group_key key;
	struct sl_group_row *r;

	memset(&key, 0, sizeof(key));
	key.by = s->by;
	switch (s->by) {
	case SL_GROUP_SRC:
	case SL_GROUP_DST:
	case SL_GROUP_HOST:
		memcpy(key.addr, side ? k->dst : k->src, 16);
		key.ip_version = k->ip_version;
		key.prefix = k->ip_version == 4 ? s->prefix4 : s->prefix6;
		cut_prefix(key.addr, key.prefix);
		break;
	case SL_GROUP_SPORT:
		key.port = k->sport;
		break;
	case SL_GROUP_DPORT:
		key.port = k->dport;
		break;
	case SL_GROUP_PROTO:
		key.proto = k->proto;
		break;
	case SL_GROUP_ID:
		key.id = s->ids[i];
		break;
	}
	r = row_of(q, &key);
	r->flow_count++;
	r->fwd.pkts += fwd->pkts;
	r->rev.pkts += rev->pkts;
	r->fwd.bytes += fwd->bytes;
	r->rev.bytes += rev->bytes;
	switch (s->distinct) {
	case SL_DISTINCT_SRC:
		count_distinct(q, r, k->src, k->ip_version, 0);
		break;
	case SL_DISTINCT_DST:
		count_distinct(q, r, k->dst, k->ip_version, 0);
		break;
	case SL_DISTINCT_PEER:
		count_distinct(q, r, peer, k->ip_version, 0);
		break;
	case SL_DISTINCT_SPORT:
		count_distinct(q, r, NULL, 0, k->sport);
		break;
	case SL_DISTINCT_DPORT:
		count_distinct(q, r, NULL, 0, k->dport);
		break;
	case SL_DISTINCT_PEER_PORT:
		count_distinct(q, r, NULL, 0, peer_port);
		break;
	}
}

int sl_query_group(struct sl_query *q, const struct sl_group_spec *spec,
		   const struct sl_slice_rec *recs, uint32_t n)
{
	int host = spec->by == SL_GROUP_HOST;
	int side = spec->by == SL_GROUP_DST;
	/* flows of engine:update's id and string keys have no addresses,
	 * ports or protocol to group or count by */
	int ip_only = spec->by < SL_GROUP_ALL ||
		      spec->distinct != SL_DISTINCT_NONE;
	uint64_t most = (uint64_t)n * (host ? 2 : 1);
	int rc;

	if (!spec_valid(spec) || most > (1u << 30))
		return -EINVAL;
	rc = reserve(q, most ? (uint32_t)most : 1,
		     spec->distinct ? (uint32_t)most : 0);
	if (rc < 0)
		return rc;
	for (uint32_t i = 0; i < n; i++) {
		const struct sl_slice_rec *rec = &recs[i];

		if ((spec->proto && rec->key.proto != spec->proto) ||
		    (spec->ip_version &&
		     rec->key.ip_version != spec->ip_version) ||
		    (ip_only && rec->key.ip_version != 4 &&
		     rec->key.ip_version != 6) ||
		    (spec->n_skip && skipped(spec, rec->fid)) ||
		    (spec->by == SL_GROUP_ID && !spec->ids[i]))
			continue;
		add_side(q, spec, recs, i, side, 0);
		if (host)
			add_side(q, spec, recs, i, 1, 1);
	}
	return (int)q->n_rows;
}

static uint64_t metric_of(const struct sl_group_row *r, int metric)
{
	switch (metric) {
	case SL_METRIC_BYTES:
		return r->fwd.bytes + r->rev.bytes;
	case SL_METRIC_PKTS:
		return r->fwd.pkts + r->rev.pkts;
	case SL_METRIC_BYTES_FWD:
		return r->fwd.bytes;
	case SL_METRIC_BYTES_REV:
		return r->rev.bytes;
	case SL_METRIC_PKTS_FWD:
		return r->fwd.pkts;
	case SL_METRIC_PKTS_REV:
		return r->rev.pkts;
	case SL_METRIC_FLOWS:
		return r->flow_count;
	default:
		return r->distinct_count;
	}
}

/* Whether a ranks before b: bigger metric, then smaller key. */
static int ranks_before(const struct sl_group_row *a,
			const struct sl_group_row *b, int metric)
{
	uint64_t ma = metric_of(a, metric), mb = metric_of(b, metric);

	if (ma != mb)
		return ma > mb;
	return memcmp(&a->key, &b->key, sizeof(a->key)) < 0;
}

static int compare_rows(const void *pa, const void *pb, void *arg)
{
	const struct sl_group_row *a = pa, *b = pb;
	int metric = *(const int *)arg;

	if (ranks_before(a, b, metric))
		return -1;
	return ranks_before(b, a, metric) ? 1 : 0;
}

/* Min-heap (by rank) of the k best rows seen so far: its root is the one
 * a better row replaces. */
static void sift_down(struct sl_group_row *h, uint32_t n, uint32_t i,
		      int metric)
{
	for (;;) {
		uint32_t worst = i, l = 2 * i + 1, r = l + 1;
		struct sl_group_row t;

		if (l < n && ranks_before(&h[worst], &h[l], metric))
			worst = l;
		if (r < n && ranks_before(&h[worst], &h[r], metric))
			worst = r;
		if (worst == i)
			return;
		t = h[i];
		h[i] = h[worst];
		h[worst] = t;
		i = worst;
	}
}

int sl_query_top(struct sl_query *q, int metric, uint32_t k)
{
	uint32_t n = q->n_rows;

	if (metric < 0 || metric >= SL_METRIC_COUNT)
		return -EINVAL;
	if (k == 0) {
		q->n_rows = 0;
		return 0;
	}
	if (k >= n) {
		qsort_r(q->rows, n, sizeof(*q->rows), compare_rows, &metric);
		return (int)n;
	}
	if (k > q->scratch_cap) {
		void *s = realloc(q->scratch, (size_t)k * sizeof(*q->scratch));

		if (!s)
			return -ENOMEM;
		q->scratch = s;
		q->scratch_cap = k;
	}
	memcpy(q->scratch, q->rows, (size_t)k * sizeof(*q->rows));
	for (uint32_t i = k / 2; i-- > 0;)
		sift_down(q->scratch, k, i, metric);
	for (uint32_t i = k; i < n; i++) {
		if (ranks_before(&q->rows[i], &q->scratch[0], metric)) {
			q->scratch[0] = q->rows[i];
			sift_down(q->scratch, k, 0, metric);
		}
	}
	qsort_r(q->scratch, k, sizeof(*q->scratch), compare_rows, &metric);
	memcpy(q->rows, q->scratch, (size_t)k * sizeof(*q->rows));
	q->n_rows = k;
	return (int)k;
}

const struct sl_group_row *sl_query_rows(const struct sl_query *q, uint32_t *n)
{
	if (n)
		*n = q->n_rows;
	return q->rows;
}
