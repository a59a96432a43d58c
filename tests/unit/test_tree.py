"""Kernel trees and the scratch checkout: user trees are only read, the persistent scratch worktree is
reused and re-patched so untouched files keep their mtimes, bad --tree/--base are usage errors. Real git, real
CLI, small synthetic trees, a private cache per test."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from kernel_fixture import (private_cache, scratch_of, SEED_PATCH, diff_snapshots, git, held_locks, invoke, leftovers,
                            make_kernel_repo, make_repo, mtimes, tracked_files, tree_snapshot)
from kpipe import cache as cachemod
from kpipe.errors import UsageError
from kpipe.source.patches import apply_series, load_series
from kpipe.workflows.pipeline import locked_checkout
from kpipe.source.tree import DEBIAN_TREES, kernel_version, open_tree, open_user_tree


def worktree_state(wt: Path) -> dict[str, tuple[int, bytes]]:
    return {rel: ((wt / rel).stat().st_mtime_ns, (wt / rel).read_bytes()) for rel in tracked_files(wt)}


def changed(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# ------------------------------------------------------------------------------------------------ opening trees

def test_user_tree_resolves_base_and_mirrors_into_the_cache(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "linux")
    git(repo, "tag", "v5.10-synthetic")
    t = open_user_tree(str(repo))
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    assert (t.base, t.base_label, t.user_path) == (head, "HEAD", repo.resolve())
    assert t.repo.is_relative_to(private_cache) and t.worktree.is_relative_to(private_cache)
    # the mirror borrows the user's objects (alternates) instead of copying them
    alternates = (t.repo / "objects/info/alternates").read_text().split()
    assert alternates == [str((repo / ".git/objects").resolve())]
    assert open_user_tree(str(repo), "v5.10-synthetic").base == head
    assert open_user_tree(str(repo) + "/").ident == t.ident      # same tree, same cache entry
    assert kernel_version(repo) == (5, 10)


def test_base_other_than_head(tmp_path):
    repo = make_kernel_repo(tmp_path / "linux")
    first = git(repo, "rev-parse", "HEAD").stdout.strip()
    (repo / "README").write_text("second commit\n")
    git(repo, "commit", "-qam", "second")
    with locked_checkout(open_user_tree(str(repo), first)) as co:
        a = apply_series(co, load_series())
    assert git(a.checkout.path, "rev-parse", "HEAD~1").stdout.strip() == first
    assert (a.checkout.path / "README").read_text().startswith("Synthetic")


@pytest.mark.parametrize("case", ["missing", "not-git", "subfolder", "not-kernel", "bad-base"])
def test_bad_tree_is_a_usage_error(tmp_path, case):
    repo = make_kernel_repo(tmp_path / "linux")
    base = "HEAD"
    path, expect = {
        "missing": (tmp_path / "nope", "does not exist"),
        "not-git": (tmp_path / "plain", "is not the top of a git tree"),
        "subfolder": (repo / "mm", "is not the top of a git tree"),
        "not-kernel": (tmp_path / "other", "is not a kernel tree"),
        "bad-base": (repo, "--base v9.9 is not a commit"),
    }[case]
    if case == "not-git":
        path.mkdir()
        (path / "Makefile").write_text("VERSION = 5\n")
    if case == "not-kernel":
        make_repo(path, {"README.md": "a python project\n", "setup.py": "\n"})
    if case == "bad-base":
        base = "v9.9"
    with pytest.raises(UsageError) as ei:
        open_user_tree(str(path), base)
    assert expect in ei.value.message and ei.value.fix and ei.value.exit_code == 2


def test_unknown_debian_tree_lists_the_known_ones(private_cache):
    with pytest.raises(UsageError) as ei:
        open_tree("debian:9.9")
    assert "debian:9.9" in ei.value.message
    for name in DEBIAN_TREES:
        assert f"debian:{name}" in ei.value.fix
    assert not (private_cache / "trees").exists() or not any((private_cache / "trees").iterdir())


# ------------------------------------------------------------------------------------------------ scratch checkout

def test_reapply_reuses_worktree_and_keeps_every_mtime(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "linux")
    out = tmp_path / "run"
    first = invoke("apply", "--tree", str(repo), cache=private_cache, out=out)
    assert first.returncode == 0, first.stderr
    wt = scratch_of(first.stdout)
    before = worktree_state(wt)
    again = invoke("apply", "--tree", str(repo), cache=private_cache, out=out)
    assert again.returncode == 0, again.stderr
    assert "worktree already held this" in again.stderr
    assert scratch_of(again.stdout) == wt
    assert changed(before, worktree_state(wt)) == []


def test_switching_patches_rewrites_only_the_patched_file(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "linux")
    out = tmp_path / "run"
    patched = invoke("apply", "--tree", str(repo), cache=private_cache, out=out)
    assert patched.returncode == 0, patched.stderr
    wt = scratch_of(patched.stdout)
    s_patched = worktree_state(wt)
    head_patched = git(wt, "rev-parse", "HEAD").stdout

    base = invoke("apply", "--tree", str(repo), "--no-patches", cache=private_cache, out=out)
    assert base.returncode == 0, base.stderr
    assert scratch_of(base.stdout) == wt
    s_base = worktree_state(wt)
    assert changed(s_patched, s_base) == ["mm/mremap.c"]
    assert git(wt, "rev-parse", "HEAD").stdout == git(repo, "rev-parse", "HEAD").stdout
    assert (wt / "mm/mremap.c").read_bytes() == (repo / "mm/mremap.c").read_bytes()

    back = invoke("apply", "--tree", str(repo), cache=private_cache, out=out)
    assert back.returncode == 0, back.stderr
    s_back = worktree_state(wt)
    assert changed(s_base, s_back) == ["mm/mremap.c"]
    assert s_back["mm/mremap.c"][1] == s_patched["mm/mremap.c"][1]
    assert git(wt, "rev-parse", "HEAD").stdout == head_patched          # same commit id as the first time


def test_edited_scratch_worktree_is_reset_not_reused(tmp_path):
    repo = make_kernel_repo(tmp_path / "linux")
    tree = open_user_tree(str(repo))
    with locked_checkout(tree) as co:
        a = apply_series(co, load_series())
    wt = a.checkout.path
    (wt / "mm/mmap.c").write_text("someone edited the scratch checkout\n")
    (wt / "stray.o").write_text("junk\n")
    keep = mtimes(wt, ["init/main.c", "Makefile"])
    with locked_checkout(tree) as co:
        b = apply_series(co, load_series())
    assert not b.reused and b.head == a.head
    assert (wt / "mm/mmap.c").read_bytes() == (repo / "mm/mmap.c").read_bytes()
    assert not (wt / "stray.o").exists()
    assert mtimes(wt, ["init/main.c", "Makefile"]) == keep


def test_half_done_git_am_in_scratch_is_recovered(tmp_path, private_cache):
    """A run killed in the middle of `git am` leaves rebase-apply behind: the next run must still work."""
    repo = make_kernel_repo(tmp_path / "linux")
    first = invoke("apply", "--tree", str(repo), "--no-patches", cache=private_cache, out=tmp_path / "r")
    wt = scratch_of(first.stdout)
    (wt / "mm/mremap.c").write_text("conflicting local content\n")
    git(wt, "commit", "-qam", "make the seed conflict")
    stuck = git(wt, "am", "--3way", str(SEED_PATCH), check=False)
    assert stuck.returncode != 0
    gitdir = Path(git(wt, "rev-parse", "--absolute-git-dir").stdout.strip())
    assert (gitdir / "rebase-apply").exists()
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.startswith("applied")
    assert not (gitdir / "rebase-apply").exists()


def test_scratch_worktree_removed_by_hand_is_recreated(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "linux")
    first = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    wt = scratch_of(first.stdout)
    subprocess.run(["rm", "-rf", str(wt)], check=True)
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    assert cp.returncode == 0, cp.stderr
    assert "worktree already held this" not in cp.stderr
    assert "vma_is_shmem" in (wt / "mm/mremap.c").read_text()


# ------------------------------------------------------------------------------------------------ user tree safety

def make_dirty_user_tree(root: Path) -> Path:
    """A user's tree with history, branches, tags (packed and loose), a stash-free dirty state: a modified
    tracked file, a staged change, untracked files, and a tracked file whose mtime changed without a content
    change (so any index-refreshing `git status` would rewrite .git/index)."""
    repo = make_kernel_repo(root)
    git(repo, "tag", "-a", "-m", "annotated", "v5.10-user")
    git(repo, "branch", "topic")
    git(repo, "pack-refs", "--all")
    git(repo, "tag", "loose-tag")
    (repo / "mm/mmap.c").write_text("/* work in progress, not staged */\n")
    (repo / "init/main.c").write_text("/* staged change */\n")
    git(repo, "add", "init/main.c")
    (repo / "init/main.c").write_text("/* staged change, then edited again */\n")
    (repo / "notes.txt").write_text("untracked notes\n")
    (repo / "scratch").mkdir()
    (repo / "scratch/a.o").write_bytes(b"\0\1\2")
    st = (repo / "README").stat()
    os.utime(repo / "README", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    return repo


def test_dirty_user_tree_is_never_modified(tmp_path, private_cache):
    repo = make_dirty_user_tree(tmp_path / "linux")
    files0, git0 = tree_snapshot(repo)
    assert git0["status"].strip(), "the tree must be dirty for this test to mean anything"
    out = tmp_path / "run"

    runs = [
        ("apply", "--tree", str(repo)),
        ("apply", "--tree", str(repo)),                                  # reuse path
        ("apply", "--tree", str(repo), "--base", "topic", "--no-patches"),
        ("apply", "--tree", str(repo), "--base", "v5.10-user"),
    ]
    for args in runs:
        cp = invoke(*args, cache=private_cache, out=out)
        assert cp.returncode == 0, cp.stderr
        assert "has uncommitted changes" in cp.stderr        # told, not silently ignored
    conflicting = tmp_path / "conflict.patch"
    conflicting.write_text(SEED_PATCH.read_text().replace("vma->vm_flags & VM_SHARED))",
                                                          "vma->vm_flags & VM_SHARED_NOT_THERE))"))
    cp = invoke("apply", "--tree", str(repo), "--patch", str(conflicting), cache=private_cache, out=out)
    assert cp.returncode == 3, cp.stderr

    files1, git1 = tree_snapshot(repo)
    assert diff_snapshots(git0, git1) == []
    assert diff_snapshots(files0, files1) == []
    # and the scratch checkout holds the commit, not the user's uncommitted work
    wt = scratch_of(invoke("apply", "--tree", str(repo), cache=private_cache, out=out).stdout)
    assert (wt / "mm/mmap.c").read_bytes() == git(repo, "show", "HEAD:mm/mmap.c").stdout.encode()
    assert not (wt / "notes.txt").exists()


def test_user_tree_that_is_a_linked_worktree(tmp_path, private_cache):
    """A user's tree that is itself a `git worktree` (.git is a file): objects come from the common dir."""
    main = make_kernel_repo(tmp_path / "linux")
    linked = tmp_path / "linux-wt"
    git(main, "worktree", "add", "-q", "--detach", str(linked))
    files0, _ = tree_snapshot(main)
    cp = invoke("apply", "--tree", str(linked), cache=private_cache, out=tmp_path / "r")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.startswith("applied")
    assert diff_snapshots(files0, tree_snapshot(main)[0]) == []


