"""Every kernel report is a verdict, in every phase (real debug kernels, real QEMU): one test kernel, 5.10 + the
seed + tests/patches/test-kernel.patch, whose `kpipe_mutant=` boot parameter picks the fault, so the four
faults share one build (with every other wrong kernel of the tests). They run on arm64 only: the checks (the
console scanner, the boot's early verdict, kmemleak's report) do not depend on the arch, and arm64's debug
kernel boots fastest.

- lockup: init's first exec spins with preemption off: soft lockup before userspace -> exit 1 within 30 s of the
  report (not the boot timeout), not "infrastructure".
- hung: the exec of the guest's sshd sleeps in D state: a hung (blocked) task before sshd listens -> exit 1.
- warn: a WARNING at boot, after which the guest gets ready and the tests pass -> exit 1 on the finding alone,
  and junit.xml says so with a failing testcase.
- leak: every shmem DONTUNMAP move leaks a vm_area_struct: no counter shows it, kmemleak does -> exit 1.
"""
from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kpipe_cli import LEAK_SCAN_ON, assert_mutant_was_active, invoke, mutant_args

pytestmark = pytest.mark.e2e

ARCH = "arm64"


def run_fault(tmp_path: Path, fault: str, *extra: str, env: dict[str, str] | None = None):
    # the faults hook exec and the DONTUNMAP path: the verifier's moves reach the leak; the rest adds time
    args = ["verify", "--arch", ARCH, "--selftests", "none", "--case", "move-*", "--accel", "tcg",
            *mutant_args(fault), *extra]
    t0 = time.monotonic()
    ran = invoke(*args, out=tmp_path / "run", timeout=1800, env=env)
    seconds = time.monotonic() - t0
    assert (tmp_path / "run" / "result.json").is_file(), str(ran)
    ar = ran.result["arches"][ARCH]
    assert_mutant_was_active(tmp_path / "run", ARCH, fault)
    print(f"\n{fault}: exit {ran.code} in {seconds:.0f}s, kinds {[f['kind'] for f in ar['findings']]}, "
          f"boot {ar.get('boot')}, phases {ar.get('phases')}")
    return ran, ar


def test_lockup_before_userspace_is_a_kernel_verdict_within_30s(tmp_path):
    ran, ar = run_fault(tmp_path, "lockup")
    assert ran.code == 1, str(ran)
    assert ar["verdict"] == "fail" and ar["exit_code"] == 1
    lockups = [f for f in ar["findings"] if f["kind"] == "soft_lockup"]
    assert lockups and "[init:1]" in lockups[0]["line"], ar["findings"]
    assert any(re.search(r"move_page_tables\+0x", ln) for ln in lockups[0]["context"]), lockups[0]
    assert ar["boot"]["verdict_after_fatal_s"] <= 30, ar["boot"]
    assert "before the guest was ready" in ar["error"] and "soft_lockup" in ar["error"]
    assert "watchdog: BUG: soft lockup - CPU#" in (tmp_path / "run" / "summary.md").read_text()   # with its line
    assert ran.result["exit_code"] == 1


def test_hung_task_before_sshd_is_a_kernel_verdict(tmp_path):
    ran, ar = run_fault(tmp_path, "hung")
    assert ran.code == 1, str(ran)
    kinds = {f["kind"] for f in ar["findings"]}
    assert kinds & {"hung_task", "blocked_task"}, ar["findings"]
    named = [f for f in ar["findings"] if f["kind"] in ("hung_task", "blocked_task")]
    assert any("dropbear" in f["line"] for f in named), named
    assert "before the guest was ready" in ar["error"]


def test_warning_at_boot_fails_a_run_whose_tests_pass_and_junit_says_so(tmp_path):
    """Also: the leak scan turned off from the environment (a quick edit loop) is said in the reports."""
    ran, ar = run_fault(tmp_path, "warn", env={"KPIPE_LEAK_SCAN": "0"})
    assert ran.code == 1, str(ran)
    assert [f["kind"] for f in ar["findings"]] == ["warning"], ar["findings"]
    assert "kpipe test fault: a WARNING during boot" in "\n".join([ar["findings"][0]["line"],
                                                                    *ar["findings"][0]["context"]])
    tests = [t for t in ar["tests"] if t["status"] not in ("pass", "xfail", "skip")]
    assert tests == [], tests                  # every test passed: the finding alone is the verdict
    suites = ET.parse(tmp_path / "run" / "junit.xml").getroot()
    failures = sum(int(s.get("failures", "0")) for s in suites.iter("testsuite"))
    assert failures >= 1, ET.tostring(suites)[:2000]
    cases = [c for c in suites.iter("testcase") if c.find("failure") is not None]
    assert any("warning" in (c.find("failure").get("message") or "") for c in cases)
    assert ar["boot"]["kmemleak"] == {"not_scanned": "leak_scan is off (environment KPIPE_LEAK_SCAN)"}
    assert "| kmemleak | not scanned: leak" in (tmp_path / "run" / "summary.md").read_text()


def test_leaked_vma_is_caught_by_kmemleak(tmp_path):
    ran, ar = run_fault(tmp_path, "leak", env=LEAK_SCAN_ON)
    assert ran.code == 1, str(ran)
    leaks = [f for f in ar["findings"] if f["kind"] == "kmemleak"]
    assert leaks, ar["findings"]
    assert any("vm_area_dup" in ln for ln in leaks[0]["context"]), leaks[0]
    assert ar["boot"]["kmemleak"]["leaks"] == len(leaks)
    # the verifier itself passed: without kmemleak this kernel would pass
    assert not [t for t in ar["tests"] if t["status"] == "fail"]
