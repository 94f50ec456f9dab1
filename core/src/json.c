/* json.c - flow and slice records as JSON lines. Done in C because the
 * default job writes one per flow and per slice record: appending by hand
 * (no snprintf, IPv4 addresses without inet_ntop) costs about a tenth of
 * building and encoding a Lua table, and keeps times to the microsecond. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fileio.h"
#include "sluice.h"
#include "thread.h"
#include "text.h"

/* Records are formatted without bounds checks into a scratch line of
 * JSON_LINE_MAX bytes, more than the longest record can take (3,847
 * bytes: every number at its widest, IPv6 in a tunnel, statistics, 32
 * early packets and the longest escaped labels; test_json.c builds it),
 * then copied out. */
enum { JSON_LINE_MAX = 4095 };

char *sl_put_double_slow(char *p, double v)
{
	return p + snprintf(p, 32, "%.12g", v);
}

/* NFStream's names, as JSON keys: ,"src2dst_min_ps": ... Each is copied
 * as STAT_KEY_COPY bytes whatever its length (a fixed-size copy is a few
 * moves; the variable one, a call): the bytes past the key are written
 * over next, and the scratch line has room past the longest record. */
enum { STAT_KEY_COPY = 40 };
struct stat_key {
	char text[STAT_KEY_COPY];
	size_t len;
};
#define KEY(dir, name) {",\"" dir name "\":", sizeof(",\"" dir name "\":") - 1}
#define STAT_KEYS(dir)                                                         \
	{KEY(dir, "min_ps"),	      KEY(dir, "mean_ps"),                      \
	 KEY(dir, "stddev_ps"),	      KEY(dir, "max_ps"),                       \
	 KEY(dir, "min_piat_ms"),    KEY(dir, "mean_piat_ms"),                 \
	 KEY(dir, "stddev_piat_ms"), KEY(dir, "max_piat_ms"),                  \
	 KEY(dir, "fin_packets"),    KEY(dir, "syn_packets"),                  \
	 KEY(dir, "rst_packets"),    KEY(dir, "psh_packets"),                  \
	 KEY(dir, "ack_packets"),    KEY(dir, "urg_packets"),                  \
	 KEY(dir, "ece_packets"),    KEY(dir, "cwr_packets")}
static const struct stat_key stat_key[3][8 + SL_TCP_FLAG_BITS] = {
    STAT_KEYS("src2dst_"), STAT_KEYS("dst2src_"), STAT_KEYS("bidirectional_")};

static char *put_key_text(char *p, int stream, int k)
{
	const struct stat_key *key = &stat_key[stream][k];

	memcpy(p, key->text, STAT_KEY_COPY);
	return p + key->len;
}

static char *put_stats(char *p, const struct sl_flow_stats *st)
{
	for (int i = 0; i < 3; i++) {
		struct sl_stream_stats stream, *s = &stream;
		struct sl_moments m;

		sl_flow_stream_stats(st, i, s);
		sl_stream_moments(s, &m);
		p = put_u64(put_key_text(p, i, 0), s->min_ps);
		p = put_double(put_key_text(p, i, 1), m.mean_ps);
		p = put_double(put_key_text(p, i, 2), m.stddev_ps);
		p = put_u64(put_key_text(p, i, 3), s->max_ps);
		p = put_ns_as_ms(put_key_text(p, i, 4), s->min_piat_ns);
		p = put_double(put_key_text(p, i, 5), m.mean_piat_ms);
		p = put_double(put_key_text(p, i, 6), m.stddev_piat_ms);
		p = put_ns_as_ms(put_key_text(p, i, 7), s->max_piat_ns);
		for (int b = 0; b < SL_TCP_FLAG_BITS; b++)
			p = put_u64(put_key_text(p, i, 8 + b),
				    s->flag_packets[b]);
	}
	return p;
}

/* Epoch seconds with microseconds, as a JSON number. */
static char *put_ts(char *p, uint64_t ns)
{
	uint64_t us = ns % 1000000000u / 1000u;

	p = put_u64(p, ns / 1000000000u);
	*p++ = '.';
	for (int i = 5; i >= 0; i--) {
		p[i] = (char)('0' + us % 10);
		us /= 10;
	}
	return p + 6;
}

static char *put_addr(char *p, const struct sl_key *k, int which)
{
	const uint8_t *a = which ? k->dst : k->src;

	return put_ip(p, a, k->ip_version);
}

/* The JSON writer's formatting, for Lua's rec.src / rec.dst: inet_ntop's
 * sprintf cost most of a record's field reads. */
