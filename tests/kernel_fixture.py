"""Small synthetic kernel-like git trees for the tree/patch/fault tests, and the helpers to run kpipe's CLI for
real against them and to prove a user's tree was not touched.

The trees hold a top Makefile with VERSION/PATCHLEVEL, a Kconfig, an mm/ folder whose mremap.c carries the real
5.10 lines around the MREMAP_DONTUNMAP check (so the shipped seed patch applies at an offset, as on Debian's
5.10), and a few untouched files whose mtimes the tests watch. Their Makefile refuses every target at once, so
even a regression that reached `make` could not start a kernel build.
"""
from __future__ import annotations

import re
import pytest
import fcntl
import hashlib
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED_PATCH = REPO_ROOT / "patches" / "0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch"
SEED_SUBJECT = "mm: Allow shmem mappings with MREMAP_DONTUNMAP"
SEED_AUTHOR = "Brian Geffon <bgeffon@google.com>"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.org",
    "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@example.org",
    "GIT_AUTHOR_DATE": "2021-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2021-01-01T00:00:00Z",
    "GIT_CONFIG_NOSYSTEM": "1",
}

MREMAP_HEAD = """\
// SPDX-License-Identifier: GPL-2.0
/*
 *	mm/mremap.c
 *
 *	(C) Copyright 1996 Linus Torvalds
 *
 *	Address space accounting code	<alan@lxorguk.ukuu.org.uk>
 *	(C) Copyright 2002 Red Hat Inc, All Rights Reserved
 */

#include <linux/mm.h>
#include <linux/hugetlb.h>
#include <linux/shm.h>
#include <linux/mman.h>

#include "internal.h"

"""

# The real 5.10 lines of vma_to_resize() around the check the seed patch changes.
VMA_TO_RESIZE_510 = """\
static struct vm_area_struct *vma_to_resize(unsigned long addr,
	unsigned long old_len, unsigned long new_len, unsigned long flags,
	unsigned long *p)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma = find_vma(mm, addr);
	unsigned long pgoff;

	if (!vma || vma->vm_start > addr)
		return ERR_PTR(-EFAULT);

	/*
	 * !old_len is a special case where an attempt is made to 'duplicate'
	 * a mapping.  This makes no sense for private mappings as it will
	 * instead create a fresh/new mapping unrelated to the original.  This
	 * is contrary to the basic idea of mremap which creates new mappings
	 * based on the original.  There are no known use cases for this
	 * behavior.  As a result, fail such attempts.
	 */
	if (!old_len && !(vma->vm_flags & (VM_SHARED | VM_MAYSHARE))) {
		pr_warn_once("%s (%d): attempted to duplicate a private mapping with mremap.  This is not supported.\\n", current->comm, current->pid);
		return ERR_PTR(-EINVAL);
	}

	if (flags & MREMAP_DONTUNMAP && (!vma_is_anonymous(vma) ||
			vma->vm_flags & VM_SHARED))
		return ERR_PTR(-EINVAL);

	if (is_vm_hugetlb_page(vma))
		return ERR_PTR(-EINVAL);

	/* We can't remap across vm area boundaries */
	if (old_len > vma->vm_end - addr)
		return ERR_PTR(-EFAULT);

	if (new_len == old_len)
		return vma;

	/* Need to be careful about a growing mapping */
	pgoff = (addr - vma->vm_start) >> PAGE_SHIFT;
	pgoff += vma->vm_pgoff;
	if (pgoff + (new_len >> PAGE_SHIFT) < pgoff)
		return ERR_PTR(-EINVAL);

	if (vma->vm_flags & (VM_DONTEXPAND | VM_PFNMAP))
		return ERR_PTR(-EFAULT);

	return vma;
}
"""  # noqa: E501

OLD_CHECK = """\
	if (flags & MREMAP_DONTUNMAP && (!vma_is_anonymous(vma) ||
			vma->vm_flags & VM_SHARED))
"""
SEED_CHECK = "\tif (flags & MREMAP_DONTUNMAP && !(vma_is_anonymous(vma) || vma_is_shmem(vma)))\n"
# someone else's local edit of the same lines: the seed patch cannot apply, nor its reverse
LOCAL_CHECK = """\
	if (flags & MREMAP_DONTUNMAP && (!vma_is_anonymous(vma) ||
			vma->vm_flags & (VM_SHARED | VM_LOCKED)))
"""
# upstream since 5.13 ("mm: extend MREMAP_DONTUNMAP to non-anonymous mappings"), as in 6.1 / 6.12
UPSTREAM_CHECK = """\
	if ((flags & MREMAP_DONTUNMAP) &&
			(vma->vm_flags & (VM_DONTEXPAND | VM_PFNMAP)))
"""

VARIANTS = {
    "5.10": ((5, 10), OLD_CHECK),
    "patched": ((5, 10), SEED_CHECK),
    "conflict": ((5, 10), LOCAL_CHECK),
    "6.12": ((6, 12), UPSTREAM_CHECK),
}


def mremap_c(check: str) -> str:
    filler = "".join(f"/* filler line {i}: keeps the hunk at an offset, as on Debian's 5.10 */\n" for i in range(40))
    return MREMAP_HEAD + filler + "\n" + VMA_TO_RESIZE_510.replace(OLD_CHECK, check)


