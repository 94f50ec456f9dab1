/* decode.c - link, IP and transport header decoding into a flow key.
 *
 * Every read is checked against caplen first; the IP layer also bounds the
 * transport header by the declared IP length, so Ethernet padding is never
 * taken for headers or payload. Multi-byte fields are read byte by byte.
 *
 * Tunnels are followed to the innermost IP packet: link-layer ones (MPLS,
 * PPPoE) always, IP ones (IP-in-IP, GRE, ERSPAN, VXLAN, Geneve, GTP-U,
 * CAPWAP) unless SL_DECODE_OUTER. Each tunnel counts towards
 * SL_TUNNEL_MAX_DEPTH, which bounds the recursion. An IP tunnel whose
 * inside is not an IP packet the decoder can key (ARP in VXLAN, a cut
 * inner IP header) leaves the packet in the flow of the IP packet that
 * carries it, as if it had not been followed.
 *
 * A frame may end inside the transport header (a short snaplen; in a
 * first fragment the header may go on in the next one): the packet is
 * still keyed, with what was captured, and l4_cut says what is missing.
 * Only an IP length that leaves no room for the header is malformed.
 */
#include <stddef.h>
#include <string.h>

#include "bytes.h"
#include "sluice.h"

enum {
	ETH_HLEN = 14,
	SLL_HLEN = 16,
	SLL2_HLEN = 20,
	NULL_HLEN = 4,
	VLAN_TAG_LEN = 4,
	VLAN_MAX_TAGS = 8, /* two are recorded, further ones skipped */
	IPV4_MIN_HLEN = 20,
	IPV6_HLEN = 40,
	IPV6_MAX_EXT = 8,
	IPV6_EXT_MIN = 8,
	TCP_MIN_HLEN = 20,
	UDP_HLEN = 8,
	SCTP_HLEN = 12,
	ICMP_MIN_HLEN = 4,
	ICMP_ECHO_HLEN = 8,
};

enum {
	ETHERTYPE_IPV4 = 0x0800,
	ETHERTYPE_IPV6 = 0x86dd,
	ETHERTYPE_8021Q = 0x8100,
	ETHERTYPE_8021AD = 0x88a8,
	ETHERTYPE_QINQ = 0x9100,
	ETHERTYPE_MPLS = 0x8847,
	ETHERTYPE_MPLS_MC = 0x8848,
	ETHERTYPE_PPPOE = 0x8864,
	ETHERTYPE_TEB = 0x6558, /* GRE, Geneve: Ethernet inside */
	ETHERTYPE_ERSPAN2 = 0x88be,
	ETHERTYPE_ERSPAN3 = 0x22eb,
	ETHERTYPE_PPP = 0x880b, /* GRE version 1 (PPTP) */
};

enum {
	PPP_IPV4 = 0x0021,
	PPP_IPV6 = 0x0057,
	PPP_MPLS = 0x0281,
	MPLS_MAX_LABELS = 8,
	PPPOE_HLEN = 6,
	GRE_MIN_HLEN = 4,
	VXLAN_HLEN = 8,
	GENEVE_MIN_HLEN = 8,
	GTPU_MIN_HLEN = 8,
	CAPWAP_MIN_HLEN = 8,
	LLC_SNAP_LEN = 8,
	WLAN_HLEN = 24,
	RADIOTAP_MIN_HLEN = 8,
	PPI_MIN_HLEN = 8,
	ERSPAN2_HLEN = 8,
	ERSPAN3_HLEN = 12,
	ERSPAN3_SUBHDR = 8,
	UDP_PORT_VXLAN = 4789,
	UDP_PORT_GENEVE = 6081,
	UDP_PORT_GTPU = 2152,
	UDP_PORT_CAPWAP_DATA = 5247,
	GTP_GPDU = 255,
};

enum {
	IPPROTO_HOPOPTS_ = 0,
	IPPROTO_ICMP_ = 1,
	IPPROTO_IPIP_ = 4,
	IPPROTO_TCP_ = 6,
	IPPROTO_UDP_ = 17,
	IPPROTO_IPV6_ = 41,
	IPPROTO_ROUTING_ = 43,
	IPPROTO_FRAGMENT_ = 44,
	IPPROTO_GRE_ = 47,
	IPPROTO_AH_ = 51,
	IPPROTO_ICMPV6_ = 58,
	IPPROTO_DSTOPTS_ = 60,
	IPPROTO_SCTP_ = 132,
};

/* Internal status: the layer is done, go on with the next one. */
enum { DEC_MORE = -1 };

/* A frame being decoded: bytes [0, caplen) of data are readable. */
struct frame {
	const uint8_t *data;
	uint32_t caplen;
	struct sl_decoded *out;
	uint32_t flags; /* SL_DECODE_OUTER */
	uint8_t depth;	/* tunnels entered so far */
};

/* What the IP layer hands to the transport decoder. l4 <= end and
 * l4 <= caplen always hold. */
struct l3 {
	uint32_t l4;  /* offset of the upper-layer header */
	uint32_t end; /* declared end of the IP packet, may be past caplen */
	uint8_t proto;
};

static uint32_t swap32(uint32_t v)
{
	return (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) |
	       (v << 24);
}

static int malformed(struct frame *f, int reason)
{
	f->out->malformed = (uint8_t)reason;
	return SL_DECODE_MALFORMED;
}

/* Bytes readable from off on (off <= caplen). */
static uint32_t avail(const struct frame *f, uint32_t off)
{
	return f->caplen - off;
}

static uint16_t get16le(const uint8_t *p)
{
	return (uint16_t)(p[1] << 8 | p[0]);
}

static uint32_t get32le(const uint8_t *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[1] << 8 | p[0];
}

/* ---- tunnels ---------------------------------------------------------- */

