"""The expectation policy from what the series declares and what the code shows, together.

The series declares its intent through the patches kpipe knows (recognised by ``git patch-id --stable``: a
reworded or re-dated seed, or one applied at an offset, still counts), a ``Kpipe-Expect: POLICY`` trailer in a
patch, or ``--expect``; a series with none of them (and no patches at all) intends the base tree's rule. The code's
rule (the suite's [policy] rules, read from the patched tree, e.g. mm/mremap.c) is then checked against that intent:

- both known and equal: the policy, with both reasons;
- both known and different: the series' intent, and the report says the code's rule departs from it (the cases
  then show what the kernel does differently: exit 1, not an infrastructure error);
- the code's rule unreadable (a rule moved into a helper, a loosened condition): the series' intent, said so;
- no intent: the code's rule, as before; neither: a usage error asking for --expect (exit 2).
"""
from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .suite import Suite
from .verifier import check_policy, load_expectations, policy_from_source

TRAILER = re.compile(r"^Kpipe-Expect:\s*(\S+)\s*$", re.M | re.I)


def patch_id(text: str) -> str | None:
    """``git patch-id --stable`` of a patch's text (None when it holds no diff)."""
    cp = subprocess.run(["git", "patch-id", "--stable"], input=text, capture_output=True, text=True, timeout=60,
                        check=False)
    out = cp.stdout.split()
    return out[0] if cp.returncode == 0 and out else None


def known_ids(suite: Suite) -> dict[str, tuple[str, str]]:
    """patch-id -> (policy, patch file name) of the patches the suite knows."""
    out = {}
    for path, policy in suite.known_patches.items():
        if path.is_file() and (pid := patch_id(path.read_text(errors="replace"))):
            out[pid] = (policy, path.name)
    return out


@dataclass(frozen=True)
class Intent:
    policy: str | None
    why: str


def declared(patch_texts: Sequence[tuple[str, str]], base_code: str | None, suite: Suite) -> Intent:
    """What the series intends: ``patch_texts`` are (name, text) in order; ``base_code`` the base tree's copy of
    the suite's policy source (None: unreadable). A trailer wins over a known patch, the last of each over
    earlier ones."""
    ids = known_ids(suite)
    policies = load_expectations(suite).policies
    policy, why = None, ""
    for name, text in patch_texts:
        if (pid := patch_id(text)) and pid in ids:
            policy, why = ids[pid][0], f"{name} is {ids[pid][1]} by patch-id ({pid[:12]})"
    for name, text in patch_texts:
        for m in TRAILER.finditer(text):
            policy, why = check_policy(m.group(1), policies), f"{name} declares `Kpipe-Expect: {m.group(1)}`"
    if policy is None and not patch_texts and base_code is not None and suite.rules:
        try:
            base, base_why = policy_from_source(base_code, suite)
        except UsageError:
            return Intent(None, "")
        return Intent(base, f"no patches: the base tree's rule ({base_why})")
    return Intent(policy, why)


def choose(source: Path, override: str | None, intent: Intent, suite: Suite) -> tuple[str, str]:
    """(policy, reason) from --expect, the series' intent and the code's rule (see the module's docstring); a
    suite with one policy and no rules: that policy."""
    policies = load_expectations(suite).policies
    if override:
        return check_policy(override, policies), "--expect"
    if not suite.rules and len(policies) == 1:
        return next(iter(policies)), f"suite {suite.name} has one policy"
    src = suite.policy_source
    try:
        code = (Path(source) / src).read_text(errors="replace") if src else None
        unreadable = "" if src else f"suite {suite.name} has no rule to read the policy from the tree"
    except OSError as e:
        code, unreadable = None, f"cannot read {src}: {e.strerror or e}"
    code_rule: tuple[str, str] | None = None
    if code is not None:
        try:
            code_rule = policy_from_source(code, suite)
        except UsageError as e:
            unreadable = e.message
    if intent.policy is None:
        if code_rule is None:
            raise UsageError(f"cannot tell the expectation policy: {unreadable}, and the series declares no "
                             f"intent (no patch kpipe knows by patch-id, no `Kpipe-Expect: POLICY` trailer)",
                             fix=f"pass --expect POLICY (one of: {', '.join(policies)}), or add a "
                                 f"`Kpipe-Expect: POLICY` trailer to the patch that changes the rule")
        return code_rule
    if code_rule is None:
        return intent.policy, (f"the series' intent: {intent.why}; kpipe cannot read the code's rule ({unreadable}): "
                               f"judged against the series' expectation")
    if code_rule[0] == intent.policy:
        return code_rule[0], f"{code_rule[1]}; as the series declares ({intent.why})"
    return intent.policy, (f"the series' intent {intent.policy} ({intent.why}); the code's rule is {code_rule[0]} "
                           f"({code_rule[1]}): the kernel is judged against the series' intent")


def series_texts(patches: Sequence[object]) -> list[tuple[str, str]]:
    """(name, text) of each patch file of a series (a file gone since it was read counts as empty)."""
    out = []
    for p in patches:
        path = Path(getattr(p, "path"))
        try:
            out.append((path.name, path.read_text(errors="replace")))
        except OSError:
            out.append((path.name, ""))
    return out


def base_source(checkout: Path, base: str, suite: Suite) -> str | None:
    """The base commit's copy of the suite's policy source in the checkout (None when git cannot show it or the
    suite has none)."""
    if not suite.policy_source:
        return None
    cp = subprocess.run(["git", "-C", str(checkout), "show", f"{base}:{suite.policy_source}"], capture_output=True,
                        text=True, timeout=60, check=False)
    return cp.stdout if cp.returncode == 0 else None
