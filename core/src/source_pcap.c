/* source_pcap.c - pcap and pcapng file reader over a mapped file or a
 * caller's buffer. Packets point into the buffer: nothing is copied.
 *
 * Also holds the generic sl_source_* entry points, which dispatch through
 * the ops table of source.h (move them to a source.c when a second source
 * kind arrives, if preferred).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice.h"
#include "source.h"

#define NS_PER_S 1000000000ULL

/* classic pcap */
#define PCAP_MAGIC_US	0xa1b2c3d4U /* microsecond timestamps */
#define PCAP_MAGIC_NS	0xa1b23c4dU /* nanosecond timestamps */
#define PCAP_HDR_LEN	24
#define PCAP_REC_LEN	16
#define PCAP_MAX_CAPLEN 262144 /* larger: a corrupt record */

/* pcapng */
#define NG_SHB		0x0a0d0d0aU /* same in both byte orders */
#define NG_IDB		1
#define NG_PB		2 /* obsolete Packet Block */
#define NG_SPB		3
#define NG_EPB		6
#define NG_BYTE_ORDER	0x1a2b3c4dU
#define NG_OPT_END	0
#define NG_OPT_TSRESOL	9
#define NG_OPT_TSOFFSET 14
#define NG_MAX_IFS	65536 /* more interfaces in a section: corrupt */

enum pcap_kind {
	KIND_PCAP = 0,
	KIND_PCAPNG = 1,
};

/* A pcapng interface: what its packets need. */
struct ng_if {
	uint32_t linktype;
	uint32_t snaplen; /* 0: no limit */
	int64_t offset_s; /* if_tsoffset */
	uint8_t pow2;	  /* units of 2^-exp seconds, else 10^-exp */
	uint8_t exp;
};

struct pcap_source {
	struct sl_source base; /* first: the generic layer casts to it */
	const uint8_t *buf;
	size_t len;
	size_t pos;	   /* start of the next record/block */
	void *map;	   /* the mapping when opened from a file, else NULL */
	size_t dropped;	   /* mapping: pages before this were given back */
	size_t ahead;	   /* mapping: pages before this were populated */
	size_t prefetched; /* cache lines before this were prefetched */
	int err;	   /* sticky: once set, every next() returns it */
	int kind;	   /* enum pcap_kind */
	int swap;	   /* file (pcapng: section) byte order is not ours */
	int linktype; /* pcap header or first pcapng IDB; SL_E_FORMAT: none */
	uint32_t frac_ns; /* pcap: nanoseconds per timestamp fraction unit */
	uint64_t last_ts; /* pcapng: for Simple Packet Blocks */
	struct ng_if *ifs;
	uint32_t n_ifs;
	uint32_t cap_ifs;
};

static const uint64_t pow10_tab[20] = {
    1ULL,
    10ULL,
    100ULL,
    1000ULL,
    10000ULL,
    100000ULL,
    1000000ULL,
    10000000ULL,
    100000000ULL,
    1000000000ULL,
    10000000000ULL,
    100000000000ULL,
    1000000000000ULL,
    10000000000000ULL,
    100000000000000ULL,
    1000000000000000ULL,
    10000000000000000ULL,
    100000000000000000ULL,
    1000000000000000000ULL,
    10000000000000000000ULL,
};

/* Unaligned loads in the file's byte order. */
static inline uint16_t rd16(int swap, const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return swap ? __builtin_bswap16(v) : v;
}

static inline uint32_t rd32(int swap, const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return swap ? __builtin_bswap32(v) : v;
}

static inline uint64_t rd64(int swap, const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return swap ? __builtin_bswap64(v) : v;
}

static inline struct pcap_source *to_pcap(struct sl_source *src)
{
	return (struct pcap_source *)src;
}

static inline const struct pcap_source *to_pcap_c(const struct sl_source *src)
{
	return (const struct pcap_source *)src;
}

/* Ends a next() call: n packets are in the batch; rc, if set, becomes the
 * sticky error, returned now only if the batch is empty. */
static int batch_end(struct pcap_source *s, struct sl_packet_batch *b,
		     uint32_t n, int rc)
{
	b->count = n;
	if (rc)
		s->err = rc;
	return n ? (int)n : rc;
}

/* ---- classic pcap ----------------------------------------------------- */