static int decode_ip(struct frame *f, uint32_t off, int ver);
static int at_ether(struct frame *f, uint32_t off);

static void tunnel_clear(struct sl_tunnel *t)
{
	t->type = SL_TUNNEL_NONE;
	t->ip_version = t->has_id = t->depth = 0;
}

/* Records the tunnel being entered (the innermost one wins). An IP
 * tunnel's endpoints are the key's addresses at that point: the IP
 * header that carries it. */
static void tunnel_set(struct frame *f, uint8_t type, uint32_t id,
		       int has_id, int ip)
{
	struct sl_tunnel *t = &f->out->tunnel;

	t->type = type;
	t->id = id;
	t->has_id = (uint8_t)has_id;
	t->depth = ++f->depth;
	t->ip_version = ip ? f->out->key.ip_version : 0;
	if (ip) {
		memcpy(t->src, f->out->key.src, sizeof(t->src));
		memcpy(t->dst, f->out->key.dst, sizeof(t->dst));
	} else {
		memset(t->src, 0, sizeof(t->src));
		memset(t->dst, 0, sizeof(t->dst));
	}
}

/* An IP tunnel: whether to follow it. The outer result is saved to fall
 * back on, and the key cleared for the inner packet (VLAN ids stay: they
 * are the outer frame's). An outer fragment is not followed: its later
 * fragments could not be. */
static int ip_tunnel_enter(struct frame *f, struct sl_decoded *saved,
			   uint8_t type, uint32_t id, int has_id)
{
	struct sl_decoded *d = f->out;
	uint16_t vlan, vlan_inner;

	if ((f->flags & SL_DECODE_OUTER) || f->depth >= SL_TUNNEL_MAX_DEPTH ||
	    d->frag != SL_FRAG_NONE)
		return 0;
	*saved = *d;
	tunnel_set(f, type, id, has_id, 1);
	vlan = d->key.vlan;
	vlan_inner = d->key.vlan_inner;
	memset(&d->key, 0, sizeof(d->key));
	d->key.vlan = vlan;
	d->key.vlan_inner = vlan_inner;
	d->frag_id = 0;
	d->tcp_flags = d->icmp_type = d->icmp_code = 0;
	d->l4_offset = d->payload_offset = d->payload_len = 0;
	d->wire_payload_len = 0;
	d->l4_cut = SL_L4_WHOLE;
	return 1;
}

/* The inside of an IP tunnel decoded with status rc: a packet keyed
 * inside, or the outer packet as it was. */
static int ip_tunnel_leave(struct frame *f, const struct sl_decoded *saved,
			   int rc)
{
	if (rc == SL_DECODE_OK)
		return rc;
	*f->out = *saved;
	f->depth = saved->tunnel.depth;
	return SL_DECODE_OK;
}

/* ---- link layer ------------------------------------------------------- */

static int is_vlan_tpid(uint16_t type)
{
	return type == ETHERTYPE_8021Q || type == ETHERTYPE_8021AD ||
	       type == ETHERTYPE_QINQ;
}

/* Skips 802.1Q/802.1ad tags starting at *off, where *type was read from
 * the preceding ethertype field. Only the outermost frame's ids are the
 * key's: a tunnel's inner frame keeps the flow of its outer VLAN. */
static int vlan_tags(struct frame *f, uint32_t *off, uint16_t *type)
{
	struct sl_key *key = &f->out->key;
	unsigned int n;

	for (n = 0; is_vlan_tpid(*type); n++) {
		const uint8_t *tag;
		uint16_t vid;

		if (n == VLAN_MAX_TAGS)
			return SL_DECODE_NOT_IP;
		if (avail(f, *off) < VLAN_TAG_LEN)
			return malformed(f, SL_MAL_L2_SHORT);
		tag = f->data + *off;
		vid = rd16(tag) & 0x0fff;
		if (f->depth == 0 && n == 0)
			key->vlan = vid;
		else if (f->depth == 0 && n == 1)
			key->vlan_inner = vid;
		*type = rd16(tag + 2);
		*off += VLAN_TAG_LEN;
	}
	return SL_DECODE_OK;
}

static int at_ethertype(struct frame *f, uint16_t type, uint32_t off);

/* An MPLS label stack; after the bottom label, IP by its version nibble,
 * or Ethernet behind a pseudowire control word (first nibble 0). */
static int at_mpls(struct frame *f, uint32_t off)
{
	uint32_t top = 0, w;
	unsigned int n;
	int nibble;

	if (f->depth >= SL_TUNNEL_MAX_DEPTH)
		return SL_DECODE_NOT_IP;
	for (n = 0;; n++) {
		if (n == MPLS_MAX_LABELS)
			return SL_DECODE_NOT_IP;
		if (avail(f, off) < 4)
			return malformed(f, SL_MAL_L2_SHORT);
		w = rd32(f->data + off);
		if (n == 0)
			top = w >> 12;
		off += 4;
		if (w & 0x100) /* bottom of stack */
			break;
	}
	tunnel_set(f, SL_TUNNEL_MPLS, top, 1, 0);
	if (avail(f, off) < 1)
		return malformed(f, SL_MAL_IP_SHORT);
	nibble = f->data[off] >> 4;
	if (nibble == 4 || nibble == 6)
		return decode_ip(f, off, nibble);
	if (nibble == 0) {
		if (avail(f, off) < 4)
			return malformed(f, SL_MAL_L2_SHORT);
		return at_ether(f, off + 4);
	}
	return SL_DECODE_NOT_IP;
}

/* A PPP frame: HDLC-like address and control (ff 03) if present, then a
 * protocol of one byte (compressed, odd) or two. */
