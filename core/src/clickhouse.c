/* clickhouse.c - flow and slice records inserted into ClickHouse over its
 * HTTP interface, with libcurl.
 *
 * The caller formats rows (TabSeparated) into the open batch; a full batch
 * (or an old one, at a tick) goes into a bounded queue, and a thread of
 * its own POSTs each batch as one INSERT. When the queue is full the
 * caller hears -EAGAIN: its route waits or lags, capture never waits for
 * the network here.
 *
 * Exactly once: every batch has an id (a random session number plus a
 * sequence number) in its rows' batch column. A failed request that may
 * have reached the server (the connection dropped after it was sent, a
 * timeout, a 5xx) is not simply sent again: the thread first asks
 * SELECT count() ... WHERE batch = id, and sends again only if the batch
 * is not there. One INSERT of fewer than max_insert_block_size (1048576)
 * rows into a MergeTree table is one part, written whole or not at all.
 * (A request that timed out while the server still works on it could
 * still land after the question: the request timeout should be longer
 * than the server needs for a batch.)
 *
 * Which failures are permanent: any 4xx, and a 5xx whose "Code: N" is a
 * schema, parse, syntax or authentication error (18.16 answers those with
 * 500). Anything else is retried with backoff until the sink is stopped.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "sluice.h"
#include "thread.h"
#include "text.h"

enum {
	ROW_MAX = 1536, /* one row without its probe and tags */
	/* the feature columns: 48 statistics of 24 bytes at most (12
	 * significant digits), 32 early packets of 2 + 6 + 24, the label's
	 * three strings escaped (each byte 2 at most) */
	FEATURES_MAX = 48 * 25 + 32 * 33 + 16 +
		       2 * (SL_APP_NAME_MAX + SL_APP_CATEGORY_MAX +
			    SL_APP_SERVER_MAX) + 3,
	PROBE_MAX = 255,
	BATCH_FIRST = 64 * 1024,
	BACKOFF_FIRST_MS = 100,
	BACKOFF_MAX_MS = 5000,
	CONNECT_TIMEOUT_MS = 2000,
	REPLY_MAX = 2048,
	MSG_MAX = SL_CLICKHOUSE_MESSAGE,
};

/* How a request ended. */
enum outcome {
	OUT_OK = 0,
	OUT_UNSENT,    /* transient, and the server never saw it */
	OUT_TRANSIENT, /* transient, and it may have arrived */
	OUT_PERMANENT,
	OUT_CANCELED, /* the sink is stopping */
};

struct batch {
	char *data;
	size_t len, cap;
	uint32_t rows;
	uint64_t id;
	uint64_t opened_ns;
};

struct sl_clickhouse {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	int have_thread;
	int joined;
	int stop; /* __atomic: also read by libcurl's progress callback */
	int dead; /* __atomic: a permanent failure stopped the sink */
	CURL *curl;
	struct curl_slist *headers;
	char *base_url;
	char *insert_url;
	char *count_sql; /* "SELECT count() FROM db.table WHERE batch = " */
	char *probe;	 /* escaped for TabSeparated */
	size_t probe_len;
	uint32_t batch_rows, batch_age_ms, timeout_ms, nq;
	uint32_t features; /* enum sl_feature: the table's feature columns */
	uint64_t session, seq;
	struct batch open; /* the caller's */
	struct batch *q;   /* ring of nq, under lock */
	uint32_t head, queued;
	struct sl_clickhouse_stats st; /* under lock */
	char reply[REPLY_MAX];	       /* the thread's (or new()'s) */
	size_t reply_len;
};

/* Columns: name and type, in the order of a row. README.md documents
 * them; the CREATE TABLE and the INSERT are made from this list. */
static const char *const columns[][2] = {
	{"kind", "String"},	       {"probe", "String"},
	{"time_start", "DateTime"},    {"time_end", "DateTime"},
	{"start_ns", "UInt64"},	       {"end_ns", "UInt64"},
	{"flow_id", "UInt64"},	       {"ip_version", "UInt8"},
	{"proto", "UInt8"},	       {"src", "String"},
	{"dst", "String"},	       {"sport", "UInt16"},
	{"dport", "UInt16"},	       {"vlan", "UInt16"},
	{"vlan_inner", "UInt16"},      {"packets", "UInt64"},
	{"bytes", "UInt64"},	       {"pkts_fwd", "UInt64"},
	{"pkts_rev", "UInt64"},	       {"bytes_fwd", "UInt64"},
	{"bytes_rev", "UInt64"},       {"total_pkts_fwd", "UInt64"},
	{"total_pkts_rev", "UInt64"},  {"total_bytes_fwd", "UInt64"},
	{"total_bytes_rev", "UInt64"}, {"tcp_flags_fwd", "UInt8"},
	{"tcp_flags_rev", "UInt8"},    {"icmp_type", "UInt8"},
	{"icmp_code", "UInt8"},	       {"history", "String"},
	{"state", "String"},	       {"end_reason", "String"},
	{"tunnel", "String"},	       {"tunnel_src", "String"},
	{"tunnel_dst", "String"},      {"tunnel_id", "UInt32"},
	{"tunnel_changes", "UInt32"},  {"tags", "Array(String)"},
	{"batch", "UInt64"},	       {"row", "UInt32"},
};

