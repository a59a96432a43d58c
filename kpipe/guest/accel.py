"""Choosing the accelerator: KVM when it really works, else TCG, and always saying why.

On some hosts /dev/kvm exists but a KVM guest hangs at 100 % system time. So "auto" does not trust
/dev/kvm: it boots the kernel briefly under KVM and wants console output within PROBE_TIMEOUT seconds
(the probe QEMU is killed either way). The answer is remembered per host boot (boot_id), per arch and
QEMU binary, in the cache.
"""
from __future__ import annotations

import json
import os
import platform
import select
import shutil
import subprocess
import time
from pathlib import Path

from .. import cache, proc
from ..arches import Arch
from ..errors import InfraError, UsageError
from .qemu_cmdline import qemu_command

PROBE_TIMEOUT = 8.0
ACCELS = ("auto", "kvm", "tcg")
_KERNEL_SAYS = (b"Linux version", b"Booting Linux", b"] Linux")


def choose_accel(arch: Arch, requested: str, kernel_image: Path) -> tuple[str, str]:
    """(accel, reason) for --accel auto|kvm|tcg. ``--accel kvm`` where KVM does not work raises InfraError."""
    if requested not in ACCELS:
        raise UsageError(f"unknown accelerator {requested!r}", fix="use --accel auto, kvm or tcg")
    if requested == "tcg":
        return "tcg", "TCG (requested)"
    why_not, seconds = kvm_problem(arch, kernel_image)
    if why_not is None:
        return "kvm", f"KVM (probe booted in {seconds:.1f} s)"
    if requested == "kvm":
        raise InfraError(f"--accel kvm, but KVM is unusable for {arch.name}: {why_not}",
                         fix="use --accel tcg (or auto, which falls back to TCG and says so)")
    return "tcg", f"TCG (KVM unusable: {why_not})"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_problem(arch: Arch, kernel_image: Path) -> tuple[str | None, float]:
    """(None, probe seconds) when KVM works for ``arch`` here, else (reason, seconds)."""
    if not arch.native_on_host():
        return f"{arch.name} guest on a {platform.machine()} host", 0.0
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        return f"/dev/kvm: {e.strerror}", 0.0
    qemu = shutil.which(arch.qemu_binary)
    if not qemu:
        raise InfraError(f"{arch.qemu_binary} is not installed", fix="run `invoke setup`")
    st = os.stat(qemu)
    ident = {"boot_id": boot_id(), "qemu": qemu, "qemu_mtime": st.st_mtime_ns}
    memo = cache.cache_dir("probes") / f"kvm-{arch.name}.json"
    with cache.file_lock(cache.cache_dir("locks") / f"kvm-probe-{arch.name}.lock", "KVM probe"):
        try:
            data = json.loads(memo.read_text())
            if data["ident"] == ident:
                return data["problem"], data["seconds"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        problem, seconds = probe_kvm(arch, kernel_image)
        tmp = memo.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"ident": ident, "problem": problem, "seconds": round(seconds, 2)}))
        tmp.replace(memo)
        return problem, seconds


def probe_kvm(arch: Arch, kernel_image: Path, timeout: float = PROBE_TIMEOUT) -> tuple[str | None, float]:
    """Boot ``kernel_image`` under KVM until the kernel prints; always kill the probe within ``timeout``."""

    if not Path(kernel_image).is_file():
        raise UsageError(f"kernel image not found: {kernel_image}", fix="build the kernel first (invoke build)")
    cmd = qemu_command(arch, kernel_image, accel="kvm", append=f"console={arch.console} panic=-1")
    t0 = time.monotonic()
    p = proc.spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""
    try:
        assert p.stdout is not None     # stdout=PIPE
        fd = p.stdout.fileno()
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                return f"probe timed out after {timeout:.0f} s", time.monotonic() - t0
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:       # QEMU exited before the kernel said anything
                p.wait(timeout=2)
                first = seen.decode(errors="replace").strip().splitlines()[:2]
                return (f"probe QEMU exited with {p.returncode}: {' / '.join(first) or 'no output'}",
                        time.monotonic() - t0)
            seen = (seen + chunk)[-8192:]
            if any(s in seen for s in _KERNEL_SAYS):
                return None, time.monotonic() - t0
    finally:
        proc.kill_group(p, grace=1.0)
        if p.stdout:
            p.stdout.close()