int sl_key_addr(const struct sl_key *k, int which, char *buf, size_t len)
{
	char text[64];
	size_t n;

	if (k->ip_version != 4 && k->ip_version != 6)
		return -EAFNOSUPPORT; /* an id or a string */
	n = (size_t)(put_addr(text, k, which) - text);
	if (n >= len)
		return -ENOSPC;
	memcpy(buf, text, n);
	buf[n] = '\0';
	return (int)n;
}

/* A key of engine:update's other kinds: "key_id":N or "key_string":"..."
 * (its bytes, escaped: up to 32 as \u00XX, 192 bytes, fewer than the
 * addresses and ports it stands in for). */
static char *put_other_key(char *p, const struct sl_key *k)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *s = k->src; /* the string runs on into dst */
	uint64_t id;

	if (k->ip_version == SL_KEY_ID) {
		memcpy(&id, k->src, sizeof(id));
		return put_u64(PUT_LIT(p, "\"key_id\":"), id);
	}
	p = PUT_LIT(p, "\"key_string\":\"");
	for (uint32_t i = 0; i < k->sport && i < 32; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\') {
			*p++ = (char)s[i];
			continue;
		}
		p = PUT_LIT(p, "\\u00");
		*p++ = hex[s[i] >> 4];
		*p++ = hex[s[i] & 15];
	}
	*p++ = '"';
	return p;
}

/* proto is its name, or its number where it has none */
static char *put_key(char *p, const struct sl_key *k)
{
	const char *proto = sl_proto_name(k->proto);

	if (k->ip_version != 4 && k->ip_version != 6)
		return put_other_key(p, k);
	p = PUT_LIT(p, "\"proto\":");
	if (proto) {
		*p++ = '"';
		p = put_str(p, proto);
		*p++ = '"';
	} else {
		p = put_u64(p, k->proto);
	}
	p = PUT_LIT(p, ",\"ip_version\":");
	p = put_u64(p, k->ip_version);
	p = PUT_LIT(p, ",\"src\":\"");
	p = put_addr(p, k, 0);
	p = PUT_LIT(p, "\",\"sport\":");
	p = put_u64(p, k->sport);
	p = PUT_LIT(p, ",\"dst\":\"");
	p = put_addr(p, k, 1);
	p = PUT_LIT(p, "\",\"dport\":");
	p = put_u64(p, k->dport);
	p = PUT_LIT(p, ",\"vlan\":");
	p = put_u64(p, k->vlan);
	if (k->vlan_inner) {
		p = PUT_LIT(p, ",\"vlan_inner\":");
		p = put_u64(p, k->vlan_inner);
	}
	return p;
}

/* ,"name":value */
#define PUT_FIELD(p, name, v) put_u64(PUT_LIT((p), ",\"" name "\":"), (v))

/* The tunnel fields, absent without a tunnel: type, the endpoints of an
 * IP tunnel, the id where the tunnel has one. */
static char *put_tunnel(char *p, const struct sl_tunnel *t)
{
	if (t->type == SL_TUNNEL_NONE)
		return p;
	p = PUT_LIT(p, ",\"tunnel\":\"");
	p = put_str(p, sl_tunnel_name(t->type));
	*p++ = '"';
	if (t->ip_version) {
		p = PUT_LIT(p, ",\"tunnel_src\":\"");
		p = t->ip_version == 4 ? put_ipv4(p, t->src) : put_ipv6(p, t->src);
		p = PUT_LIT(p, "\",\"tunnel_dst\":\"");
		p = t->ip_version == 4 ? put_ipv4(p, t->dst) : put_ipv6(p, t->dst);
		*p++ = '"';
	}
	if (t->has_id)
		p = PUT_FIELD(p, "tunnel_id", t->id);
	return p;
}

static char *put_end_reason(char *p, int reason)
{
	/* live flows (a start event) have no end reason yet */
	if (!reason)
		return p;
	p = PUT_LIT(p, ",\"end_reason\":\"");
	p = put_str(p, sl_end_reason_name(reason));
	return PUT_LIT(p, "\"");
}

/* SL_FEATURE_SPLT: NFStream's arrays, n long, -1 where the flow had
 * fewer packets. */
static char *put_splt(char *p, const struct sl_splt *sp)
{
	uint32_t n = sp->len;

	p = PUT_LIT(p, ",\"splt_direction\":[");
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			*p++ = ',';
		if (i >= sp->n)
			p = PUT_LIT(p, "-1");
		else
			*p++ = (char)('0' + (sp->reverse >> i & 1));
	}
	p = PUT_LIT(p, "],\"splt_ps\":[");
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			*p++ = ',';
		p = i < sp->n ? put_u64(p, sp->ps[i]) : PUT_LIT(p, "-1");
	}
	p = PUT_LIT(p, "],\"splt_piat_ms\":[");
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			*p++ = ',';
		p = i < sp->n ? put_ns_as_ms(p, sp->piat_ns[i])
			      : PUT_LIT(p, "-1");
	}
	*p++ = ']';
	return p;
}

