/* engine.h - internals shared by the engine's files and the C tests.
 *
 * The engine is split by concern: engine.c (the step loop, events, ending
 * flows), flowtable.c (pool, hash, aliases, the bounded table), slice.c,
 * timeout.c (the clock), frag.c, packet.c (the packet path and captures),
 * record.c (a collector's records) and update.c (sl_engine_update). This
 * header holds the engine's structures and the functions those files call
 * in one another; none of it is the public ABI (sluice.h is), and with
 * -fvisibility=hidden none of it leaves the library. What runs per packet
 * is inline, in flowtable.h and tcp.h, so that it still inlines across the
 * files.
 */
#ifndef SL_ENGINE_H
#define SL_ENGINE_H

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "sluice.h"

struct bpf_program;

#define SL_NIL UINT32_MAX
#define SL_SEC 1000000000ULL /* one second of engine clock (ns) */

/* a + b, at most UINT64_MAX: counts from records (NetFlow, IPFIX, Lua
 * updates) are untrusted 64-bit values, and a sum of them must not wrap;
 * a deadline that does not fit is past the end of time, which the clock
 * never reaches (it stays below UINT64_MAX). */
static inline uint64_t sl_sat_add(uint64_t a, uint64_t b)
{
	uint64_t s;

	return __builtin_add_overflow(a, b, &s) ? UINT64_MAX : s;
}

/* A doubly linked list threaded through the pool by slot index. */
struct sl_list {
	uint32_t head;
	uint32_t tail;
};

struct sl_link {
	uint32_t prev;
	uint32_t next;
};

struct sl_flow {
	/* what a lookup reads comes first: one cache line; then what every
	 * packet updates (these fields and the first ones of rec): three
	 * lines in all */
	uint32_t hash;
	uint32_t hnext;	    /* hash chain: slot + 1, 0 ends it */
	struct sl_key ckey; /* canonical key: the hash key */
	struct sl_link idle;  /* in idle[tclass], ordered by last activity */
	uint64_t idle_clock;  /* engine clock at the last packet */
	uint32_t slice_epoch; /* interval it was last touched in */
	uint8_t live;
	uint8_t swapped;      /* ckey is rec.key reversed */
	uint8_t tclass;	      /* enum sl_timeout_class */
	uint8_t fin_seen;     /* bit 0: fwd sent FIN, bit 1: rev */
	uint8_t hist_seen[2]; /* history letters already written, per dir */
	uint8_t hist_len;
	uint8_t slice_flags[2];
	uint8_t capture;	  /* pcap writer number, 0: none */
	uint8_t has_encap;	  /* rec.encap is set (it is on a cold line) */
	uint8_t dpi_done;	  /* rec.app is final (also on a cold line) */
	struct sl_flow_rec rec;
	struct sl_link age;   /* in the age list, ordered by start */
	uint64_t start_clock; /* engine clock at the first packet */
	struct sl_counts base[2]; /* totals when the interval opened */
	double score;		  /* trims take the lowest first */
	uint32_t aliases;	  /* its alias keys: index + 1, 0 ends */
	uint64_t protect;	  /* protection bits: never trimmed while set */
	/* closing TCP (tcp.h): per direction the ack number that covers its
	 * FIN, which FINs the other side acknowledged, and whether the
	 * numbers mean anything (hand-made captures leave them all 0) */
	uint32_t fin_end[2];
	uint8_t fin_acked;
	uint8_t seq_known;
	uint8_t syn_seen;    /* bit per direction: a SYN without ACK came */
	uint8_t close_reason; /* FIN or RST: closed, in SL_TIMEOUT_TCP_CLOSED */
	uint8_t end_told;     /* collector: bit per direction whose exporter
				 said the flow ended (flowEndReason) */
	uint32_t syn_seq[2]; /* each direction's first SYN's sequence number */
} __attribute__((aligned(64))); /* a flow starts a cache line (pool_alloc) */
_Static_assert(offsetof(struct sl_flow, rec.state_code) < 3 * 64,
	       "what every packet updates stays in a flow's first three lines");

/* A datagram whose first fragment was seen: what identifies it, and the
 * ports and protocol its later fragments borrow. */
