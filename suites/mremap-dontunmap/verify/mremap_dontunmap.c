/* kpipe verifier: what mremap(MREMAP_MAYMOVE | MREMAP_DONTUNMAP) accepts, and what the moved and the
 * left-behind ranges hold afterwards.
 *
 * Built static for the target arch against the target tree's uapi headers; run as root in the guest.
 * Every case runs in its own child (see harness.c); the expected outcome per case comes from the host
 * (verify/expectations.toml, rendered for one policy into a `case=expected` file passed with -e).
 *
 * mremap is called through syscall(SYS_mremap, ...): glibc's wrapper drops the new-address argument
 * without MREMAP_FIXED on some arches and rejects unknown flags itself.
 */
#define _GNU_SOURCE
#include "codes.h"
#include "harness.h"
#include "moves.h"
#include "plain.h"
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
#include <sys/mount.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/userfaultfd.h>

#ifndef MREMAP_MAYMOVE
#define MREMAP_MAYMOVE 1
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#ifndef MAP_HUGETLB
#define MAP_HUGETLB 0x40000
#endif
#define TMPFS_MAGIC_ 0x01021994
#define RAMFS_MAGIC_ 0x858458f6

/* userfaultfd bits newer than 5.10's headers (values from the uapi). */
#define KP_UFFD_FEATURE_MINOR_SHMEM (1u << 10)
#define KP_UFFDIO_REGISTER_MODE_MINOR ((__u64)1 << 2)
#define KP_UFFD_PAGEFAULT_FLAG_MINOR (1u << 2)
#define KP_UFFDIO_CONTINUE_NR 0x07
struct kp_uffdio_continue {
	struct uffdio_range range;
	__u64 mode;
	__s64 mapped;
};
#define KP_UFFDIO_CONTINUE _IOWR(UFFDIO, KP_UFFDIO_CONTINUE_NR, struct kp_uffdio_continue)

#define DONTUNMAP (MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
#define NPAGES 4

static void *do_mremap(void *old, size_t old_len, size_t new_len, unsigned long flags, void *new_addr)
{
	return (void *)syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
}

/* ---- data patterns: byte i of a region depends on its offset and a seed, never zero ---- */

static uint8_t pat(size_t off, unsigned seed)
{
	return (uint8_t)((off * 131u + (off >> 9) * 7u + seed * 29u) | 1u);
}

static void fill(uint8_t *p, size_t len, size_t off0, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pat(off0 + i, seed);
}

/* Offset of the first byte that differs from the pattern (seed 0 means zeros), or -1. */
static long mismatch(const uint8_t *p, size_t len, size_t off0, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != (seed ? pat(off0 + i, seed) : 0))
			return (long)i;
	return -1;
}

/* Reads `len` bytes at `p` without dying; checks them against the pattern.  Returns "ok", the signal
 * that the read raised, or "BADDATA" (with a note). */
static const char *read_check(struct result *r, const char *what, const uint8_t *p, size_t len, unsigned seed)
{
	uint8_t *buf = malloc(len);
	const char *out = "ok";
	long bad;
	int sig;

	if (!buf)
		return "ENOMEM";
	sig = guarded_copy(buf, p, len);
	if (sig) {
		note(r, "reading the %s range raised %s", what, sig == SIGBUS ? "SIGBUS" : "SIGSEGV");
		out = sig == SIGBUS ? "SIGBUS" : "SIGSEGV";
	} else if ((bad = mismatch(buf, len, 0, seed)) >= 0) {
		note(r, "%s range byte %ld is 0x%02x, expected 0x%02x", what, bad, buf[bad],
		     seed ? pat((size_t)bad, seed) : 0);
		out = CODE(BADDATA);
	}
	free(buf);
	return out;
}

/* ---- mappings under test ---- */

struct map {
	uint8_t *addr;
	size_t len;
	int fd;		/* the backing file, or -1 */
	unsigned seed;	/* the pattern the range holds (0: no known content) */
	unsigned old_seed;	/* what the old range reads after a move: the same (shared, file) or 0 (anon) */
	int writable;
};

typedef int (*make_fn)(struct map *m, struct result *r);

