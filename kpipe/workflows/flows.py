"""The workflows users run: verify, premerge, bisect. Short functions over the runner (kpipe/workflows/runner.py) that
decide the verdict; each returns a RunResult whose exit_code follows the contract in errors.py."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from . import compile_checks
from ..report import writers as report
from ..checks import verifier
from ..arches import Arch, resolve_arches
from ..source.checkout import Checkout
from ..errors import EXIT_INFRA, EXIT_KERNEL, EXIT_PASS, KpipeError
from ..source.patches import Series
from .pipeline import Options, locked_checkout, new_run_dir, resolve_tree, run_suite, series_of, with_suite
from ..progress import note, phase
from ..report.results import ArchResult, PremergeArch, RunResult
from ..source.tree import Tree
from .comparison import judge_premerge_arch
from .runner import VERDICT_OF, Variant, _arch_result, _record_error, check_options, run_variant, worst


def _finish(run: RunResult, run_dir: Path, started: float, require_coverage: bool = False) -> RunResult:
    uncovered = annotate_findings_and_coverage(run)
    if uncovered and require_coverage:
        run.extra.exit_code_extra = worst([run.extra.exit_code_extra or EXIT_PASS, EXIT_KERNEL])
        run.extra.error = (run.extra.error + "; " if run.extra.error else "") + \
            "--require-coverage: changed line(s) no test executed: " + "; ".join(uncovered)
    codes = [ar.exit_code for ar in run.arches.values()] + [run.extra.exit_code_extra or EXIT_PASS]
    run.exit_code = worst(codes)
    run.verdict = VERDICT_OF.get(run.exit_code, "error")
    run.seconds = round(time.monotonic() - started, 2)
    report.write_all(run, run_dir)
    return run


def annotate_findings_and_coverage(run: RunResult) -> list[str]:
    """Crash signatures on every finding (folded over arches and sides) and the changed lines' coverage over
    the arches (kpipe/checks/signatures.py, kpipe/checks/coverage.py)."""
    from ..checks import coverage, signatures
    signatures.annotate_run(run)
    per_arch = {name: ar.coverage for name, ar in run.arches.items() if ar.coverage}
    uncovered: list[str] = []
    if per_arch:
        run.extra.coverage = coverage.merge(per_arch)
        for c in run.extra.coverage:
            if c["never_executed"]:
                note(f"WARNING: {c['file']}: changed line(s) {', '.join(map(str, c['never_executed']))} "
                     f"executed by no test on any arch ({', '.join(c['arches'])})")
                uncovered.append(f"{c['file']}:{','.join(map(str, c['never_executed']))}")
    return uncovered


def _new_run(workflow: str, opts: Options, repro: str) -> tuple[RunResult, Path]:
    run_dir = new_run_dir(opts.out, workflow)
    run = RunResult(workflow=workflow, reproducer=repro, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    out_dir=str(run_dir))
    note(f"{workflow}: output folder {run_dir} (logs, result.json, junit.xml, summary.md, report.html)")
    return run, run_dir


def _new_series_run(workflow: str, opts: Options, repro: str, arches: list[Arch] | None = None
                    ) -> tuple[RunResult, Path, Series, Options]:
    """A run of ``opts``' series: the series read, the run's suite chosen from it (``opts`` returned with it),
    every option checked against ``arches`` and that suite before anything is fetched or built, the run
    folder, and the series described in the result."""
    series = series_of(opts)
    opts = with_suite(opts, series)
    if arches is not None:
        check_options(opts, arches)
    run, run_dir = _new_run(workflow, opts, repro)
    run.extra.series = series.describe()
    return run, run_dir, series, opts


# ---------------------------------------------------------------- verify

def verify(opts: Options, repro: str = "") -> RunResult:
    started = time.monotonic()
    arches = resolve_arches(opts.arch)
    run, run_dir, series, opts = _new_series_run("verify", opts, repro, arches)
    timings: dict[str, float] = {}
    try:
        tree = resolve_tree(opts, run_dir / "fetch.log", timings)
        with locked_checkout(tree, run_dir / "apply.log") as co:
            run.arches = run_variant(arches, tree, series, opts, run_dir, run_dir, co, timings)
    except KpipeError as e:
        for a in arches:
            run.arches.setdefault(a.name, _record_error(_arch_result(a, None), e))
    run.extra.phases = timings
    return _finish(run, run_dir, started)


# ---------------------------------------------------------------- premerge

class Sides(Protocol):
    """Where premerge's two sides (the baseline and the patched kernel, every arch) boot and run their tests:
    here (LocalSides) or as LAVA jobs (kpipe.lava.premerge.LabSides). premerge judges what they give alike."""

    def check(self, run_dir: Path, timings: dict[str, float]) -> None:
        """Before anything is fetched or built: what the sides need answers (a KpipeError otherwise)."""

    def start(self, arches: list[Arch], tree: Tree, variants: list[Variant], opts: Options, co: Checkout,
              timings: dict[str, float], touched: list[str]) -> None:
        """In premerge's locked checkout: every variant built and its runs done or started; the checkout is left
        at the last variant (patched) for the compile checks, which run before finish()."""

    def finish(self, run: RunResult) -> None:
        """Every variant's ``results`` filled (waiting for what start() started); what the sides add to the run."""

    def cancel(self) -> None:
        """premerge is unwinding between start() and finish() (an interruption): stop what start() started."""


