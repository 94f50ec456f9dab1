/* decompress.c - gzip, zstd, xz and lz4 (frame) input, see decompress.h.
 *
 * Each kind is an ops table of three: init, step (decode what the input
 * buffer holds into the output, as far as either goes) and end. The
 * generic sl_dz_read() refills the input buffer from the fd and tells a
 * clean end (the last stream or frame complete) from input that stops
 * inside one.
 */
#include <errno.h>
#include <lz4frame.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "decompress.h"
#include "sluice.h"

#define IN_CAP (256U << 10)

struct sl_dz {
	const struct dz_ops *ops;
	int fd;
	int err;      /* sticky */
	int eof;      /* fd has no more input */
	int boundary; /* the input used so far ends a stream or frame */
	uint8_t *in;
	size_t in_pos, in_len;
	uint64_t consumed; /* input bytes before in[in_len] (fd + head) */
	union {
		z_stream gz;
		ZSTD_DStream *zs;
		lzma_stream xz;
		LZ4F_dctx *lz4;
	} u;
};

struct dz_ops {
	int (*init)(struct sl_dz *z);
	/* Decodes in[in_pos, in_len) into out[0, cap) until no more
	 * progress can be made; *made: bytes written. 0 or an error. */
	int (*step)(struct sl_dz *z, uint8_t *out, size_t cap, size_t *made);
	void (*end)(struct sl_dz *z);
};

/* ---- gzip (zlib) ------------------------------------------------------ */

static int gz_init(struct sl_dz *z)
{
	memset(&z->u.gz, 0, sizeof(z->u.gz));
	/* 16 + 15: a gzip wrapper, the largest window */
	switch (inflateInit2(&z->u.gz, 16 + MAX_WBITS)) {
	case Z_OK:
		return 0;
	case Z_MEM_ERROR:
		return -ENOMEM;
	}
	return -EINVAL;
}

static int gz_step(struct sl_dz *z, uint8_t *out, size_t cap, size_t *made)
{
	z_stream *s = &z->u.gz;
	int rc = 0;

	s->next_in = z->in + z->in_pos;
	s->avail_in = (uInt)(z->in_len - z->in_pos);
	s->next_out = out;
	s->avail_out = (uInt)(cap > UINT32_MAX ? UINT32_MAX : cap);
	while (s->avail_out && (s->avail_in || !z->boundary)) {
		int ret;

		if (z->boundary) { /* another member follows */
			inflateReset(s);
			z->boundary = 0;
		}
		ret = inflate(s, Z_NO_FLUSH);
		if (ret == Z_STREAM_END) {
			z->boundary = 1;
			continue;
		}
		if (ret == Z_BUF_ERROR) /* no progress possible */
			break;
		if (ret != Z_OK) {
			rc = ret == Z_MEM_ERROR ? -ENOMEM : SL_E_ZCORRUPT;
			break;
		}
		if (!s->avail_in)
			break;
	}
	z->in_pos = (size_t)(s->next_in - z->in);
	*made = (size_t)(s->next_out - out);
	return rc;
}

static void gz_end(struct sl_dz *z)
{
	inflateEnd(&z->u.gz);
}

/* ---- zstd ------------------------------------------------------------- */

static int zs_init(struct sl_dz *z)
{
	z->u.zs = ZSTD_createDStream();
	if (!z->u.zs)
		return -ENOMEM;
	if (ZSTD_isError(ZSTD_initDStream(z->u.zs)))
		return -ENOMEM;
	return 0;
}

static int zs_step(struct sl_dz *z, uint8_t *out, size_t cap, size_t *made)
{
	ZSTD_inBuffer ib = {z->in, z->in_len, z->in_pos};
	ZSTD_outBuffer ob = {out, cap, 0};

	for (;;) {
		size_t in0 = ib.pos, out0 = ob.pos;
		size_t r = ZSTD_decompressStream(z->u.zs, &ob, &ib);

		if (ZSTD_isError(r)) {
			z->in_pos = ib.pos;
			*made = ob.pos;
			return ZSTD_getErrorCode(r) ==
				       ZSTD_error_memory_allocation
				   ? -ENOMEM
				   : SL_E_ZCORRUPT;
		}
		if (ib.pos == in0 && ob.pos == out0)
			break;
		/* 0: a frame is decoded and flushed */
		z->boundary = r == 0;
		if (ob.pos == ob.size)
			break;
	}
	z->in_pos = ib.pos;
	*made = ob.pos;
	return 0;
}

static void zs_end(struct sl_dz *z)
{
	ZSTD_freeDStream(z->u.zs);
}

/* ---- xz --------------------------------------------------------------- */

static int xz_init(struct sl_dz *z)
{
	lzma_stream init = LZMA_STREAM_INIT;

	z->u.xz = init;
	switch (lzma_stream_decoder(&z->u.xz, UINT64_MAX, LZMA_CONCATENATED)) {
	case LZMA_OK:
		return 0;
	case LZMA_MEM_ERROR:
		return -ENOMEM;
	default:
		return -EINVAL;
	}
}

/* With LZMA_CONCATENATED the decoder learns that the last stream was the
 * last only when told the input is over (LZMA_FINISH). */