struct sl_frag_ent {
	uint8_t src[16];
	uint8_t dst[16];
	uint32_t id;
	uint16_t vlan;
	uint16_t vlan_inner;
	uint16_t sport;
	uint16_t dport;
	uint8_t ip_version;
	uint8_t nh;    /* IPv4 protocol field, IPv6 Fragment next header */
	uint8_t proto; /* the first fragment's upper-layer protocol */
};

/* The first-fragment table: set-associative, so datagrams whose keys
 * collide keep their entries while in flight; a full bucket gives up its
 * oldest. 1024 x 16 entries (960 KiB, touched as used) hold a few
 * thousand datagrams in flight with no evictions but of finished ones. */
enum { SL_FRAG_WAYS = 16, SL_FRAG_BUCKETS = 1024 };

struct sl_frag_bucket {
	/* hash | 1 of each way, 0: free: a lookup reads this line, then
	 * the way that matches */
	uint32_t tag[SL_FRAG_WAYS];
	uint64_t clock[SL_FRAG_WAYS]; /* engine clock at the first fragment */
	struct sl_frag_ent way[SL_FRAG_WAYS];
} __attribute__((aligned(64)));

/* A packet of the current batch, decoded ahead so that its hash bucket can
 * be prefetched while earlier packets are processed. */
struct sl_prep {
	struct sl_decoded d;
	struct sl_key ckey;
	uint32_t hash;
	uint8_t status; /* enum sl_decode_status */
	uint8_t swapped;
	uint8_t
	    hashed; /* later fragments are hashed once their ports are known */
	uint16_t wmask;	 /* pcap writers the packet goes to (bit = number) */
	uint32_t ahead;	 /* 1 + the packet whose flow to prefetch when this
			  * one is counted, 0: none */
	uint64_t fid;	 /* the flow it was counted in, 0: none */
};

/* prep status of a packet the input filter refused (beside enum
 * sl_decode_status) */
enum { SL_PREP_FILTERED = 0xff, SL_PREP_FOREIGN = 0xfe };

/* The input filter compiled for one link type (filter.c). */
struct sl_filter_prog {
	int linktype;
	int ok; /* compiled; else its packets are refused */
	struct bpf_program *prog;
};

/* A pcap-syntax expression compiled for each link type its packets have
 * (filter.c): the input filter, and each packet filter. */
struct sl_filter_set {
	char *expr; /* NULL: not set */
	struct sl_filter_prog progs[SL_INPUT_LINKTYPES];
	uint32_t n, last; /* compiled so far; the last one used */
	uint32_t unusable; /* link types it did not compile for */
	char note[256];	   /* libpcap's message for the first of them */
};

/* A growable array of events. */
struct sl_evbuf {
	struct sl_event *ev;
	uint32_t n, cap;
	/* with features: the flow end events' copies, by event index, an
	 * array per feature of the run */
	struct sl_flow_stats *stats;
	struct sl_splt *splt;
	struct sl_app_label *app;
	uint32_t stats_cap, splt_cap, app_cap;
};

/* An extra key of a flow (sl_engine_update), in its own hash table. */
struct sl_alias {
	struct sl_key key; /* canonical */
	uint32_t hash;
	uint32_t slot;	 /* the flow owning it */
	uint32_t hnext;	 /* hash chain: index + 1 */
	uint32_t fnext;	 /* next alias of the flow, or of the free list */
	uint8_t swapped; /* key as given was reversed to canonical form */
};

/* A copy of the sort keys, so trims sort without touching the pool. */
struct sl_trim_cand {
	double score;
	uint64_t idle_clock;
	uint64_t fid;
	uint32_t slot;
};

struct sl_engine {
	struct sl_config cfg;
	struct sl_source *src;
	struct sl_packet_batch batch;
	struct sl_prep prep[SL_BATCH_MAX];
	uint32_t cursor; /* next packet of batch to process */
	int source_error;
	int done;
	int stopping; /* sl_engine_shutdown() was called */
	int draining; /* and the source hands out what it had taken */
	int finish_reason; /* SL_END_EOF or _SHUTDOWN once the input ended
			    * and its flows are being ended, else 0 */

