/* collector.h - what the collector's message decoder shares between its
 * files: the limits of the formats, the state (exporters, domains,
 * templates, held data, the records of the last decode), the context of
 * one message, and the functions one file gives the others.
 *
 *   collector_state.c     key/value tables, exporters, domains, templates;
 *                         creating, expiring and freeing the state
 *   collector_memory.c    the memory bound: what the state takes, the
 *                         least recently used lists, eviction
 *   collector_hold.c      data held for its template
 *   collector_template.c  template records: compiled into operations
 *   collector_data.c      data records: read by their template into
 *                         flat flow records (struct sl_collector_rec)
 *   collector_decode.c    NetFlow v5, v9 (RFC 3954) and IPFIX (RFC 7011,
 *                         biflows RFC 5103) messages, sequence numbers
 *
 * Identity and state:
 * - An exporter is a source address and port (an IPv4-mapped IPv6 address is
 *   taken as the IPv4 address, so a dual-stack socket and an IPv4 socket see
 *   the same exporter). Exporter index 0 is reserved: it is no exporter but
 *   counts the messages that could not be given to one: from a new source
 *   when no exporter could make room for it (SL_COLLECTOR_DROP_EXPORTERS),
 *   or from a new source whose message has no known version
 *   (SL_COLLECTOR_DROP_SHORT, SL_COLLECTOR_DROP_VERSION), so that a port
 *   scan or stray traffic does not use up exporter slots; it also takes
 *   the counters of evicted exporters, so no count is lost.
 * - Per exporter, a domain is (version, observation domain / source id /
 *   engine). It holds the sequence state and, for IPFIX, the exporter's
 *   systemInitTimeMilliseconds when an options record told it.
 * - Templates are keyed by (domain, template id); two exporters, or two
 *   domains of one, never share one. A template is compiled once into a
 *   short list of operations (fields we do not map, when adjacent and of
 *   fixed length, cost nothing), so a record costs one pass over the fields
 *   that matter.
 * - Memory (collector_memory.c): every exporter, domain and template is
 *   its own allocation, charged to m->mem with the tables that find them;
 *   a charge past max_memory first evicts the least recently used object
 *   (three lists, one per kind, ordered by a use tick; the oldest tail
 *   goes). An exporter goes with its domains, a domain with its templates.
 *   A message touches its templates, then its domain, then its exporter,
 *   so a parent is always used more recently than its children.
 */
#ifndef SL_COLLECTOR_H
#define SL_COLLECTOR_H

#include <errno.h>
#include <stddef.h>

#include "bytes.h"
#include "sluice.h"

#define V9_TEMPLATE_SET	   0
#define V9_OPTIONS_SET	   1
#define IPFIX_TEMPLATE_SET 2
#define IPFIX_OPTIONS_SET  3
#define MIN_DATA_SET	   256

#define VARLEN	    65535
#define VARLEN_LONG 255

#define NS_PER_US 1000ULL
#define NS_PER_MS 1000000ULL
#define NS_PER_S  1000000000ULL

#define IPPROTO_ICMP_	1
#define IPPROTO_ICMPV6_ 58

/* What a field of a template feeds. Start and end times come in pairs
 * (end = start + 1). */
