"""Fault suite, early stages: every case that fails before any kernel is built or booted, run through
the real CLI against small synthetic trees and a private cache. Each case must end with a message naming the
problem and a fix, the contract's exit code and exit line, no helper process and no temp entry left, no lock
held, the user's tree byte-identical, and the cache still good for the next run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kernel_fixture import (processes_with_env, private_cache, REPO_ROOT, SEED_PATCH, diff_snapshots,  # noqa: F401 (private_cache: autouse)
                            held_locks, invoke, kpipe_env, leftovers, make_kernel_repo, make_repo, tree_snapshot)

EXIT_LINE = {2: "exit 2 (infrastructure or usage error)", 3: "exit 3 (patch does not apply)", 0: "exit 0 (pass)"}


@pytest.fixture()
def dirty_repo(tmp_path) -> Path:
    """A 5.10-like user tree with uncommitted work: a modified file, a staged change, untracked files."""
    repo = make_kernel_repo(tmp_path / "linux")
    (repo / "mm/mmap.c").write_text("/* local edit */\n")
    (repo / "init/main.c").write_text("/* staged */\n")
    subprocess.run(["git", "-C", str(repo), "add", "init/main.c"], check=True)
    (repo / "untracked.txt").write_text("mine\n")
    st = (repo / "README").stat()      # stale stat info: an index-refreshing `git status` would rewrite .git/index
    os.utime(repo / "README", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    return repo


def processes_of(cache: Path) -> list[str]:
    """kpipe's children: processes whose environment names our private cache."""
    return processes_with_env("KPIPE_CACHE", str(cache))


def check_failure(cp: subprocess.CompletedProcess, code: int, cache: Path, *names: str) -> str:
    """The common end of every fault case; returns the error block of stderr."""
    err = cp.stderr
    assert cp.returncode == code, f"exit {cp.returncode}, wanted {code}\n{err}"
    for n in names:
        assert n in err, f"{n!r} not named in:\n{err}"
    assert "\n  fix: " in err, f"no fix line in:\n{err}"
    assert f"  {EXIT_LINE[code]}" in err                        # the error block's exit line
    assert EXIT_LINE[code] in err.splitlines()[-1]               # and the task's last line
    assert "Traceback" not in err
    assert not leftovers(cache), leftovers(cache)
    assert not held_locks(cache), held_locks(cache)
    assert not processes_of(cache), processes_of(cache)
    return err


def check_cache_still_good(repo: Path, cache: Path, out: Path) -> None:
    ok = invoke("apply", "--tree", str(repo), cache=cache, out=out)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("applied")


# ------------------------------------------------------------------------------------------------ trees

def test_missing_tree_path(tmp_path, private_cache):
    cp = invoke("apply", "--tree", str(tmp_path / "no-such-tree"), cache=private_cache, out=tmp_path / "r")
    check_failure(cp, 2, private_cache, f"tree path {tmp_path / 'no-such-tree'} does not exist")


def test_path_that_is_not_a_git_tree(tmp_path, private_cache):
    plain = tmp_path / "plain"
    shutil.copytree(make_kernel_repo(tmp_path / "k"), plain, ignore=shutil.ignore_patterns(".git"))
    cp = invoke("apply", "--tree", str(plain), cache=private_cache, out=tmp_path / "r")
    check_failure(cp, 2, private_cache, f"{plain} is not the top of a git tree")


def test_subfolder_of_a_git_tree(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "k")
    cp = invoke("apply", "--tree", str(repo / "mm"), cache=private_cache, out=tmp_path / "r")
    check_failure(cp, 2, private_cache, f"{repo / 'mm'} is not the top of a git tree")
    check_cache_still_good(repo, private_cache, tmp_path / "r")


def test_git_repo_that_is_not_a_kernel(tmp_path, private_cache):
    other = make_repo(tmp_path / "webapp", {"package.json": "{}\n", "src/index.js": "\n"})
    cp = invoke("apply", "--tree", str(other), cache=private_cache, out=tmp_path / "r")
    check_failure(cp, 2, private_cache, f"{other} at HEAD is not a kernel tree (no Makefile)")


