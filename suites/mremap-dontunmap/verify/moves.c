/* kpipe verifier, kernel-state cases of less common moves: onto an existing mapping (MREMAP_FIXED), there and
 * back again, a single page and a large sparse range, and the userfaultfd GC flow with several threads.
 * The checks reuse state.c's readers (pagemap, smaps, VmSize, Committed_AS, Shmem); state.c's header says
 * why each holds after a plain DONTUNMAP move.  What these cases add follows from mm/mremap.c (5.10,
 * 5.10 + the seed patch, 6.12):
 *  - replace-*: mremap_to() with MREMAP_FIXED first calls do_munmap(mm, new_addr, new_len) on the
 *    destination, then move_vma() as for any DONTUNMAP move.  do_munmap removes the mapping that was
 *    there: its PTEs and pages (nothing of it left in pagemap, its data gone), its VM_ACCOUNT charge
 *    (vm_unacct_memory in remove_vma_list) and, when that VMA held the last reference to a memfd, the file
 *    with its page cache (Shmem) and its per-page charges (memfd is VM_NORESERVE: shmem_acct_block).  So
 *    across the move VmSize does not change (the replaced length out, the moved length in), Committed_AS
 *    moves by the accounted VMAs' change minus the memfd's pages, Shmem drops by the replaced memfd's pages.
 *  - backforth-*: A -> B, then B -> A with MREMAP_FIXED: the second mremap_to() unmaps the (empty) VMA the
 *    first move left at A, releasing its charge, and move_vma() moves the PTEs back: the pages are again at
 *    A with their PFNs, B holds none; two VMAs stay, each accounted and charged once; after unmapping both
 *    everything is at its baseline (a charge taken twice or a file reference kept shows there).
 *  - size-*: move_page_tables() walks the range one PMD extent at a time and move_ptes() moves each present
 *    PTE, skipping pte_none ones: a 1-page move is one extent of one PTE; in a 64 MiB range with one touched
 *    page per MiB (at a varying offset) exactly those pages are present afterwards in the new range with the
 *    same PFNs, none in the old, and never-touched pages are present nowhere.
 *  - gc-mt-*: after the DONTUNMAP move the old VMA is left empty (every PTE moved), so with userfaultfd
 *    MISSING registered on it EVERY first access to an old page traps (handle_userfault), whichever thread
 *    makes it; UFFDIO_COPY from the moved heap resolves it and wakes the waiters.  A page that did not trap
 *    kept its PTE in the old range (the move left it behind).  Faults raced by several threads on one page
 *    see UFFDIO_COPY fail with EEXIST: the handler then wakes the range with UFFDIO_WAKE (the 5.10 selftest
 *    hang was a missing wake), and every thread must finish: no page installed for 5 s while threads wait is
 *    a HANG, reported by the case itself before the harness's time limit.
 */
#define _GNU_SOURCE
#include "codes.h"
#include "harness.h"
#include "moves.h"
#include "state_util.h"
#include "uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/userfaultfd.h>

#ifndef MADV_NOHUGEPAGE
#define MADV_NOHUGEPAGE 15
#endif

static void *mremap_fixed(void *old, size_t len, void *to)
{
	return (void *)syscall(SYS_mremap, old, len, len, DONTUNMAP | MREMAP_FIXED, to);
}

/* Committed_AS tolerance: per-VMA charges are all or nothing (vm_acct_memory(new_len), vm_unacct_memory of a
 * whole VMA), so a missing or leaked charge is the whole range; half of it absorbs other processes' commits
 * (0 measured in the guest, up to ~36 MiB on a host building kernels). */
static long commit_tol(size_t len, long *noise)
{
	long tol;
	*noise = committed_noise();
	tol = 64 + 2 * *noise;
	return tol < (long)(len / 1024 / 2) ? (long)(len / 1024 / 2) : tol;
}

/* Shmem is read without folding the per-CPU vmstat deltas (up to STAT_THRESHOLD_MAX pages per CPU). */
static long shmem_tol(long floor_kb)
{
	long t = sysconf(_SC_NPROCESSORS_ONLN) * STAT_THRESHOLD_MAX * (long)(page_size() / 1024);
	return t < floor_kb ? floor_kb : t;
}

