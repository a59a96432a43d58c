"""The local LAVA lab (kpipe.lava.lab): a real lava-server, PostgreSQL, scheduler and worker on this machine, real
lavacli submissions, real QEMU under the worker's lava-run. One lab for the module: `kpipe lab up` before the
first test, `kpipe lab down` after the last (also when a test fails); the last test checks what down left.

Kernels: the Debian 5.10 kernels of `kpipe lava` (patched and baseline), from kpipe's cache like the other
LAVA tests. Budget: under ~6 minutes for the file (6 min 7 s measured, premerge --lab x86_64 173 s of it;
measured times are printed; `pytest -s` shows them), plus the session's `verify --arch all` (conftest's
seed_verify_all, ~3 min) when this file asks for it first, as in the whole suite: the lab's seed job is held to
its results.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from kpipe.lava import lab

from kpipe_cli import (assert_compile_checks_found_nothing_new, assert_mutant_was_active, invoke, mutant_args,
                       results_by_name)

pytestmark = pytest.mark.e2e

TIMES: dict[str, float] = {}


def _lab(action: str, timeout: float = 900) -> tuple[int, str, float]:
    t0 = time.monotonic()
    ran = invoke("lab", action, timeout=timeout)
    return ran.code, ran.stdout + ran.stderr, round(time.monotonic() - t0, 1)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((lab.HOST, port)) == 0


def _left_running(pg_was_ours: bool) -> list[str]:
    """What of the lab still runs: a live pid file, a pid file at all, a port that answers."""
    left = [f"{n} (pid {lab._alive(n)})" for n in lab.PROCESSES if lab._alive(n)]
    left += [str(p) for p in (lab.lab_dir() / "run").glob("*.pid")]
    ports = [lab.HTTP_PORT, lab.PUBLISHER_PORT, lab.EVENT_PORT] + ([5432] if pg_was_ours else [])
    return left + [f"port {p}" for p in ports if _listening(p)]


@pytest.fixture(scope="module")
def lab_up():
    t0 = time.monotonic()
    code, out, secs = _lab("up")
    TIMES["lab up"] = secs
    try:
        assert code == 0, out
        assert f"up at {lab.url()}" in out or f"already up at {lab.url()}" in out, out
        yield out
    finally:
        pg_ours = bool(lab._state().get("pg_started"))
        code_d, out_d, secs_d = _lab("down", timeout=120)
        TIMES["lab down"] = secs_d
        TIMES["module"] = round(time.monotonic() - t0, 1)
        print("\ntest_lab times (s): " + ", ".join(f"{k} {v}" for k, v in TIMES.items()))
        assert code_d == 0, out_d
        assert not _left_running(pg_ours), _left_running(pg_ours)


def _submit(tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None, submit: str = "lab"):
    t0 = time.monotonic()
    ran = invoke("lava", "--arch", "x86_64", "--selftests", "none", "--submit", submit, "--wait", *args,
                 out=tmp_path / name, env=env, timeout=900)
    TIMES[name] = round(time.monotonic() - t0, 1)
    return ran


def _counts(ran) -> dict:
    return ran.result["arches"]["x86_64"]["counts"]


def test_status_while_up(lab_up):
    code, out, _ = _lab("status")
    assert code == 0, out
    assert f"kpipe lab: up ({lab.url()})" in out, out
    for part in lab.PROCESSES:
        assert f"{part:<10} running (pid " in out, out
    assert f"{lab.WORKER}: Online" in out and str(lab.token_file()) in out, out
    assert oct(lab.token_file().stat().st_mode & 0o777) == "0o600"
    code, out, secs = _lab("up")                      # idempotent: finds it running
    assert code == 0 and "already up" in out, out
    TIMES["lab up (again)"] = secs


@pytest.fixture(scope="module")
def premerge_lab(lab_up, tmp_path_factory):
    """`kpipe premerge --lab lab --arch x86_64 --selftests none` on the shipped patch, once for the module: two lab
    jobs (baseline and patched), the compile checks beside them. x86_64 here, arm64 in the local premerge
    (tests/e2e/test_workflows.py): each arch's premerge is proven once."""
    t0 = time.monotonic()
    ran = invoke("premerge", "--lab", "lab", "--arch", "x86_64", "--selftests", "none",
                 out=tmp_path_factory.mktemp("premerge-lab") / "pm", timeout=1800)
    TIMES["premerge --lab"] = round(time.monotonic() - t0, 1)
    return ran


