/* kpipe verifier, the plain mremap regression matrix: the paths of mm/mremap.c that every program uses and
 * that the series touches beside MREMAP_DONTUNMAP (a natural second suite: its cases are all `plain-*`, its
 * expectations their own section of expectations.toml, its code only this file and state.c's readers).
 *
 * A mapping of PLAIN_CH chunks of 1 MiB (anon private, anon shared, memfd shared, memfd private, a tmpfs
 * file), where the file holds PLAIN_FPC pages at the start of every chunk (pwrite: never through the
 * mapping) and the mapping writes page 0 of every even chunk only: page 0 of the odd chunks and page 1 of
 * every chunk are never present (proved with pagemap before the operation: ERROR otherwise), so a wrong file
 * offset (vm_pgoff) of a moved part is seen when they fault in through the new range.  The operations follow
 * mm/mremap.c (5.10, 5.10 + the seed, 6.12):
 *  - fixed-*: mremap_to() with MREMAP_FIXED, same length, to a free hole: move_vma() of the whole mapping,
 *    its head, middle or tail; the new VMA's vm_pgoff = old vm_pgoff + the part's offset (move_vma's
 *    new_pgoff), every PTE moved (pagemap: same presence and PFNs), the old range unmapped (do_munmap).
 *  - move-*: MREMAP_MAYMOVE growing the part by one chunk where it cannot grow in place (the rest of the
 *    VMA or a guard follows): move_vma() to a place of the kernel's choosing, the grown chunk reads the
 *    file at the following offset (zeros for anon; shared anon's object ends there: not read).
 *  - grow-inplace: vma_expandable() and vma_adjust() in place (no MREMAP_MAYMOVE), the same address.
 *  - shrink: do_munmap() of the tail, the same address.
 * After each: the data at the right offsets through the new range, VmSize by exactly the length change,
 * Committed_AS by the accounted VMAs' change; after unmapping everything and closing the file: VmSize
 * exactly, Committed_AS and Shmem within their tolerances (README) back at the baseline.  Plain moves are
 * allowed under every policy: every case expects ok.
 */
#define _GNU_SOURCE
#include "codes.h"
#include "harness.h"
#include "plain.h"
#include "state_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PLAIN_CH 16		/* chunks in the mapping */
#define PLAIN_CHB (1ul << 20)	/* bytes per chunk */
#define PLAIN_FPC 32		/* file pages at the start of each chunk: 2.3 MiB of Shmem, over twice the tolerance */
#define TMPFS_MAGIC_P 0x01021994

int fs_file(const char *fstype, long magic, struct result *r);	/* mremap_dontunmap.c */

enum pkind { P_ANON, P_ANON_SHARED, P_MEMFD_SHARED, P_MEMFD_PRIVATE, P_TMPFS_SHARED };
enum pop { OP_FIXED, OP_MOVE, OP_GROW_INPLACE, OP_SHRINK };
static const char *const pkind_name[] = {"private anon", "shared anon", "memfd shared", "memfd private",
					 "tmpfs shared"};

struct plain_arg {
	enum pkind kind;
	enum pop op;
	size_t first, count;	/* the chunks the operation takes */
};

static int p_file(enum pkind k) { return k == P_MEMFD_SHARED || k == P_MEMFD_PRIVATE || k == P_TMPFS_SHARED; }
static int p_shared(enum pkind k) { return k == P_ANON_SHARED || k == P_MEMFD_SHARED || k == P_TMPFS_SHARED; }

/* The matrix's pattern: spat() repeats every 1 MiB (256 pages), the chunk size, so a file offset wrong by whole
 * chunks would read the same bytes; the chunk index is mixed in (period 128 chunks). Never zero (spat is odd). */
static uint8_t ppat(size_t o)
{
	return (uint8_t)(spat(o, 89) + (o / PLAIN_CHB) * 38u);
}

/* What byte b of the page at file (or mapping) offset `o` must read. */
static uint8_t want_byte(enum pkind k, size_t o, size_t b, int anon_part)
{
	size_t pg = page_size(), p = (o % PLAIN_CHB) / pg, ch = o / PLAIN_CHB;
	if (p_file(k))
		return p < PLAIN_FPC ? ppat(o + b) : 0;
	return anon_part && p == 0 && ch % 2 == 0 ? ppat(o + b) : 0;
}

/* Pages 0, 1 and PLAIN_FPC of every chunk in [p, p + nch chunks), at offset `o0`: 0 when they read right,
 * else the failing offset + 1.  `anon_upto`: anon data beyond this offset was never written (zeros). */
