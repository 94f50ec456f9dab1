/* sluice.h - the public C ABI of libsluice (loaded by Lua as sluice_core.so).
 *
 * This header is the single source of the LuaJIT FFI declarations: the
 * Makefile strips preprocessor lines and SL_API markers and writes the rest
 * to lua/sluice/core_h.lua. So: plain C declarations only, constants as
 * enums, no macros inside declarations, no bitfields.
 *
 * Conventions: functions return >= 0 on success or a negative errno-style
 * code (sl_strerror() gives the text). Times are nanoseconds since the Unix
 * epoch.
 *
 * What the engine hands out does not move while it is read: the output of
 * a step (events, packets, slice records) stays valid and unchanged until
 * the next sl_engine_step(); events caused between steps (sl_engine_update,
 * and the trims it may cause) are kept apart and handed out by
 * sl_engine_late(), valid until the next sl_engine_late() or step. Calls
 * made between steps never reallocate either. sl_output.generation counts
 * these hand-overs: a pointer taken at one generation is not valid at
 * another. A live flow's record (sl_engine_flow, sl_engine_flow_find) is
 * valid while that flow lives.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stddef.h>
#include <stdint.h>

#ifndef SL_API
#define SL_API __attribute__((visibility("default")))
#endif

/* The ABI of this header. sluice.core compares it with sl_abi_version() of
 * the library it loads, so a stale build fails with one clear line. Bump it
 * whenever a declaration here changes. */
enum { SL_ABI_VERSION = 23 };
SL_API uint32_t sl_abi_version(void);

/* System constants the Lua side needs (Linux values; the core checks each
 * against the system headers at compile time, in util.c), so that no
 * number with a C meaning is written in Lua. */
enum sl_sys {
	SL_EINTR = 4,
	SL_ENOENT = 2,
	SL_ESRCH = 3,
	SL_EAGAIN = 11,
	SL_ENOMEM = 12,
	SL_EISDIR = 21,
	SL_EINVAL = 22,
	SL_EFBIG = 27,
	SL_EPIPE = 32,
	SL_EMSGSIZE = 90,
	SL_ENOTSUP = 95,
	SL_EAFNOSUPPORT = 97,
	SL_ENOBUFS = 105,
	SL_EINPROGRESS = 115,
	SL_O_WRONLY = 1,
	SL_O_CREAT = 64,
	SL_O_EXCL = 128,
	SL_O_TRUNC = 512,
	SL_O_APPEND = 1024,
	SL_O_DIRECTORY = 65536,
	SL_O_NOFOLLOW = 131072,
	SL_O_CLOEXEC = 524288,
	SL_AF_UNIX = 1,
	SL_AF_INET = 2,
	SL_AF_INET6 = 10,
	SL_SOCK_STREAM = 1,
	SL_SOCK_DGRAM = 2,
	SL_SOCK_NONBLOCK = 2048,
	SL_SOCK_CLOEXEC = 524288,
	SL_SOL_SOCKET = 1,
	SL_SO_ERROR = 4,
	SL_SO_REUSEADDR = 2,
	SL_MSG_DONTWAIT = 64,
	SL_MSG_NOSIGNAL = 16384,
	SL_CLOCK_REALTIME = 0,
	SL_CLOCK_MONOTONIC = 1,
	SL_RUSAGE_SELF = 0,
	SL_SIGHUP = 1,
	SL_SIGINT = 2,
	SL_SIGALRM = 14,
	SL_SIGTERM = 15,
	SL_SIG_BLOCK = 0,
	SL_SIG_UNBLOCK = 1,
	SL_WNOHANG = 1,
	SL_PR_SET_PDEATHSIG = 1,
	SL_PR_SET_NO_NEW_PRIVS = 38,
	SL_W_OK = 2,
};

/* Error codes beyond errno's range. */
enum sl_error {
	SL_E_FORMAT = -1001, /* not a pcap/pcapng file, or a corrupt record */
	SL_E_TRUNCATED = -1002, /* the file ends inside a record */
	SL_E_LINKTYPE = -1003,	/* link type not supported */
	SL_E_POOL = -1004,	/* flow pool exhausted */
	SL_E_STATE = -1005,	/* call not valid in the engine's state */
	SL_E_CONFLICT = -1006,	/* update keys belong to different flows */
	SL_E_SHRUNK = -1007,	/* the file shrank while it was read */
	SL_E_ZTRUNC = -1008,	/* compressed input ends inside a stream */
	SL_E_ZCORRUPT = -1009,	/* compressed input is corrupt */
	SL_E_LINKMIX = -1010,	/* packet of another link type than the file */
	SL_E_OPTION = -1011,	/* an option's value is not valid (a live
				   source's note says which) */
	/* The last (most negative) code: sluice's own codes run from -1001
	 * down to SL_E_LAST. A new code goes below it and moves SL_E_LAST. */
	SL_E_LAST = SL_E_OPTION,
};

/* Link types as written in pcap/pcapng files (LINKTYPE_*). */
enum sl_linktype {
	SL_LINK_NULL = 0,
	SL_LINK_EN10MB = 1,
	SL_LINK_PPP = 9,
	SL_LINK_PPP_HDLC = 50,
	SL_LINK_RAW = 101,
	SL_LINK_C_HDLC = 104,
	SL_LINK_IEEE802_11 = 105,
	SL_LINK_LOOP = 108,
	SL_LINK_IEEE802_11_RADIOTAP = 127,
	SL_LINK_PPI = 192,
	SL_LINK_LINUX_SLL = 113,
	SL_LINK_IPV4 = 228,
	SL_LINK_IPV6 = 229,
	SL_LINK_LINUX_SLL2 = 276,
};

/* ---- packets ---------------------------------------------------------- */

enum { SL_BATCH_MAX = 256 };

/* ts_ns is UINT64_MAX when the capture's timestamp has no value in
 * nanoseconds since the epoch that fits in 64 bits (before 1970 once its
 * interface's offset is applied, or past 2554): the engine counts such a
 * packet as malformed (SL_MAL_TIMESTAMP) and skips it. */
struct sl_packet {
	const uint8_t *data;
	uint64_t ts_ns;
	uint32_t caplen;   /* bytes present at data */
	uint32_t wirelen;  /* length on the wire */
	uint32_t linktype; /* enum sl_linktype (pcapng: per interface) */
	uint32_t ifindex;
};

struct sl_packet_batch {
	uint32_t count;
	uint32_t pad;
	struct sl_packet pkt[SL_BATCH_MAX];
};

/* ---- decode ----------------------------------------------------------- */

/* The fields a flow is keyed on. IPv4 addresses use the first 4 bytes of
 * the 16; every unused byte, including pad, is zero, so keys are hashed and
 * compared as 48 raw bytes. */
struct sl_key {
	uint8_t src[16];
	uint8_t dst[16];
	uint16_t sport; /* ICMP echo: both ports carry the echo identifier */
	uint16_t dport;
	uint16_t vlan;	     /* outer 802.1Q/802.1ad id, 0 if untagged */
	uint16_t vlan_inner; /* inner id of a double tag, 0 if none */
	uint8_t proto;	     /* IP protocol number */
	uint8_t ip_version;  /* 4 or 6 */
	uint8_t pad[6];
};

/* Tunnels the decoder follows to the innermost IP packet (at most
 * SL_TUNNEL_MAX_DEPTH nested; a deeper one is keyed by the IP packet that
 * carries it). */
enum sl_tunnel_type {
	SL_TUNNEL_NONE = 0,
	SL_TUNNEL_MPLS = 1,   /* id: the top (outermost) label */
	SL_TUNNEL_PPPOE = 2,  /* id: the session */
	SL_TUNNEL_GRE = 3,    /* id: the key (has_id: the K bit); v1: call id */
	SL_TUNNEL_ERSPAN = 4, /* id: the session */
	SL_TUNNEL_IPIP = 5,   /* IPv4/IPv6 in IPv4/IPv6; no id */
	SL_TUNNEL_VXLAN = 6,  /* id: the VNI */
	SL_TUNNEL_GENEVE = 7, /* id: the VNI */
	SL_TUNNEL_GTPU = 8,   /* id: the TEID */
	SL_TUNNEL_CAPWAP = 9, /* no id */
	SL_TUNNEL_COUNT,
};

enum { SL_TUNNEL_MAX_DEPTH = 4 };

/* The innermost tunnel a packet came in. */
struct sl_tunnel {
	uint8_t src[16]; /* the IP header that carries it (IPv4: first 4) */
	uint8_t dst[16];
	uint32_t id;
	uint8_t type;	    /* enum sl_tunnel_type */
	uint8_t ip_version; /* of src and dst; 0: none (MPLS, PPPoE) */
	uint8_t has_id;
	uint8_t depth; /* tunnels passed to reach the innermost IP packet */
};

enum sl_decode_status {
	SL_DECODE_OK = 0,	 /* an IP packet: the key is filled */
	SL_DECODE_NOT_IP = 1,	 /* ARP, LLDP, ...: not counted as malformed */
	SL_DECODE_MALFORMED = 2, /* reason in sl_decoded.malformed */
};

enum sl_malformed {
	SL_MAL_NONE = 0,
	SL_MAL_LINKTYPE,   /* link type not supported */
	SL_MAL_L2_SHORT,   /* link-layer header cut short */
	SL_MAL_IP_SHORT,   /* IP header cut short */
	SL_MAL_IP_VERSION, /* version nibble disagrees with ethertype */
	SL_MAL_IP_HLEN,	   /* IPv4 header length below 20 or past the data */
	SL_MAL_IP_LEN,	   /* IP total/payload length inconsistent */
	SL_MAL_IPV6_EXT,   /* IPv6 extension header chain cut short/too long */
	SL_MAL_L4_SHORT,   /* the IP length leaves no room for the TCP/UDP/
			      ICMP/SCTP header, or a frame ended in it on
			      the wire (one cut by the capture length is
			      kept: sl_decoded.l4_cut) */
	SL_MAL_TCP_HLEN,   /* TCP data offset below 5 */
	SL_MAL_TIMESTAMP,  /* time unusable: see SL_CLOCK_MAX_JUMP_S */
	/* an IP length past the frame's length on the wire: the packet is
	 * still counted in its flow (the engine's; not in sl_stats.malformed) */
	SL_MAL_IP_OVERLONG,
	SL_MAL_COUNT,
};

/* How much of the transport header a decoded packet has: a short snaplen
 * (or a first fragment, whose header goes on in the next one) may end the
 * frame inside it. What was captured is used: the ports with their 4
 * bytes, TCP flags and data offset with byte 13. */
enum sl_l4_cut {
	SL_L4_WHOLE = 0,     /* all of it (or none that is read) */
	SL_L4_CUT = 1,	     /* cut after the ports and TCP flags */
	SL_L4_CUT_FLAGS = 2, /* cut after the ports: TCP flags not known */
	SL_L4_CUT_PORTS = 3, /* cut before the ports end: the key has none */
	SL_L4_CUT_EXT = 4,   /* an IPv6 extension header is cut: no ports,
				key.proto is the last next header read */
};