static int mmap_into(struct map *m, struct result *r, int prot, int flags, int fd, const char *what)
{
	void *p = mmap(NULL, m->len, prot, flags, fd, 0);
	if (p == MAP_FAILED) {	/* not permitted here: missing; anything else: it is there and failed */
		if (errno == EPERM || errno == EACCES || errno == ENODEV)
			skip(r, "cannot map %s: %s", what, errno_name(errno));
		else
			setup_error(r, "cannot map %s: %s", what, errno_name(errno));
		return -1;
	}
	m->addr = p;
	m->fd = fd;
	m->writable = !!(prot & PROT_WRITE);
	return 0;
}

/* Writes the pattern into the backing file first (page cache), so private mappings read it too. */
static int fill_file(int fd, size_t len, unsigned seed, struct result *r)
{
	uint8_t *buf = malloc(len);
	ssize_t n;

	if (!buf || ftruncate(fd, (off_t)len)) {
		setup_error(r, "cannot size the backing file: %s", errno_name(errno));
		free(buf);
		return -1;
	}
	fill(buf, len, 0, seed);
	n = pwrite(fd, buf, len, 0);
	free(buf);
	if (n != (ssize_t)len) {
		setup_error(r, "cannot write the backing file: %s", errno_name(errno));
		return -1;
	}
	return 0;
}

static int anon(struct map *m, struct result *r, int flags)
{
	m->len = NPAGES * page_size();
	if (mmap_into(m, r, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, "anonymous memory"))
		return -1;
	m->seed = 3;
	m->old_seed = (flags & MAP_SHARED) ? m->seed : 0;
	fill(m->addr, m->len, 0, m->seed);
	return 0;
}

static int make_anon_private(struct map *m, struct result *r) { return anon(m, r, MAP_PRIVATE); }
static int make_anon_shared(struct map *m, struct result *r) { return anon(m, r, MAP_SHARED); }

static int devzero(struct map *m, struct result *r, int flags)
{
	int fd = open("/dev/zero", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		setup_error(r, "cannot open /dev/zero: %s", errno_name(errno));
		return -1;
	}
	m->len = NPAGES * page_size();
	if (mmap_into(m, r, PROT_READ | PROT_WRITE, flags, fd, "/dev/zero"))
		return -1;
	m->fd = -1;
	close(fd);
	m->seed = 5;
	m->old_seed = (flags & MAP_SHARED) ? m->seed : 0;
	fill(m->addr, m->len, 0, m->seed);
	return 0;
}

static int make_devzero_private(struct map *m, struct result *r) { return devzero(m, r, MAP_PRIVATE); }
static int make_devzero_shared(struct map *m, struct result *r) { return devzero(m, r, MAP_SHARED); }

static int memfd(struct map *m, struct result *r, int prot, int flags)
{
	int fd = memfd_create("kpipe-verify", MFD_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOSYS)
			skip(r, "memfd_create: ENOSYS (kernel without MEMFD_CREATE)");
		else
			setup_error(r, "memfd_create: %s", errno_name(errno));
		return -1;
	}
	m->len = NPAGES * page_size();
	m->seed = m->old_seed = 7;	/* shared or private, the old range refaults from the file */
	if (fill_file(fd, m->len, m->seed, r))
		return -1;
	return mmap_into(m, r, prot, flags, fd, "the memfd");
}

static int make_memfd_shared(struct map *m, struct result *r)
{
	return memfd(m, r, PROT_READ | PROT_WRITE, MAP_SHARED);
}
static int make_memfd_private(struct map *m, struct result *r)
{
	return memfd(m, r, PROT_READ | PROT_WRITE, MAP_PRIVATE);
}
static int make_memfd_shared_ro(struct map *m, struct result *r) { return memfd(m, r, PROT_READ, MAP_SHARED); }

static int is_fs(const char *path, long magic)
{
	struct statfs s;
	return statfs(path, &s) == 0 && (long)s.f_type == magic;
}

/* An unlinked file on a filesystem of `fstype`: an existing mount of that kind when there is one,
 * else one mounted here (in a private mount namespace when possible) and lazily detached once the
 * file is open, so nothing stays mounted whatever happens to the case. */
