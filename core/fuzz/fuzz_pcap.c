/* fuzz_pcap.c - libFuzzer target for the classic pcap reader (micro- and
 * nanosecond, both byte orders): an input is a whole file, read from a
 * buffer and from a file and run through an engine (fuzz_capture.h says
 * what must hold). Inputs of another format are fuzz_pcapng's. */
#include "fuzz_capture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t magic;

	if (size < 4)
		return 0;
	memcpy(&magic, data, sizeof(magic));
	switch (magic) {
	case 0xa1b2c3d4: /* microseconds */
	case 0xd4c3b2a1:
	case 0xa1b23c4d: /* nanoseconds */
	case 0x4d3cb2a1:
		fuzz_capture(data, size);
	}
	return 0;
}
