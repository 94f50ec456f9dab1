/* util.c - error texts, names and the version string. */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "sluice.h"

#define SL_VERSION "0.1.0"

const char *sl_version(void)
{
	return SL_VERSION;
}

const char *sl_strerror(int code)
{
	switch (code) {
	case SL_E_FORMAT:
		return "not a pcap/pcapng file or corrupt record";
	case SL_E_TRUNCATED:
		return "file truncated inside a record";
	case SL_E_LINKTYPE:
		return "unsupported link type";
	case SL_E_POOL:
		return "flow pool exhausted";
	case SL_E_STATE:
		return "call not valid in this engine state";
	}
	if (code < 0 && code > -4096)
		return strerror(-code);
	return code >= 0 ? "success" : "unknown error";
}

const char *sl_end_reason_name(int reason)
{
	static const char *const names[SL_END_COUNT] = {
	    [SL_END_NONE] = "none",	    [SL_END_FIN] = "fin",
	    [SL_END_RST] = "rst",	    [SL_END_IDLE] = "idle",
	    [SL_END_ACTIVE] = "active",	    [SL_END_EOF] = "eof",
	    [SL_END_SHUTDOWN] = "shutdown",
	    [SL_END_TRIMMED] = "trimmed",
	};

	if (reason < 0 || reason >= SL_END_COUNT)
		return "unknown";
	return names[reason];
}

int sl_key_addr(const struct sl_key *k, int which, char *buf, size_t len)
{
	const uint8_t *a = which ? k->dst : k->src;
	int af = k->ip_version == 6 ? AF_INET6 : AF_INET;

	if (!inet_ntop(af, a, buf, (socklen_t)len))
		return -errno;
	return (int)strlen(buf);
}

const char *sl_tcp_state_name(int state)
{
	static const char *const names[] = {
	    [SL_TCP_NONE] = "none",
	    [SL_TCP_SYN_SENT] = "syn_sent",
	    [SL_TCP_SYN_RECEIVED] = "syn_received",
	    [SL_TCP_ESTABLISHED] = "established",
	    [SL_TCP_FIN_WAIT] = "fin_wait",
	    [SL_TCP_CLOSING] = "closing",
	    [SL_TCP_CLOSED] = "closed",
	    [SL_TCP_RESET] = "reset",
	    [SL_TCP_MIDSTREAM] = "midstream",
	};

	if (state < 0 || state >= (int)(sizeof(names) / sizeof(names[0])))
		return "unknown";
	return names[state];
}

const char *sl_proto_name(int proto)
{
	switch (proto) {
	case 1:
		return "icmp";
	case 2:
		return "igmp";
	case 6:
		return "tcp";
	case 17:
		return "udp";
	case 47:
		return "gre";
	case 50:
		return "esp";
	case 51:
		return "ah";
	case 58:
		return "icmp6";
	case 132:
		return "sctp";
	}
	return NULL;
}
