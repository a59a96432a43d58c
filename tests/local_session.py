"""The guest session's put/run API on the host: real processes in their own process group, killed on
timeout. For host-side runs of the verifier and the selftests (the real guest is kpipe.guest.ssh.GuestSession)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from kpipe import proc
from kpipe.guest.ssh import CommandResult


class LocalSession:
    def __init__(self):
        self.commands: list[list[str]] = []
        self.puts: list[tuple[str, int]] = []

    def put(self, local: Path, remote: str, mode: int = 0o755) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)
        os.chmod(remote, mode)
        self.puts.append((remote, mode))

    def run(self, argv: list[str], timeout: float) -> CommandResult:
        self.commands.append(list(argv))
        start = time.monotonic()
        # like the guest: `timeout` leads the process group with the command as its child (so a `setsid` in the
        # command does not fork), and signals the command's own pid when time is up, as GuestSession does with
        # busybox timeout (a command that made a session of its own is killed too)
        wrapped = ["timeout", "-s", "KILL", f"{timeout:g}", *[str(a) for a in argv]]
        p = proc.spawn(wrapped, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        timed_out = False
        try:
            out, err = p.communicate(timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill_group(p, grace=1.0)
            out, err = p.communicate()
        finally:
            proc.unregister(p)
        seconds = time.monotonic() - start
        status = p.returncode
        if status in (137, -9) and seconds >= timeout - 0.5:     # killed by timeout(1): as GuestSession says it
            timed_out, status = True, 137
        elif status is not None and status < 0:
            status = 128 - status
        return CommandResult(" ".join(map(str, argv)), status, out, err, seconds, timed_out)
