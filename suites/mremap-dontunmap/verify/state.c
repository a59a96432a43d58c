/* kpipe verifier, kernel-state cases: what mremap(MREMAP_MAYMOVE | MREMAP_DONTUNMAP) leaves behind in the
 * page tables, the VMAs and the memory accounting, checked around every successful move.
 *
 * Why each check holds (mm/mremap.c, move_vma(), in 5.10, 5.10 + the seed patch and 6.12):
 *  - move_page_tables() moves the PTEs of the old range onto the new one: right after the move, before any
 *    access, /proc/self/pagemap shows every populated page present in the new range with the SAME PFN, and
 *    nothing present in the old range, for anonymous and for shmem mappings alike (shmem pages stay in the
 *    page cache, so the old range refaults them later).  A page never touched is present on neither side.
 *  - copy_vma() copies vm_flags: the new VMA is accounted ("ac") when the old one was, and move_vma charges
 *    vm_acct_memory(new_len) for it under DONTUNMAP (5.10) / vrm_charge (newer).  Whatever a kernel decides
 *    for the old VMA's VM_ACCOUNT, the charge must match the "ac" VMAs, since only "ac" VMAs are uncharged
 *    at munmap (vm_unacct_memory in unmap): so Committed_AS moves by the "ac" bytes the move added, and is
 *    back at its baseline once both ranges are unmapped and the fd closed.  /proc/meminfo's Committed_AS is
 *    vm_memory_committed() = percpu_counter_sum_positive(): an exact sum over CPUs (no per-CPU batch error);
 *    the only noise is other processes, measured before each case and bounded.
 *  - VM_LOCKED[ONFAULT] is cleared on the old VMA and locked_vm is left alone: VmLck must equal the bytes of
 *    "lo" VMAs, the new range locked, the old one not, VmLck back to its baseline after unmapping.  5.10
 *    clears VM_LOCKED on the WHOLE old VMA when only part of it moves (no split) and leaks locked_vm:
 *    observed VMLCK, an expected failure there (expectations.toml), correct upstream.
 *  - mremap_userfaultfd_prep()/complete(): with UFFD_FEATURE_EVENT_REMAP the new VMA keeps the context
 *    ("um") and UFFD_EVENT_REMAP(from, to, len) is delivered; without it the new VMA drops it.  The old
 *    VMA stays registered.
 *  - vm_stat_account(new_len): VmSize grows by the moved length (the old range stays mapped).
 *  - pages are freed when both ranges are gone: /proc/kpageflags is read for the PFNs and reported (not
 *    judged: a busy machine reuses freed pages within milliseconds).
 */
#define _GNU_SOURCE
#include "codes.h"
#include "harness.h"
#include "state.h"
#include "state_util.h"
#include "uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/userfaultfd.h>

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
#ifndef MADV_NOHUGEPAGE
#define MADV_NOHUGEPAGE 15
#endif
#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif
#define KPF_LRU_ 5
#define KPF_ANON_ 12

void *mremap_(void *old, size_t len, void *hint)
{
	return (void *)syscall(SYS_mremap, old, len, len, DONTUNMAP, hint);
}

uint8_t spat(size_t off, unsigned seed)
{
	return (uint8_t)((off * 151u + (off >> 12) * 13u + seed * 37u) | 1u);
}

/* ---- /proc readers without malloc (fopen's buffer would move brk and VmSize) ---- */

static char procbuf[1 << 18];

static ssize_t slurp(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = 0, got;
	if (fd < 0)
		return -1;
	while ((got = read(fd, procbuf + n, sizeof(procbuf) - 1 - (size_t)n)) > 0)
		n += got;
	close(fd);
	procbuf[n] = 0;
	return n;
}

/* "Key:   123 kB" in a /proc file: the number, or -1. */
static long proc_kb(const char *path, const char *key)
{
	size_t n = strlen(key);
	if (slurp(path) < 0)
		return -1;
	for (char *l = procbuf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, key, n) && l[n] == ':')
			return strtol(l + n + 1, NULL, 10);
	return -1;
}

long status_kb(const char *key) { return proc_kb("/proc/self/status", key); }
long meminfo_kb(const char *key) { return proc_kb("/proc/meminfo", key); }

int has_flag(const struct vma *v, const char *f)
{
	for (const char *p = v->flags; (p = strstr(p, f)); p++)
		if ((p == v->flags || p[-1] == ' ') && (p[2] == ' ' || p[2] == 0))
			return 1;
	return 0;
}

/* All VMAs intersecting [lo, hi), from /proc/self/smaps; returns their count. */
int smaps_range(unsigned long lo, unsigned long hi, struct vma *out, int max)
{
	int n = 0;
	struct vma *cur = NULL;
	if (slurp("/proc/self/smaps") < 0)
		return -1;
	for (char *l = procbuf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		unsigned long a, b;
		char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l) : strlen(l);
		if (sscanf(l, "%lx-%lx ", &a, &b) == 2 && l[strspn(l, "0123456789abcdef")] == '-') {
			cur = NULL;
			if (a < hi && b > lo && n < max) {
				cur = &out[n++];
				memset(cur, 0, sizeof(*cur));
				cur->start = a;
				cur->end = b;
			}
		} else if (cur) {
			if (!strncmp(l, "Rss:", 4))
				cur->rss = strtol(l + 4, NULL, 10);
			else if (!strncmp(l, "Anonymous:", 10))
				cur->anon = strtol(l + 10, NULL, 10);
			else if (!strncmp(l, "Locked:", 7))
				cur->locked = strtol(l + 7, NULL, 10);
			else if (!strncmp(l, "AnonHugePages:", 14))
				cur->thp = strtol(l + 14, NULL, 10);
			else if (!strncmp(l, "VmFlags:", 8)) {
				size_t m = len - 8 < sizeof(cur->flags) - 1 ? len - 8 : sizeof(cur->flags) - 1;
				memcpy(cur->flags, l + 8, m);
				cur->flags[m] = 0;
			}
		}
	}
	return n;
}

/* The one VMA that must exactly cover [lo, hi) (guard pages keep neighbours from merging). */
int smaps_exact(unsigned long lo, unsigned long hi, struct vma *v, struct result *r, const char *what)
{
	struct vma vs[8];
	int n = smaps_range(lo, hi, vs, 8);
	if (n != 1 || vs[0].start != lo || vs[0].end != hi) {
		note(r, "%s range %lx-%lx is %d VMA(s) in smaps (first %lx-%lx), expected exactly one", what, lo, hi,
		     n, n > 0 ? vs[0].start : 0, n > 0 ? vs[0].end : 0);
		return -1;
	}
	*v = vs[0];
	return 0;
}

