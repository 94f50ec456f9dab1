/* test_source_pcap.c - pcap/pcapng reader: formats, byte orders, timestamp
 * resolutions, batching, truncation and corruption, from images built in
 * memory (and real files, pipes and compressed images for
 * sl_source_open_file). */
#include <errno.h>
#include <fcntl.h>
#include <lz4frame.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "sluice.h"
#include "source.h"
#include "test.h"

#define NS 1000000000ULL

/* ---- image builder ---------------------------------------------------- */

struct bld {
	uint8_t *d;
	size_t len, cap;
	int be; /* write big endian */
};

static void bld_init(struct bld *b, int be)
{
	b->cap = 1 << 16;
	b->d = malloc(b->cap);
	b->len = 0;
	b->be = be;
}

static void bld_free(struct bld *b)
{
	free(b->d);
	b->d = NULL;
}

static void put8(struct bld *b, uint8_t v)
{
	if (b->len == b->cap) {
		b->cap *= 2;
		b->d = realloc(b->d, b->cap);
	}
	b->d[b->len++] = v;
}

static void putn(struct bld *b, uint64_t v, int bytes)
{
	int i;

	for (i = 0; i < bytes; i++) {
		int sh = b->be ? (bytes - 1 - i) * 8 : i * 8;

		put8(b, (uint8_t)(v >> sh));
	}
}

static void put16(struct bld *b, uint16_t v)
{
	putn(b, v, 2);
}

static void put32(struct bld *b, uint32_t v)
{
	putn(b, v, 4);
}

static void put64(struct bld *b, uint64_t v)
{
	putn(b, v, 8);
}

static void patch32(struct bld *b, size_t at, uint32_t v)
{
	size_t save = b->len;

	b->len = at;
	put32(b, v);
	b->len = save;
}

/* Packet bytes: fill, fill + 1, ... so data pointers can be checked. */
static void put_data(struct bld *b, uint32_t n, uint8_t fill)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		put8(b, (uint8_t)(fill + i));
}

static int data_ok(const struct sl_packet *p, uint8_t fill)
{
	uint32_t i;

	for (i = 0; i < p->caplen; i++)
		if (p->data[i] != (uint8_t)(fill + i))
			return 0;
	return 1;
}

static void pcap_hdr(struct bld *b, uint32_t magic, uint32_t snaplen,
		     uint32_t linktype)
{
	put32(b, magic);
	put16(b, 2);
	put16(b, 4);
	put32(b, 0);
	put32(b, 0);
	put32(b, snaplen);
	put32(b, linktype);
}

static void pcap_rec(struct bld *b, uint32_t sec, uint32_t frac,
		     uint32_t caplen, uint32_t orig, uint8_t fill)
{
	put32(b, sec);
	put32(b, frac);
	put32(b, caplen);
	put32(b, orig);
	put_data(b, caplen, fill);
}

static size_t blk_begin(struct bld *b, uint32_t type)
{
	size_t start = b->len;

	put32(b, type);
	put32(b, 0);
	return start;
}

static void blk_end(struct bld *b, size_t start)
{
	uint32_t total;

	while (b->len % 4)
		put8(b, 0);
	total = (uint32_t)(b->len - start + 4);
	patch32(b, start + 4, total);
	put32(b, total);
}

static void ng_shb(struct bld *b)
{
	size_t s = blk_begin(b, 0x0a0d0d0a);

	put32(b, 0x1a2b3c4d);
	put16(b, 1);
	put16(b, 0);
	put64(b, UINT64_MAX); /* section length unknown */
	blk_end(b, s);
}

/* tsresol < 0: option absent. */
static void ng_idb(struct bld *b, uint16_t lt, uint32_t snaplen, int tsresol,
		   int have_off, int64_t off)
{
	size_t s = blk_begin(b, 1);

	put16(b, lt);
	put16(b, 0);
	put32(b, snaplen);
	/* an unrelated option first (if_name) */
	put16(b, 2);
	put16(b, 3);
	put8(b, 'e');
	put8(b, 't');
	put8(b, 'h');
	put8(b, 0);
	if (tsresol >= 0) {
		put16(b, 9);
		put16(b, 1);
		put8(b, (uint8_t)tsresol);
		put8(b, 0);
		put8(b, 0);
		put8(b, 0);
	}
	if (have_off) {
		put16(b, 14);
		put16(b, 8);
		put64(b, (uint64_t)off);
	}
	put16(b, 0);
	put16(b, 0);
	blk_end(b, s);
}

/* What an EPB and the obsolete PB hold after the interface id: timestamp
 * (high, low), captured and original length, the data. */
static void ng_pkt_fields(struct bld *b, uint64_t ts, uint32_t caplen,
			  uint32_t orig, uint8_t fill)
{
	put32(b, (uint32_t)(ts >> 32));
	put32(b, (uint32_t)ts);
	put32(b, caplen);
	put32(b, orig);
	put_data(b, caplen, fill);
}

static void ng_epb(struct bld *b, uint32_t ifid, uint64_t ts, uint32_t caplen,
		   uint32_t orig, uint8_t fill)
{
	size_t s = blk_begin(b, 6);

	put32(b, ifid);
	ng_pkt_fields(b, ts, caplen, orig, fill);
	blk_end(b, s);
}

static void ng_pb(struct bld *b, uint16_t ifid, uint64_t ts, uint32_t caplen,
		  uint32_t orig, uint8_t fill)
{
	size_t s = blk_begin(b, 2);

	put16(b, ifid);
	put16(b, 0); /* drops count */
	ng_pkt_fields(b, ts, caplen, orig, fill);
	blk_end(b, s);
}

static void ng_spb(struct bld *b, uint32_t orig, uint32_t present, uint8_t fill)
{
	size_t s = blk_begin(b, 3);

	put32(b, orig);
	put_data(b, present, fill);
	blk_end(b, s);
}

static void ng_other(struct bld *b, uint32_t type, uint32_t body)
{
	size_t s = blk_begin(b, type);

	put_data(b, body, 0x55);
	blk_end(b, s);
}

/* Opens a copy of the first len bytes in a buffer of exactly that size, so
 * ASan sees any read past the end. *copy must be freed after closing. */
static int open_copy(struct sl_source **src, const struct bld *b, size_t len,
		     uint8_t **copy)
{
	*copy = len ? malloc(len) : NULL;
	if (len)
		memcpy(*copy, b->d, len);
	return sl_source_open_mem(src, *copy, len);
}

static struct sl_packet_batch batch;

/* ---- classic pcap ----------------------------------------------------- */

static void test_pcap_basic(int be, int nano)
{
	uint32_t mult = nano ? 1 : 1000;
	struct sl_source *src;
	uint64_t pos, size;
	uint8_t *copy;
	struct bld b;
	size_t off1;
	int rc;

	bld_init(&b, be);
	/* FCS bits above the link type; snaplen 0 must not matter */
	pcap_hdr(&b, nano ? 0xa1b23c4d : 0xa1b2c3d4, 0, 1 | 0x10000000);
	off1 = b.len;
	pcap_rec(&b, 1700000000, nano ? 123456789 : 123456, 60, 60, 1);
	pcap_rec(&b, 1700000001, nano ? 999999999 : 999999, 40, 1500, 2);
	pcap_rec(&b, 4294967295u, nano ? 999999999 : 999999, 50, 20, 3);
	pcap_rec(&b, 0, 0, 0, 0, 4);
	pcap_rec(&b, 7, 1, 262144, 262144, 5);

	rc = open_copy(&src, &b, b.len, &copy);
	CHECK_EQ(rc, 0);
	if (rc)
		goto out;
	CHECK_EQ(sl_source_linktype(src), 1);
	sl_source_progress(src, &pos, &size);
	CHECK_EQ(pos, 24);
	CHECK_EQ(size, b.len);

	rc = sl_source_next(src, &batch);
	CHECK_EQ(rc, 5);
	CHECK_EQ(batch.count, 5);
	CHECK(batch.pkt[0].data == copy + off1 + 16);
	CHECK_EQ(batch.pkt[0].ts_ns,
		 1700000000ULL * NS + (nano ? 123456789ULL : 123456000ULL));
	CHECK_EQ(batch.pkt[0].caplen, 60);
	CHECK_EQ(batch.pkt[0].wirelen, 60);
	CHECK_EQ(batch.pkt[0].linktype, 1);
	CHECK_EQ(batch.pkt[0].ifindex, 0);
	CHECK(data_ok(&batch.pkt[0], 1));
	CHECK_EQ(batch.pkt[1].ts_ns,
		 1700000001ULL * NS + (nano ? 999999999ULL : 999999000ULL));
	CHECK_EQ(batch.pkt[1].caplen, 40);
	CHECK_EQ(batch.pkt[1].wirelen, 1500);
	CHECK(data_ok(&batch.pkt[1], 2));
	CHECK_EQ(batch.pkt[2].ts_ns,
		 4294967295ULL * NS + (nano ? 999999999ULL : 999999000ULL));
	CHECK_EQ(batch.pkt[2].caplen, 50);
	CHECK_EQ(batch.pkt[2].wirelen, 50); /* orig_len < caplen */
	CHECK(data_ok(&batch.pkt[2], 3));
	CHECK_EQ(batch.pkt[3].ts_ns, 0);
	CHECK_EQ(batch.pkt[3].caplen, 0);
	CHECK_EQ(batch.pkt[4].ts_ns, 7 * NS + mult);
	CHECK_EQ(batch.pkt[4].caplen, 262144);
	CHECK(data_ok(&batch.pkt[4], 5));

	CHECK_EQ(sl_source_next(src, &batch), 0);
	CHECK_EQ(batch.count, 0);
	CHECK_EQ(sl_source_next(src, &batch), 0);
	sl_source_progress(src, &pos, &size);
	CHECK_EQ(pos, b.len);
	CHECK_EQ(size, b.len);
	sl_source_close(src);
out:
	free(copy);
	bld_free(&b);
}

