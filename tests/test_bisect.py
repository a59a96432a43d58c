"""End-to-end bisection on a synthetic history made on top of the Debian 5.10 tree.

History (good = c1, bad = c8; git bisect's first midpoint is c4, the commit that does not build):
  c1 the seed patch                         good (shmem moves allowed)
  c2, c3 docs                               good
  c4 mm/mremap.c does not compile           skip (125)
  c5 fix the build                          good
  c6 mm: reject shmem with DONTUNMAP again  BAD  <- the first bad commit
  c7, c8 docs                               bad

The repository lives at a stable path in kpipe's cache (recreated each session), so kpipe's mirror, worktree
and build folder for it are reused across sessions instead of piling up.
"""
from __future__ import annotations

import difflib
import math
import shutil
import subprocess
import uuid

import pytest

from kpipe_cli import REPO_ROOT, invoke

pytestmark = pytest.mark.e2e
SEED = REPO_ROOT / "patches" / "0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch"
ALLOW = "if (flags & MREMAP_DONTUNMAP && !(vma_is_anonymous(vma) || vma_is_shmem(vma)))"
REJECT = "if (flags & MREMAP_DONTUNMAP && (!vma_is_anonymous(vma) || vma->vm_flags & VM_SHARED))"


def sh(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def commit_edit(repo, path, old, new, msg):
    f = repo / path
    text = f.read_text()
    assert old in text, (path, old)
    f.write_text(text.replace(old, new, 1))
    sh(repo, "commit", "-q", "-am", msg)
    return sh(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def history(tree510):
    from kpipe.cache import cache_dir
    repo = cache_dir("test-data") / "bisect-linux"
    shutil.rmtree(repo, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(tree510.repo), str(repo)], check=True)
    sh(repo, "checkout", "-q", "-b", "work", tree510.base)
    c = {}
    sh(repo, "am", "-q", str(SEED))
    c[1] = sh(repo, "rev-parse", "HEAD")
    c[2] = commit_edit(repo, "README", "Linux kernel", "Linux kernel (c2)", "docs: c2")
    c[3] = commit_edit(repo, "README", "Linux kernel", "Linux kernel (c3)", "docs: c3")
    c[4] = commit_edit(repo, "mm/mremap.c", "#include <linux/mm.h>", "#include <linux/mm.h>\nint kpipe_broken = ;",
                       "mm: c4 does not build")
    c[5] = commit_edit(repo, "mm/mremap.c", "int kpipe_broken = ;\n", "", "mm: c5 fix the build")
    mremap = (repo / "mm/mremap.c").read_text()
    assert ALLOW in mremap
    c[6] = commit_edit(repo, "mm/mremap.c", ALLOW, REJECT, "mm: reject shmem with MREMAP_DONTUNMAP again")
    for i in (7, 8):
        c[i] = commit_edit(repo, "README", "Linux kernel", f"Linux kernel (c{i})", f"docs: c{i}")
    return repo, c


def test_bisect_names_the_breaking_commit_and_skips_the_unbuildable(history, tmp_path):
    repo, c = history
    before = sh(repo, "status", "--porcelain"), sh(repo, "rev-parse", "HEAD"), sh(repo, "for-each-ref")
    out = tmp_path / "bisect"
    r = invoke("bisect", "--tree", str(repo), "--good", c[1], "--bad", c[8], "--arch", "x86_64",
               "--expect", "anon+shmem", "--selftests", "none", out=out, timeout=3600)
    assert r.code == 0, r
    b = r.result["extra"]["bisect"]
    assert b["first_bad"]["commit"] == c[6], b
    assert b["first_bad"]["subject"] == "mm: reject shmem with MREMAP_DONTUNMAP again"
    marks = {s["commit"]: s["mark"] for s in b["steps"]}
    assert marks.get(c[6]) == "bad"
    assert marks[c[4]] == "skip", b["steps"]                 # the unbuildable commit was tried and skipped
    assert next(s for s in b["steps"] if s["commit"] == c[4])["exit_code"] == 4
    skips = sum(s["mark"] == "skip" for s in b["steps"])
    assert len(b["steps"]) <= math.ceil(math.log2(b["candidates"] + 1)) + skips, b["steps"]
    assert (out / "bisect.log").read_text().count("# first bad commit") == 1
    assert "First bad" in (out / "summary.md").read_text()
    # the user's tree is untouched
    assert (sh(repo, "status", "--porcelain"), sh(repo, "rev-parse", "HEAD"), sh(repo, "for-each-ref")) == before


def _diff(path: str, old: str, new: str) -> str:
    body = "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                       f"a/{path}", f"b/{path}"))
    return f"diff --git a/{path} b/{path}\n{body}"


def test_series_mode_names_the_first_bad_patch(tree510, patched_kernels, tmp_path):
    """seed, docs, a WARN_ON_ONCE on every DONTUNMAP move (a kernel-log finding: bad), docs."""
    from kpipe.tree import git
    mremap = git(tree510.repo, "show", f"{tree510.base}:mm/mremap.c", bare=True).stdout
    readme = git(tree510.repo, "show", f"{tree510.base}:README", bare=True).stdout
    seeded = mremap.replace("if (flags & MREMAP_DONTUNMAP && (!vma_is_anonymous(vma) ||\n\t\t\tvma->vm_flags & VM_SHARED))",
                            "if (flags & MREMAP_DONTUNMAP && !(vma_is_anonymous(vma) || vma_is_shmem(vma)))")
    assert seeded != mremap
    warned = seeded.replace(ALLOW + "\n\t\treturn ERR_PTR(-EINVAL);\n",
                            ALLOW + "\n\t\treturn ERR_PTR(-EINVAL);\n\tWARN_ON_ONCE(flags & MREMAP_DONTUNMAP);\n")
    assert warned != seeded
    nonce = uuid.uuid4().hex[:8]
    readme2 = readme.replace("Linux kernel", f"Linux kernel ({nonce})", 1)
    readme3 = readme2 + f"\nkpipe series-mode test {nonce}\n"
    patches = [SEED]
    for i, (path, old, new) in enumerate([("README", readme, readme2), ("mm/mremap.c", seeded, warned),
                                          ("README", readme2, readme3)], 2):
        f = tmp_path / f"000{i}.patch"
        f.write_text(_diff(path, old, new))
        patches.append(f)
    series = tmp_path / "series"
    series.write_text("".join(f"{p}\n" for p in patches))
    out = tmp_path / "bisect"
    r = invoke("bisect", "--series-mode", "--series", str(series), "--arch", "x86_64", "--selftests", "none",
               out=out, timeout=3600)
    assert r.code == 0, r
    b = r.result["extra"]["bisect"]
    assert b["first_bad"]["index"] == 3 and b["first_bad"]["commit"] == "0003.patch", b
    marks = {s["commit"]: s["mark"] for s in b["steps"]}
    assert marks["4 patch(es)"] == "bad" and marks["0 patch(es)"] == "good"
    bad_step = next(s for s in b["steps"] if s["commit"] == "3 patch(es)")
    assert "warning" in bad_step["why"].lower(), bad_step
    assert len(b["steps"]) <= 2 + math.ceil(math.log2(4))
