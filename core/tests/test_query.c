/* test_query.c - batch queries against a plain recount: random records
 * over a few hosts, every grouping, distinct kind and metric, checked
 * group by group against sums made here the slow, obvious way. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"
#include "test.h"

#define N_RECS 3000

static struct sl_slice_rec recs[N_RECS];
static uint32_t ids[N_RECS]; /* SL_GROUP_ID: 0 (left out) to 4 */

static uint32_t rnd_state = 12345;
static uint32_t rnd(void)
{
	rnd_state = rnd_state * 1103515245u + 12345u;
	return rnd_state >> 8;
}

static void make_records(void)
{
	for (int i = 0; i < N_RECS; i++) {
		struct sl_slice_rec *r = &recs[i];
		struct sl_key *k = &r->key;

		memset(r, 0, sizeof(*r));
		r->fid = (uint64_t)i + 1;
		k->ip_version = rnd() % 4 ? 4 : 6;
		if (k->ip_version == 4) {
			uint8_t s[4] = { 10, 1, (uint8_t)(rnd() % 3),
					 (uint8_t)(rnd() % 7) };
			uint8_t d[4] = { 192, 168, (uint8_t)(rnd() % 2),
					 (uint8_t)(rnd() % 5) };
			memcpy(k->src, s, 4);
			memcpy(k->dst, d, 4);
		} else {
			k->src[0] = 0x20;
			k->src[1] = 0x01;
			k->src[7] = (uint8_t)(rnd() % 3);
			k->src[15] = (uint8_t)(rnd() % 4);
			k->dst[0] = 0xfd;
			k->dst[15] = (uint8_t)(rnd() % 3);
		}
		k->proto = rnd() % 3 ? 6 : 17;
		k->sport = (uint16_t)(1024 + rnd() % 9);
		k->dport = (uint16_t)(rnd() % 2 ? 443 : 80 + rnd() % 4);
		r->delta_fwd.pkts = rnd() % 10;
		r->delta_fwd.bytes = r->delta_fwd.pkts * (40 + rnd() % 1400);
		r->delta_rev.pkts = rnd() % 10;
		r->delta_rev.bytes = r->delta_rev.pkts * (40 + rnd() % 1400);
		ids[i] = rnd() % 5;
	}
}

/* The key record r gives the group of its end `side`, built the slow way. */
static struct sl_group_key slow_key(const struct sl_group_spec *s,
				    const struct sl_slice_rec *r, int side)
{
	struct sl_group_key key;

	memset(&key, 0, sizeof(key));
	key.by = s->by;
	if (s->by == SL_GROUP_SRC || s->by == SL_GROUP_DST ||
	    s->by == SL_GROUP_HOST) {
		unsigned bits = r->key.ip_version == 4 ? s->prefix4 : s->prefix6;

		memcpy(key.addr, side ? r->key.dst : r->key.src, 16);
		key.ip_version = r->key.ip_version;
		key.prefix = (uint8_t)bits;
		for (unsigned b = bits; b < 128; b++)
			key.addr[b / 8] &= (uint8_t)~(0x80u >> (b % 8));
	} else if (s->by == SL_GROUP_SPORT) {
		key.port = r->key.sport;
	} else if (s->by == SL_GROUP_DPORT) {
		key.port = r->key.dport;
	} else if (s->by == SL_GROUP_PROTO) {
		key.proto = r->key.proto;
	} else if (s->by == SL_GROUP_ID) {
		key.id = ids[r - recs];
	}
	return key;
}

/* The distinct value of record r for a group of end `side`, as text. */
static void slow_value(const struct sl_group_spec *s,
		       const struct sl_slice_rec *r, int side, char *out)
{
	const uint8_t *a = NULL;
	int port = -1;

	switch (s->distinct) {
	case SL_DISTINCT_SRC: a = r->key.src; break;
	case SL_DISTINCT_DST: a = r->key.dst; break;
	case SL_DISTINCT_PEER: a = side ? r->key.src : r->key.dst; break;
	case SL_DISTINCT_SPORT: port = r->key.sport; break;
	case SL_DISTINCT_DPORT: port = r->key.dport; break;
	case SL_DISTINCT_PEER_PORT:
		port = side ? r->key.sport : r->key.dport;
		break;
	}
	if (a) {
		for (int i = 0; i < 16; i++)
			sprintf(out + 2 * i, "%02x", a[i]);
		sprintf(out + 32, "/%d", r->key.ip_version);
	} else {
		sprintf(out, "%d", port);
	}
}

