/* frag.c - attributing IP fragments to their flows.
 *
 * Only the first fragment of a datagram carries the ports, so a later one
 * would land in a port-less flow of its own. A set-associative table
 * remembers each first fragment's ports and upper-layer protocol for a
 * minute; a later fragment that finds its first borrows them, one that
 * does not is counted (frag_unmatched, by the caller). Fragments that come
 * before their first stay unattributed: the table does not reorder.
 *
 * A datagram is what all its fragments share (RFC 791, RFC 8200 4.5):
 * addresses, fragment id, and the IPv4 protocol field or the IPv6
 * Fragment header's next header; not the first fragment's upper-layer
 * protocol, which Destination Options or AH after the Fragment header
 * hide from a later fragment. The VLAN ids are matched too: a fragment
 * keeps the flows of its frame's VLAN.
 */
#include <string.h>

#include "flowtable.h"

#define FRAG_KEEP_NS (60 * SL_SEC) /* a first fragment is remembered */

/* Fills id with what identifies d's datagram. */
static void frag_ident(const struct sl_decoded *d, struct sl_frag_ent *id)
{
	const struct sl_key *k = &d->key;

	memcpy(id->src, k->src, 16);
	memcpy(id->dst, k->dst, 16);
	id->id = d->frag_id;
	id->vlan = k->vlan;
	id->vlan_inner = k->vlan_inner;
	id->ip_version = k->ip_version;
	/* an IPv4 key's proto is the IP header's (fragments are not decoded
	 * further); an IPv6 one's is not the same in first and later */
	id->nh = k->ip_version == 6 ? d->frag_nh : k->proto;
}

static uint32_t frag_hash(const struct sl_frag_ent *id)
{
	struct sl_key probe = {0};

	memcpy(probe.src, id->src, 16);
	memcpy(probe.dst, id->dst, 16);
	probe.sport = (uint16_t)id->id;
	probe.dport = (uint16_t)(id->id >> 16);
	probe.vlan = id->vlan;
	probe.vlan_inner = id->vlan_inner;
	probe.proto = id->nh;
	probe.ip_version = id->ip_version;
	return key_hash(&probe);
}

static int frag_same(const struct sl_frag_ent *a, const struct sl_frag_ent *b)
{
	return a->id == b->id && a->nh == b->nh &&
	       a->ip_version == b->ip_version && a->vlan == b->vlan &&
	       a->vlan_inner == b->vlan_inner && !memcmp(a->src, b->src, 16) &&
	       !memcmp(a->dst, b->dst, 16);
}

static int frag_fresh(const struct sl_engine *e, const struct sl_frag_bucket *b,
		      int w)
{
	return e->now - b->clock[w] <= FRAG_KEEP_NS;
}

/* The way of b holding datagram id (fresh or not), or -1. */
static int frag_find(const struct sl_frag_bucket *b, uint32_t tag,
		     const struct sl_frag_ent *id)
{
	for (int w = 0; w < SL_FRAG_WAYS; w++)
		if (b->tag[w] == tag && frag_same(&b->way[w], id))
			return w;
	return -1;
}

/* The way a new datagram takes: a free one, else an expired one, else the
 * oldest (its datagram's later fragments most likely all came). */
static int frag_victim(const struct sl_engine *e,
		       const struct sl_frag_bucket *b)
{
	int w, old = 0;

	for (w = 0; w < SL_FRAG_WAYS; w++)
		if (!b->tag[w])
			return w;
	for (w = 0; w < SL_FRAG_WAYS; w++) {
		if (!frag_fresh(e, b, w))
			return w;
		if (b->clock[w] < b->clock[old])
			old = w;
	}
	return old;
}

uint32_t sl_frag_bucket_of(const struct sl_decoded *d)
{
	struct sl_frag_ent id;

	frag_ident(d, &id);
	return frag_hash(&id) % SL_FRAG_BUCKETS;
}

int sl_frag_remember(struct sl_engine *e, struct sl_decoded *d)
{
	struct sl_key *k = &d->key;
	struct sl_frag_bucket *b;
	struct sl_frag_ent id, *fe;
	uint32_t h, tag;
	int w;

	frag_ident(d, &id);
	h = frag_hash(&id);
	b = &e->frags[h % SL_FRAG_BUCKETS];
	tag = h | 1;
	w = frag_find(b, tag, &id);
	if (d->frag == SL_FRAG_FIRST) {
		/* a first fragment seen again (a copy, or the id reused)
		 * replaces its entry rather than taking a second way */
		if (w < 0)
			w = frag_victim(e, b);
		fe = &b->way[w];
		*fe = id;
		b->clock[w] = e->now;
		fe->sport = k->sport;
		fe->dport = k->dport;
		fe->proto = k->proto;
		b->tag[w] = tag;
		return 0;
	}
	/* a later fragment: borrow its first fragment's ports and protocol */
	if (w < 0 || !frag_fresh(e, b, w))
		return 1;
	fe = &b->way[w];
	k->sport = fe->sport;
	k->dport = fe->dport;
	k->proto = fe->proto;
	return 0;
}