static long ac_kb(const uint8_t *addr, size_t len)
{
	struct vma vs[8];
	int n = smaps_range((unsigned long)addr, (unsigned long)addr + len, vs, 8);
	return flagged_kb(vs, n, "ac", (unsigned long)addr, (unsigned long)addr + len);
}

/* Everything unmapped and closed: VmSize exactly, Committed_AS and Shmem within their tolerance. */
static int back_to_baseline(struct result *r, const struct snap *s0, long tol, long stol)
{
	struct snap s3;
	take(&s3);
	s3.committed = settle_committed(s0->committed, tol);
	note(r, "after unmap: VmSize %+ld Committed_AS %+ld Shmem %+ld kB", s3.vmsize - s0->vmsize,
	     s3.committed - s0->committed, s3.shmem - s0->shmem);
	if (s3.vmsize != s0->vmsize) {
		observe(r, CODE(VMSIZE));
		return -1;
	}
	if (labs(s3.committed - s0->committed) > tol) {
		note(r, "Committed_AS not back to its baseline (tolerance %ld kB): a charge leaked", tol);
		observe(r, CODE(COMMIT));
		return -1;
	}
	if (s3.shmem >= 0 && labs(s3.shmem - s0->shmem) > stol) {
		note(r, "Shmem not back to its baseline (tolerance %ld kB)", stol);
		observe(r, CODE(SHMEM));
		return -1;
	}
	return 0;
}

/* The new VMA holds `rss_kb` (anon pages: all of them when private), the old one nothing. */
static int check_rss(struct result *r, enum kind k, const uint8_t *moved, const uint8_t *old, size_t len,
		     long rss_kb, struct vma *vnew, struct vma *vold)
{
	if (smaps_exact((unsigned long)moved, (unsigned long)moved + len, vnew, r, "new") ||
	    smaps_exact((unsigned long)old, (unsigned long)old + len, vold, r, "old")) {
		observe(r, CODE(VMA));
		return -1;
	}
	if (vnew->rss != rss_kb || vnew->anon != (is_anon_private(k) ? rss_kb : 0) || vold->rss || vold->anon) {
		note(r, "new range Rss %ld Anonymous %ld kB, old range Rss %ld Anonymous %ld kB; expected %ld/%ld and 0",
		     vnew->rss, vnew->anon, vold->rss, vold->anon, rss_kb, is_anon_private(k) ? rss_kb : 0);
		observe(r, CODE(RSS));
		return -1;
	}
	return 0;
}

struct move_arg {
	enum kind kind;
};

/* ---- replace-*: MREMAP_FIXED | DONTUNMAP onto a populated mapping of the same kind ---- */

#define REPL_VIRT_MB 64
#define REPL_SRC_MB 1	/* populated in the source */
#define REPL_DST_MB 4	/* populated in the mapping the move replaces: more than the source */

