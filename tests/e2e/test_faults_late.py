"""Fault suite, late stages: boot, SSH, tests in the guest, the accelerator, interrupts and a damaged
cache entry, through the real pipeline (`invoke verify`, or `kpipe.workflows.flows.verify` in-process where a fault
has to be injected) on the real Debian 5.10 kernels in kpipe's shared cache.

Each case ends with: a message naming the problem and a fix, the contract's exit code and exit line, no QEMU,
make or compiler process of the run left (found by a tag in their environment), the run folder's per-run
secrets (SSH key, host key overlay, joined initrd) gone, no new `.tmp-`/`.old-` entry in the cache, and the
cache still good for the next run. Only x86_64 boots here (the boot side is arch-independent code, and the
early suite covers arm64's toolchain faults); the two cases that need `make` edit one line of mm/mremap.c
with a fresh nonce, an incremental build of ~10 s, and never touch an entry another test uses.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from kernel_fixture import leftovers, processes_with_env
from kpipe_cli import REPO_ROOT, Ran, invoke, results_by_name
from test_build import SEED, edit_patch, series

from kpipe import cache
from kpipe.guest import image, qemu
from kpipe.workflows import flows as workflows
from kpipe.guest.accel import PROBE_TIMEOUT, boot_id
from kpipe.errors import EXIT_MEANING
from kpipe.workflows.pipeline import Options

pytestmark = pytest.mark.e2e

ARCH = "x86_64"
TAG = "KPIPE_FAULT_TAG"
SECRETS = ("ssh_client_key", "overlay.cpio.gz", "initrd-run.cpio", "known_hosts")
CACHE_STAGES = ("kernels", "images", "verifier", "selftests", "probes")


# ------------------------------------------------------------------------------------------------ helpers

def exit_line(code: int) -> str:
    return f"exit {code} ({EXIT_MEANING[code]})"


def tagged_processes(tag: str) -> list[str]:
    """Processes (QEMU, make, gcc, ...) started by the run carrying ``tag`` in its environment."""
    return processes_with_env(TAG, tag)


def cache_temps() -> set[str]:
    root = cache.cache_root()
    return {f"{stage}/{p}" for stage in CACHE_STAGES if (root / stage).is_dir() for p in leftovers(root / stage)}


def new_cache_temps(before: set[str]) -> set[str]:
    """Temp entries that appeared during the test. Another kpipe session on this machine may be finishing an
    entry of its own right now: such an entry is renamed into place within seconds, ours would stay."""
    new = cache_temps() - before
    if new:
        time.sleep(5)
        new &= cache_temps()
    return new


def secrets_left(run_dir: Path) -> list[str]:
    return [str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
            if p.name in SECRETS or p.name.startswith(("hostkey-", "rootfs-"))]


@dataclasses.dataclass
class Timed:
    ran: Ran
    seconds: float


# The two boot-fault tests bound how fast kpipe reacts in seconds from QEMU's start (the panic ~2 s in, a 12 s
# boot timeout that must still show what init did): the fast kernel boots in ~2 s, the debug one in 15-25 s
# under TCG, so those bounds are about kpipe on the fast kernel. So do the faults whose handling cannot depend
# on the kernel's config (SSH refusals, the interrupted boot, tests that crash or hang in the guest): they only
# add its boot time on the debug kernel. What asks the kernel with SysRq (a hung selftest) runs on the debug one.
FAST_BOOT = ("--profile", "fast")


def verify_cli(tag: str, out: Path, *args: str, timeout: float = 600) -> Timed:
    t0 = time.monotonic()
    ran = invoke("verify", "--arch", ARCH, *args, out=out, env={TAG: tag}, timeout=timeout)
    took = time.monotonic() - t0
    print(f"\n[{tag}] exit {ran.code} after {took:.1f}s")
    return Timed(ran, took)


def check_ended_cleanly(stderr: str, code: int, got: int, tag: str, out: Path, temps_before: set[str],
                        *names: str, stdout: str = "", fix: bool = True) -> None:
    """The common end of every case. ``names`` must appear in the output (stderr, or the results table on
    stdout); an error block with a fix line is wanted unless ``fix`` is False (a test verdict, exit 1)."""
    assert got == code, f"exit {got}, wanted {code}\n{stdout[-3000:]}\n{stderr[-6000:]}"
    for n in names:
        assert n in stdout + stderr, f"{n!r} not named in:\n{stdout[-3000:]}\n{stderr[-6000:]}"
    assert "Traceback" not in stderr
    if code and fix:
        assert "\n  fix: " in stderr, f"no fix line in:\n{stderr[-6000:]}"
        assert f"  {exit_line(code)}" in stderr                  # the error block's exit line
    assert exit_line(code) in stderr.splitlines()[-1]            # and the task's last line
    assert not tagged_processes(tag), tagged_processes(tag)
    assert not secrets_left(out), secrets_left(out)
    assert not new_cache_temps(temps_before), new_cache_temps(temps_before)


@pytest.fixture()
def temps_before(patched_kernels) -> set[str]:
    """The kernels are built (or found) first; then the cache's temp entries are noted."""
    return cache_temps()


