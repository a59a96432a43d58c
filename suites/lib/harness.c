/* kpipe verifier harness: fork-isolated cases, TAP 13 output, expectations from a `case=expected` file.
 *
 * Usage: PROG [-e FILE] [-t SECONDS] [-l] [CASE...]
 *   -e FILE     expectations, one `case=expected` per line (`#` comments); a case without one fails
 *   -t SECONDS  per-case time limit (default 30): a case still running is killed and reported
 *   -l          list the case names and exit
 *   CASE...     run only these cases
 *
 * Expected values: "ok", an errno name, "skip" (the move is expected to be refused: a refused move
 * is reported as SKIP, an allowed one fails), or "xfail:CODE" (a known kernel bug: observing exactly CODE
 * is reported `ok ... # XFAIL`; anything else, a pass included, fails).
 * A case that could not run although what it needs is present is `not ok ... # ERROR reason`.
 * Exit: 0 all passed, 1 any failed (or errored), 4 all skipped.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "codes.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KSFT_PASS 0
#define KSFT_FAIL 1
#define KSFT_SKIP 4
#define MAX_EXPECT 256

static const struct {
	int err;
	const char *name;
} errnames[] = {
	{EPERM, "EPERM"}, {ENOENT, "ENOENT"}, {EINTR, "EINTR"}, {EIO, "EIO"}, {ENXIO, "ENXIO"},
	{EBADF, "EBADF"}, {EAGAIN, "EAGAIN"}, {ENOMEM, "ENOMEM"}, {EACCES, "EACCES"}, {EFAULT, "EFAULT"},
	{EBUSY, "EBUSY"}, {EEXIST, "EEXIST"}, {ENODEV, "ENODEV"}, {EINVAL, "EINVAL"}, {ENFILE, "ENFILE"},
	{EMFILE, "EMFILE"}, {ENOSPC, "ENOSPC"}, {ERANGE, "ERANGE"}, {ENOSYS, "ENOSYS"},
	{EOPNOTSUPP, "EOPNOTSUPP"}, {EOVERFLOW, "EOVERFLOW"},
};

const char *errno_name(int err)
{
	static char buf[16];
	for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (errnames[i].err == err)
			return errnames[i].name;
	snprintf(buf, sizeof(buf), "E%d", err);
	return buf;
}

void observe(struct result *r, const char *what)
{
	snprintf(r->observed, sizeof(r->observed), "%s", what);
}

void observe_errno(struct result *r, int err)
{
	observe(r, errno_name(err));
}

void skip(struct result *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->skip, sizeof(r->skip), fmt, ap);
	va_end(ap);
}

void note(struct result *r, const char *fmt, ...)
{
	size_t used = strlen(r->detail);
	va_list ap;
	if (used && used + 2 < sizeof(r->detail)) {
		strcat(r->detail, "; ");
		used += 2;
	}
	va_start(ap, fmt);
	vsnprintf(r->detail + used, sizeof(r->detail) - used, fmt, ap);
	va_end(ap);
}

void setup_error(struct result *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
}

size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static sigjmp_buf fault_jmp;
static volatile sig_atomic_t fault_sig;

static void on_fault(int sig)
{
	fault_sig = sig;
	siglongjmp(fault_jmp, 1);
}

int guarded_copy(void *dst, const void *src, size_t len)
{
	struct sigaction sa, old_segv, old_bus;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fault;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	fault_sig = 0;
	if (sigsetjmp(fault_jmp, 1) == 0) {
		const volatile uint8_t *s = src;
		volatile uint8_t *d = dst;
		for (size_t i = 0; i < len; i++)
			d[i] = s[i];
	}
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	return fault_sig;
}

/* ---- expectations ---- */

static struct {
	char name[64];
	char value[64];
} expect[MAX_EXPECT];
static int nexpect;

static char *trim(char *s)
{
	char *e;
	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
		*--e = 0;
	return s;
}