/* pagemap entries for `npages` pages at `addr`. */
int pagemap(const void *addr, size_t npages, uint64_t *out)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	off_t off = (off_t)((uintptr_t)addr / page_size()) * 8;
	ssize_t want = (ssize_t)(npages * 8), got;
	if (fd < 0)
		return -1;
	got = pread(fd, out, (size_t)want, off);
	close(fd);
	return got == want ? 0 : -1;
}

/* ---- a mapping surrounded by PROT_NONE guard pages, so that no VMA merges with it ---- */

int reserve(struct area *a, size_t len, size_t align, struct result *r)
{
	size_t pg = page_size(), extra = align > pg ? align : 0;
	uint8_t *p = mmap(NULL, len + 2 * pg + extra, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		setup_error(r, "cannot reserve %zu bytes of address space: %s", len + 2 * pg + extra, errno_name(errno));
		return -1;
	}
	if (extra) {	/* the range starts on an `align` boundary */
		uintptr_t start = ((uintptr_t)p + pg + align - 1) & ~(uintptr_t)(align - 1);
		uint8_t *res = (uint8_t *)start - pg;
		if (res > p)
			munmap(p, (size_t)(res - p));
		munmap(res + len + 2 * pg, (size_t)(p + len + 2 * pg + extra - (res + len + 2 * pg)));
		p = res;
	}
	a->res = p;
	a->res_len = len + 2 * pg;
	a->addr = p + pg;
	a->len = len;
	return 0;
}

/* A free hole of `len` bytes between two guard pages: the hint for the move's destination. */
int hole(struct area *a, size_t len, size_t align, struct result *r)
{
	if (reserve(a, len, align, r))
		return -1;
	munmap(a->addr, len);
	return 0;
}

const char *const kind_name[] = {"private anon", "shared anon", "memfd shared", "memfd private"};

int is_anon_private(enum kind k) { return k == K_ANON || k == K_MEMFD_PRIVATE; }	/* written pages are anon */
int is_shared(enum kind k) { return k == K_ANON_SHARED || k == K_MEMFD_SHARED; }

/* Maps `len` bytes of kind `k` into the reserved area; returns the fd (or -1 when none) through *fd. */
static int map_kind_flags(struct area *a, enum kind k, int *fd, struct result *r, int extra)
{
	int flags = MAP_FIXED | extra | (is_shared(k) ? MAP_SHARED : MAP_PRIVATE);
	void *p;
	*fd = -1;
	if (k == K_MEMFD_SHARED || k == K_MEMFD_PRIVATE) {
		*fd = memfd_create("kpipe-state", MFD_CLOEXEC);
		if (*fd < 0) {
			if (errno == ENOSYS)
				skip(r, "memfd_create: ENOSYS (kernel without MEMFD_CREATE)");
			else
				setup_error(r, "memfd_create: %s", errno_name(errno));
			return -1;
		}
		if (ftruncate(*fd, (off_t)a->len)) {
			setup_error(r, "ftruncate of the memfd: %s", errno_name(errno));
			return -1;
		}
	} else {
		flags |= MAP_ANONYMOUS;
	}
	p = mmap(a->addr, a->len, PROT_READ | PROT_WRITE, flags, *fd, 0);
	if (p == MAP_FAILED) {
		setup_error(r, "mmap of %s: %s", kind_name[k], errno_name(errno));
		return -1;
	}
	if (!is_shared(k) && k == K_ANON)
		madvise(p, a->len, MADV_NOHUGEPAGE);	/* 4 KiB pages: PFNs and kpageflags per page */
	return 0;
}

int map_kind(struct area *a, enum kind k, int *fd, struct result *r)
{
	return map_kind_flags(a, k, fd, r, 0);
}

void fill_pages(uint8_t *p, size_t len, size_t off0, unsigned seed, size_t step_pages)
{
	size_t pg = page_size();
	for (size_t o = 0; o < len; o += pg * step_pages)
		for (size_t i = 0; i < pg; i++)
			p[o + i] = spat(off0 + o + i, seed);
}

/* First page (index) whose bytes differ from the pattern (seed 0: zeros), or -1. Only pages with
 * index % step == 0 hold the pattern when step > 1; the others must read zeros. */
long bad_page(const uint8_t *p, size_t len, size_t off0, unsigned seed, size_t step)
{
	size_t pg = page_size();
	for (size_t o = 0; o < len; o += pg) {
		int holds = seed && ((o / pg) % step) == 0;
		for (size_t i = 0; i < pg; i++)
			if (p[o + i] != (holds ? spat(off0 + o + i, seed) : 0))
				return (long)(o / pg);
	}
	return -1;
}

double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Committed_AS noise of this guest, in kB: the spread of a few reads 2 ms apart. */
long committed_noise(void)
{
	long lo = -1, hi = -1;
	for (int i = 0; i < 5; i++) {
		long v = meminfo_kb("Committed_AS");
		if (lo < 0 || v < lo)
			lo = v;
		if (v > hi)
			hi = v;
		usleep(2000);
	}
	return hi - lo;
}

/* Committed_AS closest to `want` over up to 50 reads 10 ms apart: other processes' commits come and go,
 * a leaked charge stays. */
long settle_committed(long want, long tol)
{
	long best = meminfo_kb("Committed_AS");
	for (int i = 0; i < 50 && labs(best - want) > tol; i++) {
		long v;
		usleep(10000);
		v = meminfo_kb("Committed_AS");
		if (labs(v - want) < labs(best - want))
			best = v;
	}
	return best;
}

/* ---- state-*: one DONTUNMAP move of a whole mapping, every kernel-state check around it ---- */

/* 128 MiB mapped, the first 8 MiB populated.  Commit charges are per VMA (vm_acct_memory(new_len) is all or
 * nothing), so a missing or leaked charge is the whole 128 MiB: the tolerance (a quarter of it) absorbs what
 * other processes commit meanwhile (measured: 0 on the guest, tens of MiB on a busy host). */
#define STATE_VIRT_MB 128
#define STATE_TOUCH_MB 4

void take(struct snap *s)
{
	s->vmsize = status_kb("VmSize");
	s->vmlck = status_kb("VmLck");
	s->vmpte = status_kb("VmPTE");
	s->committed = meminfo_kb("Committed_AS");
	s->shmem = meminfo_kb("Shmem");
}

/* kB of the VMAs in `vs` flagged `flag`, clipped to [lo, hi). */
long flagged_kb(const struct vma *vs, int n, const char *flag, unsigned long lo, unsigned long hi)
{
	long kb = 0;
	for (int i = 0; i < n; i++)
		if (has_flag(&vs[i], flag)) {
			unsigned long a = vs[i].start > lo ? vs[i].start : lo, b = vs[i].end < hi ? vs[i].end : hi;
			if (b > a)
				kb += (long)((b - a) / 1024);
		}
	return kb;
}