enum sl_frag {
	SL_FRAG_NONE = 0,
	SL_FRAG_FIRST = 1, /* offset 0, more fragments follow: has ports */
	SL_FRAG_LATER = 2, /* offset > 0: no ports, attributed by frag_id */
};

struct sl_decoded {
	struct sl_key key;	 /* as seen on the wire: src -> dst */
	uint32_t frag_id;	 /* IPv4 identification / IPv6 fragment id */
	uint16_t l4_offset;	 /* offset of the L4 header in the frame */
	uint16_t payload_offset; /* offset of the L4 payload in the frame */
	uint16_t payload_len;	 /* L4 payload bytes present in the frame */
	uint16_t ip_offset;	 /* of the (innermost) IP header (0 also
				    without one: key.ip_version says) */
	uint8_t frag;		 /* enum sl_frag */
	uint8_t
	    tcp_flags; /* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 ... */
	uint8_t icmp_type;
	uint8_t icmp_code;
	uint8_t malformed; /* enum sl_malformed */
	uint8_t l4_cut;	   /* enum sl_l4_cut */
	uint16_t wire_payload_len; /* L4 payload bytes on the wire, as the IP
				      length says (0 when the transport
				      header's length is not known) */
	/* an IPv6 fragment: its Fragment header's next header, which every
	 * fragment of the datagram carries (the key's proto is the first
	 * fragment's upper-layer protocol, past any further extension
	 * headers, and a later fragment has none) */
	uint8_t frag_nh;
	uint8_t pad[3];
	uint32_t ip_end; /* the furthest frame offset an IP header claims
			    its packet reaches (0: none claims) */
	uint32_t ip_len; /* the length the key's IP header gives its packet
			    (0: none, an IPv6 jumbogram) */
	struct sl_tunnel tunnel; /* type SL_TUNNEL_NONE: none (and then only
				    type, ip_version, has_id, depth are set) */
};

/* Returns enum sl_decode_status. Never reads past data + caplen. Follows
 * tunnels to the innermost IP packet: the key is its, the tunnel says
 * what carried it. */
SL_API int sl_decode(const uint8_t *data, uint32_t caplen, uint32_t linktype,
		     struct sl_decoded *out);
/* SL_DECODE_OUTER: IP tunnels are not followed (link layers, MPLS and
 * PPPoE are): the key is the outermost IP packet's, no tunnel. */
enum { SL_DECODE_OUTER = 1 };
SL_API int sl_decode_flags(const uint8_t *data, uint32_t caplen,
			   uint32_t linktype, uint32_t flags,
			   struct sl_decoded *out);
SL_API const char *sl_malformed_name(int reason);
/* 1 if sl_decode() knows the link type, else 0. */
SL_API int sl_linktype_supported(uint32_t linktype);

/* ---- sources ---------------------------------------------------------- */

struct sl_source;

/* Source kinds: files and buffers (sl_source_open_file/_mem), live
 * capture (sl_source_open_afpacket/_afxdp/_pcap_live) and collectors
 * (sl_source_open_collector). Every sl_source_* call below takes a source
 * of any kind: where one does not apply to a kind, its comment says what
 * it returns then (-ENOTSUP, or zeros). A NULL source or output pointer
 * is -EINVAL (progress: 0 and 0; close: nothing). Each open sets *out to
 * NULL when it fails. */

/* Opens a pcap (micro/nanosecond, either byte order) or pcapng file. The
 * file is read in chunks into a buffer of the source's (pread: a file
 * that shrinks while it is read ends the input with SL_E_SHRUNK, after
 * every packet read before, instead of a SIGBUS); a batch's packets point
 * into it until the next sl_source_next(). A path that is not a regular
 * file (a pipe, FIFO, /dev/stdin, <(...)), and "-" for standard input,
 * is read as a stream (read(2), no seeking; progress: bytes read, total
 * 0). Input compressed with gzip, zstd, xz or lz4 (frame format),
 * recognised by its first bytes, is decompressed on the way, from files
 * and streams alike (progress then counts compressed bytes); compressed
 * input that ends early or is corrupt ends the packets with SL_E_ZTRUNC
 * or SL_E_ZCORRUPT, after every packet before the damage. */
SL_API int sl_source_open_file(struct sl_source **out, const char *path);
/* Same over a caller-owned buffer that must outlive the source. */
SL_API int sl_source_open_mem(struct sl_source **out, const uint8_t *buf,
			      size_t len);
/* Fills up to SL_BATCH_MAX packets. Returns the count, 0 at the end of the
 * file, or an error once every packet before the damage was returned.
 * A stream waiting for input returns -EINTR (b->count 0, not an error:
 * call again) when a signal of sl_signal_install() came meanwhile.
 * Live sources: see below (-EAGAIN, never 0). Collectors (flow records,
 * not packets): -ENOTSUP, b->count 0. */
SL_API int sl_source_next(struct sl_source *src, struct sl_packet_batch *b);
/* Link type of a pcap file, or of the first pcapng interface; of the
 * interface for live sources. Collectors: -ENOTSUP. */
SL_API int sl_source_linktype(const struct sl_source *src);
/* Bytes consumed and total, for progress reports (either pointer may be
 * NULL). Live sources: what was captured so far (bytes; afpacket:
 * packets), total 0. Collectors: 0 and 0. */
SL_API void sl_source_progress(const struct sl_source *src, uint64_t *pos,
			       uint64_t *size);
/* Frees a source of any kind; NULL is a no-op. */
SL_API void sl_source_close(struct sl_source *src);

/* Several captures read as one input, like mergecap: paths are files or
 * directories (a directory's regular files in byte order of their names,
 * hidden ones left out: what tcpdump -G/-C and dumpcap -b write), each
 * read as sl_source_open_file() reads one (stdin, FIFOs, compressed).
 * Packets come in time order across the files, ties in the order the
 * files were given, so that flows continue across files and time never
 * runs backwards where files overlap; each packet keeps its file's link
 * type. Every file is opened once here: one that cannot be read, is not
 * a capture or has a link type sl_decode() does not know fails the open
 * (note: "NAME: why"), except a directory's files that are not captures,
 * which are skipped and counted. Regular files are then closed until
 * their first packet is due, so a directory of thousands keeps only the
 * overlapping ones open. A file that fails while it is read (truncated,
 * shrunk, corrupt) ends there, after every packet before the damage; the
 * others are read to their end, and then sl_source_next() returns the
 * first such error (sl_source_files() says which file). Progress sums
 * the files (total 0 when one is a stream). Returns 0 or a negative
 * error (-ENOENT with a note: no capture among the paths). */
SL_API int sl_source_open_files(struct sl_source **out,
				const char *const *paths, uint32_t n_paths,
				char *note, size_t note_len);

struct sl_files_info {
	uint32_t files;	       /* captures in the input */
	uint32_t skipped;      /* directory entries that are not captures */
	uint32_t current;      /* file of the last packet handed out */
	uint32_t finished;     /* files read to their end (or failure) */
	uint32_t failed;       /* files that ended with an error */
	uint32_t first_failed; /* the file whose error ends the input */
};

/* Fills *fi for a source of sl_source_open_files(); other kinds:
 * -ENOTSUP. */
SL_API int sl_source_files(const struct sl_source *src,
			   struct sl_files_info *fi);
/* The path of file index (0 .. files-1), as given or as a directory's
 * path joined with the entry's name; NULL past the end or for another
 * kind of source. */
SL_API const char *sl_source_file_name(const struct sl_source *src,
				       uint32_t index);

/* One stream (stdin, a FIFO) for several worker processes that share an
 * input (sl_config.shared_input): the parent reads it and copies it into
 * a pipe per worker, from a thread, pacing the stream by the slowest
 * worker. sl_tee_new() before forking (it opens path, "-" for stdin, and
 * makes the pipes); in child w, sl_tee_child(t, w) makes the pipe its
 * stdin and closes the rest; in the parent, sl_tee_start() once all are
 * forked. sl_tee_finish() (after the workers ended) stops the copy and
 * returns 0 or the stream's read error, with the bytes copied. */
struct sl_tee;

SL_API int sl_tee_new(struct sl_tee **out, const char *path, uint32_t workers);
SL_API int sl_tee_child(struct sl_tee *t, uint32_t worker);
SL_API int sl_tee_start(struct sl_tee *t);
SL_API int sl_tee_finish(struct sl_tee *t, uint64_t *bytes);
SL_API void sl_tee_free(struct sl_tee *t);

/* One plain pcap file read once by several worker processes that share
 * it (sl_config.shared_input), in memory mapped before they fork: a free
 * worker reads the next window of the file and decides each packet's
 * worker (the decode and hash of the engine that reads it); every worker
 * takes every window in order and decodes its own packets only.
 * sl_coop_new() in the parent before forking: -ENOTSUP for an input it
 * cannot share this way (not a regular file, compressed, pcapng; every
 * worker then reads the whole input itself). In each worker,
 * sl_source_open_coop() instead of sl_source_open_file(), attached to
 * its engine (whose decoder finds the owners). A window's memory is
 * reused once every worker took it: a worker that stops early closes its
 * source, and is then not waited for. Worker w (0 .. workers-1) opens
 * one source (-EBUSY for a second). sl_coop_closed() tells whether worker
 * w closed its source (1) or not (0): a worker that ended without (a
 * kill, a policy that ended its process) holds windows the others wait
 * for, and the parent must stop them. sl_coop_free() in the parent once
 * the workers ended. */
struct sl_coop;

SL_API int sl_coop_new(struct sl_coop **out, const char *path,
		       uint32_t workers);
SL_API int sl_source_open_coop(struct sl_source **out, struct sl_coop *c,
			       uint32_t worker);
SL_API int sl_coop_closed(const struct sl_coop *c, uint32_t worker);
SL_API void sl_coop_free(struct sl_coop *c);

/* ---- live capture ----------------------------------------------------- */

enum sl_xdp_mode {
	SL_XDP_AUTO = 0, /* native where the driver has it, else skb */
	SL_XDP_SKB = 1,
	SL_XDP_DRV = 2,
};

enum sl_zero_copy {
	SL_ZC_AUTO = 0, /* try zero-copy, fall back to copy */
	SL_ZC_ON = 1,	/* zero-copy or fail */
	SL_ZC_OFF = 2,
};

/* Options of the live sources; 0 means the default. */
struct sl_live_opts {
	const char *ifname;
	const char *filter;   /* pcap syntax, NULL: everything */
	uint32_t snaplen;     /* default 262144 */
	uint32_t block_size;  /* afpacket: bytes per block, default 1 MiB */
	uint32_t block_count; /* afpacket: default 64 */
	uint32_t frame_size;  /* afpacket: default 2048 */
	uint32_t block_timeout_ms; /* afpacket: default 100 */
	uint32_t queue;		   /* afxdp: the NIC queue of this socket */
	uint32_t fanout_group;	   /* afpacket: > 0: PACKET_FANOUT_HASH id */
	uint32_t poll_ms;	   /* longest wait for packets, default 100 */
	int32_t promisc;	   /* 1: promiscuous */
	int32_t ignore_outgoing;   /* 1: only packets received */
	int32_t xdp_mode;	   /* enum sl_xdp_mode */
	int32_t zero_copy;	   /* enum sl_zero_copy */
	char note[256]; /* out: what was adjusted (ring shrunk, copy mode) or
			   why opening failed, in words */
};