/* At most n bytes of s as a JSON string's inside: '"' and '\\'
 * escaped, bytes other than printable ASCII dropped. */
static char *put_printable(char *p, const char *s, size_t n)
{
	for (size_t i = 0; i < n && s[i]; i++) {
		char c = s[i];

		if (c < 0x20 || c >= 0x7f)
			continue;
		if (c == '"' || c == '\\')
			*p++ = '\\';
		*p++ = c;
	}
	return p;
}

/* SL_FEATURE_DPI: the application label under NFStream's names. */
static char *put_app(char *p, const struct sl_app_label *a)
{
	p = PUT_LIT(p, ",\"application_name\":\"");
	p = put_printable(p, a->application_name, sizeof(a->application_name));
	p = PUT_LIT(p, "\",\"application_category_name\":\"");
	p = put_printable(p, a->category, sizeof(a->category));
	p = PUT_LIT(p, "\",\"requested_server_name\":\"");
	p = put_printable(p, a->server_name, sizeof(a->server_name));
	*p++ = '"';
	return p;
}

static int flow_line(const struct sl_flow_rec *r, char *line)
{
	uint64_t last = r->fwd.last_ns;
	char *p = line;

	if (r->rev.pkts && r->rev.last_ns > last)
		last = r->rev.last_ns;
	p = PUT_LIT(p, "{\"type\":\"flow\",\"id\":");
	p = put_u64(p, r->fid);
	*p++ = ',';
	p = put_key(p, &r->key);
	p = put_ts(PUT_LIT(p, ",\"first\":"), r->fwd.first_ns);
	p = put_ts(PUT_LIT(p, ",\"last\":"), last);
	p = PUT_FIELD(p, "pkts_fwd", r->fwd.pkts);
	p = PUT_FIELD(p, "pkts_rev", r->rev.pkts);
	p = PUT_FIELD(p, "bytes_fwd", r->fwd.bytes);
	p = PUT_FIELD(p, "bytes_rev", r->rev.bytes);
	p = PUT_FIELD(p, "ip_bytes_fwd", r->fwd.ip_bytes);
	p = PUT_FIELD(p, "ip_bytes_rev", r->rev.ip_bytes);
	p = PUT_FIELD(p, "tcp_flags_fwd", r->fwd.tcp_flags);
	p = PUT_FIELD(p, "tcp_flags_rev", r->rev.tcp_flags);
	p = PUT_LIT(p, ",\"history\":\"");
	memcpy(p, r->hist, strnlen(r->hist, sizeof(r->hist)));
	p += strnlen(r->hist, sizeof(r->hist));
	p = PUT_LIT(p, "\",\"state\":\"");
	p = put_str(p, sl_tcp_state_name(r->state_code));
	*p++ = '"';
	p = put_tunnel(p, &r->encap);
	if (r->tunnel_changes)
		p = PUT_FIELD(p, "tunnel_changes", r->tunnel_changes);
	p = put_end_reason(p, r->reason_code);
	if (r->stats)
		p = put_stats(p, r->stats);
	if (r->splt)
		p = put_splt(p, r->splt);
	if (r->app)
		p = put_app(p, r->app);
	*p++ = '}';
	return (int)(p - line);
}

static int slice_line(const struct sl_slice_rec *r, char *line)
{
	char *p = line;

	p = PUT_LIT(p, "{\"type\":\"slice\",\"flow_id\":");
	p = put_u64(p, r->fid);
	*p++ = ',';
	p = put_key(p, &r->key);
	p = put_ts(PUT_LIT(p, ",\"start\":"), r->start_ns);
	p = put_ts(PUT_LIT(p, ",\"end\":"), r->end_ns);
	p = PUT_FIELD(p, "pkts_fwd", r->delta_fwd.pkts);
	p = PUT_FIELD(p, "pkts_rev", r->delta_rev.pkts);
	p = PUT_FIELD(p, "bytes_fwd", r->delta_fwd.bytes);
	p = PUT_FIELD(p, "bytes_rev", r->delta_rev.bytes);
	p = PUT_FIELD(p, "ip_bytes_fwd", r->delta_fwd.ip_bytes);
	p = PUT_FIELD(p, "ip_bytes_rev", r->delta_rev.ip_bytes);
	p = PUT_FIELD(p, "total_pkts_fwd", r->total_fwd.pkts);
	p = PUT_FIELD(p, "total_pkts_rev", r->total_rev.pkts);
	p = PUT_FIELD(p, "total_bytes_fwd", r->total_fwd.bytes);
	p = PUT_FIELD(p, "total_bytes_rev", r->total_rev.bytes);
	p = PUT_FIELD(p, "tcp_flags_fwd", r->tcp_flags_fwd);
	p = PUT_FIELD(p, "tcp_flags_rev", r->tcp_flags_rev);
	p = put_tunnel(p, &r->encap);
	p = put_end_reason(p, r->reason_code);
	if (r->app)
		p = put_app(p, r->app);
	*p++ = '}';
	return (int)(p - line);
}