/* Two records, then a third with caplen above 262144: the good ones first,
 * then SL_E_FORMAT for good. */
static void test_pcap_corrupt(void)
{
	struct sl_source *src;
	uint64_t pos, size;
	uint8_t *copy;
	struct bld b;
	size_t off3;

	bld_init(&b, 0);
	pcap_hdr(&b, 0xa1b2c3d4, 65535, 1);
	pcap_rec(&b, 1, 0, 10, 10, 0);
	pcap_rec(&b, 2, 0, 10, 10, 0);
	off3 = b.len;
	pcap_rec(&b, 3, 0, 0, 0, 0);
	patch32(&b, off3 + 8, 262145);
	put_data(&b, 64, 0);
	CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
	CHECK_EQ(sl_source_next(src, &batch), 2);
	CHECK_EQ(sl_source_next(src, &batch), SL_E_FORMAT);
	CHECK_EQ(batch.count, 0);
	CHECK_EQ(sl_source_next(src, &batch), SL_E_FORMAT);
	sl_source_progress(src, &pos, &size);
	CHECK_EQ(pos, off3);
	sl_source_close(src);
	free(copy);
	bld_free(&b);
}

/* 600 packets: 256 + 256 + 88, in order; then the same count in pcapng. */
static void test_many(void)
{
	static const uint32_t want[] = {256, 256, 88, 0};
	struct sl_source *src;
	uint32_t seq = 0, i, k;
	uint8_t *copy;
	struct bld b;
	int ng;

	for (ng = 0; ng < 2; ng++) {
		bld_init(&b, 0);
		if (ng) {
			ng_shb(&b);
			ng_idb(&b, 1, 0, 9, 0, 0);
		} else {
			pcap_hdr(&b, 0xa1b23c4d, 65535, 1);
		}
		for (i = 0; i < 600; i++) {
			if (ng)
				ng_epb(&b, 0, 1000 + i, i % 7, 100, (uint8_t)i);
			else
				pcap_rec(&b, 1000, i, i % 7, 100, (uint8_t)i);
			if (ng && i % 50 == 0)
				ng_other(&b, 5, 12); /* ISB: skipped */
		}
		CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
		seq = 0;
		for (k = 0; k < 4; k++) {
			int ok = 1;

			CHECK_EQ(sl_source_next(src, &batch), want[k]);
			CHECK_EQ(batch.count, want[k]);
			for (i = 0; i < batch.count; i++, seq++) {
				const struct sl_packet *p = &batch.pkt[i];

				if (p->ts_ns != 1000 * (ng ? 1 : NS) + seq ||
				    p->caplen != seq % 7 ||
				    !data_ok(p, (uint8_t)seq))
					ok = 0;
			}
			CHECK(ok);
		}
		CHECK_EQ(seq, 600);
		sl_source_close(src);
		free(copy);
		bld_free(&b);
	}
}

/* Cut the file at every byte inside the last record: the complete records
 * come first, then SL_E_TRUNCATED, again and again. Cut exactly before the
 * last record: a clean end. */
static void test_truncated(int ng)
{
	struct sl_source *src;
	size_t last, cut;
	uint64_t pos, size;
	uint8_t *copy;
	struct bld b;
	int all_ok = 1;

	bld_init(&b, 0);
	if (ng) {
		ng_shb(&b);
		ng_idb(&b, 1, 0, -1, 0, 0);
		ng_epb(&b, 0, 1, 30, 30, 1);
		ng_epb(&b, 0, 2, 31, 31, 2);
		last = b.len;
		ng_epb(&b, 0, 3, 33, 33, 3);
	} else {
		pcap_hdr(&b, 0xa1b2c3d4, 65535, 1);
		pcap_rec(&b, 1, 0, 30, 30, 1);
		pcap_rec(&b, 2, 0, 31, 31, 2);
		last = b.len;
		pcap_rec(&b, 3, 0, 33, 33, 3);
	}
	for (cut = last; cut <= b.len; cut++) {
		int want = cut == last ? 0 : cut == b.len ? 0 : SL_E_TRUNCATED;
		uint32_t n = cut == b.len ? 3 : 2;
		int rc;

		rc = open_copy(&src, &b, cut, &copy);
		if (rc) {
			all_ok = 0;
			free(copy);
			continue;
		}
		rc = sl_source_next(src, &batch);
		if (rc != (int)n || batch.count != n ||
		    !data_ok(&batch.pkt[0], 1) || !data_ok(&batch.pkt[1], 2))
			all_ok = 0;
		if (sl_source_next(src, &batch) != want || batch.count != 0)
			all_ok = 0;
		if (sl_source_next(src, &batch) != want)
			all_ok = 0;
		if (sl_source_next(src, &batch) != want)
			all_ok = 0;
		sl_source_progress(src, &pos, &size);
		if (pos != (n == 3 ? b.len : last) || size != cut)
			all_ok = 0;
		sl_source_close(src);
		free(copy);
	}
	CHECK(all_ok);

	/* cut inside the only record: the error comes at once */
	bld_free(&b);
	bld_init(&b, 0);
	if (ng) {
		ng_shb(&b);
		ng_idb(&b, 1, 0, -1, 0, 0);
		ng_epb(&b, 0, 1, 30, 30, 1);
	} else {
		pcap_hdr(&b, 0xa1b2c3d4, 65535, 1);
		pcap_rec(&b, 1, 0, 30, 30, 1);
	}
	CHECK_EQ(open_copy(&src, &b, b.len - 1, &copy), 0);
	CHECK_EQ(sl_source_next(src, &batch), SL_E_TRUNCATED);
	CHECK_EQ(sl_source_next(src, &batch), SL_E_TRUNCATED);
	sl_source_close(src);
	free(copy);
	bld_free(&b);
}

/* File headers: too short to identify, cut inside, bad magic, empty. */
static void test_headers(void)
{
	static const uint8_t junk[32] = "this is not a capture file....";
	struct sl_source *src = (struct sl_source *)&batch;
	uint8_t *copy;
	struct bld b;
	size_t cut;
	int ok = 1;

	CHECK_EQ(sl_source_open_mem(&src, junk, sizeof(junk)), SL_E_FORMAT);
	CHECK(src == NULL);
	CHECK_EQ(sl_source_open_mem(&src, junk, 0), SL_E_FORMAT);
	CHECK_EQ(sl_source_open_mem(&src, NULL, 0), SL_E_FORMAT);
	CHECK_EQ(sl_source_open_mem(NULL, junk, 4), -EINVAL);
	sl_source_close(NULL);

	bld_init(&b, 0);
	pcap_hdr(&b, 0xa1b2c3d4, 65535, 1);
	for (cut = 0; cut < 24; cut++) {
		int want = cut < 4 ? SL_E_FORMAT : SL_E_TRUNCATED;

		if (open_copy(&src, &b, cut, &copy) != want || src)
			ok = 0;
		free(copy);
	}
	CHECK(ok);
	/* a header alone: no packets */
	CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
	CHECK_EQ(sl_source_next(src, &batch), 0);
	sl_source_close(src);
	free(copy);
	bld_free(&b);

	/* pcapng: a section header cut short, a bad byte-order magic */
	bld_init(&b, 1);
	ng_shb(&b);
	ok = 1;
	for (cut = 4; cut < b.len; cut++) {
		if (open_copy(&src, &b, cut, &copy) != SL_E_TRUNCATED)
			ok = 0;
		free(copy);
	}
	CHECK(ok);
	/* no interface yet: link type unknown, the file is just empty */
	CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
	CHECK_EQ(sl_source_linktype(src), SL_E_FORMAT);
	CHECK_EQ(sl_source_next(src, &batch), 0);
	sl_source_close(src);
	free(copy);
	b.d[8] ^= 0xff;
	CHECK_EQ(open_copy(&src, &b, b.len, &copy), SL_E_FORMAT);
	free(copy);
	bld_free(&b);
}

/* ---- pcapng ----------------------------------------------------------- */

