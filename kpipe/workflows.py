"""The workflows users run: verify, premerge, bisect. Short functions over the runner (kpipe/runner.py) that
decide the verdict; each returns a RunResult whose exit_code follows the contract in errors.py."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from . import report, verifier
from .arches import resolve_arches
from .errors import EXIT_INFRA, EXIT_KERNEL, EXIT_PASS, KpipeError
from .patches import Series
from .pipeline import Options, locked_checkout, new_run_dir, resolve_tree, series_of
from .progress import note, phase
from .results import ArchResult, RunResult, Status, TestResult
from .runner import (VERDICT_OF, Prepared, Variant, _arch_result, _record_error, boot_and_run_tests,  # noqa: F401
                     judge, prepare_arch, run_variant, step_mark, worst)


def _finish(run: RunResult, run_dir: Path, started: float) -> RunResult:
    codes = [ar.exit_code for ar in run.arches.values()] + [run.extra.get("exit_code_extra", EXIT_PASS)]
    run.exit_code = worst(codes)
    run.verdict = VERDICT_OF.get(run.exit_code, "error")
    run.seconds = round(time.monotonic() - started, 2)
    report.write_all(run, run_dir)
    return run


def _new_run(workflow: str, opts: Options, repro: str) -> tuple[RunResult, Path]:
    run_dir = new_run_dir(opts.out, workflow)
    run = RunResult(workflow=workflow, reproducer=repro, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    out_dir=str(run_dir))
    note(f"{workflow}: output folder {run_dir} (logs, result.json, junit.xml, summary.md, report.html)")
    return run, run_dir


# ---------------------------------------------------------------- verify

def verify(opts: Options, repro: str = "") -> RunResult:
    started = time.monotonic()
    arches = resolve_arches(opts.arch)
    series = series_of(opts)
    run, run_dir = _new_run("verify", opts, repro)
    run.extra["series"] = series.describe()
    timings: dict = {}
    try:
        tree = resolve_tree(opts, run_dir / "fetch.log", timings)
        with locked_checkout(tree, run_dir / "apply.log") as co:
            run.arches = run_variant(arches, tree, series, opts, run_dir, run_dir, co, timings)
    except KpipeError as e:
        for a in arches:
            run.arches.setdefault(a.name, _record_error(_arch_result(a, None), e))
    run.extra["phases"] = timings
    return _finish(run, run_dir, started)


# ---------------------------------------------------------------- premerge

def compare(base: list[TestResult], patched: list[TestResult]) -> list[dict]:
    """Per test: fixed (fail->pass), regressed (pass->fail), unchanged, new, gone."""
    def flat(ts):
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
        else:
            change = "unchanged"
        rows.append({"test": name, "baseline": bs.value if bs else "", "patched": ps.value if ps else "",
                     "change": change,
                     "baseline_observed": b[name].observed if name in b else "",
                     "patched_observed": p[name].observed if name in p else ""})
    return rows


def _walk_named(t: TestResult, prefix: str = ""):
    name = prefix + t.name
    yield t, name
    for s in t.subtests:
        yield from _walk_named(s, name + "/")


def expected_flip(base_ar: ArchResult, patched_ar: ArchResult, expectations) -> dict:
    """The verifier cases whose expected outcome differs between the baseline's and the patched kernel's
    policies must behave as each policy says: that proves the tests exercise the patch. A flip case that
    skipped for want of something (a feature, a config option) on both sides proved nothing: it fails."""
    bp, pp = base_ar.kernel.get("policy"), patched_ar.kernel.get("policy")
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


def premerge(opts: Options, repro: str = "") -> RunResult:
    from . import checkpatch

    started = time.monotonic()
    arches = resolve_arches(opts.arch or "all")
    series = series_of(opts)
    run, run_dir = _new_run("premerge", opts, repro)
    run.extra["series"] = series.describe()
    timings: dict = {}
    variants = [Variant("baseline", Series((), "none"), run_dir / "baseline"),
                Variant("patched", series, run_dir / "patched")]
    extra_code = EXIT_PASS
    try:
        tree = resolve_tree(opts, run_dir / "fetch.log", timings)
        with locked_checkout(tree, run_dir / "apply.log") as co:
            with phase("checkpatch", f"{len(series.patches)} patch(es)", timings):
                cp = checkpatch.run_checkpatch(co, series, run_dir / "checkpatch.log")
            for v in variants:
                v.results = run_variant(arches, tree, v.series, opts, v.dir, v.dir, co, timings, series.touched)
    except KpipeError as e:
        note(e.render())
        run.extra["error"] = e.message
        extra_code = e.exit_code
        cp = []
    base, patched = variants
    expectations = verifier.load_expectations()
    per_arch = {}
    for a in arches:
        b, p = base.results.get(a.name), patched.results.get(a.name)
        if b is None or p is None:
            continue
        comp = compare(b.tests, p.tests)
        flip = expected_flip(b, p, expectations)
        base_lines = {_norm(f.line) for f in b.findings}
        new_findings = [f"{f.source}: {f.kind}: {f.line}" for f in p.findings if _norm(f.line) not in base_lines]
        regressed = [r["test"] for r in comp if r["change"] == "regressed"]
        new_failing = [r["test"] for r in comp if r["change"] == "new" and r["patched"] in ("fail", "error")]
        reasons = []
        if regressed:
            reasons.append(f"regressed: {', '.join(regressed)}")
        if new_failing:
            reasons.append(f"new tests failing on the patched kernel: {', '.join(new_failing)}")
        if new_findings:
            reasons.append(f"{len(new_findings)} new kernel finding(s) in the patched kernel")
        if not flip["ok"]:
            reasons.append(flip["why"])
        slower = verifier.latency_regressions(b.tests, p.tests)
        if slower:
            reasons.append("stop-the-world move latency regressed: " + "; ".join(slower))
        infra = []
        for side, r in (("baseline", b), ("patched", p)):
            if r.exit_code not in (EXIT_PASS, EXIT_KERNEL):
                infra.append(r.exit_code)
                reasons.append(f"{side} could not be verified: {(r.error or '').splitlines()[0] if r.error else r.exit_code}")
        kernel_bad = bool(regressed or new_failing or new_findings or not flip["ok"] or slower)
        code = worst(infra + ([EXIT_KERNEL] if kernel_bad else []))
        per_arch[a.name] = {"comparison": comp, "flip": flip, "new_findings": new_findings, "reasons": reasons,
                            "latency": {"baseline": verifier.latencies(b.tests), "patched": verifier.latencies(p.tests),
                                        "regressed": slower},
                            "exit_code": code, "verdict": VERDICT_OF.get(code, "error"),
                            "baseline": {"verdict": b.verdict, "exit_code": b.exit_code, "error": b.error},
                            "patched": {"verdict": p.verdict, "exit_code": p.exit_code, "error": p.error}}
        # the run's per-arch result is the patched kernel's, with the premerge verdict
        ar = replace(p)
        ar.exit_code, ar.verdict = code, VERDICT_OF.get(code, "error")
        if reasons:
            ar.error = "; ".join(reasons)
        run.arches[a.name] = ar
    for a in arches:
        if a.name not in run.arches:
            run.arches[a.name] = patched.results.get(a.name) or base.results.get(a.name) or \
                ArchResult(arch=a.name, error=run.extra.get("error", "not run"))
    cp_errors = sum(r["errors"] for r in cp)
    if cp_errors:
        extra_code = worst([extra_code, EXIT_KERNEL])
    run.extra.update({"premerge": per_arch, "checkpatch": cp, "exit_code_extra": extra_code,
                      "baseline": {k: v for k, v in base.results.items()}, "phases": timings})
    return _finish(run, run_dir, started)


def _norm(line: str) -> str:
    from .findings import strip_timestamp
    return strip_timestamp(line).strip()


# ---------------------------------------------------------------- bisect

def bisect(opts: Options, good: str, bad: str, build_failure_is_bad: bool = False, series_mode: bool = False,
           repro: str = "") -> RunResult:
    from . import bisection
    started = time.monotonic()
    arches = resolve_arches(opts.arch)
    run, run_dir = _new_run("bisect", opts, repro)
    timings: dict = {}
    try:
        if series_mode:
            outcome = bisection.bisect_series(arches, opts, run_dir, timings, build_failure_is_bad)
        else:
            outcome = bisection.bisect_commits(arches, opts, good, bad, run_dir, timings, build_failure_is_bad)
    except KpipeError as e:
        note(e.render())
        run.exit_code = e.exit_code
        run.verdict = "error"
        run.extra["error"] = e.message
        report.write_all(run, run_dir)
        return run
    run.extra.update({"bisect": outcome, "phases": timings})
    if not outcome.get("first_bad"):
        note(f"bisect: no first bad commit: {outcome.get('why', '')}" +
             (f"\n  fix: {outcome['fix']}" if outcome.get("fix") else ""))
    for a in arches:
        run.arches[a.name] = ArchResult(arch=a.name, verdict="pass" if outcome.get("first_bad") else "error",
                                        exit_code=EXIT_PASS if outcome.get("first_bad") else EXIT_INFRA)
    run.extra["exit_code_extra"] = EXIT_PASS if outcome.get("first_bad") else EXIT_INFRA
    return _finish(run, run_dir, started)
