"""Premerge's judgement, as pure functions of two ArchResults (baseline and patched kernel of one arch):
the per-test comparison, the flip of the verifier cases the series is about, and the arch's verdict."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..checks import verifier
from ..errors import EXIT_KERNEL, EXIT_PASS
from ..guest.findings import strip_timestamp
from ..report.results import ArchResult, PremergeArch, Status, TestResult
from .runner import VERDICT_OF, worst


def compare(base: list[TestResult], patched: list[TestResult]) -> list[dict[str, str]]:
    """Per test: fixed (fail->pass), regressed (pass->fail), lost (pass->skip), unchanged, new, gone."""
    def flat(ts: list[TestResult]) -> dict[str, TestResult]:
        return {f"{t.suite}/{name}": t for top in ts for t, name in _walk_named(top)}
    b, p = flat(base), flat(patched)
    rows = []
    for name in sorted(set(b) | set(p)):
        bs = b[name].status if name in b else None
        ps = p[name].status if name in p else None
        if bs is None:
            change = "new"
        elif ps is None:
            change = "gone"
        elif bs.bad and ps == Status.PASS:
            change = "fixed"
        elif bs == Status.PASS and ps.bad:
            change = "regressed"
        elif bs == Status.PASS and ps == Status.SKIP:
            change = "lost"            # ran and passed on the baseline, not run on the patched kernel
        else:
            change = "unchanged"
        rows.append({"test": name, "baseline": bs.value if bs else "", "patched": ps.value if ps else "",
                     "change": change,
                     "baseline_observed": b[name].observed if name in b else "",
                     "patched_observed": p[name].observed if name in p else ""})
    return rows


def _walk_named(t: TestResult, prefix: str = "") -> Iterator[tuple[TestResult, str]]:
    name = prefix + t.name
    yield t, name
    for s in t.subtests:
        yield from _walk_named(s, name + "/")


def expected_flip(base_ar: ArchResult, patched_ar: ArchResult, expectations: verifier.Expectations
                  ) -> dict[str, Any]:
    """The verifier cases whose expected outcome differs between the baseline's and the patched kernel's
    policies must behave as each policy says: that proves the tests exercise the patch. A flip case that
    skipped for want of something (a feature, a config option) on both sides proved nothing: it fails."""
    bp, pp = base_ar.kernel.policy, patched_ar.kernel.policy
    if not bp or not pp:
        return {"cases": [], "ok": False, "why": "one side did not run"}
    bcol, pcol = expectations.column(bp), expectations.column(pp)
    cases = [c for c in expectations.cases if bcol[c] != pcol[c]]
    bt = {t.name: t for t in base_ar.tests if t.suite == "verifier"}
    pt = {t.name: t for t in patched_ar.tests if t.suite == "verifier"}

    def unmet(t: TestResult) -> bool:
        """Skipped because something it needs is missing (not a move the policy refuses, whose SKIP
        carries the refusal's errno)."""
        return t.status == Status.SKIP and t.observed in ("skip", "")

    rows = []
    for c in cases:
        b, p = bt.get(c), pt.get(c)
        detail = ""
        if b is None or p is None:
            state = "no"
        elif unmet(b) and unmet(p):
            state, detail = "no", f"skipped on both sides: baseline: {b.detail}; patched: {p.detail}"
        elif p.status == Status.SKIP and pcol[c] != "skip":
            state, detail = "n/a", p.detail   # not exercised on this kernel (e.g. a uffd feature it lacks)
        else:
            state = "yes" if _as_policy(b, bcol[c]) and _as_policy(p, pcol[c]) else "no"
        rows.append({"case": c, "baseline_expected": bcol[c], "baseline_observed": b.observed if b else "missing",
                     "patched_expected": pcol[c], "patched_observed": p.observed if p else "missing",
                     "flipped": state, "detail": detail})
    flipped = [r for r in rows if r["flipped"] == "yes"]
    ok = bool(flipped) and all(r["flipped"] != "no" for r in rows)
    if not rows:
        why = (f"NOTHING FLIPS: the baseline and patched policies ({bp} vs {pp}) expect the same outcome for every "
               "verifier case, so the verifier does not exercise this series")
    elif not flipped:
        why = "NOTHING FLIPPED: no case the series is about behaved as the policies expect on both kernels"
    elif not ok:
        why = "some cases did not flip as the policies expect: " + \
            ", ".join(r["case"] + (" (skipped on both sides)" if r["detail"].startswith("skipped on both") else "")
                      for r in rows if r["flipped"] == "no")
    else:
        why = ""
    return {"baseline_policy": bp, "patched_policy": pp, "cases": rows, "ok": ok, "why": why,
            "flipped": len(flipped)}


def _as_policy(t: TestResult, expected: str) -> bool:
    """The case behaved as its policy says: it passed, it is a data case the policy expects to SKIP, or it
    showed exactly the known failure the policy expects (XFAIL)."""
    return t.status == Status.PASS or (t.status == Status.SKIP and expected == "skip") or \
        (t.status == Status.XFAIL and expected.startswith("xfail:"))


def _completed(ar: ArchResult) -> bool:
    """The side ran to a verdict about the kernel (pass or kernel misbehaved), not an infrastructure error."""
    return ar.exit_code in (EXIT_PASS, EXIT_KERNEL)


def judge_premerge_arch(b: ArchResult, p: ArchResult, expectations: verifier.Expectations) -> PremergeArch:
    """Regressions, new failing tests, new kernel findings, the expected flip and stop-the-world latency make
    the patched kernel bad (exit 1). A side that could not be verified (infrastructure, exit 2) proves nothing
    by its ERRORs and missing cases: then only a FAIL (the kernel did the wrong thing) and a new kernel finding
    stay evidence against the patch, and the flip and latency are not judged."""
    comp = compare(b.tests, p.tests)
    flip = expected_flip(b, p, expectations)
    base_lines = {_norm(f.line) for f in b.findings}
    new_findings = [f"{f.source}: {f.kind}: {f.line}" for f in p.findings if _norm(f.line) not in base_lines]
    both_ran = _completed(b) and _completed(p)
    bad = ("fail", "error") if _completed(p) else ("fail",)
    regressed = [r["test"] for r in comp if r["change"] == "regressed" and r["patched"] in bad]
    # pass -> skip hides a test the patch may break: a regression, unless the two sides' policies expect the
    # case to behave differently (a flip case the patched policy expects to skip)
    differs = {f"verifier/{r['case']}" for r in flip.get("cases", [])}
    lost = [r["test"] for r in comp if r["change"] == "lost" and r["test"] not in differs]
    regressed += lost
    new_failing = [r["test"] for r in comp if r["change"] == "new" and r["patched"] in bad]
    b_runs = {f"{t.suite}/{t.name}": t.runs for t in b.tests}
    retried = [f"{t.suite}/{t.name} ({t.runs} runs)" for t in p.tests
               if t.runs > 1 and b_runs.get(f"{t.suite}/{t.name}", 1) == 1]
    slower = verifier.latency_regressions(b.tests, p.tests, expectations.suite.pause) if both_ran else []
    reasons = []
    if regressed:
        reasons.append(f"regressed: {', '.join(regressed)}")
    if new_failing:
        reasons.append(f"new tests failing on the patched kernel: {', '.join(new_failing)}")
    if new_findings:
        reasons.append(f"{len(new_findings)} new kernel finding(s) in the patched kernel")
    flip_bad = both_ran and not flip["ok"]
    if flip_bad:
        reasons.append(flip["why"])
    if slower:
        reasons.append("stop-the-world move latency regressed: " + "; ".join(slower))
    if retried:      # a flag for the maintainer, not a verdict: the test's own known hang is retried on both sides
        reasons.append("needed a retry on the patched kernel but not on the baseline (look at their logs): "
                       + ", ".join(retried))
    infra = []
    for side, r in (("baseline", b), ("patched", p)):
        if not _completed(r):
            infra.append(r.exit_code)
            reasons.append(f"{side} could not be verified: "
                           f"{(r.error or '').splitlines()[0] if r.error else r.exit_code}")
    kernel_bad = bool(regressed or new_failing or new_findings or flip_bad or slower)
    return PremergeArch(
        comparison=comp, flip=flip, new_findings=new_findings, reasons=reasons,
        latency={"baseline": verifier.latencies(b.tests), "patched": verifier.latencies(p.tests),
                 "regressed": slower, "pause": {"baseline": verifier.pause_stats(b.tests),
                                                "patched": verifier.pause_stats(p.tests)}},
        exit_code=(code := worst(infra + ([EXIT_KERNEL] if kernel_bad else []))), verdict=VERDICT_OF.get(code, "error"),
        baseline=_side(b), patched=_side(p))


def _side(ar: ArchResult) -> dict[str, Any]:
    """One side's verdict, exit code and error (and its LAVA job's page when it ran on a LAVA server)."""
    side: dict[str, Any] = {"verdict": ar.verdict, "exit_code": ar.exit_code, "error": ar.error}
    if ar.boot.lava is not None and ar.boot.lava.job_url:
        side["job_url"] = ar.boot.lava.job_url
    return side


def _norm(line: str) -> str:
    return strip_timestamp(line).strip()
