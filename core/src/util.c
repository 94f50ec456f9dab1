/* util.c - error texts, names and the version string. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sluice.h"

/* The header's copies of system constants (enum sl_sys) are right. */
_Static_assert((int)SL_EINTR == (int)EINTR, "SL_EINTR");
_Static_assert((int)SL_ENOENT == (int)ENOENT, "SL_ENOENT");
_Static_assert((int)SL_ESRCH == (int)ESRCH, "SL_ESRCH");
_Static_assert((int)SL_EAGAIN == (int)EAGAIN, "SL_EAGAIN");
_Static_assert((int)SL_ENOMEM == (int)ENOMEM, "SL_ENOMEM");
_Static_assert((int)SL_EISDIR == (int)EISDIR, "SL_EISDIR");
_Static_assert((int)SL_EINVAL == (int)EINVAL, "SL_EINVAL");
_Static_assert((int)SL_EFBIG == (int)EFBIG, "SL_EFBIG");
_Static_assert((int)SL_EPIPE == (int)EPIPE, "SL_EPIPE");
_Static_assert((int)SL_EMSGSIZE == (int)EMSGSIZE, "SL_EMSGSIZE");
_Static_assert((int)SL_ENOTSUP == (int)ENOTSUP, "SL_ENOTSUP");
_Static_assert((int)SL_ENOBUFS == (int)ENOBUFS, "SL_ENOBUFS");
_Static_assert((int)SL_EAFNOSUPPORT == (int)EAFNOSUPPORT, "SL_EAFNOSUPPORT");
_Static_assert((int)SL_EINPROGRESS == (int)EINPROGRESS, "SL_EINPROGRESS");
_Static_assert((int)SL_O_WRONLY == (int)O_WRONLY, "SL_O_WRONLY");
_Static_assert((int)SL_O_CREAT == (int)O_CREAT, "SL_O_CREAT");
_Static_assert((int)SL_O_TRUNC == (int)O_TRUNC, "SL_O_TRUNC");
_Static_assert((int)SL_O_APPEND == (int)O_APPEND, "SL_O_APPEND");
_Static_assert((int)SL_O_DIRECTORY == (int)O_DIRECTORY, "SL_O_DIRECTORY");
_Static_assert((int)SL_O_NOFOLLOW == (int)O_NOFOLLOW, "SL_O_NOFOLLOW");
_Static_assert((int)SL_O_EXCL == (int)O_EXCL, "SL_O_EXCL");
_Static_assert((int)SL_O_CLOEXEC == (int)O_CLOEXEC, "SL_O_CLOEXEC");
_Static_assert((int)SL_AF_UNIX == (int)AF_UNIX, "SL_AF_UNIX");
_Static_assert((int)SL_AF_INET == (int)AF_INET, "SL_AF_INET");
_Static_assert((int)SL_AF_INET6 == (int)AF_INET6, "SL_AF_INET6");
_Static_assert((int)SL_SOCK_STREAM == (int)SOCK_STREAM, "SL_SOCK_STREAM");
_Static_assert((int)SL_SOCK_DGRAM == (int)SOCK_DGRAM, "SL_SOCK_DGRAM");
_Static_assert((int)SL_SOCK_NONBLOCK == (int)SOCK_NONBLOCK, "SL_SOCK_NONBLOCK");
_Static_assert((int)SL_SOCK_CLOEXEC == (int)SOCK_CLOEXEC, "SL_SOCK_CLOEXEC");
_Static_assert((int)SL_SOL_SOCKET == (int)SOL_SOCKET, "SL_SOL_SOCKET");
_Static_assert((int)SL_SO_ERROR == (int)SO_ERROR, "SL_SO_ERROR");
_Static_assert((int)SL_SO_REUSEADDR == (int)SO_REUSEADDR, "SL_SO_REUSEADDR");
_Static_assert((int)SL_MSG_DONTWAIT == (int)MSG_DONTWAIT, "SL_MSG_DONTWAIT");
_Static_assert((int)SL_MSG_NOSIGNAL == (int)MSG_NOSIGNAL, "SL_MSG_NOSIGNAL");
_Static_assert((int)SL_CLOCK_REALTIME == (int)CLOCK_REALTIME, "SL_CLOCK_REALTIME");
_Static_assert((int)SL_CLOCK_MONOTONIC == (int)CLOCK_MONOTONIC, "SL_CLOCK_MONOTONIC");
_Static_assert((int)SL_RUSAGE_SELF == (int)RUSAGE_SELF, "SL_RUSAGE_SELF");
_Static_assert((int)SL_SIGINT == (int)SIGINT, "SL_SIGINT");
_Static_assert((int)SL_SIGTERM == (int)SIGTERM, "SL_SIGTERM");
_Static_assert((int)SL_SIGALRM == (int)SIGALRM, "SL_SIGALRM");
_Static_assert((int)SL_SIG_BLOCK == (int)SIG_BLOCK, "SL_SIG_BLOCK");
_Static_assert((int)SL_SIG_UNBLOCK == (int)SIG_UNBLOCK, "SL_SIG_UNBLOCK");
_Static_assert((int)SL_WNOHANG == (int)WNOHANG, "SL_WNOHANG");
_Static_assert((int)SL_PR_SET_PDEATHSIG == (int)PR_SET_PDEATHSIG, "SL_PR_SET_PDEATHSIG");
_Static_assert((int)SL_PR_SET_NO_NEW_PRIVS == (int)PR_SET_NO_NEW_PRIVS,
	       "SL_PR_SET_NO_NEW_PRIVS");