struct state_arg {
	enum kind kind;
};

/* The checks on the page tables right after a move, before any access.  `before` holds the pagemap
 * entries of the old range before the move; `touched_step` says which pages were populated (every
 * `touched_step`-th).  Returns the failure code or NULL. */
const char *check_pagemap(struct result *r, const uint64_t *before, uint8_t *old, uint8_t *moved,
				 size_t npages, size_t touched_step, uint64_t *scratch)
{
	int pfns = 0;
	for (size_t i = 0; i < npages; i++)
		pfns |= (before[i] & PM_PFN_MASK) != 0;
	if (pagemap(moved, npages, scratch)) {
		setup_error(r, "cannot read /proc/self/pagemap: %s", errno_name(errno));
		return "";
	}
	for (size_t i = 0; i < npages; i++) {
		int want = (i % touched_step) == 0 && (before[i] & PM_PRESENT);
		if (!!(scratch[i] & PM_PRESENT) != want) {
			note(r, "pagemap: new page %zu is %spresent, expected %spresent", i, want ? "not " : "",
			     want ? "" : "not ");
			return CODE(NEWPTE);
		}
		if (want && pfns && (scratch[i] & PM_PFN_MASK) != (before[i] & PM_PFN_MASK)) {
			note(r, "pagemap: new page %zu has PFN 0x%llx, the old range had 0x%llx (not carried across)",
			     i, (unsigned long long)(scratch[i] & PM_PFN_MASK),
			     (unsigned long long)(before[i] & PM_PFN_MASK));
			return CODE(PFN);
		}
	}
	if (pagemap(old, npages, scratch)) {
		setup_error(r, "cannot read /proc/self/pagemap: %s", errno_name(errno));
		return "";
	}
	for (size_t i = 0; i < npages; i++)
		if (scratch[i] & PM_PRESENT) {
			note(r, "pagemap: old page %zu is still present after the move (PTE not moved)", i);
			return CODE(OLDPTE);
		}
	if (!pfns)
		note(r, "PFNs not visible (not root?): presence checked, PFNs not compared");
	return NULL;
}

/* Pages freed: after both ranges are gone and the fd closed, the PFNs the range used are no longer anon or
 * on an LRU list (kpageflags).  A page whose reference leaked stays on its LRU with its anon mapping;
 * freed ones are in the buddy allocator or a per-CPU list (flags cleared), or reused by someone else (few). */
static const char *check_freed(struct result *r, const uint64_t *before, size_t npages)
{
	int fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	size_t have = 0, inuse = 0;
	if (fd < 0) {
		note(r, "/proc/kpageflags not readable (%s): page release not checked", errno_name(errno));
		return NULL;
	}
	for (size_t i = 0; i < npages; i++) {
		uint64_t pfn = before[i] & PM_PFN_MASK, flags;
		if (!(before[i] & PM_PRESENT) || !pfn)
			continue;
		if (pread(fd, &flags, 8, (off_t)(pfn * 8)) != 8)
			continue;
		have++;
		inuse += (flags & ((1ull << KPF_LRU_) | (1ull << KPF_ANON_))) != 0;
	}
	close(fd);
	if (have) {
		/* reported, not judged: freed pages are reused at once on a busy machine (seen on the host: all
		 * 2048 taken again within milliseconds), so this cannot tell a leak from reuse */
		note(r, "%zu of %zu freed pages anon or on an LRU again", inuse, have);
	}
	return NULL;
}

