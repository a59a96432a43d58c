"""Patch intake and application: the shipped seed patch, series files, the applied / already-applied /
conflict statuses, malformed input. Real git on small synthetic kernel-like trees; the CLI is run for real. The
seed on the real 5.10 tree: tests/e2e/test_patches_510.py."""
from __future__ import annotations
import subprocess
from pathlib import Path

import pytest

from kernel_fixture import (private_cache, scratch_of, SEED_AUTHOR, SEED_PATCH, SEED_SUBJECT, git, held_locks, invoke,
                            leftovers, make_kernel_repo, make_repo)
from kpipe.errors import PatchError, UsageError
from kpipe.source.patches import DEFAULT_SERIES, apply_series, load_series, read_patch
from kpipe.workflows.pipeline import locked_checkout
from kpipe.source.tree import open_user_tree


def status_lines(stdout: str) -> list[list[str]]:
    return [ln.split(None, 1) for ln in stdout.splitlines() if ln.startswith(("applied", "already-applied"))]


def assert_clean_exit(cp: subprocess.CompletedProcess, code: int, cache: Path) -> None:
    assert cp.returncode == code, cp.stderr
    assert f"exit {code} (" in cp.stderr
    assert not leftovers(cache), leftovers(cache)
    assert not held_locks(cache)


# ------------------------------------------------------------------------------------------------ intake (unit)


def test_seed_patch_is_a_format_patch_mail():
    pf = read_patch(SEED_PATCH)
    assert pf.is_mail
    assert pf.subject == SEED_SUBJECT                 # "[PATCH] " stripped
    assert pf.author == SEED_AUTHOR
    assert pf.files == ("mm/mremap.c",)
    text = SEED_PATCH.read_text()
    assert "Date: Wed, 3 Mar 2021" in text
    assert "Signed-off-by: Brian Geffon <bgeffon@google.com>" in text
    assert "Lokesh Gidra" in text and "[1] https://lore.kernel.org/" in text


def test_default_series_lists_the_seed_patch():
    s = load_series()
    assert s.source == str(DEFAULT_SERIES)
    assert [p.path for p in s.patches] == [SEED_PATCH.resolve()]
    assert s.touched == ["mm/mremap.c"]


def test_plain_unified_diff_is_read(tmp_path):
    p = tmp_path / "fix.diff"
    p.write_text("--- a/mm/mmap.c\n+++ b/mm/mmap.c\n@@ -1,2 +1,2 @@\n // SPDX-License-Identifier: GPL-2.0\n"
                 "-/* untouched by the seed patch */\n+/* touched */\n")
    pf = read_patch(p)
    assert not pf.is_mail and pf.subject == "fix" and pf.files == ("mm/mmap.c",)


@pytest.mark.parametrize("content,what", [
    (b"", "is empty"),
    (b"  \n\n\t\n", "is empty"),
    (b"int main(void) { return 0; }\n", "is not a patch"),
    (b"\x7fELF\x02\x01\x01\x00garbage\xff\xfe", "is not a patch"),
    (b"From: someone <a@b>\nSubject: [PATCH] no diff here\n\njust a mail\n", "is not a patch"),
])
def test_malformed_patch_is_a_usage_error_naming_the_file(tmp_path, content, what):
    p = tmp_path / "bad.patch"
    p.write_bytes(content)
    with pytest.raises(UsageError) as ei:
        read_patch(p)
    assert str(p) in ei.value.message and what in ei.value.message
    assert ei.value.exit_code == 2 and ei.value.fix


def test_series_skips_comments_and_blank_lines_and_resolves_relative_paths(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "one.patch").write_bytes(SEED_PATCH.read_bytes())
    series = tmp_path / "series"
    series.write_text("# my series\n\n  p/one.patch   # the seed\n")
    s = load_series(series)
    assert [p.path.name for p in s.patches] == ["one.patch"]


def test_series_naming_a_missing_patch_names_the_line(tmp_path):
    series = tmp_path / "series"
    series.write_text(f"{SEED_PATCH}\n# comment\nmissing-0002.patch\n")
    with pytest.raises(UsageError) as ei:
        load_series(series)
    assert f"{series}:3" in ei.value.message and "missing-0002.patch" in ei.value.message
    assert "line 3" in ei.value.fix


