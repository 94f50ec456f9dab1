/* test_pcap_writer.c - files written by the pcap writer, read back byte by
 * byte and by tshark when it is installed; snaplen cuts; write errors on a
 * full device and past a file size limit; a full non-blocking pipe. */
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

#define NS	 1000000000ULL
#define HDR_LEN	 24
#define REC_LEN	 16
#define BIG_FILE (16u << 20)
#define TSHARK	 "/usr/bin/tshark"

static char dir[] = "/tmp/test_pcap_writer.XXXXXX";
static char path[64];
static uint8_t file[BIG_FILE];
static uint8_t pkt[300000];

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

static uint16_t get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return v;
}

/* Reads the whole file into file[]; returns its length. */
static long read_back(void)
{
	int fd = open(path, O_RDONLY);
	long n = 0, rc;

	if (fd < 0)
		return -1;
	while ((rc = read(fd, file + n, sizeof(file) - (size_t)n)) > 0)
		n += rc;
	close(fd);
	return n;
}

static void fill(uint8_t *p, uint32_t n, uint32_t seed)
{
	for (uint32_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 7 + seed);
}

/* Checks the record at *off against what was written; moves *off on. */
static void check_rec(long *off, uint64_t ts, uint32_t caplen, uint32_t wirelen,
		      uint32_t seed)
{
	const uint8_t *r = file + *off;

	CHECK_EQ(get32(r), ts / NS);
	CHECK_EQ(get32(r + 4), ts % NS / 1000);
	CHECK_EQ(get32(r + 8), caplen);
	CHECK_EQ(get32(r + 12), wirelen);
	fill(pkt, caplen, seed);
	CHECK(!memcmp(r + REC_LEN, pkt, caplen));
	*off += REC_LEN + caplen;
}

static void test_basic(void)
{
	struct sl_pcap_writer *w;
	const struct sl_writer_stats *st;
	uint64_t ts = 1700000000 * NS + 123456789;
	long off = HDR_LEN;

	CHECK_EQ(sl_pcap_writer_open(&w, path, SL_LINK_EN10MB, 0), 0);
	fill(pkt, 60, 1);
	CHECK_EQ(sl_pcap_writer_write(w, ts, pkt, 60, 60, SL_LINK_EN10MB), 0);
	fill(pkt, 1514, 2);
	CHECK_EQ(sl_pcap_writer_write(w, ts + 1000, pkt, 1514, 1514, SL_LINK_EN10MB), 0);
	fill(pkt, 100, 3);
	/* a caller that lost the wire length: never below caplen */
	CHECK_EQ(sl_pcap_writer_write(w, ts + 2 * NS, pkt, 100, 0, SL_LINK_EN10MB), 0);
	st = sl_pcap_writer_stats(w);
	CHECK_EQ(st->packets, 3);
	CHECK_EQ(st->bytes, HDR_LEN + 3 * REC_LEN + 60 + 1514 + 100);
	CHECK_EQ(st->errors, 0);
	CHECK_EQ(st->last_error, 0);
	CHECK_EQ(sl_pcap_writer_close(w), 0);

	CHECK_EQ(read_back(), HDR_LEN + 3 * REC_LEN + 60 + 1514 + 100);
	CHECK_EQ(get32(file), 0xa1b2c3d4);
	CHECK_EQ(get16(file + 4), 2);
	CHECK_EQ(get16(file + 6), 4);
	CHECK_EQ(get32(file + 8), 0);
	CHECK_EQ(get32(file + 12), 0);
	CHECK_EQ(get32(file + 16), 262144);
	CHECK_EQ(get32(file + 20), SL_LINK_EN10MB);
	check_rec(&off, ts, 60, 60, 1);
	check_rec(&off, ts + 1000, 1514, 1514, 2);
	check_rec(&off, ts + 2 * NS, 100, 100, 3);
}