class LocalSides:
    """Each side on this machine, one after the other: run_variant (builds, QEMU boots, tests over SSH)."""

    def check(self, run_dir: Path, timings: dict[str, float]) -> None:
        pass

    def start(self, arches: list[Arch], tree: Tree, variants: list[Variant], opts: Options, co: Checkout,
              timings: dict[str, float], touched: list[str]) -> None:
        for v in variants:
            v.results = run_variant(arches, tree, v.series, opts, v.dir, v.dir, co, timings, touched)

    def finish(self, run: RunResult) -> None:
        pass

    def cancel(self) -> None:
        pass


def premerge(opts: Options, repro: str = "", require_coverage: bool = False, sides: Sides | None = None
             ) -> RunResult:
    from ..source import checkpatch, tags

    started = time.monotonic()
    arches = resolve_arches(opts.arch or "all")
    run, run_dir, series, opts = _new_series_run("premerge", opts, repro, arches)
    timings: dict[str, float] = {}
    sides = sides or LocalSides()
    variants = [Variant("baseline", Series((), "none"), run_dir / "baseline"),
                Variant("patched", series, run_dir / "patched")]
    extra_code = EXIT_PASS
    warn_res: dict[str, Any] = {}
    warn_why: list[str] = []
    try:
        sides.check(run_dir, timings)
        tree = resolve_tree(opts, run_dir / "fetch.log", timings)
        with locked_checkout(tree, run_dir / "apply.log") as co:
            with phase("checkpatch", f"{len(series.patches)} patch(es)", timings):
                cp = checkpatch.run_checkpatch(co, series, run_dir / "checkpatch.log")
            with phase("tags", "Signed-off-by, Fixes:", timings):
                tag_res = tags.check_series(series, co.path, co.tree.base, cp)
            sides.start(arches, tree, variants, opts, co, timings, series.touched)
            try:
                if opts.warnings:
                    warn_res, warn_code, warn_why = compile_checks.for_premerge(opts, co, series, arches, run_dir,
                                                                                timings)
                sides.finish(run)
            except BaseException:
                sides.cancel()
                raise
    except KpipeError as e:
        note(e.render())
        run.extra.error = e.message
        extra_code = e.exit_code
        cp, tag_res = [], []
    base, patched = variants
    expectations = verifier.load_expectations(run_suite(opts))
    per_arch: dict[str, PremergeArch] = {}
    for a in arches:
        b, p = base.results.get(a.name), patched.results.get(a.name)
        if b is None or p is None:
            continue
        j = judge_premerge_arch(b, p, expectations)
        per_arch[a.name] = j
        code, reasons = j.exit_code, j.reasons
        # the run's per-arch result is the patched kernel's, with the premerge verdict
        ar = replace(p)
        ar.exit_code, ar.verdict = code, VERDICT_OF.get(code, "error")
        if reasons:
            ar.error = "; ".join(reasons)
        run.arches[a.name] = ar
    for a in arches:
        if a.name not in run.arches:
            run.arches[a.name] = patched.results.get(a.name) or base.results.get(a.name) or \
                ArchResult(arch=a.name, error=run.extra.error or "not run")
    if warn_res:
        run.extra.warnings, extra_code = warn_res, worst([extra_code, warn_code])
        run.extra.error = "; ".join(filter(None, [run.extra.error, *warn_why])) or None
    cp_errors = sum(r["errors"] for r in cp)
    tag_errors = tags.reasons(tag_res)       # as a checkpatch error: a missing/foreign sign-off, a Fixes: to nowhere
    for why in tag_errors:
        note(f"tags: {why}")
    if cp_errors or tag_errors:
        extra_code = worst([extra_code, EXIT_KERNEL])
    run.extra.premerge, run.extra.checkpatch, run.extra.exit_code_extra = per_arch, cp, extra_code
    run.extra.tags = tag_res
    run.extra.baseline, run.extra.phases = dict(base.results), timings
    return _finish(run, run_dir, started, require_coverage)


