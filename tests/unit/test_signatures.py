"""Crash signatures on real debug-kernel consoles (tests/data/findings/*.log, captured from real runs): stable
across arches, sides and repeats, offsets and addresses stripped, folded (fast). Frames decoded from a real
vmlinux: tests/e2e/test_signature_frames.py."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from kpipe.guest.findings import scan_text
from kpipe.report.results import ArchResult, RunResult
from kpipe.checks.signatures import annotate, annotate_run, decode, fold, signature

DATA = Path(__file__).parents[1] / "data" / "findings"


def _findings(name: str):
    return scan_text((DATA / f"{name}.log").read_text(), "console")


def _sig(name: str, kind: str) -> str:
    return next(signature(f)[0] for f in _findings(name) if f.kind == kind)


@pytest.mark.parametrize("name,kind,want", [
    ("uaf", "kasan", "kasan: vma_to_resize < sys_mremap"),
    ("vm-bug-on", "kernel_bug", "kernel_bug: vma_to_resize < sys_mremap"),
])
def test_same_signature_on_both_arches(name: str, kind: str, want: str) -> None:
    assert _sig(f"{name}-x86_64", kind) == _sig(f"{name}-arm64", kind) == want


@pytest.mark.parametrize("name,kind,want", [
    ("recursive-lock-x86_64", "lockdep_recursive", "lockdep_recursive: down_read < vma_to_resize < sys_mremap"),
    ("sleep-in-atomic-x86_64", "sleep_in_atomic",
     "sleep_in_atomic: slab_pre_alloc_hook < kmem_cache_alloc_trace < vma_to_resize"),
    ("deadlock-x86_64", "blocked_task", "blocked_task: __wait_for_common < vma_to_resize < sys_mremap"),
])
def test_signature_skips_report_machinery(name: str, kind: str, want: str) -> None:
    assert _sig(name, kind) == want


def test_signatures_hold_no_offsets_or_addresses() -> None:
    for log in DATA.glob("*.log"):
        for f in scan_text(log.read_text(), "console"):
            sig = signature(f)[0]
            assert not re.search(r"\+0x|0x[0-9a-f]|\[\s*\d+\.\d+\]|constprop", sig), (log.name, sig)


def test_folding_over_arches_sides_and_repeats() -> None:
    run = RunResult(workflow="premerge")
    for arch in ("x86_64", "arm64"):
        ar = ArchResult(arch=arch, findings=[f for f in _findings(f"uaf-{arch}") if f.kind == "kasan"])
        run.arches[arch] = ar
    base = ArchResult(arch="x86_64", findings=[f for f in _findings("uaf-x86_64") if f.kind == "kasan"])
    run.extra.baseline = {"x86_64": base}
    annotate_run(run)
    crashes = run.extra.crashes or []
    assert len(crashes) == 1
    c = crashes[0]
    assert c["seen"] == ["patched/x86_64", "patched/arm64", "baseline/x86_64"]
    assert c["arches"] == ["arm64", "x86_64"] and c["count"] == 3 and c["not_the_patch"]
    # one console repeating the same report: folded with its count
    ar = ArchResult(arch="x86_64", findings=[f for f in _findings("sleep-in-atomic-x86_64")])
    annotate(ar)
    folded = fold([("x86_64", f) for f in ar.findings])
    assert [(c["signature"], c["count"]) for c in folded] == [
        ("sleep_in_atomic: slab_pre_alloc_hook < kmem_cache_alloc_trace < vma_to_resize", 2)]
    assert not folded[0]["not_the_patch"]
