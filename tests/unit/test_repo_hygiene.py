"""The checkout holds no leftover of a merge: a conflict marker in the README or a module is a defect no other
test sees (the README is not executed)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.M)


def test_no_merge_conflict_markers_in_tracked_text():
    files = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True,
                           check=True).stdout.split()
    hits = []
    for name in files:
        p = REPO / name
        if not p.is_file() or name.startswith("tests/data/"):
            continue
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{name}:{text.count(chr(10), 0, m.start()) + 1}" for m in MARKER.finditer(text)]
    assert hits == [], f"merge conflict markers: {hits}"