def test_bad_base(tmp_path, private_cache, dirty_repo):
    before = tree_snapshot(dirty_repo)
    cp = invoke("apply", "--tree", str(dirty_repo), "--base", "v9.9-nope", cache=private_cache, out=tmp_path / "r")
    check_failure(cp, 2, private_cache, f"--base v9.9-nope is not a commit in {dirty_repo}")
    assert tree_snapshot(dirty_repo) == before


def test_unknown_debian_tree(tmp_path, private_cache):
    cp = invoke("apply", "--tree", "debian:9.9", cache=private_cache, out=tmp_path / "r")
    err = check_failure(cp, 2, private_cache, "unknown Debian tree debian:9.9")
    assert "debian:5.10" in err and "debian:6.12" in err
    assert not (private_cache / "apt").exists() and not any((private_cache / "trees").glob("*"))


# ------------------------------------------------------------------------------------------------ arch

@pytest.mark.parametrize("task", ["build", "verify", "premerge", "image", "boot"])
def test_unknown_arch_fails_before_anything_else(tmp_path, private_cache, task):
    """`--arch sparc` is refused before any tree is fetched, checkout made or run folder written."""
    repo = make_kernel_repo(tmp_path / "k")
    args = [task, "--arch", "sparc"] + (["--tree", str(repo)] if task in ("build", "verify", "premerge") else [])
    start = time.monotonic()
    cp = invoke(*args, cache=private_cache, out=tmp_path / "run")
    err = check_failure(cp, 2, private_cache, "unknown arch 'sparc'")
    assert "x86_64" in err and "arm64" in err                   # the fix lists the known arches
    assert time.monotonic() - start < 30
    assert not (tmp_path / "run").exists()
    for stage in ("trees", "work", "builds", "kernels", "images", "apt"):
        assert not (private_cache / stage).exists() or not any((private_cache / stage).iterdir()), stage


# ------------------------------------------------------------------------------------------------ patches

def test_empty_patch_file(tmp_path, private_cache, dirty_repo):
    empty = tmp_path / "0001-empty.patch"
    empty.write_text("")
    before = tree_snapshot(dirty_repo)
    cp = invoke("apply", "--tree", str(dirty_repo), "--patch", str(empty), cache=private_cache, out=tmp_path / "r")
    check_failure(cp, 2, private_cache, f"patch file {empty} is empty")
    assert tree_snapshot(dirty_repo) == before
    check_cache_still_good(dirty_repo, private_cache, tmp_path / "r")


def test_garbage_patch_file(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "k")
    junk = tmp_path / "0001-junk.patch"
    junk.write_bytes(os.urandom(2048))
    cp = invoke("apply", "--tree", str(repo), "--patch", str(junk), cache=private_cache, out=tmp_path / "r")
    check_failure(cp, 2, private_cache, f"{junk} is not a patch")


def test_missing_patch_file(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "k")
    cp = invoke("apply", "--tree", str(repo), "--patch", str(tmp_path / "gone.patch"), cache=private_cache,
                out=tmp_path / "r")
    check_failure(cp, 2, private_cache, f"patch file {tmp_path / 'gone.patch'} does not exist")


def test_patch_that_does_not_apply_leaves_everything_clean(tmp_path, private_cache, dirty_repo):
    before = tree_snapshot(dirty_repo)
    bad = tmp_path / "0001-conflict.patch"
    bad.write_text(SEED_PATCH.read_text().replace("			vma->vm_flags & VM_SHARED))",
                                                  "			vma->vm_flags & VM_SHARED_ELSEWHERE))"))
    cp = invoke("apply", "--tree", str(dirty_repo), "--patch", str(bad), cache=private_cache, out=tmp_path / "r")
    err = check_failure(cp, 3, private_cache, "0001-conflict.patch does not apply", "mm/mremap.c",
                        "hunk at line 653", "VM_SHARED_ELSEWHERE")
    assert "kpipe: patch does not apply:" in err
    assert diff_snapshots(before[0], tree_snapshot(dirty_repo)[0]) == []
    assert tree_snapshot(dirty_repo) == before
    check_cache_still_good(dirty_repo, private_cache, tmp_path / "r")


def test_already_applied_patch_is_exit_0(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "k", "patched")
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.startswith("already-applied") and EXIT_LINE[0] in cp.stderr.splitlines()[-1]
    assert not leftovers(private_cache) and not held_locks(private_cache) and not processes_of(private_cache)


