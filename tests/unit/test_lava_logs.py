"""kpipe on LAVA, fast tier: the job definition against golden copies (tests/data/lava/job-*.yaml), the ramdisk
as one cpio archive that `cpio --extract` (what the dispatcher runs) reads whole, and LAVA logs captured from real
lava-run jobs (tests/data/lava/*.log) turned into kpipe's results. Real lava-run: tests/e2e/test_lava.py."""
from __future__ import annotations

import gzip
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from kpipe.checks.suite import get as get_suite
from kpipe.checks.verifier import load_expectations
import yaml

from kpipe.checks import kmemleak
from kpipe.guest import qemu
from kpipe.arches import ARCHES
from kpipe.guest.cpio import read_names, write_gz
from kpipe.lava import collect, job as jobmod, logparse, ramdisk
from kpipe.build.profiles import get_profile
from kpipe.report.results import ArchResult, Status
from kpipe.checks.selftests import BuiltTest, SelftestSpec
from kpipe.workflows.runner import Prepared

from kpipe_cli import LEAK_SCAN_ON, REPO_ROOT, invoke, results_by_name

DATA = Path(__file__).resolve().parents[1] / "data" / "lava"


def golden_spec(arch_name: str) -> jobmod.JobSpec:
    arch = get_profile("debug").guest_arch(ARCHES[arch_name])
    image = "bzImage" if arch_name == "x86_64" else "Image"
    return jobmod.spec_for(arch, "tcg", Path(f"/artifacts/{arch_name}/{image}"),
                           Path(f"/artifacts/{arch_name}/ramdisk.cpio.gz"), (), "5.10.262", "0123456789abcdef",
                           "debug", "anon+shmem", ("mremap_dontunmap", "userfaultfd-shmem"), 120, 540)


# ------------------------------------------------------------------------------------------------ job