static void case_state(const struct test_case *tc, struct result *r)
{
	const struct state_arg *sa = tc->arg;
	size_t pg = page_size(), len = (size_t)STATE_VIRT_MB << 20, npages = len / pg;
	size_t touch = (size_t)STATE_TOUCH_MB << 20;
	/* Shmem (NR_SHMEM) is read without folding the per-CPU vmstat deltas: each CPU may hold up to
	 * STAT_THRESHOLD_MAX pages; half the populated size bounds that and other processes' tmpfs use */
	long noise, tol, shmem_tol = (long)sysconf(_SC_NPROCESSORS_ONLN) * STAT_THRESHOLD_MAX * (long)(pg / 1024);
	uint64_t *before = calloc(npages, 8), *scratch = calloc(npages, 8);
	struct area a, dst;
	struct snap s0, s1, s2, s3;
	struct vma vs[8], vold, vnew;
	int fd, nold;
	uint8_t *moved;
	const char *bad;
	long acc_before, acc_after, dcommit, want_anon;
	double t0;

	if (!before || !scratch) {
		setup_error(r, "out of memory");
		return;
	}
	noise = committed_noise();
	tol = 64 + 2 * noise;
	if (tol < (long)(len / 1024 / 4))
		tol = (long)(len / 1024 / 4);
	if (shmem_tol < (long)(touch / 1024 / 2))
		shmem_tol = (long)(touch / 1024 / 2);
	take(&s0);
	if (s0.vmsize < 0 || s0.committed < 0) {
		setup_error(r, "cannot read VmSize from /proc/self/status or Committed_AS from /proc/meminfo");
		return;
	}
	if (reserve(&a, len, 0, r) || hole(&dst, len, 0, r) || map_kind(&a, sa->kind, &fd, r))
		return;
	fill_pages(a.addr, touch, 0, 41, 1);
	if (premise_present(r, a.addr, touch / pg, 1, "the populated head present") ||
	    premise_present(r, a.addr + touch, (len - touch) / pg, 0, "the rest never present"))
		return;
	if (pagemap(a.addr, npages, before)) {
		setup_error(r, "cannot read /proc/self/pagemap: %s", errno_name(errno));
		return;
	}
	take(&s1);
	nold = smaps_range((unsigned long)a.addr, (unsigned long)a.addr + len, vs, 8);
	acc_before = flagged_kb(vs, nold, "ac", (unsigned long)a.addr, (unsigned long)a.addr + len);

	t0 = now_us();
	moved = mremap_(a.addr, len, dst.addr);
	t0 = now_us() - t0;
	if (moved == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return;
	}
	take(&s2);
	note(r, "%s, %zu MiB (%zu MiB populated), moved in %.0f us", kind_name[sa->kind], len >> 20, touch >> 20, t0);
	if ((bad = check_pagemap(r, before, a.addr, moved, npages, 1, scratch))) {
		observe(r, bad);
		return;
	}
	if (smaps_exact((unsigned long)moved, (unsigned long)moved + len, &vnew, r, "new") ||
	    smaps_exact((unsigned long)a.addr, (unsigned long)a.addr + len, &vold, r, "old")) {
		observe(r, CODE(VMA));
		return;
	}
	want_anon = is_anon_private(sa->kind) ? (long)(touch / 1024) : 0;
	note(r, "new VMA [%s ] Rss %ld Anon %ld; old VMA [%s ] Rss %ld", vnew.flags, vnew.rss, vnew.anon, vold.flags,
	     vold.rss);
	if (vnew.rss != (long)(touch / 1024) || vnew.anon != want_anon) {
		note(r, "new range: Rss %ld kB Anonymous %ld kB, expected %zu and %ld", vnew.rss, vnew.anon,
		     touch / 1024, want_anon);
		observe(r, CODE(RSS));
		return;
	}
	if (vold.rss != 0 || vold.anon != 0) {
		note(r, "old range: Rss %ld kB Anonymous %ld kB right after the move, expected 0", vold.rss, vold.anon);
		observe(r, CODE(RSS));
		return;
	}
	if (has_flag(&vnew, "ac") != (acc_before > 0)) {
		note(r, "the new VMA is %saccounted, the old one was %saccounted (copy_vma copies vm_flags)",
		     has_flag(&vnew, "ac") ? "" : "not ", acc_before ? "" : "not ");
		observe(r, CODE(VMFLAGS));
		return;
	}
	if (s2.vmsize - s1.vmsize != (long)(len / 1024)) {
		note(r, "VmSize grew by %ld kB, expected %zu (the old range stays mapped)", s2.vmsize - s1.vmsize,
		     len / 1024);
		observe(r, CODE(VMSIZE));
		return;
	}
	acc_after = (has_flag(&vnew, "ac") + has_flag(&vold, "ac")) * (long)(len / 1024);
	dcommit = s2.committed - s1.committed;
	note(r, "Committed_AS %+ld kB (accounted VMAs %+ld kB, noise %ld kB); VmPTE %+ld kB", dcommit,
	     acc_after - acc_before, noise, s2.vmpte - s1.vmpte);
	if (labs(dcommit - (acc_after - acc_before)) > tol) {
		note(r, "Committed_AS moved by %ld kB, the accounted VMAs by %ld kB (tolerance %ld kB)", dcommit,
		     acc_after - acc_before, tol);
		observe(r, CODE(COMMIT));
		return;
	}
	if (s2.shmem >= 0 && labs(s2.shmem - s1.shmem) > shmem_tol) {
		note(r, "Shmem moved by %ld kB across the move, expected 0 (tolerance %ld kB)", s2.shmem - s1.shmem,
		     shmem_tol);
		observe(r, CODE(SHMEM));
		return;
	}
	if (bad_page(moved, touch, 0, 41, 1) >= 0 || bad_page(moved + touch, 4 * pg, touch, 0, 1) >= 0) {
		note(r, "the new range does not hold the data");
		observe(r, CODE(BADDATA));
		return;
	}
	/* shared: the old range refaults the same page-cache pages; private: zeros (anon) or the file (zeros) */
	if (bad_page(a.addr, touch, 0, is_shared(sa->kind) ? 41 : 0, 1) >= 0) {
		note(r, "the old range does not read %s", is_shared(sa->kind) ? "the same data" : "zeros");
		observe(r, CODE(BADDATA));
		return;
	}
	munmap(moved, len);
	munmap(a.addr, len);
	if (fd >= 0)
		close(fd);
	munmap(a.res, a.res_len);
	munmap(dst.res, dst.res_len);
	take(&s3);
	s3.committed = settle_committed(s0.committed, tol);
	note(r, "after unmap: VmSize %+ld VmLck %+ld VmPTE %+ld Committed_AS %+ld Shmem %+ld kB", s3.vmsize - s0.vmsize,
	     s3.vmlck - s0.vmlck, s3.vmpte - s0.vmpte, s3.committed - s0.committed, s3.shmem - s0.shmem);
	if (s3.vmsize != s0.vmsize) {
		observe(r, CODE(VMSIZE));
		return;
	}
	if (labs(s3.committed - s0.committed) > tol) {
		note(r, "Committed_AS not back to its baseline: a charge leaked");
		observe(r, CODE(COMMIT));
		return;
	}
	if (s3.shmem >= 0 && labs(s3.shmem - s0.shmem) > shmem_tol) {
		note(r, "Shmem not back to its baseline");
		observe(r, CODE(SHMEM));
		return;
	}
	if ((bad = check_freed(r, before, npages))) {
		observe(r, bad);
		return;
	}
	observe(r, "ok");
}

/* ---- mlock-*: DONTUNMAP of a locked mapping ---- */

#define MLOCK_PAGES 16

struct mlock_arg {
	enum kind kind;
	int onfault;		/* mlock2(MLOCK_ONFAULT) instead of mlock() */
	size_t first, count;	/* the pages moved */
};

static void case_mlock(const struct test_case *tc, struct result *r)
{
	const struct mlock_arg *ma = tc->arg;
	size_t pg = page_size(), len = MLOCK_PAGES * pg, mlen = ma->count * pg;
	struct area a, dst;
	struct vma vs[16], vnew, vold;
	long lck0, lck1, lck2, lck3, lo_kb;
	int fd, n;
	uint8_t *moved, *from;

	lck0 = status_kb("VmLck");
	if (lck0 < 0) {
		setup_error(r, "no VmLck in /proc/self/status");
		return;
	}
	if (reserve(&a, len, 0, r) || hole(&dst, mlen, 0, r) || map_kind(&a, ma->kind, &fd, r))
		return;
	fill_pages(a.addr, len, 0, 43, 1);
	if (ma->onfault ? syscall(SYS_mlock2, a.addr, len, MLOCK_ONFAULT) : mlock(a.addr, len)) {
		if (errno == ENOSYS)
			skip(r, "mlock2: ENOSYS");
		else
			setup_error(r, "%s: %s (RLIMIT_MEMLOCK / CAP_IPC_LOCK?)", ma->onfault ? "mlock2" : "mlock",
				    errno_name(errno));
		return;
	}
	lck1 = status_kb("VmLck");
	from = a.addr + ma->first * pg;
	moved = mremap_(from, mlen, dst.addr);
	if (moved == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return;
	}
	lck2 = status_kb("VmLck");
	n = smaps_range((unsigned long)a.addr, (unsigned long)a.addr + len, vs, 16);
	lo_kb = flagged_kb(vs, n, "lo", (unsigned long)a.addr, (unsigned long)a.addr + len);
	if (smaps_exact((unsigned long)moved, (unsigned long)moved + mlen, &vnew, r, "new")) {
		observe(r, CODE(VMA));
		return;
	}
	lo_kb += has_flag(&vnew, "lo") ? (long)(mlen / 1024) : 0;
	note(r, "VmLck %ld -> %ld -> %ld kB; locked VMAs %ld kB; new VMA [%s ] Locked %ld kB; %d old VMA(s)",
	     lck0, lck1, lck2, lo_kb, vnew.flags, vnew.locked, n);
	if (lck1 - lck0 != (long)(len / 1024)) {
		setup_error(r, "mlock of %zu kB raised VmLck by %ld kB", len / 1024, lck1 - lck0);
		return;
	}
	if (!has_flag(&vnew, "lo") || vnew.locked != (long)(mlen / 1024)) {
		note(r, "the new range is not locked (VM_LOCKED copied by copy_vma)");
		observe(r, CODE(NEWUNLOCKED));
		return;
	}
	for (int i = 0; i < n; i++) {
		unsigned long lo = (unsigned long)from, hi = lo + mlen;
		if (vs[i].start < hi && vs[i].end > lo && has_flag(&vs[i], "lo")) {
			note(r, "the old range is still locked (VM_LOCKED must be cleared on the old VMA)");
			observe(r, CODE(OLDLOCKED));
			return;
		}
	}
	if (lck2 - lck0 != lo_kb) {
		note(r, "VmLck says %ld kB locked, the locked VMAs hold %ld kB", lck2 - lck0, lo_kb);
		observe(r, CODE(VMLCK));
		return;
	}
	if (smaps_exact((unsigned long)from, (unsigned long)from + mlen, &vold, r, "old") == 0 && vold.locked) {
		note(r, "old range Locked %ld kB", vold.locked);
		observe(r, CODE(OLDLOCKED));
		return;
	}
	munmap(moved, mlen);
	munmap(a.addr, len);
	if (fd >= 0)
		close(fd);
	lck3 = status_kb("VmLck");
	if (lck3 != lck0) {
		note(r, "VmLck %ld kB after unmapping both ranges, %ld before: locked_vm leaked", lck3, lck0);
		observe(r, CODE(VMLCK));
		return;
	}
	observe(r, "ok");
}