@pytest.fixture()
def tagged(monkeypatch) -> str:
    """A tag in this process's environment, inherited by every child an in-process run starts."""
    tag = f"late-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv(TAG, tag)
    return tag


def failure_block(text: str) -> str:
    """The rendered error block (from 'kpipe: <kind>:' to its exit line) in a run's stderr."""
    m = re.search(r"^(?:\[\S+\] )?(kpipe: [a-z ]+: .*?\n  exit \d \([^)]*\))", text, re.S | re.M)
    assert m, text[-4000:]
    return m.group(1)


def compile_static(tmp_path: Path, name: str, *sources: Path, include: Path | None = None) -> Path:
    out = tmp_path / name
    cmd = ["gcc", "-std=c11", "-O2", "-Wall", "-static", "-pthread", *(["-I", str(include)] if include else []),
           *map(str, sources), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def c_file(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


SEGV_C = r"""
#include <stdio.h>
int main(void)
{
	printf("about to write through a NULL pointer\n");
	fflush(stdout);
	*(volatile int *)0 = 1;
	return 0;
}
"""

HANG_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void)
{
	printf("hanging forever\n");
	fflush(stdout);
	for (;;)
		pause();
}
"""

HANGFORK_C = r"""
/* hangs, and so does a helper it forked: the timeout must kill both */
#include <stdio.h>
#include <unistd.h>
int main(void)
{
	if (fork() == 0)
		for (;;)
			pause();
	printf("parent and child hanging\n");
	fflush(stdout);
	for (;;)
		pause();
}
"""

# Fails when a process of an earlier, timed-out test is still alive in the guest.
LEFTOVERS_C = r"""
#include <dirent.h>
#include <stdio.h>
#include <string.h>
static const char *names[] = {"hang", "hangfork", "userfaultfd", "stuck_case"};
int main(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int found = 0;
	char path[300], comm[64];
	while (d && (e = readdir(d))) {
		FILE *f;
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		if (fgets(comm, sizeof(comm), f)) {
			comm[strcspn(comm, "\n")] = 0;
			for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
				if (!strcmp(comm, names[i])) {
					printf("left behind: pid %s %s\n", e->d_name, comm);
					found = 1;
				}
		}
		fclose(f);
	}
	printf(found ? "processes left behind\n" : "no process left behind\n");
	return found;
}
"""

# Two cases on kpipe's real verifier harness (suites/lib/harness.c): the first never returns, the second passes.
# The harness's per-case limit (-t, as the verifier is run) must kill the first and still run the second.
STUCK_CASE_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
#include "harness.h"

static void stuck(const struct test_case *tc, struct result *r)
{
	(void)tc; (void)r;
	for (;;)
		pause();
}

static void fine(const struct test_case *tc, struct result *r)
{
	(void)tc;
	observe(r, "ok");
}

static const struct test_case cases[] = {
	{"stuck-case", stuck, NULL},
	{"case-after-the-stuck-one", fine, NULL},
};

int main(void)
{
	const char *expect = "/tmp/stuck_case.expect";
	char *argv[] = {"stuck_case", "-t", "2", "-e", (char *)expect, NULL};
	FILE *f = fopen(expect, "w");

	if (!f || fputs("stuck-case=ok\ncase-after-the-stuck-one=ok\n", f) < 0 || fclose(f))
		return 2;
	return harness_main(5, argv, cases, sizeof(cases) / sizeof(cases[0]), "stuck_case");
}
"""


# ------------------------------------------------------------------------------------------------ boot

def test_kernel_that_panics_at_boot_ends_the_run_at_once(temps_before, tmp_path):
    """No init to run: the kernel panics. panic=0 (the last one wins) keeps QEMU up after the panic, so only
    the console watcher can end the run before the 120 s boot timeout."""
    tag, out = f"panic-{uuid.uuid4().hex[:8]}", tmp_path / "run"
    t = verify_cli(tag, out, "--selftests", "none", "--boot-timeout", "120", "--kernel-arg", "panic=0",
                   "--kernel-arg", "rdinit=/nonexistent", "--kernel-arg", "init=/nonexistent", *FAST_BOOT)
    err = t.ran.stderr
    check_ended_cleanly(err, 1, t.ran.code, tag, out, temps_before, "kernel panic on x86_64",
                        "Kernel panic - not syncing: Requested init /nonexistent failed")
    assert t.seconds < 40, f"the panic must end the run at once, not at the 120 s timeout ({t.seconds:.0f}s)"
    boot = re.search(r"boot: failed in ([\d.]+)s", err)
    assert boot and float(boot.group(1)) < 12, err[-3000:]       # QEMU start -> verdict, panic line ~2 s in
    ar = t.ran.result["arches"][ARCH]
    assert ar["verdict"] == "fail" and ar["exit_code"] == 1 and t.ran.result["exit_code"] == 1
    [finding] = [f for f in ar["findings"] if f["kind"] == "panic"]
    assert any("Kernel panic - not syncing" in ln for ln in finding["context"])
    assert "Requested init /nonexistent failed" in (out / ARCH / "serial.log").read_text()


def test_boot_that_never_reaches_the_ready_marker(temps_before, tmp_path):
    """rdinit= names no file: the kernel falls back to /bin/sh, which idles on the console and never says the
    marker. With --boot-timeout 12 the run ends at 12 s with the console tail."""
    tag, out = f"hang-{uuid.uuid4().hex[:8]}", tmp_path / "run"
    t = verify_cli(tag, out, "--selftests", "none", "--boot-timeout", "12", "--kernel-arg", "rdinit=/nonexistent",
                   *FAST_BOOT)
    err = t.ran.stderr
    check_ended_cleanly(err, 2, t.ran.code, tag, out, temps_before,
                        "guest did not reach the ready marker 'KPIPE-GUEST-READY' within 12 s",
                        "last console lines:", "--boot-timeout", str(out / ARCH / "serial.log"))
    block = failure_block(err)
    tail = block.split("last console lines:", 1)[1]
    assert "Run /bin/sh as init process" in tail, block            # what the guest did instead
    assert 12 <= t.seconds < 45, t.seconds
    ar = t.ran.result["arches"][ARCH]
    assert ar["verdict"] == "error" and ar["exit_code"] == 2 and not ar["findings"]


@pytest.mark.parametrize("override, says", [
    ({"ssh_port": 2222}, "no SSH connection to the guest"),          # dropbear listens, but not where we forward
    ({"start_sshd": False}, "cannot become ready (sshd not started"),  # init starts no sshd and says so
], ids=["sshd-on-another-port", "no-sshd"])
def test_sshd_that_never_answers(temps_before, tagged, tmp_path, monkeypatch, capfd, override, says):
    monkeypatch.setattr(image, "build_image", functools.partial(image.build_image, overrides=override))
    out = tmp_path / "run"
    t0 = time.monotonic()
    run = workflows.verify(Options(arch=ARCH, selftests="none", boot_timeout=20, out=str(out), profile="fast"))
    took = time.monotonic() - t0
    print(f"\n[sshd {override}] exit {run.exit_code} after {took:.1f}s")
    err = capfd.readouterr().err + f"\n{exit_line(run.exit_code)}"
    check_ended_cleanly(err, 2, run.exit_code, tagged, out, temps_before, says, "last console lines:")
    ar = run.arches[ARCH]
    assert ar.exit_code == 2 and ar.verdict == "error" and not ar.tests
    assert says in ar.error and ar.logs["failure"] == str(out / ARCH / "serial.log")
    block = failure_block(err)
    if "ssh_port" in override:
        assert "is sshd (dropbear) started by the guest's init? read serial.log" in block
        assert "KPIPE-GUEST-READY" in block                  # the guest said ready: SSH is what failed
    else:
        assert "sshd not started" in block
    assert took < 60
    assert json.loads((out / "result.json").read_text())["exit_code"] == 2


def test_wrong_host_key_is_refused(temps_before, tagged, tmp_path, monkeypatch, capfd):
    """The client pins another key than the one the guest got: the session must refuse, never accept it."""
    real = qemu.make_overlay

    def overlay_pinning_another_key(run_dir):
        ov = real(run_dir)
        _, other = image.make_host_key(run_dir)          # a fresh key the guest never sees
        assert other != ov.host_pubkey
        return dataclasses.replace(ov, host_pubkey=other)

    monkeypatch.setattr(qemu, "make_overlay", overlay_pinning_another_key)
    out = tmp_path / "run"
    run = workflows.verify(Options(arch=ARCH, selftests="none", out=str(out), profile="fast"))
    err = capfd.readouterr().err + f"\n{exit_line(run.exit_code)}"
    check_ended_cleanly(err, 2, run.exit_code, tagged, out, temps_before, "guest SSH host key mismatch",
                        "refused (no auto-accept)")
    ar = run.arches[ARCH]
    assert "host key mismatch" in ar.error and not ar.tests
    guest_log = out / ARCH / "guest.log"
    assert not guest_log.exists() or "connected to" not in guest_log.read_text()


# ------------------------------------------------------------------------------------------------ tests in the guest

def test_crashing_and_hanging_tests_fail_and_the_run_goes_on(temps_before, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    stuck = compile_static(src, "stuck_case", REPO_ROOT / "suites" / "lib" / "harness.c",
                           c_file(src, "stuck_case.c", STUCK_CASE_C), include=REPO_ROOT / "suites" / "lib")
    extra = [c_file(src, "segv.c", SEGV_C), c_file(src, "hang.c", HANG_C), c_file(src, "hangfork.c", HANGFORK_C),
             stuck, c_file(src, "leftovers.c", LEFTOVERS_C)]
    tag, out = f"tests-{uuid.uuid4().hex[:8]}", tmp_path / "run"
    t = verify_cli(tag, out, "--selftests", "none", "--test-timeout", "5", *FAST_BOOT,
                   *[a for f in extra for a in ("--extra-test", str(f))])
    check_ended_cleanly(t.ran.stderr, 1, t.ran.code, tag, out, temps_before, "FAIL  selftests/segv",
                        "FAIL  selftests/hang", "observed timeout after 5 s", "report: ",
                        stdout=t.ran.stdout, fix=False)
    res = results_by_name(t.ran.result, ARCH, "selftests")
    assert res["segv"]["status"] == "fail" and res["segv"]["observed"] == "exit 139", res["segv"]
    assert "SIGSEGV" in res["segv"]["detail"] and "Segmentation fault" in res["segv"]["detail"]
    for name in ("hang", "hangfork"):
        assert res[name]["status"] == "fail" and res[name]["observed"] == "timeout after 5 s", res[name]
        assert 4.5 <= res[name]["seconds"] < 15, res[name]
    # the real harness's per-case limit: the stuck case is killed by its alarm, the next case still runs
    sub = {s["name"]: s for s in res["stuck_case"]["subtests"]}
    assert res["stuck_case"]["status"] == "fail", res["stuck_case"]
    assert sub["stuck-case"]["status"] == "fail", sub
    assert "SIGALRM" in json.dumps(sub["stuck-case"]) or "SIGALRM" in res["stuck_case"]["detail"]
    assert sub["case-after-the-stuck-one"]["status"] == "pass", sub
    assert res["stuck_case"]["seconds"] < 10
    # the timeouts killed what they had to in the guest, the forked helper included
    assert res["leftovers"]["status"] == "pass", res["leftovers"]
    assert "no process left behind" in (out / ARCH / "selftests" / "leftovers.log").read_text()
    ktap = (out / ARCH / "selftests.ktap").read_text()
    assert "not ok 2 selftests: extra: hang # TIMEOUT 5 seconds" in ktap
    # the verifier shares the 5 s budget: where its cases do not all fit, the cut-off ones are ERRORs (timeout,
    # "missing"), never a kernel verdict; the ones that ran behaved
    verifier = results_by_name(t.ran.result, ARCH, "verifier")
    assert verifier and not [v for v in verifier.values() if v["status"] == "fail"], verifier
    assert all(v["observed"] in ("missing", "timeout") for v in verifier.values() if v["status"] == "error")
    assert t.seconds < 120


def test_selftest_that_hangs_is_killed_and_the_next_tests_run(temps_before, tmp_path):
    """A real selftest (userfaultfd shmem, ~1.7 s under TCG) against a 1 s budget: killed in the guest, the
    next selftest and an extra test still run. userfaultfd-shmem has a known hang of its own (tries 3): every
    try timed out and the kernel reported nothing, so nothing is known about the kernel: ERROR, exit 2, never a
    kernel verdict. The verifier shares the 1 s budget; only the selftests are asserted here."""
    checker = c_file(tmp_path, "leftovers.c", LEFTOVERS_C)
    tag, out = f"selftest-{uuid.uuid4().hex[:8]}", tmp_path / "run"
    t = verify_cli(tag, out, "--accel", "tcg", "--selftests", "userfaultfd-shmem,mremap_dontunmap",
                   "--test-timeout", "1", "--extra-test", str(checker))
    res = results_by_name(t.ran.result, ARCH, "selftests")
    if res["userfaultfd-shmem"]["status"] == "pass":
        pytest.skip("userfaultfd-shmem finished within 1 s on this machine: nothing to time out")
    check_ended_cleanly(t.ran.stderr, 2, t.ran.code, tag, out, temps_before, "ERROR selftests/userfaultfd-shmem",
                        "observed inconclusive: 3 timeouts", stdout=t.ran.stdout, fix=False)
    assert res["userfaultfd-shmem"]["status"] == "error", res["userfaultfd-shmem"]
    assert res["userfaultfd-shmem"]["observed"] == "inconclusive: 3 timeouts", res["userfaultfd-shmem"]
    assert res["userfaultfd-shmem"]["runs"] == 3, res["userfaultfd-shmem"]
    assert res["mremap_dontunmap"]["status"] == "pass", res["mremap_dontunmap"]
    assert res["leftovers"]["status"] == "pass", res["leftovers"]
    assert "# TIMEOUT 1 seconds" in (out / ARCH / "selftests.ktap").read_text()
    assert t.seconds < 120


# ------------------------------------------------------------------------------------------------ accelerator

def test_accel_kvm_where_kvm_is_broken_fails_fast(temps_before, tmp_path):
    """Here /dev/kvm exists but a KVM guest hangs. The remembered probe answer is dropped first (under the
    probe's lock), so the probe really runs and must give up at its hard timeout."""
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this host")
    memo = cache.cache_dir("probes") / f"kvm-{ARCH}.json"
    with cache.file_lock(cache.cache_dir("locks") / f"kvm-probe-{ARCH}.lock", "KVM probe"):
        memo.unlink(missing_ok=True)
    tag, out = f"kvm-{uuid.uuid4().hex[:8]}", tmp_path / "run"
    t = verify_cli(tag, out, "--accel", "kvm", "--selftests", "none", timeout=120)
    if t.ran.code == 0:
        pytest.skip("KVM works on this host: nothing broken to detect")
    check_ended_cleanly(t.ran.stderr, 2, t.ran.code, tag, out, temps_before,
                        "--accel kvm, but KVM is unusable for x86_64", "use --accel tcg")
    assert t.seconds < PROBE_TIMEOUT + 30, \
        f"the probe must give up at its {PROBE_TIMEOUT:.0f} s limit ({t.seconds:.0f}s)"
    data = json.loads(memo.read_text())                  # the answer is remembered for the next run
    assert data["ident"]["boot_id"] == boot_id() and data["problem"]
    assert data["problem"] in t.ran.stderr
    assert not (out / ARCH / "serial.log").exists()      # no boot was attempted under KVM


# ------------------------------------------------------------------------------------------------ interrupts

def interrupt_when(tag: str, out: Path, args: list[str], ready, what: str, limit: float = 600) -> tuple[int, str]:
    """Start `invoke verify ARGS`, wait until ``ready()`` says the run reached the phase, SIGINT the invoke
    process (as Ctrl-C would), and return its exit code and stderr."""
    cmd = [sys.executable, "-m", "invoke", "verify", "--arch", ARCH, *args, "--out", str(out)]
    # SIGINT restored to its default in the child: a runner started from a background job inherits it ignored
    p = subprocess.Popen(cmd, cwd=REPO_ROOT, env={**os.environ, TAG: tag}, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(p.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + limit
        while not ready():
            assert p.poll() is None, f"the run ended before {what}:\n{''.join(chunks)[-4000:]}"
            assert time.monotonic() < deadline, f"no {what} within {limit:.0f}s"
            time.sleep(0.05)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)
        print(f"\n[{tag}] SIGINT during {what}: exit {p.returncode} {time.monotonic() - t0:.1f}s after the signal")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(timeout=10)
    p.stdout.close()
    return p.returncode, "".join(chunks)


def kernel_entries() -> set[str]:
    d = cache.cache_root() / "kernels" / ARCH
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def test_interrupt_during_the_build_then_the_next_run_succeeds(temps_before, tree510, tmp_path):
    edit = edit_patch(tree510, tmp_path / "edit.patch", f"/* kpipe fault test {uuid.uuid4().hex} */")
    # one verifier case: the rerun's verdict is about the build, not the cases
    args = ["--series", str(series(tmp_path, SEED, edit)), "--selftests", "none", "--case", "move-anon-private"]
    tag, out = f"intr-build-{uuid.uuid4().hex[:8]}", tmp_path / "run"
    entries = kernel_entries()
    log = out / ARCH / "build.log"
    compiling = re.compile(r"^\s+CC\s+\S+\.o\s*$", re.M)
    code, err = interrupt_when(tag, out, args,
                               lambda: log.exists() and compiling.search(log.read_text(errors="replace")),
                               "the build (make compiling)")
    check_ended_cleanly(err, 2, code, tag, out, temps_before, "stopped by SIGINT", "run the same command again")
    assert "built 5.10" not in err and kernel_entries() == entries     # no kernel entry, whole or half
    # the same command again: builds the edit and passes
    again = verify_cli(tag, tmp_path / "again", *args)
    check_ended_cleanly(again.ran.stderr, 0, again.ran.code, tag, tmp_path / "again", temps_before)
    build = again.ran.result["arches"][ARCH]["build"]
    # the rerun compiles mm/mremap.o, unless the interrupted make had already finished it (then it only
    # relinks); a half-written object would have failed the rerun, which passed
    before = "mm/mremap.o" in re.findall(r"^\s+CC\s+(\S+\.o)\s*$", log.read_text(errors="replace"), re.M)
    assert build["cached"] is False and ("mm/mremap.o" in build["compiled"] or before), (before, build)
    entry = cache.cache_root() / "kernels" / ARCH / build["key"]
    assert cache.verify_entry(entry) is not None
    shutil.rmtree(entry)             # nobody else uses this entry (the nonce)


def test_interrupt_during_the_boot_then_the_next_run_succeeds(temps_before, tmp_path):
    tag, out = f"intr-boot-{uuid.uuid4().hex[:8]}", tmp_path / "run"
    args = ["--selftests", "none", "--accel", "tcg", *FAST_BOOT]
    serial = out / ARCH / "serial.log"
    code, err = interrupt_when(tag, out, args, serial.exists, "the boot (serial.log written)", limit=300)
    check_ended_cleanly(err, 2, code, tag, out, temps_before, "stopped by SIGINT")
    assert "run: start" not in err, "the run went on to the tests after the interrupt"
    again = verify_cli(tag, tmp_path / "again", *args)
    check_ended_cleanly(again.ran.stderr, 0, again.ran.code, tag, tmp_path / "again", temps_before)


# ------------------------------------------------------------------------------------------------ cache damage

def test_truncated_kernel_in_the_cache_is_detected_and_rebuilt(temps_before, tree510, tmp_path):
    """An entry only this test uses (a one-line edit with a fresh nonce): built, its image truncated on disk,
    then the next build says it is damaged, rebuilds it, and the rebuilt entry verifies."""
    edit = edit_patch(tree510, tmp_path / "edit.patch", f"/* kpipe cache damage test {uuid.uuid4().hex} */")
    args = ["--arch", ARCH, "--series", str(series(tmp_path, SEED, edit))]
    tag = f"damage-{uuid.uuid4().hex[:8]}"
    first = invoke("build", *args, out=tmp_path / "b1", env={TAG: tag})
    assert first.code == 0, first
    [made] = re.findall(r"cached as (\S+)", first.stderr)
    entry = Path(made)
    assert entry.parent == cache.cache_root() / "kernels" / ARCH and cache.verify_entry(entry) is not None
    img = next(p for p in entry.iterdir() if p.name in ("bzImage", "Image"))
    size = img.stat().st_size
    with open(img, "r+b") as f:
        f.truncate(size // 2)
    assert cache.verify_entry(entry) is None
    t0 = time.monotonic()
    again = invoke("build", *args, out=tmp_path / "b2", env={TAG: tag})
    print(f"\n[{tag}] rebuild of the damaged entry: exit {again.code} after {time.monotonic() - t0:.1f}s")
    check_ended_cleanly(again.stderr, 0, again.code, tag, tmp_path / "b2", temps_before,
                        f"cached kernel {entry} is damaged", "rebuilding it", f"cached as {entry}")
    # verifies again (its size may differ by a few bytes: a relink stamps a new build number and time)
    assert cache.verify_entry(entry) is not None and img.stat().st_size > size // 2
    shutil.rmtree(entry)             # nobody else uses this entry