static size_t check_chunks(enum pkind k, const uint8_t *p, size_t nch, size_t o0, size_t anon_upto)
{
	size_t pg = page_size(), idx[3] = {0, 1, PLAIN_FPC};
	for (size_t c = 0; c < nch; c++)
		for (int s = 0; s < 3; s++) {
			size_t rel = c * PLAIN_CHB + idx[s] * pg, o = o0 + rel;
			for (size_t b = 0; b < pg; b += 512)
				if (p[rel + b] != want_byte(k, o, b, o < anon_upto))
					return o + 1;
		}
	return 0;
}

static long acc_kb(const void *lo, size_t len)
{
	struct vma vs[8];
	int n = smaps_range((unsigned long)lo, (unsigned long)lo + len, vs, 8);
	return n < 0 ? 0 : flagged_kb(vs, n, "ac", (unsigned long)lo, (unsigned long)lo + len);
}

static void case_plain(const struct test_case *tc, struct result *r)
{
	const struct plain_arg *pa = tc->arg;
	size_t pg = page_size(), len = PLAIN_CH * PLAIN_CHB, npages = len / pg;
	size_t off = pa->first * PLAIN_CHB, mlen = pa->count * PLAIN_CHB, new_len = mlen, fsize;
	long shmem_tol = (long)sysconf(_SC_NPROCESSORS_ONLN) * STAT_THRESHOLD_MAX * (long)(pg / 1024);
	long noise = committed_noise(), tol = 64 + 2 * noise, acc0, acc1, dcommit;
	uint64_t *before = calloc(npages, 8), *after = calloc(npages + PLAIN_CHB / pg, 8);
	struct area a, dst = {0};
	struct snap s0, s1, s2, s3;
	uint8_t *from, *got, *want_at = NULL;
	int fd = -1, flags;
	size_t bad;

	if (!before || !after) {
		setup_error(r, "out of memory");
		return;
	}
	if (pg != 4096) {
		skip(r, "page size %zu: the matrix's geometry is for 4 KiB pages", pg);
		return;
	}
	if (tol < (long)(len / 1024 / 4))
		tol = (long)(len / 1024 / 4);	/* a quarter of the mapping: a part is 4 chunks or more */
	if (pa->op == OP_MOVE)
		new_len = mlen + PLAIN_CHB;
	else if (pa->op == OP_GROW_INPLACE)
		new_len = mlen + PLAIN_CHB;
	else if (pa->op == OP_SHRINK)
		new_len = mlen - 6 * PLAIN_CHB;
	take(&s0);
	if (s0.vmsize < 0 || s0.committed < 0) {
		setup_error(r, "cannot read VmSize or Committed_AS");
		return;
	}
	/* grow in place: the reservation has one free chunk after the mapping */
	if (reserve(&a, pa->op == OP_GROW_INPLACE ? len + PLAIN_CHB : len, 0, r))
		return;
	if (pa->op == OP_GROW_INPLACE) {
		munmap(a.addr + len, PLAIN_CHB);
		a.len = len;
	}
	if ((pa->op == OP_FIXED && hole(&dst, mlen, 0, r)))
		return;
	fsize = (PLAIN_CH + 2) * PLAIN_CHB;
	if (p_file(pa->kind)) {
		uint8_t *buf = malloc(PLAIN_FPC * pg);
		if (pa->kind == P_TMPFS_SHARED) {
			if ((fd = fs_file("tmpfs", TMPFS_MAGIC_P, r)) < 0)
				return;
		} else if ((fd = memfd_create("kpipe-plain", MFD_CLOEXEC)) < 0) {
			if (errno == ENOSYS)
				skip(r, "memfd_create: ENOSYS (kernel without MEMFD_CREATE)");
			else
				setup_error(r, "memfd_create: %s", errno_name(errno));
			return;
		}
		if (!buf || ftruncate(fd, (off_t)fsize)) {
			setup_error(r, "ftruncate: %s", errno_name(errno));
			return;
		}
		for (size_t c = 0; c < PLAIN_CH + 2; c++) {
			for (size_t b = 0; b < PLAIN_FPC * pg; b++)
				buf[b] = ppat(c * PLAIN_CHB + b);
			if (pwrite(fd, buf, PLAIN_FPC * pg, (off_t)(c * PLAIN_CHB)) != (ssize_t)(PLAIN_FPC * pg)) {
				setup_error(r, "pwrite: %s", errno_name(errno));
				return;
			}
		}
		free(buf);
	}
	flags = MAP_FIXED | (p_shared(pa->kind) ? MAP_SHARED : MAP_PRIVATE) | (p_file(pa->kind) ? 0 : MAP_ANONYMOUS);
	if (mmap(a.addr, len, PROT_READ | PROT_WRITE, flags, fd, 0) == MAP_FAILED) {
		setup_error(r, "mmap of %s: %s", pkind_name[pa->kind], errno_name(errno));
		return;
	}
	madvise(a.addr, len, MADV_NOHUGEPAGE);	/* 4 KiB pages: the presence pattern is per page */
	for (size_t c = 0; c < PLAIN_CH; c += 2)	/* page 0 of the even chunks only, with the file's bytes */
		for (size_t b = 0; b < pg; b++)
			a.addr[c * PLAIN_CHB + b] = ppat(c * PLAIN_CHB + b);
	if (pagemap(a.addr, npages, before)) {
		setup_error(r, "cannot read /proc/self/pagemap: %s", errno_name(errno));
		return;
	}
	for (size_t i = 0; i < npages; i++)
		if (!!(before[i] & PM_PRESENT) != ((i * pg) % (2 * PLAIN_CHB) == 0)) {
			setup_error(r, "premise does not hold: page %zu is %spresent before the operation (fault-around "
				    "or THP?)", i, (before[i] & PM_PRESENT) ? "" : "not ");
			return;
		}
	take(&s1);
	acc0 = acc_kb(a.addr, len);
	from = a.addr + off;
	switch (pa->op) {
	case OP_FIXED:
		want_at = dst.addr;
		got = (void *)syscall(SYS_mremap, from, mlen, mlen, MREMAP_MAYMOVE | MREMAP_FIXED, dst.addr);
		break;
	case OP_MOVE:
		got = (void *)syscall(SYS_mremap, from, mlen, new_len, MREMAP_MAYMOVE);
		break;
	default:
		want_at = from;
		got = (void *)syscall(SYS_mremap, from, mlen, new_len, 0);
	}
	if (got == MAP_FAILED) {
		observe_errno(r, errno);
		return;
	}
	take(&s2);
	if ((want_at && got != want_at) || (pa->op == OP_MOVE && got == from)) {
		note(r, "mremap returned %p, expected %s%p", (void *)got, want_at ? "" : "anything but ",
		     (void *)(want_at ? want_at : from));
		observe(r, CODE(ADDR));
		return;
	}
	/* pagemap: the part's PTEs where the kernel put it, with their PFNs; a grown chunk not present */
	{
		size_t keep = (new_len < mlen ? new_len : mlen) / pg, o0 = off / pg;
		if (pagemap(got, new_len / pg, after)) {
			setup_error(r, "cannot read /proc/self/pagemap: %s", errno_name(errno));
			return;
		}
		for (size_t i = 0; i < new_len / pg; i++) {
			uint64_t b = i < keep ? before[o0 + i] : 0;
			if (!!(after[i] & PM_PRESENT) != !!(b & PM_PRESENT) ||
			    ((b & PM_PRESENT) && (b & PM_PFN_MASK) && (after[i] & PM_PFN_MASK) != (b & PM_PFN_MASK))) {
				note(r, "pagemap: page %zu of the result is %spresent (PFN 0x%llx), before: %spresent "
				     "(0x%llx)", i, (after[i] & PM_PRESENT) ? "" : "not ",
				     (unsigned long long)(after[i] & PM_PFN_MASK), (b & PM_PRESENT) ? "" : "not ",
				     (unsigned long long)(b & PM_PFN_MASK));
				observe(r, CODE(PTE));
				return;
			}
		}
	}
	if (got != from) {	/* moved: nothing left at the old part */
		struct vma vs[2];
		int n = smaps_range((unsigned long)from, (unsigned long)from + mlen, vs, 2);
		if (n != 0) {
			note(r, "the old part [%p, +%zu kB) is still mapped (%d VMAs)", (void *)from, mlen / 1024, n);
			observe(r, CODE(OLDMAPPED));
			return;
		}
	}
	if (s2.vmsize - s1.vmsize != ((long)new_len - (long)mlen) / 1024) {
		note(r, "VmSize moved by %ld kB, expected %ld", s2.vmsize - s1.vmsize, ((long)new_len - (long)mlen) / 1024);
		observe(r, CODE(VMSIZE));
		return;
	}
	acc1 = acc_kb(a.addr, len + (pa->op == OP_GROW_INPLACE ? PLAIN_CHB : 0)) + (got != from ? acc_kb(got, new_len) : 0);
	dcommit = s2.committed - s1.committed;
	note(r, "%s: Committed_AS %+ld kB (accounted VMAs %+ld kB, tolerance %ld kB); VmPTE %+ld kB",
	     pkind_name[pa->kind], dcommit, acc1 - acc0, tol, s2.vmpte - s1.vmpte);
	if (labs(dcommit - (acc1 - acc0)) > tol) {
		observe(r, CODE(COMMIT));
		return;
	}
	/* the data through the result at the right offsets, never-present pages included (shared anon's object
	 * ends at the mapping's first length: a grown chunk past it is not read) */
	{
		size_t nch = new_len / PLAIN_CHB;
		/* shared anon is one object: a grown chunk inside it reads the object, private anon reads zeros */
		size_t anon_upto = pa->kind == P_ANON_SHARED ? len : off + mlen;
		if (pa->kind == P_ANON_SHARED && off + new_len > len)
			nch = (len - off) / PLAIN_CHB;
		if ((bad = check_chunks(pa->kind, got, nch, off, anon_upto))) {
			note(r, "the result reads the wrong data at offset 0x%zx of the original mapping (page %zu)", bad - 1,
			     (bad - 1) / pg);
			observe(r, CODE(BADDATA));
			return;
		}
		/* the rest of the original mapping, untouched */
		if (off && (bad = check_chunks(pa->kind, a.addr, pa->first, 0, len))) {
			note(r, "the head left in place reads wrong at 0x%zx", bad - 1);
			observe(r, CODE(BADDATA));
			return;
		}
		if (off + mlen < len &&
		    (bad = check_chunks(pa->kind, a.addr + off + mlen, PLAIN_CH - pa->first - pa->count, off + mlen, len))) {
			note(r, "the tail left in place reads wrong at 0x%zx", bad - 1);
			observe(r, CODE(BADDATA));
			return;
		}
	}
	/* everything gone: the baseline again */
	munmap(got, new_len);
	munmap(a.res, a.res_len);
	if (dst.res)
		munmap(dst.res, dst.res_len);
	if (fd >= 0)
		close(fd);
	take(&s3);
	s3.committed = settle_committed(s0.committed, tol);
	note(r, "after unmap: VmSize %+ld Committed_AS %+ld Shmem %+ld kB (tolerances: exact, %ld, %ld kB)",
	     s3.vmsize - s0.vmsize, s3.committed - s0.committed, s3.shmem - s0.shmem, tol, shmem_tol);
	if (s3.vmsize != s0.vmsize) {
		observe(r, CODE(VMSIZE));
		return;
	}
	if (labs(s3.committed - s0.committed) > tol) {
		observe(r, CODE(COMMIT));
		return;
	}
	if (s3.shmem >= 0 && labs(s3.shmem - s0.shmem) > shmem_tol) {
		observe(r, CODE(SHMEM));
		return;
	}
	observe(r, "ok");
}

