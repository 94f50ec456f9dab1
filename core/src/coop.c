/* coop.c - one plain pcap file read once by several worker processes.
 *
 * Workers that share an input (sl_config.shared_input) each need every
 * packet's time (their clocks, slices and timeouts move alike) but only
 * their own flows' packets. When each read and decoded the whole file,
 * the packets of the other workers alone cost one worker 58% of a
 * one-worker run on the bench trace (the kernel's copy into the read
 * window 39% of that, the record walk and the decode and hash that find
 * the owner most of the rest): two workers were no faster than one.
 *
 * Here the file is read in windows into memory the workers share (mapped
 * before they fork, at the same address in each, so packets' pointers are
 * valid in all). A window starts where the last one's last whole record
 * ended, so windows are read in turn, under a lock: whichever worker
 * needs the next window, or is about to (COOP_AHEAD), and finds the lock
 * and the window's slot free reads it and walks its records, then,
 * outside the lock, decides each packet's owner with its engine's
 * classifier (the input filter, the decode and the flow hash the owner's
 * engine would do). Every worker takes every window in order,
 * with the owner codes, and decodes only its own packets. A slot is read
 * again once every worker has taken the window it holds.
 *
 * A worker waits (a futex on a counter of what happened) only for a
 * window that another worker is reading or that needs a slot another
 * worker still holds; the wait gives way to a signal the run loop must
 * see (-EINTR), so a stop or the failure of a worker (the parent then
 * stops the rest) never leaves one waiting. A worker that ends without
 * closing its source (killed, or a policy that ended its process) would
 * hold its windows for ever: the parent sees it in sl_coop_closed() and
 * stops the rest.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "decompress.h"
#include "sluice.h"
#include "source.h"

/* A window is read whole into its slot; the largest record must fit.
 * Records of no bytes take 16: a window holds at most WINDOW / 16. Small
 * windows and few slots keep what the workers share in their caches: on
 * the bench trace 260 KiB windows and 4 slots a worker took less time
 * than 512 KiB windows and fewer slots. */
enum {
	COOP_WINDOW = 260 << 10,
	COOP_MAX_PKTS = COOP_WINDOW / 16,
	COOP_SLOTS_PER_WORKER = 4,
	COOP_WAIT_MS = 200,
	COOP_SPINS = 256,
	COOP_AHEAD = 2,
	COOP_MAX_WORKERS = 1024,
};
_Static_assert(COOP_WINDOW >= SL_PCAP_MAX_RECORD,
	       "a window holds the largest record");

struct coop_slot {
	_Atomic uint64_t ready;	 /* window number + 1 once its owners are in */
	_Atomic uint32_t takers; /* workers yet to take the window it holds */
	uint32_t count;		 /* its packets */
	uint64_t off;		 /* its input offset */
	int end;		 /* the input ends after it, with err */
	int err;
	struct sl_packet pkt[COOP_MAX_PKTS];
	uint16_t owner[COOP_MAX_PKTS];
	uint8_t data[COOP_WINDOW];
};

struct sl_coop {
	size_t map_len;
	uint32_t n_slots;
	int fd;
	struct sl_pcap_format fmt;
	uint64_t size; /* the file's at open */
	struct coop_slot *slots;
	_Atomic uint32_t lock;	  /* 1: a worker reads the next window */
	_Atomic uint32_t readers; /* workers that take windows: not closed */
	_Atomic uint32_t events;  /* the futex: bumped when a window is read,
				   * ready, or taken by all */
	_Atomic uint32_t waiters; /* workers asleep on events */
	/* written under the lock */
	uint64_t next_win; /* read without it to decide to read ahead */
	uint64_t next_off;
	int done; /* the last window is read */
	uint32_t workers;
	_Atomic uint8_t opened[COOP_MAX_WORKERS]; /* by worker: source open */
	_Atomic uint8_t closed[COOP_MAX_WORKERS]; /* by worker: it closed it */
};

struct coop_source {
	struct sl_source base; /* first: the generic layer casts to it */
	struct sl_coop *c;
	uint32_t worker;
	sl_classify_fn classify;
	void *ctx;
	uint64_t win;		/* the window taken now or next */
	uint64_t off;		/* the input offset of the last batch's */
	uint32_t pos;		/* its next packet */
	int ended;		/* its last window is taken: err for good */
	int err;
	const uint16_t *owners; /* of the last batch's packets */
};

static inline struct coop_slot *slot_of(struct sl_coop *c, uint64_t win)
{
	return &c->slots[win % c->n_slots];
}

static void coop_wake(struct sl_coop *c)
{
	atomic_fetch_add(&c->events, 1);
	if (atomic_load(&c->waiters))
		syscall(SYS_futex, &c->events, FUTEX_WAKE, INT_MAX, NULL,
			NULL, 0);
}

