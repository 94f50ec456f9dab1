/* source_pcap.c - pcap and pcapng reader over a caller's buffer, a file
 * or a stream. Packets point into the buffer, so a buffer's are not
 * copied; a file is read in chunks (pread) into a window of the source's,
 * which moves on between batches. A file is not mapped: pages of a
 * mapping vanish when the file is truncated while it is read, and
 * touching one is a SIGBUS; a read just comes back short (SL_E_SHRUNK).
 * It is also faster here: walking the records of the 1.1 GB bench trace
 * in the page cache took 0.12 s through a 1 MiB pread window and 0.63 to
 * 0.75 s through a mapping (MAP_POPULATE or not) on the development VM.
 * A stream (a pipe, FIFO, stdin, or compressed input, decompress.c)
 * fills the same window with read(2), its size unknown until it ends:
 * the parsing is the same.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "decompress.h"
#include "fileio.h"
#include "sluice.h"
#include "source.h"

#define NS_PER_S 1000000000ULL

/* classic pcap */
#define PCAP_MAGIC_US	0xa1b2c3d4U /* microsecond timestamps */
#define PCAP_MAGIC_NS	0xa1b23c4dU /* nanosecond timestamps */
#define PCAP_HDR_LEN	24
#define PCAP_REC_LEN	16
#define PCAP_MAX_CAPLEN 262144 /* larger: a corrupt record */
_Static_assert(PCAP_REC_LEN + PCAP_MAX_CAPLEN == SL_PCAP_MAX_RECORD &&
		   PCAP_HDR_LEN == SL_PCAP_HDR_LEN,
	       "source.h knows the header and the largest record");

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
/* A file's blocks are read whole into the window: a longer one is taken
 * for corrupt (packets of the largest link-layer limits, 128 MiB, fit).
 * Opening looks for the first interface no further than NG_LOOKAHEAD. */
#define NG_MAX_BLOCK (256U << 20)
#define NG_LOOKAHEAD (16U << 20)

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

/* The window: buf[0, len) holds input bytes from offset off on. A
 * caller's buffer is one window over all of it; a file's moves on. */
struct pcap_source {
	struct sl_source base; /* first: the generic layer casts to it */
	const uint8_t *buf;
	size_t len;
	size_t pos;	   /* start of the next record/block, in the window */
	size_t want;	   /* the record at pos needs this many bytes: read */
	size_t prefetched; /* cache lines before this were prefetched */
	int fd;		   /* a file or stream, else -1 (a caller's buffer) */
	int stream;	   /* fd is read in order (read(2) or dz), no pread */
	int may_yield;	   /* an open stream: a wait for input gives way to
			    * a signal the run loop must see (-EINTR) */
	int end_err;	   /* the input ended early: SL_E_SHRUNK, a stream's
			    * read error, SL_E_ZTRUNC, ... */
	struct sl_dz *dz;  /* compressed input, else NULL */
	uint8_t *mem;	   /* a file: the window's memory */
	size_t cap;
	uint64_t off;  /* input offset of buf[0] */
	uint64_t end;  /* input size (a file's at open, until it shrinks; a
			* stream's UINT64_MAX until it ends) */
	uint64_t size; /* compressed file: its size (progress), else 0 */
	int err;       /* sticky: once set, every next() returns it */
	int kind;      /* enum pcap_kind */
	int swap;      /* file (pcapng: section) byte order is not ours */
	int linktype;  /* pcap header or first pcapng IDB; SL_E_FORMAT: none */
	uint32_t frac_ns; /* pcap: nanoseconds per timestamp fraction unit */
	uint64_t last_ts; /* pcapng: for Simple Packet Blocks */
	struct ng_if *ifs;
	uint32_t n_ifs;
	uint32_t cap_ifs;
};

/* clang-format off */
static const uint64_t pow10_tab[20] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL,
    10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL,
    100000000000ULL, 1000000000000ULL, 10000000000000ULL,
    100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
    100000000000000000ULL, 1000000000000000000ULL,
    10000000000000000000ULL,
};
/* clang-format on */

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

/* Nothing of the input is left past the window. */
static inline int at_end(const struct pcap_source *s)
{
	return s->off + s->len >= s->end;
}

/* The record or block at pos needs need bytes and the window has fewer:
 * 0 with want set when the input holds them (the caller reads on, then
 * parses again), else the input ends inside it. */
static int short_window(struct pcap_source *s, size_t need)
{
	if (s->off + s->pos + need <= s->end) {
		s->want = need;
		return 0;
	}
	return s->end_err ? s->end_err : SL_E_TRUNCATED;
}

