/* source_afpacket.c - live capture from an AF_PACKET TPACKET_V3 ring.
 *
 * The kernel fills blocks of a ring shared with us; packets are handed out
 * pointing into the ring (no copy). A block goes back to the kernel at the
 * next call after all its packets were handed out: by then the engine is
 * done with the batch that pointed into it.
 *
 * Opening order, so that no packet arrives unfiltered or outside the fanout
 * group: the socket is created with protocol 0 (it receives nothing until
 * bound), a drop-all filter is attached, the ring set up and mapped, the
 * socket bound to the interface (ETH_P_ALL) and joined to the fanout group,
 * the ring drained, and only then the real filter attached.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h> /* before the linux/ headers: libc-compat */
#include <linux/filter.h>
#include <linux/if_arp.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <pcap/pcap.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice.h"
#include "source.h"

#define NS_PER_S  1000000000ULL

enum {
	AFP_SNAPLEN = 262144,
	AFP_BLOCK_SIZE = 1 << 20,
	AFP_BLOCK_COUNT = 64,
	AFP_FRAME_SIZE = 2048,
	AFP_BLOCK_TOV_MS = 100,
	AFP_POLL_MS = 100,
	AFP_STOP_SLACK_MS = 20, /* past the retire periods, for the timer */
	/* a stop waits up to two of them: 20 s, well inside a service
	 * manager's stop timeout (systemd: 90 s) */
	AFP_BLOCK_TOV_MAX_MS = 10000,
	AFP_VLAN_HLEN = 4,
	AFP_MAC_ADDRS = 12, /* destination + source MAC */
};

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

struct afp_source {
	struct sl_source base; /* first: the generic layer casts to it */
	int fd;
	uint8_t *ring;
	size_t ring_len;
	uint32_t block_size;
	uint32_t block_nr;
	uint32_t snaplen;
	uint32_t poll_ms;
	uint32_t block_tov_ms; /* the kernel retires a block this often */
	int linktype;
	int ifindex;
	int skip_outgoing; /* PACKET_IGNORE_OUTGOING missing: skip here */
	int loopback;	   /* lo: outgoing frames come back received */
	int err;	   /* sticky: once set, every next() returns it */
	uint32_t cur;	   /* block being walked (or waited for) */
	uint32_t left;	   /* packets of block cur not yet handed out */
	uint32_t off;	   /* offset of the next packet in block cur */
	int in_block;	   /* block cur is ours and being walked */
	uint32_t done;	   /* blocks before cur handed out, still ours */
	uint64_t received; /* packets handed out */
	uint64_t drops;	   /* accumulated tp_drops, and what a stop lost */
	uint64_t stop_end_ms; /* stopping: the drain ends by then (or 0) */
};

static inline struct afp_source *to_afp(struct sl_source *src)
{
	return (struct afp_source *)src;
}

static inline const struct afp_source *to_afp_c(const struct sl_source *src)
{
	return (const struct afp_source *)src;
}

/* socket()/setsockopt() failures that mean missing privileges. */
static int afp_errno(struct sl_live_opts *o, int err, const char *what)
{
	if (err == EPERM || err == EACCES) {
		sl_live_note_add(o, "capture not permitted (need root or CAP_NET_RAW)");
		return -EPERM;
	}
	sl_live_note_add(o, "%s: %s", what, strerror(err));
	return -err;
}

/* ---- ring ------------------------------------------------------------- */

static inline struct tpacket_block_desc *afp_block(const struct afp_source *s,
						   uint32_t i)
{
	return (struct tpacket_block_desc *)(s->ring +
					     (size_t)i * s->block_size);
}

static inline int afp_block_ready(const struct afp_source *s, uint32_t i)
{
	const struct tpacket_block_desc *bd = afp_block(s, i);

	/* acquire: the block's contents are read after its status */
	return __atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) &
	       TP_STATUS_USER;
}

