"""kpipe's modules form layers: no import cycle, not even through an import inside a function
(scripts/import_graph.py prints the graph; rerun it to see what imports what)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_cycles():
    cp = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), str(ROOT / "kpipe")],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and cp.stdout.rstrip().endswith("cycles: none"), cp.stdout[-2000:]
    graph = dict(line.split(": ", 1) for line in cp.stdout.splitlines() if ": " in line and not line.startswith("cycles"))
    # the runner is below every workflow; the workflows and the LAVA path are above it, and nothing below
    # imports a workflow
    assert not {"workflows", "bisection", "bench"} & set(graph["runner"].split(", "))
    assert "runner" in graph["workflows"].split(", ") and "runner" in graph["bisection"].split(", ")
    assert "qemu" not in graph["accel"].split(", ") and "qemu_cmdline" in graph["accel"].split(", ")
