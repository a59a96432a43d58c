"""The parsers on output captured from real runs (tests/data/runs/<tree>-<arch>/: `kpipe verify --arch all` of
5.10 + the seed on the debug kernels, 2026-12-01; verifier.tap and the verifier's statuses recaptured 2026-12-02
from `kpipe verify --arch ARCH --selftests none` of 5.10 + the seed with the 89-case verifier, selftests.ktap
and the selftests' statuses still those of the 12-01 run): the verifier's TAP and
the selftests' KTAP file read back to exactly the statuses that run reported in its result.json (expected.json).
Nothing is built or booted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpipe.checks.ktap import parse_document
from kpipe.checks.verifier import load_expectations, parse_tap

RUNS = Path(__file__).parents[1] / "data" / "runs"
CAPTURED = sorted(p.name for p in RUNS.iterdir() if p.name.startswith("5.10-") and (p / "expected.json").is_file())


def _expected(run: str) -> dict:
    return json.loads((RUNS / run / "expected.json").read_text())


def test_runs_were_captured_for_both_arches():
    assert CAPTURED == ["5.10-seed-arm64", "5.10-seed-x86_64"]


@pytest.mark.parametrize("run", CAPTURED)
def test_verifier_tap_reads_back_to_the_runs_verdicts(run):
    want = _expected(run)
    results = parse_tap((RUNS / run / "verifier.tap").read_text(), want["verifier_exit"], load_expectations(),
                        want["policy"])
    got = {f"verifier/{r.name}": r.status.value for r in results}
    assert got == {k: v for k, v in want["statuses"].items() if k.startswith("verifier/")}
    assert sum(v == "pass" for v in got.values()) == 86 and list(got.values()).count("xfail") == 2


@pytest.mark.parametrize("run", CAPTURED)
def test_selftests_ktap_reads_back_to_the_runs_verdicts(run):
    want = _expected(run)
    doc = parse_document((RUNS / run / "selftests.ktap").read_text(), "selftests")
    assert doc.version == "TAP version 13" and not doc.problems
    got = {f"selftests/{t.name.rsplit(': ', 1)[-1]}": t.status.value for t in doc.tests}
    assert got == {k: v for k, v in want["statuses"].items() if k.startswith("selftests/")}
    assert got["selftests/userfaultfd-anon"] == "pass" and got["selftests/uffd-unit-tests"] == "skip"


@pytest.mark.parametrize("run", CAPTURED)
def test_a_truncated_verifier_tap_loses_no_case(run):
    """Cut where a lost guest would cut it: every case after the cut is an ERROR, none vanishes."""
    want = _expected(run)
    text = (RUNS / run / "verifier.tap").read_text()
    cut = text[:text.index("ok 31 ")]
    results = parse_tap(cut, None, load_expectations(), want["policy"])
    names = {r.name for r in results}
    assert {k.split("/", 1)[1] for k in want["statuses"] if k.startswith("verifier/")} <= names
    missing = [r for r in results if r.observed == "missing"]
    assert len(missing) >= 30 and all(r.status.value == "error" for r in missing)
    assert "did not finish" in missing[0].detail
