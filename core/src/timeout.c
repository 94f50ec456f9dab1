/* timeout.c - the engine clock: timeouts and slice boundaries.
 *
 * The clock follows the packets' (or records') times. Timeouts are ordered
 * lists, not scans: each idle list is ordered by last activity because its
 * timeout is the same for every member, and the age list by start, so
 * every expiry is found at a list head. Moving the clock fires what is due
 * in time order. While a live source or a collector has nothing to read,
 * the wall clock moves it instead, so idle flows still end and slices
 * still close. A time too far ahead (SL_CLOCK_MAX_JUMP_S in sluice.h)
 * does not move it, and deadlines saturate instead of wrapping.
 */
#include <stdint.h>
#include <time.h>

#include "engine.h"

/* The earliest timeout deadline, and the flow and reason it belongs to;
 * 0 when no flow is live. Deadlines saturate: one past the end of time
 * (a flow started near UINT64_MAX) is UINT64_MAX, never due. */
static int next_deadline(struct sl_engine *e, uint64_t *when, uint32_t *slot,
			 int *reason)
{
	uint64_t best = UINT64_MAX;
	int found = 0;

	for (int c = 0; c < SL_TIMEOUT_COUNT; c++) {
		uint32_t h = e->idle[c].head;
		uint64_t d;

		if (h == SL_NIL)
			continue;
		d = sl_sat_add(e->pool[h].idle_clock,
			       e->cfg.idle_timeout_ns[c]);
		if (!found || d < best) {
			best = d;
			*slot = h;
			*reason = SL_END_IDLE;
			found = 1;
		}
	}
	if (e->age.head != SL_NIL) {
		uint32_t h = e->age.head;
		uint64_t d = sl_sat_add(e->pool[h].start_clock,
					e->cfg.active_timeout_ns);

		if (!found || d < best) {
			best = d;
			*slot = h;
			*reason = SL_END_ACTIVE;
			found = 1;
		}
	}
	*when = best;
	return found;
}

/* Moves the clock to t, firing every timeout and slice boundary due by then
 * in time order. Returns 1 when an interval closed (the caller must hand
 * its batch out before going on), 0 when the clock is at t, or an error.
 * The work is bounded whatever the jump: each turn ends a live flow or
 * closes the open interval, and the next interval is the one holding the
 * clock (the empty ones between are not walked). */
int sl_clock_advance(struct sl_engine *e, uint64_t t)
{
	if (t > e->now && sl_clock_usable(e, t))
		e->now = t;
	e->out.now_ns = e->now;
	for (;;) {
		uint32_t slot = SL_NIL;
		int reason = 0, due, rc;
		uint64_t d;

		due = next_deadline(e, &d, &slot, &reason) && d <= e->now;
		if (e->cfg.slice_ns && e->slice_end && e->slice_end <= e->now &&
		    (!due || e->slice_end <= d)) {
			rc = sl_slice_close(e);
			sl_slice_open(e, e->now);
			return rc ? rc : 1;
		}
		if (!due) {
			e->quiet_until = d;
			if (e->cfg.slice_ns && e->slice_end &&
			    e->slice_end < d)
				e->quiet_until = e->slice_end;
			return 0;
		}
		/* sl_flow_end() refuses a flow that is not live: a broken
		 * list then stops the clock with an error, not a loop */
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
