/* packet.c - the packet path: a batch of packets into flows and events.
 *
 * A step reads a batch from the source, decodes and hashes all of it first
 * (prefetching the hash buckets), then counts each packet in its flow,
 * creating the flow on its first packet, with TCP state, slices and the
 * packet filters (packet events) on the way. Packets the input filter
 * (filter.c) refuses are marked before decoding and only counted.
 * Captures to pcap writers are marks on the batch's packets, written in
 * read order before the batch is reused, so that a capture chosen by a
 * handler after the step still gets the packets the step read. Nothing
 * here allocates once warm.
 */
#include <errno.h>
#include <string.h>

#include "flowtable.h"
#include "source.h"
#include "tcp.h"

static inline void prep_hash(struct sl_prep *pp)
{
	pp->ckey = pp->d.key;
	pp->swapped = key_canonical(&pp->ckey);
	pp->hash = key_hash(&pp->ckey);
	pp->hashed = 1;
}

/* sl_decode() keys a packet whose frame ends inside its transport header
 * (l4_cut) when its IP header is whole. Cut by the capture length (a
 * short snaplen), that header was whole on the wire: the packet counts in
 * its flow. A frame that ends before its IP packet on the wire too is
 * malformed, as before: the header it claims was never sent. */
static inline int packet_decode(const struct sl_engine *e,
				const struct sl_packet *p, struct sl_decoded *d)
{
	int st = sl_decode_flags(p->data, p->caplen, p->linktype,
				 e->cfg.decode_flags, d);

	if (__builtin_expect(d->l4_cut != SL_L4_WHOLE, 0) &&
	    st == SL_DECODE_OK && p->caplen >= p->wirelen &&
	    p->caplen < d->ip_end) {
		d->malformed = d->l4_cut == SL_L4_CUT_EXT ? SL_MAL_IPV6_EXT
							  : SL_MAL_L4_SHORT;
		st = SL_DECODE_MALFORMED;
	}
	return st;
}

/* A packet's flow is prefetched when the packet PREFETCH_AHEAD packets
 * before it in its batch is counted (packets of other workers and those
 * counted in no flow skipped): with a shared input, a fixed distance in
 * the batch left half of a worker's packets without a prefetch. */
enum { PREFETCH_AHEAD = 2 };

/* Decodes and hashes a whole batch first and prefetches the buckets: the
 * lookups that follow then mostly hit the cache. With a shared input read
 * once (coop.c), the reader gave each packet its owner: a worker decodes
 * its own packets again rather than copying the reader's results, which
 * another core wrote (that cost more than the decode). */
static void batch_prepare(struct sl_engine *e)
{
	const uint16_t *owner =
	    e->src->ops->owners ? e->src->ops->owners(e->src) : NULL;
	uint32_t n = e->batch.count, counted[PREFETCH_AHEAD] = {0}, k = 0;

	for (uint32_t i = 0; i < n; i++) {
		const struct sl_packet *p = &e->batch.pkt[i];
		struct sl_prep *pp = &e->prep[i];

		pp->hashed = 0;
		pp->wmask = 0;
		pp->ahead = 0;
		pp->fid = 0;
		if (owner) {
			if (i + 6 < n && owner[i + 6] == e->cfg.worker)
				__builtin_prefetch(e->batch.pkt[i + 6].data);
			if (owner[i] == SL_OWNER_FILTERED) {
				pp->status = SL_PREP_FILTERED;
				continue;
			}
			if (owner[i] != e->cfg.worker &&
			    owner[i] != SL_OWNER_ALL) {
				pp->status = SL_PREP_FOREIGN;
				continue;
			}
		} else if (e->input.expr &&
			   !sl_filter_set_match(&e->input, p)) {
			pp->status = SL_PREP_FILTERED;
			continue;
		}
		pp->status = (uint8_t)packet_decode(e, p, &pp->d);
		if (pp->status != SL_DECODE_OK || pp->d.frag == SL_FRAG_LATER)
			continue;
		prep_hash(pp);
		if (!sl_foreign_hash(e, pp->hash)) {
			__builtin_prefetch(bucket_of(e, pp->hash));
			if (counted[k % PREFETCH_AHEAD])
				e->prep[counted[k % PREFETCH_AHEAD] - 1].ahead =
				    i + 1;
			counted[k++ % PREFETCH_AHEAD] = i + 1;
		} else if (!pp->d.frag) /* first fragments: packet_process */
			pp->status = SL_PREP_FOREIGN;
	}
}