static int included(const struct sl_group_spec *s,
		    const struct sl_slice_rec *r)
{
	if (s->proto && r->key.proto != s->proto)
		return 0;
	if (s->ip_version && r->key.ip_version != s->ip_version)
		return 0;
	if (s->by == SL_GROUP_ID && !ids[r - recs])
		return 0;
	for (uint32_t i = 0; i < s->n_skip; i++)
		if (s->skip[i] == r->fid)
			return 0;
	return 1;
}

/* Recounts one row of the query's result from every record. */
static void check_row(const struct sl_group_spec *s,
		      const struct sl_group_row *row)
{
	uint64_t flows = 0, pf = 0, pr = 0, bf = 0, br = 0, distinct = 0;
	static char seen[2 * N_RECS][48];

	for (int i = 0; i < N_RECS; i++) {
		const struct sl_slice_rec *r = &recs[i];

		if (!included(s, r))
			continue;
		for (int side = 0; side < 2; side++) {
			int host = s->by == SL_GROUP_HOST;
			int my_side = s->by == SL_GROUP_DST ? 1 : side;
			struct sl_group_key k;
			char v[48];
			uint64_t j;

			if (!host && side)
				break;
			k = slow_key(s, r, my_side);
			if (memcmp(&k, &row->key, sizeof(k)))
				continue;
			flows++;
			pf += host && side ? r->delta_rev.pkts : r->delta_fwd.pkts;
			pr += host && side ? r->delta_fwd.pkts : r->delta_rev.pkts;
			bf += host && side ? r->delta_rev.bytes : r->delta_fwd.bytes;
			br += host && side ? r->delta_fwd.bytes : r->delta_rev.bytes;
			if (!s->distinct)
				continue;
			slow_value(s, r, my_side, v);
			for (j = 0; j < distinct; j++)
				if (!strcmp(seen[j], v))
					break;
			if (j == distinct)
				strcpy(seen[distinct++], v);
		}
	}
	CHECK_EQ(row->flow_count, flows);
	CHECK_EQ(row->fwd.pkts, pf);
	CHECK_EQ(row->rev.pkts, pr);
	CHECK_EQ(row->fwd.bytes, bf);
	CHECK_EQ(row->rev.bytes, br);
	CHECK_EQ(row->distinct_count, distinct);
}

/* Every record lands in exactly one row (two for host groups). */
static void check_query(struct sl_query *q, const struct sl_group_spec *s)
{
	int n = sl_query_group(q, s, recs, N_RECS);
	const struct sl_group_row *rows;
	uint32_t count;
	uint64_t flows = 0, expect = 0;

	CHECK(n > 0);
	rows = sl_query_rows(q, &count);
	CHECK_EQ(count, n);
	for (int i = 0; i < N_RECS; i++)
		expect += included(s, &recs[i]) * (s->by == SL_GROUP_HOST ? 2 : 1);
	for (uint32_t i = 0; i < count; i++) {
		flows += rows[i].flow_count;
		check_row(s, &rows[i]);
		for (uint32_t j = 0; j < i; j++)
			CHECK(memcmp(&rows[i].key, &rows[j].key,
				     sizeof(rows[i].key)));
	}
	CHECK_EQ(flows, expect);
}

static uint64_t metric(const struct sl_group_row *r, int m)
{
	switch (m) {
	case SL_METRIC_BYTES: return r->fwd.bytes + r->rev.bytes;
	case SL_METRIC_PKTS: return r->fwd.pkts + r->rev.pkts;
	case SL_METRIC_BYTES_FWD: return r->fwd.bytes;
	case SL_METRIC_BYTES_REV: return r->rev.bytes;
	case SL_METRIC_PKTS_FWD: return r->fwd.pkts;
	case SL_METRIC_PKTS_REV: return r->rev.pkts;
	case SL_METRIC_FLOWS: return r->flow_count;
	default: return r->distinct_count;
	}
}

/* top k equals the first k of a full sort, itself in rank order. */
static void test_top(struct sl_query *q)
{
	struct sl_group_spec s = { .by = SL_GROUP_HOST, .prefix4 = 32,
				   .prefix6 = 128,
				   .distinct = SL_DISTINCT_PEER_PORT };

	for (int m = 0; m < SL_METRIC_COUNT; m++) {
		for (uint32_t k = 0; k <= 12; k += 3) {
			struct sl_group_row all[256], top[16];
			const struct sl_group_row *rows;
			uint32_t n, nt;
			int kept;

			CHECK(sl_query_group(q, &s, recs, N_RECS) > 12);
			CHECK(sl_query_top(q, m, UINT32_MAX) > 12);
			rows = sl_query_rows(q, &n);
			CHECK(n <= 256);
			memcpy(all, rows, n * sizeof(*rows));
			for (uint32_t i = 1; i < n; i++) {
				uint64_t a = metric(&all[i - 1], m),
					 b = metric(&all[i], m);
				CHECK(a > b ||
				      (a == b && memcmp(&all[i - 1].key,
							&all[i].key,
							sizeof(all[i].key)) < 0));
			}
			sl_query_group(q, &s, recs, N_RECS);
			kept = sl_query_top(q, m, k);
			CHECK_EQ(kept, k);
			rows = sl_query_rows(q, &nt);
			CHECK_EQ(nt, k);
			memcpy(top, rows, nt * sizeof(*rows));
			CHECK(!memcmp(top, all, k * sizeof(*rows)));
		}
	}
	CHECK_EQ(sl_query_top(q, SL_METRIC_COUNT, 3), -EINVAL);
}

