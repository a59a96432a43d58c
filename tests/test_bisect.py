"""End-to-end bisection on a synthetic history made on top of the Debian 5.10 tree.

History (good = c1, bad = c8):
  c1 the seed patch                         good (shmem moves allowed)
  c2 docs                                   good
  c3 mm/mremap.c does not compile           skip (125)
  c4 fix the build                          good
  c5 mm: reject shmem with DONTUNMAP again  BAD  <- the first bad commit
  c6..c8 docs                               bad
"""
from __future__ import annotations

import math
import subprocess

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
def history(tree510, tmp_path_factory):
    repo = tmp_path_factory.mktemp("bisect") / "linux"
    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(tree510.repo), str(repo)], check=True)
    sh(repo, "checkout", "-q", "-b", "work", tree510.base)
    c = {}
    sh(repo, "am", "-q", str(SEED))
    c[1] = sh(repo, "rev-parse", "HEAD")
    c[2] = commit_edit(repo, "README", "Linux kernel", "Linux kernel (c2)", "docs: c2")
    c[3] = commit_edit(repo, "mm/mremap.c", "#include <linux/mm.h>", "#include <linux/mm.h>\nint kpipe_broken = ;",
                       "mm: c3 does not build")
    c[4] = commit_edit(repo, "mm/mremap.c", "int kpipe_broken = ;\n", "", "mm: c4 fix the build")
    mremap = (repo / "mm/mremap.c").read_text()
    assert ALLOW in mremap
    c[5] = commit_edit(repo, "mm/mremap.c", ALLOW, REJECT, "mm: reject shmem with MREMAP_DONTUNMAP again")
    for i in (6, 7, 8):
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
    assert b["first_bad"]["commit"] == c[5], b
    assert b["first_bad"]["subject"] == "mm: reject shmem with MREMAP_DONTUNMAP again"
    marks = {s["commit"]: s["mark"] for s in b["steps"]}
    assert marks.get(c[5]) == "bad"
    if c[3] in marks:
        assert marks[c[3]] == "skip" and next(s for s in b["steps"] if s["commit"] == c[3])["exit_code"] == 4
    skips = sum(s["mark"] == "skip" for s in b["steps"])
    assert len(b["steps"]) <= math.ceil(math.log2(b["candidates"] + 1)) + skips, b["steps"]
    assert (out / "bisect.log").read_text().count("# first bad commit") == 1
    assert "First bad" in (out / "summary.md").read_text()
    # the user's tree is untouched
    assert (sh(repo, "status", "--porcelain"), sh(repo, "rev-parse", "HEAD"), sh(repo, "for-each-ref")) == before
