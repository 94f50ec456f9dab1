/* test_json.c - JSON lines: addresses as inet_ntop writes them, records
 * that fit or report the size they need, and the buffered writer (its
 * thread, size limits for rotation, reopen, line-buffered appends). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice.h"
#include "test.h"

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

/* A full device: the error comes back from flush, nothing crashes. */
static void test_write_error(void)
{
	struct sl_json_writer *w;
	int rc = 0;

	if (access("/dev/full", W_OK)) {
		printf("skipped write-error test: /dev/full is not writable\n");
		return;
	}
	CHECK_EQ(sl_json_writer_open(&w, "/dev/full", 1, 0), 0);
	CHECK_EQ(sl_json_writer_line(w, "{}", 2, 0), 3);
	rc = sl_json_writer_flush(w);
	CHECK_EQ(rc, -ENOSPC);
	CHECK_EQ(sl_json_writer_flush(w), 0); /* reported once */
	CHECK_EQ(sl_json_writer_close(w), 0);
	CHECK(sl_json_writer_open(&w, "/nonexistent/dir/x.json", 0, 0) ==
	      -ENOENT);
}

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_ipv6_text();
	test_snprintf_semantics();
	test_writer();
	test_limit_and_reopen();
	test_line_buffered_append();
	test_write_error();
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return test_done();
}
