/* hash.h - hashing and comparing small fixed-size keys, for the core's
 * open-addressing tables (batch queries, address ids, collector state). */
#ifndef SL_HASH_H
#define SL_HASH_H
#include <stdint.h>
#include <string.h>

static inline uint64_t sl_mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static inline uint32_t sl_hash24(const void *p)
{
	uint64_t w[3];

	memcpy(w, p, sizeof(w));
	return (uint32_t)sl_mix64(w[0] ^ sl_mix64(w[1] ^ sl_mix64(w[2])));
}

static inline int sl_equal24(const void *a, const void *b)
{
	uint64_t x[3], y[3];

	memcpy(x, a, sizeof(x));
	memcpy(y, b, sizeof(y));
	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2])) == 0;
}

#endif
