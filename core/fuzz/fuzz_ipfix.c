/* fuzz_ipfix.c - libFuzzer target for IPFIX. An input is [control] then a
 * stream of messages, split where each header's length says, as on a TCP
 * connection (a length below 16 or past the input takes the rest). The
 * control byte picks the source of the first message (bits 0-1, as in
 * fuzz_v9), how sources rotate between messages (bits 4-5), the seconds
 * the clock advances per message (bits 2-3), and bit 7 calls
 * sl_flowmsg_expire() before the stream.
 *
 * One decoder serves every input, so templates of one input are used by
 * data of later ones; small bounds (8 held sets for 5 s, templates for
 * 30 s, 2 exporters) bring the hold, expiry and refusal paths in reach. */
#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

#define IPFIX_HDR_LEN 16

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t *const addr[4] = {src4a, src4b, src6, mapped};
	struct sl_flowmsg_opts o = {.template_timeout_ns = 30000000000ULL,
				    .hold_ns = 5000000000ULL,
				    .hold_max = 8,
				    .max_exporters = 2};
	unsigned src, step, rot;
	size_t off = 1;

	if (!m && sl_flowmsg_new(&m, &o))
		return 0;
	if (!size)
		return 0;
	src = data[0] & 3;
	step = data[0] >> 2 & 3;
	rot = data[0] >> 4 & 3;
	if (data[0] & 0x80)
		sl_flowmsg_expire(m, now_ns);
	while (off < size) {
		size_t len = size - off;

		if (len >= IPFIX_HDR_LEN) {
			size_t hl = (size_t)data[off + 2] << 8 | data[off + 3];

			if (hl >= IPFIX_HDR_LEN && hl <= len)
				len = hl;
		}
		now_ns += step * 1000000000ULL;
		check(sl_flowmsg_decode(m, data + off, (uint32_t)len, addr[src],
					src >= 2 ? 6 : 4, 4739, now_ns));
		src = (src + rot) & 3;
		off += len;
	}
	return 0;
}
