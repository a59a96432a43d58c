"""Known bugs of a tree's mm/mremap.c, detected from its code (as the expectation policy is), not from the policy.

The acceptance rule (what ``vma_to_resize`` refuses under MREMAP_DONTUNMAP) and the tree's other mremap behaviour
are two facts: a 5.10 tree carrying upstream's 5.13 rule (a vendor backport for the Android GC) still has 5.10's
``move_vma``. So a known tree bug turns the cases it breaks into expected failures (``xfail:CODE``) under ANY
policy when the code shows the bug, and back to ``ok`` when the code shows the fix, whatever the policy column of
verify/expectations.toml says.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from .verifier import MREMAP_SOURCE, XFAIL_PREFIX, Expectations, _strip_comments


@dataclass(frozen=True)
class TreeBug:
    name: str
    cases: dict[str, str]          # case -> the failure code it shows on a tree with the bug
    why: str
    bug: re.Pattern[str]           # the buggy code (must be found) ...
    fix: re.Pattern[str]           # ... and not the fix


TREE_BUGS = (
    TreeBug(
        "dontunmap-partial-mlock",
        {"mlock-part-anon": "VMLCK", "mlock-part-memfd": "VMLCK"},
        "move_vma() clears VM_LOCKED on the whole old VMA after a DONTUNMAP move of part of it, without splitting "
        "it first, and leaves locked_vm alone: VmLck counts pages no VMA locks, and they leak at munmap (5.10; "
        "upstream splits an mlocked VMA ahead of a DONTUNMAP move)",
        bug=re.compile(r"vma->vm_flags\s*&=\s*VM_LOCKED_CLEAR_MASK|vm_flags_clear\s*\(\s*vma\s*,\s*VM_LOCKED_MASK\s*\)"),
        fix=re.compile(r"MREMAP_DONTUNMAP\s*\)\s*&&\s*\(\s*vma->vm_flags\s*&\s*VM_LOCKED\s*\)\s*\)\s*\{[^}]*split_vma",
                       re.S),
    ),
)


@dataclass(frozen=True)
class Found:
    bug: TreeBug
    where: str                     # mm/mremap.c:LINE and the code


def detect(code: str) -> list[Found]:
    """The known bugs the text of mm/mremap.c carries (comments ignored)."""
    code = _strip_comments(code)
    out = []
    for b in TREE_BUGS:
        m = b.bug.search(code)
        if m and not b.fix.search(code):
            line = code.count("\n", 0, m.start()) + 1
            out.append(Found(b, f"{MREMAP_SOURCE}:{line} (`{' '.join(m.group(0).split())}`)"))
    return out


def detect_in_tree(source: Path | None) -> list[Found] | None:
    """detect() on the tree's mm/mremap.c; None when it cannot be read (then nothing is changed)."""
    try:
        return detect((Path(source or ".") / MREMAP_SOURCE).read_text(errors="replace"))
    except OSError:
        return None


def describe(found: list[Found]) -> list[str]:
    """What result.json's kernel.tree_bugs holds: one line per bug found."""
    return [f"{f.bug.name}: {f.where}" for f in found]


def apply(expectations: Expectations, policy: str, names: list[str]) -> Expectations:
    """The expectations for a tree: each known bug found (``names``, as describe() wrote them) makes its cases
    xfail:CODE under ``policy``; a known bug not found makes a policy's xfail for it ``ok`` (the tree has the
    fix). A case the policy refuses (skip, an errno) is left alone."""
    found = {n.split(":", 1)[0]: n.split(":", 1)[1].strip() if ":" in n else "" for n in names}
    cases = dict(expectations.cases)
    for b in TREE_BUGS:
        for case, code in b.cases.items():
            c = cases.get(case)
            if c is None:
                continue
            now = c.outcomes[policy]
            if b.name in found and now in ("ok", f"{XFAIL_PREFIX}{code}"):
                why = f"known tree bug {b.name}, read from {found[b.name]}: {b.why}"
                cases[case] = replace(c, outcomes={**c.outcomes, policy: f"{XFAIL_PREFIX}{code}"},
                                      xfail={**c.xfail, policy: why})
            elif b.name not in found and now == f"{XFAIL_PREFIX}{code}":
                cases[case] = replace(c, outcomes={**c.outcomes, policy: "ok"},
                                      xfail={k: v for k, v in c.xfail.items() if k != policy})
    return replace(expectations, cases=cases)