void sl_packet_classify(void *ctx, const struct sl_packet *pkt, uint32_t n,
			uint16_t *owner)
{
	struct sl_engine *e = ctx;
	struct sl_decoded d;

	for (uint32_t i = 0; i < n; i++) {
		const struct sl_packet *p = &pkt[i];

		if (e->input.expr && !sl_filter_set_match(&e->input, p))
			owner[i] = SL_OWNER_FILTERED;
		else if (packet_decode(e, p, &d) != SL_DECODE_OK)
			owner[i] = 0; /* packets of no flow: worker 0's */
		else if (d.frag)
			owner[i] = SL_OWNER_ALL;
		else {
			key_canonical(&d.key);
			owner[i] = (uint16_t)sl_worker_of_hash(e,
							       key_hash(&d.key));
		}
	}
}

/* always_inline: gcc 12 drops a separate function whose only effect is a
 * prefetch */
static inline __attribute__((always_inline)) void
prefetch_flow(struct sl_engine *e, uint32_t i)
{
	uint32_t s = *bucket_of(e, e->prep[i].hash);

	if (!s)
		return;
	__builtin_prefetch(&e->pool[s - 1]);
	if (e->feat_stats) {
		const char *st = (const char *)&e->feat_stats[s - 1];

		for (size_t o = 0; o < sizeof(*e->feat_stats); o += 64)
			__builtin_prefetch(st + o, 1);
	}
}

/* Runs the packet filters; a match becomes a packet event. */
static int packet_event(struct sl_engine *e, struct sl_flow *f,
			const struct sl_packet *p, const struct sl_decoded *d,
			int di)
{
	struct sl_packet_ev *pe;
	struct sl_event *ev;
	uint32_t match = 0, bits = e->filter_mask;

	while (bits) {
		int i = __builtin_ctz(bits);

		bits &= bits - 1;
		if (sl_filter_set_match(&e->pfilters[i], p))
			match |= 1u << i;
	}
	if (!match)
		return 0;
	if (sl_grow((void **)&e->packets, &e->cap_packets, e->out.n_packets + 1,
		    sizeof(*e->packets)))
		return -ENOMEM;
	ev = sl_event_push(e, SL_EVENT_PACKET, slot_of(e, f), p->ts_ns);
	if (!ev)
		return -ENOMEM;
	ev->packet = e->out.n_packets;
	pe = &e->packets[e->out.n_packets++];
	e->out.packets = e->packets;
	pe->data = p->data;
	pe->ts_ns = p->ts_ns;
	pe->caplen = p->caplen;
	pe->wirelen = p->wirelen;
	pe->linktype = p->linktype;
	pe->match = match;
	pe->key = d->key;
	pe->l4_offset = d->l4_offset;
	pe->payload_offset = d->payload_offset;
	pe->payload_len = d->payload_len;
	pe->dir = (uint8_t)di;
	pe->tcp_flags = d->tcp_flags;
	pe->batch_index = (uint32_t)(p - e->batch.pkt);
	return 0;
}

/* The bytes of the packet's IP packet: as its header says, within what
 * the frame had on the wire. */
static inline uint32_t ip_bytes(const struct sl_packet *p,
				const struct sl_decoded *d)
{
	uint32_t rest = p->wirelen > d->ip_offset ? p->wirelen - d->ip_offset
						  : 0;

	return d->ip_len && d->ip_len < rest ? d->ip_len : rest;
}

/* Counts a packet in its direction of the flow. */
static void dir_count(struct sl_flow *f, int di, const struct sl_packet *p,
		      const struct sl_decoded *d)
{
	struct sl_dir *dir = di ? &f->rec.rev : &f->rec.fwd;

	if (!dir->pkts || p->ts_ns < dir->first_ns)
		dir->first_ns = p->ts_ns;
	if (p->ts_ns > dir->last_ns)
		dir->last_ns = p->ts_ns;
	dir->pkts++;
	dir->bytes += p->wirelen;
	dir->ip_bytes += ip_bytes(p, d);
	dir->tcp_flags |= d->tcp_flags;
	f->slice_flags[di] |= d->tcp_flags;
}

/* Adds x and x*x to a sum and a 128-bit sum of squares. */
static inline void sums_add(uint64_t *sum, uint64_t sumsq[2], uint64_t x)
{
	unsigned __int128 sq, add = (unsigned __int128)x * x;

	*sum += x;
	memcpy(&sq, sumsq, sizeof(sq));
	sq += add;
	memcpy(sumsq, &sq, sizeof(sq));
}

/* The time since the packet before (none for a stream's first) into
 * min/max and the sums; a packet earlier than the one before counts 0. */
