/* test_source_multi.c - several captures as one input: merge order, ties,
 * directories, batches that hold packets of several files, failures in
 * the middle, files kept closed until due. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice.h"
#include "test.h"

#define NS 1000000000ULL

static char dir[64];

/* Each packet's 16 bytes say which file and which packet it is, so that
 * a packet read after its file's window moved on is caught. */
struct mark {
	uint32_t file, seq;
	uint64_t ts;
};

/* Writes a microsecond pcap of n packets of file id, times start + i *
 * step ns (rounded down to microseconds). */
static void write_pcap(const char *path, uint32_t linktype, uint32_t id,
		       uint32_t n, uint64_t start, uint64_t step)
{
	uint32_t hdr[6] = {0xa1b2c3d4U, 0x00040002U, 0, 0, 65535, linktype};
	FILE *f = fopen(path, "wb");
	uint32_t i;

	fwrite(hdr, sizeof(hdr), 1, f);
	for (i = 0; i < n; i++) {
		uint64_t ts = start + i * step;
		uint32_t rec[4] = {(uint32_t)(ts / NS),
				   (uint32_t)(ts % NS / 1000), sizeof(struct mark),
				   sizeof(struct mark)};
		struct mark mk = {id, i, ts - ts % 1000};

		fwrite(rec, sizeof(rec), 1, f);
		fwrite(&mk, sizeof(mk), 1, f);
	}
	fclose(f);
}

/* dir/name, in one of 8 buffers used in turn */
static const char *in_dir(const char *name)
{
	static char bufs[8][256];
	static int next;
	char *b = bufs[next++ % 8];

	snprintf(b, 256, "%s/%s", dir, name);
	return b;
}

/* Reads everything; checks time order and that every packet's data is
 * still its own when its batch is handed out. Counts per file id. */
struct seen {
	uint64_t packets, backwards, bad_data, batches, short_batches;
	uint64_t per_file[4];
	uint32_t first_ids[4];
	int end;
};

static void read_all(struct sl_source *src, struct seen *s)
{
	struct sl_packet_batch b;
	uint64_t last = 0;
	uint32_t next_seq[4] = {0};
	int rc;

	memset(s, 0, sizeof(*s));
	while ((rc = sl_source_next(src, &b)) > 0) {
		s->batches++;
		s->short_batches += b.count < SL_BATCH_MAX;
		for (uint32_t i = 0; i < b.count; i++) {
			const struct sl_packet *p = &b.pkt[i];
			struct mark mk;

			memcpy(&mk, p->data, sizeof(mk));
			if (mk.file >= 4 || mk.ts != p->ts_ns ||
			    mk.seq != next_seq[mk.file]) {
				s->bad_data++;
				continue;
			}
			next_seq[mk.file]++;
			if (s->packets < 4)
				s->first_ids[s->packets] = mk.file;
			s->per_file[mk.file]++;
			s->backwards += p->ts_ns < last;
			last = p->ts_ns;
			s->packets++;
		}
	}
	s->end = rc;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	while (d && readdir(d))
		n++;
	if (d)
		closedir(d);
	return n;
}

static void test_order_given_and_reversed(void)
{
	const char *a = in_dir("a.pcap"), *b = in_dir("b.pcap");
	struct sl_files_info fi;
	struct sl_source *src;
	struct seen s;
	char note[256];

	write_pcap(a, 1, 0, 1000, 100 * NS, 1000000);
	write_pcap(b, 1, 1, 700, 102 * NS, 1000000);
	/* in order; then reversed: the same merged stream */
	for (int rev = 0; rev < 2; rev++) {
		const char *paths[2] = {rev ? b : a, rev ? a : b};

		CHECK_EQ(sl_source_open_files(&src, paths, 2, note, sizeof(note)), 0);
		CHECK_EQ(sl_source_linktype(src), 1);
		read_all(src, &s);
		CHECK_EQ(s.end, 0);
		CHECK_EQ(s.packets, 1700);
		CHECK_EQ(s.bad_data, 0);
		CHECK_EQ(s.backwards, 0);
		CHECK_EQ(s.first_ids[0], 0);
		CHECK_EQ(sl_source_files(src, &fi), 0);
		CHECK_EQ(fi.files, 2);
		CHECK_EQ(fi.finished, 2);
		CHECK_EQ(fi.failed, 0);
		/* the last packet is b's, whichever was given first */
		CHECK(!strcmp(sl_source_file_name(src, fi.current), b));
		CHECK(sl_source_file_name(src, 2) == NULL);
		uint64_t pos, size;
		struct stat sa, sb;

		sl_source_progress(src, &pos, &size);
		stat(a, &sa);
		stat(b, &sb);
		CHECK_EQ(size, sa.st_size + sb.st_size);
		CHECK_EQ(pos, size);
		sl_source_close(src);
	}
}

