/* test_records.c - the engine fed flow records (a collector) instead of
 * packets: uniflows fold into biflows with the earlier sender as
 * initiator, repeated reports add to one flow, the clock follows the
 * records, slices and end events come as with packets. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "source.h"
#include "test.h"

#define S(x) ((uint64_t)(x)*1000000000ULL)
#define BASE S(1700000000)

/* A source that hands out a fixed list of record batches. */
struct fake {
	struct sl_source base;
	const struct sl_collector_rec *recs;
	const uint32_t *batches; /* sizes, 0 ends */
	uint32_t next_batch, pos;
};

static int fake_records(struct sl_source *src,
			const struct sl_collector_rec **out)
{
	struct fake *f = (struct fake *)src;
	uint32_t n = f->batches[f->next_batch];

	if (!n)
		return 0;
	*out = f->recs + f->pos;
	f->pos += n;
	f->next_batch++;
	return (int)n;
}

static int fake_linktype(const struct sl_source *src)
{
	return -EOPNOTSUPP;
}

static void fake_progress(const struct sl_source *src, uint64_t *pos,
			  uint64_t *size)
{
	*pos = *size = 0;
}

static void fake_close(struct sl_source *src)
{
	free(src);
}

static const struct sl_source_ops fake_ops = {
    .linktype = fake_linktype,
    .progress = fake_progress,
    .close = fake_close,
    .records = fake_records,
};

static struct sl_collector_rec rec(const char *src, int sport, const char *dst,
				   int dport, uint64_t first, uint64_t last,
				   uint64_t pkts, uint64_t bytes)
{
	struct sl_collector_rec r;

	memset(&r, 0, sizeof(r));
	r.key.ip_version = 4;
	r.key.proto = 6;
	inet_pton(AF_INET, src, r.key.src);
	inet_pton(AF_INET, dst, r.key.dst);
	r.key.sport = (uint16_t)sport;
	r.key.dport = (uint16_t)dport;
	r.first_ns = first;
	r.last_ns = last;
	r.fwd.pkts = pkts;
	r.fwd.bytes = bytes;
	r.tcp_flags = 0x18;
	r.version = 10;
	return r;
}

struct run {
	int starts, ends;
	struct sl_flow_rec end[16];
	uint32_t start_rec[16];
	uint64_t slice_pkts, slices;
	struct sl_stats stats;
};

static void run_records(const struct sl_collector_rec *recs,
			const uint32_t *batches, const struct sl_config *cfg,
			struct run *r)
{
	struct sl_engine *e;
	struct fake *f = calloc(1, sizeof(*f));
	const struct sl_output *out;
	int rc;

	memset(r, 0, sizeof(*r));
	f->base.ops = &fake_ops;
	f->recs = recs;
	f->batches = batches;
	CHECK_EQ(sl_engine_new(&e, cfg), 0);
	CHECK_EQ(sl_engine_attach(e, &f->base), 0);
	out = sl_engine_output(e);
	while ((rc = sl_engine_step(e)) > 0) {
		for (uint32_t i = 0; i < out->n_events; i++) {
			const struct sl_event *ev = &out->events[i];

			if (ev->type == SL_EVENT_FLOW_START && r->starts < 16) {
				CHECK(out->records != NULL);
				r->start_rec[r->starts++] = ev->packet;
			}
			if (ev->type == SL_EVENT_FLOW_END && r->ends < 16)
				r->end[r->ends++] = ev->flow;
		}
		if (out->slice_ready) {
			r->slices++;
			for (uint32_t i = 0; i < out->n_slices; i++)
				r->slice_pkts += out->slices[i].delta_fwd.pkts +
						 out->slices[i].delta_rev.pkts;
		}
	}
	CHECK_EQ(rc, 0);
	r->stats = *sl_engine_stats(e);
	sl_engine_free(e);
}

/* Two uniflows of one connection, the reverse reported first: one flow,
 * the earlier sender is the initiator, counts by direction. */