static inline void gap_count(uint64_t n, uint64_t ts, uint64_t *last,
			     uint64_t *min, uint64_t *max, uint64_t *sum,
			     uint64_t sumsq[2])
{
	if (n > 1) {
		uint64_t gap = ts > *last ? ts - *last : 0;

		if (n == 2 || gap < *min)
			*min = gap;
		if (gap > *max)
			*max = gap;
		sums_add(sum, sumsq, gap);
	}
	*last = ts;
}

static void stream_count(struct sl_stream_stats *s, uint64_t ts,
			 uint32_t size, uint8_t flags)
{
	uint64_t n = ++s->packets;

	if (n == 1 || size < s->min_ps)
		s->min_ps = size;
	if (size > s->max_ps)
		s->max_ps = size;
	sums_add(&s->sum_ps, s->sumsq_ps, size);
	gap_count(n, ts, &s->last_ns, &s->min_piat_ns, &s->max_piat_ns,
		  &s->sum_piat_ns, s->sumsq_piat_ns);
	while (flags) {
		s->flag_packets[__builtin_ctz(flags)]++;
		flags &= (uint8_t)(flags - 1);
	}
}

/* SL_FEATURE_STATS: the packet in its direction's stream, and its gap in
 * both's (the rest of both is the two directions', sl_flow_stream_stats). */
static void stats_count(struct sl_flow_stats *st, int di,
			const struct sl_packet *p, const struct sl_decoded *d)
{
	struct sl_gap_stats *b = &st->both;

	stream_count(&st->s[di], p->ts_ns, p->wirelen,
		     d->key.proto == 6 ? d->tcp_flags : 0);
	gap_count(st->s[0].packets + st->s[1].packets, p->ts_ns, &b->last_ns,
		  &b->min_ns, &b->max_ns, &b->sum_ns, b->sumsq_ns);
}

/* SL_FEATURE_SPLT: one of the flow's first packets. */
static void splt_add(struct sl_splt *sp, int di, const struct sl_packet *p)
{
	uint32_t i = sp->n++;

	sp->ps[i] = p->wirelen > 65535 ? 65535 : (uint16_t)p->wirelen;
	sp->reverse |= (uint32_t)di << i;
	sp->piat_ns[i] = i && p->ts_ns > sp->last_ns ? p->ts_ns - sp->last_ns : 0;
	sp->last_ns = p->ts_ns;
}

/* A flow keeps the tunnel of its first packet; a packet in another one
 * is counted. Reverse packets come with the endpoints swapped, and ids
 * that may be the other side's (GTP-U TEIDs, PPTP call ids). */
static void tunnel_check(struct sl_engine *e, struct sl_flow *f,
			 const struct sl_tunnel *t, int di)
{
	const struct sl_tunnel *ft = &f->rec.encap;
	const uint8_t *src = di ? t->dst : t->src, *dst = di ? t->src : t->dst;

	if (t->type) {
		e->stats.tunnelled++;
		if (t->type == ft->type && t->ip_version == ft->ip_version &&
		    !memcmp(src, ft->src, sizeof(ft->src)) &&
		    !memcmp(dst, ft->dst, sizeof(ft->dst)) &&
		    (di || (t->has_id == ft->has_id && t->id == ft->id)))
			return;
	}
	f->rec.tunnel_changes++;
	e->stats.tunnel_changes++;
}

