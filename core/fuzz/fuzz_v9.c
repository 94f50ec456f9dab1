/* fuzz_v9.c - libFuzzer target for NetFlow v9 (and whatever version the
 * mutations make). An input is a series of datagrams, each framed as
 * [control][length, 2 bytes][datagram]: bits 0-1 of control pick one of
 * four sources (two IPv4, one IPv6, the first IPv4 again as IPv4-mapped
 * IPv6), bits 2-4 advance the clock by that many seconds, bit 7 calls
 * sl_collector_msg_expire() first. A length past the input takes the rest.
 *
 * One decoder serves every input, so templates of one input are used by
 * data of later ones; small bounds (8 held sets for 5 s, templates for
 * 30 s, 2 exporters) bring the hold, expiry and refusal paths in reach. */
#include "fuzz.h"

static void feed(uint8_t ctl, const uint8_t *msg, uint32_t len)
{
	now_ns += (uint64_t)(ctl >> 2 & 7) * 1000000000ULL;
	if (ctl & 0x80)
		sl_collector_msg_expire(m, now_ns);
	check(sl_collector_msg_decode(m, msg, len, fuzz_src[ctl & 3],
				      fuzz_family(ctl), 2055, now_ns));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	if (!m && sl_collector_msg_new(&m, &fuzz_small_opts))
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