static inline void afp_block_release(struct afp_source *s, uint32_t i)
{
	struct tpacket_block_desc *bd = afp_block(s, i);

	/* the kernel counts from 0 when it opens the block again; until then
	 * 0 says to a stop that the block holds nothing (afp_stop_pending) */
	bd->hdr.bh1.num_pkts = 0;
	/* release: we are done reading before the kernel may write */
	__atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL,
			 __ATOMIC_RELEASE);
}

/* Gives back the blocks whose packets were all handed out before. */
static void afp_release_done(struct afp_source *s)
{
	uint32_t i = (s->cur + s->block_nr - s->done) % s->block_nr;

	for (; s->done; s->done--) {
		afp_block_release(s, i);
		i = (i + 1) % s->block_nr;
	}
}

/* Block cur is used up: move on. */
static void afp_block_next(struct afp_source *s)
{
	s->in_block = 0;
	s->done++;
	s->cur = (s->cur + 1) % s->block_nr;
}

/* Starts walking block cur if the kernel handed it over; 0 if not. */
static int afp_block_open(struct afp_source *s)
{
	struct tpacket_block_desc *bd;

	if (!afp_block_ready(s, s->cur))
		return 0;
	bd = afp_block(s, s->cur);
	s->left = bd->hdr.bh1.num_pkts;
	s->off = bd->hdr.bh1.offset_to_first_pkt;
	s->in_block = 1;
	if (!s->left)
		afp_block_next(s);
	return 1;
}

/* The kernel strips a VLAN tag into the header; put it back in front of
 * the ethertype, in the gap between the sockaddr_ll and the frame. */
static void afp_vlan_insert(const struct tpacket3_hdr *h, struct sl_packet *p)
{
	uint8_t *mac = (uint8_t *)p->data;
	uint16_t tpid = ETH_P_8021Q, tci = (uint16_t)h->hv1.tp_vlan_tci;
	uint8_t tag[AFP_VLAN_HLEN];

	p->wirelen += AFP_VLAN_HLEN; /* on the wire, even if not kept */
	if (h->tp_mac < TPACKET3_HDRLEN + AFP_VLAN_HLEN ||
	    p->caplen < AFP_MAC_ADDRS)
		return;
	if ((h->tp_status & TP_STATUS_VLAN_TPID_VALID) && h->hv1.tp_vlan_tpid)
		tpid = (uint16_t)h->hv1.tp_vlan_tpid;
	tag[0] = (uint8_t)(tpid >> 8);
	tag[1] = (uint8_t)tpid;
	tag[2] = (uint8_t)(tci >> 8);
	tag[3] = (uint8_t)tci;
	memmove(mac - AFP_VLAN_HLEN, mac, AFP_MAC_ADDRS);
	memcpy(mac - AFP_VLAN_HLEN + AFP_MAC_ADDRS, tag, sizeof(tag));
	p->data = mac - AFP_VLAN_HLEN;
	p->caplen += AFP_VLAN_HLEN;
}

static inline int afp_outgoing(const struct tpacket3_hdr *h)
{
	const struct sockaddr_ll *sll =
	    (const void *)((const uint8_t *)h +
			   TPACKET_ALIGN(sizeof(struct tpacket3_hdr)));

	return sll->sll_pkttype == PACKET_OUTGOING;
}

/* Fills pkt from the packet header h; 0 if the packet is skipped. */
static int afp_packet(const struct afp_source *s, struct tpacket3_hdr *h,
		      struct sl_packet *pkt)
{
	if (s->skip_outgoing && afp_outgoing(h))
		return 0;
	pkt->data = (const uint8_t *)h + h->tp_mac;
	pkt->ts_ns = (uint64_t)h->tp_sec * NS_PER_S + h->tp_nsec;
	pkt->caplen = h->tp_snaplen;
	pkt->wirelen = h->tp_len;
	pkt->linktype = (uint32_t)s->linktype;
	pkt->ifindex = (uint32_t)s->ifindex;
	if ((h->tp_status & TP_STATUS_VLAN_VALID) &&
	    s->linktype == SL_LINK_EN10MB)
		afp_vlan_insert(h, pkt);
	if (pkt->caplen > s->snaplen)
		pkt->caplen = s->snaplen;
	if (pkt->wirelen < pkt->caplen)
		pkt->wirelen = pkt->caplen;
	return 1;
}

