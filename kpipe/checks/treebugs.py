"""Known bugs of a tree, detected from the code of the suite's policy source (as the expectation policy is),
not from the policy: the suite's ``[[tree_bugs]]``.

The acceptance rule and the tree's other behaviour are two facts: for the seed's suite, a 5.10 tree carrying
upstream's 5.13 rule (a vendor backport for the Android GC) still has 5.10's ``move_vma``. So a known tree bug
turns the cases it breaks into expected failures (``xfail:CODE``) under ANY policy when the code shows the bug,
and back to ``ok`` when the code shows the fix, whatever the policy column of the suite's expectations says.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .suite import Suite, TreeBug
from .verifier import XFAIL_PREFIX, Expectations, _strip_comments


@dataclass(frozen=True)
class Found:
    bug: TreeBug
    where: str                     # mm/mremap.c:LINE and the code


def detect(code: str, suite: Suite) -> list[Found]:
    """The suite's known bugs that the text of its policy source carries (comments ignored)."""
    code = _strip_comments(code)
    out = []
    for b in suite.tree_bugs:
        m = b.bug.search(code)
        if m and not b.fix.search(code):
            line = code.count("\n", 0, m.start()) + 1
            out.append(Found(b, f"{suite.policy_source}:{line} (`{' '.join(m.group(0).split())}`)"))
    return out


def detect_in_tree(source: Path | None, suite: Suite) -> list[Found] | None:
    """detect() on the tree's copy of the suite's policy source; None when it cannot be read (then nothing is
    changed) or the suite knows no tree bug."""
    if not suite.tree_bugs:
        return None
    try:
        return detect((Path(source or ".") / suite.policy_source).read_text(errors="replace"), suite)
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
    for b in expectations.suite.tree_bugs:
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
