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

static const char digit_pairs[] = "00010203040506070809"
				  "10111213141516171819"
				  "20212223242526272829"
				  "30313233343536373839"
				  "40414243444546474849"
				  "50515253545556575859"
				  "60616263646566676869"
				  "70717273747576777879"
				  "80818283848586878889"
				  "90919293949596979899";

/* The n lowest decimal digits of v ending at end, two at a time. */
static inline void put_digits_before(char *end, uint64_t v, int n)
{
	for (; n >= 2; n -= 2) {
		unsigned i = (unsigned)(v % 100) * 2;

		v /= 100;
		*--end = digit_pairs[i + 1];
		*--end = digit_pairs[i];
	}
	if (n)
		*--end = (char)('0' + v % 10);
}

/* v < 10^6 as six digit characters, the first in the lowest byte: a
 * number is made in registers, not in bytes read back at once (which
 * stalls the store-to-load forwarding). */
static inline uint64_t six_digits_word(uint32_t v)
{
	uint32_t hi = v / 10000, lo = v % 10000;
	uint16_t a, b, c;

	memcpy(&a, &digit_pairs[hi * 2], 2);
	memcpy(&b, &digit_pairs[lo / 100 * 2], 2);
	memcpy(&c, &digit_pairs[lo % 100 * 2], 2);
	return a | (uint64_t)b << 16 | (uint64_t)c << 32;
}

static inline char *put_u64(char *p, uint64_t v)
{
	int digits = 1;

	for (uint64_t t = v; t >= 10; t /= 10)
		digits++;
	put_digits_before(p + digits, v, digits);
	return p + digits;
}

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
	put_digits_before(p + n, f, n);
	return p + n;
}

/* A non-negative double with 12 significant digits, as a JSON number
 * (trailing zeros dropped): 5e-12 relative at most, without printf.
 * Values outside [1e-6, 1e15) and not 0 go through printf's %.12g.
 * The 12 digits are characters of one 128-bit word, cut at the point
 * by shifts and stored whole: writes up to 24 bytes at p, whatever the
 * number's length. */
char *sl_put_double_slow(char *p, double v);

static inline char *put_double(char *p, double v)
{
	static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,
				       1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
				       1e12, 1e13, 1e14, 1e15, 1e16, 1e17};
	const uint64_t zero_chars = 0x3030303030303030ULL;
	unsigned __int128 text, low;
	uint64_t digits, nonzero;
	int mag = 0, zeros = 0, frac, end, point;

	if (v == 0) {
		*p++ = '0';
		return p;
	}
	if (!(v >= 1e-6 && v < 1e15))
		return sl_put_double_slow(p, v);
	if (v >= 1e12) /* the integer is as precise */
		return put_u64(p, (uint64_t)(v + 0.5));
	if (v < 1) {
		/* 0. then the zeros after the point, then 12 digits */
		while (zeros < 5 && v * pow10[zeros + 1] < 1)
			zeros++;
		frac = 12 + zeros;
	} else {
		while (mag < 11 && v >= pow10[mag + 1])
			mag++;
		frac = 11 - mag;
	}
	digits = (uint64_t)(v * pow10[frac] + 0.5);
	if (digits >= 1000000000000ULL ||
	    __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__) {
		/* rounded up to the next power of ten (a digit more), or
		 * characters that a word does not hold in reading order */
		uint64_t unit = (uint64_t)pow10[frac];

		return put_decimals(put_u64(p, digits / unit), digits % unit,
				    frac);
	}
	low = six_digits_word((uint32_t)(digits % 1000000));
	text = six_digits_word((uint32_t)(digits / 1000000)) | low << 48;
	/* the last digit that is not '0' (digits >= 10^11: there is one) */
	nonzero = (uint64_t)(text >> 64) ^ (zero_chars & 0xffffffff);
	if (nonzero)
		end = 8 + (71 - __builtin_clzll(nonzero)) / 8;
	else
		end = (71 - __builtin_clzll((uint64_t)text ^ zero_chars)) / 8;
	if (v < 1) {
		memcpy(p, "0.00000", 8);
		p += 2 + zeros;
		memcpy(p, &text, 16);
		return p + end;
	}
	point = mag + 1;
	if (end > point) {
		low = text & (((unsigned __int128)1 << (8 * point)) - 1);
		text = low | (unsigned __int128)'.' << (8 * point) |
		       (text >> (8 * point)) << (8 * point + 8);
		end++;
	} else {
		end = point;
	}
	memcpy(p, &text, 16);
	return p + end;
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