static int pcap_init(struct pcap_source *s, uint32_t magic)
{
	const uint8_t *p = s->buf;

	s->kind = KIND_PCAP;
	if (magic == PCAP_MAGIC_US || magic == PCAP_MAGIC_NS) {
		s->swap = 0;
	} else {
		s->swap = 1;
		magic = __builtin_bswap32(magic);
	}
	s->frac_ns = magic == PCAP_MAGIC_NS ? 1 : 1000;
	if (s->len < PCAP_HDR_LEN)
		return SL_E_TRUNCATED;
	/* The upper bits carry FCS information. The snaplen at 16 is not
	 * trusted: some writers put 0 or a value below the real caplen. */
	s->linktype = (int)(rd32(s->swap, p + 20) & 0xffff);
	s->pos = PCAP_HDR_LEN;
	return 0;
}

enum { PREFETCH_DISTANCE = 4096 };

/* Each record's length says where the next one starts, so the reads form a
 * chain of cache misses; keep a few kilobytes ahead in flight instead. */
static inline void prefetch_ahead(struct pcap_source *s)
{
	size_t limit = s->pos + PREFETCH_DISTANCE;

	if (limit > s->len)
		limit = s->len;
	if (s->prefetched < s->pos)
		s->prefetched = s->pos;
	for (; s->prefetched < limit; s->prefetched += 64)
		__builtin_prefetch(s->buf + s->prefetched);
}

static int pcap_next(struct pcap_source *s, struct sl_packet_batch *b)
{
	uint32_t n = 0;
	int rc = 0;

	while (n < SL_BATCH_MAX && s->pos < s->len) {
		const uint8_t *p = s->buf + s->pos;
		size_t left = s->len - s->pos;
		struct sl_packet *pkt;
		uint32_t caplen, wirelen;

		if (left < PCAP_REC_LEN) {
			rc = SL_E_TRUNCATED;
			break;
		}
		caplen = rd32(s->swap, p + 8);
		if (caplen > PCAP_MAX_CAPLEN) {
			rc = SL_E_FORMAT;
			break;
		}
		if (caplen > left - PCAP_REC_LEN) {
			rc = SL_E_TRUNCATED;
			break;
		}
		wirelen = rd32(s->swap, p + 12);
		prefetch_ahead(s);
		if (wirelen < caplen)
			wirelen = caplen;
		pkt = &b->pkt[n++];
		pkt->data = p + PCAP_REC_LEN;
		pkt->ts_ns = (uint64_t)rd32(s->swap, p) * NS_PER_S +
			     (uint64_t)rd32(s->swap, p + 4) * s->frac_ns;
		pkt->caplen = caplen;
		pkt->wirelen = wirelen;
		pkt->linktype = (uint32_t)s->linktype;
		pkt->ifindex = 0;
		s->pos += PCAP_REC_LEN + caplen;
	}
	return batch_end(s, b, n, rc);
}

/* ---- pcapng ----------------------------------------------------------- */

/* Checks the block at off: complete, sane length, trailing copy equal.
 * A Section Header Block sets *swap from its byte-order magic first. */
static int ng_block_at(const uint8_t *buf, size_t len, size_t off, int *swap,
		       uint32_t *type, uint32_t *blen)
{
	const uint8_t *p = buf + off;
	size_t left = len - off;
	uint32_t t, l, magic;

	if (left < 8)
		return SL_E_TRUNCATED;
	memcpy(&t, p, sizeof(t));
	if (t == NG_SHB) {
		if (left < 12)
			return SL_E_TRUNCATED;
		memcpy(&magic, p + 8, sizeof(magic));
		if (magic == NG_BYTE_ORDER)
			*swap = 0;
		else if (magic == __builtin_bswap32(NG_BYTE_ORDER))
			*swap = 1;
		else
			return SL_E_FORMAT;
	} else {
		t = rd32(*swap, p);
	}
	l = rd32(*swap, p + 4);
	if (l < 12 || l % 4)
		return SL_E_FORMAT;
	if (l > left)
		return SL_E_TRUNCATED;
	if (rd32(*swap, p + l - 4) != l)
		return SL_E_FORMAT;
	*type = t;
	*blen = l;
	return 0;
}

/* Validates the first Section Header Block and looks ahead, without
 * consuming anything, for the first interface's link type. */
