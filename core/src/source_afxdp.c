/* source_afxdp.c - live capture from one NIC queue through an AF_XDP socket
 * (libxdp). libxdp attaches its default XSK program, which redirects the
 * queue's packets to the socket; they are then no longer seen by the
 * kernel's stack on that queue.
 *
 * Packets point into the UMEM (no copy). A batch's frames go back to the
 * fill ring at the next call, when the engine is done with them; frames the
 * filter rejects go back at once. The RX descriptors themselves are
 * released right away: the kernel writes only into frames it took from the
 * fill ring.
 */
#include <errno.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

#include "sluice.h"
#include "source.h"

#ifndef SOL_XDP
#define SOL_XDP 283
#endif

#define NUM_FRAMES	4096
#define FRAME_SIZE	2048
#define FILL_SIZE	NUM_FRAMES /* every frame fits: refills never fail */
#define COMP_SIZE	64	   /* no TX, but the ring must exist */
#define RX_SIZE		2048
#define DEFAULT_SNAPLEN 262144
#define DEFAULT_POLL_MS 100
#define MAX_ROUNDS	8 /* ring reads per call when the filter rejects all */
#define BUSY_WAIT_MS	500
#define BUSY_STEP_MS	20
#define NS_PER_S	1000000000ULL

/* libpcap's classic BPF. <pcap/pcap.h> cannot be included next to
 * <linux/bpf.h> (both define struct bpf_insn), so the two calls used here
 * are declared with a struct of the same layout. */
#define DLT_EN10MB 1
#define DLT_RAW	   12

struct cbpf_insn {
	unsigned short code;
	unsigned char jt;
	unsigned char jf;
	unsigned int k;
};

struct cbpf_prog { /* struct bpf_program of libpcap */
	unsigned int bf_len;
	struct cbpf_insn *bf_insns;
};

extern unsigned int bpf_filter(const struct cbpf_insn *pc,
			       const unsigned char *pkt, unsigned int wirelen,
			       unsigned int buflen);
extern void pcap_freecode(struct bpf_program *prog);

struct afxdp_source {
	struct sl_source base; /* first: the generic layer casts to it */
	struct xsk_ring_cons rx;
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	uint8_t *area; /* the UMEM */
	size_t area_len;
	int fd;
	int ifindex;
	int poll_ms;
	int err; /* sticky: once set, every next() returns it */
	uint32_t snaplen;
	uint32_t linktype;
	uint32_t mtu; /* 0: unknown */
	uint32_t xdp_flags; /* the mode it was attached in */
	int guard;	    /* sl_signal_xdp_guard(), -1: none */
	int has_filter;
	struct cbpf_prog prog;
	uint64_t received;
	uint64_t bytes;
	uint64_t filtered;
	int stopping;	    /* hand out what the RX ring holds, then end */
	uint32_t stop_left; /* descriptors a stop still reads */
	uint32_t n_held;    /* frames of the batch handed out last */
	uint32_t n_pending; /* frames waiting for room in the fill ring */
	uint64_t held[SL_BATCH_MAX];
	uint64_t pending[NUM_FRAMES];
};

static struct afxdp_source *to_xdp(struct sl_source *src)
{
	return (struct afxdp_source *)src;
}

static const struct afxdp_source *to_xdp_c(const struct sl_source *src)
{
	return (const struct afxdp_source *)src;
}

/* ---- rings ------------------------------------------------------------ */

/* Gives pending frames to the kernel, newest first (still in cache). A
 * driver that ran out of frames waits to be woken (XDP_USE_NEED_WAKEUP). */
