"""result.json: one serialiser (results.to_dict) with a schema_version, described by
kpipe/report/schema/result.schema.json. Every result the e2e tests produce is validated against it too
(tests/kpipe_cli.py)."""
from __future__ import annotations

import json

from kpipe.report import results as R
from kpipe.report.results import ArchResult, Finding, RunResult, Status

TR = R.TestResult


def _run() -> RunResult:
    leaf = TR("selftests", "dontunmap", Status.FAIL, "ok", "not ok")
    ar = ArchResult(arch="x86_64", verdict="fail", exit_code=1,
                    kernel={"release": "5.10.262+", "profile": "debug", "policy": "anon+shmem"},
                    patches=[{"file": "p.patch", "subject": "mm: x", "author": "A <a@b>", "status": "applied",
                              "commit": "abc"}],
                    config={"profile": "debug", "fragments": ["base.config"], "missing": [], "optional_missing": [],
                            "conflicts": [], "selftests": [{"collection": "vm", "tests": ["x"], "why": ["map"]}]},
                    tests=[TR("verifier", "move-anon-private", Status.PASS, "ok", "ok"),
                           TR("selftests", "userfaultfd-shmem", Status.FAIL, "exit 0", "exit 1",
                                      subtests=(leaf,))],
                    findings=[Finding("kasan", "console", "BUG: KASAN: use-after-free in f+0x1/0x2", ("ctx",))],
                    phases={"build": 1.5})
    return RunResult(workflow="verify", verdict="fail", exit_code=1, arches={"x86_64": ar}, reproducer="kpipe verify",
                     started="2026-12-01T00:00:00+0000", seconds=3.0, out_dir="/tmp/x")


def test_result_json_carries_its_schema_version_and_conforms(tmp_path):
    R.write_json(_run(), tmp_path / "result.json")
    data = json.loads((tmp_path / "result.json").read_text())
    assert next(iter(data)) == "schema_version" and data["schema_version"] == R.SCHEMA_VERSION
    assert R.schema_problems(data) == []
    assert data["arches"]["x86_64"]["tests"][1]["subtests"][0]["status"] == "fail"


def test_schema_names_what_is_wrong():
    data = R.to_dict(_run())
    data["arches"]["x86_64"]["tests"][1]["subtests"][0]["status"] = "passed"
    data["exit_code"] = 7
    del data["arches"]["x86_64"]["findings"][0]["kind"]
    problems = R.schema_problems(data)
    assert any(p.startswith("arches/x86_64/tests/1/subtests/0/status:") for p in problems), problems
    assert any(p.startswith("exit_code:") for p in problems)
    assert any("'kind' is a required property" in p for p in problems)
