/* test_decode.c - sl_decode() over frames built byte by byte.
 *
 * Every frame is decoded from a heap copy of exactly caplen bytes, so
 * AddressSanitizer catches any read past the end.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"
#include "test.h"

struct buf {
	uint8_t b[512];
	uint32_t n;
};

static void put8(struct buf *b, unsigned int v)
{
	b->b[b->n++] = (uint8_t)v;
}

static void put16(struct buf *b, unsigned int v)
{
	put8(b, v >> 8);
	put8(b, v);
}

static void put32(struct buf *b, uint32_t v)
{
	put16(b, v >> 16);
	put16(b, v & 0xffff);
}

static void putz(struct buf *b, unsigned int n)
{
	while (n--)
		put8(b, 0);
}

static void set16(struct buf *b, uint32_t off, unsigned int v)
{
	b->b[off] = (uint8_t)(v >> 8);
	b->b[off + 1] = (uint8_t)v;
}

static const uint8_t v4_src[4] = {10, 0, 0, 1};
static const uint8_t v4_dst[4] = {10, 0, 0, 2};
static const uint8_t v6_src[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
static const uint8_t v6_dst[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 2};

static void putn(struct buf *b, const uint8_t *p, unsigned int n)
{
	while (n--)
		put8(b, *p++);
}

static void eth(struct buf *b, unsigned int type)
{
	unsigned int i;

	for (i = 0; i < 6; i++)
		put8(b, 0x02);
	for (i = 0; i < 6; i++)
		put8(b, 0x04);
	put16(b, type);
}

static void vlan_tag(struct buf *b, unsigned int tci, unsigned int type)
{
	put16(b, tci);
	put16(b, type);
}

/* IPv4 header with optlen bytes of options (NOPs); returns its offset.
 * The total length is fixed up by ipv4_done(). */
static uint32_t ipv4(struct buf *b, unsigned int proto, unsigned int frag,
		     unsigned int optlen)
{
	uint32_t off = b->n;

	put8(b, 0x40 | ((20 + optlen) / 4));
	put8(b, 0);
	put16(b, 0);	  /* total length */
	put16(b, 0x1234); /* identification */
	put16(b, frag);
	put8(b, 64);
	put8(b, proto);
	put16(b, 0); /* checksum */
	putn(b, v4_src, 4);
	putn(b, v4_dst, 4);
	while (optlen--)
		put8(b, 1);
	return off;
}

static void ipv4_done(struct buf *b, uint32_t ip)
{
	set16(b, ip + 2, b->n - ip);
}

static uint32_t ipv6(struct buf *b, unsigned int nh)
{
	uint32_t off = b->n;

	put32(b, 0x60000000);
	put16(b, 0); /* payload length */
	put8(b, nh);
	put8(b, 64);
	putn(b, v6_src, 16);
	putn(b, v6_dst, 16);
	return off;
}

static void ipv6_done(struct buf *b, uint32_t ip)
{
	set16(b, ip + 4, b->n - ip - 40);
}

/* Hop-by-hop / destination options / routing: 8 * (len + 1) bytes. */
static void ext_opts(struct buf *b, unsigned int nh, unsigned int len)
{
	put8(b, nh);
	put8(b, len);
	putz(b, 6 + 8 * len);
}

static void ext_frag(struct buf *b, unsigned int nh, unsigned int off8,
		     int more, uint32_t id)
{
	put8(b, nh);
	put8(b, 0);
	put16(b, (off8 << 3) | (more ? 1 : 0));
	put32(b, id);
}

static void tcp(struct buf *b, unsigned int sport, unsigned int dport,
		unsigned int flags, unsigned int optlen)
{
	put16(b, sport);
	put16(b, dport);
	put32(b, 1000);
	put32(b, 0);
	put8(b, ((20 + optlen) / 4) << 4);
	put8(b, flags);
	put16(b, 65535);
	put16(b, 0);
	put16(b, 0);
	while (optlen--)
		put8(b, 1);
}

static void udp(struct buf *b, unsigned int sport, unsigned int dport,
		unsigned int paylen)
{
	put16(b, sport);
	put16(b, dport);
	put16(b, 8 + paylen);
	put16(b, 0);
}

static void icmp(struct buf *b, unsigned int type, unsigned int id)
{
	put8(b, type);
	put8(b, 0);
	put16(b, 0);
	put16(b, id);
	put16(b, 1); /* sequence */
}

static void payload(struct buf *b, unsigned int n)
{
	while (n--)
		put8(b, 'x');
}

/* Decodes the first caplen bytes of b from an exact-size heap copy. */
static int decode_n(const struct buf *b, uint32_t caplen, uint32_t linktype,
		    struct sl_decoded *d)
{
	uint8_t *copy = malloc(caplen ? caplen : 1);
	int ret;

	memcpy(copy, b->b, caplen);
	ret = sl_decode(copy, caplen, linktype, d);
	free(copy);
	/* malformed is set exactly when the status says so */
	CHECK((ret == SL_DECODE_MALFORMED) == (d->malformed != SL_MAL_NONE));
	return ret;
}

static int decode(const struct buf *b, uint32_t linktype, struct sl_decoded *d)
{
	return decode_n(b, b->n, linktype, d);
}

static int all_zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return 0;
	return 1;
}

/* Keys are compared as raw bytes: addresses and unused bytes must match. */
static void check_v4_key(const struct sl_key *k, unsigned int proto)
{
	CHECK_EQ(k->ip_version, 4);
	CHECK_EQ(k->proto, proto);
	CHECK(memcmp(k->src, v4_src, 4) == 0);
	CHECK(memcmp(k->dst, v4_dst, 4) == 0);
	CHECK(all_zero(k->src + 4, 12));
	CHECK(all_zero(k->dst + 4, 12));
	CHECK(all_zero(k->pad, sizeof(k->pad)));
}

static void check_v6_key(const struct sl_key *k, unsigned int proto)
{
	CHECK_EQ(k->ip_version, 6);
	CHECK_EQ(k->proto, proto);
	CHECK(memcmp(k->src, v6_src, 16) == 0);
	CHECK(memcmp(k->dst, v6_dst, 16) == 0);
	CHECK(all_zero(k->pad, sizeof(k->pad)));
}

/* Ethernet / IPv4 / TCP with 5 payload bytes. */
static void build_v4_tcp(struct buf *b)
{
	uint32_t ip;

	memset(b, 0, sizeof(*b));
	eth(b, 0x0800);
	ip = ipv4(b, 6, 0, 0);
	tcp(b, 40000, 80, 0x18, 0);
	payload(b, 5);
	ipv4_done(b, ip);
}

static void test_ether_ipv4_tcp(void)
{
	struct sl_decoded d;
	struct buf b;

	build_v4_tcp(&b);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 6);
	CHECK_EQ(d.key.sport, 40000);
	CHECK_EQ(d.key.dport, 80);
	CHECK_EQ(d.key.vlan, 0);
	CHECK_EQ(d.key.vlan_inner, 0);
	CHECK_EQ(d.tcp_flags, 0x18);
	CHECK_EQ(d.l4_offset, 34);
	CHECK_EQ(d.payload_offset, 54);
	CHECK_EQ(d.payload_len, 5);
	CHECK_EQ(d.frag, SL_FRAG_NONE);
	CHECK_EQ(d.frag_id, 0x1234);
	CHECK_EQ(d.malformed, SL_MAL_NONE);
	CHECK_EQ(d.icmp_type, 0);
	CHECK_EQ(d.l4_cut, SL_L4_WHOLE);
	CHECK_EQ(d.wire_payload_len, 5);
	CHECK_EQ(d.ip_offset, 14);
}

/* The output is overwritten: stale bytes never leak into the key; of a
 * packet without a tunnel, the tunnel's type and flags are cleared (its
 * addresses and id are left as they were: sluice.h). */
static void test_memset(void)
{
	size_t upto = offsetof(struct sl_decoded, tunnel);
	struct sl_decoded d, ref;
	struct buf b;

	build_v4_tcp(&b);
	decode(&b, SL_LINK_EN10MB, &ref);
	memset(&d, 0xa5, sizeof(d));
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK(memcmp(&d, &ref, upto) == 0);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_NONE);
	CHECK_EQ(d.tunnel.ip_version, 0);
	CHECK_EQ(d.tunnel.has_id, 0);
	CHECK_EQ(d.tunnel.depth, 0);
}