static void fill_refill(struct afxdp_source *s)
{
	uint32_t n = s->n_pending, idx = 0, room, i;

	if (!n)
		return;
	room = xsk_prod_nb_free(&s->fill, n);
	if (room < n)
		n = room;
	if (!n || xsk_ring_prod__reserve(&s->fill, n, &idx) != n)
		return;
	for (i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&s->fill, idx + i) =
		    s->pending[--s->n_pending];
	xsk_ring_prod__submit(&s->fill, n);
	if (xsk_ring_prod__needs_wakeup(&s->fill))
		(void)recvfrom(s->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
}

/* Waits up to poll_ms for the RX ring. 0: ready; -EAGAIN: timeout or a
 * signal; else an error. */
static int rx_wait(struct afxdp_source *s)
{
	struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
	int rc;

	int err = 0;
	socklen_t len = sizeof(err);

	rc = poll(&pfd, 1, s->poll_ms);
	if (rc < 0)
		return errno == EINTR ? -EAGAIN : -errno;
	if (rc > 0 && !(pfd.revents & (POLLERR | POLLNVAL)))
		return 0;
	/* an XSK polls quietly once its device is gone: ask */
	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len))
		return -errno;
	if (err)
		return -err;
	return rc > 0 ? -ENETDOWN : -EAGAIN;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ---- library messages ------------------------------------------------- */

/* libxdp and libbpf print warnings to stderr by default. While this file
 * calls them, their messages are kept instead: the last libxdp warning
 * goes into the note when opening fails. */
static __thread char *lib_msg;
static __thread size_t lib_msg_len;

static int libxdp_log(enum libxdp_print_level level, const char *fmt,
		      va_list ap)
{
	size_t n;

	if (level != LIBXDP_WARN || !lib_msg)
		return 0;
	vsnprintf(lib_msg, lib_msg_len, fmt, ap);
	n = strlen(lib_msg);
	while (n && (lib_msg[n - 1] == '\n' || lib_msg[n - 1] == ' '))
		lib_msg[--n] = '\0';
	return 0;
}

static int libbpf_log(enum libbpf_print_level level, const char *fmt,
		      va_list ap)
{
	return 0;
}

struct lib_quiet {
	libxdp_print_fn_t xdp;
	libbpf_print_fn_t bpf;
};

static void lib_quiet_begin(struct lib_quiet *q, char *buf, size_t len)
{
	lib_msg = buf;
	lib_msg_len = len;
	if (buf && len)
		buf[0] = '\0';
	q->xdp = libxdp_set_print(libxdp_log);
	q->bpf = libbpf_set_print(libbpf_log);
}

static void lib_quiet_end(struct lib_quiet *q)
{
	libxdp_set_print(q->xdp);
	libbpf_set_print(q->bpf);
	lib_msg = NULL;
	lib_msg_len = 0;
}

/* ---- ops -------------------------------------------------------------- */

static int xdp_next(struct sl_source *src, struct sl_packet_batch *b)
{
	struct afxdp_source *s = to_xdp(src);
	uint32_t n, idx = 0, i, round, waited = 0;
	uint64_t ts;
	int rc;

	b->count = 0;
	if (s->err)
		return s->err;
	/* the engine is done with the last batch: its frames go back */
	for (i = 0; i < s->n_held; i++)
		s->pending[s->n_pending++] = s->held[i];
	s->n_held = 0;
	fill_refill(s);

	for (round = 0; round < MAX_ROUNDS; round++) {
		n = xsk_ring_cons__peek(&s->rx, SL_BATCH_MAX, &idx);
		if (s->stopping) {
			/* at most a ring's worth: what came before the stop */
			if (n > s->stop_left) {
				xsk_ring_cons__cancel(&s->rx, n - s->stop_left);
				n = s->stop_left;
			}
			s->stop_left -= n;
			if (!n)
				return 0;
		}
		if (!n) {
			if (waited)
				return -EAGAIN;
			rc = rx_wait(s);
			if (rc == -EAGAIN)
				return rc;
			if (rc) {
				s->err = rc;
				return rc;
			}
			waited = 1;
			continue;
		}
		ts = now_ns(); /* AF_XDP has no stamps: one per batch */
		for (i = 0; i < n; i++) {
			const struct xdp_desc *d =
			    xsk_ring_cons__rx_desc(&s->rx, idx + i);
			uint64_t frame = d->addr & ~(uint64_t)(FRAME_SIZE - 1);
			const uint8_t *data =
			    xsk_umem__get_data(s->area, d->addr);
			struct sl_packet *pk;

			if (s->has_filter && !bpf_filter(s->prog.bf_insns, data,
							 d->len, d->len)) {
				s->filtered++;
				s->pending[s->n_pending++] = frame;
				continue;
			}
			pk = &b->pkt[b->count++];
			pk->data = data;
			pk->ts_ns = ts;
			pk->wirelen = d->len;
			pk->caplen = d->len < s->snaplen ? d->len : s->snaplen;
			pk->linktype = s->linktype;
			pk->ifindex = (uint32_t)s->ifindex;
			s->bytes += d->len;
			s->held[s->n_held++] = frame;
		}
		xsk_ring_cons__release(&s->rx, n);
		fill_refill(s); /* the rejected frames */
		if (b->count) {
			s->received += b->count;
			return (int)b->count;
		}
	}
	return -EAGAIN; /* a flood the filter rejects: let the engine tick */
}