static void test_ng_interfaces(int be)
{
	const uint64_t t0 = 1700000000123456789ULL;
	const uint64_t t1 = (1700000000ULL << 20) | 524288; /* + 0.5 s */
	const uint64_t t2 = (1700000001ULL << 20) | 3;
	struct sl_source *src;
	uint64_t pos, size;
	uint8_t *copy;
	struct bld b;
	size_t epb0;
	int rc;

	bld_init(&b, be);
	ng_shb(&b);
	ng_other(&b, 4, 16);			 /* NRB before the first IDB */
	ng_idb(&b, 1, 0, 9, 0, 0);		 /* EN10MB, 10^-9 */
	ng_idb(&b, 101, 65535, 0x80 | 20, 0, 0); /* RAW, 2^-20 */
	ng_idb(&b, 113, 20, -1, 1, 100);	 /* SLL, us, +100 s */
	epb0 = b.len;
	ng_epb(&b, 0, t0, 60, 64, 1);
	ng_epb(&b, 1, t1, 41, 41, 2);
	ng_other(&b, 0x40000bad, 5); /* custom: skipped */
	ng_epb(&b, 1, t2, 3, 3, 3);
	ng_spb(&b, 70, 70, 4); /* interface 0, last ts */
	ng_epb(&b, 2, 5, 20, 1500, 5);
	ng_pb(&b, 1, t1, 7, 9, 6); /* obsolete Packet Block */
	ng_epb(&b, 0, 0, 0, 0, 7);

	rc = open_copy(&src, &b, b.len, &copy);
	CHECK_EQ(rc, 0);
	if (rc)
		goto out;
	CHECK_EQ(sl_source_linktype(src), 1);
	CHECK_EQ(sl_source_next(src, &batch), 7);

	CHECK(batch.pkt[0].data == copy + epb0 + 28);
	CHECK_EQ(batch.pkt[0].ts_ns, t0);
	CHECK_EQ(batch.pkt[0].caplen, 60);
	CHECK_EQ(batch.pkt[0].wirelen, 64);
	CHECK_EQ(batch.pkt[0].linktype, 1);
	CHECK_EQ(batch.pkt[0].ifindex, 0);
	CHECK(data_ok(&batch.pkt[0], 1));

	CHECK_EQ(batch.pkt[1].ts_ns, 1700000000ULL * NS + 500000000ULL);
	CHECK_EQ(batch.pkt[1].caplen, 41);
	CHECK_EQ(batch.pkt[1].linktype, 101);
	CHECK_EQ(batch.pkt[1].ifindex, 1);
	CHECK(data_ok(&batch.pkt[1], 2));

	/* 3 * 10^9 / 2^20 = 2861.02... */
	CHECK_EQ(batch.pkt[2].ts_ns, 1700000001ULL * NS + 2861);
	CHECK_EQ(batch.pkt[2].ifindex, 1);
	CHECK(data_ok(&batch.pkt[2], 3));

	CHECK_EQ(batch.pkt[3].ts_ns, 1700000001ULL * NS + 2861);
	CHECK_EQ(batch.pkt[3].caplen, 70);
	CHECK_EQ(batch.pkt[3].wirelen, 70);
	CHECK_EQ(batch.pkt[3].linktype, 1);
	CHECK_EQ(batch.pkt[3].ifindex, 0);
	CHECK(data_ok(&batch.pkt[3], 4));

	CHECK_EQ(batch.pkt[4].ts_ns, 100 * NS + 5000);
	CHECK_EQ(batch.pkt[4].caplen, 20);
	CHECK_EQ(batch.pkt[4].wirelen, 1500);
	CHECK_EQ(batch.pkt[4].linktype, 113);
	CHECK_EQ(batch.pkt[4].ifindex, 2);
	CHECK(data_ok(&batch.pkt[4], 5));

	CHECK_EQ(batch.pkt[5].ts_ns, 1700000000ULL * NS + 500000000ULL);
	CHECK_EQ(batch.pkt[5].caplen, 7);
	CHECK_EQ(batch.pkt[5].wirelen, 9);
	CHECK_EQ(batch.pkt[5].linktype, 101);
	CHECK_EQ(batch.pkt[5].ifindex, 1);
	CHECK(data_ok(&batch.pkt[5], 6));

	CHECK_EQ(batch.pkt[6].ts_ns, 0);
	CHECK_EQ(batch.pkt[6].caplen, 0);

	CHECK_EQ(sl_source_next(src, &batch), 0);
	sl_source_progress(src, &pos, &size);
	CHECK_EQ(pos, b.len);
	CHECK_EQ(size, b.len);
	sl_source_close(src);
out:
	free(copy);
	bld_free(&b);
}

/* A big-endian section, then a little-endian one: interfaces reset. */
static void test_ng_sections(void)
{
	struct sl_source *src;
	uint8_t *copy;
	struct bld b;
	size_t sec2;

	bld_init(&b, 1);
	ng_shb(&b);
	ng_idb(&b, 229, 0, 6, 0, 0);
	ng_idb(&b, 1, 0, 6, 0, 0);
	ng_epb(&b, 1, 1500000, 10, 10, 1);
	ng_spb(&b, 20, 12, 2); /* block shorter than orig: caplen 12 */
	sec2 = b.len;
	b.be = 0;
	ng_shb(&b);
	ng_idb(&b, 101, 0, 3, 0, 0);
	ng_epb(&b, 0, 2500, 10, 10, 3);
	CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
	CHECK_EQ(sl_source_linktype(src), 229);
	CHECK_EQ(sl_source_next(src, &batch), 3);
	CHECK_EQ(batch.pkt[0].ts_ns, 1500000000ULL);
	CHECK_EQ(batch.pkt[0].linktype, 1);
	CHECK_EQ(batch.pkt[0].ifindex, 1);
	CHECK(data_ok(&batch.pkt[0], 1));
	CHECK_EQ(batch.pkt[1].ts_ns, 1500000000ULL);
	CHECK_EQ(batch.pkt[1].linktype, 229);
	CHECK_EQ(batch.pkt[1].caplen, 12);
	CHECK_EQ(batch.pkt[1].wirelen, 20);
	CHECK(data_ok(&batch.pkt[1], 2));
	CHECK_EQ(batch.pkt[2].ts_ns, 2500000000ULL);
	CHECK_EQ(batch.pkt[2].linktype, 101);
	CHECK_EQ(batch.pkt[2].ifindex, 0);
	CHECK(data_ok(&batch.pkt[2], 3));
	CHECK_EQ(sl_source_next(src, &batch), 0);
	sl_source_close(src);
	free(copy);

	/* the second section's packet names interface 1 of the first */
	b.len = sec2;
	ng_shb(&b);
	ng_idb(&b, 101, 0, 3, 0, 0);
	ng_epb(&b, 1, 2500, 10, 10, 3);
	CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
	CHECK_EQ(sl_source_next(src, &batch), 2);
	CHECK_EQ(sl_source_next(src, &batch), SL_E_FORMAT);
	CHECK_EQ(sl_source_next(src, &batch), SL_E_FORMAT);
	sl_source_close(src);
	free(copy);

	/* a section of an unknown major version */
	b.len = sec2;
	ng_shb(&b);
	b.d[sec2 + 12] = 2;
	ng_idb(&b, 101, 0, 3, 0, 0);
	CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
	CHECK_EQ(sl_source_next(src, &batch), 2);
	CHECK_EQ(sl_source_next(src, &batch), SL_E_FORMAT);
	sl_source_close(src);
	free(copy);
	bld_free(&b);
}

/* Timestamp conversion at the extremes: exact where the time has a value
 * in uint64 ns below UINT64_MAX, else UINT64_MAX ("not representable",
 * which the engine counts as malformed), never a wrapped or clamped
 * value. */
