/* json.c - flow and slice records as JSON lines. Done in C because the
 * default job writes one per flow: snprintf beats building a Lua table and
 * encoding it by about ten times, and keeps times to the microsecond. */
#include <inttypes.h>
#include <stdio.h>

#include "sluice.h"

/* Appends with snprintf semantics: pos keeps counting past len so the
 * caller learns the size needed. */
#define APPEND(buf, len, pos, ...)                                             \
	do {                                                                   \
		size_t _room = (pos) < (len) ? (len) - (pos) : 0;              \
		int _n = snprintf(_room ? (buf) + (pos) : NULL, _room,         \
				  __VA_ARGS__);                                \
		if (_n > 0)                                                    \
			(pos) += (size_t)_n;                                   \
	} while (0)

static size_t put_key(const struct sl_key *k, char *buf, size_t len, size_t pos)
{
	char src[64], dst[64], num[8];
	const char *proto = sl_proto_name(k->proto);

	if (!proto) {
		snprintf(num, sizeof(num), "%u", k->proto);
		proto = num;
	}
	sl_key_addr(k, 0, src, sizeof(src));
	sl_key_addr(k, 1, dst, sizeof(dst));
	APPEND(buf, len, pos,
	       "\"proto\":\"%s\",\"ip_version\":%u,\"src\":\"%s\",\"sport\":%u,"
	       "\"dst\":\"%s\",\"dport\":%u,\"vlan\":%u",
	       proto, k->ip_version, src, k->sport, dst, k->dport, k->vlan);
	if (k->vlan_inner)
		APPEND(buf, len, pos, ",\"vlan_inner\":%u", k->vlan_inner);
	return pos;
}

/* Epoch seconds with microseconds, as a JSON number. */
#define TS_FMT	   "%" PRIu64 ".%06" PRIu64
#define TS_ARG(ns) (ns) / 1000000000u, (ns) % 1000000000u / 1000u

int sl_flow_rec_json(const struct sl_flow_rec *r, char *buf, size_t len)
{
	uint64_t last = r->fwd.last_ns;
	size_t pos = 0;
	char hist[sizeof(r->hist) + 1];
	size_t i;

	if (r->rev.pkts && r->rev.last_ns > last)
		last = r->rev.last_ns;
	for (i = 0; i < sizeof(r->hist) && r->hist[i]; i++)
		hist[i] = r->hist[i];
	hist[i] = 0;
	APPEND(buf, len, pos, "{\"type\":\"flow\",\"id\":%" PRIu64 ",", r->fid);
	pos = put_key(&r->key, buf, len, pos);
	APPEND(buf, len, pos,
	       ",\"first\":" TS_FMT ",\"last\":" TS_FMT ",\"pkts_fwd\":%" PRIu64
	       ",\"pkts_rev\":%" PRIu64 ",\"bytes_fwd\":%" PRIu64
	       ",\"bytes_rev\":%" PRIu64
	       ",\"tcp_flags_fwd\":%u,\"tcp_flags_rev\":%u,\"history\":\"%s\","
	       "\"state\":\"%s\"",
	       TS_ARG(r->fwd.first_ns), TS_ARG(last), r->fwd.pkts, r->rev.pkts,
	       r->fwd.bytes, r->rev.bytes, r->fwd.tcp_flags, r->rev.tcp_flags,
	       hist, sl_tcp_state_name(r->state_code));
	/* live flows (a start event) have no end reason yet */
	if (r->reason_code)
		APPEND(buf, len, pos, ",\"end_reason\":\"%s\"",
		       sl_end_reason_name(r->reason_code));
	APPEND(buf, len, pos, "}");
	return (int)pos;
}

int sl_slice_rec_json(const struct sl_slice_rec *r, char *buf, size_t len)
{
	size_t pos = 0;

	APPEND(buf, len, pos, "{\"type\":\"slice\",\"flow_id\":%" PRIu64 ",",
	       r->fid);
	pos = put_key(&r->key, buf, len, pos);
	APPEND(buf, len, pos,
	       ",\"start\":" TS_FMT ",\"end\":" TS_FMT ",\"pkts_fwd\":%" PRIu64
	       ",\"pkts_rev\":%" PRIu64 ",\"bytes_fwd\":%" PRIu64
	       ",\"bytes_rev\":%" PRIu64 ",\"total_pkts_fwd\":%" PRIu64
	       ",\"total_pkts_rev\":%" PRIu64 ",\"total_bytes_fwd\":%" PRIu64
	       ",\"total_bytes_rev\":%" PRIu64
	       ",\"tcp_flags_fwd\":%u,\"tcp_flags_rev\":%u",
	       TS_ARG(r->start_ns), TS_ARG(r->end_ns), r->delta_fwd.pkts,
	       r->delta_rev.pkts, r->delta_fwd.bytes, r->delta_rev.bytes,
	       r->total_fwd.pkts, r->total_rev.pkts, r->total_fwd.bytes,
	       r->total_rev.bytes, r->tcp_flags_fwd, r->tcp_flags_rev);
	if (r->reason_code)
		APPEND(buf, len, pos, ",\"end_reason\":\"%s\"",
		       sl_end_reason_name(r->reason_code));
	APPEND(buf, len, pos, "}");
	return (int)pos;
}