/* ---- uffd-*: userfaultfd registered before the move ---- */

struct remap_wait {
	int uffd;
	struct uffd_msg msg;
	int got;
	char err[120];
};

static void *remap_reader(void *arg)
{
	struct remap_wait *w = arg;
	struct pollfd p = {.fd = w->uffd, .events = POLLIN};
	int n = poll(&p, 1, 3000);
	if (n <= 0) {
		snprintf(w->err, sizeof(w->err), "no userfaultfd event within 3 s");
		return NULL;
	}
	if (read(w->uffd, &w->msg, sizeof(w->msg)) != sizeof(w->msg)) {
		snprintf(w->err, sizeof(w->err), "reading the userfaultfd: %s", errno_name(errno));
		return NULL;
	}
	w->got = 1;
	return NULL;
}

struct uffd_arg {
	enum kind kind;
	int remap_feature;	/* UFFD_FEATURE_EVENT_REMAP requested */
};

static void case_uffd(const struct test_case *tc, struct result *r)
{
	const struct uffd_arg *ua = tc->arg;
	size_t pg = page_size(), len = 16 * pg;
	struct area a, dst;
	struct remap_wait w = {0};
	struct uffdio_api api = {.api = UFFD_API};
	struct uffdio_register reg;
	struct vma vnew, vold;
	pthread_t t;
	int fd;
	uint8_t *moved = NULL;

	if (reserve(&a, len, 0, r) || hole(&dst, len, 0, r) || map_kind(&a, ua->kind, &fd, r))
		return;
	fill_pages(a.addr, len, 0, 47, 1);
	w.uffd = uffd_open_reported(r);
	if (w.uffd < 0)
		return;
	if (ua->remap_feature)
		api.features = UFFD_FEATURE_EVENT_REMAP;
	if (ioctl(w.uffd, UFFDIO_API, &api)) {
		setup_error(r, "UFFDIO_API (features 0x%llx): %s", (unsigned long long)api.features, errno_name(errno));
		return;
	}
	reg = (struct uffdio_register){.range = {.start = (unsigned long)a.addr, .len = len},
				       .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(w.uffd, UFFDIO_REGISTER, &reg)) {
		setup_error(r, "UFFDIO_REGISTER MISSING on %s: %s", kind_name[ua->kind], errno_name(errno));
		return;
	}
	if (!ua->remap_feature) {	/* nothing must arrive, and mremap does not wait: no reader thread */
		moved = mremap_(a.addr, len, dst.addr);
		if (moved == MAP_FAILED) {
			observe_errno(r, errno);
			r->rejected = 1;
			return;
		}
		w.got = read(w.uffd, &w.msg, sizeof(w.msg)) == sizeof(w.msg);
	} else if (pthread_create(&t, NULL, remap_reader, &w)) {
		setup_error(r, "cannot start the reader thread");
		return;
	}
	if (ua->remap_feature) {
		moved = mremap_(a.addr, len, dst.addr);	/* with EVENT_REMAP it waits until the event is read */
		if (moved == MAP_FAILED) {
			observe_errno(r, errno);
			r->rejected = 1;
			return;	/* the reader thread ends with the case process */
		}
		pthread_join(t, NULL);
	}
	if (smaps_exact((unsigned long)moved, (unsigned long)moved + len, &vnew, r, "new") ||
	    smaps_exact((unsigned long)a.addr, (unsigned long)a.addr + len, &vold, r, "old")) {
		observe(r, CODE(VMA));
		return;
	}
	note(r, "new VMA [%s ]; old VMA [%s ]", vnew.flags, vold.flags);
	if (ua->remap_feature) {
		if (!w.got) {
			note(r, "%s", w.err);
			observe(r, CODE(NOEVENT));
			return;
		}
		note(r, "event 0x%x from %llx to %llx len %llu", w.msg.event,
		     (unsigned long long)w.msg.arg.remap.from, (unsigned long long)w.msg.arg.remap.to,
		     (unsigned long long)w.msg.arg.remap.len);
		if (w.msg.event != UFFD_EVENT_REMAP || w.msg.arg.remap.from != (unsigned long)a.addr ||
		    w.msg.arg.remap.to != (unsigned long)moved || w.msg.arg.remap.len != len) {
			note(r, "expected UFFD_EVENT_REMAP from %p to %p len %zu", (void *)a.addr, (void *)moved, len);
			observe(r, CODE(BADEVENT));
			return;
		}
		if (!has_flag(&vnew, "um")) {
			note(r, "the new VMA lost its registration although EVENT_REMAP was requested");
			observe(r, CODE(NEWUFFD));
			return;
		}
	} else {
		if (w.got) {
			note(r, "event 0x%x delivered without UFFD_FEATURE_EVENT_REMAP", w.msg.event);
			observe(r, CODE(BADEVENT));
			return;
		}
		if (has_flag(&vnew, "um")) {
			note(r, "the new VMA kept the userfaultfd registration without EVENT_REMAP "
				"(mremap_userfaultfd_prep drops it)");
			observe(r, CODE(NEWUFFD));
			return;
		}
	}
	if (!has_flag(&vold, "um")) {
		note(r, "the old range lost its userfaultfd registration");
		observe(r, CODE(OLDUFFD));
		return;
	}
	if (bad_page(moved, len, 0, 47, 1) >= 0) {
		observe(r, CODE(BADDATA));
		return;
	}
	observe(r, "ok");
}

