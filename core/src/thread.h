/* thread.h - the core's helper threads (sinks' writers and senders, the
 * stream copier) start with the signals sent to the process blocked: they
 * then always reach the thread that runs the run loop, whose blocking poll
 * or read they interrupt, and the stop handler's mask (signal.c) keeps a
 * second signal from being taken for a first on another thread. SIGPIPE,
 * raised by the thread's own write, keeps its disposition (a closed stdout
 * ends the run as it ends any filter in a pipeline). */
#ifndef SL_THREAD_H
#define SL_THREAD_H

#include <pthread.h>
#include <signal.h>

/* pthread_create with those signals blocked in the new thread: 0 or
 * -errno. */
static inline int sl_thread_start(pthread_t *t, void *(*fn)(void *),
				  void *arg)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	sigdelset(&all, SIGPIPE);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -rc;
}

#endif