/* Two captures of the same seconds (two interfaces): packets alternate,
 * so most batches hold packets of both, and each file runs out while its
 * packets are in the batch. */
static void test_interleaved(void)
{
	const char *a = in_dir("i0.pcap"), *b = in_dir("i1.pcap");
	const char *paths[2] = {a, b};
	struct sl_source *src;
	struct seen s;

	write_pcap(a, 1, 0, 3000, 10 * NS, 2000);
	write_pcap(b, 1, 1, 3000, 10 * NS + 1000, 2000);
	CHECK_EQ(sl_source_open_files(&src, paths, 2, NULL, 0), 0);
	read_all(src, &s);
	CHECK_EQ(s.end, 0);
	CHECK_EQ(s.packets, 6000);
	CHECK_EQ(s.per_file[0], 3000);
	CHECK_EQ(s.per_file[1], 3000);
	CHECK_EQ(s.backwards, 0);
	CHECK_EQ(s.bad_data, 0);
	/* batches end early only where a file ran out inside one */
	CHECK(s.batches <= 6000 / SL_BATCH_MAX + 2 * 3000 / SL_BATCH_MAX + 2);
	sl_source_close(src);
}

/* Equal times: the file given first goes first. */
static void test_ties(void)
{
	const char *a = in_dir("t0.pcap"), *b = in_dir("t1.pcap");
	struct sl_source *src;
	struct seen s;

	write_pcap(a, 1, 0, 2, 5 * NS, 0);
	write_pcap(b, 1, 1, 2, 5 * NS, 0);
	const char *ba[2] = {b, a};

	CHECK_EQ(sl_source_open_files(&src, ba, 2, NULL, 0), 0);
	read_all(src, &s);
	CHECK_EQ(s.packets, 4);
	CHECK_EQ(s.first_ids[0], 1);
	CHECK_EQ(s.first_ids[1], 1);
	CHECK_EQ(s.first_ids[2], 0);
	sl_source_close(src);
}

/* A directory as tcpdump -G writes it: files in name order, others
 * skipped; hundreds of files, never all open at once. */
static void test_directory(void)
{
	char d[256], name[64], note[256];
	const char *paths[1] = {d};
	struct sl_files_info fi;
	struct sl_packet_batch b;
	struct sl_source *src;
	int fds0, fds_max = 0, rc;
	uint64_t packets = 0, last = 0, backwards = 0;
	FILE *f;

	snprintf(d, sizeof(d), "%s", in_dir("rot"));
	mkdir(d, 0755);
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "rot/dump-%04d.pcap", i);
		/* 50 packets per second of a 50 s file each */
		write_pcap(in_dir(name), i % 2 ? 101 : 1, i % 4, 40,
			   (1000 + 50ULL * i) * NS, NS);
	}
	f = fopen(in_dir("rot/README.txt"), "w");
	fputs("not a capture\n", f);
	fclose(f);
	f = fopen(in_dir("rot/.dump-0300.pcap"), "w"); /* being written */
	fclose(f);
	mkdir(in_dir("rot/sub"), 0755);
	fds0 = count_fds();
	CHECK_EQ(sl_source_open_files(&src, paths, 1, note, sizeof(note)), 0);
	CHECK_EQ(sl_source_files(src, &fi), 0);
	CHECK_EQ(fi.files, 300);
	CHECK_EQ(fi.skipped, 2);
	CHECK(strstr(sl_source_file_name(src, 0), "rot/dump-0000.pcap") != NULL);
	CHECK(strstr(sl_source_file_name(src, 299), "rot/dump-0299.pcap") != NULL);
	while ((rc = sl_source_next(src, &b)) > 0) {
		int n = count_fds() - fds0;

		fds_max = n > fds_max ? n : fds_max;
		for (uint32_t i = 0; i < b.count; i++) {
			struct mark mk;

			memcpy(&mk, b.pkt[i].data, sizeof(mk));
			/* link types differ by file and are kept */
			CHECK_EQ(b.pkt[i].linktype, mk.file % 2 ? 101 : 1);
			backwards += b.pkt[i].ts_ns < last;
			last = b.pkt[i].ts_ns;
			packets++;
		}
	}
	CHECK_EQ(rc, 0);
	CHECK_EQ(packets, 300 * 40);
	CHECK_EQ(backwards, 0);
	CHECK(fds_max <= 2);
	sl_source_close(src);

	/* a directory whose capture of an unknown link type comes after a
	 * skipped entry and a good capture: named, nothing freed twice */
	snprintf(d, sizeof(d), "%s", in_dir("mixed"));
	mkdir(d, 0755);
	f = fopen(in_dir("mixed/NOTES"), "w");
	fputs("not a capture\n", f);
	fclose(f);
	write_pcap(in_dir("mixed/a.pcap"), 1, 0, 5, NS, NS);
	write_pcap(in_dir("mixed/b.pcap"), 147, 1, 5, NS, NS);
	write_pcap(in_dir("mixed/c.pcap"), 1, 2, 5, NS, NS);
	CHECK_EQ(sl_source_open_files(&src, paths, 1, note, sizeof(note)),
		 SL_E_LINKTYPE);
	CHECK(strstr(note, "mixed/b.pcap: unsupported link type 147") != NULL);

	/* a directory with no capture in it */
	mkdir(in_dir("empty"), 0755);
	paths[0] = in_dir("empty");
	CHECK_EQ(sl_source_open_files(&src, paths, 1, note, sizeof(note)), -ENOENT);
	CHECK(src == NULL);
	CHECK(strstr(note, "no capture") != NULL);
}

