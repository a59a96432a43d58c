"""A series' changes since its previous revision, as a maintainer reads a v2 or v3 that arrives on the list.

The two revisions' patches are matched by subject (without the "[PATCH vN i/n]" prefix; a subject that appears
twice is matched in order). Each patch of this revision is ``unchanged`` (the same ``git patch-id --stable``:
the diff without line numbers and whitespace, whatever the commit message says), ``changed`` (with the
diffstat of each side and a short interdiff: the two diffs compared line by line, hunk line numbers aside) or
``new``; a patch of the previous revision this one does not have is ``dropped``. A new patch whose diff has the
patch-id of a dropped one is that patch under a reworded subject: ``unchanged``, its old subject kept.

What the authors wrote about it is kept verbatim (capped): each patch's notes below its ``---`` line (above
the diffstat: "v2: fixed the error path") and the cover letter's changelog ("Changes since v1:", "Changes in
v2", "v2:" ... up to the next blank line).

The patch-id and diffstat come from real git reading the patch text on stdin (no repository needed); ``cwd``
and ``env`` are where and how git runs (kpipe/source/thread.py passes b4's private folder and environment).
"""
from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import proc

NOTE_LINES = 12             # the notes below one patch's '---'
CHANGELOG_LINES = 24        # the cover letter's changelog
INTERDIFF_LINES = 30        # one changed patch's interdiff
LINE_CHARS = 200            # any one line shown
DIFFSTAT_FILES = 6          # files named in one diffstat

STATUSES = ("changed", "unchanged", "new", "dropped")
_DIFFSTAT = re.compile(r"^ \S.*\|\s+(\d+|Bin\b)|^ \d+ files? changed")
_DIFF_START = re.compile(r"^(diff -|Index: |--- \S)")
_HUNK_NUMBERS = re.compile(r"^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@")
# a changelog heading: "Changes since v1:", "Changes in v2", "Changes from v1 to v2:", "Changelog:", "v2:",
# "v1 -> v2:", "Since v1:" (a "vN:" line may carry its text after the colon)
_CHANGELOG = re.compile(r"^(?:(?:changes?|changelog)\b.{0,40}?\bv\d+\b[^:]{0,24}:?|changelog:?"
                        r"|(?:since\s+)?v\d+(?:\s*(?:->|=>|\.\.|to|-)\s*v\d+)?\s*:.*)$", re.I)


@dataclass(frozen=True)
class RevisionPatch:
    """One patch mail of a revision, as compare() reads it."""
    subject: str                # without its [PATCH ...] prefix
    body: str                   # the mail's body: commit message, '---', notes, diffstat, diff


@dataclass(frozen=True)
class PatchChange:
    status: str                 # unchanged | changed | new | dropped
    subject: str                # this revision's subject (a dropped patch: the previous revision's)
    index: int | None           # its place in this revision (1-based); None: dropped
    previous_index: int | None  # its place in the previous revision; None: new
    previous_subject: str = ""  # the same diff under another subject in the previous revision
    diffstat: str = ""          # changed, new: this revision's ("mm/foo.c +2 -1, mm/bar.c +1 -0")
    previous_diffstat: str = ""     # changed, dropped: the previous revision's
    interdiff: tuple[str, ...] = ()     # changed: the previous diff against this one ('-' old, '+' new lines)
    interdiff_cut: int = 0      # lines of the interdiff left off
    notes: tuple[str, ...] = ()     # the author's notes below this revision's '---', verbatim
    notes_cut: int = 0


@dataclass(frozen=True)
class RevisionChanges:
    revision: int               # the revision taken (2 for v2)
    previous: int               # the newest earlier revision of the thread it was compared with
    patches: tuple[PatchChange, ...]    # this revision's patches in order, then the dropped ones
    changelog: tuple[str, ...] = ()     # the cover letter's changelog lines, verbatim
    changelog_cut: int = 0
    note: str = ""              # why the comparison is partial or missing ("" when complete)

    def counts(self) -> dict[str, int]:
        return {s: n for s in STATUSES if (n := sum(p.status == s for p in self.patches))}

    def describe(self) -> dict[str, Any]:
        """As result.json holds it (lists, not tuples), with the counts per status."""
        plain: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return {**plain, "counts": self.counts()}


