"""--thread: a series taken from its mailing-list thread by the real b4 (Debian's 0.12) on a local mbox made here
with git format-patch: two revisions with cover letters, a reply giving v2's first patch a Reviewed-by:; threads
whose revisions differ patch by patch (changed, unchanged, new, dropped) for the changes since the previous
revision and the reports showing them. Then the real `invoke apply --thread` on a tiny kernel-like git tree. No
network, no kernel build (fast tier)."""
from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kernel_fixture import (diff_snapshots, git, held_locks, invoke, kpipe_env, leftovers, make_repo, private_cache,  # noqa: F401
                            scratch_of, tree_snapshot)
from kpipe.report import writers as report, mail as report_mail
from kpipe.source import revisions, thread
from kpipe.errors import InfraError, UsageError
from kpipe.source.patches import Series, load_series
from kpipe.report.results import RunResult, schema_problems, to_dict

AUTHOR = "Test Author <author@example.org>"          # kernel_fixture's git identity
REVIEWER = "Rev Iewer <rev@example.org>"
TITLE = "mm: make foo better"
FILES = {"Makefile": "VERSION = 6\nPATCHLEVEL = 1\n", "Kconfig": "config MMU\n\tdef_bool y\n",
         "mm/foo.c": "int a;\nint b;\nint c;\n", "mm/bar.c": "int x;\n"}


# one patch of a revision: (subject, file, line replaced, its replacement)
Change = tuple[str, str, str, str]


def _changes(rev: int) -> list[Change]:
    """The default series: both patches change in every revision."""
    return [("mm: change a", "mm/foo.c", "int a;", f"int a{rev};"),
            ("mm: change c", "mm/foo.c", "int c;", f"int c{rev};")]


def _revision(dev: Path, rev: int, out: Path, in_reply_to: str = "", changes: list[Change] | None = None,
              notes: dict[int, str] | None = None, blurb: str = "", versioned: bool = True) -> list[str]:
    """The commits of revision ``rev`` on the base (``changes``, default: _changes), mailed as a threaded series
    with a cover letter (``blurb`` in it) and ``notes`` below the '---' of patch N; their Message-Ids made unique
    per revision (git's own use the second they were made in). ``versioned=False``: a v1 mailed as "[PATCH i/n]"
    (no "v1"), as most first postings are."""
    git(dev, "checkout", "-q", "-B", f"v{rev}", "master")
    for subject, path, old, new in changes or _changes(rev):
        f = dev / path
        f.write_text(f.read_text().replace(old, new))
        git(dev, "commit", "-q", "-a", "-m", subject, "-m", f"Why {subject.split()[-1]} changes, take {rev}.",
            "-m", f"Signed-off-by: {AUTHOR}")
    reply = ["--in-reply-to", in_reply_to] if in_reply_to else []
    version = [f"-v{rev}"] if versioned else []
    files = git(dev, "format-patch", "--cover-letter", "--thread=shallow", *version, "-o", str(out / f"v{rev}"),
                *reply, "master..").stdout.split()
    mails = [Path(f).read_text() for f in files]
    for n, note in (notes or {}).items():
        mails[n] = mails[n].replace("\n---\n", f"\n---\n{note}\n", 1)
    text = "".join(mails).replace("*** SUBJECT HERE ***", TITLE)
    text = text.replace("*** BLURB HERE ***", blurb or f"Revision {rev}.")
    ids = re.findall(r"^Message-I[dD]: <([^>]+)>", text, re.M)
    for n, old in enumerate(ids):
        text = text.replace(f"<{old}>", f"<v{rev}-{n}.series@example.org>")
    (out / f"v{rev}.mbox").write_text(text)
    return [f"v{rev}-{n}.series@example.org" for n in range(len(ids))]


def series_thread(tmp: Path, revs: dict[int, list[Change]], notes: dict[int, dict[int, str]] | None = None,
                  blurbs: dict[int, str] | None = None, v1_versioned: bool = True
                  ) -> tuple[Path, Path, dict[str, list[str]]]:
    """The user's tree (only the base commit) and a thread mbox of the revisions ``revs`` (each one's changes, in
    order, each a reply to the one before's cover letter; ``notes`` and ``blurbs`` per revision as _revision
    takes them). Returns (tree, mbox, message-ids per revision)."""
    repo = make_repo(tmp / "linux", FILES, "base")
    dev = tmp / "dev"                                    # the contributor's clone: the user's tree stays base only
    shutil.copytree(repo, dev)
    ids: dict[str, list[str]] = {}
    for rev, changes in revs.items():
        ids[f"v{rev}"] = _revision(dev, rev, tmp / "mails", next(reversed(ids.values()), [""])[0], changes,
                                   (notes or {}).get(rev), (blurbs or {}).get(rev, ""), v1_versioned or rev > 1)
    mbox = tmp / "thread.mbox"
    mbox.write_text("".join((tmp / f"mails/v{rev}.mbox").read_text() for rev in revs))
    return repo, mbox, ids