_Static_assert((int)SL_W_OK == (int)W_OK, "SL_W_OK");

uint32_t sl_abi_version(void)
{
	return SL_ABI_VERSION;
}

#define SL_VERSION "0.1.0"

const char *sl_version(void)
{
	return SL_VERSION;
}

/* The switch is over the enum, without a default: -Wswitch (an error
 * with -Werror) names any code of enum sl_error that has no text. */
static const char *sl_error_text(enum sl_error code)
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
	case SL_E_CONFLICT:
		return "update keys belong to different flows";
	case SL_E_SHRUNK:
		return "file shrank while it was read";
	case SL_E_ZTRUNC:
		return "compressed data ends early";
	case SL_E_ZCORRUPT:
		return "compressed data is corrupt";
	case SL_E_LINKMIX:
		return "packet of another link type than the file's";
	case SL_E_OPTION:
		return "option not valid";
	}
	return NULL;
}

const char *sl_strerror(int code)
{
	const char *text;

	if (code >= 0)
		return "success";
	if (code <= SL_E_FORMAT) {
		text = sl_error_text((enum sl_error)code);
		return text ? text : "unknown error";
	}
	return strerror(-code);
}

const char *sl_end_reason_name(int reason)
{
	static const char *const names[SL_END_COUNT] = {
	    [SL_END_NONE] = "none",	    [SL_END_FIN] = "fin",
	    [SL_END_RST] = "rst",	    [SL_END_IDLE] = "idle",
	    [SL_END_ACTIVE] = "active",	    [SL_END_EOF] = "eof",
	    [SL_END_SHUTDOWN] = "shutdown",
	    [SL_END_TRIMMED] = "trimmed",   [SL_END_REUSED] = "reused",
	};

	if (reason < 0 || reason >= SL_END_COUNT)
		return "unknown";
	return names[reason];
}

const char *sl_tunnel_name(int type)
{
	static const char *const names[SL_TUNNEL_COUNT] = {
	    [SL_TUNNEL_NONE] = "none",	   [SL_TUNNEL_MPLS] = "mpls",
	    [SL_TUNNEL_PPPOE] = "pppoe",   [SL_TUNNEL_GRE] = "gre",
	    [SL_TUNNEL_ERSPAN] = "erspan", [SL_TUNNEL_IPIP] = "ipip",
	    [SL_TUNNEL_VXLAN] = "vxlan",   [SL_TUNNEL_GENEVE] = "geneve",
	    [SL_TUNNEL_GTPU] = "gtpu",	   [SL_TUNNEL_CAPWAP] = "capwap",
	};

	if (type < 0 || type >= SL_TUNNEL_COUNT)
		return "unknown";
	return names[type];
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

int sl_path_kind(const char *path)
{
	struct stat st;

	if (!path)
		return -EINVAL;
	if (stat(path, &st))
		return errno == ENOENT ? 0 : -errno;
	if (S_ISREG(st.st_mode))
		return 1;
	return S_ISDIR(st.st_mode) ? -EISDIR : -ENOTSUP;
}
