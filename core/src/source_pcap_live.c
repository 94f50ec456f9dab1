/* source_pcap_live.c - live capture through libpcap.
 *
 * libpcap's packet buffer is valid only until its next call, so every
 * packet of a batch is copied into an arena allocated once at open.
 * Packets are packed one after another; when the space left could not
 * hold one more packet of snaplen bytes, the callback ends the dispatch
 * with pcap_breakloop() and the rest stays in libpcap's ring for the next
 * batch. The arena holds SL_BATCH_MAX packets of 2 KiB plus one of
 * snaplen, so batches of ordinary frames are never cut short, while a
 * burst of jumbo or GRO-sized packets does not need SL_BATCH_MAX * snaplen
 * bytes.
 */
#include <errno.h>
#include <net/if.h>
#include <pcap/pcap.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "sluice.h"
#include "source.h"

#define DEFAULT_SNAPLEN 262144
#define DEFAULT_POLL_MS 100
#define BUFFER_SIZE	(16 << 20) /* libpcap's kernel ring */
#define ARENA_SLOT	2048	   /* typical room per packet */
#define NS_PER_S	1000000000ULL
#define STOP_SLACK_MS	20 /* past two retire periods, for the timer */

struct pcap_live_source {
	struct sl_source base; /* first: the generic layer casts to it */
	pcap_t *p;
	uint8_t *arena;
	size_t arena_len;
	size_t used;	      /* arena bytes filled in this batch */
	uint32_t snaplen;     /* libpcap's, after activation */
	uint32_t linktype;    /* enum sl_linktype */
	uint32_t ns_per_unit; /* 1: nanosecond stamps, 1000: microsecond */
	int ifindex;
	int fd; /* pcap_get_selectable_fd() */
	int poll_ms;
	int err; /* sticky: once set, every next() returns it */
	struct sl_packet_batch *b; /* the batch being filled */
	uint64_t received;
	uint64_t bytes;
	uint64_t stop_end_ms; /* stopping: the drain ends by then (or 0) */
};

static struct pcap_live_source *to_live(struct sl_source *src)
{
	return (struct pcap_live_source *)src;
}

static const struct pcap_live_source *to_live_c(const struct sl_source *src)
{
	return (const struct pcap_live_source *)src;
}

/* DLT_* as libpcap reports them -> LINKTYPE_* as sluice decodes them. */
static uint32_t dlt_to_linktype(int dlt)
{
	switch (dlt) {
	case 12: /* DLT_RAW on most systems */
	case 14: /* DLT_RAW on OpenBSD */
		return SL_LINK_RAW;
	}
	return (uint32_t)dlt; /* the others share their numbers */
}

static void live_cb(u_char *user, const struct pcap_pkthdr *h,
		    const u_char *bytes)
{
	struct pcap_live_source *s = (struct pcap_live_source *)user;
	struct sl_packet_batch *b = s->b;
	struct sl_packet *pk;
	uint32_t caplen = h->caplen;

	if (b->count >= SL_BATCH_MAX)
		return; /* cannot happen: dispatch asks for no more */
	if (caplen > s->snaplen)
		caplen = s->snaplen;
	if (caplen > s->arena_len - s->used) /* cannot happen: see below */
		caplen = (uint32_t)(s->arena_len - s->used);
	pk = &b->pkt[b->count++];
	memcpy(s->arena + s->used, bytes, caplen);
	pk->data = s->arena + s->used;
	pk->caplen = caplen;
	pk->wirelen = h->len;
	pk->ts_ns = (uint64_t)h->ts.tv_sec * NS_PER_S +
		    (uint64_t)h->ts.tv_usec * s->ns_per_unit;
	pk->linktype = s->linktype;
	pk->ifindex = (uint32_t)s->ifindex;
	s->bytes += h->len;
	/* keep the next packet 8-byte aligned */
	s->used += (caplen + 7) & ~7U;
	if (s->arena_len - s->used < s->snaplen)
		pcap_breakloop(s->p);
}

/* One nonblocking pcap_dispatch into the batch: count, or a sticky error. */
static int live_dispatch(struct pcap_live_source *s, struct sl_packet_batch *b)
{
	int rc;

	s->b = b;
	rc = pcap_dispatch(s->p, SL_BATCH_MAX - (int)b->count, live_cb,
			   (u_char *)s);
	s->b = NULL;
	if (rc == PCAP_ERROR) {
		char name[IF_NAMESIZE];

		/* the interface went away, or another failure */
		s->err =
		    s->ifindex && !if_indextoname((unsigned)s->ifindex, name)
			? -ENODEV
			: -EIO;
		b->count = 0;
		return s->err;
	}
	/* PCAP_ERROR_BREAK: our callback ran out of arena; count is ours */
	return (int)b->count;
}

