"""Tag checks on every patch of a series, as a maintainer reads them before applying:

- Signed-off-by: at least one, and one of them by the author (the mail's From:, or the in-body From: line git am
  takes instead): the same email (case-insensitive) and name. No Signed-off-by at all, or none by the author's
  name or email, is an error (checkpatch's MISSING_SIGN_OFF / NO_AUTHOR_SIGN_OFF, which also fail a premerge);
  the same email under another name, or the same name with another email, is a warning (checkpatch's
  FROM_SIGN_OFF_MISMATCH).
- Fixes: <sha> ("subject"): the commit must be in the tree (git in kpipe's mirror of it) and an ancestor of the
  base, and its real subject must be the quoted one. Absent from the tree is an error (the Fixes: points nowhere);
  a wrong subject, a commit outside the base's history, an ambiguous or short (< 12) id or a missing ("subject")
  is a warning. A tree without history (a debian:* source package is one commit) cannot prove a commit absent:
  such a Fixes: is left unchecked and says so.

checkpatch's own messages about the same tags (run with --show-types, kpipe/source/checkpatch.py) are listed beside
kpipe's, not re-derived.
"""
from __future__ import annotations

import email
import email.policy
import email.utils
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .patches import PatchFile, Series
from ..report.results import FixesTag, PatchTags, TagProblem
from .tree import git

CHECKPATCH_TYPES = frozenset({"MISSING_SIGN_OFF", "NO_AUTHOR_SIGN_OFF", "FROM_SIGN_OFF_MISMATCH", "BAD_SIGN_OFF",
                              "GIT_COMMIT_ID", "UNKNOWN_COMMIT_ID", "BAD_FIXES_TAG"})
_TYPED = re.compile(r"^(ERROR|WARNING|CHECK): ([A-Z0-9_]+): ")
_FIXES = re.compile(r'^\s*([0-9a-fA-F]{4,40})\b\s*(?:\((.*)\))?\s*$')


@dataclass(frozen=True)
class MailTags:
    author: str
    signoffs: tuple[str, ...]
    fixes: tuple[str, ...]      # what follows each "Fixes:"


def parse_mail(text: str) -> MailTags:
    """The author and the Signed-off-by: and Fixes: lines of a patch mail's commit message (before its '---')."""
    head, _, body = text.partition("\n\n")
    msg = email.message_from_string(head + "\n\n", policy=email.policy.default)
    author = " ".join(str(msg["From"] or "").split())
    lines = body.splitlines()
    log: list[str] = []
    for ln in lines:
        if ln.rstrip() == "---" or ln.startswith("diff --git "):
            break
        log.append(ln)
    while log and not log[0].strip():
        log.pop(0)
    if log and re.match(r"^From:\s*\S", log[0]):          # an in-body From: is the author git am records
        author = " ".join(log[0].split(":", 1)[1].split())
    sobs = tuple(" ".join(m.group(1).split()) for ln in log if (m := re.match(r"^\s*Signed-off-by:\s*(.*)$", ln, re.I)))
    fixes = tuple(m.group(1).strip() for ln in log if (m := re.match(r"^\s*Fixes:\s*(.*)$", ln, re.I)))
    return MailTags(author, sobs, fixes)


def _person(addr: str) -> tuple[str, str]:
    name, mail = email.utils.parseaddr(addr)
    return " ".join(name.strip().strip('"').split()), mail.strip().lower()


def check_signoff(author: str, signoffs: tuple[str, ...]) -> list[TagProblem]:
    if not signoffs:
        return [TagProblem("Signed-off-by", "error", "no Signed-off-by: line")]
    name, mail = _person(author)
    people = [_person(s) for s in signoffs]
    if (name, mail) in people:
        return []
    if any(m == mail for _, m in people) or any(n == name and n for n, _ in people):
        near = next(s for s, (n, m) in zip(signoffs, people) if m == mail or (n == name and n))
        return [TagProblem("Signed-off-by", "warning", f"the author's Signed-off-by differs from From: "
                                                       f"'{author}' != '{near}'")]
    return [TagProblem("Signed-off-by", "error", f"no Signed-off-by: by the author '{author}'")]


def parse_fixes(value: str) -> FixesTag:
    m = _FIXES.match(value)
    if not m:
        return FixesTag(value, "", "", status="malformed")
    subj = (m.group(2) or "").strip()
    if len(subj) >= 2 and subj[0] == subj[-1] == '"':
        subj = subj[1:-1]
    return FixesTag(value, m.group(1).lower(), subj)