/* snprintf semantics: the length, written (NUL-terminated) if it fits. */
static int copy_out(const char *line, int n, char *buf, size_t len)
{
	if (len) {
		size_t m = (size_t)n < len ? (size_t)n : len - 1;

		memcpy(buf, line, m);
		buf[m] = '\0';
	}
	return n;
}

int sl_flow_rec_json(const struct sl_flow_rec *r, char *buf, size_t len)
{
	char line[JSON_LINE_MAX];

	return copy_out(line, flow_line(r, line), buf, len);
}

int sl_slice_rec_json(const struct sl_slice_rec *r, char *buf, size_t len)
{
	char line[JSON_LINE_MAX];

	return copy_out(line, slice_line(r, line), buf, len);
}

/* ---- the writer ------------------------------------------------------- *
 *
 * Lines are formatted into one of JSON_BUFS buffers; a full buffer goes to
 * a thread that writes it while the next one fills, so the capture thread
 * does not pay for the kernel's copy into the page cache. Buffers are
 * written in order; only when all of them wait for the disk does the
 * capture thread wait. A line-buffered writer writes each line itself.
 * A shared one (a file several processes write) sends buffers no larger
 * than a write that keeps its lines whole among the others' can carry.
 *
 * Each buffer holds whole lines and knows how many. A write that fails
 * loses the lines it carried and no others: the whole lines a short write
 * got out stay (the half line after them is cut off the file), the rest is
 * counted lost, and the next buffer is tried as if nothing happened.
 *
 * A flow's line costs the capture thread 70 ns to format, 500 with the
 * statistics. So when there is a thread and no size limit to hold the
 * line against (a writer never given a max_size, not shared), a flow
 * record is copied into its buffer's arena instead, and the thread
 * formats it in its place among the buffer's lines before writing them.
 * Its bytes count in the size once the thread formatted it: exactly
 * after a flush, as lost lines leave it.
 */

/* A shared file's writer holds less: the lines it has not written yet
 * land in a file another process may have rotated meanwhile, past the
 * rotation size. */
enum { JSON_BUF = 1 << 20, JSON_SHARED_BUF = 256 << 10, JSON_BUFS = 4 };

/* A buffer's arena of flow records the thread formats, and the thread's
 * room for their lines. */
enum { JSON_ARENA = 256 << 10, JSON_OUT = 256 << 10 };

/* A record in an arena, its features (those it has) after it. */
struct deferred {
	size_t at;	     /* the buffer's text bytes before its line */
	uint32_t text_lines; /* and the lines they hold */
	uint32_t size;	     /* of the entry, features included */
	struct sl_flow_rec rec;
};

struct sl_json_writer {
	int fd;
	int line_buffered;
	int append;    /* O_APPEND, kept across reopen */
	uint64_t size; /* file bytes, buffered ones included */
	char *buf;     /* bufs[cur], being filled */
	size_t cap;    /* of a buffer that goes out in one write */
	size_t used;
	uint32_t lines; /* whole lines in buf */
	uint32_t cur;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	int have_thread;
	int stop;
	uint32_t next;	 /* the buffer the thread writes next */
	uint32_t queued; /* buffers handed to the thread, not yet written */
	/* under lock: the outcome of writes, whichever thread made them */
	int error;	     /* first write error since the last flush */
	uint64_t lost_bytes; /* of lost lines, still in size until a flush */
	struct sl_json_writer_stats st;
	size_t len[JSON_BUFS];
	uint32_t nlines[JSON_BUFS];
	char *bufs[JSON_BUFS];

	/* records the thread formats (none once a max_size was given) */
	int sized;
	size_t arena_used;   /* of the buffer being filled */
	uint32_t n_deferred; /* its records, counted in lines too */
	uint64_t formatted;  /* under lock: their bytes, not yet in size */
	size_t arena_len[JSON_BUFS];
	uint32_t deferred[JSON_BUFS];
	char *arenas[JSON_BUFS];
	char *out; /* the thread's */
};