int fs_file(const char *fstype, long magic, struct result *r)
{
	static const char *existing[] = {"/tmp", "/dev/shm", "/"};
	char dir[64] = "", path[96];
	struct statfs s;
	int fd, mounted = 0;

	mkdir("/tmp", 01777);
	for (size_t i = 0; i < sizeof(existing) / sizeof(existing[0]) && !dir[0]; i++)
		if (is_fs(existing[i], magic))
			snprintf(dir, sizeof(dir), "%s", existing[i]);
	if (!dir[0]) {
		if (unshare(CLONE_NEWNS) == 0)
			mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
		snprintf(dir, sizeof(dir), "/tmp/kpipe-%s-XXXXXX", fstype);
		if (!mkdtemp(dir)) {
			skip(r, "no %s mounted and cannot make a mount point under /tmp: %s", fstype,
			     errno_name(errno));
			return -1;
		}
		if (mount(fstype, dir, fstype, 0, NULL)) {
			int e = errno;
			rmdir(dir);
			skip(r, "no %s mounted and mount -t %s failed: %s", fstype, fstype, errno_name(e));
			return -1;
		}
		mounted = 1;
	}
	snprintf(path, sizeof(path), "%s/kpipe-verify-XXXXXX", strcmp(dir, "/") ? dir : "");
	fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		unlink(path);
	if (mounted) {
		umount2(dir, MNT_DETACH);
		rmdir(dir);
	}
	if (fd < 0) {
		skip(r, "cannot create a file on %s (%s): %s", fstype, dir, errno_name(errno));
		return -1;
	}
	if (fstatfs(fd, &s) || (long)s.f_type != magic) {
		skip(r, "the file in %s is on filesystem 0x%lx, not %s", dir, (long)s.f_type, fstype);
		close(fd);
		return -1;
	}
	return fd;
}

static int fsfile(struct map *m, struct result *r, const char *fstype, long magic, int flags)
{
	int fd = fs_file(fstype, magic, r);
	if (fd < 0)
		return -1;
	m->len = NPAGES * page_size();
	m->seed = m->old_seed = 11;
	if (fill_file(fd, m->len, m->seed, r))
		return -1;
	return mmap_into(m, r, PROT_READ | PROT_WRITE, flags, fd, fstype);
}

static int make_tmpfs_shared(struct map *m, struct result *r)
{
	return fsfile(m, r, "tmpfs", TMPFS_MAGIC_, MAP_SHARED);
}
static int make_tmpfs_private(struct map *m, struct result *r)
{
	return fsfile(m, r, "tmpfs", TMPFS_MAGIC_, MAP_PRIVATE);
}
static int make_ramfs_shared(struct map *m, struct result *r)
{
	return fsfile(m, r, "ramfs", RAMFS_MAGIC_, MAP_SHARED);
}
static int make_ramfs_private(struct map *m, struct result *r)
{
	return fsfile(m, r, "ramfs", RAMFS_MAGIC_, MAP_PRIVATE);
}

static int make_sysv_shm(struct map *m, struct result *r)
{
	int id;
	void *p;

	m->len = NPAGES * page_size();
	id = shmget(IPC_PRIVATE, m->len, IPC_CREAT | 0600);
	if (id < 0) {
		if (errno == ENOSYS)
			skip(r, "shmget: ENOSYS (kernel without SYSVIPC)");
		else
			setup_error(r, "shmget: %s", errno_name(errno));
		return -1;
	}
	p = shmat(id, NULL, 0);
	shmctl(id, IPC_RMID, NULL);	/* gone once detached, even if the case dies */
	if (p == (void *)-1) {
		skip(r, "shmat: %s", errno_name(errno));
		return -1;
	}
	m->addr = p;
	m->fd = -1;
	m->writable = 1;
	m->seed = m->old_seed = 13;
	fill(m->addr, m->len, 0, m->seed);
	return 0;
}

static int make_hugetlb(struct map *m, struct result *r)
{
	long kb = meminfo_kb("Hugepagesize"), free_pages = meminfo_kb("HugePages_Free");

	if (kb <= 0) {
		skip(r, "kernel without hugetlb (no Hugepagesize in /proc/meminfo)");
		return -1;
	}
	if (free_pages <= 0) {
		skip(r, "no free huge pages (HugePages_Free: %ld; reserve some with /proc/sys/vm/nr_hugepages)",
		     free_pages);
		return -1;
	}
	m->len = (size_t)kb * 1024;
	if (mmap_into(m, r, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1,
		      "a huge page"))
		return -1;
	m->seed = 17;
	fill(m->addr, m->len, 0, m->seed);
	return 0;
}