/* The packet at s->off lies inside its block (a check on the kernel's
 * offsets, so that nothing outside the mapping is ever read). */
static inline int afp_sane(const struct afp_source *s,
			   const struct tpacket3_hdr *h)
{
	uint64_t room = s->block_size;

	return s->off >= sizeof(struct tpacket_block_desc) &&
	       (uint64_t)s->off + TPACKET3_HDRLEN <= room &&
	       (uint64_t)s->off + h->tp_mac + h->tp_snaplen <= room;
}

/* Hands out up to SL_BATCH_MAX packets from the blocks we own. */
static uint32_t afp_walk(struct afp_source *s, struct sl_packet_batch *b)
{
	uint32_t n = 0;

	while (n < SL_BATCH_MAX) {
		struct tpacket3_hdr *h;
		uint8_t *blk;

		if (!s->in_block) {
			/* all blocks used up in this call: the next one is
			 * still ours, with packets of this batch in it */
			if (s->done == s->block_nr || !afp_block_open(s))
				break;
			continue;
		}
		blk = (uint8_t *)afp_block(s, s->cur);
		h = (struct tpacket3_hdr *)(blk + s->off);
		if (!afp_sane(s, h)) {
			afp_block_next(s); /* never seen: drop the rest */
			continue;
		}
		n += (uint32_t)afp_packet(s, h, &b->pkt[n]);
		s->off += h->tp_next_offset;
		if (!--s->left)
			afp_block_next(s);
	}
	return n;
}

/* Gives back, unread, any block the kernel filled before the real filter
 * was attached, and starts the walk after them. The kernel fills blocks
 * in order from block 0. */
static void afp_drain(struct afp_source *s)
{
	uint32_t i;

	for (i = 0; i < s->block_nr && afp_block_ready(s, i); i++)
		afp_block_release(s, i);
	s->cur = i % s->block_nr;
}

/* The socket reported an error (interface went down or away). Clears it;
 * a vanished interface ends the capture, a downed one may come back. */
static int afp_sock_error(struct afp_source *s)
{
	char name[IF_NAMESIZE];
	socklen_t len = sizeof(int);
	int err = 0;

	(void)getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (!if_indextoname((unsigned int)s->ifindex, name))
		return -ENODEV;
	return 0;
}

/* Waits until end_ms for block cur. 1: ready, -EAGAIN: nothing came. */
static int afp_wait(struct afp_source *s, uint64_t end)
{
	uint64_t now, wait;
	struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
	int rc;

	for (;;) {
		if (afp_block_ready(s, s->cur))
			return 1;
		now = sl_live_now_ms();
		if (now >= end)
			return -EAGAIN;
		pfd.revents = 0;
		wait = end - now < INT32_MAX ? end - now : INT32_MAX;
		rc = poll(&pfd, 1, (int)wait);
		if (rc < 0)
			return errno == EINTR ? -EAGAIN : -errno;
		if (pfd.revents & POLLNVAL)
			return -EBADF;
		if (pfd.revents & POLLERR) {
			rc = afp_sock_error(s);
			if (rc)
				return rc;
		}
	}
}

static int afp_attach(struct afp_source *s, struct sock_filter *insns,
		      unsigned int len)
{
	struct sock_fprog prog = {.len = (unsigned short)len, .filter = insns};

	if (setsockopt(s->fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog,
		       sizeof(prog)) < 0)
		return -errno;
	return 0;
}

static int afp_attach_const(struct afp_source *s, uint32_t ret)
{
	struct sock_filter insn = BPF_STMT(BPF_RET | BPF_K, ret);

	return afp_attach(s, &insn, 1);
}

/* Packets the kernel put in block cur and has not handed over yet (it
 * does when the block fills or its retire timer fires). Blocks we gave
 * back read 0 until the kernel writes to them again. */
static uint32_t afp_stop_pending(const struct afp_source *s)
{
	const struct tpacket_block_desc *bd = afp_block(s, s->cur);

	return __atomic_load_n(&bd->hdr.bh1.num_pkts, __ATOMIC_ACQUIRE);
}

