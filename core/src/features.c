/* features.c - per-flow features read out: a stream's statistics, and
 * their means and deviations (sluice.h, SL_FEATURE_STATS).
 *
 * The packet path keeps exact integer sums of values and squares; the
 * sum of squared deviations is taken around the integer part q of the
 * mean first, exactly (sumsq - q * (sum + r), r = sum - n * q), and only
 * the last small correction r^2 / n is in floating point: no
 * cancellation, whatever the values' size.
 */
#include <math.h>
#include <string.h>

#include "sluice.h"

static void moments(uint64_t n, uint64_t sum, const uint64_t sumsq[2],
		    double *mean, double *stddev)
{
	unsigned __int128 sq, around_q;
	uint64_t q, r;
	double m2;

	*mean = *stddev = 0;
	if (!n)
		return;
	q = sum / n;
	r = sum % n;
	*mean = (double)q + (double)r / (double)n;
	if (n < 2)
		return;
	memcpy(&sq, sumsq, sizeof(sq));
	around_q = sq - (unsigned __int128)q * ((unsigned __int128)sum + r);
	/* around_q is exact and exceeds m2 by less than n: rounding it to a
	 * double costs 1e-16 of it, no more (a 64-bit one converts without
	 * libgcc's 128-bit call) */
	m2 = (around_q >> 64 ? (double)around_q : (double)(uint64_t)around_q) -
	     (double)r * ((double)r / (double)n);
	if (m2 < 0)
		m2 = 0;
	*stddev = sqrt(m2 / (double)(n - 1));
}

void sl_stream_moments(const struct sl_stream_stats *s, struct sl_moments *out)
{
	uint64_t gaps = s->packets ? s->packets - 1 : 0;

	moments(s->packets, s->sum_ps, s->sumsq_ps, &out->mean_ps,
		&out->stddev_ps);
	moments(gaps, s->sum_piat_ns, s->sumsq_piat_ns, &out->mean_piat_ms,
		&out->stddev_piat_ms);
	out->mean_piat_ms /= 1e6;
	out->stddev_piat_ms /= 1e6;
}

static void sum128_add(uint64_t to[2], const uint64_t a[2], const uint64_t b[2])
{
	unsigned __int128 x, y;

	memcpy(&x, a, sizeof(x));
	memcpy(&y, b, sizeof(y));
	x += y;
	memcpy(to, &x, sizeof(x));
}

void sl_flow_stream_stats(const struct sl_flow_stats *st, int which,
			  struct sl_stream_stats *out)
{
	const struct sl_stream_stats *f = &st->s[SL_DIR_FWD],
				     *r = &st->s[SL_DIR_REV];

	if (which != SL_STATS_BOTH) {
		*out = st->s[which == SL_DIR_REV];
		return;
	}
	memset(out, 0, sizeof(*out));
	out->packets = f->packets + r->packets;
	if (f->packets && r->packets) {
		out->min_ps = f->min_ps < r->min_ps ? f->min_ps : r->min_ps;
	} else {
		out->min_ps = f->packets ? f->min_ps : r->min_ps;
	}
	out->max_ps = f->max_ps > r->max_ps ? f->max_ps : r->max_ps;
	out->sum_ps = f->sum_ps + r->sum_ps;
	sum128_add(out->sumsq_ps, f->sumsq_ps, r->sumsq_ps);
	out->min_piat_ns = st->both.min_ns;
	out->max_piat_ns = st->both.max_ns;
	out->sum_piat_ns = st->both.sum_ns;
	memcpy(out->sumsq_piat_ns, st->both.sumsq_ns, sizeof(out->sumsq_piat_ns));
	out->last_ns = st->both.last_ns;
	for (int b = 0; b < SL_TCP_FLAG_BITS; b++)
		out->flag_packets[b] = f->flag_packets[b] + r->flag_packets[b];
}