def test_upstream_like_tree_does_not_take_the_seed(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "k", "6.12")
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    check_failure(cp, 3, private_cache, "mm/mremap.c")


# ------------------------------------------------------------------------------------------------ build inputs

def test_kconfig_fragment_with_a_syntax_error(tmp_path, private_cache, dirty_repo):
    frag = tmp_path / "broken.config"
    frag.write_text("CONFIG_SHMEM=y\nthis line is not kconfig\n")
    before = tree_snapshot(dirty_repo)
    cp = invoke("build", "--arch", "x86_64", "--tree", str(dirty_repo), "--kconfig", str(frag),
                cache=private_cache, out=tmp_path / "r")
    check_failure(cp, 2, private_cache, f"{frag}:2")
    assert not (private_cache / "builds").exists() or not any((private_cache / "builds").iterdir())
    assert tree_snapshot(dirty_repo) == before
    check_cache_still_good(dirty_repo, private_cache, tmp_path / "r")


def test_missing_kconfig_fragment(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "k")
    cp = invoke("build", "--arch", "x86_64", "--tree", str(repo), "--kconfig", str(tmp_path / "nope.config"),
                cache=private_cache, out=tmp_path / "r")
    check_failure(cp, 2, private_cache, f"kconfig fragment {tmp_path / 'nope.config'} does not exist")


def shadow_path_without(tmp_path: Path, prefix: str) -> str:
    """A PATH with every program of the real PATH except those whose name starts with ``prefix``."""
    shadow = tmp_path / "shadow-bin"
    shadow.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            src = Path(d) / name
            if name.startswith(prefix) or (shadow / name).exists() or not os.access(src, os.X_OK):
                continue
            (shadow / name).symlink_to(src)
    return str(shadow)


def test_missing_cross_compiler(tmp_path, private_cache, dirty_repo):
    env = kpipe_env(private_cache, PATH=shadow_path_without(tmp_path, "aarch64-linux-gnu-"))
    probe = subprocess.run(["sh", "-c", "command -v aarch64-linux-gnu-gcc"], env=env, capture_output=True)
    assert probe.returncode != 0
    before = tree_snapshot(dirty_repo)
    cp = invoke("build", "--arch", "arm64", "--tree", str(dirty_repo), cache=private_cache, out=tmp_path / "r",
                env=env)
    err = check_failure(cp, 2, private_cache, "aarch64-linux-gnu-gcc is not installed")
    assert "invoke setup" in err
    assert not (private_cache / "builds").exists() or not any((private_cache / "builds").iterdir())
    assert tree_snapshot(dirty_repo) == before
    check_cache_still_good(dirty_repo, private_cache, tmp_path / "r")


# ------------------------------------------------------------------------------- concurrency, interrupts, damage

