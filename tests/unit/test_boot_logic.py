"""The boot's pure logic, no boot: the QEMU command line from the arch data, the boot timeout, the SSH port
leases, the guest command's quoting and timeout wrapper. Real boots: tests/e2e/test_boot.py."""
from __future__ import annotations
from pathlib import Path
from kpipe.arches import get_arch

ARCHES = ["x86_64", "arm64"]


# ---------------------------------------------------------------- pure logic (no boot)


def test_qemu_command_comes_from_arch_data_only():
    import dataclasses

    from kpipe.guest.qemu import kernel_cmdline, qemu_command

    for name in ARCHES:
        a = get_arch(name)
        cmd = qemu_command(a, Path("/k"), accel="tcg", append=kernel_cmdline(a, ("x=1",)),
                           initrd=Path("/i"), ssh_port=40000)
        assert cmd[0] == a.qemu_binary
        assert cmd[cmd.index("-machine") + 1] == a.qemu_machine and cmd[cmd.index("-accel") + 1] == "tcg"
        assert cmd[cmd.index("-m") + 1] == str(a.memory_mb) and cmd[cmd.index("-smp") + 1] == str(a.smp)
        assert cmd[cmd.index("-append") + 1] == " ".join([f"console={a.console}", "panic=-1",
                                                          "pty.legacy_count=0", *a.kernel_cmdline_extra,
                                                          "x=1"])
        assert {"-no-reboot", "-nodefaults"} <= set(cmd)
        # the console: a muxed stdio chardev (its input is kpipe's pipe: Ctrl-A b = serial BREAK for SysRq)
        assert cmd[cmd.index("-serial") + 1] == "chardev:con0" and cmd[cmd.index("-monitor") + 1] == "none"
        assert cmd[cmd.index("-chardev") + 1] == "stdio,id=con0,mux=on,signal=off"
        # the guest reaches nothing but its forwarded SSH port
        assert "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40000-:22" in cmd
        assert f"{a.nic_device},netdev=n0" in cmd
    # a new arch is data: no code path branches on the name
    riscv = dataclasses.replace(get_arch("arm64"), name="riscv64", qemu_binary="qemu-system-riscv64",
                                qemu_cpu=None, console="ttyS0", qemu_extra=("-bios", "default"))
    cmd = qemu_command(riscv, Path("/k"), accel="tcg", append="a")
    assert cmd[0] == "qemu-system-riscv64" and "-cpu" not in cmd and cmd[-2:] == ["-bios", "default"]
    assert cmd[cmd.index("-nic") + 1] == "none"


def test_boot_timeout_scales_for_tcg_and_is_overridable():
    from kpipe.guest.qemu import BOOT_TIMEOUT, boot_timeout

    x86 = get_arch("x86_64")
    assert boot_timeout(x86, "kvm") == BOOT_TIMEOUT
    assert boot_timeout(x86, "tcg") >= BOOT_TIMEOUT * x86.tcg_boot_factor
    assert boot_timeout(x86, "tcg", 7) == 7.0


def test_port_leases_are_exclusive_and_released():
    from kpipe.guest.qemu import PortLease

    leases = [PortLease() for _ in range(20)]
    ports = [lease.port for lease in leases]
    assert len(set(ports)) == 20
    for lease in leases:
        lease.release()


def test_guest_command_quoting_and_timeout_wrapper():
    from kpipe.guest.ssh import command_line, wrap_timeout

    assert command_line(["printf", "%s", "a b", "c'd", "$HOME"]) == "printf %s 'a b' 'c'\"'\"'d' '$HOME'"
    assert command_line("echo $HOME") == "echo $HOME"
    assert command_line(["ls"], cwd="/tmp/a b") == "cd '/tmp/a b' && ls"
    assert wrap_timeout("sleep 5", 2.2) == "timeout -s KILL 3 sh -c 'sleep 5'; exit $?"