def make_thread(tmp: Path) -> tuple[Path, Path, dict[str, list[str]]]:
    """The user's tree (only the base commit) and a thread mbox: v1, v2 (a reply to v1's cover letter), a reply to
    v2's patch 1 with a Reviewed-by: and one to v2's cover letter with an Acked-by: for the series. Returns (tree,
    mbox, message-ids per revision)."""
    repo, mbox, ids = series_thread(tmp, {1: _changes(1), 2: _changes(2)})
    reply = (f"From rev@example.org Mon Jan  4 10:00:00 2021\nFrom: {REVIEWER}\nDate: Mon, 4 Jan 2021 10:00:00 +0000\n"
             f"Subject: Re: [PATCH v2 1/2] mm: change a\nMessage-Id: <reply-1@example.org>\n"
             f"In-Reply-To: <{ids['v2'][1]}>\nReferences: <{ids['v2'][0]}> <{ids['v2'][1]}>\n\n"
             f"On Jan 1, Test Author wrote:\n> Why a changes, take 2.\n\nLooks right to me.\n\n"
             f"Reviewed-by: {REVIEWER}\n")
    ack = (f"From ack@example.org Mon Jan  4 11:00:00 2021\nFrom: Ack Er <ack@example.org>\n"
           f"Date: Mon, 4 Jan 2021 11:00:00 +0000\nSubject: Re: [PATCH v2 0/2] {TITLE}\n"
           f"Message-Id: <reply-2@example.org>\nIn-Reply-To: <{ids['v2'][0]}>\nReferences: <{ids['v2'][0]}>\n\n"
           "For the series:\n\nAcked-by: Ack Er <ack@example.org>\n")
    with open(mbox, "a") as f:
        f.write(reply + ack)
    return repo, mbox, ids


def test_newest_revision_with_the_replys_trailer_and_the_cover_letter_as_title(tmp_path):
    _, mbox, ids = make_thread(tmp_path)
    s = load_series(thread=str(mbox))
    assert s.subjects == ["mm: change a", "mm: change c"] and s.title == TITLE
    assert (s.revision, s.message_id, s.link) == (2, ids["v2"][0], "")     # a local file: no lore link claimed
    first, second = (p.path.read_text() for p in s.patches)
    assert "take 2." in first and "+int a2;" in first and "+int c2;" in second and "take 1" not in first + second
    assert f"Signed-off-by: {AUTHOR}\nReviewed-by: {REVIEWER}\n" in first          # the reply's trailer, added
    assert "Reviewed-by" not in second and "Acked-by" not in first + second    # b4 am without -t: noted only
    assert "NOTE: Some trailers were sent to the cover letter:" in s.notes
    assert "Acked-by: Ack Er <ack@example.org>" in s.notes
    assert [p.message_id for p in s.patches] == ids["v2"][1:]
    assert [p.origin for p in s.patches] == [f"{mbox} v2 <{i}>" for i in ids["v2"][1:]]
    d = s.describe()
    assert (d["revision"], d["message_id"], d["source"]) == (2, ids["v2"][0], f"--thread {mbox}")
    assert "link" not in d and [p["message_id"] for p in d["patches"]] == ids["v2"][1:]
    assert s.touched == ["mm/foo.c"]
    assert s.since_previous is not None and [(p.status, p.previous_index) for p in s.since_previous.patches] == \
        [("changed", 1), ("changed", 2)]                        # both patches change in every revision


def test_thread_revision_picks_an_older_one_and_an_unknown_one_names_those_there(tmp_path):
    _, mbox, ids = make_thread(tmp_path)
    s = load_series(thread=str(mbox), thread_revision=1)
    assert s.revision == 1 and [p.message_id for p in s.patches] == ids["v1"][1:]
    assert "+int a1;" in s.patches[0].path.read_text() and "Reviewed-by" not in s.patches[0].path.read_text()
    with pytest.raises(UsageError, match=r"holds no revision 3 \(it holds: v1, v2\)"):
        load_series(thread=str(mbox), thread_revision=3)