static int make_devmem(struct map *m, struct result *r)
{
	int fd = open("/dev/mem", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		skip(r, "cannot open /dev/mem: %s", errno_name(errno));
		return -1;
	}
	m->len = page_size();
	/* Physical page 0: allowed by STRICT_DEVMEM on x86 (BIOS area), not RAM on arm64 virt.  Never
	 * touched: only the move is tried. */
	if (mmap_into(m, r, PROT_READ, MAP_SHARED, fd, "/dev/mem page 0"))
		return -1;
	m->fd = -1;
	close(fd);
	m->seed = 0;
	return 0;
}

/* A kernel special mapping ([vdso]: VM_DONTEXPAND; [vvar]: VM_PFNMAP) found in /proc/self/maps. */
static int special(struct map *m, struct result *r, const char *tag)
{
	char line[512];
	unsigned long lo, hi;
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f) {
		skip(r, "cannot read /proc/self/maps: %s", errno_name(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *end = line + strlen(line);
		while (end > line && (end[-1] == '\n' || end[-1] == ' '))
			*--end = 0;
		if (end - line >= (long)strlen(tag) && !strcmp(end - strlen(tag), tag) &&
		    sscanf(line, "%lx-%lx", &lo, &hi) == 2) {
			fclose(f);
			m->addr = (uint8_t *)lo;
			m->len = hi - lo;
			m->fd = -1;
			m->seed = 0;
			return 0;
		}
	}
	fclose(f);
	skip(r, "this process has no %s mapping", tag);
	return -1;
}

static int make_vdso(struct map *m, struct result *r) { return special(m, r, "[vdso]"); }
static int make_vvar(struct map *m, struct result *r) { return special(m, r, "[vvar]"); }

/* ---- what a case does with a mapping ---- */

enum check {
	NEW_DATA,	/* the new range holds the original bytes */
	OLD_MAPPED,	/* the old range is still mapped: mincore, /proc/self/maps, reading it does not fault */
	OLD_ZEROS,	/* private anon: the old range reads zeros */
	OLD_SAME,	/* shmem: the old range reads the same data */
	WRITE_SHOWS,	/* shmem: a write through the new range shows in the file (pread) and the old range */
	PRIVATE_COW,	/* memfd MAP_PRIVATE written before the move: new has the private copy, old the file */
};

struct data_case {
	make_fn make;
	enum check check;
};

/* ---- the mapping-type matrix ---- */

static void case_move(const struct test_case *tc, struct result *r)
{
	const struct data_case *d = tc->arg;
	struct map m = {.fd = -1};
	uint8_t *moved;

	if (d->make(&m, r))
		return;
	moved = do_mremap(m.addr, m.len, m.len, DONTUNMAP, NULL);
	if (moved == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return;
	}
	note(r, "moved %p -> %p", (void *)m.addr, (void *)moved);
	if (m.seed)
		observe(r, read_check(r, "new", moved, m.len, m.seed));
	else
		observe(r, "ok");
}

/* ---- argument errors, all on private anonymous memory (accepted by every kernel) ---- */

struct arg_case {
	long old_off;		/* old address = mapping + old_off */
	size_t old_pages, new_pages;
	unsigned long flags;
	long hint_pages, hint_bytes;	/* new address = mapping + hint (NULL when both are 0) */
	int hole_after;		/* unmap everything after the first page: the range runs past the VMA */
};

static void case_args(const struct test_case *tc, struct result *r)
{
	const struct arg_case *a = tc->arg;
	size_t pg = page_size();
	struct map m = {.fd = -1};
	uint8_t *old, *hint;
	void *ret;

	if (make_anon_private(&m, r))
		return;
	if (a->hole_after && munmap(m.addr + pg, m.len - pg)) {
		skip(r, "munmap: %s", errno_name(errno));
		return;
	}
	old = m.addr + a->old_off;
	hint = (a->hint_pages || a->hint_bytes) ? m.addr + a->hint_pages * (long)pg + a->hint_bytes : NULL;
	ret = do_mremap(old, a->old_pages * pg, a->new_pages * pg, a->flags, hint);
	if (ret == MAP_FAILED) {
		observe_errno(r, errno);
		return;
	}
	note(r, "mremap(%p, %zu, %zu, 0x%lx, %p) returned %p", (void *)old, a->old_pages * pg,
	     a->new_pages * pg, a->flags, (void *)hint, ret);
	observe(r, "ok");
}

/* ---- data after a successful move ---- */

static int old_range_mapped(struct result *r, const uint8_t *old, size_t len)
{
	unsigned char vec[64];
	char line[512];
	unsigned long lo, hi, want_lo = (unsigned long)old, want_hi = want_lo + len;
	int listed = 0;
	FILE *f;

	if (len / page_size() > sizeof(vec) || mincore((void *)old, len, vec)) {
		note(r, "mincore on the old range: %s", errno_name(errno));
		return 0;
	}
	f = fopen("/proc/self/maps", "r");
	if (!f) {
		note(r, "cannot read /proc/self/maps: %s", errno_name(errno));
		return 0;
	}
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo <= want_lo && hi >= want_hi)
			listed = 1;
	fclose(f);
	if (!listed)
		note(r, "/proc/self/maps does not list the old range %lx-%lx", want_lo, want_hi);
	return listed;
}

