/* source_multi.c - several captures as one input, merged by time.
 *
 * Each file is a file source of its own (source_pcap.c). Opening reads
 * every file's first packet, to check the file and to know when it is
 * due; a regular file is then closed again and reopened when the merge
 * reaches its first packet, so that only files whose packets overlap are
 * open at once (a stream cannot be reopened: it stays open).
 *
 * A file source's packets are valid until its next sl_source_next(). A
 * merged batch holds packets of several files, so a file whose packets
 * are in the batch is not read again until the next call: the batch ends
 * there instead. The engine asks again right away, so this costs a short
 * batch now and then, never a copy of packet data.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sluice.h"
#include "source.h"

enum file_state {
	FILE_PENDING = 0, /* probed and closed: opens at first_ts */
	FILE_OPEN = 1,
	FILE_DONE = 2,
};

struct multi_file {
	char *path;
	struct sl_source *src;	     /* FILE_OPEN: the file's source */
	struct sl_packet_batch *got; /* FILE_OPEN: its last batch */
	uint32_t cursor;	     /* next packet of got */
	uint8_t state;		     /* enum file_state */
	uint8_t in_batch;	     /* packets of got are in the caller's batch */
	uint8_t stream;		     /* cannot be reopened: kept open */
	uint8_t from_dir;	     /* not a capture: skipped, not an error */
	int linktype;		     /* of its first packet's interface */
	uint64_t first_ts;	     /* of its first packet, for the merge */
	uint64_t pos, size;	     /* progress: final once done */
};

struct multi_source {
	struct sl_source base; /* first: the generic layer casts to it */
	struct multi_file *files;
	uint32_t n_files, cap_files;
	uint32_t *open;	   /* indexes of FILE_OPEN files */
	uint32_t n_open;
	uint32_t *pending; /* FILE_PENDING indexes by (first_ts, index) */
	uint32_t n_pending, next_pending;
	struct sl_files_info info;
	int err;	/* the first file's error, returned at the end */
	int any_stream; /* progress has no total */
	int linktype;	/* of the file that comes first */
};

static const struct sl_source_ops multi_ops;

static inline struct multi_source *to_multi(struct sl_source *src)
{
	return (struct multi_source *)src;
}

static inline const struct multi_source *to_multi_c(const struct sl_source *src)
{
	return (const struct multi_source *)src;
}

/* A packet's place in the merge: a time that cannot be used (the engine
 * counts it as malformed) goes out at once rather than hold its file. */
static inline uint64_t merge_ts(const struct sl_packet *p)
{
	return p->ts_ns == UINT64_MAX ? 0 : p->ts_ns;
}

/* ---- one file ------------------------------------------------------- */

static void file_close(struct multi_file *f)
{
	sl_source_close(f->src);
	free(f->got);
	f->src = NULL;
	f->got = NULL;
}

/* Reads the next batch of an open file: 1 with a packet at the cursor,
 * 0 when the file is done (closed; an error is kept for the end). */
static int file_fill(struct multi_source *m, uint32_t index)
{
	struct multi_file *f = &m->files[index];
	int rc;

	/* a stream among files waits for its input (the merge needs its next
	 * packet): a signal's -EINTR is not its end */
	do
		rc = sl_source_next(f->src, f->got);
	while (rc == -EINTR);

	f->cursor = 0;
	f->in_batch = 0;
	if (rc > 0)
		return 1;
	if (rc < 0 && !m->info.failed++) {
		m->err = rc;
		m->info.first_failed = index;
	}
	sl_source_progress(f->src, &f->pos, NULL);
	if (!rc && !f->stream)
		f->pos = f->size;
	file_close(f);
	f->state = FILE_DONE;
	m->info.finished++;
	return 0;
}

/* Opens a file and reads its first batch. 1: a packet is at the cursor;
 * 0: the file has none (done); < 0: it cannot be opened (note says why)
 * or no memory. */
