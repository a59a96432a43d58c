"""Coverage of the changed lines (kpipe/checks/coverage.py): the diff's changed lines, gcov's counts and branch
outcomes per hunk, the per-arch sentence. Fast tests on real data (the shipped patch, a gcov JSON captured from a
real run: tests/data/coverage/); e2e: a test patch adding a branch no test reaches, on real kernels in QEMU."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpipe.checks import coverage

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "coverage"
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


# ---------------------------------------------------------------- e2e

@pytest.mark.e2e
def test_a_branch_no_test_reaches_is_reported_not_executed(tree510, patched_kernels, tmp_path):
    """The seed + a patch adding a condition only a 12345-page DONTUNMAP move takes: its pr_info() line is
    reported as executed by no test on either arch (premerge would warn; --require-coverage fails), the seed's
    line stays covered. One incremental build (mremap.o) per arch, boot and the verifier only."""
    from kpipe_cli import invoke
    out = tmp_path / "run"
    # the DONTUNMAP moves reach the changed lines (and never take the 12345-page branch); the rest adds time
    r = invoke("verify", "--arch", "all", "--selftests", "none", "--case", "move-*", "--patch", str(SEED),
               "--patch", str(UNREACHED), out=out)
    assert r.code == 0, r
    res = r.result
    for arch in ("x86_64", "arm64"):
        fc = res["arches"][arch]["coverage"]["files"]["mm/mremap.c"]
        lines = {ln["line"]: ln for h in fc["hunks"] for ln in h["lines"]}
        assert lines[499]["count"] > 0                       # the seed's line (its own hunk)
        assert lines[502]["count"] > 0 and 0 < lines[502]["taken"] < lines[502]["branches"], lines[502]
        assert lines[503]["count"] == 0, lines[503]
    [m] = res["extra"]["coverage"]
    assert m["never_executed"] == [503]
    assert "NOT EXECUTED" in (out / "report.txt").read_text()
    assert "executed by no test on any arch" in r.stderr
    assert 'class="cov-miss"' in (out / "report.html").read_text()


@pytest.mark.e2e
def test_coverage_of_a_cached_kernel_after_another_build_in_its_folder(tree510, patched_kernels, tmp_path):
    """The build folder is shared by every kernel of an arch: its .gcno is the last build's. A kernel served
    from the cache keeps its own .gcno, so its coverage still reads (seen: "stamp mismatch with notes file" and
    no coverage at all for the seed's kernel after a mutant was built). Kernel A, then kernel B in the same
    folder (B changes the code too: a comment-only change keeps gcc's notes stamp), then A again from the cache
    with one verifier case."""
    import uuid

    from kpipe_cli import invoke
    from test_build import edit_patch, series
    a = edit_patch(tree510, tmp_path / "a.patch", f"/* kpipe coverage test A {uuid.uuid4().hex} */")
    b = edit_patch(tree510, tmp_path / "b.patch", f"/* kpipe coverage test B {uuid.uuid4().hex} */")
    (tmp_path / "sa").mkdir()
    (tmp_path / "sb").mkdir()
    sa, sb = series(tmp_path / "sa", SEED, a), series(tmp_path / "sb", SEED, UNREACHED, b)
    for s, out in ((sa, "build-a"), (sb, "build-b")):
        r = invoke("build", "--arch", "arm64", "--series", str(s), out=tmp_path / out)
        assert r.code == 0, r
    r = invoke("verify", "--arch", "arm64", "--selftests", "none", "--case", "move-memfd-shared",
               "--series", str(sa), out=tmp_path / "run")
    assert r.code == 0, r
    ar = r.result["arches"]["arm64"]
    assert ar["build"]["cached"] is True
    cov = ar["coverage"]
    assert cov["errors"] == [] and "mm/mremap.c" in cov["files"], cov
    assert cov["files"]["mm/mremap.c"]["executed"] >= 1, cov
