"""The verifier: expectations data, policy choice, TAP -> results (pure); the C harness built around fake
cases (crashes, hangs), and a hanging binary run through a local session. The real binary built for each arch,
host runs and the 5.10 kernels booted in QEMU: tests/e2e/test_verifier_510.py."""
from __future__ import annotations
import os
import re
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from local_session import LocalSession

from kpipe import proc
from kpipe.errors import BuildError, InfraError, UsageError
from kpipe.report.results import Status
from kpipe.checks.suite import LIB_DIR
from kpipe.checks.suite import get as get_suite
from kpipe.checks.verifier import (build_verifier, choose_policy, expect_file_text, load_expectations, parse_tap,
                                   run_verifier)

SEED = get_suite()
VERIFY_DIR = SEED.sources
POLICIES = tuple(load_expectations(SEED).policies)
SHMEM_MOVES = ["move-anon-shared", "move-devzero-shared", "move-memfd-shared", "move-memfd-private",
               "move-memfd-shared-ro", "move-tmpfs-shared", "move-tmpfs-private"]


@pytest.fixture(scope="module")
def exp():
    return load_expectations()


# ----------------------------------------------------------------------------------------- expectations


def test_every_case_has_all_three_policies(exp):
    assert len(exp.cases) >= 30
    for c in exp.cases.values():
        assert set(c.outcomes) == set(POLICIES), c.name
        for p, v in c.outcomes.items():
            assert re.fullmatch(r"ok|skip|E[A-Z0-9]+|xfail:[A-Z0-9]+", v), (c.name, p, v)
            assert v.startswith("xfail:") == bool(c.xfail.get(p)), (c.name, p, "an xfail needs its reason")
        assert c.description, c.name


def test_expectations_follow_the_measured_table(exp):
    col = {p: exp.column(p) for p in POLICIES}
    for name in SHMEM_MOVES:
        assert (col["anon-only"][name], col["anon+shmem"][name], col["upstream"][name]) == ("EINVAL", "ok", "ok")
    for name in ("move-ramfs-shared", "move-ramfs-private", "move-sysv-shm"):
        assert (col["anon-only"][name], col["anon+shmem"][name], col["upstream"][name]) == ("EINVAL", "EINVAL", "ok")
    for name in ("move-anon-private", "move-devzero-private"):
        assert {col[p][name] for p in POLICIES} == {"ok"}
    for name in ("move-hugetlb", "move-devmem", "move-vdso", "move-vvar"):
        assert {col[p][name] for p in POLICIES} == {"EINVAL"}
    args = [n for n in exp.cases if n.startswith("arg-")]
    assert len(args) >= 5
    for name in args:
        want = "EFAULT" if name == "arg-past-vma-end" else "EINVAL"
        assert {col[p][name] for p in POLICIES} == {want}, name


def test_data_cases_skip_exactly_where_their_move_is_refused(exp):
    dependent = [c for c in exp.cases.values() if c.requires]
    assert len(dependent) >= 10
    for c in dependent:
        for p in POLICIES:
            move_ok = exp.cases[c.requires].outcomes[p] == "ok"
            if move_ok and c.outcomes[p].startswith("xfail:"):
                continue        # the move is allowed; a known kernel bug under this policy (reason checked above)
            assert c.outcomes[p] == ("ok" if move_ok else "skip"), (c.name, p)


