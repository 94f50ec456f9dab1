/* signal.c - a clean stop on SIGINT/SIGTERM and a reload on SIGHUP, for
 * the length of a run that asks for it (sl_signal_install ..
 * sl_signal_restore; the core installs nothing by itself). The first
 * SIGINT/SIGTERM only sets a flag the run loop reads between steps; the
 * handler is then gone (SA_RESETHAND), so a second signal ends the process
 * the default way. A run loop that does not take the flag within GRACE_S
 * seconds (a policy handler that loops) is stopped by a watchdog: one line
 * on stderr, then the signal's default action. Either way an XDP program
 * the process attached (sl_signal_xdp_guard) is detached first. SIGHUP
 * sets another flag (sl_signal_take_reload) and stays caught: every SIGHUP asks for one more
 * reload (several before the loop looks are one), it never stops the run
 * and has no watchdog. Nothing here exits. sl_signal_ignore_xfsz() lets
 * writes past the file size limit fail (EFBIG) instead of killing the
 * process. sl_signal_child_block() and sl_signal_child_wait() let a
 * parent sleep until one of its children ends, without polling. */
#include <errno.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sluice.h"
#include "source.h"

#define GRACE_S 3
#define STR_(x) #x
#define STR(x) STR_(x)

static volatile sig_atomic_t pending;
static volatile sig_atomic_t reload; /* a SIGHUP not taken yet */
static volatile sig_atomic_t worker; /* sl_signal_worker() was called */
/* runs that installed (nested runs share one installation), and what the
 * process had before the first */
static unsigned depth;
static struct sigaction saved_int, saved_term, saved_alrm, saved_hup;

/* ---- XDP programs to detach if the process dies at once --------------- */

#define XDP_GUARDS 8

static volatile sig_atomic_t guard_ifindex[XDP_GUARDS]; /* 0: free */
static volatile sig_atomic_t guard_flags[XDP_GUARDS];

int sl_signal_xdp_guard(int ifindex, uint32_t flags)
{
	for (int i = 0; i < XDP_GUARDS; i++) {
		if (!guard_ifindex[i]) {
			guard_flags[i] = (sig_atomic_t)flags;
			guard_ifindex[i] = ifindex;
			return i;
		}
	}
	return -1;
}

void sl_signal_xdp_unguard(int guard)
{
	if (guard >= 0 && guard < XDP_GUARDS)
		guard_ifindex[guard] = 0;
}

static void put_attr(uint8_t *p, uint16_t type, const void *v, uint16_t len)
{
	struct rtattr a = {.rta_len = (unsigned short)RTA_LENGTH(len),
			   .rta_type = type};

	memcpy(p, &a, sizeof(a));
	memcpy(p + RTA_LENGTH(0), v, len);
}

/* RTM_SETLINK with IFLA_XDP { FD -1, FLAGS mode }: what `ip link set dev X
 * xdp off` sends. Only syscalls: safe in a signal handler. */
static void xdp_detach_now(int ifindex, uint32_t flags)
{
	struct {
		struct nlmsghdr nh;
		struct ifinfomsg ifi;
		uint8_t attrs[RTA_SPACE(RTA_SPACE(4) + RTA_SPACE(4))];
	} req;
	struct sockaddr_nl to = {.nl_family = AF_NETLINK};
	uint8_t *nest = req.attrs, *in = nest + RTA_LENGTH(0);
	int32_t fd = -1;
	int sock;

	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = sizeof(req);
	req.nh.nlmsg_type = RTM_SETLINK;
	req.nh.nlmsg_flags = NLM_F_REQUEST;
	req.ifi.ifi_family = AF_UNSPEC;
	req.ifi.ifi_index = ifindex;
	put_attr(in, IFLA_XDP_FD, &fd, sizeof(fd));
	put_attr(in + RTA_SPACE(4), IFLA_XDP_FLAGS, &flags, sizeof(flags));
	{
		struct rtattr a = {
		    .rta_len = (unsigned short)RTA_LENGTH(2 * RTA_SPACE(4)),
		    .rta_type = IFLA_XDP | NLA_F_NESTED};

		memcpy(nest, &a, sizeof(a));
	}
	sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (sock < 0)
		return;
	(void)sendto(sock, &req, sizeof(req), 0, (struct sockaddr *)&to,
		     sizeof(to));
	close(sock);
}

static void xdp_detach_all(void)
{
	for (int i = 0; i < XDP_GUARDS; i++) {
		if (guard_ifindex[i])
			xdp_detach_now(guard_ifindex[i],
				       (uint32_t)guard_flags[i]);
	}
}