def test_shipped_patch_through_the_lab_counts_as_verify(premerge_lab, seed_verify_all):
    """The seed patch's x86_64 job on the lab (premerge --lab's patched side; `lava --submit lab --wait` submits and
    collects through the same functions): exit 0, every verifier case with the status verify gave it on the same
    kernel (the session's `verify --arch all`; tests/e2e/test_lava.py holds lava-run's arm64 job to the same)."""
    ran = premerge_lab
    assert ran.code == 0, ran
    assert seed_verify_all.code == 0, seed_verify_all
    assert _counts(ran)["verifier"] == seed_verify_all.result["arches"]["x86_64"]["counts"]["verifier"]
    assert _counts(ran)["verifier"]["pass"] >= 30
    lab_cases = results_by_name(ran.result, "x86_64", "verifier")
    verify_cases = results_by_name(seed_verify_all.result, "x86_64", "verifier")
    assert {n: t["status"] for n, t in lab_cases.items()} == {n: t["status"] for n, t in verify_cases.items()}
    info = ran.result["arches"]["x86_64"]["boot"]["lava"]
    assert info["server"] == lab.url() and info["job_id"], info
    assert info["job_url"] == f"{lab.url()}/scheduler/job/{info['job_id']}", info
    assert info["job_result"] == "pass" and not info["mismatches"], info
    TIMES["job latency (submit to finished)"] = info["lava_run_seconds"]
    assert info["job_url"] in (ran.out / "summary.md").read_text()
    job = (ran.out / "patched" / "x86_64" / "job-submit.yaml").read_text()
    assert "tags:\n- x86_64" in job, job


def test_wrong_kernel_through_the_lab_is_exit_1(lab_up, tmp_path):
    """The baseline 5.10 kernel under the patched policy: the shmem moves fail (EINVAL where ok is expected),
    although LAVA ran the job fine. Only the moves run (--case move-*): the shmem ones are among them. (The same
    judging of a whole lava-run log: tests/unit/test_lava_logs.py's golden fail-baseline-expect-anon+shmem-x86_64.log,
    and its server-log twin.)"""
    ran = _submit(tmp_path, "lab-fail", "--no-patches", "--expect", "anon+shmem", "--case", "move-*")
    assert ran.code == 1, ran
    ar = ran.result["arches"]["x86_64"]
    assert "verifier/move-memfd-shared" in ar["error"], ar["error"]
    t = results_by_name(ran.result, "x86_64", "verifier")["move-memfd-shared"]
    assert (t["status"], t["expected"], t["observed"]) == ("fail", "ok", "EINVAL")
    assert ar["boot"]["lava"]["job_result"] == "pass"        # LAVA ran the job fine: the kernel is wrong
    assert "verifier/move-memfd-shared" in ran.stdout          # the terminal table names it
    assert all(n.startswith("move-") for n in results_by_name(ran.result, "x86_64", "verifier"))


def test_kernel_panic_through_the_lab_is_exit_1_not_infrastructure(lab_up, tmp_path):
    """No init: the kernel panics at boot. The lab ends the job Incomplete with LAVA's "Infrastructure" error;
    kpipe says exit 1 (the kernel) and names the panic, as with --run-local (tests/e2e/test_lava.py)."""
    from test_lava import PANIC_AT_BOOT, assert_panic_is_a_kernel_failure
    info = assert_panic_is_a_kernel_failure(_submit(tmp_path, "lab-panic", *PANIC_AT_BOOT))
    assert info["job_url"] == f"{lab.url()}/scheduler/job/{info['job_id']}", info
    TIMES["panic job (submit to finished)"] = info["lava_run_seconds"]


def test_lockup_before_userspace_through_the_lab_is_canceled_within_30s_of_the_report(lab_up, tmp_path):
    """The boot-fault kernel whose first exec spins with preemption off (arm64): the worker's lava-run would wait
    out the job's boot timeout. kpipe follows the submitted job's log on the server (one `lavacli jobs logs
    --raw` streaming its records) through verify's console watch and cancels the job STUCK_GRACE after the soft
    lockup: exit 1 with the lockup, and the job's end on the server well before its boot timeout."""
    from test_lava import assert_lockup_job_stopped_early
    t0 = time.monotonic()
    ran = invoke("lava", "--arch", "arm64", "--selftests", "none", "--accel", "tcg", "--submit", "lab", "--wait",
                 *mutant_args("lockup"), out=tmp_path / "lab-lockup", timeout=900)
    assert_mutant_was_active(tmp_path / "lab-lockup", "arm64", "lockup")
    TIMES["lab-lockup"] = round(time.monotonic() - t0, 1)
    info, boot_timeout = assert_lockup_job_stopped_early(ran, tmp_path / "lab-lockup" / "arm64" / "job-submit.yaml")
    assert info["ran_seconds"] is not None and info["ran_seconds"] < boot_timeout, (info, boot_timeout)
    assert not (tmp_path / "lab-lockup" / "arm64" / "lava.live.log").exists()     # the live copy is gone
    TIMES["lockup job ran (s)"] = info["ran_seconds"]