def test_empty_series_and_missing_series_file(tmp_path):
    empty = tmp_path / "series"
    empty.write_text("# nothing\n")
    with pytest.raises(UsageError, match="lists no patches"):
        load_series(empty)
    with pytest.raises(UsageError, match="does not exist"):
        load_series(tmp_path / "nope")
    assert load_series(no_patches=True).patches == ()
    with pytest.raises(UsageError, match="--no-patches was given together with --patch/--series"):
        load_series(empty, no_patches=True)


# ------------------------------------------------------------------------------------------------ apply (API)


def test_seed_applies_and_records_file_subject_author_commit(tmp_path):
    repo = make_kernel_repo(tmp_path / "linux")
    tree = open_user_tree(str(repo))
    series = load_series()
    with locked_checkout(tree) as co:
        a = apply_series(co, series)
    assert not a.reused
    [p] = a.patches
    assert (p.file, p.subject, p.author, p.status) == (SEED_PATCH.name, SEED_SUBJECT, SEED_AUTHOR, "applied")
    wt = a.checkout.path
    assert p.commit == a.head == git(wt, "rev-parse", "HEAD").stdout.strip()
    assert git(wt, "rev-parse", "HEAD~1").stdout.strip() == tree.base
    log = git(wt, "log", "-1", "--format=%an <%ae>|%s|%aI").stdout.strip()
    assert log == f"{SEED_AUTHOR}|{SEED_SUBJECT}|2021-03-03T00:00:00+00:00"
    assert "vma_is_shmem(vma)" in (wt / "mm/mremap.c").read_text()
    # the same request again: nothing rewritten, same commit
    with locked_checkout(tree) as co:
        b = apply_series(co, series)
    assert b.reused and b.head == a.head and b.patches == a.patches


def test_commit_ids_are_stable_across_fresh_caches(tmp_path, monkeypatch):
    """Patch commits use fixed dates, so the same base + series gives the same commit (and tree) id."""
    repo = make_kernel_repo(tmp_path / "linux")
    heads = []
    for n in range(2):
        monkeypatch.setenv("KPIPE_CACHE", str(tmp_path / f"cache{n}"))
        with locked_checkout(open_user_tree(str(repo))) as co:
            heads.append(apply_series(co, load_series()).head)
    assert heads[0] == heads[1]


def test_conflict_is_a_patch_error_with_hunk_and_lines(tmp_path):
    repo = make_kernel_repo(tmp_path / "linux", "conflict")
    with locked_checkout(open_user_tree(str(repo))) as co:
        with pytest.raises(PatchError) as ei:
            apply_series(co, load_series())
        assert git(co.path, "status", "--porcelain").stdout == ""       # the failed am was aborted
        assert git(co.path, "rev-parse", "HEAD").stdout.strip() == co.tree.base
    e = ei.value
    assert e.exit_code == 3
    assert SEED_PATCH.name in e.message and "mm/mremap.c" in e.message
    text = "\n".join(e.detail)
    assert "@@ -653,8 +653,7 @@" in text
    assert "if (flags & MREMAP_DONTUNMAP && (!vma_is_anonymous(vma) ||" in text
    assert "vma->vm_flags & VM_SHARED))" in text


# ------------------------------------------------------------------------------------------------ apply (CLI)


def test_cli_applies_seed_to_510_like_tree(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "linux")
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "run")
    assert_clean_exit(cp, 0, private_cache)
    [[status, rest]] = status_lines(cp.stdout)
    assert status == "applied" and SEED_PATCH.name in rest and SEED_SUBJECT in rest
    wt = scratch_of(cp.stdout)
    assert wt.is_relative_to(private_cache)
    assert git(wt, "log", "-1", "--format=%an <%ae>").stdout.strip() == SEED_AUTHOR
    assert git(wt, "rev-parse", "--short=12", "HEAD").stdout.strip() in rest


