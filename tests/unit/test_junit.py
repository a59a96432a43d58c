"""junit.xml counts each failure once: nested KTAP results are parent/child leaves, and a parent that failed
because a child failed is a container, not a second failure (kunit's writer does the same). Nothing is built
or booted: the nested results come from parsing KTAP as a selftest prints it."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from kpipe.checks.ktap import parse_document
from kpipe.report.results import ArchResult, RunResult, Status, write_junit
from kpipe.report.results import TestResult as Case

# a kselftest run as 6.x mm tests print it: one failing subtest among passing ones
NESTED = """TAP version 13
1..3
ok 1 mremap shmem DONTUNMAP
not ok 2 mremap memfd DONTUNMAP keeps the source
ok 3 mremap anon DONTUNMAP
# Totals: pass:2 fail:1 xfail:0 xpass:0 skip:0 error:0
"""
ALL_OK = "TAP version 13\n1..2\nok 1 first\nok 2 second\n"


def _selftest(name: str, status: Status, ktap: str, observed: str) -> Case:
    return Case("selftests", name, status, "exit 0", observed, detail=observed,
                subtests=tuple(parse_document(ktap, "selftests").tests))


def _junit(tmp_path, tests: list[Case]):
    ar = ArchResult(arch="arm64", verdict="fail", exit_code=1, tests=tests)
    path = tmp_path / "junit.xml"
    write_junit(RunResult(workflow="verify", arches={"arm64": ar}), path)
    return ET.parse(path).getroot()


def test_a_failing_child_is_counted_once_and_an_own_failure_is_kept(tmp_path):
    tests = [
        _selftest("child-fails", Status.FAIL, NESTED, "exit 1"),          # bad because of its child only
        _selftest("own-fail", Status.FAIL, ALL_OK, "exit 1"),             # exit 1 although every subtest passed
        Case("selftests", "plain", Status.FAIL, "exit 0", "exit 1"),
        Case("verifier", "shmem-dontunmap", Status.PASS, "ok", "ok"),
    ]
    root = _junit(tmp_path, tests)
    suite = root.find("testsuite[@name='arm64.selftests']")
    names = [tc.get("name") for tc in suite.findall("testcase")]
    assert names == ["child-fails/mremap shmem DONTUNMAP", "child-fails/mremap memfd DONTUNMAP keeps the source",
                     "child-fails/mremap anon DONTUNMAP", "own-fail", "own-fail/first", "own-fail/second", "plain"]
    failed = [tc.get("name") for tc in suite.findall("testcase") if tc.find("failure") is not None]
    assert failed == ["child-fails/mremap memfd DONTUNMAP keeps the source", "own-fail", "plain"]
    assert suite.get("failures") == "3" and suite.get("tests") == "7"
    assert root.find("testsuite[@name='arm64.verifier']").get("failures") == "0"


def test_a_run_failed_only_by_a_kernel_finding_has_a_failing_case(tmp_path):
    from kpipe.report.results import Finding
    ar = ArchResult(arch="arm64", verdict="fail", exit_code=1,
                    tests=[Case("verifier", "shmem-dontunmap", Status.PASS, "ok", "ok")],
                    findings=[Finding("warning", "console", "WARNING: CPU: 0 PID: 1 at mm/mremap.c:68",
                                      ("Call trace:", " move_page_tables+0x4c/0x6a0")),
                              Finding("kmemleak_off", "kmemleak", "kmemleak: Memory pool empty")])
    path = tmp_path / "junit.xml"
    write_junit(RunResult(workflow="verify", arches={"arm64": ar}), path)
    root = ET.parse(path).getroot()
    [kernel] = [s for s in root.iter("testsuite") if s.get("name") == "arm64.kernel"]
    assert kernel.get("failures") == "1" and kernel.get("errors") == "1"
    failure = kernel.find("testcase/failure")
    assert failure is not None and "mm/mremap.c:68" in failure.get("message") and "move_page_tables" in failure.text
    assert sum(int(s.get("failures")) + int(s.get("errors")) for s in root.iter("testsuite")) == 2


def test_a_run_error_no_test_explains_is_a_pipeline_case_and_control_chars_stay_well_formed(tmp_path):
    ar = ArchResult(arch="x86_64", verdict="error", exit_code=2, error="guest did not get ready\x1b[0m\x00",
                    tests=[Case("verifier", "x", Status.PASS, "ok", "ok", detail="out\x07put\x1b[31m")])
    path = tmp_path / "junit.xml"
    write_junit(RunResult(workflow="verify", arches={"x86_64": ar}), path)
    root = ET.parse(path).getroot()            # parses: no raw control character in the XML
    [pipe] = [s for s in root.iter("testsuite") if s.get("name") == "x86_64.pipeline"]
    err = pipe.find("testcase/error")
    assert err is not None and err.get("message").startswith("guest did not get ready\\x1b")
    assert "\x00" not in path.read_text() and "\\x00" in path.read_text()
