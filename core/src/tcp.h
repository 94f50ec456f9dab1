/* tcp.h - TCP connection state and Zeek-style history.
 *
 * Each TCP packet moves its flow's state (SYN sent, established, closing,
 * ...) and adds the history letters of what it carried, once per letter
 * and direction (upper case: the initiator). A RST, or the ACK after both
 * FINs that leaves neither unacknowledged, ends the flow. It runs for every
 * TCP packet, from packet.c: it is static inline here, not in a .c file of
 * its own, so that it still inlines into the packet path.
 */
#ifndef SL_TCP_H
#define SL_TCP_H

#include "bytes.h"
#include "engine.h"

enum { H_SYN, H_SYNACK, H_ACK, H_DATA, H_FIN, H_RST };

static inline void history_add(struct sl_flow *f, int dir, int letter)
{
	static const char up[] = "SHADFR", low[] = "shadfr";

	if (f->hist_seen[dir] & (1u << letter))
		return;
	f->hist_seen[dir] |= 1u << letter;
	if (f->hist_len < sizeof(f->rec.hist))
		f->rec.hist[f->hist_len++] = dir ? low[letter] : up[letter];
}

/* A SYN without ACK on a flow's tuple opens a new connection when the
 * flow is closed, began mid-connection (no SYN at all), or had a SYN from
 * this side with another sequence number (a retransmission keeps its
 * own; the other side's SYN is a simultaneous open). Returns the reason
 * the flow ends with before the packet starts a new one, or 0. */
static inline int tcp_reuse(const struct sl_flow *f, int dir, uint8_t flags,
			    const uint8_t *th)
{
	if ((flags & 0x16) != 0x02) /* SYN, no ACK, no RST */
		return 0;
	if (f->close_reason)
		return f->close_reason;
	if (!(f->syn_seen & (1u << dir)))
		return f->syn_seen ? 0 : SL_END_REUSED;
	return rd32(th + 4) != f->syn_seq[dir] ? SL_END_REUSED : 0;
}

/* The sequence and acknowledgment numbers matter only around FINs: each
 * FIN's end is kept, and acknowledgments checked against the other
 * side's. */
static inline void tcp_fin_numbers(struct sl_flow *f, int dir, uint8_t flags,
				   uint16_t payload, const uint8_t *th)
{
	uint32_t seq = rd32(th + 4), ack = rd32(th + 8);
	int other = !dir;

	if ((flags & 0x10) && (f->fin_seen & (1u << other)) &&
	    (int32_t)(ack - f->fin_end[other]) >= 0)
		f->fin_acked |= (uint8_t)(1u << other);
	if (flags & 0x01) {
		f->fin_end[dir] = seq + payload + 1;
		f->seq_known |= (seq | ack) != 0;
	}
}

/* Updates TCP state and history; returns an end reason when this packet
 * closes the flow, else 0. th: the TCP header, for tcp_fin_numbers. */
static inline int tcp_update(struct sl_flow *f, int dir, uint8_t flags,
			     uint16_t payload, const uint8_t *th)
{
	int syn = flags & 0x02, ack = flags & 0x10, fin = flags & 0x01;
	uint8_t *st = &f->rec.state_code;

	if (syn)
		history_add(f, dir, ack ? H_SYNACK : H_SYN);
	if (payload)
		history_add(f, dir, H_DATA);
	else if (ack && !(flags & 0x07))
		history_add(f, dir, H_ACK);
	if (fin)
		history_add(f, dir, H_FIN);
	/* closed: what comes late (tcp_reuse took a new SYN) changes nothing */
	if (f->close_reason)
		return 0;
	if (syn && !ack && !(f->syn_seen & (1u << dir))) {
		f->syn_seen |= (uint8_t)(1u << dir);
		f->syn_seq[dir] = rd32(th + 4);
	}
	if (flags & 0x04) {
		history_add(f, dir, H_RST);
		*st = SL_TCP_RESET;
		return SL_END_RST;
	}

	if (*st == SL_TCP_NONE)
		*st = syn && !ack ? SL_TCP_SYN_SENT : SL_TCP_MIDSTREAM;
	else if (*st == SL_TCP_SYN_SENT && syn && ack && dir)
		*st = SL_TCP_SYN_RECEIVED;
	else if (*st == SL_TCP_SYN_RECEIVED && ack && !syn && !dir)
		*st = SL_TCP_ESTABLISHED;

	if (fin || f->fin_seen)
		tcp_fin_numbers(f, dir, flags, payload, th);
	/* after both FINs, the ACK of the last one unacknowledged: in a
	 * simultaneous close both sides send one */
	if (f->fin_seen == 3 && ack && !fin && !syn &&
	    (f->fin_acked == 3 || !f->seq_known)) {
		*st = SL_TCP_CLOSED;
		return SL_END_FIN;
	}
	if (fin) {
		f->fin_seen |= 1u << dir;
		*st = f->fin_seen == 3 ? SL_TCP_CLOSING : SL_TCP_FIN_WAIT;
	}
	return 0;
}

#endif