/* The premise of a case, checked in the same run: page i of [addr, addr + npages pages) is present in
 * /proc/self/pagemap exactly when i % step == 0 (step 0: none present).  When it does not hold the case
 * cannot tell what it claims (a never-present page the shmem fault-around mapped after all moves with its
 * PTE, and a wrong file offset then goes unseen): reports ERROR naming the page, never a pass. */
int premise_present(struct result *r, const void *addr, size_t npages, size_t step, const char *what)
{
	uint64_t *pm = calloc(npages, 8);
	if (!pm || pagemap(addr, npages, pm)) {
		setup_error(r, "premise (%s): cannot read /proc/self/pagemap: %s", what, errno_name(errno));
		free(pm);
		return -1;
	}
	for (size_t i = 0; i < npages; i++) {
		int want = step && i % step == 0;
		if (!!(pm[i] & PM_PRESENT) != want) {
			setup_error(r, "premise does not hold (%s): page %zu is %spresent before the move", what, i,
				    want ? "not " : "");
			free(pm);
			return -1;
		}
	}
	free(pm);
	return 0;
}

/* ---- geom-*: part of a larger mapping, with pages never touched through it ---- */

#define GEOM_PAGES 16

struct geom_arg {
	enum kind kind;
	size_t first, count;
};

/* Page `j` of the mapping: the file holds every page (shmem); anon holds the even ones, zeros elsewhere. */
static int geom_page_ok(const uint8_t *p, size_t j, int file, unsigned seed)
{
	size_t pg = page_size();
	int holds = file || j % 2 == 0;
	for (size_t b = 0; b < pg; b++)
		if (p[b] != (holds ? spat(j * pg + b, seed) : 0))
			return 0;
	return 1;
}

static void case_geom(const struct test_case *tc, struct result *r)
{
	const struct geom_arg *ga = tc->arg;
	size_t pg = page_size(), len = GEOM_PAGES * pg, mlen = ga->count * pg, off = ga->first * pg;
	uint64_t before[GEOM_PAGES], scratch[GEOM_PAGES];
	struct area a, dst;
	int fd;
	uint8_t *moved;
	const char *code;
	unsigned seed = 53;

	if (reserve(&a, len, 0, r) || hole(&dst, mlen, 0, r) || map_kind(&a, ga->kind, &fd, r))
		return;
	if (fd >= 0) {	/* the file holds every page; the mapping touches (reads) only the even ones */
		uint8_t *buf = malloc(len);
		volatile uint8_t sink = 0;
		fill_pages(buf, len, 0, seed, 1);
		if (pwrite(fd, buf, len, 0) != (ssize_t)len) {
			setup_error(r, "pwrite to the memfd: %s", errno_name(errno));
			return;
		}
		free(buf);
		for (size_t o = 0; o < len; o += 2 * pg)
			sink ^= a.addr[o];
		(void)sink;
		/* a read fault on shmem maps up to fault_around_bytes (16 pages) of cached pages around it: the
		 * odd pages are mapped too.  Zap them (MADV_DONTNEED drops the PTEs, the page cache keeps the
		 * data): they are then never present in the mapping, and the move must give them the right
		 * file offset (vm_pgoff), which only a later fault through the new range reads */
		for (size_t o = pg; o < len; o += 2 * pg)
			if (madvise(a.addr + o, pg, MADV_DONTNEED)) {
				setup_error(r, "madvise(MADV_DONTNEED) of an odd page: %s", errno_name(errno));
				return;
			}
	} else {	/* anonymous: only the even pages are written, the odd ones are never touched */
		fill_pages(a.addr, len, 0, seed, 2);
	}
	if (premise_present(r, a.addr, GEOM_PAGES, 2, "even pages present, odd ones not"))
		return;
	if (pagemap(a.addr + off, ga->count, before)) {
		setup_error(r, "cannot read /proc/self/pagemap: %s", errno_name(errno));
		return;
	}
	moved = mremap_(a.addr + off, mlen, dst.addr);
	if (moved == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return;
	}
	if ((code = check_pagemap(r, before, a.addr + off, moved, ga->count, 1, scratch))) {
		observe(r, code);
		return;
	}
	/* the right file offsets / the right data, never-touched pages included */
	for (size_t i = 0; i < ga->count; i++)
		if (!geom_page_ok(moved + i * pg, ga->first + i, fd >= 0, seed)) {
			note(r, "new page %zu (page %zu of the mapping) has the wrong content", i, ga->first + i);
			observe(r, CODE(BADDATA));
			return;
		}
	/* the rest of the mapping is untouched; the moved part reads zeros (anon) or the file (shmem) */
	for (size_t j = 0; j < GEOM_PAGES; j++) {
		int was_moved = j >= ga->first && j < ga->first + ga->count;
		int ok = was_moved && fd < 0 ? bad_page(a.addr + j * pg, pg, 0, 0, 1) < 0
					     : geom_page_ok(a.addr + j * pg, j, fd >= 0, seed);
		if (!ok) {
			note(r, "page %zu of the original mapping has the wrong content after the move", j);
			observe(r, CODE(BADDATA));
			return;
		}
	}
	observe(r, "ok");
}

/* ---- fork-*: fork after the move ---- */

static void case_fork(const struct test_case *tc, struct result *r)
{
	const struct state_arg *sa = tc->arg;
	size_t pg = page_size(), len = 16 * pg;
	struct area a, dst;
	int fd, status, pipefd[2];
	uint8_t *moved;
	pid_t pid;

	if (reserve(&a, len, 0, r) || hole(&dst, len, 0, r) || map_kind(&a, sa->kind, &fd, r))
		return;
	fill_pages(a.addr, len, 0, 59, 1);
	moved = mremap_(a.addr, len, dst.addr);
	if (moved == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return;
	}
	if (pipe(pipefd)) {
		setup_error(r, "pipe: %s", errno_name(errno));
		return;
	}
	pid = fork();
	if (pid < 0) {
		setup_error(r, "fork: %s", errno_name(errno));
		return;
	}
	if (pid == 0) {
		char c = bad_page(moved, len, 0, 59, 1) >= 0 ? 'D' : 'k';
		fill_pages(moved, len, 0, 61, 1);	/* private: COW, the parent keeps its data */
		if (write(pipefd[1], &c, 1) != 1)
			_exit(3);
		_exit(0);
	}
	close(pipefd[1]);
	{
		char c = 0;
		if (read(pipefd[0], &c, 1) != 1 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status)) {
			note(r, "the child died (status 0x%x) touching the moved range", status);
			observe(r, CODE(CHILD));
			return;
		}
		if (c != 'k') {
			note(r, "the child does not see the moved data");
			observe(r, CODE(CHILDDATA));
			return;
		}
	}
	if (bad_page(moved, len, 0, is_shared(sa->kind) ? 61 : 59, 1) >= 0) {
		note(r, is_shared(sa->kind) ? "the child's writes do not show in the parent (shared)"
					    : "the child's writes show in the parent (private mappings must COW)");
		observe(r, CODE(COW));
		return;
	}
	observe(r, "ok");
}

