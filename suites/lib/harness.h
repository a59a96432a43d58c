/* kpipe verifier harness: runs each case in its own child, prints TAP 13, uses kselftest exit codes. */
#ifndef KPIPE_HARNESS_H
#define KPIPE_HARNESS_H

#include <stddef.h>
#include <stdint.h>

/* What one case observed, written by the child and read back by the parent. */
struct result {
	char observed[32];	/* "ok", an errno name ("EINVAL"), or a failure code ("BADDATA") */
	char skip[200];		/* non-empty: the case could not run here, and why */
	char detail[600];	/* more about what was seen */
	char error[200];	/* non-empty: what the case needs is present, but the case still could not run */
	int rejected;		/* the move under test was refused; observed holds its errno name */
};

struct test_case {
	const char *name;
	void (*run)(const struct test_case *tc, struct result *r);
	const void *arg;
};

/* Recording, for use inside a case. */
void observe(struct result *r, const char *what);
void observe_errno(struct result *r, int err);
void skip(struct result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void note(struct result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The case could not run although what it needs is there (reported ERROR, never SKIP). */
void setup_error(struct result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *errno_name(int err);

/* Memory access that reports SIGSEGV/SIGBUS instead of dying: 0 or the signal number. */
int guarded_copy(void *dst, const void *src, size_t len);

size_t page_size(void);

/* Parses the options, runs the cases, prints TAP; returns the kselftest exit code. */
int harness_main(int argc, char **argv, const struct test_case *cases, size_t ncases, const char *title);

#endif
