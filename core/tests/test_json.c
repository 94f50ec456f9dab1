/* test_json.c - JSON lines: addresses as inet_ntop writes them, records
 * that fit or report the size they need, and the buffered writer (its
 * thread, size limits for rotation, reopen, line-buffered appends, write
 * errors: a full device, short writes past the file size limit cut back
 * to whole lines and counted, a full non-blocking pipe waited out). */
#include <arpa/inet.h>
#include <math.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice.h"
#include "test.h"
#include "text.h"

static char dir[] = "/tmp/sluice-test-json.XXXXXX";

static struct sl_slice_rec slice_v6(const uint8_t *src, const uint8_t *dst)
{
	struct sl_slice_rec r;

	memset(&r, 0, sizeof(r));
	r.fid = 7;
	r.key.ip_version = 6;
	r.key.proto = 17;
	memcpy(r.key.src, src, 16);
	memcpy(r.key.dst, dst, 16);
	r.start_ns = 1700000000000000000ULL;
	r.end_ns = r.start_ns + 1000000000ULL;
	return r;
}

/* The "src":"..." value of a record's JSON. */
static void src_of(const char *json, char *out, size_t len)
{
	const char *p = strstr(json, "\"src\":\"");
	size_t n = 0;

	out[0] = 0;
	if (!p)
		return;
	p += 7;
	while (p[n] && p[n] != '"' && n + 1 < len) {
		out[n] = p[n];
		n++;
	}
	out[n] = 0;
}

/* Random addresses with zero runs of every length and place, and the
 * embedded IPv4 forms: the formatter agrees with inet_ntop on each. */
static void test_ipv6_text(void)
{
	uint8_t a[16], zero[16] = {0};
	char json[1024], got[64], want[64];
	int mismatches = 0;

	srand(5);
	for (int i = 0; i < 200000; i++) {
		for (int j = 0; j < 16; j++)
			a[j] = (uint8_t)(rand() & 0xff);
		/* zero groups: a random subset, often in runs */
		for (int g = 0; g < 8; g++)
			if (rand() % 3 == 0)
				a[2 * g] = a[2 * g + 1] = 0;
		if (i % 7 == 0) {
			memset(a, 0, 12);
			if (i % 14 == 0)
				a[10] = a[11] = 0xff;
		}
		if (i % 101 == 0)
			a[rand() % 16] = (uint8_t)(1 + rand() % 3);
		struct sl_slice_rec r = slice_v6(a, zero);

		sl_slice_rec_json(&r, json, sizeof(json));
		src_of(json, got, sizeof(got));
		inet_ntop(AF_INET6, a, want, sizeof(want));
		if (strcmp(got, want)) {
			if (mismatches++ < 5)
				fprintf(stderr, "ipv6: got %s want %s\n", got,
					want);
		}
		/* sl_key_addr (Lua's rec.src) writes the same */
		if (sl_key_addr(&r.key, 0, got, sizeof(got)) !=
			    (int)strlen(want) ||
		    strcmp(got, want))
			mismatches++;
	}
	CHECK_EQ(mismatches, 0);
	/* the edges by name */
	const char *cases[] = {"::",
			       "::1",
			       "1::",
			       "::ffff:1.2.3.4",
			       "::1.2.3.4",
			       "1:0:0:2::3",
			       "2001:db8::1:0:0:1",
			       "fe80::1:2:3:4",
			       "1:2:3:4:5:6:7:8"};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		inet_pton(AF_INET6, cases[i], a);
		struct sl_slice_rec r = slice_v6(a, zero);

		sl_slice_rec_json(&r, json, sizeof(json));
		src_of(json, got, sizeof(got));
		inet_ntop(AF_INET6, a, want, sizeof(want));
		CHECK(!strcmp(got, want));
	}
}

/* sl_key_addr on IPv4, and a buffer too small for the text. */
static void test_key_addr(void)
{
	struct sl_key k;
	char got[64], want[64];
	int mismatches = 0;

	memset(&k, 0, sizeof(k));
	k.ip_version = 4;
	srand(6);
	for (int i = 0; i < 100000; i++) {
		for (int j = 0; j < 4; j++)
			k.dst[j] = (uint8_t)(rand() % 3 ? rand() & 0xff : rand() % 10);
		inet_ntop(AF_INET, k.dst, want, sizeof(want));
		if (sl_key_addr(&k, 1, got, sizeof(got)) != (int)strlen(want) ||
		    strcmp(got, want))
			mismatches++;
	}
	CHECK_EQ(mismatches, 0);
	memcpy(k.src, "\xc0\xa8\x01\x0a", 4);
	CHECK_EQ(sl_key_addr(&k, 0, got, 13), 12);
	CHECK(!strcmp(got, "192.168.1.10"));
	CHECK_EQ(sl_key_addr(&k, 0, got, 12), -ENOSPC);
}

