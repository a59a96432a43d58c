"""kpipe's packages form layers, and its modules no import cycle, not even through an import inside a function
(scripts/import_graph.py prints the graph; rerun it to see what imports what).

From the bottom: the core modules at the top of kpipe/ (errors, proc, arches, datadirs, cache, progress); the
result model and its writers (report); the patch series and its tree (source); the kernel build (build) and the
booted guest (guest), which know nothing of each other; what runs in a guest and how it is judged (checks); the
workflows over the runner (workflows); the LAVA path (lava); `kpipe bench` (bench); the command (cli). A module
imports its own package and packages below it, never one beside or above it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CORE = {"errors", "proc", "arches", "datadirs", "cache", "progress"}
LAYERS = [CORE, {"report"}, {"source"}, {"build", "guest"}, {"checks"}, {"workflows"}, {"lava"}, {"bench"}, {"cli"},
          {"__main__"}]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _graph() -> dict[str, list[str]]:
    cp = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), str(ROOT / "kpipe")],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and cp.stdout.rstrip().endswith("cycles: none"), cp.stdout[-2000:]
    return {k: [d for d in v.split(", ") if d] for k, v in
            (line.split(": ", 1) for line in cp.stdout.splitlines() if ": " in line and not line.startswith("cycles"))}


def _package(module: str) -> str:
    top = module.split(".")[0]
    return "core" if top in CORE else top


def test_packages_form_layers_without_cycles():
    graph = _graph()        # no cycle, even through an import inside a function
    unplaced = {m for m in graph if m != "__init__" and m.split(".")[0] not in RANK}
    assert not unplaced, f"a module outside every layer (add its package to LAYERS in this file): {sorted(unplaced)}"
    upward = [f"{m} -> {d}" for m, deps in graph.items() if m != "__init__" for d in deps
              if _package(m) != _package(d) and RANK[d.split(".")[0]] >= RANK[m.split(".")[0]]]
    assert upward == [], "an import beside or above its own layer:\n" + "\n".join(upward)
    # the check sees an upward import: a model importing a workflow, the build importing the guest
    for m, d in (("report.results", "workflows.runner"), ("build.kernel", "guest.qemu"), ("errors", "cli.tasks")):
        assert _package(m) != _package(d) and RANK[d.split(".")[0]] >= RANK[m.split(".")[0]]
    # the runner is below every workflow; the workflows and the LAVA path are above it, and nothing below
    # imports a workflow
    assert not {"workflows.flows", "workflows.bisection"} & set(graph["workflows.runner"])
    assert "workflows.runner" in graph["workflows.flows"] and "workflows.runner" in graph["workflows.bisection"]
    assert "guest.qemu" not in graph["guest.accel"] and "guest.qemu_cmdline" in graph["guest.accel"]
    # the result model is the bottom of what kpipe reports: it imports nothing of kpipe
    assert graph["report.results"] == []