static void test_snaplen(void)
{
	struct sl_pcap_writer *w;
	long off = HDR_LEN;

	CHECK_EQ(sl_pcap_writer_open(&w, path, SL_LINK_RAW, 64), 0);
	fill(pkt, 1000, 4);
	CHECK_EQ(sl_pcap_writer_write(w, 5 * NS, pkt, 1000, 1000, SL_LINK_RAW), 0);
	fill(pkt, 64, 5);
	CHECK_EQ(sl_pcap_writer_write(w, 6 * NS, pkt, 64, 1500, SL_LINK_RAW), 0);
	fill(pkt, 40, 6);
	CHECK_EQ(sl_pcap_writer_write(w, 7 * NS, pkt, 40, 40, SL_LINK_RAW), 0);
	/* an Ethernet frame has no place in a raw IP file: counted, refused */
	CHECK_EQ(sl_pcap_writer_write(w, 8 * NS, pkt, 40, 40, SL_LINK_EN10MB),
		 SL_E_LINKMIX);
	CHECK_EQ(sl_pcap_writer_stats(w)->errors, 1);
	CHECK_EQ(sl_pcap_writer_stats(w)->last_error, SL_E_LINKMIX);
	CHECK_EQ(sl_pcap_writer_stats(w)->packets, 3);
	CHECK_EQ(sl_pcap_writer_stats(w)->bytes,
		 HDR_LEN + 3 * REC_LEN + 64 + 64 + 40);
	CHECK_EQ(sl_pcap_writer_close(w), 0);
	CHECK_EQ(read_back(), HDR_LEN + 3 * REC_LEN + 64 + 64 + 40);
	CHECK_EQ(get32(file + 16), 64);
	CHECK_EQ(get32(file + 20), SL_LINK_RAW);
	check_rec(&off, 5 * NS, 64, 1000, 4);
	check_rec(&off, 6 * NS, 64, 1500, 5);
	check_rec(&off, 7 * NS, 40, 40, 6);
}

/* Many buffers' worth, and packets larger than the buffer itself. */
/* sluice's own reader agrees. */
static void check_source(uint32_t pkts, long bytes)
{
	static struct sl_packet_batch b;
	struct sl_source *src;
	uint32_t n = 0;
	long sum = HDR_LEN;
	int rc;

	CHECK_EQ(sl_source_open_file(&src, path), 0);
	while ((rc = sl_source_next(src, &b)) > 0) {
		for (uint32_t i = 0; i < b.count; i++)
			sum += REC_LEN + b.pkt[i].caplen;
		n += b.count;
	}
	CHECK_EQ(rc, 0);
	CHECK_EQ(n, pkts);
	CHECK_EQ(sum, bytes);
	sl_source_close(src);
}

static void test_large(void)
{
	struct sl_pcap_writer *w;
	long off = HDR_LEN, want = HDR_LEN;
	uint32_t sizes[] = {1514, 262144, 9000, 262144, 60};

	CHECK_EQ(sl_pcap_writer_open(&w, path, SL_LINK_EN10MB, 0), 0);
	for (uint32_t i = 0; i < 1000; i++) {
		uint32_t n =
		    sizes[i % 5] > 9000 && i > 20 ? 1000 : sizes[i % 5];

		fill(pkt, n, i);
		CHECK_EQ(sl_pcap_writer_write(w, i * NS, pkt, n, n, SL_LINK_EN10MB), 0);
		want += REC_LEN + n;
	}
	CHECK_EQ(sl_pcap_writer_stats(w)->packets, 1000);
	CHECK_EQ(sl_pcap_writer_stats(w)->bytes, want);
	CHECK_EQ(sl_pcap_writer_close(w), 0);
	CHECK_EQ(read_back(), want);
	for (uint32_t i = 0; i < 1000 && off < want; i++) {
		uint32_t n =
		    sizes[i % 5] > 9000 && i > 20 ? 1000 : sizes[i % 5];

		check_rec(&off, i * NS, n, n, i);
	}
	CHECK_EQ(off, want);
	check_source(1000, want);
}

/* tshark must read as many frames, with the lengths written. */
static void test_tshark(void)
{
	struct sl_pcap_writer *w;
	char cmd[256], line[128];
	uint32_t lens[] = {60, 1514, 64, 9000, 74};
	int n = 0;
	FILE *f;

	if (access(TSHARK, X_OK)) {
		printf("skip tshark: " TSHARK " not installed\n");
		return;
	}
	CHECK_EQ(sl_pcap_writer_open(&w, path, SL_LINK_EN10MB, 0), 0);
	for (int i = 0; i < 5; i++) {
		fill(pkt, lens[i], (uint32_t)i);
		CHECK_EQ(sl_pcap_writer_write(w, (uint64_t)(1000 + i) * NS, pkt,
					      lens[i], lens[i], SL_LINK_EN10MB),
			 0);
	}
	CHECK_EQ(sl_pcap_writer_close(w), 0);
	snprintf(cmd, sizeof(cmd),
		 TSHARK " -r %s -T fields -e frame.len -e frame.cap_len "
			"2>/dev/null",
		 path);
	f = popen(cmd, "r");
	CHECK(f != NULL);
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned len = 0, cap = 0;

		CHECK_EQ(sscanf(line, "%u %u", &len, &cap), 2);
		if (n < 5) {
			CHECK_EQ(len, lens[n]);
			CHECK_EQ(cap, lens[n]);
		}
		n++;
	}
	CHECK_EQ(pclose(f), 0);
	CHECK_EQ(n, 5);
}

