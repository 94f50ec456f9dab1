/* timeout.c - the engine clock: timeouts and slice boundaries.
 *
 * The clock follows the packets' (or records') times. Timeouts are ordered
 * lists, not scans: each idle list is ordered by last activity because its
 * timeout is the same for every member, and the age list by start, so
 * every expiry is found at a list head. Moving the clock fires what is due
 * in time order. While a live source or a collector has nothing to read,
 * the wall clock moves it instead, so idle flows still end and slices
 * still close.
 */
#include <stdint.h>
#include <time.h>

#include "engine.h"

/* The earliest timeout deadline, and the flow and reason it belongs to. */
static uint64_t next_deadline(struct sl_engine *e, uint32_t *slot, int *reason)
{
	uint64_t best = UINT64_MAX;

	for (int c = 0; c < SL_TIMEOUT_COUNT; c++) {
		uint32_t h = e->idle[c].head;
		uint64_t d;

		if (h == SL_NIL)
			continue;
		d = e->pool[h].idle_clock + e->cfg.idle_timeout_ns[c];
		if (d < best) {
			best = d;
			*slot = h;
			*reason = SL_END_IDLE;
		}
	}
	if (e->age.head != SL_NIL) {
		uint32_t h = e->age.head;
		uint64_t d = e->pool[h].start_clock + e->cfg.active_timeout_ns;

		if (d < best) {
			best = d;
			*slot = h;
			*reason = SL_END_ACTIVE;
		}
	}
	return best;
}

/* Moves the clock to t, firing every timeout and slice boundary due by then
 * in time order. Returns 1 when an interval closed (the caller must hand
 * its batch out before going on), 0 when the clock is at t, or an error. */
int sl_clock_advance(struct sl_engine *e, uint64_t t)
{
	if (t > e->now)
		e->now = t;
	e->out.now_ns = e->now;
	for (;;) {
		uint32_t slot = 0;
		int reason = 0, rc;
		uint64_t d = next_deadline(e, &slot, &reason);

		if (e->cfg.slice_ns && e->slice_end && e->slice_end <= e->now &&
		    e->slice_end <= d) {
			rc = sl_slice_close(e);
			sl_slice_open(e, e->now);
			return rc ? rc : 1;
		}
		if (d > e->now)
			return 0;
		rc = sl_flow_end(e, &e->pool[slot], reason, d);
		if (rc)
			return rc;
	}
}

uint64_t sl_wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * SL_SEC + (uint64_t)ts.tv_nsec;
}

int sl_clock_tick(struct sl_engine *e)
{
	if (e->cfg.slice_ns && !e->slice_end)
		return 0; /* no packet yet: no interval to close */
	return sl_clock_advance(e, sl_wall_ns());
}

/* A collector's clock follows the records' times; while none come it runs
 * on with the wall clock, so idle flows still end and slices close. */
int sl_clock_tick_records(struct sl_engine *e)
{
	uint64_t now = sl_wall_ns();

	if (!e->rec_wall || (e->cfg.slice_ns && !e->slice_end))
		return 0;
	if (now > e->rec_wall) {
		uint64_t t = e->now + (now - e->rec_wall);

		e->rec_wall = now;
		return sl_clock_advance(e, t);
	}
	return 0;
}