def kernel_files(variant: str = "5.10") -> dict[str, str]:
    (version, patchlevel), check = VARIANTS[variant]
    return {
        "Makefile": (f"# SPDX-License-Identifier: GPL-2.0\nVERSION = {version}\nPATCHLEVEL = {patchlevel}\n"
                     "SUBLEVEL = 0\nEXTRAVERSION = -synthetic\nNAME = kpipe test tree\n\n"
                     "# a synthetic tree for kpipe's tests: every target fails at once, no build can start\n"
                     "%:\n\t@echo 'synthetic kernel-like test tree: nothing to build' >&2; exit 99\n"),
        "Kconfig": 'mainmenu "Linux/$(ARCH) $(KERNELVERSION) Kernel Configuration"\n\nsource "mm/Kconfig"\n',
        "README": "Synthetic kernel-like tree for kpipe tests.\n",
        "mm/Kconfig": "config SHMEM\n\tbool \"Use full shmem filesystem\"\n\tdefault y\n",
        "mm/Makefile": "obj-y := mremap.o\n",
        "mm/mremap.c": mremap_c(check),
        "mm/mmap.c": "// SPDX-License-Identifier: GPL-2.0\n/* untouched by the seed patch */\n",
        "init/main.c": "// SPDX-License-Identifier: GPL-2.0\nint main_dummy;\n",
        "include/linux/mm.h": "/* SPDX-License-Identifier: GPL-2.0 */\n#define VM_SHARED 0x8\n",
    }


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Read-only-safe git for the tests (optional locks off, so status never refreshes the index)."""
    env = {**os.environ, **GIT_ENV, "GIT_OPTIONAL_LOCKS": "0"}
    return subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args], env=env, check=check,
                          capture_output=True, text=True)


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def make_repo(path: Path, files: dict[str, str], message: str = "synthetic base") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "master")
    write_files(path, files)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return path


def make_kernel_repo(path: Path, variant: str = "5.10") -> Path:
    """A git repository holding a small kernel-like tree (see VARIANTS) with one commit on master."""
    return make_repo(path, kernel_files(variant), f"synthetic {variant} kernel-like tree")


# ------------------------------------------------------------------ running kpipe for real

def kpipe_env(cache: Path, **extra: str) -> dict:
    env = {**os.environ, "KPIPE_CACHE": str(cache), "KPIPE_CCACHE": "0", **extra}
    env.pop("KPIPE_TEST_PREBUILT", None)
    return env


def invoke(*args: str, cache: Path, out: Path | None = None, env: dict | None = None, timeout: float = 120,
           ) -> subprocess.CompletedProcess:
    """Run ``invoke ARGS`` in the repository (as a user would) with a private cache; ``--out`` keeps run folders
    out of the repository. A process of its own, forked from a zygote that already imported kpipe (forkserver.py):
    what `python -m invoke` runs after its imports, without paying for them on every call."""
    from forkserver import run_invoke
    cmd = [*args]
    if out is not None:
        cmd += ["--out", str(out)]
    return run_invoke(cmd, cwd=REPO_ROOT, env=env or kpipe_env(cache), timeout=timeout)


# ------------------------------------------------------------------ proving a tree untouched

def file_snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (including .git): kind, bytes digest, mtime (ns), mode."""
    snap: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                snap[rel] = ("link", os.readlink(p), st.st_mtime_ns)
            elif p.is_dir():
                snap[rel] = ("dir", None, st.st_mtime_ns, st.st_mode)
            else:
                snap[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_mode)
    st = root.stat()
    snap["."] = ("dir", None, st.st_mtime_ns, st.st_mode)
    return snap


def git_snapshot(repo: Path) -> dict[str, str]:
    """HEAD, the index's bytes, every ref (loose and packed), and `git status --porcelain` (read-only)."""
    gitdir = repo / ".git"
    packed = gitdir / "packed-refs"
    return {
        "HEAD": git(repo, "rev-parse", "HEAD").stdout,
        "HEAD-file": (gitdir / "HEAD").read_text(),
        "index": hashlib.sha256((gitdir / "index").read_bytes()).hexdigest(),
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)").stdout,
        "packed-refs": packed.read_text() if packed.exists() else "",
        "status": git(repo, "status", "--porcelain", "--untracked-files=all").stdout,
    }


def tree_snapshot(repo: Path) -> tuple[dict, dict]:
    files = file_snapshot(repo)          # first: the git reads below must not be what changes it
    return files, git_snapshot(repo)


def diff_snapshots(before: dict, after: dict) -> list[str]:
    out = []
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            out.append(f"{k}: {before.get(k)!r} -> {after.get(k)!r}")
    return out


def mtimes(root: Path, rels: list[str]) -> dict[str, int]:
    return {r: (root / r).stat().st_mtime_ns for r in rels}


def tracked_files(repo: Path) -> list[str]:
    return git(repo, "ls-files").stdout.split()


# ------------------------------------------------------------------ cache hygiene

def leftovers(cache: Path) -> list[str]:
    """Temp or half-made entries anywhere in the cache."""
    return [str(p.relative_to(cache)) for p in cache.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def held_locks(cache: Path) -> list[str]:
    """Lock files some process still holds (try each one non-blocking)."""
    held = []
    for p in cache.rglob("*.lock"):
        if not p.is_file():
            continue
        fd = os.open(p, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            held.append(str(p))
        finally:
            os.close(fd)
    return held


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own kpipe cache: the shared one (~/.cache/kpipe) is never touched.
    Autouse in every module that imports it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KPIPE_CACHE", str(cache))
    return cache


def scratch_of(stdout: str) -> Path:
    """The scratch checkout `invoke apply` reports."""
    m = re.search(r"^scratch checkout (\S+) at ([0-9a-f]+)", stdout, re.M)
    assert m, stdout
    return Path(m.group(1))


def processes_with_env(name: str, value: str) -> list[str]:
    """Processes (other than this test) whose environment has ``name=value``: a run's children, found even
    after they were re-parented."""
    needle = f"{name}={value}".encode() + b"\0"
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "environ").read_bytes() + b"\0":
                found.append(f"{d.name} " + (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found