# ------------------------------------------------------------------ changes since the previous revision

A1, X1 = ("mm: change a", "mm/foo.c", "int a;", "int a1;"), ("mm: change x", "mm/bar.c", "int x;", "int x1;")
A2, C2 = ("mm: change a", "mm/foo.c", "int a;", "int a2;"), ("mm: change c", "mm/foo.c", "int c;", "int c2;")
NOTE = "v2: fixed the error path"
CHANGELOG = "Changes since v1:\n- a becomes a2, not a1\n- new patch 3: change c"
BLURB = f"Revision 2.\n\n{CHANGELOG}\n\nThanks."


def _reports(series: Series, tmp: Path) -> tuple[str, str, str]:
    """premerge.md, summary.md and report.txt of a premerge run of ``series`` (no kernel: the reports only)."""
    run = RunResult(workflow="premerge", verdict="pass", exit_code=0, reproducer="kpipe premerge --thread t.mbox")
    run.extra.series = series.describe()
    run.extra.checkpatch, run.extra.premerge, run.extra.tags = [], {}, []
    d = to_dict(run)
    assert schema_problems(json.loads(json.dumps(d))) == []
    ctx = report.context(run, tmp)
    txt = report_mail.render(d)
    assert max(map(len, txt.splitlines())) <= report_mail.WIDTH, txt
    return report.render("premerge.md.j2", ctx), report.render("summary.md.j2", ctx), txt


def test_v2_against_v1_patch_by_patch_with_the_authors_notes_and_the_cover_letters_changelog(tmp_path):
    """v1 (mailed as "[PATCH i/2]") has patches a and x; v2 changes a (a note below its '---' says why), keeps x
    as it was and adds c: b4 takes v1 from the same thread and kpipe compares them patch by patch."""
    _, mbox, _ = series_thread(tmp_path, {1: [A1, X1], 2: [A2, X1, C2]}, notes={2: {1: NOTE + "\n"}},
                               blurbs={2: BLURB}, v1_versioned=False)
    s = load_series(thread=str(mbox))
    sp = s.since_previous
    assert sp is not None and (s.revision, sp.revision, sp.previous, sp.note) == (2, 2, 1, "")
    assert [(p.status, p.subject, p.index, p.previous_index) for p in sp.patches] == [
        ("changed", "mm: change a", 1, 1), ("unchanged", "mm: change x", 2, 2), ("new", "mm: change c", 3, None)]
    a, x, c = sp.patches
    assert (a.previous_diffstat, a.diffstat, c.diffstat) == ("mm/foo.c +1 -1",) * 3
    assert a.interdiff == ("mm/foo.c:", " -int a;", "-+int a1;", "++int a2;", "  int b;")
    assert a.notes == (NOTE,) and x.notes == c.notes == () and x.interdiff == () and x.diffstat == ""
    assert sp.changelog == tuple(CHANGELOG.splitlines()) and sp.counts() == {"changed": 1, "unchanged": 1, "new": 1}
    # unchanged and changed as git's patch-id says on v1's mails (git format-patch) and v2's patches (b4 am)
    def pid(f: Path) -> str:
        return subprocess.run(["git", "patch-id", "--stable"], input=f.read_text(), capture_output=True, text=True,
                              check=True, cwd=tmp_path).stdout.split()[0]
    v1a, v1x = sorted((tmp_path / "mails/v1").glob("000[12]-*.patch"))
    assert pid(v1x) == pid(s.patches[1].path) and pid(v1a) != pid(s.patches[0].path)
    d = s.describe()["since_previous"]
    assert d["counts"] == {"changed": 1, "unchanged": 1, "new": 1} and d["patches"][0]["notes"] == [NOTE]
    pm, summary, txt = _reports(s, tmp_path)
    for md in (pm, summary):
        assert "Changes since v1 (the thread's previous revision): 1 changed, 1 unchanged, 1 new\n\n" in md
        assert ("- 1/3 mm: change a: **changed** (v1: mm/foo.c +1 -1; v2: mm/foo.c +1 -1)\n"
                "- 2/3 mm: change x: unchanged\n- 3/3 mm: change c: **new** in v2 (mm/foo.c +1 -1)\n") in md
        assert f"Notes below `---` in 1/3 mm: change a:\n\n```\n{NOTE}\n```\n" in md
        assert "```\nmm/foo.c:\n -int a;\n-+int a1;\n++int a2;\n  int b;\n```\n" in md
        assert f"The cover letter's changelog:\n\n```\n{CHANGELOG}\n```\n" in md
    assert ("Changes since v1 (the thread's previous revision):\n  1 changed, 1 unchanged, 1 new\n"
            "  1/3 mm: change a: changed\n      v1: mm/foo.c +1 -1\n      v2: mm/foo.c +1 -1\n"
            f"      notes below ---:\n      | {NOTE}\n") in txt
    assert "      | -+int a1;\n      | ++int a2;\n" in txt
    assert "  2/3 mm: change x: unchanged\n  3/3 mm: change c: new in v2\n      mm/foo.c +1 -1\n" in txt
    assert "  the cover letter's changelog:\n  | Changes since v1:\n  | - a becomes a2, not a1\n" in txt
    # v1 taken: nothing came before it, so the reports say nothing about revisions
    s1 = load_series(thread=str(mbox), thread_revision=1)
    assert s1.revision == 1 and s1.since_previous is None and "since_previous" not in s1.describe()
    for text in _reports(s1, tmp_path):
        assert "Changes since" not in text and "changelog" not in text and "interdiff" not in text.lower()


