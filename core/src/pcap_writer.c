/* pcap_writer.c - classic pcap output (microsecond timestamps, host byte
 * order) through one buffer allocated at open.
 *
 * A failed write loses the packets it did not get out whole: the records a
 * short write got out stay, the half record after them is cut off the file
 * where it can be (a regular file), so later packets still land in a
 * readable file. The file header stays pending until it reaches the file,
 * so a writer that starts on a full disk recovers too.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fileio.h"
#include "sluice.h"

#define PCAP_MAGIC_US	 0xa1b2c3d4U
#define PCAP_HDR_LEN	 24
#define PCAP_REC_LEN	 16
#define PCAP_SNAPLEN_DEF 262144
#define WRITER_BUF	 (256 * 1024)
#define NS_PER_S	 1000000000ULL

struct sl_pcap_writer {
	int fd;
	uint32_t snaplen;
	uint32_t linktype;
	uint32_t len;	   /* bytes in buf */
	uint32_t buf_pkts; /* packets in buf: lost together if it fails */
	off_t good;	   /* file offset after the last record that landed */
	int hdr_done;	   /* the file header reached the file */
	int hdr_counted;   /* st.bytes has it: it landed, or waits with data */
	struct sl_writer_stats st;
	uint8_t hdr[PCAP_HDR_LEN];
	uint8_t buf[WRITER_BUF];
};

/* After a partial write, cut the file back so the next record follows a
 * complete one. A pipe cannot be cut: the half record stays, counted. */
static void rewind_to_good(struct sl_pcap_writer *w)
{
	if (ftruncate(w->fd, w->good) ||
	    lseek(w->fd, w->good, SEEK_SET) != w->good)
		w->st.partial++;
}

/* Of the first done bytes of buf that a failed write got out, the bytes
 * of the header (if pending) and whole records; *pkts: those records. */
static size_t whole_records(const struct sl_pcap_writer *w, size_t done,
			    uint32_t *pkts)
{
	size_t off = w->hdr_done ? 0 : PCAP_HDR_LEN;

	*pkts = 0;
	if (done < off)
		return 0;
	while (off + PCAP_REC_LEN <= w->len) {
		uint32_t caplen;
		size_t end;

		memcpy(&caplen, w->buf + off + 8, sizeof(caplen));
		end = off + PCAP_REC_LEN + caplen;
		if (end > done)
			break;
		off = end;
		(*pkts)++;
	}
	return off;
}

static void count_loss(struct sl_pcap_writer *w, uint32_t pkts, uint64_t bytes,
		       int err)
{
	w->st.packets -= pkts;
	w->st.bytes -= bytes;
	w->st.errors += pkts;
	w->st.last_error = err;
}

static void header_landed(struct sl_pcap_writer *w)
{
	w->hdr_done = 1;
	if (!w->hdr_counted)
		w->st.bytes += PCAP_HDR_LEN;
	w->hdr_counted = 1;
}

/* The file header goes first in the buffer until it has reached the file. */
static void buf_reset(struct sl_pcap_writer *w)
{
	w->len = 0;
	w->buf_pkts = 0;
	if (!w->hdr_done) {
		memcpy(w->buf, w->hdr, PCAP_HDR_LEN);
		w->len = PCAP_HDR_LEN;
	}
}

/* Writes buf, then the optional extra record (a packet too large for the
 * buffer) in the same call. */
static int out_write(struct sl_pcap_writer *w, const void *rec, size_t rec_len,
		     const void *data, size_t data_len, uint32_t extra_pkts)
{
	struct iovec iov[3] = {
	    {.iov_base = w->buf, .iov_len = w->len},
	    {.iov_base = (void *)rec, .iov_len = rec_len},
	    {.iov_base = (void *)data, .iov_len = data_len},
	};
	size_t done, keep, total = w->len + rec_len + data_len;
	uint32_t pkts = w->buf_pkts + extra_pkts, landed;
	uint64_t lost;
	int rc;

	if (!total)
		return 0;
	rc = sl_write_iov_all(w->fd, iov, 3, &done);
	if (!rc) {
		w->good += (off_t)total;
		header_landed(w);
		buf_reset(w);
		return 0;
	}
	keep = whole_records(w, done, &landed);
	/* the records' bytes that did not land; a pending header that did
	 * not land leaves the count too, and is written again (and counted
	 * again) with the next data */
	lost = total - keep - (!w->hdr_done && !keep ? PCAP_HDR_LEN : 0);
	if (keep) {
		w->good += (off_t)keep;
		header_landed(w);
	} else if (!w->hdr_done && w->hdr_counted) {
		w->st.bytes -= PCAP_HDR_LEN;
		w->hdr_counted = 0;
	}
	if (done > keep)
		rewind_to_good(w);
	count_loss(w, pkts - landed, lost, rc);
	buf_reset(w);
	return rc;
}

