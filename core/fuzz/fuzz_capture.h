/* fuzz_capture.h - what the capture fuzz targets (fuzz_pcap, fuzz_pcapng)
 * share: an input is a whole capture file, read through the public source
 * API twice, from the buffer (sl_source_open_mem) and as a file
 * (sl_source_open_file on a memfd, read in windows that the fuzz build
 * makes 4 kB: SL_READ_WINDOW), which must agree packet by packet and end
 * alike; then an engine runs over the file (slices, short timeouts, a
 * small bounded table), so that times the clock cannot use are found too.
 * A broken promise traps:
 * - a buffer's packets lie inside the buffer, caplen <= wirelen;
 * - the engine ends (steps bounded by the packets: no interval is walked
 *   one by one), its clock never reaches UINT64_MAX, every flow that
 *   started ends, every packet read is counted, the source's error is the
 *   reader's. */
#ifndef SL_FUZZ_CAPTURE_H
#define SL_FUZZ_CAPTURE_H
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sluice.h"

static struct sl_packet_batch fz_a, fz_b;
static int fz_fd = -1;
static char fz_path[64];

/* The next packet of a source read batch by batch into b (*i: the next
 * one in it; *rc starts at 1); NULL at the end, *rc then the last
 * next()'s return. */
static const struct sl_packet *
fz_next(struct sl_source *src, struct sl_packet_batch *b, uint32_t *i, int *rc)
{
	while (*i >= b->count) {
		if (*rc <= 0)
			return NULL;
		*rc = sl_source_next(src, b);
		*i = 0;
		if (*rc <= 0)
			return NULL;
	}
	return &b->pkt[(*i)++];
}

/* The input as a file: a memfd, rewritten for each input. */
static int fz_file(const uint8_t *data, size_t size)
{
	if (fz_fd < 0) {
		fz_fd = memfd_create("sluice-fuzz", MFD_CLOEXEC);
		if (fz_fd < 0)
			return -1;
		snprintf(fz_path, sizeof(fz_path), "/proc/self/fd/%d", fz_fd);
	}
	if (ftruncate(fz_fd, 0) ||
	    pwrite(fz_fd, data, size, 0) != (ssize_t)size)
		return -1;
	return 0;
}

/* Reads the input from the buffer and from the file; returns the number
 * of packets, *end the reader's last return (0 or an error), or -1 when
 * neither opens. */
static int64_t fz_read(const uint8_t *data, size_t size, int *end)
{
	struct sl_source *ms = NULL, *fs = NULL;
	uint32_t mi = 0, fi = 0;
	int mrc = 1, frc = 1, rc;
	int64_t n = 0;

	rc = sl_source_open_mem(&ms, data, size);
	if (sl_source_open_file(&fs, fz_path) != rc)
		__builtin_trap();
	*end = rc;
	if (rc)
		return -1;
	if (sl_source_linktype(ms) != sl_source_linktype(fs))
		__builtin_trap();
	fz_a.count = fz_b.count = 0;
	for (;; n++) {
		const struct sl_packet *p = fz_next(ms, &fz_a, &mi, &mrc);
		const struct sl_packet *q = fz_next(fs, &fz_b, &fi, &frc);

		if (!p || !q) {
			if (p || q || mrc != frc)
				__builtin_trap();
			break;
		}
		if (p->data < data || p->caplen > size ||
		    p->data + p->caplen > data + size || p->caplen > p->wirelen)
			__builtin_trap();
		if (p->ts_ns != q->ts_ns || p->caplen != q->caplen ||
		    p->wirelen != q->wirelen || p->linktype != q->linktype ||
		    p->ifindex != q->ifindex ||
		    memcmp(p->data, q->data, p->caplen))
			__builtin_trap();
	}
	*end = mrc;
	if (mrc < 0 && !strcmp(sl_strerror(mrc), "unknown error"))
		__builtin_trap();
	sl_source_close(ms);
	sl_source_close(fs);
	return n;
}

/* An engine over the file: slices of 1 s (or none), timeouts of 1-3 s,
 * 64 flow slots trimmed at 48. */
static void fz_engine(uint64_t packets, int end, int slices)
{
	struct sl_config cfg = {0};
	const struct sl_output *out;
	const struct sl_stats *st;
	struct sl_source *src;
	struct sl_engine *e;
	uint64_t steps = 0, mal = 0;
	int rc;

	cfg.pool_flows = 64;
	cfg.max_flows = 48;
	cfg.slice_ns = slices ? 1000000000ULL : 0;
	for (int c = 0; c < SL_TIMEOUT_COUNT; c++)
		cfg.idle_timeout_ns[c] = (1 + c % 2) * 1000000000ULL;
	cfg.active_timeout_ns = 3000000000ULL;
	if (sl_engine_new(&e, &cfg))
		return;
	if (sl_source_open_file(&src, fz_path)) {
		sl_engine_free(e);
		return;
	}
	sl_engine_attach(e, src);
	out = sl_engine_output(e);
	/* a step reads a batch or closes an interval; an interval closes
	 * before a packet or at the end */
	while ((rc = sl_engine_step(e)) > 0) {
		if (++steps > 2 * packets + 16 || out->now_ns == UINT64_MAX)
			__builtin_trap();
		if (out->slice_ready &&
		    out->slice_end_ns <= out->slice_start_ns)
			__builtin_trap();
		for (uint32_t i = 0; i < out->n_events; i++)
			if (out->events[i].type == SL_EVENT_FLOW_END &&
			    (out->events[i].flow.reason_code == SL_END_NONE ||
			     out->events[i].flow.reason_code >= SL_END_COUNT))
				__builtin_trap();
	}
	st = sl_engine_stats(e);
	if (rc || st->packets != packets ||
	    st->flows_started != st->flows_ended || st->flows_active ||
	    sl_engine_source_error(e) != end)
		__builtin_trap();
	/* an overlong IP packet is kept in its flow: not in the dropped sum */
	for (int r = 0; r < SL_MAL_COUNT; r++)
		if (r != SL_MAL_IP_OVERLONG)
			mal += st->malformed_by[r];
	if (mal != st->malformed)
		__builtin_trap();
	sl_engine_free(e);
}

static void fuzz_capture(const uint8_t *data, size_t size)
{
	int64_t n;
	int end;

	if (fz_file(data, size))
		return;
	n = fz_read(data, size, &end);
	if (n >= 0)
		fz_engine((uint64_t)n, end, (int)(size & 1));
}

#endif