/* Too small a buffer: the length needed comes back, the text is cut and
 * terminated, as snprintf does. */
static void test_snprintf_semantics(void)
{
	struct sl_flow_rec f;
	char big[1024], small[16];
	int n, m;

	memset(&f, 0, sizeof(f));
	f.fid = 1;
	f.key.ip_version = 4;
	f.key.proto = 6;
	n = sl_flow_rec_json(&f, big, sizeof(big));
	CHECK(n > 100);
	CHECK_EQ((int)strlen(big), n);
	CHECK_EQ(big[0], '{');
	CHECK_EQ(big[n - 1], '}');
	m = sl_flow_rec_json(&f, small, sizeof(small));
	CHECK_EQ(m, n);
	CHECK_EQ((int)strlen(small), 15);
	CHECK(!strncmp(small, big, 15));
	CHECK_EQ(sl_flow_rec_json(&f, NULL, 0), n);
}

/* The longest line a flow can make: IPv6 in a tunnel, every number at
 * its widest, every feature, splt at its most packets, labels at their
 * longest, quotes escaped. It fits the formatter's scratch line (a
 * record that did not would overrun it) and ends whole. */
static void test_longest_flow(void)
{
	static struct sl_flow_stats st;
	static struct sl_splt sp;
	static struct sl_app_label app;
	struct sl_flow_rec f;
	char *buf = malloc(1 << 16);
	int n;

	memset(&f, 0xff, sizeof(f));
	f.key.ip_version = 6;
	f.key.proto = 6;
	f.state_code = SL_TCP_ESTABLISHED;
	f.reason_code = SL_END_IDLE;
	f.encap.type = SL_TUNNEL_GTPU;
	f.encap.ip_version = 6;
	f.encap.has_id = 1;
	memset(&f.hist, 'S', sizeof(f.hist));
	memset(&st, 0xff, sizeof(st));
	memset(&sp, 0xff, sizeof(sp));
	sp.n = sp.len = SL_SPLT_MAX;
	memset(&app, 0, sizeof(app));
	app.state = SL_DPI_DONE;
	memset(app.application_name, '"', sizeof(app.application_name) - 1);
	memset(app.category, '"', sizeof(app.category) - 1);
	memset(app.server_name, '\\', sizeof(app.server_name) - 1);
	f.stats = &st;
	f.splt = &sp;
	f.app = &app;
	n = sl_flow_rec_json(&f, buf, 1 << 16);
	fprintf(stderr, "longest flow line: %d bytes\n", n);
	/* 2^64 - 1 ns, exactly */
	CHECK(strstr(buf, "\"src2dst_min_piat_ms\":18446744073709.551615,"));
	CHECK(n > 3000);
	CHECK(n < 4095);
	CHECK_EQ((int)strlen(buf), n);
	CHECK_EQ(buf[n - 1], '}');
	free(buf);
}

/* Times of whole nanoseconds are exact milliseconds in JSON: no
 * trailing zeros, no rounding, an integer when whole. */