def test_a_dropped_patch_a_reworded_subject_an_absent_revision_and_an_incomplete_one(tmp_path):
    """v1 has a and x; v3 (no v2 in the thread: v3 is compared with v1) has a under a new subject, the same diff,
    drops x and adds c."""
    reworded = ("mm: rework a", *A1[1:])
    _, mbox, _ = series_thread(tmp_path, {1: [A1, X1],
                                          3: [reworded, ("mm: change c", "mm/foo.c", "int c;", "int c3;")]})
    s = load_series(thread=str(mbox))
    sp = s.since_previous
    assert sp is not None and (sp.revision, sp.previous, sp.changelog) == (3, 1, ())
    assert [(p.status, p.subject, p.previous_subject, p.index, p.previous_index) for p in sp.patches] == [
        ("unchanged", "mm: rework a", "mm: change a", 1, 1), ("new", "mm: change c", "", 2, None),
        ("dropped", "mm: change x", "", None, 2)]
    assert sp.patches[2].previous_diffstat == "mm/bar.c +1 -1"
    pm, _, txt = _reports(s, tmp_path)
    assert "- 1/2 mm: rework a: unchanged (in v1: mm: change a)\n" in pm
    assert "- mm: change x: **dropped** since v1 (its patch 2: mm/bar.c +1 -1)\n" in pm
    assert "  mm: change x: dropped since v1 (its patch 2: mm/bar.c +1 -1)\n" in txt
    assert "1 unchanged, 1 new, 1 dropped" in txt and "The cover letter's changelog" not in pm
    # v1 lacking its patch 2/2: compared all the same, saying a "new" patch may be the missing one
    mails = re.split(r"(?m)^(?=From \S+ \w{3} \w{3} )", mbox.read_text())
    partial = tmp_path / "partial.mbox"
    partial.write_text("".join(m for m in mails if "[PATCH v1 2/2]" not in m))
    sp = load_series(thread=str(partial)).since_previous
    assert sp is not None and sp.note.startswith("v1 in the thread lacks patch(es) 2/2")
    assert [p.status for p in sp.patches] == ["unchanged", "new"]
    # a thread of one revision: nothing about revisions
    one = tmp_path / "one.mbox"
    one.write_text("".join(m for m in mails if "[PATCH v3" in m))
    s = load_series(thread=str(one))
    assert s.revision == 3 and s.since_previous is None
    assert all("Changes since" not in text for text in _reports(s, tmp_path))


