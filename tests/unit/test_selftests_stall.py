"""The stall watchdog of a test with a known user-space hang (fast, real processes in real sh on the host, the
guest's script as it is: busybox's ash runs the same POSIX script in every e2e run of 5.10's userfaultfd
stress test, which must not be ended as long as it uses CPU time)."""
from __future__ import annotations

import contextlib
import subprocess
from dataclasses import replace

import pytest

from kpipe import proc

from kpipe.checks import selftests
from kpipe.checks.selftests import BuiltTest, SelftestSpec, run_selftests
from kpipe.checks import suite
from kpipe.errors import UsageError
from kpipe.report.results import Status

from test_selftests_logic import ConsoleSession, _script_test


def _test(tmp_path, name: str, body: str, **spec) -> BuiltTest:
    t = _script_test(tmp_path, name, body)
    return BuiltTest(replace(t.spec, timeout=30, **spec), t.binary)


# sleeps for ever on its first run (the known hang), passes on the next
SLEEPS_ONCE = ("n=$(cat count 2>/dev/null || echo 0); echo $((n + 1)) > count; echo \"run $((n + 1))\"\n"
               "[ $n -ge 1 ] && exit 0\nexec sleep 60")
# the group's work is a child's while the test's main process sleeps: not a stall
BUSY_CHILD = "sh -c 'while :; do :; done' & b=$!\nsleep 4\nkill $b\necho done"
HANG = {"known_hang": "the test's own bug", "tries": 3, "stalled_after": 1}


def test_a_stalled_known_hang_ends_early_as_its_timeout_would_and_a_busy_group_runs_on(tmp_path):
    assert_stall_ended_and_busy_ran_on(ConsoleSession(), tmp_path)