/* A write failed after done bytes, of which keep are whole lines: the half
 * line after them is cut off, if it still ends the file (appending, other
 * writers may have written after it). Returns 1 if it stays (a pipe). */
static int cut_back(int fd, size_t done, size_t keep)
{
	struct stat st;
	off_t end, cut;

	if (done == keep)
		return 0;
	end = lseek(fd, 0, SEEK_CUR);
	if (end < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode) ||
	    st.st_size != end)
		return 1;
	cut = end - (off_t)(done - keep);
	/* not appending, the next write goes where the cut is */
	if (ftruncate(fd, cut) || lseek(fd, cut, SEEK_SET) != cut)
		return 1;
	return 0;
}

static uint32_t count_lines(const char *p, size_t len)
{
	const char *end = p + len;
	uint32_t n = 0;

	while (p < end && (p = memchr(p, '\n', (size_t)(end - p)))) {
		n++;
		p++;
	}
	return n;
}

/* Writes n whole lines (len bytes in up to two pieces) and counts what
 * became of them. Only one thread writes at a time: the writer's thread,
 * or, when it is idle or absent, the caller. */
static int write_lines(struct sl_json_writer *w, int fd, const char *p,
		       size_t len, const char *tail, size_t tail_len,
		       uint32_t n)
{
	struct iovec iov[2] = {{.iov_base = (void *)p, .iov_len = len},
			       {.iov_base = (void *)tail, .iov_len = tail_len}};
	size_t done, keep, total = len + tail_len;
	uint32_t landed = n;
	int rc, partial = 0;

	rc = sl_write_iov_all(fd, iov, 2, &done);
	keep = total;
	if (rc) {
		/* the tail is the newline of a line that did not end */
		keep = done < len ? done : len;
		while (keep && p[keep - 1] != '\n')
			keep--;
		landed = count_lines(p, keep);
		if (landed > n) /* a newline inside a caller's line */
			landed = n;
		partial = cut_back(fd, done, keep);
	}
	pthread_mutex_lock(&w->lock);
	w->st.lines += landed;
	w->st.bytes += keep;
	if (rc) {
		w->st.lost += n - landed;
		w->st.partial += (uint64_t)partial;
		w->st.last_error = rc;
		w->lost_bytes += total - (partial ? done : keep);
		if (!w->error)
			w->error = rc;
	}
	pthread_mutex_unlock(&w->lock);
	return rc;
}

/* The thread's lines formatted so far go out. */
static void write_out(struct sl_json_writer *w, int fd, size_t *len,
		      uint32_t *lines)
{
	if (*lines)
		write_lines(w, fd, w->out, *len, NULL, 0, *lines);
	*len = 0;
	*lines = 0;
}

/* Buffer i with its arena's records formatted in their places: the text
 * lines between records are written from the buffer, the records' lines
 * from the thread's room, in order. */
static void write_deferred(struct sl_json_writer *w, int fd, uint32_t i)
{
	const char *text = w->bufs[i], *e = w->arenas[i];
	const char *end = e + w->arena_len[i];
	size_t at = 0, out = 0;
	uint32_t text_lines = 0, out_lines = 0;
	uint64_t formatted = 0;

	for (; e < end; e += ((const struct deferred *)e)->size) {
		const struct deferred *d = (const struct deferred *)e;
		int n;

		if (d->at > at) {
			write_out(w, fd, &out, &out_lines);
			write_lines(w, fd, text + at, d->at - at, NULL, 0,
				    d->text_lines - text_lines);
			at = d->at;
			text_lines = d->text_lines;
		}
		if (out + JSON_LINE_MAX + 1 > JSON_OUT)
			write_out(w, fd, &out, &out_lines);
		n = flow_line(&d->rec, w->out + out);
		w->out[out + (size_t)n] = '\n';
		out += (size_t)n + 1;
		out_lines++;
		formatted += (uint64_t)n + 1;
	}
	write_out(w, fd, &out, &out_lines);
	if (w->len[i] > at)
		write_lines(w, fd, text + at, w->len[i] - at, NULL, 0,
			    w->nlines[i] - w->deferred[i] - text_lines);
	pthread_mutex_lock(&w->lock);
	w->formatted += formatted;
	pthread_mutex_unlock(&w->lock);
}

