/* signal.c - a clean stop on SIGINT/SIGTERM: the first signal only sets a
 * flag the run loop reads between batches; the handler then is gone
 * (SA_RESETHAND), so a second signal ends the process the default way.
 * Nothing here exits. sl_signal_ignore_xfsz() lets writes past the file
 * size limit fail (EFBIG) instead of killing the process. */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "sluice.h"

static volatile sig_atomic_t pending;

static void on_signal(int sig)
{
	struct sigaction dfl;

	pending = sig;
	/* the other signal of the pair ends the process too */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigaction(sig == SIGINT ? SIGTERM : SIGINT, &dfl, NULL);
}

int sl_signal_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESETHAND;
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

int sl_signal_ignore_xfsz(void)
{
	struct sigaction sa;

	if (sigaction(SIGXFSZ, NULL, &sa))
		return -errno;
	/* a handler, or SIG_IGN, is the program's own choice */
	if ((sa.sa_flags & SA_SIGINFO) || sa.sa_handler != SIG_DFL)
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGXFSZ, &sa, NULL))
		return -errno;
	return 0;
}