/* Descriptors reach the RX ring as packets arrive: the drain reads what
 * is there, without waiting. */
static void xdp_stop(struct sl_source *src)
{
	struct afxdp_source *s = to_xdp(src);

	if (!s->stopping) {
		s->stopping = 1;
		s->stop_left = RX_SIZE;
	}
}

static int xdp_linktype(const struct sl_source *src)
{
	return (int)to_xdp_c(src)->linktype;
}

/* Live capture has no end: pos is the bytes captured, size 0. */
static void xdp_progress(const struct sl_source *src, uint64_t *pos,
			 uint64_t *size)
{
	if (pos)
		*pos = to_xdp_c(src)->bytes;
	if (size)
		*size = 0;
}

static int xdp_stats(struct sl_source *src, struct sl_source_stats *st)
{
	struct afxdp_source *s = to_xdp(src);
	struct xdp_statistics xs;
	socklen_t len = sizeof(xs);

	memset(st, 0, sizeof(*st));
	st->received = s->received;
	st->filtered = s->filtered;
	memset(&xs, 0, sizeof(xs));
	if (getsockopt(s->fd, SOL_XDP, XDP_STATISTICS, &xs, &len))
		return -errno;
	/* rx_dropped: no fill frame or too long; rx_ring_full: we were slow */
	st->kernel_drops = xs.rx_dropped + xs.rx_ring_full;
	st->ring_errors = xs.rx_invalid_descs + xs.rx_fill_ring_empty_descs;
	return 0;
}

static void xdp_close(struct sl_source *src)
{
	struct afxdp_source *s = to_xdp(src);
	struct lib_quiet q;

	/* libxdp detaches its program when the last socket using it goes */
	sl_signal_xdp_unguard(s->guard);
	lib_quiet_begin(&q, NULL, 0);
	xsk_socket__delete(s->xsk);
	xsk_umem__delete(s->umem);
	lib_quiet_end(&q);
	munmap(s->area, s->area_len);
	if (s->has_filter)
		pcap_freecode((struct bpf_program *)&s->prog);
	free(s);
}

static const struct sl_source_ops afxdp_ops = {
    .next = xdp_next,
    .linktype = xdp_linktype,
    .progress = xdp_progress,
    .close = xdp_close,
    .stop = xdp_stop,
    .stats = xdp_stats,
};

/* ---- open ------------------------------------------------------------- */

/* The interface's hardware type and MTU (0 when it cannot say). */
static void if_info(const char *ifname, int *type, uint32_t *mtu)
{
	struct ifreq ifr;
	int fd;

	*type = ARPHRD_ETHER;
	*mtu = 0;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (!ioctl(fd, SIOCGIFHWADDR, &ifr))
		*type = ifr.ifr_hwaddr.sa_family;
	if (!ioctl(fd, SIOCGIFMTU, &ifr) && ifr.ifr_mtu > 0)
		*mtu = (uint32_t)ifr.ifr_mtu;
	close(fd);
}