/* Stopping, nothing ready: waits for the block still being filled, until
 * the drain's end. 1: ready; 0: the ring is empty, or the time is up (what
 * the kernel still held is counted lost). */
static int afp_stop_wait(struct afp_source *s)
{
	uint32_t pending = afp_stop_pending(s);
	int rc;

	if (!pending)
		return 0;
	rc = afp_wait(s, s->stop_end_ms);
	if (rc == 1)
		return 1;
	if (sl_live_now_ms() < s->stop_end_ms && rc == -EAGAIN)
		return 1; /* a signal cut the wait short: look again */
	s->drops += afp_stop_pending(s);
	return rc == -EAGAIN ? 0 : rc;
}

/* ---- ops -------------------------------------------------------------- */

static int afp_next(struct sl_source *src, struct sl_packet_batch *b)
{
	struct afp_source *s = to_afp(src);
	uint32_t n;
	int rc;

	b->count = 0;
	if (s->err)
		return s->err;
	/* the previous batch is done with: its used-up blocks go back */
	afp_release_done(s);
	for (;;) {
		n = afp_walk(s, b);
		if (n) {
			b->count = n;
			s->received += n;
			return (int)n;
		}
		/* a block of skipped packets only: hand it back now */
		afp_release_done(s);
		if (s->stop_end_ms) {
			rc = afp_stop_wait(s);
			if (!rc)
				return 0;
		} else {
			rc = afp_wait(s, sl_live_now_ms() + s->poll_ms);
		}
		if (rc < 0) {
			if (rc != -EAGAIN)
				s->err = rc;
			return rc;
		}
	}
}

/* The kernel takes nothing more (a drop-all filter); what it took is in
 * the ring, the last block handed over within two retire periods. */
static void afp_stop(struct sl_source *src)
{
	struct afp_source *s = to_afp(src);

	if (s->fd < 0 || s->stop_end_ms)
		return;
	if (afp_attach_const(s, 0))
		s->stop_end_ms = sl_live_now_ms(); /* no drain: take no longer */
	else
		s->stop_end_ms = sl_live_now_ms() + 2 * (uint64_t)s->block_tov_ms +
				 AFP_STOP_SLACK_MS;
}

static int afp_linktype(const struct sl_source *src)
{
	return to_afp_c(src)->linktype;
}

static void afp_progress(const struct sl_source *src, uint64_t *pos,
			 uint64_t *size)
{
	if (pos)
		*pos = to_afp_c(src)->received;
	if (size)
		*size = 0;
}

static int afp_stats(struct sl_source *src, struct sl_source_stats *st)
{
	struct afp_source *s = to_afp(src);
	struct tpacket_stats_v3 ks;
	socklen_t len = sizeof(ks);

	memset(&ks, 0, sizeof(ks));
	if (s->fd < 0)
		return -EBADF;
	/* the kernel resets these on read: accumulate */
	if (getsockopt(s->fd, SOL_PACKET, PACKET_STATISTICS, &ks, &len) < 0)
		return -errno;
	/* tp_freeze_q_cnt counts ring-full episodes; their packets are in
	 * tp_drops already */
	s->drops += ks.tp_drops;
	memset(st, 0, sizeof(*st));
	st->received = s->received;
	st->kernel_drops = s->drops;
	return 0;
}

/* Unmaps and closes what is open; safe on a half-opened source. */
static void afp_teardown(struct afp_source *s)
{
	if (s->ring) {
		munmap(s->ring, s->ring_len);
		s->ring = NULL;
	}
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
}

static void afp_close(struct sl_source *src)
{
	struct afp_source *s = to_afp(src);

	if (!s)
		return;
	afp_teardown(s);
	free(s);
}

static const struct sl_source_ops afp_ops = {
    .next = afp_next,
    .linktype = afp_linktype,
    .progress = afp_progress,
    .close = afp_close,
    .stop = afp_stop,
    .stats = afp_stats,
};