/* Files that cannot be read fail the open and are named; a file that
 * breaks while it is read ends there, the others are read to their end
 * and its error comes last. */
static void test_failures(void)
{
	const char *a = in_dir("f0.pcap"), *bad = in_dir("f1.pcap");
	const char *txt = in_dir("f2.txt"), *missing = in_dir("nope.pcap");
	struct sl_files_info fi;
	struct sl_source *src;
	struct seen s;
	char note[256];
	FILE *f;

	write_pcap(a, 1, 0, 500, 50 * NS, 1000000);
	write_pcap(bad, 1, 1, 500, 50 * NS + 500, 1000000);
	CHECK_EQ(truncate(bad, 24 + 300 * 32 + 20), 0); /* inside record 300 */
	f = fopen(txt, "w");
	fputs("hello\n", f);
	fclose(f);

	const char *p1[2] = {a, missing};

	CHECK_EQ(sl_source_open_files(&src, p1, 2, note, sizeof(note)), -ENOENT);
	CHECK(strstr(note, "nope.pcap") != NULL);
	const char *p2[2] = {txt, a};

	CHECK_EQ(sl_source_open_files(&src, p2, 2, note, sizeof(note)), SL_E_FORMAT);
	CHECK(strstr(note, "f2.txt") != NULL);

	const char *p3[2] = {bad, a};

	CHECK_EQ(sl_source_open_files(&src, p3, 2, note, sizeof(note)), 0);
	read_all(src, &s);
	CHECK_EQ(s.end, SL_E_TRUNCATED);
	CHECK_EQ(s.per_file[0], 500);
	CHECK_EQ(s.per_file[1], 300);
	CHECK_EQ(s.bad_data, 0);
	CHECK_EQ(sl_source_files(src, &fi), 0);
	CHECK_EQ(fi.failed, 1);
	CHECK(!strcmp(sl_source_file_name(src, fi.first_failed), bad));
	/* the error stays */
	struct sl_packet_batch b;

	CHECK_EQ(sl_source_next(src, &b), SL_E_TRUNCATED);
	sl_source_close(src);

	/* misuse */
	CHECK_EQ(sl_source_open_files(&src, NULL, 1, NULL, 0), -EINVAL);
	CHECK_EQ(sl_source_open_files(&src, p3, 0, NULL, 0), -EINVAL);
	CHECK_EQ(sl_source_files(NULL, &fi), -EINVAL);
	const char *p4[1] = {a};

	CHECK_EQ(sl_source_open_file(&src, a), 0);
	CHECK_EQ(sl_source_files(src, &fi), -ENOTSUP);
	CHECK(sl_source_file_name(src, 0) == NULL);
	sl_source_close(src);
	CHECK_EQ(sl_source_open_files(&src, p4, 1, NULL, 0), 0);
	read_all(src, &s);
	CHECK_EQ(s.packets, 500);
	sl_source_close(src);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/sl_multi_XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_order_given_and_reversed();
	test_interleaved();
	test_ties();
	test_directory();
	test_failures();
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd))
			fprintf(stderr, "could not remove %s\n", dir);
	}
	return test_done();
}
