"""Coverage of the changed lines: after the tests, the guest's gcov counters of the instrumented objects
(kpipe/build/instrument.py) are read over SSH, put beside their .gcno from the build folder and read by the matching
gcov (``--json-format``, branch data); every added or changed line of the series is then reported: did it run,
how often, and which outcomes of its conditions were taken.

Counts are approximate: the guest has 2 vCPUs and the kernel's gcov counters are not atomic.
"""
from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Protocol

from ..build.kernel import Kernel
from ..errors import KpipeError
from ..progress import note

GCOV_ROOT = "/sys/kernel/debug/gcov"
APPROX = "counts are approximate: 2 vCPUs, and the kernel's gcov counters are not atomic"
GCOV = {"x86_64": "gcov-12", "arm64": "aarch64-linux-gnu-gcov-12"}
GCOV_FALLBACK = {"x86_64": "gcov", "arm64": "aarch64-linux-gnu-gcov"}


class _Session(Protocol):
    def run(self, argv: list[str] | str, timeout: float, cwd: str | None = None) -> Any: ...
    def get(self, remote: str, local: Path) -> None: ...


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def changed_lines(diff: str) -> dict[str, list[dict[str, Any]]]:
    """Per file of a unified diff (-U0 or with context): its hunks, each with the added/changed lines'
    new-file numbers and the hunk's text (for the reports)."""
    out: dict[str, list[dict[str, Any]]] = {}
    path: str | None = None
    hunk: dict[str, Any] | None = None
    new_no = left_old = left_new = 0
    for ln in diff.splitlines():
        if ln.startswith("+++ "):
            name = ln[4:].strip()
            path = None if name == "/dev/null" else re.sub(r"^b/", "", name)
            hunk = None
            continue
        if ln.startswith(("--- ", "diff --git", "index ")):
            continue
        m = _HUNK.match(ln)
        if m and path is not None:
            new_no = int(m.group(2))
            left_old = int(m.group(1) or 1)
            left_new = int(m.group(3) or 1)
            hunk = {"header": ln, "lines": [], "text": [ln], "rows": []}
            out.setdefault(path, []).append(hunk)
            continue
        if hunk is None or (left_old <= 0 and left_new <= 0):
            continue                    # past the hunk: a mail's "-- " signature, the next file's header
        left_old -= ln[:1] in ("-", " ")
        left_new -= ln[:1] in ("+", " ")
        if ln.startswith("+"):
            hunk["lines"].append(new_no)
            hunk["text"].append(f"{new_no:>6} + {ln[1:]}")
            hunk["rows"].append({"no": new_no, "sign": "+", "code": ln[1:]})
            new_no += 1
        elif ln.startswith("-"):
            hunk["text"].append(f"{'':>6} - {ln[1:]}")
            hunk["rows"].append({"no": None, "sign": "-", "code": ln[1:]})
        elif ln.startswith(" "):
            hunk["text"].append(f"{new_no:>6}   {ln[1:]}")
            hunk["rows"].append({"no": new_no, "sign": " ", "code": ln[1:]})
            new_no += 1
    return {p: [h for h in hs if h["lines"]] for p, hs in out.items() if any(h["lines"] for h in hs)}


def series_diff(src: Path, base: str, head: str) -> str:
    cp = subprocess.run(["git", "-C", str(src), "diff", "-U3", "--no-color", base, head, "--", "*.c"],
                        capture_output=True, text=True, timeout=60)
    return cp.stdout if cp.returncode == 0 else ""


def gcov_tool(arch: str) -> str | None:
    return shutil.which(GCOV[arch]) or shutil.which(GCOV_FALLBACK[arch])


