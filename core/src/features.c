/* features.c - per-flow features read out: the means and deviations of
 * a stream's statistics (sluice.h, SL_FEATURE_STATS).
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
	 * double costs 1e-16 of it, no more */
	m2 = (double)around_q - (double)r * ((double)r / (double)n);
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