static int at_ppp(struct frame *f, uint32_t off)
{
	uint16_t proto;

	if (avail(f, off) >= 2 && f->data[off] == 0xff &&
	    f->data[off + 1] == 0x03)
		off += 2;
	if (avail(f, off) < 1)
		return malformed(f, SL_MAL_L2_SHORT);
	if (f->data[off] & 1) {
		proto = f->data[off];
		off += 1;
	} else {
		if (avail(f, off) < 2)
			return malformed(f, SL_MAL_L2_SHORT);
		proto = rd16(f->data + off);
		off += 2;
	}
	switch (proto) {
	case PPP_IPV4:
		return decode_ip(f, off, 4);
	case PPP_IPV6:
		return decode_ip(f, off, 6);
	case PPP_MPLS:
		return at_mpls(f, off);
	default:
		return SL_DECODE_NOT_IP;
	}
}

/* A PPPoE session frame: version/type 0x11, code 0 (session data). */
static int at_pppoe(struct frame *f, uint32_t off)
{
	const uint8_t *h = f->data + off;

	if (f->depth >= SL_TUNNEL_MAX_DEPTH)
		return SL_DECODE_NOT_IP;
	if (avail(f, off) < PPPOE_HLEN + 2)
		return malformed(f, SL_MAL_L2_SHORT);
	if (h[0] != 0x11 || h[1] != 0)
		return SL_DECODE_NOT_IP;
	tunnel_set(f, SL_TUNNEL_PPPOE, rd16(h + 2), 1, 0);
	return at_ppp(f, off + PPPOE_HLEN);
}

/* What follows an ethertype (or a protocol field that uses ethertypes:
 * Cisco HDLC, LLC/SNAP, GRE, Geneve) at off. */
static int at_ethertype(struct frame *f, uint16_t type, uint32_t off)
{
	int ret;

	/* most frames: IP right away */
	if (type == ETHERTYPE_IPV4)
		return decode_ip(f, off, 4);
	if (type == ETHERTYPE_IPV6)
		return decode_ip(f, off, 6);
	ret = vlan_tags(f, &off, &type);
	if (ret != SL_DECODE_OK)
		return ret;
	switch (type) {
	case ETHERTYPE_IPV4:
		return decode_ip(f, off, 4);
	case ETHERTYPE_IPV6:
		return decode_ip(f, off, 6);
	case ETHERTYPE_MPLS:
	case ETHERTYPE_MPLS_MC:
		return at_mpls(f, off);
	case ETHERTYPE_PPPOE:
		return at_pppoe(f, off);
	case ETHERTYPE_TEB:
		return at_ether(f, off);
	default:
		return SL_DECODE_NOT_IP;
	}
}

static int at_ether(struct frame *f, uint32_t off)
{
	if (avail(f, off) < ETH_HLEN)
		return malformed(f, SL_MAL_L2_SHORT);
	return at_ethertype(f, rd16(f->data + off + 12), off + ETH_HLEN);
}

/* LLC/SNAP with an ethertype (802.11 data). */
static int at_llc(struct frame *f, uint32_t off)
{
	const uint8_t *h = f->data + off;

	if (avail(f, off) < LLC_SNAP_LEN)
		return malformed(f, SL_MAL_L2_SHORT);
	if (h[0] != 0xaa || h[1] != 0xaa || h[2] != 0x03)
		return SL_DECODE_NOT_IP;
	return at_ethertype(f, rd16(h + 6), off + LLC_SNAP_LEN);
}

/* An IEEE 802.11 frame: data frames with a payload, not protected (no
 * keys here), not A-MSDU; anything else is not IP. */
static int at_80211(struct frame *f, uint32_t off)
{
	const uint8_t *h = f->data + off;
	uint32_t hlen = WLAN_HLEN;
	uint8_t subtype;

	if (avail(f, off) < 2)
		return malformed(f, SL_MAL_L2_SHORT);
	subtype = h[0] >> 4;
	if (((h[0] >> 2) & 3) != 2 || (subtype & 4) || (h[1] & 0x40))
		return SL_DECODE_NOT_IP;
	if ((h[1] & 3) == 3) /* to and from the DS: a fourth address */
		hlen += 6;
	if (subtype & 8) { /* QoS data */
		hlen += 2;
		if (h[1] & 0x80) /* +HTC */
			hlen += 4;
	}
	if (avail(f, off) < hlen)
		return malformed(f, SL_MAL_L2_SHORT);
	if ((subtype & 8) && (h[hlen - ((h[1] & 0x80) ? 6 : 2)] & 0x80))
		return SL_DECODE_NOT_IP; /* A-MSDU */
	return at_llc(f, off + hlen);
}

static int at_radiotap(struct frame *f)
{
	uint32_t len;

	if (f->caplen < RADIOTAP_MIN_HLEN)
		return malformed(f, SL_MAL_L2_SHORT);
	if (f->data[0] != 0)
		return SL_DECODE_NOT_IP;
	len = get16le(f->data + 2);
	if (len < RADIOTAP_MIN_HLEN || len > f->caplen)
		return malformed(f, SL_MAL_L2_SHORT);
	return at_80211(f, len);
}

/* PPI: a header of its own length, then a frame of the link type it
 * names (Ethernet or 802.11). */
static int at_ppi(struct frame *f)
{
	uint32_t len, dlt;

	if (f->caplen < PPI_MIN_HLEN)
		return malformed(f, SL_MAL_L2_SHORT);
	len = get16le(f->data + 2);
	dlt = get32le(f->data + 4);
	if (f->data[0] != 0 || len < PPI_MIN_HLEN)
		return SL_DECODE_NOT_IP;
	if (len > f->caplen)
		return malformed(f, SL_MAL_L2_SHORT);
	if (dlt == SL_LINK_EN10MB)
		return at_ether(f, len);
	if (dlt == SL_LINK_IEEE802_11)
		return at_80211(f, len);
	return SL_DECODE_NOT_IP;
}