/* libpcap on Linux (TPACKET_V3) blocks in poll() without a timeout until a
 * packet comes: its timeout only retires a ring block that holds packets.
 * So the handle is nonblocking and the wait for the next retired block is
 * ours, bounded by poll_ms (and by the end of a stop's drain). */
static int live_next(struct sl_source *src, struct sl_packet_batch *b)
{
	struct pcap_live_source *s = to_live(src);
	struct pollfd pfd;
	int rc, wait = s->poll_ms;
	uint64_t now;

	b->count = 0;
	if (s->err)
		return s->err;
	s->used = 0;
	if (s->stop_end_ms && sl_live_now_ms() >= s->stop_end_ms)
		return 0;
	rc = live_dispatch(s, b);
	if (rc == 0) {
		if (s->stop_end_ms) {
			now = sl_live_now_ms();
			if (now >= s->stop_end_ms)
				return 0;
			if (s->stop_end_ms - now < (uint64_t)wait)
				wait = (int)(s->stop_end_ms - now);
		}
		pfd.fd = s->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		rc = poll(&pfd, 1, wait);
		if (rc < 0 && errno != EINTR) {
			s->err = -errno;
			return s->err;
		}
		if (rc <= 0)
			return -EAGAIN; /* timeout, or a signal */
		/* POLLERR (interface gone): dispatch reports it */
		rc = live_dispatch(s, b);
	}
	if (rc <= 0)
		return rc < 0 ? rc : -EAGAIN;
	s->received += (uint64_t)rc;
	return rc;
}

/* libpcap has no way to refuse new packets without losing the ones in its
 * ring (a new filter applies to them too): the drain reads for as long as
 * the kernel may take to hand over the last block, what came meanwhile
 * included. */
static void live_stop(struct sl_source *src)
{
	struct pcap_live_source *s = to_live(src);

	if (!s->stop_end_ms)
		s->stop_end_ms = sl_live_now_ms() + 2 * (uint64_t)s->poll_ms +
				 STOP_SLACK_MS;
}

static int live_linktype(const struct sl_source *src)
{
	return (int)to_live_c(src)->linktype;
}

/* Live capture has no end: pos is the bytes captured, size 0. */
static void live_progress(const struct sl_source *src, uint64_t *pos,
			  uint64_t *size)
{
	if (pos)
		*pos = to_live_c(src)->bytes;
	if (size)
		*size = 0;
}

static int live_stats(struct sl_source *src, struct sl_source_stats *st)
{
	struct pcap_live_source *s = to_live(src);
	struct pcap_stat ps;

	memset(st, 0, sizeof(*st));
	st->received = s->received;
	if (pcap_stats(s->p, &ps))
		return -EIO;
	/* ps_drop: the ring was full; ps_ifdrop: the interface dropped */
	st->kernel_drops = (uint64_t)ps.ps_drop + ps.ps_ifdrop;
	return 0;
}

static void live_close(struct sl_source *src)
{
	struct pcap_live_source *s = to_live(src);

	pcap_close(s->p);
	munmap(s->arena, s->arena_len);
	free(s);
}

static const struct sl_source_ops pcap_live_ops = {
    .next = live_next,
    .linktype = live_linktype,
    .progress = live_progress,
    .close = live_close,
    .stop = live_stop,
    .stats = live_stats,
};

static int activate_error(int rc)
{
	switch (rc) {
	case PCAP_ERROR_PERM_DENIED:
	case PCAP_ERROR_PROMISC_PERM_DENIED:
		return -EPERM;
	case PCAP_ERROR_NO_SUCH_DEVICE:
		return -ENODEV;
	}
	return -EIO;
}

static int set_filter(struct pcap_live_source *s, struct sl_live_opts *o)
{
	struct bpf_program prog;
	int rc = 0;

	if (pcap_compile(s->p, &prog, o->filter, 1, PCAP_NETMASK_UNKNOWN)) {
		snprintf(o->note, sizeof(o->note), "bad filter '%s': %s",
			 o->filter, pcap_geterr(s->p));
		return SL_E_OPTION;
	}
	if (pcap_setfilter(s->p, &prog)) {
		snprintf(o->note, sizeof(o->note), "cannot set filter: %s",
			 pcap_geterr(s->p));
		rc = -EIO;
	}
	pcap_freecode(&prog);
	return rc;
}