def test_user_tree_mirror_does_not_pin_objects_by_copying(tmp_path, private_cache):
    """The mirror borrows the user's objects: the cache holds no copy of the user's blobs."""
    repo = make_kernel_repo(tmp_path / "linux")
    t = open_user_tree(str(repo))
    count = git(t.repo.parent, "--git-dir", str(t.repo), "count-objects", "-v").stdout
    assert re.search(r"^count: 0$", count, re.M) and re.search(r"^in-pack: 0$", count, re.M), count
    assert not leftovers(cachemod.cache_root()) and not held_locks(cachemod.cache_root())


def test_user_tree_rebased_and_garbage_collected_is_recovered(tmp_path, private_cache):
    """The mirror borrows the user's objects: after the user amends the base commit and runs gc, the old base is
    gone. The next run must recreate the mirror and the scratch checkout, not fail on a 'bad object'."""
    repo = make_kernel_repo(tmp_path / "linux")
    first = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    assert first.returncode == 0, first.stderr
    old_base = git(repo, "rev-parse", "HEAD").stdout.strip()
    (repo / "README").write_text("amended\n")
    git(repo, "commit", "-qa", "--amend", "-m", "amended base")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "gc", "-q", "--prune=now")
    assert git(repo, "cat-file", "-e", old_base, check=False).returncode != 0
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    assert cp.returncode == 0, cp.stderr
    assert "recreating the mirror" in cp.stderr
    wt = scratch_of(cp.stdout)
    assert git(wt, "rev-parse", "HEAD~1").stdout == git(repo, "rev-parse", "HEAD").stdout
    assert (wt / "README").read_text() == "amended\n" and "vma_is_shmem" in (wt / "mm/mremap.c").read_text()
    again = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "r")
    assert again.returncode == 0 and "worktree already held this" in again.stderr
    assert not leftovers(private_cache) and not held_locks(private_cache)


def test_shallow_user_clone_is_usable_and_reused(tmp_path, private_cache):
    """`git clone --depth 1` trees are common: the mirror must follow the clone's shallow boundary instead of
    taking the missing parents for a broken mirror (which would throw the scratch checkout away every run)."""
    full = make_kernel_repo(tmp_path / "full")
    (full / "README").write_text("second commit\n")
    git(full, "commit", "-qam", "second")
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{full}", str(shallow)], check=True)
    assert (shallow / ".git/shallow").is_file()
    files0, git0 = tree_snapshot(shallow)
    first = invoke("apply", "--tree", str(shallow), cache=private_cache, out=tmp_path / "r")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied")
    wt = scratch_of(first.stdout)
    before = worktree_state(wt)
    again = invoke("apply", "--tree", str(shallow), cache=private_cache, out=tmp_path / "r")
    assert again.returncode == 0, again.stderr
    assert "recreating the mirror" not in again.stderr and "worktree already held this" in again.stderr
    assert changed(before, worktree_state(wt)) == []
    assert tree_snapshot(shallow) == (files0, git0)