/* The window is used up at a record boundary: read on (want), or the
 * end, clean unless the input ended early. */
static int window_done(struct pcap_source *s, size_t need)
{
	if (!at_end(s)) {
		s->want = need;
		return 0;
	}
	return s->end_err;
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

int sl_pcap_format_read(struct sl_pcap_format *f, const uint8_t *p,
			size_t len)
{
	uint32_t magic;

	if (len < 4)
		return SL_E_FORMAT;
	memcpy(&magic, p, sizeof(magic));
	switch (magic) {
	case PCAP_MAGIC_US:
	case PCAP_MAGIC_NS:
		f->swap = 0;
		break;
	case __builtin_bswap32(PCAP_MAGIC_US):
	case __builtin_bswap32(PCAP_MAGIC_NS):
		f->swap = 1;
		magic = __builtin_bswap32(magic);
		break;
	default:
		return SL_E_FORMAT;
	}
	f->frac_ns = magic == PCAP_MAGIC_NS ? 1 : 1000;
	if (len < PCAP_HDR_LEN)
		return SL_E_TRUNCATED;
	/* The upper bits carry FCS information. The snaplen at 16 is not
	 * trusted: some writers put 0 or a value below the real caplen. */
	f->linktype = (int)(rd32(f->swap, p + 20) & 0xffff);
	return 0;
}

static int pcap_init(struct pcap_source *s)
{
	struct sl_pcap_format f;
	int rc = sl_pcap_format_read(&f, s->buf, s->len);

	s->kind = KIND_PCAP;
	if (rc)
		return rc;
	s->swap = f.swap;
	s->frac_ns = f.frac_ns;
	s->linktype = f.linktype;
	s->pos = PCAP_HDR_LEN;
	return 0;
}

/* Seconds and a fraction (microseconds or nanoseconds by the magic) in
 * ns: exact, and below 2^32 * 10^9 + 2^32 * 1000 < 2^63, so no input
 * overflows (a fraction of a second or more is kept as written). */
static inline uint64_t pcap_ts_ns(uint32_t sec, uint32_t frac, uint32_t frac_ns)
{
	return (uint64_t)sec * NS_PER_S + (uint64_t)frac * frac_ns;
}

/* The packet of the whole record at p, whose caplen was checked. */
static inline void record_packet(struct sl_packet *pkt, const uint8_t *p,
				 uint32_t caplen, int swap, uint32_t frac_ns,
				 int linktype)
{
	uint32_t wirelen = rd32(swap, p + 12);

	pkt->data = p + PCAP_REC_LEN;
	pkt->ts_ns = pcap_ts_ns(rd32(swap, p), rd32(swap, p + 4), frac_ns);
	pkt->caplen = caplen;
	pkt->wirelen = wirelen < caplen ? caplen : wirelen;
	pkt->linktype = (uint32_t)linktype;
	pkt->ifindex = 0;
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
		uint32_t caplen;

		if (left < PCAP_REC_LEN) {
			rc = short_window(s, PCAP_REC_LEN);
			goto out;
		}
		caplen = rd32(s->swap, p + 8);
		if (caplen > PCAP_MAX_CAPLEN) {
			rc = SL_E_FORMAT;
			goto out;
		}
		if (caplen > left - PCAP_REC_LEN) {
			rc = short_window(s, PCAP_REC_LEN + caplen);
			goto out;
		}
		prefetch_ahead(s);
		record_packet(&b->pkt[n++], p, caplen, s->swap, s->frac_ns,
			      s->linktype);
		s->pos += PCAP_REC_LEN + caplen;
	}
	if (n < SL_BATCH_MAX)
		rc = window_done(s, PCAP_REC_LEN);
out:
	return batch_end(s, b, n, rc);
}

size_t sl_pcap_walk(const struct sl_pcap_format *f, const uint8_t *buf,
		    size_t len, struct sl_packet *pkt, uint32_t max,
		    uint32_t *count, int *err)
{
	size_t pos = 0;
	uint32_t n = 0;

	*err = 0;
	while (n < max && len - pos >= PCAP_REC_LEN) {
		const uint8_t *p = buf + pos;
		uint32_t caplen = rd32(f->swap, p + 8);

		if (caplen > PCAP_MAX_CAPLEN) {
			*err = SL_E_FORMAT;
			break;
		}
		if (caplen > len - pos - PCAP_REC_LEN)
			break;
		record_packet(&pkt[n++], p, caplen, f->swap, f->frac_ns,
			      f->linktype);
		pos += PCAP_REC_LEN + caplen;
	}
	*count = n;
	return pos;
}

/* ---- pcapng ----------------------------------------------------------- */

