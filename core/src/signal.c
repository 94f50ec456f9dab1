/* signal.c - a clean stop on SIGINT/SIGTERM: the first signal only sets a
 * flag the run loop reads between batches; a second one exits at once. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "sluice.h"

static volatile sig_atomic_t pending;

static void on_signal(int sig)
{
	if (pending)
		_exit(128 + sig);
	pending = sig;
}

int sl_signal_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* no SA_RESTART: a blocking poll returns and the loop sees the flag */
	if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL))
		return -errno;
	return 0;
}

int sl_signal_pending(void)
{
	return pending;
}