static void test_exact_ms(void)
{
	static struct sl_flow_stats st;
	static struct sl_splt sp;
	struct sl_flow_rec f;
	char buf[4096];

	memset(&f, 0, sizeof(f));
	memset(&st, 0, sizeof(st));
	memset(&sp, 0, sizeof(sp));
	f.key.ip_version = 4;
	f.key.proto = 17;
	st.s[SL_DIR_FWD].min_piat_ns = 1;
	st.s[SL_DIR_FWD].max_piat_ns = 1500000;
	st.s[SL_DIR_REV].max_piat_ns = 123456789012;
	st.s[SL_DIR_FWD].min_ps = 60;
	sp.n = sp.len = 3;
	sp.piat_ns[1] = 2000000;
	sp.piat_ns[2] = 999999;
	f.stats = &st;
	f.splt = &sp;
	CHECK(sl_flow_rec_json(&f, buf, sizeof(buf)) < (int)sizeof(buf));
	CHECK(strstr(buf, "\"src2dst_min_ps\":60,"));
	CHECK(strstr(buf, "\"src2dst_min_piat_ms\":0.000001,"));
	CHECK(strstr(buf, "\"src2dst_max_piat_ms\":1.5,"));
	CHECK(strstr(buf, "\"dst2src_max_piat_ms\":123456.789012,"));
	CHECK(strstr(buf, "\"dst2src_min_piat_ms\":0,"));
	CHECK(strstr(buf, "\"splt_piat_ms\":[0,2,0.999999]"));
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	if (fread(buf, 1, (size_t)n, f) != (size_t)n)
		n = 0;
	buf[n] = 0;
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static int count_lines(const char *s, size_t len)
{
	int n = 0;

	for (size_t i = 0; i < len; i++)
		n += s[i] == '\n';
	return n;
}

/* Many records through the thread: every line arrives, in order, and the
 * size the writer reports is the file's. */
static void test_writer(void)
{
	char path[128], *data;
	struct sl_json_writer *w;
	struct sl_slice_rec recs[100];
	uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
	size_t len;
	int ok = 1;
	uint64_t expect_fid = 0;

	snprintf(path, sizeof(path), "%s/w.json", dir);
	CHECK_EQ(sl_json_writer_open(&w, path, 0, 0), 0);
	for (int i = 0; i < 100; i++) {
		recs[i] = slice_v6(a, a);
	}
	for (int round = 0; round < 200; round++) {
		for (int i = 0; i < 100; i++)
			recs[i].fid = (uint64_t)round * 100 + (uint64_t)i;
		if (sl_json_writer_slices(w, recs, 100, 0) != 100)
			ok = 0;
		if (sl_json_writer_line(w, "{\"x\":1}", 7, 0) != 8)
			ok = 0;
	}
	CHECK(ok);
	CHECK_EQ(sl_json_writer_flush(w), 0);
	data = slurp(path, &len);
	CHECK(data != NULL);
	CHECK_EQ((uint64_t)len, sl_json_writer_size(w));
	CHECK_EQ(count_lines(data, len), 200 * 101);
	/* the slice lines in order */
	for (char *p = data; (p = strstr(p, "\"flow_id\":")); p++) {
		if (strtoull(p + 10, NULL, 10) != expect_fid)
			ok = 0;
		expect_fid++;
	}
	CHECK(ok);
	CHECK_EQ(expect_fid, 20000);
	free(data);
	CHECK_EQ(sl_json_writer_close(w), 0);
}

/* With a size limit, a line that would pass it is refused (-EFBIG) while
 * the file is not empty, and written after a reopen. */
static void test_limit_and_reopen(void)
{
	char path[128], moved[128], *data;
	struct sl_json_writer *w;
	const char *line = "{\"pad\":\"0123456789012345678901234567890\"}";
	size_t n = strlen(line), len;
	int written = 0, rc;

	snprintf(path, sizeof(path), "%s/r.json", dir);
	snprintf(moved, sizeof(moved), "%s/r.json.1", dir);
	CHECK_EQ(sl_json_writer_open(&w, path, 0, 0), 0);
	while ((rc = sl_json_writer_line(w, line, n, 200)) > 0)
		written++;
	CHECK_EQ(rc, -EFBIG);
	CHECK_EQ(written, (int)(200 / (n + 1)));
	CHECK(sl_json_writer_size(w) <= 200);
	CHECK_EQ(sl_json_writer_flush(w), 0);
	CHECK_EQ(rename(path, moved), 0);
	CHECK_EQ(sl_json_writer_reopen(w, path), 0);
	CHECK_EQ(sl_json_writer_size(w), 0);
	/* an empty file takes a line even past the limit */
	CHECK_EQ(sl_json_writer_line(w, line, n, 10), (int)n + 1);
	CHECK_EQ(sl_json_writer_close(w), 0);
	data = slurp(moved, &len);
	CHECK_EQ(count_lines(data, len), written);
	free(data);
	data = slurp(path, &len);
	CHECK_EQ(count_lines(data, len), 1);
	free(data);
}

/* Appending, line-buffered: each line is in the file as soon as it is
 * written, after what was there. */
static void test_line_buffered_append(void)
{
	char path[128], *data;
	struct sl_json_writer *w;
	size_t len;

	snprintf(path, sizeof(path), "%s/a.json", dir);
	CHECK_EQ(sl_json_writer_open(&w, path, 0, 0), 0);
	CHECK_EQ(sl_json_writer_line(w, "{}", 2, 0), 3);
	CHECK_EQ(sl_json_writer_close(w), 0);
	CHECK_EQ(sl_json_writer_open(&w, path, 1, 1), 0);
	CHECK_EQ(sl_json_writer_size(w), 3);
	CHECK_EQ(sl_json_writer_line(w, "{\"b\":2}", 7, 0), 8);
	data = slurp(path, &len);
	CHECK(data && !strcmp(data, "{}\n{\"b\":2}\n"));
	free(data);
	CHECK_EQ(sl_json_writer_close(w), 0);
}

static struct sl_json_writer_stats stats_of(struct sl_json_writer *w)
{
	struct sl_json_writer_stats st;

	memset(&st, 0xff, sizeof(st));
	CHECK_EQ(sl_json_writer_stats(w, &st), 0);
	return st;
}

/* A writer to a full device, flushed and closed: none of its lines
 * landed, every one of them counted lost, the error returned once. */
static void check_all_lost(struct sl_json_writer *w, uint64_t lines)
{
	struct sl_json_writer_stats st;

	CHECK_EQ(sl_json_writer_flush(w), -ENOSPC);
	st = stats_of(w);
	CHECK_EQ(st.lines, 0);
	CHECK_EQ(st.lost, lines);
	CHECK_EQ(sl_json_writer_size(w), 0);
	CHECK_EQ(sl_json_writer_close(w), 0);
}

/* A full device: every line is taken, then lost and counted; the error
 * comes back from flush once; later lines are tried again. */
static void test_write_error(void)
{
	struct sl_json_writer *w;
	struct sl_json_writer_stats st;
	int ok = 1;

	if (access("/dev/full", W_OK)) {
		printf("skipped write-error test: /dev/full is not writable\n");
		return;
	}
	CHECK_EQ(sl_json_writer_open(&w, "/dev/full", 1, 0), 0);
	CHECK_EQ(sl_json_writer_line(w, "{}", 2, 0), 3);
	CHECK_EQ(sl_json_writer_flush(w), -ENOSPC);
	CHECK_EQ(sl_json_writer_flush(w), 0); /* reported once */
	st = stats_of(w);
	CHECK_EQ(st.lines, 0);
	CHECK_EQ(st.bytes, 0);
	CHECK_EQ(st.lost, 1);
	CHECK_EQ(st.partial, 0);
	CHECK_EQ(st.last_error, -ENOSPC);
	CHECK_EQ(sl_json_writer_size(w), 0);
	/* several buffers through the thread: each fails, each is counted */
	for (int i = 0; i < 100000; i++)
		if (sl_json_writer_line(w, "{\"n\":12345678901234567890}", 26,
					0) != 27)
			ok = 0;
	CHECK(ok);
	check_all_lost(w, 100001);

	/* line-buffered: the line is lost at once, the append still takes it */
	CHECK_EQ(sl_json_writer_open(&w, "/dev/full", 1, 1), 0);
	CHECK_EQ(sl_json_writer_line(w, "{}", 2, 0), 3);
	st = stats_of(w);
	CHECK_EQ(st.lost, 1);
	CHECK_EQ(st.last_error, -ENOSPC);
	CHECK_EQ(sl_json_writer_flush(w), -ENOSPC);
	CHECK_EQ(sl_json_writer_close(w), 0);
	CHECK(sl_json_writer_open(&w, "/nonexistent/dir/x.json", 0, 0) ==
	      -ENOENT);
}

/* SIGXFSZ: ignored when it has its default action, so writes past the
 * file size limit fail with EFBIG; a program's own handler is kept. */
static void on_xfsz(int sig)
{
	(void)sig;
}

static void test_ignore_xfsz(void)
{
	struct sigaction sa;

	signal(SIGXFSZ, on_xfsz);
	CHECK_EQ(sl_signal_ignore_xfsz(), 0);
	CHECK_EQ(sigaction(SIGXFSZ, NULL, &sa), 0);
	CHECK(sa.sa_handler == on_xfsz);
	signal(SIGXFSZ, SIG_DFL);
	CHECK_EQ(sl_signal_ignore_xfsz(), 0);
	CHECK_EQ(sigaction(SIGXFSZ, NULL, &sa), 0);
	CHECK(sa.sa_handler == SIG_IGN);
}

static void set_fsize(rlim_t n)
{
	struct rlimit lim;

	CHECK_EQ(getrlimit(RLIMIT_FSIZE, &lim), 0);
	lim.rlim_cur = n;
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
}

/* Every line of the file is whole: it ends with a newline, and each line
 * is the given one. Returns the number of lines. */
static int whole_lines(const char *path, const char *line)
{
	size_t len, n = strlen(line);
	char *data = slurp(path, &len);
	int lines = 0, ok = 1;

	CHECK(data != NULL);
	if (!data)
		return -1;
	CHECK(len % (n + 1) == 0);
	for (size_t off = 0; off + n < len; off += n + 1) {
		if (memcmp(data + off, line, n) || data[off + n] != '\n')
			ok = 0;
		lines++;
	}
	CHECK(ok);
	free(data);
	return lines;
}

/* A write cut short by the file size limit (as on a full disk): the file
 * goes back to its last whole line, the lines after it are counted lost,
 * and the size the writer reports is the file's again. */
static void test_short_write(void)
{
	const char *line = "{\"pad\":\"0123456789012345678901234567890123\"}";
	size_t n = strlen(line);
	char path[128], *big;
	struct sl_json_writer *w;
	struct sl_json_writer_stats st;
	struct rlimit old;
	int ok = 1;

	CHECK_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
	snprintf(path, sizeof(path), "%s/short.json", dir);
	CHECK_EQ(sl_json_writer_open(&w, path, 0, 0), 0);
	for (int i = 0; i < 10; i++)
		sl_json_writer_line(w, line, n, 0);
	CHECK_EQ(sl_json_writer_flush(w), 0);
	/* room for 5 more lines and part of a sixth */
	set_fsize((rlim_t)(15 * (n + 1) + n / 2));
	for (int i = 0; i < 20; i++)
		if (sl_json_writer_line(w, line, n, 0) != (int)n + 1)
			ok = 0;
	CHECK(ok);
	CHECK_EQ(sl_json_writer_flush(w), -EFBIG);
	st = stats_of(w);
	CHECK_EQ(st.lines, 15);
	CHECK_EQ(st.bytes, 15 * (n + 1));
	CHECK_EQ(st.lost, 15);
	CHECK_EQ(st.partial, 0);
	CHECK_EQ(st.last_error, -EFBIG);
	CHECK_EQ(sl_json_writer_size(w), 15 * (n + 1));
	CHECK_EQ(whole_lines(path, line), 15);

	/* a line too large for a buffer goes out on its own: cut back too */
	big = malloc((2u << 20) + 1);
	memset(big, ' ', 2u << 20);
	big[0] = '{';
	big[(2u << 20) - 1] = '}';
	CHECK_EQ(sl_json_writer_line(w, big, 2u << 20, 0), (2 << 20) + 1);
	free(big);
	CHECK_EQ(sl_json_writer_flush(w), -EFBIG);
	CHECK_EQ(stats_of(w).lost, 16);
	CHECK_EQ(whole_lines(path, line), 15);

	/* room again: later lines follow the last whole one */
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
	for (int i = 0; i < 3; i++)
		sl_json_writer_line(w, line, n, 0);
	CHECK_EQ(sl_json_writer_close(w), 0);
	CHECK_EQ(whole_lines(path, line), 18);
}

/* A flow record of fid i with features varying with it: statistics on
 * every other, early packets on every third, a label on every fifth. */
static void flow_of(uint64_t i, struct sl_flow_rec *f, struct sl_flow_stats *st,
		    struct sl_splt *sp, struct sl_app_label *app)
{
	memset(f, 0, sizeof(*f));
	memset(st, 0, sizeof(*st));
	memset(sp, 0, sizeof(*sp));
	memset(app, 0, sizeof(*app));
	f->fid = i;
	f->key.ip_version = i % 4 ? 4 : 6;
	f->key.proto = 6;
	f->key.src[0] = (uint8_t)i;
	f->key.sport = (uint16_t)i;
	f->fwd.pkts = i * 3 + 1;
	f->fwd.bytes = i * 1000 + 60;
	f->fwd.first_ns = 1700000000000000000ULL + i * 1000;
	f->fwd.last_ns = f->fwd.first_ns + i * 7;
	if (i % 2) {
		st->s[SL_DIR_FWD].packets = i % 50 + 2;
		st->s[SL_DIR_FWD].min_ps = 60;
		st->s[SL_DIR_FWD].max_ps = 1514;
		st->s[SL_DIR_FWD].sum_ps = (i % 50 + 2) * 700;
		st->s[SL_DIR_FWD].sumsq_ps[0] = (i % 50 + 2) * 700 * 900;
		st->both.sum_ns = i * 12345;
		st->both.max_ns = i * 999;
		f->stats = st;
	}
	if (i % 3 == 0) {
		sp->n = sp->len = (uint16_t)(i % SL_SPLT_MAX);
		for (int k = 0; k < sp->n; k++)
			sp->ps[k] = (uint16_t)(60 + k + i);
		f->splt = sp;
	}
	if (i % 5 == 0) {
		app->state = SL_DPI_DONE;
		snprintf(app->application_name, sizeof(app->application_name),
			 "TLS.App%llu", (unsigned long long)i);
		f->app = app;
	}
}

/* With a thread and no size limit, flow records are formatted by the
 * writer's thread: the file holds the same lines as formatting them here,
 * in the order taken among the other lines (slices, given lines), through
 * many buffers and arenas; the size is the file's after a flush. */
static void test_deferred_flows(void)
{
	static struct sl_flow_stats st;
	static struct sl_splt sp;
	static struct sl_app_label app;
	struct sl_slice_rec slice;
	struct sl_flow_rec f;
	struct sl_json_writer *w;
	char path[128], line[4096], *data, *expect, *e;
	size_t len;
	uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8};
	uint32_t n = 30000, lines = 0;
	int ok = 1, n_line;

	expect = malloc((size_t)n * 2 * 4096);
	CHECK(expect != NULL);
	e = expect;
	snprintf(path, sizeof(path), "%s/deferred.json", dir);
	CHECK_EQ(sl_json_writer_open(&w, path, 0, SL_JSON_BUFFERED), 0);
	slice = slice_v6(a, a);
	for (uint32_t i = 0; i < n; i++) {
		flow_of(i, &f, &st, &sp, &app);
		if (sl_json_writer_flow(w, &f, 0) != 0)
			ok = 0;
		n_line = sl_flow_rec_json(&f, line, sizeof(line));
		e = (char *)memcpy(e, line, (size_t)n_line) + n_line;
		*e++ = '\n';
		lines++;
		if (i % 7 == 0) {
			n_line = snprintf(line, sizeof(line), "{\"x\":%u}", i);
			if (sl_json_writer_line(w, line, (size_t)n_line, 0) !=
			    n_line + 1)
				ok = 0;
			e = (char *)memcpy(e, line, (size_t)n_line) + n_line;
			*e++ = '\n';
			lines++;
		}
		if (i % 1000 == 999) {
			slice.fid = i;
			if (sl_json_writer_slices(w, &slice, 1, 0) != 1)
				ok = 0;
			n_line = sl_slice_rec_json(&slice, line, sizeof(line));
			e = (char *)memcpy(e, line, (size_t)n_line) + n_line;
			*e++ = '\n';
			lines++;
		}
		if (i == n / 2) { /* a flush in the middle: the size is exact */
			CHECK_EQ(sl_json_writer_flush(w), 0);
			CHECK_EQ(sl_json_writer_size(w), (uint64_t)(e - expect));
		}
	}
	CHECK(ok);
	CHECK_EQ(sl_json_writer_flush(w), 0);
	CHECK_EQ(sl_json_writer_size(w), (uint64_t)(e - expect));
	CHECK_EQ(stats_of(w).lines, lines);
	CHECK_EQ(stats_of(w).lost, 0);
	data = slurp(path, &len);
	CHECK(data != NULL);
	CHECK_EQ(len, (size_t)(e - expect));
	CHECK(data && len == (size_t)(e - expect) && !memcmp(data, expect, len));
	free(data);

	/* given a size limit once, the writer formats here: bytes returned */
	flow_of(1, &f, &st, &sp, &app);
	n_line = sl_flow_rec_json(&f, line, sizeof(line));
	CHECK_EQ(sl_json_writer_flow(w, &f, 1ULL << 40), n_line + 1);
	CHECK_EQ(sl_json_writer_flow(w, &f, 0), n_line + 1);
	CHECK_EQ(sl_json_writer_close(w), 0);
	free(expect);
}

