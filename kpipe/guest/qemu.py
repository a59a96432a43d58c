"""Booting a kernel in QEMU: the command line from the Arch data, a forwarded SSH port that no other run
uses, a console watcher, and a lifecycle that always stops QEMU.

The console (the guest's serial port on QEMU's stdio) is read by one thread: every line goes to
``serial.log`` and to a findings scanner at once. The ready marker ends the wait; a panic ends the run at
once with KernelError (exit 1); no marker in time and no panic is InfraError (exit 2) with the console tail.

The guest is isolated: user networking with ``restrict=on`` (no route out of the guest, not even to the
host's 127.0.0.1 through 10.0.2.2), only the SSH port is forwarded in. The serial port sits on a muxed stdio
chardev whose input is a pipe kpipe holds: writing Ctrl-A b sends a serial BREAK, and the next key is a
magic SysRq command to the kernel (MAGIC_SYSRQ_SERIAL, on both the 8250 and the PL011): that is how a
wedged guest whose SSH no longer answers is asked what it is doing.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .. import cache, proc
from .accel import choose_accel
from .qemu_cmdline import kernel_cmdline, qemu_command  # noqa: F401  (the command line lives in a leaf)
from ..arches import Arch
from ..errors import EarlyKernelError, InfraError, KernelError
from .findings import BLOCKED_KINDS, ENDS_BOOT_KINDS, FATAL_KINDS, STUCK_KINDS, Scanner, describe, scan_text, summarize
from .ssh import GuestSession
from .image import Initrd, join_archives, make_overlay
from ..report.results import Finding

BOOT_TIMEOUT = 60.0          # seconds to the ready marker under KVM; TCG multiplies by arch.tcg_boot_factor
TCG_MIN_FACTOR = 1.5         # TCG is never given less than this many times the KVM budget
PANIC_GRACE = 2.0            # after the panic line: how long to collect the rest of the report
FATAL_GRACE = 10.0           # after an Oops/BUG with no panic following: when the tests are abandoned
REPORT_GRACE = 5.0           # before the guest is ready, after an Oops/BUG/GPF: collect its report, then judge
STUCK_GRACE = 25.0           # before ready, after a lockup/stall/hung-task report: the guest may still get ready
                             #   (a vCPU the host starved); if not by then, the report is the verdict
SERIAL_BREAK = b"\x01b"      # the stdio mux's escape for a serial BREAK (QEMU: Ctrl-A b)
SYSRQ_KEY_DELAY = 0.3        # between the BREAK and the SysRq key (the kernel waits up to 5 s for it)
TAIL_LINES = 30
BOOT_SYSRQ_KEYS = "wl"       # a guest that did not get ready: show blocked tasks, then every CPU's backtrace
PORT_ATTEMPTS = 4


def boot_timeout(arch: Arch, accel: str, requested: float | None = None) -> float:
    if requested is not None:
        return float(requested)
    if accel == "tcg":
        return BOOT_TIMEOUT * max(arch.tcg_boot_factor, TCG_MIN_FACTOR)
    return BOOT_TIMEOUT


# ---------------------------------------------------------------- ports

class PortLease:
    """A 127.0.0.1 TCP port that no other kpipe run holds (an flock per port in the cache)."""

    def __init__(self) -> None:
        self.port = 0
        self._fd: int | None = None
        self._path: Path | None = None
        locks = cache.cache_dir("ports")
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            path = locks / f"{port}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.port, self._fd, self._path = port, fd, path
            return
        raise InfraError("could not find a free local TCP port for SSH forwarding",
                         fix="too many runs at once? stop some and try again")

    def release(self) -> None:
        """Let the port go. The lock file stays: unlinked while held, a run that has it open would lock the
        unlinked inode while another locks a new file of that name, and both would use the port."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _PortTaken(Exception):
    pass


# ---------------------------------------------------------------- the VM and its console

