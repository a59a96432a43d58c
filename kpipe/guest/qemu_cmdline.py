"""The QEMU command line and the guest kernel's command line, from the Arch data only (a leaf: the KVM probe in
accel.py and the boot in qemu.py both build on it)."""
from __future__ import annotations

from pathlib import Path

from ..arches import Arch


def qemu_command(arch: Arch, kernel_image: Path, *, accel: str, append: str, initrd: Path | None = None,
                 ssh_port: int | None = None) -> list[str]:
    """The QEMU argv, from the Arch data only."""
    cmd = [arch.qemu_binary, "-nodefaults", "-machine", arch.qemu_machine, "-accel", accel]
    if arch.qemu_cpu:
        cmd += ["-cpu", arch.qemu_cpu]
    cmd += ["-m", str(arch.memory_mb), "-smp", str(arch.smp), "-kernel", str(kernel_image)]
    if initrd is not None:
        cmd += ["-initrd", str(initrd)]
    cmd += ["-append", append, "-display", "none", "-monitor", "none",
            "-chardev", "stdio,id=con0,mux=on,signal=off", "-serial", "chardev:con0", "-no-reboot"]
    if ssh_port is not None:
        cmd += ["-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                "-device", f"{arch.nic_device},netdev=n0"]
    else:
        cmd += ["-nic", "none"]
    return cmd + list(arch.qemu_extra)


# Arguments every guest kernel gets, whatever the arch. ``pty.legacy_count=0``: the kernel registers 256 BSD
# pty pairs at boot (CONFIG_LEGACY_PTYS, on in every kpipe config) that nothing here uses (the guest's sshd takes
# Unix98 ptys from /dev/pts); under TCG with KASAN and lockdep that initcall alone took 3.6-4.1 s of a 10-24 s boot
# (measured with initcall_debug on 5.10's debug kernels). A kernel without legacy ptys ignores it (a dotted
# parameter of a built-in that is absent is dropped silently).
COMMON_KERNEL_ARGS = ("panic=-1", "pty.legacy_count=0")


def kernel_cmdline(arch: Arch, extra: tuple[str, ...] = ()) -> str:
    return " ".join([f"console={arch.console}", *COMMON_KERNEL_ARGS, *arch.kernel_cmdline_extra, *extra])
