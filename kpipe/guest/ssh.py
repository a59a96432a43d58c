"""The SSH session to a booted guest (paramiko): pinned host key, SFTP, commands with timeouts.

Host key: the per-run overlay gives the guest a fresh host key whose public half the client pins; any
other key is refused (RejectPolicy) and reported, never accepted. Commands are quoted with shlex, bounded
guest-side with busybox ``timeout`` and host-side with a deadline; the exit status comes back exactly
(a command killed by signal N reports 128+N, as a shell does). No key material is logged.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import math
import select
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paramiko

from ..errors import InfraError

# paramiko logs failed attempts (expected while the guest boots) through Python's last-resort handler to
# stderr; kpipe reports what matters itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

HOST_GRACE = 5.0          # host-side deadline = command timeout + this
KILLED_BY_TIMEOUT = 128 + 9
SFTP_OP_TIMEOUT = 20.0    # no SFTP reply for this long: the guest is not answering (paramiko waits forever)
SFTP_MIN_RATE = 256 * 1024   # a transfer's deadline: SFTP_OP_TIMEOUT + size at this many bytes per second
PROBE_TIMEOUT = 8.0       # a fresh SSH connection to ask a wedged kernel for SysRq
REQUEST_TIMEOUT = 15.0    # the guest's sshd must answer a channel request (exec, subsystem) within this


class RequestTimeout(InfraError):
    """The guest's SSH server accepted a channel but never answered its request (paramiko would wait forever)."""


def bounded_request(chan: paramiko.Channel, what: str, request: Callable[[], None],
                    timeout: float | None = None) -> None:
    """Run a channel request (``chan.exec_command``, ``chan.invoke_subsystem``) that paramiko waits on without a
    deadline; past ``timeout`` the channel is closed and the waiter woken, and RequestTimeout is raised."""
    timeout = REQUEST_TIMEOUT if timeout is None else timeout
    expired = threading.Event()

    def give_up() -> None:
        expired.set()
        try:
            chan.close()
        except (paramiko.SSHException, OSError, EOFError):
            pass                     # the transport is gone already: the waiter below still has to be woken
        finally:
            chan.event.set()         # paramiko's own wait (Channel._wait_for_event) is on this event, unbounded

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        request()
    except (paramiko.SSHException, OSError, EOFError):
        if expired.is_set():
            raise RequestTimeout(f"the guest's SSH server accepted the channel for {what} but did not answer its "
                                 f"request within {timeout:g} s", fix="the guest's sshd or kernel is wedged: read "
                                 "serial.log and guest.log in the run folder") from None
        raise
    finally:
        timer.cancel()
    if expired.is_set():
        raise RequestTimeout(f"the guest's SSH server did not answer the request for {what} within {timeout:g} s",
                             fix="the guest's sshd or kernel is wedged: read serial.log and guest.log")


class ChannelRefused(InfraError):
    """The SSH server answered a command's exec request with a failure or closed its channel at once, while the
    connection stays up (seen once in CI with dropbear, four tests side by side on arm64). The command may or
    may not have started: a caller that can tell (a pid file) may kill what started and try again."""


class GuestAbandoned(InfraError):
    """The session gave up on a guest command because the kernel had already reported a fatal error."""


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int | None      # None when the host had to give up on the command
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out


