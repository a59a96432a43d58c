"""Patch series intake and application in the scratch checkout.

Intake: a quilt-style series file, --patch files, a single mbox holding a whole series (`git format-patch
--stdout`, `b4 am` output; a cover letter "[PATCH 0/N]" is skipped and recorded as the series title),
--range A..B: the commits of a branch in the user's tree (read with `git format-patch --stdout`, nothing written
there), or --thread: a mailing-list thread through `b4 am` (kpipe/source/thread.py: the newest revision, the replies'
trailers added, compared with the thread's previous revision when it holds one: kpipe/source/revisions.py). Each patch
keeps where it came from (file, mbox line, commit, or thread revision and message-id) for the reports. A
malformed mail in an mbox is a usage error naming the file and line.

Each patch is applied with ``git am --3way`` (plain diffs with ``git apply --index`` and a commit), one commit
per patch. A patch whose reverse applies cleanly is ``already-applied`` (reported, not an error). Anything else
stops the run with exit 3 naming the file, the hunk and the lines that did not match.
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import os
import re
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .checkout import Checkout, is_clean, read_state, reset_to, write_state
from ..datadirs import data_dir
from ..errors import PatchError, UsageError
from ..progress import note
from .tree import git

if TYPE_CHECKING:
    from .revisions import RevisionChanges

DEFAULT_SERIES = data_dir("patches") / "series"
FIXED_DATE = {"GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"}


@dataclass(frozen=True)
class PatchFile:
    path: Path
    subject: str
    author: str
    is_mail: bool
    sha256: str
    files: tuple[str, ...]      # paths the diff touches
    origin: str = ""            # where it came from: "x.mbox:120 (mail 2)", "commit 1a2b3c4d5e6f", or ""
    message_id: str = ""        # the mail's Message-Id (without <>) when it came from a --thread


@dataclass(frozen=True)
class Series:
    patches: tuple[PatchFile, ...]
    source: str                 # the series file, "--patch", an mbox, "--range A..B", or "none"
    title: str = ""             # the cover letter's subject, when the series had one
    revision: int | None = None     # --thread: the revision b4 took (v2 -> 2)
    message_id: str = ""        # --thread: the cover letter's message-id (else the first patch's)
    link: str = ""              # --thread fetched from lore: the thread's URL
    notes: tuple[str, ...] = ()     # --thread: what b4 warned about (trailers sent to the cover letter, ...)
    since_previous: RevisionChanges | None = None   # --thread: against the thread's previous revision, if any

    def describe(self) -> dict[str, Any]:
        thread: dict[str, Any] = {k: v for k, v in (("revision", self.revision), ("message_id", self.message_id),
                                                    ("link", self.link), ("notes", list(self.notes))) if v}
        if self.since_previous is not None:
            thread["since_previous"] = self.since_previous.describe()
        return {"source": self.source, "title": self.title, **thread,
                "patches": [{"file": p.path.name, "origin": p.origin, "subject": p.subject, "author": p.author,
                             **({"message_id": p.message_id} if p.message_id else {})}
                            for p in self.patches]}

    @property
    def subjects(self) -> list[str]:
        return [p.subject for p in self.patches]

    @property
    def touched(self) -> list[str]:
        return sorted({f for p in self.patches for f in p.files})

    def key(self) -> list[str]:
        return [p.sha256 for p in self.patches]


@dataclass(frozen=True)
class AppliedPatch:
    file: str
    subject: str
    author: str
    status: str                 # applied | already-applied
    commit: str
    origin: str = ""            # the patch's mbox line or source commit (see PatchFile.origin)


@dataclass(frozen=True)
class Applied:
    checkout: Checkout
    base: str
    head: str
    patches: tuple[AppliedPatch, ...]
    reused: bool                # the worktree already held exactly this; nothing was rewritten


_DIFF_FILE = re.compile(r"^diff --git a/(\S+) b/(\S+)", re.M)
_PLUS_FILE = re.compile(r"^\+\+\+ (?:b/)?(\S+)", re.M)
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", re.M)


def read_patch(path: Path, origin: str = "") -> PatchFile:
    if not path.is_file():
        raise UsageError(f"patch file {path} does not exist",
                         fix="check the path (series entries are relative to the series file)")
    data = path.read_bytes()
    if not data.strip():
        raise UsageError(f"patch file {path} is empty", fix="pass a patch made by `git format-patch` or `diff -u`")
    text = data.decode("utf-8", errors="replace")
    if not _HUNK.search(text) or not (_DIFF_FILE.search(text) or _PLUS_FILE.search(text)):
        raise UsageError(f"{path} is not a patch: no unified diff (no '+++'/'@@' hunk) in it",
                         fix="pass a patch made by `git format-patch` or `diff -u`")
    files = tuple(dict.fromkeys(m.group(2) for m in _DIFF_FILE.finditer(text))) or \
        tuple(dict.fromkeys(f for f in _PLUS_FILE.findall(text) if f != "/dev/null"))
    head = text.split("\n\n", 1)[0] if not text.startswith("diff") else ""
    is_mail = bool(re.search(r"^Subject:", head, re.M) and re.search(r"^From:", head, re.M))
    subject, author = path.stem, ""
    if is_mail:
        msg = email.message_from_string(text, policy=email.policy.default)
        subject = re.sub(r"^\s*\[[^\]]*\]\s*", "", str(msg["Subject"] or "")).replace("\n", " ").strip() or path.stem
        author = str(msg["From"] or "")
    return PatchFile(path=path.resolve(), subject=subject, author=author, is_mail=is_mail,
                     sha256=hashlib.sha256(data).hexdigest(), files=files, origin=origin)


# ---------------------------------------------------------------- mbox series and git ranges

_MBOX_FROM = re.compile(r"^From \S+ .*\d{4}\s*$")          # "From <sha> Mon Sep 17 00:00:00 2001"
_COVER = re.compile(r"^\s*\[[^\]]*?\b0+/\d+\s*\]")           # "[PATCH 0/3]", "[PATCH v2 00/12]", "[RFC 0/2]"
_PREFIX = re.compile(r"^\s*(\[[^\]]*\]\s*)+")


@dataclass
class _Mail:
    line: int                   # 1-based line of its "From " separator (or first line)
    lines: list[str] = field(default_factory=list)


def is_mbox(path: Path) -> bool:
    """A file holding more than one mail, or one whose first line is an mbox "From " separator."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20).decode("utf-8", errors="replace")
    except OSError:
        return False
    seps = sum(1 for ln in head.splitlines() if _MBOX_FROM.match(ln))
    return seps > 1 or (seps == 1 and head.startswith("From ") and _COVER.search(_subject_of(head) or "") is not None)


