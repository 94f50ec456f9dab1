/* source.c - the generic sl_source_* entry points, which dispatch
 * through the ops table of source.h to the source kinds (source_*.c). */
#include <errno.h>
#include <string.h>

#include "sluice.h"
#include "source.h"

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