enum { NCOLUMNS = sizeof(columns) / sizeof(columns[0]) };

/* With features (sl_clickhouse_new_features), after row: NFStream's
 * names, as in JSON lines. STATS for each of src2dst_, dst2src_ and
 * bidirectional_, in the order of stat_put(). */
static const char *const stat_dirs[3] = {"src2dst_", "dst2src_",
					 "bidirectional_"};
static const char *const stat_columns[][2] = {
	{"min_ps", "UInt32"},	       {"mean_ps", "Float64"},
	{"stddev_ps", "Float64"},      {"max_ps", "UInt32"},
	{"min_piat_ms", "Float64"},    {"mean_piat_ms", "Float64"},
	{"stddev_piat_ms", "Float64"}, {"max_piat_ms", "Float64"},
	{"fin_packets", "UInt64"},     {"syn_packets", "UInt64"},
	{"rst_packets", "UInt64"},     {"psh_packets", "UInt64"},
	{"ack_packets", "UInt64"},     {"urg_packets", "UInt64"},
	{"ece_packets", "UInt64"},     {"cwr_packets", "UInt64"},
};

enum { NSTATS = sizeof(stat_columns) / sizeof(stat_columns[0]) };

/* SPLT: the packets recorded, without NFStream's -1 padding. */
static const char *const splt_columns[][2] = {
	{"splt_direction", "Array(UInt8)"},
	{"splt_ps", "Array(UInt16)"},
	{"splt_piat_ms", "Array(Float64)"},
};

/* DPI: the application label, empty until nDPI named it. */
static const char *const app_columns[] = {
	"application_name",
	"application_category_name",
	"requested_server_name",
};

/* ClickHouse error codes that no retry mends (a 5xx from old servers). */
static const int permanent_codes[] = {
	6,   /* CANNOT_PARSE_TEXT */
	8,   /* THERE_IS_NO_COLUMN */
	10,  /* NOT_FOUND_COLUMN_IN_BLOCK */
	16,  /* NO_SUCH_COLUMN_IN_TABLE */
	20,  /* NUMBER_OF_COLUMNS_DOESNT_MATCH */
	25,  /* CANNOT_PARSE_ESCAPE_SEQUENCE */
	26,  /* CANNOT_PARSE_QUOTED_STRING */
	27,  /* CANNOT_PARSE_INPUT_ASSERTION_FAILED */
	33,  /* CANNOT_READ_ALL_DATA */
	36,  /* BAD_ARGUMENTS */
	38,  /* CANNOT_PARSE_DATE */
	41,  /* CANNOT_PARSE_DATETIME */
	43,  /* ILLEGAL_TYPE_OF_ARGUMENT */
	44,  /* ILLEGAL_COLUMN */
	46,  /* UNKNOWN_FUNCTION */
	47,  /* UNKNOWN_IDENTIFIER */
	53,  /* TYPE_MISMATCH */
	60,  /* UNKNOWN_TABLE */
	62,  /* SYNTAX_ERROR */
	69,  /* ARGUMENT_OUT_OF_BOUND */
	70,  /* CANNOT_CONVERT_TYPE */
	72,  /* CANNOT_PARSE_NUMBER */
	81,  /* UNKNOWN_DATABASE */
	117, /* INCORRECT_DATA */
	130, /* CANNOT_READ_ARRAY_FROM_TEXT */
	131, /* TOO_LARGE_STRING_SIZE */
	164, /* READONLY */
	192, /* UNKNOWN_USER */
	193, /* WRONG_PASSWORD */
	194, /* REQUIRED_PASSWORD */
	195, /* IP_ADDRESS_NOT_ALLOWED */
	497, /* ACCESS_DENIED */
	516, /* AUTHENTICATION_FAILED */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_ALL);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---- rows ---------------------------------------------------------------- */

/* A string as a TabSeparated field. */
static char *put_tsv(char *p, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (ch == '\t' || ch == '\n' || ch == '\\') {
			*p++ = '\\';
			ch = ch == '\t' ? 't' : ch == '\n' ? 'n' : '\\';
		}
		*p++ = ch;
	}
	return p;
}

static char *put_num(char *p, uint64_t v)
{
	p = put_u64(p, v);
	*p++ = '\t';
	return p;
}

static char *put_name(char *p, const char *s)
{
	p = put_str(p, s);
	*p++ = '\t';
	return p;
}

static char *put_addr_field(char *p, const uint8_t *a, int ip_version)
{
	if (ip_version)
		p = put_ip(p, a, ip_version);
	*p++ = '\t';
	return p;
}