static int ng_init(struct pcap_source *s)
{
	uint32_t type, blen;
	size_t off = 0;
	int swap = 0;
	int rc;

	s->kind = KIND_PCAPNG;
	s->linktype = SL_E_FORMAT;
	s->pos = 0;
	rc = ng_block_at(s->buf, s->len, 0, &swap, &type, &blen);
	if (rc)
		return rc;
	for (;;) {
		if (type == NG_IDB) {
			if (blen >= 20)
				s->linktype = rd16(swap, s->buf + off + 8);
			break;
		}
		if (type == NG_EPB || type == NG_SPB || type == NG_PB)
			break;
		off += blen;
		if (off >= s->len)
			break;
		if (ng_block_at(s->buf, s->len, off, &swap, &type, &blen))
			break;
	}
	return 0;
}

static int ng_shb(struct pcap_source *s, const uint8_t *p, uint32_t blen)
{
	/* type, length, magic, major, minor, section length, trailer */
	if (blen < 28)
		return SL_E_FORMAT;
	if (rd16(s->swap, p + 12) != 1)
		return SL_E_FORMAT;
	s->n_ifs = 0;
	return 0;
}

static int ng_idb(struct pcap_source *s, const uint8_t *p, uint32_t blen)
{
	struct ng_if ifc = {.exp = 6}; /* default: microseconds */
	size_t off = 16, end;

	if (blen < 20)
		return SL_E_FORMAT;
	ifc.linktype = rd16(s->swap, p + 8);
	ifc.snaplen = rd32(s->swap, p + 12);
	end = blen - 4;
	while (off + 4 <= end) {
		uint16_t code = rd16(s->swap, p + off);
		uint16_t olen = rd16(s->swap, p + off + 2);

		off += 4;
		if (code == NG_OPT_END)
			break;
		if (olen > end - off)
			break; /* damaged options: keep what was read */
		if (code == NG_OPT_TSRESOL && olen >= 1) {
			ifc.pow2 = p[off] >> 7;
			ifc.exp = p[off] & 0x7f;
		} else if (code == NG_OPT_TSOFFSET && olen == 8) {
			ifc.offset_s = (int64_t)rd64(s->swap, p + off);
		}
		off += ((size_t)olen + 3) & ~(size_t)3;
	}

	if (s->n_ifs == s->cap_ifs) {
		uint32_t cap = s->cap_ifs ? s->cap_ifs * 2 : 4;
		struct ng_if *ifs;

		if (s->n_ifs >= NG_MAX_IFS)
			return SL_E_FORMAT;
		ifs = realloc(s->ifs, cap * sizeof(*ifs));
		if (!ifs)
			return -ENOMEM;
		s->ifs = ifs;
		s->cap_ifs = cap;
	}
	s->ifs[s->n_ifs++] = ifc;
	if (s->linktype < 0)
		s->linktype = (int)ifc.linktype;
	return 0;
}

/* Timestamp units of the interface -> ns since the epoch, saturating. */
static uint64_t ng_ts_ns(const struct ng_if *ifc, uint64_t ts)
{
	__int128 ns; /* |ns| < 2^95: no overflow below */

	if (ifc->pow2)
		ns = (__int128)(((unsigned __int128)ts * NS_PER_S) >> ifc->exp);
	else if (ifc->exp <= 9)
		ns = (__int128)ts * (__int128)pow10_tab[9 - ifc->exp];
	else if (ifc->exp - 9 < 20)
		ns = ts / pow10_tab[ifc->exp - 9];
	else
		ns = 0; /* one unit is below 10^-29 s */
	ns += (__int128)ifc->offset_s * (__int128)NS_PER_S;
	if (ns < 0)
		return 0;
	if (ns > (__int128)UINT64_MAX)
		return UINT64_MAX;
	return (uint64_t)ns;
}

/* Enhanced Packet Block, or the obsolete Packet Block (same layout but a
 * 16-bit interface id followed by a 16-bit drop count). */