static void *writer_thread(void *arg)
{
	struct sl_json_writer *w = arg;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		uint32_t i;
		int fd;

		while (!w->queued && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		if (!w->queued)
			break;
		i = w->next;
		fd = w->fd;
		pthread_mutex_unlock(&w->lock);
		if (w->deferred[i])
			write_deferred(w, fd, i);
		else
			write_lines(w, fd, w->bufs[i], w->len[i], NULL, 0,
				    w->nlines[i]);
		pthread_mutex_lock(&w->lock);
		w->next = (i + 1) % JSON_BUFS;
		w->queued--;
		pthread_cond_broadcast(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* Hands the filled buffer to the thread; waits for a free one only if
 * every buffer is queued. */
static void submit(struct sl_json_writer *w)
{
	if (!w->used && !w->n_deferred)
		return;
	pthread_mutex_lock(&w->lock);
	w->len[w->cur] = w->used;
	w->nlines[w->cur] = w->lines;
	w->arena_len[w->cur] = w->arena_used;
	w->deferred[w->cur] = w->n_deferred;
	w->queued++;
	w->cur = (w->cur + 1) % JSON_BUFS;
	pthread_cond_broadcast(&w->cond);
	while (w->queued == JSON_BUFS)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	w->buf = w->bufs[w->cur];
	w->used = 0;
	w->lines = 0;
	w->arena_used = 0;
	w->n_deferred = 0;
}

/* Everything buffered is written (or counted lost); the thread is idle
 * after it. */
static void drain(struct sl_json_writer *w)
{
	if (!w->have_thread) {
		if (w->used)
			write_lines(w, w->fd, w->buf, w->used, NULL, 0,
				    w->lines);
		w->used = 0;
		w->lines = 0;
		return;
	}
	submit(w);
	pthread_mutex_lock(&w->lock);
	while (w->queued)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
}

/* After a drain: lost lines leave the size. */
static void settle_size(struct sl_json_writer *w)
{
	pthread_mutex_lock(&w->lock);
	w->size += w->formatted;
	w->formatted = 0;
	w->size -= w->lost_bytes;
	w->lost_bytes = 0;
	pthread_mutex_unlock(&w->lock);
}

int sl_json_writer_flush(struct sl_json_writer *w)
{
	int rc;

	drain(w);
	settle_size(w);
	pthread_mutex_lock(&w->lock);
	rc = w->error;
	w->error = 0;
	pthread_mutex_unlock(&w->lock);
	return rc;
}

int sl_json_writer_stats(struct sl_json_writer *w,
			 struct sl_json_writer_stats *st)
{
	if (!w || !st)
		return -EINVAL;
	pthread_mutex_lock(&w->lock);
	*st = w->st;
	pthread_mutex_unlock(&w->lock);
	return 0;
}

static int open_path(const char *path, int append)
{
	int flags =
	    O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);

	if (!strcmp(path, "-"))
		return dup(1);
	return open(path, flags, 0644);
}

static uint64_t file_size(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size
							  : 0;
}

static void writer_free(struct sl_json_writer *w)
{
	for (int i = 0; i < JSON_BUFS; i++) {
		free(w->bufs[i]);
		free(w->arenas[i]);
	}
	free(w->out);
	free(w);
}

/* The most a write of a writer shared by processes may carry and keep
 * its lines whole among theirs: a regular file's writes do not interleave
 * (the kernel holds the inode for each, and appends or moves the shared
 * offset under it); a pipe's (and any other kind's) only up to PIPE_BUF
 * bytes. */
static size_t shared_write_max(int fd)
{
	struct stat st;

	_Static_assert(JSON_LINE_MAX < PIPE_BUF, "a record's line fits a pipe's atomic write");
	if (fstat(fd, &st))
		return PIPE_BUF;
	/* /dev/null keeps nothing to mix up */
	if (S_ISREG(st.st_mode) ||
	    (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)))
		return JSON_SHARED_BUF;
	return PIPE_BUF;
}

int sl_json_writer_open(struct sl_json_writer **out, const char *path,
			int append, int mode)
{
	struct sl_json_writer *w;
	int rc = -ENOMEM;

	if (mode < SL_JSON_BUFFERED || mode > SL_JSON_SHARED)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->append = append;
	w->fd = open_path(path, append);
	if (w->fd < 0) {
		rc = -errno;
		free(w);
		return rc;
	}
	w->line_buffered = mode == SL_JSON_LINES;
	w->cap = mode == SL_JSON_SHARED ? shared_write_max(w->fd) : JSON_BUF;
	/* one buffer for a line-buffered writer: it has no thread */
	for (int i = 0; i < (w->line_buffered ? 1 : JSON_BUFS); i++) {
		w->bufs[i] = malloc(JSON_BUF);
		if (!w->bufs[i])
			goto out_close_fd;
	}
	/* records formatted by the thread: a threaded writer's own file */
	if (!w->line_buffered && mode != SL_JSON_SHARED) {
		w->out = malloc(JSON_OUT);
		if (!w->out)
			goto out_close_fd;
		for (int i = 0; i < JSON_BUFS; i++) {
			w->arenas[i] = malloc(JSON_ARENA);
			if (!w->arenas[i])
				goto out_close_fd;
		}
	}
	w->buf = w->bufs[0];
	w->size = file_size(w->fd);
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	if (!w->line_buffered) {
		rc = sl_thread_start(&w->thread, writer_thread, w);
		if (rc)
			goto out_close;
		w->have_thread = 1;
	}
	*out = w;
	return 0;

out_close:
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
out_close_fd:
	close(w->fd);
	writer_free(w);
	return rc;
}

/* Makes room for need bytes in the buffer being filled. */
static void reserve(struct sl_json_writer *w, size_t need)
{
	/* an empty buffer takes a line longer than cap (up to JSON_BUF) */
	if (w->used + need <= w->cap || !w->used)
		return;
	if (w->have_thread)
		submit(w);
	else
		drain(w);
}

/* The line is formatted at buf + used; this commits it (with its
 * newline) or takes it back. */
static int commit_line(struct sl_json_writer *w, int n, uint64_t max_size)
{
	if (max_size)
		w->sized = 1;
	if (max_size && w->size && w->size + (uint64_t)n + 1 > max_size)
		return -EFBIG;
	w->buf[w->used + (size_t)n] = '\n';
	w->used += (size_t)n + 1;
	w->lines++;
	w->size += (uint64_t)n + 1;
	if (w->line_buffered) {
		/* a failure is counted; flush returns it */
		drain(w);
		settle_size(w);
	}
	return n + 1;
}

/* The size of a record's arena entry: aligned pieces. */
#define ARENA_ALIGN(n) (((n) + 7) & ~(size_t)7)

static size_t deferred_size(const struct sl_flow_rec *r)
{
	return ARENA_ALIGN(sizeof(struct deferred)) +
	       (r->stats ? ARENA_ALIGN(sizeof(*r->stats)) : 0) +
	       (r->splt ? ARENA_ALIGN(sizeof(*r->splt)) : 0) +
	       (r->app ? ARENA_ALIGN(sizeof(*r->app)) : 0);
}

/* Copies the record into the arena, for the thread to format. */
static void defer_flow(struct sl_json_writer *w, const struct sl_flow_rec *r)
{
	size_t need = deferred_size(r);
	struct deferred *d;
	char *p;

	if (w->arena_used + need > JSON_ARENA)
		submit(w);
	d = (struct deferred *)(w->arenas[w->cur] + w->arena_used);
	d->at = w->used;
	d->text_lines = w->lines - w->n_deferred;
	d->size = (uint32_t)need;
	d->rec = *r;
	p = (char *)d + ARENA_ALIGN(sizeof(*d));
	if (r->stats) {
		d->rec.stats = memcpy(p, r->stats, sizeof(*r->stats));
		p += ARENA_ALIGN(sizeof(*r->stats));
	}
	if (r->splt) {
		d->rec.splt = memcpy(p, r->splt, sizeof(*r->splt));
		p += ARENA_ALIGN(sizeof(*r->splt));
	}
	if (r->app)
		d->rec.app = memcpy(p, r->app, sizeof(*r->app));
	w->arena_used += need;
	w->n_deferred++;
	w->lines++;
}

int sl_json_writer_flow(struct sl_json_writer *w, const struct sl_flow_rec *r,
			uint64_t max_size)
{
	if (!max_size && w->arenas[0] && !w->sized) {
		defer_flow(w, r);
		return 0;
	}
	reserve(w, JSON_LINE_MAX + 1);
	return commit_line(w, flow_line(r, w->buf + w->used), max_size);
}

int sl_json_writer_slice(struct sl_json_writer *w, const struct sl_slice_rec *r,
			 uint64_t max_size)
{
	reserve(w, JSON_LINE_MAX + 1);
	return commit_line(w, slice_line(r, w->buf + w->used), max_size);
}

int sl_json_writer_slices(struct sl_json_writer *w,
			  const struct sl_slice_rec *r, uint32_t n,
			  uint64_t max_size)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		int rc = sl_json_writer_slice(w, &r[i], max_size);

		if (rc < 0)
			return i ? (int)i : rc;
	}
	return (int)i;
}