/* One try at a socket on (ifname, queue) with these flags; libxdp loads
 * its XSK program in the mode xdp_flags asks for unless one is there. */
static int xsk_try(struct afxdp_source *s, const struct sl_live_opts *o,
		   uint32_t xdp_flags, uint16_t bind_flags)
{
	struct xsk_umem_config ucfg = {
	    .fill_size = FILL_SIZE,
	    .comp_size = COMP_SIZE,
	    .frame_size = FRAME_SIZE,
	    .frame_headroom = 0,
	    .flags = 0,
	};
	struct xsk_socket_config cfg = {
	    .rx_size = RX_SIZE,
	    .tx_size = 0,
	    .libxdp_flags = 0,
	    .xdp_flags = xdp_flags,
	    .bind_flags = bind_flags | XDP_USE_NEED_WAKEUP,
	};
	int rc;

	/* a fresh UMEM each time: a socket that bound but failed later
	 * cannot bind again */
	rc = xsk_umem__create(&s->umem, s->area, s->area_len, &s->fill,
			      &s->comp, &ucfg);
	if (rc) {
		s->umem = NULL;
		return rc;
	}
	rc = xsk_socket__create(&s->xsk, o->ifname, o->queue, s->umem, &s->rx,
				NULL, &cfg);
	if (rc) {
		s->xsk = NULL;
		xsk_umem__delete(s->umem);
		s->umem = NULL;
	}
	return rc;
}

/* The mode the XDP program on the interface is attached in: ours, or an
 * earlier socket's that libxdp reused. */
static const char *attached_mode(int ifindex, uint32_t asked)
{
	struct xdp_multiprog *mp;
	enum xdp_attach_mode m = XDP_MODE_UNSPEC;

	mp = xdp_multiprog__get_from_ifindex(ifindex);
	if (mp && !libxdp_get_error(mp)) {
		m = xdp_multiprog__attach_mode(mp);
		xdp_multiprog__close(mp);
	}
	if (m == XDP_MODE_UNSPEC)
		m = asked == XDP_FLAGS_SKB_MODE ? XDP_MODE_SKB
						: XDP_MODE_NATIVE;
	switch (m) {
	case XDP_MODE_SKB:
		return "skb";
	case XDP_MODE_HW:
		return "hw";
	default:
		return "drv";
	}
}

static void fail_note(struct sl_live_opts *o, int rc, const char *lib)
{
	const char *ifn = o->ifname;
	size_t len = sizeof(o->note);

	if (o->zero_copy == SL_ZC_ON && rc != -EPERM && rc != -EACCES &&
	    rc != -EAFNOSUPPORT && rc != -EBUSY && rc != -ENOMEM &&
	    rc != -ENOBUFS) {
		snprintf(o->note, len, "driver cannot do zero-copy on %s (%s)",
			 ifn, strerror(-rc));
		return;
	}
	switch (rc) {
	case -EPERM:
	case -EACCES:
		snprintf(o->note, len,
			 "AF_XDP on %s: %s (needs CAP_NET_ADMIN and CAP_BPF, "
			 "or root)",
			 ifn, strerror(-rc));
		break;
	case -EAFNOSUPPORT:
		snprintf(o->note, len, "AF_XDP not supported by this kernel");
		break;
	case -EBUSY:
		snprintf(o->note, len,
			 "queue %u of %s is busy (another AF_XDP socket, or "
			 "another XDP program)",
			 o->queue, ifn);
		break;
	case -ENOBUFS:
		snprintf(o->note, len,
			 "AF_XDP on %s: the %d KiB UMEM is over the locked "
			 "memory limit (ulimit -l)",
			 ifn, NUM_FRAMES * FRAME_SIZE / 1024);
		break;
	case -EINVAL:
		snprintf(o->note, len,
			 "AF_XDP on %s queue %u: %s (no such queue, or an MTU "
			 "too large for %d-byte frames?)",
			 ifn, o->queue, strerror(-rc), FRAME_SIZE);
		break;
	case -ERANGE:
		snprintf(o->note, len,
			 "AF_XDP on %s: its MTU is too large for XDP in driver "
			 "mode (lower it, or --xdp-mode skb)",
			 ifn);
		break;
	default:
		snprintf(o->note, len, "AF_XDP on %s queue %u (%s mode): %s",
			 ifn, o->queue,
			 o->xdp_mode == SL_XDP_SKB   ? "skb"
			 : o->xdp_mode == SL_XDP_DRV ? "drv"
						     : "drv or skb",
			 strerror(-rc));
	}
	if (lib && lib[0])
		sl_live_note_add(o, "%s", lib);
}

