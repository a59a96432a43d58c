"""kpipe on LAVA, e2e tier: real lava-run (Debian's dispatcher, installed by kpipe.lava.install), real Debian
5.10 kernels. The jobs, ramdisk and captured logs: tests/unit/test_lava_logs.py."""
from __future__ import annotations

import pytest
import yaml

from kpipe.checks import kmemleak
from kpipe.checks.verifier import load_expectations, select
from kpipe.guest import qemu
from kpipe.lava import collect, job as jobmod, logparse, ramdisk

from kpipe_cli import LEAK_SCAN_ON, SELFTESTS, assert_mutant_was_active, invoke, mutant_args, results_by_name

from test_lava_logs import golden_spec  # noqa: F401  (shared with the fast tier)



# ------------------------------------------------------------------------------------------------ e2e


def _lava_cli(tmp_path, name, *args, env=None):
    out = tmp_path / name
    ran = invoke("lava", "--run-local", *args, out=out, timeout=1500, env=env)
    return ran


def _counts(result: dict, arch: str) -> dict:
    return result["arches"][arch]["counts"]


@pytest.mark.e2e
@pytest.mark.parametrize("arch_name", ["arm64"])
def test_shipped_patch_passes_under_lava_run_with_verifys_counts(arch_name, seed_verify_all, tmp_path):
    """The seed patch's job under real lava-run: exit 0, and the same cases with the same statuses as verify's
    run of the same selection (the session's `verify --arch all`). One arch here (the cross-compiled one, with
    the workflows' selftests and the kmemleak step); both arches' jobs of the seed and of the baseline run on the
    lab in tests/e2e/test_lab.py's premerge --lab, counted against the same expectations, and the x86_64 job's
    log is the golden file of tests/unit/test_lava_logs.py."""
    sel = SELFTESTS
    # the job also scans for leaks (as verify's zero-findings run does): a correct kernel leaks nothing
    leak_env = LEAK_SCAN_ON if arch_name == "arm64" else None
    lava = _lava_cli(tmp_path, "lava", "--arch", arch_name, *sel, env=leak_env)
    assert lava.code == 0, lava
    kml = lava.result["arches"][arch_name]["boot"].get("kmemleak")
    if leak_env:
        assert kml and kml["leaks"] == 0 and "not_scanned" not in kml, kml
        assert (lava.out / arch_name / "kmemleak.log").is_file()
    else:
        assert kml == {"not_scanned": "leak_scan is off (environment KPIPE_LEAK_SCAN)"}, kml
    ver = seed_verify_all
    assert ver.code == 0, ver
    assert _counts(lava.result, arch_name) == _counts(ver.result, arch_name)
    assert _counts(lava.result, arch_name)["verifier"]["pass"] >= 30
    lt, vt = results_by_name(lava.result, arch_name), results_by_name(ver.result, arch_name)
    assert {n: t["status"] for n, t in lt.items()} == {n: t["status"] for n, t in vt.items()}
    ar = lava.result["arches"][arch_name]
    assert ar["boot"]["lava"]["job_result"] == "pass" and not ar["boot"]["lava"]["mismatches"]
    steps = 2 if leak_env else 1                         # kernel-log, and kmemleak when the job scans
    assert ar["boot"]["lava"]["results"] == sum(sum(c.values()) for c in ar["counts"].values()) + steps
    for f in ("result.json", "junit.xml", "summary.md", "report.html"):
        assert (lava.out / f).is_file()
    for f in ("job.yaml", "device.yaml", "lava.log", "verifier.tap", "selftests.ktap", "serial.log", "dmesg.log"):
        assert (lava.out / arch_name / f).is_file(), f
    job = yaml.safe_load((lava.out / arch_name / "job.yaml").read_text())
    assert "-no-reboot" in job["context"]["extra_options"]


@pytest.mark.e2e
def test_leaked_object_is_a_kernel_failure_under_lava_run_too(tmp_path):
    """The boot-fault kernel whose every shmem DONTUNMAP move leaks a vm_area_struct (tests/e2e/test_boot_faults.py
    builds it: cached), as a LAVA job: its tests pass and LAVA calls the job complete, but the job's kmemleak
    step reports the leak and kpipe judges it as verify does: exit 1, a kmemleak finding with its backtrace.
    Only the DONTUNMAP moves run (--case move-*, as verify's leak test): the job's verifier is given them by name
    and runs exactly those."""
    ran = _lava_cli(tmp_path, "leak", "--arch", "arm64", "--selftests", "none", "--accel", "tcg", "--case", "move-*",
                    *mutant_args("leak"), env=LEAK_SCAN_ON)
    assert_mutant_was_active(ran.out, "arm64", "leak")
    assert ran.code == 1, ran
    ar = ran.result["arches"]["arm64"]
    leaks = [f for f in ar["findings"] if f["kind"] == "kmemleak"]
    assert leaks and any("vm_area_dup" in ln for ln in leaks[0]["context"]), ar["findings"]
    assert ar["boot"]["kmemleak"]["leaks"] == len(leaks), ar["boot"]
    assert not [t for t in ar["tests"] if t["status"] in ("fail", "error")]     # only the leak says it
    moves = list(select(load_expectations(), ("move-*",)).cases)
    assert [t["name"] for t in ar["tests"]] == moves, [t["name"] for t in ar["tests"]]
    assert ar["boot"]["lava"]["results"] == len(moves) + 2          # LAVA's own: each case, kmemleak, kernel-log
    assert ar["boot"]["lava"]["job_result"] == "pass", ar["boot"]["lava"]
    assert "unreferenced object" in (ran.out / "arm64" / "kmemleak.log").read_text()
    job = yaml.safe_load((ran.out / "arm64" / "job.yaml").read_text())
    names = [d["name"] for a in job["actions"] if "test" in a for d in a["test"]["definitions"]]
    assert names == ["verifier", "kmemleak", "kernel-log"], names