/* Cisco HDLC: address, control, then an ethertype. */
static int at_chdlc(struct frame *f)
{
	if (f->caplen < 4)
		return malformed(f, SL_MAL_L2_SHORT);
	return at_ethertype(f, rd16(f->data + 2), 4);
}

/* BSD address families of the NULL/LOOP header. */
static int af_version(uint32_t af)
{
	switch (af) {
	case 2:
		return 4;
	case 10: /* Linux */
	case 24: /* NetBSD, OpenBSD */
	case 28: /* FreeBSD */
	case 30: /* Darwin */
		return 6;
	default:
		return 0;
	}
}

/* NULL is in the capturing host's byte order, LOOP in network order. */
static int at_null(struct frame *f, int any_order)
{
	uint32_t af;
	int ver;

	if (f->caplen < NULL_HLEN)
		return malformed(f, SL_MAL_L2_SHORT);
	af = rd32(f->data);
	ver = af_version(af);
	if (!ver && any_order)
		ver = af_version(swap32(af));
	if (!ver)
		return SL_DECODE_NOT_IP;
	return decode_ip(f, NULL_HLEN, ver);
}

/* Cooked captures: an ethertype at type_off, the network layer at hlen. */
static int at_cooked(struct frame *f, uint32_t hlen, uint32_t type_off)
{
	if (f->caplen < hlen)
		return malformed(f, SL_MAL_L2_SHORT);
	return at_ethertype(f, rd16(f->data + type_off), hlen);
}

static int decode_link(struct frame *f, uint32_t linktype)
{
	switch (linktype) {
	case SL_LINK_EN10MB:
		return at_ether(f, 0);
	case SL_LINK_LINUX_SLL:
		return at_cooked(f, SLL_HLEN, 14);
	case SL_LINK_LINUX_SLL2:
		return at_cooked(f, SLL2_HLEN, 0);
	case SL_LINK_NULL:
		return at_null(f, 1);
	case SL_LINK_LOOP:
		return at_null(f, 0);
	case SL_LINK_RAW:
		return decode_ip(f, 0, 0);
	case SL_LINK_IPV4:
		return decode_ip(f, 0, 4);
	case SL_LINK_IPV6:
		return decode_ip(f, 0, 6);
	case SL_LINK_PPP:
		return at_ppp(f, 0);
	case SL_LINK_PPP_HDLC:
		/* serial links also carry Cisco HDLC (address 0x0f/0x8f) */
		if (f->caplen && (f->data[0] == 0x0f || f->data[0] == 0x8f))
			return at_chdlc(f);
		return at_ppp(f, 0);
	case SL_LINK_C_HDLC:
		return at_chdlc(f);
	case SL_LINK_IEEE802_11:
		return at_80211(f, 0);
	case SL_LINK_IEEE802_11_RADIOTAP:
		return at_radiotap(f);
	case SL_LINK_PPI:
		return at_ppi(f);
	default:
		return malformed(f, SL_MAL_LINKTYPE);
	}
}

/* ---- transport layer -------------------------------------------------- */

/* Readable end of the IP packet: its declared end clipped to caplen. */
static uint32_t l3_limit(const struct frame *f, const struct l3 *l3)
{
	return l3->end < f->caplen ? l3->end : f->caplen;
}

static uint16_t clip16(uint32_t v)
{
	return (uint16_t)(v > 0xffff ? 0xffff : v);
}

/* The payload starts at poff: what of it was captured (for policies and
 * DPI) and what the IP length says was sent (TCP history: a short
 * snaplen must not make data segments look like pure ACKs). */
static int set_payload(struct frame *f, const struct l3 *l3, uint32_t poff)
{
	uint32_t lim = l3_limit(f, l3);
	/* a jumbogram declares no end of its own: what was captured */
	uint32_t end = l3->end == UINT32_MAX ? lim : l3->end;

	f->out->l4_offset = (uint16_t)l3->l4;
	f->out->payload_offset = (uint16_t)(poff < lim ? poff : lim);
	f->out->payload_len = clip16(poff < lim ? lim - poff : 0);
	f->out->wire_payload_len = clip16(poff < end ? end - poff : 0);
	return SL_DECODE_OK;
}

/* A transport header of hlen bytes the frame ends in, with have of them
 * captured. The IP length must leave room for the header (else it is
 * malformed), except in a first fragment: there the header goes on in the
 * next fragment. Then the packet is keyed with what there is; the caller
 * took the fields it could. Its payload: none captured, none known. */
static int l4_cut(struct frame *f, const struct l3 *l3, uint32_t hlen,
		  uint8_t cut)
{
	if (l3->end - l3->l4 < hlen && f->out->frag != SL_FRAG_FIRST)
		return malformed(f, SL_MAL_L4_SHORT);
	f->out->l4_cut = cut;
	f->out->l4_offset = (uint16_t)l3->l4;
	f->out->payload_offset = (uint16_t)l3_limit(f, l3);
	return SL_DECODE_OK;
}

/* UDP and SCTP: ports first, then a fixed-size header. */
static int l4_ports(struct frame *f, const struct l3 *l3, uint32_t hlen)
{
	uint32_t have = l3_limit(f, l3) - l3->l4;
	const uint8_t *h = f->data + l3->l4;

	if (have < hlen && have < 4)
		return l4_cut(f, l3, hlen, SL_L4_CUT_PORTS);
	f->out->key.sport = rd16(h);
	f->out->key.dport = rd16(h + 2);
	if (have < hlen)
		return l4_cut(f, l3, hlen, SL_L4_CUT);
	return set_payload(f, l3, l3->l4 + hlen);
}