static void test_fold_uniflows(void)
{
	struct sl_collector_rec recs[3];
	const uint32_t batches[] = {1, 2, 0};
	struct run r;
	char a[16];

	recs[0] = rec("10.0.0.2", 80, "10.0.0.1", 5000, BASE + S(1),
		      BASE + S(3), 7, 7000);
	recs[1] =
	    rec("10.0.0.1", 5000, "10.0.0.2", 80, BASE, BASE + S(2), 5, 500);
	recs[2] = rec("10.9.9.9", 1, "10.9.9.8", 2, BASE, BASE + S(1), 1, 60);
	run_records(recs, batches, NULL, &r);
	CHECK_EQ(r.starts, 2);
	CHECK_EQ(r.start_rec[0], 0); /* the first batch's record 0 */
	CHECK_EQ(r.start_rec[1], 1); /* the second batch's record 1 */
	CHECK_EQ(r.ends, 2);
	const struct sl_flow_rec *f = &r.end[0];

	if (f->key.sport != 5000)
		f = &r.end[1];
	inet_ntop(AF_INET, f->key.src, a, sizeof(a));
	CHECK(!strcmp(a, "10.0.0.1"));
	CHECK_EQ(f->key.sport, 5000);
	CHECK_EQ(f->key.dport, 80);
	CHECK_EQ(f->fwd.pkts, 5);
	CHECK_EQ(f->fwd.bytes, 500);
	CHECK_EQ(f->rev.pkts, 7);
	CHECK_EQ(f->rev.bytes, 7000);
	CHECK_EQ(f->fwd.first_ns, BASE);
	CHECK_EQ(f->rev.last_ns, BASE + S(3));
	CHECK_EQ(f->fwd.tcp_flags, 0x18);
	CHECK_EQ(f->reason_code, SL_END_EOF);
	CHECK_EQ(r.stats.records, 3);
	CHECK_EQ(r.stats.packets, 13);
	CHECK_EQ(r.stats.bytes, 7560);
}

/* Active-timeout reports of one flow add up to one flow; a silence past
 * the idle timeout (by record time) ends it, and a later report starts a
 * new one. Slices get the deltas at the records' times. */
static void test_repeated_reports(void)
{
	struct sl_collector_rec recs[4];
	const uint32_t batches[] = {1, 1, 1, 1, 0};
	struct sl_config cfg = {.slice_ns = S(10)};
	struct run r;

	recs[0] =
	    rec("10.0.0.1", 1, "10.0.0.2", 2, BASE, BASE + S(5), 10, 1000);
	recs[1] = rec("10.0.0.1", 1, "10.0.0.2", 2, BASE + S(5), BASE + S(15),
		      20, 2000);
	recs[2] = rec("10.0.0.1", 1, "10.0.0.2", 2, BASE + S(15), BASE + S(25),
		      30, 3000);
	/* 400 s later: tcp idle timeout (300 s) has passed */
	recs[3] = rec("10.0.0.1", 1, "10.0.0.2", 2, BASE + S(425),
		      BASE + S(426), 1, 100);
	run_records(recs, batches, &cfg, &r);
	CHECK_EQ(r.starts, 2);
	CHECK_EQ(r.ends, 2);
	CHECK_EQ(r.end[0].fwd.pkts, 60);
	CHECK_EQ(r.end[0].fwd.bytes, 6000);
	CHECK_EQ(r.end[0].reason_code, SL_END_IDLE);
	CHECK_EQ(r.end[1].fwd.pkts, 1);
	CHECK_EQ(r.end[1].reason_code, SL_END_EOF);
	CHECK_EQ(r.slice_pkts, 61);
	CHECK(r.slices >= 3);
}

/* An exporter that sends running totals (octetTotalCount) reports a flow
 * at 10 then 30 packets: the flow has 30, not 40; a reverse side's totals
 * are its own. */
static void test_totals(void)
{
	struct sl_collector_rec recs[4];
	const uint32_t batches[] = {1, 1, 1, 1, 0};
	struct run r;

	recs[0] = rec("10.0.0.1", 1, "10.0.0.2", 2, BASE, BASE + S(30), 10,
		      1000);
	recs[1] = rec("10.0.0.1", 1, "10.0.0.2", 2, BASE, BASE + S(59), 30,
		      3000);
	recs[2] = rec("10.0.0.2", 2, "10.0.0.1", 1, BASE + S(1), BASE + S(30),
		      4, 400);
	recs[3] = rec("10.0.0.2", 2, "10.0.0.1", 1, BASE + S(1), BASE + S(59),
		      5, 500);
	for (int i = 0; i < 4; i++)
		recs[i].totals = SL_REC_TOTAL_FWD;
	run_records(recs, batches, NULL, &r);
	CHECK_EQ(r.starts, 1);
	CHECK_EQ(r.ends, 1);
	CHECK_EQ(r.end[0].fwd.pkts, 30);
	CHECK_EQ(r.end[0].fwd.bytes, 3000);
	CHECK_EQ(r.end[0].rev.pkts, 5);
	CHECK_EQ(r.end[0].rev.bytes, 500);
	CHECK_EQ(r.end[0].fwd.last_ns, BASE + S(59));
	CHECK_EQ(r.stats.packets, 35);
	CHECK_EQ(r.stats.bytes, 3500);
}