#define P(kname, k, opname, op, first, count) \
	{"plain-" opname "-" kname, case_plain, &(const struct plain_arg){k, op, first, count}}
/* A subset chosen for the run time (100 cases must finish within the verifier's limit on a loaded TCG host): every
 * operation on memfd shared, the rest spread over the other kinds so that each operation and each kind is covered
 * (head moves share the whole move's offset 0). */
const struct test_case plain_cases[] = {
	P("memfd-shared", P_MEMFD_SHARED, "fixed-whole", OP_FIXED, 0, 16),
	P("memfd-shared", P_MEMFD_SHARED, "fixed-middle", OP_FIXED, 5, 6),
	P("memfd-shared", P_MEMFD_SHARED, "fixed-tail", OP_FIXED, 10, 6),
	P("memfd-shared", P_MEMFD_SHARED, "move-middle", OP_MOVE, 5, 6),
	P("memfd-shared", P_MEMFD_SHARED, "move-tail", OP_MOVE, 10, 6),
	P("memfd-shared", P_MEMFD_SHARED, "grow-inplace", OP_GROW_INPLACE, 0, 16),
	P("memfd-shared", P_MEMFD_SHARED, "shrink", OP_SHRINK, 0, 16),
	P("memfd-private", P_MEMFD_PRIVATE, "fixed-middle", OP_FIXED, 5, 6),
	P("memfd-private", P_MEMFD_PRIVATE, "move-tail", OP_MOVE, 10, 6),
	P("memfd-private", P_MEMFD_PRIVATE, "shrink", OP_SHRINK, 0, 16),
	P("tmpfs-shared", P_TMPFS_SHARED, "fixed-tail", OP_FIXED, 10, 6),
	P("tmpfs-shared", P_TMPFS_SHARED, "move-middle", OP_MOVE, 5, 6),
	P("tmpfs-shared", P_TMPFS_SHARED, "grow-inplace", OP_GROW_INPLACE, 0, 16),
	P("anon-private", P_ANON, "fixed-middle", OP_FIXED, 5, 6),
	P("anon-private", P_ANON, "move-tail", OP_MOVE, 10, 6),
	P("anon-private", P_ANON, "grow-inplace", OP_GROW_INPLACE, 0, 16),
	P("anon-shared", P_ANON_SHARED, "fixed-tail", OP_FIXED, 10, 6),
	P("anon-shared", P_ANON_SHARED, "shrink", OP_SHRINK, 0, 16),
};

const size_t n_plain_cases = sizeof(plain_cases) / sizeof(plain_cases[0]);