static void case_replace(const struct test_case *tc, struct result *r)
{
	const struct move_arg *ma = tc->arg;
	size_t pg = page_size(), len = (size_t)REPL_VIRT_MB << 20, npages = len / pg;
	size_t src = (size_t)REPL_SRC_MB << 20, dst_touch = (size_t)REPL_DST_MB << 20;
	uint64_t *before = calloc(npages, 8), *scratch = calloc(npages, 8);
	long noise, tol = commit_tol(len, &noise), stol = shmem_tol((long)(dst_touch / 1024 / 4));
	long acc_before, acc_after, want_commit, want_shmem, file_kb;
	struct area a, d;
	struct snap s0, s1, s2;
	struct vma vnew, vold;
	int fd, dfd;
	uint8_t *moved;
	const char *bad;

	if (!before || !scratch) {
		setup_error(r, "out of memory");
		return;
	}
	take(&s0);
	if (reserve(&a, len, 0, r) || reserve(&d, len, 0, r) || map_kind(&a, ma->kind, &fd, r) ||
	    map_kind(&d, ma->kind, &dfd, r))
		return;
	fill_pages(a.addr, src, 0, 71, 1);
	memset(d.addr, 0xa5, dst_touch);	/* anything but zeros */
	/* the replaced memfd lives on only through its mapping: do_munmap drops its last reference */
	if (dfd >= 0)
		close(dfd);
	if (pagemap(a.addr, npages, before)) {
		setup_error(r, "cannot read /proc/self/pagemap: %s", errno_name(errno));
		return;
	}
	take(&s1);
	acc_before = ac_kb(a.addr, len) + ac_kb(d.addr, len);
	moved = mremap_fixed(a.addr, len, d.addr);
	if (moved == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return;
	}
	take(&s2);
	note(r, "%s, %zu MiB (%zu MiB populated) onto %zu MiB populated", kind_name[ma->kind], len >> 20, src >> 20,
	     dst_touch >> 20);
	if (moved != d.addr) {
		note(r, "MREMAP_FIXED to %p returned %p", (void *)d.addr, (void *)moved);
		observe(r, CODE(NOTFIXED));
		return;
	}
	/* exactly the source's pages at the destination: none of the replaced mapping's is left */
	if ((bad = check_pagemap(r, before, a.addr, moved, npages, 1, scratch))) {
		observe(r, bad);
		return;
	}
	if (check_rss(r, ma->kind, moved, a.addr, len, (long)(src / 1024), &vnew, &vold))
		return;
	if (s2.vmsize != s1.vmsize) {
		note(r, "VmSize moved by %ld kB, expected 0 (the replaced mapping out, the moved one in)",
		     s2.vmsize - s1.vmsize);
		observe(r, CODE(VMSIZE));
		return;
	}
	acc_after = (has_flag(&vnew, "ac") + has_flag(&vold, "ac")) * (long)(len / 1024);
	file_kb = is_shared(ma->kind) ? (long)(dst_touch / 1024) : 0;	/* the replaced memfd's pages */
	want_commit = acc_after - acc_before - file_kb;
	want_shmem = -file_kb;
	note(r, "Committed_AS %+ld kB (expected %+ld: accounted VMAs %+ld, replaced file -%ld; noise %ld); "
	     "Shmem %+ld kB (expected %+ld)", s2.committed - s1.committed, want_commit, acc_after - acc_before,
	     file_kb, noise, s2.shmem - s1.shmem, want_shmem);
	if (labs(s2.committed - s1.committed - want_commit) > tol) {
		note(r, "the replaced mapping's charge is not released (tolerance %ld kB)", tol);
		observe(r, CODE(COMMIT));
		return;
	}
	if (s2.shmem >= 0 && labs(s2.shmem - s1.shmem - want_shmem) > stol) {
		note(r, "Shmem did not drop by the replaced memfd's pages (tolerance %ld kB)", stol);
		observe(r, CODE(SHMEM));
		return;
	}
	if (bad_page(moved, src, 0, 71, 1) >= 0) {
		note(r, "the destination does not hold the moved data");
		observe(r, CODE(BADDATA));
		return;
	}
	{
		long p = bad_page(moved + src, dst_touch - src, src, 0, 1);
		if (p >= 0) {
			note(r, "destination page %ld reads the replaced mapping's data, not zeros", (long)(src / pg) + p);
			observe(r, CODE(DSTDATA));
			return;
		}
	}
	if (bad_page(a.addr, src, 0, is_shared(ma->kind) ? 71 : 0, 1) >= 0) {
		note(r, "the old range does not read %s", is_shared(ma->kind) ? "the same data" : "zeros");
		observe(r, CODE(BADDATA));
		return;
	}
	munmap(moved, len);
	munmap(a.addr, len);
	if (fd >= 0)
		close(fd);
	munmap(a.res, a.res_len);
	munmap(d.res, d.res_len);
	if (back_to_baseline(r, &s0, tol, stol))
		return;
	observe(r, "ok");
}

/* ---- backforth-*: A -> B with DONTUNMAP, then B -> A with MREMAP_FIXED | DONTUNMAP ---- */

#define BF_VIRT_MB 64
#define BF_TOUCH_MB 2

