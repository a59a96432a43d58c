"""The tree's own scripts/checkpatch.pl on every patch of a series: errors fail a premerge, warnings are listed.
It runs with --show-types: each message keeps its type ("ERROR: NO_AUTHOR_SIGN_OFF: ..."), which is what
`checkpatch --ignore TYPE` takes and what kpipe/source/tags.py picks checkpatch's own tag messages by."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .. import proc
from .checkout import Checkout
from ..errors import InfraError
from .patches import Series

_MSG = re.compile(r"^(ERROR|WARNING|CHECK):(?:([A-Z0-9_]+):)? (.*)$")     # --show-types adds ":TYPE"
_TOTAL = re.compile(r"^total: (\d+) errors?, (\d+) warnings?")


def parse(output: str) -> dict[str, Any]:
    messages: list[str] = []
    where = ""
    errors = warnings = 0
    lines = output.splitlines()
    for i, ln in enumerate(lines):
        m = _MSG.match(ln)
        if m:
            # checkpatch prints the location ("#12: FILE: mm/mremap.c:496:") on the next line
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            where = nxt.strip() if nxt.startswith("#") else ""
            typ = f"{m.group(2)}: " if m.group(2) else ""
            messages.append(f"{m.group(1)}: {typ}{m.group(3)}" + (f" ({where})" if where else ""))
        t = _TOTAL.match(ln)
        if t:
            errors, warnings = int(t.group(1)), int(t.group(2))
    return {"errors": errors, "warnings": warnings, "messages": messages}


def run_checkpatch(co: Checkout, series: Series, log: Path) -> list[dict[str, Any]]:
    script = co.path / "scripts" / "checkpatch.pl"
    if not script.is_file():
        raise InfraError(f"{co.tree.spec} has no scripts/checkpatch.pl", fix="use a kernel tree that ships checkpatch")
    out: list[dict[str, Any]] = []
    for pf in series.patches:
        cp = proc.run(["perl", str(script), "--no-color", "--show-types",
                       "--no-signoff" if not pf.is_mail else "--signoff",
                       str(pf.path)], cwd=co.path, check=False, timeout=300, what="checkpatch")
        text = (cp.stdout or "") + (cp.stderr or "")
        with open(log, "a") as f:
            f.write(f"==== {pf.path.name}\n{text}\n")
        if cp.returncode and not any(_TOTAL.match(ln) for ln in text.splitlines()):
            # no "total:" line: checkpatch stopped before checking (e.g. "Must be run from the top-level dir.
            # of a kernel tree"); counting that as 0 errors would pass a patch nothing checked
            raise InfraError(f"checkpatch did not check {pf.path.name} (exit {cp.returncode})",
                             detail=text.strip().splitlines()[-5:], log=str(log),
                             fix="run it by hand in the scratch checkout to see why")
        res = parse(text)
        out.append({"file": pf.path.name, **res, "exit": cp.returncode})
    return out