static struct sl_collector_rec ended(const char *src, int sport,
				      const char *dst, int dport,
				      uint64_t first, uint64_t last,
				      uint8_t flags, uint8_t end_reason)
{
	struct sl_collector_rec r =
	    rec(src, sport, dst, dport, first, last, 10, 1000);

	r.tcp_flags = flags;
	r.end_reason = end_reason;
	return r;
}

/* flowEndReason: an exporter that says a flow ended (end of flow
 * detected, idle, forced, lack of resources) ends it with that reason, and
 * the next connection on the same 5-tuple is a flow of its own; the other
 * side's report of the ended flow still folds into it; an active timeout
 * only splits a flow that goes on. */
static void test_end_reasons(void)
{
	struct sl_collector_rec recs[9];
	const uint32_t batches[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 0};
	struct run r;

	/* two connections of one tuple, 10 s apart, each ended by FIN */
	recs[0] = ended("10.0.0.1", 40000, "10.0.0.2", 443, BASE,
			BASE + S(5), 0x13, 3);
	recs[1] = ended("10.0.0.2", 443, "10.0.0.1", 40000, BASE + S(1),
			BASE + S(5), 0x13, 3);
	recs[2] = ended("10.0.0.1", 40000, "10.0.0.2", 443, BASE + S(15),
			BASE + S(20), 0x13, 3);
	/* RST */
	recs[3] = ended("10.0.0.3", 1, "10.0.0.4", 2, BASE + S(21),
			BASE + S(22), 0x14, 3);
	/* idle, then again on the tuple */
	recs[4] = ended("10.0.0.5", 1, "10.0.0.6", 2, BASE + S(21),
			BASE + S(22), 0x18, 1);
	recs[5] = ended("10.0.0.5", 1, "10.0.0.6", 2, BASE + S(23),
			BASE + S(24), 0x18, 4);
	/* active timeout: one flow goes on, then lack of resources */
	recs[6] = ended("10.0.0.7", 1, "10.0.0.8", 2, BASE + S(10),
			BASE + S(24), 0x18, 2);
	recs[7] = ended("10.0.0.7", 1, "10.0.0.8", 2, BASE + S(24),
			BASE + S(25), 0x18, 5);
	recs[8] = rec("10.9.9.9", 1, "10.9.9.8", 2, BASE + S(26), BASE + S(26),
		      1, 60);
	run_records(recs, batches, NULL, &r);
	CHECK_EQ(r.starts, 7);
	CHECK_EQ(r.ends, 7);
	for (int i = 0; i < r.ends; i++) {
		const struct sl_flow_rec *f = &r.end[i];
		char a[16];

		inet_ntop(AF_INET, f->key.src, a, sizeof(a));
		if (!strcmp(a, "10.0.0.1") && f->rev.pkts) {
			CHECK_EQ(f->fwd.pkts, 10);
			CHECK_EQ(f->rev.pkts, 10);
			CHECK_EQ(f->reason_code, SL_END_FIN);
		} else if (!strcmp(a, "10.0.0.1")) {
			CHECK_EQ(f->fwd.pkts, 10);
			CHECK_EQ(f->fwd.first_ns, BASE + S(15));
			CHECK_EQ(f->reason_code, SL_END_FIN);
		} else if (!strcmp(a, "10.0.0.3")) {
			CHECK_EQ(f->reason_code, SL_END_RST);
		} else if (!strcmp(a, "10.0.0.5")) {
			CHECK_EQ(f->fwd.pkts, 10);
			CHECK(f->reason_code == SL_END_IDLE ||
			      f->reason_code == SL_END_SHUTDOWN);
		} else if (!strcmp(a, "10.0.0.7")) {
			CHECK_EQ(f->fwd.pkts, 20);
			CHECK_EQ(f->reason_code, SL_END_TRIMMED);
		}
	}
	CHECK_EQ(r.stats.ended_by[SL_END_FIN], 2);
	CHECK_EQ(r.stats.ended_by[SL_END_RST], 1);
	CHECK_EQ(r.stats.ended_by[SL_END_IDLE], 1);
	CHECK_EQ(r.stats.ended_by[SL_END_SHUTDOWN], 1);
	CHECK_EQ(r.stats.ended_by[SL_END_TRIMMED], 1);
	CHECK_EQ(r.stats.ended_by[SL_END_EOF], 1);
}

int main(void)
{
	test_fold_uniflows();
	test_repeated_reports();
	test_totals();
	test_end_reasons();
	return test_done();
}