/* Live sources return -EAGAIN from sl_source_next() when no packet came
 * within poll_ms, so the engine can follow the wall clock. They never
 * return 0 (end). */
SL_API int sl_source_open_afpacket(struct sl_source **out,
				   struct sl_live_opts *o);
SL_API int sl_source_open_afxdp(struct sl_source **out, struct sl_live_opts *o);
SL_API int sl_source_open_pcap_live(struct sl_source **out,
				    struct sl_live_opts *o);

struct sl_source_stats {
	uint64_t received;     /* packets handed out */
	uint64_t kernel_drops; /* dropped before we saw them (ring full) */
	uint64_t filtered;    /* afxdp: rejected by the filter after the ring */
	uint64_t ring_errors; /* afxdp: invalid descriptors, full rings */
};

/* Fills *st and returns 0 for a live source or a collector (whose
 * received counts messages, kernel_drops its sockets' overflows). Files
 * and buffers: -ENOTSUP (the same value as -EOPNOTSUPP on Linux), *st
 * zeroed. */
SL_API int sl_source_stats(struct sl_source *src, struct sl_source_stats *st);

/* ---- flows ------------------------------------------------------------ */

enum sl_end_reason {
	SL_END_NONE = 0, /* still live */
	SL_END_FIN,	 /* FIN from both sides, then the last ACK */
	SL_END_RST,
	SL_END_IDLE,
	SL_END_ACTIVE,	 /* active timeout: flow lived too long, split */
	SL_END_EOF,	 /* end of input */
	SL_END_SHUTDOWN, /* capture stopped (signal, sl_engine_shutdown) */
	SL_END_TRIMMED,	 /* ended to bring the table down to low_flows */
	SL_END_REUSED,	 /* TCP: a SYN opened a new connection on its tuple */
	SL_END_COUNT,
};

enum sl_tcp_state {
	SL_TCP_NONE = 0, /* not TCP */
	SL_TCP_SYN_SENT,
	SL_TCP_SYN_RECEIVED, /* SYN+ACK seen */
	SL_TCP_ESTABLISHED,
	SL_TCP_FIN_WAIT, /* FIN from one side */
	SL_TCP_CLOSING,	 /* FIN from both sides, waiting for the last ACK */
	SL_TCP_CLOSED,	 /* final ACK seen */
	SL_TCP_RESET,
	SL_TCP_MIDSTREAM, /* first packet was not a SYN */
};

enum sl_timeout_class {
	SL_TIMEOUT_TCP = 0,
	SL_TIMEOUT_UDP,
	SL_TIMEOUT_ICMP,
	SL_TIMEOUT_OTHER,
	/* a TCP flow closed (FIN, RST) stays this long for the packets that
	 * come late (duplicates, retransmissions), then ends with its reason */
	SL_TIMEOUT_TCP_CLOSED,
	SL_TIMEOUT_COUNT,
};

/* Which side sent a packet: the flow's initiator (fwd) or responder. */
enum { SL_DIR_FWD = 0, SL_DIR_REV = 1 };

struct sl_dir {
	uint64_t pkts;
	uint64_t bytes;	   /* frame length on the wire */
	uint64_t ip_bytes; /* the IP packets' length, as their headers say
			    * (the key's IP header: the innermost tunnelled
			    * one); IPFIX's octetDeltaCount */
	uint64_t first_ns;
	uint64_t last_ns;
	uint8_t tcp_flags; /* union of flags sent in this direction */
	uint8_t pad[7];
};

/* Per-flow statistics (sl_config.features & SL_FEATURE_STATS), for each
 * direction and for both together (NFStream's src2dst_, dst2src_ and
 * bidirectional_ features): frame sizes and the times between packets
 * (in arrival order; a packet earlier than the one before counts 0),
 * minimum and maximum, and the exact integer sums of the values and of
 * their squares (128 bits), from which sl_stream_moments() gives means
 * and sample deviations without the cancellation a floating-point sum of
 * squares suffers (what Welford's method is for); and the packets that
 * carried each TCP flag. */
enum sl_feature {
	SL_FEATURE_STATS = 1,
	SL_FEATURE_SPLT = 2,
	SL_FEATURE_DPI = 4, /* only where sl_dpi_available() */
};
enum { SL_STATS_BOTH = 2 }; /* with SL_DIR_FWD, SL_DIR_REV: the streams */
enum { SL_TCP_FLAG_BITS = 8 }; /* FIN SYN RST PSH ACK URG ECE CWR, bit order */

struct sl_stream_stats {
	uint64_t packets;
	uint32_t min_ps; /* frame bytes */
	uint32_t max_ps;
	uint64_t sum_ps;
	uint64_t sumsq_ps[2]; /* low, high 64 bits */
	uint64_t min_piat_ns; /* over packets - 1 gaps */
	uint64_t max_piat_ns;
	uint64_t sum_piat_ns;
	uint64_t sumsq_piat_ns[2];
	uint64_t last_ns; /* the stream's last packet */
	uint32_t flag_packets[SL_TCP_FLAG_BITS];
};

/* What a flow keeps: each direction's stream; of both together only the
 * times between packets, the rest being the two directions' sums (a
 * third less memory a flow, which each flow's first packet pays for in
 * fresh pages). sl_flow_stream_stats() gives any of the three whole. */
struct sl_gap_stats {
	uint64_t min_ns;
	uint64_t max_ns;
	uint64_t sum_ns;
	uint64_t sumsq_ns[2];
	uint64_t last_ns; /* the flow's last packet */
};

struct sl_flow_stats {
	struct sl_stream_stats s[2]; /* SL_DIR_FWD, SL_DIR_REV */
	struct sl_gap_stats both;
};

/* The first packets of a flow (SL_FEATURE_SPLT: sl_config.splt_packets of
 * them, default 10, at most SL_SPLT_MAX): NFStream's splt_ features. */
enum { SL_SPLT_MAX = 32, SL_SPLT_DEFAULT = 10 };

struct sl_splt {
	uint16_t n;	  /* packets recorded */
	uint16_t len;	  /* the run's splt_packets: n grows up to it */
	uint32_t reverse; /* bit i: packet i went responder -> initiator */
	uint64_t last_ns; /* the last recorded packet's time */
	uint16_t ps[SL_SPLT_MAX];      /* frame bytes (65535 at most) */
	uint64_t piat_ns[SL_SPLT_MAX]; /* since the packet before; first 0 */
};

/* The application nDPI finds in a flow (SL_FEATURE_DPI), under NFStream's
 * names: application_name as nDPI prints it ("TLS.Google"),
 * application_category_name, requested_server_name (TLS SNI, HTTP Host,
 * DNS query; bytes other than printable ASCII dropped). nDPI sees the
 * flow's first packets only: until it names the application and wants no
 * more (a TLS certificate, a DNS answer, an HTTP response), at most
 * SL_DPI_EXTRA_PACKETS after naming it, at most SL_DPI_UDP_PACKETS or
 * SL_DPI_TCP_PACKETS in all (ndpiReader's UDP limit; its TCP limit is 80,
 * NFStream's 20 for both: past 24 packets nDPI rarely names what it could
 * not before, and the guess by port at the end is the same); a flow that
 * ends unsure gets nDPI's guess. The
 * strings are NUL-terminated; empty until the label is known (state
 * SL_DPI_DONE), which is at the flow's end at the latest. */
enum sl_dpi_state { SL_DPI_NONE = 0, SL_DPI_INSPECTING = 1, SL_DPI_DONE = 2 };
enum {
	SL_DPI_UDP_PACKETS = 24,
	SL_DPI_TCP_PACKETS = 24,
	SL_DPI_EXTRA_PACKETS = 10,
	SL_APP_NAME_MAX = 48,
	SL_APP_CATEGORY_MAX = 32,
	SL_APP_SERVER_MAX = 80,
};

struct sl_app_label {
	uint8_t state;	  /* enum sl_dpi_state */
	uint8_t guessed;  /* nDPI guessed it at the end (by port or IP) */
	uint16_t packets; /* packets nDPI saw */
	uint16_t master_id, app_id; /* nDPI's protocol numbers */
	uint16_t found_at; /* packets when nDPI first named the application */
	uint16_t pad;
	char application_name[SL_APP_NAME_MAX];
	char category[SL_APP_CATEGORY_MAX];
	char server_name[SL_APP_SERVER_MAX];
};

/* 1 if this core was built with nDPI (SL_FEATURE_DPI works), else 0:
 * then an engine with SL_FEATURE_DPI is refused (-ENOTSUP). */
SL_API int sl_dpi_available(void);

/* A stream's mean and sample standard deviation (sqrt(sum of squared
 * deviations / (n - 1)); 0 below 2 values) of sizes (bytes) and of
 * inter-arrival times (ms). */
struct sl_moments {
	double mean_ps;
	double stddev_ps;
	double mean_piat_ms;
	double stddev_piat_ms;
};

/* A flow as the engine reports it. key.src is the initiator (the sender of
 * the first packet); fwd counts initiator -> responder. */
/* Field names differ from the Lua handle's (id, state, end_reason,
 * history), whose getters return Lua numbers and strings. */
/* What every packet updates comes first (the engine keeps it on the
 * cache lines it reads anyway), what only a flow's start sets after. */
struct sl_flow_rec {
	/* what a packet updates first: in the engine's flow, these share the
	 * lines the lookup reads (engine.h) */
	struct sl_dir fwd;
	struct sl_dir rev;
	uint8_t state_code;  /* enum sl_tcp_state */
	uint8_t reason_code; /* enum sl_end_reason */
	uint8_t icmp_type;   /* ICMP/ICMPv6: of the first packet, else 0 */
	uint8_t icmp_code;
	char hist[12]; /* Zeek-style history, NUL-terminated unless 12 long */
	uint64_t fid;  /* unique per engine, from 1 */
	uint32_t slot; /* table slot while live: with fid, names the flow */
	uint32_t engine; /* the engine's number (sl_engine_id) */
	/* packets that came in another tunnel than the flow's first (the
	 * reverse direction: other endpoints or type; ids may differ per
	 * direction, GTP-U's and PPTP's do) */
	uint32_t tunnel_changes;
	struct sl_key key;
	struct sl_tunnel encap; /* the tunnel of its first packet (Lua and
				 * JSON: tunnel, tunnel_src, ...) */
	/* The features the run computes (sl_config.features), NULL for the
	 * others: out of the record so that a run without them pays nothing,
	 * each in its own per-slot array beside the pool for a live flow (a
	 * run pays memory for the features it asked for only), in a copy
	 * beside the end event for an ended flow (valid as long as the
	 * event); a copy of the record must copy them too (Lua's rec:copy()
	 * does). */
	const struct sl_flow_stats *stats;
	const struct sl_splt *splt;
	const struct sl_app_label *app;
};

/* A flow handle as Lua policies hold it: the record it reads and what
 * names its flow. Used at a later generation, the handle finds its live
 * flow again (sl_engine_flow_find) or fails: it never reads another
 * flow's record. */
struct sl_flow_handle {
	const struct sl_flow_rec *rec;
	uint64_t fid;
	uint64_t generation; /* sl_output.generation at which rec is valid */
	uint32_t slot;
	uint32_t engine;
};