/* kind, probe, times: the start of every row. */
static char *put_head(struct sl_clickhouse *c, char *p, const char *kind,
		      uint64_t start_ns, uint64_t end_ns, uint64_t fid)
{
	p = put_name(p, kind);
	memcpy(p, c->probe, c->probe_len);
	p += c->probe_len;
	*p++ = '\t';
	p = put_num(p, start_ns / 1000000000u);
	p = put_num(p, end_ns / 1000000000u);
	p = put_num(p, start_ns);
	p = put_num(p, end_ns);
	return put_num(p, fid);
}

/* A flow of engine:update's id or string key has ip_version 0 and the id
 * or the string in src. */
static char *put_key(char *p, const struct sl_key *k)
{
	uint64_t id;

	if (k->ip_version == SL_KEY_ID || k->ip_version == SL_KEY_STRING) {
		p = PUT_LIT(p, "0\t0\t");
		if (k->ip_version == SL_KEY_ID) {
			memcpy(&id, k->src, sizeof(id));
			p = put_u64(p, id);
		} else {
			p = put_tsv(p, (const char *)k->src,
				    k->sport < 32 ? k->sport : 32);
		}
		return PUT_LIT(p, "\t\t0\t0\t0\t0\t");
	}
	p = put_num(p, k->ip_version);
	p = put_num(p, k->proto);
	p = put_addr_field(p, k->src, k->ip_version);
	p = put_addr_field(p, k->dst, k->ip_version);
	p = put_num(p, k->sport);
	p = put_num(p, k->dport);
	p = put_num(p, k->vlan);
	return put_num(p, k->vlan_inner);
}

/* end_reason, the tunnel columns, tags, batch and row: every row's end. */
static char *put_tail(struct sl_clickhouse *c, char *p, int reason,
		      const struct sl_tunnel *t, uint32_t changes,
		      const char *tags, size_t tags_len)
{
	p = put_name(p, reason ? sl_end_reason_name(reason) : "");
	p = put_name(p, t->type ? sl_tunnel_name(t->type) : "");
	p = put_addr_field(p, t->src, t->ip_version);
	p = put_addr_field(p, t->dst, t->ip_version);
	p = put_num(p, t->has_id ? t->id : 0);
	p = put_num(p, changes);
	if (tags_len) {
		memcpy(p, tags, tags_len);
		p += tags_len;
	} else {
		p = PUT_LIT(p, "[]");
	}
	*p++ = '\t';
	p = put_num(p, c->open.id);
	return put_u64(p, c->open.rows);
}

static char *put_double_field(char *p, double v)
{
	*p++ = '\t';
	return put_double(p, v);
}

/* The statistics columns: a record's, or 0 (a slice, a flow without). */
static char *put_stats(char *p, const struct sl_flow_stats *st)
{
	for (int i = 0; i < 3; i++) {
		struct sl_stream_stats stream, *s = &stream;
		struct sl_moments m;

		sl_flow_stream_stats(st, i, s);
		sl_stream_moments(s, &m);
		*p++ = '\t';
		p = put_u64(p, s->min_ps);
		p = put_double_field(p, m.mean_ps);
		p = put_double_field(p, m.stddev_ps);
		*p++ = '\t';
		p = put_u64(p, s->max_ps);
		*p++ = '\t';
		p = put_ns_as_ms(p, s->min_piat_ns);
		p = put_double_field(p, m.mean_piat_ms);
		p = put_double_field(p, m.stddev_piat_ms);
		*p++ = '\t';
		p = put_ns_as_ms(p, s->max_piat_ns);
		for (int b = 0; b < SL_TCP_FLAG_BITS; b++) {
			*p++ = '\t';
			p = put_u64(p, s->flag_packets[b]);
		}
	}
	return p;
}

static char *put_zero_stats(char *p)
{
	for (int i = 0; i < 3 * NSTATS; i++)
		p = PUT_LIT(p, "\t0");
	return p;
}

/* The early packets as arrays: only the n recorded. */
static char *put_splt(char *p, const struct sl_splt *sp)
{
	uint32_t n = sp->n < SL_SPLT_MAX ? sp->n : SL_SPLT_MAX;

	p = PUT_LIT(p, "\t[");
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			*p++ = ',';
		*p++ = (char)('0' + (sp->reverse >> i & 1));
	}
	p = PUT_LIT(p, "]\t[");
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			*p++ = ',';
		p = put_u64(p, sp->ps[i]);
	}
	p = PUT_LIT(p, "]\t[");
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			*p++ = ',';
		p = put_ns_as_ms(p, sp->piat_ns[i]);
	}
	*p++ = ']';
	return p;
}

static char *put_app(char *p, const struct sl_app_label *a)
{
	const char *field[] = {a->application_name, a->category,
			       a->server_name};
	const size_t len[] = {sizeof(a->application_name),
			      sizeof(a->category), sizeof(a->server_name)};

	for (int i = 0; i < 3; i++) {
		*p++ = '\t';
		p = put_tsv(p, field[i], strnlen(field[i], len[i]));
	}
	return p;
}