/* A TCP header the frame ends in before its 20 fixed bytes: a short
 * snaplen, or a tiny first fragment. */
static int l4_tcp_cut(struct frame *f, const struct l3 *l3, uint32_t have)
{
	const uint8_t *h = f->data + l3->l4;
	uint32_t hlen;
	int rc;

	if (have < 4)
		return l4_cut(f, l3, TCP_MIN_HLEN, SL_L4_CUT_PORTS);
	rc = l4_cut(f, l3, TCP_MIN_HLEN, SL_L4_CUT_FLAGS);
	if (rc != SL_DECODE_OK)
		return rc;
	f->out->key.sport = rd16(h);
	f->out->key.dport = rd16(h + 2);
	if (have < 14)
		return SL_DECODE_OK;
	hlen = (uint32_t)(h[12] >> 4) * 4;
	if (hlen < TCP_MIN_HLEN ||
	    (hlen > l3->end - l3->l4 && f->out->frag != SL_FRAG_FIRST))
		return malformed(f, SL_MAL_TCP_HLEN);
	f->out->l4_cut = SL_L4_CUT;
	f->out->tcp_flags = h[13];
	return set_payload(f, l3, l3->l4 + hlen);
}

/* Options cut by caplen (a short snaplen) are fine; a data offset past the
 * declared IP length is not, but in a first fragment: its options go on
 * in the next fragment. */
static int l4_tcp(struct frame *f, const struct l3 *l3)
{
	uint32_t have = l3_limit(f, l3) - l3->l4;
	const uint8_t *h;
	uint32_t hlen;

	if (have < TCP_MIN_HLEN)
		return l4_tcp_cut(f, l3, have);
	h = f->data + l3->l4;
	hlen = (uint32_t)(h[12] >> 4) * 4;
	if (hlen < TCP_MIN_HLEN ||
	    (hlen > l3->end - l3->l4 && f->out->frag != SL_FRAG_FIRST))
		return malformed(f, SL_MAL_TCP_HLEN);
	f->out->key.sport = rd16(h);
	f->out->key.dport = rd16(h + 2);
	f->out->tcp_flags = h[13];
	return set_payload(f, l3, l3->l4 + hlen);
}

/* ICMP and ICMPv6: echo request and reply both carry the identifier
 * (bytes 4-5) in both ports, so they land in one flow. */
static int l4_icmp(struct frame *f, const struct l3 *l3, uint8_t echo_req,
		   uint8_t echo_rep)
{
	uint32_t have = l3_limit(f, l3) - l3->l4;
	const uint8_t *h = f->data + l3->l4;
	int echo;

	if (have < 2) /* not even the type: an echo's id cannot be told */
		return l4_cut(f, l3, ICMP_MIN_HLEN, SL_L4_CUT_PORTS);
	f->out->icmp_type = h[0];
	f->out->icmp_code = h[1];
	echo = h[0] == echo_req || h[0] == echo_rep;
	if (!echo && have < ICMP_MIN_HLEN)
		return l4_cut(f, l3, ICMP_MIN_HLEN, SL_L4_CUT);
	if (echo && have < 6)
		return l4_cut(f, l3, ICMP_ECHO_HLEN, SL_L4_CUT_PORTS);
	if (echo) {
		f->out->key.sport = rd16(h + 4);
		f->out->key.dport = f->out->key.sport;
		if (have < ICMP_ECHO_HLEN)
			return l4_cut(f, l3, ICMP_ECHO_HLEN, SL_L4_CUT);
	}
	return set_payload(f, l3, l3->l4 + ICMP_ECHO_HLEN);
}

/* ---- IP tunnels -------------------------------------------------------- */

/* GRE: version 0 (checksum, key, sequence; IP, Ethernet, ERSPAN, MPLS
 * inside) and version 1 (PPTP: PPP inside, the call id in the key). */
static int at_gre(struct frame *f, const struct l3 *l3)
{
	uint32_t lim = l3_limit(f, l3), off = l3->l4, hlen = GRE_MIN_HLEN;
	const uint8_t *h = f->data + off;
	struct sl_decoded saved;
	uint16_t flags, proto;
	uint32_t id = 0;
	uint8_t type = SL_TUNNEL_GRE;
	int has_id, rc;

	if (lim - off < GRE_MIN_HLEN)
		return SL_DECODE_OK;
	flags = rd16(h);
	proto = rd16(h + 2);
	has_id = (flags & 0x2000) != 0;
	if ((flags & 7) == 1) { /* PPTP */
		if (!has_id || proto != ETHERTYPE_PPP)
			return SL_DECODE_OK;
		hlen += 4 + (flags & 0x1000 ? 4 : 0) + (flags & 0x0080 ? 4 : 0);
		if (lim - off < hlen)
			return SL_DECODE_OK;
		id = rd16(h + 6);
	} else {
		if ((flags & 7) || (flags & 0x4000)) /* routing: obsolete */
			return SL_DECODE_OK;
		if (flags & 0x8000)
			hlen += 4;
		if (has_id) {
			if (lim - off < hlen + 4)
				return SL_DECODE_OK;
			id = rd32(h + hlen);
			hlen += 4;
		}
		if (flags & 0x1000)
			hlen += 4;
		if (lim - off < hlen)
			return SL_DECODE_OK;
	}
	off += hlen;
	if (proto == ETHERTYPE_ERSPAN2 || proto == ETHERTYPE_ERSPAN3) {
		const uint8_t *eh = f->data + off;
		/* type I has no sequence number and no header of its own */
		uint32_t elen = proto == ETHERTYPE_ERSPAN3 ? ERSPAN3_HLEN
			      : (flags & 0x1000)	   ? ERSPAN2_HLEN
							   : 0;

		if (lim - off < elen)
			return SL_DECODE_OK;
		if (proto == ETHERTYPE_ERSPAN3 && (eh[11] & 1)) {
			elen += ERSPAN3_SUBHDR;
			if (lim - off < elen)
				return SL_DECODE_OK;
		}
		type = SL_TUNNEL_ERSPAN;
		has_id = elen != 0;
		id = elen ? rd16(eh + 2) & 0x3ff : 0;
		off += elen;
	}
	if (!ip_tunnel_enter(f, &saved, type, id, has_id))
		return SL_DECODE_OK;
	if ((flags & 7) == 1)
		rc = at_ppp(f, off);
	else if (type == SL_TUNNEL_ERSPAN)
		rc = at_ether(f, off);
	else
		rc = at_ethertype(f, proto, off);
	return ip_tunnel_leave(f, &saved, rc);
}