static void test_ether_padding(void)
{
	struct sl_decoded d;
	struct buf b = {.n = 0};
	uint32_t ip;

	eth(&b, 0x0800);
	ip = ipv4(&b, 17, 0, 0);
	udp(&b, 5353, 53, 2);
	payload(&b, 2);
	ipv4_done(&b, ip);
	while (b.n < 60)
		put8(&b, 0xee); /* padding to the Ethernet minimum */
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 17);
	CHECK_EQ(d.key.sport, 5353);
	CHECK_EQ(d.key.dport, 53);
	CHECK_EQ(d.l4_offset, 34);
	CHECK_EQ(d.payload_offset, 42);
	CHECK_EQ(d.payload_len, 2);

	/* a snaplen cut inside the payload: only what is present counts */
	CHECK_EQ(decode_n(&b, 43, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.payload_len, 1);
	CHECK_EQ(decode_n(&b, 42, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.payload_len, 0);

	/* the UDP length ends the payload before the IP packet does; a UDP
	 * length past the IP end (or below 8) changes nothing */
	b.n = 0;
	eth(&b, 0x0800);
	ip = ipv4(&b, 17, 0, 0);
	udp(&b, 5353, 53, 5);
	payload(&b, 10);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.payload_len, 5);
	b.b[38] = 0;
	b.b[39] = 200;
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.payload_len, 10);
	b.b[39] = 3;
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.payload_len, 10);
}

static void test_vlan(void)
{
	struct sl_decoded d;
	struct buf b = {.n = 0};
	uint32_t ip;

	/* one 802.1Q tag, priority bits set: only the 12-bit id counts */
	eth(&b, 0x8100);
	vlan_tag(&b, 0xa000 | 100, 0x0800);
	ip = ipv4(&b, 6, 0, 0);
	tcp(&b, 1, 2, 0x02, 0);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 6);
	CHECK_EQ(d.key.vlan, 100);
	CHECK_EQ(d.key.vlan_inner, 0);
	CHECK_EQ(d.l4_offset, 38);

	/* 802.1ad outer, 802.1Q inner, IPv6 */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x88a8);
	vlan_tag(&b, 200, 0x8100);
	vlan_tag(&b, 0x1000 | 300, 0x86dd);
	ip = ipv6(&b, 17);
	udp(&b, 7, 9, 3);
	payload(&b, 3);
	ipv6_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(d.key.vlan, 200);
	CHECK_EQ(d.key.vlan_inner, 300);
	CHECK_EQ(d.key.sport, 7);
	CHECK_EQ(d.key.dport, 9);
	CHECK_EQ(d.l4_offset, 14 + 8 + 40);
	CHECK_EQ(d.payload_len, 3);

	/* three tags (0x9100 outer): the third is skipped */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x9100);
	vlan_tag(&b, 11, 0x8100);
	vlan_tag(&b, 22, 0x8100);
	vlan_tag(&b, 33, 0x0800);
	ip = ipv4(&b, 17, 0, 0);
	udp(&b, 1, 2, 0);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.vlan, 11);
	CHECK_EQ(d.key.vlan_inner, 22);
	CHECK_EQ(d.l4_offset, 14 + 12 + 20);
	CHECK_EQ(d.key.sport, 1);

	/* a tag cut short */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x8100);
	put16(&b, 5);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_L2_SHORT);

	/* a tagged ARP frame is still not IP */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x8100);
	vlan_tag(&b, 5, 0x0806);
	putz(&b, 28);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_NOT_IP);
	CHECK_EQ(d.malformed, SL_MAL_NONE);
}

static void test_not_ip(void)
{
	struct sl_decoded d;
	struct buf b = {.n = 0};

	eth(&b, 0x0806); /* ARP request */
	put16(&b, 1);
	put16(&b, 0x0800);
	put8(&b, 6);
	put8(&b, 4);
	put16(&b, 1);
	putz(&b, 20);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_NOT_IP);
	CHECK_EQ(d.malformed, SL_MAL_NONE);

	memset(&b, 0, sizeof(b));
	eth(&b, 0x88cc); /* LLDP */
	putz(&b, 30);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_NOT_IP);

	memset(&b, 0, sizeof(b));
	eth(&b, 0x0800); /* IPv4 ethertype, but not even one IP byte */
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_SHORT);
}

static void sll_header(struct buf *b, unsigned int proto)
{
	put16(b, 0);	 /* packet type: to us */
	put16(b, 1);	 /* ARPHRD_ETHER */
	put16(b, 6);	 /* address length */
	putz(b, 8);	 /* address */
	put16(b, proto); /* offset 14 */
}

static void sll2_header(struct buf *b, unsigned int proto)
{
	put16(b, proto); /* offset 0 */
	put16(b, 0);	 /* reserved */
	put32(b, 3);	 /* interface index */
	put16(b, 1);	 /* ARPHRD_ETHER */
	put8(b, 0);	 /* packet type */
	put8(b, 6);	 /* address length */
	putz(b, 8);
}

static void test_sll(void)
{
	struct sl_decoded d;
	struct buf b = {.n = 0};
	uint32_t ip;

	sll_header(&b, 0x0800);
	CHECK_EQ(b.n, 16);
	ip = ipv4(&b, 6, 0, 0);
	tcp(&b, 1234, 443, 0x10, 0);
	payload(&b, 4);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_LINUX_SLL, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 6);
	CHECK_EQ(d.key.sport, 1234);
	CHECK_EQ(d.key.dport, 443);
	CHECK_EQ(d.l4_offset, 36);
	CHECK_EQ(d.payload_len, 4);

	/* a VLAN tag left in the SLL protocol field */
	memset(&b, 0, sizeof(b));
	sll_header(&b, 0x8100);
	vlan_tag(&b, 42, 0x86dd);
	ip = ipv6(&b, 6);
	tcp(&b, 5, 6, 0x02, 0);
	ipv6_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_LINUX_SLL, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 6);
	CHECK_EQ(d.key.vlan, 42);
	CHECK_EQ(d.l4_offset, 16 + 4 + 40);

	memset(&b, 0, sizeof(b));
	sll_header(&b, 0x0806);
	putz(&b, 28);
	CHECK_EQ(decode(&b, SL_LINK_LINUX_SLL, &d), SL_DECODE_NOT_IP);

	memset(&b, 0, sizeof(b));
	sll_header(&b, 0x0800);
	CHECK_EQ(decode_n(&b, 15, SL_LINK_LINUX_SLL, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_L2_SHORT);

	/* SLL2 */
	memset(&b, 0, sizeof(b));
	sll2_header(&b, 0x86dd);
	CHECK_EQ(b.n, 20);
	ip = ipv6(&b, 17);
	udp(&b, 111, 222, 1);
	payload(&b, 1);
	ipv6_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_LINUX_SLL2, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(d.key.sport, 111);
	CHECK_EQ(d.key.dport, 222);
	CHECK_EQ(d.l4_offset, 60);
	CHECK_EQ(d.payload_offset, 68);
	CHECK_EQ(d.payload_len, 1);

	memset(&b, 0, sizeof(b));
	sll2_header(&b, 0x88a8);
	vlan_tag(&b, 7, 0x8100);
	vlan_tag(&b, 8, 0x0800);
	ip = ipv4(&b, 17, 0, 0);
	udp(&b, 1, 2, 0);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_LINUX_SLL2, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.vlan, 7);
	CHECK_EQ(d.key.vlan_inner, 8);
	CHECK_EQ(d.l4_offset, 20 + 8 + 20);

	memset(&b, 0, sizeof(b));
	sll2_header(&b, 0x0800);
	CHECK_EQ(decode_n(&b, 19, SL_LINK_LINUX_SLL2, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_L2_SHORT);
}