static int packet_process(struct sl_engine *e, uint32_t i)
{
	const struct sl_packet *p = &e->batch.pkt[i];
	struct sl_prep *pp = &e->prep[i];
	struct sl_flow *f;
	int di, swapped, reason = 0, fresh = 0, unmatched = 0, rc, tcp;

	if (pp->ahead)
		prefetch_flow(e, pp->ahead - 1);
	if (pp->status != SL_DECODE_OK) {
		if (sl_foreign_flowless(e)) {
			e->stats.foreign++;
			return 0;
		}
		e->stats.packets++;
		e->stats.bytes += p->wirelen;
		if (pp->status == SL_DECODE_NOT_IP) {
			e->stats.not_ip++;
			return 0;
		}
		e->stats.malformed++;
		e->stats.malformed_by[pp->d.malformed < SL_MAL_COUNT
					  ? pp->d.malformed
					  : 0]++;
		return 0;
	}
	/* every worker of a shared input remembers every first fragment */
	if (pp->d.frag)
		unmatched = sl_frag_remember(e, &pp->d);
	if (!pp->hashed)
		prep_hash(pp);
	if (sl_foreign_hash(e, pp->hash)) {
		e->stats.foreign++;
		return 0;
	}
	e->stats.packets++;
	e->stats.bytes += p->wirelen;
	e->stats.frag_unmatched += (uint64_t)unmatched;
	if (pp->d.ip_end > p->wirelen) /* counted, and kept in its flow */
		e->stats.malformed_by[SL_MAL_IP_OVERLONG]++;
	/* cut by the capture length, not by a first fragment's end */
	if (pp->d.l4_cut && p->caplen < pp->d.ip_end)
		e->stats.l4_cut++;

	/* a TCP header whose flags (and numbers) were captured */
	tcp = pp->d.key.proto == 6 && pp->d.frag != SL_FRAG_LATER &&
	      pp->d.l4_cut < SL_L4_CUT_FLAGS;
	swapped = pp->swapped;
	f = flow_find_key(e, &pp->ckey, pp->hash, &swapped);
	if (f && tcp) {
		reason = tcp_reuse(f, swapped ^ f->swapped, pp->d.tcp_flags,
				   p->data + pp->d.l4_offset);
		if (reason) {
			rc = sl_flow_end(e, f, reason, p->ts_ns);
			if (rc < 0)
				return rc;
			f = NULL;
			swapped = pp->swapped;
			reason = 0;
		}
	}
	if (!f) {
		f = sl_flow_new(e, &pp->d.key, &pp->ckey, pp->hash, pp->swapped,
				p->ts_ns);
		if (!f) {
			e->stats.flows_refused++;
			return 0;
		}
		fresh = 1;
		f->rec.icmp_type = pp->d.icmp_type;
		f->rec.icmp_code = pp->d.icmp_code;
		if (pp->d.tunnel.type) {
			f->rec.encap = pp->d.tunnel;
			f->has_encap = 1;
		}
	}

	di = swapped ^ f->swapped;
	if (pp->d.tunnel.type | f->has_encap)
		tunnel_check(e, f, &pp->d.tunnel, di);
	dir_count(f, di, p, &pp->d);
	if (e->feat_stats)
		stats_count(&e->feat_stats[slot_of(e, f)], di, p, &pp->d);
	if (e->feat_splt) {
		struct sl_splt *sp = &e->feat_splt[slot_of(e, f)];

		if (sp->n < sp->len)
			splt_add(sp, di, p);
	}
	if (e->dpi && !f->dpi_done)
		sl_dpi_packet(e, f, p, &pp->d);
	/* flags not captured: nothing to say about the connection; data is
	 * what the IP length says, also when the snaplen cut it */
	if (tcp)
		reason = tcp_update(f, di, pp->d.tcp_flags,
				    pp->d.wire_payload_len,
				    p->data + pp->d.l4_offset);

	flow_touch(e, f);
	if (e->cfg.slice_ns) {
		rc = slice_touch(e, f);
		if (rc)
			return rc;
	}
	/* the start event is written after the first packet is counted, so
	 * handlers see what opened the flow */
	if (fresh &&
	    !sl_event_push(e, SL_EVENT_FLOW_START, slot_of(e, f), p->ts_ns))
		return -ENOMEM;
	pp->fid = f->rec.fid;
	pp->wmask = f->capture ? (uint16_t)(1u << f->capture) : 0;
	if (e->filter_mask) {
		rc = packet_event(e, f, p, &pp->d, di);
		if (rc)
			return rc;
	}
	if (reason) {
		/* nDPI gets nothing more of use: the label is final now, in
		 * this interval's slice */
		if (e->dpi)
			sl_dpi_flow_end(e, f);
		flow_close(e, f, reason);
	}
	return 0;
}

static void count_bad_time(struct sl_engine *e, const struct sl_packet *p)
{
	if (sl_foreign_flowless(e)) {
		e->stats.foreign++;
		return;
	}
	e->stats.packets++;
	e->stats.bytes += p->wirelen;
	e->stats.malformed++;
	e->stats.malformed_by[SL_MAL_TIMESTAMP]++;
}