static const char *check_write_shows(struct result *r, struct map *m, uint8_t *moved)
{
	unsigned seed2 = m->seed + 100;
	uint8_t *buf;
	const char *out;

	if (m->fd < 0) {
		note(r, "this mapping has no file to pread");
		return CODE(NOFILE);
	}
	fill(moved, m->len, 0, seed2);
	buf = malloc(m->len);
	if (!buf)
		return "ENOMEM";
	if (pread(m->fd, buf, m->len, 0) != (ssize_t)m->len) {
		note(r, "pread: %s", errno_name(errno));
		free(buf);
		return "EIO";
	}
	out = "ok";
	if (mismatch(buf, m->len, 0, seed2) >= 0) {
		note(r, "a write through the new range does not show in the file (pread)");
		out = CODE(BADDATA);
	}
	free(buf);
	if (!strcmp(out, "ok"))
		out = read_check(r, "old", m->addr, m->len, seed2);
	return out;
}

static void case_data(const struct test_case *tc, struct result *r)
{
	const struct data_case *d = tc->arg;
	struct map m = {.fd = -1};
	unsigned file_seed;
	uint8_t *moved;
	const char *out = "ok";

	if (d->make(&m, r))
		return;
	file_seed = m.seed;
	if (d->check == PRIVATE_COW) {	/* private copies on every page, differing from the file */
		m.seed += 50;
		fill(m.addr, m.len, 0, m.seed);
	}
	moved = do_mremap(m.addr, m.len, m.len, DONTUNMAP, NULL);
	if (moved == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return;
	}
	switch (d->check) {
	case NEW_DATA:
		out = read_check(r, "new", moved, m.len, m.seed);
		break;
	case OLD_MAPPED:
		if (!old_range_mapped(r, m.addr, m.len))
			out = CODE(UNMAPPED);
		else
			out = read_check(r, "old", m.addr, m.len, m.old_seed);
		break;
	case OLD_ZEROS:
		out = read_check(r, "old", m.addr, m.len, 0);
		break;
	case OLD_SAME:
		out = read_check(r, "old", m.addr, m.len, m.seed);
		break;
	case WRITE_SHOWS:
		out = check_write_shows(r, &m, moved);
		break;
	case PRIVATE_COW:
		out = read_check(r, "new", moved, m.len, m.seed);
		if (!strcmp(out, "ok"))
			out = read_check(r, "old", m.addr, m.len, file_seed);
		break;
	}
	observe(r, out);
}

/* ---- the GC workflow that motivates the patch: userfaultfd on the range left behind ---- */

static int uffd_open(struct result *r)
{
	int err[2], fd = uffd_open_fd(UFFD_OPEN_DEV, err);

	if (fd < 0 && err[0] == ENOSYS)
		skip(r, "userfaultfd unavailable: ENOSYS (kernel without USERFAULTFD)");
	else if (fd < 0)
		setup_error(r, "userfaultfd: %s", errno_name(err[0]));
	return fd;
}

struct gc {
	int uffd, minor;
	uint8_t *heap, *moved;	/* the range left behind (faults here) and where the heap went */
	size_t len, pg;
	unsigned seed, seed2;
	int faults, bad_data;
	char err[160];
};

