/* decode.c - link, IP and transport header decoding into a flow key.
 *
 * Every read is checked against caplen first; the IP layer also bounds the
 * transport header by the declared IP length, so Ethernet padding is never
 * taken for headers or payload. Multi-byte fields are read byte by byte.
 */
#include <string.h>

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
};

enum {
	IPPROTO_HOPOPTS_ = 0,
	IPPROTO_ICMP_ = 1,
	IPPROTO_TCP_ = 6,
	IPPROTO_UDP_ = 17,
	IPPROTO_ROUTING_ = 43,
	IPPROTO_FRAGMENT_ = 44,
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
};

/* What the IP layer hands to the transport decoder. l4 <= end and
 * l4 <= caplen always hold. */
struct l3 {
	uint32_t l4;  /* offset of the upper-layer header */
	uint32_t end; /* declared end of the IP packet, may be past caplen */
	uint8_t proto;
};

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

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

/* ---- link layer ------------------------------------------------------- */

static int is_vlan_tpid(uint16_t type)
{
	return type == ETHERTYPE_8021Q || type == ETHERTYPE_8021AD ||
	       type == ETHERTYPE_QINQ;
}

/* Skips 802.1Q/802.1ad tags starting at *off, where *type was read from
 * the preceding ethertype field. */
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
		vid = get16(tag) & 0x0fff;
		if (n == 0)
			key->vlan = vid;
		else if (n == 1)
			key->vlan_inner = vid;
		*type = get16(tag + 2);
		*off += VLAN_TAG_LEN;
	}
	return SL_DECODE_OK;
}

static int ethertype_version(uint16_t type, int *ver)
{
	if (type == ETHERTYPE_IPV4)
		*ver = 4;
	else if (type == ETHERTYPE_IPV6)
		*ver = 6;
	else
		return SL_DECODE_NOT_IP;
	return SL_DECODE_OK;
}

/* Ethernet and both cooked captures: an ethertype at type_off, the
 * network layer (or VLAN tags) at hlen. */
