"""Bisection in kpipe's own checkout (never the user's tree): over commits with git bisect, or over the
prefixes of a patch series. Each step runs the verify chain incrementally and is marked from its exit code:
0 good, 1 bad (a verdict on the kernel), anything else skip (125) unless --build-failure-is-bad."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from .arches import Arch
from .errors import UsageError
from .patches import Series
from .pipeline import Options, locked_checkout, open_tree, series_of
from .progress import note
from .tree import git


def _step(arches: list[Arch], tree, series: Series, opts: Options, co, run_dir: Path, n: int, label: str,
          timings: dict, build_failure_is_bad: bool) -> dict:
    from .workflows import run_variant, step_mark, worst
    sdir = run_dir / f"step-{n:02d}-{label}"
    results = run_variant(arches, tree, series, opts, sdir, sdir, co, timings)
    code = worst([r.exit_code for r in results.values()])
    mark = step_mark(code, build_failure_is_bad)
    why = "; ".join(f"{a}: {r.error.splitlines()[0]}" for a, r in results.items() if r.error)
    note(f"bisect step {n}: {label}: exit {code} -> {mark}" + (f" ({why})" if why else ""))
    return {"exit_code": code, "mark": mark, "verdict": {0: "pass", 1: "fail"}.get(code, "error"),
            "why": why, "dir": str(sdir)}


def _subject(repo_dir: Path, sha: str) -> str:
    return git(repo_dir, "log", "-1", "--format=%s", sha).stdout.strip()


def bisect_commits(arches: list[Arch], opts: Options, good: str, bad: str, run_dir: Path, timings: dict,
                   build_failure_is_bad: bool) -> dict:
    if not good or not bad:
        raise UsageError("bisect needs --good REV and --bad REV", fix="e.g. invoke bisect --good v5.10 --bad HEAD --tree PATH")
    good_tree = open_tree(opts.tree, good, run_dir / "fetch.log")
    tree = open_tree(opts.tree, bad, run_dir / "fetch.log")
    series = series_of(opts) if (opts.series or opts.patches) else Series((), "none")
    steps: list[dict] = []
    with locked_checkout(tree, run_dir / "apply.log") as co:
        wt = co.path
        if git(wt, "merge-base", "--is-ancestor", good_tree.base, tree.base, check=False).returncode:
            raise UsageError(f"--good {good} is not an ancestor of --bad {bad}", fix="swap them or pick other revisions")
        count = int(git(wt, "rev-list", "--count", f"{good_tree.base}..{tree.base}").stdout.strip())
        git(wt, "bisect", "reset", "HEAD", check=False)
        out = git(wt, "bisect", "start", "--no-checkout", tree.base, good_tree.base).stdout
        max_steps = count + 2
        first_bad = None
        while len(steps) < max_steps:
            sha = git(wt, "rev-parse", "BISECT_HEAD").stdout.strip()
            step_tree = replace(tree, base=sha, base_label=sha[:12])
            st = _step(arches, step_tree, series, opts, co, run_dir, len(steps) + 1, sha[:12], timings,
                       build_failure_is_bad)
            st.update({"commit": sha, "subject": _subject(wt, sha)})
            steps.append(st)
            res = git(wt, "bisect", st["mark"], sha, check=False)
            out = (res.stdout or "") + (res.stderr or "")
            m = re.search(r"^([0-9a-f]{40}) is the first bad commit", out, re.M)
            if m:
                first_bad = {"commit": m.group(1), "subject": _subject(wt, m.group(1))}
                break
            if "only 'skip'ped commits left" in out or res.returncode not in (0,):
                break
        log = git(wt, "bisect", "log", check=False).stdout
        (run_dir / "bisect.log").write_text(log)
        git(wt, "bisect", "reset", "HEAD", check=False)
    why = "" if first_bad else out.strip().splitlines()[-1] if out.strip() else "bisection did not converge"
    if first_bad:
        note(f"bisect: first bad commit {first_bad['commit'][:12]} {first_bad['subject']} after {len(steps)} step(s)")
    return {"mode": "commits", "good": good_tree.base, "bad": tree.base, "candidates": count, "steps": steps,
            "first_bad": first_bad, "why": why, "log": "bisect.log"}


def bisect_series(arches: list[Arch], opts: Options, run_dir: Path, timings: dict, build_failure_is_bad: bool) -> dict:
    """Which patch of the series first breaks: binary search over prefixes (0 patches good, all bad)."""
    series = series_of(opts)
    n = len(series.patches)
    if n == 0:
        raise UsageError("--series mode needs a series with patches", fix="pass --series FILE or --patch FILE")
    tree = open_tree(opts.tree, opts.base, run_dir / "fetch.log")
    steps: list[dict] = []
    marks: dict[int, str] = {}
    with locked_checkout(tree, run_dir / "apply.log") as co:
        def test(k: int) -> str:
            sub = Series(series.patches[:k], series.source)
            label = f"{k}-of-{n}"
            st = _step(arches, tree, sub, opts, co, run_dir, len(steps) + 1, label, timings, build_failure_is_bad)
            st.update({"commit": f"{k} patch(es)", "subject": series.patches[k - 1].subject if k else "(base)"})
            steps.append(st)
            marks[k] = st["mark"]
            return st["mark"]
        if test(n) != "bad":
            return {"mode": "series", "steps": steps, "first_bad": None,
                    "why": f"the whole series is not bad ({marks[n]})"}
        if test(0) != "good":
            return {"mode": "series", "steps": steps, "first_bad": None,
                    "why": f"the base without patches is not good ({marks[0]})"}
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
                return {"mode": "series", "steps": steps, "first_bad": None,
                        "why": f"only skipped prefixes between {lo} and {hi} patches"}
    pf = series.patches[hi - 1]
    note(f"bisect: first bad patch {hi}/{n}: {pf.path.name} ({pf.subject}) after {len(steps)} step(s)")
    return {"mode": "series", "steps": steps, "first_bad": {"commit": pf.path.name, "subject": pf.subject, "index": hi}}
