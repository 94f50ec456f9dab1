/* fuzz_pcapng.c - libFuzzer target for the pcapng reader: an input is a
 * whole file (sections, interfaces with their timestamp resolutions and
 * offsets, packet blocks), read from a buffer and from a file and run
 * through an engine (fuzz_capture.h says what must hold). Inputs that do
 * not start with a Section Header Block are fuzz_pcap's. */
#include "fuzz_capture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t shb[4] = {0x0a, 0x0d, 0x0d, 0x0a};

	if (size >= 4 && !memcmp(data, shb, 4))
		fuzz_capture(data, size);
	return 0;
}