/* IPv4 / UDP or IPv6 / UDP after an optional 4-byte family word. */
static void build_raw(struct buf *b, int v6, int with_af, uint32_t af_be)
{
	uint32_t ip;

	memset(b, 0, sizeof(*b));
	if (with_af)
		put32(b, af_be);
	ip = v6 ? ipv6(b, 17) : ipv4(b, 17, 0, 0);
	udp(b, 1000, 2000, 2);
	payload(b, 2);
	if (v6)
		ipv6_done(b, ip);
	else
		ipv4_done(b, ip);
}

static void test_raw(void)
{
	struct sl_decoded d;
	struct buf b;

	build_raw(&b, 0, 0, 0);
	CHECK_EQ(decode(&b, SL_LINK_RAW, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 17);
	CHECK_EQ(d.key.sport, 1000);
	CHECK_EQ(d.l4_offset, 20);
	CHECK_EQ(d.payload_len, 2);
	CHECK_EQ(decode(&b, SL_LINK_IPV4, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 17);
	CHECK_EQ(decode(&b, SL_LINK_IPV6, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_VERSION);

	build_raw(&b, 1, 0, 0);
	CHECK_EQ(decode(&b, SL_LINK_RAW, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(d.l4_offset, 40);
	CHECK_EQ(d.payload_len, 2);
	CHECK_EQ(decode(&b, SL_LINK_IPV6, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(decode(&b, SL_LINK_IPV4, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_VERSION);

	/* RAW with a version nibble that is neither 4 nor 6 */
	b.b[0] = 0x50;
	CHECK_EQ(decode(&b, SL_LINK_RAW, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_VERSION);
	b.b[0] = 0x00;
	CHECK_EQ(decode(&b, SL_LINK_RAW, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_VERSION);
	CHECK_EQ(decode_n(&b, 0, SL_LINK_RAW, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_SHORT);
}

static uint32_t bswap(uint32_t v)
{
	return (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) |
	       (v << 24);
}

static void test_null_loop(void)
{
	static const uint32_t v6_af[] = {10, 24, 28, 30};
	struct sl_decoded d;
	struct buf b;
	unsigned int i;

	/* NULL: either byte order */
	build_raw(&b, 0, 1, bswap(2));
	CHECK_EQ(decode(&b, SL_LINK_NULL, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 17);
	CHECK_EQ(d.l4_offset, 24);
	build_raw(&b, 0, 1, 2);
	CHECK_EQ(decode(&b, SL_LINK_NULL, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 17);
	for (i = 0; i < sizeof(v6_af) / sizeof(v6_af[0]); i++) {
		build_raw(&b, 1, 1, v6_af[i]);
		CHECK_EQ(decode(&b, SL_LINK_NULL, &d), SL_DECODE_OK);
		check_v6_key(&d.key, 17);
		CHECK_EQ(d.l4_offset, 44);
		build_raw(&b, 1, 1, bswap(v6_af[i]));
		CHECK_EQ(decode(&b, SL_LINK_NULL, &d), SL_DECODE_OK);
		check_v6_key(&d.key, 17);
		/* LOOP: network order only */
		build_raw(&b, 1, 1, v6_af[i]);
		CHECK_EQ(decode(&b, SL_LINK_LOOP, &d), SL_DECODE_OK);
		check_v6_key(&d.key, 17);
		build_raw(&b, 1, 1, bswap(v6_af[i]));
		CHECK_EQ(decode(&b, SL_LINK_LOOP, &d), SL_DECODE_NOT_IP);
	}
	build_raw(&b, 0, 1, 2);
	CHECK_EQ(decode(&b, SL_LINK_LOOP, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 17);
	build_raw(&b, 0, 1, bswap(2));
	CHECK_EQ(decode(&b, SL_LINK_LOOP, &d), SL_DECODE_NOT_IP);

	/* unknown family, family/version mismatch, short header */
	build_raw(&b, 0, 1, 7);
	CHECK_EQ(decode(&b, SL_LINK_NULL, &d), SL_DECODE_NOT_IP);
	build_raw(&b, 0, 1, 30);
	CHECK_EQ(decode(&b, SL_LINK_NULL, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_VERSION);
	CHECK_EQ(decode_n(&b, 3, SL_LINK_NULL, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_L2_SHORT);
	CHECK_EQ(decode_n(&b, 3, SL_LINK_LOOP, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_L2_SHORT);
}

static void test_ipv4_options(void)
{
	struct sl_decoded d;
	struct buf b = {.n = 0};
	uint32_t ip;

	eth(&b, 0x0800);
	ip = ipv4(&b, 6, 0, 8); /* IHL 7 */
	tcp(&b, 22, 50000, 0x11, 12);
	payload(&b, 7);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 6);
	CHECK_EQ(d.key.sport, 22);
	CHECK_EQ(d.key.dport, 50000);
	CHECK_EQ(d.tcp_flags, 0x11);
	CHECK_EQ(d.l4_offset, 14 + 28);
	CHECK_EQ(d.payload_offset, 14 + 28 + 32);
	CHECK_EQ(d.payload_len, 7);

	/* maximal options: IHL 15 */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x0800);
	ip = ipv4(&b, 17, 0, 40);
	udp(&b, 3, 4, 0);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.l4_offset, 14 + 60);
	CHECK_EQ(d.key.dport, 4);
	CHECK_EQ(d.payload_len, 0);
}

static void test_ipv4_frag(void)
{
	struct sl_decoded d;
	struct buf b = {.n = 0};
	uint32_t ip;

	/* first fragment: MF, offset 0: L4 decoded as usual */
	eth(&b, 0x0800);
	ip = ipv4(&b, 17, 0x2000, 0);
	udp(&b, 4000, 4001, 1472);
	payload(&b, 16);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 17);
	CHECK_EQ(d.frag, SL_FRAG_FIRST);
	CHECK_EQ(d.frag_id, 0x1234);
	CHECK_EQ(d.key.sport, 4000);
	CHECK_EQ(d.key.dport, 4001);
	CHECK_EQ(d.payload_len, 16);

	/* DF alone is not a fragment */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x0800);
	ip = ipv4(&b, 17, 0x4000, 0);
	udp(&b, 4000, 4001, 0);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.frag, SL_FRAG_NONE);

	/* later fragment: no ports, no L4 parsing even if too short */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x0800);
	ip = ipv4(&b, 6, 185, 0); /* offset 1480, last fragment */
	payload(&b, 3);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 6);
	CHECK_EQ(d.frag, SL_FRAG_LATER);
	CHECK_EQ(d.frag_id, 0x1234);
	CHECK_EQ(d.key.sport, 0);
	CHECK_EQ(d.key.dport, 0);
	CHECK_EQ(d.l4_offset, 0);
	CHECK_EQ(d.malformed, SL_MAL_NONE);

	/* a middle fragment (MF and an offset) is a later one too */
	set16(&b, ip + 6, 0x2000 | 185);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.frag, SL_FRAG_LATER);
}

static void test_ipv6_ext(void)
{
	struct sl_decoded d;
	struct buf b = {.n = 0};
	uint32_t ip;
	unsigned int i;

	/* hop-by-hop, destination options, fragment (first), TCP */
	eth(&b, 0x86dd);
	ip = ipv6(&b, 0);
	ext_opts(&b, 60, 0);
	ext_opts(&b, 44, 1);
	ext_frag(&b, 6, 0, 1, 0xdeadbeef);
	tcp(&b, 33000, 8080, 0x02, 0);
	payload(&b, 9);
	ipv6_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 6);
	CHECK_EQ(d.frag, SL_FRAG_FIRST);
	CHECK_EQ(d.frag_id, 0xdeadbeef);
	CHECK_EQ(d.key.sport, 33000);
	CHECK_EQ(d.key.dport, 8080);
	CHECK_EQ(d.tcp_flags, 0x02);
	CHECK_EQ(d.l4_offset, 14 + 40 + 8 + 16 + 8);
	CHECK_EQ(d.payload_offset, 14 + 40 + 8 + 16 + 8 + 20);
	CHECK_EQ(d.payload_len, 9);

	/* routing header and AH (len 4: (4 + 2) * 4 = 24 bytes) */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x86dd);
	ip = ipv6(&b, 43);
	ext_opts(&b, 51, 2);
	put8(&b, 17);
	put8(&b, 4);
	putz(&b, 22);
	udp(&b, 500, 4500, 0);
	ipv6_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(d.l4_offset, 14 + 40 + 24 + 24);
	CHECK_EQ(d.key.sport, 500);
	CHECK_EQ(d.key.dport, 4500);

	/* later fragment: stop at the fragment header */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x86dd);
	ip = ipv6(&b, 0);
	ext_opts(&b, 44, 0);
	ext_frag(&b, 17, 100, 1, 77);
	payload(&b, 2);
	ipv6_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(d.frag, SL_FRAG_LATER);
	CHECK_EQ(d.frag_id, 77);
	CHECK_EQ(d.key.sport, 0);
	CHECK_EQ(d.l4_offset, 0);

	/* ESP and No next header stop the walk: ok, no ports */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x86dd);
	ip = ipv6(&b, 60);
	ext_opts(&b, 50, 0);
	put32(&b, 0x1000);
	put32(&b, 1);
	ipv6_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 50);
	CHECK_EQ(d.key.sport, 0);
	memset(&b, 0, sizeof(b));
	eth(&b, 0x86dd);
	ip = ipv6(&b, 59);
	ipv6_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 59);

	/* exactly 8 extension headers are fine, 9 are not */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x86dd);
	ip = ipv6(&b, 60);
	for (i = 0; i < 7; i++)
		ext_opts(&b, 60, 0);
	ext_opts(&b, 17, 0);
	udp(&b, 1, 2, 0);
	ipv6_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.l4_offset, 14 + 40 + 64);
	CHECK_EQ(d.key.dport, 2);
	memset(&b, 0, sizeof(b));
	eth(&b, 0x86dd);
	ip = ipv6(&b, 60);
	for (i = 0; i < 8; i++)
		ext_opts(&b, 60, 0);
	ext_opts(&b, 17, 0);
	udp(&b, 1, 2, 0);
	ipv6_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IPV6_EXT);

	/* a header longer than the payload length says */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x86dd);
	ip = ipv6(&b, 0);
	ext_opts(&b, 17, 3); /* 32 bytes */
	udp(&b, 1, 2, 0);
	set16(&b, ip + 4, 16);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IPV6_EXT);
}

