/* kpipe verifier: opening a userfaultfd (see uffd.h). */
#define _GNU_SOURCE
#include "uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* newer than 5.10's uapi headers (values from the uapi) */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#define KP_USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)

int uffd_open_fd(unsigned how, int err[2])
{
	int fd = (int)syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	err[0] = err[1] = errno;
	if (fd < 0 && err[0] == EPERM) {	/* vm.unprivileged_userfaultfd = 0 without CAP_SYS_PTRACE */
		fd = (int)syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
		err[1] = errno;
	}
	if (fd < 0 && (how & UFFD_OPEN_DEV)) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev >= 0) {
			fd = ioctl(dev, KP_USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
			close(dev);
		}
	}
	return fd;
}

int uffd_open_reported(struct result *r)
{
	int err[2], fd = uffd_open_fd(0, err);

	if (fd < 0) {
		if (err[1] == ENOSYS)
			skip(r, "userfaultfd: ENOSYS (kernel without USERFAULTFD)");
		else
			setup_error(r, "userfaultfd: %s", errno_name(err[1]));
	}
	return fd;
}
