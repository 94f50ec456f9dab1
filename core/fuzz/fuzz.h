/* fuzz.h - what the decoder fuzz targets share: one decoder across inputs
 * (as in a collector), its clock, the exporter addresses a control byte
 * picks from, and the promises every decoded record must keep. */
#ifndef SL_FUZZ_H
#define SL_FUZZ_H
#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

static struct sl_collector_msg *m;
static uint64_t now_ns;

/* Two IPv4 sources, one IPv6, and the first IPv4 again as IPv4-mapped
 * IPv6 (which must count as the same exporter); index & 3. */
static const uint8_t src4a[4] = {192, 0, 2, 1};
static const uint8_t src4b[4] = {192, 0, 2, 2};
static const uint8_t src6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
static const uint8_t mapped[16] = {[10] = 0xff, [11] = 0xff, 192, 0, 2, 1};
static const uint8_t *const fuzz_src[4] = {src4a, src4b, src6, mapped};

static inline int fuzz_family(unsigned src)
{
	return (src & 3) >= 2 ? 6 : 4;
}

/* Small bounds (8 held sets for 5 s, templates for 30 s, 2 exporters,
 * the smallest memory bound) bring the hold, expiry and eviction paths in
 * reach. */
static const struct sl_collector_msg_opts fuzz_small_opts = {
    .template_timeout_ns = 30000000000ULL,
    .hold_ns = 5000000000ULL,
    .hold_max = 8,
    .max_exporters = 2,
    .max_memory = 64 << 10,
};

/* A failed decode or a record that breaks the decoder's promises traps. */
static inline void check(int n)
{
	const struct sl_collector_rec *r = sl_collector_msg_records(m);

	if (n < 0)
		__builtin_trap();
	for (int i = 0; i < n; i++) {
		if (r[i].key.ip_version != 4 && r[i].key.ip_version != 6)
			__builtin_trap();
		/* the exporter a record names is there (not evicted) */
		if (!r[i].exporter ||
		    r[i].exporter >= sl_collector_msg_exporters(m) ||
		    !sl_collector_msg_exporter(m, r[i].exporter))
			__builtin_trap();
		if (r[i].version != 5 && r[i].version != 9 &&
		    r[i].version != 10)
			__builtin_trap();
	}
}

#endif