/* A packet event as Lua's on_packet gets it: ev is valid at generation
 * only (the next step reuses the packets and their data). */
struct sl_packet_handle {
	const struct sl_packet_ev *ev;
	uint64_t generation;
	uint32_t engine;
};

enum sl_event_type {
	SL_EVENT_FLOW_START = 1,
	SL_EVENT_FLOW_END = 2,
	SL_EVENT_PACKET = 3, /* a packet matched a packet filter */
};

/* A packet of a packet event, as decoded. data points into the source's
 * batch: valid until the next sl_engine_step(). */
struct sl_packet_ev {
	const uint8_t *data;
	uint64_t ts_ns;
	uint32_t caplen;
	uint32_t wirelen;
	uint32_t linktype;
	uint32_t match;		 /* bit i: packet filter i matched */
	struct sl_key key;	 /* as on the wire: src -> dst */
	uint16_t l4_offset;	 /* offsets into data */
	uint16_t payload_offset; /* L4 payload */
	uint16_t payload_len;	 /* L4 payload bytes present */
	uint8_t dir;		 /* SL_DIR_FWD: sent by the initiator */
	uint8_t tcp_flags;
	uint32_t batch_index; /* for sl_engine_packet_capture() */
	uint32_t pad;
};

/* Events carry a copy of the flow: a slot may be reused within one step. */
struct sl_event {
	uint32_t type; /* enum sl_event_type */
	uint32_t slot; /* flow table slot, valid while flow.id still owns it */
	uint64_t ts_ns;
	struct sl_flow_rec flow; /* packet events: the flow with the packet */
	uint32_t packet; /* packet events: index into sl_output.packets;
			    a collector's start events: into .records */
	uint32_t pad;
};

struct sl_counts {
	uint64_t pkts;
	uint64_t bytes;
	uint64_t ip_bytes; /* as in sl_dir */
};

/* One flow in one slice interval [start_ns, end_ns). */
struct sl_slice_rec {
	uint64_t fid;
	struct sl_key key; /* src = initiator, as in sl_flow_rec */
	uint64_t start_ns;
	uint64_t end_ns;
	struct sl_counts delta_fwd;
	struct sl_counts delta_rev;
	struct sl_counts total_fwd;
	struct sl_counts total_rev;
	uint8_t tcp_flags_fwd; /* union over the interval */
	uint8_t tcp_flags_rev;
	uint8_t reason_code; /* the flow ended in this interval, else 0 */
	uint8_t icmp_type;   /* as in sl_flow_rec */
	uint8_t icmp_code;
	uint8_t pad[3];
	uint32_t engine; /* as in sl_flow_rec */
	struct sl_tunnel encap; /* as in sl_flow_rec */
	/* the flow's application label when the run labels flows
	 * (SL_FEATURE_DPI) and it was known (SL_DPI_DONE), else NULL: a copy
	 * beside the batch, valid as long as the record (a copy of the
	 * record must copy it too; Lua's rec:copy() does) */
	const struct sl_app_label *app;
};

/* A slice record as Lua's on_slice gets it: rec is valid at generation
 * only (the next interval's records take its memory). */
struct sl_slice_handle {
	const struct sl_slice_rec *rec;
	uint64_t generation;
	uint32_t engine;
};

/* ---- engine ----------------------------------------------------------- */

struct sl_pcap_writer;

/* The engine clock follows the packets' times (a collector's: the records'
 * end times) and never goes back; timeouts and slice boundaries fire by
 * it. The first time (other than 0) sets it. After that, a time more than
 * SL_CLOCK_MAX_JUMP_S seconds ahead of the clock does not move it, nor
 * does UINT64_MAX (a timestamp a reader could not represent): one corrupt
 * timestamp must not end every flow or skip the clock years ahead. Such a
 * packet is counted as malformed (SL_MAL_TIMESTAMP) and skipped; such a
 * record is counted the same way but still taken in its flow (its counts
 * are kept), without moving the clock. When SL_CLOCK_RESYNC times too far
 * ahead come in a row, each within the bound of the one before, the input
 * itself jumped (files of different years joined, a first timestamp that
 * was the corrupt one): the clock follows the last of them, the ones
 * before are counted. The wall clock that runs a live source's or a
 * collector's clock while no input comes is bound the same way, without
 * counting. */
enum { SL_CLOCK_MAX_JUMP_S = 366 * 86400, SL_CLOCK_RESYNC = 8 };

struct sl_config {
	uint32_t pool_flows; /* flow slots; 0: default (1M) */
	uint16_t worker;     /* this engine's worker number, from 0 */
	uint16_t workers; /* workers in all: flow ids are unique across them */
	uint64_t idle_timeout_ns[SL_TIMEOUT_COUNT]; /* 0: default */
	uint64_t active_timeout_ns;		    /* 0: default (1800 s) */
	uint64_t slice_ns;			    /* 0: no slices */
	/* A bounded table: when max_flows flows are live, a trim ends
	 * unprotected flows older than grace_ns, lowest score first, then
	 * least recently active, until low_flows remain. At most one trim per
	 * silence_ns unless the pool is exhausted. 0: no limit. */
	uint32_t max_flows;
	uint32_t low_flows;  /* 0: 90% of max_flows (below 10: one less) */
	uint64_t grace_ns;   /* 0: none (sluice.open defaults to 10 s) */
	uint64_t silence_ns; /* 0: default 10 s */
	uint32_t decode_flags; /* SL_DECODE_OUTER: key by the outer IP */
	uint32_t features; /* enum sl_feature, for every flow */
	uint32_t splt_packets; /* SL_FEATURE_SPLT: 0 is SL_SPLT_DEFAULT */
	/* 1: every one of the workers reads the whole input (a file, stdin),
	 * or takes every window of one read once (sl_coop); this engine takes the packets of the flows whose key hashes to its
	 * worker number and those of no flow if it is worker 0, and counts
	 * the rest as sl_stats.foreign. Every packet moves its clock, so all
	 * workers time flows out and close slices alike. */
	uint32_t shared_input;
};

struct sl_stats {
	uint64_t packets; /* read from the source */
	uint64_t bytes;
	uint64_t not_ip;
	uint64_t malformed; /* packets dropped as malformed: the sum of
			       malformed_by but SL_MAL_IP_OVERLONG, whose
			       packets are kept (SL_MAL_TIMESTAMP: also a
			       collector's records, see SL_CLOCK_MAX_JUMP_S) */
	uint64_t malformed_by[SL_MAL_COUNT];
	uint64_t frag_unmatched; /* later fragments with no first fragment */
	uint64_t flows_started;
	uint64_t flows_ended;
	uint64_t flows_active;
	uint64_t flows_refused; /* packets dropped: pool exhausted */
	uint64_t trims;		/* trim passes run */
	uint64_t ended_by[SL_END_COUNT];
	uint64_t slices_closed;
	uint64_t slice_records;
	uint64_t records; /* collector: flow records taken (packets and bytes
			     then are the sums the records report) */
	uint64_t filtered; /* packets the input filter refused
			      (sl_engine_input_filter): not in packets */
	uint64_t tunnelled;	 /* packets keyed inside a tunnel */
	uint64_t tunnel_changes; /* sum of the flows' tunnel_changes */
	uint64_t foreign; /* shared input: other workers' packets (not in
			     packets, bytes or any other count) */
	uint64_t l4_cut;  /* packets whose transport header the capture
			     length cut (sl_decoded.l4_cut): in their flows */
};

struct sl_collector_rec;

/* What one sl_engine_step() produced: events in order, then, if an
 * interval closed (slice_ready), its slice records. */
struct sl_output {
	const struct sl_event *events;
	uint32_t n_events;
	uint32_t slice_ready;
	const struct sl_slice_rec *slices;
	uint32_t n_slices; /* read only when slice_ready */
	uint32_t pad;
	uint64_t slice_start_ns; /* bounds of the closed interval */
	uint64_t slice_end_ns;
	uint64_t now_ns; /* engine clock: newest packet time */
	const struct sl_packet_ev *packets; /* of this step's packet events */
	uint32_t n_packets;
	uint32_t pad2;
	/* a collector's current records */
	const struct sl_collector_rec *records;
	uint64_t generation; /* see the top of this header */
};

struct sl_engine;

SL_API int sl_engine_new(struct sl_engine **out, const struct sl_config *cfg);
SL_API void sl_engine_free(struct sl_engine *e);
/* The engine takes ownership of the source. */
SL_API int sl_engine_attach(struct sl_engine *e, struct sl_source *src);
/* Processes input until an interval closes or a packet batch is used up.
 * Returns 1 when output is ready, 0 when the input is over and every flow
 * has ended. A source error ends the input like EOF (flows end with
 * SL_END_EOF, the last interval closes); it is then reported by
 * sl_engine_source_error(). */
SL_API int sl_engine_step(struct sl_engine *e);
SL_API const struct sl_output *sl_engine_output(const struct sl_engine *e);
SL_API const struct sl_stats *sl_engine_stats(const struct sl_engine *e);
SL_API int sl_engine_source_error(const struct sl_engine *e);
/* Stops reading: the next sl_engine_step() ends every flow with
 * SL_END_SHUTDOWN and closes the last interval; then steps return 0. */
SL_API void sl_engine_shutdown(struct sl_engine *e);

/* SIGINT/SIGTERM, for a run that wants a clean stop (the core installs no
 * handler by itself), from sl_signal_install() to sl_signal_restore(),
 * which puts back what the process had (calls nest: the outermost pair
 * counts). The first signal sets a flag (read with sl_signal_pending(),
 * which returns the signal number or 0); a second one ends the process
 * the default way. The loop that stops calls sl_signal_taken(); if it
 * does not within 3 s (a policy handler that never returns), a line on
 * stderr and the signal's default action end the process. */
SL_API int sl_signal_install(void);
SL_API void sl_signal_restore(void);
SL_API int sl_signal_pending(void);
SL_API void sl_signal_taken(void);
/* Between sl_signal_install() and sl_signal_restore() SIGHUP is caught too:
 * it asks for a reload and nothing else (the run goes on, no watchdog).
 * sl_signal_take_reload() returns 1 once for the SIGHUPs that came since
 * the last call (several are one), else 0. A stream that waits for input
 * (stdin, a pipe) gives up the wait when a signal comes, so that the run
 * loop sees the flag without more input. */
SL_API int sl_signal_take_reload(void);
/* A write past the file size limit (RLIMIT_FSIZE, `ulimit -f`) raises
 * SIGXFSZ, which kills the process by default. This ignores it (unless the
 * program already handles or ignores it), so such a write fails with
 * EFBIG and is counted like any other write error. File sinks call it when
 * they open; nothing else in the core touches signals. */
SL_API int sl_signal_ignore_xfsz(void);
/* For a parent that waits for its children: sl_signal_child_block(1)
 * before it forks (and (0) in each child and once it has waited) blocks
 * SIGCHLD; sl_signal_child_wait() then sleeps until a child ends (1),
 * timeout_ms passes (0) or another signal is handled (-EINTR), and never
 * misses a child that ended before it was called. */
