/* slice.c - time slices: per-flow records of each interval.
 *
 * The engine cuts time into intervals of slice_ns. A flow with activity in
 * the open interval is listed once (slice_touch); when the interval closes
 * every listed flow still live writes a record of its deltas and totals,
 * and flows that ended in the interval wrote theirs as they ended. The
 * records are double-buffered: the open interval's are collected apart
 * from the published batch (sl_output.slices), which Lua may be reading.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "flowtable.h"

/* A slice's copy of its flow's label, beside it (by record index). The
 * records being filled are not the published ones: if the copies move
 * as they grow, the earlier records are pointed at them again. Without
 * room, the record goes without. */
static void slice_label(struct sl_engine *e, struct sl_slice_rec *r,
			const struct sl_app_label *app)
{
	uint32_t i = (uint32_t)(r - e->slices);
	struct sl_app_label *before = e->slice_app;

	if (sl_grow((void **)&e->slice_app, &e->cap_slice_app, i + 1,
		    sizeof(*e->slice_app)))
		return;
	if (e->slice_app != before)
		for (uint32_t j = 0; j < i; j++)
			if (e->slices[j].app)
				e->slices[j].app = &e->slice_app[j];
	e->slice_app[i] = *app;
	r->app = &e->slice_app[i];
}

int sl_slice_record(struct sl_engine *e, struct sl_flow *f)
{
	struct sl_slice_rec *r;
	const struct sl_dir *d[2] = {&f->rec.fwd, &f->rec.rev};

	if (sl_grow((void **)&e->slices, &e->cap_slices, e->n_slices + 1,
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
	r->encap = f->rec.encap;
	if (f->rec.app && f->rec.app->state == SL_DPI_DONE)
		slice_label(e, r, f->rec.app);
	for (int i = 0; i < 2; i++) {
		struct sl_counts *delta = i ? &r->delta_rev : &r->delta_fwd;
		struct sl_counts *total = i ? &r->total_rev : &r->total_fwd;

		total->pkts = d[i]->pkts;
		total->bytes = d[i]->bytes;
		total->ip_bytes = d[i]->ip_bytes;
		delta->pkts = total->pkts - f->base[i].pkts;
		delta->bytes = total->bytes - f->base[i].bytes;
		delta->ip_bytes = total->ip_bytes - f->base[i].ip_bytes;
		f->base[i] = *total;
	}
	r->tcp_flags_fwd = f->slice_flags[0];
	r->tcp_flags_rev = f->slice_flags[1];
	f->slice_flags[0] = f->slice_flags[1] = 0;
	f->slice_epoch = 0;
	e->stats.slice_records++;
	return 0;
}

int sl_slice_list(struct sl_engine *e, struct sl_flow *f)
{
	if (sl_grow((void **)&e->touched, &e->cap_touched, e->n_touched + 1,
		    sizeof(*e->touched)))
		return -ENOMEM;
	f->slice_epoch = e->slice_epoch;
	e->touched[e->n_touched++] = slot_of(e, f);
	return 0;
}

void sl_slice_open(struct sl_engine *e, uint64_t t)
{
	e->slice_start = t - t % e->cfg.slice_ns;
	/* saturated: the clock stays below UINT64_MAX, so an interval that
	 * would end past it closes at the end of the input */
	e->slice_end = sl_sat_add(e->slice_start, e->cfg.slice_ns);
	e->slice_epoch++;
	if (!e->slice_epoch) /* 0 means "not touched" */
		e->slice_epoch = 1;
	e->n_touched = 0;
}

/* Writes a record for every flow touched in the open interval (flows that
 * ended in it already wrote theirs) and publishes the batch; the next
 * interval collects its records in the other array. */
int sl_slice_close(struct sl_engine *e)
{
	struct sl_slice_rec *t;
	struct sl_app_label *ta;
	uint32_t cap;
	int rc;

	for (uint32_t i = 0; i < e->n_touched; i++) {
		struct sl_flow *f = &e->pool[e->touched[i]];

		/* a slot can be listed twice if it was freed and reused */
		if (!f->live || f->slice_epoch != e->slice_epoch)
			continue;
		rc = sl_slice_record(e, f);
		if (rc)
			return rc;
	}
	t = e->slices_pub;
	e->slices_pub = e->slices;
	e->slices = t;
	cap = e->cap_slices_pub;
	e->cap_slices_pub = e->cap_slices;
	e->cap_slices = cap;
	ta = e->slice_app_pub;
	e->slice_app_pub = e->slice_app;
	e->slice_app = ta;
	cap = e->cap_slice_app_pub;
	e->cap_slice_app_pub = e->cap_slice_app;
	e->cap_slice_app = cap;
	e->out.slices = e->slices_pub;
	e->out.n_slices = e->n_slices;
	e->n_slices = 0;
	e->out.slice_start_ns = e->slice_start;
	e->out.slice_end_ns = e->slice_end;
	e->out.slice_ready = 1;
	e->stats.slices_closed++;
	return 0;
}
