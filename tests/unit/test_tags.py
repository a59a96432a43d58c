"""Tag checks (kpipe/source/tags.py): Signed-off-by against the author, Fixes: looked up with real git in a tiny
tree, and how premerge's reports show them. No kernel build. checkpatch's own messages about the same tags (the
5.10 tree's real checkpatch.pl): tests/e2e/test_tags_checkpatch.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernel_fixture import git, make_repo, private_cache  # noqa: F401  (autouse: a private KPIPE_CACHE)
from kpipe.report import writers as report, mail as report_mail
from kpipe.source import tags
from kpipe.source.patches import Series, read_patch
from kpipe.report.results import RunResult, schema_problems, to_dict

AUTHOR = "Test Author <author@example.org>"              # kernel_fixture's git identity
FILES = {"Makefile": "VERSION = 6\nPATCHLEVEL = 1\n", "Kconfig": "config MMU\n\tdef_bool y\n",
         "mm/foo.c": "int a;\n"}


# ------------------------------------------------------------------ pure: the mail's author and trailers


@pytest.mark.parametrize("signoffs,severity", [
    ((AUTHOR,), None),
    (("Other Person <other@example.org>", "Test Author <AUTHOR@Example.ORG>"), None),   # email: any case
    ((), "error"),                                                                     # none at all
    (("Other Person <other@example.org>",), "error"),                                  # only someone else's
    (("T. Author <author@example.org>",), "warning"),                                  # same email, other name
    (("Test Author <author@work.example>",), "warning"),                               # same name, other email
])
def test_signoff_must_be_the_authors(signoffs, severity):
    probs = tags.check_signoff(AUTHOR, signoffs)
    assert [p.severity for p in probs] == ([severity] if severity else []), probs
    if severity == "error" and signoffs:
        assert probs[0].message == f"no Signed-off-by: by the author '{AUTHOR}'"


def test_parse_mail_reads_the_commit_message_only_and_an_in_body_from():
    text = ("From 1234 Mon Sep 17 00:00:00 2001\nFrom: Sender <sender@example.org>\nSubject: [PATCH] x\n\n"
            "From: Real Author <real@example.org>\n\nWhy.\n\nFixes: 0123456789ab (\"mm: add foo\")\n"
            "Signed-off-by: Real Author <real@example.org>\nSigned-off-by: Sender <sender@example.org>\n---\n"
            " Signed-off-by: in the notes, not a tag\ndiff --git a/f b/f\n")
    mt = tags.parse_mail(text)
    assert mt.author == "Real Author <real@example.org>"
    assert mt.signoffs == ("Real Author <real@example.org>", "Sender <sender@example.org>")
    assert mt.fixes == ('0123456789ab ("mm: add foo")',)
    assert tags.check_signoff(mt.author, mt.signoffs) == []
    f = tags.parse_fixes('0123456789AB ("mm: add foo (again)")')
    assert (f.sha, f.subject, f.status) == ("0123456789ab", "mm: add foo (again)", "ok")
    assert tags.parse_fixes("see the commit above").status == "malformed"


# ------------------------------------------------------------------ Fixes: with real git


def _tree(tmp: Path) -> tuple[Path, str, str, str]:
    """A tree with history: 'mm: add foo', 'mm: tune foo' on master, and 'mm: elsewhere' on another branch.
    Returns (repo, base, sha of 'mm: add foo', sha of the other branch's commit)."""
    repo = make_repo(tmp / "linux", FILES, "mm: add foo")
    added = git(repo, "rev-parse", "HEAD").stdout.strip()
    (repo / "mm/foo.c").write_text("int a = 1;\n")
    git(repo, "commit", "-q", "-am", "mm: tune foo")
    git(repo, "checkout", "-q", "-b", "side", "HEAD~1")
    (repo / "mm/bar.c").write_text("int b;\n")
    git(repo, "add", "mm/bar.c")
    git(repo, "commit", "-q", "-m", "mm: elsewhere")
    side = git(repo, "rev-parse", "HEAD").stdout.strip()
    git(repo, "checkout", "-q", "master")
    return repo, git(repo, "rev-parse", "HEAD").stdout.strip(), added, side


def _patch(repo: Path, out: Path, n: int, trailers: str) -> Path:
    """A real `git format-patch` mail of one commit on top of master whose message ends with ``trailers``
    (the commit is made on a throw-away branch: master stays the base)."""
    git(repo, "checkout", "-q", "-B", f"p{n}", "master")
    (repo / "mm/foo.c").write_text(f"int a = {n + 10};\n")
    git(repo, "commit", "-q", "-am", f"mm: change {n}", "-m", f"Why change {n}.\n\n{trailers}".rstrip())
    path = out / f"{n:04d}.patch"
    path.write_text(git(repo, "format-patch", "-1", "--stdout", "HEAD").stdout)
    git(repo, "checkout", "-q", "master")
    return path


def test_fixes_present_absent_wrong_subject_outside_the_base_and_signoffs(tmp_path):
    repo, base, added, side = _tree(tmp_path)
    out = tmp_path / "p"
    out.mkdir()
    sob = f"Signed-off-by: {AUTHOR}"
    cases = {
        "good": f'Fixes: {added[:12]} ("mm: add foo")\n{sob}',
        "no-sob": f'Fixes: {added[:12]} ("mm: add foo")',
        "foreign-sob": "Signed-off-by: Other Person <other@example.org>",
        "absent": f'Fixes: 0123456789ab ("mm: never was")\n{sob}',
        "wrong-subject": f'Fixes: {added} ("mm: add bar")\n{sob}',
        "side-branch": f'Fixes: {side[:12]} ("mm: elsewhere")\n{sob}',
        "short-no-subject": f"Fixes: {added[:8]}\n{sob}",
    }
    series = Series(tuple(read_patch(_patch(repo, out, n, t)) for n, t in enumerate(cases.values())), "--patch")
    res = dict(zip(cases, tags.check_series(series, repo, base)))
    got = {k: [(p.tag, p.severity) for p in r.problems] for k, r in res.items()}
    assert got == {
        "good": [],
        "no-sob": [("Signed-off-by", "error")],
        "foreign-sob": [("Signed-off-by", "error")],
        "absent": [("Fixes", "error")],
        "wrong-subject": [("Fixes", "warning")],
        "side-branch": [("Fixes", "warning")],
        "short-no-subject": [("Fixes", "warning"), ("Fixes", "warning")],
    }, got
    assert res["good"].fixes[0].commit == added and res["good"].fixes[0].status == "ok"
    assert res["good"].author == AUTHOR and res["good"].signoffs == (AUTHOR,)
    assert [f.status for r in res.values() for f in r.fixes] == \
        ["ok", "ok", "absent", "wrong-subject", "not-in-base", "ok"]
    assert res["wrong-subject"].problems[0].message.endswith(f'the subject of {added[:12]} is "mm: add foo"')
    assert "is not in the tree" in res["absent"].problems[0].message
    assert tags.reasons(list(res.values())) == [
        "0001.patch: Signed-off-by: no Signed-off-by: line",
        f"0002.patch: Signed-off-by: no Signed-off-by: by the author '{AUTHOR}'",
        "0003.patch: Fixes: 'Fixes: 0123456789ab (\"mm: never was\")': commit 0123456789ab is not in the tree"]


def test_a_tree_without_history_leaves_an_unknown_fixes_unchecked(tmp_path):
    """A debian:* tree is one commit (the unpacked source package): a commit missing there proves nothing."""
    repo = make_repo(tmp_path / "linux", FILES, "Debian linux-source 5.10")
    base = git(repo, "rev-parse", "HEAD").stdout.strip()
    out = tmp_path / "p"
    out.mkdir()
    pf = read_patch(_patch(repo, out, 1, f'Fixes: 0123456789ab ("mm: old")\nSigned-off-by: {AUTHOR}'))
    [r] = tags.check_series(Series((pf,), "--patch"), repo, base)
    assert [(p.severity, f.status) for p, f in zip(r.problems, r.fixes)] == [("unchecked", "unchecked")]
    assert "no history" in r.problems[0].message and tags.reasons([r]) == []


# ------------------------------------------------------------------ reports


def test_premerge_reports_show_the_thread_and_the_tags(tmp_path):
    repo, base, added, _ = _tree(tmp_path)
    out = tmp_path / "p"
    out.mkdir()
    sob = f"Signed-off-by: {AUTHOR}"
    series = Series((read_patch(_patch(repo, out, 1, f'Fixes: {added[:12]} ("mm: add foo")\n{sob}')),
                     read_patch(_patch(repo, out, 2, "Signed-off-by: Other <other@example.org>"))),
                    "--thread t.mbox", "mm: make foo better", revision=2, message_id="v2-0.series@example.org")
    run = RunResult(workflow="premerge", verdict="fail", exit_code=1, reproducer="kpipe premerge --thread t.mbox")
    run.extra.series = series.describe()
    run.extra.tags = tags.check_series(series, repo, base)
    run.extra.checkpatch, run.extra.premerge = [], {}
    d = to_dict(run)
    assert schema_problems(json.loads(json.dumps(d))) == []
    assert d["extra"]["tags"][1]["problems"][0]["severity"] == "error"
    ctx = report.context(run, tmp_path)
    pm, summary = report.render("premerge.md.j2", ctx), report.render("summary.md.j2", ctx)
    for md in (pm, summary):
        assert "Series from its thread: mm: make foo better, v2, message-id `v2-0.series@example.org`" in md
        assert "- 0001.patch: 1 Signed-off-by, 1 Fixes:, ok\n" in md
        assert ("- 0002.patch: 1 Signed-off-by, 0 Fixes: **(fails the verdict)**\n  - error: Signed-off-by: no "
                "Signed-off-by: by the author 'Test Author &lt;author@example.org&gt;'\n") in md     # escaped
    txt = report_mail.render(d)
    assert txt.startswith("Subject: [kpipe premerge] FAIL: Signed-off-by check failed on 0002.patch\n  (mm: make")
    assert "  thread:   v2 of the series, message-id\n            <v2-0.series@example.org>\n" in txt
    assert "Tags (Signed-off-by, Fixes:):\n  0002.patch: error: Signed-off-by: no Signed-off-by: by the author\n" in txt
    assert max(map(len, txt.splitlines())) <= 72