/* Flow records the thread formats and cannot write: each is counted
 * lost, the error comes from flush, and a write cut short by the file
 * size limit leaves whole lines only. */
static void test_deferred_errors(void)
{
	static struct sl_flow_stats st;
	static struct sl_splt sp;
	static struct sl_app_label app;
	struct sl_flow_rec f;
	struct sl_json_writer *w;
	struct sl_json_writer_stats ws;
	struct rlimit old;
	char path[128], *data;
	size_t len;

	if (!access("/dev/full", W_OK)) {
		CHECK_EQ(sl_json_writer_open(&w, "/dev/full", 1, 0), 0);
		for (uint32_t i = 0; i < 5000; i++) {
			flow_of(i, &f, &st, &sp, &app);
			sl_json_writer_flow(w, &f, 0);
		}
		check_all_lost(w, 5000);
	} else {
		printf("skipped deferred write-error test: /dev/full is not writable\n");
	}

	CHECK_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
	snprintf(path, sizeof(path), "%s/deferred-short.json", dir);
	CHECK_EQ(sl_json_writer_open(&w, path, 0, 0), 0);
	set_fsize(100000);
	for (uint32_t i = 0; i < 2000; i++) {
		flow_of(i, &f, &st, &sp, &app);
		sl_json_writer_flow(w, &f, 0);
	}
	CHECK_EQ(sl_json_writer_flush(w), -EFBIG);
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
	ws = stats_of(w);
	CHECK(ws.lines > 0 && ws.lost > 0);
	CHECK_EQ(ws.lines + ws.lost, 2000);
	CHECK_EQ(sl_json_writer_size(w), ws.bytes);
	data = slurp(path, &len);
	CHECK(data != NULL);
	CHECK_EQ((uint64_t)len, ws.bytes);
	CHECK(data && len && data[len - 1] == '\n');
	CHECK_EQ((uint64_t)count_lines(data, len), ws.lines);
	free(data);
	CHECK_EQ(sl_json_writer_close(w), 0);
}

