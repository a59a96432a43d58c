"""The tree's own selftests as a 6.12 debug kernel ran them (tests/data/runs/6.12-arm64/: `kpipe verify --tree
debian:6.12 --no-patches --arch arm64`, 2026-12-01: 62/62 verifier cases (the verifier of that day), 3 selftests,
0 findings, 2 CPUs): the runner-style KTAP file, with the mm tests' own nested KTAP, reads back to that run's
verdicts and nesting, and junit.xml counts its leaves. Nothing is built or booted."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from kpipe.checks.ktap import parse_document
from kpipe.report.results import ArchResult, RunResult, Status, write_junit

RUN = Path(__file__).parents[1] / "data" / "runs" / "6.12-arm64"


def test_612_selftests_read_back_with_their_nesting(tmp_path):
    want = json.loads((RUN / "expected.json").read_text())
    assert (want["kernel"], want["profile"], want["policy"], want["cpus"]) == ("6.12.118+", "debug", "upstream", 2)
    doc = parse_document((RUN / "selftests.ktap").read_text(), "selftests")
    assert not doc.problems
    by = {t.name.rsplit(": ", 1)[-1]: t for t in doc.tests}
    assert {f"selftests/{n}": t.status.value for n, t in by.items()} == want["statuses"]
    # the mm tests print KTAP of their own: every level is kept
    dontunmap = [s.name for s in by["mremap_dontunmap"].subtests]
    assert dontunmap == ["mremap_dontunmap_simple", "mremap_dontunmap_simple_shmem", "mremap_dontunmap_simple_fixed",
                         "mremap_dontunmap_partial_mapping", "mremap_dontunmap_partial_mapping_overwrite"]
    assert len(by["map_fixed_noreplace"].subtests) == 9
    assert all(s.status == Status.PASS for t in doc.tests for s in t.walk())
    assert by["userfaultfd-anon"].subtests == ()           # the stress test prints no KTAP
    # junit.xml: the nested results are leaves, no parent counted twice
    path = tmp_path / "junit.xml"
    write_junit(RunResult("verify", arches={"arm64": ArchResult("arm64", tests=doc.tests)}), path)
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite.get("tests") == str(5 + 9 + 1) and suite.get("failures") == "0"