def has_history(repo: Path, base: str) -> bool:
    """Whether ``base`` has the history a Fixes: lookup needs (not a shallow clone, not a one-commit import)."""
    shallow = git(repo, "rev-parse", "--is-shallow-repository", check=False).stdout.strip() == "true"
    count = git(repo, "rev-list", "--count", "--max-count=2", base, check=False).stdout.strip()
    return not shallow and count == "2"


def check_fixes(repo: Path, base: str, tag: FixesTag, history: bool) -> tuple[FixesTag, list[TagProblem]]:
    """Look the Fixes: commit up in ``repo`` (kpipe's mirror of the tree) against ``base``."""
    from dataclasses import replace
    shown = f"Fixes: {tag.line}"
    if tag.status == "malformed":
        return tag, [TagProblem("Fixes", "warning", f"'{shown}' names no commit id (want: Fixes: <12+ hex digits> "
                                                    '("subject"))')]
    probs: list[TagProblem] = []
    if len(tag.sha) < 12:
        probs.append(TagProblem("Fixes", "warning", f"'{shown}': the id has {len(tag.sha)} digits (at least 12)"))
    if not tag.subject:
        probs.append(TagProblem("Fixes", "warning", f"'{shown}': no (\"subject\") after the id"))
    r = git(repo, "rev-parse", "--verify", "--quiet", f"{tag.sha}^{{commit}}", check=False)
    if r.returncode:
        cands = git(repo, "rev-parse", f"--disambiguate={tag.sha}", check=False).stdout.split()
        if len(cands) > 1:
            return replace(tag, status="ambiguous"), probs + [
                TagProblem("Fixes", "warning", f"'{shown}': the id {tag.sha} is ambiguous in the tree "
                                               f"({len(cands)} objects)")]
        if not history:
            return replace(tag, status="unchecked"), probs + [
                TagProblem("Fixes", "unchecked", f"'{shown}': not checked: the tree has no history to look the "
                                                 "commit up in (a source package or shallow clone)")]
        return replace(tag, status="absent"), probs + [
            TagProblem("Fixes", "error", f"'{shown}': commit {tag.sha} is not in the tree")]
    full = r.stdout.strip()
    real = " ".join(git(repo, "log", "-1", "--format=%s", full).stdout.split())
    tag = replace(tag, commit=full, real_subject=real)
    if git(repo, "merge-base", "--is-ancestor", full, base, check=False).returncode:
        return replace(tag, status="not-in-base"), probs + [
            TagProblem("Fixes", "warning", f"'{shown}': commit {full[:12]} is not in the history of the base "
                                           f"{base[:12]}")]
    if tag.subject and " ".join(tag.subject.split()) != real:
        return replace(tag, status="wrong-subject"), probs + [
            TagProblem("Fixes", "warning", f"'{shown}': the subject of {full[:12]} is \"{real}\"")]
    return tag, probs


def check_patch(pf: PatchFile, repo: Path, base: str, history: bool,
                checkpatch: dict[str, Any] | None = None) -> PatchTags:
    cp = tuple(m for m in (checkpatch or {}).get("messages", [])
               if (t := _TYPED.match(m)) and t.group(2) in CHECKPATCH_TYPES)
    if not pf.is_mail:
        return PatchTags(pf.path.name, "", (), (), (TagProblem(
            "Signed-off-by", "unchecked", "a plain diff: no author and no tags to check"),), cp)
    mt = parse_mail(pf.path.read_text(errors="replace"))
    problems = check_signoff(mt.author, mt.signoffs)
    fixes: list[FixesTag] = []
    for value in mt.fixes:
        tag, probs = check_fixes(repo, base, parse_fixes(value), history)
        fixes.append(tag)
        problems += probs
    return PatchTags(pf.path.name, mt.author, mt.signoffs, tuple(fixes), tuple(problems), cp)


def check_series(series: Series, repo: Path, base: str,
                 checkpatch: list[dict[str, Any]] | None = None) -> list[PatchTags]:
    """Every patch's tags, looked up in ``repo`` (the scratch checkout or kpipe's mirror) against ``base``."""
    history = has_history(repo, base)
    by_file = {c["file"]: c for c in checkpatch or []}
    return [check_patch(pf, repo, base, history, by_file.get(pf.path.name)) for pf in series.patches]


def reasons(results: list[PatchTags]) -> list[str]:
    """One line per error (what fails a premerge)."""
    return [f"{r.file}: {p.tag}: {p.message}" for r in results for p in r.problems if p.severity == "error"]
