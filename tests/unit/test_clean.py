"""`kpipe clean` on a private cache of fake entries (never the real ~/.cache/kpipe): usage per kind, removal by
age / count / size, --dry-run, and entries a running kpipe holds (a lock this test keeps) are never removed."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from kernel_fixture import file_snapshot, private_cache  # noqa: F401  (autouse: KPIPE_CACHE is a temp folder)
from forkserver import run_module
from kpipe_cli import REPO_ROOT

DAY = 86400


def make(path: Path, size: int = 4096, age_days: float = 0, is_dir: bool = True) -> Path:
    if is_dir:
        path.mkdir(parents=True, exist_ok=True)
        (path / "data").write_bytes(b"x" * size)
        targets = [path / "data", path]
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        targets = [path]
    t = time.time() - age_days * DAY
    for p in targets:
        os.utime(p, (t, t))
    return path


@pytest.fixture
def cache(private_cache) -> Path:
    c = private_cache
    assert "pytest" in str(c) and Path.home() / ".cache" not in c.parents, c     # never the real cache
    locks = c / "locks"
    make(c / "trees/old.git", age_days=30)
    make(c / "work/old", age_days=30)
    make(c / "work/old.state.json", 10, age_days=30, is_dir=False)
    make(c / "trees/busy.git", age_days=30)
    make(c / "work/busy", age_days=30)
    for name in ("tree-old", "fetch-old", "tree-busy", "fetch-busy", "image-x86_64"):
        make(locks / f"{name}.lock", 0, is_dir=False)
    make(c / "builds/old-x86_64-aaaa", 1 << 20, age_days=30)
    make(c / "builds/old-x86_64-aaaa.lock", 0, is_dir=False)
    make(c / "builds/busy-x86_64-bbbb", 1 << 20, age_days=20)
    make(c / "builds/busy-x86_64-bbbb.lock", 0, is_dir=False)
    k = make(c / "kernels/x86_64/k-old", 1 << 19, age_days=30)
    (k / "manifest.json").write_text(json.dumps({"meta": {"build_dir": str(c / "builds/old-x86_64-aaaa"),
                                                          "src": str(c / "work/old")}}))
    for p in (k / "manifest.json", k):
        os.utime(p, (time.time() - 30 * DAY,) * 2)
    make(c / "kernels/x86_64/k-new", 1 << 19)
    make(c / "images/x86_64-old", 1 << 18, age_days=30)
    make(c / "images/x86_64-new", 1 << 18)
    make(c / "ccache/0", 1000)
    make(c / "verifier/abc", 1000, age_days=90)            # "other": never removed by clean
    return c


def clean(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KPIPE_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return run_module("kpipe", ["clean", *args], env=env, timeout=120, cwd=cache.parent)     # `python -m kpipe`


class Held:
    """Hold a lock file like a running kpipe does (flock LOCK_EX)."""
    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDWR)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self):
        os.close(self.fd)


def test_usage_per_kind_and_nothing_removed_without_a_criterion(cache):
    before = file_snapshot(cache)
    r = clean(cache)
    assert r.returncode == 0, r.stderr
    rows = {ln.split()[0]: ln.split()[1:] for ln in r.stdout.splitlines()[2:] if ln.startswith("  ")}
    assert rows["trees"][0] == "2" and rows["work"][0] == "2" and rows["builds"][0] == "2"
    assert rows["kernels"][0] == "2" and rows["images"][0] == "2" and "ccache" in rows
    assert "verifier" in r.stdout and "not removed by clean" in r.stdout
    assert "nothing removed" in r.stdout
    assert file_snapshot(cache) == before


def test_older_than_removes_old_entries_but_never_what_a_running_kpipe_holds(cache):
    busy = [Held(cache / "locks/tree-busy.lock"), Held(cache / "builds/busy-x86_64-bbbb.lock")]
    try:
        before = file_snapshot(cache)
        dry = clean(cache, "--older-than", "14d", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert file_snapshot(cache) == before                  # a dry run removes nothing
        assert "would remove trees/old.git" in dry.stdout.replace("  ", " ").replace("  ", " ")
        r = clean(cache, "--older-than", "14d")
        assert r.returncode == 0, r.stderr
    finally:
        for h in busy:
            h.release()
    out = r.stdout
    for gone in ("trees/old.git", "work/old", "work/old.state.json", "builds/old-x86_64-aaaa",
                 "kernels/x86_64/k-old"):
        assert not (cache / gone).exists(), (gone, out.splitlines()[8:])
    # a lock file is never unlinked (clean held it while deleting: unlinked, a run that had it open would lock
    # a dead inode while the next run locks a new file of that name)
    assert (cache / "builds/old-x86_64-aaaa.lock").is_file()
    for kept in ("trees/busy.git", "work/busy", "builds/busy-x86_64-bbbb", "kernels/x86_64/k-new",
                 "images/x86_64-new", "verifier/abc", "ccache/0"):
        assert (cache / kept).exists(), (kept, out)
    # images carry no per-run lock: while any run is active (tree-busy held) old images are kept too
    assert (cache / "images/x86_64-old").exists() and "kept         images/x86_64-old" in out, out
    assert "kept         trees/busy.git" in out and "in use by a running kpipe" in out
    assert "kept         builds/busy-x86_64-bbbb" in out
    # once nothing is running, the next clean takes them
    r = clean(cache, "--older-than", "14d")
    assert r.returncode == 0 and not (cache / "images/x86_64-old").exists() and not (cache / "trees/busy.git").exists()


def test_keep_last_and_max_size(cache):
    r = clean(cache, "--keep-last", "1")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (cache / "kernels/x86_64").iterdir()) == ["k-new"]
    assert sorted(p.name for p in (cache / "images").iterdir()) == ["x86_64-new"]
    assert len([p for p in (cache / "builds").iterdir() if p.is_dir()]) == 1
    # --max-size: least recently used first until under the limit
    big = [make(cache / f"builds/t{i}-x86_64-cccc", 1 << 20, age_days=10 - i) for i in range(3)]
    r = clean(cache, "--max-size", "2.5M", "--dry-run")
    assert r.returncode == 0 and all(p.exists() for p in big), r.stdout
    r = clean(cache, "--max-size", "2.5M")
    assert r.returncode == 0, r.stderr
    total = sum(f.stat().st_blocks * 512 for k in ("trees", "work", "builds", "kernels", "images")
                for f in (cache / k).rglob("*"))
    assert total <= int(2.5 * (1 << 20)) + 64 * 1024, (total, r.stdout)
    assert big[2].exists() and not big[0].exists(), r.stdout           # the most recently used stays


@pytest.mark.parametrize("args,what", [(["--older-than", "14x"], "is not an age"),
                                       (["--max-size", "2Q"], "is not a size")])
def test_bad_arguments_are_usage_errors(cache, args, what):
    before = file_snapshot(cache)
    r = clean(cache, *args)
    assert r.returncode == 2 and what in r.stderr, r.stderr
    assert file_snapshot(cache) == before
