"""End-to-end bisection on a synthetic history made on top of the Debian 5.10 tree.

History (good = c1, bad = c8; git bisect's first midpoint is c4, the commit that does not build):
  c1 the seed patch                         good (shmem moves allowed)
  c2, c3 docs                               good
  c4 mm/mremap.c does not compile           skip (125)
  c5 fix the build                          good
  c6 mm: reject shmem with DONTUNMAP again  BAD  <- the first bad commit
  c7, c8 docs                               bad
and a side branch from c5 where only skipped commits are left between good and bad:
  d1 reject shmem again, and does not build skip
  d2 fix the build                          bad

The repository lives at a stable path in kpipe's cache (recreated each session), so kpipe's mirror, worktree
and build folder for it are reused across sessions instead of piling up.
"""
from __future__ import annotations

import difflib
import math
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from kpipe_cli import REPO_ROOT, invoke

pytestmark = pytest.mark.e2e

# Bisection logic (endpoints, steps, skips, what git names) does not depend on the kernel's debug options, and
# each step is a build + boot + verifier: the fast profile keeps these tests minutes shorter. The debug profile
# (bisect's default) is proven by the workflow, debug-kernel and verifier tests.
# the fast profile, and only the DONTUNMAP moves the histories change (their flip decides good and bad)
FAST = ("--profile", "fast", "--case", "move-*")
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
    sh(repo, "checkout", "-q", "-b", "side", c[5])
    (repo / "mm/mremap.c").write_text(mremap.replace(ALLOW, REJECT).replace(
        "#include <linux/mm.h>", "#include <linux/mm.h>\nint kpipe_broken = ;", 1))
    sh(repo, "commit", "-q", "-am", "mm: d1 reject shmem again and does not build")
    c["d1"] = sh(repo, "rev-parse", "HEAD")
    c["d2"] = commit_edit(repo, "mm/mremap.c", "int kpipe_broken = ;\n", "", "mm: d2 fix the build")
    sh(repo, "checkout", "-q", "work")
    return repo, c


def test_bisect_names_the_breaking_commit_and_skips_the_unbuildable(history, tmp_path):
    repo, c = history
    before = sh(repo, "status", "--porcelain"), sh(repo, "rev-parse", "HEAD"), sh(repo, "for-each-ref")
    out = tmp_path / "bisect"
    r = invoke("bisect", "--tree", str(repo), "--good", c[1], "--bad", c[8], "--arch", "x86_64",
               "--expect", "anon+shmem", "--selftests", "none", *FAST, out=out, timeout=3600)
    assert r.code == 0, r
    b = r.result["extra"]["bisect"]
    assert b["first_bad"]["commit"] == c[6], b
    assert b["first_bad"]["subject"] == "mm: reject shmem with MREMAP_DONTUNMAP again"
    marks = {s["commit"]: s["mark"] for s in b["steps"]}
    # both endpoints were verified first, under the chosen policy
    assert [(s.get("endpoint"), s["commit"], s["mark"]) for s in b["steps"][:2]] == \
        [("good", c[1], "good"), ("bad", c[8], "bad")], b["steps"][:2]
    assert marks.get(c[6]) == "bad"
    assert marks[c[4]] == "skip", b["steps"]                 # the unbuildable commit was tried and skipped
    skipped = next(s for s in b["steps"] if s["commit"] == c[4])
    assert skipped["exit_code"] == 4 and "build" in skipped["why"].lower(), skipped   # and says why
    skips = sum(s["mark"] == "skip" for s in b["steps"])
    assert len(b["steps"]) <= 2 + math.ceil(math.log2(b["candidates"] + 1)) + skips, b["steps"]
    assert (out / "bisect.log").read_text().count("# first bad commit") == 1
    assert "First bad" in (out / "summary.md").read_text()
    # the user's tree is untouched
    assert (sh(repo, "status", "--porcelain"), sh(repo, "rev-parse", "HEAD"), sh(repo, "for-each-ref")) == before


def test_bisect_checks_the_endpoints_under_the_policy_first(history, tmp_path):
    """The wrong policy for this history (anon-only: c1 already carries the seed patch) makes the good endpoint
    fail and the bad one pass: exit 2 naming both, and the --expect each kernel behaves as; no first bad commit."""
    repo, c = history
    out = tmp_path / "bisect"
    r = invoke("bisect", "--tree", str(repo), "--good", c[1], "--bad", c[8], "--arch", "x86_64",
               "--expect", "anon-only", "--selftests", "none", *FAST, out=out, timeout=3600)
    assert r.code == 2, r
    b = r.result["extra"]["bisect"]
    assert b["first_bad"] is None and len(b["steps"]) == 2, b
    assert [s["mark"] for s in b["steps"]] == ["bad", "good"], b["steps"]
    assert f"--good {c[1]} should be good but gave exit 1" in b["why"], b["why"]
    assert f"--bad {c[8]} should be bad but gave exit 0" in b["why"], b["why"]
    assert "the good endpoint's kernel behaves as --expect anon+shmem" in b["fix"], b["fix"]
    assert "the bad endpoint's kernel behaves as --expect anon-only" in b["fix"], b["fix"]
    assert "endpoint check failed" in r.stderr and "--expect anon+shmem" in r.stderr
    assert "No first bad commit" in (out / "summary.md").read_text()