def _subject_of(text: str) -> str | None:
    m = re.search(r"^Subject:(.*(?:\n[ \t].*)*)", text.split("\n\n", 1)[0], re.M)
    return " ".join(m.group(1).split()) if m else None


def split_mbox(text: str, name: str) -> list[_Mail]:
    mails: list[_Mail] = []
    for n, ln in enumerate(text.splitlines(keepends=True), 1):
        if _MBOX_FROM.match(ln.rstrip("\n")) or not mails:
            mails.append(_Mail(n))
        mails[-1].lines.append(ln)
    return [m for m in mails if "".join(m.lines).strip()]


def mbox_series(text: str, name: str, origin_of: Callable[[str, int], str] | None = None
                ) -> tuple[list[tuple[str, str, int]], str]:
    """The mails of an mbox as (text, origin, line) in order, and the cover letter's title ("" when none).
    Raises UsageError naming ``name:LINE`` for a mail that is not a patch."""
    out: list[tuple[str, str, int]] = []
    title = ""
    mails = split_mbox(text, name)
    if not mails:
        raise UsageError(f"{name} holds no mail", fix="pass an mbox made by `git format-patch --stdout` or `b4 am`")
    for i, m in enumerate(mails, 1):
        body = "".join(m.lines)
        head_lines = body.split("\n\n", 1)[0].splitlines()
        first_header = 1 if head_lines and head_lines[0].startswith("From ") else 0
        for k, hl in enumerate(head_lines[first_header:], m.line + first_header):
            if not re.match(r"^[!-9;-~]+:|^[ \t]", hl):
                raise UsageError(f"{name}:{k}: mail {i} has a malformed header line: {hl[:80]!r}",
                                 fix="re-export the series with `git format-patch --stdout` (or `b4 am`)")
        msg = email.message_from_string(body, policy=email.policy.default)
        subject = " ".join(str(msg["Subject"] or "").split())
        if not subject:
            raise UsageError(f"{name}:{m.line}: mail {i} has no Subject: header",
                             fix="each mail of the mbox needs From: and Subject: headers")
        if not msg["From"]:
            raise UsageError(f"{name}:{m.line}: mail {i} ({subject!r}) has no From: header",
                             fix="each mail of the mbox needs From: and Subject: headers")
        has_diff = bool(_HUNK.search(body)) and bool(_DIFF_FILE.search(body) or _PLUS_FILE.search(body))
        if _COVER.search(subject) and not has_diff:
            if title:
                raise UsageError(f"{name}:{m.line}: a second cover letter ({subject!r})",
                                 fix="pass one series per mbox")
            title = _PREFIX.sub("", subject).strip()
            continue
        if not has_diff:
            raise UsageError(f"{name}:{m.line}: mail {i} ({subject!r}) holds no diff",
                             fix="pass a thread with its replies as --thread FILE (b4 am keeps the patches and adds "
                                 "the replies' trailers), or drop the non-patch mails from the mbox")
        origin = origin_of(body, m.line) if origin_of else f"{name}:{m.line}"
        out.append((body, origin, m.line))
    if not out:
        raise UsageError(f"{name} holds no patch" + (f" (only the cover letter {title!r})" if title else ""),
                         fix="pass an mbox holding the series' patches")
    return out, title