static void case_backforth(const struct test_case *tc, struct result *r)
{
	const struct move_arg *ma = tc->arg;
	size_t pg = page_size(), len = (size_t)BF_VIRT_MB << 20, npages = len / pg, touch = (size_t)BF_TOUCH_MB << 20;
	uint64_t *before = calloc(npages, 8), *scratch = calloc(npages, 8);
	long noise, tol = commit_tol(len, &noise), stol = shmem_tol((long)(touch / 1024 / 2));
	long acc_before, acc_after;
	struct area a, b;
	struct snap s0, s1, s2, s3;
	struct vma vback, vb;
	int fd;
	uint8_t *there, *back;
	const char *bad;

	if (!before || !scratch) {
		setup_error(r, "out of memory");
		return;
	}
	take(&s0);
	if (reserve(&a, len, 0, r) || hole(&b, len, 0, r) || map_kind(&a, ma->kind, &fd, r))
		return;
	fill_pages(a.addr, touch, 0, 79, 1);
	if (pagemap(a.addr, npages, before)) {
		setup_error(r, "cannot read /proc/self/pagemap: %s", errno_name(errno));
		return;
	}
	take(&s1);
	acc_before = ac_kb(a.addr, len);
	there = mremap_(a.addr, len, b.addr);
	if (there == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return;
	}
	take(&s2);
	back = mremap_fixed(there, len, a.addr);
	if (back == MAP_FAILED) {
		note(r, "the move back onto the old range failed, the move there succeeded");
		observe_errno(r, errno);
		return;
	}
	take(&s3);
	note(r, "%s, %zu MiB (%zu MiB populated) to %p and back", kind_name[ma->kind], len >> 20, touch >> 20,
	     (void *)there);
	if (back != a.addr) {
		note(r, "MREMAP_FIXED to %p returned %p", (void *)a.addr, (void *)back);
		observe(r, CODE(NOTFIXED));
		return;
	}
	/* the PTEs are back at A with their PFNs; B (the range the second move left) holds none */
	if ((bad = check_pagemap(r, before, there, back, npages, 1, scratch))) {
		observe(r, bad);
		return;
	}
	if (check_rss(r, ma->kind, back, there, len, (long)(touch / 1024), &vback, &vb))
		return;
	if (s2.vmsize - s1.vmsize != (long)(len / 1024) || s3.vmsize != s2.vmsize) {
		note(r, "VmSize %+ld kB after the first move, %+ld after the second; expected +%zu and +0",
		     s2.vmsize - s1.vmsize, s3.vmsize - s2.vmsize, len / 1024);
		observe(r, CODE(VMSIZE));
		return;
	}
	acc_after = (has_flag(&vback, "ac") + has_flag(&vb, "ac")) * (long)(len / 1024);
	note(r, "Committed_AS %+ld kB after the first move, %+ld after both (accounted VMAs %+ld; noise %ld); "
	     "Shmem %+ld kB", s2.committed - s1.committed, s3.committed - s1.committed, acc_after - acc_before, noise,
	     s3.shmem - s1.shmem);
	if (labs(s3.committed - s1.committed - (acc_after - acc_before)) > tol ||
	    labs(s2.committed - s1.committed - (acc_after - acc_before)) > tol) {
		note(r, "Committed_AS does not follow the accounted VMAs (tolerance %ld kB)", tol);
		observe(r, CODE(COMMIT));
		return;
	}
	if (s3.shmem >= 0 && labs(s3.shmem - s1.shmem) > stol) {
		note(r, "Shmem moved across the two moves (tolerance %ld kB)", stol);
		observe(r, CODE(SHMEM));
		return;
	}
	if (bad_page(back, touch, 0, 79, 1) >= 0 || bad_page(back + touch, 4 * pg, touch, 0, 1) >= 0) {
		note(r, "the range moved back does not hold the data");
		observe(r, CODE(BADDATA));
		return;
	}
	if (bad_page(there, touch, 0, is_shared(ma->kind) ? 79 : 0, 1) >= 0) {
		note(r, "the range left behind does not read %s", is_shared(ma->kind) ? "the same data" : "zeros");
		observe(r, CODE(BADDATA));
		return;
	}
	munmap(back, len);
	munmap(there, len);
	if (fd >= 0)
		close(fd);
	munmap(a.res, a.res_len);
	munmap(b.res, b.res_len);
	if (back_to_baseline(r, &s0, tol, stol))
		return;
	observe(r, "ok");
}

/* ---- size-*: one page; a large sparse range ---- */

#define SPARSE_MB 64

struct size_arg {
	enum kind kind;
	int sparse;	/* SPARSE_MB with one page touched per MiB; else one page */
};

/* The page touched in MiB `i` of the sparse range: a different offset in each MiB (and so in each PMD). */
static size_t sparse_page(size_t i, size_t per_mb)
{
	return i * per_mb + (i * 37) % per_mb;
}

