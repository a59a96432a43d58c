"""Selftests stage, fast tier: the plan (pure: MAINTAINERS, kpipe's map, a synthetic mm tree), the status from
exit codes, and the run's handling of refused channels and known hangs through fake sessions. Builds and runs
against the 5.10 tree: tests/e2e/test_selftests.py."""
from __future__ import annotations
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from local_session import LocalSession
from kpipe import proc
from kpipe.errors import InfraError, UsageError
from kpipe.guest.ssh import ChannelRefused
from kpipe.report.results import Status
from kpipe.checks import selftests
from kpipe.checks.selftests import (BuiltTest, SelftestSpec, build_extra_tests, build_selftests, find_selftest_dir,
                                    read_elf, run_selftests, status_from_exit)
from kpipe.checks.suite import get as get_suite

SEED = get_suite().selftests          # the seed suite's catalogue
CATALOGUE, DEFAULT_SET = SEED.catalogue, SEED.default_set


def plan(tree, touched, choice="all-relevant"):
    return selftests.plan(tree, touched, choice, SEED)


def selection_report(tree, touched, specs):
    return selftests.selection_report(tree, touched, specs, SEED)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KPIPE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _fake_mm_tree(root: Path) -> Path:
    mm = root / "tools/testing/selftests/mm"
    mm.mkdir(parents=True)
    names = ("mremap_dontunmap", "mremap_test", "uffd-stress", "uffd-unit-tests", "uffd-common",
             "map_fixed_noreplace", "vm_util", "mlock2-tests")
    for f in names:
        (mm / f"{f}.c").write_text("")
    (mm / "Makefile").write_text("TEST_GEN_FILES = " + " ".join(n for n in names if n not in ("uffd-common", "vm_util"))
                                 + "\n")
    (root / "tools/testing/selftests/memfd").mkdir()
    return root


def test_plan_on_an_mm_tree(tmp_path):
    tree = _fake_mm_tree(tmp_path)
    by = {s.name: s for s in plan(tree, ["mm/mremap.c"])}
    assert by["mremap_test"].collection == "mm" and not by["mremap_test"].skip
    assert by["uffd-unit-tests"].sources == ("tools/testing/selftests/mm/uffd-unit-tests.c",)
    assert by["userfaultfd-shmem"].display == "mm/uffd-stress shmem 16 4"
    assert by["userfaultfd-shmem"].binary_name == "uffd-stress"
    assert not by["userfaultfd-shmem"].known_hang and by["userfaultfd-shmem"].tries == 1   # mm/: fixed upstream
    assert "memfd_test.c" in by["memfd_test"].skip       # its folder is empty in this fake tree
    # a source file its collection's Makefile does not build is no test of this tree
    (tree / "tools/testing/selftests/mm/Makefile").write_text("TEST_GEN_FILES = mremap_test\n")
    by = {s.name: s for s in plan(tree, ["mm/mremap.c"])}
    assert not by["mremap_test"].skip and "not in this tree" in by["mremap_dontunmap"].skip


def test_plan_choices(tmp_path):
    tree = _fake_mm_tree(tmp_path)
    assert plan(tree, ["mm/mremap.c"], "none") == []
    assert [s.name for s in plan(tree, [], "mremap_test, map_fixed_noreplace")] == ["mremap_test",
                                                                                    "map_fixed_noreplace"]
    with pytest.raises(UsageError) as e:
        plan(tree, [], "mremap_test,bogus")
    assert "bogus" in e.value.message and "mremap_dontunmap" in e.value.fix
    # unrelated files map to the small default set; a touched selftest source selects that test
    assert [s.name for s in plan(tree, ["drivers/net/foo.c"])] == [n for n in
                                                                  [e["name"] for e in CATALOGUE] if n in DEFAULT_SET]
    assert [s.name for s in plan(tree, ["tools/testing/selftests/mm/mlock2-tests.c"])] == ["mlock2-tests"]
    assert "mlock2-tests" in [s.name for s in plan(tree, ["mm/mlock.c"])]


def test_status_from_exit_codes():
    assert status_from_exit(0, False, 10).status == Status.PASS
    assert status_from_exit(1, False, 10).status == Status.FAIL
    assert status_from_exit(2, False, 10).status == Status.XFAIL
    r = status_from_exit(3, False, 10)
    assert r.status == Status.FAIL and "XPASS" in r.details[0]
    assert status_from_exit(4, False, 10).status == Status.SKIP
    r = status_from_exit(None, True, 30)
    assert r.status == Status.FAIL and r.directive == "TIMEOUT 30 seconds" and "# TIMEOUT" in r.details[0]
    r = status_from_exit(None, True, 2.5)      # --test-timeout 2.5: said as the retry notes say it, not "2 s"
    assert r.observed == "timeout after 2.5 s" and r.directive == "TIMEOUT 2.5 seconds"
    assert status_from_exit(139, False, 10).directive == "exit=139"
    assert status_from_exit(None, False, 10).status == Status.FAIL


# ------------------------------------------------------------------------------- choice: MAINTAINERS + map