static int file_open(struct multi_source *m, uint32_t index, char *note,
		     size_t note_len)
{
	struct multi_file *f = &m->files[index];
	int rc;

	f->got = malloc(sizeof(*f->got));
	if (!f->got)
		return -ENOMEM;
	rc = sl_source_open_file(&f->src, f->path);
	if (rc) {
		snprintf(note, note_len, "%s: %s", f->path, sl_strerror(rc));
		free(f->got);
		f->got = NULL;
		return rc;
	}
	f->state = FILE_OPEN;
	return file_fill(m, index);
}

/* ---- the merge ------------------------------------------------------ */

/* Opens the pending file that is due next. 0, or the file's error when it
 * cannot be opened again (it is then done, counted as failed). */
static void pending_open(struct multi_source *m)
{
	uint32_t index = m->pending[m->next_pending++];
	char note[1];
	int rc = file_open(m, index, note, sizeof(note));

	if (rc > 0) {
		m->open[m->n_open++] = index;
		return;
	}
	if (rc < 0) { /* gone or changed since the probe */
		m->files[index].state = FILE_DONE;
		m->info.finished++;
		if (!m->info.failed++) {
			m->err = rc;
			m->info.first_failed = index;
		}
	}
}

/* The open file whose next packet comes first (ties: the file given
 * first), refilling files that have run out. -1 when none is left;
 * -2 when a file ran out whose packets are in the batch: the batch
 * ends there. */
static int merge_pick(struct multi_source *m)
{
	for (;;) {
		uint64_t best_ts = 0, ts;
		int best = -1;
		uint32_t i = 0, p;

		while (i < m->n_open) {
			uint32_t index = m->open[i];
			struct multi_file *f = &m->files[index];

			if (f->cursor == f->got->count) {
				if (f->in_batch)
					return -2;
				if (!file_fill(m, index)) {
					m->open[i] = m->open[--m->n_open];
					continue;
				}
			}
			ts = merge_ts(&f->got->pkt[f->cursor]);
			if (best < 0 || ts < best_ts ||
			    (ts == best_ts && index < (uint32_t)best)) {
				best = (int)index;
				best_ts = ts;
			}
			i++;
		}
		if (m->next_pending == m->n_pending)
			return best;
		p = m->pending[m->next_pending];
		ts = m->files[p].first_ts;
		if (best >= 0 &&
		    (ts > best_ts || (ts == best_ts && p > (uint32_t)best)))
			return best;
		pending_open(m);
	}
}

static int multi_next(struct sl_source *src, struct sl_packet_batch *b)
{
	struct multi_source *m = to_multi(src);
	uint32_t i;
	int pick;

	/* the caller is done with the last batch: its files may move on */
	for (i = 0; i < m->n_open; i++)
		m->files[m->open[i]].in_batch = 0;
	b->count = 0;
	while (b->count < SL_BATCH_MAX) {
		struct multi_file *f;

		pick = merge_pick(m);
		if (pick < 0)
			break;
		f = &m->files[pick];
		b->pkt[b->count++] = f->got->pkt[f->cursor++];
		f->in_batch = 1;
		m->info.current = (uint32_t)pick;
	}
	if (b->count)
		return (int)b->count;
	return m->err;
}

/* ---- ops ------------------------------------------------------------ */

static int multi_linktype(const struct sl_source *src)
{
	return to_multi_c(src)->linktype;
}

static void multi_progress(const struct sl_source *src, uint64_t *pos,
			   uint64_t *size)
{
	const struct multi_source *m = to_multi_c(src);
	uint32_t i;

	*pos = *size = 0;
	for (i = 0; i < m->n_files; i++) {
		const struct multi_file *f = &m->files[i];
		uint64_t p = f->pos;

		if (f->state == FILE_OPEN)
			sl_source_progress(f->src, &p, NULL);
		*pos += p;
		*size += f->size;
	}
	if (m->any_stream)
		*size = 0;
}