enum fk {
	F_SKIP = 0,
	F_BYTES,
	F_PKTS,
	F_BYTES_TOT,
	F_PKTS_TOT,
	F_BYTES_OUT,
	F_PKTS_OUT,
	F_RBYTES,
	F_RPKTS,
	F_RBYTES_TOT,
	F_RPKTS_TOT,
	F_L2BYTES, /* layer2OctetDeltaCount: frames' bytes, as sluice counts */
	F_RL2BYTES,
	F_PROTO,
	F_FLAGS,
	F_RFLAGS,
	F_SPORT,
	F_DPORT,
	F_VLAN,
	F_ICMP,
	F_ICMP_TYPE,
	F_ICMP_CODE,
	F_END_REASON,
	F_START_S,
	F_END_S,
	F_START_MS,
	F_END_MS,
	F_START_US,
	F_END_US,
	F_START_NS,
	F_END_NS,
	F_START_UP,
	F_END_UP,
	F_START_DELTA,
	F_END_DELTA,
	F_INIT_MS,
	F_INIT_BYTES, /* NSEL initiator/responder: a biflow's two sides */
	F_INIT_PKTS,
	F_RESP_BYTES,
	F_RESP_PKTS,
	F_SAMPLING, /* 1 in N: samplingInterval, samplerRandomInterval */
	F_PKT_INTERVAL, /* samplingPacketInterval of every Interval + Space */
	F_PKT_SPACE,
	F_SAMPLER_ID, /* samplerId, selectorId: whose rate applies */
	F_SRC4, /* addresses: the four last, pointers rather than values */
	F_DST4,
	F_SRC6,
	F_DST6,
	F_COUNT,
};

_Static_assert(F_COUNT <= 64, "a template's kinds are bits of a uint64_t");

#define BIT(k)	    (1ULL << (k))
#define ADDR_BITS   (BIT(F_SRC4) | BIT(F_DST4) | BIT(F_SRC6) | BIT(F_DST6))
#define ADDR6_BITS  (BIT(F_SRC6) | BIT(F_DST6))
#define IS_ADDR(k)  ((k) >= F_SRC4)
#define ADDR_LEN(k) ((k) >= F_SRC6 ? 16 : 4)

struct op {
	uint32_t off; /* fixed-length templates: offset in the record */
	uint16_t len; /* VARLEN (IPFIX): length in the record */
	uint8_t kind; /* enum fk */
	uint8_t pad;
};

/* A circular doubly linked list (as the kernel's list_head). */
struct link {
	struct link *next, *prev;
};

#define link_entry(l, type, member)                                            \
	((type *)(void *)((char *)(l)-offsetof(type, member)))

static inline void link_init(struct link *h)
{
	h->next = h->prev = h;
}

static inline int link_empty(const struct link *h)
{
	return h->next == h;
}

static inline void link_del(struct link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->next = l->prev = l;
}

/* Puts l first in h (l must not be in a list, or be in one: it moves). */
static inline void link_front(struct link *h, struct link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->next = h->next;
	l->prev = h;
	h->next->prev = l;
	h->next = l;
}

struct domain;
struct exporter;

struct tmpl {
	uint64_t key;	  /* its key in tmpl_tab */
	uint64_t seen_ns; /* last (re)definition, use or withdrawal */
	uint64_t have;	  /* kinds a record of it carries (fixed length) */
	uint64_t tick;	  /* last use */
	struct link lru;  /* m->tmpl_lru, most recent first */
	struct link dsib; /* its domain's templates */
	struct link xsib; /* its exporter's templates, most recent first */
	struct domain *dom;
	struct op *ops;
	uint32_t n_ops;
	uint32_t cap_ops;
	uint32_t min_len; /* the record length, or its minimum with VARLEN */
	uint32_t gen;	  /* the domain's generation when defined */
	uint16_t id;
	uint8_t valid;
	uint8_t opt; /* options template: no flows in its records */
	uint8_t var; /* has VARLEN fields: walk the ops in order */
	uint8_t withdrawn; /* and not defined again: its data is dropped */
	/* defined over a stream (IPFIX/TCP): it lives as long as the
	 * session (RFC 7011 section 8), never by time */
	uint8_t stream;
	uint8_t pad;
};

/* Sequence numbers are followed by both conventions at once (see
 * collector_decode.c): RFC 7011's, records before the message
 * (SEQ_PRE), and softflowd's, records up to and with it (SEQ_POST). In
 * either, a message covers the records [lo, hi). */
enum { SEQ_PRE, SEQ_POST, SEQ_CONVS };
#define SEQ_GAPS 4

