/* update.c - sl_engine_update: flow updates from outside the data path.
 *
 * An update (from a collector, a conntrack feed, Lua) adds counts to a
 * flow named by a handle or by up to UPDATE_MAX_KEYS keys, which may be
 * 5-tuples or other kinds (an external id, a string). A known key finds
 * the flow; every key not yet known becomes an alias of it, so that later
 * packets, records or updates with any of those keys land in the same
 * flow; with no known key a new flow starts under the first. Keys owned by
 * two different flows are a conflict, refused before anything changes.
 */
#include <errno.h>

#include "flowtable.h"

enum { UPDATE_MAX_KEYS = 16 };

static int key_is_tuple(const struct sl_key *k)
{
	return k->ip_version == 4 || k->ip_version == 6;
}

/* Returns whether anything was added. */
static int update_counts(struct sl_engine *e, struct sl_flow *f,
			 const struct sl_update *u)
{
	const struct sl_counts *add[2] = {&u->add_fwd, &u->add_rev};
	struct sl_dir *dir[2] = {&f->rec.fwd, &f->rec.rev};
	int added = 0;

	for (int i = 0; i < 2; i++) {
		if (!add[i]->pkts && !add[i]->bytes && !add[i]->ip_bytes)
			continue;
		added = 1;
		if (!dir[i]->pkts)
			dir[i]->first_ns = e->now;
		dir[i]->last_ns = e->now;
		dir[i]->pkts = sl_sat_add(dir[i]->pkts, add[i]->pkts);
		dir[i]->bytes = sl_sat_add(dir[i]->bytes, add[i]->bytes);
		dir[i]->ip_bytes =
		    sl_sat_add(dir[i]->ip_bytes, add[i]->ip_bytes);
	}
	flow_touch(e, f);
	return added;
}

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
		o = flow_find_key(e, &ck[i], hash[i], NULL);
		if (o && f && o != f)
			return SL_E_CONFLICT;
		if (o)
			f = o;
		known[i] = o != NULL;
		for (uint32_t j = 0; j < i && !known[i]; j++)
			known[i] = key_equal(&ck[i], &ck[j]); /* repeated */
		n_new += !known[i];
	}
	/* the input has ended and its flows are being ended: a flow started
	 * now would see no packet, and a handler that starts one per ending
	 * flow would keep the run from ending */
	if (!f && e->finish_reason)
		return SL_E_STATE;
	if (n_new) {
		rc = sl_alias_reserve(e, n_new);
		if (rc)
			return rc;
	}
	if (!f) {
		f = sl_flow_new(
		    e, key_is_tuple(&u->keys[0]) ? &u->keys[0] : &ck[0], &ck[0],
		    hash[0], sw[0], e->now);
		if (!f) {
			e->stats.flows_refused++;
			return SL_E_POOL;
		}
		known[0] = 1;
		u->created = 1;
	}
	for (uint32_t i = 0; i < n; i++)
		if (!known[i])
			sl_alias_link(e, f, &ck[i], hash[i], sw[i]);
	/* a flow started without counts lasts from its start, not from 0 */
	if (u->created && !f->rec.fwd.last_ns)
		f->rec.fwd.last_ns = f->rec.fwd.first_ns;
	/* a slice holds flows that had packets in it: not an update of
	 * tags alone */
	if (update_counts(e, f, u) && e->cfg.slice_ns && e->slice_end) {
		rc = slice_touch(e, f);
		if (rc)
			return rc;
	}
	if (u->created &&
	    !sl_event_push(e, SL_EVENT_FLOW_START, slot_of(e, f), e->now))
		return -ENOMEM;
	u->slot = slot_of(e, f);
	u->fid = f->rec.fid;
	return 0;
}
