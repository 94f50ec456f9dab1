/* decompress.h - compressed captures read as a stream (internal).
 *
 * One interface over zlib (gzip), libzstd, liblzma (xz) and liblz4 (the
 * frame format): the kind is recognised by the first bytes, the
 * decompressor reads its input from a file descriptor with read(2) into a
 * buffer of its own and fills the caller's. Concatenated streams or frames
 * (pigz, `cat a.gz b.gz`, zstd's multi-frame output) decode as one.
 * Nothing is allocated after open.
 */
#ifndef SL_DECOMPRESS_H
#define SL_DECOMPRESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum sl_dz_kind {
	SL_DZ_NONE = 0, /* not compressed (or not a format known here) */
	SL_DZ_GZIP,
	SL_DZ_ZSTD,
	SL_DZ_XZ,
	SL_DZ_LZ4,
};

/* Bytes of the input enough to tell every kind apart. */
enum { SL_DZ_MAGIC_LEN = 6 };

struct sl_dz;

/* The kind whose magic bytes begin p (len may be short: SL_DZ_NONE). */
int sl_dz_detect(const uint8_t *p, size_t len);

/* A decompressor of kind reading fd (not closed by it) from its current
 * position. head[0, len): input already read from fd (the bytes looked
 * at by sl_dz_detect), decompressed first. 0 or a negative error. */
int sl_dz_open(struct sl_dz **out, int kind, int fd, const uint8_t *head,
	       size_t len);

/* Fills out[0, cap) with what follows, blocking on fd only until at least
 * one byte is produced. Returns the count, 0 at the end of the last
 * stream, or an error once every byte before it was returned:
 * SL_E_ZTRUNC (the input ends inside a stream), SL_E_ZCORRUPT, -ENOMEM,
 * or read(2)'s -errno. Errors are sticky. */
ssize_t sl_dz_read(struct sl_dz *z, uint8_t *out, size_t cap);

/* 1 when the next sl_dz_read() need not wait for fd: compressed input is
 * buffered, or the input ended. */
int sl_dz_buffered(const struct sl_dz *z);

/* Compressed bytes used so far (read from fd and decoded, plus head). */
uint64_t sl_dz_consumed(const struct sl_dz *z);

void sl_dz_close(struct sl_dz *z);

#endif