static int load_expect(const char *path)
{
	char line[512];
	int lineno = 0;
	FILE *f = fopen(path, "r");

	if (!f) {
		fprintf(stderr, "cannot open expectations %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *s = trim(line), *eq;
		lineno++;
		if (!*s || *s == '#')
			continue;
		eq = strchr(s, '=');
		if (!eq || nexpect == MAX_EXPECT) {
			fprintf(stderr, "%s:%d: expected `case=outcome`, got: %s\n", path, lineno, s);
			fclose(f);
			return -1;
		}
		*eq = 0;
		snprintf(expect[nexpect].name, sizeof(expect[0].name), "%s", trim(s));
		snprintf(expect[nexpect].value, sizeof(expect[0].value), "%s", trim(eq + 1));
		nexpect++;
	}
	fclose(f);
	return 0;
}

static const char *expected_for(const char *name)
{
	for (int i = 0; i < nexpect; i++)
		if (!strcmp(expect[i].name, name))
			return expect[i].value;
	return NULL;
}

/* ---- running one case ---- */

static const char *signame(int sig)
{
	static char buf[16];
	switch (sig) {
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGABRT: return "SIGABRT";
	case SIGILL: return "SIGILL";
	case SIGFPE: return "SIGFPE";
	case SIGKILL: return "SIGKILL";
	case SIGALRM: return "SIGALRM";
	case SIGTRAP: return "SIGTRAP";
	case SIGSYS: return "SIGSYS";
	}
	snprintf(buf, sizeof(buf), "SIG%d", sig);
	return buf;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The running case's process group (its child's pid), for the signal forwarder; 0 between cases. */
static volatile sig_atomic_t case_pgid;

/* The harness told to stop (kpipe's SIGTERM before SIGKILL, ^C): the case's group goes with it, then the
 * harness dies of the same signal. */
static void on_stop(int sig)
{
	pid_t pg = case_pgid;
	if (pg > 0)
		kill(-pg, SIGKILL);
	signal(sig, SIG_DFL);
	raise(sig);
}

static const int stop_signals[] = {SIGTERM, SIGINT, SIGHUP};

/* Runs the case in a child, the leader of a process group of its own: the case's time limit (its alarm(),
 * which a case may read, and the parent's deadline just after it) and the end of the case kill the whole group,
 * so that what a case forked cannot outlive it.  A case killed at the deadline reports as one its alarm ended.
 * Returns 0 with *r filled, or the signal that ended the child (negative for "exited without a result"). */
static int run_child(const struct test_case *tc, struct result *r, unsigned timeout)
{
	int pfd[2], status = 0, exited = 0, overran = 0;
	siginfo_t si;
	size_t got = 0;
	double deadline = timeout ? now() + timeout + 1.0 : 0;	/* the child's own alarm comes first */
	pid_t pid;

	memset(r, 0, sizeof(*r));
	if (pipe(pfd)) {
		note(r, "pipe: %s", strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		note(r, "fork: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		struct result mine;
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);	/* the harness SIGKILLed: the case goes too */
		for (size_t i = 0; i < sizeof(stop_signals) / sizeof(stop_signals[0]); i++)
			signal(stop_signals[i], SIG_DFL);
		close(pfd[0]);
		memset(&mine, 0, sizeof(mine));
		alarm(timeout);
		tc->run(tc, &mine);
		if (!mine.observed[0] && !mine.skip[0] && !mine.error[0])
			observe(&mine, CODE(NORESULT));
		if (write(pfd[1], &mine, sizeof(mine)) != (ssize_t)sizeof(mine))
			_exit(3);
		_exit(0);
	}
	setpgid(pid, pid);	/* as the child does: whichever runs first */
	case_pgid = pid;
	close(pfd[1]);
	/* Read the result until EOF; a process the case forked may hold the pipe open, so the child's exit and the
	 * deadline are watched too (every 100 ms). */
	for (;;) {
		struct pollfd p = {.fd = pfd[0], .events = POLLIN};
		int n = poll(&p, 1, 100);
		if (n > 0) {
			ssize_t k = read(pfd[0], (char *)r + got, sizeof(*r) - got);
			if (k > 0 && (got += (size_t)k) < sizeof(*r))
				continue;
			if (k < 0 && errno == EINTR)
				continue;
			break;		/* the whole result, EOF, or an error */
		}
		if (n < 0 && errno != EINTR)
			break;
		si.si_pid = 0;
		if (!waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) && si.si_pid == pid) {
			exited = 1;
			/* it wrote before exiting: what it wrote is in the pipe */
			fcntl(pfd[0], F_SETFL, O_NONBLOCK);
			for (ssize_t k; got < sizeof(*r) && (k = read(pfd[0], (char *)r + got, sizeof(*r) - got)) > 0;)
				got += (size_t)k;
			break;
		}
		if (deadline && now() >= deadline) {
			kill(-pid, SIGKILL);
			overran = 1;
			break;
		}
	}
	close(pfd[0]);
	/* the child exited (or was killed): what it left running goes, while its zombie still holds the group's id */
	if (!exited)
		while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR)
			;
	kill(-pid, SIGKILL);	/* ESRCH when nothing is left */
	case_pgid = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		memset(r, 0, sizeof(*r));
		/* killed at the parent's deadline: the timeout the child's alarm would have reported */
		return overran && sig == SIGKILL ? SIGALRM : sig;
	}
	if (got != sizeof(*r) || WEXITSTATUS(status) != 0) {
		memset(r, 0, sizeof(*r));
		note(r, "case process exited with %d without a result", WEXITSTATUS(status));
		return -1;
	}
	return 0;
}

