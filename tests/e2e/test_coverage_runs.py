"""Coverage of the changed lines on real kernels in QEMU (e2e): a test patch adding a branch no test reaches,
and a cached kernel's counters after another build in its folder. The fast tests on captured data:
tests/unit/test_coverage.py."""
from __future__ import annotations

import pytest

from kpipe.checks import coverage

from test_coverage import ROOT, SEED, UNREACHED  # noqa: F401  (shared with the fast tier)


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