static void test_ng_ts_extremes(void)
{
	struct sl_source *src;
	uint8_t *copy;
	struct bld b;

	bld_init(&b, 0);
	ng_shb(&b);
	ng_idb(&b, 1, 0, 0, 0, 0);	   /* 0: seconds */
	ng_idb(&b, 1, 0, 0x80, 0, 0);	   /* 1: 2^0: seconds */
	ng_idb(&b, 1, 0, 12, 0, 0);	   /* 2: picoseconds */
	ng_idb(&b, 1, 0, 30, 0, 0);	   /* 3: 10^-30 */
	ng_idb(&b, 1, 0, 0xff, 0, 0);	   /* 4: 2^-127 */
	ng_idb(&b, 1, 0, 9, 1, -5);	   /* 5: ns, -5 s */
	ng_idb(&b, 1, 0, 9, 1, INT64_MAX); /* 6: ns, far future */
	ng_idb(&b, 1, 0, 9, 1, INT64_MIN); /* 7 */
	ng_idb(&b, 1, 0, 9, 0, 0);	   /* 8: ns */
	ng_epb(&b, 0, UINT64_MAX, 0, 0, 0);
	ng_epb(&b, 0, 18446744073ULL, 0, 0, 0); /* the last whole second */
	ng_epb(&b, 1, UINT64_MAX, 0, 0, 0);
	ng_epb(&b, 2, 123456789012345ULL, 0, 0, 0);
	ng_epb(&b, 3, UINT64_MAX, 0, 0, 0);
	ng_epb(&b, 4, UINT64_MAX, 0, 0, 0);
	ng_epb(&b, 5, 4 * NS, 0, 0, 0); /* before the epoch */
	ng_epb(&b, 5, 6 * NS + 1, 0, 0, 0);
	ng_epb(&b, 6, 1, 0, 0, 0);
	ng_epb(&b, 7, UINT64_MAX, 0, 0, 0);
	ng_epb(&b, 5, 5 * NS, 0, 0, 0);		/* the epoch itself */
	ng_epb(&b, 8, UINT64_MAX - 1, 0, 0, 0); /* the last ns */
	ng_epb(&b, 8, UINT64_MAX, 0, 0, 0);
	ng_epb(&b, 0, 18446744074ULL, 0, 0, 0);
	ng_spb(&b, 4, 4, 0); /* the last EPB's time: none */
	CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
	CHECK_EQ(sl_source_next(src, &batch), 15);
	CHECK(batch.pkt[0].ts_ns == UINT64_MAX);
	CHECK(batch.pkt[1].ts_ns == 18446744073ULL * NS);
	CHECK(batch.pkt[2].ts_ns == UINT64_MAX);
	CHECK_EQ(batch.pkt[3].ts_ns, 123456789012ULL);
	CHECK_EQ(batch.pkt[4].ts_ns, 0);
	/* (2^64 - 1) * 10^9 / 2^127 < 1 */
	CHECK_EQ(batch.pkt[5].ts_ns, 0);
	CHECK(batch.pkt[6].ts_ns == UINT64_MAX); /* -1 s: no value */
	CHECK_EQ(batch.pkt[7].ts_ns, NS + 1);
	CHECK(batch.pkt[8].ts_ns == UINT64_MAX);
	/* (2^64 - 1) - 2^63 * 10^9 < 0 */
	CHECK(batch.pkt[9].ts_ns == UINT64_MAX);
	CHECK_EQ(batch.pkt[10].ts_ns, 0);
	CHECK(batch.pkt[11].ts_ns == UINT64_MAX - 1);
	CHECK(batch.pkt[12].ts_ns == UINT64_MAX);
	CHECK(batch.pkt[13].ts_ns == UINT64_MAX);
	CHECK(batch.pkt[14].ts_ns == UINT64_MAX);
	CHECK_EQ(sl_source_next(src, &batch), 0);
	sl_source_close(src);
	free(copy);
	bld_free(&b);
}

/* ts units of 10^-exp s in ns, the slow way: multiply by 10 with an
 * overflow check, or divide by 10 (exp - 9) times (the floor of repeated
 * floors is the floor). 0 when it does not fit in uint64. */
static int ref_pow10(uint64_t ts, int exp, uint64_t *ns)
{
	uint64_t v = ts;

	for (int i = exp; i < 9; i++)
		if (__builtin_mul_overflow(v, 10, &v))
			return 0;
	for (int i = 9; i < exp && v; i++)
		v /= 10;
	*ns = v;
	return 1;
}

/* ts units of 2^-exp s in ns: whole seconds and the fraction apart. */
static int ref_pow2(uint64_t ts, int exp, uint64_t *ns)
{
	uint64_t whole, frac;

	if (exp >= 64) { /* ts < 2^exp: less than a second */
		*ns = (uint64_t)(((unsigned __int128)ts * NS) >> exp);
		return 1;
	}
	whole = exp ? ts >> exp : ts;
	frac = exp ? ts & ((1ULL << exp) - 1) : 0;
	if (__builtin_mul_overflow(whole, NS, &whole))
		return 0;
	frac = (uint64_t)(((unsigned __int128)frac * NS) >> exp);
	return !__builtin_add_overflow(whole, frac, ns);
}

/* Every if_tsresol, both bases (10^-0 .. 10^-127 and 2^-0 .. 2^-127), on
 * values around where each starts to overflow: each packet's time is the
 * reference's, or UINT64_MAX when that has no value below UINT64_MAX. */
static void test_ng_ts_resolutions(void)
{
	static const uint64_t vals[] = {
	    0,
	    1,
	    999999999,
	    1700000000,
	    1700000000123ULL,
	    18446744073ULL,
	    18446744074ULL,
	    1ULL << 40,
	    1844674407370955161ULL,
	    1ULL << 63,
	    UINT64_MAX - 1,
	    UINT64_MAX,
	};
	const int nv = (int)(sizeof(vals) / sizeof(vals[0]));
	struct sl_source *src;
	uint8_t *copy;
	struct bld b;
	int bad = 0, seen = 0;

	for (int pow2 = 0; pow2 < 2; pow2++) {
		bld_init(&b, pow2);
		ng_shb(&b);
		for (int exp = 0; exp < 128; exp++)
			ng_idb(&b, 1, 0, (pow2 ? 0x80 : 0) | exp, 0, 0);
		for (int exp = 0; exp < 128; exp++)
			for (int i = 0; i < nv; i++)
				ng_epb(&b, (uint32_t)exp, vals[i], 0, 0, 0);
		CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
		for (int k = 0;; k++) {
			int rc = sl_source_next(src, &batch);

			if (rc <= 0) {
				CHECK_EQ(rc, 0);
				break;
			}
			for (uint32_t j = 0; j < batch.count; j++, seen++) {
				int exp = (seen / nv) % 128, i = seen % nv;
				uint64_t want = 0;
				int ok = pow2 ? ref_pow2(vals[i], exp, &want)
					      : ref_pow10(vals[i], exp, &want);

				if (!ok || want == UINT64_MAX)
					want = UINT64_MAX;
				if (batch.pkt[j].ts_ns != want) {
					if (bad++ < 5)
						fprintf(
						    stderr,
						    "FAIL tsresol %s%d of "
						    "%llu: %llu, want "
						    "%llu\n",
						    pow2 ? "2^-" : "10^-", exp,
						    (unsigned long long)vals[i],
						    (unsigned long long)batch
							.pkt[j]
							.ts_ns,
						    (unsigned long long)want);
				}
			}
		}
		sl_source_close(src);
		free(copy);
		bld_free(&b);
	}
	CHECK_EQ(seen, 2 * 128 * nv);
	CHECK_EQ(bad, 0);
}

/* 1 s units (if_tsresol 0, as in repro tsresol_seconds.pcapng), with an
 * offset, next to a microsecond interface: exact seconds. */
static void test_ng_ts_seconds(void)
{
	struct sl_source *src;
	uint8_t *copy;
	struct bld b;

	bld_init(&b, 0);
	ng_shb(&b);
	ng_idb(&b, 1, 0, -1, 0, 0);	   /* us */
	ng_idb(&b, 1, 0, 0, 0, 0);	   /* s */
	ng_idb(&b, 1, 0, 0, 1, -3600);	   /* s, -1 h */
	ng_idb(&b, 1, 0, 0x80 | 0, 1, 60); /* 2^0 s, +1 min */
	ng_epb(&b, 0, 1699999200007320ULL, 4, 4, 1);
	ng_epb(&b, 1, 1699999200ULL, 4, 4, 2);
	ng_epb(&b, 2, 1699999200ULL, 4, 4, 3);
	ng_epb(&b, 3, 1699999200ULL, 4, 4, 4);
	ng_epb(&b, 1, 1699999200607833ULL, 4, 4, 5); /* year 53 million */
	CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
	CHECK_EQ(sl_source_next(src, &batch), 5);
	CHECK_EQ(batch.pkt[0].ts_ns, 1699999200007320000ULL);
	CHECK_EQ(batch.pkt[1].ts_ns, 1699999200ULL * NS);
	CHECK_EQ(batch.pkt[2].ts_ns, 1699995600ULL * NS);
	CHECK_EQ(batch.pkt[3].ts_ns, 1699999260ULL * NS);
	CHECK(batch.pkt[4].ts_ns == UINT64_MAX);
	CHECK(data_ok(&batch.pkt[4], 5));
	sl_source_close(src);
	free(copy);
	bld_free(&b);
}

/* Classic pcap: seconds and a micro/nanosecond fraction, exact to the
 * largest values the fields hold (no overflow is possible: < 2^63), a
 * fraction of a second or more kept as written. */
static void test_pcap_ts(void)
{
	for (int nano = 0; nano < 2; nano++) {
		uint64_t unit = nano ? 1 : 1000;
		struct sl_source *src;
		uint8_t *copy;
		struct bld b;

		bld_init(&b, nano);
		pcap_hdr(&b, nano ? 0xa1b23c4d : 0xa1b2c3d4, 65535, 1);
		pcap_rec(&b, UINT32_MAX, UINT32_MAX, 1, 1, 1);
		pcap_rec(&b, 0, 1, 1, 1, 1);
		pcap_rec(&b, 1, nano ? 999999999 : 999999, 1, 1, 1);
		pcap_rec(&b, 2, nano ? 1000000000 : 1000000, 1, 1, 1);
		CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
		CHECK_EQ(sl_source_next(src, &batch), 4);
		CHECK(batch.pkt[0].ts_ns ==
		      (uint64_t)UINT32_MAX * NS + (uint64_t)UINT32_MAX * unit);
		CHECK_EQ(batch.pkt[1].ts_ns, unit);
		CHECK_EQ(batch.pkt[2].ts_ns, 2 * NS - unit);
		CHECK_EQ(batch.pkt[3].ts_ns, 3 * NS);
		sl_source_close(src);
		free(copy);
		bld_free(&b);
	}
}