/* ---- open ------------------------------------------------------------- */

/* Defaults and the ring geometry checks the kernel would make, with a
 * note saying which one failed. */
static int afp_opts(struct afp_source *s, struct sl_live_opts *o,
		    uint32_t *frame_size)
{
	uint32_t page = (uint32_t)sysconf(_SC_PAGESIZE);
	uint32_t fs = o->frame_size ? o->frame_size : AFP_FRAME_SIZE;

	s->block_size = o->block_size ? o->block_size : AFP_BLOCK_SIZE;
	s->block_nr = o->block_count ? o->block_count : AFP_BLOCK_COUNT;
	s->snaplen = o->snaplen ? o->snaplen : AFP_SNAPLEN;
	s->poll_ms = o->poll_ms ? o->poll_ms : AFP_POLL_MS;
	s->block_tov_ms =
	    o->block_timeout_ms ? o->block_timeout_ms : AFP_BLOCK_TOV_MS;
	if (s->block_tov_ms > AFP_BLOCK_TOV_MAX_MS) {
		sl_live_note_add(o, "ring timeout %u ms: at most %u (a stop waits "
				 "up to twice it for the last block)",
				 s->block_tov_ms, (unsigned)AFP_BLOCK_TOV_MAX_MS);
		return SL_E_OPTION;
	}
	if (fs % TPACKET_ALIGNMENT || fs < TPACKET3_HDRLEN) {
		sl_live_note_add(o, "frame size %u: must be a multiple of %u and >= %u",
			 fs, TPACKET_ALIGNMENT, (unsigned)TPACKET3_HDRLEN);
		return SL_E_OPTION;
	}
	if (s->block_size % page || s->block_size % fs) {
		sl_live_note_add(o,
			 "block size %u: must be a multiple of the page size "
			 "(%u) and of the frame size (%u)",
			 s->block_size, page, fs);
		return SL_E_OPTION;
	}
	/* the kernel's limit: frame and byte counts fit 32 bits */
	if ((uint64_t)s->block_size * s->block_nr > UINT32_MAX) {
		sl_live_note_add(o, "ring of %u blocks of %u bytes is too large",
			 s->block_nr, s->block_size);
		return SL_E_OPTION;
	}
	if (o->fanout_group > 0xffff) {
		sl_live_note_add(o, "fanout group %u: must be below 65536",
			 o->fanout_group);
		return SL_E_OPTION;
	}
	*frame_size = fs;
	return 0;
}

/* SIOCGIFHWADDR's hardware type -> our link type. */
static int afp_linktype_of(struct afp_source *s, struct sl_live_opts *o)
{
	struct ifreq ifr;

	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", o->ifname);
	if (ioctl(s->fd, SIOCGIFHWADDR, &ifr) < 0)
		return afp_errno(o, errno, "SIOCGIFHWADDR");
	switch (ifr.ifr_hwaddr.sa_family) {
	case ARPHRD_LOOPBACK:
		/* a frame sent on lo comes back as received: its outgoing
		 * copy would count every packet twice (libpcap drops it too) */
		s->loopback = 1;
		/* fall through */
	case ARPHRD_ETHER:
		s->linktype = SL_LINK_EN10MB;
		return 0;
	case ARPHRD_NONE:
	case ARPHRD_PPP:
	case ARPHRD_RAWIP:
	case ARPHRD_TUNNEL:
	case ARPHRD_TUNNEL6:
	case ARPHRD_SIT:
		s->linktype = SL_LINK_RAW;
		return 0;
	}
	sl_live_note_add(o, "interface %s: hardware type %u not supported", o->ifname,
		 ifr.ifr_hwaddr.sa_family);
	return SL_E_LINKTYPE;
}

static int afp_set_int(struct afp_source *s, int opt, int val)
{
	if (setsockopt(s->fd, SOL_PACKET, opt, &val, sizeof(val)) < 0)
		return -errno;
	return 0;
}

/* Without a user filter: detach the drop-all one, or cut packets to the
 * snaplen in the kernel (less to copy into the ring). */