class VM:
    """One QEMU process and its console watcher. Use ``stop()`` (idempotent) to end it."""

    def __init__(self, arch: Arch, cmd: list[str], run_dir: Path, serial_log: Path, marker: str,
                 port: int | None, not_ready: str = ""):
        self.arch, self.cmd, self.run_dir, self.serial_log, self.marker = arch, cmd, run_dir, serial_log, marker
        self.not_ready = not_ready              # the init's "cannot become ready: <reason>" line
        self.not_ready_line: str | None = None
        self.port = port
        self.qemu_log = run_dir / "qemu.log"
        self.scanner = Scanner("console")
        self.tail: collections.deque[str] = collections.deque(maxlen=400)
        self.started = time.monotonic()
        self.ready_at: float | None = None
        self.panic_at: float | None = None
        self.panic_before: list[str] = []
        self.fatal_at: float | None = None      # the first Oops/BUG/GPF/panic/lockup/hung-task line
        self.fatal_line = ""                    #   (host monotonic): a verdict is due
        self.blocked_at: float | None = None    # the first task in D state listed by SysRq-w
        self.last_line_at = self.started
        self.eof = threading.Event()
        self.panic_done = threading.Event()     # the panic report's last line was seen
        self._cond = threading.Condition()
        with open(self.qemu_log, "a") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
        self._qemu_err = open(self.qemu_log, "ab")
        self._serial = open(serial_log, "a", buffering=1, errors="replace")
        try:
            self.p = proc.spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._qemu_err)
        except OSError as e:
            self._qemu_err.close()
            self._serial.close()
            raise InfraError(f"cannot start {cmd[0]}: {e.strerror}",
                             fix="install QEMU for this arch (run `invoke setup`)") from None
        self._reader = threading.Thread(target=self._read, name=f"console-{arch.name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            assert self.p.stdout is not None    # stdout=PIPE
            for raw in iter(self.p.stdout.readline, b""):
                line = raw.decode(errors="replace").rstrip("\r\n").replace("\r", "")
                self._serial.write(line + "\n")
                kind = self.scanner.feed(line)
                with self._cond:
                    self.tail.append(line)
                    self.last_line_at = time.monotonic()
                    if kind in FATAL_KINDS | STUCK_KINDS and self.fatal_at is None:
                        self.fatal_at, self.fatal_line = self.last_line_at, line
                    if kind in BLOCKED_KINDS and self.blocked_at is None:
                        self.blocked_at = self.last_line_at
                    if kind == "panic" and self.panic_at is None:
                        self.panic_at = time.monotonic()
                        self.panic_before = list(self.tail)[-12:-1]
                    if self.panic_at is not None and "---[ end Kernel panic" in line:
                        self.panic_done.set()
                    if self.not_ready and self.not_ready in line and self.not_ready_line is None:
                        self.not_ready_line = line
                    elif self.ready_at is None and self.marker and self.marker in line:
                        self.ready_at = time.monotonic()
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            self.scanner.close()
            with self._cond:
                self.eof.set()
                self._cond.notify_all()

    # -- state
    def findings(self) -> list[Finding]:
        return self.scanner.findings

    def tail_lines(self, n: int = TAIL_LINES) -> list[str]:
        with self._cond:
            return list(self.tail)[-n:]

    def running(self) -> bool:
        return self.p.poll() is None

    def panic_error(self) -> KernelError:
        panic = next((f for f in self.findings() if f.kind == "panic"), None)
        lines = self.panic_before + ([panic.line, *panic.context] if panic else [])
        e = KernelError(f"kernel panic on {self.arch.name}: "
                        f"{panic.line.split('not syncing:', 1)[-1].strip() if panic else '?'}",
                        detail=lines, log=str(self.serial_log),
                        fix="the kernel (or its command line) is broken: read the panic report above")
        e.findings = self.findings()
        return e

    def _qemu_errors(self) -> list[str]:
        self._qemu_err.flush()
        return [ln for ln in proc.tail_lines(self.qemu_log, 10) if not ln.startswith("$ ")]

    def early_verdict(self, error: InfraError | None = None) -> EarlyKernelError | None:
        """The kernel reported something before the guest was ready: that is the verdict (exit 1), whatever else
        went wrong (no ready marker, sshd never listened, SSH failed, QEMU exited). None when it reported nothing.
        ``error`` is what would otherwise be said (an infrastructure error): it stays in the detail."""
        seen = self.findings()
        if not seen:
            return None
        first = next((f for f in seen if f.kind in ENDS_BOOT_KINDS), seen[0])
        kinds = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in summarize(seen).items())
        when = f"{self.fatal_at - self.started:.0f} s after QEMU started" if self.fatal_at else "during boot"
        e = EarlyKernelError(
            f"{self.arch.name} kernel misbehaved before the guest was ready ({when}): {kinds}; first "
            f"report: {describe(first)}",
            detail=[*first.context[:20], *([f"then: {error.message}"] if error else [])], log=str(self.serial_log),
            fix="the kernel (or the series) is broken: read the report above and serial.log",
            first_report=first.line,
            after_report_s=round(time.monotonic() - self.fatal_at, 2) if self.fatal_at is not None else None)
        e.findings = seen
        return e

    def _ends_boot_now(self) -> bool:
        """A report after which the guest cannot be expected to get ready, and its grace is over."""
        if self.fatal_at is None:
            return False
        kinds = {f.kind for f in self.findings()}
        grace = REPORT_GRACE if kinds & FATAL_KINDS else STUCK_GRACE
        return time.monotonic() - self.fatal_at >= grace

    def wait_ready(self, deadline: float) -> float:
        """Block until the ready marker (returns seconds since start); raise on panic, exit or timeout. Any kernel
        report before the marker makes the error a KernelError (exit 1) carrying the findings; a report that says
        the kernel stopped (Oops, BUG, GPF, lockup, stall, hung task) ends the wait after a short grace."""
        try:
            return self._wait_ready(deadline)
        except _PortTaken:
            raise
        except InfraError as e:
            with self._cond:
                self._cond.wait_for(self.eof.is_set, timeout=0.5)   # the lines just printed
            if not self.findings() and self.running() and self.not_ready_line is None:
                # a silent guest (its init did not say why it cannot get ready): ask the kernel what its tasks
                # and CPUs are doing before calling it nothing
                # (a task in D state before sshd listens shows up here before the hung-task detector fires)
                asked = self.send_sysrq(BOOT_SYSRQ_KEYS)
                self.wait_console_quiet(2.0, 10.0)
                e.detail = [*e.detail, f"asked the kernel with SysRq {BOOT_SYSRQ_KEYS!r} over the serial console"
                            + ("" if asked else " (could not send it)") + ": "
                            + ("it reported nothing" if not self.findings() else "it reported the above")]
            verdict = self.early_verdict(e)
            if verdict is not None:
                raise verdict from None
            raise
        except KernelError as e:
            e.findings = e.findings or self.findings()
            raise

    def _wait_ready(self, deadline: float) -> float:
        with self._cond:
            while True:
                if self.panic_at is not None:
                    self._cond.wait_for(lambda: self.eof.is_set() or self.panic_done.is_set(),
                                        timeout=max(0.0, self.panic_at + PANIC_GRACE - time.monotonic()))
                    raise self.panic_error()
                if self.ready_at is not None:
                    return self.ready_at - self.started
                if self._ends_boot_now():
                    verdict = self.early_verdict()
                    assert verdict is not None          # fatal_at is set only with a finding
                    raise verdict
                if self.not_ready_line is not None:
                    reason = self.not_ready_line.split(self.not_ready, 1)[1].lstrip(": ").strip()
                    raise InfraError(
                        f"{self.arch.name} guest cannot become ready ({reason}): its init said so after "
                        f"{time.monotonic() - self.started:.0f} s, no ready marker {self.marker!r}",
                        detail=["last console lines:", *self.tail_lines()], log=str(self.serial_log),
                        fix="read serial.log; the guest image (vm_images/) did not start its SSH server")
                if self.eof.is_set():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise InfraError(
                        f"{self.arch.name} guest did not reach the ready marker {self.marker!r} within "
                        f"{time.monotonic() - self.started:.0f} s (no kernel panic seen)",
                        detail=["last console lines:", *self.tail_lines()], log=str(self.serial_log),
                        fix="read serial.log; raise the boot timeout (--boot-timeout) if the machine is slow")
                self._cond.wait(timeout=min(left, 0.5))
        # QEMU exited before the marker
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        errs = self._qemu_errors()
        if any("host forwarding" in e for e in errs):
            raise _PortTaken(errs)
        raise InfraError(f"QEMU ({self.arch.qemu_binary}) exited with {self.p.returncode} before the guest was "
                         f"ready", detail=[*errs, "last console lines:", *self.tail_lines()],
                         log=str(self.qemu_log), fix="read qemu.log and serial.log in the run folder")

    @property
    def panicked(self) -> bool:
        return self.panic_at is not None

    def settle(self, timeout: float = 3.0) -> None:
        """When QEMU has exited (or the kernel panicked), let the console reader take in the last lines."""
        if not self.running() or self.panic_at is not None:
            self.eof.wait(timeout)

    def abandon_reason(self) -> str | None:
        """Why the tests should stop now: a fatal report (Oops, kernel BUG, GPF) with no panic ending the
        kernel, or a hang report (hung task, soft lockup, RCU stall), more than FATAL_GRACE ago (the faulting
        task died holding its locks, or is stuck: later tests would only wait out their timeouts), or a task
        in D state listed by SysRq-w (asked after a timeout: the verdict is known)."""
        now = time.monotonic()
        if self.fatal_at is not None and now - self.fatal_at > FATAL_GRACE:
            return f"the kernel reported {self.fatal_line.strip()!r} {now - self.fatal_at:.0f} s ago"
        if self.blocked_at is not None:
            return "SysRq-w lists a task blocked in D state"
        return None

    def send_sysrq(self, keys: str) -> bool:
        """Magic SysRq over the serial console: a BREAK then each key (needs MAGIC_SYSRQ_SERIAL)."""
        if not self.running() or self.p.stdin is None:
            return False
        try:
            for key in keys:
                self.p.stdin.write(SERIAL_BREAK)
                self.p.stdin.flush()
                time.sleep(SYSRQ_KEY_DELAY)
                self.p.stdin.write(key.encode())
                self.p.stdin.flush()
                time.sleep(SYSRQ_KEY_DELAY)
        except (OSError, ValueError):
            return False
        return True

    def wait_console_quiet(self, quiet: float, limit: float) -> float:
        """Keep reading the console until no line came for ``quiet`` seconds (or ``limit`` passed, or QEMU
        exited); returns the seconds waited."""
        t0 = time.monotonic()
        with self._cond:
            while not self.eof.is_set():
                now = time.monotonic()
                if now - t0 >= limit or (now - self.last_line_at >= quiet and now - t0 >= quiet):
                    break
                self._cond.wait(timeout=0.2)
        return time.monotonic() - t0

    def wait_exit(self, timeout: float) -> bool:
        try:
            self.p.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, grace: float = 2.0) -> None:
        proc.kill_group(self.p, grace=grace)
        self._reader.join(timeout=5)
        for fh in (self.p.stdin, self.p.stdout, self._serial, self._qemu_err):
            with contextlib.suppress(OSError, ValueError):
                if fh is not None:              # stdin and stdout are PIPEs: never None
                    fh.close()