/* Sleeps until something happens after seen (or COOP_WAIT_MS passes):
 * -EINTR when a signal the run loop must see came. */
static int coop_wait(struct sl_coop *c, uint32_t seen)
{
	struct timespec ts = {0, COOP_WAIT_MS * 1000000L};

	for (int i = 0; i < COOP_SPINS; i++) {
		if (atomic_load(&c->events) != seen)
			return 0;
		__builtin_ia32_pause();
	}
	atomic_fetch_add(&c->waiters, 1);
	if (atomic_load(&c->events) == seen)
		syscall(SYS_futex, &c->events, FUTEX_WAIT, seen, &ts, NULL, 0);
	atomic_fetch_sub(&c->waiters, 1);
	return sl_signal_attention() ? -EINTR : 0;
}

/* Reads window's bytes from off into its slot and walks its records;
 * returns the offset of the first record it does not hold. A read that
 * comes back short before the size the file had at open means the file
 * shrank: the input ends there, as sl_source_open_file() ends it. */
static uint64_t window_read(struct sl_coop *c, struct coop_slot *s,
			    uint64_t off)
{
	uint64_t left = c->size - off;
	size_t want = left < COOP_WINDOW ? (size_t)left : COOP_WINDOW;
	size_t len = 0, used;
	int err = 0;

	while (len < want) {
		ssize_t r = pread(c->fd, s->data + len, want - len,
				  (off_t)(off + len));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			err = r < 0 ? -errno : SL_E_SHRUNK;
			break;
		}
		len += (size_t)r;
	}
	used = sl_pcap_walk(&c->fmt, s->data, len, s->pkt, COOP_MAX_PKTS,
			    &s->count, &s->err);
	s->off = off;
	if (!s->err)
		s->err = err;
	if (!s->err && used < len && off + len == c->size)
		s->err = SL_E_TRUNCATED; /* a record cut by the file's end */
	s->end = s->err || off + used == c->size;
	return off + used;
}

/* Reads the next window when no other worker is reading and its slot is
 * free, and decides its owners: 1 when it did, else 0. */
static int coop_try_read(struct coop_source *cs)
{
	struct sl_coop *c = cs->c;
	struct coop_slot *s;
	uint32_t unlocked = 0;
	uint64_t win;

	if (atomic_load_explicit(&c->lock, memory_order_relaxed) ||
	    !atomic_compare_exchange_strong(&c->lock, &unlocked, 1))
		return 0;
	win = c->next_win;
	s = slot_of(c, win);
	if (c->done || atomic_load(&s->takers)) {
		atomic_store(&c->lock, 0);
		return 0;
	}
	c->next_off = window_read(c, s, c->next_off);
	__atomic_store_n(&c->next_win, win + 1, __ATOMIC_RELAXED);
	c->done = s->end;
	atomic_store(&s->takers, atomic_load(&c->readers));
	atomic_store(&c->lock, 0);
	coop_wake(c); /* the next window can be read */

	cs->classify(cs->ctx, s->pkt, s->count, s->owner);
	atomic_store(&s->ready, win + 1);
	coop_wake(c);
	return 1;
}

/* The last batch's packets are in use until the next call: a window is
 * given back when the call after its last batch moves past it. */
static int coop_next(struct sl_source *src, struct sl_packet_batch *b)
{
	struct coop_source *cs = (struct coop_source *)src;
	struct sl_coop *c = cs->c;

	b->count = 0;
	if (!cs->classify) /* only an engine reads it (sl_engine_attach) */
		return -EINVAL;
	if (cs->ended)
		return cs->err;
	for (;;) {
		uint32_t seen = atomic_load(&c->events);
		struct coop_slot *s = slot_of(c, cs->win);
		int rc;

		if (atomic_load(&s->ready) == cs->win + 1) {
			uint32_t n = s->count - cs->pos;

			if (n) {
				if (n > SL_BATCH_MAX)
					n = SL_BATCH_MAX;
				memcpy(b->pkt, &s->pkt[cs->pos],
				       n * sizeof(b->pkt[0]));
				cs->owners = &s->owner[cs->pos];
				cs->pos += n;
				cs->off = s->off;
				b->count = n;
				return (int)n;
			}
			cs->ended = s->end;
			cs->err = s->err;
			cs->win++;
			cs->pos = 0;
			if (atomic_fetch_sub(&s->takers, 1) == 1)
				coop_wake(c); /* its slot can be read into */
			if (cs->ended)
				return cs->err;
			/* read ahead, a little: a worker that waits for a
			 * window someone is reading waits for the read and
			 * the futex (600 times a run of the bench trace);
			 * further ahead, the worker that reads falls behind
			 * and holds the slots the others would read into */
			if (__atomic_load_n(&c->next_win, __ATOMIC_RELAXED) <=
			    cs->win + COOP_AHEAD)
				coop_try_read(cs);
			continue;
		}
		if (coop_try_read(cs))
			continue;
		rc = coop_wait(c, seen);
		if (rc)
			return rc;
	}
}

