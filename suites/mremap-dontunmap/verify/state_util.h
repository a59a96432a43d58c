/* kpipe verifier: what the kernel-state cases share (defined in state.c, used by state.c, moves.c, plain.c and
 * mremap_dontunmap.c). */
#ifndef KPIPE_STATE_UTIL_H
#define KPIPE_STATE_UTIL_H

#include "harness.h"

#include <stddef.h>
#include <stdint.h>

#ifndef MREMAP_MAYMOVE
#define MREMAP_MAYMOVE 1
#endif
#ifndef MREMAP_FIXED
#define MREMAP_FIXED 2
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#define DONTUNMAP (MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
#define PM_PRESENT (1ull << 63)
#define PM_PFN_MASK ((1ull << 55) - 1)
#define STAT_THRESHOLD_MAX 125	/* mm/vmstat.c calculate_normal_threshold(): per-CPU vmstat delta cap */

/* One VMA of /proc/self/smaps. */
struct vma {
	unsigned long start, end;
	long rss, anon, locked, thp;	/* kB */
	char flags[160];
};

/* A mapping surrounded by PROT_NONE guard pages, so that no VMA merges with it. */
struct area {
	uint8_t *res;		/* the reservation: guard + range + guard */
	size_t res_len;
	uint8_t *addr;		/* the range */
	size_t len;
};

enum kind { K_ANON, K_ANON_SHARED, K_MEMFD_SHARED, K_MEMFD_PRIVATE };
extern const char *const kind_name[];

struct snap {
	long vmsize, vmlck, vmpte, committed, shmem;
};

/* mremap(old, len, len, MAYMOVE | DONTUNMAP, hint) */
void *mremap_(void *old, size_t len, void *hint);
/* byte `off` of the test pattern `seed` (never zero) */
uint8_t spat(size_t off, unsigned seed);
long status_kb(const char *key);
long meminfo_kb(const char *key);
int has_flag(const struct vma *v, const char *f);
int smaps_range(unsigned long lo, unsigned long hi, struct vma *out, int max);
int smaps_exact(unsigned long lo, unsigned long hi, struct vma *v, struct result *r, const char *what);
int pagemap(const void *addr, size_t npages, uint64_t *out);
int reserve(struct area *a, size_t len, size_t align, struct result *r);
int hole(struct area *a, size_t len, size_t align, struct result *r);
int is_anon_private(enum kind k);
int is_shared(enum kind k);
int map_kind(struct area *a, enum kind k, int *fd, struct result *r);
void fill_pages(uint8_t *p, size_t len, size_t off0, unsigned seed, size_t step_pages);
long bad_page(const uint8_t *p, size_t len, size_t off0, unsigned seed, size_t step);
double now_us(void);
long committed_noise(void);
long settle_committed(long want, long tol);
void take(struct snap *s);
long flagged_kb(const struct vma *vs, int n, const char *flag, unsigned long lo, unsigned long hi);
int premise_present(struct result *r, const void *addr, size_t npages, size_t step, const char *what);
const char *check_pagemap(struct result *r, const uint64_t *before, uint8_t *old, uint8_t *moved, size_t npages,
			  size_t touched_step, uint64_t *scratch);

#endif
