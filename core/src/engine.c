/* engine.c - the engine: its life, its step, events and ending flows.
 *
 * One engine is owned by one thread. A step reads packets (packet.c) or a
 * collector's records (record.c) until something is to be handed out: an
 * interval closed, or the batch is done. Its output (events, slice batch,
 * packets) stays put while Lua reads it: events caused between steps go to
 * a buffer of their own (sl_engine_late). Ending a flow ties the table,
 * slices and events together, so it lives here. The packet path allocates
 * nothing: flows live in a preallocated pool (flowtable.c) and the output
 * arrays only grow, so after warm-up they are reused. Packet filters and
 * pcap writers are registered here; packet.c applies them.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "flowtable.h"
#include "source.h"

static const uint64_t default_idle_ns[SL_TIMEOUT_COUNT] = {
    [SL_TIMEOUT_TCP] = 300 * SL_SEC,
    [SL_TIMEOUT_UDP] = 60 * SL_SEC,
    [SL_TIMEOUT_ICMP] = 30 * SL_SEC,
    [SL_TIMEOUT_OTHER] = 30 * SL_SEC,
    [SL_TIMEOUT_TCP_CLOSED] = 2 * SL_SEC,
};

enum { DEFAULT_POOL = 1 << 20 };

static uint32_t engines_made; /* engine numbers, from 1 */

/* ---- events and the end of flows --------------------------------------- */

/* Points a record's features (those it has) at the copies of event i. */
static void features_point(struct sl_flow_rec *r, const struct sl_evbuf *b,
			   uint32_t i)
{
	if (r->stats)
		r->stats = &b->stats[i];
	if (r->splt)
		r->splt = &b->splt[i];
	if (r->app)
		r->app = &b->app[i];
}

/* An end event's copy of its flow's features, beside it in the buffer
 * (by event index). The buffer being filled is not the one Lua reads: if
 * the copies move as it grows, its earlier events are pointed at them
 * again. Without room, the event goes without them. */
static void event_features(struct sl_engine *e, struct sl_evbuf *b,
			   struct sl_event *ev)
{
	uint32_t i = (uint32_t)(ev - b->ev);
	const void *before[3] = {b->stats, b->splt, b->app};

	if ((e->feat_stats && sl_grow((void **)&b->stats, &b->stats_cap, i + 1,
				      sizeof(*b->stats))) ||
	    (e->feat_splt && sl_grow((void **)&b->splt, &b->splt_cap, i + 1,
				     sizeof(*b->splt))) ||
	    (e->feat_app &&
	     sl_grow((void **)&b->app, &b->app_cap, i + 1, sizeof(*b->app)))) {
		ev->flow.stats = NULL;
		ev->flow.splt = NULL;
		ev->flow.app = NULL;
		return;
	}
	if (before[0] != b->stats || before[1] != b->splt ||
	    before[2] != b->app)
		for (uint32_t j = 0; j < i; j++)
			features_point(&b->ev[j].flow, b, j);
	if (e->feat_stats)
		b->stats[i] = e->feat_stats[ev->slot];
	if (e->feat_splt)
		b->splt[i] = e->feat_splt[ev->slot];
	if (e->feat_app)
		b->app[i] = e->feat_app[ev->slot];
	features_point(&ev->flow, b, i);
}

/* Events of a step go to its output; events caused between steps (an
 * update, the trim it triggers) go apart, so that what Lua is reading
 * never moves. */
struct sl_event *sl_event_push(struct sl_engine *e, uint32_t type,
			       uint32_t slot, uint64_t ts)
{
	struct sl_evbuf *b = e->in_step ? &e->step_ev : &e->late_ev;
	struct sl_event *ev;

	if (sl_grow((void **)&b->ev, &b->cap, b->n + 1, sizeof(*b->ev)))
		return NULL;
	ev = &b->ev[b->n++];
	ev->type = type;
	ev->slot = slot;
	ev->ts_ns = ts;
	ev->flow = e->pool[slot].rec;
	/* features go with a flow's end, not with the events of its start
	 * or its packets, where they have one packet in them */
	if (type == SL_EVENT_FLOW_END && e->cfg.features) {
		event_features(e, b, ev);
	} else {
		ev->flow.stats = NULL;
		ev->flow.splt = NULL;
		ev->flow.app = NULL;
	}
	ev->packet = 0;
	if (e->in_step) {
		e->out.events = b->ev;
		e->out.n_events = b->n;
	}
	return ev;
}

/* The flow's last slice record and its end event copy the flow before
 * its slot is freed (and maybe reused by the next packet). A flow that is
 * not live (a free slot) is refused: its links are stale, and unlinking
 * it would corrupt the table. */
