/* prefault.c - the pages of the flow slots the table hands out next,
 * faulted in by a helper thread before the packet path touches them.
 *
 * A slot's memory (its flow, its features, its nDPI state) is first
 * touched when the slot is first handed out: a fresh page costs that
 * packet the page's zeroing and, in a virtual machine, the host's own
 * fault (0.6 GB/s measured here for pages the host had let go, against
 * 10 GB/s for ones it still backed). That was a tenth to a fifth of a
 * file run with --features stats, paid on the capture thread. A helper
 * thread asks the kernel for the pages of the next slots
 * (MADV_POPULATE_WRITE: page tables only, no byte written, so no race
 * with the table) a step ahead of the table, on another core, at the
 * lowest priority; the hash buckets, touched at random, whole at the
 * start. Where the kernel lacks it (before 5.14) the helper ends and the
 * packet path faults as before.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine.h"
#include "thread.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Slots faulted in ahead of the table: asked for PREFAULT_STEP at a time,
 * when the table is within half a step of the last ask's end. */
enum { PREFAULT_STEP = 8192 };

struct slot_array {
	char *base;
	size_t slot_size;
	size_t len; /* the mapping's */
};

struct sl_prefault {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t goal; /* slots to have faulted in */
	int stop;
	pid_t pid; /* of the thread: a forked child has no helper */
	struct slot_array arrays[5];
	int n_arrays;
	char *buckets;
	size_t buckets_len;
};

/* Pages [from, to), a piece at a time so that a stop (the engine being
 * freed) waits for one piece at most. */
enum { PREFAULT_PIECE = 1 << 20 };

static int populate(struct sl_prefault *pf, char *from, char *to)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	char *p = (char *)((uintptr_t)from & ~(uintptr_t)(page - 1));

	while (p < to && !__atomic_load_n(&pf->stop, __ATOMIC_RELAXED)) {
		size_t n = (size_t)(to - p) < PREFAULT_PIECE ? (size_t)(to - p)
							     : PREFAULT_PIECE;

		if (madvise(p, n, MADV_POPULATE_WRITE))
			return -errno;
		p += n;
	}
	return 0;
}

/* The slots [from, to) of every array; the end of a mapping is a page
 * boundary, so whole pages stay within it. */
static int populate_slots(struct sl_prefault *pf, uint32_t from, uint32_t to)
{
	for (int i = 0; i < pf->n_arrays; i++) {
		const struct slot_array *a = &pf->arrays[i];
		size_t end = (size_t)to * a->slot_size;
		int rc;

		rc = populate(pf, a->base + (size_t)from * a->slot_size,
			      a->base + (end < a->len ? end : a->len));
		if (rc)
			return rc;
	}
	return 0;
}

static void *prefault_thread(void *arg)
{
	struct sl_prefault *pf = arg;
	uint32_t done = 0;
	int rc;

	/* behind the capture thread for the core: a page the helper has not
	 * faulted in yet, the packet path faults itself */
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
	rc = populate(pf, pf->buckets, pf->buckets + pf->buckets_len);

	pthread_mutex_lock(&pf->lock);
	while (!rc && !pf->stop) {
		uint32_t goal = pf->goal;

		if (done >= goal) {
			pthread_cond_wait(&pf->cond, &pf->lock);
			continue;
		}
		pthread_mutex_unlock(&pf->lock);
		rc = populate_slots(pf, done, goal);
		done = goal;
		pthread_mutex_lock(&pf->lock);
	}
	pthread_mutex_unlock(&pf->lock);
	return NULL;
}

static void add_array(struct sl_prefault *pf, void *base, size_t slot_size,
		      uint32_t slots)
{
	if (!base)
		return;
	pf->arrays[pf->n_arrays++] = (struct slot_array){
	    .base = base, .slot_size = slot_size, .len = slot_size * slots};
}

/* The helper, waiting for its first ask; NULL (and no more asks) if it
 * cannot start: the table goes on alone. */
static struct sl_prefault *prefault_start(struct sl_engine *e)
{
	struct sl_prefault *pf = calloc(1, sizeof(*pf));
	size_t dpi_size = 0;
	void *dpi;

	e->prefault_at = UINT32_MAX;
	if (!pf)
		return NULL;
	add_array(pf, e->pool, sizeof(*e->pool), e->pool_size);
	add_array(pf, e->feat_stats, sizeof(*e->feat_stats), e->pool_size);
	add_array(pf, e->feat_splt, sizeof(*e->feat_splt), e->pool_size);
	add_array(pf, e->feat_app, sizeof(*e->feat_app), e->pool_size);
	dpi = sl_dpi_slots(e, &dpi_size);
	add_array(pf, dpi, dpi_size, e->pool_size);
	pf->buckets = (char *)e->buckets;
	pf->buckets_len = ((size_t)e->bucket_mask + 1) * sizeof(*e->buckets);
	pf->pid = getpid();
	pthread_mutex_init(&pf->lock, NULL);
	pthread_cond_init(&pf->cond, NULL);
	if (sl_thread_start(&pf->thread, prefault_thread, pf)) {
		pthread_cond_destroy(&pf->cond);
		pthread_mutex_destroy(&pf->lock);
		free(pf);
		return NULL;
	}
	e->prefault = pf;
	return pf;
}

void sl_prefault_ask(struct sl_engine *e)
{
	struct sl_prefault *pf = e->prefault;
	uint32_t goal;

	if (!pf && !(pf = prefault_start(e)))
		return;
	if (pf->pid != getpid()) { /* a forked copy: the thread is not here */
		e->prefault = NULL;
		e->prefault_at = UINT32_MAX;
		return;
	}
	goal = e->pool_size - e->pool_used < PREFAULT_STEP
		   ? e->pool_size
		   : e->pool_used + PREFAULT_STEP;
	e->prefault_at = goal == e->pool_size
			     ? UINT32_MAX
			     : e->pool_used + PREFAULT_STEP / 2;
	pthread_mutex_lock(&pf->lock);
	pf->goal = goal;
	pthread_cond_signal(&pf->cond);
	pthread_mutex_unlock(&pf->lock);
}

void sl_prefault_stop(struct sl_engine *e)
{
	struct sl_prefault *pf = e->prefault;

	e->prefault = NULL;
	e->prefault_at = UINT32_MAX;
	/* a forked copy: its thread is not here */
	if (!pf || pf->pid != getpid())
		return;
	pthread_mutex_lock(&pf->lock);
	__atomic_store_n(&pf->stop, 1, __ATOMIC_RELAXED);
	pthread_cond_signal(&pf->cond);
	pthread_mutex_unlock(&pf->lock);
	pthread_join(pf->thread, NULL);
	pthread_cond_destroy(&pf->cond);
	pthread_mutex_destroy(&pf->lock);
	free(pf);
}
