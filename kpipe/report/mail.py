"""report.txt: the run as a mail a robot would send (the kernel test robot's shape), from result.json.

Plain text, 72 columns, no markup: a subject naming the verdict and the first cause, what was tested, the first
failures and findings with their signatures and decoded frames, the coverage of the changed lines, the
warnings delta (when result.json has it), the tag checks (premerge: Signed-off-by, Fixes:), a --thread series'
changes since the thread's previous revision, the exact reproduce commands and a ready-to-paste Reported-by: line
(and Closes: where the series came with a URL).
"""
from __future__ import annotations

import textwrap
from typing import Any

WIDTH = 72
REPORTED_BY = "Reported-by: kpipe <kpipe@localhost>"
MAX_FAILURES = 10
MAX_CRASHES = 5


def _wrap(text: str, indent: str = "", sub: str | None = None) -> list[str]:
    sub = indent + "  " if sub is None else sub
    out: list[str] = []
    for para in str(text).splitlines() or [""]:
        out += textwrap.wrap(para, WIDTH, initial_indent=indent, subsequent_indent=sub,
                             break_long_words=True, break_on_hyphens=False) or [indent.rstrip()]
    return out


def _first_cause(run: dict[str, Any]) -> str:
    for c in run["extra"].get("crashes") or []:
        if not c.get("not_the_patch"):
            return str(c["signature"])
    for name, ar in run["arches"].items():
        if ar["verdict"] != "pass" and ar.get("error"):
            return f"{name}: {ar['error'].splitlines()[0]}"
    for c in run["extra"].get("checkpatch") or []:
        if c.get("errors"):
            return f"checkpatch: {c['errors']} error(s) in {c['file']}"
    for t in run["extra"].get("tags") or []:
        for p in t["problems"]:
            if p["severity"] == "error":
                return f"{p['tag']} check failed on {t['file']}"
    for cov in run["extra"].get("coverage") or []:
        if cov.get("never_executed"):
            return f"{cov['file']}: changed line(s) no test executed"
    return "all tests passed"


def subject(run: dict[str, Any]) -> str:
    series = run["extra"].get("series") or {}
    subj = [p["subject"] for p in series.get("patches", [])]
    what = series.get("title") or (subj[0] if subj else "the base tree")
    verdict = run["verdict"].upper()
    line = f"[kpipe {run['workflow']}] {verdict}: {_first_cause(run)} ({what})"
    return line