/* Checks the block at off: complete, sane length, trailing copy equal.
 * A Section Header Block sets *swap from its byte-order magic first.
 * SL_E_TRUNCATED when it goes past len, *need then its length (as far as
 * it is known) from off. */
static int ng_block_at(const uint8_t *buf, size_t len, size_t off, int *swap,
		       uint32_t *type, uint32_t *blen, size_t *need)
{
	const uint8_t *p = buf + off;
	size_t left = len - off;
	uint32_t t, l, magic;

	*need = 12; /* the smallest block */
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
	if (l > left) {
		*need = l;
		return SL_E_TRUNCATED;
	}
	if (rd32(*swap, p + l - 4) != l)
		return SL_E_FORMAT;
	*type = t;
	*blen = l;
	return 0;
}

static int window_fill(struct pcap_source *s, size_t need);

/* The block at off of the window (opening: pos is 0), read on into the
 * window while it is cut short by the window's end, up to NG_LOOKAHEAD. */
static int ng_block_read(struct pcap_source *s, size_t off, int *swap,
			 uint32_t *type, uint32_t *blen)
{
	size_t need;
	int rc;

	for (;;) {
		rc = ng_block_at(s->buf, s->len, off, swap, type, blen, &need);
		if (rc != SL_E_TRUNCATED || at_end(s) ||
		    s->off + off + need > s->end || off + need > NG_LOOKAHEAD)
			return rc;
		rc = window_fill(s, off - s->pos + need);
		if (rc)
			return rc;
	}
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
	rc = ng_block_read(s, 0, &swap, &type, &blen);
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
		if (s->off + off >= s->end)
			break;
		if (ng_block_read(s, off, &swap, &type, &blen))
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

/* Timestamp units of the interface (if_tsresol: 10^-exp or 2^-exp s,
 * exp 0..127) plus its if_tsoffset (s) -> ns since the epoch, exact
 * (a fraction of a ns is dropped). UINT64_MAX when the time has no such
 * value below it (before the epoch, or 2^64 - 1 ns and later), which
 * sluice.h reserves for "not representable". No step overflows: ts < 2^64
 * and 10^9 < 2^30 keep every product below 2^94, the offset's ns within
 * 2^93, their sum within 2^95. */
static uint64_t ng_ts_ns(const struct ng_if *ifc, uint64_t ts)
{
	__int128 ns;

	if (ifc->pow2) /* exp < 128: a defined shift of an unsigned 128 */
		ns = (__int128)(((unsigned __int128)ts * NS_PER_S) >> ifc->exp);
	else if (ifc->exp <= 9)
		ns = (__int128)ts * (__int128)pow10_tab[9 - ifc->exp];
	else if (ifc->exp - 9 < 20)
		ns = ts / pow10_tab[ifc->exp - 9];
	else
		ns = 0; /* 10^(exp - 9) > 2^64 > ts */
	ns += (__int128)ifc->offset_s * (__int128)NS_PER_S;
	if (ns < 0 || ns >= (__int128)UINT64_MAX)
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
		size_t need;

		rc = ng_block_at(s->buf, s->len, s->pos, &s->swap, &type, &blen,
				 &need);
		if (rc == SL_E_TRUNCATED)
			rc = short_window(s, need);
		if (rc)
			break;
		if (s->want)
			goto out;
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
	if (!rc && n < SL_BATCH_MAX)
		rc = window_done(s, 12);
out:
	return batch_end(s, b, n, rc);
}

/* ---- reading a file ---------------------------------------------------- */

/* The window's size: a batch of full-size frames (256 x 1.5 kB) several
 * times over, small enough to stay in the cache between the read that
 * fills it and the decoding that follows. It is read on when less than
 * WINDOW_LOW is left: what is left moves to the front (a small copy), and
 * a record cut by the window's end is read whole on the next call. A
 * power of two; the fuzz build makes it small (SL_READ_WINDOW), so that
 * inputs of a few kB cross windows. */
#ifndef SL_READ_WINDOW
#define SL_READ_WINDOW (1 << 20)
#endif
enum { WINDOW = SL_READ_WINDOW, WINDOW_LOW = SL_READ_WINDOW / 16 };
_Static_assert((WINDOW & (WINDOW - 1)) == 0 && WINDOW_LOW > 0,
	       "the window is a power of two");

/* How long an interruptible stream waits for input before it gives the
 * run loop a step without packets (its timers: metrics, sink retries). */
enum { STREAM_WAIT_MS = 200 };

/* A stream's next bytes, up to room: read(2), or decompressed. A read
 * that a signal interrupts is tried again, unless the signal is one the
 * run loop must see (a stop, a reload: sl_signal_attention) and the
 * caller can give up the wait (interruptible): then -EINTR, nothing read.
 * An interruptible wait also gives up after STREAM_WAIT_MS without input
 * (-EINTR too: a step without packets, whose time has not moved). A
 * compressed stream waits on. */
static ssize_t stream_read(struct pcap_source *s, uint8_t *dst, size_t room,
			   int interruptible)
{
	struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
	ssize_t r;

	if (s->dz)
		return sl_dz_read(s->dz, dst, room);
	while (interruptible) {
		r = poll(&pfd, 1, STREAM_WAIT_MS);
		if (r == 0)
			return -EINTR;
		if (r > 0 || errno != EINTR)
			break; /* read says what there is */
		if (sl_signal_attention())
			return -EINTR;
	}
	for (;;) {
		r = read(s->fd, dst, room);
		if (r >= 0 || errno != EINTR)
			break;
		/* a stop gives up any wait (one at open: an input that
		 * sends nothing yet), a reload only an interruptible one */
		if (sl_signal_pending() ||
		    (interruptible && sl_signal_attention()))
			return -EINTR;
	}
	return r < 0 ? -errno : r;
}

/* 1 when a stream's next read would not wait (a pipe fed live keeps what
 * has come parsed, rather than wait for a full window). */
static int stream_ready(const struct pcap_source *s)
{
	struct pollfd pfd = {.fd = s->fd, .events = POLLIN};

	if (s->dz && sl_dz_buffered(s->dz))
		return 1;
	return poll(&pfd, 1, 0) > 0;
}

/* Makes need bytes from pos available in the window when the input holds
 * them: moves the rest of the window to its front, grows it if need is
 * larger, and reads until it is full or the input ends (a stream: until
 * need bytes are in and a read would wait). A file's read that comes
 * back short before the size the file had at open means the file shrank:
 * the input now ends there (SL_E_SHRUNK); a stream ends where it ends,
 * and on a read error after every byte before it. 0, or a negative
 * error. */
static int window_fill(struct pcap_source *s, size_t need)
{
	size_t keep = s->len - s->pos;

	if (need > s->cap) {
		size_t cap = (need + WINDOW - 1) & ~(size_t)(WINDOW - 1);
		uint8_t *mem;

		if (need > NG_MAX_BLOCK)
			return SL_E_FORMAT;
		mem = malloc(cap);
		if (!mem)
			return -ENOMEM;
		memcpy(mem, s->buf + s->pos, keep);
		free(s->mem);
		s->mem = mem;
		s->cap = cap;
	} else if (s->pos) {
		memmove(s->mem, s->buf + s->pos, keep);
	}
	s->buf = s->mem;
	s->off += s->pos;
	s->pos = 0;
	s->prefetched = 0;
	s->len = keep;
	while (s->len < s->cap && !at_end(s)) {
		uint64_t left = s->end - s->off - s->len;
		size_t room = s->cap - s->len;
		ssize_t r;

		if (s->stream) {
			if (s->len >= need && !stream_ready(s))
				break;
			r = stream_read(s, s->mem + s->len, room, s->may_yield);
			if (r == -EINTR) /* what is in stays: read on later */
				return -EINTR;
			if (r <= 0) { /* the end, clean or not */
				s->end = s->off + s->len;
				s->end_err = (int)r;
				break;
			}
			s->len += (size_t)r;
			continue;
		}
		r = pread(s->fd, s->mem + s->len, left < room ? left : room,
			  (off_t)(s->off + s->len));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0) {
			s->end = s->off + s->len;
			s->end_err = SL_E_SHRUNK;
			break;
		}
		s->len += (size_t)r;
	}
	return 0;
}