/* One pass: driver then skb mode (as asked), zero-copy then copy (as
 * asked), until a socket binds and its program attaches. A driver mode
 * that failed for a reason of its own (an MTU too large: ERANGE) is not
 * tried again in the next passes: its failed socket leaves the queue busy
 * for a moment, and skb mode must get that moment. */
static int xsk_attempts(struct afxdp_source *s, const struct sl_live_opts *o,
			uint32_t *xdp_flags, uint16_t *bind, int *drv_failed)
{
	uint32_t modes[2];
	uint16_t binds[2];
	int n_modes = 0, n_binds, i, j, rc = -EINVAL;

	if (o->xdp_mode != SL_XDP_SKB && !*drv_failed)
		modes[n_modes++] = XDP_FLAGS_DRV_MODE;
	if (o->xdp_mode != SL_XDP_DRV)
		modes[n_modes++] = XDP_FLAGS_SKB_MODE;
	for (i = 0; i < n_modes; i++) {
		n_binds = 0;
		if (modes[i] == XDP_FLAGS_DRV_MODE && o->zero_copy != SL_ZC_OFF)
			binds[n_binds++] = XDP_ZEROCOPY;
		if (o->zero_copy != SL_ZC_ON)
			binds[n_binds++] = XDP_COPY;
		for (j = 0; j < n_binds; j++) {
			rc = xsk_try(s, o, modes[i], binds[j]);
			if (!rc) {
				*xdp_flags = modes[i];
				*bind = binds[j];
				return 0;
			}
			/* these will not get better with other flags */
			if (rc == -EPERM || rc == -EACCES ||
			    rc == -EAFNOSUPPORT || rc == -ENODEV ||
			    rc == -ENOMEM || rc == -ENOBUFS)
				return rc;
		}
		if (modes[i] == XDP_FLAGS_DRV_MODE && rc != -EBUSY &&
		    n_modes > 1)
			*drv_failed = 1;
	}
	return rc;
}

/* A queue stays busy for a moment after its last socket closed (the
 * kernel frees the buffer pool in a work item): busy is retried for up to
 * BUSY_WAIT_MS. */
static int xsk_open(struct afxdp_source *s, struct sl_live_opts *o)
{
	char lib[128];
	struct lib_quiet q;
	uint32_t xdp_flags = 0;
	uint16_t bind = 0;
	int rc, waited, drv_failed = 0;

	if (o->xdp_mode == SL_XDP_SKB && o->zero_copy == SL_ZC_ON) {
		snprintf(o->note, sizeof(o->note),
			 "zero-copy needs driver mode: skb mode on %s always "
			 "copies",
			 o->ifname);
		return SL_E_OPTION;
	}
	lib_quiet_begin(&q, lib, sizeof(lib));
	for (waited = 0;; waited += BUSY_STEP_MS) {
		rc = xsk_attempts(s, o, &xdp_flags, &bind, &drv_failed);
		if (rc != -EBUSY || waited >= BUSY_WAIT_MS)
			break;
		usleep(BUSY_STEP_MS * 1000);
	}
	if (rc) {
		fail_note(o, rc, lib);
		goto out;
	}
	s->xdp_flags = xdp_flags;
	snprintf(o->note, sizeof(o->note), "%s mode, %s",
		 attached_mode(s->ifindex, xdp_flags),
		 bind == XDP_ZEROCOPY ? "zero-copy" : "copy");
	/* the Ethernet header and two VLAN tags around the MTU */
	if (s->mtu + 22 > FRAME_SIZE)
		sl_live_note_add(o,
				 "frames over %d bytes (MTU %u) do not fit: the "
				 "kernel drops them (counted)",
				 FRAME_SIZE, s->mtu);
out:
	lib_quiet_end(&q);
	return rc;
}