@pytest.mark.e2e
def test_lockup_before_userspace_ends_the_job_within_30s_of_the_report(tmp_path):
    """The boot-fault kernel whose first exec spins with preemption off: the soft lockup is reported ~28 s into
    the boot and repeated; lava-run alone would wait for the boot timeout. kpipe follows the job's log as verify
    follows its console and ends the job STUCK_GRACE after the report: exit 1 with the lockup, at once."""
    ran = _lava_cli(tmp_path, "lockup", "--arch", "arm64", "--selftests", "none", "--accel", "tcg",
                    *mutant_args("lockup"))
    assert_mutant_was_active(ran.out, "arm64", "lockup")
    lava, boot_timeout = assert_lockup_job_stopped_early(ran, ran.out / "arm64" / "job.yaml")
    assert lava["lava_run_seconds"] < boot_timeout, (lava, boot_timeout)


def assert_lockup_job_stopped_early(ran, job_path) -> tuple[dict, float]:
    """The arm64 job of the boot-fault kernel with kpipe_mutant=lockup: exit 1 with init's soft lockup, ended by
    kpipe within 30 s of the report, before any test. Returns the job's boot.lava and its boot action's timeout
    (the caller bounds the job's run by it)."""
    assert ran.code == 1, ran
    ar = ran.result["arches"]["arm64"]
    lockups = [f for f in ar["findings"] if f["kind"] == "soft_lockup"]
    assert lockups and "[init:1]" in lockups[0]["line"], ar["findings"]
    lava = ar["boot"]["lava"]
    assert "soft_lockup before the guest was ready" in lava["stopped"], lava
    assert ar["boot"]["verdict_after_fatal_s"] <= 30, ar["boot"]
    assert ar["tests"] == [] and "soft_lockup" in ar["error"], ar["error"]
    job = yaml.safe_load(job_path.read_text())
    return lava, next(a["boot"]["timeout"]["seconds"] for a in job["actions"] if "boot" in a)


PANIC_AT_BOOT = ("--kernel-arg", "rdinit=/nonexistent", "--kernel-arg", "init=/nonexistent")   # no init: panic


def assert_panic_is_a_kernel_failure(ran) -> dict:
    """The x86_64 job of a kernel that panicked at boot: exit 1 naming the panic, although LAVA calls it an
    Infrastructure error; no test ran (as verify). Returns the job's boot.lava."""
    assert ran.code == 1, ran
    ar = ran.result["arches"]["x86_64"]
    assert ar["error"].startswith("kernel panic on x86_64: Requested init /nonexistent failed"), ar["error"]
    assert any(f["kind"] == "panic" for f in ar["findings"])
    lava = ar["boot"]["lava"]
    assert lava["job_result"] == "fail" and lava["error_type"] == "Infrastructure", lava
    assert ar["tests"] == []                             # as verify: no test ran on a kernel that never booted
    return lava


@pytest.mark.e2e
def test_kernel_panic_at_boot_is_a_kernel_failure_within_seconds(tmp_path):
    """No init: the kernel panics at boot. LAVA calls that an Infrastructure error; kpipe says exit 1 (the
    kernel), at once (panic=-1 + QEMU -no-reboot), not at LAVA's boot timeout."""
    ran = _lava_cli(tmp_path, "panic", "--arch", "x86_64", "--selftests", "none", *PANIC_AT_BOOT)
    lava = assert_panic_is_a_kernel_failure(ran)
    assert lava["lava_run_seconds"] < 60, lava          # the boot timeout is 120 s


@pytest.mark.e2e
def test_generated_jobs_validate_with_the_dispatchers_schema(tmp_path):
    """lava_common.schemas accepts kpipe's jobs and device dictionaries, and does reject a broken job (so the
    check can fail)."""
    from kpipe.lava import install as lava_install
    from kpipe.errors import InfraError
    lava = lava_install.ensure()
    for arch_name in ("x86_64", "arm64"):
        spec = golden_spec(arch_name)
        job, dev = tmp_path / f"job-{arch_name}.yaml", tmp_path / f"device-{arch_name}.yaml"
        job.write_text(jobmod.job_yaml(spec))
        dev.write_text(jobmod.device_yaml(jobmod.job_dict(spec)))
        jobmod.validate(lava, job, dev)
    broken = jobmod.job_dict(golden_spec("x86_64"))
    broken["actions"][1]["boot"]["method"] = "qemu-bogus"
    bad = tmp_path / "broken.yaml"
    bad.write_text(yaml.safe_dump(broken))
    with pytest.raises(InfraError, match="invalid"):
        jobmod.validate(lava, bad)