def compare(previous: Sequence[RevisionPatch], current: Sequence[RevisionPatch], revision: int, previous_revision: int,
            cover: str = "", note: str = "", cwd: Path | None = None, env: dict[str, str] | None = None
            ) -> RevisionChanges:
    """``current`` (revision ``revision``, its cover letter's body ``cover``) against ``previous``."""
    def git(args: list[str], text: str) -> str:
        cp = proc.run(["git", *args], input=text, cwd=cwd, env=env, replace_env=env is not None, check=False,
                      timeout=60, what=f"git {args[0]}")
        return cp.stdout if cp.returncode == 0 else ""

    def patch_id(p: RevisionPatch) -> str:
        return (git(["patch-id", "--stable"], p.body).split() or [""])[0]

    def diffstat(p: RevisionPatch) -> str:
        return _diffstat(git(["apply", "--numstat"], p.body))

    pairs: dict[int, int] = {}                  # index in current -> index in previous
    for i, c in enumerate(current):
        j = next((j for j, p in enumerate(previous) if j not in pairs.values() and p.subject == c.subject), None)
        if j is not None:
            pairs[i] = j
    ids = {("c", i): patch_id(c) for i, c in enumerate(current)}
    ids |= {("p", j): patch_id(p) for j, p in enumerate(previous)}
    for i in range(len(current)):               # a reworded subject: the same diff in an unmatched patch
        if i in pairs or not ids[("c", i)]:
            continue
        j = next((j for j in range(len(previous)) if j not in pairs.values() and ids[("c", i)] == ids[("p", j)]),
                 None)
        if j is not None:
            pairs[i] = j
    out: list[PatchChange] = []
    for i, c in enumerate(current):
        notes, notes_cut = _cap(notes_of(c.body), NOTE_LINES)
        j = pairs.get(i)
        if j is None:
            out.append(PatchChange("new", c.subject, i + 1, None, diffstat=diffstat(c), notes=notes,
                                   notes_cut=notes_cut))
            continue
        p = previous[j]
        was = p.subject if p.subject != c.subject else ""
        # git gives no patch-id for a mail without a diff (or when it fails): unchanged only if the diffs are
        if ids[("c", i)] == ids[("p", j)] and (ids[("c", i)] or _diff(p.body) == _diff(c.body)):
            out.append(PatchChange("unchanged", c.subject, i + 1, j + 1, was, notes=notes, notes_cut=notes_cut))
            continue
        inter, cut = _cap(interdiff(p.body, c.body), INTERDIFF_LINES)
        out.append(PatchChange("changed", c.subject, i + 1, j + 1, was, diffstat(c), diffstat(p), inter, cut,
                               notes, notes_cut))
    for j, p in enumerate(previous):
        if j not in pairs.values():
            out.append(PatchChange("dropped", p.subject, None, j + 1, previous_diffstat=diffstat(p)))
    log, log_cut = _cap(changelog_of(cover), CHANGELOG_LINES)
    return RevisionChanges(revision, previous_revision, tuple(out), log, log_cut, note)


def _cap(lines: list[str], n: int) -> tuple[tuple[str, ...], int]:
    return tuple(ln[:LINE_CHARS] for ln in lines[:n]), max(0, len(lines) - n)


