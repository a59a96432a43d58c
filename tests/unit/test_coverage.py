"""Coverage of the changed lines (kpipe/checks/coverage.py): the diff's changed lines, gcov's counts and branch
outcomes per hunk, the per-arch sentence. Fast tests on real data (the shipped patch, a gcov JSON captured from a
real run: tests/data/coverage/). On real kernels in QEMU: tests/e2e/test_coverage_runs.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpipe.checks import coverage

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parents[1] / "data" / "coverage"
SEED = ROOT / "patches" / "0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch"
UNREACHED = ROOT / "tests" / "patches" / "coverage" / "unreached-branch.patch"


def test_changed_lines_of_the_shipped_patch() -> None:
    ch = coverage.changed_lines(SEED.read_text())
    assert list(ch) == ["mm/mremap.c"]
    [h] = ch["mm/mremap.c"]
    assert h["lines"] == [656]              # the patch's own numbering (upstream); kpipe diffs the applied tree
    assert [r["sign"] for r in h["rows"]] == [" ", " ", " ", "-", "-", "+", " ", " ", " "]


def test_changed_lines_of_the_unreached_branch_patch() -> None:
    [h] = coverage.changed_lines(UNREACHED.read_text())["mm/mremap.c"]
    assert h["lines"] == [502, 503, 504]


def test_judge_and_sentence() -> None:
    hunks = coverage.changed_lines(UNREACHED.read_text())["mm/mremap.c"]
    counts = {502: {"count": 40, "branches": [40, 0, 3, 37]}, 503: {"count": 0, "branches": []}}
    judged = coverage.judge_hunks(hunks, counts)
    s = coverage.file_summary(judged)
    assert s == {"code_lines": 2, "executed": 1, "branches": 4, "taken": 3}     # 504 is blank: no code
    assert [r["count"] for r in judged[0]["rows"] if r["sign"] == "+"] == [40, 0, None]
    fx = {"x86_64": {"files": {"mm/mremap.c": {"hunks": judged, **s}}},
          "arm64": {"files": {"mm/mremap.c": {"hunks": judged, **s}}}}
    [m] = coverage.merge(fx)
    assert m["never_executed"] == [503]
    assert m["sentence"] == ("mm/mremap.c: 1 of 2 changed lines executed, 3 of 4 outcomes of its conditions "
                             "taken, on arm64 and x86_64")


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_gcov_json_captured_from_a_real_run(arch: str) -> None:
    """gcov's JSON of mm/mremap.o after the verifier (--selftests none) on 5.10 + seed + unreached-branch.patch
    (a real run, 2026-12-02): the seed's changed line (mm/mremap.c:499 in the applied tree) ran, 5 of its 6
    branch outcomes taken; the test patch's condition (502) ran with 2 of 4, its pr_info() (503) never."""
    gj = json.loads((DATA / f"seed-{arch}.gcov.json").read_text())
    counts = coverage.line_counts(gj, "mm/mremap.c")
    assert counts[499]["count"] > 0 and len(counts[499]["branches"]) == 6
    assert sum(1 for b in counts[499]["branches"] if b) == 5
    assert counts[503]["count"] == 0
    hunks = coverage.changed_lines(UNREACHED.read_text())["mm/mremap.c"]
    assert coverage.file_summary(coverage.judge_hunks(hunks, counts)) == \
        {"code_lines": 2, "executed": 1, "branches": 4, "taken": 2}