static int afp_filter_none(struct afp_source *s, struct sl_live_opts *o)
{
	int rc = 0, dummy = 0;

	if (s->snaplen >= AFP_SNAPLEN) {
		if (setsockopt(s->fd, SOL_SOCKET, SO_DETACH_FILTER, &dummy,
			       sizeof(dummy)))
			rc = -errno;
	} else {
		rc = afp_attach_const(s, s->snaplen);
	}
	if (rc)
		sl_live_note_add(o, "replacing the drop-all filter: %s", strerror(-rc));
	return rc;
}

/* The kernel takes an 802.1Q tag off the frame before a socket filter
 * runs, and libpcap compiles 'vlan' for that (the kernel's tag fields)
 * only on a handle open on the interface: its code generation flags are
 * not public. So a short-lived one compiles; where it cannot open, the
 * code for a frame as in a file does (the tag is then not seen). */
static int afp_compile(struct afp_source *s, struct sl_live_opts *o,
		       struct bpf_program *prog)
{
	int dlt = s->linktype == SL_LINK_RAW ? DLT_RAW : DLT_EN10MB;
	char errbuf[PCAP_ERRBUF_SIZE];
	pcap_t *p;
	int rc = 0;

	p = pcap_create(o->ifname, errbuf);
	if (!p)
		goto out_dead;
	if (pcap_set_snaplen(p, (int)s->snaplen) || pcap_activate(p) < 0 ||
	    pcap_datalink(p) != dlt) {
		pcap_close(p);
		goto out_dead;
	}
	if (pcap_compile(p, prog, o->filter, 1, PCAP_NETMASK_UNKNOWN)) {
		snprintf(o->note, sizeof(o->note), "bad filter '%s': %s",
			 o->filter, pcap_geterr(p));
		rc = SL_E_OPTION;
	}
	pcap_close(p);
	return rc;

out_dead:
	rc = sl_filter_compile(o->filter, dlt, s->snaplen, prog, o->note,
			       sizeof(o->note));
	return rc == -EINVAL ? SL_E_OPTION : rc;
}

/* Compiles the user's filter for the link type and attaches it. */
static int afp_filter(struct afp_source *s, struct sl_live_opts *o)
{
	struct bpf_program prog;
	int rc;

	if (!o->filter || !o->filter[0])
		return afp_filter_none(s, o);
	memset(&prog, 0, sizeof(prog));
	rc = afp_compile(s, o, &prog);
	if (rc)
		return rc;
	if (prog.bf_len > BPF_MAXINSNS) {
		sl_live_note_add(o, "filter '%s': too long (%u instructions)",
			 o->filter, prog.bf_len);
		rc = SL_E_OPTION;
		goto out_free;
	}
	/* struct bpf_insn and struct sock_filter have the same layout */
	rc = afp_attach(s, (struct sock_filter *)prog.bf_insns, prog.bf_len);
	if (rc)
		sl_live_note_add(o, "filter '%s': SO_ATTACH_FILTER: %s", o->filter,
			 strerror(-rc));
out_free:
	pcap_freecode(&prog);
	return rc;
}

/* PACKET_RX_RING; on ENOMEM halves the block count down to a quarter. */
static int afp_ring(struct afp_source *s, struct sl_live_opts *o,
		    uint32_t frame_size)
{
	uint32_t want = s->block_nr, floor = want / 4 ? want / 4 : 1;
	struct tpacket_req3 req;

	for (;;) {
		memset(&req, 0, sizeof(req));
		req.tp_block_size = s->block_size;
		req.tp_block_nr = s->block_nr;
		req.tp_frame_size = frame_size;
		req.tp_frame_nr = s->block_size / frame_size * s->block_nr;
		req.tp_retire_blk_tov = s->block_tov_ms;
		req.tp_feature_req_word = TP_FT_REQ_FILL_RXHASH;
		if (!setsockopt(s->fd, SOL_PACKET, PACKET_RX_RING, &req,
				sizeof(req)))
			break;
		if (errno != ENOMEM || s->block_nr / 2 < floor)
			return afp_errno(o, errno, "PACKET_RX_RING");
		s->block_nr /= 2;
	}
	if (s->block_nr != want)
		sl_live_note_add(o, "ring shrunk to %u blocks of %u bytes: ENOMEM",
			 s->block_nr, s->block_size);
	return 0;
}