struct seq_conv {
	uint32_t end, end_alt; /* hi of the newest message: by all its
				  records, by its flow records only */
	uint64_t lost;	       /* as if the exporter followed this one */
	struct {
		uint32_t lo, hi; /* counted as lost; lo == hi: free */
	} gap[SEQ_GAPS];	 /* the latest, for late messages to fill */
	uint32_t next_gap;
	uint32_t pad;
};

struct seq {
	struct seq_conv conv[SEQ_CONVS];
	uint32_t votes[SEQ_CONVS]; /* messages only this one fitted */
	uint8_t mode;		   /* the one the exporter's count follows */
	uint8_t valid;		   /* the ends can predict the next */
	uint8_t pad[2];
};

/* A sampler an options record described: its id and rate (1 in N). */
struct sampler {
	uint64_t id;
	uint32_t rate;
	uint32_t pad;
};

#define DOM_SAMPLERS 8 /* per domain; more rotate out, oldest first */

struct domain {
	uint64_t key;	  /* its key in dom_tab */
	uint64_t serial;  /* names it in template keys; never reused */
	uint64_t seen_ns; /* last message */
	uint64_t tick;	  /* last use */
	struct link lru;  /* m->dom_lru, most recent first */
	struct link xsib; /* its exporter's domains, most recent first */
	struct link tmpls;
	struct exporter *ex;
	uint32_t exp; /* its exporter's index */
	uint32_t id;
	uint64_t init_ms; /* IPFIX systemInitTimeMilliseconds */
	struct seq seq;
	/* bumped by an all-templates withdrawal: [0] templates, [1] options
	 * templates; older templates are then dead at no cost */
	uint32_t gen[2];
	uint8_t version;
	uint8_t have_init;
	uint8_t n_samplers;
	uint8_t next_sampler; /* the one a new sampler replaces when full */
	uint32_t rate;	      /* sampling of the whole domain, 0: unknown */
	struct sampler samplers[DOM_SAMPLERS];
};

struct exporter {
	struct sl_exporter_stats st; /* first: handed out as is */
	uint64_t tick;		     /* last use */
	uint64_t batch;		     /* m->batch when last used: pinned */
	struct link lru;	     /* m->exp_lru, most recent first */
	struct link doms;
	struct link tmpls;
	uint32_t idx;
	uint32_t n_domains;
	uint32_t n_tmpls;
	uint32_t pad;
};

/* Data waiting for its template; slots keep their buffer for reuse. */
struct held {
	uint8_t *buf;
	uint32_t cap;
	uint32_t len;
	uint64_t at_ns;
	const struct domain *dom;
	uint32_t export_s; /* v9 unix_secs, IPFIX export time */
	uint32_t uptime;   /* v9 sys_uptime */
	uint16_t tid;
	uint8_t live;
	uint8_t pad;
};

/* Open addressing, linear probing, deletion by backward shift; key 0 is
 * an empty slot. */
struct kv {
	uint64_t key;
	void *val;
};

struct table {
	struct kv *slot;
	uint32_t mask; /* slots - 1 */
	uint32_t n;
};

struct sl_collector_msg {
	uint64_t tmpl_timeout_ns;
	uint64_t hold_ns;
	uint32_t hold_max;
	uint32_t max_exporters;

	/* the memory bound (collector_memory.c) */
	uint64_t max_mem;
	uint64_t mem;	/* charged now */
	uint64_t tick;	/* uses so far */
	uint64_t batch; /* exporters used in this batch are pinned */
	int batched;	/* the caller starts batches (a collector source) */
	uint32_t n_live_exp;
	uint32_t n_live_dom;
	uint32_t n_live_tmpl;
	struct link exp_lru, dom_lru, tmpl_lru;
	/* not to be evicted now: the message's domain, a template being
	 * stored */
	const struct domain *pin_dom;
	const struct tmpl *pin_tmpl;
	uint64_t evicted_exp, evicted_dom, evicted_tmpl, expired_tmpl;
	uint64_t dom_serial;

	struct sl_collector_rec
	    *recs; /* output of the last decode, grow-only */
	uint32_t n_recs;
	uint32_t cap_recs;