@contextlib.contextmanager
def boot_vm(arch: Arch, kernel_image: Path, initrd_path: Path, run_dir: Path, *, accel: str, marker: str,
            deadline: float, not_ready: str = "", cmdline_extra: tuple[str, ...] = (),
            serial_log_name: str = "serial.log",
            with_ssh: bool = True) -> Iterator[VM]:
    """Start QEMU (retrying on a port another program took meanwhile), wait for the marker, yield the VM;
    QEMU is stopped on the way out, whatever happens."""
    run_dir.mkdir(parents=True, exist_ok=True)
    serial_log = run_dir / serial_log_name
    append = kernel_cmdline(arch, cmdline_extra)
    for attempt in range(1, PORT_ATTEMPTS + 1):
        lease = PortLease() if with_ssh else None
        vm = None
        try:
            cmd = qemu_command(arch, kernel_image, accel=accel, append=append, initrd=initrd_path,
                               ssh_port=lease.port if lease else None)
            vm = VM(arch, cmd, run_dir, serial_log, marker, lease.port if lease else None, not_ready)
            try:
                vm.wait_ready(deadline)
            except _PortTaken:
                if attempt == PORT_ATTEMPTS:
                    raise InfraError(f"QEMU could not bind a local SSH port in {PORT_ATTEMPTS} attempts",
                                     log=str(vm.qemu_log), fix="too many runs at once? try again") from None
                continue
            yield vm
            return
        finally:
            if vm is not None:
                vm.stop()
            if lease is not None:
                lease.release()


