/* collector_memory.c - the memory bound of the collector's state.
 *
 * Every exporter, domain and template is its own allocation, charged to
 * m->mem at its size (plus ALLOC_OVERHEAD a block) together with the
 * tables and arrays that find them. A charge that would pass max_mem
 * first evicts the least recently used object: each kind has its list,
 * most recent first, and a use tick; the tail with the oldest tick goes.
 * A message touches its templates, then its domain, then its exporter (at
 * its end, in sl_collector_msg_decode), so a parent is always used more
 * recently than its children and the tails are normally childless; an
 * evicted parent still takes its children with it. Not evicted: the
 * exporters of the current batch (their records name them by index), the
 * domain of the message being decoded, a template being stored.
 *
 * Every eviction is counted on the exporter that lost the object
 * (evicted_templates, evicted_domains) and in the totals; an evicted
 * exporter's counters go to exporter index 0, so the sums stay exact.
 */
#include <stdlib.h>
#include <string.h>

#include "collector.h"

int collector_mem_charge(struct sl_collector_msg *m, uint64_t bytes)
{
	while (m->mem + bytes > m->max_mem)
		if (!collector_evict_one(m))
			return -ENOSPC;
	m->mem += bytes;
	return 0;
}

uint64_t collector_tmpl_cost(const struct tmpl *t)
{
	uint64_t n = sizeof(*t) + ALLOC_OVERHEAD;

	if (t->cap_ops)
		n += (uint64_t)t->cap_ops * sizeof(*t->ops) + ALLOC_OVERHEAD;
	return n;
}

/* ---- uses ---------------------------------------------------------------- */

void collector_touch_tmpl(struct sl_collector_msg *m, struct tmpl *t)
{
	t->tick = ++m->tick;
	link_front(&m->tmpl_lru, &t->lru);
	link_front(&t->dom->ex->tmpls, &t->xsib);
}

void collector_touch_dom(struct sl_collector_msg *m, struct domain *d)
{
	d->tick = ++m->tick;
	link_front(&m->dom_lru, &d->lru);
	link_front(&d->ex->doms, &d->xsib);
}

void collector_touch_exp(struct sl_collector_msg *m, struct exporter *e)
{
	e->tick = ++m->tick;
	e->batch = m->batch;
	link_front(&m->exp_lru, &e->lru);
}

void collector_msg_batch(struct sl_collector_msg *m)
{
	m->batched = 1;
	m->batch++;
}

/* ---- freeing and evicting ------------------------------------------------ */

/* evicted: to make room (counted as such), else expired or withdrawn. */
void collector_tmpl_free(struct sl_collector_msg *m, struct tmpl *t,
			 int evicted)
{
	struct exporter *ex = t->dom->ex;

	link_del(&t->lru);
	link_del(&t->dsib);
	link_del(&t->xsib);
	collector_table_del(&m->tmpl_tab, t->key);
	ex->n_tmpls--;
	m->n_live_tmpl--;
	if (evicted) {
		ex->st.evicted_templates++;
		m->evicted_tmpl++;
	} else {
		m->expired_tmpl++;
	}
	collector_mem_uncharge(m, collector_tmpl_cost(t));
	free(t->ops);
	free(t);
}

/* A domain goes with its templates and its held data (counted as
 * SL_COLLECTOR_DROP_NO_TEMPLATE: its template can no longer come). */
void collector_dom_free(struct sl_collector_msg *m, struct domain *d,
			int evicted)
{
	struct exporter *ex = d->ex;

	while (!link_empty(&d->tmpls))
		collector_tmpl_free(
		    m, link_entry(d->tmpls.next, struct tmpl, dsib), evicted);
	for (uint32_t i = 0; m->hold_live && i < m->hold_count; i++) {
		struct held *h = collector_hold_at(m, i);

		if (h->live && h->dom == d)
			collector_hold_kill(m, h, 1);
	}
	collector_hold_trim(m);
	link_del(&d->lru);
	link_del(&d->xsib);
	collector_table_del(&m->dom_tab, d->key);
	ex->n_domains--;
	m->n_live_dom--;
	if (evicted) {
		ex->st.evicted_domains++;
		m->evicted_dom++;
	}
	collector_mem_uncharge(m, sizeof(*d) + ALLOC_OVERHEAD);
	free(d);
}