def test_bad_expectation_files_are_usage_errors(tmp_path):
    good = (VERIFY_DIR / "expectations.toml").read_text()
    f = tmp_path / "e.toml"
    f.write_text(good.replace('"upstream" = "EFAULT"', "", 1))
    with pytest.raises(UsageError) as e:
        load_expectations(path=f)
    assert any("arg-past-vma-end" in d and "no outcome for upstream" in d for d in e.value.detail)
    f.write_text(good.replace('"anon-only" = "EFAULT"', '"anon-only" = "maybe"', 1))
    with pytest.raises(UsageError) as e:
        load_expectations(path=f)
    assert any("bad outcome anon-only = 'maybe'" in d for d in e.value.detail)
    f.write_text(good.replace('"anon-only" = "EFAULT"', '"anon_only" = "EFAULT"', 1))
    with pytest.raises(UsageError) as e:
        load_expectations(path=f)
    assert any("unknown keys anon_only" in d for d in e.value.detail)
    f.write_text(good.replace('requires = "move-anon-shared"', 'requires = "move-nothing"', 1))
    with pytest.raises(UsageError) as e:
        load_expectations(path=f)
    assert any("requires unknown case 'move-nothing'" in d for d in e.value.detail)
    f.write_text("[cases\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_expectations(path=f)
    with pytest.raises(UsageError, match="not found"):
        load_expectations(path=tmp_path / "missing.toml")


def test_expect_file_text(exp):
    text = expect_file_text(exp, "anon+shmem")
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines == [f"{n}={c.outcomes['anon+shmem']}" for n, c in exp.cases.items()]
    assert "move-memfd-shared=ok" in lines and "move-sysv-shm=EINVAL" in lines
    with pytest.raises(UsageError, match="anon-only, anon\\+shmem, upstream"):
        expect_file_text(exp, "everything")


# ------------------------------------------------------------------------------------------------ policy


RULE_57 = """	if (flags & MREMAP_DONTUNMAP && (!vma_is_anonymous(vma) ||
			vma->vm_flags & VM_SHARED))
		return ERR_PTR(-EINVAL);
"""
RULE_SEED = """	if (flags & MREMAP_DONTUNMAP && !(vma_is_anonymous(vma) || vma_is_shmem(vma)))
		return ERR_PTR(-EINVAL);
"""
RULE_612 = """	if ((flags & MREMAP_DONTUNMAP) &&
			(vma->vm_flags & (VM_DONTEXPAND | VM_PFNMAP)))
		return ERR_PTR(-EINVAL);
"""
RULE_NEWEST = """	if ((vrm->flags & MREMAP_DONTUNMAP) &&
			(vma->vm_flags & (VM_DONTEXPAND | VM_PFNMAP)))
		return -EINVAL;
"""


def _tree(tmp_path, body: str) -> Path:
    (tmp_path / "mm").mkdir(parents=True, exist_ok=True)
    (tmp_path / "mm" / "mremap.c").write_text("// SPDX\n#include <linux/mm.h>\n\nstatic int f(void)\n{\n"
                                              + body + "}\n")
    return tmp_path


def test_policy_comes_from_the_code(tmp_path):
    for body, want in ((RULE_57, "anon-only"), (RULE_SEED, "anon+shmem"), (RULE_612, "upstream"),
                       (RULE_NEWEST, "upstream")):
        policy, why = choose_policy(_tree(tmp_path, body), None, SEED)
        assert policy == want and why.startswith("mm/mremap.c:6 carries "), (policy, why)
    assert "`MREMAP_DONTUNMAP && !(vma_is_anonymous(vma) || vma_is_shmem(vma))`" in \
        choose_policy(_tree(tmp_path, RULE_SEED), None, SEED)[1]
    # the rule in a comment does not count; the seed rule in the code does
    policy, _ = choose_policy(_tree(tmp_path, "/* was: " + RULE_57.replace("*/", "") + " */\n" + RULE_SEED), None, SEED)
    assert policy == "anon+shmem"
    # --expect wins, and says so
    assert choose_policy(_tree(tmp_path, RULE_57), "upstream", SEED) == ("upstream", "--expect")
    with pytest.raises(UsageError) as e:
        choose_policy(tmp_path, "anon", SEED)
    assert "anon-only, anon+shmem, upstream" in e.value.fix and e.value.exit_code == 2
    # no rule, two rules, no file: usage errors that say to pass --expect
    with pytest.raises(UsageError, match="none of suite mremap-dontunmap's") as e:
        choose_policy(_tree(tmp_path, "return 0;\n"), None, SEED)
    assert "--expect" in e.value.fix
    with pytest.raises(UsageError, match="several") as e:
        choose_policy(_tree(tmp_path, RULE_57 + RULE_612), None, SEED)
    with pytest.raises(UsageError, match="cannot read"):
        choose_policy(tmp_path / "nowhere", None, SEED)


# --------------------------------------------------------------------------------------------- TAP parse


def _tap(exp, policy, observed: dict[str, str] | None = None, drop=(), crash: dict[str, str] | None = None,
         skip: dict[str, str] | None = None, expected_override: dict[str, str] | None = None) -> str:
    """TAP as the binary prints it, for the cases of ``exp`` under ``policy``."""
    observed, crash, skip = observed or {}, crash or {}, skip or {}
    names = [n for n in exp.cases if n not in drop]
    out = ["TAP version 13", f"1..{len(exp.cases)}", "# mremap_dontunmap: kernel test x86_64"]
    for i, n in enumerate(names, 1):
        want = (expected_override or {}).get(n, exp.cases[n].outcomes[policy])
        if want.startswith("xfail:") and n not in observed and n not in crash and n not in skip:
            code = want[len("xfail:"):]
            out += [f"# {n}: observed {code} expected {want} (0.001 s)",
                    f"ok {i} {n} # XFAIL observed {code}, the known failure the expectations name"]
        elif n in crash:
            out += [f"# {n}: observed {crash[n]} expected {want} (0.001 s)", f"not ok {i} {n} # crashed: {crash[n]}"]
        elif n in skip:
            out += [f"# {n}: observed skip expected {want} (0.000 s)", f"ok {i} {n} # SKIP {skip[n]}"]
        elif want == "skip" and n not in observed:
            out += [f"# {n}: observed EINVAL expected skip (0.000 s)",
                    f"ok {i} {n} # SKIP move rejected as expected under this kernel (EINVAL)"]
        else:
            obs = observed.get(n, want)
            out += [f"# {n}: observed {obs} expected {want} (0.002 s)", f"# {n}: moved 0x1000 -> 0x2000",
                    f"{'ok' if obs == want else 'not ok'} {i} {n}"]
    return "\n".join(out) + "\n"


def test_parse_all_passing(exp):
    res = parse_tap(_tap(exp, "anon-only"), 0, exp, "anon-only")
    by = {r.name: r for r in res}
    assert list(by) == list(exp.cases)                 # one per case, in order, nothing extra
    assert by["move-anon-private"].status == Status.PASS and by["move-anon-private"].observed == "ok"
    assert by["move-anon-private"].detail == "moved 0x1000 -> 0x2000"
    assert by["move-memfd-shared"].status == Status.PASS and by["move-memfd-shared"].observed == "EINVAL"
    assert by["data-memfd-shared-old-same"].status == Status.SKIP
    assert "move rejected as expected" in by["data-memfd-shared-old-same"].detail
    assert all(r.suite == "verifier" for r in res)
    assert by["arg-past-vma-end"].expected == "EFAULT" and by["move-anon-private"].seconds == 0.002


def test_parse_too_permissive_kernel_fails(exp):
    # an unpatched-looking policy on a kernel that moves memfd: must fail, not pass
    text = _tap(exp, "anon-only", observed={"move-memfd-shared": "ok", "data-memfd-shared-old-same": "ok"})
    by = {r.name: r for r in parse_tap(text, 1, exp, "anon-only")}
    r = by["move-memfd-shared"]
    assert (r.status, r.expected, r.observed) == (Status.FAIL, "EINVAL", "ok")
    d = by["data-memfd-shared-old-same"]
    assert d.status == Status.FAIL and "refuses" in d.detail
    assert "verifier-exit" not in by


def test_parse_too_strict_kernel_fails(exp):
    text = _tap(exp, "anon+shmem", observed={"move-memfd-shared": "EINVAL"})
    by = {r.name: r for r in parse_tap(text, 1, exp, "anon+shmem")}
    assert by["move-memfd-shared"].status == Status.FAIL and by["move-memfd-shared"].observed == "EINVAL"


def test_parse_crash_skip_and_missing(exp):
    text = _tap(exp, "upstream", crash={"gc-uffd-minor-memfd": "SIGSEGV"}, drop={"move-vvar"},
                skip={"move-hugetlb": "no free huge pages (HugePages_Free: 0)"})
    by = {r.name: r for r in parse_tap(text, 1, exp, "upstream")}
    c = by["gc-uffd-minor-memfd"]
    assert c.status == Status.FAIL and c.observed == "SIGSEGV" and "crashed: SIGSEGV" in c.detail
    h = by["move-hugetlb"]
    assert h.status == Status.SKIP and "HugePages_Free" in h.detail
    m = by["move-vvar"]
    assert m.status == Status.ERROR and m.observed == "missing" and "not in the verifier's output" in m.detail
    assert by["verifier-exit"].status == Status.ERROR and "plan announced" in by["verifier-exit"].detail


def test_parse_truncated_by_timeout(exp):
    full = _tap(exp, "upstream")
    cut = full[:full.index("ok 10 ")]          # the host gave up mid-run
    res = parse_tap(cut, None, exp, "upstream")
    by = {r.name: r for r in res}
    assert len(res) == len(exp.cases) + 1
    assert sum(r.status == Status.PASS for r in res) == 9
    assert [r.name for r in res if r.status == Status.ERROR][:-1] == list(exp.cases)[9:]
    assert "did not finish" in by[list(exp.cases)[20]].detail
    assert by["verifier-exit"].observed == "timeout"


def test_parse_nothing_at_all(exp):
    res = parse_tap("", 127, exp, "upstream")
    assert all(r.status == Status.ERROR for r in res) and len(res) == len(exp.cases) + 1
    assert "exited with status 127" in res[0].detail


def test_parse_wrong_expectations_inconsistency_and_unknown(exp):
    # the binary ran with another policy's expectation: every affected case is an error, even a "pass"
    text = _tap(exp, "upstream")
    by = {r.name: r for r in parse_tap(text, 0, exp, "anon-only")}
    assert by["move-memfd-shared"].status == Status.ERROR and "given expected 'ok'" in by["move-memfd-shared"].detail
    assert by["move-anon-private"].status == Status.PASS
    # ok for a mismatch, an unknown case, a duplicate, a 0 exit with a failure
    lines = _tap(exp, "upstream").replace("not ok", "ok").splitlines()
    i = lines.index("ok 1 move-anon-private")
    lines[i - 2] = "# move-anon-private: observed EINVAL expected ok (0.001 s)"
    lines += ["# move-new-thing: observed ok expected ok", "ok 38 move-new-thing",
              "# move-vdso: observed EINVAL expected EINVAL", "not ok 39 move-vdso"]
    by = {}
    for r in parse_tap("\n".join(lines), 0, exp, "upstream"):
        by.setdefault(r.name, []).append(r)
    assert by["move-anon-private"][0].status == Status.ERROR and "said ok" in by["move-anon-private"][0].detail
    assert by["move-new-thing"][0].status == Status.ERROR \
        and "not in expectations.toml" in by["move-new-thing"][0].detail
    assert [r.status for r in by["move-vdso"]] == [Status.PASS, Status.ERROR]
    assert "plan announced" in by["verifier-exit"][0].detail
    # exit status that contradicts the points
    by = {r.name: r for r in parse_tap(_tap(exp, "upstream"), 1, exp, "upstream")}
    assert "exit status 1" in by["verifier-exit"].detail
    bail = _tap(exp, "upstream", drop=set(list(exp.cases)[5:])) + "Bail out! out of memory\n"
    by = {r.name: r for r in parse_tap(bail, 1, exp, "upstream")}
    assert by[list(exp.cases)[6]].detail == "the verifier bailed out: out of memory"


# ------------------------------------------------------------------------------- the C harness, for real


HARNESS_FAKE = r'''
#define _GNU_SOURCE
#include "harness.h"
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
static void c_ok(const struct test_case *t, struct result *r) { (void)t; observe(r, "ok"); }
static void c_einval(const struct test_case *t, struct result *r) { (void)t; observe_errno(r, EINVAL); }
static void c_segv(const struct test_case *t, struct result *r) { (void)t; (void)r; *(volatile int *)8 = 1; }
static void c_hang(const struct test_case *t, struct result *r) { (void)t; (void)r; for (;;) pause(); }
static void c_abort(const struct test_case *t, struct result *r) { (void)t; (void)r; abort(); }
static void c_skip(const struct test_case *t, struct result *r) { (void)t; skip(r, "not here: %s", "reason"); }
static void c_rejected(const struct test_case *t, struct result *r) { (void)t; observe_errno(r, EINVAL); r->rejected = 1; }
static void c_guard(const struct test_case *t, struct result *r) {
	char buf[8]; (void)t;
	observe(r, guarded_copy(buf, (void *)8, sizeof(buf)) == SIGSEGV ? "ok" : "NOGUARD");
}
static const struct test_case cases[] = {
	{"ok-case", c_ok, 0}, {"einval-case", c_einval, 0}, {"segv-case", c_segv, 0}, {"hang-case", c_hang, 0},
	{"after-crashes", c_ok, 0}, {"abort-case", c_abort, 0}, {"skip-case", c_skip, 0},
	{"rejected-case", c_rejected, 0}, {"guard-case", c_guard, 0},
};
int main(int argc, char **argv) { return harness_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]), "fake"); }
'''  # noqa: E501


@pytest.fixture(scope="module")
def fake_harness(tmp_path_factory):
    d = tmp_path_factory.mktemp("harness")
    (d / "fake.c").write_text("#include <signal.h>\n" + HARNESS_FAKE)
    binary = d / "fake"
    proc.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-static", "-I", str(LIB_DIR),
              str(LIB_DIR / "harness.c"), str(d / "fake.c"), "-o", str(binary)], timeout=120)
    return binary, d