static void test_ipv6_jumbo(void)
{
	struct sl_decoded d;
	struct buf b = {.n = 0};

	eth(&b, 0x86dd);
	ipv6(&b, 0); /* payload length stays 0 */
	put8(&b, 17);
	put8(&b, 0);
	put8(&b, 0xc2); /* jumbo payload option */
	put8(&b, 4);
	put32(&b, 200);
	udp(&b, 9, 10, 0);
	set16(&b, b.n - 4, 0); /* RFC 2675: a jumbogram's UDP length is 0 */
	payload(&b, 11);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(d.key.sport, 9);
	CHECK_EQ(d.payload_len, 11);
}

static void build_icmp(struct buf *b, int v6, unsigned int type,
		       unsigned int id)
{
	uint32_t ip;

	memset(b, 0, sizeof(*b));
	eth(b, v6 ? 0x86dd : 0x0800);
	ip = v6 ? ipv6(b, 58) : ipv4(b, 1, 0, 0);
	icmp(b, type, id);
	payload(b, 32);
	if (v6)
		ipv6_done(b, ip);
	else
		ipv4_done(b, ip);
}

static void test_icmp(void)
{
	struct sl_decoded req, rep, d;
	struct buf b;
	int v6;

	for (v6 = 0; v6 < 2; v6++) {
		build_icmp(&b, v6, v6 ? 128 : 8, 0x4242);
		CHECK_EQ(decode(&b, SL_LINK_EN10MB, &req), SL_DECODE_OK);
		build_icmp(&b, v6, v6 ? 129 : 0, 0x4242);
		CHECK_EQ(decode(&b, SL_LINK_EN10MB, &rep), SL_DECODE_OK);
		CHECK_EQ(req.key.proto, v6 ? 58 : 1);
		CHECK_EQ(req.key.sport, 0x4242);
		CHECK_EQ(req.key.dport, 0x4242);
		CHECK_EQ(rep.key.sport, req.key.sport);
		CHECK_EQ(rep.key.dport, req.key.dport);
		CHECK_EQ(req.icmp_type, v6 ? 128 : 8);
		CHECK_EQ(rep.icmp_type, v6 ? 129 : 0);
		CHECK_EQ(req.icmp_code, 0);
		CHECK_EQ(req.l4_offset, v6 ? 54 : 34);
		CHECK_EQ(req.payload_offset, req.l4_offset + 8);
		CHECK_EQ(req.payload_len, 32);
		if (v6)
			check_v6_key(&req.key, 58);
		else
			check_v4_key(&req.key, 1);

		/* destination unreachable (code 3): no ports */
		build_icmp(&b, v6, v6 ? 1 : 3, 0x4242);
		b.b[(v6 ? 54 : 34) + 1] = 3;
		CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
		CHECK_EQ(d.icmp_type, v6 ? 1 : 3);
		CHECK_EQ(d.icmp_code, 3);
		CHECK_EQ(d.key.sport, 0);
		CHECK_EQ(d.key.dport, 0);
		/* only 4..7 bytes: fine for a non-echo type */
		CHECK_EQ(decode_n(&b, (v6 ? 54 : 34) + 4, SL_LINK_EN10MB, &d),
			 SL_DECODE_OK);
		CHECK_EQ(d.icmp_type, v6 ? 1 : 3);
		CHECK_EQ(d.payload_len, 0);
		CHECK_EQ(d.l4_cut, SL_L4_WHOLE);
		/* cut by the capture length: type and code, no more */
		CHECK_EQ(decode_n(&b, (v6 ? 54 : 34) + 3, SL_LINK_EN10MB, &d),
			 SL_DECODE_OK);
		CHECK_EQ(d.icmp_type, v6 ? 1 : 3);
		CHECK_EQ(d.icmp_code, 3);
		CHECK_EQ(d.l4_cut, SL_L4_CUT);
		CHECK_EQ(decode_n(&b, (v6 ? 54 : 34) + 1, SL_LINK_EN10MB, &d),
			 SL_DECODE_OK);
		CHECK_EQ(d.l4_cut, SL_L4_CUT_PORTS);
		/* an IP length that leaves no room for the 4 bytes */
		b.n = (v6 ? 54 : 34) + 3;
		if (v6)
			ipv6_done(&b, 14);
		else
			ipv4_done(&b, 14);
		CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
		CHECK_EQ(d.malformed, SL_MAL_L4_SHORT);

		/* an echo's identifier is bytes 4-5 */
		build_icmp(&b, v6, v6 ? 128 : 8, 1);
		CHECK_EQ(decode_n(&b, (v6 ? 54 : 34) + 5, SL_LINK_EN10MB, &d),
			 SL_DECODE_OK);
		CHECK_EQ(d.l4_cut, SL_L4_CUT_PORTS);
		CHECK_EQ(d.key.sport, 0);
		CHECK_EQ(d.icmp_type, v6 ? 128 : 8);
		CHECK_EQ(decode_n(&b, (v6 ? 54 : 34) + 6, SL_LINK_EN10MB, &d),
			 SL_DECODE_OK);
		CHECK_EQ(d.l4_cut, SL_L4_CUT);
		CHECK_EQ(d.key.sport, 1);
		CHECK_EQ(d.key.dport, 1);
		CHECK_EQ(decode_n(&b, (v6 ? 54 : 34) + 8, SL_LINK_EN10MB, &d),
			 SL_DECODE_OK);
		CHECK_EQ(d.key.sport, 1);
		CHECK_EQ(d.l4_cut, SL_L4_WHOLE);
		/* an echo whose IP length ends in its identifier */
		b.n = (v6 ? 54 : 34) + 6;
		if (v6)
			ipv6_done(&b, 14);
		else
			ipv4_done(&b, 14);
		CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
		CHECK_EQ(d.malformed, SL_MAL_L4_SHORT);
	}
}