static const uint16_t *coop_owners(const struct sl_source *src)
{
	return ((const struct coop_source *)src)->owners;
}

static void coop_set_classifier(struct sl_source *src, sl_classify_fn fn,
				void *ctx)
{
	struct coop_source *cs = (struct coop_source *)src;

	cs->classify = fn;
	cs->ctx = ctx;
}

static int coop_linktype(const struct sl_source *src)
{
	return ((const struct coop_source *)src)->c->fmt.linktype;
}

static void coop_progress(const struct sl_source *src, uint64_t *pos,
			  uint64_t *size)
{
	const struct coop_source *cs = (const struct coop_source *)src;

	*pos = cs->ended ? cs->c->size : cs->off;
	*size = cs->c->size;
}

/* A worker that stops before the end (a policy's engine:shutdown(), a
 * signal) gives back the windows read that it did not take, and is not
 * waited for again: the others read on without it. */
static void coop_close(struct sl_source *src)
{
	struct coop_source *cs = (struct coop_source *)src;
	struct sl_coop *c = cs->c;
	uint32_t unlocked = 0;

	while (!atomic_compare_exchange_weak(&c->lock, &unlocked, 1)) {
		unlocked = 0;
		sched_yield();
	}
	atomic_fetch_sub(&c->readers, 1);
	for (uint64_t win = cs->win; win < c->next_win; win++)
		atomic_fetch_sub(&slot_of(c, win)->takers, 1);
	atomic_store(&c->lock, 0);
	atomic_store(&c->closed[cs->worker], 1);
	coop_wake(c);
	free(cs);
}

static const struct sl_source_ops coop_ops = {
    .next = coop_next,
    .linktype = coop_linktype,
    .progress = coop_progress,
    .close = coop_close,
    .owners = coop_owners,
    .set_classifier = coop_set_classifier,
};

int sl_coop_new(struct sl_coop **out, const char *path, uint32_t workers)
{
	/* the slots start on a page of their own */
	size_t head = (sizeof(struct sl_coop) + 4095) & ~(size_t)4095, len;
	uint8_t hdr[SL_PCAP_HDR_LEN];
	struct sl_pcap_format fmt;
	struct sl_coop *c;
	struct stat st;
	ssize_t n;
	int fd, rc;

	if (!out || !path || workers < 1 || workers > COOP_MAX_WORKERS)
		return -EINVAL;
	*out = NULL;
	if (!strcmp(path, "-"))
		return -ENOTSUP;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out_close;
	}
	n = S_ISREG(st.st_mode) ? pread(fd, hdr, sizeof(hdr), 0) : 0;
	if (n < 0) {
		rc = -errno;
		goto out_close;
	}
	/* anything else the file reader takes, and says what is wrong */
	rc = -ENOTSUP;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size <= sizeof(hdr) ||
	    sl_dz_detect(hdr, (size_t)n) != SL_DZ_NONE ||
	    sl_pcap_format_read(&fmt, hdr, (size_t)n))
		goto out_close;
	len = head + (size_t)workers * COOP_SLOTS_PER_WORKER *
			 sizeof(struct coop_slot);
	/* what no window touches is never allocated */
	c = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (c == MAP_FAILED) {
		rc = -errno;
		goto out_close;
	}
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	c->map_len = len;
	c->n_slots = workers * COOP_SLOTS_PER_WORKER;
	c->readers = workers;
	c->workers = workers;
	c->fd = fd;
	c->fmt = fmt;
	c->size = (uint64_t)st.st_size;
	c->slots = (struct coop_slot *)((char *)c + head);
	c->next_off = sizeof(hdr);
	*out = c;
	return 0;

out_close:
	close(fd);
	return rc;
}

int sl_source_open_coop(struct sl_source **out, struct sl_coop *c,
			uint32_t worker)
{
	struct coop_source *cs;

	if (!out || !c || worker >= c->workers)
		return -EINVAL;
	if (atomic_exchange(&c->opened[worker], 1))
		return -EBUSY; /* one source a worker: its windows are counted */
	cs = calloc(1, sizeof(*cs));
	if (!cs) {
		atomic_store(&c->opened[worker], 0);
		return -ENOMEM;
	}
	cs->base.ops = &coop_ops;
	cs->c = c;
	cs->worker = worker;
	*out = &cs->base;
	return 0;
}

int sl_coop_closed(const struct sl_coop *c, uint32_t worker)
{
	if (!c || worker >= c->workers)
		return -EINVAL;
	return atomic_load(&c->closed[worker]);
}

void sl_coop_free(struct sl_coop *c)
{
	if (!c)
		return;
	close(c->fd);
	munmap(c, c->map_len);
}