static int link_ethertype(struct frame *f, uint32_t hlen, uint32_t type_off,
			  uint32_t *off, int *ver)
{
	uint16_t type;
	int ret;

	if (f->caplen < hlen)
		return malformed(f, SL_MAL_L2_SHORT);
	type = get16(f->data + type_off);
	*off = hlen;
	ret = vlan_tags(f, off, &type);
	if (ret != SL_DECODE_OK)
		return ret;
	return ethertype_version(type, ver);
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
static int link_null(struct frame *f, int any_order, uint32_t *off, int *ver)
{
	uint32_t af;

	if (f->caplen < NULL_HLEN)
		return malformed(f, SL_MAL_L2_SHORT);
	af = get32(f->data);
	*ver = af_version(af);
	if (!*ver && any_order)
		*ver = af_version(swap32(af));
	if (!*ver)
		return SL_DECODE_NOT_IP;
	*off = NULL_HLEN;
	return SL_DECODE_OK;
}

/* Finds the network layer: its offset and expected IP version (0: take it
 * from the version nibble). */
static int decode_link(struct frame *f, uint32_t linktype, uint32_t *off,
		       int *ver)
{
	*off = 0;
	*ver = 0;
	switch (linktype) {
	case SL_LINK_EN10MB:
		return link_ethertype(f, ETH_HLEN, 12, off, ver);
	case SL_LINK_LINUX_SLL:
		return link_ethertype(f, SLL_HLEN, 14, off, ver);
	case SL_LINK_LINUX_SLL2:
		return link_ethertype(f, SLL2_HLEN, 0, off, ver);
	case SL_LINK_NULL:
		return link_null(f, 1, off, ver);
	case SL_LINK_LOOP:
		return link_null(f, 0, off, ver);
	case SL_LINK_RAW:
		return SL_DECODE_OK;
	case SL_LINK_IPV4:
		*ver = 4;
		return SL_DECODE_OK;
	case SL_LINK_IPV6:
		*ver = 6;
		return SL_DECODE_OK;
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

static int set_payload(struct frame *f, const struct l3 *l3, uint32_t poff)
{
	uint32_t lim = l3_limit(f, l3);
	uint32_t len;

	if (poff > lim)
		poff = lim;
	len = lim - poff;
	f->out->l4_offset = (uint16_t)l3->l4;
	f->out->payload_offset = (uint16_t)poff;
	f->out->payload_len = (uint16_t)(len > 0xffff ? 0xffff : len);
	return SL_DECODE_OK;
}

/* UDP and SCTP: ports first, then a fixed-size header. */
static int l4_ports(struct frame *f, const struct l3 *l3, uint32_t hlen)
{
	const uint8_t *h;

	if (l3_limit(f, l3) - l3->l4 < hlen)
		return malformed(f, SL_MAL_L4_SHORT);
	h = f->data + l3->l4;
	f->out->key.sport = get16(h);
	f->out->key.dport = get16(h + 2);
	return set_payload(f, l3, l3->l4 + hlen);
}

/* Options cut by caplen (a short snaplen) are fine; a data offset past the
 * declared IP length is not. */
static int l4_tcp(struct frame *f, const struct l3 *l3)
{
	const uint8_t *h;
	uint32_t hlen;

	if (l3_limit(f, l3) - l3->l4 < TCP_MIN_HLEN)
		return malformed(f, SL_MAL_L4_SHORT);
	h = f->data + l3->l4;
	hlen = (uint32_t)(h[12] >> 4) * 4;
	if (hlen < TCP_MIN_HLEN || hlen > l3->end - l3->l4)
		return malformed(f, SL_MAL_TCP_HLEN);
	f->out->key.sport = get16(h);
	f->out->key.dport = get16(h + 2);
	f->out->tcp_flags = h[13];
	return set_payload(f, l3, l3->l4 + hlen);
}

/* ICMP and ICMPv6: echo request and reply both carry the identifier in
 * both ports, so they land in one flow. */
static int l4_icmp(struct frame *f, const struct l3 *l3, uint8_t echo_req,
		   uint8_t echo_rep)
{
	uint32_t len = l3_limit(f, l3) - l3->l4;
	const uint8_t *h;

	if (len < ICMP_MIN_HLEN)
		return malformed(f, SL_MAL_L4_SHORT);
	h = f->data + l3->l4;
	f->out->icmp_type = h[0];
	f->out->icmp_code = h[1];
	if (h[0] == echo_req || h[0] == echo_rep) {
		if (len < ICMP_ECHO_HLEN)
			return malformed(f, SL_MAL_L4_SHORT);
		f->out->key.sport = get16(h + 4);
		f->out->key.dport = f->out->key.sport;
	}
	return set_payload(f, l3, l3->l4 + ICMP_ECHO_HLEN);
}

static int decode_l4(struct frame *f, const struct l3 *l3)
{
	int rc;

	f->out->key.proto = l3->proto;
	switch (l3->proto) {
	case IPPROTO_TCP_:
		return l4_tcp(f, l3);
	case IPPROTO_UDP_:
		rc = l4_ports(f, l3, UDP_HLEN);
		/* the payload ends where the UDP length says, if sooner */
		if (rc == SL_DECODE_OK) {
			uint32_t ulen = get16(f->data + l3->l4 + 4);

			if (ulen >= UDP_HLEN &&
			    ulen - UDP_HLEN < f->out->payload_len)
				f->out->payload_len =
				    (uint16_t)(ulen - UDP_HLEN);
		}
		return rc;
	case IPPROTO_SCTP_:
		return l4_ports(f, l3, SCTP_HLEN);
	case IPPROTO_ICMP_:
		return l4_icmp(f, l3, 8, 0);
	case IPPROTO_ICMPV6_:
		return l4_icmp(f, l3, 128, 129);
	default:
		return SL_DECODE_OK;
	}
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
	tot = get16(ip + 2) ? get16(ip + 2) : avail(f, off);
	if (tot < hlen)
		return malformed(f, SL_MAL_IP_LEN);
	key->ip_version = 4;
	key->proto = ip[9];
	memcpy(key->src, ip + 12, 4);
	memcpy(key->dst, ip + 16, 4);
	f->out->frag_id = get16(ip + 4);
	frag = get16(ip + 6);
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
	f->out->frag_id = get32(h + 4);
	if (get16(h + 2) & 0xfff8) {
		f->out->frag = SL_FRAG_LATER;
		f->out->key.proto = h[0];
		return SL_DECODE_OK;
	}
	if (h[3] & 1)
		f->out->frag = SL_FRAG_FIRST;
	return DEC_MORE;
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

		if (n == IPV6_MAX_EXT || lim - l3->l4 < IPV6_EXT_MIN)
			return malformed(f, SL_MAL_IPV6_EXT);
		len = ipv6_ext_len(l3->proto, h);
		if (lim - l3->l4 < len)
			return malformed(f, SL_MAL_IPV6_EXT);
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
	plen = get16(ip + 4);
	l3.l4 = off + IPV6_HLEN;
	/* payload length 0: a jumbogram, take whatever was captured */
	l3.end = plen ? l3.l4 + plen : UINT32_MAX;
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

int sl_decode(const uint8_t *data, uint32_t caplen, uint32_t linktype,
	      struct sl_decoded *out)
{
	struct frame f = {.data = data, .caplen = caplen, .out = out};
	uint32_t off;
	int ver;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = decode_link(&f, linktype, &off, &ver);
	if (ret != SL_DECODE_OK)
		return ret;
	return decode_ip(&f, off, ver);
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
	};

	if (reason < 0 || reason >= SL_MAL_COUNT || !names[reason])
		return "unknown";
	return names[reason];
}
