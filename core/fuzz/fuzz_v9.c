/* fuzz_v9.c - libFuzzer target for NetFlow v9 (and whatever version the
 * mutations make). An input is a series of datagrams, each framed as
 * [control][length, 2 bytes][datagram]: bits 0-1 of control pick one of
 * four sources (two IPv4, one IPv6, the first IPv4 again as IPv4-mapped
 * IPv6), bits 2-4 advance the clock by that many seconds, bit 7 calls
 * sl_flowmsg_expire() first. A length past the input takes the rest.
 *
 * One decoder serves every input, so templates of one input are used by
 * data of later ones; small bounds (8 held sets for 5 s, templates for
 * 30 s, 2 exporters) bring the hold, expiry and refusal paths in reach. */
#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

static struct sl_flowmsg *m;
static uint64_t now_ns;

static const uint8_t src4a[4] = {192, 0, 2, 1};
static const uint8_t src4b[4] = {192, 0, 2, 2};
static const uint8_t src6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
static const uint8_t mapped[16] = {[10] = 0xff, [11] = 0xff, 192, 0, 2, 1};

static void check(int n)
{
	const struct sl_coll_rec *r = sl_flowmsg_records(m);

	if (n < 0)
		__builtin_trap();
	for (int i = 0; i < n; i++) {
		if (r[i].key.ip_version != 4 && r[i].key.ip_version != 6)
			__builtin_trap();
		if (!r[i].exporter || r[i].exporter >= sl_flowmsg_exporters(m))
			__builtin_trap();
		if (r[i].version != 5 && r[i].version != 9 &&
		    r[i].version != 10)
			__builtin_trap();
	}
}

static void feed(uint8_t ctl, const uint8_t *msg, uint32_t len)
{
	static const uint8_t *const addr[4] = {src4a, src4b, src6, mapped};
	int family = (ctl & 3) >= 2 ? 6 : 4;

	now_ns += (uint64_t)(ctl >> 2 & 7) * 1000000000ULL;
	if (ctl & 0x80)
		sl_flowmsg_expire(m, now_ns);
	check(sl_flowmsg_decode(m, msg, len, addr[ctl & 3], family, 2055,
				now_ns));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sl_flowmsg_opts o = {.template_timeout_ns = 30000000000ULL,
				    .hold_ns = 5000000000ULL,
				    .hold_max = 8,
				    .max_exporters = 2};
	size_t off = 0;

	if (!m && sl_flowmsg_new(&m, &o))
		return 0;
	while (size - off >= 3) {
		uint8_t ctl = data[off];
		size_t len = (size_t)data[off + 1] << 8 | data[off + 2];

		off += 3;
		if (len > size - off)
			len = size - off;
		feed(ctl, data + off, (uint32_t)len);
		off += len;
	}
	return 0;
}