	struct exporter **exp; /* [0]: the messages of no exporter; NULL:
				  a free index */
	uint32_t n_exp;	       /* indexes used so far */
	uint32_t cap_exp;
	uint32_t *exp_free; /* free indexes (a stack) */
	uint32_t n_free;
	uint32_t cap_free;
	uint32_t exp_serial; /* generations given out */
	uint32_t *exp_hash;  /* exporter index + 1, 0: empty */
	uint32_t exp_mask;
	uint32_t exp_hashed;

	struct table dom_tab;
	struct table tmpl_tab;

	struct op *scratch; /* a template being compiled */
	uint32_t cap_scratch;

	struct held *hold; /* ring of hold_max slots */
	uint32_t hold_head;
	uint32_t hold_count; /* slots in use from head, released ones too */
	uint32_t hold_live;
	uint32_t hold_bytes;
};

/* One message (or one held set) being decoded. */
struct ctx {
	struct sl_collector_msg *m;
	struct exporter *ex;
	uint32_t exp;
	struct domain *dom; /* NULL until the header names it */
	uint64_t now;
	uint32_t export_s;
	uint32_t uptime;
	uint32_t n_all; /* data records, for the sequence */
	uint32_t n_flow;
	uint8_t version;
	uint8_t partial; /* a set was dropped or held */
	uint8_t stream;	 /* from a session (IPFIX/TCP) */
	uint8_t pad;
};

/* An exporter: a source address (IPv4 in the first 4 bytes) and port. */
struct ident {
	uint8_t addr[16];
	uint16_t port;
	uint8_t family;
};

/* ---- between the files -------------------------------------------------- */

/* collector_state.c */
int collector_grow(void **arr, uint32_t *cap, uint32_t want, size_t sz);
void collector_ident_make(struct ident *id, const uint8_t *addr, int family,
			  uint16_t port);
uint32_t collector_exp_find(const struct sl_collector_msg *m,
			    const struct ident *id);
int collector_exp_add(struct sl_collector_msg *m, const struct ident *id);
int collector_dom_get(struct ctx *c, uint32_t id);
struct tmpl *collector_tmpl_find(struct ctx *c, uint16_t tid);
int collector_tmpl_withdrawn(struct ctx *c, uint16_t tid);
struct tmpl *collector_tmpl_slot(struct ctx *c, uint16_t tid, int *err);
void *collector_table_del(struct table *t, uint64_t key);
void collector_exp_unhash(struct sl_collector_msg *m, uint32_t idx);

/* collector_memory.c */
#define ALLOC_OVERHEAD 16 /* a malloc block's own bytes, about */
int collector_mem_charge(struct sl_collector_msg *m, uint64_t bytes);
static inline void collector_mem_uncharge(struct sl_collector_msg *m,
					  uint64_t bytes)
{
	m->mem -= bytes;
}
uint64_t collector_tmpl_cost(const struct tmpl *t);
void collector_touch_tmpl(struct sl_collector_msg *m, struct tmpl *t);
void collector_touch_dom(struct sl_collector_msg *m, struct domain *d);
void collector_touch_exp(struct sl_collector_msg *m, struct exporter *e);
void collector_tmpl_free(struct sl_collector_msg *m, struct tmpl *t,
			 int evicted);
void collector_dom_free(struct sl_collector_msg *m, struct domain *d,
			int evicted);
void collector_exp_evict(struct sl_collector_msg *m, struct exporter *e);
int collector_evict_one(struct sl_collector_msg *m);
/* For a collector source: the records of a batch of decodes name their
 * exporters by index until the next batch, so those stay. */
void collector_msg_batch(struct sl_collector_msg *m);

/* collector_hold.c */
struct held *collector_hold_at(const struct sl_collector_msg *m, uint32_t i);
void collector_hold_kill(struct sl_collector_msg *m, struct held *h,
			 int counted);
