/* pcap_floor.c - the libpcap read floor: the cheapest useful pass over a
 * capture file. pcap_open_offline + pcap_next_ex, touching every packet
 * (summing caplen and one byte of each frame so the data is really read).
 * No flow work at all: sluice cannot be faster than this on the same file
 * through libpcap, so bench/run.sh reports sluice's rates against it.
 *
 * usage: pcap_floor FILE
 * prints one line: packets N seconds S rss_kb K sum X
 * build: gcc -O2 -o pcap_floor pcap_floor.c -lpcap
 */
#define _GNU_SOURCE
#include <pcap/pcap.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>

static double monotonic(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	char err[PCAP_ERRBUF_SIZE];
	struct pcap_pkthdr *h;
	const unsigned char *data;
	uint64_t packets = 0, sum = 0;
	struct rusage ru;
	double t0, t1;
	pcap_t *p;
	int rc;

	if (argc != 2) {
		fprintf(stderr, "usage: %s FILE.pcap\n", argv[0]);
		return 2;
	}
	t0 = monotonic();
	p = pcap_open_offline(argv[1], err);
	if (!p) {
		fprintf(stderr, "pcap_floor: %s: %s\n", argv[1], err);
		return 1;
	}
	while ((rc = pcap_next_ex(p, &h, &data)) == 1) {
		packets++;
		sum += h->caplen;
		if (h->caplen)
			sum += data[h->caplen - 1];
	}
	t1 = monotonic();
	if (rc == PCAP_ERROR) {
		fprintf(stderr, "pcap_floor: %s: %s\n", argv[1], pcap_geterr(p));
		pcap_close(p);
		return 1;
	}
	pcap_close(p);
	getrusage(RUSAGE_SELF, &ru);
	printf("packets %llu seconds %.6f rss_kb %ld sum %llu\n",
	       (unsigned long long)packets, t1 - t0, ru.ru_maxrss,
	       (unsigned long long)sum);
	return 0;
}