/* The stop-the-world pause: the heap in ``m`` moves with MREMAP_DONTUNMAP, the old range stays behind for
 * userfaultfd. -1 (the move's errno observed, marked rejected) when the kernel refuses the move. */
static int gc_move(struct gc *g, const struct map *m, struct result *r)
{
	memset(g, 0, sizeof(*g));
	g->heap = m->addr;
	g->len = m->len;
	g->pg = page_size();
	g->seed = m->seed;
	g->moved = do_mremap(m->addr, m->len, m->len, DONTUNMAP, NULL);
	if (g->moved == MAP_FAILED) {
		observe_errno(r, errno);
		r->rejected = 1;
		return -1;
	}
	return 0;
}

/* Register the old heap with userfaultfd in ``mode`` and check the kernel offers the resolving ioctl
 * (bit ``ioctl_nr``); on failure the result says which step failed. */
static int gc_register(struct gc *g, struct result *r, __u64 mode, const char *mode_name, int ioctl_nr,
		       const char *ioctl_name, const char *missing)
{
	struct uffdio_register reg = {.range = {.start = (unsigned long)g->heap, .len = g->len}, .mode = mode};

	if (ioctl(g->uffd, UFFDIO_REGISTER, &reg)) {
		observe_errno(r, errno);
		note(r, "UFFDIO_REGISTER (%s) on the old range failed", mode_name);
		return -1;
	}
	if (!(reg.ioctls & ((__u64)1 << ioctl_nr))) {
		observe(r, missing);
		note(r, "UFFDIO_REGISTER does not offer %s on the old range", ioctl_name);
		return -1;
	}
	return 0;
}

/* The GC's handler: each fault on the old heap is resolved from the moved heap. MISSING: UFFDIO_COPY
 * the page from the moved range.  MINOR (shmem): "compact" the page in place through the moved range
 * (the same page-cache page), then UFFDIO_CONTINUE maps it. */
static void *gc_handler(void *arg)
{
	struct gc *g = arg;
	int want = (int)(g->len / g->pg);

	while (g->faults < want) {
		struct pollfd pfd = {.fd = g->uffd, .events = POLLIN};
		struct uffd_msg msg;
		unsigned long addr, off;
		int n = poll(&pfd, 1, 5000);

		if (n == 0) {
			snprintf(g->err, sizeof(g->err), "no fault event within 5 s after %d of %d", g->faults, want);
			return NULL;
		}
		if (n < 0 || read(g->uffd, &msg, sizeof(msg)) != sizeof(msg)) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			snprintf(g->err, sizeof(g->err), "reading the userfaultfd: %s", errno_name(errno));
			return NULL;
		}
		if (msg.event != UFFD_EVENT_PAGEFAULT) {
			snprintf(g->err, sizeof(g->err), "unexpected userfaultfd event 0x%x", msg.event);
			return NULL;
		}
		addr = (unsigned long)msg.arg.pagefault.address & ~(g->pg - 1);
		off = addr - (unsigned long)g->heap;
		if (addr < (unsigned long)g->heap || off >= g->len) {
			snprintf(g->err, sizeof(g->err), "fault at %lx outside the old heap", addr);
			return NULL;
		}
		if (g->minor) {
			struct kp_uffdio_continue c = {.range = {.start = addr, .len = g->pg}};
			if (!(msg.arg.pagefault.flags & KP_UFFD_PAGEFAULT_FLAG_MINOR)) {
				snprintf(g->err, sizeof(g->err), "fault at %lx is not a minor fault (flags 0x%llx)",
					 addr, (unsigned long long)msg.arg.pagefault.flags);
				return NULL;
			}
			fill(g->moved + off, g->pg, off, g->seed2);
			if (ioctl(g->uffd, KP_UFFDIO_CONTINUE, &c)) {
				snprintf(g->err, sizeof(g->err), "UFFDIO_CONTINUE: %s", errno_name(errno));
				return NULL;
			}
		} else {
			struct uffdio_copy c = {.dst = addr, .src = (unsigned long)g->moved + off, .len = g->pg};
			if (ioctl(g->uffd, UFFDIO_COPY, &c)) {
				snprintf(g->err, sizeof(g->err), "UFFDIO_COPY: %s", errno_name(errno));
				return NULL;
			}
		}
		g->faults++;
	}
	return NULL;
}