int sl_json_writer_line(struct sl_json_writer *w, const char *line, size_t len,
			uint64_t max_size)
{
	if (len >= INT32_MAX) /* the length is returned as an int */
		return -EINVAL;
	if (w->cap == PIPE_BUF && len + 1 > PIPE_BUF)
		return -EMSGSIZE; /* cut up, it would mix with the others' */
	if (max_size)
		w->sized = 1;
	if (max_size && w->size && w->size + len + 1 > max_size)
		return -EFBIG;
	if (len + 1 > JSON_BUF) {
		/* a huge line goes out on its own, written here while the
		 * thread is idle */
		drain(w);
		w->size += len + 1;
		write_lines(w, w->fd, line, len, "\n", 1, 1);
		settle_size(w);
		return (int)(len + 1);
	}
	reserve(w, len + 1);
	memcpy(w->buf + w->used, line, len);
	w->buf[w->used + len] = '\n';
	w->used += len + 1;
	w->lines++;
	w->size += len + 1;
	if (w->line_buffered) {
		drain(w);
		settle_size(w);
	}
	return (int)(len + 1);
}

uint64_t sl_json_writer_size(const struct sl_json_writer *w)
{
	return w->size;
}

int sl_json_writer_reopen(struct sl_json_writer *w, const char *path)
{
	int fd;

	drain(w);
	settle_size(w);
	fd = open_path(path, w->append);
	if (fd < 0)
		return -errno;
	pthread_mutex_lock(&w->lock);
	close(w->fd);
	w->fd = fd;
	pthread_mutex_unlock(&w->lock);
	w->size = file_size(fd);
	return 0;
}

