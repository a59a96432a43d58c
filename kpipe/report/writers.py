"""Reports of a run: result.json, junit.xml, summary.md, report.html (+ premerge.md), and the terminal table.

Everything a report shows may come from a patch (subject, author), the kernel (log lines) or a test's output, so
every value is escaped: HTML autoescaping for report.html.j2, and markdown escaping (inline HTML, table pipes,
links, emphasis, code spans, line breaks) for every value printed by the *.md.j2 templates. Templates that want a
code span use the ``code`` filter, and verbatim lines (an interdiff, an author's notes) the ``block`` filter: both
pick a fence the value cannot close.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, TypedDict

import jinja2
from markupsafe import Markup

from .results import RunResult, Status, to_dict, write_json, write_junit

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~!])")


def md_escape(value: object) -> str:
    """One line of markdown text that renders as exactly ``value``: no HTML, link, table cell break or block."""
    text = " ".join(str(value).splitlines())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: object) -> Markup:
    """A code span holding ``value`` verbatim (one line): the fence is longer than any backtick run in it."""
    text = " ".join(str(value).splitlines())
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return Markup(f"{fence}{pad}{text}{pad}{fence}")


def md_block(lines: object, info: str = "") -> Markup:
    """A fenced code block holding ``lines`` (a list, or a text) verbatim: markdown reads nothing inside it (no
    HTML, no link), and its fence is longer than any backtick run in it, so no line can close it early."""
    text = "\n".join(map(str, lines)) if isinstance(lines, (list, tuple)) else str(lines)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return Markup(f"{fence}{info}\n{text}\n{fence}")


def safe_href(value: object) -> str:
    """Only relative links into the run folder (a log, a test's output); anything with a scheme becomes '#'."""
    text = str(value)
    if not text or re.match(r"^\s*[a-zA-Z][a-zA-Z0-9+.-]*:", text) or text.lstrip().startswith(("//", "\\")):
        return "#"
    return text


def _md_finalize(value: object) -> str:
    if isinstance(value, Markup):
        return value
    return md_escape("" if value is None else value)


class _EnvOptions(TypedDict):
    loader: jinja2.BaseLoader
    trim_blocks: bool
    lstrip_blocks: bool
    undefined: type[jinja2.Undefined]


_loader = jinja2.PackageLoader("kpipe.report", "templates")
_common = _EnvOptions(loader=_loader, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
_html_env = jinja2.Environment(autoescape=True, **_common)
_html_env.filters["href"] = safe_href
_md_env = jinja2.Environment(autoescape=False, finalize=_md_finalize, **_common)
_md_env.filters["code"] = md_code
_md_env.filters["block"] = md_block


def _rel(path: str, run_dir: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except (ValueError, OSError):
        return path


def context(run: RunResult, run_dir: Path) -> dict[str, Any]:
    d = to_dict(run)
    for ar in d["arches"].values():
        ar["failures"] = [t for t in _flat(ar["tests"]) if t["status"] in (Status.FAIL.value, Status.ERROR.value)]
        ar["known_failures"] = [t for t in _flat(ar["tests"]) if t["status"] == Status.XFAIL.value]
        ar["logs"] = {k: _rel(v, run_dir) for k, v in ar.get("logs", {}).items()}
    return {"run": d, "ok": run.exit_code == 0}


def _flat(tests: list[dict[str, Any]], prefix: str = "") -> list[dict[str, Any]]:
    out = []
    for t in tests:
        name = prefix + t["name"]
        out.append({**t, "name": name})
        out += _flat(t.get("subtests", []), name + "/")
    return out


def render(name: str, ctx: dict[str, Any]) -> str:
    env = _html_env if name.endswith(".html.j2") else _md_env
    return env.get_template(name).render(**ctx)


def write_all(run: RunResult, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run, run_dir / "result.json")
    write_junit(run, run_dir / "junit.xml")
    ctx = context(run, run_dir)
    (run_dir / "summary.md").write_text(render("summary.md.j2", ctx))
    (run_dir / "report.html").write_text(render("report.html.j2", ctx))
    if run.workflow == "premerge":
        (run_dir / "premerge.md").write_text(render("premerge.md.j2", ctx))
    from . import mail as report_mail
    (run_dir / "report.txt").write_text(report_mail.render(to_dict(run)))
    print_table(run)


def table_lines(run: RunResult) -> list[str]:
    lines = []
    for name, ar in run.arches.items():
        head = f"{name}: {ar.verdict.upper()} (exit {ar.exit_code})"
        if ar.kernel.release:
            head += f"  kernel {ar.kernel.release}"
        if ar.build.key is not None:
            head += f"  build {'cached' if ar.build.cached else str(ar.build.seconds) + 's'}"
        if ar.boot.seconds is not None:
            head += f"  boot {ar.boot.seconds}s {ar.boot.accel or ''}"
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
            if f.signature:
                lines.append(f"    signature: {f.signature}" + (f" ({f.frames[0]})" if f.frames else ""))
        for path, fc in ((ar.coverage or {}).get("files") or {}).items():
            lines.append(f"  coverage {path}: {fc['executed']} of {fc['code_lines']} changed line(s) executed, "
                         f"{fc['taken']} of {fc['branches']} branch outcome(s) taken (approximate counts)")
        if ar.boot.kmemleak is not None:
            lines.append(f"  kmemleak {ar.boot.kmemleak.sentence()}")
        if ar.error and ar.verdict != "pass":
            lines.append(f"  reason: {ar.error.splitlines()[0]}")
    return lines


def print_table(run: RunResult) -> None:
    from ..progress import mode
    if mode() == "quiet":
        return
    out = table_lines(run)
    out += [f"coverage: {c['sentence']}" + ("  NOT EXECUTED: line(s) " + ", ".join(map(str, c["never_executed"]))
                                            if c["never_executed"] else "") for c in run.extra.coverage or []]
    out.append(f"verdict: {run.verdict.upper()} (exit {run.exit_code}); report: {run.out_dir}/summary.md, "
               f"{run.out_dir}/report.html")
    print("\n".join(out), file=sys.stdout, flush=True)