static void set_default(int sig)
{
	struct sigaction dfl;

	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigaction(sig, &dfl, NULL);
}

/* The second SIGINT/SIGTERM: the process ends at once, the default way. */
static void on_second(int sig)
{
	xdp_detach_all();
	set_default(sig);
	raise(sig);
}

static void on_alarm(int unused)
{
	static const char msg[] =
		"sluice: the run did not stop within " STR(GRACE_S)
		" s of the signal (a policy handler that does not return, or an "
		"input that sends nothing?): "
		"stopped without a summary\n";
	ssize_t rc;

	rc = write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)rc;
	on_second(pending);
}

static void on_signal(int sig)
{
	struct sigaction sa;

	pending = sig;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	if (worker) {
		/* the parent forwards the stop it had, a service manager
		 * signals every process of the unit: each later one is this
		 * stop again. A parent that dies of a second signal takes
		 * the worker along. */
		sa.sa_handler = SIG_IGN;
		prctl(PR_SET_PDEATHSIG, SIGKILL);
	} else {
		/* a second signal (either of the pair) ends the process */
		sa.sa_handler = on_second;
		sa.sa_flags = SA_RESETHAND;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESETHAND;
	sigaction(SIGALRM, &sa, NULL);
	alarm(GRACE_S);
}

static void on_hup(int unused)
{
	reload = 1;
}

/* The handler of a first SIGINT or SIGTERM. */
static void first_action(struct sigaction *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sa_handler = on_signal;
	sa->sa_flags = SA_RESETHAND;
	/* the other one waits until on_signal made it a second signal */
	sigemptyset(&sa->sa_mask);
	sigaddset(&sa->sa_mask, SIGINT);
	sigaddset(&sa->sa_mask, SIGTERM);
}

int sl_signal_install(void)
{
	struct sigaction sa, hup;

	if (depth) {
		depth++;
		return 0;
	}
	first_action(&sa);
	pending = 0;
	/* no SA_RESTART: a blocking poll returns and the loop sees the flag */
	if (sigaction(SIGALRM, NULL, &saved_alrm) ||
	    sigaction(SIGINT, &sa, &saved_int))
		return -errno;
	if (sigaction(SIGTERM, &sa, &saved_term)) {
		int rc = -errno;

		sigaction(SIGINT, &saved_int, NULL);
		return rc;
	}
	/* no SA_RESETHAND: every SIGHUP is a reload; no SA_RESTART either */
	memset(&hup, 0, sizeof(hup));
	hup.sa_handler = on_hup;
	sigemptyset(&hup.sa_mask);
	reload = 0;
	if (sigaction(SIGHUP, &hup, &saved_hup)) {
		int rc = -errno;

		sigaction(SIGINT, &saved_int, NULL);
		sigaction(SIGTERM, &saved_term, NULL);
		return rc;
	}
	depth = 1;
	return 0;
}

void sl_signal_restore(void)
{
	if (!depth || --depth)
		return;
	alarm(0);
	sigaction(SIGINT, &saved_int, NULL);
	sigaction(SIGTERM, &saved_term, NULL);
	sigaction(SIGALRM, &saved_alrm, NULL);
	sigaction(SIGHUP, &saved_hup, NULL);
	pending = 0;
	reload = 0;
}

int sl_signal_pending(void)
{
	return pending;
}

void sl_signal_taken(void)
{
	alarm(0);
}

int sl_signal_take_reload(void)
{
	/* a SIGHUP between the load and the store is not lost: the reload it
	 * asks for is the one about to happen */
	if (!reload)
		return 0;
	reload = 0;
	return 1;
}

int sl_signal_attention(void)
{
	return pending || reload;
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

/* SIGCHLD stays pending while blocked (a blocked signal is never
 * discarded, even one whose default action is to ignore it), so a child
 * that ends between the parent's last waitpid() and its wait is not
 * missed. */
int sl_signal_child_block(int on)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(on ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL))
		return -errno;
	return 0;
}

int sl_signal_worker(void)
{
	struct sigaction sa;

	worker = 1;
	if (!depth)
		return 0;
	alarm(0);
	pending = 0;
	reload = 0;
	first_action(&sa);
	if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL) ||
	    sigaction(SIGALRM, &saved_alrm, NULL))
		return -errno;
	return 0;
}

int sl_signal_hold(int on)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(on ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL))
		return -errno;
	return 0;
}

int sl_signal_child_wait(int timeout_ms)
{
	struct timespec ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	if (sigtimedwait(&set, NULL, &ts) == SIGCHLD)
		return 1;
	return errno == EAGAIN ? 0 : -errno;
}