def fingerprint(key_b64: str) -> str:
    digest = hashlib.sha256(base64.b64decode(key_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def command_line(argv: list[str] | str, cwd: str | None = None) -> str:
    cmd = argv if isinstance(argv, str) else shlex.join(str(a) for a in argv)
    return cmd if cwd is None else f"cd {shlex.quote(cwd)} && {cmd}"


def wrap_timeout(command: str, timeout: float) -> str:
    """Guest-side bound; the outer shell waits (no exec) so a signal death becomes 128+N."""
    secs = max(1, math.ceil(timeout))
    return f"timeout -s KILL {secs} sh -c {shlex.quote(command)}; exit $?"


class GuestSession:
    def __init__(self, host: str, port: int, key_path: Path, host_pubkey: tuple[str, str], *,
                 user: str = "root", log: Path | None = None):
        self.host, self.port, self.user = host, port, user
        self.key_path = Path(key_path)
        self.host_pubkey = host_pubkey
        self.log = log
        self.client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        # Called while a command runs: a reason string stops waiting for it (e.g. the kernel Oopsed).
        self.abort_check: Callable[[], str | None] | None = None
        # Called once a command ran past its deadline (e.g. to ask the kernel with SysRq what it is doing).
        self.on_timeout: Callable[[str], None] | None = None
        self.timed_out: list[str] = []       # commands that ran past their deadline

    # ------------------------------------------------------------ connection
    def _known(self) -> str:
        return f"[{self.host}]:{self.port}"

    def connect(self, deadline: float, alive: Callable[[], bool] | None = None) -> "GuestSession":
        """Connect, retrying until ``deadline`` (monotonic) while the guest boots; ``alive()`` False stops it."""
        try:
            pkey = paramiko.PKey.from_path(self.key_path)
        except (OSError, paramiko.SSHException) as e:
            raise InfraError(f"cannot read the run's SSH key {self.key_path}: {e}") from None
        ktype, kb64 = self.host_pubkey
        pinned = paramiko.PKey.from_type_string(ktype, base64.b64decode(kb64))
        attempts, last = 0, "no attempt"
        while True:
            attempts += 1
            if alive is not None and not alive():
                raise InfraError(f"the guest's QEMU exited while kpipe was connecting over SSH (port {self.port})")
            left = deadline - time.monotonic()
            if left <= 0:
                raise InfraError(f"no SSH connection to the guest on 127.0.0.1:{self.port} after {attempts - 1} "
                                 f"attempts: {last}",
                                 fix="is sshd (dropbear) started by the guest's init? read serial.log")
            t_try = time.monotonic()
            client = paramiko.SSHClient()
            client.get_host_keys().add(self._known(), ktype, pinned)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(self.host, self.port, username=self.user, pkey=pkey, look_for_keys=False,
                               allow_agent=False, timeout=min(5.0, left), banner_timeout=min(10.0, left),
                               auth_timeout=min(10.0, left))
                self.client = client
                self._log(f"connected to {self.user}@127.0.0.1:{self.port} (host key {ktype} "
                          f"{fingerprint(kb64)}) after {attempts} attempt(s)")
                return self
            except paramiko.BadHostKeyException as e:
                client.close()
                raise InfraError(
                    f"guest SSH host key mismatch on 127.0.0.1:{self.port}: pinned {ktype} {fingerprint(kb64)}, "
                    f"the server offered {e.key.get_name()} {fingerprint(e.key.get_base64())}",
                    fix="refused (no auto-accept): another program may be answering on that port; run again") from None
            except paramiko.AuthenticationException as e:
                client.close()
                raise InfraError(f"guest SSH refused the run's key on 127.0.0.1:{self.port}: {e}",
                                 fix="the overlay's authorized_keys did not reach the guest; read serial.log") from None
            except (paramiko.SSHException, OSError, EOFError) as e:
                client.close()
                if "not found in known_hosts" in str(e):
                    raise InfraError(f"guest SSH host key refused on 127.0.0.1:{self.port}: {e}",
                                     fix="the server offered a key of another type than the pinned one") from None
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                self._log(f"SSH attempt {attempts} failed after {time.monotonic() - t_try:.1f}s: {last}")
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _transport(self) -> paramiko.Transport:
        transport = self.client.get_transport() if self.client is not None else None
        if transport is None or not transport.is_active():
            raise InfraError(f"the SSH session to the guest (port {self.port}) is not connected",
                             fix="the guest may have crashed: read serial.log")
        return transport

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                # SFTPClient.from_transport would wait for the subsystem's answer and its version without a
                # deadline: open the channel, ask for the subsystem and read the version, each bounded
                chan = self._transport().open_session(timeout=10)
                bounded_request(chan, "the SFTP subsystem", lambda: chan.invoke_subsystem("sftp"))
                chan.settimeout(SFTP_OP_TIMEOUT)
                self._sftp = paramiko.SFTPClient(chan)
            except RequestTimeout:
                raise
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise InfraError(f"cannot open SFTP to the guest: {e}",
                                 fix="the image must have /usr/lib/sftp-server (vm_images/recipe.toml)") from None
        return self._sftp

    # ------------------------------------------------------------ files
    def _transfer_deadline(self, size: int) -> Callable[[int, int], None]:
        """An SFTP progress callback that raises once the whole transfer is past its deadline (each reply
        is also bounded by the channel's SFTP_OP_TIMEOUT)."""
        deadline = time.monotonic() + SFTP_OP_TIMEOUT + size / SFTP_MIN_RATE

        def check(done: int, total: int) -> None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"transfer not done by its deadline ({done} of {total} bytes)")
            self._check_abort("an SFTP transfer")
        return check

    def put(self, local: Path, remote: str, mode: int = 0o755) -> None:
        local = Path(local)
        if not local.is_file():
            raise InfraError(f"cannot copy {local} to the guest: no such file")
        try:
            sftp = self._sftp_client()
            sftp.put(str(local), remote, callback=self._transfer_deadline(local.stat().st_size))
            sftp.chmod(remote, mode)
        except (OSError, paramiko.SSHException, EOFError) as e:
            self._drop_sftp()
            raise InfraError(f"copying {local} to the guest's {remote} failed: {type(e).__name__}: {e}",
                             fix="the guest may be wedged or crashed: read serial.log") from None
        self._log(f"put {local} -> {remote} ({oct(mode)})")

    def get(self, remote: str, local: Path) -> None:
        try:
            sftp = self._sftp_client()
            size = sftp.stat(remote).st_size or 0
            sftp.get(remote, str(local), callback=self._transfer_deadline(size))
        except (OSError, paramiko.SSHException, EOFError) as e:
            self._drop_sftp()
            raise InfraError(f"copying the guest's {remote} to {local} failed: {type(e).__name__}: {e}",
                             fix="the guest may be wedged or crashed: read serial.log") from None
        self._log(f"get {remote} -> {local}")

    def _drop_sftp(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:
                pass
            self._sftp = None

    def _check_abort(self, what: str) -> None:
        reason = self.abort_check() if self.abort_check is not None else None
        if reason:
            raise GuestAbandoned(f"stopped waiting for {what}: {reason}",
                                 fix="the kernel crashed: read its report in serial.log")

    # ------------------------------------------------------------ commands
    def start(self, argv: list[str] | str) -> paramiko.Channel:
        """Start a command and do not wait for it (e.g. `reboot -f`)."""
        chan = self._transport().open_session(timeout=10)
        bounded_request(chan, repr(command_line(argv)), lambda: chan.exec_command(command_line(argv)))
        self._log(f"$ {command_line(argv)} (not waited for)")
        return chan

    def run(self, argv: list[str] | str, timeout: float, cwd: str | None = None) -> CommandResult:
        command = command_line(argv, cwd)
        t0 = time.monotonic()
        host_deadline = t0 + timeout + HOST_GRACE
        out, err = bytearray(), bytearray()
        try:
            chan = self._transport().open_session(timeout=10)
            try:
                bounded_request(chan, repr(command), lambda: chan.exec_command(wrap_timeout(command, timeout)))
            except RequestTimeout:
                raise
            except paramiko.SSHException as e:
                if chan.get_transport() is None or not chan.get_transport().is_active():
                    raise
                self._log(f"$ {command}\n  the guest's sshd refused the command's channel: {e}")
                raise ChannelRefused(f"the guest's SSH server refused to start {command!r} ({e}); the connection "
                                     "is still up", fix="read guest.log and serial.log in the run folder") from None
            gave_up = False
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not chan.exit_status_ready():
                    raise InfraError(f"the guest closed the SSH channel without an exit status: {command}",
                                     fix="the guest may have crashed: read serial.log")
                if time.monotonic() > host_deadline:
                    gave_up = True
                    break
                self._check_abort(repr(command))
                select.select([chan], [], [], 0.2)
            status = None if gave_up else chan.recv_exit_status()
            if status == -1 and not chan.get_transport().is_active():
                raise InfraError(f"the SSH connection to the guest was lost while running {command!r}",
                                 fix="the guest may have crashed: read serial.log")
            chan.close()
        except GuestAbandoned:
            self.timed_out.append(command)
            raise
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise InfraError(f"SSH to the guest failed while running {command!r}: {e}",
                             fix="the guest may have crashed: read serial.log") from None
        seconds = time.monotonic() - t0
        timed_out = gave_up or (status == KILLED_BY_TIMEOUT and seconds >= timeout - 0.5)
        if status == -1:              # no exit-status message at all
            status = None
        if timed_out:
            self.command_hung(command)
        res = CommandResult(command=command, exit_status=status, stdout=out.decode(errors="replace"),
                            stderr=err.decode(errors="replace"), seconds=round(seconds, 3), timed_out=timed_out)
        self._log(f"$ {command}\n  exit {status}{' (timed out)' if timed_out else ''} in {seconds:.2f}s")
        return res

    def command_hung(self, command: str) -> None:
        """A command ran past its deadline, or a guest-side watchdog ended it as hung (a test's stall): it is
        recorded, and the session's ``on_timeout`` hook (the runner's SysRq probe) runs."""
        self.timed_out.append(command)
        if self.on_timeout is not None:
            self.on_timeout(command)

    def dmesg(self, timeout: float = 30) -> str:
        res = self.run(["dmesg"], timeout=timeout)
        if res.exit_status != 0:
            raise InfraError(f"dmesg failed in the guest (exit {res.exit_status}): {res.stderr.strip()[:200]}")
        return res.stdout

    def fresh(self) -> "GuestSession":
        """A new, unconnected session to the same guest (same key, same pinned host key)."""
        return GuestSession(self.host, self.port, self.key_path, self.host_pubkey, user=self.user, log=self.log)

    def sysrq(self, keys: str, timeout: float = PROBE_TIMEOUT, alive: Callable[[], bool] | None = None) -> str | None:
        """Magic SysRq through a fresh SSH connection (the busy one may be stuck behind a wedged command):
        `echo KEY > /proc/sysrq-trigger` for each key. None when done, else why it could not be done."""
        probe = self.fresh()
        deadline = time.monotonic() + timeout
        try:
            probe.connect(deadline=deadline, alive=alive)
            script = "; ".join(f"echo {shlex.quote(k)} > /proc/sysrq-trigger" for k in keys)
            res = probe.run(["sh", "-c", script], timeout=max(1.0, deadline - time.monotonic()))
            if not res.ok:
                return f"sysrq-trigger: exit {res.exit_status}{' (timed out)' if res.timed_out else ''}"
            return None
        except InfraError as e:
            return e.message
        finally:
            probe.close()

    def close(self) -> None:
        for c in (self._sftp, self.client):
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass
        self._sftp = None
        self.client = None

    def _log(self, msg: str) -> None:
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")

    def __enter__(self) -> "GuestSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
