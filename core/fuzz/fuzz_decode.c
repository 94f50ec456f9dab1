/* fuzz_decode.c - libFuzzer target for the packet decoder: an input is
 * [link] then a frame; link's low 4 bits pick one of the link types
 * sl_decode() knows (Ethernet twice: tunnels start there), or one it does
 * not; bit 4 decodes with SL_DECODE_OUTER. The frame is the rest of
 * libFuzzer's buffer, so ASan sees any read past data + caplen. What the
 * decoder promises (sluice.h), or a trap:
 * - a status of enum sl_decode_status; malformed says why exactly when
 *   the status is SL_DECODE_MALFORMED, with a reason the decoder gives
 *   (never SL_MAL_TIMESTAMP or SL_MAL_IP_OVERLONG: the engine's);
 * - a decoded packet: IPv4 or IPv6, offsets within the frame (l4 <=
 *   payload, payload + its length <= caplen), a known fragment kind, and a
 *   key whose unused bytes (pad; an IPv4 address's last 12) are zero;
 *   a transport header cut (l4_cut) of a known kind, with no payload
 *   captured after it;
 * - a tunnel of a known type within the depth limit, none in outer mode,
 *   with IPv4 endpoints zero past their 4 bytes. */
#include <string.h>

#include "sluice.h"

#define UNKNOWN_LINK 147 /* LINKTYPE_USER0: not decoded */

static const uint32_t links[16] = {
    SL_LINK_NULL,	SL_LINK_EN10MB,
    SL_LINK_RAW,	SL_LINK_LOOP,
    SL_LINK_LINUX_SLL,	SL_LINK_IPV4,
    SL_LINK_IPV6,	SL_LINK_LINUX_SLL2,
    SL_LINK_PPP,	SL_LINK_PPP_HDLC,
    SL_LINK_C_HDLC,	SL_LINK_IEEE802_11,
    SL_LINK_IEEE802_11_RADIOTAP, SL_LINK_PPI,
    UNKNOWN_LINK,	SL_LINK_EN10MB,
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
	uint32_t caplen, link, flags;
	struct sl_decoded d;
	int st;

	if (!size || size - 1 > UINT32_MAX)
		return 0;
	caplen = (uint32_t)(size - 1);
	memset(&d, 0xa5, sizeof(d)); /* nothing may be left unset */
	link = links[data[0] & 15];
	flags = (data[0] & 16) ? SL_DECODE_OUTER : 0;
	st = sl_decode_flags(data + 1, caplen, link, flags, &d);
	switch (st) {
	case SL_DECODE_OK:
		if (d.malformed != SL_MAL_NONE)
			__builtin_trap();
		break;
	case SL_DECODE_NOT_IP:
		return 0;
	case SL_DECODE_MALFORMED:
		if (d.malformed == SL_MAL_NONE || d.malformed >= SL_MAL_COUNT ||
		    d.malformed == SL_MAL_TIMESTAMP ||
		    d.malformed == SL_MAL_IP_OVERLONG)
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
	if (d.l4_cut > SL_L4_CUT_EXT || (d.l4_cut && d.payload_len))
		__builtin_trap();
	if (!zero(d.key.pad, sizeof(d.key.pad)))
		__builtin_trap();
	if (d.key.ip_version == 4 &&
	    (!zero(d.key.src + 4, 12) || !zero(d.key.dst + 4, 12)))
		__builtin_trap();
	if (link == UNKNOWN_LINK)
		__builtin_trap(); /* decoded a link type it does not know */
	if (d.tunnel.type >= SL_TUNNEL_COUNT ||
	    d.tunnel.depth > SL_TUNNEL_MAX_DEPTH ||
	    (d.tunnel.type != SL_TUNNEL_NONE) != (d.tunnel.depth > 0) ||
	    (flags && d.tunnel.type != SL_TUNNEL_NONE))
		__builtin_trap();
	if (d.tunnel.ip_version == 4 &&
	    (!zero(d.tunnel.src + 4, 12) || !zero(d.tunnel.dst + 4, 12)))
		__builtin_trap();
	if (d.tunnel.ip_version != 0 && d.tunnel.ip_version != 4 &&
	    d.tunnel.ip_version != 6)
		__builtin_trap();
	return 0;
}