int sl_step_packets(struct sl_engine *e)
{
	uint64_t quiet;
	int rc;

	if (e->stopping && !e->draining && e->cursor >= e->batch.count)
		return sl_engine_finish(e, SL_END_SHUTDOWN);
	if (e->cursor >= e->batch.count) {
		rc = sl_source_next(e->src, &e->batch);
		e->cursor = e->flushed = 0;
		if (rc == -EAGAIN) {
			/* a live source with nothing to read: the wall clock
			 * still moves timeouts and slices */
			e->batch.count = 0;
			rc = sl_clock_tick(e);
			return rc < 0 ? rc : 1;
		}
		if (rc == -EINTR) {
			/* a stream gave up waiting for a signal (a stop, a
			 * reload): a step without packets; its time has not
			 * moved */
			e->batch.count = 0;
			return 1;
		}
		if (rc <= 0) {
			e->batch.count = 0;
			if (rc < 0)
				e->source_error = rc;
			return sl_engine_finish(e, e->draining && !rc
						       ? SL_END_SHUTDOWN
						       : SL_END_EOF);
		}
		batch_prepare(e);
	}
	while (e->cursor < e->batch.count) {
		const struct sl_packet *p = &e->batch.pkt[e->cursor];

		if (e->prep[e->cursor].status == SL_PREP_FILTERED) {
			/* as if the source had not read it */
			if (sl_foreign_flowless(e))
				e->stats.foreign++;
			else
				e->stats.filtered++;
			e->cursor++;
			continue;
		}
		if (!sl_clock_judge(e, p->ts_ns)) {
			/* counted malformed: it moves neither the clock nor
			 * a flow */
			count_bad_time(e, p);
			e->cursor++;
			continue;
		}
		if (p->ts_ns < e->quiet_until) {
			/* what sl_clock_advance() would do: nothing is due */
			if (p->ts_ns > e->now && sl_clock_usable(e, p->ts_ns))
				e->now = e->out.now_ns = p->ts_ns;
		} else {
			if (e->cfg.slice_ns && !e->slice_end)
				sl_slice_open(e, p->ts_ns);
			rc = sl_clock_advance(e, p->ts_ns);
			if (rc)
				return rc; /* 1: an interval closed before
					    * this packet */
		}
		if (e->prep[e->cursor].status == SL_PREP_FOREIGN) {
			e->stats.foreign++;
			e->cursor++;
			continue;
		}
		quiet = sl_sat_add(e->now, e->min_timeout_ns);
		if (e->quiet_until > quiet)
			e->quiet_until = quiet;
		rc = packet_process(e, e->cursor);
		e->cursor++;
		if (rc)
			return rc;
	}
	return 1;
}

/* ---- captures to pcap writers ----------------------------------------- */

/* Marks the flow's packets of the current batch that are not written
 * yet for a writer; returns how many. A capture set from a handler (in
 * on_flow_start, usually) comes after the step that processed the flow's
 * first packets: marked, they are written in order at the next step. */
static uint32_t capture_mark(struct sl_engine *e, uint64_t fid, uint32_t writer)
{
	uint32_t n = 0;

	for (uint32_t i = e->flushed; i < e->cursor && i < e->batch.count;
	     i++) {
		if (e->prep[i].fid == fid) {
			e->prep[i].wmask |= (uint16_t)(1u << writer);
			n++;
		}
	}
	return n;
}

/* Writes the marked packets of the batch read so far, in batch order. */
void sl_capture_flush(struct sl_engine *e)
{
	uint32_t end = e->cursor < e->batch.count ? e->cursor : e->batch.count;

	for (uint32_t i = e->flushed; e->n_writers && i < end; i++) {
		const struct sl_packet *p = &e->batch.pkt[i];
		uint32_t bits = e->prep[i].wmask;

		while (bits) {
			int w = __builtin_ctz(bits);

			bits &= bits - 1;
			if (e->writers[w])
				sl_pcap_writer_write(e->writers[w], p->ts_ns,
						     p->data, p->caplen,
						     p->wirelen, p->linktype);
		}
	}
	e->flushed = end;
}

int sl_engine_flow_capture(struct sl_engine *e, uint32_t slot, uint64_t fid,
			   uint32_t writer)
{
	struct sl_flow *f = flow_at(e, slot, fid);

	if (writer > SL_WRITERS || (writer && !e->writers[writer]))
		return -EINVAL;
	if (!f) /* it may have ended in the last step: its packets are here */
		return writer && capture_mark(e, fid, writer) ? 0 : -ESRCH;
	if (writer && !f->capture)
		capture_mark(e, fid, writer);
	f->capture = (uint8_t)writer;
	return 0;
}

int sl_engine_packet_capture(struct sl_engine *e, const struct sl_packet_ev *pe,
			     uint32_t writer)
{
	if (writer == 0 || writer > SL_WRITERS || !e->writers[writer])
		return -EINVAL;
	if (pe < e->packets || pe >= e->packets + e->out.n_packets ||
	    pe->batch_index < e->flushed || pe->batch_index >= e->batch.count)
		return -ESTALE;
	e->prep[pe->batch_index].wmask |= (uint16_t)(1u << writer);
	return 0;
}