static int xz_step(struct sl_dz *z, uint8_t *out, size_t cap, size_t *made)
{
	lzma_stream *s = &z->u.xz;
	lzma_ret ret;
	int rc = 0;

	*made = 0;
	if (z->boundary)
		return 0;
	s->next_in = z->in + z->in_pos;
	s->avail_in = z->in_len - z->in_pos;
	s->next_out = out;
	s->avail_out = cap;
	ret = lzma_code(s, z->eof ? LZMA_FINISH : LZMA_RUN);
	switch (ret) {
	case LZMA_OK:
	case LZMA_BUF_ERROR: /* no progress possible */
		break;
	case LZMA_STREAM_END:
		z->boundary = 1;
		break;
	case LZMA_MEM_ERROR:
		rc = -ENOMEM;
		break;
	default:
		rc = SL_E_ZCORRUPT;
		break;
	}
	z->in_pos = (size_t)(s->next_in - z->in);
	*made = (size_t)(s->next_out - out);
	return rc;
}

static void xz_end(struct sl_dz *z)
{
	lzma_end(&z->u.xz);
}

/* ---- lz4 (frame format) ----------------------------------------------- */

static int lz4_init(struct sl_dz *z)
{
	if (LZ4F_isError(
		LZ4F_createDecompressionContext(&z->u.lz4, LZ4F_VERSION)))
		return -ENOMEM;
	return 0;
}

static int lz4_step(struct sl_dz *z, uint8_t *out, size_t cap, size_t *made)
{
	size_t n = 0;

	while (n < cap) {
		size_t dst = cap - n, src = z->in_len - z->in_pos;
		size_t r = LZ4F_decompress(z->u.lz4, out + n, &dst,
					   z->in + z->in_pos, &src, NULL);

		if (LZ4F_isError(r)) {
			*made = n;
			return SL_E_ZCORRUPT;
		}
		z->in_pos += src;
		n += dst;
		if (!src && !dst)
			break;
		/* 0: a frame is decoded and flushed */
		z->boundary = r == 0;
	}
	*made = n;
	return 0;
}

static void lz4_end(struct sl_dz *z)
{
	LZ4F_freeDecompressionContext(z->u.lz4);
}

static const struct dz_ops dz_kinds[] = {
    [SL_DZ_GZIP] = {gz_init, gz_step, gz_end},
    [SL_DZ_ZSTD] = {zs_init, zs_step, zs_end},
    [SL_DZ_XZ] = {xz_init, xz_step, xz_end},
    [SL_DZ_LZ4] = {lz4_init, lz4_step, lz4_end},
};

/* ---- generic ---------------------------------------------------------- */

int sl_dz_detect(const uint8_t *p, size_t len)
{
	static const struct {
		uint8_t len, kind;
		uint8_t magic[SL_DZ_MAGIC_LEN];
	} magics[] = {
	    {2, SL_DZ_GZIP, {0x1f, 0x8b}},
	    {4, SL_DZ_ZSTD, {0x28, 0xb5, 0x2f, 0xfd}},
	    {6, SL_DZ_XZ, {0xfd, '7', 'z', 'X', 'Z', 0x00}},
	    {4, SL_DZ_LZ4, {0x04, 0x22, 0x4d, 0x18}},
	};

	for (size_t i = 0; i < sizeof(magics) / sizeof(magics[0]); i++)
		if (len >= magics[i].len &&
		    !memcmp(p, magics[i].magic, magics[i].len))
			return magics[i].kind;
	return SL_DZ_NONE;
}

int sl_dz_open(struct sl_dz **out, int kind, int fd, const uint8_t *head,
	       size_t len)
{
	struct sl_dz *z;
	int rc;

	*out = NULL;
	if (kind <= SL_DZ_NONE || kind > SL_DZ_LZ4 || len > IN_CAP)
		return -EINVAL;
	z = calloc(1, sizeof(*z));
	if (!z)
		return -ENOMEM;
	z->in = malloc(IN_CAP);
	if (!z->in) {
		rc = -ENOMEM;
		goto out_free;
	}
	z->ops = &dz_kinds[kind];
	z->fd = fd;
	memcpy(z->in, head, len);
	z->in_len = len;
	z->consumed = len;
	rc = z->ops->init(z);
	if (rc)
		goto out_free;
	*out = z;
	return 0;

out_free:
	free(z->in);
	free(z);
	return rc;
}

/* Reads more input into the emptied buffer: 0, or -errno. */
static int dz_refill(struct sl_dz *z)
{
	ssize_t r;

	do
		r = read(z->fd, z->in, IN_CAP);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	z->in_pos = 0;
	z->in_len = (size_t)r;
	z->consumed += (uint64_t)r;
	if (!r)
		z->eof = 1;
	return 0;
}

ssize_t sl_dz_read(struct sl_dz *z, uint8_t *out, size_t cap)
{
	size_t n = 0;

	while (!z->err && n < cap) {
		size_t in0 = z->in_pos, made;
		int rc;

		rc = z->ops->step(z, out + n, cap - n, &made);
		n += made;
		if (rc) {
			z->err = rc;
			break;
		}
		if (n == cap)
			break;
		if (z->in_pos < z->in_len) {
			/* input left, room left: the decoder is stuck */
			if (!made && z->in_pos == in0)
				z->err = SL_E_ZCORRUPT;
			continue;
		}
		if (n) /* what is decoded, before waiting for more */
			break;
		if (z->eof) {
			if (!made) {
				if (!z->boundary)
					z->err = SL_E_ZTRUNC;
				break;
			}
			continue;
		}
		rc = dz_refill(z);
		if (rc)
			z->err = rc;
	}
	if (n)
		return (ssize_t)n;
	return z->err;
}

int sl_dz_buffered(const struct sl_dz *z)
{
	return z->in_pos < z->in_len || z->eof || z->err;
}

uint64_t sl_dz_consumed(const struct sl_dz *z)
{
	return z->consumed - (z->in_len - z->in_pos);
}

void sl_dz_close(struct sl_dz *z)
{
	if (!z)
		return;
	z->ops->end(z);
	free(z->in);
	free(z);
}