static void test_sctp_other(void)
{
	struct sl_decoded d;
	struct buf b = {.n = 0};
	uint32_t ip;

	eth(&b, 0x0800);
	ip = ipv4(&b, 132, 0, 0);
	put16(&b, 2905);
	put16(&b, 3868);
	put32(&b, 0xabcdef01); /* verification tag */
	put32(&b, 0);	       /* checksum */
	payload(&b, 16);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 132);
	CHECK_EQ(d.key.sport, 2905);
	CHECK_EQ(d.key.dport, 3868);
	CHECK_EQ(d.l4_offset, 34);
	CHECK_EQ(d.payload_offset, 46);
	CHECK_EQ(d.payload_len, 16);
	CHECK_EQ(decode_n(&b, 34 + 11, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.sport, 2905);
	CHECK_EQ(d.l4_cut, SL_L4_CUT);
	CHECK_EQ(decode_n(&b, 34 + 3, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.sport, 0);
	CHECK_EQ(d.l4_cut, SL_L4_CUT_PORTS);

	/* GRE: ok, no ports */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x0800);
	ip = ipv4(&b, 47, 0, 0);
	put16(&b, 0);
	put16(&b, 0x0800);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v4_key(&d.key, 47);
	CHECK_EQ(d.key.sport, 0);
	CHECK_EQ(d.key.dport, 0);
}

static void test_malformed(void)
{
	struct sl_decoded d;
	struct buf b;
	uint32_t ip;

	build_v4_tcp(&b);
	CHECK_EQ(decode(&b, 9999, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_LINKTYPE);
	CHECK_EQ(decode_n(&b, 13, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_L2_SHORT);
	CHECK_EQ(decode_n(&b, 14 + 19, SL_LINK_EN10MB, &d),
		 SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_SHORT);
	/* the TCP header cut by the capture length: see test_l4_cut() */
	CHECK_EQ(decode_n(&b, 14 + 20 + 19, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.l4_cut, SL_L4_CUT);
	CHECK_EQ(decode_n(&b, 14 + 20 + 20, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.l4_cut, SL_L4_WHOLE);

	b.b[14] = 0x65; /* IPv6 nibble behind the IPv4 ethertype */
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_VERSION);

	build_v4_tcp(&b);
	b.b[14] = 0x44; /* IHL 4 */
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_HLEN);

	build_v4_tcp(&b);
	b.b[14] = 0x4f; /* IHL 15: 60 bytes, but only 45 follow */
	CHECK_EQ(decode_n(&b, 14 + 45, SL_LINK_EN10MB, &d),
		 SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_SHORT);

	build_v4_tcp(&b);
	set16(&b, 16, 19); /* total length below the header length */
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_IP_LEN);

	/* total length 0 (TSO on the sender): the captured length counts */
	build_v4_tcp(&b);
	set16(&b, 16, 0);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.dport, 80);

	/* total length beyond caplen is a snaplen cut, not an error */
	build_v4_tcp(&b);
	set16(&b, 16, 1500);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.payload_len, 5);
	CHECK_EQ(d.wire_payload_len, 1500 - 20 - 20);
	CHECK_EQ(d.l4_cut, SL_L4_WHOLE);

	/* total length leaving no room for the TCP header */
	build_v4_tcp(&b);
	set16(&b, 16, 30);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_L4_SHORT);

	build_v4_tcp(&b);
	b.b[34 + 12] = 0x40; /* data offset 4 */
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_TCP_HLEN);
	b.b[34 + 12] = 0x00;
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_TCP_HLEN);
	/* data offset 15 (60 bytes) past the IP total length (45 bytes) */
	b.b[34 + 12] = 0xf0;
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_TCP_HLEN);

	/* TCP options cut by the snaplen: still a keyed packet */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x0800);
	ip = ipv4(&b, 6, 0, 0);
	tcp(&b, 1, 2, 0x02, 20);
	ipv4_done(&b, ip);
	CHECK_EQ(decode_n(&b, 68, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.sport, 1);
	CHECK_EQ(d.tcp_flags, 0x02);
	CHECK_EQ(d.payload_offset, 68);
	CHECK_EQ(d.payload_len, 0);
}

/* Ethernet / IPv6 / hop-by-hop / TCP with options / payload, cut at every
 * length: an IP header cut is malformed; past it the packet is keyed with
 * what was captured (l4_cut says what is missing), the addresses never
 * move, and the payload on the wire is the IP length's once known. */
static void test_truncation(void)
{
	struct sl_decoded full, d;
	struct buf b = {.n = 0};
	uint32_t ip, len;
	int ret, exp;

	eth(&b, 0x86dd);
	ip = ipv6(&b, 0);
	ext_opts(&b, 6, 0);
	tcp(&b, 44321, 443, 0x18, 12);
	payload(&b, 10);
	ipv6_done(&b, ip);
	CHECK_EQ(b.n, 14 + 40 + 8 + 32 + 10);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &full), SL_DECODE_OK);
	check_v6_key(&full.key, 6);
	CHECK_EQ(full.payload_offset, 94);
	CHECK_EQ(full.payload_len, 10);

	for (len = 0; len <= b.n; len++) {
		ret = decode_n(&b, len, SL_LINK_EN10MB, &d);
		if (len < 14)
			exp = SL_MAL_L2_SHORT;
		else if (len < 54)
			exp = SL_MAL_IP_SHORT;
		else
			exp = SL_MAL_NONE;
		CHECK_EQ(d.malformed, exp);
		CHECK_EQ(ret, exp ? SL_DECODE_MALFORMED : SL_DECODE_OK);
		if (ret != SL_DECODE_OK)
			continue;
		CHECK(memcmp(d.key.src, full.key.src, 16) == 0);
		CHECK(memcmp(d.key.dst, full.key.dst, 16) == 0);
		CHECK_EQ(d.l4_cut, len < 62   ? SL_L4_CUT_EXT
				   : len < 66 ? SL_L4_CUT_PORTS
				   : len < 76 ? SL_L4_CUT_FLAGS
				   : len < 82 ? SL_L4_CUT
					      : SL_L4_WHOLE);
		/* hop-by-hop's next header, once captured */
		CHECK_EQ(d.key.proto, len < 55 ? 0 : 6);
		CHECK_EQ(d.key.sport, len < 66 ? 0 : 44321);
		CHECK_EQ(d.key.dport, len < 66 ? 0 : 443);
		CHECK_EQ(d.tcp_flags, len < 76 ? 0 : 0x18);
		CHECK_EQ(d.l4_offset, len < 62 ? 54 : 62);
		CHECK_EQ(d.payload_offset, len < 94 ? len : 94);
		CHECK_EQ(d.payload_len, len < 94 ? 0 : len - 94);
		/* known from byte 12 (the data offset) on */
		CHECK_EQ(d.wire_payload_len, len < 76 ? 0 : 10);
	}
}

/* A transport header the frame ends in (a short snaplen; a tiny first
 * fragment). The ports come with their 4 bytes, the TCP flags and data
 * offset with byte 13; only an IP length that leaves no room for the
 * header is malformed. The payload on the wire is the IP length's. */
