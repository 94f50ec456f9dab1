/* text.h - numbers and addresses appended as text, by hand (no
 * snprintf, no inet_ntop): the record formatters (json.c, clickhouse.c)
 * write millions of them. Each writes at p, without bounds checks (the
 * caller reserved room), and returns the end. Internal to the core. */
#ifndef SL_TEXT_H
#define SL_TEXT_H

#include <stdint.h>
#include <string.h>

#define PUT_LIT(p, lit)                                                        \
	(memcpy((p), (lit), sizeof(lit) - 1), (p) + sizeof(lit) - 1)

static inline char *put_str(char *p, const char *s)
{
	size_t n = strlen(s);

	memcpy(p, s, n);
	return p + n;
}

static inline char *put_u64(char *p, uint64_t v)
{
	static const char pairs[] = "00010203040506070809"
				    "10111213141516171819"
				    "20212223242526272829"
				    "30313233343536373839"
				    "40414243444546474849"
				    "50515253545556575859"
				    "60616263646566676869"
				    "70717273747576777879"
				    "80818283848586878889"
				    "90919293949596979899";
	int digits = 1;
	char *end;

	for (uint64_t t = v; t >= 10; t /= 10)
		digits++;
	end = p + digits;
	p = end;
	while (v >= 100) {
		unsigned i = (unsigned)(v % 100) * 2;

		v /= 100;
		*--p = pairs[i + 1];
		*--p = pairs[i];
	}
	if (v >= 10) {
		*--p = pairs[v * 2 + 1];
		*--p = pairs[v * 2];
	} else {
		*--p = (char)('0' + v);
	}
	return end;
}

/* A non-negative double with 12 significant digits, as a JSON number
 * (trailing zeros dropped): 5e-12 relative at most, without printf.
 * Values outside [1e-6, 1e15) and not 0 go through printf's %.12g. */
char *sl_put_double_slow(char *p, double v);

/* The n decimals of f (f < 10^n) after a point, without trailing zeros;
 * nothing when they are all zero. */
static inline char *put_decimals(char *p, uint64_t f, int n)
{
	while (n && f % 10 == 0) {
		f /= 10;
		n--;
	}
	if (!n)
		return p;
	*p++ = '.';
	for (int i = n - 1; i >= 0; i--) {
		p[i] = (char)('0' + f % 10);
		f /= 10;
	}
	return p + n;
}

static inline char *put_double(char *p, double v)
{
	static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,
				       1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
				       1e12, 1e13, 1e14, 1e15, 1e16, 1e17};
	uint64_t digits;
	int mag = 0, frac;
	char buf[24], *q;

	if (v == 0) {
		*p++ = '0';
		return p;
	}
	if (!(v >= 1e-6 && v < 1e15))
		return sl_put_double_slow(p, v);
	while (mag < 15 && v >= pow10[mag + 1])
		mag++;
	if (v < 1) {
		/* 1e-6 <= v < 1: 11 + k decimals, k leading zeros */
		int k = 0;

		while (v * pow10[k + 1] < 1)
			k++;
		frac = 12 + k;
		digits = (uint64_t)(v * pow10[frac] + 0.5);
	} else {
		/* from 1e12 on, the integer is as precise */
		frac = mag < 12 ? 11 - mag : 0;
		digits = (uint64_t)(v * pow10[frac] + 0.5);
	}
	/* the integer part, then the decimals without trailing zeros */
	q = put_u64(buf, digits / (uint64_t)pow10[frac]);
	p = (char *)memcpy(p, buf, (size_t)(q - buf)) + (q - buf);
	return put_decimals(p, digits % (uint64_t)pow10[frac], frac);
}

/* Nanoseconds as milliseconds, exactly (at most 6 decimals, no trailing
 * zeros): a time that is a whole number of ns needs no floating point. */
static inline char *put_ns_as_ms(char *p, uint64_t ns)
{
	return put_decimals(put_u64(p, ns / 1000000), ns % 1000000, 6);
}

static inline char *put_hex16(char *p, unsigned v)
{
	static const char hex[] = "0123456789abcdef";
	int shift = 12;

	while (shift > 0 && !(v >> shift & 0xf))
		shift -= 4;
	for (; shift >= 0; shift -= 4)
		*p++ = hex[v >> shift & 0xf];
	return p;
}

static inline char *put_ipv4(char *p, const uint8_t *a)
{
	for (int i = 0; i < 4; i++) {
		if (i)
			*p++ = '.';
		p = put_u64(p, a[i]);
	}
	return p;
}

/* RFC 5952 text, as glibc's inet_ntop writes it (by hand: inet_ntop
 * formats through sprintf): the longest run of two or more zero groups
 * (the first of equal ones) becomes "::", and an address whose first six
 * groups are zero (but not all of the seventh), or ::ffff:0:0/96, ends in
 * dotted IPv4. */
static inline char *put_ipv6(char *p, const uint8_t *a)
{
	unsigned g[8];
	int best = -1, best_len = 0, run = -1;

	for (int i = 0; i < 8; i++)
		g[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
	for (int i = 0; i <= 8; i++) {
		if (i < 8 && !g[i]) {
			if (run < 0)
				run = i;
			continue;
		}
		if (run >= 0 && i - run > best_len) {
			best = run;
			best_len = i - run;
		}
		run = -1;
	}
	if (best_len < 2)
		best = -1;
	for (int i = 0; i < 8; i++) {
		if (best >= 0 && i >= best && i < best + best_len) {
			if (i == best)
				*p++ = ':';
			continue;
		}
		if (i)
			*p++ = ':';
		if (i == 6 && best == 0 &&
		    (best_len == 6 || (best_len == 5 && g[5] == 0xffff)))
			return put_ipv4(p, a + 12);
		p = put_hex16(p, g[i]);
	}
	if (best >= 0 && best + best_len == 8)
		*p++ = ':';
	return p;
}

/* An address of ip_version 4 (the first 4 bytes) or 6. */
static inline char *put_ip(char *p, const uint8_t *a, int ip_version)
{
	return ip_version == 4 ? put_ipv4(p, a) : put_ipv6(p, a);
}

#endif