/* An application thread touching the old heap: every page must arrive with the handler's data. */
static void *gc_mutator(void *arg)
{
	struct gc *g = arg;
	unsigned seed = g->minor ? g->seed2 : g->seed;

	for (size_t off = 0; off < g->len; off += g->pg)
		if (mismatch(g->heap + off, g->pg, off, seed) >= 0)
			g->bad_data++;
	return NULL;
}

static void gc_run(struct gc *g, struct result *r)
{
	pthread_t h, t;

	if (pthread_create(&h, NULL, gc_handler, g)) {
		observe(r, "EAGAIN");
		note(r, "cannot start the handler thread");
		return;
	}
	if (pthread_create(&t, NULL, gc_mutator, g)) {
		observe(r, "EAGAIN");
		note(r, "cannot start the faulting thread");
		return;	/* the handler times out and the case process ends */
	}
	pthread_join(t, NULL);
	pthread_join(h, NULL);
	note(r, "%d faults resolved, %d pages with wrong data", g->faults, g->bad_data);
	if (g->err[0]) {
		note(r, "%s", g->err);
		observe(r, CODE(NOFAULT));
	} else if (g->bad_data) {
		observe(r, CODE(BADDATA));
	} else {
		observe(r, "ok");
	}
}

static void case_gc_missing_anon(const struct test_case *tc, struct result *r)
{
	struct map m = {.fd = -1};
	struct uffdio_api api = {.api = UFFD_API};
	struct gc g;
	(void)tc;

	if (make_anon_private(&m, r))
		return;
	if (gc_move(&g, &m, r))
		return;
	g.uffd = uffd_open(r);
	if (g.uffd < 0)
		return;
	if (ioctl(g.uffd, UFFDIO_API, &api)) {
		setup_error(r, "UFFDIO_API: %s", errno_name(errno));
		return;
	}
	if (gc_register(&g, r, UFFDIO_REGISTER_MODE_MISSING, "MISSING", _UFFDIO_COPY, "UFFDIO_COPY", CODE(NOCOPY)))
		return;
	gc_run(&g, r);
}

static void case_gc_minor_memfd(const struct test_case *tc, struct result *r)
{
	struct map m = {.fd = -1};
	struct uffdio_api api = {.api = UFFD_API};
	struct gc g;
	int probe;
	(void)tc;

	if (make_memfd_shared(&m, r))
		return;
	if (gc_move(&g, &m, r))
		return;
	g.seed2 = m.seed + 200;
	g.minor = 1;
	/* Feature detection: UFFDIO_API with no features reports what the kernel supports. */
	probe = uffd_open(r);
	if (probe < 0)
		return;
	if (ioctl(probe, UFFDIO_API, &api)) {
		setup_error(r, "UFFDIO_API: %s", errno_name(errno));
		return;
	}
	close(probe);
	if (!(api.features & KP_UFFD_FEATURE_MINOR_SHMEM)) {
		skip(r, "kernel lacks UFFD_FEATURE_MINOR_SHMEM (minor faults on shmem arrive in 5.14; "
			"features 0x%llx)", (unsigned long long)api.features);
		return;
	}
	g.uffd = uffd_open(r);
	if (g.uffd < 0)
		return;
	api = (struct uffdio_api){.api = UFFD_API, .features = KP_UFFD_FEATURE_MINOR_SHMEM};
	if (ioctl(g.uffd, UFFDIO_API, &api)) {
		observe_errno(r, errno);
		note(r, "UFFDIO_API with UFFD_FEATURE_MINOR_SHMEM failed though it is advertised");
		return;
	}
	if (gc_register(&g, r, KP_UFFDIO_REGISTER_MODE_MINOR, "MINOR", KP_UFFDIO_CONTINUE_NR, "UFFDIO_CONTINUE",
			CODE(NOCONTINUE)))
		return;
	gc_run(&g, r);
	if (!strcmp(r->observed, "ok")) {	/* the compaction landed in the file too */
		uint8_t *buf = malloc(m.len);
		if (!buf || pread(m.fd, buf, m.len, 0) != (ssize_t)m.len || mismatch(buf, m.len, 0, g.seed2) >= 0) {
			observe(r, CODE(BADDATA));
			note(r, "the memfd does not hold the data written by the handler");
		}
		free(buf);
	}
}

/* ---- the case table ---- */

