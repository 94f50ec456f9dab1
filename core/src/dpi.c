/* dpi.c - application labels by nDPI (SL_FEATURE_DPI).
 *
 * One nDPI detection module per engine, and one nDPI flow state per flow
 * slot in an array beside the flow pool: mapped zero pages, so only the
 * slots that carry flows become resident, and nothing is allocated on the
 * packet path by sluice (nDPI itself keeps a few strings per flow, freed
 * when the flow's detection ends). A flow's state is zeroed at its first
 * packet and fed the flow's packets (the innermost IP packet) until nDPI
 * is sure of the application and needs no more (or SL_DPI_EXTRA_PACKETS
 * after it named it), or until the packet limits (SL_DPI_UDP_PACKETS,
 * SL_DPI_TCP_PACKETS: sluice.h); a flow that ends before gets nDPI's
 * guess. The label is copied into the flow record then. */
#include "engine.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef SL_HAVE_NDPI
#include <sys/mman.h>

#include <ndpi_api.h>

struct sl_dpi {
	struct ndpi_detection_module_struct *mod;
	uint8_t *flows; /* slots x size */
	size_t size;	/* of one nDPI flow state, cache-line rounded */
	size_t len;	/* of the mapping */
	uint32_t slots;
};

int sl_dpi_available(void)
{
	return 1;
}

int sl_dpi_open(struct sl_engine *e)
{
	NDPI_PROTOCOL_BITMASK all;
	struct sl_dpi *d;
	int rc = -ENOMEM;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->slots = e->pool_size;
	d->size = (ndpi_detection_get_sizeof_ndpi_flow_struct() + 63) & ~63ul;
	d->len = d->size * d->slots;
	d->flows = mmap(NULL, d->len, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (d->flows == MAP_FAILED)
		goto out_free;
	/* as the flow pool: a page fault per 2 MiB of new flows */
	(void)madvise(d->flows, d->len, MADV_HUGEPAGE);
	d->mod = ndpi_init_detection_module(ndpi_no_prefs);
	if (!d->mod)
		goto out_unmap;
	NDPI_BITMASK_SET_ALL(all);
	ndpi_set_protocol_detection_bitmask2(d->mod, &all);
	ndpi_finalize_initialization(d->mod);
	e->dpi = d;
	return 0;

out_unmap:
	munmap(d->flows, d->len);
out_free:
	free(d);
	return rc;
}

static struct ndpi_flow_struct *flow_state(struct sl_dpi *d, uint32_t slot)
{
	return (struct ndpi_flow_struct *)(d->flows + (size_t)slot * d->size);
}

/* Printable ASCII of s, at most n - 1 bytes, NUL-terminated. */
static void copy_printable(char *dst, size_t n, const char *s)
{
	size_t j = 0;

	for (size_t i = 0; s[i] && j + 1 < n; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f)
			dst[j++] = s[i];
	}
	dst[j] = '\0';
}

/* The label of what nDPI found; the flow's nDPI state is freed. */
static void label_set(struct sl_dpi *d, struct sl_flow *f,
		      struct sl_app_label *a, struct ndpi_flow_struct *nf,
		      ndpi_protocol proto)
{
	char buf[64];

	a->master_id = proto.master_protocol;
	a->app_id = proto.app_protocol;
	ndpi_protocol2name(d->mod, proto, buf, sizeof(buf));
	copy_printable(a->application_name, sizeof(a->application_name),
		       buf);
	copy_printable(a->category, sizeof(a->category),
		       ndpi_category_get_name(d->mod, proto.category));
	nf->host_server_name[sizeof(nf->host_server_name) - 1] = '\0';
	copy_printable(a->server_name, sizeof(a->server_name),
		       nf->host_server_name);
	a->state = SL_DPI_DONE;
	f->dpi_done = 1;
	ndpi_free_flow_data(nf);
}

