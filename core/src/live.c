/* live.c - for the live sources: the checks their open starts with, and
 * the note they write. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "source.h"

int sl_live_open_check(struct sl_source **out, struct sl_live_opts *o)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!o)
		return -EINVAL;
	o->note[0] = '\0';
	if (!o->ifname || !o->ifname[0]) {
		snprintf(o->note, sizeof(o->note), "no interface given");
		return SL_E_OPTION;
	}
	return 0;
}

uint64_t sl_live_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int sl_live_no_interface(struct sl_live_opts *o)
{
	sl_live_note_add(o, "no such interface '%s'%s", o->ifname,
			 strcmp(o->ifname, "any")
			     ? ""
			     : " (libpcap's name for all of them: --backend pcap)");
	return -ENODEV;
}

void sl_live_note_add(struct sl_live_opts *o, const char *fmt, ...)
{
	size_t len = strnlen(o->note, sizeof(o->note));
	va_list ap;

	if (len >= sizeof(o->note) - 1)
		return;
	if (len) {
		snprintf(o->note + len, sizeof(o->note) - len, "; ");
		len = strnlen(o->note, sizeof(o->note));
	}
	va_start(ap, fmt);
	vsnprintf(o->note + len, sizeof(o->note) - len, fmt, ap);
	va_end(ap);
}