int sl_flow_end(struct sl_engine *e, struct sl_flow *f, int reason, uint64_t ts)
{
	int rc = 0;

	if (!f->live)
		return SL_E_STATE;
	if (f->close_reason) /* closed before: whatever ends it now */
		reason = f->close_reason;
	f->rec.reason_code = reason;
	if (e->dpi)
		sl_dpi_flow_end(e, f);
	if (e->cfg.slice_ns && f->slice_epoch == e->slice_epoch)
		rc = sl_slice_record(e, f);
	if (!sl_event_push(e, SL_EVENT_FLOW_END, slot_of(e, f), ts))
		rc = -ENOMEM;
	sl_flow_release(e, f);
	e->stats.flows_ended++;
	e->stats.flows_active--;
	e->stats.ended_by[reason]++;
	return rc;
}

/* End of input: every flow ends (oldest first), the last interval closes. */
int sl_engine_finish(struct sl_engine *e, int reason)
{
	uint32_t ended = 0;
	int rc;

	e->finish_reason = reason;
	while (e->age.head != SL_NIL) {
		if (ended++ == SL_FINISH_CHUNK)
			return 1;
		rc = sl_flow_end(e, &e->pool[e->age.head], reason, e->now);
		if (rc)
			return rc;
	}
	if (e->cfg.slice_ns && e->slice_end && (e->n_slices || e->n_touched)) {
		rc = sl_slice_close(e);
		if (rc)
			return rc;
	}
	e->done = 1;
	return 1;
}

/* ---- a new engine ----------------------------------------------------- */

/* Fills in the defaults of what the caller left 0; -EINVAL for limits
 * that cannot hold. */
static int config_defaults(struct sl_config *c)
{
	if (!c->pool_flows)
		c->pool_flows = DEFAULT_POOL;
	for (int i = 0; i < SL_TIMEOUT_COUNT; i++)
		if (!c->idle_timeout_ns[i])
			c->idle_timeout_ns[i] = default_idle_ns[i];
	if (!c->active_timeout_ns)
		c->active_timeout_ns = 1800 * SL_SEC;
	/* 90%, and below max_flows for small ones too */
	if (c->max_flows && !c->low_flows)
		c->low_flows = c->max_flows -
			       (c->max_flows >= 10 ? c->max_flows / 10 : 1);
	if (c->max_flows &&
	    (c->low_flows >= c->max_flows || c->max_flows > c->pool_flows))
		return -EINVAL;
	if (!c->silence_ns)
		c->silence_ns = 10 * SL_SEC;
	if (c->decode_flags & ~(uint32_t)SL_DECODE_OUTER)
		return -EINVAL;
	if (c->features &
	    ~(uint32_t)(SL_FEATURE_STATS | SL_FEATURE_SPLT | SL_FEATURE_DPI))
		return -EINVAL;
	if ((c->features & SL_FEATURE_DPI) && !sl_dpi_available())
		return -ENOTSUP;
	if (!c->splt_packets)
		c->splt_packets = SL_SPLT_DEFAULT;
	if (c->splt_packets > SL_SPLT_MAX)
		return -EINVAL;
	return 0;
}

/* Fresh zero pages (the flow pool, the flows' features): only slots that
 * get used become resident, and each array is page-aligned, so every
 * flow starts a cache line and a packet touches the same three lines of
 * it (engine.h). Huge pages where the kernel has them: a page fault per
 * 2 MiB of new flows rather than per 4 KiB (faults are dear in a VM). */
static void *slots_alloc(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	(void)madvise(p, len, MADV_HUGEPAGE);
	return p;
}

static void slots_free(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}

#define POOL_LEN(e) ((size_t)(e)->pool_size * sizeof(struct sl_flow))
#define BUCKETS_LEN(e) (((size_t)(e)->bucket_mask + 1) * sizeof(*(e)->buckets))
#define SLOTS_LEN(e, array) ((size_t)(e)->pool_size * sizeof(*(array)))

/* An array per feature of the run: a run pays memory (and the page
 * faults of fresh pages) for the features it asked for only. */
static int features_alloc(struct sl_engine *e)
{
	uint32_t f = e->cfg.features;

	if (((f & SL_FEATURE_STATS) &&
	     !(e->feat_stats = slots_alloc(SLOTS_LEN(e, e->feat_stats)))) ||
	    ((f & SL_FEATURE_SPLT) &&
	     !(e->feat_splt = slots_alloc(SLOTS_LEN(e, e->feat_splt)))) ||
	    ((f & SL_FEATURE_DPI) &&
	     !(e->feat_app = slots_alloc(SLOTS_LEN(e, e->feat_app)))))
		return -ENOMEM;
	return 0;
}

static void features_free(struct sl_engine *e)
{
	slots_free(e->feat_stats, SLOTS_LEN(e, e->feat_stats));
	slots_free(e->feat_splt, SLOTS_LEN(e, e->feat_splt));
	slots_free(e->feat_app, SLOTS_LEN(e, e->feat_app));
}