def test_cli_already_applied_is_reported_not_an_error(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "linux", "patched")
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "run")
    assert_clean_exit(cp, 0, private_cache)
    [[status, rest]] = status_lines(cp.stdout)
    assert status == "already-applied" and SEED_PATCH.name in rest
    assert "already applied" in cp.stderr
    wt = scratch_of(cp.stdout)
    assert git(wt, "rev-parse", "HEAD").stdout == git(repo, "rev-parse", "HEAD").stdout   # no empty commit


@pytest.mark.parametrize("variant", ["conflict", "6.12"])
def test_cli_conflict_exits_3_naming_file_hunk_and_lines(tmp_path, private_cache, variant):
    repo = make_kernel_repo(tmp_path / "linux", variant)
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "run")
    assert_clean_exit(cp, 3, private_cache)
    err = cp.stderr
    assert "kpipe: patch does not apply:" in err
    assert f"{SEED_PATCH.name} does not apply to {repo}" in err
    assert "mm/mremap.c, hunk at line 653" in err
    assert "hunk: @@ -653,8 +653,7 @@" in err
    assert "| \tif (flags & MREMAP_DONTUNMAP && (!vma_is_anonymous(vma) ||" in err
    assert "fix: " in err and "exit 3 (patch does not apply)" in err
    # the next run on the same cache with nothing to apply is fine: the failed am was cleaned up
    ok = invoke("apply", "--tree", str(repo), "--no-patches", cache=private_cache, out=tmp_path / "run")
    assert_clean_exit(ok, 0, private_cache)
    wt = scratch_of(ok.stdout)
    assert not (Path(git(wt, "rev-parse", "--git-dir").stdout.strip()) / "rebase-apply").exists()
    assert git(wt, "status", "--porcelain").stdout == ""


def test_cli_patch_for_a_file_not_in_the_tree(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "linux")
    p = tmp_path / "0001-other.patch"
    p.write_text("--- a/mm/nonexistent.c\n+++ b/mm/nonexistent.c\n@@ -1,1 +1,1 @@\n-old\n+new\n")
    cp = invoke("apply", "--tree", str(repo), "--patch", str(p), cache=private_cache, out=tmp_path / "run")
    assert_clean_exit(cp, 3, private_cache)
    assert "mm/nonexistent.c" in cp.stderr and "not in the tree" in cp.stderr


def test_cli_series_of_mail_and_plain_diff_in_order(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "linux")
    d = tmp_path / "pq"
    d.mkdir()
    (d / "0001-seed.patch").write_bytes(SEED_PATCH.read_bytes())
    (d / "0002-mmap-comment.diff").write_text(
        "--- a/mm/mmap.c\n+++ b/mm/mmap.c\n@@ -1,2 +1,2 @@\n // SPDX-License-Identifier: GPL-2.0\n"
        "-/* untouched by the seed patch */\n+/* touched by patch 2 */\n")
    (d / "series").write_text("0001-seed.patch\n0002-mmap-comment.diff\n")
    cp = invoke("apply", "--tree", str(repo), "--series", str(d / "series"), cache=private_cache, out=tmp_path / "r")
    assert_clean_exit(cp, 0, private_cache)
    st = status_lines(cp.stdout)
    assert [s for s, _ in st] == ["applied", "applied"]
    assert "0001-seed.patch" in st[0][1] and "0002-mmap-comment.diff" in st[1][1]
    wt = scratch_of(cp.stdout)
    subjects = git(wt, "log", "--format=%s", "-2").stdout.splitlines()
    assert subjects == ["0002-mmap-comment", SEED_SUBJECT]
    assert git(wt, "rev-parse", "HEAD~2").stdout == git(repo, "rev-parse", "HEAD").stdout

    # a series whose second patch conflicts: exit 3 naming that patch, not the first
    (d / "0002-mmap-comment.diff").write_text(
        "--- a/mm/mmap.c\n+++ b/mm/mmap.c\n@@ -1,2 +1,2 @@\n // SPDX-License-Identifier: GPL-2.0\n"
        "-/* a line that is not there */\n+/* touched by patch 2 */\n")
    bad = invoke("apply", "--tree", str(repo), "--series", str(d / "series"), cache=private_cache, out=tmp_path / "r")
    assert_clean_exit(bad, 3, private_cache)
    assert "0002-mmap-comment.diff does not apply" in bad.stderr and "mm/mmap.c" in bad.stderr
    assert "| /* a line that is not there */" in bad.stderr