/* Bytes of lines this writer took and has not written yet: its buffers
 * (the one being written counted whole). */
static uint64_t pending_bytes(struct sl_json_writer *w)
{
	uint64_t n = w->used;

	pthread_mutex_lock(&w->lock);
	for (uint32_t i = 0; i < w->queued; i++)
		n += w->len[(w->next + i) % JSON_BUFS];
	pthread_mutex_unlock(&w->lock);
	return n;
}

static int same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

int sl_json_writer_follow(struct sl_json_writer *w, const char *path,
			  uint64_t *file_size)
{
	struct stat named, mine;
	int rc = 0;

	if (fstat(w->fd, &mine))
		return -errno;
	/* moved away and not yet replaced: it is followed at the next call */
	if (stat(path, &named) == 0 && !same_file(&named, &mine)) {
		rc = sl_json_writer_reopen(w, path);
		if (rc < 0)
			return rc;
		rc = 1;
		if (fstat(w->fd, &mine))
			return -errno;
	}
	if (file_size)
		*file_size = (uint64_t)mine.st_size + pending_bytes(w);
	return rc;
}

/* The lock is on the file being moved: two processes that both find it
 * full rotate it once, the second one follows; an advisory lock is
 * enough, the writers of the file are all sluice's. */
int sl_json_writer_rotate_shared(struct sl_json_writer *w, const char *path,
				 const char *to)
{
	struct stat named, mine;
	int fd, rc;

	if (!w || !path || !to)
		return -EINVAL;
	fd = w->fd;
	if (flock(fd, LOCK_EX))
		return -errno;
	if (fstat(fd, &mine)) {
		rc = -errno;
		goto out_unlock;
	}
	if (stat(path, &named)) {
		/* moved away by another and not yet replaced: followed later */
		rc = errno == ENOENT ? 0 : -errno;
		goto out_unlock;
	}
	if (!same_file(&named, &mine)) {
		rc = sl_json_writer_reopen(w, path);
		goto out_unlock;
	}
	/* a file no line reached (a quiet interval, a full disk) stays: the
	 * writer's own lines count once flushed (an error there is counted) */
	(void)sl_json_writer_flush(w);
	if (fstat(fd, &mine)) {
		rc = -errno;
		goto out_unlock;
	}
	if (mine.st_size == 0) {
		rc = 0;
		goto out_unlock;
	}
	if (rename(path, to)) {
		rc = -errno;
		goto out_unlock;
	}
	rc = sl_json_writer_reopen(w, path);
	if (rc < 0) {
		(void)rename(to, path); /* on in the current file */
		goto out_unlock;
	}
	rc = 1;
out_unlock:
	if (w->fd == fd) /* else reopen closed it, and the lock with it */
		flock(fd, LOCK_UN);
	return rc;
}

int sl_json_writer_close(struct sl_json_writer *w)
{
	int rc;

	if (!w)
		return 0;
	rc = sl_json_writer_flush(w);
	if (w->have_thread) {
		pthread_mutex_lock(&w->lock);
		w->stop = 1;
		pthread_cond_broadcast(&w->cond);
		pthread_mutex_unlock(&w->lock);
		pthread_join(w->thread, NULL);
	}
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	if (close(w->fd) && !rc)
		rc = -errno;
	writer_free(w);
	return rc;
}