/* The feature columns the table has (a slice has its label only, a flow
 * what its run computed; NULL: zero or empty), and the row's end. */
static char *put_features(struct sl_clickhouse *c, char *p,
			  const struct sl_flow_stats *stats,
			  const struct sl_splt *splt,
			  const struct sl_app_label *app)
{
	if (c->features & SL_FEATURE_STATS)
		p = stats ? put_stats(p, stats) : put_zero_stats(p);
	if (c->features & SL_FEATURE_SPLT)
		p = splt ? put_splt(p, splt) : PUT_LIT(p, "\t[]\t[]\t[]");
	if (c->features & SL_FEATURE_DPI)
		p = app && app->state == SL_DPI_DONE ? put_app(p, app)
						     : PUT_LIT(p, "\t\t\t");
	*p++ = '\n';
	return p;
}

static char *flow_row(struct sl_clickhouse *c, char *p,
		      const struct sl_flow_rec *r, const char *tags,
		      size_t tags_len)
{
	uint64_t last = r->fwd.last_ns;
	size_t hist = strnlen(r->hist, sizeof(r->hist));

	if (r->rev.pkts && r->rev.last_ns > last)
		last = r->rev.last_ns;
	p = put_head(c, p, "flow", r->fwd.first_ns, last, r->fid);
	p = put_key(p, &r->key);
	p = put_num(p, r->fwd.pkts + r->rev.pkts);
	p = put_num(p, r->fwd.bytes + r->rev.bytes);
	for (int i = 0; i < 2; i++) { /* the counts, then as totals */
		p = put_num(p, r->fwd.pkts);
		p = put_num(p, r->rev.pkts);
		p = put_num(p, r->fwd.bytes);
		p = put_num(p, r->rev.bytes);
	}
	p = put_num(p, r->fwd.tcp_flags);
	p = put_num(p, r->rev.tcp_flags);
	p = put_num(p, r->icmp_type);
	p = put_num(p, r->icmp_code);
	p = put_tsv(p, r->hist, hist);
	*p++ = '\t';
	p = put_name(p, sl_tcp_state_name(r->state_code));
	p = put_tail(c, p, r->reason_code, &r->encap, r->tunnel_changes, tags,
		     tags_len);
	return put_features(c, p, r->stats, r->splt, r->app);
}

static char *slice_row(struct sl_clickhouse *c, char *p,
		       const struct sl_slice_rec *r, const char *tags,
		       size_t tags_len)
{
	p = put_head(c, p, "slice", r->start_ns, r->end_ns, r->fid);
	p = put_key(p, &r->key);
	p = put_num(p, r->delta_fwd.pkts + r->delta_rev.pkts);
	p = put_num(p, r->delta_fwd.bytes + r->delta_rev.bytes);
	p = put_num(p, r->delta_fwd.pkts);
	p = put_num(p, r->delta_rev.pkts);
	p = put_num(p, r->delta_fwd.bytes);
	p = put_num(p, r->delta_rev.bytes);
	p = put_num(p, r->total_fwd.pkts);
	p = put_num(p, r->total_rev.pkts);
	p = put_num(p, r->total_fwd.bytes);
	p = put_num(p, r->total_rev.bytes);
	p = put_num(p, r->tcp_flags_fwd);
	p = put_num(p, r->tcp_flags_rev);
	p = put_num(p, r->icmp_type);
	p = put_num(p, r->icmp_code);
	p = PUT_LIT(p, "\t\t"); /* history, state: a flow's */
	p = put_tail(c, p, r->reason_code, &r->encap, 0, tags, tags_len);
	return put_features(c, p, NULL, NULL, r->app);
}

/* ---- the queue ----------------------------------------------------------- */

/* With the lock held: every queued batch counted lost and freed. */
static void drop_queued(struct sl_clickhouse *c)
{
	while (c->queued) {
		struct batch *b = &c->q[c->head];

		c->st.lost_rows += b->rows;
		c->st.queued_rows -= b->rows;
		free(b->data);
		memset(b, 0, sizeof(*b));
		c->head = (c->head + 1) % c->nq;
		c->queued--;
	}
}

/* The open batch of a stopped sink: its rows are lost. */
static void drop_open(struct sl_clickhouse *c)
{
	if (!c->open.rows)
		return;
	pthread_mutex_lock(&c->lock);
	c->st.lost_rows += c->open.rows;
	pthread_mutex_unlock(&c->lock);
	c->open.rows = 0;
	c->open.len = 0;
}

static int is_dead(struct sl_clickhouse *c)
{
	return __atomic_load_n(&c->dead, __ATOMIC_ACQUIRE) ||
	       __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE);
}

