/* kpipe verifier: opening a userfaultfd, one way for every case that needs one. */
#ifndef KPIPE_UFFD_H
#define KPIPE_UFFD_H

#include "harness.h"

#define UFFD_OPEN_DEV 1u	/* after the syscall, try /dev/userfaultfd's USERFAULTFD_IOC_NEW (6.1+) */

/* userfaultfd(O_CLOEXEC | O_NONBLOCK); on EPERM (vm.unprivileged_userfaultfd = 0 without CAP_SYS_PTRACE) again
 * with UFFD_USER_MODE_ONLY; then, with UFFD_OPEN_DEV in ``how``, through /dev/userfaultfd.  Returns the fd, or -1
 * with err[0] = the first call's errno and err[1] = the last syscall's (the retry's, else the first's): the
 * callers name one of them in their report. */
int uffd_open_fd(unsigned how, int err[2]);

/* uffd_open_fd without /dev/userfaultfd; a failure is reported on ``r``: SKIP on ENOSYS (a kernel without
 * USERFAULTFD), else ERROR naming the last syscall's errno.  Returns the fd or -1. */
int uffd_open_reported(struct result *r);

#endif