def test_harness_isolates_crashes_and_hangs(fake_harness, tmp_path):
    binary, d = fake_harness
    (tmp_path / "e.txt").write_text("# comment\nok-case=ok\neinval-case=ok\nsegv-case=ok\nhang-case=ok\n"
                                    "after-crashes = ok\nabort-case=ok\nskip-case=ok\nrejected-case=skip\n"
                                    "guard-case=ok\n")
    t = time.monotonic()
    cp = subprocess.run([binary, "-e", tmp_path / "e.txt", "-t", "1"], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t < 10
    out = cp.stdout
    assert cp.returncode == 1
    assert out.startswith("TAP version 13\n1..9\n")
    assert "ok 1 ok-case\n" in out
    assert "# einval-case: observed EINVAL expected ok" in out and "not ok 2 einval-case\n" in out
    assert "not ok 3 segv-case # crashed: SIGSEGV\n" in out
    assert "not ok 4 hang-case # crashed: SIGALRM (timeout after 1 s)\n" in out
    assert "ok 5 after-crashes\n" in out                      # a crash does not take the others down
    assert "not ok 6 abort-case # crashed: SIGABRT\n" in out
    assert "ok 7 skip-case # SKIP not here: reason\n" in out
    assert "ok 8 rejected-case # SKIP move rejected as expected under this kernel (EINVAL)\n" in out
    assert "ok 9 guard-case\n" in out
    # list, a subset, exit 4 when all skip, exit 0 when all pass, no expectation = fail
    lst = subprocess.run([binary, "-l"], capture_output=True, text=True).stdout.split()
    assert lst[:3] == ["ok-case", "einval-case", "segv-case"]
    one = subprocess.run([binary, "-e", tmp_path / "e.txt", "skip-case"], capture_output=True, text=True)
    assert one.returncode == 4 and "1..1\n" in one.stdout
    one = subprocess.run([binary, "-e", tmp_path / "e.txt", "ok-case", "guard-case"], capture_output=True, text=True)
    assert one.returncode == 0
    none = subprocess.run([binary, "ok-case"], capture_output=True, text=True)
    assert none.returncode == 1 and "expected (none)" in none.stdout
    bad = subprocess.run([binary, "no-such-case"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown case no-such-case" in bad.stderr


HARNESS_GROUP_FAKE = r'''
#define _GNU_SOURCE
#include "harness.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
/* a grandchild that sleeps, its pid in $PIDS (one line per grandchild) */
static void grandchild(void) {
	pid_t g = fork();
	if (g == 0) { for (;;) pause(); }
	FILE *f = fopen(getenv("PIDS"), "a"); fprintf(f, "%d\n", (int)g); fclose(f);
}
static void c_fork_hang(const struct test_case *t, struct result *r) { (void)t; (void)r; grandchild(); for (;;) pause(); }
static void c_fork_done(const struct test_case *t, struct result *r) { (void)t; grandchild(); observe(r, "ok"); }
static void c_deaf(const struct test_case *t, struct result *r) {
	sigset_t s; (void)t; (void)r; sigemptyset(&s); sigaddset(&s, SIGALRM); sigprocmask(SIG_BLOCK, &s, NULL);
	grandchild(); for (;;) pause();
}
static void c_alarm_left(const struct test_case *t, struct result *r) {
	unsigned left = alarm(0); (void)t; if (left) alarm(left); observe(r, left ? "ok" : "NOALARM");
}
static const struct test_case cases[] = {
	{"fork-hang", c_fork_hang, 0}, {"fork-done", c_fork_done, 0}, {"deaf", c_deaf, 0},
	{"alarm-left", c_alarm_left, 0},
};
int main(int argc, char **argv) { return harness_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]), "fake"); }
'''  # noqa: E501


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper that does not reap counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _all_gone(pids: list[int], within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if all(_gone(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_harness_timeout_kills_the_case_process_group(tmp_path):
    """What a case forks dies with it: at its timeout (the child's alarm, or the parent's deadline when the case
    blocks SIGALRM: reported the same), when it ends, and when the harness is told to stop (SIGTERM)."""
    (tmp_path / "fake.c").write_text(HARNESS_GROUP_FAKE)
    binary = tmp_path / "fake"
    proc.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-static", "-I", str(LIB_DIR),
              str(LIB_DIR / "harness.c"), str(tmp_path / "fake.c"), "-o", str(binary)], timeout=120)
    (tmp_path / "e.txt").write_text("fork-hang=ok\nfork-done=ok\ndeaf=ok\nalarm-left=ok\n")
    pids = tmp_path / "pids"
    env = {**os.environ, "PIDS": str(pids)}
    t = time.monotonic()
    cp = subprocess.run([binary, "-e", tmp_path / "e.txt", "-t", "1"], capture_output=True, text=True, timeout=60,
                        env=env)
    took = time.monotonic() - t
    out = cp.stdout
    assert cp.returncode == 1, out
    assert "# fork-hang: observed SIGALRM expected ok" in out
    assert "not ok 1 fork-hang # crashed: SIGALRM (timeout after 1 s)\n" in out
    assert "ok 2 fork-done\n" in out                 # its grandchild holds the result pipe open: not waited for
    assert "# deaf: observed SIGALRM expected ok" in out
    assert "not ok 3 deaf # crashed: SIGALRM (timeout after 1 s)\n" in out
    assert "ok 4 alarm-left\n" in out                # a case can still read its time limit with alarm(0)
    assert took < 10, took
    grandchildren = [int(x) for x in pids.read_text().split()]
    assert len(grandchildren) == 3 and _all_gone(grandchildren)
    # the harness stopped by SIGTERM (kpipe's kill_group) takes the running case's group with it
    pids.unlink()
    p = subprocess.Popen([binary, "-e", tmp_path / "e.txt", "-t", "30", "fork-hang"], stdout=subprocess.PIPE,
                         env=env)
    end = time.monotonic() + 10
    while not (pids.exists() and pids.read_text().endswith("\n")) and time.monotonic() < end:
        time.sleep(0.05)
    p.terminate()
    assert p.wait(timeout=10) == -signal.SIGTERM
    p.stdout.close()
    assert _all_gone([int(x) for x in pids.read_text().split()])


def test_run_verifier_timeout_is_reported_per_case(tmp_path, exp):
    """A binary that hangs (here: sleep) ends in a timeout: every case is an error, none is dropped."""
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\necho 'TAP version 13'\necho '1..37'\nsleep 30\n")
    hang.chmod(0o755)
    t = time.monotonic()
    res = run_verifier(LocalSession(), hang, "upstream", exp, tmp_path / "out", timeout=0.3,
                       remote_dir=str(tmp_path / "guest"))
    assert time.monotonic() - t < 10
    assert len(res) == len(exp.cases) + 1 and all(r.status == Status.ERROR for r in res)
    assert res[-1].name == "verifier-exit" and res[-1].observed == "timeout"