def read_gcov_json(tool: str, gcda: Path) -> dict[str, Any]:
    """gcov's JSON for one object (gcda with its gcno beside it, in the same folder)."""
    cp = subprocess.run([tool, "--json-format", "--stdout", "-b", "-o", str(gcda.parent), gcda.name],
                        capture_output=True, text=True, timeout=120, cwd=gcda.parent)
    if "stamp mismatch" in cp.stderr or "version" in cp.stderr and "mismatch" in cp.stderr:
        raise ValueError(f"the .gcda does not match the kernel's .gcno ({cp.stderr.strip()[:200]})")
    if cp.returncode != 0 or not cp.stdout.strip():
        raise ValueError(f"{tool} failed (exit {cp.returncode}): {cp.stderr.strip()[:300]}")
    text = cp.stdout
    if text[:2] == "\x1f\x8b":          # some gcov versions gzip it even on stdout
        text = gzip.decompress(text.encode("latin-1")).decode()
    docs = [json.loads(x) for x in text.splitlines() if x.strip()]
    merged: dict[str, Any] = {"files": []}
    for d in docs:
        merged["files"] += d.get("files", [])
    return merged


def line_counts(gj: dict[str, Any], rel: str) -> dict[int, dict[str, Any]]:
    """line number -> {count, branches: [taken counts]} for the source file ``rel`` (tree-relative)."""
    out: dict[int, dict[str, Any]] = {}
    for f in gj.get("files", []):
        if not (f["file"] == rel or f["file"].endswith("/" + rel)):
            continue
        for ln in f.get("lines", []):
            e = out.setdefault(ln["line_number"], {"count": 0, "branches": []})
            e["count"] = max(e["count"], ln.get("count", 0))      # inlined copies: the line ran if any ran
            e["branches"] += [b.get("count", 0) for b in ln.get("branches", []) if not b.get("throw")]
    return out


def judge_hunks(hunks: list[dict[str, Any]], counts: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each hunk's changed lines with count (None: no code on that line) and branch outcomes taken."""
    res = []
    for h in hunks:
        lines = []
        for n in h["lines"]:
            c = counts.get(n)
            if c is None:
                lines.append({"line": n, "count": None, "branches": 0, "taken": 0})
            else:
                br = c["branches"]
                lines.append({"line": n, "count": c["count"], "branches": len(br),
                              "taken": sum(1 for b in br if b > 0)})
        by_no = {ln["line"]: ln for ln in lines}
        rows = [{**r, "count": by_no[r["no"]]["count"] if r["sign"] == "+" and r["no"] in by_no else None,
                 "taken": f"{by_no[r['no']]['taken']}/{by_no[r['no']]['branches']}"
                 if r["sign"] == "+" and r["no"] in by_no and by_no[r["no"]]["branches"] else ""}
                for r in h.get("rows", [])]
        res.append({"header": h["header"], "text": h["text"], "lines": lines, "rows": rows})
    return res


def file_summary(hunks: list[dict[str, Any]]) -> dict[str, int]:
    ls = [ln for h in hunks for ln in h["lines"] if ln["count"] is not None]
    return {"code_lines": len(ls), "executed": sum(1 for ln in ls if ln["count"] > 0),
            "branches": sum(ln["branches"] for ln in ls), "taken": sum(ln["taken"] for ln in ls)}


def collect(session: _Session, kernel: Kernel, adir: Path, base: str | None, head: str | None) -> dict[str, Any] | None:
    """The coverage section of an arch's result (None when nothing was instrumented for coverage)."""
    objs = [o for o in kernel.extra.get("instrumented", [])]
    if not objs or not any(v.startswith("GCOV_PROFILE_") for v in kernel.extra.get("make_vars", [])):
        return None
    t0 = time.monotonic()
    bdir = Path(kernel.extra.get("build_dir", ""))
    cov: dict[str, Any] = {"note": APPROX, "files": {}, "errors": []}
    tool = gcov_tool(kernel.arch)
    src = kernel.tree_src
    diff = series_diff(src, base, head) if src and base and head and base != head else ""
    changed = changed_lines(diff)
    cov["tool"] = tool or ""
    if tool is None:
        cov["errors"].append(f"no gcov for {kernel.arch} ({GCOV[kernel.arch]}): apt-get install the gcc package")
    gdir = adir / "gcov"
    with tempfile.TemporaryDirectory(prefix="kpipe-gcov-") as tmp:
        for obj in objs:
            rel_c = obj[:-2] + ".c"
            stem = obj[:-2]
            remote = f"{GCOV_ROOT}{bdir}/{stem}.gcda"
            local = Path(tmp) / Path(stem).name
            staged = f"/tmp/kpipe-{Path(stem).name}.gcda"
            try:
                res = session.run(f"cat {remote} > {staged}", timeout=30)
                if res.exit_status != 0:
                    cov["errors"].append(f"{obj}: cannot read {remote} in the guest: {res.stderr.strip()[:200]}")
                    continue
                session.get(staged, local.with_suffix(".gcda"))
            except KpipeError as e:
                cov["errors"].append(f"{obj}: reading the counters over SSH failed: {e.message}")
                continue
            # the notes kept with the cached kernel (the build folder holds the last build's, maybe another kernel's)
            kept = kernel.extra.get("gcno_dir")
            gcno = Path(kept) / f"{stem}.gcno" if kept else bdir / f"{stem}.gcno"
            if not gcno.is_file():
                cov["errors"].append(f"{obj}: no {gcno} (kept with the kernel, or in the build folder)")
                continue
            shutil.copy2(gcno, local.with_suffix(".gcno"))
            gdir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local.with_suffix(".gcda"), gdir / f"{Path(stem).name}.gcda")
            if tool is None or rel_c not in changed:
                continue
            try:
                gj = read_gcov_json(tool, local.with_suffix(".gcda"))
            except ValueError as e:
                cov["errors"].append(f"{obj}: {e}")
                continue
            (gdir / f"{Path(stem).name}.gcov.json").write_text(json.dumps(gj))
            hunks = judge_hunks(changed[rel_c], line_counts(gj, rel_c))
            cov["files"][rel_c] = {"hunks": hunks, **file_summary(hunks)}
    for rel in changed:
        if rel not in cov["files"]:
            cov.setdefault("not_instrumented", []).append(rel)
    cov["seconds"] = round(time.monotonic() - t0, 3)
    note(f"{kernel.arch}: coverage of the changed lines: " + "; ".join(
        f"{p}: {s['executed']} of {s['code_lines']} line(s) executed, {s['taken']} of {s['branches']} "
        "branch outcome(s) taken" for p, s in cov["files"].items()) + f" ({cov['seconds']}s)")
    return cov


