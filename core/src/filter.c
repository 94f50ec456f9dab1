/* filter.c - pcap-syntax filters compiled by libpcap, for any source; the
 * engine's input filter (sl_engine_input_filter) and packet filters
 * (sl_engine_packet_filter), each a filter set: compiled for each link
 * type as packets of it come (pcapng interfaces, several captures). */
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

int sl_filter_check(const char *expr, char *err, size_t errlen)
{
	/* Ethernet first: its message is the one given */
	static const int common[] = {DLT_EN10MB, DLT_LINUX_SLL, DLT_RAW,
				     DLT_IEEE802_11_RADIO};
	char other[PCAP_ERRBUF_SIZE + 64];
	int rc = -EINVAL;

	if (!expr || !err || !errlen)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(common) / sizeof(common[0]) && rc; i++) {
		struct bpf_program prog;

		rc = sl_filter_compile(expr, common[i], 0, &prog,
				       i ? other : err, i ? sizeof(other) : errlen);
		if (!rc)
			pcap_freecode(&prog);
	}
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

/* ---- filter sets ------------------------------------------------------ */

void sl_filter_set_free(struct sl_filter_set *fs)
{
	for (uint32_t i = 0; i < fs->n; i++) {
		struct sl_filter_prog *fp = &fs->progs[i];

		if (fp->ok)
			pcap_freecode(fp->prog);
		free(fp->prog);
	}
	free(fs->expr);
	memset(fs, 0, sizeof(*fs));
}

/* Compiles the expression for a link type into the next entry: 0, or
 * -EINVAL (note says why) with the entry kept as "refuses all", -ENOMEM
 * or -ENOSPC with no entry. */
static int set_add(struct sl_filter_set *fs, int linktype, char *note,
		   size_t note_len)
{
	struct sl_filter_prog *fp;
	int rc;

	if (fs->n >= SL_INPUT_LINKTYPES)
		return -ENOSPC;
	fp = &fs->progs[fs->n];
	fp->prog = calloc(1, sizeof(*fp->prog));
	if (!fp->prog)
		return -ENOMEM;
	fp->linktype = linktype;
	rc = sl_filter_compile(fs->expr, sl_linktype_dlt(linktype), 0,
			       fp->prog, note, note_len);
	fp->ok = rc == 0;
	if (rc && rc != -EINVAL) {
		free(fp->prog);
		fp->prog = NULL;
		return rc;
	}
	fs->last = fs->n++;
	return rc;
}

int sl_filter_set_init(struct sl_filter_set *fs, const char *expr,
		       int linktype, char *err, size_t errlen)
{
	char note[256] = "";
	int rc;

	sl_filter_set_free(fs);
	if (!expr)
		return 0;
	fs->expr = strdup(expr);
	if (!fs->expr)
		return -ENOMEM;
	/* a pcapng without an interface yet: the syntax is checked for
	 * Ethernet, the link types come with the packets */
	rc = set_add(fs, linktype >= 0 ? linktype : SL_LINK_EN10MB, note,
		     sizeof(note));
	if (rc) {
		if (rc == -EINVAL && err && errlen)
			snprintf(err, errlen, "%s", note);
		sl_filter_set_free(fs);
		return rc;
	}
	if (linktype < 0) { /* that program is of no link type of the input */
		pcap_freecode(fs->progs[0].prog);
		free(fs->progs[0].prog);
		memset(&fs->progs[0], 0, sizeof(fs->progs[0]));
		fs->n = 0;
	}
	return 0;
}

/* The program for a link type, compiled on its first packet; NULL when
 * there is no room (or memory) for another. */
static struct sl_filter_prog *set_prog(struct sl_filter_set *fs, int linktype)
{
	char note[256];
	uint32_t i;
	int rc;

	if (fs->n && fs->progs[fs->last].linktype == linktype)
		return &fs->progs[fs->last];
	for (i = 0; i < fs->n; i++) {
		if (fs->progs[i].linktype == linktype) {
			fs->last = i;
			return &fs->progs[i];
		}
	}
	rc = set_add(fs, linktype, note, sizeof(note));
	if (rc == -EINVAL && !fs->unusable++)
		snprintf(fs->note, sizeof(fs->note), "%s", note);
	if (rc && rc != -EINVAL)
		return NULL;
	return &fs->progs[fs->last];
}

int sl_filter_set_match(struct sl_filter_set *fs, const struct sl_packet *p)
{
	struct sl_filter_prog *fp = set_prog(fs, (int)p->linktype);

	if (!fp || !fp->ok)
		return 0;
	return bpf_filter(fp->prog->bf_insns, p->data, p->wirelen, p->caplen);
}

/* ---- the engine's filters ------------------------------------------------ */

int sl_engine_input_filter(struct sl_engine *e, const char *expr, char *err,
			   size_t errlen)
{
	int lt;

	if (!e)
		return -EINVAL;
	if (!e->src)
		return SL_E_STATE;
	/* a collector has flow records, no frames to filter */
	lt = sl_source_linktype(e->src);
	if (lt == -ENOTSUP)
		return lt;
	return sl_filter_set_init(&e->input, expr, lt, err, errlen);
}

int sl_engine_filter_unusable(const struct sl_engine *e, char *note,
			      size_t note_len)
{
	if (!e)
		return -EINVAL;
	if (e->input.unusable && note && note_len)
		snprintf(note, note_len, "%s", e->input.note);
	return (int)e->input.unusable;
}

int sl_engine_packet_filter(struct sl_engine *e, uint32_t index,
			    const char *expr, char *err, size_t errlen)
{
	int lt, rc;

	if (!e || index >= SL_PACKET_FILTERS)
		return -EINVAL;
	if (!e->src)
		return SL_E_STATE;
	lt = sl_source_linktype(e->src);
	if (lt == -ENOTSUP && expr)
		return lt;
	rc = sl_filter_set_init(&e->pfilters[index], expr, lt, err, errlen);
	if (e->pfilters[index].expr)
		e->filter_mask |= 1u << index;
	else
		e->filter_mask &= ~(1u << index);
	return rc;
}
