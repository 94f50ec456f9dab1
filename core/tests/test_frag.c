/* test_frag.c - the first-fragment table (frag.c): datagrams whose keys
 * collide in one bucket keep their entries up to the bucket's ways, the
 * oldest (or an expired) one gives way, a first fragment seen again keeps
 * its way, and a later fragment is matched by what identifies its
 * datagram (IPv6: the Fragment header's next header, not the first
 * fragment's upper-layer protocol). */
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "test.h"

#define MS 1000000ULL

/* A fragment from 10.0.0.1 (2001:db8::1) to 10.0.0.2 of datagram id;
 * proto: the key's (a later IPv6 fragment's is the Fragment header's
 * next header, nh). */
static struct sl_decoded frag(int ver, int first, uint32_t id, uint8_t proto,
			      uint8_t nh, uint16_t sport)
{
	struct sl_decoded d;

	memset(&d, 0, sizeof(d));
	d.key.ip_version = (uint8_t)ver;
	if (ver == 4) {
		d.key.src[0] = 10, d.key.src[3] = 1;
		d.key.dst[0] = 10, d.key.dst[3] = 2;
	} else {
		d.key.src[0] = 0x20, d.key.src[1] = 0x01, d.key.src[15] = 1;
		d.key.dst[0] = 0x20, d.key.dst[1] = 0x01, d.key.dst[15] = 2;
		d.frag_nh = nh;
	}
	d.key.proto = proto;
	d.frag_id = id;
	d.frag = first ? SL_FRAG_FIRST : SL_FRAG_LATER;
	if (first) {
		d.key.sport = sport;
		d.key.dport = 53;
	}
	return d;
}

static void first(struct sl_engine *e, uint64_t now, uint32_t id,
		  uint16_t sport)
{
	struct sl_decoded d = frag(4, 1, id, 17, 0, sport);

	e->now = now;
	CHECK_EQ(sl_frag_remember(e, &d), 0);
}

/* The port a later fragment of id borrows, -1: unmatched. */
static int later(struct sl_engine *e, uint64_t now, uint32_t id)
{
	struct sl_decoded d = frag(4, 0, id, 17, 0, 0);

	e->now = now;
	if (sl_frag_remember(e, &d))
		return -1;
	CHECK_EQ(d.key.dport, 53);
	return d.key.sport;
}

/* n datagram ids whose first fragments go in one bucket. */
static void colliding(uint32_t *ids, int n)
{
	struct sl_decoded d = frag(4, 1, 1, 17, 0, 0);
	uint32_t want = sl_frag_bucket_of(&d), id;
	int k = 0;

	for (id = 1; k < n; id++) {
		d.frag_id = id;
		if (sl_frag_bucket_of(&d) == want)
			ids[k++] = id;
	}
}

static void test_collisions(struct sl_engine *e)
{
	uint32_t ids[SL_FRAG_WAYS + 1];
	int i;

	colliding(ids, SL_FRAG_WAYS + 1);
	/* a full bucket of datagrams in flight: all kept (a direct-mapped
	 * table kept only the last) */
	for (i = 0; i < SL_FRAG_WAYS; i++)
		first(e, SL_SEC + (uint64_t)i * MS, ids[i],
		      (uint16_t)(1000 + i));
	for (i = 0; i < SL_FRAG_WAYS; i++)
		CHECK_EQ(later(e, 2 * SL_SEC, ids[i]), 1000 + i);
	/* one more: the oldest gives way */
	first(e, 2 * SL_SEC, ids[SL_FRAG_WAYS], 2000);
	CHECK_EQ(later(e, 2 * SL_SEC, ids[0]), -1);
	for (i = 1; i < SL_FRAG_WAYS; i++)
		CHECK_EQ(later(e, 2 * SL_SEC, ids[i]), 1000 + i);
	CHECK_EQ(later(e, 2 * SL_SEC, ids[SL_FRAG_WAYS]), 2000);
}