int sl_clickhouse_submit(struct sl_clickhouse *c)
{
	int rc = 0;

	if (is_dead(c)) {
		drop_open(c);
		return -EPIPE;
	}
	if (!c->open.rows)
		return 0;
	pthread_mutex_lock(&c->lock);
	if (c->queued == c->nq) {
		rc = -EAGAIN;
	} else {
		c->q[(c->head + c->queued) % c->nq] = c->open;
		c->queued++;
		c->st.queued_rows += c->open.rows;
		pthread_cond_broadcast(&c->cond);
		memset(&c->open, 0, sizeof(c->open));
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Room for a row of need bytes in the open batch; a full batch is
 * submitted first. */
static int reserve(struct sl_clickhouse *c, size_t need)
{
	struct batch *b = &c->open;

	if (b->rows >= c->batch_rows || is_dead(c)) {
		int rc = sl_clickhouse_submit(c);

		if (rc < 0)
			return rc;
	}
	if (!b->rows) {
		b->id = c->session + c->seq++;
		b->opened_ns = mono_ns();
		b->len = 0;
	}
	if (b->cap - b->len < need) {
		size_t cap = b->cap ? b->cap : BATCH_FIRST;
		char *data;

		while (cap - b->len < need)
			cap *= 2;
		data = realloc(b->data, cap);
		if (!data)
			return -ENOMEM;
		b->data = data;
		b->cap = cap;
	}
	return 0;
}

int sl_clickhouse_add_flow(struct sl_clickhouse *c, const struct sl_flow_rec *r,
			   const char *tags)
{
	size_t tags_len = tags ? strlen(tags) : 0;
	int rc = reserve(c, ROW_MAX + FEATURES_MAX + c->probe_len + tags_len);

	if (rc < 0)
		return rc;
	c->open.len = (size_t)(flow_row(c, c->open.data + c->open.len, r, tags,
					tags_len) -
			       c->open.data);
	c->open.rows++;
	return 0;
}

int sl_clickhouse_add_slice(struct sl_clickhouse *c,
			    const struct sl_slice_rec *r, const char *tags)
{
	size_t tags_len = tags ? strlen(tags) : 0;
	int rc = reserve(c, ROW_MAX + FEATURES_MAX + c->probe_len + tags_len);

	if (rc < 0)
		return rc;
	c->open.len = (size_t)(slice_row(c, c->open.data + c->open.len, r,
					 tags, tags_len) -
			       c->open.data);
	c->open.rows++;
	return 0;
}

int sl_clickhouse_add_slices(struct sl_clickhouse *c,
			     const struct sl_slice_rec *r, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		int rc = sl_clickhouse_add_slice(c, &r[i], NULL);

		if (rc < 0)
			return i ? (int)i : rc;
	}
	return (int)i;
}

void sl_clickhouse_tick(struct sl_clickhouse *c)
{
	if (is_dead(c)) {
		drop_open(c);
		return;
	}
	if (c->open.rows &&
	    mono_ns() - c->open.opened_ns >= c->batch_age_ms * 1000000ULL)
		sl_clickhouse_submit(c);
}

/* ---- HTTP ---------------------------------------------------------------- */

static size_t on_reply(char *p, size_t size, size_t n, void *arg)
{
	struct sl_clickhouse *c = arg;
	size_t len = size * n, room = sizeof(c->reply) - 1 - c->reply_len;

	if (len < room)
		room = len;
	memcpy(c->reply + c->reply_len, p, room);
	c->reply_len += room;
	c->reply[c->reply_len] = '\0';
	return len;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut,
		       curl_off_t un)
{
	struct sl_clickhouse *c = arg;

	return __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE);
}

static int permanent_code(int code)
{
	for (size_t i = 0; i < sizeof(permanent_codes) / sizeof(int); i++)
		if (permanent_codes[i] == code)
			return 1;
	return 0;
}

/* The first line of the reply, for a message. */
static void reply_line(struct sl_clickhouse *c, char *msg, size_t len,
		       long status)
{
	size_t n = strcspn(c->reply, "\r\n");
	int k = snprintf(msg, len, "HTTP %ld: ", status);

	if (k < 0 || (size_t)k >= len)
		return;
	if (n >= len - (size_t)k)
		n = len - (size_t)k - 1;
	memcpy(msg + k, c->reply, n);
	msg[k + n] = '\0';
	if (!n)
		snprintf(msg + k, len - (size_t)k, "(no message)");
}

/* POSTs body to url; the reply is in c->reply. On failure *err is a
 * negative errno, *status the HTTP status (0: none) and msg says why. */