def _diffstat(numstat: str) -> str:
    """``git apply --numstat`` output as one line: "mm/foo.c +2 -1, ..." (a binary file: "x.bin binary")."""
    parts = []
    for ln in numstat.splitlines():
        added, deleted, path = (ln.split("\t", 2) + ["", ""])[:3]
        parts.append(f"{path} binary" if added == "-" else f"{path} +{added} -{deleted}")
    more = f", and {len(parts) - DIFFSTAT_FILES} more file(s)" if len(parts) > DIFFSTAT_FILES else ""
    return ", ".join(parts[:DIFFSTAT_FILES]) + more


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def notes_of(body: str) -> list[str]:
    """The lines below the patch's first '---' line and above its diffstat (or diff): the author's notes."""
    lines = body.splitlines()
    start = next((k for k, ln in enumerate(lines) if ln.rstrip() == "---" or _DIFF_START.match(ln)), len(lines))
    if start == len(lines) or lines[start].rstrip() != "---":
        return []
    notes: list[str] = []
    for ln in lines[start + 1:]:
        if _DIFFSTAT.match(ln) or _DIFF_START.match(ln):
            break
        notes.append(ln.rstrip())
    return _trim(notes)


def _diff(body: str) -> list[str]:
    """The diff part of a patch mail, without its "index" lines (blob ids change with any content) and the
    signature ("-- " and git's version)."""
    lines = body.splitlines()
    start = next((k for k, ln in enumerate(lines) if _DIFF_START.match(ln)), len(lines))
    out: list[str] = []
    for ln in lines[start:]:
        if ln == "-- ":
            break
        if not ln.startswith("index "):
            out.append(ln)
    return out


def _files(diff: list[str]) -> list[str]:
    """The file each line of a diff belongs to (the "b/" side of its "diff --git" or "+++" line)."""
    out, cur = [], ""
    for ln in diff:
        m = re.match(r"^diff --git a/\S+ b/(\S+)|^\+\+\+ (?:b/)?(\S+)", ln)
        if m and (m.group(1) or m.group(2) != "/dev/null"):
            cur = m.group(1) or m.group(2)
        out.append(cur)
    return out


def interdiff(old_body: str, new_body: str) -> list[str]:
    """The previous patch's diff against this one's: ' ' both, '-' only the previous, '+' only this one, one line
    of context, each group of differences under the file it is in ("mm/foo.c:", "..." for more in the same
    file). Hunk headers are compared without their line numbers (patch-id's rule): a hunk that only moved is no
    difference."""
    old, new = _diff(old_body), _diff(new_body)
    old_files, new_files = _files(old), _files(new)
    sm = difflib.SequenceMatcher(None, [_HUNK_NUMBERS.sub("@@", x) for x in old],
                                 [_HUNK_NUMBERS.sub("@@", x) for x in new], autojunk=False)
    out: list[str] = []
    shown = None
    for group in sm.get_grouped_opcodes(1):
        _, i1, _, j1, j2 = next(op for op in group if op[0] != "equal")
        where = new_files[j1] if j1 < j2 else old_files[i1]
        out.append("..." if where == shown else f"{where or '?'}:")
        shown = where
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out += [" " + x for x in new[j1:j2]]
                continue
            out += ["-" + x for x in old[i1:i2]] + ["+" + x for x in new[j1:j2]]
    return out


def changelog_of(cover: str) -> list[str]:
    """The cover letter's changelog, verbatim: each heading ("Changes since v1:", "v2:", ...) and its lines up
    to the next blank line (a heading standing alone also takes the paragraph under it); blank lines part the
    blocks. Nothing after the signature ("-- ")."""
    lines = cover.splitlines()
    end = next((k for k, ln in enumerate(lines) if ln == "-- "), len(lines))
    lines = [ln.rstrip() for ln in lines[:end]]
    out: list[str] = []
    k = 0
    while k < len(lines):
        if not _CHANGELOG.match(lines[k].strip()):
            k += 1
            continue
        block = [lines[k]]
        k += 1
        announces = not re.search(r":\s*\S", block[0])        # "Changes since v1:", a blank line, the list
        if announces and k < len(lines) and not lines[k].strip():
            nxt = k
            while nxt < len(lines) and not lines[nxt].strip():
                nxt += 1
            if nxt < len(lines) and not _CHANGELOG.match(lines[nxt].strip()):
                block += lines[k:nxt]
                k = nxt
        while k < len(lines) and lines[k].strip():
            block.append(lines[k])
            k += 1
        out += ([""] if out else []) + block
    return out