/* Broken blocks after two good packets: each gives SL_E_FORMAT once the
 * good packets are out, and keeps giving it. */
static void test_ng_corrupt(void)
{
	struct sl_source *src;
	uint8_t *copy;
	struct bld b;
	size_t bad;
	int k;

	for (k = 0; k < 8; k++) {
		int want = SL_E_FORMAT;

		bld_init(&b, k & 1);
		ng_shb(&b);
		ng_idb(&b, 1, 0, 9, 0, 0);
		ng_epb(&b, 0, 1, 4, 4, 1);
		ng_epb(&b, 0, 2, 4, 4, 2);
		bad = b.len;
		ng_epb(&b, 0, 3, 8, 8, 3);
		ng_epb(&b, 0, 4, 8, 8, 4);
		switch (k) {
		case 0: /* total length not a multiple of 4 */
			patch32(&b, bad + 4, 42);
			break;
		case 1: /* below the 12-byte minimum */
			patch32(&b, bad + 4, 8);
			break;
		case 2: /* trailing copy differs */
			patch32(&b, bad + 36, 44);
			break;
		case 3: /* caplen past the block */
			patch32(&b, bad + 20, 9);
			break;
		case 4: /* unknown interface */
			patch32(&b, bad + 8, 1);
			break;
		case 5: /* length past the end of the file */
			patch32(&b, bad + 4, 1 << 20);
			want = SL_E_TRUNCATED;
			break;
		case 6: /* an EPB too short for its fields */
			b.len = bad;
			ng_other(&b, 6, 8);
			break;
		case 7: /* an IDB too short for its fields */
			b.len = bad;
			ng_other(&b, 1, 0);
			break;
		}
		CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
		CHECK_EQ(sl_source_next(src, &batch), 2);
		CHECK(data_ok(&batch.pkt[1], 2));
		CHECK_EQ(sl_source_next(src, &batch), want);
		CHECK_EQ(batch.count, 0);
		CHECK_EQ(sl_source_next(src, &batch), want);
		sl_source_close(src);
		free(copy);
		bld_free(&b);
	}

	/* a packet before any interface */
	bld_init(&b, 0);
	ng_shb(&b);
	ng_spb(&b, 4, 4, 0);
	CHECK_EQ(open_copy(&src, &b, b.len, &copy), 0);
	CHECK_EQ(sl_source_linktype(src), SL_E_FORMAT);
	CHECK_EQ(sl_source_next(src, &batch), SL_E_FORMAT);
	sl_source_close(src);
	free(copy);
	bld_free(&b);
}

/* ---- files ------------------------------------------------------------ */

static void test_file(void)
{
	char path[] = "/tmp/test_source_pcap.XXXXXX";
	struct sl_source *src = NULL;
	uint64_t pos, size;
	struct bld b;
	int fd;

	bld_init(&b, 0);
	pcap_hdr(&b, 0xa1b23c4d, 65535, 101);
	pcap_rec(&b, 5, 6, 33, 40, 9);
	pcap_rec(&b, 7, 8, 1, 1, 10);

	fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd < 0)
		goto out;
	/* empty file */
	CHECK_EQ(sl_source_open_file(&src, path), SL_E_FORMAT);
	CHECK(src == NULL);
	CHECK_EQ(write(fd, b.d, b.len), (long long)b.len);
	close(fd);

	CHECK_EQ(sl_source_open_file(&src, path), 0);
	if (!src)
		goto out_unlink;
	unlink(path); /* the mapping outlives the name */
	CHECK_EQ(sl_source_linktype(src), 101);
	CHECK_EQ(sl_source_next(src, &batch), 2);
	CHECK_EQ(batch.pkt[0].ts_ns, 5 * NS + 6);
	CHECK_EQ(batch.pkt[0].caplen, 33);
	CHECK_EQ(batch.pkt[0].wirelen, 40);
	CHECK_EQ(batch.pkt[0].linktype, 101);
	CHECK(data_ok(&batch.pkt[0], 9));
	CHECK_EQ(batch.pkt[1].ts_ns, 7 * NS + 8);
	CHECK(data_ok(&batch.pkt[1], 10));
	CHECK_EQ(sl_source_next(src, &batch), 0);
	sl_source_progress(src, &pos, &size);
	CHECK_EQ(pos, b.len);
	CHECK_EQ(size, b.len);
	sl_source_close(src);

	CHECK_EQ(sl_source_open_file(&src, path), -ENOENT);
	CHECK_EQ(sl_source_open_file(&src, "/tmp"), -EISDIR);
	goto out;
out_unlink:
	unlink(path);
out:
	bld_free(&b);
}

/* Writes the first len bytes of an image to a new temporary file (its
 * name in path); returns an fd open for writing, or -1. */
