"""Patch series intake and application in the scratch checkout.

Each patch is applied with ``git am --3way`` (plain diffs with ``git apply --index`` and a commit), one commit
per patch. A patch whose reverse applies cleanly is ``already-applied`` (reported, not an error). Anything else
stops the run with exit 3 naming the file, the hunk and the lines that did not match.
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import git as gitpython

from .checkout import Checkout, is_clean, read_state, reset_to, write_state
from .errors import PatchError, UsageError
from .progress import note
from .tree import git

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERIES = REPO_ROOT / "patches" / "series"
FIXED_DATE = {"GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"}


@dataclass(frozen=True)
class PatchFile:
    path: Path
    subject: str
    author: str
    is_mail: bool
    sha256: str
    files: tuple[str, ...]      # paths the diff touches


@dataclass(frozen=True)
class Series:
    patches: tuple[PatchFile, ...]
    source: str                 # the series file, "--patch", or "none"

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


def read_patch(path: Path) -> PatchFile:
    if not path.is_file():
        raise UsageError(f"patch file {path} does not exist", fix="check the path (series entries are relative to the series file)")
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
                     sha256=hashlib.sha256(data).hexdigest(), files=files)


def load_series(series: str | Path | None = None, patches: list[str] | None = None,
                no_patches: bool = False) -> Series:
    if no_patches and (patches or series):
        raise UsageError("--no-patches was given together with --patch/--series",
                         fix="drop --no-patches to apply the patches, or drop --patch/--series for a baseline run")
    if no_patches:
        return Series((), "none")
    if patches:
        return Series(tuple(read_patch(Path(p)) for p in patches), "--patch")
    sfile = Path(series) if series else DEFAULT_SERIES
    if not sfile.is_file():
        raise UsageError(f"series file {sfile} does not exist",
                         fix="pass --series FILE (one patch path per line), --patch FILE, or --no-patches")
    out = []
    for n, line in enumerate(sfile.read_text().splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        entry = entry.split()[0]          # quilt-style options after the name are ignored
        p = (sfile.parent / entry) if not Path(entry).is_absolute() else Path(entry)
        if not p.is_file():
            raise UsageError(f"{sfile}:{n}: patch {entry} does not exist", fix=f"fix line {n} of {sfile}")
        out.append(read_patch(p))
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
        commit = gitpython.Repo(co.path).head.commit
        return AppliedPatch(pf.path.name, pf.subject, pf.author or f"{commit.author.name} <{commit.author.email}>",
                            "applied", commit.hexsha)
    if git(co.path, "apply", "--check", "--reverse", str(pf.path), check=False).returncode == 0:
        note(f"{pf.path.name}: already applied in the tree (its reverse applies cleanly); not applied again")
        return AppliedPatch(pf.path.name, pf.subject, pf.author, "already-applied", "")
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