/* Adds the counters of an exporter that goes to those of index 0. */
static void stats_fold(struct sl_exporter_stats *to,
		       const struct sl_exporter_stats *from)
{
	to->messages += from->messages;
	to->records += from->records;
	to->templates += from->templates;
	for (int i = 0; i < SL_COLLECTOR_DROP_COUNT; i++)
		to->dropped[i] += from->dropped[i];
	to->seq_lost += from->seq_lost;
	to->seq_resets += from->seq_resets;
	to->held += from->held;
	to->evicted_templates += from->evicted_templates;
	to->evicted_domains += from->evicted_domains;
	to->sampled += from->sampled;
	if (from->sampling)
		to->sampling = from->sampling;
}

void collector_exp_evict(struct sl_collector_msg *m, struct exporter *e)
{
	while (!link_empty(&e->doms))
		collector_dom_free(
		    m, link_entry(e->doms.next, struct domain, xsib), 1);
	stats_fold(&m->exp[0]->st, &e->st);
	link_del(&e->lru);
	collector_exp_unhash(m, e->idx);
	m->exp[e->idx] = NULL;
	m->exp_free[m->n_free++] = e->idx;
	m->n_live_exp--;
	m->evicted_exp++;
	collector_mem_uncharge(m, sizeof(*e) + ALLOC_OVERHEAD);
	free(e);
}

/* The oldest of a list's tail and the one before it, skipping pin. */
static struct link *tail_unpinned(struct link *head, const struct link *pin)
{
	struct link *l = head->prev;

	if (l == pin)
		l = l->prev;
	return l == head ? NULL : l;
}

/* Evicts the least recently used object that may go; 0 if none may. */
int collector_evict_one(struct sl_collector_msg *m)
{
	struct link *lt, *ld, *le;
	struct tmpl *t = NULL;
	struct domain *d = NULL;
	struct exporter *e = NULL;
	uint64_t best = UINT64_MAX;

	lt =
	    tail_unpinned(&m->tmpl_lru, m->pin_tmpl ? &m->pin_tmpl->lru : NULL);
	ld = tail_unpinned(&m->dom_lru, m->pin_dom ? &m->pin_dom->lru : NULL);
	le = tail_unpinned(&m->exp_lru, NULL);
	if (lt)
		t = link_entry(lt, struct tmpl, lru);
	if (ld)
		d = link_entry(ld, struct domain, lru);
	/* the tail was used in this batch: so were all the others */
	if (le && link_entry(le, struct exporter, lru)->batch != m->batch)
		e = link_entry(le, struct exporter, lru);
	if (t)
		best = t->tick;
	if (d && d->tick < best)
		best = d->tick;
	if (e && e->tick < best) {
		collector_exp_evict(m, e);
		return 1;
	}
	if (d && d->tick == best) {
		collector_dom_free(m, d, 1);
		return 1;
	}
	if (t) {
		collector_tmpl_free(m, t, 1);
		return 1;
	}
	return 0;
}

/* ---- API ----------------------------------------------------------------- */

int sl_collector_msg_state(const struct sl_collector_msg *m,
			   struct sl_collector_state *out)
{
	if (!m || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->memory = m->mem;
	out->max_memory = m->max_mem;
	out->exporters = m->n_live_exp;
	out->domains = m->n_live_dom;
	out->templates = m->n_live_tmpl;
	out->evicted_exporters = m->evicted_exp;
	out->evicted_domains = m->evicted_dom;
	out->evicted_templates = m->evicted_tmpl;
	out->expired_templates = m->expired_tmpl;
	return 0;
}