/* IPv4 or IPv6 right inside IPv4 or IPv6. */
static int at_ipip(struct frame *f, const struct l3 *l3, int ver)
{
	struct sl_decoded saved;

	if (!ip_tunnel_enter(f, &saved, SL_TUNNEL_IPIP, 0, 0))
		return SL_DECODE_OK;
	return ip_tunnel_leave(f, &saved, decode_ip(f, l3->l4, ver));
}

static int at_vxlan(struct frame *f, uint32_t off, uint32_t lim)
{
	const uint8_t *h = f->data + off;
	struct sl_decoded saved;

	if (lim - off < VXLAN_HLEN || !(h[0] & 0x08))
		return SL_DECODE_OK;
	if (!ip_tunnel_enter(f, &saved, SL_TUNNEL_VXLAN,
			     rd32(h + 4) >> 8, 1))
		return SL_DECODE_OK;
	return ip_tunnel_leave(f, &saved, at_ether(f, off + VXLAN_HLEN));
}

static int at_geneve(struct frame *f, uint32_t off, uint32_t lim)
{
	const uint8_t *h = f->data + off;
	struct sl_decoded saved;
	uint32_t hlen;

	if (lim - off < GENEVE_MIN_HLEN || (h[0] >> 6) != 0)
		return SL_DECODE_OK;
	hlen = GENEVE_MIN_HLEN + (uint32_t)(h[0] & 0x3f) * 4;
	if (lim - off < hlen)
		return SL_DECODE_OK;
	if (!ip_tunnel_enter(f, &saved, SL_TUNNEL_GENEVE,
			     rd32(h + 4) >> 8, 1))
		return SL_DECODE_OK;
	return ip_tunnel_leave(f, &saved,
			       at_ethertype(f, rd16(h + 2), off + hlen));
}

/* GTP-U version 1, G-PDU: an IP packet after the header, its optional
 * fields and extension headers. */
static int at_gtpu(struct frame *f, uint32_t off, uint32_t lim)
{
	const uint8_t *h = f->data + off;
	uint32_t hlen = GTPU_MIN_HLEN;
	struct sl_decoded saved;
	uint8_t next;

	if (lim - off < GTPU_MIN_HLEN || (h[0] >> 4) != 3 || h[1] != GTP_GPDU)
		return SL_DECODE_OK;
	if (h[0] & 7) { /* sequence, N-PDU, next extension */
		hlen += 4;
		if (lim - off < hlen)
			return SL_DECODE_OK;
		next = (h[0] & 4) ? h[hlen - 1] : 0;
		while (next) {
			uint32_t elen;

			if (lim - off < hlen + 1)
				return SL_DECODE_OK;
			elen = (uint32_t)h[hlen] * 4;
			if (!elen || lim - off < hlen + elen)
				return SL_DECODE_OK;
			hlen += elen;
			next = h[hlen - 1];
		}
	}
	if (!ip_tunnel_enter(f, &saved, SL_TUNNEL_GTPU, rd32(h + 4), 1))
		return SL_DECODE_OK;
	return ip_tunnel_leave(f, &saved, decode_ip(f, off + hlen, 0));
}

/* CAPWAP data, not encrypted, not fragmented: an 802.11 frame (T bit,
 * IEEE 802.11 binding) or an 802.3 one. */
static int at_capwap(struct frame *f, uint32_t off, uint32_t lim)
{
	struct sl_decoded saved;
	uint32_t w, hlen;
	int rc;

	if (lim - off < CAPWAP_MIN_HLEN)
		return SL_DECODE_OK;
	w = rd32(f->data + off);
	hlen = ((w >> 19) & 0x1f) * 4;
	if ((w >> 24) != 0 || (w & 0x80) || hlen < CAPWAP_MIN_HLEN ||
	    lim - off < hlen)
		return SL_DECODE_OK;
	if (!ip_tunnel_enter(f, &saved, SL_TUNNEL_CAPWAP, 0, 0))
		return SL_DECODE_OK;
	if (w & 0x100)
		rc = ((w >> 9) & 0x1f) == 1 ? at_80211(f, off + hlen)
					    : SL_DECODE_NOT_IP;
	else
		rc = at_ether(f, off + hlen);
	return ip_tunnel_leave(f, &saved, rc);
}

/* A UDP packet with its ports read: a tunnel by its port, or itself. */
static int udp_tunnel(struct frame *f, const struct l3 *l3)
{
	uint32_t off = l3->l4 + UDP_HLEN, lim = l3_limit(f, l3);
	uint16_t sport = f->out->key.sport, dport = f->out->key.dport;

	if (dport == UDP_PORT_VXLAN)
		return at_vxlan(f, off, lim);
	if (dport == UDP_PORT_GENEVE)
		return at_geneve(f, off, lim);
	if (dport == UDP_PORT_GTPU || sport == UDP_PORT_GTPU)
		return at_gtpu(f, off, lim);
	if (dport == UDP_PORT_CAPWAP_DATA || sport == UDP_PORT_CAPWAP_DATA)
		return at_capwap(f, off, lim);
	return SL_DECODE_OK;
}