static void test_l4_cut(void)
{
	struct sl_decoded d;
	struct buf b;
	uint32_t ip, len;

	/* Ethernet / IPv4 / TCP 40000 -> 80, PSH+ACK, 5 bytes of data */
	build_v4_tcp(&b);
	for (len = 34; len < 54; len++) {
		CHECK_EQ(decode_n(&b, len, SL_LINK_EN10MB, &d), SL_DECODE_OK);
		check_v4_key(&d.key, 6);
		CHECK_EQ(d.l4_cut, len < 38   ? SL_L4_CUT_PORTS
				   : len < 48 ? SL_L4_CUT_FLAGS
					      : SL_L4_CUT);
		CHECK_EQ(d.key.sport, len < 38 ? 0 : 40000);
		CHECK_EQ(d.key.dport, len < 38 ? 0 : 80);
		CHECK_EQ(d.tcp_flags, len < 48 ? 0 : 0x18);
		CHECK_EQ(d.l4_offset, 34);
		CHECK_EQ(d.payload_offset, len);
		CHECK_EQ(d.payload_len, 0);
		CHECK_EQ(d.wire_payload_len, len < 48 ? 0 : 5);
		CHECK_EQ(d.ip_end, 14 + 45);
	}
	/* a data offset below 5 is wrong however little is captured */
	b.b[34 + 12] = 0x40;
	CHECK_EQ(decode_n(&b, 48, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_TCP_HLEN);
	CHECK_EQ(decode_n(&b, 47, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	/* an IP length that ends in the TCP header is malformed, cut or not */
	build_v4_tcp(&b);
	set16(&b, 16, 20 + 19);
	CHECK_EQ(decode_n(&b, 40, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_L4_SHORT);

	/* VLAN / IPv4 / TCP SYN cut at 64 bytes: the flags are in */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x8100);
	vlan_tag(&b, 100, 0x0800);
	ip = ipv4(&b, 6, 0, 12);
	tcp(&b, 40001, 80, 0x02, 0);
	ipv4_done(&b, ip);
	CHECK_EQ(decode_n(&b, 64, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.vlan, 100);
	CHECK_EQ(d.key.sport, 40001);
	CHECK_EQ(d.tcp_flags, 0x02);
	CHECK_EQ(d.l4_cut, SL_L4_CUT);
	CHECK_EQ(decode_n(&b, 54, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.sport, 40001);
	CHECK_EQ(d.l4_cut, SL_L4_CUT_FLAGS);

	/* UDP: ports with 4 bytes; the UDP length is not needed */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x0800);
	ip = ipv4(&b, 17, 0, 0);
	udp(&b, 5000, 53, 30);
	payload(&b, 30);
	ipv4_done(&b, ip);
	CHECK_EQ(decode_n(&b, 40, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.sport, 5000);
	CHECK_EQ(d.key.dport, 53);
	CHECK_EQ(d.l4_cut, SL_L4_CUT);
	CHECK_EQ(d.payload_len, 0);
	CHECK_EQ(decode_n(&b, 54, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.l4_cut, SL_L4_WHOLE);
	CHECK_EQ(d.payload_len, 12);
	CHECK_EQ(d.wire_payload_len, 30);
	set16(&b, 38, 8 + 20); /* a UDP length shorter than the IP's */
	CHECK_EQ(decode_n(&b, 54, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.payload_len, 12);
	CHECK_EQ(d.wire_payload_len, 20);

	/* a tiny IPv4 first fragment: 8 bytes of TCP, the rest in the next
	 * fragment; the same length without MF is malformed */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x0800);
	ip = ipv4(&b, 6, 0x2000, 0);
	tcp(&b, 45000, 443, 0x18, 0);
	b.n -= 12;
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.frag, SL_FRAG_FIRST);
	CHECK_EQ(d.key.sport, 45000);
	CHECK_EQ(d.key.dport, 443);
	CHECK_EQ(d.l4_cut, SL_L4_CUT_FLAGS);
	CHECK_EQ(d.tcp_flags, 0);
	set16(&b, ip + 6, 0);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_L4_SHORT);

	/* a first fragment that ends in the TCP options: not malformed */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x0800);
	ip = ipv4(&b, 6, 0x2000, 0);
	tcp(&b, 45000, 443, 0x02, 20);
	b.n -= 16;
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.tcp_flags, 0x02);
	CHECK_EQ(d.l4_cut, SL_L4_WHOLE);
	CHECK_EQ(d.payload_len, 0);
	CHECK_EQ(d.wire_payload_len, 0);
	set16(&b, ip + 6, 0);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_TCP_HLEN);

	/* a tiny IPv6 first fragment: 16 bytes of TCP, flags in */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x86dd);
	ip = ipv6(&b, 44);
	ext_frag(&b, 6, 0, 1, 5);
	tcp(&b, 45000, 443, 0x18, 0);
	b.n -= 4;
	ipv6_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 6);
	CHECK_EQ(d.frag, SL_FRAG_FIRST);
	CHECK_EQ(d.key.sport, 45000);
	CHECK_EQ(d.tcp_flags, 0x18);
	CHECK_EQ(d.l4_cut, SL_L4_CUT);
	CHECK_EQ(d.wire_payload_len, 0);

	/* IPv6: hop-by-hop, destination options, TCP, cut in the chain: no
	 * ports, the last next header read */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x86dd);
	ip = ipv6(&b, 0);
	ext_opts(&b, 60, 0);
	ext_opts(&b, 6, 0);
	tcp(&b, 40003, 443, 0x02, 0);
	ipv6_done(&b, ip);
	CHECK_EQ(decode_n(&b, 54, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 0);
	CHECK_EQ(d.l4_cut, SL_L4_CUT_EXT);
	CHECK_EQ(decode_n(&b, 55, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 60);
	CHECK_EQ(decode_n(&b, 64, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 6);
	CHECK_EQ(d.l4_cut, SL_L4_CUT_EXT);
	CHECK_EQ(d.key.sport, 0);
	CHECK_EQ(d.l4_offset, 62);
	CHECK_EQ(decode_n(&b, 74, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 6);
	CHECK_EQ(d.l4_cut, SL_L4_CUT_FLAGS);
	CHECK_EQ(d.key.sport, 40003);
	/* a fragment header cut: its next header, not a fragment */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x86dd);
	ip = ipv6(&b, 44);
	ext_frag(&b, 17, 0, 1, 9);
	udp(&b, 1, 2, 0);
	ipv6_done(&b, ip);
	CHECK_EQ(decode_n(&b, 58, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(d.frag, SL_FRAG_NONE);
	CHECK_EQ(d.l4_cut, SL_L4_CUT_EXT);

	/* IPv4 in IPv4, the inner TCP header cut: keyed inside */
	memset(&b, 0, sizeof(b));
	eth(&b, 0x0800);
	ip = ipv4(&b, 4, 0, 0);
	{
		uint32_t in = ipv4(&b, 6, 0, 0);

		tcp(&b, 40000, 80, 0x10, 0);
		ipv4_done(&b, in);
	}
	ipv4_done(&b, ip);
	CHECK_EQ(decode_n(&b, 54 + 6, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_IPIP);
	CHECK_EQ(d.key.sport, 40000);
	CHECK_EQ(d.l4_cut, SL_L4_CUT_FLAGS);
	CHECK_EQ(d.l4_offset, 54);
}

/* Random bytes under every link type: no crash, a sane status. */
static void test_fuzz(void)
{
	static const uint32_t links[] = {
	    SL_LINK_NULL,      SL_LINK_EN10MB, SL_LINK_RAW,  SL_LINK_LOOP,
	    SL_LINK_LINUX_SLL, SL_LINK_IPV4,   SL_LINK_IPV6, SL_LINK_LINUX_SLL2,
	};
	struct sl_decoded d;
	struct buf b;
	uint32_t seed = 12345, i, j, bad = 0;
	int ret;

	for (i = 0; i < 20000; i++) {
		memset(&b, 0, sizeof(b));
		b.n = 1 + i % 120;
		for (j = 0; j < b.n; j++) {
			seed = seed * 1103515245 + 12345;
			b.b[j] = (uint8_t)(seed >> 16);
		}
		/* steer some of them into IP */
		if (i % 3 == 0 && b.n > 15) {
			b.b[12] = i % 2 ? 0x86 : 0x08;
			b.b[13] = i % 2 ? 0xdd : 0x00;
			b.b[14] =
			    (uint8_t)((i % 2 ? 0x60 : 0x40) | (b.b[14] & 0x0f));
		}
		ret = decode(&b, links[i % 8], &d);
		if (ret < 0 || ret > 2 || d.malformed >= SL_MAL_COUNT ||
		    d.payload_offset + d.payload_len > b.n)
			bad++;
	}
	CHECK_EQ(bad, 0);
}

static void test_names(void)
{
	static const char *const want[] = {
	    "none",    "linktype", "l2_short", "ip_short", "ip_version",
	    "ip_hlen", "ip_len",   "ipv6_ext", "l4_short", "tcp_hlen",
	    "timestamp", "ip_overlong",
	};
	int i;

	CHECK_EQ(sizeof(want) / sizeof(want[0]), SL_MAL_COUNT);
	for (i = 0; i < SL_MAL_COUNT; i++)
		CHECK(strcmp(sl_malformed_name(i), want[i]) == 0);
	CHECK(strcmp(sl_malformed_name(-1), "unknown") == 0);
	CHECK(strcmp(sl_malformed_name(SL_MAL_COUNT), "unknown") == 0);
	CHECK(strcmp(sl_malformed_name(1000), "unknown") == 0);
}

/* ---- tunnels and link types --------------------------------------------- */

/* The inner packet every tunnel test carries: IPv4 TCP 10.0.0.1:1234 ->
 * 10.0.0.2:80 with 5 bytes of payload, or IPv6 UDP 53. */
static void inner_v4_tcp(struct buf *b)
{
	uint32_t ip = ipv4(b, 6, 0, 0);

	tcp(b, 1234, 80, 0x18, 0);
	payload(b, 5);
	ipv4_done(b, ip);
}

static void inner_v6_udp(struct buf *b)
{
	uint32_t ip = ipv6(b, 17);

	udp(b, 5353, 53, 4);
	payload(b, 4);
	ipv6_done(b, ip);
}

static void check_inner_v4(const struct sl_decoded *d)
{
	check_v4_key(&d->key, 6);
	CHECK_EQ(d->key.sport, 1234);
	CHECK_EQ(d->key.dport, 80);
	CHECK_EQ(d->tcp_flags, 0x18);
	CHECK_EQ(d->payload_len, 5);
}

/* An outer IPv4 header from 192.0.2.1 to 192.0.2.2. */
static uint32_t outer_v4(struct buf *b, unsigned int proto)
{
	uint32_t ip = ipv4(b, proto, 0, 0);

	b->b[ip + 12] = 192;
	b->b[ip + 13] = 0;
	b->b[ip + 14] = 2;
	b->b[ip + 15] = 1;
	b->b[ip + 19] = 2;
	b->b[ip + 16] = 192;
	b->b[ip + 17] = 0;
	b->b[ip + 18] = 2;
	return ip;
}

static void check_outer_v4(const struct sl_tunnel *t)
{
	static const uint8_t src[4] = {192, 0, 2, 1}, dst[4] = {192, 0, 2, 2};

	CHECK_EQ(t->ip_version, 4);
	CHECK(!memcmp(t->src, src, 4) && all_zero(t->src + 4, 12));
	CHECK(!memcmp(t->dst, dst, 4) && all_zero(t->dst + 4, 12));
}

static void test_l2_tunnels(void)
{
	struct sl_decoded d;
	struct buf b = {0};

	/* MPLS: two labels, then IPv4 by its nibble */
	eth(&b, 0x8847);
	put32(&b, (1000u << 12) | 64);
	put32(&b, (2000u << 12) | 0x100 | 64);
	inner_v4_tcp(&b);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_inner_v4(&d);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_MPLS);
	CHECK_EQ(d.tunnel.id, 1000);
	CHECK_EQ(d.tunnel.has_id, 1);
	CHECK_EQ(d.tunnel.ip_version, 0);
	CHECK_EQ(d.tunnel.depth, 1);
	/* the same with outer: MPLS is still walked, no tunnel recorded */
	CHECK_EQ(sl_decode_flags(b.b, b.n, SL_LINK_EN10MB, SL_DECODE_OUTER, &d),
		 SL_DECODE_OK);
	check_inner_v4(&d);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_NONE);
	/* a pseudowire control word cut short (found by fuzz_decode) */
	{
		static const uint8_t cut[9] = {0x02, 0x81, 0x01, 0x07, 0x49,
					       0x0a, 0x00, 0x00, 0xab};
		struct buf c = {0};

		memcpy(c.b, cut, sizeof(cut));
		c.n = sizeof(cut);
		CHECK_EQ(decode(&c, SL_LINK_PPP_HDLC, &d), SL_DECODE_MALFORMED);
		CHECK_EQ(d.malformed, SL_MAL_L2_SHORT);
	}
	/* a stack that never ends */
	b.n = 0;
	eth(&b, 0x8848);
	for (int i = 0; i < 9; i++)
		put32(&b, 5u << 12);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_NOT_IP);
	b.n = 18;
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_MALFORMED);
	CHECK_EQ(d.malformed, SL_MAL_L2_SHORT);

	/* PPPoE session behind a VLAN tag: the VLAN is the key's */
	b.n = 0;
	eth(&b, 0x8100);
	vlan_tag(&b, 42, 0x8864);
	put8(&b, 0x11);
	put8(&b, 0);
	put16(&b, 0x2a2a);
	put16(&b, 0); /* length: not checked */
	put16(&b, 0x0057);
	inner_v6_udp(&b);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(d.key.dport, 53);
	CHECK_EQ(d.key.vlan, 42);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_PPPOE);
	CHECK_EQ(d.tunnel.id, 0x2a2a);
	/* discovery, not session data */
	b.b[19] = 0x09;
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_NOT_IP);
}

