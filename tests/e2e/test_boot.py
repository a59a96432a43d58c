"""End to end: real QEMU (TCG here), real dropbear, real paramiko, both arches, the 5.10 kernels. The pure logic
of the boot (QEMU command line, timeouts, port leases, command quoting): tests/unit/test_boot_logic.py.

Where the session's mechanics cannot depend on the kernel's config, x86_64 boots the fast profile's kernel
(tinyconfig, up in ~4 s under TCG) and arm64 the debug one (~15-25 s), so both kernels go through them; what
needs SysRq (the fast kernel has none) boots the debug kernel on both arches."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from conftest import _qemu_children
from kpipe.guest.accel import choose_accel
from kpipe.arches import get_arch
from kpipe.errors import InfraError, KernelError
from kpipe.guest.ssh import GuestSession
from kpipe.guest.image import build_image, make_host_key
from kpipe.guest.qemu import boot

from test_boot_logic import ARCHES  # noqa: F401  (shared with the fast tier)

e2e = pytest.mark.e2e


@pytest.fixture(scope="module")
def images():
    return {a: build_image(get_arch(a)) for a in ARCHES}


def _kernel(kernels, arch):
    if arch not in kernels:
        pytest.skip(f"no {arch} kernel")
    return kernels[arch]


@pytest.fixture()
def quick_kernels(request, kernels):
    """x86_64: the fast profile's kernel; arm64: the debug one (see the module's docstring)."""
    return {"arm64": kernels["arm64"], "x86_64": request.getfixturevalue("fast_kernel_x86")}


def _secrets_gone(run_dir: Path) -> None:
    for name in ("overlay.cpio.gz", "initrd-run.cpio", "ssh_client_key"):
        assert not (run_dir / name).exists(), f"{name} left in the run folder"


@e2e
@pytest.mark.parametrize("arch", ARCHES)
def test_boot_ssh_push_and_exit_status(quick_kernels, images, arch, tmp_path):
    """One boot per arch for the session's contract: push, run, exit status, output, timeouts, fetch; a wrong
    pinned host key refused at once; the guest reaches nothing on the host but its forwarded SSH port."""
    k = _kernel(quick_kernels, arch)
    script = tmp_path / "exit3.sh"
    script.write_text("#!/bin/sh\necho \"args: $*\"\necho oops >&2\nexit 3\n")
    t0 = time.monotonic()
    with HostListener() as host, boot(get_arch(arch), k.image, images[arch], tmp_path / "run") as g:
        print(f"\n{arch}: accel {g.accel_reason}; boot-to-marker {g.boot_seconds:.2f}s, "
              f"boot-to-SSH {g.ssh_seconds:.2f}s, port {g.port}")
        assert g.accel in ("tcg", "kvm") and g.accel_reason
        g.session.put(script, "/tmp/exit3.sh")
        res = g.session.run(["/tmp/exit3.sh", "a b", "c'd"], timeout=20)
        assert res.exit_status == 3 and not res.timed_out
        assert res.stdout == "args: a b c'd\n" and res.stderr == "oops\n"
        assert g.session.run("uname -r", timeout=20).stdout.strip() == k.release
        assert g.session.run(["uname", "-m"], timeout=20).stdout.strip() == {"x86_64": "x86_64",
                                                                             "arm64": "aarch64"}[arch]
        assert g.session.run(["pwd"], timeout=20, cwd="/tmp").stdout.strip() == "/tmp"
        killed = g.session.run(["sh", "-c", "kill -SEGV $$"], timeout=20)
        assert killed.exit_status == 139 and not killed.timed_out
        slow = g.session.run(["sleep", "60"], timeout=2)
        assert slow.timed_out and slow.seconds < 10
        g.session.get("/proc/version", tmp_path / "version")
        assert k.release in (tmp_path / "version").read_text()
        # the boot-speed argument took: the kernel registered no BSD pty pair, sshd's Unix98 ptys still work
        assert "pty.legacy_count=0" in g.session.run("cat /proc/cmdline", timeout=20).stdout
        assert g.session.run("test -e /dev/ptyp0", timeout=20).exit_status == 1
        assert g.session.run("test -c /dev/pts/ptmx", timeout=20).exit_status == 0
        assert_wrong_pinned_host_key_is_refused(g, tmp_path)
        assert_guest_reaches_nothing_but_its_ssh_port(g, host)
        assert [f for f in g.findings() if f.kind == "panic"] == []
    print(f"{arch}: whole boot+tests+shutdown {time.monotonic() - t0:.1f}s")
    serial = (tmp_path / "run/serial.log").read_text()
    assert "KPIPE-GUEST-READY" in serial and "Linux version" in serial
    assert (tmp_path / "run/dmesg.log").read_text().strip(), "dmesg collected at the end"
    assert g.vm.p.returncode is not None
    _secrets_gone(tmp_path / "run")


@e2e
@pytest.mark.parametrize("arch", ARCHES)
def test_panic_ends_the_run_at_once(quick_kernels, images, arch, tmp_path):
    k = _kernel(quick_kernels, arch)
    # panic=0 (last one wins): the kernel hangs after the panic and QEMU stays up; only the console
    # watcher can end this run before the 300 s timeout.
    extra = ("panic=0", "rdinit=/nonexistent", "init=/nonexistent")
    t0 = time.monotonic()
    with pytest.raises(KernelError) as ei:
        with boot(get_arch(arch), k.image, images[arch], tmp_path / "run", timeout=300, cmdline_extra=extra):
            pytest.fail("a kernel that cannot start init must not reach SSH")
    took = time.monotonic() - t0
    e = ei.value
    print(f"\n{arch}: panic detected, run ended after {took:.1f}s: {e.message}")
    assert e.exit_code == 1
    assert took < 45, f"the panic must end the run at once, not at the timeout (took {took:.0f}s)"
    assert any("Kernel panic - not syncing" in ln for ln in e.detail)
    assert "Kernel panic" in (tmp_path / "run/serial.log").read_text()
    _secrets_gone(tmp_path / "run")


@e2e
@pytest.mark.parametrize("arch", ARCHES)
def test_image_without_sshd_is_an_infra_error_with_console_tail(quick_kernels, arch, tmp_path):
    k = _kernel(quick_kernels, arch)
    no_sshd = build_image(get_arch(arch), overrides={"start_sshd": False})
    t0 = time.monotonic()
    with pytest.raises(InfraError) as ei:
        with boot(get_arch(arch), k.image, no_sshd, tmp_path / "run", timeout=300):
            pytest.fail("no sshd, no session")
    took = time.monotonic() - t0
    e = ei.value
    assert e.exit_code == 2 and not isinstance(e, KernelError)
    # the init says it cannot become ready: the run ends then, not at the (long) timeout
    assert "cannot become ready (sshd not started" in e.message and "ready marker" in e.message
    assert "last console lines:" in e.detail
    tail = e.detail[e.detail.index("last console lines:") + 1:]
    assert 0 < len(tail) <= 30
    assert any("sshd not started" in ln for ln in tail)
    assert took < 120, f"the init's word must end the wait, not the 300 s timeout (took {took:.0f}s)"
    _secrets_gone(tmp_path / "run")


@e2e
def test_two_boots_at_once_use_different_ports(quick_kernels, images, tmp_path):
    k = _kernel(quick_kernels, "x86_64")
    arch = get_arch("x86_64")
    barrier = threading.Barrier(2, timeout=120)
    out: dict[int, object] = {}

    def one(i: int) -> None:
        try:
            with boot(arch, k.image, images["x86_64"], tmp_path / f"run{i}") as g:
                barrier.wait()              # both guests are up at the same time
                res = g.session.run(["sh", "-c", f"echo {i}; exit {10 + i}"], timeout=30)
                out[i] = (g.port, res.exit_status, res.stdout.strip())
                barrier.wait()
        except BaseException as e:          # noqa: BLE001 - reported below
            barrier.abort()
            out[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for i in (1, 2):
        assert not isinstance(out.get(i), BaseException), f"boot {i}: {out.get(i)!r}"
    (p1, s1, o1), (p2, s2, o2) = out[1], out[2]
    assert p1 != p2
    assert (s1, o1, s2, o2) == (11, "1", 12, "2")


@e2e
def test_exception_and_ctrl_c_inside_the_session_stop_qemu(kernels, images, tmp_path):
    k = _kernel(kernels, "arm64")
    for exc, n in ((RuntimeError("boom"), 1), (KeyboardInterrupt(), 2)):
        with pytest.raises(type(exc)):
            with boot(get_arch("arm64"), k.image, images["arm64"], tmp_path / f"run{n}") as g:
                vm = g.vm
                raise exc
        assert vm.p.returncode is not None
        assert _qemu_children() == []
        _secrets_gone(tmp_path / f"run{n}")


@e2e
def test_accel_choice_never_hangs(kernels):
    x86 = get_arch("x86_64")
    arm = get_arch("arm64")
    image = _kernel(kernels, "x86_64").image
    t0 = time.monotonic()
    accel, reason = choose_accel(x86, "auto", image)
    print(f"\nKVM auto on x86_64: {accel}: {reason} ({time.monotonic() - t0:.2f}s)")
    assert time.monotonic() - t0 < 15
    assert (accel == "kvm") == reason.startswith("KVM")
    if accel == "tcg":
        assert reason.startswith("TCG (KVM unusable: ")
        t0 = time.monotonic()
        with pytest.raises(InfraError, match="--accel kvm") as ei:
            choose_accel(x86, "kvm", image)
        assert ei.value.exit_code == 2 and time.monotonic() - t0 < 15
    assert choose_accel(x86, "tcg", image) == ("tcg", "TCG (requested)")
    assert choose_accel(arm, "auto", image)[1] == "TCG (KVM unusable: arm64 guest on a x86_64 host)" or \
        arm.native_on_host()


@e2e
@pytest.mark.parametrize("arch", ARCHES)
def test_kernel_death_during_the_session_is_a_kernel_verdict(kernels, images, arch, tmp_path):
    """The guest's init exits (SIGUSR1 hook in init.j2) -> "Attempted to kill init!" panic -> the SSH
    command fails, and boot() reports the panic (exit 1), not an SSH error (exit 2)."""
    k = _kernel(kernels, arch)
    t0 = time.monotonic()
    with pytest.raises(KernelError) as ei:
        with boot(get_arch(arch), k.image, images[arch], tmp_path / "run") as g:
            t0 = time.monotonic()
            g.session.run(["sh", "-c", "kill -USR1 1; sleep 30"], timeout=60)
    assert time.monotonic() - t0 < 20
    assert "Attempted to kill init" in ei.value.message
    assert ei.value.exit_code == 1


@e2e
def test_port_taken_by_another_program_is_retried(kernels, images, tmp_path, monkeypatch):
    """A port another program grabbed between our choice and QEMU's bind: QEMU fails, kpipe retries."""
    import socket

    import kpipe.guest.qemu as q

    k = _kernel(kernels, "arm64")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    taken = squatter.getsockname()[1]
    real = q.PortLease
    made = []

    class FirstLeaseIsTaken(real):
        def __init__(self):
            super().__init__()
            if not made:
                self.port = taken
            made.append(self.port)

    monkeypatch.setattr(q, "PortLease", FirstLeaseIsTaken)
    try:
        with boot(get_arch("arm64"), k.image, images["arm64"], tmp_path / "run") as g:
            assert g.port != taken
            assert g.session.run(["true"], timeout=20).exit_status == 0
    finally:
        squatter.close()
    assert made[0] == taken and len(made) == 2
    assert "host forwarding" in (tmp_path / "run/qemu.log").read_text()


