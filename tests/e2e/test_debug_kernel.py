"""End to end on the debug profile (the default): test mutants that break the kernel in ways only a debug
kernel sees each end `invoke verify` with exit 1 and the right finding kind. Every mutant (the test kernel's,
tests/patches/test-kernel.patch, picked at boot with kpipe_mutant=<name>: one build per arch for all of them)
sits in vma_to_resize() behind MREMAP_DONTUNMAP, after the seed patch's check: nothing runs that path at boot,
the verifier runs it on its first case.

Each run's serial console is kept as a golden file in tests/data/findings/ (KPIPE_UPDATE_GOLDEN=1 refreshes
them) for the fast findings tests. The shipped patch's zero-findings run on both arches (the correct kernel these
are judged against) is tests/test_workflows.py's test_verify_all_default_tree_passes_with_zero_findings."""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from kpipe_cli import REPO_ROOT, assert_mutant_was_active, invoke, mutant_args

pytestmark = pytest.mark.e2e

GOLDEN = REPO_ROOT / "tests" / "data" / "findings"
TEST_TIMEOUT = 20          # seconds for the verifier: the deadlock case waits it out


def verify(tmp_path: Path, arch: str, mutant: str, extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
    args = ["verify", "--arch", arch, "--selftests", "none", "--accel", "tcg", *mutant_args(mutant)]
    t0 = time.monotonic()
    ran = invoke(*args, *extra, out=tmp_path / "run", timeout=2400, env=env)
    seconds = time.monotonic() - t0
    assert (tmp_path / "run" / "result.json").is_file(), str(ran)
    assert_mutant_was_active(tmp_path / "run", arch, mutant)
    return ran, ran.result["arches"][arch], seconds


def keep_golden(tmp_path: Path, arch: str, name: str) -> None:
    dst = GOLDEN / f"{name}-{arch}.log"
    if os.environ.get("KPIPE_UPDATE_GOLDEN") or not dst.exists():
        GOLDEN.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "run" / arch / "serial.log", dst)


def kinds(ar: dict) -> set[str]:
    return {f["kind"] for f in ar["findings"]}


# Every mutant is gated to the DONTUNMAP path of vma_to_resize(): the verifier's DONTUNMAP moves (anon, memfd,
# tmpfs, shared and private) reach it; the other cases only add run time
DONTUNMAP_MOVES = ("--case", "move-*")

# (mutant, arch, a finding kind it must produce, kinds that must not be missing alongside)
CASES = [
    ("uaf", "x86_64", "kasan"),
    ("vm-bug-on", "x86_64", "kernel_bug"),
    ("sleep-in-atomic", "x86_64", "sleep_in_atomic"),
    ("recursive-lock", "x86_64", "lockdep_recursive"),
    ("vm-bug-on", "arm64", "kernel_bug"),
    ("uaf", "arm64", "kasan"),
]


@pytest.mark.parametrize("mutant,arch,kind", CASES, ids=[f"{m}-{a}" for m, a, _ in CASES])
def test_mutant_is_a_kernel_verdict_with_the_right_finding(tmp_path, mutant, arch, kind):
    ran, ar, seconds = verify(tmp_path, arch, mutant, extra=("--test-timeout", str(TEST_TIMEOUT), *DONTUNMAP_MOVES))
    print(f"\n{arch} {mutant}: exit {ran.code} in {seconds:.0f}s, kinds {sorted(kinds(ar))}, boot {ar['boot']}")
    assert ran.code == 1, str(ran)
    assert kind in kinds(ar), (kinds(ar), ar["error"])
    f = next(f for f in ar["findings"] if f["kind"] == kind)
    # the report comes with its symbolized trace, through the mutant's function
    assert any(re.search(r"(vma_to_resize|mremap)\S*\+0x", ln) for ln in f["context"]), f
    assert kind in ar["error"]
    if kind == "kernel_bug":         # PANIC_ON_OOPS: the BUG panics; the verdict follows at once
        assert "panic" in kinds(ar)
        assert ar["boot"]["verdict_after_fatal_s"] < 30, ar["boot"]
        if arch == "x86_64":
            assert "vm_bug_on" in kinds(ar)           # VM_BUG_ON_VMA's dump_vma() before the BUG
    keep_golden(tmp_path, arch, mutant)