int sl_engine_new(struct sl_engine **out, const struct sl_config *cfg)
{
	struct sl_engine *e;
	uint32_t nb = 1;
	int rc;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	if (cfg)
		e->cfg = *cfg;
	rc = config_defaults(&e->cfg);
	if (rc)
		goto out_free;
	e->min_timeout_ns = e->cfg.active_timeout_ns;
	for (int i = 0; i < SL_TIMEOUT_COUNT; i++)
		if (e->cfg.idle_timeout_ns[i] < e->min_timeout_ns)
			e->min_timeout_ns = e->cfg.idle_timeout_ns[i];
	rc = -ENOMEM;
	e->pool_size = e->cfg.pool_flows;
	e->pool = slots_alloc(POOL_LEN(e));
	if (!e->pool)
		goto out_free;
	while (nb < e->pool_size && nb < (1u << 31))
		nb <<= 1;
	e->bucket_mask = nb - 1;
	e->buckets = slots_alloc(BUCKETS_LEN(e));
	if (!e->buckets)
		goto out_pool;
	if (features_alloc(e))
		goto out_feat;
	if (e->cfg.features & SL_FEATURE_DPI) {
		rc = sl_dpi_open(e);
		if (rc)
			goto out_feat;
	}
	e->free_head = SL_NIL;
	e->next_id = 1 + e->cfg.worker;
	e->id = __atomic_add_fetch(&engines_made, 1, __ATOMIC_RELAXED);
	for (int c = 0; c < SL_TIMEOUT_COUNT; c++)
		list_init(&e->idle[c]);
	list_init(&e->age);
	*out = e;
	return 0;

out_feat:
	features_free(e);
	slots_free(e->buckets, BUCKETS_LEN(e));
out_pool:
	slots_free(e->pool, POOL_LEN(e));
out_free:
	free(e);
	return rc;
}

/* ---- pcap writers ----------------------------------------------------- */

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

void sl_engine_detach_writers(struct sl_engine *e)
{
	sl_capture_flush(e);
	memset(e->writers, 0, sizeof(e->writers));
	e->n_writers = 0;
	e->capture_all = 0;
}

void sl_engine_capture_all(struct sl_engine *e, uint32_t writer)
{
	if (writer <= SL_WRITERS && (!writer || e->writers[writer]))
		e->capture_all = writer;
}

/* ---- life and steps ---------------------------------------------------- */

static void evbuf_free(struct sl_evbuf *b)
{
	free(b->ev);
	free(b->stats);
	free(b->splt);
	free(b->app);
}

void sl_engine_free(struct sl_engine *e)
{
	if (!e)
		return;
	if (e->src)
		sl_source_close(e->src);
	sl_prefault_stop(e); /* before any array it faults in is unmapped */
	sl_dpi_close(e);
	slots_free(e->pool, POOL_LEN(e));
	slots_free(e->buckets, BUCKETS_LEN(e));
	free(e->touched);
	free(e->trim_list);
	free(e->aliases);
	free(e->abuckets);
	features_free(e);
	evbuf_free(&e->step_ev);
	evbuf_free(&e->late_ev);
	evbuf_free(&e->late_out);
	free(e->packets);
	free(e->slices);
	free(e->slices_pub);
	free(e->slice_app);
	free(e->slice_app_pub);
	for (int i = 0; i < SL_PACKET_FILTERS; i++)
		sl_filter_set_free(&e->pfilters[i]);
	sl_filter_set_free(&e->input);
	free(e);
}

int sl_engine_attach(struct sl_engine *e, struct sl_source *src)
{
	if (e->src)
		return SL_E_STATE;
	e->src = src;
	if (src->ops->set_classifier)
		src->ops->set_classifier(src, sl_packet_classify, e);
	return 0;
}

void sl_engine_shutdown(struct sl_engine *e)
{
	if (e->stopping)
		return;
	e->stopping = 1;
	/* packets already in a live ring were taken: read them first */
	if (e->src && e->src->ops->stop && !e->finish_reason && !e->done) {
		e->src->ops->stop(e->src);
		e->draining = 1;
	}
}

static int engine_step(struct sl_engine *e)
{
	if (e->finish_reason)
		return sl_engine_finish(e, e->finish_reason);
	if (e->src->ops->records)
		return sl_step_records(e);
	return sl_step_packets(e);
}

int sl_engine_step(struct sl_engine *e)
{
	int rc;

	if (!e->src)
		return SL_E_STATE;
	/* what the last step read and handlers chose to capture goes out
	 * before the batch is reused */
	sl_capture_flush(e);
	if (e->done)
		return 0;
	e->out.generation++;
	e->out.n_events = 0;
	e->out.n_packets = 0;
	e->step_ev.n = 0;
	e->out.slice_ready = 0;
	e->out.n_slices = 0;
	e->quiet_until = 0; /* handlers ran since */
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