/* Ids are dense from 1, stable, and give their address back, through
 * several rounds of growth. */
static void test_addr_ids(void)
{
	struct sl_addr_ids *t;
	uint64_t x = 88172645463325252ULL; /* xorshift: the LCG's low bits repeat */
	enum { N = 100000 };
	static uint8_t addrs[N][16];
	static int64_t got[N];
	uint8_t back[16];

	CHECK_EQ(sl_addr_ids_new(&t), 0);
	for (int i = 0; i < N; i++) {
		int v = i % 3 ? 4 : 6;

		for (int b = 0; b < 16; b++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			addrs[i][b] = (uint8_t)(x >> 32);
		}
		/* every 10th repeats an earlier address */
		if (i % 10 == 9)
			memcpy(addrs[i], addrs[i / 2], 16);
		got[i] = sl_addr_id(t, addrs[i], v);
		CHECK(got[i] >= 1);
	}
	for (int i = 0; i < N; i++) {
		int v = i % 3 ? 4 : 6;
		int j = i % 10 == 9 ? i / 2 : i;
		int vj = j % 3 ? 4 : 6;

		if (v == vj)
			CHECK_EQ(got[i], got[j]);
		CHECK_EQ(sl_addr_id(t, addrs[i], v), got[i]);
		CHECK_EQ(sl_addr_of_id(t, got[i], back), v);
		CHECK(!memcmp(back, addrs[i], v == 4 ? 4 : 16));
	}
	CHECK(sl_addr_ids_count(t) > N * 8 / 10);
	CHECK(sl_addr_ids_count(t) <= N);
	CHECK_EQ(sl_addr_of_id(t, sl_addr_ids_count(t), back) > 0, 1);
	CHECK_EQ(sl_addr_of_id(t, sl_addr_ids_count(t) + 1, back), -ENOENT);
	CHECK_EQ(sl_addr_of_id(t, 0, back), -ENOENT);
	CHECK_EQ(sl_addr_id(t, addrs[0], 5), -EINVAL);
	/* the bytes past an IPv4 address do not count */
	memcpy(back, addrs[1], 16);
	back[7] ^= 0xff;
	CHECK_EQ(sl_addr_id(t, back, 4), got[1]);
	sl_addr_ids_free(t);
}

int main(void)
{
	struct sl_query *q;
	uint64_t skip[] = { 3, 10, 11, 500, 2999 };
	static const uint8_t prefixes[][2] = { { 32, 128 }, { 24, 64 },
					       { 16, 56 }, { 0, 0 },
					       { 31, 127 } };

	make_records();
	CHECK_EQ(sl_query_new(&q), 0);
	for (int by = 0; by < SL_GROUP_BY_COUNT; by++) {
		for (int d = 0; d < SL_DISTINCT_COUNT; d++) {
			const uint8_t *p = prefixes[(by + d) % 5];
			struct sl_group_spec s = { .by = (uint8_t)by,
						   .distinct = (uint8_t)d,
						   .prefix4 = p[0],
						   .prefix6 = p[1],
						   .ids = ids };

			check_query(q, &s);
			s.proto = 6;
			s.skip = skip;
			s.n_skip = 5;
			check_query(q, &s);
			s.proto = 0;
			s.ip_version = 6;
			check_query(q, &s);
		}
	}
	test_top(q);
	test_addr_ids();
	{
		struct sl_group_spec bad = { .by = SL_GROUP_BY_COUNT };

		CHECK_EQ(sl_query_group(q, &bad, recs, N_RECS), -EINVAL);
		bad.by = SL_GROUP_SRC;
		bad.prefix4 = 33;
		CHECK_EQ(sl_query_group(q, &bad, recs, N_RECS), -EINVAL);
		bad.prefix4 = 24;
		CHECK_EQ(sl_query_group(q, &bad, recs, 0), 0);
		bad.by = SL_GROUP_ID; /* without ids */
		CHECK_EQ(sl_query_group(q, &bad, recs, N_RECS), -EINVAL);
	}
	sl_query_free(q);
	return test_done();
}