SL_API int sl_signal_child_block(int on);
SL_API int sl_signal_child_wait(int timeout_ms);
/* sl_signal_hold(1) blocks SIGINT, SIGTERM and SIGHUP, (0) lets through
 * those that came meanwhile. A parent holds them while it forks: a child
 * forked after the first stop signal was handled would inherit that
 * handler's state (the flag, and a second-signal handler for the SIGTERM
 * the parent then sends it, which killed it the default way). Each child
 * releases them once it runs. */
SL_API int sl_signal_hold(int on);
/* In a worker just forked (signals held): the stop its parent may have
 * handled before the fork is forgotten (the parent forwards it as a
 * SIGTERM), and once it stops, later SIGINTs and SIGTERMs are that stop
 * again, not a second signal (its parent's forwarded one, a service
 * manager's to every process, a pkill): it ends when its stop is done,
 * by the watchdog, or with its parent (a second signal to the parent). */
SL_API int sl_signal_worker(void);
SL_API const struct sl_source *sl_engine_source(const struct sl_engine *e);
/* Key kinds besides the 5-tuple (ip_version 4 or 6). An external id sits
 * in src[0..7] (host order); a string of up to 32 bytes in src and dst,
 * its length in sport. Other bytes stay zero. */
enum sl_key_kind {
	SL_KEY_ID = 100,
	SL_KEY_STRING = 101,
};

/* A flow update from any source (a collector, a conntrack feed, Lua):
 * keys find the flow (each key is the flow's own key or an alias of it);
 * unknown keys become aliases; with no known key a new flow starts under
 * the first key. A key owned by another live flow fails the whole update
 * with SL_E_CONFLICT and changes nothing. A handle (fid and slot) names a
 * flow instead of keys. The counts are added to the flow's. Once the
 * input has ended (the engine is ending its flows, or is done), an update
 * that would start a flow fails with SL_E_STATE and changes nothing. */
struct sl_update {
	const struct sl_key *keys;
	uint32_t n_keys; /* at most 16 */
	uint32_t slot;	 /* in: with fid, the handle; out: the flow's slot */
	uint64_t fid;	 /* in: 0 or a handle; out: the flow's id */
	struct sl_counts add_fwd;
	struct sl_counts add_rev;
	uint32_t created; /* out: 1 if a new flow started */
	uint32_t pad;
};

/* Events of a new flow (and of flows a trim ended to make room) are kept
 * apart from the step's output: see sl_engine_late(). */
SL_API int sl_engine_update(struct sl_engine *e, struct sl_update *u);
/* Hands out the events caused since the last call (updates, trims): their
 * count, *events pointing at them, valid until the next sl_engine_late()
 * or sl_engine_step(). Dispatch them before the step's next event, and
 * call again until it returns 0 (handlers of late events may cause
 * more). */
SL_API uint32_t sl_engine_late(struct sl_engine *e,
			       const struct sl_event **events);
/* The record of the live flow named by slot and id, or NULL if it ended. */
SL_API const struct sl_flow_rec *
sl_engine_flow_find(const struct sl_engine *e, uint32_t slot, uint64_t fid);
/* This engine's number, as in its records' engine field (from 1, unique
 * in the process). */
SL_API uint32_t sl_engine_id(const struct sl_engine *e);

/* Scores and protection of a live flow, named by its slot and id (from
 * an event): -ESRCH if that flow has ended. protect returns 1 if any
 * protection bit is still set after the change, else 0. */
SL_API int sl_engine_flow_score(struct sl_engine *e, uint32_t slot,
				uint64_t fid, double score);
SL_API int sl_engine_flow_protect(struct sl_engine *e, uint32_t slot,
				  uint64_t fid, uint32_t bit, int on);

/* Packet filters (pcap syntax): a packet of a flow that matches filter
 * index (0..31) is reported as an SL_EVENT_PACKET event, in order with
 * the flow's other events. Compiled like the input filter (below) for
 * each link type the packets have. NULL removes the filter. On a bad
 * expression, libpcap's message is written to err. No source:
 * SL_E_STATE; a collector's engine has no frames: -ENOTSUP. */
enum { SL_PACKET_FILTERS = 32 };
SL_API int sl_engine_packet_filter(struct sl_engine *e, uint32_t index,
				   const char *expr, char *err, size_t errlen);

/* Whether a filter compiles for some link type a capture commonly has
 * (Ethernet, Linux cooked, raw IP, 802.11): a policy's info.packets is
 * checked so before any data (the engine compiles it again for each link
 * type its packets have). 0, or -EINVAL with libpcap's message (for
 * Ethernet) in err. */
SL_API int sl_filter_check(const char *expr, char *err, size_t errlen);

/* The input filter (pcap syntax) of a source whose packets come
 * unfiltered (files, buffers; live sources filter in the kernel with
 * sl_live_opts.filter): a packet it refuses is counted in
 * sl_stats.filtered and goes no further (not decoded, not in packets or
 * bytes, it moves no clock and reaches no flow). It is compiled for each
 * link type the packets have, on the first packet of each (pcapng: per
 * interface); the packets of a link type it cannot be compiled for are
 * refused, as are those of link types past the SL_INPUT_LINKTYPES first.
 * Checked at once against the source's link type: a bad expression is
 * -EINVAL with libpcap's message in err. NULL removes it. No source:
 * SL_E_STATE; a collector: -ENOTSUP. */
enum { SL_INPUT_LINKTYPES = 16 };
SL_API int sl_engine_input_filter(struct sl_engine *e, const char *expr,
				  char *err, size_t errlen);

/* The link types of packets read so far that the input filter does not
 * compile for (a later pcapng interface or file; their packets are
 * refused and counted in filtered): how many, and libpcap's message for
 * the first in note. */
SL_API int sl_engine_filter_unusable(const struct sl_engine *e, char *note,
				     size_t note_len);

/* Capture to pcap writers: every further packet of a flow goes to the
 * writer it is set to. add_writer returns the writer's number (1..15);
 * the engine does not own it. flow_capture sets (or, with 0, clears) a
 * flow's writer; the packets of the flow that the last step processed are
 * written too, so a capture set in a start event's handler holds the flow
 * from its first packet (also when the flow already ended in that step);
 * -ESRCH if the flow ended before. capture_all sets the writer every new
 * flow starts with (0: none). Captured packets are written at the start of
 * the next step, in the order they were read, with their own timestamps
 * and lengths, so a file gets packets in capture order whichever way they
 * came (flow captures, packet events, capture_all). */
enum { SL_WRITERS = 15 };
SL_API int sl_engine_add_writer(struct sl_engine *e,
				struct sl_pcap_writer *w);
SL_API int sl_engine_flow_capture(struct sl_engine *e, uint32_t slot,
				  uint64_t fid, uint32_t writer);
SL_API void sl_engine_capture_all(struct sl_engine *e, uint32_t writer);
/* Writes what was captured so far and forgets every writer (before they
 * are closed): flows keep no capture. */
SL_API void sl_engine_detach_writers(struct sl_engine *e);
/* Writes a packet of this step's packet events to a writer, in order with
 * the captures; -ESTALE if pe is not one of the current step's. */
SL_API int sl_engine_packet_capture(struct sl_engine *e,
				    const struct sl_packet_ev *pe,
				    uint32_t writer);

/* Slots ever used: live flows are in slots [0, sl_engine_slots()); walk
 * them with sl_engine_flow() to query the table (read-only). */
SL_API uint32_t sl_engine_slots(const struct sl_engine *e);
/* Live flow in a slot, or NULL if the slot is free. */
SL_API const struct sl_flow_rec *sl_engine_flow(const struct sl_engine *e,
						uint32_t slot);

/* ---- output formats: pcap writer, IPFIX messages ----------------------- */

/* A pcap file written through a buffer (microsecond timestamps, the
 * capture's link type). Writes never block on anything but the disk;
 * EINTR and EAGAIN are retried, never a loss.
 *
 * What it guarantees when a write fails (a full disk, EFBIG past the file
 * size limit, /dev/full): every packet taken is either in the file or
 * counted in errors (with last_error); the file never ends in a half
 * record: a short write is cut back (ftruncate) to the last whole record,
 * so the file stays readable and later packets follow that record. Only
 * an output that cannot be cut (a pipe) may keep a half record, and then
 * it is counted in partial. The file header is written with the first
 * data that lands, so a writer that starts on a full disk recovers too. */
struct sl_pcap_writer;

struct sl_writer_stats {
	uint64_t packets; /* written (buffered): in the file once flushed */
	uint64_t bytes;	  /* file bytes, headers included */
	uint64_t errors;  /* packets lost to a failed write */
	int32_t last_error; /* negative errno of the last failure, or 0 */
	uint32_t partial;   /* half records left in an output that cannot be
			       cut back (a pipe); 0 for a file */
};

SL_API int sl_pcap_writer_open(struct sl_pcap_writer **out, const char *path,
			       uint32_t linktype, uint32_t snaplen);
/* Caplen above the snaplen is cut to it. Returns 0, or the error of a
 * write this call made: the packets it lost are counted in the stats (this
 * one too if it was larger than the buffer and went out with it; else it
 * is buffered and tried with the next write). A packet of another link
 * type than the file's (several captures, pcapng interfaces) cannot be
 * written in it: SL_E_LINKMIX, counted as an error. */
SL_API int sl_pcap_writer_write(struct sl_pcap_writer *w, uint64_t ts_ns,
				const uint8_t *data, uint32_t caplen,
				uint32_t wirelen, uint32_t linktype);
SL_API int sl_pcap_writer_flush(struct sl_pcap_writer *w);
SL_API const struct sl_writer_stats *
sl_pcap_writer_stats(const struct sl_pcap_writer *w);
/* Flushes and closes; returns the flush's result. */
SL_API int sl_pcap_writer_close(struct sl_pcap_writer *w);

/* A JSON lines file written through a buffer: records are formatted
 * straight into it (no string crosses to Lua). path "-" is stdout.
 * line_buffered: one write(2) per line, atomic with O_APPEND, for a file
 * several processes share.
 *
 * Write errors: a line the writer took (an append returned its length)
 * either reaches the file or is counted lost in the stats; a failed write
 * (now, or later in the writer's thread) loses the lines it carried and
 * nothing else, and later lines are tried again (a disk that frees up gets
 * them). The file never ends in a half line: a short write (ENOSPC, EFBIG
 * past the file size limit) is cut back (ftruncate) to the end of its last
 * whole line, and the lines before it count as written. Appending
 * (O_APPEND, a file other processes write too) the cut is made only while
 * the file still ends with this writer's half line; an output that cannot
 * be cut (a pipe, or a file another process wrote to since) keeps it, and
 * the stats count it in partial. EINTR and EAGAIN are retried, never a
 * loss. */
struct sl_json_writer;

struct sl_json_writer_stats {
	uint64_t lines;	    /* lines in the file */
	uint64_t bytes;	    /* their bytes */
	uint64_t lost;	    /* lines taken, then lost to a failed write */
	uint64_t partial;   /* of those, cut short but left in the output */
	int32_t last_error; /* negative errno of the last failed write, or 0 */
	uint32_t pad;
};