@pytest.mark.parametrize("content", ["", "this is not a patch at all\n"])
def test_cli_empty_or_garbage_patch_exits_2_naming_it(tmp_path, private_cache, content):
    repo = make_kernel_repo(tmp_path / "linux")
    p = tmp_path / "broken.patch"
    p.write_text(content)
    cp = invoke("apply", "--tree", str(repo), "--patch", str(p), cache=private_cache, out=tmp_path / "run")
    assert_clean_exit(cp, 2, private_cache)
    assert f"patch file {p} is empty" in cp.stderr if not content else f"{p} is not a patch" in cp.stderr
    assert "fix: " in cp.stderr


def test_cli_series_listing_a_missing_patch_exits_2_naming_the_line(tmp_path, private_cache):
    repo = make_kernel_repo(tmp_path / "linux")
    series = tmp_path / "series"
    series.write_text(f"{SEED_PATCH}\n0002-gone.patch\n")
    cp = invoke("apply", "--tree", str(repo), "--series", str(series), cache=private_cache, out=tmp_path / "run")
    assert_clean_exit(cp, 2, private_cache)
    assert f"{series}:2: patch 0002-gone.patch does not exist" in cp.stderr
    assert f"fix: fix line 2 of {series}" in cp.stderr


# ------------------------------------------------------------------------------------------------ mbox and --range


def _user_branch(repo: Path) -> list[str]:
    """Two commits on top of the synthetic 5.10 tree, as a contributor's branch: the seed change and a comment."""
    from kernel_fixture import OLD_CHECK, SEED_CHECK
    mremap = repo / "mm/mremap.c"
    mremap.write_text(mremap.read_text().replace(OLD_CHECK, SEED_CHECK))
    git(repo, "commit", "-q", "-am", "mm: allow shmem with MREMAP_DONTUNMAP")
    (repo / "mm/mmap.c").write_text((repo / "mm/mmap.c").read_text() + "/* a comment from patch 2 */\n")
    git(repo, "commit", "-q", "-am", "mm: a comment in mmap.c")
    return git(repo, "rev-list", "--reverse", "HEAD~2..HEAD").stdout.split()


def _mbox(repo: Path, dest: Path, title: str = "mm: shmem moves for MREMAP_DONTUNMAP") -> Path:
    text = git(repo, "format-patch", "--cover-letter", "--stdout", "HEAD~2..HEAD").stdout
    text = text.replace("*** SUBJECT HERE ***", title, 1)
    dest.write_text(text)
    return dest


def _from_lines(path: Path) -> list[int]:
    return [n for n, ln in enumerate(path.read_text().splitlines(), 1) if ln.startswith("From ")]


def test_mbox_series_skips_the_cover_letter_and_keeps_its_title(tmp_path):
    repo = make_kernel_repo(tmp_path / "linux")
    commits = _user_branch(repo)
    mbox = _mbox(repo, tmp_path / "series.mbox")
    s = load_series(patches=[str(mbox)])
    assert s.title == "mm: shmem moves for MREMAP_DONTUNMAP" and s.source == str(mbox)
    assert s.subjects == ["mm: allow shmem with MREMAP_DONTUNMAP", "mm: a comment in mmap.c"]
    assert [p.author for p in s.patches] == ["Test Author <author@example.org>"] * 2
    cover, p1, p2 = _from_lines(mbox)
    assert [p.origin for p in s.patches] == [f"{mbox}:{p1}", f"{mbox}:{p2}"]
    assert s.touched == ["mm/mmap.c", "mm/mremap.c"]
    assert load_series(series=str(mbox)).subjects == s.subjects          # --series FILE.mbox too
    assert len(commits) == 2