def test_only_skipped_commits_left_is_exit_2_with_the_candidates(history, tmp_path):
    repo, c = history
    r = invoke("bisect", "--tree", str(repo), "--good", c[5], "--bad", c["d2"], "--arch", "x86_64",
               "--expect", "anon+shmem", "--selftests", "none", *FAST, out=tmp_path / "bisect",
               timeout=3600)
    assert r.code == 2, r
    b = r.result["extra"]["bisect"]
    assert b["first_bad"] is None
    assert {x["commit"] for x in b["skipped_candidates"]} == {c["d1"], c["d2"]}, b
    assert "only skipped commits left" in b["why"] and c["d1"][:12] in b["why"], b["why"]
    d1 = next(s for s in b["steps"] if s["commit"] == c["d1"])
    assert d1["mark"] == "skip" and d1["exit_code"] == 4 and d1["why"], d1


def test_git_bisect_run_kpipe_in_the_users_tree(history, tmp_path):
    """What a kernel developer types: `git bisect run kpipe verify --bisect-exit-codes ...` inside their tree.
    git runs kpipe at each commit with the tree as the current directory: kpipe takes --tree from there, writes
    its run folders under $KPIPE_RUNS (nothing in the tree), skips the unbuildable commit (125), and git names c6."""
    repo, c = history
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "kpipe"          # the console script's body: kpipe.cli.program:main
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m kpipe \"$@\"\n")
    wrapper.chmod(0o755)
    runs = tmp_path / "runs"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "KPIPE_RUNS": str(runs),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    sh(repo, "bisect", "start", c[8], c[1])
    try:
        # --no-patches: the tree's own commits are under test (kpipe's default series would be applied on top)
        r = subprocess.run(["git", "bisect", "run", "kpipe", "verify", "--bisect-exit-codes", "--no-patches",
                            "--arch", "x86_64", "--expect", "anon+shmem", "--selftests", "none", *FAST],
                           cwd=repo, env=env, capture_output=True, text=True, timeout=3600)
        log = sh(repo, "bisect", "log")
    finally:
        sh(repo, "bisect", "reset", "work")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"{c[6]} is the first bad commit" in r.stdout, r.stdout[-3000:]
    assert f"# skip: [{c[4]}]" in log, log
    assert sh(repo, "status", "--porcelain", "--untracked-files=all") == ""
    steps = [p for p in runs.iterdir() if p.name != "latest"]
    assert steps and all(p.name.endswith("-verify") for p in steps), steps
    assert f"--tree {repo}" in r.stderr                          # each step's reproducer names the tree


def _diff(path: str, old: str, new: str) -> str:
    body = "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                       f"a/{path}", f"b/{path}"))
    return f"diff --git a/{path} b/{path}\n{body}"


def test_series_mode_names_the_first_bad_patch(tree510, patched_kernels, tmp_path):
    """seed, docs, a WARN_ON_ONCE on every DONTUNMAP move (a kernel-log finding: bad), docs."""
    from kpipe.source.tree import git
    mremap = git(tree510.repo, "show", f"{tree510.base}:mm/mremap.c", bare=True).stdout
    readme = git(tree510.repo, "show", f"{tree510.base}:README", bare=True).stdout
    seeded = mremap.replace("if (flags & MREMAP_DONTUNMAP && (!vma_is_anonymous(vma) ||\n\t\t\tvma->vm_flags & VM_SHARED))",  # noqa: E501
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
    r = invoke("bisect", "--series-mode", "--series", str(series), "--arch", "x86_64", "--selftests", "none", *FAST,
               out=out, timeout=3600)
    assert r.code == 0, r
    b = r.result["extra"]["bisect"]
    assert b["first_bad"]["index"] == 3 and b["first_bad"]["commit"] == "0003.patch", b
    marks = {s["commit"]: s["mark"] for s in b["steps"]}
    assert marks["4 patch(es)"] == "bad" and marks["0 patch(es)"] == "good"
    bad_step = next(s for s in b["steps"] if s["commit"] == "3 patch(es)")
    assert "warning" in bad_step["why"].lower(), bad_step
    assert len(b["steps"]) <= 2 + math.ceil(math.log2(4))
