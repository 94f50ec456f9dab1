/* filter.c - pcap-syntax filters compiled by libpcap, for any source. */
#include <errno.h>
#include <pcap/pcap.h>
#include <stdio.h>

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