/* Line-buffered appends to a shared file: the line the limit cuts is taken
 * off again, counted, and the next line (room again) follows a whole one. */
static void test_short_append(void)
{
	const char *line = "{\"pad\":\"0123456789012345678901234567890123\"}";
	size_t n = strlen(line);
	char path[128];
	struct sl_json_writer *w;
	struct sl_json_writer_stats st;
	struct rlimit old;
	int taken = 0;

	CHECK_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
	snprintf(path, sizeof(path), "%s/append.json", dir);
	CHECK_EQ(sl_json_writer_open(&w, path, 0, 0), 0);
	sl_json_writer_line(w, line, n, 0);
	sl_json_writer_line(w, line, n, 0);
	CHECK_EQ(sl_json_writer_close(w), 0);
	CHECK_EQ(sl_json_writer_open(&w, path, 1, 1), 0);
	set_fsize((rlim_t)(4 * (n + 1) + 7));
	for (int i = 0; i < 5; i++)
		if (sl_json_writer_line(w, line, n, 0) == (int)n + 1)
			taken++;
	CHECK_EQ(taken, 5);
	st = stats_of(w);
	CHECK_EQ(st.lines, 2);
	CHECK_EQ(st.lost, 3);
	CHECK_EQ(st.partial, 0);
	CHECK_EQ(st.last_error, -EFBIG);
	CHECK_EQ(sl_json_writer_flush(w), -EFBIG);
	CHECK_EQ(sl_json_writer_size(w), 4 * (n + 1));
	CHECK_EQ(whole_lines(path, line), 4);
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
	CHECK_EQ(sl_json_writer_line(w, line, n, 0), (int)n + 1);
	CHECK_EQ(sl_json_writer_close(w), 0);
	CHECK_EQ(whole_lines(path, line), 5);
}