/* ---- ops -------------------------------------------------------------- */

/* A file's window moves on only here, between batches: the last batch's
 * packets (which point into it) are no longer used once next() is called
 * again. Within a call it moves only while the batch is empty. */
static int pcap_src_next(struct sl_source *src, struct sl_packet_batch *b)
{
	struct pcap_source *s = to_pcap(src);
	int rc;

	if (s->err) {
		b->count = 0;
		return s->err;
	}
	if (s->fd >= 0 && s->len - s->pos < WINDOW_LOW && !at_end(s)) {
		rc = window_fill(s, 0);
		if (rc == -EINTR)
			goto out_yield;
		if (rc)
			return batch_end(s, b, 0, rc);
	}
	for (;;) {
		s->want = 0;
		if (s->kind == KIND_PCAPNG)
			rc = ng_next(s, b);
		else
			rc = pcap_next(s, b);
		if (rc || !s->want)
			return rc;
		rc = window_fill(s, s->want);
		if (rc == -EINTR)
			goto out_yield;
		if (rc)
			return batch_end(s, b, 0, rc);
	}

out_yield: /* a signal while a stream waited: no packets now, not the end */
	b->count = 0;
	return -EINTR;
}

static int pcap_src_linktype(const struct sl_source *src)
{
	return to_pcap_c(src)->linktype;
}

