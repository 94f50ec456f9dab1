/* source.h - what every packet source kind shares.
 *
 * A source kind (pcap file, live capture, ...) defines its own struct with
 * a struct sl_source as its first member, points base.ops at a static ops
 * table, and hands &base out as the opaque struct sl_source. The public
 * sl_source_next/linktype/progress/stats/close dispatch through the table
 * (source.c). An op that does not apply to a kind is left NULL: the
 * dispatcher then answers -ENOTSUP (progress: 0 and 0) without calling it,
 * as sluice.h documents for each function. Only close is required.
 */
#ifndef SL_SOURCE_H
#define SL_SOURCE_H

#include "sluice.h"

/* Who takes a packet of an input shared by workers: worker 0..N-1, or
 * every worker (fragments: each remembers first fragments), or none
 * (refused by the input filter: worker 0 counts it, the others as
 * foreign, and it moves no clock). */
enum { SL_OWNER_FILTERED = 0xfffe, SL_OWNER_ALL = 0xffff };
/* Decides the owner code of each of n packets of a shared input. */
typedef void (*sl_classify_fn)(void *ctx, const struct sl_packet *pkt,
			       uint32_t n, uint16_t *owner);

struct sl_source_ops {
	/* As sl_source_next(): count, 0 at the end, or a sticky error.
	 * NULL for a kind without packets (collectors). */
	int (*next)(struct sl_source *src, struct sl_packet_batch *b);
	/* NULL: no packets, no link type. */
	int (*linktype)(const struct sl_source *src);
	/* Both pointers are given (the dispatcher handles NULL ones). NULL:
	 * nothing to report, sl_source_progress() gives 0 and 0. */
	void (*progress)(const struct sl_source *src, uint64_t *pos,
			 uint64_t *size);
	/* Frees the source and everything it owns. */
	void (*close)(struct sl_source *src);
	/* Live sources: the run stops. What arrives from now on is not
	 * taken; next() hands out what was taken before (the packets
	 * waiting in the ring), without waiting longer than the kernel
	 * needs to hand them over, then returns 0. NULL: the run ends at
	 * once (a file's rest is not read). */
	void (*stop)(struct sl_source *src);
	/* Live sources: counters (kernel drops read on each call). May be
	 * NULL: sl_source_stats() then returns -ENOTSUP. */
	int (*stats)(struct sl_source *src, struct sl_source_stats *st);
	/* Collectors: flow records instead of packets (next is then NULL).
	 * Same returns as next, -EAGAIN when idle; *out stays valid until
	 * the next call. NULL for packet sources: there is no public
	 * dispatcher, the engine (engine.c) checks it before calling. */
	int (*records)(struct sl_source *src,
		       const struct sl_collector_rec **out);
	/* Collectors: the run ends (end of input or a stop), no more
	 * records will be asked for: what waits for more input (data held
	 * for its template) is given up, counted. May be called more than
	 * once. NULL: nothing waits. */
	void (*records_end)(struct sl_source *src);
	/* A shared input read once for all workers (coop.c): the owner code
	 * of each packet of the last batch, and the engine's way to decide
	 * them (sl_packet_classify), given at sl_engine_attach(). NULL for
	 * other kinds. */
	const uint16_t *(*owners)(const struct sl_source *src);
	void (*set_classifier)(struct sl_source *src, sl_classify_fn fn,
			       void *ctx);
};

struct sl_source {
	const struct sl_source_ops *ops; /* first: kinds embed sl_source */
};

/* 1 when a signal the run loop reads (a stop, a reload) came and is not
 * taken yet (signal.c): a source that waits for input gives up the wait
 * with -EINTR (no packets, not the end) so that the loop sees it. */
int sl_signal_attention(void);

/* Compiles a pcap-syntax filter for a link type (libpcap, no device
 * needed). On error writes libpcap's message to note. */
struct bpf_program;
int sl_filter_compile(const char *filter, int linktype, uint32_t snaplen,
		      struct bpf_program *prog, char *note, size_t note_len);

/* The DLT_ value libpcap compiles for, of a LINKTYPE_ value (a packet's
 * sl_packet.linktype, sl_source_linktype()). */
int sl_linktype_dlt(int linktype);

/* An XDP program this process attached (signal.c): a second stop signal,
 * or the watchdog, ends the process at once, and first detaches it through
 * netlink (async-signal-safe syscalls), where libxdp's cleanup at close
 * would not run. flags: XDP_FLAGS_SKB_MODE or XDP_FLAGS_DRV_MODE. Returns
 * the guard's number for sl_signal_xdp_unguard, or -1 (none free). */
int sl_signal_xdp_guard(int ifindex, uint32_t flags);
void sl_signal_xdp_unguard(int guard);

/* The start of a live source's open (live.c): both pointers given, *out
 * and the note cleared, an interface named. 0, -EINVAL, or SL_E_OPTION
 * (with a note) when no interface is named. */
int sl_live_open_check(struct sl_source **out, struct sl_live_opts *o);
/* Monotonic milliseconds, for the live sources' waits. */
uint64_t sl_live_now_ms(void);
/* The interface named does not exist: says so in the note; -ENODEV. */
int sl_live_no_interface(struct sl_live_opts *o);

/* Appends to the note, "; " between entries. */
__attribute__((format(printf, 2, 3))) void
sl_live_note_add(struct sl_live_opts *o, const char *fmt, ...);

/* Classic pcap (source_pcap.c): the file header's byte order,
 * timestamp unit and link type. sl_pcap_format_read(): 0, SL_E_FORMAT
 * (not classic pcap: pcapng, anything else) or SL_E_TRUNCATED. */
struct sl_pcap_format {
	int swap;
	int linktype;
	uint32_t frac_ns;
};
#define SL_PCAP_HDR_LEN 24
#define SL_PCAP_MAX_RECORD (16 + 262144)
int sl_pcap_format_read(struct sl_pcap_format *f, const uint8_t *p,
			size_t len);
/* The whole records at the front of buf[0, len), at most max of them,
 * as packets pointing into buf: the bytes they take. *err: SL_E_FORMAT
 * at a record that cannot be (a length past the limit), else 0. */
size_t sl_pcap_walk(const struct sl_pcap_format *f, const uint8_t *buf,
		    size_t len, struct sl_packet *pkt, uint32_t max,
		    uint32_t *count, int *err);

/* Engine (packet.c): the owners of a shared input's packets, as the
 * engine's input filter, decoder and flow hash decide them. */
void sl_packet_classify(void *ctx, const struct sl_packet *pkt, uint32_t n,
			uint16_t *owner);

#endif