/* The payload ends where the UDP length says, if sooner. */
static void udp_len(struct frame *f, uint32_t ulen)
{
	if (ulen < UDP_HLEN)
		return;
	if (ulen - UDP_HLEN < f->out->payload_len)
		f->out->payload_len = (uint16_t)(ulen - UDP_HLEN);
	if (ulen - UDP_HLEN < f->out->wire_payload_len)
		f->out->wire_payload_len = (uint16_t)(ulen - UDP_HLEN);
}

static int decode_l4(struct frame *f, const struct l3 *l3)
{
	int rc;

	f->out->key.proto = l3->proto;
	if (l3->proto == IPPROTO_TCP_) /* most packets */
		return l4_tcp(f, l3);
	switch (l3->proto) {
	case IPPROTO_UDP_:
		rc = l4_ports(f, l3, UDP_HLEN);
		if (rc != SL_DECODE_OK || f->out->l4_cut)
			return rc;
		udp_len(f, rd16(f->data + l3->l4 + 4));
		/* every tunnel port is in [2152, 6081]: most packets are
		 * out at one or two compares */
		if ((uint16_t)(f->out->key.dport - UDP_PORT_GTPU) <=
			UDP_PORT_GENEVE - UDP_PORT_GTPU ||
		    (uint16_t)(f->out->key.sport - UDP_PORT_GTPU) <=
			UDP_PORT_GENEVE - UDP_PORT_GTPU)
			return udp_tunnel(f, l3);
		return SL_DECODE_OK;
	case IPPROTO_SCTP_:
		return l4_ports(f, l3, SCTP_HLEN);
	case IPPROTO_ICMP_:
		return l4_icmp(f, l3, 8, 0);
	case IPPROTO_ICMPV6_:
		return l4_icmp(f, l3, 128, 129);
	case IPPROTO_IPIP_:
		return at_ipip(f, l3, 4);
	case IPPROTO_IPV6_:
		return at_ipip(f, l3, 6);
	case IPPROTO_GRE_:
		return at_gre(f, l3);
	default:
		return SL_DECODE_OK;
	}
}

/* An IP header says its packet ends at end (the engine compares it with
 * the frame's length on the wire). */
static void claim_end(struct frame *f, uint32_t end)
{
	if (end > f->out->ip_end)
		f->out->ip_end = end;
}

/* ---- IPv4 ------------------------------------------------------------- */

static int decode_ipv4(struct frame *f, uint32_t off)
{
	const uint8_t *ip = f->data + off;
	struct sl_key *key = &f->out->key;
	uint32_t hlen = (uint32_t)(ip[0] & 0x0f) * 4, tot;
	uint16_t frag;
	struct l3 l3;

	if (hlen < IPV4_MIN_HLEN)
		return malformed(f, SL_MAL_IP_HLEN);
	if (avail(f, off) < hlen)
		return malformed(f, SL_MAL_IP_SHORT);
	/* 0 is what a sender's capture shows for a TSO super-packet: the
	 * length is whatever was captured */
	f->out->ip_len = rd16(ip + 2);
	tot = f->out->ip_len ? f->out->ip_len : avail(f, off);
	if (tot < hlen)
		return malformed(f, SL_MAL_IP_LEN);
	claim_end(f, off + tot);
	f->out->ip_offset = (uint16_t)off;
	key->ip_version = 4;
	key->proto = ip[9];
	memcpy(key->src, ip + 12, 4);
	memcpy(key->dst, ip + 16, 4);
	f->out->frag_id = rd16(ip + 4);
	frag = rd16(ip + 6);
	if (frag & 0x1fff) {
		f->out->frag = SL_FRAG_LATER;
		return SL_DECODE_OK;
	}
	if (frag & 0x2000)
		f->out->frag = SL_FRAG_FIRST;
	l3.l4 = off + hlen;
	l3.end = off + tot;
	l3.proto = ip[9];
	return decode_l4(f, &l3);
}

/* ---- IPv6 ------------------------------------------------------------- */

static int is_ipv6_ext(uint8_t nh)
{
	return nh == IPPROTO_HOPOPTS_ || nh == IPPROTO_ROUTING_ ||
	       nh == IPPROTO_DSTOPTS_ || nh == IPPROTO_FRAGMENT_ ||
	       nh == IPPROTO_AH_;
}

static uint32_t ipv6_ext_len(uint8_t nh, const uint8_t *h)
{
	if (nh == IPPROTO_FRAGMENT_)
		return 8;
	if (nh == IPPROTO_AH_)
		return ((uint32_t)h[1] + 2) * 4;
	return ((uint32_t)h[1] + 1) * 8;
}

/* The fragment header h: returns SL_DECODE_OK for a later fragment (the
 * chain stops there), DEC_MORE otherwise. */
static int ipv6_frag(struct frame *f, const uint8_t *h)
{
	f->out->frag_id = rd32(h + 4);
	/* what the first and later fragments share: the first one's key gets
	 * the upper-layer protocol, past Destination Options or AH */
	f->out->frag_nh = h[0];
	if (rd16(h + 2) & 0xfff8) {
		f->out->frag = SL_FRAG_LATER;
		f->out->key.proto = h[0];
		return SL_DECODE_OK;
	}
	if (h[3] & 1)
		f->out->frag = SL_FRAG_FIRST;
	return DEC_MORE;
}

/* An extension header of need bytes the frame ends in: malformed when the
 * payload length leaves no room for it, else cut by the capture length.
 * The packet is keyed without ports, with the last next header it has:
 * the upper-layer protocol, or the header the chain is cut in. */
