/* frag.c - attributing IP fragments to their flows.
 *
 * Only the first fragment of a datagram carries the ports, so a later one
 * would land in a port-less flow of its own. A small direct-mapped table,
 * indexed by addresses, protocol and fragment id, remembers each first
 * fragment's ports for a minute; a later fragment that finds its first
 * borrows them, one that does not is counted (frag_unmatched, by the
 * caller). Fragments that come before their first stay unattributed: the
 * table does not reorder.
 */
#include <string.h>

#include "flowtable.h"

int sl_frag_remember(struct sl_engine *e, struct sl_decoded *d)
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
		return 0;
	}
	/* a later fragment: borrow the ports of its first fragment */
	if (fe->used && fe->id == d->frag_id && fe->proto == k->proto &&
	    fe->vlan == k->vlan && !memcmp(fe->src, k->src, 16) &&
	    !memcmp(fe->dst, k->dst, 16) && e->now - fe->clock <= 60 * SL_SEC) {
		k->sport = fe->sport;
		k->dport = fe->dport;
		return 0;
	}
	return 1;
}