	struct sl_flow *pool;
	/* each slot's features, beside the pool: an array per feature of
	 * the run, NULL for the others */
	struct sl_flow_stats *feat_stats;
	struct sl_splt *feat_splt;
	struct sl_app_label *feat_app;
	struct sl_dpi *dpi; /* SL_FEATURE_DPI: nDPI's state (dpi.c) */
	uint32_t pool_size;
	uint32_t pool_used; /* slots ever handed out: the rest is untouched */
	/* the helper that faults in the next slots' pages (prefault.c),
	 * asked again once pool_used passes prefault_at (0: not started,
	 * UINT32_MAX: never again) */
	struct sl_prefault *prefault;
	uint32_t prefault_at;
	uint32_t free_head; /* LIFO of freed slots, through idle.next */
	uint32_t *buckets;  /* slot + 1, 0: empty */
	uint32_t bucket_mask;
	struct sl_list idle[SL_TIMEOUT_COUNT];
	struct sl_list age;
	uint64_t next_id;
	uint64_t now;	   /* the clock (timeout.c); 0: not set yet */
	/* before this time nothing is due (no timeout, no interval end):
	 * a packet moves the clock without looking; 0 when not known
	 * (handlers ran since). A packet counted now gives its flow
	 * deadlines no earlier than now + min_timeout_ns. */
	uint64_t quiet_until;
	uint64_t min_timeout_ns;
	uint64_t jump_at;  /* the last time refused as too far ahead */
	uint32_t jump_run; /* such times in a row, each near the one before */

	uint64_t slice_start;
	uint64_t slice_end;
	uint32_t slice_epoch;
	uint32_t *touched; /* slots touched in the open interval */
	uint32_t n_touched, cap_touched;

	struct sl_alias *aliases; /* grow-only */
	uint32_t cap_aliases, aliases_used, alias_free, n_aliases;
	uint32_t *abuckets; /* index + 1; allocated with the first alias */

	uint64_t last_trim; /* engine clock of the last trim, 0: never */
	struct sl_trim_cand *trim_list; /* grown to the live count */
	uint32_t cap_trim;

	uint32_t id;	     /* names the engine in its flow records */
	int in_step;	     /* inside sl_engine_step() */
	uint32_t flushed;    /* batch packets before it are written (pcap) */
	uint32_t n_writers;  /* pcap writers registered */
	struct sl_evbuf step_ev; /* the step's events (sl_output.events) */
	struct sl_evbuf late_ev; /* caused between steps (sl_engine_update) */
	struct sl_evbuf late_out; /* handed out by sl_engine_late() */
	struct sl_packet_ev *packets; /* of packet events */
	uint32_t cap_packets;
	uint32_t filter_mask; /* bit i: pfilters[i] is set */
	struct sl_filter_set pfilters[SL_PACKET_FILTERS];
	struct sl_filter_set input; /* input.expr NULL: none */
	struct sl_pcap_writer *writers[SL_WRITERS + 1]; /* [0] unused */
	uint32_t capture_all;
	/* slice records: the open interval's (flows that ended in it) are
	 * collected apart from the closed interval's, which Lua may be reading */
	struct sl_slice_rec *slices, *slices_pub;
	uint32_t n_slices, cap_slices, cap_slices_pub;
	/* SL_FEATURE_DPI: the slices' labels, by record index (swapped
	 * with them) */
	struct sl_app_label *slice_app, *slice_app_pub;
	uint32_t cap_slice_app, cap_slice_app_pub;
	struct sl_output out;
	struct sl_stats stats;

	/* a collector's records (instead of packets) */
	const struct sl_collector_rec *recs;
	uint32_t rcount, rcursor;
	uint64_t rec_wall; /* wall clock at the last records, 0: none yet */

	struct sl_frag_bucket frags[SL_FRAG_BUCKETS];
};

/* Grows an output array to hold need elements (grow only: after warm-up
 * it is reused, and the packet path allocates nothing). */