static void pcap_src_progress(const struct sl_source *src, uint64_t *pos,
			      uint64_t *size)
{
	const struct pcap_source *s = to_pcap_c(src);

	if (s->dz) {
		*pos = sl_dz_consumed(s->dz);
		*size = s->size;
	} else {
		*pos = s->off + s->pos;
		*size = s->stream ? 0 : s->end;
	}
}

static void pcap_src_close(struct sl_source *src)
{
	struct pcap_source *s = to_pcap(src);

	sl_dz_close(s->dz);
	if (s->fd >= 0)
		close(s->fd);
	free(s->mem);
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
	return pcap_init(s);
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
	s->fd = -1;
	s->buf = buf;
	s->len = len;
	s->end = len;
	rc = pcap_src_init(s);
	if (rc)
		goto out_free;
	*out = &s->base;
	return 0;

out_free:
	free(s);
	return rc;
}

/* A stream's start: fd's first bytes tell compressed input (a regular
 * file's kind is known from a pread: then none is read here), which then
 * goes through a decompressor, those bytes first; then the window is
 * filled as far as a pcap file header. */
static int stream_open(struct pcap_source *s, int kind)
{
	int rc;

	while (kind == SL_DZ_NONE && s->len < SL_DZ_MAGIC_LEN) {
		ssize_t r = stream_read(s, s->mem + s->len,
					SL_DZ_MAGIC_LEN - s->len, 0);

		if (r < 0)
			return (int)r;
		if (!r)
			break;
		s->len += (size_t)r;
	}
	if (kind == SL_DZ_NONE)
		kind = sl_dz_detect(s->mem, s->len);
	if (kind != SL_DZ_NONE) {
		rc = sl_dz_open(&s->dz, kind, s->fd, s->mem, s->len);
		if (rc)
			return rc;
		s->len = 0;
	}
	return window_fill(s, PCAP_HDR_LEN);
}

int sl_source_open_file(struct sl_source **out, const char *path)
{
	uint8_t head[SL_DZ_MAGIC_LEN];
	int fd, rc, kind = SL_DZ_NONE;
	struct pcap_source *s;
	struct stat st;

	if (!out || !path)
		return -EINVAL;
	*out = NULL;
	if (!strcmp(path, "-")) {
		fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
	} else {
		fd = sl_open_input(path);
		if (fd < 0)
			return fd;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out_close;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = -EISDIR;
		goto out_close;
	}
	if (S_ISREG(st.st_mode)) {
		ssize_t n;

		if (st.st_size == 0) {
			rc = SL_E_FORMAT;
			goto out_close;
		}
		(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
		n = pread(fd, head, sizeof(head), 0);
		if (n < 0) {
			rc = -errno;
			goto out_close;
		}
		kind = sl_dz_detect(head, (size_t)n);
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		rc = -ENOMEM;
		goto out_close;
	}
	s->fd = fd;
	s->buf = s->mem = malloc(WINDOW);
	if (!s->mem) {
		rc = -ENOMEM;
		goto out_free;
	}
	s->cap = WINDOW;
	if (S_ISREG(st.st_mode) && kind == SL_DZ_NONE) {
		s->end = (uint64_t)st.st_size;
		rc = window_fill(s, 0);
	} else { /* pipes, devices, compressed input: no size, no pread */
		/* a larger pipe: fewer wakeups of writer and reader */
		if (S_ISFIFO(st.st_mode) && fcntl(fd, F_GETPIPE_SZ) < WINDOW)
			(void)fcntl(fd, F_SETPIPE_SZ, WINDOW);
		s->stream = 1;
		s->end = UINT64_MAX;
		s->size = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
		rc = stream_open(s, kind);
	}
	if (rc)
		goto out_free;
	rc = pcap_src_init(s);
	/* a stream that ended early, inside the header: say why */
	if (rc && s->end_err && (rc == SL_E_TRUNCATED || s->len < 4))
		rc = s->end_err;
	if (rc)
		goto out_free;
	s->may_yield = s->stream;
	*out = &s->base;
	return 0;

out_free:
	sl_dz_close(s->dz);
	free(s->mem);
	free(s->ifs);
	free(s);
out_close:
	close(fd);
	return rc;
}