static int wanted(const char *name, int argc, char **argv, int first)
{
	if (first >= argc)
		return 1;
	for (int i = first; i < argc; i++)
		if (!strcmp(argv[i], name))
			return 1;
	return 0;
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s [-e EXPECT_FILE] [-t SECONDS] [-l] [CASE...]\n", prog);
}

int harness_main(int argc, char **argv, const struct test_case *cases, size_t ncases, const char *title)
{
	const char *expect_path = NULL;
	unsigned timeout = 30;
	int opt, list = 0, n = 0, failed = 0, skipped = 0, xfailed = 0;
	struct utsname u;

	while ((opt = getopt(argc, argv, "e:t:lh")) != -1) {
		switch (opt) {
		case 'e': expect_path = optarg; break;
		case 't': timeout = (unsigned)atoi(optarg); break;
		case 'l': list = 1; break;
		default: usage(argv[0]); return 2;
		}
	}
	if (list) {
		for (size_t i = 0; i < ncases; i++)
			printf("%s\n", cases[i].name);
		return 0;
	}
	for (int i = optind; i < argc; i++) {
		size_t j;
		for (j = 0; j < ncases && strcmp(cases[j].name, argv[i]); j++)
			;
		if (j == ncases) {
			fprintf(stderr, "unknown case %s (see -l)\n", argv[i]);
			return 2;
		}
	}
	if (expect_path && load_expect(expect_path))
		return 2;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < sizeof(stop_signals) / sizeof(stop_signals[0]); i++)
		signal(stop_signals[i], on_stop);
	for (size_t i = 0; i < ncases; i++)
		n += wanted(cases[i].name, argc, argv, optind);
	printf("TAP version 13\n1..%d\n", n);
	uname(&u);
	printf("# %s: kernel %s %s, page size %zu, expectations %s\n", title, u.release, u.machine,
	       page_size(), expect_path ? expect_path : "(none: every case fails)");

	n = 0;
	for (size_t i = 0; i < ncases; i++) {
		const struct test_case *tc = &cases[i];
		const char *exp = expected_for(tc->name);
		struct result r;
		double t0;
		int sig, pass;

		if (!wanted(tc->name, argc, argv, optind))
			continue;
		n++;
		t0 = now();
		sig = run_child(tc, &r, timeout);
		t0 = now() - t0;
		if (!exp)
			exp = "(none)";

		if (sig) {
			const char *what = sig > 0 ? signame(sig) : CODE(NORESULT);
			printf("# %s: observed %s expected %s (%.3f s)\n", tc->name, what, exp, t0);
			if (r.detail[0])
				printf("# %s: %s\n", tc->name, r.detail);
			if (sig == SIGALRM)
				printf("not ok %d %s # crashed: SIGALRM (timeout after %u s)\n", n, tc->name, timeout);
			else if (sig > 0)
				printf("not ok %d %s # crashed: %s\n", n, tc->name, what);
			else
				printf("not ok %d %s # crashed: no result\n", n, tc->name);
			failed++;
			continue;
		}
		printf("# %s: observed %s expected %s (%.3f s)\n", tc->name,
		       r.error[0] ? "ERROR" : r.skip[0] ? "skip" : r.observed, exp, t0);
		if (r.detail[0])
			printf("# %s: %s\n", tc->name, r.detail);
		if (r.error[0]) {
			printf("not ok %d %s # ERROR %s\n", n, tc->name, r.error);
			failed++;
			continue;
		}
		if (r.skip[0]) {
			printf("ok %d %s # SKIP %s\n", n, tc->name, r.skip);
			skipped++;
			continue;
		}
		if (!strcmp(exp, "skip") && r.rejected) {
			printf("ok %d %s # SKIP move rejected as expected under this kernel (%s)\n", n, tc->name,
			       r.observed);
			skipped++;
			continue;
		}
		if (!strncmp(exp, "xfail:", 6)) {
			pass = !strcmp(exp + 6, r.observed);
			if (pass)
				printf("ok %d %s # XFAIL observed %s, the known failure the expectations name\n", n,
				       tc->name, r.observed);
			else
				printf("not ok %d %s\n", n, tc->name);
			failed += !pass;
			xfailed += pass;
			continue;
		}
		pass = !strcmp(exp, r.observed);
		printf("%s %d %s\n", pass ? "ok" : "not ok", n, tc->name);
		failed += !pass;
	}
	printf("# totals: pass %d fail %d skip %d xfail %d\n", n - failed - skipped - xfailed, failed, skipped,
	       xfailed);
	if (failed)
		return KSFT_FAIL;
	if (n == skipped)
		return KSFT_SKIP;
	return KSFT_PASS;
}