static enum outcome request(struct sl_clickhouse *c, const char *url,
			    const char *body, size_t len, int *err,
			    long *status, char *msg, size_t msglen)
{
	char cerr[CURL_ERROR_SIZE] = "";
	CURL *h = c->curl;
	CURLcode rc;
	int code = 0;

	c->reply_len = 0;
	c->reply[0] = '\0';
	*status = 0;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
	rc = curl_easy_perform(h);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	if (rc != CURLE_OK) {
		snprintf(msg, msglen, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
		switch (rc) {
		case CURLE_ABORTED_BY_CALLBACK:
			*err = -ECANCELED;
			return OUT_CANCELED;
		case CURLE_COULDNT_CONNECT:
			*err = -ECONNREFUSED;
			return OUT_UNSENT;
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
			*err = -EHOSTUNREACH;
			return OUT_UNSENT;
		case CURLE_OPERATION_TIMEDOUT:
			*err = -ETIMEDOUT;
			return OUT_TRANSIENT;
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
			*err = -EINVAL;
			return OUT_PERMANENT;
		case CURLE_OUT_OF_MEMORY:
			*err = -ENOMEM;
			return OUT_TRANSIENT;
		default:
			*err = -ECONNRESET;
			return OUT_TRANSIENT;
		}
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	if (*status == 200)
		return OUT_OK;
	reply_line(c, msg, msglen, *status);
	*err = -EIO;
	if (*status >= 500 && *status < 600) {
		if (sscanf(c->reply, "Code: %d", &code) == 1 &&
		    permanent_code(code))
			return OUT_PERMANENT;
		return OUT_TRANSIENT;
	}
	return OUT_PERMANENT;
}

/* request() from the thread: a failure goes into the stats. */
static enum outcome thread_request(struct sl_clickhouse *c, const char *url,
				   const char *body, size_t len)
{
	char msg[MSG_MAX];
	long status;
	int err;
	enum outcome out = request(c, url, body, len, &err, &status, msg,
				   sizeof(msg));

	if (out == OUT_OK || out == OUT_CANCELED)
		return out;
	pthread_mutex_lock(&c->lock);
	c->st.last_error = err;
	c->st.http_status = (int32_t)status;
	snprintf(c->st.message, sizeof(c->st.message), "%s", msg);
	pthread_mutex_unlock(&c->lock);
	return out;
}

/* Is batch id in the table? OUT_OK with *found set, or how asking failed. */
static enum outcome ask_inserted(struct sl_clickhouse *c, uint64_t id,
				 int *found)
{
	char sql[512], *p;
	enum outcome out;

	p = put_str(sql, c->count_sql);
	p = put_u64(p, id);
	*p = '\0';
	out = thread_request(c, c->base_url, sql, (size_t)(p - sql));
	if (out == OUT_OK)
		*found = strtoull(c->reply, NULL, 10) > 0;
	return out;
}

/* Waits ms unless the sink stops; returns 1 if it stops. */
static int backoff_wait(struct sl_clickhouse *c, unsigned ms)
{
	struct timespec until;
	int stop;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&c->lock);
	while (!c->stop &&
	       pthread_cond_timedwait(&c->cond, &c->lock, &until) == 0)
		;
	stop = c->stop;
	pthread_mutex_unlock(&c->lock);
	return stop;
}

/* Inserts one batch, trying again after transient failures: OUT_OK,
 * OUT_PERMANENT or OUT_CANCELED. */
static enum outcome send_batch(struct sl_clickhouse *c, const struct batch *b)
{
	unsigned wait_ms = BACKOFF_FIRST_MS;
	int unsure = 0; /* an earlier request may have inserted it */

	for (;;) {
		enum outcome out = OUT_OK;
		int found = 0;

		if (unsure) {
			out = ask_inserted(c, b->id, &found);
			if (out == OUT_OK && found) {
				pthread_mutex_lock(&c->lock);
				c->st.found++;
				pthread_mutex_unlock(&c->lock);
				return OUT_OK;
			}
			if (out == OUT_OK)
				unsure = 0;
		}
		if (!unsure) {
			out = thread_request(c, c->insert_url, b->data, b->len);
			if (out == OUT_OK)
				return OUT_OK;
			unsure = out == OUT_TRANSIENT;
		}
		if (out == OUT_PERMANENT || out == OUT_CANCELED)
			return out;
		pthread_mutex_lock(&c->lock);
		c->st.retries++;
		pthread_mutex_unlock(&c->lock);
		if (backoff_wait(c, wait_ms))
			return OUT_CANCELED;
		wait_ms = wait_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
						       : wait_ms * 2;
	}
}

static void *sender_thread(void *arg)
{
	struct sl_clickhouse *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (!c->queued && !c->stop)
			pthread_cond_wait(&c->cond, &c->lock);
		if (c->stop)
			break;
		struct batch b = c->q[c->head];

		pthread_mutex_unlock(&c->lock);
		enum outcome out = send_batch(c, &b);

		pthread_mutex_lock(&c->lock);
		if (out == OUT_CANCELED)
			break; /* still queued: stop() counts it */
		memset(&c->q[c->head], 0, sizeof(b));
		c->head = (c->head + 1) % c->nq;
		c->queued--;
		c->st.queued_rows -= b.rows;
		free(b.data);
		if (out == OUT_OK) {
			c->st.rows += b.rows;
			c->st.batches++;
		} else {
			c->st.lost_rows += b.rows;
			c->st.stopped = 1;
			__atomic_store_n(&c->dead, 1, __ATOMIC_RELEASE);
			drop_queued(c);
		}
		pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* ---- life ---------------------------------------------------------------- */

static char *concat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = malloc(la + lb + 1);

	if (s) {
		memcpy(s, a, la);
		memcpy(s + la, b, lb + 1);
	}
	return s;
}

/* Identifiers are checked (letters, digits, _), so they need no quoting. */
static int valid_name(const char *s)
{
	if (!s || !*s || strlen(s) > 128 || (*s >= '0' && *s <= '9'))
		return 0;
	for (; *s; s++)
		if (!(*s == '_' || (*s >= 'a' && *s <= 'z') ||
		      (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
			return 0;
	return 1;
}

/* The feature columns of the table, after the others: with their types
 * (CREATE TABLE) or not (INSERT). */
static char *feature_columns(struct sl_clickhouse *c, char *p, int typed)
{
	const char *sep = typed ? ", " : ",";

	if (c->features & SL_FEATURE_STATS)
		for (int d = 0; d < 3; d++)
			for (int i = 0; i < NSTATS; i++)
				p += sprintf(p, "%s%s%s%s%s", sep, stat_dirs[d],
					     stat_columns[i][0],
					     typed ? " " : "",
					     typed ? stat_columns[i][1] : "");
	if (c->features & SL_FEATURE_SPLT)
		for (int i = 0; i < 3; i++)
			p += sprintf(p, "%s%s%s%s", sep, splt_columns[i][0],
				     typed ? " " : "",
				     typed ? splt_columns[i][1] : "");
	if (c->features & SL_FEATURE_DPI)
		for (int i = 0; i < 3; i++)
			p += sprintf(p, "%s%s%s", sep, app_columns[i],
				     typed ? " String" : "");
	return p;
}

/* The SQL texts and URLs of the sink; 0 or -ENOMEM. */
static int make_sql(struct sl_clickhouse *c, const struct sl_clickhouse_opts *o,
		    char **create_db, char **create_table)
{
	size_t room = 1024 + (NCOLUMNS + 3 * NSTATS + 3 + 3) * 64 +
		      4 * strlen(o->database) + 4 * strlen(o->table);
	char *insert = malloc(room), *esc = NULL;
	char *p;
	int rc = -ENOMEM;

	*create_db = malloc(room);
	*create_table = malloc(room);
	c->count_sql = malloc(room);
	if (!insert || !*create_db || !*create_table || !c->count_sql)
		goto out;
	snprintf(*create_db, room, "CREATE DATABASE IF NOT EXISTS %s",
		 o->database);
	snprintf(c->count_sql, room, "SELECT count() FROM %s.%s WHERE batch = ",
		 o->database, o->table);
	p = *create_table;
	p += sprintf(p, "CREATE TABLE IF NOT EXISTS %s.%s (", o->database,
		     o->table);
	for (int i = 0; i < NCOLUMNS; i++)
		p += sprintf(p, "%s%s %s", i ? ", " : "", columns[i][0],
			     columns[i][1]);
	p = feature_columns(c, p, 1);
	sprintf(p, ") ENGINE = MergeTree() PARTITION BY toYYYYMMDD(time_start)"
		   " ORDER BY (time_start, probe, kind)");
	p = insert;
	p += sprintf(p, "INSERT INTO %s.%s (", o->database, o->table);
	for (int i = 0; i < NCOLUMNS; i++)
		p += sprintf(p, "%s%s", i ? "," : "", columns[i][0]);
	p = feature_columns(c, p, 0);
	sprintf(p, ") FORMAT TabSeparated");
	esc = curl_easy_escape(c->curl, insert, 0);
	if (!esc)
		goto out;
	free(insert);
	insert = concat("?query=", esc);
	if (!insert)
		goto out;
	c->insert_url = concat(c->base_url, insert);
	if (c->insert_url)
		rc = 0;
out:
	curl_free(esc);
	free(insert);
	return rc;
}

static int setup_curl(struct sl_clickhouse *c, const struct sl_clickhouse_opts *o)
{
	CURL *h = curl_easy_init();

	if (!h)
		return -ENOMEM;
	c->curl = h;
	/* libcurl waits for "100 Continue" before a big body: not here */
	c->headers = curl_slist_append(NULL, "Expect:");
	if (!c->headers)
		return -ENOMEM;
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	/* a connection per request: on a kept-alive connection that dies
	 * before the reply, libcurl sends the request again by itself, and
	 * an INSERT the server had taken would be inserted twice */
	curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_reply);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)(c->timeout_ms < CONNECT_TIMEOUT_MS
					? c->timeout_ms
					: CONNECT_TIMEOUT_MS));
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	if (o->user && *o->user) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, o->user);
		curl_easy_setopt(h, CURLOPT_PASSWORD,
				 o->password ? o->password : "");
	}
	return 0;
}