void collector_hold_trim(struct sl_collector_msg *m);
void collector_hold_expire(struct sl_collector_msg *m, uint64_t now);
void collector_hold_drop_all(struct sl_collector_msg *m);
int collector_hold_add(struct ctx *c, uint16_t tid, const uint8_t *p,
		       uint32_t len);
int collector_hold_release(struct ctx *c, uint16_t tid);

/* The collector source's way in: as sl_collector_msg_decode(), with
 * stream 1 for a message of an IPFIX/TCP session, whose templates then
 * stay until collector_session_end() for it. */
int collector_msg_decode(struct sl_collector_msg *m, const uint8_t *msg,
			 uint32_t len, const uint8_t *addr, int family,
			 uint16_t port, uint64_t now_ns, int stream);
/* The session of (addr, family, port) closed: its templates go. */
void collector_session_end(struct sl_collector_msg *m, const uint8_t *addr,
			   int family, uint16_t port);

/* collector_template.c */
int collector_template_set(struct ctx *c, const uint8_t *p, uint32_t len,
			   int opt);

/* collector_data.c */
int collector_data_records(struct ctx *c, const struct tmpl *t,
			   const uint8_t *p, uint32_t len);
int collector_data_set(struct ctx *c, uint16_t tid, const uint8_t *p,
		       uint32_t len);
/* Records the rate (1 in N, 0: none told) a record's counts are sampled
 * at, and multiplies them by it. */
void collector_sampled(struct ctx *c, struct sl_collector_rec *r,
		       uint32_t rate);

/* ---- helpers ------------------------------------------------------------ */

/* Small and used by several files on the paths of every message or
 * record: static inline here, so that they still inline in each file, as
 * they did when the decoder was one file (rd16, rd32: bytes.h). */

static inline void drop(struct ctx *c, int reason)
{
	c->ex->st.dropped[reason]++;
	c->partial = 1;
}

/* ---- output ------------------------------------------------------------- */

static inline int recs_reserve(struct sl_collector_msg *m, uint32_t more)
{
	if (m->n_recs + more <= m->cap_recs)
		return 0;
	if (more > UINT32_MAX - m->n_recs)
		return -ENOMEM;
	return collector_grow((void **)&m->recs, &m->cap_recs, m->n_recs + more,
			      sizeof(*m->recs));
}

/* The time of sysUpTime value then, given base_ns at sysUpTime now. The
 * difference is what counts (uptime wraps after 49.7 days); a value a
 * little after now is clock skew, not a wrap. */
static inline uint64_t uptime_at(uint64_t base_ns, uint32_t now, uint32_t then)
{
	uint32_t diff = now - then;

	if (diff & 0x80000000u)
		return base_ns + (uint64_t)(uint32_t)-diff * NS_PER_MS;
	return base_ns - (uint64_t)diff * NS_PER_MS;
}

static inline void icmp_from(struct sl_collector_rec *r, uint64_t type_code)
{
	r->icmp_type = (uint8_t)(type_code >> 8);
	r->icmp_code = (uint8_t)type_code;
}

static inline int is_icmp(uint8_t proto)
{
	return proto == IPPROTO_ICMP_ || proto == IPPROTO_ICMPV6_;
}

/* Sampled counts times the rate: saturated, as every sum of counts. */
static inline uint64_t sat_mul(uint64_t v, uint32_t n)
{
	uint64_t r;

	return __builtin_mul_overflow(v, (uint64_t)n, &r) ? UINT64_MAX : r;
}

/* Every count of a record multiplied by its sampling rate (1 in n). */
static inline void rec_scale(struct sl_collector_rec *r, uint32_t n)
{
	r->fwd.pkts = sat_mul(r->fwd.pkts, n);
	r->fwd.bytes = sat_mul(r->fwd.bytes, n);
	r->fwd.ip_bytes = sat_mul(r->fwd.ip_bytes, n);
	r->rev.pkts = sat_mul(r->rev.pkts, n);
	r->rev.bytes = sat_mul(r->rev.bytes, n);
	r->rev.ip_bytes = sat_mul(r->rev.ip_bytes, n);
}

#endif
