/* bytes.h - network byte order reads, for the packet decoder, TCP state and
 * the collector's decoder: static inline, so that they inline into each
 * hot path. */
#ifndef SL_BYTES_H
#define SL_BYTES_H

#include <stdint.h>

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

#endif
