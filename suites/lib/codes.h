/* kpipe verifier: the failure codes a case may observe, one list for every suite.
 *
 * A case observes "ok", an errno name (harness.c's errno_name: EINVAL, ...; a refused move), a signal name
 * (SIGSEGV, SIGBUS: a read that faulted; the harness's own report of a crashed or timed-out case) or one of the
 * codes below: what it found wrong.  expectations.toml's `xfail:CODE` and the tests' expected codes name these
 * (tests/unit/test_verifier_codes.py checks it).  In C, CODE(NAME) is the string "NAME", and a name missing from
 * the list does not compile.  A new code: one X(...) line here, in alphabetical order.
 */
#ifndef KPIPE_CODES_H
#define KPIPE_CODES_H

#define KP_FAILURE_CODES(X) \
	X(ADDR)		/* the result is not at the address asked for */ \
	X(BADDATA)	/* a range reads other data than it must */ \
	X(BADEVENT)	/* a userfaultfd event with the wrong from/to/len */ \
	X(CHILD)	/* a forked child died touching the moved range */ \
	X(CHILDDATA)	/* a forked child does not see the moved data */ \
	X(COMMIT)	/* Committed_AS off by more than the tolerance */ \
	X(COW)		/* a forked child's writes show (private) or do not (shared) */ \
	X(DSTDATA)	/* a replaced destination reads its old data, not zeros */ \
	X(FILEWRITTEN)	/* a write reached a sealed file */ \
	X(HANG)		/* threads blocked on faults nobody resolves */ \
	X(NEWPTE)	/* the new range's pages not present as they must be */ \
	X(NEWUFFD)	/* the new VMA's userfaultfd registration wrong */ \
	X(NEWUNLOCKED)	/* the new VMA lost VM_LOCKED */ \
	X(NOCONTINUE)	/* the MINOR registration offers no UFFDIO_CONTINUE */ \
	X(NOCOPY)	/* the MISSING registration offers no UFFDIO_COPY */ \
	X(NOEVENT)	/* no UFFD_EVENT_REMAP */ \
	X(NOFAULT)	/* the userfaultfd GC's handler failed */ \
	X(NOFILE)	/* a mapping with no file to read back */ \
	X(NORESULT)	/* the case returned without a result (harness) */ \
	X(NOTFIXED)	/* MREMAP_FIXED not honoured */ \
	X(NOTRAP)	/* a page of the old range never trapped */ \
	X(NOTSEALED)	/* F_GET_SEALS is not what the case set up */ \
	X(OLDLOCKED)	/* the old VMA still VM_LOCKED */ \
	X(OLDMAPPED)	/* the old range still mapped */ \
	X(OLDPTE)	/* the old range's pages still present */ \
	X(OLDUFFD)	/* the old VMA's userfaultfd registration wrong */ \
	X(PFN)		/* the new range holds other pages than the old one did */ \
	X(PTE)		/* the result's presence or PFNs differ from before (plain-*) */ \
	X(PTEPATH)	/* a PMD-aligned move went PTE by PTE */ \
	X(RSS)		/* smaps Rss / Anonymous wrong */ \
	X(SHMEM)	/* Shmem off by more than the tolerance */ \
	X(UFFD)		/* gc-mt's userfaultfd handler failed */ \
	X(UNMAPPED)	/* the old range was unmapped */ \
	X(VMA)		/* a range is not exactly one VMA as expected */ \
	X(VMFLAGS)	/* smaps VmFlags wrong */ \
	X(VMLCK)	/* VmLck wrong */ \
	X(VMSIZE)	/* VmSize wrong */

enum kp_failure_code {
#define KP_CODE_ENUM(name) KP_CODE_##name,
	KP_FAILURE_CODES(KP_CODE_ENUM)
#undef KP_CODE_ENUM
	KP_NCODES
};

/* "NAME", checked against the list at compile time; an address constant (usable in static initializers). */
#define CODE(name) (&#name[0 * KP_CODE_##name])

#endif