_MAINTAINERS = """\
List of maintainers

MEMORY MANAGEMENT
M:\tSomeone <s@example.org>
F:\tmm/
F:\tinclude/linux/mm.h

USERFAULTFD
M:\tOther <o@example.org>
F:\tfs/userfaultfd.c
F:\ttools/testing/selftests/mm/uffd-*.[ch]

HMM
F:\tmm/hmm*
F:\ttools/testing/selftests/mm/*hmm*
X:\tmm/hmm_old.c

KERNEL SELFTEST FRAMEWORK
F:\ttools/testing/selftests/

THE REST
F:\t*
F:\t*/
"""


def test_maintainers_sections_and_matching():
    from kpipe.source import maintainers as M
    secs = M.parse(_MAINTAINERS)
    assert [s.title for s in secs] == ["MEMORY MANAGEMENT", "USERFAULTFD", "HMM", "KERNEL SELFTEST FRAMEWORK",
                                       "THE REST"]
    titles = lambda f: [s.title for s in M.sections_for(secs, f)]      # noqa: E731
    assert titles("mm/mremap.c") == ["MEMORY MANAGEMENT", "THE REST"]
    assert titles("mm/hmm.c") == ["MEMORY MANAGEMENT", "HMM", "THE REST"]
    assert titles("mm/hmm_old.c") == ["MEMORY MANAGEMENT", "THE REST"]          # X: excludes
    assert M.matches("tools/testing/selftests/mm/uffd-*.[ch]", "tools/testing/selftests/mm/uffd-stress.c")
    assert not M.matches("mm/*", "mm/sub/dir.c") and M.matches("mm/", "mm/sub/dir.c")
    assert M.matches("drivers/net", "drivers/net/x.c")           # a directory named without its slash


def test_choice_from_maintainers_and_kpipes_map(tmp_path):
    tree = _fake_mm_tree(tmp_path)
    (tree / "MAINTAINERS").write_text(_MAINTAINERS)
    # fs/userfaultfd.c: the suite's map and the USERFAULTFD section agree; the reasons say both
    by = {s.name: s for s in plan(tree, ["fs/userfaultfd.c"])}
    assert set(by) == {"userfaultfd-anon", "userfaultfd-shmem", "uffd-unit-tests"}
    assert "the suite's map: fs/userfaultfd.c" in by["uffd-unit-tests"].why
    assert "MAINTAINERS 'USERFAULTFD' covers fs/userfaultfd.c and lists tools/testing/selftests/mm/uffd-*.[ch]" \
        in by["uffd-unit-tests"].why
    # a file only MAINTAINERS ties to a test (the suite's map knows nothing of mm/uffd_helpers.c... but mm/ is mapped
    # by nothing of kpipe's): the section's selftests are chosen
    (tree / "MAINTAINERS").write_text(_MAINTAINERS.replace("F:\tfs/userfaultfd.c", "F:\tmm/uffd_helpers.c"))
    by = {s.name: s for s in plan(tree, ["mm/uffd_helpers.c"])}
    assert set(by) == {"userfaultfd-anon", "userfaultfd-shmem", "uffd-unit-tests"}
    assert all(s.why.startswith("MAINTAINERS 'USERFAULTFD'") for s in by.values())
    # a section whose selftests kpipe cannot run is reported, not dropped
    specs = plan(tree, ["mm/hmm.c"])
    rep = selection_report(tree, ["mm/hmm.c"], specs)
    assert rep[-1]["note"] == "the suite's catalogue has no test matching tools/testing/selftests/mm/*hmm*: not run"
    assert "the suite's default set" in rep[0]["why"][0]
    assert [s.why for s in plan(tree, [], "mremap_test")] == ["asked for with --selftests"]