int sl_pcap_writer_flush(struct sl_pcap_writer *w)
{
	if (!w)
		return -EINVAL;
	if (!w->buf_pkts && w->hdr_done)
		return 0;
	return out_write(w, NULL, 0, NULL, 0, 0);
}

static void put_hdr(struct sl_pcap_writer *w, uint32_t linktype)
{
	struct {
		uint32_t magic;
		uint16_t major, minor;
		int32_t zone;
		uint32_t sigfigs, snaplen, linktype;
	} h = {PCAP_MAGIC_US, 2, 4, 0, 0, w->snaplen, linktype};

	_Static_assert(sizeof(h) == PCAP_HDR_LEN, "pcap file header");
	memcpy(w->hdr, &h, sizeof(h));
}

int sl_pcap_writer_open(struct sl_pcap_writer **out, const char *path,
			uint32_t linktype, uint32_t snaplen)
{
	struct sl_pcap_writer *w;
	int rc;

	if (!out || !path)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->snaplen = snaplen ? snaplen : PCAP_SNAPLEN_DEF;
	w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		rc = -errno;
		goto out_free;
	}
	w->linktype = linktype;
	put_hdr(w, linktype);
	buf_reset(w);
	w->st.bytes = PCAP_HDR_LEN;
	w->hdr_counted = 1;
	*out = w;
	return 0;

out_free:
	free(w);
	return rc;
}

static void put_rec(uint8_t *p, uint64_t ts_ns, uint32_t caplen,
		    uint32_t wirelen)
{
	uint32_t r[4] = {(uint32_t)(ts_ns / NS_PER_S),
			 (uint32_t)(ts_ns % NS_PER_S / 1000), caplen, wirelen};

	memcpy(p, r, sizeof(r));
}

int sl_pcap_writer_write(struct sl_pcap_writer *w, uint64_t ts_ns,
			 const uint8_t *data, uint32_t caplen, uint32_t wirelen,
			 uint32_t linktype)
{
	uint8_t rec[PCAP_REC_LEN];
	size_t need;
	int rc = 0;

	if (!w || (!data && caplen))
		return -EINVAL;
	if (linktype != w->linktype) {
		w->st.errors++;
		w->st.last_error = SL_E_LINKMIX;
		return SL_E_LINKMIX;
	}
	if (caplen > w->snaplen)
		caplen = w->snaplen;
	/* a record claiming less on the wire than captured is corrupt */
	if (wirelen < caplen)
		wirelen = caplen;
	need = PCAP_REC_LEN + (size_t)caplen;
	w->st.packets++;
	w->st.bytes += need + (w->hdr_counted ? 0 : PCAP_HDR_LEN);
	w->hdr_counted = 1;
	if (w->len + need > WRITER_BUF) {
		put_rec(rec, ts_ns, caplen, wirelen);
		if (need + (w->hdr_done ? 0 : PCAP_HDR_LEN) > WRITER_BUF)
			/* larger than the buffer: goes out with it, uncopied */
			return out_write(w, rec, sizeof(rec), data, caplen, 1);
		/* a failure loses what was buffered, not this packet: it
		 * goes into the emptied buffer and is tried with the next */
		rc = out_write(w, NULL, 0, NULL, 0, 0);
	}
	put_rec(w->buf + w->len, ts_ns, caplen, wirelen);
	memcpy(w->buf + w->len + PCAP_REC_LEN, data, caplen);
	w->len += (uint32_t)need;
	w->buf_pkts++;
	return rc;
}

const struct sl_writer_stats *
sl_pcap_writer_stats(const struct sl_pcap_writer *w)
{
	return w ? &w->st : NULL;
}

int sl_pcap_writer_close(struct sl_pcap_writer *w)
{
	int rc;

	if (!w)
		return 0;
	rc = sl_pcap_writer_flush(w);
	/* a delayed write error (NFS, quota) shows up only here */
	if (close(w->fd) && !rc)
		rc = -errno;
	free(w);
	return rc;
}