/* ---- pmd-*: a 2 MiB-aligned range onto a 2 MiB-aligned destination (move_normal_pmd / huge PMD) ---- */

struct pmd_arg {
	enum kind kind;
	int thp;	/* MADV_HUGEPAGE: move_huge_pmd instead of move_normal_pmd */
};

static void case_pmd(const struct test_case *tc, struct result *r)
{
	const struct pmd_arg *pa = tc->arg;
	size_t pg = page_size(), pmd = 2u << 20, len = 2 * pmd, npages = len / pg;
	uint64_t *before = calloc(npages, 8), *scratch = calloc(npages, 8);
	struct area a, dst;
	struct vma vnew;
	int fd;
	uint8_t *moved;
	const char *code;
	long pte0, dpte;

	if (pg != 4096) {
		skip(r, "page size %zu: the 2 MiB PMD geometry is for 4 KiB pages", pg);
		return;
	}
	if (pa->thp) {
		char buf[128] = "";
		int tfd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
		if (tfd < 0) {
			skip(r, "kernel without TRANSPARENT_HUGEPAGE (no /sys/kernel/mm/transparent_hugepage)");
			return;
		}
		if (read(tfd, buf, sizeof(buf) - 1) < 0)
			buf[0] = 0;
		close(tfd);
		if (strstr(buf, "[never]")) {
			skip(r, "transparent hugepages disabled ([never])");
			return;
		}
	}
	if (!before || !scratch || reserve(&a, len, pmd, r) || hole(&dst, len, pmd, r) ||
	    map_kind(&a, pa->kind, &fd, r))
		return;
	if (pa->kind == K_ANON)
		madvise(a.addr, len, pa->thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	fill_pages(a.addr, len, 0, 67, 1);
	if (premise_present(r, a.addr, npages, 1, "every page populated"))
		return;
	if (pagemap(a.addr, npages, before)) {
		setup_error(r, "cannot read /proc/self/pagemap: %s", errno_name(errno));
		return;
	}
	if (pa->kind == K_ANON && !pa->thp) {	/* like with like: the PTE-mapped heap, no THP */
		struct vma vold;
		if (smaps_exact((unsigned long)a.addr, (unsigned long)a.addr + len, &vold, r, "old") || vold.thp) {
			setup_error(r, "premise does not hold: the MADV_NOHUGEPAGE heap has %ld kB AnonHugePages", vold.thp);
			return;
		}
	}
	pte0 = status_kb("VmPTE");
	moved = mremap_(a.addr, len, dst.addr);
	if (moved == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return;
	}
	if (((uintptr_t)moved & (pmd - 1)) != 0) {
		setup_error(r, "the destination %p is not 2 MiB aligned (hint %p ignored)", (void *)moved,
			    (void *)dst.addr);
		return;
	}
	if ((code = check_pagemap(r, before, a.addr, moved, npages, 1, scratch))) {
		observe(r, code);
		return;
	}
	if (smaps_exact((unsigned long)moved, (unsigned long)moved + len, &vnew, r, "new")) {
		observe(r, CODE(VMA));
		return;
	}
	dpte = status_kb("VmPTE") - pte0;
	note(r, "new VMA Rss %ld kB AnonHugePages %ld kB; VmPTE %+ld kB across the move (%zu PMDs: PTE by PTE "
	     "allocates a %zu kB page-table page per PMD at the destination, a PMD move none)", vnew.rss, vnew.thp,
	     dpte, len / pmd, pg / 1024);
	if (pa->thp && vnew.thp == 0) {
		skip(r, "no huge page was allocated (THP allocation failed or disabled for this VMA)");
		return;
	}
	if (bad_page(moved, len, 0, 67, 1) >= 0) {
		observe(r, CODE(BADDATA));
		return;
	}
	/* which path ran (pagemap cannot tell: the PFNs are the same either way): move_normal_pmd (or
	 * move_huge_pmd) carries the old page-table page over, move_ptes fills a new one per PMD.  A
	 * higher-level table (PMD/PUD page) at the destination may cost one page more: less than a PTE page
	 * per PMD as long as there are 2 PMDs or more */
	if (pte0 < 0 || status_kb("VmPTE") < 0) {
		setup_error(r, "cannot read VmPTE from /proc/self/status");
		return;
	}
	if (dpte >= (long)(len / pmd * (pg / 1024))) {
		note(r, "VmPTE grew by %ld kB >= %zu kB: the move went PTE by PTE (move_ptes), not by PMD "
		     "(move_normal_pmd / move_huge_pmd): the GC pause is not the fast path", dpte, len / pmd * (pg / 1024));
		observe(r, CODE(PTEPATH));
		return;
	}
	observe(r, "ok");
}

/* ---- latency-*: the stop-the-world DONTUNMAP move of a large heap, on the fast path ---- */

/* 16 MiB by default: populating 256 MiB of shmem on a debug (KASAN) kernel under TCG took > 20 s on a
 * loaded host (the case's time limit) and 64 MiB 11 s on arm64; KPIPE_LATENCY_MB=256 measures the heap.
 * The heap and every destination are 2 MiB aligned, so the move takes move_normal_pmd (5.10 has HAVE_MOVE_PMD on
 * both arches) as the GC's heap would: LAT_MOVES timed DONTUNMAP moves, each followed by an untimed
 * MREMAP_FIXED move back onto the range left behind, give the median and the range. */
#define LATENCY_MB 16
#define LAT_MOVES 15

struct lat_arg {
	enum kind kind;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void case_latency(const struct test_case *tc, struct result *r)
{
	const struct lat_arg *la = tc->arg;
	size_t pg = page_size(), pmd = 2u << 20, mb = LATENCY_MB, len;
	char clk[64] = "?";
	int cfd = open("/sys/devices/system/clocksource/clocksource0/current_clocksource", O_RDONLY | O_CLOEXEC);
	long avail = meminfo_kb("MemAvailable"), pte0, dpte_max = 0;
	const char *env = getenv("KPIPE_LATENCY_MB");
	struct area a, dst;
	int fd;
	uint8_t *heap, *moved;
	double t[LAT_MOVES];

	if (cfd >= 0) {
		ssize_t n = read(cfd, clk, sizeof(clk) - 1);
		clk[n > 0 ? n : 0] = 0;
		clk[strcspn(clk, "\n")] = 0;
		close(cfd);
	}
	if (env && atoi(env) > 0)
		mb = (size_t)atoi(env);
	/* the heap is populated once (plus the same again in the page cache for nothing: shared) and the
	 * DONTUNMAP charge doubles the commit: keep it within half of what is available */
	while (mb > 8 && avail > 0 && (long)mb * 1024 * 2 > avail)
		mb /= 2;
	len = mb << 20;
	/* memfd: MAP_POPULATE fills the heap in one call (a user fault per page is slow under emulation).
	 * Private anon: MADV_NOHUGEPAGE before the first touch (map_kind does it), so that the heap is PTE
	 * mapped like the memfd one and the move is move_normal_pmd, not move_huge_pmd (THP is "always") */
	if (reserve(&a, len, pmd, r) || hole(&dst, len, pmd, r) ||
	    map_kind_flags(&a, la->kind, &fd, r, la->kind == K_ANON ? 0 : MAP_POPULATE))
		return;
	for (size_t o = 0; o < len; o += pg)
		a.addr[o] = (uint8_t)(o / pg) | 1;
	if (premise_present(r, a.addr, len / pg, 1, "the whole heap populated"))
		return;
	heap = a.addr;
	for (int i = 0; i < LAT_MOVES; i++) {
		double t0;
		pte0 = status_kb("VmPTE");
		t0 = now_us();
		moved = mremap_(heap, len, dst.addr);
		t[i] = now_us() - t0;
		if (moved == MAP_FAILED) {
			if (i == 0) {
				observe_errno(r, errno);
				r->rejected = 1;
			} else {
				setup_error(r, "move %d of %d failed: %s", i + 1, LAT_MOVES, errno_name(errno));
			}
			return;
		}
		if (((uintptr_t)moved & (pmd - 1)) != 0) {
			setup_error(r, "the destination %p is not 2 MiB aligned (hint %p ignored)", (void *)moved,
				    (void *)dst.addr);
			return;
		}
		if (status_kb("VmPTE") - pte0 > dpte_max)
			dpte_max = status_kb("VmPTE") - pte0;
		for (size_t o = 0; o < len; o += pg * 64)
			if (moved[o] != ((uint8_t)(o / pg) | 1)) {
				note(r, "move %d: page %zu has the wrong content", i + 1, o / pg);
				observe(r, CODE(BADDATA));
				return;
			}
		/* back onto the range left behind (untimed): do_munmap of the old VMA, then the PMD move again */
		if (syscall(SYS_mremap, moved, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, heap) != (long)(uintptr_t)heap) {
			setup_error(r, "MREMAP_FIXED move back %d: %s", i + 1, errno_name(errno));
			return;
		}
	}
	for (size_t o = 0; o < len; o += pg)
		if (heap[o] != ((uint8_t)(o / pg) | 1)) {
			observe(r, CODE(BADDATA));
			return;
		}
	qsort(t, LAT_MOVES, sizeof(t[0]), cmp_double);
	/* latency_us is the median; the clocksource bounds the resolution ("jiffies" ticks per 4 ms) */
	note(r, "latency_us=%.0f min_us=%.0f max_us=%.0f moves=%d size_mb=%zu kind=%s clocksource=%s "
	     "vmpte_max_kb=%ld (2 MiB aligned: the PMD move)", t[LAT_MOVES / 2], t[0], t[LAT_MOVES - 1], LAT_MOVES, mb,
	     kind_name[la->kind], clk, dpte_max);
	if (dpte_max >= (long)(len / pmd * (pg / 1024))) {
		note(r, "VmPTE grew by %ld kB in a move of %zu PMDs: PTE by PTE (move_ptes), not the PMD move",
		     dpte_max, len / pmd);
		observe(r, CODE(PTEPATH));
		return;
	}
	observe(r, "ok");
}

/* ---- the table ---- */

#define STATE(name, k) {"state-" name, case_state, &(const struct state_arg){k}}
#define MLOCK(name, k, onfault, first, count) {"mlock-" name, case_mlock, &(const struct mlock_arg){k, onfault, first, count}}
#define UFFD(name, k, feat) {"uffd-" name, case_uffd, &(const struct uffd_arg){k, feat}}
#define GEOM(name, k, first, count) {"geom-" name, case_geom, &(const struct geom_arg){k, first, count}}

const struct test_case state_cases[] = {
	STATE("anon-private", K_ANON),
	STATE("anon-shared", K_ANON_SHARED),
	STATE("memfd-shared", K_MEMFD_SHARED),
	STATE("memfd-private", K_MEMFD_PRIVATE),
	MLOCK("whole-anon", K_ANON, 0, 0, MLOCK_PAGES),
	MLOCK("onfault-whole-anon", K_ANON, 1, 0, MLOCK_PAGES),
	MLOCK("whole-memfd", K_MEMFD_SHARED, 0, 0, MLOCK_PAGES),
	MLOCK("part-anon", K_ANON, 0, 4, 4),
	MLOCK("part-memfd", K_MEMFD_SHARED, 0, 4, 4),
	UFFD("remap-event-anon", K_ANON, 1),
	UFFD("no-remap-feature-anon", K_ANON, 0),
	UFFD("remap-event-memfd", K_MEMFD_SHARED, 1),
	GEOM("head-anon", K_ANON, 0, 5),
	GEOM("middle-anon", K_ANON, 5, 6),
	GEOM("tail-anon", K_ANON, 10, 6),
	GEOM("head-memfd", K_MEMFD_SHARED, 0, 5),
	GEOM("middle-memfd", K_MEMFD_SHARED, 5, 6),
	GEOM("tail-memfd", K_MEMFD_SHARED, 10, 6),
	{"fork-anon-private", case_fork, &(const struct state_arg){K_ANON}},
	{"fork-memfd-shared", case_fork, &(const struct state_arg){K_MEMFD_SHARED}},
	{"pmd-anon", case_pmd, &(const struct pmd_arg){K_ANON, 0}},
	{"pmd-memfd", case_pmd, &(const struct pmd_arg){K_MEMFD_SHARED, 0}},
	{"pmd-thp-anon", case_pmd, &(const struct pmd_arg){K_ANON, 1}},
	{"latency-anon", case_latency, &(const struct lat_arg){K_ANON}},
	{"latency-memfd", case_latency, &(const struct lat_arg){K_MEMFD_SHARED}},
};

const size_t n_state_cases = sizeof(state_cases) / sizeof(state_cases[0]);
