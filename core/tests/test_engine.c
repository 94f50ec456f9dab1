/* test_engine.c - flow table, end reasons, timeouts and slices, driven by
 * pcap images built in memory; the clock with times no pcap file holds
 * (through a source that rewrites them) and against a broken table. */
#include <errno.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine.h"
#include "source.h"
#include "test.h"

#define NS 1000000000ULL

struct img {
	uint8_t buf[1 << 20];
	size_t len;
};

static void put16(uint8_t *p, unsigned v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static void img_begin(struct img *m)
{
	/* nanosecond pcap, little endian, EN10MB */
	static const uint32_t hdr[6] = {0xa1b23c4d, 0x00040002, 0, 0, 65535, 1};

	memcpy(m->buf, hdr, sizeof(hdr));
	m->len = sizeof(hdr);
}

static void img_frame(struct img *m, uint64_t ts, const uint8_t *f, uint32_t n)
{
	uint32_t rec[4] = {(uint32_t)(ts / NS), (uint32_t)(ts % NS), n, n};

	memcpy(m->buf + m->len, rec, sizeof(rec));
	memcpy(m->buf + m->len + sizeof(rec), f, n);
	m->len += sizeof(rec) + n;
}

/* Ethernet + IPv4 + TCP/UDP from host a:pa to host b:pb. */
static void img_pkt(struct img *m, uint64_t ts, int proto, int a, int pa, int b,
		    int pb, int flags, int payload)
{
	uint8_t f[1600] = {0};
	int l4 = proto == 6 ? 20 : 8, iplen = 20 + l4 + payload;
	uint8_t *ip = f + 14, *l = ip + 20;

	put16(f + 12, 0x0800);
	ip[0] = 0x45;
	put16(ip + 2, iplen);
	ip[8] = 64;
	ip[9] = proto;
	ip[12] = 10, ip[15] = a;
	ip[16] = 10, ip[19] = b;
	put16(l, pa);
	put16(l + 2, pb);
	if (proto == 6) {
		l[12] = 5 << 4;
		l[13] = flags;
	} else {
		put16(l + 4, 8 + payload);
	}
	img_frame(m, ts, f, 14 + iplen < 60 ? 60 : 14 + iplen);
}

struct run {
	int starts, ends;
	int ended_by[SL_END_COUNT];
	struct sl_flow_rec last_end;
	/* last_end's features point here */
	struct sl_flow_stats last_stats;
	struct sl_splt last_splt;
	struct sl_app_label last_app;
	uint64_t last_end_ts;
	int slices, slice_recs;
	uint64_t slice_pkts, total_pkts;
	uint64_t slice_start, slice_end; /* of the last interval */
	uint64_t now;			 /* the clock at the end */
	int steps;
	int source_error;
	struct sl_stats stats;
};

/* The input filter of the next runs, NULL: none. */
static const char *run_filter;

/* Runs an engine over a source (which it takes) to the end. */
static void run_src(struct sl_source *src, const struct sl_config *cfg,
		    struct run *r)
{
	struct sl_engine *e;
	const struct sl_output *out;
	int rc;

	memset(r, 0, sizeof(*r));
	CHECK_EQ(sl_engine_new(&e, cfg), 0);
	CHECK_EQ(sl_engine_attach(e, src), 0);
	if (run_filter)
		CHECK_EQ(sl_engine_input_filter(e, run_filter, NULL, 0), 0);
	out = sl_engine_output(e);
	while ((rc = sl_engine_step(e)) > 0) {
		r->steps++;
		r->now = out->now_ns;
		for (uint32_t i = 0; i < out->n_events; i++) {
			const struct sl_event *ev = &out->events[i];

			if (ev->type == SL_EVENT_FLOW_START) {
				r->starts++;
				continue;
			}
			r->ends++;
			r->ended_by[ev->flow.reason_code]++;
			r->last_end = ev->flow;
			if (ev->flow.stats) {
				r->last_stats = *ev->flow.stats;
				r->last_end.stats = &r->last_stats;
			}
			if (ev->flow.splt) {
				r->last_splt = *ev->flow.splt;
				r->last_end.splt = &r->last_splt;
			}
			if (ev->flow.app) {
				r->last_app = *ev->flow.app;
				r->last_end.app = &r->last_app;
			}
			r->last_end_ts = ev->ts_ns;
			r->total_pkts += ev->flow.fwd.pkts + ev->flow.rev.pkts;
		}
		if (out->slice_ready) {
			r->slices++;
			r->slice_start = out->slice_start_ns;
			r->slice_end = out->slice_end_ns;
			r->slice_recs += out->n_slices;
			for (uint32_t i = 0; i < out->n_slices; i++)
				r->slice_pkts += out->slices[i].delta_fwd.pkts +
						 out->slices[i].delta_rev.pkts;
		}
	}
	CHECK_EQ(rc, 0);
	r->source_error = sl_engine_source_error(e);
	r->stats = *sl_engine_stats(e);
	sl_engine_free(e);
}

static void run_img(struct img *m, const struct sl_config *cfg, struct run *r)
{
	struct sl_source *src;

	CHECK_EQ(sl_source_open_mem(&src, m->buf, m->len), 0);
	run_src(src, cfg, r);
}

static struct img m;
static struct img m_img;
static struct sl_engine *bad_engine;

/* 10.0.0.1:40000 -> 10.0.0.2:443 from t on, 1 ns apart: handshake, 100
 * bytes of data, FIN from each side, the last ACK (7 packets, 4 forward). */
static void img_tcp_session(struct img *im, uint64_t t)
{
	img_pkt(im, t, 6, 1, 40000, 2, 443, 0x02, 0);
	img_pkt(im, t + 1, 6, 2, 443, 1, 40000, 0x12, 0);
	img_pkt(im, t + 2, 6, 1, 40000, 2, 443, 0x10, 0);
	img_pkt(im, t + 3, 6, 1, 40000, 2, 443, 0x18, 100);
	img_pkt(im, t + 4, 6, 2, 443, 1, 40000, 0x11, 0);
	img_pkt(im, t + 5, 6, 1, 40000, 2, 443, 0x11, 0);
	img_pkt(im, t + 6, 6, 2, 443, 1, 40000, 0x10, 0);
}

static void test_tcp_fin(void)
{
	struct run r;
	uint64_t t = 1000 * NS;

	img_begin(&m);
	img_tcp_session(&m, t);
	/* the same tuple again right after the close: a new flow */
	img_pkt(&m, t + 7, 6, 1, 40000, 2, 443, 0x02, 0);
	run_img(&m, NULL, &r);
	CHECK_EQ(r.starts, 2);
	CHECK_EQ(r.ends, 2);
	CHECK_EQ(r.ended_by[SL_END_FIN], 1);
	CHECK_EQ(r.ended_by[SL_END_EOF], 1);
	CHECK_EQ(r.stats.flows_started, 2);
	CHECK_EQ(r.total_pkts, 8);
	CHECK_EQ(r.last_end.fid, 2);
}

static void test_fin_details(void)
{
	struct run r;
	uint64_t t = 1000 * NS;

	img_begin(&m);
	img_tcp_session(&m, t);
	run_img(&m, NULL, &r);
	CHECK_EQ(r.ends, 1);
	CHECK_EQ(r.last_end.reason_code, SL_END_FIN);
	CHECK_EQ(r.last_end.fwd.pkts, 4);
	CHECK_EQ(r.last_end.rev.pkts, 3);
	CHECK_EQ(r.last_end.key.sport, 40000);
	CHECK_EQ(r.last_end.key.src[3], 1);
	CHECK_EQ(r.last_end.fwd.tcp_flags, 0x1b);
	CHECK_EQ(r.last_end.rev.tcp_flags, 0x13);
	CHECK_EQ(r.last_end.state_code, SL_TCP_CLOSED);
	CHECK(!strcmp(r.last_end.hist, "ShADfFa"));
	CHECK_EQ(r.last_end.fwd.bytes, 60 + 60 + 154 + 60);
}

static void test_rst(void)
{
	struct run r;

	img_begin(&m);
	img_pkt(&m, 5 * NS, 6, 1, 1000, 2, 80, 0x02, 0);
	img_pkt(&m, 5 * NS + 10, 6, 2, 80, 1, 1000, 0x14, 0);
	run_img(&m, NULL, &r);
	CHECK_EQ(r.ended_by[SL_END_RST], 1);
	CHECK_EQ(r.last_end.state_code, SL_TCP_RESET);
	CHECK_EQ(r.last_end_ts, 5 * NS + 10);
}

/* UDP idle timeout 60 s: a packet 59 s later continues the flow, one 60 s
 * after the last ends it first; the end event carries the deadline. */
static void test_idle_timeout(void)
{
	struct run r;
	uint64_t t = 100 * NS;

	img_begin(&m);
	img_pkt(&m, t, 17, 1, 5000, 2, 53, 0, 10);
	img_pkt(&m, t + 59 * NS, 17, 2, 53, 1, 5000, 0, 10);
	img_pkt(&m, t + 119 * NS, 17, 1, 5000, 2, 53, 0, 10);
	run_img(&m, NULL, &r);
	CHECK_EQ(r.starts, 2);
	CHECK_EQ(r.ended_by[SL_END_IDLE], 1);
	CHECK_EQ(r.ended_by[SL_END_EOF], 1);
	CHECK_EQ(r.stats.ended_by[SL_END_IDLE], 1);

	/* a shorter configured timeout fires at last packet + timeout */
	struct sl_config cfg = {0};

	cfg.idle_timeout_ns[SL_TIMEOUT_UDP] = 10 * NS;
	img_begin(&m);
	img_pkt(&m, t, 17, 1, 5000, 2, 53, 0, 10);
	img_pkt(&m, t + 30 * NS, 17, 3, 5000, 2, 53, 0, 10);
	run_img(&m, &cfg, &r);
	CHECK_EQ(r.ended_by[SL_END_IDLE], 1);
	CHECK_EQ(r.ended_by[SL_END_EOF], 1);
}

static void test_active_timeout(void)
{
	struct run r;
	struct sl_config cfg = {0};

	cfg.active_timeout_ns = 10 * NS;
	img_begin(&m);
	for (int i = 0; i < 25; i++)
		img_pkt(&m, (100 + i) * NS, 17, 1, 5000, 2, 53, 0, 10);
	run_img(&m, &cfg, &r);
	/* starts at 100, 110, 120 */
	CHECK_EQ(r.starts, 3);
	CHECK_EQ(r.ended_by[SL_END_ACTIVE], 2);
	CHECK_EQ(r.total_pkts, 25);
}

/* Slices: deltas of every flow add up to its totals. */
static void test_slices(void)
{
	struct run r;
	struct sl_config cfg = {0};

	cfg.slice_ns = 10 * NS;
	img_begin(&m);
	for (int i = 0; i < 100; i++) {
		int host = 1 + i % 7;

		img_pkt(&m, 1000 * NS + (uint64_t)i * NS / 3, 17, host, 5000,
			20, 53, 0, i);
		if (i % 11 == 0)
			img_pkt(&m, 1000 * NS + (uint64_t)i * NS / 3 + 1, 17,
				20, 53, host, 5000, 0, i);
	}
	run_img(&m, &cfg, &r);
	CHECK_EQ(r.total_pkts, 110);
	CHECK_EQ(r.slice_pkts, 110);
	CHECK_EQ(r.slices, 4); /* [1000,1010) .. [1030,1040) */
	CHECK_EQ(r.slice_recs, 4 * 7);
	CHECK_EQ(r.stats.slice_records, 4 * 7);
}

static void test_truncated(void)
{
	struct run r;

	img_begin(&m);
	img_pkt(&m, 5 * NS, 17, 1, 1, 2, 2, 0, 10);
	img_pkt(&m, 6 * NS, 17, 1, 1, 3, 2, 0, 10);
	m.len -= 5;
	run_img(&m, NULL, &r);
	CHECK_EQ(r.source_error, SL_E_TRUNCATED);
	CHECK_EQ(r.stats.packets, 1);
	CHECK_EQ(r.ends, 1);
}

/* IP bytes are what the IP header gives: without the Ethernet padding
 * of a short frame (60 bytes, 38 of IP), and whole for a frame the
 * capture cut (snaplen 54 of 1042: 1028). */
static void test_ip_bytes(void)
{
	struct run r;

	img_begin(&m);
	img_pkt(&m, 5 * NS, 17, 1, 1, 2, 2, 0, 10);
	img_pkt(&m, 6 * NS, 17, 2, 2, 1, 1, 0, 1000);
	/* the second frame as a snaplen of 54 leaves it */
	m.len -= 1042 - 54;
	memcpy(m.buf + m.len - 54 - 8, &(uint32_t){54}, 4);
	run_img(&m, NULL, &r);
	CHECK_EQ(r.stats.packets, 2);
	CHECK_EQ(r.ends, 1);
	CHECK_EQ(r.last_end.fwd.bytes, 60);
	CHECK_EQ(r.last_end.fwd.ip_bytes, 38);
	CHECK_EQ(r.last_end.rev.bytes, 1042);
	CHECK_EQ(r.last_end.rev.ip_bytes, 1028);
}

static void test_malformed_and_pool(void)
{
	struct run r;
	struct sl_config cfg = {0};
	uint8_t junk[60] = {0};

	junk[12] = 0x08; /* IPv4 ethertype, version nibble 0 */
	cfg.pool_flows = 3;
	img_begin(&m);
	for (int i = 0; i < 5; i++)
		img_pkt(&m, 5 * NS + i, 17, 1, 1, 10 + i, 2, 0, 10);
	img_frame(&m, 6 * NS, junk, 60);
	run_img(&m, &cfg, &r);
	CHECK_EQ(r.stats.flows_started, 3);
	CHECK_EQ(r.stats.flows_refused, 2);
	CHECK_EQ(r.stats.malformed, 1);
	CHECK_EQ(r.stats.packets, 6);
}

/* SL_FEATURE_STATS: a TCP flow of 4 packets out (frames of 74, 84, 94,
 * 104 bytes, 1, 2 and 3 us apart) and 1 back (2 us after the first). */
static void test_stats(void)
{
	struct run r;
	struct sl_config cfg = {0};
	const struct sl_flow_stats *st;
	struct sl_stream_stats both;
	struct sl_moments mo;

	cfg.features = SL_FEATURE_STATS;
	img_begin(&m_img);
	img_pkt(&m_img, 1000 * NS, 6, 1, 40000, 2, 443, 0x02, 20);
	img_pkt(&m_img, 1000 * NS + 1000, 6, 1, 40000, 2, 443, 0x10, 30);
	img_pkt(&m_img, 1000 * NS + 2000, 6, 2, 443, 1, 40000, 0x12, 0);
	img_pkt(&m_img, 1000 * NS + 3000, 6, 1, 40000, 2, 443, 0x18, 40);
	img_pkt(&m_img, 1000 * NS + 6000, 6, 1, 40000, 2, 443, 0x18, 50);
	run_img(&m_img, &cfg, &r);
	CHECK_EQ(r.ends, 1);
	CHECK(r.last_end.stats && !r.last_end.splt && !r.last_end.app);
	st = r.last_end.stats;
	CHECK_EQ(st->s[SL_DIR_FWD].packets, 4);
	CHECK_EQ(st->s[SL_DIR_FWD].min_ps, 74);
	CHECK_EQ(st->s[SL_DIR_FWD].max_ps, 104);
	CHECK_EQ(st->s[SL_DIR_FWD].min_piat_ns, 1000);
	CHECK_EQ(st->s[SL_DIR_FWD].max_piat_ns, 3000);
	CHECK_EQ(st->s[SL_DIR_FWD].flag_packets[1], 1); /* SYN */
	CHECK_EQ(st->s[SL_DIR_FWD].flag_packets[3], 2); /* PSH */
	CHECK_EQ(st->s[SL_DIR_FWD].flag_packets[4], 3); /* ACK */
	CHECK_EQ(st->s[SL_DIR_REV].packets, 1);
	CHECK_EQ(st->s[SL_DIR_REV].min_ps, 54 < 60 ? 60 : 54); /* padded */
	/* both: the directions' together, the gaps of the two merged */
	sl_flow_stream_stats(st, SL_STATS_BOTH, &both);
	CHECK_EQ(both.packets, 5);
	CHECK_EQ(both.min_ps, st->s[SL_DIR_REV].min_ps);
	CHECK_EQ(both.max_ps, 104);
	CHECK_EQ(both.sum_ps, st->s[SL_DIR_FWD].sum_ps + st->s[SL_DIR_REV].sum_ps);
	CHECK_EQ(both.flag_packets[4], 4);
	CHECK_EQ(both.min_piat_ns, 1000);
	CHECK_EQ(both.max_piat_ns, 3000);
	sl_stream_moments(&st->s[SL_DIR_FWD], &mo);
	CHECK(fabs(mo.mean_ps - 89) < 1e-12);
	CHECK(fabs(mo.stddev_ps - sqrt(500.0 / 3)) < 1e-12);
	CHECK(fabs(mo.mean_piat_ms - 0.002) < 1e-15);
	CHECK(fabs(mo.stddev_piat_ms - 0.001) < 1e-15);
	sl_stream_moments(&both, &mo);
	/* gaps 1000, 1000, 1000, 3000 ns */
	CHECK(fabs(mo.mean_piat_ms - 0.0015) < 1e-15);
	CHECK(fabs(mo.stddev_piat_ms - 0.001) < 1e-15);
	sl_stream_moments(&st->s[SL_DIR_REV], &mo);
	CHECK(mo.stddev_ps == 0 && mo.mean_piat_ms == 0 && mo.stddev_piat_ms == 0);

	/* without the feature, the records say so */
	run_img(&m_img, NULL, &r);
	CHECK(!r.last_end.stats && !r.last_end.splt && !r.last_end.app);

	/* the first 3 packets: sizes, directions, gaps */
	cfg.features = SL_FEATURE_SPLT;
	cfg.splt_packets = 3;
	run_img(&m_img, &cfg, &r);
	CHECK(r.last_end.splt && !r.last_end.stats && !r.last_end.app);
	CHECK_EQ(r.last_end.splt->len, 3);
	CHECK_EQ(r.last_end.splt->n, 3);
	CHECK_EQ(r.last_end.splt->reverse, 4); /* the third came back */
	CHECK_EQ(r.last_end.splt->ps[0], 74);
	CHECK_EQ(r.last_end.splt->ps[1], 84);
	CHECK_EQ(r.last_end.splt->ps[2], 60);
	CHECK_EQ(r.last_end.splt->piat_ns[0], 0);
	CHECK_EQ(r.last_end.splt->piat_ns[1], 1000);
	CHECK_EQ(r.last_end.splt->piat_ns[2], 1000);
	cfg.splt_packets = SL_SPLT_MAX + 1;
	CHECK_EQ(sl_engine_new(&bad_engine, &cfg), -EINVAL);
}

/* A UDP packet from 10.0.0.a:pa to 10.0.0.b:pb carrying data. */
static void img_udp_data(struct img *im, uint64_t ts, int a, int pa, int b,
			 int pb, const uint8_t *data, int n)
{
	uint8_t f[1600] = {0};
	int iplen = 20 + 8 + n;
	uint8_t *ip = f + 14, *l = ip + 20;

	put16(f + 12, 0x0800);
	ip[0] = 0x45;
	put16(ip + 2, iplen);
	ip[8] = 64;
	ip[9] = 17;
	ip[12] = 10, ip[15] = a;
	ip[16] = 10, ip[19] = b;
	put16(l, pa);
	put16(l + 2, pb);
	put16(l + 4, 8 + n);
	memcpy(l + 8, data, n);
	img_frame(im, ts, f, 14 + iplen < 60 ? 60 : 14 + iplen);
}

/* SL_FEATURE_DPI: a DNS query is labelled with what it asks for; a run
 * without nDPI refuses the feature. */
static void test_dpi(void)
{
	static const uint8_t query[] = {
	    0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, 'e', 'x', 'a',
	    'm',  'p',	'l',  'e',  3, 'o', 'r', 'g', 0, 0, 1, 0, 1};
	struct sl_config cfg = {.features = SL_FEATURE_DPI};
	struct run r;

	if (!sl_dpi_available()) {
		CHECK_EQ(sl_engine_new(&bad_engine, &cfg), -ENOTSUP);
		return;
	}
	img_begin(&m_img);
	img_udp_data(&m_img, 1000 * NS, 1, 40000, 2, 53, query, sizeof(query));
	run_img(&m_img, &cfg, &r);
	CHECK_EQ(r.ends, 1);
	CHECK(r.last_end.app && !r.last_end.stats && !r.last_end.splt);
	CHECK_EQ(r.last_end.app->state, SL_DPI_DONE);
	CHECK_EQ(r.last_end.app->packets, 1);
	CHECK(strcmp(r.last_end.app->application_name, "DNS") == 0);
	CHECK(strcmp(r.last_end.app->server_name, "example.org") == 0);
	CHECK(r.last_end.app->category[0] != '\0');

	/* a TCP session without payload: nDPI's guess at the end */
	img_begin(&m_img);
	img_pkt(&m_img, 1000 * NS, 6, 1, 40000, 2, 443, 0x02, 0);
	img_pkt(&m_img, 1000 * NS + 1000, 6, 2, 443, 1, 40000, 0x12, 0);
	run_img(&m_img, &cfg, &r);
	CHECK_EQ(r.last_end.app->state, SL_DPI_DONE);
	CHECK_EQ(r.last_end.app->packets, 2);
	CHECK(r.last_end.app->application_name[0] != '\0');

	/* without the feature, nothing */
	run_img(&m_img, NULL, &r);
	CHECK(!r.last_end.stats && !r.last_end.splt && !r.last_end.app);
}

/* Workers sharing an input (sl_config.shared_input): the flows split
 * between them, each counted once; every packet moves each worker's
 * clock, so the same intervals close in all; a malformed packet and a
 * packet with an impossible time are counted by worker 0 only. */
static void test_shared_input(void)
{
	struct run one, part[3];
	struct sl_config cfg = {0};
	uint8_t junk[60] = {0};
	uint64_t flows = 0, pkts = 0, slice_pkts = 0, foreign = 0;

	junk[12] = 0x08;
	cfg.slice_ns = 10 * NS;
	img_begin(&m);
	for (int i = 0; i < 300; i++) {
		int host = 1 + i % 50;

		img_pkt(&m, 1000 * NS + (uint64_t)i * NS / 7, 17, host,
			5000 + i % 3, 20, 53, 0, i);
		img_pkt(&m, 1000 * NS + (uint64_t)i * NS / 7 + 1, 17, 20, 53,
			host, 5000 + i % 3, 0, i);
	}
	img_frame(&m, 1050 * NS, junk, 60);
	img_pkt(&m, UINT64_MAX, 17, 1, 1, 2, 2, 0, 10);
	run_img(&m, &cfg, &one);
	CHECK_EQ(one.stats.flows_started, 150);
	CHECK_EQ(one.stats.malformed, 2);
	cfg.shared_input = 1;
	cfg.workers = 3;
	for (uint16_t w = 0; w < 3; w++) {
		cfg.worker = w;
		run_img(&m, &cfg, &part[w]);
		flows += part[w].stats.flows_started;
		pkts += part[w].stats.packets;
		slice_pkts += part[w].slice_pkts;
		foreign += part[w].stats.foreign;
		CHECK(part[w].stats.flows_started > 20); /* a share each */
		CHECK_EQ(part[w].slices, one.slices);
		CHECK_EQ(part[w].slice_end, one.slice_end);
		CHECK_EQ(part[w].stats.malformed, w ? 0 : 2);
	}
	CHECK_EQ(flows, one.stats.flows_started);
	CHECK_EQ(pkts, one.stats.packets);
	CHECK_EQ(slice_pkts, one.slice_pkts);
	CHECK_EQ(foreign, 2 * one.stats.packets);
}

/* The end of input ends a large table over several steps, each with at
 * most SL_FINISH_CHUNK end events: every flow once, with its features,
 * and the last interval's slice holds all of them. */
static void test_finish_chunks(void)
{
	enum { FLOWS = 10000 };
	struct sl_config cfg = {0};
	struct sl_engine *e;
	struct sl_source *src;
	const struct sl_output *out;
	uint32_t ends = 0, eof = 0, featured = 0, sliced = 0, chunk_steps = 0;
	int rc;

	img_begin(&m);
	for (int i = 0; i < FLOWS; i++)
		img_pkt(&m, 5 * NS + i, 17, 1 + i / 60000, 1024 + i, 2, 53, 0,
			10);
	cfg.features = SL_FEATURE_STATS;
	cfg.slice_ns = 60 * NS;
	CHECK_EQ(sl_engine_new(&e, &cfg), 0);
	CHECK_EQ(sl_source_open_mem(&src, m.buf, m.len), 0);
	CHECK_EQ(sl_engine_attach(e, src), 0);
	out = sl_engine_output(e);
	while ((rc = sl_engine_step(e)) > 0) {
		uint32_t step_ends = 0;

		for (uint32_t i = 0; i < out->n_events; i++) {
			const struct sl_event *ev = &out->events[i];

			if (ev->type != SL_EVENT_FLOW_END)
				continue;
			step_ends++;
			eof += ev->flow.reason_code == SL_END_EOF;
			featured += ev->flow.stats &&
				    ev->flow.stats->s[SL_DIR_FWD].packets == 1 &&
				    ev->flow.stats->both.last_ns >= 5 * NS;
		}
		CHECK(step_ends <= SL_FINISH_CHUNK);
		if (step_ends == SL_FINISH_CHUNK) {
			/* between finishing steps, no update starts a flow
			 * (each ending flow starting one would never end);
			 * one of a live flow still counts */
			struct sl_key id = {.ip_version = SL_KEY_ID};
			struct sl_update u = {.keys = &id, .n_keys = 1};
			const struct sl_flow_rec *live;

			id.src[0] = (uint8_t)chunk_steps + 1;
			CHECK_EQ(sl_engine_update(e, &u), SL_E_STATE);
			CHECK_EQ(u.created, 0);
			live = sl_engine_flow(e, e->pool[e->age.head].rec.slot);
			CHECK(live != NULL);
			u = (struct sl_update){.fid = live->fid,
					       .slot = live->slot};
			u.add_fwd.pkts = 1;
			CHECK_EQ(sl_engine_update(e, &u), 0);
		}
		chunk_steps += step_ends == SL_FINISH_CHUNK;
		ends += step_ends;
		if (out->slice_ready)
			sliced += out->n_slices;
	}
	CHECK_EQ(rc, 0);
	CHECK_EQ(ends, FLOWS);
	CHECK_EQ(eof, FLOWS);
	CHECK_EQ(featured, FLOWS);
	CHECK_EQ(chunk_steps, FLOWS / SL_FINISH_CHUNK);
	CHECK_EQ(sliced, FLOWS);
	CHECK_EQ(sl_engine_stats(e)->flows_active, 0);
	sl_engine_free(e);
}

/* 1 if the page holding p is resident. */
static int resident(const void *p)
{
	long page = sysconf(_SC_PAGESIZE);
	void *start = (void *)((uintptr_t)p & ~(uintptr_t)(page - 1));
	unsigned char v = 0;

	return mincore(start, (size_t)page, &v) == 0 && (v & 1);
}

/* The helper faults in the pages of the slots the table hands out next
 * (a step ahead: not the whole pool), and an engine freed while it works
 * stops it. */
static void test_prefault(void)
{
	struct sl_config cfg = {0};
	struct sl_engine *e;
	struct sl_source *src;
	size_t dpi_size = 0;
	char *dpi;
	void *probe;
	int ok = 0;

	probe = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(probe != MAP_FAILED);
	if (madvise(probe, 4096, 23 /* MADV_POPULATE_WRITE */)) {
		printf("skipped prefault test: the kernel has no "
		       "MADV_POPULATE_WRITE (Linux 5.14)\n");
		munmap(probe, 4096);
		return;
	}
	munmap(probe, 4096);
	img_begin(&m);
	for (int i = 0; i < 10; i++)
		img_pkt(&m, 5 * NS + i, 17, 1, 1024 + i, 2, 53, 0, 10);
	cfg.pool_flows = 200000;
	cfg.features = SL_FEATURE_STATS;
	if (sl_dpi_available())
		cfg.features |= SL_FEATURE_DPI;
	CHECK_EQ(sl_engine_new(&e, &cfg), 0);
	CHECK_EQ(sl_source_open_mem(&src, m.buf, m.len), 0);
	CHECK_EQ(sl_engine_attach(e, src), 0);
	CHECK(sl_engine_step(e) > 0);
	CHECK_EQ(e->pool_used, 10);
	dpi = sl_dpi_slots(e, &dpi_size);
	CHECK_EQ(dpi != NULL, sl_dpi_available());
	for (int i = 0; i < 300 && !ok; i++) {
		ok = resident(&e->pool[4000]) &&
		     resident(&e->feat_stats[4000]) &&
		     (!dpi || resident(dpi + 4000 * dpi_size));
		if (!ok)
			usleep(10000);
	}
	CHECK(ok);
	CHECK(!resident(&e->pool[190000]));
	CHECK(!resident(&e->feat_stats[190000]));
	CHECK(!dpi || !resident(dpi + 190000 * dpi_size));
	sl_engine_free(e);

	/* freed at once, helper busy or not */
	for (int i = 0; i < 20; i++) {
		CHECK_EQ(sl_engine_new(&e, &cfg), 0);
		CHECK_EQ(sl_source_open_mem(&src, m.buf, m.len), 0);
		CHECK_EQ(sl_engine_attach(e, src), 0);
		CHECK(sl_engine_step(e) > 0);
		sl_engine_free(e);
	}
}

/* Shutdown mid-input: the batch in hand is finished, every live flow ends
 * with SL_END_SHUTDOWN, later packets are not read. */
static void test_shutdown(void)
{
	struct sl_engine *e;
	struct sl_source *src;
	const struct sl_output *out;
	int ends = 0, shutdown = 0, rc;

	img_begin(&m);
	for (int i = 0; i < 600; i++)
		img_pkt(&m, 5 * NS + i, 17, 1, 1000 + i % 10, 2, 53, 0, 10);
	CHECK_EQ(sl_engine_new(&e, NULL), 0);
	CHECK_EQ(sl_source_open_mem(&src, m.buf, m.len), 0);
	CHECK_EQ(sl_engine_attach(e, src), 0);
	out = sl_engine_output(e);
	CHECK_EQ(sl_engine_step(e), 1);
	sl_engine_shutdown(e);
	while ((rc = sl_engine_step(e)) > 0) {
		for (uint32_t i = 0; i < out->n_events; i++) {
			if (out->events[i].type != SL_EVENT_FLOW_END)
				continue;
			ends++;
			shutdown +=
			    out->events[i].flow.reason_code == SL_END_SHUTDOWN;
		}
	}
	CHECK_EQ(rc, 0);
	CHECK_EQ(ends, 10);
	CHECK_EQ(shutdown, 10);
	CHECK_EQ(sl_engine_stats(e)->packets, SL_BATCH_MAX);
	sl_engine_free(e);
}

/* Steps once and records which flows ended trimmed (bit per fid). */
static int step_trimmed(struct sl_engine *e, uint32_t *mask)
{
	const struct sl_output *out = sl_engine_output(e);
	int rc = sl_engine_step(e);

	for (uint32_t i = 0; rc > 0 && i < out->n_events; i++)
		if (out->events[i].flow.reason_code == SL_END_TRIMMED)
			*mask |= 1u << out->events[i].flow.fid;
	return rc;
}

/* 8 flows fill the table (max 8, low 4); flow 1 is protected, flow i
 * scores i; a 9th flow 20 s later trims the four lowest: 2, 3, 4, 5. With
 * every flow protected the 9th is refused instead. */
static void test_trim(int protect_all)
{
	struct sl_config cfg = {0};
	struct sl_engine *e;
	struct sl_source *src;
	const struct sl_output *out;
	uint32_t trimmed = 0;

	cfg.pool_flows = 8;
	cfg.max_flows = 8;
	cfg.low_flows = 4;
	cfg.grace_ns = 1 * NS;
	img_begin(&m);
	for (int i = 0; i < SL_BATCH_MAX; i++)
		img_pkt(&m, NS + (uint64_t)i, 17, 1 + i % 8, 1000, 2, 53, 0, 1);
	img_pkt(&m, 20 * NS, 17, 9, 1000, 2, 53, 0, 1);
	CHECK_EQ(sl_engine_new(&e, &cfg), 0);
	CHECK_EQ(sl_source_open_mem(&src, m.buf, m.len), 0);
	CHECK_EQ(sl_engine_attach(e, src), 0);
	out = sl_engine_output(e);
	CHECK_EQ(sl_engine_step(e), 1);
	CHECK_EQ(out->n_events, 8);
	for (uint32_t i = 0; i < out->n_events; i++) {
		const struct sl_event *ev = &out->events[i];
		uint64_t fid = ev->flow.fid;

		CHECK_EQ(sl_engine_flow_score(e, ev->slot, fid, (double)fid),
			 0);
		if (fid == 1 || protect_all)
			CHECK_EQ(sl_engine_flow_protect(e, ev->slot, fid, 3, 1),
				 1);
	}
	CHECK_EQ(sl_engine_flow_score(e, 0, 99, 1.0), -ESRCH);
	while (step_trimmed(e, &trimmed) > 0 && !sl_engine_stats(e)->trims)
		;
	if (protect_all) {
		CHECK_EQ(trimmed, 0);
		CHECK_EQ(sl_engine_stats(e)->flows_refused, 1);
		CHECK_EQ(sl_engine_stats(e)->flows_active, 8);
	} else {
		CHECK_EQ(trimmed, 0x3c); /* fids 2..5 */
		CHECK_EQ(sl_engine_stats(e)->flows_refused, 0);
		CHECK_EQ(sl_engine_stats(e)->flows_active, 5);
		CHECK_EQ(sl_engine_stats(e)->ended_by[SL_END_TRIMMED], 4);
	}
	sl_engine_free(e);
}

/* A flow younger than the grace period is never trimmed. */
static void test_trim_grace(void)
{
	struct sl_config cfg = {0};
	struct run r;

	cfg.pool_flows = 4;
	cfg.max_flows = 4;
	cfg.low_flows = 1;
	cfg.grace_ns = 100 * NS;
	img_begin(&m);
	for (int i = 0; i < 6; i++)
		img_pkt(&m, NS + (uint64_t)i * NS, 17, 1 + i, 1000, 2, 53, 0,
			1);
	run_img(&m, &cfg, &r);
	CHECK_EQ(r.stats.ended_by[SL_END_TRIMMED], 0);
	CHECK_EQ(r.stats.flows_refused, 2);
	CHECK_EQ(r.stats.flows_started, 4);
}

/* max_flows under 10 without low_flows: 90% would be max_flows itself, and
 * the engine was refused (-EINVAL, "cannot create engine" for --max-flows
 * 9); the low mark is one below. */
static void test_trim_small_max(void)
{
	struct sl_config cfg = {0};
	struct run r;

	cfg.pool_flows = 8;
	cfg.max_flows = 5;
	cfg.grace_ns = 1;
	img_begin(&m);
	for (int i = 0; i < 7; i++)
		img_pkt(&m, NS + (uint64_t)i * NS, 17, 1 + i, 1000, 2, 53, 0,
			1);
	run_img(&m, &cfg, &r);
	CHECK_EQ(r.stats.flows_started, 7);
	CHECK_EQ(r.stats.flows_refused, 0);
	/* one trim (one per silence_ns), from 5 live flows down to 4 */
	CHECK_EQ(r.stats.trims, 1);
	CHECK_EQ(r.stats.ended_by[SL_END_TRIMMED], 1);
}

/* ---- the clock -------------------------------------------------------- */

/* A source over a pcap image whose packets get the times of a table
 * instead of their own: times a pcap file cannot hold (2^63 ns and up,
 * UINT64_MAX, the "not representable" of sluice.h). */
struct ts_src {
	struct sl_source base;
	struct sl_source *inner;
	const uint64_t *ts;
	uint32_t n, seen;
};

static int ts_next(struct sl_source *src, struct sl_packet_batch *b)
{
	struct ts_src *t = (struct ts_src *)src;
	int rc = sl_source_next(t->inner, b);

	for (uint32_t i = 0; rc > 0 && i < b->count && t->seen < t->n; i++)
		b->pkt[i].ts_ns = t->ts[t->seen++];
	return rc;
}

static int ts_linktype(const struct sl_source *src)
{
	return sl_source_linktype(((const struct ts_src *)src)->inner);
}

static void ts_close(struct sl_source *src)
{
	sl_source_close(((struct ts_src *)src)->inner);
	free(src);
}

static const struct sl_source_ops ts_ops = {
    .next = ts_next,
    .linktype = ts_linktype,
    .close = ts_close,
};

/* The packets of m at the times ts[0..n). */
static void run_times(const uint64_t *ts, uint32_t n,
		      const struct sl_config *cfg, struct run *r)
{
	struct ts_src *t = calloc(1, sizeof(*t));

	CHECK_EQ(sl_source_open_mem(&t->inner, m.buf, m.len), 0);
	t->base.ops = &ts_ops;
	t->ts = ts;
	t->n = n;
	run_src(&t->base, cfg, r);
}

#define JUMP_NS ((uint64_t)SL_CLOCK_MAX_JUMP_S * NS)

/* A packet 2^63 ns ahead of the clock (a corrupt timestamp) is counted as
 * malformed and skipped: no flow of its own, the clock stays, the flow
 * around it goes on and ends at the end of the input, not by a timeout.
 * With 1 s slices, no interval is walked to the far future (that hung). */
static void test_clock_jump(void)
{
	const uint64_t t0 = 1700000000ULL * NS;
	const uint64_t ts[] = {t0, t0 + (1ULL << 63), t0 + NS};
	struct sl_config cfg = {0};
	struct run r;

	img_begin(&m);
	img_pkt(&m, 0, 17, 1, 5000, 2, 53, 0, 10);
	img_pkt(&m, 0, 17, 3, 5000, 2, 53, 0, 10);
	img_pkt(&m, 0, 17, 2, 53, 1, 5000, 0, 10);
	for (int slice = 0; slice < 2; slice++) {
		cfg.slice_ns = slice ? NS : 0;
		run_times(ts, 3, &cfg, &r);
		CHECK_EQ(r.stats.packets, 3);
		CHECK_EQ(r.stats.malformed, 1);
		CHECK_EQ(r.stats.malformed_by[SL_MAL_TIMESTAMP], 1);
		CHECK_EQ(r.stats.flows_started, 1);
		CHECK_EQ(r.ends, 1);
		CHECK_EQ(r.ended_by[SL_END_EOF], 1);
		CHECK_EQ(r.total_pkts, 2);
		CHECK_EQ(r.last_end.rev.last_ns, t0 + NS);
		CHECK_EQ(r.now, t0 + NS);
		CHECK_EQ(r.slices, slice ? 2 : 0);
		CHECK_EQ(r.slice_pkts, slice ? 2 : 0);
	}
}

/* The bound: exactly SL_CLOCK_MAX_JUMP_S ahead moves the clock (the flow
 * idles out on the way), 1 ns more does not. */
static void test_clock_bound(void)
{
	const uint64_t t0 = 1000 * NS;
	const uint64_t ok[] = {t0, t0 + JUMP_NS};
	const uint64_t far[] = {t0, t0 + JUMP_NS + 1};
	struct run r;

	img_begin(&m);
	img_pkt(&m, 0, 17, 1, 5000, 2, 53, 0, 10);
	img_pkt(&m, 0, 17, 1, 5000, 2, 53, 0, 10);
	run_times(ok, 2, NULL, &r);
	CHECK_EQ(r.stats.malformed, 0);
	CHECK_EQ(r.stats.flows_started, 2);
	CHECK_EQ(r.ended_by[SL_END_IDLE], 1);
	CHECK_EQ(r.now, t0 + JUMP_NS);
	run_times(far, 2, NULL, &r);
	CHECK_EQ(r.stats.malformed_by[SL_MAL_TIMESTAMP], 1);
	CHECK_EQ(r.stats.flows_started, 1);
	CHECK_EQ(r.ended_by[SL_END_EOF], 1);
	CHECK_EQ(r.now, t0);
}

/* SL_CLOCK_RESYNC times too far ahead in a row, each near the one before:
 * the input jumped (here its first timestamp was the corrupt one, in
 * 1970), and the clock follows the last of them; the ones before are
 * counted. Far times that disagree with one another never move it. */
static void test_clock_resync(void)
{
	const uint64_t t0 = 1700000000ULL * NS;
	uint64_t ts[11], far[11];
	struct run r;

	img_begin(&m);
	img_pkt(&m, 0, 17, 9, 5000, 2, 53, 0, 10);
	for (int i = 0; i < 10; i++)
		img_pkt(&m, 0, 17, 1, 5000, 2, 53, 0, 10);
	ts[0] = far[0] = 1000 * NS;
	for (int i = 1; i < 11; i++) {
		ts[i] = t0 + (uint64_t)i;
		far[i] = 1000 * NS + (uint64_t)(i % 2 ? 2 : 4) * JUMP_NS;
	}
	run_times(ts, 11, NULL, &r);
	CHECK_EQ(r.stats.malformed_by[SL_MAL_TIMESTAMP], SL_CLOCK_RESYNC - 1);
	CHECK_EQ(r.stats.flows_started, 2);
	CHECK_EQ(r.ended_by[SL_END_IDLE], 1); /* 1970's, when the clock jumps */
	CHECK_EQ(r.total_pkts, 11 - (SL_CLOCK_RESYNC - 1));
	CHECK_EQ(r.now, t0 + 10);
	run_times(far, 11, NULL, &r);
	CHECK_EQ(r.stats.malformed_by[SL_MAL_TIMESTAMP], 10);
	CHECK_EQ(r.now, 1000 * NS);
}

/* UINT64_MAX (a time a reader could not represent) is refused even as
 * the first time, and does not set the clock: the next packet does. A
 * first time of 0 does not set it either (exporters and generators
 * without times write 0). */
static void test_clock_unset(void)
{
	const uint64_t t0 = 1700000000ULL * NS;
	const uint64_t ts[] = {UINT64_MAX, t0, t0 + 1};
	const uint64_t zero[] = {0, t0, t0 + 1};
	struct run r;

	img_begin(&m);
	img_pkt(&m, 0, 17, 9, 5000, 2, 53, 0, 10);
	img_pkt(&m, 0, 17, 1, 5000, 2, 53, 0, 10);
	img_pkt(&m, 0, 17, 1, 5000, 2, 53, 0, 10);
	run_times(ts, 3, NULL, &r);
	CHECK_EQ(r.stats.malformed_by[SL_MAL_TIMESTAMP], 1);
	CHECK_EQ(r.stats.flows_started, 1);
	CHECK_EQ(r.total_pkts, 2);
	CHECK_EQ(r.now, t0 + 1);
	run_times(zero, 3, NULL, &r);
	CHECK_EQ(r.stats.malformed, 0);
	CHECK_EQ(r.stats.flows_started, 2);
	CHECK_EQ(r.now, t0 + 1);
}

/* Times at the end of uint64 (2 s apart, the timeouts the default 60 s
 * and 1800 s): deadlines and the interval end saturate instead of
 * wrapping to the past. Before, the deadline of no flow
 * (UINT64_MAX) looked due at a clock of UINT64_MAX and a free slot was
 * ended (SIGSEGV in hash_unlink); with slices the interval end wrapped and
 * intervals closed forever. Now nothing times out and EOF ends both. */
static void test_clock_end_of_time(void)
{
	const uint64_t ts[] = {UINT64_MAX - 3 * NS, UINT64_MAX - 2 * NS,
			       UINT64_MAX - 1};
	struct sl_config cfg = {0};
	struct run r;

	img_begin(&m);
	img_pkt(&m, 0, 17, 1, 5000, 2, 53, 0, 10);
	img_pkt(&m, 0, 17, 3, 5000, 2, 53, 0, 10);
	img_pkt(&m, 0, 17, 1, 5000, 2, 53, 0, 10);
	for (int slice = 0; slice < 2; slice++) {
		cfg.slice_ns = slice ? NS : 0;
		run_times(ts, 3, &cfg, &r);
		CHECK_EQ(r.stats.malformed, 0);
		CHECK_EQ(r.stats.flows_started, 2);
		CHECK_EQ(r.ends, 2);
		CHECK_EQ(r.ended_by[SL_END_EOF], 2);
		CHECK_EQ(r.now, UINT64_MAX - 1);
		if (slice) {
			/* [..., 2^64 - 1) then the last one */
			CHECK(r.slices >= 1 && r.slices <= 3);
			CHECK(r.slice_end == UINT64_MAX);
			CHECK_EQ(r.slice_pkts, 3);
		}
	}
}

/* A jump just within the bound with 1 ns slices: about 3 * 10^16 empty
 * intervals. Closing them one by one never ends; the interval that closes
 * is followed by the one holding the clock. */
static void test_clock_empty_intervals(void)
{
	const uint64_t t0 = 1000 * NS;
	const uint64_t ts[] = {t0, t0 + JUMP_NS - 1, t0 + JUMP_NS};
	struct sl_config cfg = {0};
	struct run r;

	cfg.slice_ns = 1;
	img_begin(&m);
	img_pkt(&m, 0, 17, 1, 5000, 2, 53, 0, 10);
	img_pkt(&m, 0, 17, 3, 5000, 2, 53, 0, 10);
	img_pkt(&m, 0, 17, 4, 5000, 2, 53, 0, 10);
	run_times(ts, 3, &cfg, &r);
	CHECK_EQ(r.slices, 3);
	CHECK_EQ(r.slice_pkts, 3);
	CHECK_EQ(r.slice_start, t0 + JUMP_NS);
	CHECK_EQ(r.slice_end, t0 + JUMP_NS + 1);
	CHECK(r.steps < 10);
}

/* Ending a flow that is not live is refused (SL_E_STATE) and changes
 * nothing, and a clock whose timeout list names a free slot stops with
 * that error instead of unlinking it from a hash chain it is not in. */
static void test_flow_end_not_live(void)
{
	struct sl_engine *e;
	struct sl_source *src;
	const struct sl_output *out;
	struct sl_flow *f;
	uint32_t slot;
	int tc;

	img_begin(&m);
	img_pkt(&m, 100 * NS, 17, 1, 5000, 2, 53, 0, 10);
	img_pkt(&m, 101 * NS, 17, 3, 5000, 2, 53, 0, 10);
	CHECK_EQ(sl_engine_new(&e, NULL), 0);
	CHECK_EQ(sl_source_open_mem(&src, m.buf, m.len), 0);
	CHECK_EQ(sl_engine_attach(e, src), 0);
	out = sl_engine_output(e);
	CHECK_EQ(sl_engine_step(e), 1);
	CHECK_EQ(out->n_events, 2);
	slot = out->events[0].slot;
	f = &e->pool[slot];
	tc = f->tclass;
	CHECK_EQ(sl_flow_end(e, f, SL_END_IDLE, e->now), 0);
	CHECK_EQ(e->stats.flows_ended, 1);
	CHECK_EQ(sl_flow_end(e, f, SL_END_IDLE, e->now), SL_E_STATE);
	CHECK_EQ(e->stats.flows_ended, 1);
	CHECK_EQ(e->stats.flows_active, 1);

	/* a timeout list pointing at the free slot: an error, not a crash */
	e->idle[tc].head = slot;
	CHECK_EQ(sl_clock_advance(e, 1000 * NS), SL_E_STATE);
	e->idle[tc].head = e->pool[slot ^ 1].live ? slot ^ 1 : SL_NIL;
	sl_engine_free(e);
}

/* A collector's record whose end time is too far ahead (or UINT64_MAX) is
 * counted as malformed but still taken; the clock does not follow it, so
 * the flow it joins does not idle out. */
struct rec_src {
	struct sl_source base;
	struct sl_collector_rec recs[3];
	int done;
};

static int rec_records(struct sl_source *src, const struct sl_collector_rec **out)
{
	struct rec_src *t = (struct rec_src *)src;

	if (t->done++)
		return 0;
	*out = t->recs;
	return 3;
}

static void rec_close(struct sl_source *src)
{
	free(src);
}

static const struct sl_source_ops rec_ops = {
    .close = rec_close,
    .records = rec_records,
};

static void test_clock_records(void)
{
	const uint64_t t0 = 1700000000ULL * NS;
	const uint64_t bad[] = {t0 + (1ULL << 63), UINT64_MAX};

	for (int k = 0; k < 2; k++) {
		struct rec_src *t = calloc(1, sizeof(*t));
		struct run r;

		t->base.ops = &rec_ops;
		for (int i = 0; i < 3; i++) {
			struct sl_collector_rec *c = &t->recs[i];

			c->key.ip_version = 4;
			c->key.proto = 17;
			c->key.src[0] = 10;
			c->key.dst[0] = 10;
			c->key.dst[3] = 2;
			c->key.sport = 5000;
			c->key.dport = 53;
			c->fwd.pkts = 1;
			c->fwd.bytes = 100;
			c->first_ns = c->last_ns = t0 + (uint64_t)i * NS;
		}
		t->recs[1].last_ns = bad[k];
		run_src(&t->base, NULL, &r);
		CHECK_EQ(r.stats.records, 3);
		CHECK_EQ(r.stats.malformed_by[SL_MAL_TIMESTAMP], 1);
		CHECK_EQ(r.stats.flows_started, 1);
		CHECK_EQ(r.ended_by[SL_END_EOF], 1);
		CHECK_EQ(r.total_pkts, 3);
		CHECK_EQ(r.now, t0 + 2 * NS);
	}
}

/* ---- the input filter ------------------------------------------------ */

/* Ethernet + IPv4 UDP, 2 TCP sessions of 7 and 1 packets */
static void img_mixed(struct img *im)
{
	img_begin(im);
	img_tcp_session(im, 10 * NS);
	img_pkt(im, 11 * NS, 17, 1, 5000, 2, 53, 0, 20);
	img_pkt(im, 11 * NS + 1, 17, 2, 53, 1, 5000, 0, 40);
	img_pkt(im, 11 * NS + 2, 17, 3, 6000, 2, 53, 0, 20);
	img_pkt(im, 11 * NS + 3, 6, 4, 1234, 2, 80, 0x02, 0);
}

/* Packets the filter refuses are counted as filtered and reach no flow:
 * not in packets or bytes; only the matching packets' flows start. */
static void test_input_filter(void)
{
	struct run all, r;

	img_mixed(&m);
	run_img(&m, NULL, &all);
	CHECK_EQ(all.stats.packets, 11);
	CHECK_EQ(all.stats.flows_started, 4);
	CHECK_EQ(all.stats.filtered, 0);

	run_filter = "udp";
	run_img(&m, NULL, &r);
	CHECK_EQ(r.stats.filtered, 8);
	CHECK_EQ(r.stats.packets, 3);
	CHECK_EQ(r.stats.flows_started, 2);
	CHECK_EQ(r.total_pkts, 3);
	CHECK_EQ(r.ended_by[SL_END_EOF], 2);
	CHECK_EQ(r.stats.not_ip + r.stats.malformed, 0);

	run_filter = "tcp port 443";
	run_img(&m, NULL, &r);
	CHECK_EQ(r.stats.filtered, 4);
	CHECK_EQ(r.stats.packets, 7);
	CHECK_EQ(r.stats.flows_started, 1);
	CHECK_EQ(r.ended_by[SL_END_FIN], 1);

	run_filter = "ip6"; /* nothing matches: no flow, no clock */
	run_img(&m, NULL, &r);
	CHECK_EQ(r.stats.filtered, 11);
	CHECK_EQ(r.stats.packets, 0);
	CHECK_EQ(r.stats.flows_started, 0);
	CHECK_EQ(r.now, 0);
	run_filter = NULL;
}

/* A bad expression is -EINVAL with libpcap's message; NULL removes the
 * filter; no source: SL_E_STATE. */
static void test_input_filter_errors(void)
{
	struct sl_engine *e;
	struct sl_source *src;
	char err[256] = "";

	CHECK_EQ(sl_engine_new(&e, NULL), 0);
	CHECK_EQ(sl_engine_input_filter(e, "udp", err, sizeof(err)),
		 SL_E_STATE);
	img_mixed(&m);
	CHECK_EQ(sl_source_open_mem(&src, m.buf, m.len), 0);
	CHECK_EQ(sl_engine_attach(e, src), 0);
	CHECK_EQ(sl_engine_input_filter(e, "udp prot 53", err, sizeof(err)),
		 -EINVAL);
	CHECK(strstr(err, "bad filter 'udp prot 53': ") == err);
	CHECK(strlen(err) > strlen("bad filter 'udp prot 53': "));
	/* still no filter: everything goes through */
	CHECK_EQ(sl_engine_input_filter(e, "udp", err, sizeof(err)), 0);
	CHECK_EQ(sl_engine_input_filter(e, NULL, NULL, 0), 0);
	while (sl_engine_step(e) > 0)
		;
	CHECK_EQ(sl_engine_stats(e)->packets, 11);
	CHECK_EQ(sl_engine_stats(e)->filtered, 0);
	sl_engine_free(e);
}

/* A pcapng image built by hand (little endian, microsecond times). */
static void ng_put(struct img *im, const void *p, size_t n)
{
	memcpy(im->buf + im->len, p, n);
	im->len += n;
}

static void ng_begin(struct img *im, const uint16_t *linktypes, int n)
{
	/* section header: byte-order magic, version 1.0, length unknown */
	const uint32_t shb[7] = {
	    0x0a0d0d0a, 28, 0x1a2b3c4d, 1, 0xffffffff, 0xffffffff, 28};

	im->len = 0;
	ng_put(im, shb, sizeof(shb));
	for (int i = 0; i < n; i++) {
		const uint32_t idb[5] = {1, 20, linktypes[i], 65535, 20};

		ng_put(im, idb, sizeof(idb));
	}
}

static void ng_epb(struct img *im, uint32_t ifid, uint64_t ts_us,
		   const uint8_t *f, uint32_t n)
{
	uint32_t pad = (4 - n % 4) % 4, len = 32 + n + pad;
	const uint32_t hdr[7] = {
	    6, len, ifid, (uint32_t)(ts_us >> 32), (uint32_t)ts_us, n, n};
	const uint8_t zero[4] = {0};

	ng_put(im, hdr, sizeof(hdr));
	ng_put(im, f, n);
	ng_put(im, zero, pad);
	ng_put(im, &len, 4);
}

/* An IPv4 UDP or TCP (SYN) packet a:pa -> b:pb; eth: behind an Ethernet
 * header (else raw IP). Returns its length. */
static uint32_t frame_ip(uint8_t *f, int eth, int proto, int a, int pa, int b,
			 int pb)
{
	int l4 = proto == 6 ? 20 : 8, off = eth ? 14 : 0;
	uint8_t *ip = f + off, *l = ip + 20;

	memset(f, 0, 14 + 20 + l4);
	if (eth)
		put16(f + 12, 0x0800);
	ip[0] = 0x45;
	put16(ip + 2, 20 + l4);
	ip[8] = 64;
	ip[9] = proto;
	ip[12] = 10, ip[15] = a;
	ip[16] = 10, ip[19] = b;
	put16(l, pa);
	put16(l + 2, pb);
	if (proto == 6) {
		l[12] = 5 << 4;
		l[13] = 0x02;
	} else {
		put16(l + 4, 8);
	}
	return off + 20 + l4;
}

/* pcapng, interface 0 Ethernet, 1 raw IP: the filter is compiled for each
 * link type (an Ethernet program would read a raw packet's IP header as
 * MAC addresses and refuse every one). */
static void test_input_filter_pcapng(void)
{
	const uint16_t lts[2] = {SL_LINK_EN10MB, SL_LINK_RAW};
	uint8_t f[128];
	struct run r;
	uint32_t n;

	ng_begin(&m, lts, 2);
	n = frame_ip(f, 1, 17, 1, 1000, 2, 53);
	ng_epb(&m, 0, 1000000, f, n);
	n = frame_ip(f, 0, 17, 3, 1000, 4, 53);
	ng_epb(&m, 1, 1000001, f, n);
	n = frame_ip(f, 1, 6, 5, 1000, 6, 80);
	ng_epb(&m, 0, 1000002, f, n);
	n = frame_ip(f, 0, 6, 7, 1000, 8, 80);
	ng_epb(&m, 1, 1000003, f, n);
	n = frame_ip(f, 0, 17, 3, 1000, 4, 53);
	ng_epb(&m, 1, 1000004, f, n);

	run_img(&m, NULL, &r);
	CHECK_EQ(r.stats.packets, 5);
	CHECK_EQ(r.stats.flows_started, 4);

	run_filter = "udp";
	run_img(&m, NULL, &r);
	CHECK_EQ(r.stats.filtered, 2);
	CHECK_EQ(r.stats.packets, 3);
	CHECK_EQ(r.stats.flows_started, 2);
	CHECK_EQ(r.total_pkts, 3);

	run_filter = "tcp and dst host 10.0.0.8";
	run_img(&m, NULL, &r);
	CHECK_EQ(r.stats.filtered, 4);
	CHECK_EQ(r.stats.flows_started, 1);
	CHECK_EQ(r.last_end.key.dst[3], 8);
	run_filter = NULL;
}

int main(void)
{
	test_input_filter();
	test_input_filter_errors();
	test_input_filter_pcapng();
	test_trim(0);
	test_trim(1);
	test_trim_grace();
	test_trim_small_max();
	test_shutdown();
	test_finish_chunks();
	test_prefault();
	test_tcp_fin();
	test_fin_details();
	test_rst();
	test_idle_timeout();
	test_active_timeout();
	test_slices();
	test_truncated();
	test_ip_bytes();
	test_malformed_and_pool();
	test_clock_jump();
	test_clock_bound();
	test_clock_resync();
	test_clock_unset();
	test_clock_end_of_time();
	test_clock_empty_intervals();
	test_flow_end_not_live();
	test_clock_records();
	test_shared_input();
	test_stats();
	test_dpi();
	return test_done();
}
