/* collector_hold.c - data held for its template.
 *
 * Data that comes before its template is copied into a bounded FIFO (hold_max
 * sets and HOLD_BYTES_MAX bytes in all; the oldest goes first) and decoded,
 * in arrival order, when the template comes; what waited longer than hold_ns
 * or was pushed out counts as SL_COLLECTOR_DROP_NO_TEMPLATE.
 */
#include <stdlib.h>
#include <string.h>

#include "collector.h"

#define HOLD_BYTES_MAX (4u << 20)

struct held *collector_hold_at(const struct sl_collector_msg *m, uint32_t i)
{
	return &m->hold[(m->hold_head + i) % m->hold_max];
}

void collector_hold_kill(struct sl_collector_msg *m, struct held *h,
			 int counted)
{
	if (counted)
		h->dom->ex->st.dropped[SL_COLLECTOR_DROP_NO_TEMPLATE]++;
	h->live = 0;
	m->hold_live--;
	m->hold_bytes -= h->len;
}

/* Frees the head slots that are no longer live. */
void collector_hold_trim(struct sl_collector_msg *m)
{
	while (m->hold_count && !collector_hold_at(m, 0)->live) {
		m->hold_head = (m->hold_head + 1) % m->hold_max;
		m->hold_count--;
	}
}

static int hold_too_old(const struct sl_collector_msg *m, const struct held *h,
			uint64_t now)
{
	return now > h->at_ns && now - h->at_ns > m->hold_ns;
}

void collector_hold_expire(struct sl_collector_msg *m, uint64_t now)
{
	for (uint32_t i = 0; i < m->hold_count; i++) {
		struct held *h = collector_hold_at(m, i);

		if (h->live && hold_too_old(m, h, now))
			collector_hold_kill(m, h, 1);
	}
	collector_hold_trim(m);
}

/* The run ends: no template can come any more, so what is held is
 * dropped now, counted, rather than freed unseen with the state. */
void collector_hold_drop_all(struct sl_collector_msg *m)
{
	for (uint32_t i = 0; m->hold_live && i < m->hold_count; i++) {
		struct held *h = collector_hold_at(m, i);

		if (h->live)
			collector_hold_kill(m, h, 1);
	}
	collector_hold_trim(m);
}

/* Pushes out the oldest held sets until one of len bytes fits. */
static void hold_make_room(struct sl_collector_msg *m, uint32_t len)
{
	while (m->hold_count == m->hold_max ||
	       (m->hold_live && m->hold_bytes + len > HOLD_BYTES_MAX)) {
		struct held *h = collector_hold_at(m, 0);

		if (h->live)
			collector_hold_kill(m, h, 1);
		m->hold_head = (m->hold_head + 1) % m->hold_max;
		m->hold_count--;
		collector_hold_trim(m);
	}
}

int collector_hold_add(struct ctx *c, uint16_t tid, const uint8_t *p,
		       uint32_t len)
{
	struct sl_collector_msg *m = c->m;
	struct held *h;

	c->partial = 1;
	if (len > HOLD_BYTES_MAX) {
		drop(c, SL_COLLECTOR_DROP_NO_TEMPLATE);
		return 0;
	}
	hold_make_room(m, len);
	h = collector_hold_at(m, m->hold_count);
	if (len > h->cap) {
		uint8_t *b = realloc(h->buf, len);

		if (!b)
			return -ENOMEM;
		h->buf = b;
		h->cap = len;
	}
	memcpy(h->buf, p, len);
	h->len = len;
	h->at_ns = c->now;
	h->dom = c->dom;
	h->export_s = c->export_s;
	h->uptime = c->uptime;
	h->tid = tid;
	h->live = 1;
	m->hold_count++;
	m->hold_live++;
	m->hold_bytes += len;
	c->ex->st.held++;
	return 0;
}

/* The template tid of the context's domain just came: its held sets are
 * decoded in the order they came, with their own messages' times. */
int collector_hold_release(struct ctx *c, uint16_t tid)
{
	struct sl_collector_msg *m = c->m;
	int rc = 0;

	collector_hold_expire(m, c->now);
	for (uint32_t i = 0; i < m->hold_count && !rc; i++) {
		struct held *h = collector_hold_at(m, i);
		struct ctx hc = *c;
		const struct tmpl *t;

		if (!h->live || h->dom != c->dom || h->tid != tid)
			continue;
		hc.export_s = h->export_s;
		hc.uptime = h->uptime;
		t = collector_tmpl_find(&hc, tid);
		if (t)
			rc = collector_data_records(&hc, t, h->buf, h->len);
		collector_hold_kill(m, h, 0);
	}
	collector_hold_trim(m);
	return rc;
}
