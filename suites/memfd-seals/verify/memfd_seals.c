/* kpipe verifier, suite memfd-seals: what a sealed memfd refuses, and what it still allows.
 *
 * The seals live in the shmem inode (mm/memfd.c memfd_add_seals, mm/shmem.c): each case makes a fresh memfd,
 * adds the seals it names and then tries exactly one operation, observing "ok" or the errno it got:
 *  - F_SEAL_WRITE: write(2) and a new writable MAP_SHARED mapping are refused (EPERM: shmem_file_write_iter's
 *    and memfd's mmap checks); adding the seal while a writable shared mapping exists is refused (EBUSY:
 *    mapping_deny_writable fails while i_mmap_writable counts it); a read-only shared mapping made after the
 *    seal cannot be made writable (EACCES: the mmap path clears VM_MAYWRITE); a private writable mapping is
 *    still allowed (ok: its writes never reach the file), and what it writes is not in the file.
 *  - F_SEAL_GROW / F_SEAL_SHRINK: ftruncate(2) past / below the size is refused (EPERM: shmem_setattr),
 *    and so is fallocate(2) past the end under F_SEAL_GROW (shmem_fallocate); within the size it is ok.
 *  - F_SEAL_SEAL: any further F_ADD_SEALS is refused (EPERM); a memfd made without MFD_ALLOW_SEALING starts
 *    with F_SEAL_SEAL (F_GET_SEALS says so, F_ADD_SEALS is EPERM).
 * A case whose set-up fails (memfd_create, the first mapping) is an ERROR, never a pass.
 */
#define _GNU_SOURCE
#include "codes.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_GET_SEALS 1034
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#define F_SEAL_WRITE 0x0008
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif

#define PAGES 4

enum op { OP_WRITE, OP_MMAP_SHARED_RW, OP_SEAL_WHILE_MAPPED, OP_MPROTECT_RW, OP_MMAP_PRIVATE_RW,
	  OP_TRUNCATE_GROW, OP_TRUNCATE_SHRINK, OP_TRUNCATE_SAME, OP_FALLOCATE_GROW, OP_FALLOCATE_INSIDE,
	  OP_ADD_SEAL, OP_NO_SEALING };

struct seal_case {
	int seals;		/* added after the memfd is made and sized */
	enum op op;
};