/* A full device: every packet is lost and counted, none is fatal. */
static void test_full_device(void)
{
	struct sl_pcap_writer *w;
	const struct sl_writer_stats *st;

	CHECK_EQ(sl_pcap_writer_open(&w, "/dev/full", SL_LINK_EN10MB, 0), 0);
	st = sl_pcap_writer_stats(w);
	fill(pkt, 1000, 0);
	for (int i = 0; i < 10; i++)
		CHECK_EQ(sl_pcap_writer_write(w, NS, pkt, 1000, 1000, SL_LINK_EN10MB), 0);
	CHECK_EQ(st->packets, 10);
	CHECK_EQ(sl_pcap_writer_flush(w), -ENOSPC);
	CHECK_EQ(st->packets, 0);
	CHECK_EQ(st->errors, 10);
	CHECK_EQ(st->last_error, -ENOSPC);
	/* nothing reached the file, the header neither */
	CHECK_EQ(st->bytes, 0);
	/* later writes still try: filling the buffer forces a write */
	for (int i = 0; i < 300; i++)
		sl_pcap_writer_write(w, NS, pkt, 1000, 1000, SL_LINK_EN10MB);
	CHECK(st->errors > 10);
	CHECK_EQ(st->packets + st->errors, 310);
	/* larger than the buffer: written at once, lost at once */
	CHECK_EQ(sl_pcap_writer_write(w, NS, pkt, 262144, 262144, SL_LINK_EN10MB), -ENOSPC);
	CHECK_EQ(st->errors, 311);
	CHECK_EQ(st->packets, 0);
	CHECK_EQ(sl_pcap_writer_write(w, NS, pkt, 100, 100, SL_LINK_EN10MB), 0);
	CHECK_EQ(sl_pcap_writer_close(w), -ENOSPC);
}

/* A write cut short by the file size limit: the records it got out whole
 * stay, the file goes back to its last whole record and stays readable;
 * the rest is counted lost; later packets follow. */
static void test_partial_write(void)
{
	struct sl_pcap_writer *w;
	const struct sl_writer_stats *st;
	struct rlimit old, lim;
	long off = HDR_LEN, want;

	CHECK_EQ(sl_signal_ignore_xfsz(), 0);
	CHECK_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
	CHECK_EQ(sl_pcap_writer_open(&w, path, SL_LINK_EN10MB, 0), 0);
	st = sl_pcap_writer_stats(w);
	fill(pkt, 500, 1);
	CHECK_EQ(sl_pcap_writer_write(w, NS, pkt, 500, 500, SL_LINK_EN10MB), 0);
	CHECK_EQ(sl_pcap_writer_flush(w), 0);
	lim = old;
	lim.rlim_cur = 2000; /* room for one more 1000-byte record, and half */
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
	fill(pkt, 1000, 2);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(sl_pcap_writer_write(w, 2 * NS, pkt, 1000, 1000, SL_LINK_EN10MB), 0);
	CHECK_EQ(sl_pcap_writer_flush(w), -EFBIG);
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
	CHECK_EQ(st->errors, 2);
	CHECK_EQ(st->packets, 2);
	CHECK_EQ(st->partial, 0);
	CHECK_EQ(st->last_error, -EFBIG);
	want = HDR_LEN + 2 * REC_LEN + 500 + 1000;
	CHECK_EQ(st->bytes, want);
	/* cut back to the last whole record */
	CHECK_EQ(read_back(), want);
	fill(pkt, 200, 3);
	CHECK_EQ(sl_pcap_writer_write(w, 3 * NS, pkt, 200, 200, SL_LINK_EN10MB), 0);
	want += REC_LEN + 200;
	CHECK_EQ(st->bytes, want);
	CHECK_EQ(sl_pcap_writer_close(w), 0);
	CHECK_EQ(read_back(), want);
	check_rec(&off, NS, 500, 500, 1);
	fill(pkt, 1000, 2);
	check_rec(&off, 2 * NS, 1000, 1000, 2);
	check_rec(&off, 3 * NS, 200, 200, 3);
}

/* A writer that starts past the limit: the header itself is cut short;
 * nothing is left in the file, and it comes with the first packets that
 * land. A buffer flush that fails keeps the packet that caused it. */