def test_cli_applies_an_mbox_and_a_range_recording_where_each_patch_came_from(tmp_path, private_cache):
    from kernel_fixture import diff_snapshots, tree_snapshot
    repo = make_kernel_repo(tmp_path / "linux")
    commits = _user_branch(repo)
    mbox = _mbox(repo, tmp_path / "series.mbox")
    _, p1, p2 = _from_lines(mbox)
    cp = invoke("apply", "--tree", str(repo), "--base", "HEAD~2", "--patch", str(mbox), cache=private_cache,
                out=tmp_path / "r1")
    assert_clean_exit(cp, 0, private_cache)
    assert "series: mm: shmem moves for MREMAP_DONTUNMAP (cover letter skipped)" in cp.stdout
    st = status_lines(cp.stdout)
    assert [s for s, _ in st] == ["applied", "applied"], cp.stdout
    assert st[0][1].endswith(f"from {mbox}:{p1}") and st[1][1].endswith(f"from {mbox}:{p2}"), st
    # --range A..B from the user's tree: --base defaults to A, each patch names its commit, the tree is untouched
    before = tree_snapshot(repo)
    cp = invoke("apply", "--tree", str(repo), "--range", "HEAD~2..HEAD", cache=private_cache, out=tmp_path / "r2")
    assert_clean_exit(cp, 0, private_cache)
    st = status_lines(cp.stdout)
    assert [s for s, _ in st] == ["applied", "applied"], cp.stdout
    assert [ln.rsplit("from commit ", 1)[1] for _, ln in st] == [c[:12] for c in commits]
    assert "mm: allow shmem with MREMAP_DONTUNMAP" in st[0][1]
    after = tree_snapshot(repo)
    # Known (tree.py, reported): kpipe's mirror borrows the user's objects (alternates) and git "freshens" an
    # object it would write when the alternate already has it, i.e. updates that file's mtime in the user's
    # .git/objects. Applying the user's own commits hits exactly that; content, refs, index and files are equal.
    strip = {k: (v if not k.startswith(".git/objects/") else v[:2]) for k, v in before[0].items()}
    assert [diff_snapshots(strip, {k: (v if not k.startswith(".git/objects/") else v[:2])
                                   for k, v in after[0].items()}), diff_snapshots(before[1], after[1])] == [[], []]
    wt = scratch_of(cp.stdout)
    assert git(wt, "rev-parse", "HEAD~2").stdout == git(repo, "rev-parse", "HEAD~2").stdout


@pytest.mark.parametrize("breakage,what", [
    ("drop-subject", "mail 3 has no Subject: header"),
    ("bad-header", "mail 2 has a malformed header line"),
    ("no-diff", "holds no diff"),
])
def test_malformed_mail_in_an_mbox_is_named_with_its_line(tmp_path, private_cache, breakage, what):
    repo = make_kernel_repo(tmp_path / "linux")
    _user_branch(repo)
    mbox = _mbox(repo, tmp_path / "series.mbox")
    lines = mbox.read_text().splitlines(keepends=True)
    cover, p1, p2 = _from_lines(mbox)
    if breakage == "drop-subject":
        i = next(n for n in range(p2, len(lines)) if lines[n].startswith("Subject:"))
        del lines[i]
        where = p2
    elif breakage == "bad-header":
        lines.insert(p1 + 1, "this line is not a header\n")   # right after the "From:" header
        where = p1 + 2
    else:
        start = next(n for n in range(p2, len(lines)) if lines[n].startswith("diff --git"))
        lines = lines[:start]
        where = p2
    mbox.write_text("".join(lines))
    cp = invoke("apply", "--tree", str(repo), "--base", "HEAD~2", "--patch", str(mbox), cache=private_cache,
                out=tmp_path / "r")
    assert_clean_exit(cp, 2, private_cache)
    assert f"{mbox}:{where}: " in cp.stderr and what in cp.stderr, cp.stderr


def test_range_needs_a_user_tree_and_two_dots(tmp_path):
    with pytest.raises(UsageError, match="--range needs --tree PATH"):
        load_series(rng="v1..v2", tree="debian:5.10")
    with pytest.raises(UsageError, match="is not A..B"):
        load_series(rng="v1...v2", tree=str(tmp_path))
    with pytest.raises(UsageError, match="were given together"):
        load_series(series="s", rng="a..b", tree=str(tmp_path))