def render(run: dict[str, Any]) -> str:
    arches = run["arches"]
    first: dict[str, Any] = next(iter(arches.values()), {})
    k, series = first.get("kernel", {}), run["extra"].get("series") or {}
    out: list[str] = []
    subj = subject(run)
    out += _wrap("Subject: " + subj, sub="  ")
    out += ["", "Hi,", ""]
    out += _wrap(f"kpipe ran {run['workflow']} on your patch series: verdict {run['verdict'].upper()} "
                 f"(exit {run['exit_code']}).")
    out += ["", "What was tested:"]
    out += _wrap(f"tree:     {k.get('tree', '?')} ({k.get('base_label') or ''} {k.get('base', '?')[:12]})",
                 "  ", "            ")
    if k.get("head"):
        out += _wrap(f"head:     {k['head'][:12]}", "  ")
    for i, p in enumerate(series.get("patches", []), 1):
        out += _wrap(f"patch {i}:  {p['subject']}", "  ", "            ")
        if p.get("author"):
            out += _wrap(f"          from {p['author']}", "  ", "            ")
    if series.get("revision"):
        out += _wrap(f"thread:   v{series['revision']} of the series, message-id", "  ")
        out.append(f"            <{series.get('message_id', '?')}>")        # an id is one word: never broken
    out += _wrap(f"arches:   {', '.join(arches)}", "  ")
    out += _wrap(f"profile:  {k.get('profile') or first.get('config', {}).get('profile', '?')}", "  ")
    for name, ar in arches.items():
        if ar.get("build", {}).get("compiler"):
            out += _wrap(f"compiler: {name}: {ar['build']['compiler']}", "  ", "            ")
    out += ["", "Verdict per arch:"]
    for name, ar in arches.items():
        out += _wrap(f"{name}: {ar['verdict'].upper()} (exit {ar['exit_code']})", "  ")
        if ar["verdict"] != "pass" and ar.get("error"):
            out += _wrap(ar["error"].splitlines()[0], "    ", "      ")
        for side, link in _lava_jobs(run, name, ar):
            out += _wrap(f"LAVA job{' (' + side + ')' if side else ''}: {link}", "    ", "      ")
    fails = [(name, t) for name, ar in arches.items() for t in _flat(ar.get("tests", []))
             if t["status"] in ("fail", "error")]
    if fails:
        out += ["", "First failures:"]
        for name, t in fails[:MAX_FAILURES]:
            out += _wrap(f"{name}: {t['suite']}/{t['name']}: expected {t.get('expected') or '?'}, observed "
                         f"{t.get('observed') or '?'}", "  ", "      ")
        if len(fails) > MAX_FAILURES:
            out.append(f"  ... and {len(fails) - MAX_FAILURES} more")
    crashes = run["extra"].get("crashes") or []
    if crashes:
        out += ["", "Kernel reports (folded by signature):"]
        for c in crashes[:MAX_CRASHES]:
            out.append("")
            out += _wrap(f"signature: {c['signature']}", "  ", "      ")
            out += _wrap(f"first line: {c['first']}", "  ", "      ")
            seen = ", ".join(c["seen"])
            out += _wrap(f"seen {c['count']}x in: {seen}", "  ", "      ")
            if c.get("not_the_patch"):
                out += _wrap("the base kernel reports it too: not the patch's", "  ", "      ")
            if c.get("frames"):
                out += _wrap("decoded (the signature's frames):", "  ")
            for fr in c.get("frames", []):
                out += _wrap(fr, "    ", "      ")
            if c.get("trace"):
                out += _wrap(f"call trace ({c.get('trace_from', '')}):", "  ")
                for fr in c["trace"]:
                    out += _wrap(fr, "    ", "      ")
        if len(crashes) > MAX_CRASHES:
            out.append(f"  ... and {len(crashes) - MAX_CRASHES} more signatures")
    cov = run["extra"].get("coverage")
    out += ["", "Coverage of the changed lines:"]
    if cov:
        for c in cov:
            out += _wrap(c["sentence"], "  ", "    ")
            if c.get("never_executed"):
                out += _wrap("NOT EXECUTED by any test on any arch: line(s) "
                             + ", ".join(map(str, c["never_executed"])), "    ", "      ")
        notes = {ar["coverage"]["note"] for ar in arches.values() if ar.get("coverage")}
        for n in sorted(notes):
            out += _wrap(f"({n})", "  ", "   ")
    elif any((ar.get("boot") or {}).get("lava") for ar in arches.values()):
        out += _wrap("not measured (the LAVA jobs do not read the kernel's gcov counters)", "  ")
    else:
        out += _wrap("not measured (no object was instrumented for gcov: the debug profile does that)", "  ")
    delta = run["extra"].get("warnings_delta")
    out += ["", "New warnings (baseline vs patched):"]
    if delta:
        out += _warnings(delta)
    else:
        out += _wrap("not measured in this run", "  ")
    tags = run["extra"].get("tags")
    if tags is not None:
        out += ["", "Tags (Signed-off-by, Fixes:):"]
        problems = [(t["file"], p) for t in tags for p in t["problems"]]
        if not problems:
            out += _wrap(f"ok on {len(tags)} patch(es)", "  ")
        for f, p in problems:
            out += _wrap(f"{f}: {p['severity']}: {p['tag']}: {p['message']}", "  ", "      ")
    if series.get("since_previous"):
        out += _since_previous(series["since_previous"])
    out += ["", "To reproduce:", ""]
    out += _command(run.get("reproducer") or "?")
    out += ["", "If you fix the issue in a separate patch/commit (i.e. not just a new",
            "version of the same patch/commit), kindly add following tags", ""]
    out.append(REPORTED_BY)
    url = series.get("url") or series.get("link")
    if url:
        out.append(f"Closes: {url}")          # a tag is one line, however long (checkpatch wants it so)
    out += ["", "--", "kpipe, the kernel patch build-and-verify pipeline", ""]
    return "\n".join(out)


def _verbatim(lines: list[str], indent: str) -> list[str]:
    """Lines shown as written (an interdiff, an author's notes): each after ``indent`` and "| ", tabs expanded,
    cut into 72 columns where too long (the rest on lines starting ": ")."""
    out: list[str] = []
    room = WIDTH - len(indent) - 2
    for ln in lines:
        text = ln.expandtabs(8)
        out.append(f"{indent}| {text[:room]}".rstrip())
        out += [f"{indent}: {text[k:k + room]}".rstrip() for k in range(room, len(text), room)]
    return out