static void case_size(const struct test_case *tc, struct result *r)
{
	const struct size_arg *sa = tc->arg;
	size_t pg = page_size(), per_mb = ((size_t)1 << 20) / pg;
	size_t len = sa->sparse ? (size_t)SPARSE_MB << 20 : pg, npages = len / pg, ntouched = sa->sparse ? SPARSE_MB : 1;
	uint64_t *before = calloc(npages, 8), *scratch = calloc(npages, 8);
	uint8_t *touched = calloc(npages, 1);
	long noise, tol = commit_tol(len, &noise), stol = shmem_tol((long)(ntouched * pg / 1024));
	long acc_before, acc_after;
	size_t present = 0;
	struct area a, b;
	struct snap s0, s1, s2;
	struct vma vnew, vold;
	int fd;
	uint8_t *moved;
	const char *bad;

	if (!before || !scratch || !touched) {
		setup_error(r, "out of memory");
		return;
	}
	take(&s0);
	if (reserve(&a, len, 0, r) || hole(&b, len, 0, r) || map_kind(&a, sa->kind, &fd, r))
		return;
	for (size_t i = 0; i < ntouched; i++) {
		size_t p = sa->sparse ? sparse_page(i, per_mb) : 0;
		touched[p] = 1;
		fill_pages(a.addr + p * pg, pg, p * pg, 83, 1);
	}
	if (pagemap(a.addr, npages, before)) {
		setup_error(r, "cannot read /proc/self/pagemap: %s", errno_name(errno));
		return;
	}
	for (size_t i = 0; i < npages; i++)
		present += !!(before[i] & PM_PRESENT);
	if (present != ntouched) {
		setup_error(r, "%zu pages present before the move, %zu touched (fault-around or THP?)", present, ntouched);
		return;
	}
	take(&s1);
	acc_before = ac_kb(a.addr, len);
	moved = mremap_(a.addr, len, b.addr);
	if (moved == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return;
	}
	take(&s2);
	note(r, "%s, %zu kB with %zu page(s) touched", kind_name[sa->kind], len / 1024, ntouched);
	/* present before = exactly the touched pages: the new range must show exactly those, same PFNs */
	if ((bad = check_pagemap(r, before, a.addr, moved, npages, 1, scratch))) {
		observe(r, bad);
		return;
	}
	if (check_rss(r, sa->kind, moved, a.addr, len, (long)(ntouched * pg / 1024), &vnew, &vold))
		return;
	if (s2.vmsize - s1.vmsize != (long)(len / 1024)) {
		note(r, "VmSize grew by %ld kB, expected %zu", s2.vmsize - s1.vmsize, len / 1024);
		observe(r, CODE(VMSIZE));
		return;
	}
	acc_after = (has_flag(&vnew, "ac") + has_flag(&vold, "ac")) * (long)(len / 1024);
	note(r, "Committed_AS %+ld kB (accounted VMAs %+ld kB, tolerance %ld)", s2.committed - s1.committed,
	     acc_after - acc_before, tol);
	/* a one-page charge is below what other processes' commits blur: judged for the sparse range only */
	if (sa->sparse && labs(s2.committed - s1.committed - (acc_after - acc_before)) > tol) {
		observe(r, CODE(COMMIT));
		return;
	}
	/* the touched pages' data; the others were shown present nowhere, and a page present nowhere reads zeros
	 * (anon) or the file's hole (memfd): reading them all would only cost a fault each */
	for (size_t i = 0; i < npages; i++) {
		if (!touched[i])
			continue;
		if (bad_page(moved + i * pg, pg, i * pg, 83, 1) >= 0) {
			note(r, "new page %zu: not the moved data", i);
			observe(r, CODE(BADDATA));
			return;
		}
		if (bad_page(a.addr + i * pg, pg, i * pg, is_shared(sa->kind) ? 83 : 0, 1) >= 0) {
			note(r, "old page %zu: not %s", i, is_shared(sa->kind) ? "the file's data" : "zeros");
			observe(r, CODE(BADDATA));
			return;
		}
	}
	munmap(moved, len);
	munmap(a.addr, len);
	if (fd >= 0)
		close(fd);
	munmap(a.res, a.res_len);
	munmap(b.res, b.res_len);
	if (back_to_baseline(r, &s0, sa->sparse ? tol : 64 + 2 * noise + (long)(len / 1024), stol))
		return;
	observe(r, "ok");
}

