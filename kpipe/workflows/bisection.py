"""Bisection in kpipe's own checkout (never the user's tree): over commits with git bisect, or over the
prefixes of a patch series. Each step runs the verify chain incrementally and is marked from its exit code:
0 good, 1 bad (a verdict on the kernel), anything else skip (125) unless --build-failure-is-bad.

A bisection never rests on an unchecked assumption: both endpoints are verified first (good must pass, bad must
fail under the chosen policy), else it stops with exit 2 saying what each endpoint gave and which --expect
matches what the kernel did. A skipped step says why; "only skipped commits left" names the candidates."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from ..arches import Arch
from ..source.checkout import Checkout
from ..errors import EXIT_MEANING, UsageError
from ..source.patches import Series
from .pipeline import Options, locked_checkout, run_suite, series_of
from ..progress import note
from ..report.results import ArchResult, BisectOutcome, BisectStep, Commit
from .runner import run_variant, step_mark, worst
from ..checks.suite import Suite
from ..source.tree import Tree, git, open_tree


def _step(arches: list[Arch], tree: Tree, series: Series, opts: Options, co: Checkout, run_dir: Path, n: int,
          label: str, timings: dict[str, float], build_failure_is_bad: bool) -> BisectStep:
    sdir = run_dir / f"step-{n:02d}-{label}"
    results = run_variant(arches, tree, series, opts, sdir, sdir, co, timings)
    code = worst([r.exit_code for r in results.values()])
    mark = step_mark(code, build_failure_is_bad)
    why = "; ".join(f"{a}: {r.error.splitlines()[0]}" for a, r in results.items() if r.error)
    if mark == "skip" and not why:
        why = f"exit {code} ({EXIT_MEANING.get(code, '?')})"
    note(f"bisect step {n}: {label}: exit {code} -> {mark}" + (f" ({why})" if why else ""))
    return BisectStep(exit_code=code, mark=mark, verdict={0: "pass", 1: "fail"}.get(code, "error"), why=why,
                      dir=str(sdir), policies=matching_policies(results, run_suite(opts)),
                      policy=next((r.kernel.policy for r in results.values() if r.kernel.policy), ""))


def matching_policies(results: dict[str, ArchResult], suite: Suite) -> list[str]:
    """The suite's verifier policies under which every case the kernel answered (an errno or ok, not a skip) is
    what that policy expects: which --expect describes this kernel."""
    from ..checks.verifier import load_expectations
    exp = load_expectations(suite)
    seen: dict[str, str] = {}
    for r in results.values():
        for t in r.tests:
            if t.suite == "verifier" and t.observed and t.observed not in ("skip", "missing") and \
                    t.status.value in ("pass", "fail"):
                seen[t.name] = t.observed
    if not seen:
        return []
    def answer(expected: str | None) -> str | None:      # "xfail:VMLCK": the known failure's own code
        return expected.split(":", 1)[1] if expected and expected.startswith("xfail:") else expected

    return [p for p in exp.policies if all(answer(exp.column(p).get(c)) in (o, None) for c, o in seen.items())]


def _endpoint_problem(which: str, rev: str, st: BisectStep, want: str) -> str:
    code = st.exit_code if st.exit_code is not None else -1
    line = f"--{which} {rev} should be {want} but gave exit {code} ({EXIT_MEANING.get(code, '?')})"
    if st.policy:
        line += f" under policy {st.policy}"
    if st.why:
        line += f": {st.why}"
    return line


def _endpoint_fix(good: BisectStep, bad: BisectStep) -> str:
    hints = []
    if good.mark != "good" and good.policies:
        hints.append(f"the good endpoint's kernel behaves as --expect {' or '.join(good.policies)}")
    if bad.mark != "bad" and bad.policies:
        hints.append(f"the bad endpoint's kernel behaves as --expect {' or '.join(bad.policies)}")
    skipped = [s for s in (good, bad) if s.mark == "skip"]
    if skipped:
        hints.append("an endpoint could not be verified (build/boot/infrastructure): pick a revision that builds "
                     "and boots, or fix the error shown")
    if not hints:
        hints.append("pass --expect with the policy your good kernel follows, or swap --good/--bad")
    return "; ".join(hints) + " (each endpoint's report is in its step folder)"


def _subject(repo_dir: Path, sha: str) -> str:
    return git(repo_dir, "log", "-1", "--format=%s", sha).stdout.strip()


def bisect_commits(arches: list[Arch], opts: Options, good: str | None, bad: str | None, run_dir: Path,
                   timings: dict[str, float], build_failure_is_bad: bool) -> BisectOutcome:
    if not good or not bad:
        raise UsageError("bisect needs --good REV and --bad REV",
                         fix="e.g. invoke bisect --good v5.10 --bad HEAD --tree PATH")
    good_tree = open_tree(opts.tree, good, run_dir / "fetch.log")
    tree = open_tree(opts.tree, bad, run_dir / "fetch.log")
    series = series_of(opts) if (opts.series or opts.patches or opts.thread) else Series((), "none")
    steps: list[BisectStep] = []
    with locked_checkout(tree, run_dir / "apply.log") as co:
        wt = co.path
        if git(wt, "merge-base", "--is-ancestor", good_tree.base, tree.base, check=False).returncode:
            raise UsageError(f"--good {good} is not an ancestor of --bad {bad}",
                             fix="swap them or pick other revisions")
        count = int(git(wt, "rev-list", "--count", f"{good_tree.base}..{tree.base}").stdout.strip())
        ends: dict[str, BisectStep] = {}
        for which, rev, t in (("good", good, good_tree), ("bad", bad, tree)):
            st = _step(arches, replace(tree, base=t.base, base_label=t.base[:12]), series, opts, co, run_dir,
                       len(steps) + 1, f"{which}-{t.base[:12]}", timings, build_failure_is_bad)
            st.commit, st.subject, st.endpoint = t.base, _subject(wt, t.base), which
            steps.append(st)
            ends[which] = st
        problems = [_endpoint_problem(w, r, ends[w], w) for w, r in (("good", good), ("bad", bad))
                    if ends[w].mark != w]
        if problems:
            why = "endpoint check failed: " + "; ".join(problems)
            fix = _endpoint_fix(ends["good"], ends["bad"])
            note(f"bisect: {why}")
            note(f"bisect: fix: {fix}")
            return BisectOutcome(mode="commits", good=good_tree.base, bad=tree.base, candidates=count, steps=steps,
                                 why=why, fix=fix, log="")
        git(wt, "bisect", "reset", "HEAD", check=False)
        out = git(wt, "bisect", "start", "--no-checkout", tree.base, good_tree.base).stdout
        max_steps = len(steps) + count + 2
        first_bad: Commit | None = None
        while len(steps) < max_steps:
            sha = git(wt, "rev-parse", "BISECT_HEAD").stdout.strip()
            step_tree = replace(tree, base=sha, base_label=sha[:12])
            st = _step(arches, step_tree, series, opts, co, run_dir, len(steps) + 1, sha[:12], timings,
                       build_failure_is_bad)
            st.commit, st.subject = sha, _subject(wt, sha)
            steps.append(st)
            res = git(wt, "bisect", st.mark or "skip", sha, check=False)
            out = (res.stdout or "") + (res.stderr or "")
            m = re.search(r"^([0-9a-f]{40}) is the first bad commit", out, re.M)
            if m:
                first_bad = Commit(commit=m.group(1), subject=_subject(wt, m.group(1)))
                break
            if "only 'skip'ped commits left" in out or res.returncode not in (0,):
                break
        candidates = [Commit(commit=c, subject=_subject(wt, c)) for c in _skipped_candidates(out)] \
            if not first_bad else []
        log = git(wt, "bisect", "log", check=False).stdout
        (run_dir / "bisect.log").write_text(log)
        git(wt, "bisect", "reset", "HEAD", check=False)
    if first_bad:
        why = ""
        note(f"bisect: first bad commit {(first_bad.commit or '')[:12]} {first_bad.subject} after {len(steps)} step(s)")
    elif candidates:
        why = (f"only skipped commits left: the first bad commit could be any of {len(candidates)}: " +
               ", ".join(f"{(c.commit or '')[:12]} {c.subject}" for c in candidates))
    else:
        why = out.strip().splitlines()[-1] if out.strip() else "bisection did not converge"
    return BisectOutcome(mode="commits", good=good_tree.base, bad=tree.base, candidates=count, steps=steps,
                         first_bad=first_bad, why=why, log="bisect.log", skipped_candidates=candidates)


def _skipped_candidates(out: str) -> list[str]:
    """The commits git lists after "The first bad commit could be any of:"."""
    if "could be any of" not in out:
        return []
    return re.findall(r"^([0-9a-f]{40})\b", out.split("could be any of:", 1)[1], re.M)


def bisect_series(arches: list[Arch], opts: Options, run_dir: Path, timings: dict[str, float],
                  build_failure_is_bad: bool) -> BisectOutcome:
    """Which patch of the series first breaks: binary search over prefixes (0 patches good, all bad)."""
    series = series_of(opts)
    n = len(series.patches)
    if n == 0:
        raise UsageError("--series mode needs a series with patches", fix="pass --series FILE or --patch FILE")
    tree = open_tree(opts.tree, opts.base, run_dir / "fetch.log")
    steps: list[BisectStep] = []
    marks: dict[int, str] = {}
    with locked_checkout(tree, run_dir / "apply.log") as co:
        def test(k: int) -> str:
            sub = Series(series.patches[:k], series.source)
            label = f"{k}-of-{n}"
            st = _step(arches, tree, sub, opts, co, run_dir, len(steps) + 1, label, timings, build_failure_is_bad)
            st.commit, st.subject = f"{k} patch(es)", series.patches[k - 1].subject if k else "(base)"
            steps.append(st)
            mark = st.mark or "skip"
            marks[k] = mark
            return mark
        test(n)
        test(0)
        all_st, none_st = steps[0], steps[1]
        problems = [_endpoint_problem(w, r, st, m) for w, r, st, m in
                    (("good", "(the base, no patches)", none_st, "good"), ("bad", f"(all {n} patches)", all_st, "bad"))
                    if st.mark != m]
        if problems:
            return BisectOutcome(mode="series", steps=steps, why="endpoint check failed: " + "; ".join(problems),
                                 fix=_endpoint_fix(none_st, all_st))
        lo, hi = 0, n
        while hi - lo > 1:
            mid = (lo + hi) // 2
            m = test(mid)
            probe = [k for k in range(mid + 1, hi)] + [k for k in range(mid - 1, lo, -1)]
            while m == "skip" and probe:
                mid = probe.pop(0)
                m = test(mid)
            if m == "good":
                lo = mid
            elif m == "bad":
                hi = mid
            else:
                return BisectOutcome(mode="series", steps=steps,
                                     why=f"only skipped prefixes between {lo} and {hi} patches")
    pf = series.patches[hi - 1]
    note(f"bisect: first bad patch {hi}/{n}: {pf.path.name} ({pf.subject}) after {len(steps)} step(s)")
    return BisectOutcome(mode="series", steps=steps,
                         first_bad=Commit(commit=pf.path.name, subject=pf.subject, index=hi))