# ---------------------------------------------------------------- across arches (reports, premerge)

def merge(per_arch: Mapping[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """One line per changed file over every arch: the sentence the reports print, and whether some changed
    line with code ran on no arch."""
    files: dict[str, dict[str, Any]] = {}
    for arch, cov in per_arch.items():
        for path, f in ((cov or {}).get("files") or {}).items():
            e = files.setdefault(path, {"file": path, "arches": {}, "lines": {}})
            e["arches"][arch] = f
            for h in f["hunks"]:
                for ln in h["lines"]:
                    if ln["count"] is None:
                        continue
                    d = e["lines"].setdefault(ln["line"], {"count": 0, "taken_any": 0, "branches": ln["branches"]})
                    d["count"] += ln["count"]
                    d["taken_any"] = max(d["taken_any"], ln["taken"])
    out = []
    for path, e in files.items():
        arches = sorted(e["arches"])
        never = sorted(n for n, d in e["lines"].items() if d["count"] == 0)
        out.append({"file": path, "arches": arches, "never_executed": never,
                    "sentence": sentence(path, e["arches"])})
    return out


def _outcomes(f: dict[str, Any]) -> str:
    if not f["branches"]:
        return "no condition on them"
    if f["taken"] == f["branches"]:
        return "both outcomes of its condition taken" if f["branches"] == 2 else \
            f"all {f['branches']} outcomes of its conditions taken"
    return f"{f['taken']} of {f['branches']} outcomes of its conditions taken"


def sentence(path: str, by_arch: dict[str, dict[str, Any]]) -> str:
    """e.g. "mm/mremap.c: 1 of 1 changed line executed, both outcomes of its condition taken, on x86_64 and
    arm64" (one clause per arch when the arches differ)."""
    parts: dict[str, list[str]] = {}
    for arch in sorted(by_arch):
        f = by_arch[arch]
        n = f["code_lines"]
        clause = f"{f['executed']} of {n} changed line{'s' if n != 1 else ''} executed, {_outcomes(f)}"
        parts.setdefault(clause, []).append(arch)
    return f"{path}: " + "; ".join(f"{c}, on {' and '.join(a)}" for c, a in parts.items())
