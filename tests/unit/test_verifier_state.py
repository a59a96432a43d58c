"""The verifier's kernel-state cases and the rules around them: expected failures (xfail:CODE with a
reason per policy), cases that could not run (ERROR, never SKIP), the premerge flip rule for cases skipped
on both sides; the real binary on the host kernel; the shape of the new cases in the expectations."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from local_session import LocalSession

from kpipe import proc
from kpipe.errors import UsageError
from kpipe.report.results import ArchResult, Status
from kpipe.report.results import TestResult as Result
from kpipe.workflows.comparison import expected_flip
from kpipe.checks.suite import LIB_DIR
from kpipe.checks.suite import get as get_suite
from kpipe.checks.verifier import load_expectations, parse_tap, run_verifier

SEED = get_suite()
VERIFY_DIR = SEED.sources
POLICIES = tuple(load_expectations(SEED).policies)

STATE_PREFIXES = ("state-", "mlock-", "uffd-", "geom-", "fork-", "pmd-", "latency-", "replace-", "backforth-", "size-",
                  "gc-mt-")


@pytest.fixture(scope="module")
def exp():
    return load_expectations()


# ------------------------------------------------------------------------------------------ expectations

def test_state_cases_cover_every_mapping_type_the_policy_flips(exp):
    state = [n for n in exp.cases if n.startswith(STATE_PREFIXES)]
    assert len(state) >= 25
    for prefix in STATE_PREFIXES:
        assert any(n.startswith(prefix) for n in state), prefix
    # every shmem state case flips from refused (skip) to checked (ok or a known failure)
    for n in state:
        c = exp.cases[n]
        if c.requires != "move-anon-private":
            assert c.outcomes["anon-only"] == "skip", n
            assert c.outcomes["upstream"] == "ok", n
    # the one known 5.10 bug: partial moves of mlocked VMAs, expected to fail with VMLCK before 5.13
    xfails = {(n, p): c.outcomes[p] for n, c in exp.cases.items() for p in POLICIES
              if c.outcomes[p].startswith("xfail:")}
    assert xfails == {("mlock-part-anon", "anon-only"): "xfail:VMLCK", ("mlock-part-anon", "anon+shmem"): "xfail:VMLCK",
                      ("mlock-part-memfd", "anon+shmem"): "xfail:VMLCK"}
    assert "locked_vm" in exp.cases["mlock-part-anon"].xfail["anon-only"]


def test_xfail_needs_a_reason_and_a_code(tmp_path):
    good = (VERIFY_DIR / "expectations.toml").read_text()
    f = tmp_path / "e.toml"
    f.write_text(good.replace('[cases.mlock-part-anon.xfail]\n"anon-only"', '[cases.mlock-part-anon.xfail]\n"x"', 1))
    with pytest.raises(UsageError) as e:
        load_expectations(path=f)
    assert any("anon-only is an expected failure without a reason" in d for d in e.value.detail)
    assert any("unknown policy 'x'" in d for d in e.value.detail)
    f.write_text(good.replace('"anon-only" = "xfail:VMLCK"', '"anon-only" = "xfail:"', 1))
    with pytest.raises(UsageError) as e:
        load_expectations(path=f)
    assert any("bad outcome anon-only = 'xfail:'" in d for d in e.value.detail)
    f.write_text(good.replace('"anon-only" = "xfail:VMLCK"', '"anon-only" = "ok"', 1))
    with pytest.raises(UsageError) as e:
        load_expectations(path=f)
    assert any("a reason for anon-only, whose outcome is not xfail:CODE" in d for d in e.value.detail)


# --------------------------------------------------------------------------------------------- TAP parse

def _one(name: str, observed: str, expected: str, point: str) -> str:
    return f"TAP version 13\n1..1\n# {name}: observed {observed} expected {expected} (0.010 s)\n" \
           f"# {name}: VmLck says 80 kB locked, the locked VMAs hold 16 kB\n{point}\n"


def _only(exp, name):
    from dataclasses import replace
    return replace(exp, cases={name: exp.cases[name]})


def test_xfail_is_reported_with_its_reason(exp):
    e = _only(exp, "mlock-part-anon")
    text = _one("mlock-part-anon", "VMLCK", "xfail:VMLCK",
                "ok 1 mlock-part-anon # XFAIL observed VMLCK, the known failure the expectations name")
    (r,) = parse_tap(text, 0, e, "anon-only")
    assert r.status == Status.XFAIL and not r.status.bad and r.observed == "VMLCK"
    assert "known failure under anon-only" in r.detail and "locked_vm" in r.detail and "80 kB" in r.detail
    # the same kernel behaviour under upstream is a plain failure
    text = _one("mlock-part-anon", "VMLCK", "ok", "not ok 1 mlock-part-anon")
    (r,) = parse_tap(text, 1, e, "upstream")
    assert r.status == Status.FAIL


def test_xfail_that_passes_or_fails_otherwise_is_a_failure(exp):
    e = _only(exp, "mlock-part-anon")
    (r,) = parse_tap(_one("mlock-part-anon", "ok", "xfail:VMLCK", "not ok 1 mlock-part-anon"), 1, e, "anon-only")
    assert r.status == Status.FAIL and "but the case passed" in r.detail and "--expect" in r.detail
    (r,) = parse_tap(_one("mlock-part-anon", "OLDLOCKED", "xfail:VMLCK", "not ok 1 mlock-part-anon"), 1, e,
                     "anon-only")
    assert r.status == Status.FAIL and "another failure OLDLOCKED" in r.detail
    # a binary that printed the known code without the XFAIL directive contradicts itself
    (r,) = parse_tap(_one("mlock-part-anon", "VMLCK", "xfail:VMLCK", "not ok 1 mlock-part-anon"), 1, e, "anon-only")
    assert r.status == Status.ERROR


def test_could_not_run_is_an_error_not_a_skip(exp):
    e = _only(exp, "state-anon-private")
    text = _one("state-anon-private", "ERROR", "ok", "not ok 1 state-anon-private # ERROR cannot read /proc/self/pagemap: ENOENT")  # noqa: E501
    (r,) = parse_tap(text, 1, e, "anon-only")
    assert r.status == Status.ERROR and "could not run: cannot read /proc/self/pagemap" in r.detail


# ------------------------------------------------------------------------------- the C harness, for real

FAKE = r'''
#define _GNU_SOURCE
#include "harness.h"
static void c_known(const struct test_case *t, struct result *r) { (void)t; observe(r, "VMLCK"); }
static void c_other(const struct test_case *t, struct result *r) { (void)t; observe(r, "OLDLOCKED"); }
static void c_fixed(const struct test_case *t, struct result *r) { (void)t; observe(r, "ok"); }
static void c_error(const struct test_case *t, struct result *r) { (void)t; setup_error(r, "mmap: %s", "ENOMEM"); }
static const struct test_case cases[] = {
	{"known", c_known, 0}, {"other", c_other, 0}, {"fixed", c_fixed, 0}, {"error", c_error, 0},
};
int main(int argc, char **argv) { return harness_main(argc, argv, cases, 4, "fake"); }
'''


def test_harness_xfail_and_error(tmp_path):
    (tmp_path / "fake.c").write_text(FAKE)
    binary = tmp_path / "fake"
    proc.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-static", "-I", str(LIB_DIR),
              str(LIB_DIR / "harness.c"), str(tmp_path / "fake.c"), "-o", str(binary)], timeout=120)
    (tmp_path / "e.txt").write_text("known=xfail:VMLCK\nother=xfail:VMLCK\nfixed=xfail:VMLCK\nerror=ok\n")
    cp = subprocess.run([binary, "-e", tmp_path / "e.txt"], capture_output=True, text=True, timeout=60)
    out = cp.stdout
    assert "ok 1 known # XFAIL observed VMLCK" in out
    assert "not ok 2 other\n" in out and "not ok 3 fixed\n" in out
    assert "not ok 4 error # ERROR mmap: ENOMEM\n" in out and "# error: observed ERROR expected ok" in out
    assert "# totals: pass 0 fail 3 skip 0 xfail 1" in out and cp.returncode == 1
    only = subprocess.run([binary, "-e", tmp_path / "e.txt", "known"], capture_output=True, text=True)
    assert only.returncode == 0


# --------------------------------------------------------------------------------- the premerge flip rule

def _ar(policy, results):
    ar = ArchResult(arch="x86_64")
    ar.kernel.policy = policy
    ar.tests = [Result("verifier", n, st, observed=obs, detail=d) for n, st, obs, d in results]
    return ar


def _swap(rows, name, new):
    return [(n, *new) if n == name else (n, *rest) for n, *rest in rows]


def test_flip_case_skipped_on_both_sides_fails_premerge(exp):
    flips = [n for n, c in exp.cases.items() if c.outcomes["anon-only"] != c.outcomes["anon+shmem"]]
    base = [(n, Status.SKIP, "EINVAL", "move rejected as expected") if exp.cases[n].outcomes["anon-only"] == "skip"
            else (n, Status.PASS, exp.cases[n].outcomes["anon-only"], "") for n in exp.cases]
    patched = [(n, Status.XFAIL if exp.cases[n].outcomes["anon+shmem"].startswith("xfail:") else Status.PASS,
                exp.cases[n].outcomes["anon+shmem"].removeprefix("xfail:"), "") for n in exp.cases]
    flip = expected_flip(_ar("anon-only", base), _ar("anon+shmem", patched), exp)
    assert flip["ok"], flip["why"]
    assert flip["flipped"] == len(flips)
    # a case the patched kernel skipped for a missing feature, while the baseline refused the move: n/a
    gc = "gc-uffd-minor-memfd"
    p2 = _swap(patched, gc, (Status.SKIP, "skip", "kernel lacks UFFD_FEATURE_MINOR_SHMEM"))
    flip = expected_flip(_ar("anon-only", base), _ar("anon+shmem", p2), exp)
    assert flip["ok"] and {r["case"]: r["flipped"] for r in flip["cases"]}[gc] == "n/a"
    # skipped for a missing requirement on BOTH sides: it proved nothing, premerge fails and says why
    b2 = _swap(base, "state-memfd-shared", (Status.SKIP, "skip", "memfd_create: ENOSYS"))
    p3 = _swap(patched, "state-memfd-shared", (Status.SKIP, "skip", "memfd_create: ENOSYS"))
    flip = expected_flip(_ar("anon-only", b2), _ar("anon+shmem", p3), exp)
    assert not flip["ok"]
    assert "state-memfd-shared (skipped on both sides)" in flip["why"]
    row = {r["case"]: r for r in flip["cases"]}["state-memfd-shared"]
    assert row["flipped"] == "no" and "ENOSYS" in row["detail"]


# ------------------------------------------------------------------------------ host run (upstream rule)

HOST_MLOCK_LEAK = {"mlock-whole-anon", "mlock-onfault-whole-anon", "mlock-whole-memfd", "mlock-part-anon",
                   "mlock-part-memfd"}


@pytest.fixture(scope="module")
def host_state_binary(host_suite_binary):
    binary = host_suite_binary(SEED.name)         # compiled once per session (conftest), test_suite's too
    assert binary.name == "mremap_dontunmap"
    return binary


def test_host_state_cases(host_state_binary, tmp_path, exp):
    """The kernel-state cases on this host's kernel (upstream rule). This host runs 6.18, whose move_vma
    (since the 6.16 rewrite) adds the moved length to locked_vm under DONTUNMAP while clearing VM_LOCKED on
    the old VMA: VmLck leaks on every DONTUNMAP move of mlocked memory (measured: 64 kB moved, VmLck 64 ->
    128 kB, 64 kB left after unmapping both). The mlock cases must catch exactly that here."""
    release = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    if os.uname().machine != "x86_64" or release < (5, 14) or os.geteuid() != 0:
        pytest.skip("needs root on an x86_64 host with a 5.14+ kernel")
    names = [n for n in exp.cases if n.startswith(STATE_PREFIXES)]
    t = time.monotonic()
    for attempt in range(3):    # Committed_AS on a host shared with builds: retry a COMMIT miss, never a kernel bug
        res = run_verifier(LocalSession(), host_state_binary, "upstream", exp, tmp_path / f"out{attempt}",
                           timeout=120, remote_dir=str(tmp_path / "guest"))
        if not [r for r in res if r.status.bad and r.observed == "COMMIT"]:
            break
    res = [r for r in res if r.name in names]
    print(f"\n[measure] the verifier ({len(names)} state cases) on the host ({os.uname().release}): "
          f"{time.monotonic() - t:.2f} s")
    by = {r.name: r for r in res}
    for r in res:
        print(f"[observed] {r.name:30} {r.status.value:5} {r.observed:10} {r.detail[:150]}")
    leaky = release >= (6, 16)
    bad = {n: (r.observed, r.detail) for n, r in by.items() if r.status.bad
           and not (leaky and n in HOST_MLOCK_LEAK and r.observed == "VMLCK")}
    assert not bad
    if leaky:
        assert {n for n in HOST_MLOCK_LEAK if by[n].observed == "VMLCK"} == HOST_MLOCK_LEAK
    assert by["latency-anon"].status == Status.PASS and "latency_us=" in by["latency-anon"].detail
    assert "size_mb=16" in by["latency-memfd"].detail
    assert by["uffd-remap-event-anon"].status == Status.PASS and "event 0x14" in by["uffd-remap-event-anon"].detail
    assert "Committed_AS +131072 kB (accounted VMAs +131072 kB" in by["state-anon-private"].detail or \
        by["state-anon-private"].status == Status.PASS


def test_latency_regression_rule():
    from kpipe.checks.verifier import latencies, latency_regressions

    def run(us_anon, us_memfd=None, mb=256):
        out = [Result("verifier", "latency-anon", Status.PASS, detail=f"latency_us={us_anon} size_mb={mb} kind=x")]
        if us_memfd is not None:
            out.append(Result("verifier", "latency-memfd", Status.PASS, detail=f"latency_us={us_memfd} size_mb={mb}"))
        else:
            out.append(Result("verifier", "latency-memfd", Status.SKIP, observed="EINVAL", detail="move rejected"))
        return out
    assert latencies(run(24000)) == {"latency-anon": (24000, 256)}
    assert latency_regressions(run(24000), run(30000, 29000), SEED.pause) == []  # memfd: vs the baseline anon, < 2x
    (msg,) = latency_regressions(run(24000), run(60000), SEED.pause)
    assert msg.startswith("latency-anon: 60000 us vs 24000 us")
    assert latency_regressions(run(8000), run(24000), SEED.pause) == []                  # 3x, but under the 20 ms floor
    assert latency_regressions(run(24000, mb=64), run(60000), SEED.pause) == []         # not the same size