static int tmp_file(const struct bld *b, size_t len, char *path)
{
	int fd;

	strcpy(path, "/tmp/test_source_pcap.XXXXXX");
	fd = mkstemp(path);
	if (fd < 0)
		return -1;
	if (write(fd, b->d, len) != (ssize_t)len) {
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

static struct sl_packet_batch batch2;

/* The next packet of a source read batch by batch into b (*i: the next
 * one in it; *rc starts at 1); NULL at the end, *rc then the last
 * next()'s return. */
static const struct sl_packet *next_packet(struct sl_source *src,
					   struct sl_packet_batch *b,
					   uint32_t *i, int *rc)
{
	while (*i >= b->count) {
		if (*rc <= 0)
			return NULL;
		*rc = sl_source_next(src, b);
		*i = 0;
		if (*rc <= 0)
			return NULL;
	}
	return &b->pkt[(*i)++];
}

/* The first len bytes of an image read from a file give what they give
 * from a buffer: the same packets with the same bytes, the same end and
 * progress (the batches may be cut elsewhere: a file's at the end of its
 * window). The file is read in windows, so records and blocks cut by a
 * window's end, larger than a window, or before the first interface are
 * the cases. */
static int same_as_mem(const struct bld *b, size_t len)
{
	struct sl_source *fs = NULL, *ms = NULL;
	uint64_t fpos, fsize, mpos, msize;
	uint32_t fi = 0, mi = 0, n = 0;
	int fd, rc, frc = 1, mrc = 1, ok = 1;
	char path[64];

	fd = tmp_file(b, len, path);
	if (fd < 0)
		return 0;
	rc = sl_source_open_file(&fs, path);
	if (rc != sl_source_open_mem(&ms, b->d, len))
		ok = 0;
	if (rc)
		goto out;
	if (sl_source_linktype(fs) != sl_source_linktype(ms))
		ok = 0;
	batch.count = batch2.count = 0;
	for (;; n++) {
		const struct sl_packet *p = next_packet(fs, &batch, &fi, &frc);
		const struct sl_packet *q = next_packet(ms, &batch2, &mi, &mrc);

		if (!p || !q) {
			if (p || q || frc != mrc) {
				fprintf(stderr,
					"packet %u: file %s (%d), "
					"buffer %s (%d)\n",
					n, p ? "more" : "end", frc,
					q ? "more" : "end", mrc);
				ok = 0;
			}
			break;
		}
		if (p->ts_ns != q->ts_ns || p->caplen != q->caplen ||
		    p->wirelen != q->wirelen || p->linktype != q->linktype ||
		    p->ifindex != q->ifindex ||
		    memcmp(p->data, q->data, p->caplen))
			ok = 0;
	}
	if (sl_source_next(fs, &batch) != frc)
		ok = 0;
	sl_source_progress(fs, &fpos, &fsize);
	sl_source_progress(ms, &mpos, &msize);
	if (fpos != mpos || fsize != msize)
		ok = 0;
out:
	sl_source_close(fs);
	sl_source_close(ms);
	close(fd);
	unlink(path);
	return ok;
}

/* Files of several windows (1 MiB): records of every size up to the
 * largest (256 KiB), pcapng blocks larger than a window (a 3 MiB name
 * block before the first interface, a 1.5 MiB packet, a 2 MiB custom
 * block), sections of both byte orders; whole and cut inside the last
 * record. */
static void test_file_windows(void)
{
	struct bld b;
	size_t last;

	bld_init(&b, 0);
	pcap_hdr(&b, 0xa1b23c4d, 65535, 1);
	for (uint32_t i = 0; i < 6000; i++) {
		uint32_t n = i % 700 == 0 ? 262144 : (i * 37) % 1600;

		last = b.len;
		pcap_rec(&b, 1700000000 + i, i, n, n + 4, (uint8_t)i);
	}
	CHECK(same_as_mem(&b, b.len));
	CHECK(same_as_mem(&b, last + 100));
	CHECK(same_as_mem(&b, last));
	bld_free(&b);

	for (int be = 0; be < 2; be++) {
		bld_init(&b, be);
		ng_shb(&b);
		ng_other(&b, 4, 3 << 20); /* NRB */
		ng_idb(&b, 101, 0, 9, 0, 0);
		ng_idb(&b, 1, 0, 0x80 | 20, 1, 7);
		for (uint32_t i = 0; i < 5000; i++) {
			uint32_t n = (i * 53) % 1600;

			if (i == 1000)
				ng_epb(&b, 0, i, 3 << 19, 3 << 19, 1);
			else if (i == 2000)
				ng_other(&b, 0x40000bad, 2 << 20);
			else if (i == 3000) {
				b.be = !be;
				ng_shb(&b);
				ng_idb(&b, 113, 0, 6, 0, 0);
			} else if (i % 3 == 0)
				ng_spb(&b, n + 10, n, (uint8_t)i);
			else
				ng_epb(&b, i % 2, 1000000 + i, n, n,
				       (uint8_t)i);
		}
		last = b.len;
		ng_epb(&b, 0, 5, 1000, 1000, 5);
		CHECK(same_as_mem(&b, b.len));
		CHECK(same_as_mem(&b, last + 500));
		CHECK(same_as_mem(&b, 20000)); /* inside the NRB */
		bld_free(&b);
	}
}

/* ---- one file read once by several workers (sl_coop) ---------------- */

/* The test's owners: by the packet's timestamp, over *ctx workers. */
static void coop_classify(void *ctx, const struct sl_packet *pkt, uint32_t n,
			  uint16_t *owner)
{
	uint32_t workers = *(const uint32_t *)ctx;

	for (uint32_t i = 0; i < n; i++)
		owner[i] = (uint16_t)(pkt[i].ts_ns % workers);
}

/* In a worker: every packet the buffer gives, in order, with the same
 * bytes, its owner as the classifier of whichever worker read
 * it decided, then the buffer's end (clean or its error). 1 when so. */
static int coop_worker(struct sl_coop *c, const struct bld *b, size_t len,
		       uint32_t workers, uint32_t w, int quit_after)
{
	struct sl_source *cs = NULL, *ms = NULL;
	uint32_t mi = 0, n = 0;
	int rc, mrc = 1, ok = 1, batches = 0;

	if (sl_source_open_coop(&cs, c, w) || sl_source_open_mem(&ms, b->d, len))
		return 0;
	cs->ops->set_classifier(cs, coop_classify, &workers);
	batch2.count = 0;
	for (;;) {
		const uint16_t *owner;

		if (quit_after && batches++ == quit_after) { /* stops early */
			sl_source_close(cs);
			sl_source_close(ms);
			return ok;
		}
		rc = sl_source_next(cs, &batch);
		if (rc <= 0)
			break;
		owner = cs->ops->owners(cs);
		for (uint32_t i = 0; i < batch.count; i++, n++) {
			const struct sl_packet *p = &batch.pkt[i];
			const struct sl_packet *q =
			    next_packet(ms, &batch2, &mi, &mrc);

			if (!q || p->ts_ns != q->ts_ns ||
			    p->caplen != q->caplen ||
			    p->wirelen != q->wirelen ||
			    p->linktype != q->linktype ||
			    memcmp(p->data, q->data, p->caplen) ||
			    owner[i] != p->ts_ns % workers) {
				fprintf(stderr, "coop: packet %u differs\n", n);
				ok = 0;
			}
		}
	}
	if (next_packet(ms, &batch2, &mi, &mrc) || rc != mrc ||
	    sl_source_next(cs, &batch) != rc) {
		fprintf(stderr, "coop: ended %d after %u, buffer %d\n", rc, n,
			mrc);
		ok = 0;
	}
	sl_source_close(cs);
	sl_source_close(ms);
	return ok;
}

/* The first len bytes of b as a file read by 1, 2 and 3 worker processes
 * at once: each gets what the buffer gives. With quit_after, the last of
 * 2 or 3 stops after that many batches, and the others still read to the
 * end (a minute at most). 1 when all did. */
static int coop_same(const struct bld *b, size_t len, int quit_after)
{
	char path[64];
	int fd = tmp_file(b, len, path), ok = 1;

	if (fd < 0)
		return 0;
	for (uint32_t workers = 1; workers <= 3; workers++) {
		struct sl_coop *c = NULL;
		pid_t pid[3];

		if (sl_coop_new(&c, path, workers)) {
			ok = 0;
			break;
		}
		for (uint32_t w = 0; w < workers; w++) {
			pid[w] = fork();
			if (pid[w] == 0) {
				alarm(60);
				_exit(coop_worker(c, b, len, workers, w,
						  w && w == workers - 1
						      ? quit_after
						      : 0)
					  ? 0
					  : 1);
			}
		}
		for (uint32_t w = 0; w < workers; w++) {
			int st = -1;

			if (pid[w] < 0 || waitpid(pid[w], &st, 0) != pid[w] ||
			    !WIFEXITED(st) || WEXITSTATUS(st) ||
			    sl_coop_closed(c, w) != 1) {
				fprintf(stderr, "coop: %u workers: worker %u "
						"failed\n",
					workers, w);
				ok = 0;
			}
		}
		sl_coop_free(c);
	}
	close(fd);
	unlink(path);
	return ok;
}

/* A file of many windows (260 KiB each, 4 slots a worker: the slots are
 * reused many times) with records of every size up to the largest, runs
 * of empty records (the most a window holds), both byte orders; whole,
 * cut inside its last record, and with a corrupt record length inside;
 * with a worker that stops early (engine:shutdown(), a signal). A
 * pcapng file, a compressed one, and stdin are not for sharing. */
static void test_coop(void)
{
	struct sl_coop *c = NULL;
	struct bld b;
	size_t last, mid = 0;
	char path[64];
	int fd;

	for (int be = 0; be < 2; be++) {
		bld_init(&b, be);
		pcap_hdr(&b, be ? 0xa1b2c3d4 : 0xa1b23c4d, 65535, 1);
		for (uint32_t i = 0; i < 20000; i++) {
			uint32_t n = i % 997 == 0   ? 262144
				     : i % 5 == 0 ? 0
						  : (i * 37) % 1600;

			if (i == 12000)
				mid = b.len;
			last = b.len;
			pcap_rec(&b, 1700000000 + i, i, n, n + 4, (uint8_t)i);
		}
		for (uint32_t i = 0; i < 70000; i++) /* 2 windows of them */
			pcap_rec(&b, 1800000000, i, 0, 60, 0);
		CHECK(coop_same(&b, b.len, 0));
		CHECK(coop_same(&b, b.len - 30, 0)); /* a record cut */
		if (be == 0) {
			CHECK(coop_same(&b, b.len, 1));
			CHECK(coop_same(&b, b.len, 40));
			CHECK(coop_same(&b, last + 7, 0));
			patch32(&b, mid + 8, 300000); /* caplen past the limit */
			CHECK(coop_same(&b, b.len, 0));
		}
		bld_free(&b);
	}

	bld_init(&b, 0);
	ng_shb(&b);
	ng_idb(&b, 1, 0, 0, 0, 0);
	fd = tmp_file(&b, b.len, path);
	CHECK(fd >= 0);
	CHECK_EQ(sl_coop_new(&c, path, 2), -ENOTSUP);
	CHECK_EQ(sl_coop_new(&c, "-", 2), -ENOTSUP);
	CHECK_EQ(sl_coop_new(&c, "/nonexistent/x.pcap", 2), -ENOENT);
	CHECK(c == NULL);
	close(fd);
	unlink(path);
	bld_free(&b);

	/* one source a worker; whether each closed it, for the parent */
	bld_init(&b, 0);
	pcap_hdr(&b, 0xa1b2c3d4, 65535, 1);
	pcap_rec(&b, 1700000000, 0, 60, 60, 1);
	fd = tmp_file(&b, b.len, path);
	CHECK(fd >= 0);
	CHECK_EQ(sl_coop_new(&c, path, 2), 0);
	{
		struct sl_source *s0 = NULL, *again = NULL;

		CHECK_EQ(sl_source_open_coop(&s0, c, 0), 0);
		CHECK_EQ(sl_source_open_coop(&again, c, 0), -EBUSY);
		CHECK_EQ(sl_source_open_coop(&again, c, 2), -EINVAL);
		CHECK_EQ(sl_coop_closed(c, 0), 0);
		CHECK_EQ(sl_coop_closed(c, 1), 0); /* never opened: not closed */
		CHECK_EQ(sl_coop_closed(c, 2), -EINVAL);
		sl_source_close(s0);
		CHECK_EQ(sl_coop_closed(c, 0), 1);
	}
	sl_coop_free(c);
	close(fd);
	unlink(path);
	bld_free(&b);
}

/* Reads a file of 6000 records of 1400 bytes (8.5 MB) and truncates it
 * after the first batch: at the end of record cut (a boundary), inside
 * record cut, or below what was read (cut 0). Every packet before the
 * cut that was read comes out intact, then SL_E_SHRUNK, again and again;
 * never a signal, never a clean end. */
static void test_file_shrink(int ng)
{
	static const uint32_t cuts[] = {4000, 3500, 0};

	for (int k = 0; k < 3; k++) {
		struct sl_source *src = NULL;
		uint64_t pos, size, cut_at = 0;
		uint32_t seen = 0, cut = cuts[k];
		char path[64];
		struct bld b;
		int fd, rc, ok = 1;

		bld_init(&b, 0);
		if (ng) {
			ng_shb(&b);
			ng_idb(&b, 1, 0, 9, 0, 0);
		} else {
			pcap_hdr(&b, 0xa1b23c4d, 65535, 1);
		}
		for (uint32_t i = 0; i < 6000; i++) {
			if (i == cut)
				cut_at = b.len + (k == 1 ? 700 : 0);
			if (ng)
				ng_epb(&b, 0, 1000 + i, 1400, 1400, (uint8_t)i);
			else
				pcap_rec(&b, 1000, i, 1400, 1400, (uint8_t)i);
		}
		if (!cut)
			cut_at = 0;
		fd = tmp_file(&b, b.len, path);
		CHECK(fd >= 0);
		if (fd < 0)
			goto next;
		CHECK_EQ(sl_source_open_file(&src, path), 0);
		if (!src)
			goto out;
		rc = sl_source_next(src, &batch);
		CHECK_EQ(rc, SL_BATCH_MAX);
		CHECK_EQ(ftruncate(fd, (off_t)cut_at), 0);
		while (rc > 0) {
			for (uint32_t i = 0; i < batch.count; i++, seen++) {
				const struct sl_packet *p = &batch.pkt[i];

				if (p->ts_ns != 1000 * (ng ? 1 : NS) + seen ||
				    p->caplen != 1400 ||
				    !data_ok(p, (uint8_t)seen))
					ok = 0;
			}
			rc = sl_source_next(src, &batch);
		}
		CHECK(ok);
		CHECK_EQ(rc, SL_E_SHRUNK);
		CHECK_EQ(batch.count, 0);
		CHECK_EQ(sl_source_next(src, &batch), SL_E_SHRUNK);
		if (cut)
			CHECK_EQ(seen, cut);
		else /* what the first window held */
			CHECK(seen >= SL_BATCH_MAX && seen < 1000);
		sl_source_progress(src, &pos, &size);
		CHECK(pos <= size);
		CHECK(size < b.len);
		sl_source_close(src);
	out:
		close(fd);
		unlink(path);
	next:
		bld_free(&b);
	}
}

/* ---- streams and compressed input ------------------------------------- */

/* Packet by packet, a source gives what a buffer's source gives: the same
 * packets with the same bytes and the same end (*src_rc, *mem_rc: the
 * last next()'s). prefix: the source may end first (with an error), its
 * packets the buffer's first ones. *count: the source's packets. */
static int same_packets(struct sl_source *fs, struct sl_source *ms, int prefix,
			int *src_rc, int *mem_rc, uint32_t *count)
{
	uint32_t fi = 0, mi = 0, n = 0;
	int frc = 1, mrc = 1, ok = 1;

	batch.count = batch2.count = 0;
	for (;; n++) {
		const struct sl_packet *p = next_packet(fs, &batch, &fi, &frc);
		const struct sl_packet *q;

		if (!p && prefix)
			break;
		q = next_packet(ms, &batch2, &mi, &mrc);
		if (!p || !q) {
			if (p || q || frc != mrc) {
				fprintf(stderr,
					"packet %u: source %s (%d), "
					"buffer %s (%d)\n",
					n, p ? "more" : "end", frc,
					q ? "more" : "end", mrc);
				ok = 0;
			}
			break;
		}
		if (p->ts_ns != q->ts_ns || p->caplen != q->caplen ||
		    p->wirelen != q->wirelen || p->linktype != q->linktype ||
		    p->ifindex != q->ifindex ||
		    memcmp(p->data, q->data, p->caplen)) {
			fprintf(stderr, "packet %u differs\n", n);
			ok = 0;
			break;
		}
	}
	*src_rc = frc;
	*mem_rc = mrc;
	*count = n;
	return ok;
}

/* A child writes data[0, len) into a pipe in uneven pieces (1 byte to
 * 100 kB): the read end, or -1. */
static int pipe_feed(const uint8_t *data, size_t len, pid_t *pid)
{
	int p[2];

	if (pipe(p))
		return -1;
	*pid = fork();
	if (*pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (*pid == 0) {
		size_t off = 0, step = 1;

		close(p[0]);
		while (off < len) {
			size_t n = step % 100000 + 1;
			ssize_t w;

			step = step * 48271 % 2147483647;
			if (n > len - off)
				n = len - off;
			w = write(p[1], data + off, n);
			if (w <= 0)
				_exit(1);
			off += (size_t)w;
		}
		_exit(0);
	}
	close(p[1]);
	return p[0];
}

static void pipe_done(int fd, pid_t pid)
{
	int st;

	close(fd); /* a writer still writing gets SIGPIPE */
	waitpid(pid, &st, 0);
}

/* data[0, len) read through a pipe (as /dev/fd/N, what <(...) gives; or
 * "-" with the pipe as standard input) gives the packets and the end of
 * img[0, img_len) read from a buffer; prefix, want_rc: as same_packets,
 * the end the stream must have. */
static int stream_same(const uint8_t *data, size_t len, const uint8_t *img,
		       size_t img_len, int stdin_, int prefix, int want_rc)
{
	struct sl_source *src = NULL, *ms = NULL;
	int fd, rc, src_rc, mem_rc, ok, saved = -1;
	uint64_t pos, size;
	uint32_t n;
	char path[32];
	pid_t pid;

	fd = pipe_feed(data, len, &pid);
	if (fd < 0)
		return 0;
	if (stdin_) {
		saved = dup(0);
		dup2(fd, 0);
		strcpy(path, "-");
	} else {
		snprintf(path, sizeof(path), "/dev/fd/%d", fd);
	}
	rc = sl_source_open_file(&src, path);
	if (stdin_) {
		dup2(saved, 0);
		close(saved);
	}
	ok = rc == sl_source_open_mem(&ms, img, img_len);
	if (!ok || rc) {
		if (!ok)
			fprintf(stderr, "open %s: %d\n", path, rc);
		goto out;
	}
	ok = same_packets(src, ms, prefix, &src_rc, &mem_rc, &n);
	if (src_rc != want_rc) {
		fprintf(stderr, "stream ends with %d, not %d\n", src_rc,
			want_rc);
		ok = 0;
	}
	if (src_rc < 0 && sl_source_next(src, &batch) != src_rc)
		ok = 0; /* sticky */
	sl_source_progress(src, &pos, &size);
	if (size != 0 || (!want_rc && data == img && pos != len))
		ok = 0; /* a stream's size is unknown; pos: bytes read */
out:
	sl_source_close(src);
	sl_source_close(ms);
	pipe_done(fd, pid);
	return ok;
}

/* Large images of several windows (1 MiB) with records and blocks cut by
 * a window's end and larger than one (as test_file_windows): pcap and
 * pcapng of both byte orders, 3 MiB before the first interface. */
static void img_pcap(struct bld *b, size_t *last)
{
	bld_init(b, 0);
	pcap_hdr(b, 0xa1b23c4d, 65535, 1);
	for (uint32_t i = 0; i < 6000; i++) {
		uint32_t n = i % 700 == 0 ? 262144 : (i * 37) % 1600;

		*last = b->len;
		pcap_rec(b, 1700000000 + i, i, n, n + 4, (uint8_t)i);
	}
}

static void img_pcapng(struct bld *b, int be)
{
	bld_init(b, be);
	ng_shb(b);
	ng_other(b, 4, 3 << 20); /* NRB */
	ng_idb(b, 101, 0, 9, 0, 0);
	ng_idb(b, 1, 0, 0x80 | 20, 1, 7);
	for (uint32_t i = 0; i < 5000; i++) {
		uint32_t n = (i * 53) % 1600;

		if (i == 1000)
			ng_epb(b, 0, i, 3 << 19, 3 << 19, 1);
		else if (i == 3000) {
			b->be = !be;
			ng_shb(b);
			ng_idb(b, 113, 0, 6, 0, 0);
			ng_idb(b, 1, 0, 3, 0, 0);
		} else if (i % 3 == 0)
			ng_spb(b, n + 10, n, (uint8_t)i);
		else
			ng_epb(b, i % 2, 1000000 + i, n, n, (uint8_t)i);
	}
}

/* Pipes, FIFOs and stdin are read as streams: the same packets as the
 * buffer, whole, cut inside a record (SL_E_TRUNCATED), empty or short
 * (SL_E_FORMAT, as a buffer). */
static void test_stream(void)
{
	struct sl_source *src = NULL;
	char path[] = "/tmp/test_source_fifo.XXXXXX";
	size_t last;
	struct bld b;

	img_pcap(&b, &last);
	CHECK(stream_same(b.d, b.len, b.d, b.len, 0, 0, 0));
	CHECK(stream_same(b.d, b.len, b.d, b.len, 1, 0, 0));
	CHECK(stream_same(b.d, last + 100, b.d, last + 100, 0, 0,
			  SL_E_TRUNCATED));
	CHECK(stream_same(b.d, 30, b.d, 30, 0, 0, SL_E_TRUNCATED));
	CHECK(stream_same(b.d, 10, b.d, 10, 0, 0, 0)); /* both: FORMAT */
	bld_free(&b);
	for (int be = 0; be < 2; be++) {
		img_pcapng(&b, be);
		CHECK(stream_same(b.d, b.len, b.d, b.len, 0, 0, 0));
		CHECK(stream_same(b.d, 20000, b.d, 20000, 1, 0,
				  SL_E_TRUNCATED));
		bld_free(&b);
	}

	/* a named FIFO, opened by its path */
	if (mkdtemp(path)) {
		char fifo[64];
		pid_t pid;

		snprintf(fifo, sizeof(fifo), "%s/f", path);
		img_pcap(&b, &last);
		CHECK_EQ(mkfifo(fifo, 0600), 0);
		pid = fork();
		if (pid == 0) {
			int fd = open(fifo, O_WRONLY);

			if (fd < 0 || write(fd, b.d, b.len) != (ssize_t)b.len)
				_exit(1);
			_exit(0);
		}
		CHECK_EQ(sl_source_open_file(&src, fifo), 0);
		if (src) {
			struct sl_source *ms = NULL;
			int rc, mrc;
			uint32_t n;

			CHECK_EQ(sl_source_open_mem(&ms, b.d, b.len), 0);
			CHECK(same_packets(src, ms, 0, &rc, &mrc, &n));
			CHECK_EQ(rc, 0);
			CHECK_EQ(n, 6000);
			sl_source_close(ms);
			sl_source_close(src);
		}
		if (pid > 0)
			waitpid(pid, NULL, 0);
		unlink(fifo);
		rmdir(path);
		bld_free(&b);
	}
	/* empty standard input, /dev/null: not a capture */
	CHECK_EQ(sl_source_open_file(&src, "/dev/null"), SL_E_FORMAT);
}

enum { Z_GZIP, Z_ZSTD, Z_XZ, Z_LZ4, Z_KINDS };
static const char *const z_names[Z_KINDS] = {"gzip", "zstd", "xz", "lz4"};

/* Compresses in[0, len) into one stream or frame (checksums on) at
 * out + *olen, which has room; 0 or -1. */
static int z_compress(int kind, const uint8_t *in, size_t len, uint8_t *out,
		      size_t *olen, size_t cap)
{
	switch (kind) {
	case Z_GZIP: {
		z_stream z = {0};
		int rc;

		if (deflateInit2(&z, 1, Z_DEFLATED, 16 + MAX_WBITS, 8,
				 Z_DEFAULT_STRATEGY) != Z_OK)
			return -1;
		z.next_in = (uint8_t *)in;
		z.avail_in = (uInt)len;
		z.next_out = out + *olen;
		z.avail_out = (uInt)(cap - *olen);
		rc = deflate(&z, Z_FINISH);
		*olen += z.total_out;
		deflateEnd(&z);
		return rc == Z_STREAM_END ? 0 : -1;
	}
	case Z_ZSTD: {
		ZSTD_CCtx *c = ZSTD_createCCtx();
		size_t r;

		ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
		r = ZSTD_compress2(c, out + *olen, cap - *olen, in, len);
		ZSTD_freeCCtx(c);
		if (ZSTD_isError(r))
			return -1;
		*olen += r;
		return 0;
	}
	case Z_XZ:
		return lzma_easy_buffer_encode(0, LZMA_CHECK_CRC64, NULL, in,
					       len, out, olen,
					       cap) == LZMA_OK
			   ? 0
			   : -1;
	case Z_LZ4: {
		LZ4F_preferences_t prefs;
		size_t r;

		memset(&prefs, 0, sizeof(prefs));
		prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
		prefs.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
		r = LZ4F_compressFrame(out + *olen, cap - *olen, in, len,
				       &prefs);
		if (LZ4F_isError(r))
			return -1;
		*olen += r;
		return 0;
	}
	}
	return -1;
}

/* Writes data[0, len) to a new temporary file (its name in path). */
static int z_file(const uint8_t *data, size_t len, char *path)
{
	int fd;

	strcpy(path, "/tmp/test_source_z.XXXXXX");
	fd = mkstemp(path);
	if (fd < 0)
		return -1;
	if (write(fd, data, len) != (ssize_t)len) {
		close(fd);
		unlink(path);
		return -1;
	}
	close(fd);
	return 0;
}

/* A compressed file gives the packets and the end of the buffer (a
 * prefix of them, then want_rc); progress counts compressed bytes. */
static int z_file_same(const uint8_t *z, size_t zlen, const struct bld *b,
		       int prefix, int want_rc, uint32_t *count)
{
	struct sl_source *src = NULL, *ms = NULL;
	int rc, src_rc, mem_rc, ok = 1;
	uint64_t pos, size;
	char path[64];

	*count = 0;
	if (z_file(z, zlen, path))
		return 0;
	rc = sl_source_open_file(&src, path);
	unlink(path);
	if (rc) {
		fprintf(stderr, "open %s: %d\n", path, rc);
		return 0;
	}
	sl_source_open_mem(&ms, b->d, b->len);
	ok = same_packets(src, ms, prefix, &src_rc, &mem_rc, count);
	if (src_rc != want_rc) {
		fprintf(stderr, "ends with %d, not %d\n", src_rc, want_rc);
		ok = 0;
	}
	if (src_rc < 0 && sl_source_next(src, &batch) != src_rc)
		ok = 0;
	sl_source_progress(src, &pos, &size);
	if (size != zlen || pos > size || (!want_rc && pos != size))
		ok = 0;
	sl_source_close(src);
	sl_source_close(ms);
	return ok;
}

/* Each format, recognised by its magic bytes (the file names say
 * nothing): as a file and through a pipe, one stream or two concatenated,
 * the packets of the buffer; cut at two thirds: the packets before, then
 * SL_E_ZTRUNC; trailing garbage: every packet, then SL_E_ZCORRUPT; a
 * damaged checksum: SL_E_ZCORRUPT; only the magic: the open fails with
 * SL_E_ZTRUNC. */
static void test_compressed(int ng)
{
	size_t last, cap, zlen, zlen1;
	struct bld b;
	uint8_t *z;

	if (ng)
		img_pcapng(&b, 0);
	else
		img_pcap(&b, &last);
	cap = b.len * 2 + (1 << 20);
	z = malloc(cap);
	for (int k = 0; k < Z_KINDS; k++) {
		struct sl_source *src = NULL;
		uint32_t n, all;
		char path[64];

		fprintf(stderr, "-- %s %s\n", z_names[k], ng ? "pcapng" : "pcap");
		zlen = 0;
		CHECK_EQ(z_compress(k, b.d, b.len, z, &zlen, cap), 0);
		CHECK(z_file_same(z, zlen, &b, 0, 0, &all));
		CHECK(all > 4000);
		CHECK(stream_same(z, zlen, b.d, b.len, 0, 0, 0));
		CHECK(stream_same(z, zlen, b.d, b.len, 1, 0, 0));

		/* cut short */
		CHECK(z_file_same(z, zlen * 2 / 3, &b, 1, SL_E_ZTRUNC, &n));
		CHECK(n > 100 && n < all);
		CHECK(stream_same(z, zlen * 2 / 3, b.d, b.len, 0, 1,
				  SL_E_ZTRUNC));
		CHECK(z_file_same(z, zlen - 1, &b, 1, SL_E_ZTRUNC, &n));

		/* only the magic bytes */
		CHECK_EQ(z_file(z, k == Z_XZ ? 6 : 4, path), 0);
		CHECK_EQ(sl_source_open_file(&src, path), SL_E_ZTRUNC);
		unlink(path);

		/* trailing garbage */
		memcpy(z + zlen, "JUNKJUNKJUNKJUNK", 16);
		CHECK(z_file_same(z, zlen + 16, &b, 1, SL_E_ZCORRUPT, &n));
		CHECK_EQ(n, all);

		/* a damaged checksum at the end of the stream */
		z[zlen - (k == Z_XZ ? 20 : 2)] ^= 0x5a;
		CHECK(z_file_same(z, zlen, &b, 1, SL_E_ZCORRUPT, &n));
		z[zlen - (k == Z_XZ ? 20 : 2)] ^= 0x5a;

		/* two streams (pigz, cat a.gz b.gz, zstd frames) */
		zlen1 = 0;
		CHECK_EQ(z_compress(k, b.d, b.len / 3, z, &zlen1, cap), 0);
		CHECK_EQ(z_compress(k, b.d + b.len / 3, b.len - b.len / 3, z,
				    &zlen1, cap),
			 0);
		CHECK(z_file_same(z, zlen1, &b, 0, 0, &n));
		CHECK(stream_same(z, zlen1, b.d, b.len, 0, 0, 0));
	}
	free(z);
	bld_free(&b);
}

int main(void)
{
	int be, nano;

	for (be = 0; be < 2; be++)
		for (nano = 0; nano < 2; nano++)
			test_pcap_basic(be, nano);
	test_pcap_corrupt();
	test_many();
	test_truncated(0);
	test_truncated(1);
	test_headers();
	test_ng_interfaces(0);
	test_ng_interfaces(1);
	test_ng_sections();
	test_ng_ts_extremes();
	test_ng_ts_resolutions();
	test_ng_ts_seconds();
	test_pcap_ts();
	test_ng_corrupt();
	test_file();
	test_file_windows();
	test_file_shrink(0);
	test_file_shrink(1);
	test_stream();
	test_compressed(0);
	test_compressed(1);
	test_coop();
	return test_done();
}