class RefusingSession(LocalSession):
    """Like dropbear once in CI: the exec request of one test's channel fails although the command started
    (here: it really starts, in the background, and keeps running), while the connection stays up. The refusal
    comes once the command shows that it runs: ``ran`` exists."""

    def __init__(self, refuse: str, ran: Path, times: int = 1):
        super().__init__()
        self.refuse, self.ran, self.times, self.started = refuse, ran, times, []

    def run(self, argv, timeout):
        if self.times and any(self.refuse in str(a) for a in argv):
            self.times -= 1
            self.commands.append(list(argv))
            self.started.append(proc.spawn([str(a) for a in argv], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
            end = time.monotonic() + 10
            while not self.ran.exists():
                assert time.monotonic() < end, f"{self.refuse} did not start: no {self.ran}"
                time.sleep(0.01)
            raise ChannelRefused(f"the guest's SSH server refused to start {self.refuse!r} (Channel closed.)")
        return super().run(argv, timeout)


def _script_test(tmp_path, name: str, body: str) -> BuiltTest:
    f = tmp_path / "bin" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("#!/bin/sh\n" + body + "\n")
    f.chmod(0o755)
    return BuiltTest(SelftestSpec(name, (f"{name}.c",), timeout=20), f)


def test_a_refused_channel_kills_what_started_and_runs_the_test_again(tmp_path):
    tests = [_script_test(tmp_path, "slow", "echo slow; sleep 30; echo done"),
             _script_test(tmp_path, "quick", "echo quick; sleep 0.5")]
    tests[0] = BuiltTest(replace(tests[0].spec, timeout=60), tests[0].binary)
    tests[0].binary.write_text("#!/bin/sh\n[ -e again ] && { echo second; exit 0; }; touch again; sleep 30\n")
    session = RefusingSession("./slow", tmp_path / "g/again")        # the test itself ran, not only its shell
    res = {r.name: r for r in run_selftests(session, tests, tmp_path / "run", remote_dir=str(tmp_path / "g"),
                                            parallel=2)}
    assert res["slow"].status == Status.PASS and res["slow"].observed == "exit 0"
    assert res["slow"].detail.startswith("slow: run again after the guest's SSH server refused its channel")
    assert (tmp_path / "run/selftests/slow.log").read_text() == "second\n"
    assert res["quick"].status == Status.PASS and "refused" not in res["quick"].detail
    first = session.started[0]
    assert first.wait(timeout=10) == -9, "the first, orphaned run must have been killed"
    proc.unregister(first)


def test_a_second_refusal_is_the_sessions_error(tmp_path):
    tests = [_script_test(tmp_path, "t1", "exit 0")]
    session = RefusingSession("./t1", tmp_path / "g/t1.pid", times=2)   # its pid file: it exits at once
    with pytest.raises(InfraError, match="refused to start") as e:
        run_selftests(session, tests, tmp_path / "run", remote_dir=str(tmp_path / "g"))
    [r] = e.value.partial_results
    assert r.status == Status.ERROR and r.observed == "session lost"
    for p in session.started:
        p.kill()
        p.wait()
        proc.unregister(p)


class ConsoleSession(LocalSession):
    """A host session with the guest session's hooks: its abort check (what the console reported, None: nothing)
    and the commands ended as hung (GuestSession.command_hung: the runner's SysRq probe)."""

    def __init__(self, reported: str | None = None):
        super().__init__()
        self.abort_check = lambda: reported
        self.hung: list[str] = []

    def command_hung(self, command: str) -> None:
        self.hung.append(command)


HANGS_ONCE = "#!/bin/sh\nn=$(cat count 2>/dev/null || echo 0); echo $((n + 1)) > count\n" \
             "echo \"run $((n + 1))\"\n[ $n -ge {hangs} ] && exit 0\nexec sleep 60\n"


def _known_hang_test(tmp_path, hangs: int) -> BuiltTest:
    """Its runs time out after 0.5 s (each hung one costs that) until ``hangs`` runs did; a run that does not hang
    ends at once."""
    t = _script_test(tmp_path, "uffd", HANGS_ONCE.format(hangs=hangs))
    return BuiltTest(replace(t.spec, timeout=0.5, known_hang="the test's own bug", tries=3), t.binary)


def test_a_known_hang_with_no_kernel_report_is_run_again(tmp_path):
    res = run_selftests(ConsoleSession(), [_known_hang_test(tmp_path, hangs=1)], tmp_path / "run",
                        remote_dir=str(tmp_path / "g"))
    [r] = res
    assert r.status == Status.PASS, r.detail
    assert r.detail.startswith("uffd: run 1 of 3 timed out after 0.5 s and the kernel reported nothing")
    assert "a known hang of the test itself, the test's own bug" in r.detail
    assert (tmp_path / "run/selftests/uffd.run1.log").read_text() == "run 1\n"
    assert (tmp_path / "run/selftests/uffd.log").read_text() == "run 2\n"


def test_a_known_hang_that_persists_is_inconclusive_after_its_tries(tmp_path):
    """Every try timed out and the kernel never reported anything: nothing is known about the kernel (exit 2),
    the test's own known hang may be all there is; never a kernel verdict."""
    [r] = run_selftests(ConsoleSession(), [_known_hang_test(tmp_path, hangs=5)], tmp_path / "run",
                        remote_dir=str(tmp_path / "g"))
    assert r.status == Status.ERROR and r.observed == "inconclusive: 3 timeouts"
    assert "run 2 of 3 timed out" in r.detail
    assert (tmp_path / "run/selftests/uffd.log").read_text() == "run 3\n"


def test_a_timeout_the_kernel_explains_is_never_run_again(tmp_path):
    """A hung or blocked task, a lockup: the kernel's doing, judged as such; and a test without a known hang."""
    [r] = run_selftests(ConsoleSession("SysRq-w lists a task blocked in D state"),
                        [_known_hang_test(tmp_path, hangs=1)], tmp_path / "run", remote_dir=str(tmp_path / "g"))
    assert r.status == Status.FAIL and "timed out" not in r.detail.split("---")[0]
    (tmp_path / "p").mkdir()
    t = _known_hang_test(tmp_path / "p", hangs=1)
    plain = BuiltTest(replace(t.spec, known_hang="", tries=1), t.binary)
    [r] = run_selftests(ConsoleSession(), [plain], tmp_path / "run2", remote_dir=str(tmp_path / "g2"))
    assert r.status == Status.FAIL and r.observed == "timeout after 0.5 s"
