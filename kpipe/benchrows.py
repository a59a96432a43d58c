"""One row of `invoke bench` (kpipe seconds, raw seconds, their ratio against a target) and the debug/fast cost
rows: shared by kpipe/bench.py and the LAVA row (kpipe/lava/bench.py)."""
from __future__ import annotations

from typing import Any


def _row(phase_name: str, arch: str, kp: float, raw: float | None, target: float | None, note: str = "",
         ok: bool | None = None, profile: str = "debug") -> dict[str, Any]:
    ratio = round(kp / raw, 2) if raw else None
    if ok is None and target is not None and ratio is not None:
        ok = ratio <= target
    return {"phase": phase_name, "arch": arch, "profile": profile, "kpipe_s": kp, "raw_s": raw, "ratio": ratio,
            "target": target, "ok": ok, "note": note}


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
