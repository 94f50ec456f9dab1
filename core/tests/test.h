/* test.h - the whole C test harness: CHECK records a result, test_done()
 * prints the closing "N passed, N failed" line and gives the exit code. */
#ifndef SL_TEST_H
#define SL_TEST_H
#include <stdio.h>

#include "sluice.h"

static int test_passed, test_failed;

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (cond) {                                                    \
			test_passed++;                                         \
		} else {                                                       \
			test_failed++;                                         \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__,          \
				__LINE__, #cond);                              \
		}                                                              \
	} while (0)

#define CHECK_EQ(a, b)                                                         \
	do {                                                                   \
		long long _a = (long long)(a), _b = (long long)(b);            \
		if (_a == _b) {                                                \
			test_passed++;                                         \
		} else {                                                       \
			test_failed++;                                         \
			fprintf(stderr,                                        \
				"FAIL %s:%d: %s == %s (%lld != %lld)\n",       \
				__FILE__, __LINE__, #a, #b, _a, _b);           \
		}                                                              \
	} while (0)

/* A record's features side by side, for tests that build records. */
struct test_features {
	struct sl_flow_stats stats;
	struct sl_splt splt;
	struct sl_app_label app;
};

static inline void test_features_point(struct sl_flow_rec *r,
				       struct test_features *t)
{
	r->stats = &t->stats;
	r->splt = &t->splt;
	r->app = &t->app;
}

static inline int test_done(void)
{
	printf("%d passed, %d failed\n", test_passed, test_failed);
	return test_failed ? 1 : 0;
}
#endif