@contextlib.contextmanager
def processes_come_and_go():
    """Short-lived processes beside the tests (as on a loaded machine, or kpipe's own commands in the guest): a
    scan meets /proc entries that vanish between the glob and their open."""
    churn = proc.spawn(["sh", "-c", "while :; do sleep 0.002; done"], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.kill_group(churn, grace=0.5)
        proc.unregister(churn)


def assert_stall_ended_and_busy_ran_on(session: ConsoleSession, tmp_path) -> None:
    """Shared with tests/e2e/test_selftests.py, which runs it under the guest's own busybox. A stall of 1 s: the
    watchdog looks every second (the first look notes the main process's CPU time, the second, unchanged,
    the group's; the third, unchanged too, kills)."""
    with processes_come_and_go():
        res = {r.name: r for r in run_selftests(session, [_test(tmp_path, "uffd", SLEEPS_ONCE, **HANG),
                                                          _test(tmp_path, "busy", BUSY_CHILD, **HANG)],
                                                tmp_path / "run", remote_dir=str(tmp_path / "g"), parallel=2)}
    uffd, busy = res["uffd"], res["busy"]
    assert uffd.status == Status.PASS and uffd.runs == 2, uffd.detail
    assert uffd.detail.startswith("uffd: run 1 of 3 stalled (almost no CPU time in its process group for 1 s, killed) "
                                  "and the kernel reported nothing"), uffd.detail
    assert uffd.seconds < 15, "the stall must end the run long before its 30 s timeout"
    first = (tmp_path / "run/selftests/uffd.run1.log").read_text()
    assert first.startswith("run 1\n")
    assert f"{selftests.STALL_MARKER}: the test's process group used almost no CPU time" in first
    assert (tmp_path / "run/selftests/uffd.log").read_text() == "run 2\n"
    # what the watchdog saw is kept beside the run's output: the main process's CPU time, then the group's,
    # unchanged until the kill (the group is gone when it is read: no thread listed)
    looks = (tmp_path / "run/selftests/uffd.run1.hang").read_text()
    assert looks.startswith("the stall watchdog's looks (CPU time in clock ticks):\n1 s: main "), looks
    assert ", idle for 1 s\n" in looks and "\ntid " not in looks, looks
    # a busy child kept the group's CPU time moving for 4 s while the main process slept: never ended
    assert busy.status == Status.PASS and busy.runs == 1 and busy.detail == "", busy.detail
    # the stalled run's kernel was asked, as on a timeout
    assert len(session.hung) == 1 and "./uffd" in session.hung[0], [h[:90] for h in session.hung]
    assert (tmp_path / "run/selftests/busy.log").read_text() == "done\n"


# 5.10's userfaultfd stress in its real hang (every thread asleep) still gained a clock tick every 10-20 s in an
# arm64 debug guest: a group that trickles is idle. Here a 3 ms spin (through `timeout`, a reaped child) each second
TRICKLES = "while :; do timeout 0.003 sh -c 'while :; do :; done'; sleep 1; done"


def test_a_group_that_only_trickles_is_a_stall(tmp_path, monkeypatch):
    """Idle is almost no CPU time, not none. Scaled down to stay fast: a look every 3 s, idle below one tick per
    second of the look (the guest's: every 10 s, below one per 2 s), a stall after 3 idle seconds."""
    monkeypatch.setattr(selftests, "STALL_SCAN", 3)
    monkeypatch.setattr(selftests, "IDLE_SECONDS_PER_TICK", 1)
    [r] = run_selftests(ConsoleSession(), [_test(tmp_path, "uffd", TRICKLES, **dict(HANG, stalled_after=3, tries=1))],
                        tmp_path / "run", remote_dir=str(tmp_path / "g"))
    assert r.status == Status.FAIL and r.observed == "stalled: almost no CPU time for 3 s", r
    looks = (tmp_path / "run/selftests/uffd.hang").read_text().splitlines()
    # the premise, this run: the group's CPU time did move while it counted as idle (a watchdog that waited for
    # none at all would never have ended it)
    ticks = [int(ln.split(", group ")[1].split(",")[0]) for ln in looks if ", group " in ln]
    assert len(ticks) >= 2 and ticks[-1] > ticks[0], looks


def test_a_stall_the_kernel_explains_is_the_kernels_failure_and_never_run_again(tmp_path):
    session = ConsoleSession("SysRq-w lists a task blocked in D state")
    [r] = run_selftests(session, [_test(tmp_path, "uffd", SLEEPS_ONCE, **HANG)], tmp_path / "run",
                        remote_dir=str(tmp_path / "g"))
    assert r.status == Status.FAIL and r.observed == "stalled: almost no CPU time for 1 s" and r.runs == 1, r
    assert "# STALLED: killed after 1 s with almost no CPU time" in r.detail
    assert "TIMEOUT stalled 1 seconds" in (tmp_path / "run/selftests.ktap").read_text()


def test_without_stalled_after_no_watchdog_runs(tmp_path):
    spec = SelftestSpec("t", ("t.c",), timeout=30, known_hang="bug", tries=3)
    assert selftests.STALL_MARKER not in selftests._test_script("/d", "/d/t.pid", "t", (), spec.stalled_after)
    assert selftests.STALL_MARKER in selftests._test_script("/d", "/d/t.pid", "t", (), 30)


HANG_TOML = """
[known_hangs.h]
file = "vm/t.c"
fixed_by = "fixed"
tries = 3
why = "its own bug"
stalled_after = {value}

[[catalogue]]
name = "t"
timeout = 60
variants = [{{ target = "vm/t", known_hang = "h" }}]
"""


@pytest.mark.parametrize("value", ["0", "4", '"30"', "2.5", "true"])
def test_stalled_after_must_be_whole_seconds_of_at_least_five(tmp_path, value):
    (tmp_path / suite.SELFTESTS_FILE).write_text(HANG_TOML.format(value=value))
    with pytest.raises(UsageError, match="stalled_after must be a whole number of seconds, at least 5"):
        suite._selftests(tmp_path)
    (tmp_path / suite.SELFTESTS_FILE).write_text(HANG_TOML.format(value="30"))
    [entry] = suite._selftests(tmp_path).catalogue
    assert entry["variants"][0]["known_hang"]["stalled_after"] == 30


def test_a_test_past_its_timeout_leaves_its_threads_states_and_kernel_stacks(tmp_path):
    assert_timeout_leaves_its_threads(ConsoleSession(), tmp_path)


def assert_timeout_leaves_its_threads(session, tmp_path) -> None:
    """Any timeout (no watchdog here): before the test is killed, each thread of its group is listed with its
    state, CPU time and where it waits, in <name>.hang beside its log. Shared with tests/e2e/test_selftests.py
    (the guest's busybox awk)."""
    t = _script_test(tmp_path, "sleeper", "sleep 60 >/dev/null 2>&1 &\nexec sleep 60")
    [r] = run_selftests(session, [BuiltTest(replace(t.spec, timeout=1), t.binary)], tmp_path / "run",
                        remote_dir=str(tmp_path / "g"))
    assert r.status == Status.FAIL and r.observed == "timeout after 1 s", r
    hang = (tmp_path / "run/selftests/sleeper.hang").read_text()
    assert "the stall watchdog" not in hang and hang.startswith("the test's threads (process group "), hang
    threads = [ln for ln in hang.splitlines() if ln.startswith("tid ")]
    # the child asleep, where it waits (the main process may already be gone: the host session kills its child
    # at the timeout, which an SSH session cannot), and its kernel stack (root reads /proc/<tid>/stack)
    assert any(" state S utime " in ln and "wchan " in ln for ln in threads), hang
    assert any(ln.startswith("    [<") for ln in hang.splitlines()), hang