def test_premerge_through_the_lab_queues_both_jobs_and_judges_as_premerge(premerge_lab):
    """`premerge --lab lab --arch x86_64`: baseline and patched, both jobs queued at once on the arch's device (the
    patched job waits for the baseline job), collected as `lava --submit lab --wait` collects, judged as the local
    premerge judges (tests/e2e/test_workflows.py, on arm64: the same flip, no test changes), the compile checks
    and checkpatch beside them, every job's page in the reports. The lab's arm64 job: the lockup test above."""
    from test_premerge_verdict import _verifier_rows
    from test_workflows import NEEDS_514, _shmem_cases

    from kpipe.checks.verifier import load_expectations
    ran, out = premerge_lab, premerge_lab.out
    assert ran.code == 0, ran
    res = ran.result
    jobs = res["extra"]["lava"]["job_urls"]
    assert sorted(jobs) == ["baseline/x86_64", "patched/x86_64"], jobs
    assert len(set(jobs.values())) == 2 and all(u.startswith(f"{lab.url()}/scheduler/job/") for u in jobs.values())
    ex = load_expectations()
    sides = {"baseline": res["extra"]["baseline"], "patched": res["arches"]}
    assert sorted(res["extra"]["premerge"]) == ["x86_64"]
    for arch in ("x86_64",):
        pm = res["extra"]["premerge"][arch]
        flip = pm["flip"]
        assert flip["ok"] and (flip["baseline_policy"], flip["patched_policy"]) == ("anon-only", "anon+shmem"), flip
        assert {c["case"] for c in flip["cases"] if c["flipped"] == "yes"} == set(_shmem_cases()) - NEEDS_514
        assert {c["case"] for c in flip["cases"] if c["flipped"] == "n/a"} == NEEDS_514
        assert not [c for c in pm["comparison"] if c["change"] != "unchanged"], "same tests on both sides"
        for side, ars in sides.items():
            ar = ars[arch]
            info = ar["boot"]["lava"]
            assert info["job_url"] == jobs[f"{side}/{arch}"] == pm[side]["job_url"], (side, arch, info)
            assert info["job_result"] == "pass" and not info["mismatches"], (side, arch, info)
            assert info["device"] == f"kpipe-qemu-{arch}", info
            assert (out / side / arch / "lava.log").is_file() and (out / side / arch / "job-submit.yaml").is_file()
            # the local premerge's counts: each case as its policy says on a correct 5.10 kernel (the 5.14 GC
            # flow skips: not exercised here), as kpipe verify and lava-run count them (tests/e2e/test_lava.py)
            want = {"pass": 0, "fail": 0, "skip": 0, "xfail": 0, "error": 0}
            for t in _verifier_rows(ex, ar["kernel"]["policy"]):
                want["skip" if t.name in NEEDS_514 and t.status.value == "pass" else t.status.value] += 1
            got = {k: sum(t["status"] == k for t in ar["tests"]) for k in want}
            assert got == want and {t["suite"] for t in ar["tests"]} == {"verifier"}, (side, arch, got, want)
            TIMES[f"{side} {arch} job queued/ran"] = (info["queued_seconds"], info["ran_seconds"])
        # one device per arch: the patched job ran after the baseline job (it waited at least that long)
        b, p = (sides[s][arch]["boot"]["lava"] for s in ("baseline", "patched"))
        assert p["queued_seconds"] >= b["queued_seconds"] + b["ran_seconds"] - 5, (b, p)
    text = (out / "premerge.md").read_text()
    assert "Expected flip (anon-only -> anon+shmem): yes, " in text
    assert all(u in text for u in jobs.values()) and all(u in (out / "report.txt").read_text() for u in jobs.values())
    assert res["extra"]["checkpatch"][0]["errors"] == 0
    warn = res["extra"]["warnings"]                     # the compile checks ran beside the jobs
    assert sorted(warn) == ["x86_64"]
    assert_compile_checks_found_nothing_new(warn)       # as the local premerge's (arm64 there)
    assert "compile checks" in text and "x86\\_64 clang: 0 new" in text      # markdown escapes the underscore
    TIMES["premerge --lab phases"] = res["extra"]["phases"]


def test_bad_token_is_exit_2_naming_the_authentication_failure(lab_up, tmp_path):
    bad = "wrong-token-7c1d"
    env = {"LAVACLI_TOKEN": bad, "LAVACLI_USERNAME": lab.USER}
    ran = _submit(tmp_path, "lab-badtoken", env=env, submit=lab.url())
    pm = invoke("premerge", "--lab", lab.url(), out=tmp_path / "pm-badtoken", env=env, timeout=300)
    real = lab.token_file().read_text().strip()
    for r in (ran, pm):
        assert r.code == 2, r
        said = r.stdout + r.stderr + (r.out / "result.json").read_text()
        assert f"the LAVA server at {lab.url()} refused the credentials (authentication failed)" in said, r
        assert bad not in said and real not in said, r
    assert not (ran.out / "x86_64" / "job.yaml").exists(), "refused before anything was prepared"
    assert not (pm.out / "baseline").exists() and "fetch" not in pm.result["extra"]["phases"]


def test_zz_down_leaves_nothing_running(lab_up):
    """Last in the module: down stops every part (the fixture's own down then finds nothing, and checks again)."""
    pg_ours = bool(lab._state().get("pg_started"))
    code, out, secs = _lab("down", timeout=120)
    TIMES["lab down (in test)"] = secs
    assert code == 0, out
    assert not _left_running(pg_ours), _left_running(pg_ours)
    code, out, _ = _lab("status")
    assert "kpipe lab: down" in out, out