/* ---- gc-mt-*: the userfaultfd GC flow with several mutator threads ---- */

#define GCMT_MB 32
#define GCMT_THREADS 4
/* A fault is resolved by copying from the faulting page to the end of its 64 KiB chunk: under TCG with KASAN
 * one fault round trip costs ~5 ms, and 8192 of them (one per 4 KiB page) did not fit the case's time limit */
#define GCMT_CHUNK (64u << 10)
#define GCMT_STALL_S 5	/* no page installed for this long while threads still wait: HANG */

struct gcmt {
	int uffd;
	uint64_t *old, *moved;	/* the range left behind (faults here) and where the heap went */
	size_t len, pg, npages;
	uint8_t *resolved;	/* per page: installed by UFFDIO_COPY */
	int stop, finished;	/* atomics */
	pthread_barrier_t start;	/* the mutators start together */
	long copies, eexist, events, bad[GCMT_THREADS];	/* copies: pages installed (atomic) */
	char err[160];
};

struct mutator {
	struct gcmt *g;
	int t;
};

static uint64_t gword(size_t page, size_t w)
{
	return ((uint64_t)page << 32 | (w * 2654435761u)) ^ 0x5a5a000000000001ull;
}

/* The GC's handler: each fault on the old heap is resolved with UFFDIO_COPY of the moved data, from the
 * faulting page to the end of its chunk.  EEXIST: another thread's fault on that page was resolved first,
 * wake whoever still waits on it; EAGAIN: a partial copy (a page further on exists), the faulting page is in. */
static void *gcmt_handler(void *arg)
{
	struct gcmt *g = arg;
	size_t chunk_pages = GCMT_CHUNK / g->pg;
	while (!__atomic_load_n(&g->stop, __ATOMIC_ACQUIRE)) {
		struct pollfd pfd = {.fd = g->uffd, .events = POLLIN};
		struct uffd_msg msg;
		struct uffdio_copy c;
		unsigned long addr;
		size_t p, n;
		int got = poll(&pfd, 1, 100);

		if (got == 0)
			continue;
		if (got < 0 || read(g->uffd, &msg, sizeof(msg)) != sizeof(msg)) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			snprintf(g->err, sizeof(g->err), "reading the userfaultfd: %s", errno_name(errno));
			return NULL;
		}
		g->events++;
		if (msg.event != UFFD_EVENT_PAGEFAULT) {
			snprintf(g->err, sizeof(g->err), "unexpected userfaultfd event 0x%x", msg.event);
			return NULL;
		}
		addr = (unsigned long)msg.arg.pagefault.address & ~(g->pg - 1);
		p = (addr - (unsigned long)g->old) / g->pg;
		if (addr < (unsigned long)g->old || p >= g->npages) {
			snprintf(g->err, sizeof(g->err), "fault at %lx outside the old heap", addr);
			return NULL;
		}
		n = chunk_pages - p % chunk_pages;
		c = (struct uffdio_copy){.dst = addr, .src = (unsigned long)(g->moved + p * (g->pg / 8)), .len = n * g->pg};
		if (ioctl(g->uffd, UFFDIO_COPY, &c) && errno != EAGAIN) {
			if (errno == EEXIST) {
				struct uffdio_range w = {.start = addr, .len = g->pg};
				g->eexist++;
				if (ioctl(g->uffd, UFFDIO_WAKE, &w) == 0)
					continue;
			}
			snprintf(g->err, sizeof(g->err), "UFFDIO_%s at page %zu: %s", errno == EEXIST ? "WAKE" : "COPY", p,
				 errno_name(errno));
			return NULL;
		}
		if (c.copy <= 0) {
			snprintf(g->err, sizeof(g->err), "UFFDIO_COPY at page %zu copied %lld", p, (long long)c.copy);
			return NULL;
		}
		for (size_t i = 0; i < (size_t)c.copy / g->pg; i++)
			g->resolved[p + i] = 1;
		__atomic_add_fetch(&g->copies, c.copy / (long long)g->pg, __ATOMIC_RELEASE);
	}
	return NULL;
}

