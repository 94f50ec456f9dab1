/* fuzz_v5.c - libFuzzer target: an input is one datagram, as a NetFlow v5
 * exporter would send it (any version decodes: mutations reach them all).
 * One decoder serves every input, as in a collector, so the sequence state
 * carries over. A record that breaks the decoder's promises traps. */
#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

static struct sl_flowmsg *m;
static uint64_t now_ns;

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t addr[4] = {192, 0, 2, 5};

	if (!m && sl_flowmsg_new(&m, NULL))
		return 0;
	if (size > 65535)
		return 0;
	now_ns += 1000000000ULL;
	check(
	    sl_flowmsg_decode(m, data, (uint32_t)size, addr, 4, 2055, now_ns));
	return 0;
}
