/* fuzz_decode.c - libFuzzer target for the packet decoder: an input is
 * [link] then a frame; link % 9 picks one of the 8 link types sl_decode()
 * knows, or one it does not. The frame is the rest of libFuzzer's buffer,
 * so ASan sees any read past data + caplen. What the decoder promises
 * (sluice.h), or a trap:
 * - a status of enum sl_decode_status; malformed says why exactly when
 *   the status is SL_DECODE_MALFORMED, with a reason the decoder gives
 *   (never SL_MAL_TIMESTAMP: that one is the engine's);
 * - a decoded packet: IPv4 or IPv6, offsets within the frame (l4 <=
 *   payload, payload + its length <= caplen), a known fragment kind, and a
 *   key whose unused bytes (pad; an IPv4 address's last 12) are zero. */
#include <string.h>

#include "sluice.h"

static const uint32_t links[9] = {
    SL_LINK_NULL, SL_LINK_EN10MB,     SL_LINK_RAW,
    SL_LINK_LOOP, SL_LINK_LINUX_SLL,  SL_LINK_IPV4,
    SL_LINK_IPV6, SL_LINK_LINUX_SLL2, 147, /* LINKTYPE_USER0: not decoded */
};

static int zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sl_decoded d;
	uint32_t caplen;
	int st;

	if (!size || size - 1 > UINT32_MAX)
		return 0;
	caplen = (uint32_t)(size - 1);
	memset(&d, 0xa5, sizeof(d)); /* nothing may be left unset */
	st = sl_decode(data + 1, caplen, links[data[0] % 9], &d);
	switch (st) {
	case SL_DECODE_OK:
		if (d.malformed != SL_MAL_NONE)
			__builtin_trap();
		break;
	case SL_DECODE_NOT_IP:
		return 0;
	case SL_DECODE_MALFORMED:
		if (d.malformed == SL_MAL_NONE || d.malformed >= SL_MAL_COUNT ||
		    d.malformed == SL_MAL_TIMESTAMP)
			__builtin_trap();
		return 0;
	default:
		__builtin_trap();
	}
	if (d.key.ip_version != 4 && d.key.ip_version != 6)
		__builtin_trap();
	if (d.l4_offset > d.payload_offset ||
	    (uint32_t)d.payload_offset + d.payload_len > caplen)
		__builtin_trap();
	if (d.frag > SL_FRAG_LATER)
		__builtin_trap();
	if (!zero(d.key.pad, sizeof(d.key.pad)))
		__builtin_trap();
	if (d.key.ip_version == 4 &&
	    (!zero(d.key.src + 4, 12) || !zero(d.key.dst + 4, 12)))
		__builtin_trap();
	if (links[data[0] % 9] == 147)
		__builtin_trap(); /* decoded a link type it does not know */
	return 0;
}