def _since_previous(sp: dict[str, Any]) -> list[str]:
    """The series against the thread's previous revision (kpipe/source/revisions.py): each patch's status, its notes
    below '---' and interdiff, and the cover letter's changelog."""
    v, pv = f"v{sp['revision']}", f"v{sp['previous']}"
    total = sum(1 for p in sp["patches"] if p.get("index"))
    counts = ", ".join(f"{n} {s}" for s, n in sp.get("counts", {}).items())
    out = ["", f"Changes since {pv} (the thread's previous revision):"]
    out += _wrap(counts or "nothing compared", "  ")
    if sp.get("note"):
        out += _wrap(f"note: {sp['note']}", "  ", "    ")
    for p in sp["patches"]:
        was = f" (in {pv}: {p['previous_subject']})" if p.get("previous_subject") else ""
        if p["status"] == "dropped":
            stat = f": {p['previous_diffstat']}" if p.get("previous_diffstat") else ""
            out += _wrap(f"{p['subject']}: dropped since {pv} (its patch {p['previous_index']}{stat})", "  ", "    ")
            continue
        what = {"changed": "changed", "new": f"new in {v}"}.get(p["status"], p["status"])
        out += _wrap(f"{p['index']}/{total} {p['subject']}: {what}{was}", "  ", "    ")
        if p["status"] == "changed":
            out += _wrap(f"{pv}: {p.get('previous_diffstat') or '?'}", "      ", "        ")
            out += _wrap(f"{v}: {p.get('diffstat') or '?'}", "      ", "        ")
        elif p["status"] == "new" and p.get("diffstat"):
            out += _wrap(p["diffstat"], "      ", "        ")
        if p.get("notes"):
            cut = f" ({p['notes_cut']} more line(s) left off)" if p.get("notes_cut") else ""
            out += _wrap(f"notes below ---{cut}:", "      ") + _verbatim(p["notes"], "      ")
        if p.get("interdiff"):
            cut = f" ({p['interdiff_cut']} more line(s) left off)" if p.get("interdiff_cut") else ""
            out += _wrap(f"interdiff ('-' {pv} only, '+' {v} only){cut}:", "      ")
            out += _verbatim(p["interdiff"], "      ")
    if sp.get("changelog"):
        cut = f" ({sp['changelog_cut']} more line(s) left off)" if sp.get("changelog_cut") else ""
        out += _wrap(f"the cover letter's changelog{cut}:", "  ") + _verbatim(sp["changelog"], "  ")
    return out


def _lava_jobs(run: dict[str, Any], name: str, ar: dict[str, Any]) -> list[tuple[str, str]]:
    """(side, URL) of the LAVA jobs behind an arch's verdict: premerge's two sides, or the one job."""
    pm = (run["extra"].get("premerge") or {}).get(name)
    if pm:
        return [(side, pm[side]["job_url"]) for side in ("baseline", "patched") if pm[side].get("job_url")]
    url = ((ar.get("boot") or {}).get("lava") or {}).get("job_url")
    return [("", url)] if url else []


def _command(cmd: str) -> list[str]:
    """A shell command in 72 columns that still pastes: broken between words with backslash continuations."""
    out: list[str] = []
    line = "  "
    for word in cmd.split(" "):
        if len(line) + len(word) + 2 > WIDTH and line.strip():
            out.append(line.rstrip() + " \\")
            # a continuation needs no indent: a long word (a path) that would not fit indented starts the line
            line = "      " if len(word) + 8 <= WIDTH else ""
        line += word + " "
    out.append(line.rstrip())
    return out


def _warnings(delta: dict[str, Any]) -> list[str]:
    """The warnings section (its data comes from another part of kpipe: print what it has)."""
    out: list[str] = []
    items = delta.get("new") if isinstance(delta, dict) else None
    if isinstance(items, list):
        if not items:
            out += _wrap("none", "  ")
        for w in items:
            if isinstance(w, dict):
                where = f"{w.get('file', '?')}:{w.get('line', '?')}"
                out += _wrap(f"{where}: [{w.get('tool', '?')}] {w.get('message', '')}", "  ", "      ")
            else:
                out += _wrap(str(w), "  ", "      ")
    else:
        for key, val in delta.items():
            out += _wrap(f"{key}: {val}", "  ", "      ")
    return out


def _flat(tests: list[dict[str, Any]], prefix: str = "") -> list[dict[str, Any]]:
    out = []
    for t in tests:
        name = prefix + t["name"]
        out.append({**t, "name": name})
        out += _flat(t.get("subtests", []), name + "/")
    return out