static inline int sl_grow(void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
	uint32_t ncap = *cap ? *cap : 1024;
	void *p;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*arr, (size_t)ncap * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

/* ---- engine.c: events and the end of flows ---------------------------- */

/* Appends an event (to the step's output, or between steps to the late
 * events); NULL when out of memory. */
struct sl_event *sl_event_push(struct sl_engine *e, uint32_t type,
			       uint32_t slot, uint64_t ts);
/* Ends a live flow: its last slice record, the end event, its slot freed.
 * SL_E_STATE, and nothing changed, for a flow that is not live. */
int sl_flow_end(struct sl_engine *e, struct sl_flow *f, int reason,
		uint64_t ts);
/* A step ends this many flows at the end of input: the events of a
 * table of a million flows (and the copies of their features) would
 * otherwise make one output of hundreds of megabytes, its pages faulted
 * in once and cold in every cache, where a bounded one stays warm. */
enum { SL_FINISH_CHUNK = 4096 };
/* End of input: ends the live flows, at most SL_FINISH_CHUNK of them per
 * step (the next steps end the rest), then closes the last interval and
 * marks the engine done; returns 1. Internal, as everything here: it is
 * not in sluice.h. */
int sl_engine_finish(struct sl_engine *e, int reason);

/* ---- prefault.c ------------------------------------------------------- */

/* The pages of the next slots, faulted in by a helper thread (started at
 * the first flow, asked again once pool_used passes prefault_at);
 * stopped before the arrays are unmapped. */
void sl_prefault_ask(struct sl_engine *e);
void sl_prefault_stop(struct sl_engine *e);

/* ---- flowtable.c ------------------------------------------------------ */

/* A new live flow for a key (ck: canonical, hashed), admitted by the
 * bounded table; NULL when the table refuses it. */
struct sl_flow *sl_flow_new(struct sl_engine *e, const struct sl_key *key,
			    const struct sl_key *ck, uint32_t hash, int swapped,
			    uint64_t ts);
/* Takes an ended flow out of the table and frees its slot. */
void sl_flow_release(struct sl_engine *e, struct sl_flow *f);
struct sl_alias *sl_alias_lookup(struct sl_engine *e, const struct sl_key *ck,
				 uint32_t hash);
/* Room for n more aliases, so that linking cannot fail halfway. */
int sl_alias_reserve(struct sl_engine *e, uint32_t n);
void sl_alias_link(struct sl_engine *e, struct sl_flow *f,
		   const struct sl_key *ck, uint32_t hash, int swapped);

/* ---- slice.c ---------------------------------------------------------- */

/* Writes the flow's record of the open interval (deltas since its last). */
int sl_slice_record(struct sl_engine *e, struct sl_flow *f);
/* slice_touch() (below) for a flow not yet listed in the open interval. */
int sl_slice_list(struct sl_engine *e, struct sl_flow *f);
void sl_slice_open(struct sl_engine *e, uint64_t t);
int sl_slice_close(struct sl_engine *e);

/* Lists a flow as touched in the open interval (once). */
static inline int slice_touch(struct sl_engine *e, struct sl_flow *f)
{
	if (f->slice_epoch == e->slice_epoch)
		return 0;
	return sl_slice_list(e, f);
}

/* ---- timeout.c -------------------------------------------------------- */

#define SL_CLOCK_MAX_JUMP_NS ((uint64_t)SL_CLOCK_MAX_JUMP_S * SL_SEC)

/* Whether t may move the clock (SL_CLOCK_MAX_JUMP_S in sluice.h): not
 * UINT64_MAX (a reader's "no representable time"), and not too far ahead
 * of a clock that was set (not 0: the epoch itself is what exporters and
 * generators without times write), unless it ends a run of such times
 * (SL_CLOCK_RESYNC, found by sl_clock_check()). Keeping the clock below
 * UINT64_MAX also keeps it below every saturated deadline and interval
 * end. Inline: the packet path asks for every packet. */
static inline int sl_clock_usable(const struct sl_engine *e, uint64_t t)
{
	if (t == UINT64_MAX)
		return 0;
	if (!e->now || t <= e->now || t - e->now <= SL_CLOCK_MAX_JUMP_NS)
		return 1;
	return e->jump_run >= SL_CLOCK_RESYNC && t == e->jump_at;
}

/* sl_clock_usable() for a packet's or a record's time, uncounted. Times
 * too far ahead are followed when SL_CLOCK_RESYNC of them come in a row,
 * each within the bound of the one before: then the input itself jumped. */
static inline int sl_clock_judge(struct sl_engine *e, uint64_t t)
{
	if (sl_clock_usable(e, t)) {
		e->jump_run = 0;
		return 1;
	}
	if (t != UINT64_MAX) {
		uint64_t d = t > e->jump_at ? t - e->jump_at : e->jump_at - t;

		e->jump_run = e->jump_run && d <= SL_CLOCK_MAX_JUMP_NS
				  ? e->jump_run + 1
				  : 1;
		e->jump_at = t;
		if (e->jump_run >= SL_CLOCK_RESYNC)
			return 1; /* sl_clock_advance() now takes it */
	}
	return 0;
}

/* sl_clock_judge(), counting a time refused as malformed
 * (SL_MAL_TIMESTAMP). */
static inline int sl_clock_check(struct sl_engine *e, uint64_t t)
{
	if (sl_clock_judge(e, t))
		return 1;
	e->stats.malformed++;
	e->stats.malformed_by[SL_MAL_TIMESTAMP]++;
	return 0;
}

/* A shared input (sl_config.shared_input: every worker reads all of it,
 * or takes every window of it read once, coop.c):
 * a flow's packets belong to the worker its hash falls to (the high bits:
 * the low ones pick buckets), packets of no flow to worker 0. Every worker
 * still moves its clock by every packet, so timeouts fire and slices close
 * alike in all of them. */
static inline uint32_t sl_worker_of_hash(const struct sl_engine *e,
					 uint32_t hash)
{
	return (uint32_t)(((uint64_t)hash * e->cfg.workers) >> 32);
}

static inline int sl_foreign_hash(const struct sl_engine *e, uint32_t hash)
{
	return e->cfg.shared_input &&
	       sl_worker_of_hash(e, hash) != e->cfg.worker;
}

static inline int sl_foreign_flowless(const struct sl_engine *e)
{
	return e->cfg.shared_input && e->cfg.worker;
}

/* Moves the clock to t: 1 when an interval closed, 0, or an error. A t
 * that sl_clock_check() refuses leaves the clock where it is (uncounted:
 * the callers with data check first). */
int sl_clock_advance(struct sl_engine *e, uint64_t t);
/* CLOCK_REALTIME in ns. */
uint64_t sl_wall_ns(void);
/* The wall clock moves a live source's clock while no packet comes. */
int sl_clock_tick(struct sl_engine *e);
/* A collector's clock runs on with the wall clock while no record comes. */
int sl_clock_tick_records(struct sl_engine *e);

/* ---- filter.c --------------------------------------------------------- */

/* Compiles expr for linktype (< 0: checks it for Ethernet, compiles
 * nothing yet); NULL clears the set. 0, or -EINVAL with libpcap's
 * message in err. */
int sl_filter_set_init(struct sl_filter_set *fs, const char *expr,
		       int linktype, char *err, size_t errlen);
/* Whether the set takes a packet; compiles it for the packet's link type
 * on the first packet of that type. */
int sl_filter_set_match(struct sl_filter_set *fs, const struct sl_packet *p);
void sl_filter_set_free(struct sl_filter_set *fs);

/* ---- frag.c, packet.c, record.c --------------------------------------- */

/* Remembers a first fragment's ports and protocol; gives them to its
 * later fragments. Returns 1 for a later fragment that found no first
 * (the caller counts it as frag_unmatched), else 0. */
int sl_frag_remember(struct sl_engine *e, struct sl_decoded *d);
/* The bucket of the table a fragment's datagram goes in (tests make
 * collisions with it). */
uint32_t sl_frag_bucket_of(const struct sl_decoded *d);
/* Application labels (dpi.c): the engine's nDPI module and flow states
 * (-ENOTSUP without nDPI); a packet of a flow; a flow's end, before its
 * record is copied; the engine's end. */
int sl_dpi_open(struct sl_engine *e);
void sl_dpi_packet(struct sl_engine *e, struct sl_flow *f,
		   const struct sl_packet *p, const struct sl_decoded *dec);
void sl_dpi_flow_end(struct sl_engine *e, struct sl_flow *f);
void sl_dpi_close(struct sl_engine *e);
/* The nDPI flow states, a slot each (slot_size bytes apart), or NULL. */
void *sl_dpi_slots(const struct sl_engine *e, size_t *slot_size);
/* One step over packets (a batch read if the last one is done). */
int sl_step_packets(struct sl_engine *e);
/* Writes the batch's packets marked for pcap writers, up to the cursor. */
void sl_capture_flush(struct sl_engine *e);
/* One step over a collector's records. */
int sl_step_records(struct sl_engine *e);

#endif