def test_changelog_notes_and_interdiff_are_read_verbatim_and_capped():
    cover = ("Makes foo better.\n\nChanges in v3:\n- rebased\n\nChanges in v2 were small but many, many more\n\n"
             "v1 -> v2:\n\n  - fixed the error path\n\nThanks,\nMe\n\nTest Author (2):\n  mm: change a\n-- \n"
             "v9: after the signature\n")
    assert revisions.changelog_of(cover) == ["Changes in v3:", "- rebased", "", "v1 -> v2:", "",
                                             "  - fixed the error path"]
    body = ("Why.\n\nSigned-off-by: A <a@b.org>\n---\nNotes:\n    v2: moved the check\n\n mm/foo.c | 2 +-\n"
            " 1 file changed\n\ndiff --git a/mm/foo.c b/mm/foo.c\n")
    assert revisions.notes_of(body) == ["Notes:", "    v2: moved the check"]
    assert revisions.notes_of("Why.\n---\n mm/foo.c | 2 +-\n") == []
    old = "m\n---\ndiff --git a/f b/f\nindex 1..2 100644\n--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n-x\n+y\n z\n-- \n2.39\n"
    moved = old.replace("@@ -1,2 +1,2 @@", "@@ -7,2 +7,2 @@").replace("index 1..2", "index 3..4")
    assert revisions.interdiff(old, moved) == []              # only the line numbers and blob ids differ
    big = old.replace("+y\n", "".join(f"+y{n}\n" for n in range(50))).replace("+1,2 @@", "+1,51 @@")
    sp = revisions.compare([revisions.RevisionPatch("f", old)], [revisions.RevisionPatch("f", big)], 2, 1,
                           cover="v2:\n" + "\n".join(f"- {n}" for n in range(40)))
    p = sp.patches[0]
    assert p.status == "changed" and len(p.interdiff) == revisions.INTERDIFF_LINES and p.interdiff_cut > 0
    assert p.diffstat == "f +50 -1" and p.previous_diffstat == "f +1 -1"
    assert len(sp.changelog) == revisions.CHANGELOG_LINES and sp.changelog_cut == 41 - revisions.CHANGELOG_LINES
    # no patch-id from git (no diff in either mail): unchanged only when the two say the same
    bare = [revisions.RevisionPatch("f", "m\n---\nno diff\n")]
    assert [p.status for p in revisions.compare(bare, bare, 2, 1).patches] == ["unchanged"]
    other = [revisions.RevisionPatch("f", "m\n---\nno diff\n\n--- a/f\n+++ b/f\n")]
    assert [p.status for p in revisions.compare(bare, other, 2, 1).patches] == ["changed"]


def test_lores_gzipped_thread_is_read_as_is(tmp_path):
    _, mbox, ids = make_thread(tmp_path)
    gz = tmp_path / "t.mbox.gz"
    gz.write_bytes(gzip.compress(mbox.read_bytes()))
    s = load_series(thread=str(gz))
    assert s.revision == 2 and [p.message_id for p in s.patches] == ids["v2"][1:]
    assert "Reviewed-by: Rev Iewer" in s.patches[0].path.read_text()


def test_a_thread_without_patches_or_with_one_missing_is_a_usage_error(tmp_path):
    _, mbox, _ = make_thread(tmp_path)
    mails = re.split(r"(?m)^(?=From \S+ \w{3} \w{3} )", mbox.read_text())
    replies = tmp_path / "replies.mbox"
    replies.write_text("".join(m for m in mails if "Subject: Re:" in m))
    with pytest.raises(UsageError, match="b4 found no patch in the thread") as e:
        load_series(thread=str(replies))
    assert "No patches found." in e.value.detail
    partial = tmp_path / "partial.mbox"
    partial.write_text("".join(m for m in mails if "[PATCH v2 2/2]" not in m))
    with pytest.raises(UsageError, match=r"v2 is incomplete: patch\(es\) 2/2 missing"):
        load_series(thread=str(partial))
    note = tmp_path / "note.txt"
    note.write_text("Subject: not a mailbox\n\nhello\n")
    with pytest.raises(UsageError, match="is not an mbox"):
        load_series(thread=str(note))
    with pytest.raises(UsageError, match="no such file"):
        load_series(thread=str(tmp_path / "nope.mbox"))


# No network from a test: b4's https proxy, which kpipe probes instead of lore, is a loopback port where nothing
# listens (the discard port), so the probe is refused at once on any machine and nothing leaves it.
NO_NETWORK = {"https_proxy": "http://127.0.0.1:9"}