def _slug(subject: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", _PREFIX.sub("", subject)).strip("-")[:52] or "patch"


def _write_split(parts: list[tuple[str, str, int]], key: str) -> list[PatchFile]:
    """One file per mail in kpipe's cache (content-addressed, so a re-run reuses them), read like --patch."""
    from .. import cache
    final = cache.cache_dir("series") / key
    if not (final / "done").is_file():
        with cache.new_entry(final) as tmp:
            for n, (body, _, _) in enumerate(parts, 1):
                subj = _subject_of(body) or f"patch {n}"
                (tmp / f"{n:04d}-{_slug(subj)}.patch").write_text(body)
            (tmp / "done").write_text("")
    files = sorted(p for p in final.iterdir() if p.suffix == ".patch")
    return [read_patch(f, origin) for f, (_, origin, _) in zip(files, parts)]


def load_mbox(path: Path) -> Series:
    text = path.read_bytes().decode("utf-8", errors="replace")
    parts, title = mbox_series(text, str(path))
    key = hashlib.sha256(text.encode()).hexdigest()[:20]
    return Series(tuple(_write_split(parts, key)), str(path), title)


def load_thread(spec: str, revision: int | None = None) -> Series:
    """--thread MBOX|MSGID|URL: the revision b4 takes from the thread (kpipe/source/thread.py), each patch's origin the
    thread, its revision and message-id."""
    from . import thread
    got = thread.am(spec, revision)
    revision_of = {p.message_id: p.revision for p in got.patches}
    where = got.link or str(got.mbox)

    def msgid(body: str) -> str:
        m = re.search(r"^Message-Id:\s*<?([^>\s]+)>?", body.split("\n\n", 1)[0], re.M | re.I)
        return m.group(1) if m else ""

    def origin(body: str, line: int) -> str:
        i = msgid(body)
        return f"{where} v{revision_of[i]} <{i}>" if i in revision_of else f"{where}:{line}"
    parts, _ = mbox_series(got.am_text, f"b4 am of {got.mbox}", origin)
    key = hashlib.sha256(got.am_text.encode()).hexdigest()[:20]
    files = _write_split(parts, key)
    return Series(tuple(replace(pf, message_id=msgid(body)) for pf, (body, _, _) in zip(files, parts)),
                  f"--thread {spec}", got.title, revision=got.revision, message_id=got.message_id, link=got.link,
                  notes=got.notes, since_previous=got.since_previous)


def load_range(rng: str, tree: str | None) -> Series:
    """--range A..B: the commits of B not in A, oldest first, from the user's tree (read-only)."""
    if not re.fullmatch(r"[^.\s]+(\.\.)[^.\s]+", rng or ""):
        raise UsageError(f"--range {rng!r} is not A..B", fix="e.g. --range v6.1..my-branch (two dots)")
    if not tree or tree.startswith("debian:"):
        raise UsageError("--range needs --tree PATH of your kernel git tree (or run kpipe inside it)",
                         fix="e.g. kpipe verify --tree ~/linux --range origin/master..my-branch")
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    r = subprocess.run(["git", "-C", str(Path(tree).expanduser()), "format-patch", "--stdout", "--no-signature",
                        "--no-stat", "--no-color", rng], capture_output=True, text=True, env=env)
    if r.returncode:
        raise UsageError(f"--range {rng}: git format-patch failed in {tree}: {r.stderr.strip().splitlines()[-1:]}",
                         fix="name two revisions of that tree, e.g. --range v6.1..HEAD")
    if not r.stdout.strip():
        raise UsageError(f"--range {rng} holds no commits in {tree}",
                         fix="check the order: A..B lists B's commits not in A")

    def origin(body: str, line: int) -> str:
        m = re.match(r"^From ([0-9a-f]{40}) ", body)
        return f"commit {m.group(1)[:12]}" if m else f"{rng}:{line}"
    parts, _ = mbox_series(r.stdout, f"--range {rng}", origin)
    key = hashlib.sha256(r.stdout.encode()).hexdigest()[:20]
    return Series(tuple(_write_split(parts, key)), f"--range {rng}", "")


def load_series(series: str | Path | None = None, patches: list[str] | None = None,
                no_patches: bool = False, rng: str | None = None, tree: str | None = None,
                thread: str | None = None, thread_revision: int | None = None) -> Series:
    if no_patches and (patches or series or rng or thread):
        raise UsageError("--no-patches was given together with --patch/--series/--range/--thread",
                         fix="drop --no-patches to apply the patches, or drop --patch/--series/--range/--thread for "
                             "a baseline run")
    given = [n for n, v in (("--patch", patches), ("--series", series), ("--range", rng), ("--thread", thread)) if v]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} were given together",
                         fix="pick one of --patch FILE (repeatable), --series FILE, --range A..B, --thread "
                             "MBOX|MSGID|URL, --no-patches")
    if thread_revision is not None and not thread:
        raise UsageError("--thread-revision was given without --thread",
                         fix="pass --thread MBOX|MSGID|URL, or drop --thread-revision")
    if no_patches:
        return Series((), "none")
    if thread:
        return load_thread(thread, thread_revision)
    if rng:
        return load_range(rng, tree)
    if patches:
        if len(patches) == 1 and is_mbox(Path(patches[0])):
            return load_mbox(Path(patches[0]))
        out: list[PatchFile] = []
        for p in patches:
            if is_mbox(Path(p)):
                raise UsageError(f"{p} is an mbox holding a series: pass it alone (--patch {p})",
                                 fix="one mbox per run, or split it into files")
            out.append(read_patch(Path(p)))
        return Series(tuple(out), "--patch")
    sfile = Path(series) if series else DEFAULT_SERIES
    if not sfile.is_file():
        raise UsageError(f"series file {sfile} does not exist",
                         fix="pass --series FILE (one patch path per line), --patch FILE, or --no-patches")
    if is_mbox(sfile):
        return load_mbox(sfile)
    out = []
    for n, line in enumerate(sfile.read_text().splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        entry = entry.split()[0]          # quilt-style options after the name are ignored
        path = (sfile.parent / entry) if not Path(entry).is_absolute() else Path(entry)
        if not path.is_file():
            raise UsageError(f"{sfile}:{n}: patch {entry} does not exist", fix=f"fix line {n} of {sfile}")
        out.append(read_patch(path))
    if not out:
        raise UsageError(f"series file {sfile} lists no patches", fix="list patch files in it, or pass --no-patches")
    return Series(tuple(out), str(sfile))


def apply_series(co: Checkout, series: Series, log: Path | None = None) -> Applied:
    """Reset the scratch checkout to the tree's base and apply the series, one commit per patch."""
    base = co.tree.base
    want = {"base": base, "patches": series.key()}
    st = read_state(co)
    current = git(co.path, "rev-parse", "HEAD").stdout.strip()
    if st.get("base") == base and st.get("patches") == want["patches"] and st.get("head") == current and is_clean(co):
        co = Checkout(co.tree, co.path, current)
        return Applied(co, base, current, tuple(AppliedPatch(**p) for p in st["applied"]), reused=True)
    co = reset_to(co, base, log)
    done: list[AppliedPatch] = []
    for pf in series.patches:
        done.append(_apply_one(co, pf, log))
    head = git(co.path, "rev-parse", "HEAD").stdout.strip()
    co = Checkout(co.tree, co.path, head)
    write_state(co, {**want, "head": head, "applied": [p.__dict__ for p in done]})
    return Applied(co, base, head, tuple(done), reused=False)


def _apply_one(co: Checkout, pf: PatchFile, log: Path | None) -> AppliedPatch:
    if pf.is_mail:
        r = git(co.path, "am", "--3way", "--committer-date-is-author-date", "--keep-cr", str(pf.path),
                check=False, log=log, env=FIXED_DATE)
        ok = r.returncode == 0
        if not ok:
            git(co.path, "am", "--abort", check=False, log=log)
    else:
        r = git(co.path, "apply", "--index", "--3way", str(pf.path), check=False, log=log)
        ok = r.returncode == 0
        if ok:
            git(co.path, "commit", "-q", "-m", pf.subject, "--author", "kpipe <kpipe@localhost>",
                log=log, env={**FIXED_DATE, "GIT_AUTHOR_DATE": FIXED_DATE["GIT_COMMITTER_DATE"]})
        else:
            git(co.path, "reset", "-q", "--hard", check=False, log=log)
    if ok:
        import git as gitpython     # here, not at the top: GitPython costs every CLI start ~0.05-0.1 s, `--help` too
        commit = gitpython.Repo(co.path).head.commit
        return AppliedPatch(pf.path.name, pf.subject, pf.author or f"{commit.author.name} <{commit.author.email}>",
                            "applied", commit.hexsha, pf.origin)
    if git(co.path, "apply", "--check", "--reverse", str(pf.path), check=False).returncode == 0:
        note(f"{pf.path.name}: already applied in the tree (its reverse applies cleanly); not applied again")
        return AppliedPatch(pf.path.name, pf.subject, pf.author, "already-applied", "", pf.origin)
    raise _conflict_error(co, pf)


def _conflict_error(co: Checkout, pf: PatchFile) -> PatchError:
    chk = git(co.path, "apply", "--check", "-v", str(pf.path), check=False)
    out = (chk.stderr or "") + (chk.stdout or "")
    detail: list[str] = []
    m = re.search(r"error: patch failed: (\S+):(\d+)", out)
    missing = re.search(r"error: (\S+): (No such file or directory|does not exist in index)", out)
    text = pf.path.read_text(errors="replace")
    where = ""
    if m:
        fname, line = m.group(1), int(m.group(2))
        where = f"{fname}, hunk at line {line}"
        hunk = _find_hunk(text, fname, line)
        if hunk:
            detail.append(f"hunk: {hunk[0]}")
            expected = [h for h in hunk[1:] if h.startswith(("-", " "))]
            detail.append(f"these lines of {fname} were not found near line {line}:")
            detail += [f"  | {h[1:]}" for h in expected if h.startswith("-")] or [f"  | {h[1:]}" for h in expected]
    elif missing:
        where = f"{missing.group(1)} (the file is not in the tree)"
    else:
        detail += out.strip().splitlines()[-8:]
    return PatchError(f"{pf.path.name} does not apply to {co.tree.spec} at {co.tree.base_label}"
                      + (f": {where}" if where else ""),
                      fix="rebase the patch onto this base (or pick the --tree/--base it was written for)",
                      detail=detail)


def _find_hunk(text: str, fname: str, line: int) -> list[str] | None:
    """The hunk of ``fname`` whose old range starts at ``line``: its header and body lines."""
    in_file = False
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("diff --git") or ln.startswith("--- "):
            if ln.startswith("diff --git"):
                in_file = ln.endswith(f" b/{fname}")
            continue
        if ln.startswith("+++ "):
            in_file = in_file or ln[4:].strip().removeprefix("b/") == fname
            continue
        m = _HUNK.match(ln)
        if in_file and m and int(m.group(1)) == line:
            body = [ln]
            for nxt in lines[i + 1:]:
                if nxt.startswith(("@@", "diff --git", "-- ")) and not nxt.startswith("-- a/"):
                    break
                if nxt == "--":
                    break
                body.append(nxt)
            return body
    return None
