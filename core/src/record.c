/* record.c - the collector's path: flow records into flows and events.
 *
 * A collector source hands out flow records (NetFlow, IPFIX) decoded by
 * collector_*.c instead of packets. Each record is counted in the flow of its
 * key, as a packet would be, but with the record's counts and times; the
 * engine clock follows the records' end times. Exporters often report the
 * two directions of a flow apart (uniflows): both land in one flow, and
 * the side that started first is its initiator.
 */
#include <errno.h>
#include <string.h>

#include "flowtable.h"
#include "source.h"

/* What a count adds to the flow's: itself; a running total, what it
 * passed the flow's count by (one below it: the exporter's counter began
 * again, so all of it is new). */
static inline uint64_t count_delta(uint64_t have, uint64_t c, int total)
{
	if (!total)
		return c;
	return c >= have ? c - have : c;
}

/* Counts one side of a record in a direction of its flow; *added gets
 * what that added (the engine's totals count it). */
static void dir_add(struct sl_dir *d, const struct sl_counts *c,
		    const struct sl_collector_rec *r, uint8_t flags, int total,
		    struct sl_counts *added)
{
	struct sl_counts a;

	if (!c->pkts && !c->bytes && !c->ip_bytes && !flags)
		return;
	a.pkts = count_delta(d->pkts, c->pkts, total);
	a.bytes = count_delta(d->bytes, c->bytes, total);
	a.ip_bytes = count_delta(d->ip_bytes, c->ip_bytes, total);
	if (!d->pkts || r->first_ns < d->first_ns)
		d->first_ns = r->first_ns;
	if (r->last_ns > d->last_ns)
		d->last_ns = r->last_ns;
	d->pkts = sl_sat_add(d->pkts, a.pkts);
	d->bytes = sl_sat_add(d->bytes, a.bytes);
	d->ip_bytes = sl_sat_add(d->ip_bytes, a.ip_bytes);
	d->tcp_flags |= flags;
	added->pkts = sl_sat_add(added->pkts, a.pkts);
	added->bytes = sl_sat_add(added->bytes, a.bytes);
}

/* Exporters report each direction of a flow on its own (uniflows), in any
 * order: the flow's initiator is the side that sent first, as in capture,
 * so a reverse report with an earlier start turns the flow around. */
static void flow_turn(struct sl_flow *f)
{
	struct sl_dir d = f->rec.fwd;
	struct sl_counts c;
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
	c = f->base[0];
	f->base[0] = f->base[1];
	f->base[1] = c;
	f->end_told = (uint8_t)((f->end_told & 1) << 1 | f->end_told >> 1);
}

#define TCP_RST 0x04

/* How an exporter's flowEndReason (RFC 5102) ends a flow; 0 for none, or
 * for an active timeout: the exporter cut a flow that goes on, and its
 * next report adds to it. */
static int told_end(const struct sl_collector_rec *r)
{
	switch (r->end_reason) {
	case 1:
		return SL_END_IDLE;
	case 3: /* end of flow detected: FIN or RST */
		return (r->tcp_flags | r->tcp_flags_rev) & TCP_RST ? SL_END_RST
								   : SL_END_FIN;
	case 4:
		return SL_END_SHUTDOWN; /* forced end */
	case 5:
		return SL_END_TRIMMED; /* lack of resources */
	}
	return 0;
}

/* A flow its exporter said ended stays for the other side's report (as
 * a closed TCP connection, SL_TIMEOUT_TCP_CLOSED), ending with the
 * exporter's reason. di: the record's direction in the flow. */
static void record_end_told(struct sl_engine *e, struct sl_flow *f,
			    const struct sl_collector_rec *r, int di)
{
	int reason = told_end(r);

	if (!reason)
		return;
	f->end_told |= (uint8_t)(1u << di);
	if (!f->close_reason)
		flow_close(e, f, reason);
}

/* Counts record i in the flow it just created, and writes the flow's start
 * event (its packet field: the record's index in the batch). */
static int record_start(struct sl_engine *e, struct sl_flow *f, uint32_t i,
			struct sl_counts *added)
{
	const struct sl_collector_rec *r = &e->recs[i];
	struct sl_event *ev;
	int rc;

	f->rec.icmp_type = r->icmp_type;
	f->rec.icmp_code = r->icmp_code;
	dir_add(&f->rec.fwd, &r->fwd, r, r->tcp_flags, 0, added);
	dir_add(&f->rec.rev, &r->rev, r, r->tcp_flags_rev, 0, added);
	record_end_told(e, f, r, 0);
	/* a record that counts nothing still says when the flow was seen:
	 * its times (the export time when it has none), not a last of 0 */
	if (!f->rec.fwd.last_ns && !f->rec.rev.pkts)
		f->rec.fwd.last_ns =
		    r->last_ns > r->first_ns ? r->last_ns : r->first_ns;
	f->slice_flags[0] |= r->tcp_flags;
	f->slice_flags[1] |= r->tcp_flags_rev;
	if (e->cfg.slice_ns && (rc = slice_touch(e, f)))
		return rc;
	ev = sl_event_push(e, SL_EVENT_FLOW_START, slot_of(e, f), r->first_ns);
	if (!ev)
		return -ENOMEM;
	ev->packet = i;
	return 0;
}

