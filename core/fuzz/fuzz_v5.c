/* fuzz_v5.c - libFuzzer target: an input is one datagram, as a NetFlow v5
 * exporter would send it (any version decodes: mutations reach them all).
 * One decoder serves every input, as in a collector, so the sequence state
 * carries over. A record that breaks the decoder's promises traps. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!m && sl_collector_msg_new(&m, NULL))
		return 0;
	if (size > 65535)
		return 0;
	now_ns += 1000000000ULL;
	check(sl_collector_msg_decode(m, data, (uint32_t)size, src4a, 4, 2055,
				      now_ns));
	return 0;
}