/* How lines go out: in large buffers written by a thread; a write(2)
 * per line (each line out at once, whole among other writers); or as
 * fits a file that several processes write: buffers of whole lines that
 * each go out in one write, large for a regular file (its writes do not
 * interleave), at most PIPE_BUF bytes otherwise (a pipe keeps only such
 * writes whole). */
enum sl_json_mode { SL_JSON_BUFFERED = 0, SL_JSON_LINES = 1, SL_JSON_SHARED = 2 };

SL_API int sl_json_writer_open(struct sl_json_writer **out, const char *path,
			       int append, int mode);
/* Appends a record, or a line (given without its newline). Returns the
 * bytes taken, or -EFBIG if the line would take the file past max_size
 * (0: no limit) while it is not empty (nothing is taken: rotate and
 * append again). A write error is not returned here: the line is counted
 * lost (sl_json_writer_stats), and flush returns the error. A buffered,
 * unshared writer never given a max_size formats flow records in its
 * thread: sl_json_writer_flow() returns 0 then, and the size counts the
 * line after the next flush. */
SL_API int sl_json_writer_flow(struct sl_json_writer *w,
			       const struct sl_flow_rec *r, uint64_t max_size);
SL_API int sl_json_writer_slice(struct sl_json_writer *w,
				const struct sl_slice_rec *r,
				uint64_t max_size);
/* n slice records in a row; returns how many were appended (fewer than n
 * when a rotation is due, -EFBIG, or an error stopped it), or the error
 * when it stopped the first. */
SL_API int sl_json_writer_slices(struct sl_json_writer *w,
				 const struct sl_slice_rec *r, uint32_t n,
				 uint64_t max_size);
/* A shared writer to a pipe (SL_JSON_SHARED, not a regular file) refuses
 * a line longer than PIPE_BUF - 1 with -EMSGSIZE: written in pieces, it
 * would mix with the other writers' lines. */
SL_API int sl_json_writer_line(struct sl_json_writer *w, const char *line,
			       size_t len, uint64_t max_size);
/* Bytes in the file, buffered ones included (but flow records the thread
 * has yet to format); after a flush, the bytes that reached the file (lost
 * lines are no longer counted). */
SL_API uint64_t sl_json_writer_size(const struct sl_json_writer *w);
/* Writes everything buffered; returns the first write error since the last
 * flush (the lines it lost are counted), else 0. */
SL_API int sl_json_writer_flush(struct sl_json_writer *w);
/* Counters since open (a copy, taken under the writer's lock). After a
 * flush, lines + lost is every line taken. */
SL_API int sl_json_writer_stats(struct sl_json_writer *w,
				struct sl_json_writer_stats *st);
/* Flushes (a write error there is counted, as always), then continues in
 * a fresh file at path (after a rotation), appending if the writer was
 * opened to append. Returns a negative error if path cannot be opened:
 * the writer then goes on in its current file. */
SL_API int sl_json_writer_reopen(struct sl_json_writer *w, const char *path);
/* For a file several processes write while one of them rotates it: when
 * path names another file than the writer's (it was moved away and a
 * fresh one made), the writer continues there (reopen); returns 1 then,
 * else 0, or a negative error. *file_size (if not NULL) gets the size of
 * the file it writes now, every process's lines counted, and this
 * writer's lines not written yet (up to its buffers: megabytes). */
SL_API int sl_json_writer_follow(struct sl_json_writer *w, const char *path,
				 uint64_t *file_size);
/* For a file several processes write, any of which may rotate it: under
 * an exclusive lock on the writer's file, moves path to `to` if path is
 * still the writer's file (no other process rotated it since) and no
 * longer empty once the writer flushed, then continues in a fresh file at
 * path, as follow does. Returns 1 when it rotated, 0 when it did not (an
 * empty file; another process had rotated it: the writer follows), or a
 * negative error (the writer goes on in its current file). */
SL_API int sl_json_writer_rotate_shared(struct sl_json_writer *w,
					const char *path, const char *to);
/* Flushes and closes; returns the flush's (or close's) error. */
SL_API int sl_json_writer_close(struct sl_json_writer *w);

/* IPFIX (RFC 7011) message builder, biflows per RFC 5103: one template for
 * IPv4 and one for IPv6 flows, reverse counters under the reverse PEN
 * 29305. No I/O: the caller sends each finished message. */
struct sl_ipfix;

struct sl_ipfix_opts {
	uint32_t domain;    /* observation domain id */
	uint32_t max_bytes; /* largest message: 0 is SL_IPFIX_UDP_MESSAGE;
			       below SL_IPFIX_MIN_MESSAGE is -EINVAL */
	uint32_t splt_packets; /* SL_FEATURE_SPLT arrays' length: the run's
				  sl_config.splt_packets (0 is
				  SL_SPLT_DEFAULT, at most SL_SPLT_MAX) */
};

enum {
	SL_IPFIX_MAX_MESSAGE = 65535, /* the length field's limit (TCP) */
	SL_IPFIX_UDP_MESSAGE = 1400,  /* fits a 1500-byte MTU path */
	SL_IPFIX_MIN_MESSAGE = 334,   /* header, templates and one IPv6 record */
};

SL_API int sl_ipfix_new(struct sl_ipfix **out, const struct sl_ipfix_opts *o);
SL_API void sl_ipfix_free(struct sl_ipfix *x);
/* The next message starts with the template set (at the first message,
 * after a reconnect, on a UDP refresh). */
SL_API void sl_ipfix_want_templates(struct sl_ipfix *x);
/* Appends one data record: an ended or live flow with its totals, or a
 * slice record with its interval as start/end and its deltas. Returns 0,
 * -ENOBUFS when the open message is full (take it, then add again), or
 * -EAFNOSUPPORT for a flow keyed by an id or a string (no addresses). */
SL_API int sl_ipfix_add_flow(struct sl_ipfix *x, const struct sl_flow_rec *f);
SL_API int sl_ipfix_add_slice(struct sl_ipfix *x,
			      const struct sl_slice_rec *s);
/* Up to n slice records; returns how many were added (fewer when the
 * message filled up: take it and add the rest), or the error that stopped
 * the first. */
SL_API int sl_ipfix_add_slices(struct sl_ipfix *x,
			       const struct sl_slice_rec *s, uint32_t n);
/* Records in the open message. */
SL_API uint32_t sl_ipfix_pending(const struct sl_ipfix *x);
/* Closes the open message (header with export_time_s, the domain and the
 * sequence number: data records sent before it) and points *data at it,
 * valid until the next add or take. Returns its length, or 0 when there
 * is nothing to send. */
SL_API int sl_ipfix_take(struct sl_ipfix *x, uint32_t export_time_s,
			 const uint8_t **data);
/* The private enterprise number of sluice's own information elements:
 * 32473, the one RFC 5612 sets aside for documentation, until sluice has
 * one registered (README.md, "IPFIX export", lists the elements). */
enum { SL_IPFIX_PEN = 32473 };
/* sl_ipfix_new offering, with features (enum sl_feature), two more
 * templates (258 IPv4, 259 IPv6): the base fields, then for
 * SL_FEATURE_STATS per direction tcp{Syn,Fin,Rst,Psh,Ack,Urg}TotalCount
 * (the reverse under RFC 5103's PEN) and sluice's statistics under
 * SL_IPFIX_PEN; for SL_FEATURE_SPLT the first packets' arrays
 * (o->splt_packets long) under SL_IPFIX_PEN; for SL_FEATURE_DPI
 * applicationName, applicationCategoryName (variable-length) and the
 * requested server name under SL_IPFIX_PEN. Flow records that carry all
 * these features use them, every other record the base templates. The
 * template set may then fill a message alone: an add answers -ENOBUFS
 * into a message holding only it (take it, then add again). -EINVAL: a
 * max_bytes too small for the template set or the largest record, an
 * splt_packets above SL_SPLT_MAX, or unknown bits. */
SL_API int sl_ipfix_new_features(struct sl_ipfix **out,
				 const struct sl_ipfix_opts *o,
				 uint32_t features);


/* A sender: messages (IPFIX, JSON lines...) copied into a bounded queue
 * and sent on a socket by a thread of its own, so the capture thread never
 * waits for the network. A datagram socket gets one send per message; a
 * stream socket whose send fails, or whose peer has closed or reset it
 * (looked at before each message: a collector sends nothing), is broken:
 * its queue is dropped (counted) until a new socket is given. The sender
 * does not own the socket. */
struct sl_sender;

struct sl_sender_stats {
	uint64_t messages; /* sent */
	uint64_t bytes;
	uint64_t records; /* the records of the messages sent */
	uint64_t lost_messages; /* send failed, or dropped with a broken stream */
	uint64_t lost_records;
	int32_t last_error; /* negative errno of the last failure, or 0 */
	int32_t broken;	    /* a stream failed: needs sl_sender_set_fd() */
};

SL_API int sl_sender_new(struct sl_sender **out, int fd, int stream,
			 uint32_t slots, uint32_t slot_bytes);
/* Copies a message into the queue. -EAGAIN: the queue is full (the peer
 * is slow or gone: try later); -EPIPE: the stream is broken; -EMSGSIZE:
 * longer than slot_bytes. */
SL_API int sl_sender_push(struct sl_sender *s, const uint8_t *data,
			  uint32_t len, uint32_t records);
/* Messages wake the thread in batches; this sends what is queued now
 * (drain does too). */
SL_API void sl_sender_kick(struct sl_sender *s);
/* Paces sending to records_per_sec (0: as fast as the socket takes it). */
SL_API void sl_sender_pace(struct sl_sender *s, uint32_t records_per_sec);
/* A new socket (after a reconnect): the stream is no longer broken. */
SL_API void sl_sender_set_fd(struct sl_sender *s, int fd);
/* Waits until the queue is empty, at most timeout_ms; returns the number
 * of messages still queued. */
SL_API int sl_sender_drain(struct sl_sender *s, int timeout_ms);
SL_API const struct sl_sender_stats *
sl_sender_stats(const struct sl_sender *s);
/* Stops the thread; what is still queued is counted lost. The stats stay
 * readable until free (which stops a sender not stopped yet). */
SL_API void sl_sender_stop(struct sl_sender *s);
SL_API void sl_sender_free(struct sl_sender *s);

/* ---- collector: NetFlow v5, NetFlow v9 and IPFIX messages --------------- */

/* Why a message, or a part of it, was not taken. */
enum sl_collector_drop {
	SL_COLLECTOR_DROP_OK = 0,
	SL_COLLECTOR_DROP_SHORT,       /* shorter than its header */
	SL_COLLECTOR_DROP_VERSION,     /* not 5, 9 or 10 */
	SL_COLLECTOR_DROP_LENGTH,      /* header length or count disagrees with
					  the data */
	SL_COLLECTOR_DROP_SET,	       /* a set (flowset) header is bad: length
					  < 4, past the end */
	SL_COLLECTOR_DROP_TEMPLATE,    /* a template is malformed */
	SL_COLLECTOR_DROP_NO_TEMPLATE, /* data for a template never seen (held,
					  then dropped) */
	SL_COLLECTOR_DROP_RECORD,      /* a record is malformed (variable length
					  past its set) */
	SL_COLLECTOR_DROP_EMPTY,       /* a message without any set or record */
	SL_COLLECTOR_DROP_EXPORTERS,   /* no room for a new exporter (every
					  known one was heard in this batch):
					  the message was refused */
	SL_COLLECTOR_DROP_MEMORY,      /* a new template or domain did not fit
					  max_memory, and nothing could be
					  evicted to make room */
	SL_COLLECTOR_DROP_WITHDRAWN,   /* data for a template withdrawn (IPFIX)
					  and not defined again */
	SL_COLLECTOR_DROP_COUNT,
};