/* A DDL statement at open; on failure the message goes into err. */
static int ddl(struct sl_clickhouse *c, const char *sql, char *err,
	       size_t errlen)
{
	char msg[MSG_MAX];
	long status;
	int e;

	if (request(c, c->base_url, sql, strlen(sql), &e, &status, msg,
		    sizeof(msg)) == OUT_OK)
		return 0;
	snprintf(err, errlen, "%s", msg);
	return e;
}

int sl_clickhouse_new(struct sl_clickhouse **out,
		      const struct sl_clickhouse_opts *o, char *err,
		      size_t errlen)
{
	return sl_clickhouse_new_features(out, o, 0, err, errlen);
}

int sl_clickhouse_new_features(struct sl_clickhouse **out,
			       const struct sl_clickhouse_opts *o,
			       uint32_t features, char *err, size_t errlen)
{
	struct sl_clickhouse *c;
	char *create_db = NULL, *create_table = NULL;
	const char *probe = o->probe ? o->probe : "";
	int rc = -EINVAL;

	if (errlen)
		err[0] = '\0';
	if (!o->url || !valid_name(o->database) || !valid_name(o->table) ||
	    !o->batch_rows || !o->queue || !o->timeout_ms ||
	    strlen(probe) > PROBE_MAX ||
	    (features & ~(uint32_t)(SL_FEATURE_STATS | SL_FEATURE_SPLT |
				    SL_FEATURE_DPI))) {
		snprintf(err, errlen, "bad options (database and table are "
				      "names of letters, digits and _)");
		return -EINVAL;
	}
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK) {
		snprintf(err, errlen, "libcurl: %s",
			 curl_easy_strerror(curl_init_rc));
		return -ENOMEM;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&c->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	c->batch_rows = o->batch_rows;
	c->batch_age_ms = o->batch_age_ms;
	c->timeout_ms = o->timeout_ms;
	c->nq = o->queue;
	c->features = features;
	rc = -ENOMEM;
	c->q = calloc(c->nq, sizeof(*c->q));
	c->base_url = strdup(o->url);
	c->probe = malloc(2 * strlen(probe) + 1);
	if (!c->q || !c->base_url || !c->probe)
		goto out_free;
	c->probe_len = (size_t)(put_tsv(c->probe, probe, strlen(probe)) -
				c->probe);
	if (getrandom(&c->session, sizeof(c->session), 0) !=
	    sizeof(c->session))
		c->session = mono_ns() * 0x9e3779b97f4a7c15ULL;
	rc = setup_curl(c, o);
	if (rc)
		goto out_free;
	rc = make_sql(c, o, &create_db, &create_table);
	if (rc)
		goto out_free;
	rc = ddl(c, create_db, err, errlen);
	if (!rc)
		rc = ddl(c, create_table, err, errlen);
	if (rc)
		goto out_free;
	rc = sl_thread_start(&c->thread, sender_thread, c);
	if (rc)
		goto out_free;
	c->have_thread = 1;
	free(create_db);
	free(create_table);
	*out = c;
	return 0;

out_free:
	free(create_db);
	free(create_table);
	sl_clickhouse_free(c);
	return rc;
}