def test_a_message_id_or_url_without_network_fails_fast_saying_how_to_work_offline(monkeypatch):
    for k, v in NO_NETWORK.items():
        monkeypatch.setenv(k, v)
    assert thread.why_unreachable(thread.LORE, timeout=3)
    for spec in ("<20210303175235.3308220-1-bgeffon@google.com>",
                 "https://lore.kernel.org/all/20210303175235.3308220-1-bgeffon@google.com/"):
        t0 = time.monotonic()
        with pytest.raises(InfraError, match=f"cannot reach {thread.LORE}") as e:
            load_series(thread=spec)
        assert time.monotonic() - t0 < thread.PROBE_TIMEOUT + 3, spec
        assert "pass --thread FILE" in e.value.fix and "20210303175235.3308220-1-bgeffon@google.com" in e.value.fix


def test_the_users_git_and_b4_config_home_and_cwd_change_nothing(tmp_path, monkeypatch):
    """A ~/.gitconfig without user.email and with `b4.save-maildirs` makes the user's own `b4 am` exit 1 (b4 0.12
    needs an email; the maildir is no mbox): kpipe's b4 runs on its private config, writes nothing in HOME or cwd."""
    _, mbox, ids = make_thread(tmp_path)
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    (home / ".gitconfig").write_text("[b4]\n\tsave-maildirs = yes\n\tlinkmask = https://example.invalid/%s\n")
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "GIT_CONFIG_GLOBAL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    before = sorted(str(p) for p in tmp_path.rglob("*") if "cache" not in p.parts)
    s = load_series(thread=str(mbox))
    assert s.revision == 2 and [p.message_id for p in s.patches] == ids["v2"][1:]
    after = sorted(str(p) for p in tmp_path.rglob("*") if "cache" not in p.parts)
    assert after == before and not list(cwd.iterdir())


def test_thread_excludes_the_other_series_options_and_b4_missing_names_kpipe_setup(tmp_path, monkeypatch):
    _, mbox, _ = make_thread(tmp_path)
    with pytest.raises(UsageError, match="--patch and --thread were given together"):
        load_series(patches=["x.patch"], thread=str(mbox))
    with pytest.raises(UsageError, match="--range and --thread were given together"):
        load_series(rng="a..b", thread=str(mbox), tree=str(tmp_path))
    with pytest.raises(UsageError, match="--no-patches was given together"):
        load_series(no_patches=True, thread=str(mbox))
    with pytest.raises(UsageError, match="--thread-revision was given without --thread"):
        load_series(thread_revision=2)
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PATH", str(bare))
    with pytest.raises(InfraError, match="b4 is not installed") as e:
        load_series(thread=str(mbox))
    assert "kpipe setup" in e.value.fix and "apt-get install b4" in e.value.fix


def test_cli_applies_the_threads_v2_in_the_scratch_checkout_and_leaves_the_tree_alone(tmp_path, private_cache):
    repo, mbox, ids = make_thread(tmp_path)
    before = tree_snapshot(repo)
    cp = invoke("apply", "--tree", str(repo), "--thread", str(mbox), cache=private_cache, out=tmp_path / "run")
    assert cp.returncode == 0, cp.stderr
    assert f"series: {TITLE} (cover letter skipped)" in cp.stdout
    assert f"thread: v2 <{ids['v2'][0]}>" in cp.stdout and "since v1: 2 changed\n" in cp.stdout
    applied = [ln for ln in cp.stdout.splitlines() if ln.startswith("applied")]
    assert len(applied) == 2 and all(f"{mbox} v2 <{i}>" in ln for ln, i in zip(applied, ids["v2"][1:])), applied
    wt = scratch_of(cp.stdout)
    assert (wt / "mm/foo.c").read_text() == "int a2;\nint b;\nint c2;\n"
    log = git(wt, "log", "--format=%s%n%b%n--", "-2").stdout
    assert f"Reviewed-by: {REVIEWER}" in log and "take 2." in log
    assert git(wt, "rev-parse", "HEAD~2").stdout == git(repo, "rev-parse", "HEAD").stdout
    after = tree_snapshot(repo)
    assert [diff_snapshots(before[0], after[0]), diff_snapshots(before[1], after[1])] == [[], []]
    assert not leftovers(private_cache) and not held_locks(private_cache)
    # a message-id on this machine: exit 2 at once, the fix line says how to pass the thread as a file
    t0 = time.monotonic()
    cp = invoke("apply", "--tree", str(repo), "--thread", ids["v2"][0], cache=private_cache, out=tmp_path / "run2",
                env={**kpipe_env(private_cache), **NO_NETWORK})
    assert cp.returncode == 2 and "fix: save the thread as an mbox" in cp.stderr, cp.stderr
    assert time.monotonic() - t0 < 30