@pytest.mark.parametrize("arch_name", ["x86_64", "arm64"])
def test_job_matches_golden_copy(arch_name):
    """The job's shape is reviewable: a change to the templates shows up as a diff of this file.
    Regenerate with KPIPE_REGEN_GOLDEN=1 after a deliberate change."""
    text = jobmod.job_yaml(golden_spec(arch_name))
    golden = DATA / f"job-{arch_name}.yaml"
    if os.environ.get("KPIPE_REGEN_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("arch_name", ["x86_64", "arm64"])
def test_job_boots_as_kpipe_does(arch_name):
    """Machine, cpu, memory, vCPUs, command line: the arch + profile data `verify` boots with, plus -no-reboot
    (a panic must end the job at once, not wait for LAVA's boot timeout)."""
    spec = golden_spec(arch_name)
    job = jobmod.job_dict(spec)
    a = spec.arch
    ctx = job["context"]
    assert (ctx["machine"], ctx["cpu"], ctx["memory"]) == (a.qemu_machine, a.qemu_cpu, a.memory_mb)
    assert a.memory_mb == 1024 and a.smp == 2                 # the debug profile's guest
    assert {"-smp 2", "-no-reboot", "-accel tcg", "-device virtio-rng-pci"} <= set(ctx["extra_options"])
    deploy, boot, test = (next(iter(x.values())) for x in job["actions"])
    kernel = deploy["images"]["kernel"]
    assert kernel["image_arg"] == f'-kernel {{kernel}} -append "{qemu.kernel_cmdline(a)}"'
    assert "panic=-1" in kernel["image_arg"]
    rd = deploy["images"]["ramdisk"]
    assert (rd["format"], rd["compression"], rd["overlays"]) == ("cpio.newc", "gz", {"lava": True})
    assert boot["prompts"] == [ramdisk.PROMPT]
    assert [d["name"] for d in test["definitions"]] == ["verifier", "selftests", "kernel-log"]
    for action in (deploy, boot, test):
        assert action["timeout"]["seconds"] > 0
    assert job["timeouts"]["job"]["seconds"] >= sum(x["timeout"]["seconds"] for x in (deploy, boot, test))
    dev = yaml.safe_load(jobmod.device_yaml(job))
    opts = dev["actions"]["boot"]["methods"]["qemu"]["parameters"]["options"]
    assert f"-machine {a.qemu_machine}" in opts and "-m 1024" in opts and "-no-reboot" in opts
    assert dev["available_architectures"] == [a.debian_arch]


def test_dmesg_pattern_is_kpipes_findings():
    rx = jobmod.dmesg_pattern()
    for line in ("Kernel panic - not syncing: VFS", "BUG: KASAN: use-after-free in x", "kernel BUG at mm/mremap.c:1",
                 "WARNING: CPU: 0 PID: 1 at mm/x.c:3", "INFO: task a:1 blocked for more than 15 seconds"):
        assert subprocess.run(["grep", "-qE", rx], input=line, text=True).returncode == 0, line
    assert subprocess.run(["grep", "-qE", rx], input="all fine here\n", text=True).returncode == 1


# ------------------------------------------------------------------------------------------------ ramdisk


def test_ramdisk_is_one_archive_cpio_extracts_whole(tmp_path):
    """LAVA extracts the ramdisk with `cpio --extract` (stops at the first trailer) before adding its overlay:
    the base image, kpipe's init and the payload must all be in one archive."""
    base = tmp_path / "base.cpio.gz"

    def build(w):
        w.add_dir("bin")
        w.add_file("bin/busybox", b"\x7fELF fake", 0o755)
        w.add_file("init", b"#!/bin/sh\necho old init\n", 0o755)
        w.add_dir("etc")
        w.add_chardev("dev/console", 5, 1)
    write_gz(base, build)
    vbin = tmp_path / "mremap_dontunmap"
    vbin.write_bytes(b"verifier")
    sbin = tmp_path / "userfaultfd"
    sbin.write_bytes(b"selftest")
    (tmp_path / "st").mkdir()
    same_name = tmp_path / "st" / "mremap_dontunmap"          # vm/mremap_dontunmap: the verifier's file name
    same_name.write_bytes(b"the selftest")
    payload = ramdisk.Payload(vbin, "a=ok\n", 120, 20, (("userfaultfd-shmem", 300, sbin, ("shmem", "16", "4")),
                                                         ("userfaultfd-anon", 300, sbin, ("anon", "16", "4")),
                                                         ("mremap_dontunmap", 120, same_name, ())), "Kernel panic")
    out = ramdisk.write_ramdisk(base, payload, tmp_path / "ramdisk.cpio.gz")
    raw = gzip.decompress(out.read_bytes())
    assert raw.count(b"TRAILER!!!") == 1
    names = read_names(out)
    assert b"old init" not in names["init"][3] and b"cttyhack" in names["init"][3]
    assert names["kpipe/bin/mremap_dontunmap"][3] == b"verifier"
    assert names["kpipe/selftests.list"][3] == (b"userfaultfd-shmem 300 userfaultfd shmem 16 4\n"
                                                b"userfaultfd-anon 300 userfaultfd anon 16 4\n"
                                                b"mremap_dontunmap 120 mremap_dontunmap \n")
    assert names["kpipe/selftests/mremap_dontunmap"][3] == b"the selftest"
    assert re.search(rb"-e expect.txt -t 20\n", names["kpipe/run-verifier.sh"][3])     # every case
    x = tmp_path / "x"
    x.mkdir()
    (tmp_path / "r.cpio").write_bytes(raw)
    subprocess.run(["cpio", "--extract", "--make-directories", "--unconditional", "--quiet", "--file",
                    str(tmp_path / "r.cpio")], cwd=x, check=True, capture_output=True)
    assert (x / "bin/busybox").read_bytes() == b"\x7fELF fake"
    assert (x / "kpipe/selftests/userfaultfd").read_bytes() == b"selftest"
    assert os.access(x / "kpipe/run-selftests.sh", os.X_OK)
    assert "kpipe/run-kmemleak.sh" not in names                  # leak scan off: no step, no script
    out = ramdisk.write_ramdisk(base, replace(payload, leak_scan=True), tmp_path / "ramdisk-leak.cpio.gz")
    names = read_names(out)
    assert names["kpipe/kmemleak-scan.sh"][3].decode() == kmemleak.SCAN_SCRIPT + "\n"   # verify's own scan lines
    assert b"sh /kpipe/kmemleak-scan.sh" in names["kpipe/run-kmemleak.sh"][3]
    # --case: the binary is given the selected cases by name, as verify gives them over SSH
    out = ramdisk.write_ramdisk(base, replace(payload, cases=("move-anon-private", "move-memfd-shared")),
                                tmp_path / "ramdisk-cases.cpio.gz")
    assert re.search(rb"-e expect.txt -t 20 move-anon-private move-memfd-shared\n",
                     read_names(out)["kpipe/run-verifier.sh"][3])


def test_job_with_the_leak_scan_runs_it_after_the_tests_and_before_the_kernel_log():
    plain = jobmod.job_dict(golden_spec("arm64"))
    job = jobmod.job_dict(replace(golden_spec("arm64"), leak_scan=True))
    steps = [d["name"] for a in job["actions"] if "test" in a for d in a["test"]["definitions"]]
    assert steps == ["verifier", "selftests", "kmemleak", "kernel-log"], steps

    def test_seconds(j):
        return next(a["test"]["timeout"]["seconds"] for a in j["actions"] if "test" in a)
    assert test_seconds(job) - test_seconds(plain) == int(kmemleak.SCAN_TIMEOUT)


# ------------------------------------------------------------------------------------------------ captured logs


def _prep(tmp_path, policy="anon+shmem", selftest_names=(), arch_name="x86_64"):
    arch = get_profile("debug").guest_arch(ARCHES[arch_name])
    tests = [BuiltTest(SelftestSpec(name=n, sources=(f"vm/{n}.c",), timeout=120, binary_name=n, collection="vm"),
                       tmp_path / n) for n in selftest_names]
    return Prepared(arch, None, None, tmp_path / "mremap_dontunmap", policy, tests, ArchResult(arch=arch_name),
                    tmp_path, get_suite())


def _collect(tmp_path, name, **kw):
    log = logparse.parse((DATA / name).read_text())
    return log, collect.to_arch_result(_prep(tmp_path, **kw), log, "tcg", "TCG (requested)", 120, 0, 20.0, False)


def test_captured_panic_log_is_a_kernel_failure_not_infrastructure(tmp_path):
    log, ar = _collect(tmp_path, "panic-at-boot-x86_64.log")
    assert (log.job_result, log.error_type, log.error_msg) == ("fail", "Infrastructure", "Connection closed")
    assert (ar.exit_code, ar.verdict) == (1, "fail")
    assert ar.error.startswith("kernel panic on x86_64: Requested init /nonexistent failed")
    assert "LAVA reported it as Infrastructure: Connection closed" in ar.error
    assert [f.kind for f in ar.findings] == ["panic"] and ar.tests == []


def test_captured_passing_log_gives_verifys_results(tmp_path):
    """The seed kernel's job (verifier only): every expected case, judged by kpipe's own TAP parser, and LAVA's
    own results agree case by case."""
    log, ar = _collect(tmp_path, "pass-seed-x86_64.log")
    assert log.job_result == "pass" and (ar.exit_code, ar.verdict) == (0, "pass"), ar.error
    from kpipe.checks import verifier
    names = [t.name for t in ar.tests if t.suite == "verifier"]
    assert names == list(verifier.load_expectations().cases)
    assert ar.counts()["verifier"]["fail"] == 0 and ar.counts()["verifier"]["error"] == 0
    assert ar.boot.lava.mismatches == [] and ar.boot.lava.results == len(names) + 1
    assert 3 < ar.boot.seconds < 60
    assert (tmp_path / "verifier.tap").read_text().startswith("TAP version 13\n1..")
    assert "Linux version" in (tmp_path / "dmesg.log").read_text()


def test_captured_server_log_reads_as_lava_runs(tmp_path):
    """The same job's log as lava-server keeps it (`lavacli jobs logs --raw`: a YAML list, `- {...}` per record,
    captured from the local lab, tests/e2e/test_lab.py) gives the same results as lava-run's own log."""
    log, ar = _collect(tmp_path, "server-pass-seed-x86_64.log")
    assert log.job_result == "pass" and (ar.exit_code, ar.verdict) == (0, "pass"), ar.error
    (tmp_path / "local").mkdir()
    _, local = _collect(tmp_path / "local", "pass-seed-x86_64.log")
    assert ar.counts() == local.counts()
    assert [(t.name, t.status) for t in ar.tests] == [(t.name, t.status) for t in local.tests]
    assert ar.boot.lava.mismatches == [] and ar.boot.lava.results == local.boot.lava.results


def test_a_case_lava_judged_differently_is_an_error_named(tmp_path):
    """The guest-side lava-test-case calls and kpipe's parser read the same TAP: a disagreement is a bug in
    one of them, reported on the case, never a silent pass."""
    text = (DATA / "pass-seed-x86_64.log").read_text()
    marker = '"case": "move-memfd-shared", "definition": "0_verifier"'
    assert marker in text
    lines = [ln.replace('"result": "pass"', '"result": "fail"') if marker in ln else ln for ln in text.splitlines()]
    (tmp_path / "tampered.log").write_text("\n".join(lines))
    log = logparse.parse((tmp_path / "tampered.log").read_text())
    ar = collect.to_arch_result(_prep(tmp_path), log, "tcg", "", 120, 0, 20.0, False)
    t = next(t for t in ar.tests if t.name == "move-memfd-shared")
    assert t.status == Status.ERROR and "kpipe pass, LAVA fail" in t.detail
    assert ar.exit_code == 2


def test_captured_failing_log_is_exit_1_naming_the_cases_although_lava_passed_the_job(tmp_path):
    """5.10 without the patch, judged under the patched policy: LAVA completes the job ("pass", lava-run exit 0)
    with failed cases in it; kpipe's verdict is exit 1 and names them."""
    log, ar = _collect(tmp_path, "fail-baseline-expect-anon+shmem-x86_64.log")
    assert log.job_result == "pass" and not log.error_type
    assert (ar.exit_code, ar.verdict) == (1, "fail")
    assert ar.error.startswith("kernel misbehaved: verifier/move-anon-shared, verifier/move-devzero-shared, "
                               "verifier/move-memfd-shared"), ar.error
    t = next(t for t in ar.tests if t.name == "move-memfd-shared")
    assert (t.status, t.expected, t.observed) == (Status.FAIL, "ok", "EINVAL")
    assert ar.boot.lava.mismatches == []          # LAVA's own results say the same
    assert ar.counts()["verifier"]["fail"] == len([r for r in log.results if r.result == "fail"]) == 32
    # exactly the cases the seed patch is about: expected differently before and after it
    ex = load_expectations()
    flip = {c for c in ex.cases if ex.column("anon-only")[c] != ex.column("anon+shmem")[c]}
    assert {t.name for t in ar.tests if t.status == Status.FAIL} == flip


def test_captured_arm64_log_of_the_baseline_kernel_passes_under_its_policy(tmp_path):
    log, ar = _collect(tmp_path, "pass-baseline-anon-only-arm64.log", policy="anon-only", arch_name="arm64")
    assert (ar.exit_code, ar.verdict) == (0, "pass"), ar.error
    c = ar.counts()["verifier"]
    # the refused shmem moves SKIP ("move rejected as expected"); the partial mlock move is the known 5.10 bug
    assert (c["fail"], c["error"], c["skip"], c["xfail"]) == (0, 0, 25, 1) and c["pass"] == 63
    assert ar.boot.lava.mismatches == []


def test_captured_log_with_selftests_gives_their_results_and_ktap(tmp_path):
    names = ("mremap_dontunmap", "map_fixed_noreplace", "userfaultfd-shmem")
    log, ar = _collect(tmp_path, "pass-seed-3-selftests-x86_64.log", selftest_names=names)
    assert (ar.exit_code, ar.verdict) == (0, "pass"), ar.error
    st = [t for t in ar.tests if t.suite == "selftests"]
    assert [(t.name, t.status, t.observed) for t in st] == [(n, Status.PASS, "exit 0") for n in names]
    assert st[2].seconds > 5                                     # userfaultfd shmem 16 MiB x 4 bounces
    assert "bounces" in (tmp_path / "selftests" / "userfaultfd-shmem.log").read_text()
    ktap = (tmp_path / "selftests.ktap").read_text()
    assert ktap.startswith("TAP version 13\n1..3\n") and "ok 3 selftests: vm: userfaultfd-shmem" in ktap
    lava = log.results_of("selftests")
    assert {n: (r.result, r.units) for n, r in lava.items()} == {n: ("pass", "seconds") for n in names}
    assert ar.boot.lava.mismatches == []


def test_captured_leak_log_is_judged_as_verify_judges_its_scan(tmp_path):
    """A real job of the leaking boot-fault kernel (arm64, seed + the test kernel's leak mutant, captured when it
    was a patch of its own, boot-faults.patch with kpipe_fault=leak): every test passes and LAVA completes the
    job; its kmemleak step's report is the verdict."""
    log = logparse.parse((DATA / "leak-seed-faults-arm64.log").read_text())
    ar = collect.to_arch_result(_prep(tmp_path, arch_name="arm64"), log, "tcg", "", 120, 0, 20.0, False,
                                leak_scan=True)
    leaks = [f for f in ar.findings if f.kind == "kmemleak"]
    assert leaks and all(any("vm_area_dup" in ln for ln in f.context) for f in leaks)
    assert ar.boot.kmemleak is not None and ar.boot.kmemleak.leaks == len(leaks)
    assert (ar.exit_code, ar.verdict) == (1, "fail") and not [t for t in ar.tests if t.status.bad]
    assert log.job_result == "pass" and "unreferenced object" in (tmp_path / "kmemleak.log").read_text()
    # the same log with the scan not asked for: no leak claimed either way, and the report says why
    ar = collect.to_arch_result(_prep(tmp_path, arch_name="arm64"), log, "tcg", "", 120, 0, 20.0, False,
                                leak_not_scanned="leak_scan is off (environment KPIPE_LEAK_SCAN)")
    assert not [f for f in ar.findings if f.kind == "kmemleak"] and ar.exit_code == 0
    assert ar.boot.kmemleak is not None and ar.boot.kmemleak.not_scanned.startswith("leak_scan is off")


def test_leak_log_cut_off_during_the_scan_says_so_and_is_a_run_error(tmp_path):
    """The same job cut off inside its kmemleak block (the job ended, e.g. its deadline): no leak is claimed from
    a partial report, kmemleak's premise failed (a run error), and the words say the job ended during the scan."""
    lines = (DATA / "leak-seed-faults-arm64.log").read_text().splitlines(keepends=True)
    cut = next(i for i, ln in enumerate(lines) if "KPIPE-BEGIN kmemleak" in ln) + 3
    log = logparse.parse("".join(lines[:cut]))
    ar = collect.to_arch_result(_prep(tmp_path, arch_name="arm64"), log, "tcg", "", 120, 0, 20.0, False,
                                leak_scan=True)
    assert not [f for f in ar.findings if f.kind == "kmemleak"]
    [off] = [f for f in ar.findings if f.kind == "kmemleak_off"]
    assert "the LAVA job ended during the scan" in off.line and "did not finish within" not in off.line, off.line
    assert ar.exit_code != 0


def _replay(tmp_path, name, monkeypatch):
    """ConsoleWatch over a captured job log written line by line, one simulated second per 10 lines."""
    from kpipe.lava import watch
    now = [1000.0]
    monkeypatch.setattr(watch.time, "monotonic", lambda: now[0])
    live = tmp_path / "lava.log"
    live.write_text("")
    w = watch.ConsoleWatch(live, "KPIPE-GUEST-READY")
    lines = (DATA / name).read_text().splitlines(keepends=True)
    for i in range(0, len(lines), 10):
        with open(live, "a") as fh:
            fh.writelines(lines[i:i + 10])
        now[0] += 1.0
        stop = w.poll()
        if stop is not None:
            return stop, i + 10, len(lines), w
    for _ in range(60):               # the job's end: lava-run stays a minute longer, nothing new is written
        now[0] += 1.0
        stop = w.poll()
        if stop is not None:
            return stop, len(lines), len(lines), w
    return None, len(lines), len(lines), w


def test_watch_ends_a_job_stuck_before_ready_after_verifys_grace(tmp_path, monkeypatch):
    """The real log of the lockup kernel's job: the soft lockup, seen before the ready marker, ends the job
    STUCK_GRACE simulated seconds after it was read, not at LAVA's boot timeout."""
    from kpipe.guest.qemu import STUCK_GRACE
    stop, at, total, w = _replay(tmp_path, "lockup-at-boot-arm64.log", monkeypatch)
    assert stop is not None and not w.ready
    assert "soft_lockup before the guest was ready" in stop.reason and "[init:1]" in stop.reason
    assert STUCK_GRACE <= stop.after_report_s < STUCK_GRACE + 2


@pytest.mark.parametrize("name", ["pass-seed-x86_64.log", "pass-seed-3-selftests-x86_64.log",
                                  "leak-seed-faults-arm64.log"])
def test_watch_never_ends_a_job_whose_kernel_reported_nothing_fatal(tmp_path, monkeypatch, name):
    stop, _, _, w = _replay(tmp_path, name, monkeypatch)
    assert stop is None and w.ready


# ------------------------------------------------------------------------------------------------ submission


def _submitted(tmp_path, arch_name, t0, timeout):
    from kpipe.lava import submit
    written = {"job": tmp_path / "job.yaml", "device": tmp_path / "device.yaml", "ramdisk": tmp_path / "r.cpio.gz",
               "accel": "tcg", "accel_reason": "", "timeout": timeout, "verifier_timeout": 120.0}
    return submit.Submitted(_prep(tmp_path, arch_name=arch_name), written, "1", "http://x/scheduler/job/1", t0)


def test_a_job_may_wait_for_the_jobs_of_its_arch_submitted_before_it(tmp_path):
    """premerge --lab queues four jobs on a lab with one device per arch: an arch's second job waits for its
    first (at most that job's timeout) before its own timeout starts; other arches' jobs do not count."""
    from kpipe.lava import submit
    jobs = [_submitted(tmp_path, a, t0, to) for a, t0, to in
            (("x86_64", 100.0, 600), ("arm64", 101.0, 900), ("x86_64", 102.0, 650), ("arm64", 103.0, 950))]
    submit.deadlines(jobs, 300)
    assert [j.deadline for j in jobs] == [100 + 600 + 300, 101 + 900 + 300, 102 + 600 + 650 + 300,
                                          103 + 900 + 950 + 300]


def test_submitted_jobs_fetch_their_side_folder_under_the_artifact_url(tmp_path, monkeypatch):
    """premerge's baseline and patched kernels of an arch have the same file names: each side's job fetches from
    its own folder (<side>/<arch>/) under $KPIPE_LAVA_ARTIFACT_URL; `kpipe lava` keeps <arch>/."""
    from kpipe.lava import submit
    job = tmp_path / "job.yaml"
    job.write_text(jobmod.job_yaml(golden_spec("x86_64")))
    monkeypatch.setenv("KPIPE_LAVA_ARTIFACT_URL", "https://artifacts.example.org/run/")
    deploy = yaml.safe_load(submit._rewrite(job, "baseline/x86_64", ["x86_64"]).read_text())
    images = deploy["actions"][0]["deploy"]["images"]
    assert images["kernel"]["url"] == "https://artifacts.example.org/run/baseline/x86_64/bzImage"
    assert images["ramdisk"]["url"] == "https://artifacts.example.org/run/baseline/x86_64/ramdisk.cpio.gz"
    assert deploy["tags"] == ["x86_64"]
    monkeypatch.delenv("KPIPE_LAVA_ARTIFACT_URL")
    assert submit._rewrite(job, "x86_64") == job                    # nothing to rewrite: the job as written


def test_server_times_give_the_queueing(tmp_path):
    """lavacli's YAML of the server's DateTime values: submit -> start is the time a job waited for a device."""
    from kpipe.lava import submit
    sub, start = submit._server_time("20261207T01:20:05"), submit._server_time("20261207T01:21:45")
    assert submit._seconds(sub, start) == 100.0
    assert submit._server_time(None) is None and submit._seconds(sub, None) is None


def test_premerge_lab_refuses_require_coverage_and_a_missing_lab_before_any_run(tmp_path):
    """Usage errors of `premerge --lab`, before any run folder: the jobs read no gcov counters, and `--lab lab`
    needs a local lab (its token file)."""
    ran = invoke("premerge", "--lab", "lab", "--require-coverage", out=tmp_path / "cov", timeout=120)
    assert ran.code == 2 and "cannot --require-coverage" in ran.stderr, ran
    ran = invoke("premerge", "--lab", "lab", out=tmp_path / "nolab", timeout=120,
                 env={"KPIPE_CACHE": str(tmp_path / "cache")})
    assert ran.code == 2 and "the local LAVA lab has no API token" in ran.stderr, ran
    assert not (tmp_path / "cov").exists() and not (tmp_path / "nolab").exists()


def test_a_lava_job_gives_the_verifier_verifys_limits():
    """The whole verifier run and each case get the same limits in a LAVA job as under `kpipe verify` (the job
    kept verify's old 120 s after verify's went to 300 s, b0d1ccc: arm64's 89 cases take ~100 s on a loaded host)."""
    from kpipe.checks import verifier
    from kpipe.lava.workflow import _verifier_timeout
    from kpipe.workflows.pipeline import Options
    assert _verifier_timeout(Options()) == verifier.TIMEOUT == 300
    assert verifier.case_timeout(verifier.TIMEOUT) == 30
    assert _verifier_timeout(Options(test_timeout=60)) == 60 and verifier.case_timeout(60) == 10