# ---------------------------------------------------------------- boot + SSH

@dataclass
class Guest:
    """A booted guest with a connected SSH session."""
    arch: Arch
    vm: VM
    session: "GuestSession"
    accel: str
    accel_reason: str
    boot_seconds: float          # QEMU start -> ready marker
    ssh_seconds: float           # QEMU start -> SSH session up
    run_dir: Path
    dmesg_findings: list[Finding] = field(default_factory=list)
    probe_lock: threading.Lock = field(default_factory=threading.Lock)   # one SysRq probe at a time

    @property
    def port(self) -> int:
        assert self.vm.port is not None         # boot() boots with SSH, on a leased port
        return self.vm.port

    def findings(self) -> list[Finding]:
        return self.vm.findings()

    @property
    def panicked(self) -> bool:
        return self.vm.panicked

    def collect_dmesg(self, name: str = "dmesg.log", timeout: float = 30) -> list[Finding]:
        text = self.session.dmesg(timeout=timeout)
        (self.run_dir / name).write_text(text)
        self.dmesg_findings = scan_text(text, "dmesg")
        return self.dmesg_findings

    def ssh_command(self) -> list[str]:
        """argv of the host's OpenSSH client for an interactive shell in the guest (`invoke boot --shell`),
        pinned to the run's host key; valid while the guest runs."""
        known = self.run_dir / "known_hosts"
        ktype, b64 = self.session.host_pubkey
        known.write_text(f"[127.0.0.1]:{self.port} {ktype} {b64}\n")
        return ["ssh", "-i", str(self.session.key_path), "-p", str(self.port),
                "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "root@127.0.0.1"]

    def shutdown(self, timeout: float = 10.0) -> bool:
        """`reboot -f` in the guest (QEMU exits, as it runs with -no-reboot); True when QEMU exited."""
        if not self.vm.running():
            return True
        if self.vm.panicked:          # nobody left to answer; stop() kills QEMU
            return False
        with contextlib.suppress(Exception):
            self.session.start(["reboot", "-f"])
        return self.vm.wait_exit(timeout)


@contextlib.contextmanager
def boot(arch: Arch, kernel_image: Path, initrd: Initrd, run_dir: Path, *, accel: str = "auto",
         timeout: float | None = None, cmdline_extra: tuple[str, ...] = (),
         serial_log_name: str = "serial.log", collect_dmesg: bool = True) -> Iterator[Guest]:
    """Boot ``kernel_image`` with the guest image and a fresh per-run overlay, connect over SSH, yield the
    Guest. On the way out: dmesg collected (when asked), clean guest shutdown, QEMU surely gone, per-run
    secrets and the joined initrd removed."""

    kernel_image = Path(kernel_image)
    if not kernel_image.is_file():
        raise InfraError(f"kernel image not found: {kernel_image}", fix="build the kernel first (invoke build)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    accel_name, reason = choose_accel(arch, accel, kernel_image)
    budget = boot_timeout(arch, accel_name, timeout)
    overlay = make_overlay(run_dir)
    joined = run_dir / "initrd-run.cpio"
    secrets = [overlay.path, overlay.client_key_path, joined, run_dir / "known_hosts"]
    session = None
    try:
        join_archives([initrd.path, overlay.path], joined)
        t0 = time.monotonic()
        deadline = t0 + budget
        with boot_vm(arch, kernel_image, joined, run_dir, accel=accel_name, marker=initrd.ready_marker,
                     not_ready=initrd.not_ready_marker, deadline=deadline, cmdline_extra=cmdline_extra,
                     serial_log_name=serial_log_name) as vm:
            assert vm.ready_at is not None and vm.port is not None    # boot_vm yields a ready VM with SSH
            boot_seconds = vm.ready_at - vm.started
            try:
                session = GuestSession("127.0.0.1", vm.port, overlay.client_key_path, overlay.host_pubkey,
                                       log=run_dir / "guest.log")
                session.connect(deadline=deadline, alive=vm.running)
            except InfraError as e:
                vm.settle()
                if vm.panic_at is not None:
                    raise vm.panic_error() from e
                verdict = vm.early_verdict(e)
                if verdict is not None:             # e.g. sshd hung in the kernel: the report is the verdict
                    raise verdict from e
                e.detail = [*e.detail, "last console lines:", *vm.tail_lines()]
                e.log = e.log or str(vm.serial_log)
                raise
            guest = Guest(arch=arch, vm=vm, session=session, accel=accel_name, accel_reason=reason,
                          boot_seconds=round(boot_seconds, 3), ssh_seconds=round(time.monotonic() - vm.started, 3),
                          run_dir=run_dir)
            try:
                yield guest
                vm.settle()
                if vm.panicked:                   # the body finished, but the kernel died meanwhile
                    raise vm.panic_error()
            except InfraError as e:
                vm.settle()
                if vm.panic_at is not None:       # SSH broke because the kernel died: a kernel verdict
                    raise vm.panic_error() from e
                raise
            finally:
                if collect_dmesg and vm.running() and not vm.panicked:
                    with contextlib.suppress(Exception):
                        guest.collect_dmesg()
                guest.shutdown()
    finally:
        if session is not None:
            session.close()
        for p in secrets:
            with contextlib.suppress(OSError):
                p.unlink()