int64_t sl_clickhouse_drain(struct sl_clickhouse *c, int timeout_ms)
{
	uint64_t until = mono_ns() + (uint64_t)timeout_ms * 1000000ULL;
	int64_t left;

	for (;;) {
		struct timespec ts;

		if (sl_clickhouse_submit(c) == -EPIPE)
			break;
		pthread_mutex_lock(&c->lock);
		if (!c->queued && !c->open.rows) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		if (mono_ns() >= until) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->cond, &c->lock, &ts);
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_lock(&c->lock);
	left = (int64_t)(c->st.queued_rows + c->open.rows);
	pthread_mutex_unlock(&c->lock);
	return left;
}

void sl_clickhouse_stats(struct sl_clickhouse *c, struct sl_clickhouse_stats *st)
{
	pthread_mutex_lock(&c->lock);
	*st = c->st;
	pthread_mutex_unlock(&c->lock);
	st->queued_rows += c->open.rows;
}

void sl_clickhouse_stop(struct sl_clickhouse *c)
{
	if (c->joined)
		return;
	pthread_mutex_lock(&c->lock);
	__atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (c->have_thread)
		pthread_join(c->thread, NULL);
	c->joined = 1;
	pthread_mutex_lock(&c->lock);
	drop_queued(c);
	c->st.lost_rows += c->open.rows;
	pthread_mutex_unlock(&c->lock);
	c->open.rows = 0;
	c->open.len = 0;
}

void sl_clickhouse_free(struct sl_clickhouse *c)
{
	if (!c)
		return;
	sl_clickhouse_stop(c);
	if (c->curl)
		curl_easy_cleanup(c->curl);
	curl_slist_free_all(c->headers);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c->open.data);
	free(c->q);
	free(c->base_url);
	free(c->insert_url);
	free(c->count_sql);
	free(c->probe);
	free(c);
}