# ---------------------------------------------------------------- bisect

def bisect(opts: Options, good: str | None, bad: str | None, build_failure_is_bad: bool = False,
           series_mode: bool = False,
           repro: str = "") -> RunResult:
    from . import bisection
    started = time.monotonic()
    arches = resolve_arches(opts.arch)
    opts = with_suite(opts, series_of(opts))
    check_options(opts, arches)
    run, run_dir = _new_run("bisect", opts, repro)
    timings: dict[str, float] = {}
    try:
        if series_mode:
            outcome = bisection.bisect_series(arches, opts, run_dir, timings, build_failure_is_bad)
        else:
            outcome = bisection.bisect_commits(arches, opts, good, bad, run_dir, timings, build_failure_is_bad)
    except KpipeError as e:
        note(e.render())
        run.exit_code = e.exit_code
        run.verdict = "error"
        run.extra.error = e.message
        report.write_all(run, run_dir)
        return run
    run.extra.bisect, run.extra.phases = outcome, timings
    if not outcome.first_bad:
        note(f"bisect: no first bad commit: {outcome.why or ''}" + (f"\n  fix: {outcome.fix}" if outcome.fix else ""))
    for a in arches:
        run.arches[a.name] = ArchResult(arch=a.name, verdict="pass" if outcome.first_bad else "error",
                                        exit_code=EXIT_PASS if outcome.first_bad else EXIT_INFRA)
    run.extra.exit_code_extra = EXIT_PASS if outcome.first_bad else EXIT_INFRA
    return _finish(run, run_dir, started)


def warnings(opts: Options, repro: str = "", allow_new_warnings: bool = False,
             tools: tuple[str, ...] = compile_checks.TOOLS) -> RunResult:
    """`kpipe warnings`: only the compile checks (no boot), every arch asked (default all)."""
    from .pipeline import apply
    started = time.monotonic()
    arches = resolve_arches(opts.arch or "all")
    run, run_dir, series, opts = _new_series_run("warnings", opts, repro)
    timings: dict[str, float] = {}
    try:
        tree = resolve_tree(opts, run_dir / "fetch.log", timings)
        with locked_checkout(tree, run_dir / "apply.log") as co:
            applied = apply(co, series, run_dir / "apply.log", timings)
            reqs = [compile_checks.request_for(a, applied.checkout, opts) for a in arches]
            res = compile_checks.check_series(reqs, applied.checkout, series.touched, run_dir, tools, opts.jobs,
                                              timings)
        code, why = compile_checks.exit_code(res, allow_new_warnings)
        run.extra.warnings = res
        for w in why:
            note(w)
        if why:
            run.extra.error = "; ".join(why)
    except KpipeError as e:
        note(e.render())
        run.extra.error = e.message
        code = e.exit_code
    run.extra.exit_code_extra = code
    run.extra.phases = timings
    return _finish(run, run_dir, started)