static int ng_epb(struct pcap_source *s, const uint8_t *p, uint32_t blen,
		  uint32_t type, struct sl_packet *pkt)
{
	const struct ng_if *ifc;
	uint32_t ifid, caplen, wirelen;
	uint64_t ts;

	if (blen < 32)
		return SL_E_FORMAT;
	ifid = type == NG_PB ? rd16(s->swap, p + 8) : rd32(s->swap, p + 8);
	if (ifid >= s->n_ifs)
		return SL_E_FORMAT;
	ifc = &s->ifs[ifid];
	caplen = rd32(s->swap, p + 20);
	if (caplen > blen - 32)
		return SL_E_FORMAT;
	wirelen = rd32(s->swap, p + 24);
	if (wirelen < caplen)
		wirelen = caplen;
	ts = (uint64_t)rd32(s->swap, p + 12) << 32 | rd32(s->swap, p + 16);
	s->last_ts = ng_ts_ns(ifc, ts);
	pkt->data = p + 28;
	pkt->ts_ns = s->last_ts;
	pkt->caplen = caplen;
	pkt->wirelen = wirelen;
	pkt->linktype = ifc->linktype;
	pkt->ifindex = ifid;
	return 0;
}

/* Simple Packet Block: interface 0, no timestamp (the last one seen is
 * used), captured length implied by the block and the snaplen. */
static int ng_spb(struct pcap_source *s, const uint8_t *p, uint32_t blen,
		  struct sl_packet *pkt)
{
	const struct ng_if *ifc;
	uint32_t caplen, wirelen;

	if (blen < 16)
		return SL_E_FORMAT;
	if (!s->n_ifs)
		return SL_E_FORMAT;
	ifc = &s->ifs[0];
	wirelen = rd32(s->swap, p + 8);
	caplen = blen - 16;
	if (caplen > wirelen)
		caplen = wirelen;
	if (ifc->snaplen && caplen > ifc->snaplen)
		caplen = ifc->snaplen;
	pkt->data = p + 12;
	pkt->ts_ns = s->last_ts;
	pkt->caplen = caplen;
	pkt->wirelen = wirelen;
	pkt->linktype = ifc->linktype;
	pkt->ifindex = 0;
	return 0;
}

static int ng_next(struct pcap_source *s, struct sl_packet_batch *b)
{
	uint32_t n = 0;
	int rc = 0;

	while (n < SL_BATCH_MAX && s->pos < s->len) {
		const uint8_t *p = s->buf + s->pos;
		uint32_t type, blen;

		rc =
		    ng_block_at(s->buf, s->len, s->pos, &s->swap, &type, &blen);
		if (rc)
			break;
		switch (type) {
		case NG_SHB:
			rc = ng_shb(s, p, blen);
			break;
		case NG_IDB:
			rc = ng_idb(s, p, blen);
			break;
		case NG_EPB:
		case NG_PB:
			rc = ng_epb(s, p, blen, type, &b->pkt[n]);
			if (!rc)
				n++;
			break;
		case NG_SPB:
			rc = ng_spb(s, p, blen, &b->pkt[n]);
			if (!rc)
				n++;
			break;
		default: /* NRB, ISB, DSB, custom, ...: skipped */
			break;
		}
		if (rc)
			break;
		s->pos += blen;
	}
	return batch_end(s, b, n, rc);
}

/* ---- ops -------------------------------------------------------------- */

enum { MAP_WINDOW = 8 << 20 };

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

/* A mapped file's pages count in the resident set as they are read: give
 * back what earlier batches used (nothing points there any more), and map
 * the next window with one call rather than a page fault every few pages. */
static void map_slide(struct pcap_source *s)
{
	size_t drop = s->pos & ~(size_t)4095, end;

	if (!s->map || s->pos + MAP_WINDOW / 2 < s->ahead)
		return;
	if (drop > s->dropped) {
		(void)madvise((uint8_t *)s->map + s->dropped, drop - s->dropped,
			      MADV_DONTNEED);
		s->dropped = drop;
	}
	end = s->ahead + MAP_WINDOW < s->len ? s->ahead + MAP_WINDOW : s->len;
	if (end > s->ahead && madvise((uint8_t *)s->map + s->ahead,
				      end - s->ahead, MADV_POPULATE_READ))
		(void)madvise((uint8_t *)s->map + s->ahead, end - s->ahead,
			      MADV_WILLNEED);
	s->ahead = end;
}

static int pcap_src_next(struct sl_source *src, struct sl_packet_batch *b)
{
	struct pcap_source *s = to_pcap(src);

	map_slide(s);

	if (s->err) {
		b->count = 0;
		return s->err;
	}
	if (s->kind == KIND_PCAPNG)
		return ng_next(s, b);
	return pcap_next(s, b);
}

static int pcap_src_linktype(const struct sl_source *src)
{
	return to_pcap_c(src)->linktype;
}