/* A record's side whose counts are the flow's running totals
 * (octetTotalCount, packetTotalCount), not what it adds: a later report of
 * the flow replaces them. */
enum sl_rec_totals {
	SL_REC_TOTAL_FWD = 1,
	SL_REC_TOTAL_REV = 2,
};

/* One flow record from an exporter, normalized. Counts are what the
 * record adds (deltas), or totals where .totals says so; a uniflow record
 * has rev zero. */
struct sl_collector_rec {
	struct sl_key key; /* as exported: src -> dst */
	uint64_t first_ns;
	uint64_t last_ns;
	struct sl_counts fwd;
	struct sl_counts rev; /* RFC 5103 reverse elements, else 0 */
	uint32_t exporter;    /* index for sl_collector_msg_exporter() */
	uint32_t domain;      /* observation domain (IPFIX), source id (v9),
				 engine type << 8 | engine id (v5) */
	uint8_t tcp_flags;
	uint8_t tcp_flags_rev;
	uint8_t end_reason; /* IPFIX flowEndReason (RFC 5102), 0 if absent */
	uint8_t version;    /* 5, 9 or 10 */
	uint8_t icmp_type;
	uint8_t icmp_code;
	uint8_t totals; /* enum sl_rec_totals: which counts are running totals */
	uint8_t pad;
	/* 1 in N packet sampling the counts were already multiplied by (the
	 * record's own, its sampler's or its domain's rate, v5: the header's);
	 * 0 when the exporter told none: the counts are as sent */
	uint32_t sampling;
	uint32_t pad2;
};

/* Counters of one exporter (a source address and port). */
struct sl_exporter_stats {
	uint8_t addr[16]; /* IPv4 in the first 4 bytes */
	uint8_t family;	  /* 4 or 6 */
	uint8_t pad;
	uint16_t port;
	uint32_t generation; /* of its index: an index is reused after an
				eviction, (index, generation) names one
				exporter */
	uint64_t messages;  /* decoded, in part or whole */
	uint64_t records;   /* flow records taken */
	uint64_t templates; /* template records (options templates included) */
	/* messages or sets, by reason */
	uint64_t dropped[SL_COLLECTOR_DROP_COUNT];
	uint64_t seq_lost; /* by sequence numbers: records (v5, IPFIX) or
			      export packets (v9) never received */
	uint64_t seq_resets; /* sequence went backwards: exporter restart */
	uint64_t held;	     /* data sets held for a template to come */
	/* its templates and domains evicted, least recently used first, to
	 * stay under max_memory or the per-exporter bounds (4096 templates,
	 * 1024 domains); a domain's templates go with it */
	uint64_t evicted_templates;
	uint64_t evicted_domains;
	/* records whose counts were multiplied by a sampling rate, and the
	 * rate of the last one (1 in N; 0 before any) */
	uint64_t sampled;
	uint64_t sampling;
};

/* The decoder's state is bounded by memory: max_memory is the most its
 * exporters, domains, templates (with their compiled fields) and their
 * lookup tables may take, in bytes allocated (the allocator's own
 * overhead estimated at 16 bytes a block). A new one that does not fit
 * evicts the least recently used (by last use: a message for an exporter
 * or domain, a definition or a data set for a template), across all
 * exporters, so a flood from many sources pushes out its own state before
 * that of an exporter that keeps sending. An evicted exporter's counters
 * go to exporter index 0; the exporters of the last decode (of the
 * current batch, for a collector source) are never evicted. Besides:
 * held data (hold_max sets, at most 4 MiB) and the records of one
 * message. */
struct sl_collector_msg_opts {
	uint64_t template_timeout_ns; /* 0: 1800 s */
	uint64_t hold_ns;	      /* data waiting for its template: 0: 5 s */
	uint32_t hold_max;	      /* such sets, in all: 0: 256 */
	uint32_t max_exporters;	      /* 0: 65536; past it the least
					 recently used one is evicted */
	uint64_t max_memory;	      /* bytes, 0: 256 MiB; at least 64 KiB */
};

/* The state of a decoder (and, for a collector source, its IPFIX/TCP
 * connections). */
struct sl_collector_state {
	uint64_t memory;     /* bytes the state takes now (see max_memory) */
	uint64_t max_memory; /* its bound */
	uint64_t exporters;  /* live now */
	uint64_t domains;
	uint64_t templates;
	uint64_t evicted_exporters; /* in all, since the start */
	uint64_t evicted_domains;
	uint64_t evicted_templates;
	uint64_t expired_templates; /* not refreshed for template_timeout,
				       withdrawn, or of a closed IPFIX/TCP
				       session: freed */
	uint64_t tcp_open;	    /* connections open now */
	uint64_t tcp_accepted;
	uint64_t tcp_closed_idle;  /* no message for tcp_idle_ms */
	uint64_t tcp_closed_limit; /* the longest idle one, closed to let a
				      new one in (per address or in all) */
	uint64_t tcp_refused;	   /* not taken: no memory for it */
};

struct sl_collector_msg;

SL_API int sl_collector_msg_new(struct sl_collector_msg **out,
				const struct sl_collector_msg_opts *o);
SL_API void sl_collector_msg_free(struct sl_collector_msg *m);
/* Exporters: index 0 is not one (family 0), it counts messages refused
 * before an exporter is known (too short, a wrong version, too many
 * exporters) and holds the counters of evicted exporters; exporters start
 * at 1. The index of an evicted exporter gives NULL until it is reused.
 * Decodes one message (a datagram, or one IPFIX message of a TCP stream)
 * from an exporter (addr: 4 or 16 bytes by family; port). Returns the
 * number of records now in sl_collector_msg_records() (a malformed part is
 * counted and skipped: the valid records of the message are still taken),
 * or a negative error only for a failed allocation. now_ns drives template
 * expiry and the hold of data that came before its template; held data
 * decoded when its template arrives is in this call's records. */
SL_API int sl_collector_msg_decode(struct sl_collector_msg *m,
				   const uint8_t *msg, uint32_t len,
				   const uint8_t *addr, int family,
				   uint16_t port, uint64_t now_ns);
/* The records of the last decode; valid until the next decode. */
SL_API const struct sl_collector_rec *
sl_collector_msg_records(const struct sl_collector_msg *m);
SL_API uint32_t sl_collector_msg_exporters(const struct sl_collector_msg *m);
SL_API const struct sl_exporter_stats *
sl_collector_msg_exporter(const struct sl_collector_msg *m, uint32_t index);
/* Drops held data older than hold_ns (counted) and frees expired or
 * withdrawn templates; call it now and then when no message comes. */
SL_API void sl_collector_msg_expire(struct sl_collector_msg *m,
				    uint64_t now_ns);
/* Fills *out (its tcp_ fields 0); -EINVAL for NULL. */
SL_API int sl_collector_msg_state(const struct sl_collector_msg *m,
				  struct sl_collector_state *out);
SL_API const char *sl_collector_drop_name(int reason);

/* A collector source: listens for NetFlow v5/v9 and IPFIX exporters and
 * hands the engine their flow records instead of packets. */
struct sl_collector_opts {
	const char *listen[8]; /* "udp:ADDR:PORT" or "tcp:ADDR:PORT" (IPFIX
				  over TCP); IPv6 as [ADDR]:PORT */
	uint32_t n_listen;
	uint32_t workers;      /* > 1: the ports are shared by that many
				  processes, exporters spread by address */
	uint32_t rcvbuf;       /* socket receive buffer, 0: 8 MiB */
	uint32_t poll_ms;      /* longest wait for a message, 0: 100 */
	uint32_t idle_exit_ms; /* > 0: the input ends after this long without
				  a message (counted from the start until one
				  comes) */
	uint32_t tcp_idle_ms;  /* an IPFIX/TCP connection without a message
				  for this long is closed, 0: 300 s */
	struct sl_collector_msg_opts msg;
	char note[256]; /* out: why opening failed, in words */
};

/* Its sources give flow records to the engine, not packets:
 * sl_source_next() and sl_source_linktype() are -ENOTSUP, progress is 0
 * and 0; sl_source_stats() and sl_source_close() work.
 * IPFIX over TCP: at most 256 connections, 16 from one source address; a
 * new connection past either bound closes the longest idle one (of that
 * address, or of all), so idle connections never lock an exporter out.
 * Every connection closed or refused is counted (sl_collector_state). */
SL_API int sl_source_open_collector(struct sl_source **out,
				    struct sl_collector_opts *o);
/* The exporters a collector source has heard (0 for other sources and
 * NULL; sl_collector_exporter() is then NULL).
 * Index 0 is not an exporter (family 0): it counts messages from sources
 * refused or unknown (too short, a wrong version), and holds the counters
 * of evicted exporters. The index of an evicted exporter gives NULL until
 * a new exporter takes it (with the next generation). */
SL_API uint32_t sl_collector_exporters(const struct sl_source *src);
SL_API const struct sl_exporter_stats *
sl_collector_exporter(const struct sl_source *src, uint32_t index);
/* The collector's state (sl_collector_msg_state) and its TCP connection
 * counters; -EINVAL for another source or NULL. */
SL_API int sl_collector_state(const struct sl_source *src,
			      struct sl_collector_state *out);

/* ---- batch queries ---------------------------------------------------- */

/* What policies do most over a slice batch, done in C in one pass: group
 * the records by a key, sum their counters, count distinct values per
 * group, keep the top k. A query keeps its memory from one call to the
 * next (it grows to the largest batch it has seen, then allocates no
 * more); its rows are valid until its next call or sl_query_free. */
enum sl_group_by {
	SL_GROUP_SRC = 0,   /* the initiator's address, cut to a prefix */
	SL_GROUP_DST = 1,   /* the responder's */
	SL_GROUP_HOST = 2,  /* both ends: a record counts for its src and for
			       its dst, each seeing as fwd what it sent */
	SL_GROUP_SPORT = 3,
	SL_GROUP_DPORT = 4,
	SL_GROUP_PROTO = 5,
	SL_GROUP_ALL = 6,   /* one group: the batch's totals */
	SL_GROUP_ID = 7,    /* the spec's ids[i] of record i (0: left out) */
	SL_GROUP_BY_COUNT,
};

/* What sl_group_row.distinct counts: distinct values per group. */
enum sl_group_distinct {
	SL_DISTINCT_NONE = 0,
	SL_DISTINCT_SRC = 1,
	SL_DISTINCT_DST = 2,
	SL_DISTINCT_PEER = 3,  /* the other end's address: dst of a src (or
				  host-as-src) group, src of a dst group */
	SL_DISTINCT_SPORT = 4,
	SL_DISTINCT_DPORT = 5,
	SL_DISTINCT_PEER_PORT = 6, /* the other end's port */
	SL_DISTINCT_COUNT,
};