static int make_memfd(struct result *r, unsigned flags)
{
	int fd = (int)syscall(SYS_memfd_create, "kpipe-seals", flags);
	if (fd < 0) {
		if (errno == ENOSYS)
			skip(r, "memfd_create is not in this kernel (CONFIG_MEMFD_CREATE)");
		else
			setup_error(r, "memfd_create: %s", strerror(errno));
		return -1;
	}
	if (ftruncate(fd, (off_t)(PAGES * page_size()))) {
		setup_error(r, "ftruncate to %d pages: %s", PAGES, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void result_of(struct result *r, int rc)
{
	if (rc)
		observe_errno(r, errno);
	else
		observe(r, "ok");
}

static int add_seals(struct result *r, int fd, int seals)
{
	if (seals && fcntl(fd, F_ADD_SEALS, seals)) {
		setup_error(r, "F_ADD_SEALS 0x%x on a new sealable memfd: %s", seals, strerror(errno));
		return -1;
	}
	return 0;
}

static void case_seal(const struct test_case *tc, struct result *r)
{
	const struct seal_case *c = tc->arg;
	size_t len = PAGES * page_size();
	off_t size = (off_t)len;
	int fd = make_memfd(r, c->op == OP_NO_SEALING ? 0 : MFD_ALLOW_SEALING);
	char byte = 'k';
	void *p;

	if (fd < 0)
		return;
	if (c->op == OP_SEAL_WHILE_MAPPED) {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			setup_error(r, "mmap MAP_SHARED rw before sealing: %s", strerror(errno));
			return;
		}
		result_of(r, fcntl(fd, F_ADD_SEALS, c->seals));
		return;
	}
	if (add_seals(r, fd, c->seals))
		return;
	switch (c->op) {
	case OP_WRITE:
		result_of(r, pwrite(fd, &byte, 1, 0) == 1 ? 0 : -1);
		break;
	case OP_MMAP_SHARED_RW:
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		result_of(r, p == MAP_FAILED ? -1 : 0);
		break;
	case OP_MPROTECT_RW:
		p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			setup_error(r, "mmap MAP_SHARED read-only of a write-sealed memfd: %s", strerror(errno));
			return;
		}
		result_of(r, mprotect(p, len, PROT_READ | PROT_WRITE));
		break;
	case OP_MMAP_PRIVATE_RW: {
		char back = 0;
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED) {
			observe_errno(r, errno);
			break;
		}
		*(volatile char *)p = byte;	/* a private copy of the page: never the file's */
		if (pread(fd, &back, 1, 0) != 1) {
			setup_error(r, "pread of the sealed memfd: %s", strerror(errno));
			return;
		}
		observe(r, back == byte ? CODE(FILEWRITTEN) : "ok");
		if (back == byte)
			note(r, "a write through a MAP_PRIVATE mapping reached the write-sealed file");
		break;
	}
	case OP_TRUNCATE_GROW:
		result_of(r, ftruncate(fd, size + (off_t)page_size()));
		break;
	case OP_TRUNCATE_SHRINK:
		result_of(r, ftruncate(fd, size - (off_t)page_size()));
		break;
	case OP_TRUNCATE_SAME:
		result_of(r, ftruncate(fd, size));
		break;
	case OP_FALLOCATE_GROW:
		result_of(r, fallocate(fd, 0, size, (off_t)page_size()));
		break;
	case OP_FALLOCATE_INSIDE:
		result_of(r, fallocate(fd, 0, 0, size));
		break;
	case OP_ADD_SEAL:
		result_of(r, fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK));
		break;
	case OP_NO_SEALING: {
		int seals = fcntl(fd, F_GET_SEALS);
		if (seals != F_SEAL_SEAL) {
			observe(r, CODE(NOTSEALED));
			note(r, "F_GET_SEALS of a memfd made without MFD_ALLOW_SEALING is 0x%x, not F_SEAL_SEAL", seals);
			break;
		}
		result_of(r, fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE));
		break;
	}
	case OP_SEAL_WHILE_MAPPED:
		break;
	}
	close(fd);
}

#define SEAL(name, seals_, op_) {name, case_seal, &(const struct seal_case){.seals = (seals_), .op = (op_)}}

static const struct test_case cases[] = {
	SEAL("write-sealed-write", F_SEAL_WRITE, OP_WRITE),
	SEAL("write-sealed-mmap-shared", F_SEAL_WRITE, OP_MMAP_SHARED_RW),
	SEAL("write-seal-while-mapped", F_SEAL_WRITE, OP_SEAL_WHILE_MAPPED),
	SEAL("write-sealed-mprotect", F_SEAL_WRITE, OP_MPROTECT_RW),
	SEAL("write-sealed-mmap-private", F_SEAL_WRITE, OP_MMAP_PRIVATE_RW),
	SEAL("grow-sealed-truncate", F_SEAL_GROW, OP_TRUNCATE_GROW),
	SEAL("grow-sealed-fallocate", F_SEAL_GROW, OP_FALLOCATE_GROW),
	SEAL("grow-sealed-fallocate-inside", F_SEAL_GROW, OP_FALLOCATE_INSIDE),
	SEAL("shrink-sealed-truncate", F_SEAL_SHRINK, OP_TRUNCATE_SHRINK),
	SEAL("shrink-sealed-truncate-same", F_SEAL_SHRINK | F_SEAL_GROW, OP_TRUNCATE_SAME),
	SEAL("seal-sealed-add", F_SEAL_SEAL, OP_ADD_SEAL),
	SEAL("unsealable-add", 0, OP_NO_SEALING),
};

int main(int argc, char **argv)
{
	return harness_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]), "memfd_seals");
}