static void test_ip_tunnels(void)
{
	struct sl_decoded d;
	struct buf b = {0};
	uint32_t ip, u;

	/* GRE with checksum, key and sequence, IPv6 inside */
	eth(&b, 0x0800);
	ip = outer_v4(&b, 47);
	put16(&b, 0x8000 | 0x2000 | 0x1000);
	put16(&b, 0x86dd);
	put32(&b, 0);	       /* checksum, reserved */
	put32(&b, 0xdeadbeef); /* key */
	put32(&b, 7);	       /* sequence */
	inner_v6_udp(&b);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(d.key.sport, 5353);
	CHECK_EQ(d.payload_len, 4);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_GRE);
	CHECK_EQ(d.tunnel.id, 0xdeadbeef);
	CHECK_EQ(d.ip_end, b.n); /* both IP headers end with the frame */
	CHECK_EQ(d.tunnel.has_id, 1);
	check_outer_v4(&d.tunnel);
	/* outer: the GRE packet itself */
	CHECK_EQ(sl_decode_flags(b.b, b.n, SL_LINK_EN10MB, SL_DECODE_OUTER, &d),
		 SL_DECODE_OK);
	CHECK_EQ(d.key.proto, 47);
	CHECK_EQ(d.key.ip_version, 4);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_NONE);

	/* VXLAN: inner Ethernet with a VLAN tag of its own; the outer VLAN
	 * stays the key's */
	b.n = 0;
	eth(&b, 0x8100);
	vlan_tag(&b, 7, 0x0800);
	ip = outer_v4(&b, 17);
	u = b.n;
	udp(&b, 49152, 4789, 0);
	put32(&b, 0x08000000);
	put32(&b, 0x123456u << 8);
	eth(&b, 0x8100);
	vlan_tag(&b, 99, 0x0800);
	inner_v4_tcp(&b);
	set16(&b, u + 4, b.n - u);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_inner_v4(&d);
	CHECK_EQ(d.key.vlan, 7);
	CHECK_EQ(d.key.vlan_inner, 0);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_VXLAN);
	CHECK_EQ(d.tunnel.id, 0x123456);
	check_outer_v4(&d.tunnel);
	/* ARP inside: the packet stays in the outer UDP flow */
	set16(&b, u + 8 + 8 + 12, 0x0806);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.proto, 17);
	CHECK_EQ(d.key.dport, 4789);
	CHECK_EQ(d.key.vlan, 7);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_NONE);
	CHECK_EQ(d.payload_len, b.n - u - 8);

	/* GTP-U with a sequence number and one extension header */
	b.n = 0;
	eth(&b, 0x0800);
	ip = outer_v4(&b, 17);
	u = b.n;
	udp(&b, 2152, 2152, 0);
	put8(&b, 0x30 | 0x04 | 0x02);
	put8(&b, 255);
	put16(&b, 0);
	put32(&b, 0xcafe0001);
	put16(&b, 1);	 /* sequence */
	put8(&b, 0);	 /* N-PDU */
	put8(&b, 0x85);	 /* next: PDU session container */
	put8(&b, 1);	 /* 4 bytes */
	put8(&b, 0x10);
	put8(&b, 0x09);
	put8(&b, 0);	 /* no further extension */
	inner_v4_tcp(&b);
	set16(&b, u + 4, b.n - u);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_inner_v4(&d);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_GTPU);
	CHECK_EQ(d.tunnel.id, 0xcafe0001);
	/* an echo request (not a G-PDU) is the UDP packet itself */
	b.b[u + 9] = 1;
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.dport, 2152);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_NONE);

	/* an inner IP length past the frame: ip_end says how far it claims */
	{
		struct buf o = {0};
		uint32_t oip;

		eth(&o, 0x0800);
		oip = outer_v4(&o, 4);
		inner_v4_tcp(&o);
		ipv4_done(&o, oip);
		set16(&o, oip + 20 + 2, 1000);
		CHECK_EQ(decode(&o, SL_LINK_EN10MB, &d), SL_DECODE_OK);
		CHECK_EQ(d.ip_end, oip + 20 + 1000);
		CHECK_EQ(d.tunnel.type, SL_TUNNEL_IPIP);
	}

	/* 6in4 */
	b.n = 0;
	eth(&b, 0x0800);
	ip = outer_v4(&b, 41);
	inner_v6_udp(&b);
	ipv4_done(&b, ip);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_IPIP);
	CHECK_EQ(d.tunnel.has_id, 0);
	check_outer_v4(&d.tunnel);
	/* an outer first fragment is not followed */
	b.b[ip + 6] = 0x20;
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	CHECK_EQ(d.key.proto, 41);
	CHECK_EQ(d.frag, SL_FRAG_FIRST);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_NONE);
}