# ------------------------------------------------------------------------------------------------ isolation

class HostListener:
    """A TCP listener on the host's 127.0.0.1 that records every connection it accepts."""

    def __enter__(self) -> "HostListener":
        import socket
        self.accepted: list[str] = []
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.srv.settimeout(0.5)
        self.port = self.srv.getsockname()[1]
        self.stop = threading.Event()

        def accept():
            while not self.stop.is_set():
                try:
                    c, addr = self.srv.accept()
                    self.accepted.append(str(addr))
                    c.sendall(b"HOST-SERVICE\n")
                    c.close()
                except OSError:
                    pass
        self.t = threading.Thread(target=accept, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.t.join(timeout=5)
        self.srv.close()


def assert_guest_reaches_nothing_but_its_ssh_port(g, host: HostListener) -> None:
    """restrict=on: a TCP listener on the host's 127.0.0.1 (10.0.2.2 is the host's alias in QEMU's user
    network) is unreachable from the guest, while SSH in still works. Control: the same busybox nc reaches
    the guest's own sshd, so a failure to connect is the network's doing, not nc's."""
    own = g.session.run(["sh", "-c", "nc -w 3 10.0.2.15 22 </dev/null | head -c 20"], timeout=20)
    assert own.exit_status == 0 and own.stdout.startswith("SSH-2.0"), own
    for addr in ("10.0.2.2", "127.0.0.1"):
        r = g.session.run(["sh", "-c", f"nc -w 3 {addr} {host.port} </dev/null; echo rc=$?"], timeout=20)
        assert "HOST-SERVICE" not in r.stdout and "rc=0" not in r.stdout, (addr, r)
    # SSH still answers after the attempts
    assert g.session.run(["true"], timeout=20).exit_status == 0
    assert host.accepted == [], f"the guest reached the host's 127.0.0.1:{host.port}"


def assert_wrong_pinned_host_key_is_refused(g, tmp_path: Path) -> None:
    _, wrong = make_host_key(tmp_path)
    bad = GuestSession("127.0.0.1", g.port, g.session.key_path, wrong)
    t0 = time.monotonic()
    with pytest.raises(InfraError, match="host key mismatch") as ei:
        bad.connect(deadline=time.monotonic() + 60)
    assert time.monotonic() - t0 < 20, "a mismatch is refused at once, not retried until the deadline"
    assert wrong[1][:20] not in ei.value.message      # fingerprints only, never key material
    assert g.session.run(["true"], timeout=20).exit_status == 0


# ------------------------------------------------------------------------------------------------ SysRq


@e2e
@pytest.mark.parametrize("arch", ARCHES)
def test_sysrq_reaches_the_kernel_by_ssh_and_by_serial_break(kernels, images, arch, tmp_path):
    """The two ways kpipe asks a wedged kernel what it is doing: /proc/sysrq-trigger over a fresh SSH
    connection, and, once SSH no longer answers (sshd killed here), a serial BREAK + key on the console."""
    k = _kernel(kernels, arch)

    def seen(vm, text, since, limit=10.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if sum(text in ln for ln in vm.tail_lines(400)) > since:
                return time.monotonic()
            time.sleep(0.05)
        return None

    with boot(get_arch(arch), k.image, images[arch], tmp_path / "run") as g:
        header = "sysrq: Show Blocked State"
        t0 = time.monotonic()
        assert g.session.sysrq("w") is None
        t_ssh = seen(g.vm, header, 0)
        assert t_ssh is not None, g.vm.tail_lines()
        g.session.start(["sh", "-c", "sleep 1; killall dropbear"])      # no SSH from now on
        time.sleep(3)
        t1 = time.monotonic()
        why = g.session.sysrq("w", timeout=5)
        assert why is not None, "SSH still answered after sshd was killed"
        assert time.monotonic() - t1 < 20
        t2 = time.monotonic()
        assert g.vm.send_sysrq("w")
        t_serial = seen(g.vm, header, 1)
        assert t_serial is not None, g.vm.tail_lines()
        print(f"\n{arch}: SysRq w by SSH seen in {t_ssh - t0:.2f}s; SSH dead -> probe gave up in {t2 - t1:.1f}s "
              f"({why}); by serial BREAK seen in {t_serial - t2:.2f}s")
