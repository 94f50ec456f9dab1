/* filter.c - pcap-syntax filters compiled by libpcap, for any source; the
 * engine's input filter (sl_engine_input_filter), compiled per link type
 * as packets of each come. */
#include <errno.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "source.h"

int sl_filter_compile(const char *filter, int linktype, uint32_t snaplen,
		      struct bpf_program *prog, char *note, size_t note_len)
{
	pcap_t *p;
	int rc = 0;

	p = pcap_open_dead(linktype, snaplen ? (int)snaplen : 262144);
	if (!p)
		return -ENOMEM;
	if (pcap_compile(p, prog, filter, 1, PCAP_NETMASK_UNKNOWN)) {
		snprintf(note, note_len, "bad filter '%s': %s", filter,
			 pcap_geterr(p));
		rc = -EINVAL;
	}
	pcap_close(p);
	return rc;
}

/* libpcap compiles for a DLT_ value; packets carry LINKTYPE_ values (the
 * files' numbers), which differ for a few (libpcap maps them when it
 * reads a file). */
int sl_linktype_dlt(int linktype)
{
	switch (linktype) {
	case 100: /* LINKTYPE_ATM_RFC1483 */
		return DLT_ATM_RFC1483;
	case SL_LINK_RAW:
		return DLT_RAW;
	case 102: /* LINKTYPE_SLIP_BSDOS */
		return DLT_SLIP_BSDOS;
	case 103: /* LINKTYPE_PPP_BSDOS */
		return DLT_PPP_BSDOS;
	default:
		return linktype;
	}
}

/* ---- the input filter ------------------------------------------------- */

void sl_input_filter_free(struct sl_engine *e)
{
	for (uint32_t i = 0; i < e->n_in; i++) {
		struct sl_input_prog *ip = &e->in_progs[i];

		if (ip->ok)
			pcap_freecode(ip->prog);
		free(ip->prog);
		ip->prog = NULL;
		ip->ok = 0;
	}
	e->n_in = e->in_last = 0;
	free(e->in_expr);
	e->in_expr = NULL;
}

/* Compiles the expression for a link type into the next entry: 0, or
 * -EINVAL (note says why) with the entry kept as "refuses all", -ENOMEM
 * or -ENOSPC with no entry. */
static int input_add(struct sl_engine *e, int linktype, char *note,
		     size_t note_len)
{
	struct sl_input_prog *ip;
	int rc;

	if (e->n_in >= SL_INPUT_LINKTYPES)
		return -ENOSPC;
	ip = &e->in_progs[e->n_in];
	ip->prog = calloc(1, sizeof(*ip->prog));
	if (!ip->prog)
		return -ENOMEM;
	ip->linktype = linktype;
	rc = sl_filter_compile(e->in_expr, sl_linktype_dlt(linktype), 0,
			       ip->prog, note, note_len);
	ip->ok = rc == 0;
	if (rc && rc != -EINVAL) {
		free(ip->prog);
		ip->prog = NULL;
		return rc;
	}
	e->in_last = e->n_in++;
	return rc;
}

int sl_engine_input_filter(struct sl_engine *e, const char *expr, char *err,
			   size_t errlen)
{
	char note[256] = "";
	int lt, rc;

	if (!e)
		return -EINVAL;
	if (!e->src)
		return SL_E_STATE;
	/* a collector has flow records, no frames to filter */
	lt = sl_source_linktype(e->src);
	if (lt == -ENOTSUP)
		return lt;
	sl_input_filter_free(e);
	if (!expr)
		return 0;
	e->in_expr = strdup(expr);
	if (!e->in_expr)
		return -ENOMEM;
	/* a pcapng without an interface yet: the syntax is checked for
	 * Ethernet, the link types come with the packets */
	rc = input_add(e, lt >= 0 ? lt : SL_LINK_EN10MB, note, sizeof(note));
	if (rc) {
		if (rc == -EINVAL && err && errlen)
			snprintf(err, errlen, "%s", note);
		sl_input_filter_free(e);
		return rc;
	}
	if (lt < 0) { /* that program is of no link type of the input */
		pcap_freecode(e->in_progs[0].prog);
		free(e->in_progs[0].prog);
		e->in_progs[0].prog = NULL;
		e->in_progs[0].ok = 0;
		e->n_in = 0;
	}
	return 0;
}

/* The program for a link type, compiled on its first packet; NULL when
 * there is no room (or memory) for another. */
static struct sl_input_prog *input_prog(struct sl_engine *e, int linktype)
{
	char note[256];
	uint32_t i;
	int rc;

	if (e->n_in && e->in_progs[e->in_last].linktype == linktype)
		return &e->in_progs[e->in_last];
	for (i = 0; i < e->n_in; i++) {
		if (e->in_progs[i].linktype == linktype) {
			e->in_last = i;
			return &e->in_progs[i];
		}
	}
	rc = input_add(e, linktype, note, sizeof(note));
	if (rc && rc != -EINVAL)
		return NULL;
	return &e->in_progs[e->in_last];
}

int sl_input_pass(struct sl_engine *e, const struct sl_packet *p)
{
	struct sl_input_prog *ip = input_prog(e, (int)p->linktype);

	if (!ip || !ip->ok)
		return 0;
	return bpf_filter(ip->prog->bf_insns, p->data, p->wirelen, p->caplen);
}
