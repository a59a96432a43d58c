"""`invoke bench`: one real `bench --quick` row (e2e: real make-free verify, real QEMU, real OpenSSH), then
its resume. The row writer and the resume logic on a golden bench.json: tests/unit/test_bench.py."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kpipe.bench import measure as bench, rows as benchrows
from kpipe.bench.rows import Step, add_row, load_doc, missing_steps, plan_steps, row_key, write_doc


@pytest.mark.e2e
def test_one_real_quick_row_then_resume(tmp_path: Path, tree510) -> None:      # noqa: ARG001 - the tree fixture
    """`bench --quick --only unchanged --arch x86_64 --profile fast`: one real row (kpipe verify vs raw QEMU +
    OpenSSH), written the moment it is measured; `--resume` of the same folder then has nothing left to run. The
    fast profile: the row's machinery is the same for both profiles, and the debug kernel's row (its relevant
    selftests twice under TCG, ~4 min) would cost the suite what the README's measured table already shows."""
    out = tmp_path / "b"
    printed: list[str] = []
    assert bench.run_bench("x86_64", str(out), quick=True, only="unchanged", profile="fast",
                           echo=printed.append) == 0
    doc = load_doc(out / "bench.json")
    assert doc is not None and doc["complete"] is True
    (row,) = doc["rows"]
    assert row_key(row) == "unchanged/x86_64/fast"
    assert row["kpipe_s"] > 1 and row["raw_s"] > 1 and row["ratio"] == round(row["kpipe_s"] / row["raw_s"], 2)
    assert len(row["load"]) == 3 and len(row["load_start"]) == 3 and row["samples"]["kpipe"] == [row["kpipe_s"]]
    assert any(ln.startswith("unchanged") and str(row["kpipe_s"]) in ln for ln in printed)
    assert doc["machine"]["qemu"]["x86_64"].startswith("QEMU") and "gcc" in doc["machine"]["gcc"]["x86_64"]
    entries = set(os.listdir(out))
    printed.clear()
    assert bench.run_bench(resume=str(out), echo=printed.append) == 0
    assert set(os.listdir(out)) == entries                 # no new verify run folder
    assert sum("(from the earlier run)" in ln for ln in printed) == 1
