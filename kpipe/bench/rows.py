"""The pure part of `invoke bench`: one row (kpipe seconds, raw seconds, their ratio against a target), the plan of
steps and which of them a bench.json already holds (``--resume``), the incremental bench.json writer (each row
written the moment it is measured, the file rewritten whole and atomically so it stays readable JSON) and the
table lines. Shared by kpipe/bench/measure.py and the LAVA row (kpipe/bench/lava.py); no I/O here but the writer's."""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

FORMAT = 2     # bench.json layout: {"format", "plan", "machine", "targets", "state", "rows", "derived", "complete"}

# step kinds in the order a bench runs them; QUICK_SKIPS are the cold ones --quick leaves out
STEP_KINDS = ("cold", "newdir", "warm", "unchanged", "all", "premerge", "lava")
QUICK_SKIPS = frozenset({"cold", "newdir"})


def _row(phase_name: str, arch: str, kp: float, raw: float | None, target: float | None, note: str = "",
         ok: bool | None = None, profile: str = "debug") -> dict[str, Any]:
    ratio = round(kp / raw, 2) if raw else None
    if ok is None and target is not None and ratio is not None:
        ok = ratio <= target
    return {"phase": phase_name, "arch": arch, "profile": profile, "kpipe_s": kp, "raw_s": raw, "ratio": ratio,
            "target": target, "ok": ok, "note": note}


def row_key(row: dict[str, Any]) -> str:
    return f"{row['phase']}/{row['arch']}/{row['profile']}"


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 2)


@dataclass(frozen=True)
class Step:
    kind: str              # one of STEP_KINDS
    profile: str
    arch: str              # an arch name, or "all" / the arch spec for the whole-run steps
    rows: tuple[str, ...]  # the row keys the step writes; it is done when all of them are in bench.json

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.arch}/{self.profile}"


def plan_steps(arches: list[str], profiles: list[str], quick: bool, only: tuple[str, ...] = ()) -> list[Step]:
    """Every step of a bench run, in order. ``only``: just these step kinds (the e2e test runs one row)."""
    out: list[Step] = []
    spec = "all" if len(arches) > 1 else arches[0]
    for prof in profiles:
        for kind in STEP_KINDS:
            if (quick and kind in QUICK_SKIPS) or (only and kind not in only):
                continue
            if kind in ("cold", "newdir", "unchanged"):
                out += [Step(kind, prof, a, (f"{kind}/{a}/{prof}",)) for a in arches]
            elif kind == "warm":
                out += [Step(kind, prof, a, (f"incremental/{a}/{prof}", f"warm/{a}/{prof}")) for a in arches]
            elif kind == "all" and len(arches) > 1:
                out.append(Step(kind, prof, "all", (f"all/all/{prof}",)))
            elif kind == "premerge":
                out.append(Step(kind, prof, spec, (f"premerge/{spec}/{prof}",)))
            elif kind == "lava" and prof == "debug":
                out += [Step(kind, prof, a, (f"lava/{a}/{prof}",)) for a in arches]
    return out


def done_keys(doc: dict[str, Any]) -> set[str]:
    return {row_key(r) for r in doc.get("rows", [])}


def missing_steps(steps: list[Step], doc: dict[str, Any]) -> list[Step]:
    """The steps whose rows are not all in ``doc`` yet: what ``--resume`` runs."""
    have = done_keys(doc)
    return [s for s in steps if not set(s.rows) <= have]


def cost_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """debug / fast per phase and arch (kpipe seconds): what the debug kernel costs."""
    by = {(r["phase"], r["arch"], r["profile"]): r["kpipe_s"] for r in rows}
    out = []
    for (ph, arch, prof), secs in by.items():
        fast = by.get((ph, arch, "fast"))
        if prof == "debug" and fast:
            out.append({"phase": f"cost:{ph}", "arch": arch, "profile": "debug/fast", "kpipe_s": secs, "raw_s": fast,
                        "ratio": round(secs / fast, 2), "target": None, "ok": None,
                        "note": "debug kpipe s vs fast kpipe s"})
    return out


HEADER = f"{'phase':<16} {'arch':<7} {'profile':<10} {'kpipe s':>8} {'raw s':>8} {'ratio':>6}  ok   {'load':>5}  note"


def format_row(r: dict[str, Any]) -> str:
    raw = r["raw_s"] if r.get("raw_s") is not None else "-"
    ratio = r["ratio"] if r.get("ratio") is not None else "-"
    ok = "yes" if r.get("ok") else "NO " if r.get("ok") is not None else "-  "
    load = r.get("load")
    load_s = f"{load[0]:.2f}" if load else "-"
    return (f"{r['phase']:<16} {r['arch']:<7} {r['profile']:<10} {r['kpipe_s']:>8} {raw:>8} {ratio:>6}  {ok}  "
            f"{load_s:>5}  {r.get('note', '')}")


def table(doc: dict[str, Any]) -> str:
    return "\n".join([HEADER, *(format_row(r) for r in doc.get("rows", []) + doc.get("derived", []))])


def new_doc(plan: dict[str, Any], machine: dict[str, Any], targets: dict[str, float]) -> dict[str, Any]:
    return {"format": FORMAT, "plan": plan, "machine": machine, "targets": targets, "state": {}, "rows": [],
            "derived": [], "complete": False, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "updated": None}


def load_doc(path: Path) -> dict[str, Any] | None:
    """A bench.json this module wrote, or None (absent, unreadable, or the older one-shot layout)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("rows"), list):
        return None
    return doc


def write_doc(path: Path, doc: dict[str, Any]) -> None:
    """Rewrite bench.json whole through a temporary file and a rename: a bench stopped at any moment leaves the
    previous complete file, never half of one."""
    doc["derived"] = cost_rows(doc["rows"])
    doc["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def add_row(path: Path, doc: dict[str, Any], row: dict[str, Any], echo: Callable[[str], None]) -> None:
    """Append (or replace: the same phase/arch/profile measured again) one row, write bench.json, print the row."""
    key = row_key(row)
    doc["rows"] = [r for r in doc["rows"] if row_key(r) != key] + [row]
    write_doc(path, doc)
    echo(format_row(row))