static int ipv6_ext_cut(struct frame *f, struct l3 *l3, uint32_t need)
{
	if (l3->end - l3->l4 < need)
		return malformed(f, SL_MAL_IPV6_EXT);
	if (l3_limit(f, l3) > l3->l4)
		l3->proto = f->data[l3->l4];
	f->out->key.proto = l3->proto;
	f->out->l4_cut = SL_L4_CUT_EXT;
	f->out->l4_offset = (uint16_t)l3->l4;
	f->out->payload_offset = (uint16_t)l3_limit(f, l3);
	return SL_DECODE_OK;
}

/* Walks the extension headers, leaving l3 at the upper-layer header.
 * Returns DEC_MORE to go on with it, or the final status. */
static int ipv6_ext(struct frame *f, struct l3 *l3)
{
	uint32_t lim = l3_limit(f, l3);
	unsigned int n;

	for (n = 0; is_ipv6_ext(l3->proto); n++) {
		const uint8_t *h = f->data + l3->l4;
		uint32_t len;
		int ret;

		if (n == IPV6_MAX_EXT)
			return malformed(f, SL_MAL_IPV6_EXT);
		if (lim - l3->l4 < IPV6_EXT_MIN)
			return ipv6_ext_cut(f, l3, IPV6_EXT_MIN);
		len = ipv6_ext_len(l3->proto, h);
		if (lim - l3->l4 < len)
			return ipv6_ext_cut(f, l3, len);
		if (l3->proto == IPPROTO_FRAGMENT_) {
			ret = ipv6_frag(f, h);
			if (ret != DEC_MORE)
				return ret;
		}
		l3->proto = h[0];
		l3->l4 += len;
	}
	return DEC_MORE;
}

static int decode_ipv6(struct frame *f, uint32_t off)
{
	const uint8_t *ip = f->data + off;
	struct sl_key *key = &f->out->key;
	uint16_t plen;
	struct l3 l3;
	int ret;

	if (avail(f, off) < IPV6_HLEN)
		return malformed(f, SL_MAL_IP_SHORT);
	key->ip_version = 6;
	memcpy(key->src, ip + 8, 16);
	memcpy(key->dst, ip + 24, 16);
	plen = rd16(ip + 4);
	f->out->ip_offset = (uint16_t)off;
	f->out->ip_len = plen ? IPV6_HLEN + plen : 0;
	l3.l4 = off + IPV6_HLEN;
	/* payload length 0: a jumbogram, take whatever was captured */
	l3.end = plen ? l3.l4 + plen : UINT32_MAX;
	if (plen)
		claim_end(f, l3.end);
	l3.proto = ip[6];
	ret = ipv6_ext(f, &l3);
	if (ret != DEC_MORE)
		return ret;
	return decode_l4(f, &l3);
}

/* ---- entry points ----------------------------------------------------- */

/* ver: what the link layer announced, 0 for "see the version nibble". */
static int decode_ip(struct frame *f, uint32_t off, int ver)
{
	int nibble;

	if (avail(f, off) < 1)
		return malformed(f, SL_MAL_IP_SHORT);
	nibble = f->data[off] >> 4;
	if (ver == 0)
		ver = nibble == 4 || nibble == 6 ? nibble : -1;
	if (nibble != ver)
		return malformed(f, SL_MAL_IP_VERSION);
	if (ver == 4)
		return decode_ipv4(f, off);
	return decode_ipv6(f, off);
}

int sl_decode_flags(const uint8_t *data, uint32_t caplen, uint32_t linktype,
		    uint32_t flags, struct sl_decoded *out)
{
	struct frame f = {
	    .data = data, .caplen = caplen, .out = out, .flags = flags};
	int ret;

	/* the tunnel's other fields are set with its type: a plain packet
	 * costs no clearing of them */
	memset(out, 0, offsetof(struct sl_decoded, tunnel));
	tunnel_clear(&out->tunnel);
	ret = decode_link(&f, linktype);
	/* outer: link-layer tunnels were walked, the packet is the outer
	 * IP packet's and has no tunnel */
	if (flags & SL_DECODE_OUTER)
		tunnel_clear(&out->tunnel);
	return ret;
}

int sl_decode(const uint8_t *data, uint32_t caplen, uint32_t linktype,
	      struct sl_decoded *out)
{
	return sl_decode_flags(data, caplen, linktype, 0, out);
}

int sl_linktype_supported(uint32_t linktype)
{
	static const uint8_t empty[1];
	struct sl_decoded d;

	/* the decoder's own switch is the list: an empty frame of a known
	 * link type fails for another reason */
	sl_decode(empty, 0, linktype, &d);
	return d.malformed != SL_MAL_LINKTYPE;
}

const char *sl_malformed_name(int reason)
{
	static const char *const names[SL_MAL_COUNT] = {
	    [SL_MAL_NONE] = "none",
	    [SL_MAL_LINKTYPE] = "linktype",
	    [SL_MAL_L2_SHORT] = "l2_short",
	    [SL_MAL_IP_SHORT] = "ip_short",
	    [SL_MAL_IP_VERSION] = "ip_version",
	    [SL_MAL_IP_HLEN] = "ip_hlen",
	    [SL_MAL_IP_LEN] = "ip_len",
	    [SL_MAL_IPV6_EXT] = "ipv6_ext",
	    [SL_MAL_L4_SHORT] = "l4_short",
	    [SL_MAL_TCP_HLEN] = "tcp_hlen",
	    [SL_MAL_TIMESTAMP] = "timestamp",
	    [SL_MAL_IP_OVERLONG] = "ip_overlong",
	};

	if (reason < 0 || reason >= SL_MAL_COUNT || !names[reason])
		return "unknown";
	return names[reason];
}