static void multi_close(struct sl_source *src)
{
	struct multi_source *m = to_multi(src);
	uint32_t i;

	for (i = 0; i < m->n_files; i++) {
		file_close(&m->files[i]);
		free(m->files[i].path);
	}
	free(m->files);
	free(m->open);
	free(m->pending);
	free(m);
}

static const struct sl_source_ops multi_ops = {
    .next = multi_next,
    .linktype = multi_linktype,
    .progress = multi_progress,
    .close = multi_close,
};

int sl_source_files(const struct sl_source *src, struct sl_files_info *fi)
{
	if (!src || !fi)
		return -EINVAL;
	if (src->ops != &multi_ops) {
		memset(fi, 0, sizeof(*fi));
		return -ENOTSUP;
	}
	*fi = to_multi_c(src)->info;
	return 0;
}

const char *sl_source_file_name(const struct sl_source *src, uint32_t index)
{
	const struct multi_source *m;

	if (!src || src->ops != &multi_ops)
		return NULL;
	m = to_multi_c(src);
	return index < m->n_files ? m->files[index].path : NULL;
}

/* ---- opening -------------------------------------------------------- */

static int file_add(struct multi_source *m, const char *path, size_t dir_len,
		    const char *name)
{
	struct multi_file *f;
	size_t len = name ? dir_len + 1 + strlen(name) : strlen(path);
	struct stat st;
	char *p;

	if (m->n_files == m->cap_files) {
		uint32_t cap = m->cap_files ? 2 * m->cap_files : 16;
		void *nf = realloc(m->files, cap * sizeof(*m->files));

		if (!nf)
			return -ENOMEM;
		m->files = nf;
		m->cap_files = cap;
	}
	p = malloc(len + 1);
	if (!p)
		return -ENOMEM;
	if (name)
		snprintf(p, len + 1, "%.*s/%s", (int)dir_len, path, name);
	else
		memcpy(p, path, len + 1);
	f = &m->files[m->n_files++];
	memset(f, 0, sizeof(*f));
	f->path = p;
	f->from_dir = name != NULL;
	f->stream = !strcmp(p, "-") || stat(p, &st) || !S_ISREG(st.st_mode);
	m->any_stream |= f->stream;
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A directory's regular files, in byte order of their names; other
 * entries are skipped and counted. */
static int dir_add(struct multi_source *m, const char *dir, char *note,
		   size_t note_len)
{
	size_t dir_len = strlen(dir), n = 0, cap = 0, i;
	char **names = NULL, path[4096];
	struct dirent *de;
	struct stat st;
	int rc = 0;
	DIR *d;

	while (dir_len > 1 && dir[dir_len - 1] == '/')
		dir_len--;
	d = opendir(dir);
	if (!d) {
		rc = -errno;
		snprintf(note, note_len, "%s: %s", dir, sl_strerror(rc));
		return rc;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue; /* hidden: a file still being written */
		snprintf(path, sizeof(path), "%.*s/%s", (int)dir_len, dir,
			 de->d_name);
		if (stat(path, &st) || !S_ISREG(st.st_mode)) {
			m->info.skipped++;
			continue;
		}
		if (n == cap) {
			char **nn;

			cap = cap ? 2 * cap : 64;
			nn = realloc(names, cap * sizeof(*names));
			if (!nn) {
				rc = -ENOMEM;
				goto out_names;
			}
			names = nn;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			rc = -ENOMEM;
			goto out_names;
		}
		n++;
	}
	if (n)
		qsort(names, n, sizeof(*names), name_cmp);
	for (i = 0; i < n && !rc; i++)
		rc = file_add(m, dir, dir_len, names[i]);
out_names:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return rc;
}

/* Opens each file once, for its first packet's time and its link type,
 * and closes it again unless it is a stream. A directory's file that is
 * not a capture leaves the list. */
static int probe(struct multi_source *m, char *note, size_t note_len)
{
	uint32_t i, kept = 0;
	int rc = 0;

	for (i = 0; i < m->n_files; i++) {
		struct multi_file *f = &m->files[i];

		m->files[kept] = *f;
		f = &m->files[kept];
		rc = file_open(m, kept, note, note_len);
		if (rc == SL_E_FORMAT && f->from_dir) {
			m->info.skipped++;
			free(f->path);
			note[0] = 0;
			continue;
		}
		kept++;
		if (rc < 0)
			goto out_unprobed;
		if (!rc)
			continue; /* no packets: done already */
		f->first_ts = merge_ts(&f->got->pkt[0]);
		f->linktype = (int)f->got->pkt[0].linktype;
		if (!sl_linktype_supported((uint32_t)f->linktype)) {
			snprintf(note, note_len, "%s: unsupported link type %d",
				 f->path, f->linktype);
			rc = SL_E_LINKTYPE;
			goto out_unprobed;
		}
		if (!f->stream) {
			sl_source_progress(f->src, NULL, &f->size);
			file_close(f);
			f->state = FILE_PENDING;
		}
	}
	m->n_files = kept;
	return 0;

out_unprobed: /* the files after i were not moved: free them here */
	for (i++; i < m->n_files; i++)
		free(m->files[i].path);
	m->n_files = kept;
	return rc;
}

static int pending_cmp(const void *a, const void *b, void *ctx)
{
	const struct multi_source *m = ctx;
	uint32_t ia = *(const uint32_t *)a, ib = *(const uint32_t *)b;
	uint64_t ta = m->files[ia].first_ts, tb = m->files[ib].first_ts;

	if (ta != tb)
		return ta < tb ? -1 : 1;
	return ia < ib ? -1 : ia > ib;
}

/* Lists the open (streams) and pending files, the latter in the order
 * they come due; the first file due gives the input's link type. */
static void order_files(struct multi_source *m)
{
	uint64_t first = UINT64_MAX;
	uint32_t i;

	m->linktype = SL_LINK_EN10MB;
	for (i = 0; i < m->n_files; i++) {
		struct multi_file *f = &m->files[i];

		if (f->state == FILE_DONE)
			continue;
		if (f->state == FILE_OPEN)
			m->open[m->n_open++] = i;
		else
			m->pending[m->n_pending++] = i;
		if (f->first_ts < first) {
			first = f->first_ts;
			m->linktype = f->linktype;
		}
	}
	qsort_r(m->pending, m->n_pending, sizeof(*m->pending), pending_cmp, m);
}

int sl_source_open_files(struct sl_source **out, const char *const *paths,
			 uint32_t n_paths, char *note, size_t note_len)
{
	struct multi_source *m;
	char scratch[1];
	struct stat st;
	uint32_t i;
	int rc = 0;

	if (!note || !note_len) {
		note = scratch;
		note_len = sizeof(scratch);
	}
	note[0] = 0;
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!paths || !n_paths)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->base.ops = &multi_ops;
	for (i = 0; i < n_paths && !rc; i++) {
		if (!paths[i])
			rc = -EINVAL;
		else if (strcmp(paths[i], "-") && !stat(paths[i], &st) &&
			 S_ISDIR(st.st_mode))
			rc = dir_add(m, paths[i], note, note_len);
		else
			rc = file_add(m, paths[i], 0, NULL);
	}
	if (rc)
		goto out_free;
	m->open = calloc(m->n_files + 1, sizeof(*m->open));
	m->pending = calloc(m->n_files + 1, sizeof(*m->pending));
	if (!m->open || !m->pending) {
		rc = -ENOMEM;
		goto out_free;
	}
	rc = probe(m, note, note_len);
	if (rc)
		goto out_free;
	if (!m->n_files) {
		rc = -ENOENT;
		snprintf(note, note_len, "%s%s: no capture in it%s",
			 paths[0], n_paths > 1 ? " ..." : "",
			 m->info.skipped ? " (only files that are not captures)"
					 : "");
		goto out_free;
	}
	m->info.files = m->n_files;
	order_files(m);
	*out = &m->base;
	return 0;

out_free:
	multi_close(&m->base);
	return rc;
}