def test_two_runs_at_once_on_the_same_tree_and_cache(tmp_path, private_cache, dirty_repo):
    before = tree_snapshot(dirty_repo)
    args = [["apply", "--tree", str(dirty_repo)] + (["--no-patches"] if i else []) for i in range(2)]
    # two processes started together (forked with kpipe imported: they start within ms of each other, so they
    # overlap more surely than two new interpreters each importing for ~0.5 s)
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda i: invoke(*args[i], cache=private_cache, out=tmp_path / f"r{i}"), range(2)))
    outs = [(r.stdout, r.stderr) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs
    assert outs[0][0].startswith("applied")
    assert not leftovers(private_cache) and not held_locks(private_cache) and not processes_of(private_cache)
    assert tree_snapshot(dirty_repo) == before
    check_cache_still_good(dirty_repo, private_cache, tmp_path / "r")


def sigint_default() -> None:
    """preexec_fn for a child that must die of Ctrl-C: a runner started from a background job inherits
    SIGINT ignored, and Python keeps an inherited SIG_IGN (then SIGINT would do nothing)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


HOLDER = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644); "
          "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)")


def test_interrupt_while_waiting_for_the_checkout_then_next_run_succeeds(tmp_path, private_cache, dirty_repo):
    """The waiting run names the process holding the lock (pid and command line) within 2 s, then Ctrl-C
    ends it cleanly (exit 2)."""
    from kpipe.source.tree import open_user_tree
    lock = open_user_tree(str(dirty_repo)).lock_path
    lock.parent.mkdir(parents=True, exist_ok=True)
    # "another run" holds the scratch checkout: a separate process, so it has its own pid and command line
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), "kpipe-lock-holder-marker"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = subprocess.Popen([sys.executable, "-m", "invoke", "apply", "--tree", str(dirty_repo),
                              "--out", str(tmp_path / "r")], cwd=REPO_ROOT, env=kpipe_env(private_cache),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("waiting for another kpipe run" in ln for ln in lines):
            assert p.poll() is None, lines
            time.sleep(0.1)
        assert p.poll() is None, lines
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)
        reader.join(timeout=10)
        err = "".join(lines)
    finally:
        holder.kill()
        holder.wait()
    assert p.returncode == 2, err
    waiting = next(ln for ln in err.splitlines() if "waiting for another kpipe run" in ln)
    assert f"held by pid {holder.pid} (" in waiting and "kpipe-lock-holder-marker" in waiting, waiting
    assert "interrupted" in err and EXIT_LINE[2] in err.splitlines()[-1]
    assert not leftovers(private_cache) and not held_locks(private_cache) and not processes_of(private_cache)
    check_cache_still_good(dirty_repo, private_cache, tmp_path / "r")


def test_lock_wait_names_the_holder_at_once_and_keeps_showing_it(tmp_path, monkeypatch):
    """In-process: the holder is named within 2 s of the first try, again every LOCK_REMIND seconds, and
    the timeout error names it too."""
    from kpipe import cache, progress

    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), "kpipe-lock-holder-marker"],
                              stdout=subprocess.PIPE, text=True)
    notes: list[tuple[float, str]] = []
    monkeypatch.setattr(progress, "note", lambda msg: notes.append((time.monotonic(), msg)))
    monkeypatch.setattr(cache, "LOCK_REMIND", 0.3)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(cache.InfraError) as ei:
            with cache.file_lock(lock, "test", timeout=1.0):
                pass
    finally:
        holder.kill()
        holder.wait()
    want = f"held by pid {holder.pid} ("
    assert notes and notes[0][0] - t0 < 2.0, notes
    assert len(notes) >= 3 and all(want in m and "kpipe-lock-holder-marker" in m for _, m in notes), notes
    assert want in ei.value.message
    with cache.file_lock(lock, "test", timeout=1):        # the holder is gone: the lock is free
        pass


def test_damaged_scratch_state_file_is_not_trusted(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "k")
    first = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    assert first.returncode == 0, first.stderr
    [state] = (private_cache / "work").glob("*.state.json")
    state.write_text(state.read_text()[:7])             # truncated on disk
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.startswith("applied") and "worktree already held this" not in cp.stderr
    again = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    assert "worktree already held this" in again.stderr


def test_stale_temp_entry_from_a_killed_run_is_swept(tmp_path, private_cache):
    """A run killed with SIGKILL while making the mirror leaves a temp folder: a later run removes it."""
    repo = make_kernel_repo(tmp_path / "k")
    stale = private_cache / "trees" / ".user-deadbeef.git.tmp-abc123"
    stale.mkdir(parents=True)
    (stale / "HEAD").write_text("ref: refs/heads/master\n")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    assert cp.returncode == 0, cp.stderr
    assert not stale.exists()


def test_unexpected_error_is_exit_2_not_a_kernel_verdict(tmp_path, private_cache):
    """Anything kpipe did not foresee (here: --out names an existing file) must not end as exit 1, which
    means "the kernel misbehaved"; it is an infrastructure/usage error with a fix line."""
    repo = make_kernel_repo(tmp_path / "k")
    not_a_dir = tmp_path / "out-is-a-file"
    not_a_dir.write_text("")
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=not_a_dir)
    assert cp.returncode == 2, cp.stderr
    assert str(not_a_dir) in cp.stderr and "\n  fix: " in cp.stderr
    assert EXIT_LINE[2] in cp.stderr.splitlines()[-1]
    assert not leftovers(private_cache) and not held_locks(private_cache) and not processes_of(private_cache)