int sl_source_open_afxdp(struct sl_source **out, struct sl_live_opts *o)
{
	struct afxdp_source *s;
	uint32_t idx = 0, i, prog_before = 0;
	int rc, hw_type;

	rc = sl_live_open_check(out, o);
	if (rc)
		return rc;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base.ops = &afxdp_ops;
	s->fd = -1;
	s->guard = -1;
	s->snaplen = o->snaplen ? o->snaplen : DEFAULT_SNAPLEN;
	s->poll_ms = o->poll_ms ? (int)o->poll_ms : DEFAULT_POLL_MS;
	s->ifindex = (int)if_nametoindex(o->ifname);
	if (!s->ifindex) {
		rc = sl_live_no_interface(o);
		goto out_free;
	}
	if_info(o->ifname, &hw_type, &s->mtu);
	s->linktype = hw_type == ARPHRD_NONE ? SL_LINK_RAW : SL_LINK_EN10MB;
	if (o->filter && o->filter[0]) {
		rc = sl_filter_compile(
		    o->filter,
		    s->linktype == SL_LINK_RAW ? DLT_RAW : DLT_EN10MB,
		    s->snaplen, (struct bpf_program *)&s->prog, o->note,
		    sizeof(o->note));
		if (rc == -EINVAL)
			rc = SL_E_OPTION;
		if (rc)
			goto out_free;
		s->has_filter = 1;
	}

	s->area_len = (size_t)NUM_FRAMES * FRAME_SIZE;
	s->area = mmap(NULL, s->area_len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (s->area == MAP_FAILED) {
		rc = -ENOMEM;
		goto out_filter;
	}

	/* none attached before: the program is ours, and a process that dies
	 * at once (a second signal) detaches it */
	if (bpf_xdp_query_id(s->ifindex, 0, &prog_before))
		prog_before = 1; /* cannot tell: not ours to remove */
	rc = xsk_open(s, o);
	if (rc)
		goto out_unmap;
	s->fd = xsk_socket__fd(s->xsk);
	if (!prog_before)
		s->guard = sl_signal_xdp_guard(s->ifindex, s->xdp_flags);

	/* every frame to the kernel */
	if (xsk_ring_prod__reserve(&s->fill, NUM_FRAMES, &idx) != NUM_FRAMES) {
		snprintf(o->note, sizeof(o->note), "fill ring too small");
		rc = -ENOBUFS;
		goto out_socket;
	}
	for (i = 0; i < NUM_FRAMES; i++)
		*xsk_ring_prod__fill_addr(&s->fill, idx + i) =
		    (uint64_t)i * FRAME_SIZE;
	xsk_ring_prod__submit(&s->fill, NUM_FRAMES);

	*out = &s->base;
	return 0;

out_socket:
	sl_signal_xdp_unguard(s->guard);
	xsk_socket__delete(s->xsk);
	xsk_umem__delete(s->umem);
out_unmap:
	munmap(s->area, s->area_len);
out_filter:
	if (s->has_filter)
		pcap_freecode((struct bpf_program *)&s->prog);
out_free:
	free(s);
	return rc;
}