static void pcap_src_progress(const struct sl_source *src, uint64_t *pos,
			      uint64_t *size)
{
	const struct pcap_source *s = to_pcap_c(src);

	if (pos)
		*pos = s->pos;
	if (size)
		*size = s->len;
}

static void pcap_src_close(struct sl_source *src)
{
	struct pcap_source *s = to_pcap(src);

	if (s->map)
		munmap(s->map, s->len);
	free(s->ifs);
	free(s);
}

static const struct sl_source_ops pcap_ops = {
    .next = pcap_src_next,
    .linktype = pcap_src_linktype,
    .progress = pcap_src_progress,
    .close = pcap_src_close,
};

/* Recognises the format from the first bytes and reads the file header. */
static int pcap_src_init(struct pcap_source *s)
{
	uint32_t magic;

	s->base.ops = &pcap_ops;
	if (s->len < 4)
		return SL_E_FORMAT;
	memcpy(&magic, s->buf, sizeof(magic));
	if (magic == NG_SHB)
		return ng_init(s);
	switch (magic) {
	case PCAP_MAGIC_US:
	case PCAP_MAGIC_NS:
	case __builtin_bswap32(PCAP_MAGIC_US):
	case __builtin_bswap32(PCAP_MAGIC_NS):
		return pcap_init(s, magic);
	}
	return SL_E_FORMAT;
}

int sl_source_open_mem(struct sl_source **out, const uint8_t *buf, size_t len)
{
	struct pcap_source *s;
	int rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!buf && len)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->buf = buf;
	s->len = len;
	rc = pcap_src_init(s);
	if (rc)
		goto out_free;
	*out = &s->base;
	return 0;

out_free:
	free(s);
	return rc;
}

int sl_source_open_file(struct sl_source **out, const char *path)
{
	struct pcap_source *s;
	struct stat st;
	void *map;
	size_t len;
	int fd, rc;

	if (!out || !path)
		return -EINVAL;
	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out_close;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = -EISDIR;
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -ESPIPE; /* pipes and devices cannot be mapped */
		goto out_close;
	}
	if (st.st_size == 0) {
		rc = SL_E_FORMAT;
		goto out_close;
	}
	if ((uint64_t)st.st_size > SIZE_MAX) {
		rc = -EFBIG;
		goto out_close;
	}
	len = (size_t)st.st_size;
	map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		rc = -errno;
		goto out_close;
	}
	(void)madvise(map, len, MADV_SEQUENTIAL);
	s = calloc(1, sizeof(*s));
	if (!s) {
		rc = -ENOMEM;
		goto out_unmap;
	}
	s->buf = map;
	s->len = len;
	s->map = map;
	rc = pcap_src_init(s);
	if (rc)
		goto out_free;
	close(fd);
	*out = &s->base;
	return 0;

out_free:
	free(s);
out_unmap:
	munmap(map, len);
out_close:
	close(fd);
	return rc;
}

/* ---- generic entry points --------------------------------------------- */

/* Each checks its op first: a kind leaves an op NULL where it does not
 * apply (a collector has records, not next), and the answer is then
 * -ENOTSUP (no packets, no counters) or zeros, as sluice.h documents. */

int sl_source_next(struct sl_source *src, struct sl_packet_batch *b)
{
	if (!src || !b)
		return -EINVAL;
	if (!src->ops->next) {
		b->count = 0;
		return -ENOTSUP;
	}
	return src->ops->next(src, b);
}

int sl_source_linktype(const struct sl_source *src)
{
	if (!src)
		return -EINVAL;
	if (!src->ops->linktype)
		return -ENOTSUP;
	return src->ops->linktype(src);
}

void sl_source_progress(const struct sl_source *src, uint64_t *pos,
			uint64_t *size)
{
	uint64_t p = 0, n = 0;

	if (src && src->ops->progress)
		src->ops->progress(src, &p, &n);
	if (pos)
		*pos = p;
	if (size)
		*size = n;
}

int sl_source_stats(struct sl_source *src, struct sl_source_stats *st)
{
	if (!src || !st)
		return -EINVAL;
	if (!src->ops->stats) {
		memset(st, 0, sizeof(*st));
		return -ENOTSUP;
	}
	return src->ops->stats(src, st);
}

void sl_source_close(struct sl_source *src)
{
	if (src && src->ops->close)
		src->ops->close(src);
}