/* Counts a record in a known flow; di: the record's direction in it. */
static int record_add(struct sl_engine *e, struct sl_flow *f,
		      const struct sl_collector_rec *r, int di,
		      struct sl_counts *added)
{
	if (di && r->fwd.pkts && r->first_ns < f->rec.fwd.first_ns) {
		flow_turn(f);
		di = 0;
	}
	record_end_told(e, f, r, di);
	dir_add(di ? &f->rec.rev : &f->rec.fwd, &r->fwd, r, r->tcp_flags,
		r->totals & SL_REC_TOTAL_FWD, added);
	dir_add(di ? &f->rec.fwd : &f->rec.rev, &r->rev, r, r->tcp_flags_rev,
		r->totals & SL_REC_TOTAL_REV, added);
	f->slice_flags[di] |= r->tcp_flags;
	f->slice_flags[!di] |= r->tcp_flags_rev;
	if (e->cfg.slice_ns)
		return slice_touch(e, f);
	return 0;
}

/* Routers on one path report the same connection each: a flow per
 * exporter and observation domain (as nfdump keeps them), told apart in
 * the padding of the canonical key (the flow's own key stays the 5-tuple)
 * by a mix of the two; records of one exporter still fold into biflows. */
static void key_mark_origin(struct sl_key *ck, uint32_t exporter,
			    uint32_t domain)
{
	uint64_t mix = ((uint64_t)exporter << 32 | domain) * 0x9e3779b97f4a7c15ULL;

	mix ^= mix >> 29;
	memcpy(ck->pad, &mix, sizeof(ck->pad));
}

static void stats_add(struct sl_engine *e, const struct sl_counts *added)
{
	e->stats.packets = sl_sat_add(e->stats.packets, added->pkts);
	e->stats.bytes = sl_sat_add(e->stats.bytes, added->bytes);
}

static int record_process(struct sl_engine *e, uint32_t i)
{
	const struct sl_collector_rec *r = &e->recs[i];
	struct sl_counts added = {0};
	struct sl_key ck = r->key;
	struct sl_flow *f;
	uint32_t hash;
	int swapped, canon, rc;

	e->stats.records++;
	canon = swapped = key_canonical(&ck);
	key_mark_origin(&ck, r->exporter, r->domain);
	hash = key_hash(&ck);
	f = flow_find_key(e, &ck, hash, &swapped);
	/* a side its exporter said ended reports again: a new connection */
	if (f && (f->end_told & (1u << (swapped ^ f->swapped)))) {
		rc = sl_flow_end(e, f, f->close_reason, e->now);
		if (rc < 0)
			return rc;
		f = NULL;
		swapped = canon;
	}
	if (!f) {
		f = sl_flow_new(e, &r->key, &ck, hash, swapped, r->first_ns);
		if (!f) {
			e->stats.flows_refused++;
			added.pkts = sl_sat_add(r->fwd.pkts, r->rev.pkts);
			added.bytes = sl_sat_add(r->fwd.bytes, r->rev.bytes);
			stats_add(e, &added);
			return 0;
		}
		rc = record_start(e, f, i, &added);
	} else {
		rc = record_add(e, f, r, swapped ^ f->swapped, &added);
	}
	/* totals count what the flows took: a running total, its growth */
	stats_add(e, &added);
	if (rc)
		return rc;
	flow_touch(e, f);
	return 0;
}

/* The last records were taken: the source gives up what it still waits
 * on before the flows end, so that the run's report counts it. */
static int records_finish(struct sl_engine *e, int reason)
{
	if (e->src->ops->records_end)
		e->src->ops->records_end(e->src);
	return sl_engine_finish(e, reason);
}

int sl_step_records(struct sl_engine *e)
{
	int rc;

	if (e->rcursor >= e->rcount) {
		if (e->stopping && !e->draining)
			return records_finish(e, SL_END_SHUTDOWN);
		e->rcursor = e->rcount = 0;
		rc = e->src->ops->records(e->src, &e->recs);
		if (rc == -EAGAIN) {
			rc = sl_clock_tick_records(e);
			return rc < 0 ? rc : 1;
		}
		if (rc <= 0) {
			if (rc < 0)
				e->source_error = rc;
			return records_finish(e, e->draining && !rc
						       ? SL_END_SHUTDOWN
						       : SL_END_EOF);
		}
		e->rcount = (uint32_t)rc;
		e->out.records = e->recs;
		e->rec_wall = sl_wall_ns();
	}
	while (e->rcursor < e->rcount) {
		uint64_t t = e->recs[e->rcursor].last_ns;

		if (t && !sl_clock_check(e, t))
			t = 0; /* counted; the record is still taken */
		if (!t)
			t = e->now; /* an exporter without times */
		if (e->cfg.slice_ns && !e->slice_end)
			sl_slice_open(e, t);
		rc = sl_clock_advance(e, t);
		if (rc)
			return rc;
		rc = record_process(e, e->rcursor);
		e->rcursor++;
		if (rc)
			return rc;
	}
	return 1;
}