/* A rotation's reopen after a failed flush still moves to the new file
 * (the failure is counted); one that cannot open the new file keeps the
 * writer in its current one. */
static void test_reopen_after_error(void)
{
	const char *line = "{\"a\":1}";
	char path[128], next[128], bad[160];
	struct sl_json_writer *w;
	struct rlimit old;

	CHECK_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
	snprintf(path, sizeof(path), "%s/rot.json", dir);
	snprintf(next, sizeof(next), "%s/rot2.json", dir);
	snprintf(bad, sizeof(bad), "%s/no/such/dir.json", dir);
	CHECK_EQ(sl_json_writer_open(&w, path, 0, 0), 0);
	sl_json_writer_line(w, line, 7, 0);
	CHECK_EQ(sl_json_writer_flush(w), 0);
	set_fsize(8);
	sl_json_writer_line(w, line, 7, 0);
	CHECK_EQ(sl_json_writer_reopen(w, next), 0);
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
	CHECK_EQ(stats_of(w).lost, 1);
	CHECK_EQ(sl_json_writer_flush(w), -EFBIG); /* kept for the flush */
	CHECK_EQ(sl_json_writer_size(w), 0);
	sl_json_writer_line(w, line, 7, 0);
	CHECK_EQ(sl_json_writer_reopen(w, bad), -ENOENT);
	CHECK_EQ(sl_json_writer_size(w), 8);
	sl_json_writer_line(w, line, 7, 0);
	CHECK_EQ(sl_json_writer_close(w), 0);
	CHECK_EQ(whole_lines(path, line), 1);
	CHECK_EQ(whole_lines(next, line), 2);
}

