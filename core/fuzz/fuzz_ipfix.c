/* fuzz_ipfix.c - libFuzzer target for IPFIX. An input is [control] then a
 * stream of messages, split where each header's length says, as on a TCP
 * connection (a length below 16 or past the input takes the rest). The
 * control byte picks the source of the first message (bits 0-1, as in
 * fuzz_v9), how sources rotate between messages (bits 4-5), the seconds
 * the clock advances per message (bits 2-3), and bit 7 calls
 * sl_collector_msg_expire() before the stream.
 *
 * One decoder serves every input, so templates of one input are used by
 * data of later ones; small bounds (8 held sets for 5 s, templates for
 * 30 s, 2 exporters) bring the hold, expiry and refusal paths in reach. */
#include "fuzz.h"

#define IPFIX_HDR_LEN 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned src, step, rot;
	size_t off = 1;

	if (!m && sl_collector_msg_new(&m, &fuzz_small_opts))
		return 0;
	if (!size)
		return 0;
	src = data[0] & 3;
	step = data[0] >> 2 & 3;
	rot = data[0] >> 4 & 3;
	if (data[0] & 0x80)
		sl_collector_msg_expire(m, now_ns);
	while (off < size) {
		size_t len = size - off;

		if (len >= IPFIX_HDR_LEN) {
			size_t hl = (size_t)data[off + 2] << 8 | data[off + 3];

			if (hl >= IPFIX_HDR_LEN && hl <= len)
				len = hl;
		}
		now_ns += step * 1000000000ULL;
		check(sl_collector_msg_decode(m, data + off, (uint32_t)len,
					      fuzz_src[src], fuzz_family(src),
					      4739, now_ns));
		src = (src + rot) & 3;
		off += len;
	}
	return 0;
}