#define MOVE(name, fn) {"move-" name, case_move, &(const struct data_case){fn, NEW_DATA}}
#define DATA(name, fn, check) {"data-" name, case_data, &(const struct data_case){fn, check}}
/* old offset (bytes), old pages, new pages, flags, hint pages, hint bytes, hole after the first page */
#define ARG(name, ...) {"arg-" name, case_args, &(const struct arg_case){__VA_ARGS__}}

static const struct test_case cases[] = {
	MOVE("anon-private", make_anon_private),
	MOVE("anon-shared", make_anon_shared),
	MOVE("devzero-private", make_devzero_private),
	MOVE("devzero-shared", make_devzero_shared),
	MOVE("memfd-shared", make_memfd_shared),
	MOVE("memfd-private", make_memfd_private),
	MOVE("memfd-shared-ro", make_memfd_shared_ro),
	MOVE("tmpfs-shared", make_tmpfs_shared),
	MOVE("tmpfs-private", make_tmpfs_private),
	MOVE("ramfs-shared", make_ramfs_shared),
	MOVE("ramfs-private", make_ramfs_private),
	MOVE("sysv-shm", make_sysv_shm),
	MOVE("hugetlb", make_hugetlb),
	MOVE("devmem", make_devmem),
	MOVE("vdso", make_vdso),
	MOVE("vvar", make_vvar),
	ARG("no-maymove", 0, NPAGES, NPAGES, MREMAP_DONTUNMAP, 0, 0, 0),
	ARG("len-grow", 0, NPAGES / 2, NPAGES, DONTUNMAP, 0, 0, 0),
	ARG("len-shrink", 0, NPAGES, NPAGES / 2, DONTUNMAP, 0, 0, 0),
	ARG("unknown-flag", 0, NPAGES, NPAGES, DONTUNMAP | (1ul << 30), 0, 0, 0),
	ARG("unaligned-addr", 1, 1, 1, DONTUNMAP, 0, 0, 0),
	/* Without MREMAP_FIXED the new address is only a hint, but DONTUNMAP checks it like a target on
	 * every kernel since 5.7: one overlapping the old range, or not page aligned, is refused. */
	ARG("hint-overlap", 0, NPAGES, NPAGES, DONTUNMAP, 1, 0, 0),
	ARG("hint-unaligned", 0, NPAGES, NPAGES, DONTUNMAP, 2 * NPAGES, 1, 0),
	ARG("past-vma-end", 0, NPAGES, NPAGES, DONTUNMAP, 0, 0, 1),
	DATA("anon-private-new-data", make_anon_private, NEW_DATA),
	DATA("anon-private-old-mapped", make_anon_private, OLD_MAPPED),
	DATA("anon-private-old-zeros", make_anon_private, OLD_ZEROS),
	DATA("anon-shared-old-same", make_anon_shared, OLD_SAME),
	DATA("memfd-shared-new-data", make_memfd_shared, NEW_DATA),
	DATA("memfd-shared-old-mapped", make_memfd_shared, OLD_MAPPED),
	DATA("memfd-shared-old-same", make_memfd_shared, OLD_SAME),
	DATA("memfd-shared-write-shows", make_memfd_shared, WRITE_SHOWS),
	DATA("memfd-private-cow", make_memfd_private, PRIVATE_COW),
	DATA("tmpfs-shared-old-same", make_tmpfs_shared, OLD_SAME),
	DATA("tmpfs-shared-write-shows", make_tmpfs_shared, WRITE_SHOWS),
	{"gc-uffd-missing-anon", case_gc_missing_anon, NULL},
	{"gc-uffd-minor-memfd", case_gc_minor_memfd, NULL},
};

int main(int argc, char **argv)
{
	size_t n = sizeof(cases) / sizeof(cases[0]), total = n + n_state_cases + n_move_cases + n_plain_cases;
	struct test_case *all = malloc(total * sizeof(*all));

	if (!all)
		return 2;
	memcpy(all, cases, sizeof(cases));
	memcpy(all + n, state_cases, n_state_cases * sizeof(*all));
	memcpy(all + n + n_state_cases, move_cases, n_move_cases * sizeof(*all));
	memcpy(all + n + n_state_cases + n_move_cases, plain_cases, n_plain_cases * sizeof(*all));
	return harness_main(argc, argv, all, total, "mremap_dontunmap");
}