static int afp_map(struct afp_source *s, struct sl_live_opts *o)
{
	void *m;

	s->ring_len = (size_t)s->block_size * s->block_nr;
	m = mmap(NULL, s->ring_len, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_LOCKED, s->fd, 0);
	if (m == MAP_FAILED)
		m = mmap(NULL, s->ring_len, PROT_READ | PROT_WRITE, MAP_SHARED,
			 s->fd, 0);
	if (m == MAP_FAILED)
		return afp_errno(o, errno, "mmap of the ring");
	s->ring = m;
	return 0;
}

static int afp_bind(struct afp_source *s, struct sl_live_opts *o)
{
	struct sockaddr_ll sll;

	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = s->ifindex;
	if (bind(s->fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		return afp_errno(o, errno, "bind");
	return 0;
}

/* Promiscuous mode, outgoing packets, fanout. */
static int afp_options(struct afp_source *s, struct sl_live_opts *o)
{
	int rc;

	if (o->promisc > 0) {
		struct packet_mreq mr;

		memset(&mr, 0, sizeof(mr));
		mr.mr_ifindex = s->ifindex;
		mr.mr_type = PACKET_MR_PROMISC;
		if (setsockopt(s->fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr,
			       sizeof(mr)) < 0)
			return afp_errno(o, errno, "promiscuous mode");
	}
	if ((o->ignore_outgoing > 0 || s->loopback) &&
	    afp_set_int(s, PACKET_IGNORE_OUTGOING, 1)) {
		s->skip_outgoing = 1;
		sl_live_note_add(o, "PACKET_IGNORE_OUTGOING not supported: outgoing "
			    "packets skipped after the ring");
	}
	if (o->fanout_group > 0) {
		uint32_t mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG;
		int arg = (int)(mode << 16 | o->fanout_group);

		rc = afp_set_int(s, PACKET_FANOUT, arg);
		if (rc) {
			sl_live_note_add(o,
				 "fanout group %u: %s (a group needs the same "
				 "interface and mode on every socket)",
				 o->fanout_group, strerror(-rc));
			return rc;
		}
	}
	return 0;
}

static int afp_open(struct afp_source *s, struct sl_live_opts *o)
{
	uint32_t frame_size;
	int rc;

	rc = afp_opts(s, o, &frame_size);
	if (rc)
		return rc;
	s->ifindex = (int)if_nametoindex(o->ifname);
	if (!s->ifindex)
		return sl_live_no_interface(o);
	/* protocol 0: nothing is received until bind() */
	s->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		return afp_errno(o, errno, "socket");
	rc = afp_linktype_of(s, o);
	if (rc)
		return rc;
	rc = afp_attach_const(s, 0); /* drop all until everything is set */
	if (rc)
		return afp_errno(o, -rc, "SO_ATTACH_FILTER");
	rc = afp_set_int(s, PACKET_VERSION, TPACKET_V3);
	if (rc)
		return afp_errno(o, -rc, "PACKET_VERSION TPACKET_V3");
	rc = afp_ring(s, o, frame_size);
	if (rc)
		return rc;
	rc = afp_map(s, o);
	if (rc)
		return rc;
	rc = afp_bind(s, o);
	if (rc)
		return rc;
	rc = afp_options(s, o);
	if (rc)
		return rc;
	afp_drain(s);
	return afp_filter(s, o);
}

int sl_source_open_afpacket(struct sl_source **out, struct sl_live_opts *o)
{
	struct afp_source *s;
	int rc;

	rc = sl_live_open_check(out, o);
	if (rc)
		return rc;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base.ops = &afp_ops;
	s->fd = -1;
	rc = afp_open(s, o);
	if (rc)
		goto out_free;
	*out = &s->base;
	return 0;

out_free:
	afp_teardown(s);
	free(s);
	return rc;
}
