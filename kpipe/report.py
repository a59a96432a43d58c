"""Reports of a run: result.json, junit.xml, summary.md, report.html (+ premerge.md), and the terminal table."""
from __future__ import annotations

import sys
from pathlib import Path

import jinja2

from .results import RunResult, Status, to_dict, write_json, write_junit

_env = jinja2.Environment(loader=jinja2.PackageLoader("kpipe", "templates"), autoescape=jinja2.select_autoescape(["html"]),
                          trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def _rel(path: str, run_dir: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except (ValueError, OSError):
        return path


def context(run: RunResult, run_dir: Path) -> dict:
    d = to_dict(run)
    for ar in d["arches"].values():
        ar["failures"] = [t for t in _flat(ar["tests"]) if t["status"] in (Status.FAIL.value, Status.ERROR.value)]
        ar["logs"] = {k: _rel(v, run_dir) for k, v in ar.get("logs", {}).items()}
    return {"run": d, "ok": run.exit_code == 0}


def _flat(tests: list[dict], prefix: str = "") -> list[dict]:
    out = []
    for t in tests:
        name = prefix + t["name"]
        out.append({**t, "name": name})
        out += _flat(t.get("subtests", []), name + "/")
    return out


def render(name: str, ctx: dict) -> str:
    return _env.get_template(name).render(**ctx)


def write_all(run: RunResult, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run, run_dir / "result.json")
    write_junit(run, run_dir / "junit.xml")
    ctx = context(run, run_dir)
    (run_dir / "summary.md").write_text(render("summary.md.j2", ctx))
    (run_dir / "report.html").write_text(render("report.html.j2", ctx))
    if run.workflow == "premerge":
        (run_dir / "premerge.md").write_text(render("premerge.md.j2", ctx))
    print_table(run)


def table_lines(run: RunResult) -> list[str]:
    lines = []
    for name, ar in run.arches.items():
        head = f"{name}: {ar.verdict.upper()} (exit {ar.exit_code})"
        if ar.kernel.get("release"):
            head += f"  kernel {ar.kernel['release']}"
        if ar.build:
            head += f"  build {'cached' if ar.build.get('cached') else str(ar.build.get('seconds')) + 's'}"
        if ar.boot:
            head += f"  boot {ar.boot.get('seconds')}s {ar.boot.get('accel', '')}"
        lines.append(head)
        counts = ar.counts()
        if counts:
            lines.append(f"  {'suite':<12} {'passed':>6} {'failed':>6} {'skipped':>7} {'errors':>6}")
            for suite, c in counts.items():
                lines.append(f"  {suite:<12} {c['pass']:>6} {c['fail']:>6} {c['skip'] + c['xfail']:>7} {c['error']:>6}")
        for t in ar.tests:
            for x in t.walk():
                if x.status.bad:
                    lines.append(f"  {x.status.value.upper():5} {t.suite}/{x.name}: expected {x.expected or '?'}, "
                                 f"observed {x.observed or '?'}")
        for f in ar.findings:
            lines.append(f"  FINDING {f.source}: {f.kind}: {f.line.strip()}")
        if ar.error and ar.verdict != "pass":
            lines.append(f"  reason: {ar.error.splitlines()[0]}")
    return lines


def print_table(run: RunResult) -> None:
    from .progress import mode
    if mode() == "quiet":
        return
    out = table_lines(run)
    out.append(f"verdict: {run.verdict.upper()} (exit {run.exit_code}); report: {run.out_dir}/summary.md, "
               f"{run.out_dir}/report.html")
    print("\n".join(out), file=sys.stdout, flush=True)