/* What sl_query_top orders by. */
enum sl_group_metric {
	SL_METRIC_BYTES = 0, /* fwd + rev */
	SL_METRIC_PKTS = 1,
	SL_METRIC_BYTES_FWD = 2,
	SL_METRIC_BYTES_REV = 3,
	SL_METRIC_PKTS_FWD = 4,
	SL_METRIC_PKTS_REV = 5,
	SL_METRIC_FLOWS = 6,
	SL_METRIC_DISTINCT = 7,
	SL_METRIC_COUNT,
};

struct sl_group_spec {
	uint8_t by;	    /* enum sl_group_by */
	uint8_t distinct;   /* enum sl_group_distinct */
	uint8_t prefix4;    /* address groups: IPv4 prefix length, 0..32 */
	uint8_t prefix6;    /* IPv6, 0..128 */
	uint8_t proto;	    /* only records of this IP protocol; 0: all */
	uint8_t ip_version; /* only 4 or only 6; 0: both */
	uint8_t pad[2];
	const uint64_t *skip; /* flow ids to leave out, ascending, or NULL */
	uint32_t n_skip;
	uint32_t pad2;
	const uint32_t *ids; /* SL_GROUP_ID: a group id per record */
};

/* What a group is keyed on; every unused byte is zero. */
struct sl_group_key {
	union {
		uint8_t addr[16]; /* address groups: the prefix, host bits
				     clear */
		uint32_t id;	  /* SL_GROUP_ID */
	};
	uint8_t ip_version; /* address groups: 4 or 6; else 0 */
	uint8_t prefix;	    /* address groups: the prefix length */
	uint8_t proto;	    /* SL_GROUP_PROTO */
	uint8_t by;	    /* enum sl_group_by, as in the spec */
	uint16_t port;	    /* SL_GROUP_SPORT, SL_GROUP_DPORT */
	uint16_t pad;
};

/* One group and its sums (as fwd, the direction its records had; for a
 * host group, what the host sent). */
struct sl_group_row {
	struct sl_group_key key;
	uint64_t flow_count; /* records counted (a flow once per slice) */
	struct sl_counts fwd;
	struct sl_counts rev;
	uint64_t distinct_count; /* with a spec's distinct, else 0 */
};

/* A group row as Lua gets it: row is valid while its query's rows stand,
 * at generation only (the next interval reuses the query). */
struct sl_group_handle {
	const struct sl_group_row *row;
	uint64_t generation;
	uint32_t engine;
};

struct sl_query;

SL_API int sl_query_new(struct sl_query **out);
SL_API void sl_query_free(struct sl_query *q);
/* Groups the n records (slice deltas) as spec says; returns the number of
 * rows, -EINVAL for a spec out of range, -ENOMEM. */
SL_API int sl_query_group(struct sl_query *q, const struct sl_group_spec *spec,
			  const struct sl_slice_rec *recs, uint32_t n);
/* Keeps the k rows biggest by metric (enum sl_group_metric), biggest
 * first, ties by key (addresses and ports ascending); k >= the rows sorts
 * them all. Returns the rows kept, or -EINVAL. */
SL_API int sl_query_top(struct sl_query *q, int metric, uint32_t k);
/* The rows of the last call, and their number. */
SL_API const struct sl_group_row *sl_query_rows(const struct sl_query *q,
						uint32_t *n);

/* ---- address ids ------------------------------------------------------ */

/* Small integer ids for addresses, so a policy can key Lua tables by host
 * without making a string per record: the same address always gets the
 * same id (1, 2, ...) from one table. A table keeps every address it was
 * asked for (24 bytes each, plus its hash slot) until freed. */
struct sl_addr_ids;

SL_API int sl_addr_ids_new(struct sl_addr_ids **out);
SL_API void sl_addr_ids_free(struct sl_addr_ids *t);
/* The id of addr (16 bytes, IPv4 in the first 4) of ip_version 4 or 6;
 * -EINVAL for another version, -ENOMEM. */
SL_API int64_t sl_addr_id(struct sl_addr_ids *t, const uint8_t *addr,
			  int ip_version);
/* Writes the 16 bytes of id's address; returns its ip_version, or -ENOENT
 * for an id the table did not give. */
SL_API int sl_addr_of_id(const struct sl_addr_ids *t, int64_t id,
			 uint8_t *addr);
SL_API uint32_t sl_addr_ids_count(const struct sl_addr_ids *t);

/* Writes the key's src (which = 0) or dst (1) address as text (IPv6 in
 * RFC 5952 form); returns its length, -EAFNOSUPPORT for a key of an id or
 * a string (no addresses), or -ENOSPC. */
SL_API int sl_key_addr(const struct sl_key *k, int which, char *buf,
		       size_t len);
/* One JSON object (no newline) with the documented fields of a flow or a
 * slice record; returns its length, or the length needed if len is too
 * small (as snprintf). */
SL_API int sl_flow_rec_json(const struct sl_flow_rec *r, char *buf, size_t len);
/* The statistics of stream `which` of a flow (SL_DIR_FWD, SL_DIR_REV or
 * SL_STATS_BOTH) into *out. */
SL_API void sl_flow_stream_stats(const struct sl_flow_stats *st, int which,
				 struct sl_stream_stats *out);
SL_API void sl_stream_moments(const struct sl_stream_stats *s,
			      struct sl_moments *out);
SL_API int sl_slice_rec_json(const struct sl_slice_rec *r, char *buf,
			     size_t len);
SL_API const char *sl_strerror(int code);
/* What is at path (symbolic links followed): 1 a regular file, 0 nothing,
 * -EISDIR a directory, -ENOTSUP any other kind (device, FIFO, socket),
 * or the negative errno of stat(). For files sluice replaces whole (state
 * files), where only a regular file will do. */
SL_API int sl_path_kind(const char *path);
SL_API const char *sl_end_reason_name(int reason);
SL_API const char *sl_tcp_state_name(int state);
/* "gre", "vxlan", ... (enum sl_tunnel_type); "none", "unknown". */
SL_API const char *sl_tunnel_name(int type);
/* "tcp", "udp", ...; NULL for a protocol without a name here. */
SL_API const char *sl_proto_name(int proto);
SL_API const char *sl_version(void);

/* ---- ClickHouse: rows inserted over HTTP ------------------------------- *
 *
 * Flow and slice records become TabSeparated rows of an open batch; a
 * batch closes at batch_rows rows (or when the caller says, e.g. by age:
 * sl_clickhouse_tick) and goes into a bounded queue that a thread of its
 * own POSTs to the server's HTTP interface, one INSERT per batch. Every
 * batch carries a unique id (column batch) and each row its number in it
 * (column row). A transient failure (no connection, a timeout, a 5xx the
 * server does not explain as a data or schema error) is retried with
 * backoff (100 ms doubling to 5 s); before sending again a request that
 * may have reached the server, the thread asks whether the batch is
 * there already, so a batch is inserted once. A permanent failure (4xx,
 * or a schema, parse or authentication error) stops the sink: the batch
 * and everything queued are counted lost and the server's message kept. */
struct sl_clickhouse;

struct sl_clickhouse_opts {
	const char *url;      /* http://HOST:PORT/ : no credentials, no query */
	const char *user;     /* NULL or "": the server's default user */
	const char *password; /* sent as HTTP basic authentication */
	const char *database;
	const char *table;
	const char *probe;     /* the probe column of every row */
	uint32_t batch_rows;   /* rows that close a batch */
	uint32_t batch_age_ms; /* sl_clickhouse_tick closes older batches */
	uint32_t queue;	       /* batches waiting for the thread */
	uint32_t timeout_ms;   /* one HTTP request */
};

/* Bytes of a message: the server's first line, or why it was not reached. */
enum { SL_CLICKHOUSE_MESSAGE = 512 };

struct sl_clickhouse_stats {
	uint64_t rows;	     /* inserted */
	uint64_t batches;    /* inserted */
	uint64_t retries;    /* requests tried again */
	uint64_t found;	     /* batches found inserted when a retry asked */
	uint64_t lost_rows;  /* taken, never inserted */
	uint64_t queued_rows; /* in the queue and the open batch */
	int32_t last_error;  /* negative errno (or -EIO: the server said no) */
	int32_t http_status; /* of the last failure, 0 if none answered */
	int32_t stopped;     /* a permanent failure stopped the sink */
	int32_t pad;
	char message[SL_CLICKHOUSE_MESSAGE]; /* the last failure */
};

/* Connects, creates the database and the table if absent (the schema in
 * README.md) and starts the thread. On failure, a negative errno and,
 * in err, what went wrong (no credentials in it). */
SL_API int sl_clickhouse_new(struct sl_clickhouse **out,
			     const struct sl_clickhouse_opts *o, char *err,
			     size_t errlen);
/* One row into the open batch. tags: a ClickHouse Array(String) literal
 * as TabSeparated text (['a=b']), or NULL. A full batch is queued first:
 * -EAGAIN when the queue has no room (the row is not taken; try later),
 * -EPIPE once the sink stopped. */
SL_API int sl_clickhouse_add_flow(struct sl_clickhouse *c,
				  const struct sl_flow_rec *r,
				  const char *tags);
SL_API int sl_clickhouse_add_slice(struct sl_clickhouse *c,
				   const struct sl_slice_rec *r,
				   const char *tags);
/* Slice records without tags; returns how many were taken (or the error
 * of the first). */
SL_API int sl_clickhouse_add_slices(struct sl_clickhouse *c,
				    const struct sl_slice_rec *r, uint32_t n);
/* Queues the open batch (0 if it had no rows); -EAGAIN: no room yet. */
SL_API int sl_clickhouse_submit(struct sl_clickhouse *c);
/* Queues the open batch if it is older than batch_age_ms. */
SL_API void sl_clickhouse_tick(struct sl_clickhouse *c);
/* Queues the open batch and waits, at most timeout_ms, until every batch
 * is inserted (or lost); returns the rows still waiting. */
SL_API int64_t sl_clickhouse_drain(struct sl_clickhouse *c, int timeout_ms);
SL_API void sl_clickhouse_stats(struct sl_clickhouse *c,
				struct sl_clickhouse_stats *st);
/* Stops the thread (a request under way is abandoned); what was not
 * inserted is counted lost. Stats stay readable until free. */
SL_API void sl_clickhouse_stop(struct sl_clickhouse *c);
SL_API void sl_clickhouse_free(struct sl_clickhouse *c);
/* sl_clickhouse_new with the columns of features (enum sl_feature) after
 * the others, in the CREATE TABLE and every INSERT: SL_FEATURE_STATS
 * NFStream's statistics (src2dst_min_ps ... bidirectional_cwr_packets),
 * SL_FEATURE_SPLT splt_direction, splt_ps, splt_piat_ms arrays of the
 * packets recorded, SL_FEATURE_DPI application_name,
 * application_category_name, requested_server_name strings (slices too).
 * A row without them (a slice, a flow of a run without the feature) has
 * 0, empty arrays and empty strings. Other bits are -EINVAL. */
SL_API int sl_clickhouse_new_features(struct sl_clickhouse **out,
				      const struct sl_clickhouse_opts *o,
				      uint32_t features, char *err,
				      size_t errlen);

#endif