/* Mutator `t`: every page of the old heap, checking two words of each (other words per thread); released
 * together by a barrier, threads 0 and 1 start at the beginning, 2 and 3 half way: pairs fault on the same
 * chunks at the same time and meet the other pair.  (The kernel wakes every waiter on a range when it is
 * copied, pending faults included, so a duplicate fault reaches the handler only when read before the copy:
 * EEXIST is rare.  All four threads in lockstep doubled the case's time under TCG for no more of them.) */
static void *gcmt_mutator(void *arg)
{
	struct mutator *m = arg;
	struct gcmt *g = m->g;
	size_t words = g->pg / 8;
	pthread_barrier_wait(&g->start);
	for (size_t k = 0; k < g->npages; k++) {
		size_t p = (k + (size_t)(m->t / 2) * g->npages / 2) % g->npages;
		size_t w1 = (k * 7 + (size_t)m->t) % words, w2 = words - 1 - w1;
		if (g->old[p * words + w1] != gword(p, w1) || g->old[p * words + w2] != gword(p, w2))
			g->bad[m->t]++;
	}
	__atomic_add_fetch(&g->finished, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void case_gc_mt(const struct test_case *tc, struct result *r)
{
	size_t pg = page_size(), len = (size_t)GCMT_MB << 20, words;
	struct uffdio_api api = {.api = UFFD_API};
	struct uffdio_register reg;
	struct mutator ms[GCMT_THREADS];
	pthread_t h, ts[GCMT_THREADS];
	struct gcmt *g = calloc(1, sizeof(*g));
	struct area a, b;
	int started = 0;
	long bad = 0, unresolved = 0, last_copies = -1;
	/* the harness's time limit for this case (its alarm), less a margin: the case reports before it */
	unsigned left = alarm(0);
	double t0, t_end, t_progress;
	(void)tc;

	if (left)
		alarm(left);
	if (!g || reserve(&a, len, 0, r) || hole(&b, len, 0, r))
		return;
	/* populated in one call: a user fault per page costs ~0.3 ms under TCG with KASAN */
	if (mmap(a.addr, len, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0) ==
	    MAP_FAILED) {
		setup_error(r, "mmap of the %zu MiB heap: %s", len >> 20, errno_name(errno));
		return;
	}
	g->len = len;
	g->pg = pg;
	g->npages = len / pg;
	g->resolved = calloc(g->npages, 1);
	if (!g->resolved) {
		setup_error(r, "out of memory");
		return;
	}
	words = len / 8;
	g->old = (uint64_t *)a.addr;
	for (size_t i = 0; i < words; i++)
		g->old[i] = gword(i / (pg / 8), i % (pg / 8));
	g->moved = mremap_(a.addr, len, b.addr);	/* the stop-the-world pause */
	if (g->moved == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return;
	}
	g->uffd = uffd_open_reported(r);
	if (g->uffd < 0)
		return;
	if (ioctl(g->uffd, UFFDIO_API, &api)) {
		setup_error(r, "UFFDIO_API: %s", errno_name(errno));
		return;
	}
	reg = (struct uffdio_register){.range = {.start = (unsigned long)a.addr, .len = len},
				       .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(g->uffd, UFFDIO_REGISTER, &reg)) {
		setup_error(r, "UFFDIO_REGISTER MISSING on the old heap: %s", errno_name(errno));
		return;
	}
	if (pthread_barrier_init(&g->start, NULL, GCMT_THREADS)) {
		setup_error(r, "pthread_barrier_init: %s", errno_name(errno));
		return;
	}
	t0 = t_progress = now_us();
	t_end = t0 + (left > 4 ? left - 3 : 1) * 1e6;
	if (pthread_create(&h, NULL, gcmt_handler, g)) {
		setup_error(r, "cannot start the handler thread");
		return;
	}
	for (int t = 0; t < GCMT_THREADS; t++) {
		ms[t] = (struct mutator){g, t};
		if (pthread_create(&ts[t], NULL, gcmt_mutator, &ms[t]))
			break;
		started++;
	}
	if (started < GCMT_THREADS) {
		setup_error(r, "started %d of %d mutator threads", started, GCMT_THREADS);
		return;	/* the case process ends, with its threads */
	}
	/* bounded wait: HANG when nothing is installed for GCMT_STALL_S while threads still wait; out of time
	 * while still progressing is the guest's slowness, not a kernel verdict */
	while (__atomic_load_n(&g->finished, __ATOMIC_ACQUIRE) < GCMT_THREADS && !g->err[0]) {
		long c = __atomic_load_n(&g->copies, __ATOMIC_ACQUIRE);
		double now = now_us();
		if (c != last_copies) {
			last_copies = c;
			t_progress = now;
		}
		if (now - t_progress > GCMT_STALL_S * 1e6 || now > t_end)
			break;
		usleep(5000);
	}
	if (__atomic_load_n(&g->finished, __ATOMIC_ACQUIRE) < GCMT_THREADS) {
		int waiting = GCMT_THREADS - __atomic_load_n(&g->finished, __ATOMIC_ACQUIRE);
		note(r, "%d of %d mutator threads unfinished after %.1f s; %ld faults, %ld of %zu pages installed, "
		     "%ld EEXIST%s%s", waiting, GCMT_THREADS, (now_us() - t0) / 1e6, g->events, g->copies, g->npages,
		     g->eexist, g->err[0] ? "; handler: " : "", g->err);
		if (g->err[0])
			observe(r, CODE(UFFD));
		else if (now_us() - t_progress > GCMT_STALL_S * 1e6)
			observe(r, CODE(HANG));	/* threads wait on faults nobody resolves any more */
		else
			setup_error(r, "still progressing when the case's time ran out (a slow guest): %ld of %zu "
				    "pages installed", g->copies, g->npages);
		return;	/* the case process ends, with its blocked threads */
	}
	for (int t = 0; t < GCMT_THREADS; t++)
		pthread_join(ts[t], NULL);
	__atomic_store_n(&g->stop, 1, __ATOMIC_RELEASE);
	pthread_join(h, NULL);
	for (int t = 0; t < GCMT_THREADS; t++)
		bad += g->bad[t];
	for (size_t p = 0; p < g->npages; p++)
		unresolved += !g->resolved[p];
	note(r, "%d threads over %zu MiB: %ld faults, %ld pages installed, %ld EEXIST (woken), %.2f s", GCMT_THREADS,
	     len >> 20, g->events, g->copies, g->eexist, (now_us() - t0) / 1e6);
	if (g->err[0]) {
		note(r, "handler: %s", g->err);
		observe(r, CODE(UFFD));
		return;
	}
	if (bad) {
		note(r, "the mutators read %ld wrong words", bad);
		observe(r, CODE(BADDATA));
		return;
	}
	/* the old range was left empty: every page of it must have come from the handler */
	if (unresolved) {
		size_t first = 0;
		while (g->resolved[first])
			first++;
		note(r, "%ld pages of the old heap were never installed by the handler (first: page %zu): they were "
		     "read without a fault, their PTEs stayed behind", unresolved, first);
		observe(r, CODE(NOTRAP));
		return;
	}
	for (size_t i = 0; i < words; i++)
		if (g->old[i] != gword(i / (pg / 8), i % (pg / 8)) || g->moved[i] != gword(i / (pg / 8), i % (pg / 8))) {
			note(r, "word %zu (page %zu) of the %s heap is wrong", i, i / (pg / 8),
			     g->old[i] != gword(i / (pg / 8), i % (pg / 8)) ? "old" : "moved");
			observe(r, CODE(BADDATA));
			return;
		}
	observe(r, "ok");
}

/* ---- the table ---- */

const struct test_case move_cases[] = {
	{"replace-anon-private", case_replace, &(const struct move_arg){K_ANON}},
	{"replace-memfd-shared", case_replace, &(const struct move_arg){K_MEMFD_SHARED}},
	{"backforth-anon-private", case_backforth, &(const struct move_arg){K_ANON}},
	{"backforth-memfd-shared", case_backforth, &(const struct move_arg){K_MEMFD_SHARED}},
	{"size-1page-anon", case_size, &(const struct size_arg){K_ANON, 0}},
	{"size-1page-memfd", case_size, &(const struct size_arg){K_MEMFD_SHARED, 0}},
	{"size-sparse-anon", case_size, &(const struct size_arg){K_ANON, 1}},
	{"size-sparse-memfd", case_size, &(const struct size_arg){K_MEMFD_SHARED, 1}},
	{"gc-mt-missing-anon", case_gc_mt, NULL},
};

const size_t n_move_cases = sizeof(move_cases) / sizeof(move_cases[0]);