void sl_dpi_packet(struct sl_engine *e, struct sl_flow *f,
		   const struct sl_packet *p, const struct sl_decoded *dec)
{
	struct sl_dpi *d = e->dpi;
	struct sl_app_label *a = &e->feat_app[f->rec.slot];
	struct ndpi_flow_struct *nf = flow_state(d, f->rec.slot);
	uint32_t len, limit;
	ndpi_protocol proto;

	/* a later fragment has no header nDPI could read */
	if (a->state == SL_DPI_DONE || !dec->key.ip_version ||
	    dec->frag == SL_FRAG_LATER || dec->ip_offset >= p->caplen)
		return;
	if (a->state == SL_DPI_NONE) {
		memset(nf, 0, d->size);
		a->state = SL_DPI_INSPECTING;
	}
	len = p->caplen - dec->ip_offset;
	if (len > 0xffff)
		len = 0xffff;
	a->packets++;
	proto = ndpi_detection_process_packet(
	    d->mod, nf, p->data + dec->ip_offset, (unsigned short)len,
	    p->ts_ns / 1000000);
	limit = dec->key.proto == 6 ? SL_DPI_TCP_PACKETS : SL_DPI_UDP_PACKETS;
	if (proto.app_protocol == NDPI_PROTOCOL_UNKNOWN) {
		if (a->packets > limit) {
			proto = ndpi_detection_giveup(d->mod, nf, 1,
						      &a->guessed);
			label_set(d, f, a, nf, proto);
		}
		return;
	}
	/* named: what more nDPI wants (a certificate, an answer) it gets
	 * soon or not at all */
	if (!a->found_at)
		a->found_at = a->packets;
	if (a->packets > limit ||
	    a->packets - a->found_at >= SL_DPI_EXTRA_PACKETS ||
	    !ndpi_extra_dissection_possible(d->mod, nf))
		label_set(d, f, a, nf, proto);
}

void sl_dpi_flow_end(struct sl_engine *e, struct sl_flow *f)
{
	struct sl_dpi *d = e->dpi;
	struct sl_app_label *a = &e->feat_app[f->rec.slot];
	struct ndpi_flow_struct *nf = flow_state(d, f->rec.slot);
	ndpi_protocol proto;

	if (a->state == SL_DPI_DONE)
		return;
	if (a->state == SL_DPI_NONE) {
		/* no IP packet: nothing to say, but the field is set */
		memset(nf, 0, d->size);
	}
	proto = ndpi_detection_giveup(d->mod, nf, 1, &a->guessed);
	label_set(d, f, a, nf, proto);
}

void sl_dpi_close(struct sl_engine *e)
{
	struct sl_dpi *d = e->dpi;

	if (!d)
		return;
	/* what nDPI holds of flows still being inspected */
	for (uint32_t s = 0; s < e->pool_used && s < d->slots; s++) {
		struct sl_flow *f = &e->pool[s];

		if (f->live && e->feat_app[s].state == SL_DPI_INSPECTING)
			ndpi_free_flow_data(flow_state(d, s));
	}
	ndpi_exit_detection_module(d->mod);
	munmap(d->flows, d->len);
	free(d);
	e->dpi = NULL;
}

void *sl_dpi_slots(const struct sl_engine *e, size_t *slot_size)
{
	if (!e->dpi)
		return NULL;
	*slot_size = e->dpi->size;
	return e->dpi->flows;
}

#else /* !SL_HAVE_NDPI */

int sl_dpi_available(void)
{
	return 0;
}

int sl_dpi_open(struct sl_engine *e)
{
	return -ENOTSUP;
}

void sl_dpi_packet(struct sl_engine *e, struct sl_flow *f,
		   const struct sl_packet *p, const struct sl_decoded *dec)
{
}

void sl_dpi_flow_end(struct sl_engine *e, struct sl_flow *f)
{
}

void sl_dpi_close(struct sl_engine *e)
{
}

void *sl_dpi_slots(const struct sl_engine *e, size_t *slot_size)
{
	return NULL;
}

#endif