def test_deadlock_in_the_syscall_names_the_blocked_task(tmp_path):
    arch = "x86_64"
    ran, ar, seconds = verify(tmp_path, arch, "deadlock",
                              extra=("--test-timeout", str(TEST_TIMEOUT), *DONTUNMAP_MOVES))
    tests_s = ar["phases"]["boot+tests"] - ar["boot"]["ssh_seconds"]
    print(f"\ndeadlock: exit {ran.code} in {seconds:.0f}s (tests to verdict {tests_s:.1f}s), "
          f"kinds {sorted(kinds(ar))}, probe {ar['boot'].get('hang_probe')}")
    assert ran.code == 1, str(ran)
    assert kinds(ar) & {"blocked_task", "hung_task"}, ar["findings"]
    assert re.search(r"blocked task\(s\): .*mremap_dontunm", ar["error"]), ar["error"]
    assert ar["boot"]["hang_probe"]["via"] == "ssh /proc/sysrq-trigger"
    assert tests_s < TEST_TIMEOUT + 30, ar["phases"]
    keep_golden(tmp_path, arch, "deadlock")


def test_ctrl_c_while_the_guest_is_wedged_ends_the_run_at_once(tmp_path):
    """SIGINT while the verifier sits in the deadlocked syscall (the hang handling has not given up yet):
    exit 2 and QEMU gone within seconds."""
    import signal
    import subprocess
    import sys
    import threading

    from conftest import _qemu_children  # noqa: F401 (the autouse guard checks our own children)

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "invoke", "verify", "--arch", "x86_64", "--selftests", "none", "--accel", "tcg",
           *mutant_args("deadlock"), "--test-timeout", "60", "--out", str(out)]
    p = subprocess.Popen(cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 900
        while not any("run: start" in ln for ln in lines):
            assert p.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.1)
        time.sleep(8)                     # inside the deadlocked mremap()
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(timeout=10)
    err = "".join(lines)
    print(f"\nSIGINT while wedged: exit {p.returncode} {took:.1f}s after the signal")
    assert p.returncode == 2, err[-3000:]
    assert took < 5, took
    qemus = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert qemus == [], "QEMU of the interrupted run still running"


def test_oops_without_panic_is_judged_within_30s_not_after_the_timeouts(tmp_path):
    """With panic_on_oops switched off (sysctl on the command line, 5.8+), a kernel BUG kills the verifier's
    case holding mmap_lock: it then hangs in exit_mm() and every later guest command would wait out its
    timeout. kpipe stops waiting FATAL_GRACE after the report, asks SysRq, and gives the verdict."""
    ran, ar, seconds = verify(tmp_path, "x86_64", "vm-bug-on",
                              extra=("--test-timeout", "300", "--kernel-arg", "sysctl.kernel.panic_on_oops=0"))
    print(f"\nOops without panic: exit {ran.code} in {seconds:.0f}s, kinds {sorted(kinds(ar))}, "
          f"verdict {ar['boot'].get('verdict_after_fatal_s')}s after the first fatal report, "
          f"probe {ar['boot'].get('hang_probe')}")
    assert ran.code == 1, str(ran)
    assert {"kernel_bug", "oops"} <= kinds(ar) and "panic" not in kinds(ar), kinds(ar)
    assert ar["boot"]["verdict_after_fatal_s"] < 30, ar["boot"]
    assert ar["phases"]["boot+tests"] < 120, ar["phases"]          # far below the 300 s test timeout
    keep_golden(tmp_path, "x86_64", "oops-no-panic")