static void test_partial_header(void)
{
	struct sl_pcap_writer *w;
	const struct sl_writer_stats *st;
	struct rlimit old, lim;
	long off = HDR_LEN, left;

	CHECK_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
	CHECK_EQ(sl_pcap_writer_open(&w, path, SL_LINK_EN10MB, 0), 0);
	st = sl_pcap_writer_stats(w);
	lim = old;
	lim.rlim_cur = 10;
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
	fill(pkt, 100, 1);
	CHECK_EQ(sl_pcap_writer_write(w, NS, pkt, 100, 100, SL_LINK_EN10MB), 0);
	CHECK_EQ(sl_pcap_writer_flush(w), -EFBIG);
	CHECK_EQ(read_back(), 0);
	CHECK_EQ(st->errors, 1);
	CHECK_EQ(st->packets, 0);
	CHECK_EQ(st->bytes, 0);
	/* fill the buffer: its flush fails, the packet that caused it waits */
	for (int i = 0; i < 3000; i++)
		sl_pcap_writer_write(w, NS, pkt, 100, 100, SL_LINK_EN10MB);
	CHECK(st->errors > 1);
	CHECK_EQ(st->packets + st->errors, 3001);
	left = (long)st->packets;
	CHECK(left > 0);
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
	fill(pkt, 60, 2);
	CHECK_EQ(sl_pcap_writer_write(w, 2 * NS, pkt, 60, 60, SL_LINK_EN10MB), 0);
	/* the header counts again: it goes out with them */
	CHECK_EQ(st->bytes, HDR_LEN + left * (REC_LEN + 100) + REC_LEN + 60);
	CHECK_EQ(sl_pcap_writer_close(w), 0);
	CHECK_EQ(read_back(), HDR_LEN + left * (REC_LEN + 100) + REC_LEN + 60);
	CHECK_EQ(get32(file), 0xa1b2c3d4);
	fill(pkt, 100, 1);
	for (long i = 0; i < left; i++)
		check_rec(&off, NS, 100, 100, 1);
	fill(pkt, 60, 2);
	check_rec(&off, 2 * NS, 60, 60, 2);
}

struct reader {
	int fd;
	long bytes;
};

/* Reads a pipe slowly to its end. */
static void *slow_reader(void *arg)
{
	struct reader *r = arg;
	ssize_t n;

	while ((n = read(r->fd, file + r->bytes,
			 sizeof(file) - (size_t)r->bytes)) != 0) {
		if (n > 0)
			r->bytes += n;
		usleep(50);
	}
	return NULL;
}

/* A non-blocking pipe that is full (EAGAIN) is waited for: every packet
 * arrives, none is counted lost. */
static void test_nonblocking_pipe(void)
{
	struct sl_pcap_writer *w;
	const struct sl_writer_stats *st;
	struct reader r = {0};
	struct stat a, b;
	pthread_t t;
	char fdpath[64];
	long off = HDR_LEN;
	int p[2], probe, ok = 1;

	CHECK_EQ(pipe(p), 0);
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", p[1]);
	/* the writer gets the lowest free descriptor: probe's */
	probe = dup(0);
	close(probe);
	CHECK_EQ(sl_pcap_writer_open(&w, fdpath, SL_LINK_EN10MB, 0), 0);
	CHECK(fstat(probe, &a) == 0 && fstat(p[1], &b) == 0 &&
	      a.st_ino == b.st_ino);
	CHECK_EQ(fcntl(probe, F_SETFL, fcntl(probe, F_GETFL) | O_NONBLOCK), 0);
	close(p[1]);
	r.fd = p[0];
	CHECK_EQ(pthread_create(&t, NULL, slow_reader, &r), 0);
	for (uint32_t i = 0; i < 2000; i++) {
		fill(pkt, 1000, i);
		if (sl_pcap_writer_write(w, i * NS, pkt, 1000, 1000, SL_LINK_EN10MB))
			ok = 0;
	}
	CHECK(ok);
	st = sl_pcap_writer_stats(w);
	CHECK_EQ(sl_pcap_writer_flush(w), 0);
	CHECK_EQ(st->packets, 2000);
	CHECK_EQ(st->errors, 0);
	CHECK_EQ(sl_pcap_writer_close(w), 0);
	pthread_join(t, NULL);
	close(p[0]);
	CHECK_EQ(r.bytes, HDR_LEN + 2000 * (REC_LEN + 1000));
	for (uint32_t i = 0; i < 2000 && off < r.bytes; i++) {
		long before = test_failed;

		check_rec(&off, i * NS, 1000, 1000, i);
		if (test_failed != before)
			ok = 0;
	}
	CHECK(ok);
}

static void test_open_errors(void)
{
	struct sl_pcap_writer *w = NULL;

	CHECK_EQ(sl_pcap_writer_open(&w, "/nonexistent/dir/x.pcap", 1, 0),
		 -ENOENT);
	CHECK_EQ(sl_pcap_writer_open(&w, NULL, 1, 0), -EINVAL);
	CHECK_EQ(sl_pcap_writer_close(NULL), 0);
}

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/out.pcap", dir);
	test_basic();
	test_snaplen();
	test_large();
	test_tshark();
	test_full_device();
	test_partial_write();
	test_partial_header();
	test_nonblocking_pipe();
	test_open_errors();
	unlink(path);
	rmdir(dir);
	return test_done();
}