struct reader {
	int fd;
	long lines;
};

/* Reads a pipe slowly to its end, counting lines. */
static void *slow_reader(void *arg)
{
	struct reader *r = arg;
	char buf[4096];
	ssize_t n;

	while ((n = read(r->fd, buf, sizeof(buf))) != 0) {
		if (n < 0)
			continue;
		for (ssize_t i = 0; i < n; i++)
			r->lines += buf[i] == '\n';
		usleep(50);
	}
	return NULL;
}

/* A non-blocking pipe that is full (EAGAIN) is waited for: nothing lost. */
static void test_nonblocking_pipe(void)
{
	const char *line = "{\"pad\":\"0123456789012345678901234567890123\"}";
	size_t n = strlen(line);
	struct reader r = {0};
	struct sl_json_writer *w;
	struct sl_json_writer_stats st;
	struct stat a, b;
	pthread_t t;
	char path[64];
	int p[2], probe;

	CHECK_EQ(pipe(p), 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", p[1]);
	/* the writer gets the lowest free descriptor: probe's */
	probe = dup(0);
	close(probe);
	CHECK_EQ(sl_json_writer_open(&w, path, 0, 0), 0);
	CHECK(fstat(probe, &a) == 0 && fstat(p[1], &b) == 0 &&
	      a.st_ino == b.st_ino);
	CHECK_EQ(fcntl(probe, F_SETFL, fcntl(probe, F_GETFL) | O_NONBLOCK), 0);
	close(p[1]);
	r.fd = p[0];
	CHECK_EQ(pthread_create(&t, NULL, slow_reader, &r), 0);
	for (int i = 0; i < 50000; i++)
		sl_json_writer_line(w, line, n, 0);
	CHECK_EQ(sl_json_writer_flush(w), 0);
	st = stats_of(w);
	CHECK_EQ(sl_json_writer_close(w), 0);
	pthread_join(t, NULL);
	close(p[0]);
	CHECK_EQ(st.lines, 50000);
	CHECK_EQ(st.lost, 0);
	CHECK_EQ(r.lines, 50000);
}

/* The features' means and deviations: 12 significant digits, as a JSON
 * number (no exponent in the fast range, no trailing zeros, a point only
 * before digits), read back within 5e-12 of the value. */
static void check_double(double v)
{
	char buf[64], *end;
	double back;
	size_t n = (size_t)(put_double(buf, v) - buf);

	buf[n] = 0;
	back = strtod(buf, &end);
	CHECK(end == buf + n);
	CHECK(v == 0 ? back == 0 : fabs(back - v) <= 5e-12 * v);
	CHECK(buf[0] != '.' && buf[n - 1] != '.');
	if (strchr(buf, '.') && !strchr(buf, 'e'))
		CHECK(buf[n - 1] != '0');
	if (v >= 1e-6 && v < 1e15)
		CHECK(!strchr(buf, 'e'));
}

static void test_put_double(void)
{
	static const double fixed[] = {
	    0,	   1,	       0.5,	 42,	      123.25,	   1e-6,
	    1e-5,  0.000123,   0.1,	 0.999999999999, 9.9999999999995,
	    99.99999999999951, 1e11,	 1e12,	      123456789012.5,
	    1e14,  999999999999999.0,	 5e-7,	      2e15,	   1.5e300};
	char buf[64];
	uint64_t x = 88172645463325252ULL;

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		check_double(fixed[i]);
	CHECK(!strncmp(buf, "0.5", (size_t)(put_double(buf, 0.5) - buf)));
	CHECK(!strncmp(buf, "123.25", (size_t)(put_double(buf, 123.25) - buf)));
	CHECK(!strncmp(buf, "0.000001", (size_t)(put_double(buf, 1e-6) - buf)));
	CHECK_EQ(put_double(buf, 42) - buf, 2);
	CHECK_EQ(put_double(buf, 9.99999999999996) - buf, 2); /* "10" */
	for (int i = 0; i < 200000; i++) {
		/* xorshift: values over every decade of the fast range */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		check_double((double)(x >> 11) / (double)(1ULL << 53) *
			     pow(10, (double)(x % 22) - 7));
	}
}

int main(void)
{
	test_put_double();
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_ipv6_text();
	test_key_addr();
	test_snprintf_semantics();
	test_longest_flow();
	test_exact_ms();
	test_writer();
	test_limit_and_reopen();
	test_line_buffered_append();
	test_write_error();
	test_ignore_xfsz();
	test_short_write();
	test_deferred_flows();
	test_deferred_errors();
	test_short_append();
	test_reopen_after_error();
	test_nonblocking_pipe();
	signal(SIGXFSZ, SIG_DFL);
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return test_done();
}