int sl_source_open_pcap_live(struct sl_source **out, struct sl_live_opts *o)
{
	char errbuf[PCAP_ERRBUF_SIZE] = "";
	struct pcap_live_source *s;
	uint32_t snaplen;
	int rc, snap;

	rc = sl_live_open_check(out, o);
	if (rc)
		return rc;
	snaplen = o->snaplen ? o->snaplen : DEFAULT_SNAPLEN;
	if (snaplen > DEFAULT_SNAPLEN)
		snaplen = DEFAULT_SNAPLEN;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base.ops = &pcap_live_ops;
	s->p = pcap_create(o->ifname, errbuf);
	if (!s->p) {
		snprintf(o->note, sizeof(o->note), "%s", errbuf);
		rc = -EIO;
		goto out_free;
	}
	if (pcap_set_snaplen(s->p, (int)snaplen) ||
	    pcap_set_promisc(s->p, o->promisc == 1) ||
	    pcap_set_timeout(s->p,
			     o->poll_ms ? (int)o->poll_ms : DEFAULT_POLL_MS) ||
	    pcap_set_immediate_mode(s->p, 0) ||
	    pcap_set_buffer_size(s->p, BUFFER_SIZE)) {
		snprintf(o->note, sizeof(o->note), "cannot set up %s",
			 o->ifname);
		rc = -EIO;
		goto out_close;
	}
	/* nanosecond stamps where the platform has them */
	(void)pcap_set_tstamp_precision(s->p, PCAP_TSTAMP_PRECISION_NANO);

	rc = pcap_activate(s->p);
	if (rc < 0) {
		snprintf(o->note, sizeof(o->note), "%s: %s", o->ifname,
			 pcap_geterr(s->p)[0] ? pcap_geterr(s->p)
					      : pcap_statustostr(rc));
		rc = activate_error(rc);
		goto out_close;
	}
	if (rc > 0) /* a warning: capture works, say what is missing */
		sl_live_note_add(o, "%s",
				 pcap_geterr(s->p)[0] ? pcap_geterr(s->p)
						      : pcap_statustostr(rc));

	if (pcap_setnonblock(s->p, 1, errbuf)) {
		snprintf(o->note, sizeof(o->note), "%s", errbuf);
		rc = -EIO;
		goto out_close;
	}
	if (o->ignore_outgoing == 1 && pcap_setdirection(s->p, PCAP_D_IN)) {
		snprintf(o->note, sizeof(o->note),
			 "cannot ignore outgoing packets: %s",
			 pcap_geterr(s->p));
		rc = -EIO;
		goto out_close;
	}
	if (o->filter && o->filter[0]) {
		rc = set_filter(s, o);
		if (rc)
			goto out_close;
	}

	s->ns_per_unit =
	    pcap_get_tstamp_precision(s->p) == PCAP_TSTAMP_PRECISION_NANO
		? 1
		: 1000;
	s->linktype = dlt_to_linktype(pcap_datalink(s->p));
	snap = pcap_snapshot(s->p);
	s->snaplen =
	    snap > 0 && (uint32_t)snap < snaplen ? (uint32_t)snap : snaplen;
	s->fd = pcap_get_selectable_fd(s->p);
	if (s->fd < 0) {
		snprintf(o->note, sizeof(o->note),
			 "%s: no descriptor to wait on", o->ifname);
		rc = -ENOTSUP;
		goto out_close;
	}
	s->poll_ms = o->poll_ms ? (int)o->poll_ms : DEFAULT_POLL_MS;
	s->ifindex = (int)if_nametoindex(o->ifname); /* 0 for "any" */

	/* page-backed, so only the part that big packets touch is resident */
	s->arena_len = (size_t)SL_BATCH_MAX * ARENA_SLOT + s->snaplen + 8;
	s->arena = mmap(NULL, s->arena_len, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->arena == MAP_FAILED) {
		s->arena = NULL;
		rc = -ENOMEM;
		goto out_close;
	}
	*out = &s->base;
	return 0;

out_close:
	pcap_close(s->p);
out_free:
	free(s);
	return rc;
}