/* Nesting stops at SL_TUNNEL_MAX_DEPTH; every cut inner header is read
 * within caplen (the exact-size copies of decode_n). */
static void test_tunnel_limits(void)
{
	struct sl_decoded d;
	struct buf b = {0};
	uint32_t ips[6], n;

	eth(&b, 0x0800);
	for (int i = 0; i < 6; i++)
		ips[i] = outer_v4(&b, i < 5 ? 4 : 6);
	tcp(&b, 1, 2, 0x02, 0);
	for (int i = 5; i >= 0; i--)
		ipv4_done(&b, ips[i]);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	/* four tunnels entered: the fifth IPv4 header is the key's, and it
	 * carries another IP-in-IP that is not followed */
	CHECK_EQ(d.tunnel.depth, SL_TUNNEL_MAX_DEPTH);
	CHECK_EQ(d.key.proto, 4);
	/* every length of a tunnelled frame decodes without reading past */
	b.n = 0;
	eth(&b, 0x8847);
	put32(&b, (16u << 12) | 0x100);
	n = outer_v4(&b, 47);
	put16(&b, 0x2000);
	put16(&b, 0x6558);
	put32(&b, 77);
	eth(&b, 0x0800);
	inner_v4_tcp(&b);
	ipv4_done(&b, n);
	CHECK_EQ(decode(&b, SL_LINK_EN10MB, &d), SL_DECODE_OK);
	check_inner_v4(&d);
	CHECK_EQ(d.tunnel.type, SL_TUNNEL_GRE);
	CHECK_EQ(d.tunnel.id, 77);
	CHECK_EQ(d.tunnel.depth, 2);
	for (uint32_t len = 0; len < b.n; len++) {
		int st = decode_n(&b, len, SL_LINK_EN10MB, &d);

		CHECK(st == SL_DECODE_OK || st == SL_DECODE_MALFORMED ||
		      st == SL_DECODE_NOT_IP);
	}
}

static void test_link_types(void)
{
	struct sl_decoded d;
	struct buf b = {0};

	/* PPP with HDLC-like framing, and with a compressed protocol */
	put8(&b, 0xff);
	put8(&b, 0x03);
	put16(&b, 0x0021);
	inner_v4_tcp(&b);
	CHECK_EQ(decode(&b, SL_LINK_PPP, &d), SL_DECODE_OK);
	check_inner_v4(&d);
	CHECK_EQ(decode(&b, SL_LINK_PPP_HDLC, &d), SL_DECODE_OK);
	check_inner_v4(&d);
	b.n = 0;
	put8(&b, 0x21);
	inner_v4_tcp(&b);
	CHECK_EQ(decode(&b, SL_LINK_PPP, &d), SL_DECODE_OK);
	check_inner_v4(&d);

	/* Cisco HDLC */
	b.n = 0;
	put8(&b, 0x0f);
	put8(&b, 0);
	put16(&b, 0x86dd);
	inner_v6_udp(&b);
	CHECK_EQ(decode(&b, SL_LINK_C_HDLC, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);
	CHECK_EQ(decode(&b, SL_LINK_PPP_HDLC, &d), SL_DECODE_OK);
	check_v6_key(&d.key, 17);

	/* radiotap, then an 802.11 QoS data frame with LLC/SNAP */
	b.n = 0;
	put8(&b, 0);
	put8(&b, 0);
	put8(&b, 8); /* length, little endian */
	put8(&b, 0);
	put32(&b, 0);
	put8(&b, 0x88); /* QoS data */
	put8(&b, 0x01); /* to DS */
	putz(&b, 22);
	put16(&b, 0); /* QoS control */
	put32(&b, 0xaaaa0300);
	put16(&b, 0);
	put16(&b, 0x0800);
	inner_v4_tcp(&b);
	CHECK_EQ(decode(&b, SL_LINK_IEEE802_11_RADIOTAP, &d), SL_DECODE_OK);
	check_inner_v4(&d);
	/* protected: not decoded */
	b.b[9] |= 0x40;
	CHECK_EQ(decode(&b, SL_LINK_IEEE802_11_RADIOTAP, &d), SL_DECODE_NOT_IP);
	b.b[9] &= (uint8_t)~0x40;
	/* the same frame behind PPI naming 802.11 */
	b.b[0] = 0;
	b.b[1] = 0;
	b.b[2] = 8;
	b.b[3] = 0;
	b.b[4] = 105;
	b.b[5] = b.b[6] = b.b[7] = 0;
	CHECK_EQ(decode(&b, SL_LINK_PPI, &d), SL_DECODE_OK);
	check_inner_v4(&d);
	/* and without either header */
	{
		struct buf w = {0};

		memcpy(w.b, b.b + 8, b.n - 8);
		w.n = b.n - 8;
		CHECK_EQ(decode(&w, SL_LINK_IEEE802_11, &d), SL_DECODE_OK);
		check_inner_v4(&d);
		for (uint32_t len = 0; len < w.n; len++)
			decode_n(&w, len, SL_LINK_IEEE802_11, &d);
	}
	for (uint32_t len = 0; len < b.n; len++)
		decode_n(&b, len, SL_LINK_PPI, &d);
}

int main(void)
{
	CHECK_EQ(sizeof(struct sl_key), 48);
	/* every link type the decoder handles, and no other */
	for (uint32_t lt = 0; lt < 300; lt++)
		CHECK_EQ(sl_linktype_supported(lt),
			 lt == SL_LINK_NULL || lt == SL_LINK_EN10MB ||
			     lt == SL_LINK_RAW || lt == SL_LINK_LOOP ||
			     lt == SL_LINK_LINUX_SLL || lt == SL_LINK_IPV4 ||
			     lt == SL_LINK_IPV6 || lt == SL_LINK_LINUX_SLL2 ||
			     lt == SL_LINK_PPP || lt == SL_LINK_PPP_HDLC ||
			     lt == SL_LINK_C_HDLC || lt == SL_LINK_IEEE802_11 ||
			     lt == SL_LINK_IEEE802_11_RADIOTAP ||
			     lt == SL_LINK_PPI);
	test_ether_ipv4_tcp();
	test_memset();
	test_ether_padding();
	test_vlan();
	test_not_ip();
	test_sll();
	test_raw();
	test_null_loop();
	test_ipv4_options();
	test_ipv4_frag();
	test_ipv6_ext();
	test_ipv6_jumbo();
	test_icmp();
	test_sctp_other();
	test_malformed();
	test_truncation();
	test_l4_cut();
	test_fuzz();
	test_names();
	test_l2_tunnels();
	test_ip_tunnels();
	test_tunnel_limits();
	test_link_types();
	return test_done();
}