static void test_again_and_expiry(struct sl_engine *e)
{
	uint32_t ids[SL_FRAG_WAYS + 1];
	uint64_t t = 1000 * SL_SEC;
	int i;

	colliding(ids, SL_FRAG_WAYS + 1);
	for (i = 0; i < SL_FRAG_WAYS; i++)
		first(e, t + (uint64_t)i * MS, ids[i], (uint16_t)(1000 + i));
	/* the first fragment of ids[0] again (a copy, or its id reused): it
	 * keeps its way, with the new ports, and evicts nobody */
	first(e, t + SL_SEC, ids[0], 3000);
	CHECK_EQ(later(e, t + SL_SEC, ids[0]), 3000);
	for (i = 1; i < SL_FRAG_WAYS; i++)
		CHECK_EQ(later(e, t + SL_SEC, ids[i]), 1000 + i);
	/* ids[0] is now the newest: the next one takes ids[1]'s way */
	first(e, t + 2 * SL_SEC, ids[SL_FRAG_WAYS], 2000);
	CHECK_EQ(later(e, t + 2 * SL_SEC, ids[0]), 3000);
	CHECK_EQ(later(e, t + 2 * SL_SEC, ids[1]), -1);
	/* remembered for a minute from the first fragment */
	CHECK_EQ(later(e, t + 60 * SL_SEC, ids[2]), 1002);
	CHECK_EQ(later(e, t + 61 * SL_SEC, ids[2]), -1);
	CHECK_EQ(later(e, t + 61 * SL_SEC, ids[SL_FRAG_WAYS]), 2000);
	/* a new datagram takes an expired way; the fresh ones stay */
	first(e, t + 61 * SL_SEC, ids[1], 4000);
	CHECK_EQ(later(e, t + 61 * SL_SEC, ids[SL_FRAG_WAYS]), 2000);
	CHECK_EQ(later(e, t + 61 * SL_SEC, ids[1]), 4000);
}

/* A datagram is its addresses, id and (v4) protocol field / (v6) the
 * Fragment header's next header. */
static void test_identity(struct sl_engine *e)
{
	struct sl_decoded d;

	e->now = 5000 * SL_SEC;
	/* v6, Destination Options (60) after the Fragment header: the first
	 * fragment's key has UDP, a later one's the next header 60 */
	d = frag(6, 1, 0x700, 17, 60, 4444);
	CHECK_EQ(sl_frag_remember(e, &d), 0);
	d = frag(6, 0, 0x700, 60, 60, 0);
	CHECK_EQ(sl_frag_remember(e, &d), 0);
	CHECK_EQ(d.key.sport, 4444);
	CHECK_EQ(d.key.dport, 53);
	CHECK_EQ(d.key.proto, 17);
	/* AH (51) after it, TCP inside */
	d = frag(6, 1, 0x701, 6, 51, 4445);
	CHECK_EQ(sl_frag_remember(e, &d), 0);
	d = frag(6, 0, 0x701, 51, 51, 0);
	CHECK_EQ(sl_frag_remember(e, &d), 0);
	CHECK_EQ(d.key.proto, 6);
	CHECK_EQ(d.key.sport, 4445);
	/* another next header, or the same id from another VLAN: another
	 * datagram, unmatched (and keeping its own key) */
	d = frag(6, 0, 0x700, 51, 51, 0);
	CHECK_EQ(sl_frag_remember(e, &d), 1);
	CHECK_EQ(d.key.proto, 51);
	CHECK_EQ(d.key.sport, 0);
	d = frag(6, 0, 0x700, 60, 60, 0);
	d.key.vlan = 7;
	CHECK_EQ(sl_frag_remember(e, &d), 1);
	/* v4: UDP and TCP datagrams of one id are two datagrams */
	d = frag(4, 1, 0x77, 17, 0, 4448);
	CHECK_EQ(sl_frag_remember(e, &d), 0);
	d = frag(4, 1, 0x77, 6, 0, 4449);
	CHECK_EQ(sl_frag_remember(e, &d), 0);
	d = frag(4, 0, 0x77, 17, 0, 0);
	CHECK_EQ(sl_frag_remember(e, &d), 0);
	CHECK_EQ(d.key.sport, 4448);
	d = frag(4, 0, 0x77, 6, 0, 0);
	CHECK_EQ(sl_frag_remember(e, &d), 0);
	CHECK_EQ(d.key.sport, 4449);
	d = frag(4, 0, 0x77, 1, 0, 0);
	CHECK_EQ(sl_frag_remember(e, &d), 1);
}

/* Many datagrams in flight over the whole table: none lost. */
static void test_many_in_flight(struct sl_engine *e)
{
	enum { N = 40000, FLIGHT = 2000 };
	uint64_t t = 9000 * SL_SEC;
	int lost = 0;

	for (uint32_t i = 0; i < N + FLIGHT; i++) {
		if (i < N)
			first(e, t + i * 1000, 100000 + i, (uint16_t)i);
		if (i >= FLIGHT &&
		    later(e, t + i * 1000, 100000 + i - FLIGHT) !=
			(uint16_t)(i - FLIGHT))
			lost++;
	}
	CHECK_EQ(lost, 0);
}

int main(void)
{
	struct sl_engine *e = calloc(1, sizeof(*e));

	if (!e)
		return 1;
	test_collisions(e);
	test_again_and_expiry(e);
	test_identity(e);
	test_many_in_flight(e);
	free(e);
	return test_done();
}
