"""Running host commands: logged to a file, in their own process group, always reaped.

Every child started here is registered so that Ctrl-C or an exception kills the whole group
(``kill_all``): no QEMU, make or helper process outlives the run.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import subprocess
import threading
from pathlib import Path
from typing import IO, Any, Sequence

from .errors import InfraError

_children: set[subprocess.Popen[Any]] = set()
_children_lock = threading.Lock()


def register(p: subprocess.Popen[Any]) -> None:
    with _children_lock:
        _children.add(p)


def unregister(p: subprocess.Popen[Any]) -> None:
    with _children_lock:
        _children.discard(p)


KILL_WAIT = 10.0          # after SIGKILL: how long to wait for the process to be reaped


def kill_group(p: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """SIGTERM the child's process group, then SIGKILL after ``grace`` seconds; reap it."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=KILL_WAIT)
            except subprocess.TimeoutExpired:
                # stuck in the host's kernel (D state): nothing more a signal can do; say so and go on
                sys.stderr.write(f"kpipe: pid {p.pid} ({str(p.args)[:80]}) has not exited "
                                 f"{KILL_WAIT:.0f} s after SIGKILL; it is left to the host\n")
    else:
        # the leader is gone; children of its group may linger (make's jobs)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    unregister(p)


def kill_all() -> None:
    with _children_lock:
        kids = list(_children)
    for p in kids:
        kill_group(p, grace=2.0)


def spawn(cmd: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
    """Popen in a new session (own process group), registered for cleanup."""
    p = subprocess.Popen(list(cmd), start_new_session=True, **kw)
    register(p)
    return p


def run(cmd: Sequence[str], *, cwd: Path | str | None = None, log: Path | None = None,
        env: dict[str, str] | None = None, timeout: float | None = None, check: bool = True,
        input: str | None = None, what: str | None = None, replace_env: bool = False
        ) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; output appended to ``log`` (or captured when no log). Raises InfraError on a missing
    binary or timeout, and on a non-zero exit when ``check``. ``env`` is added to kpipe's environment, or is
    the whole environment with ``replace_env``."""
    what = what or Path(cmd[0]).name
    full_env = None if env is None else dict(env) if replace_env else {**os.environ, **env}
    fh = None
    out: IO[str] | int
    try:
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            fh = open(log, "a")
            fh.write(f"\n$ {shlex.join(map(str, cmd))}\n")
            fh.flush()
            out, err = fh, subprocess.STDOUT
        else:
            out, err = subprocess.PIPE, subprocess.PIPE
        try:
            p = spawn([str(c) for c in cmd], cwd=cwd, env=full_env, stdout=out, stderr=err, text=True,
                      stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            raise InfraError(f"{what}: command not found: {cmd[0]}",
                             fix="run `invoke setup` to install kpipe's host tools") from None
        try:
            stdout, stderr = p.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(p)
            raise InfraError(f"{what} timed out after {timeout:.0f} s: {shlex.join(map(str, cmd))}",
                             log=str(log) if log else None) from None
        except BaseException:
            kill_group(p)
            raise
        finally:
            unregister(p)
        cp = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
        if check and p.returncode != 0:
            tail = (stderr or stdout or "").strip().splitlines()[-15:] if log is None else tail_lines(log, 15)
            raise InfraError(f"{what} failed with exit {p.returncode}: {shlex.join(map(str, cmd))}",
                             detail=tail, log=str(log) if log else None)
        return cp
    finally:
        if fh:
            fh.close()


def tail_lines(path: Path, n: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
        return data.splitlines()[-n:]
    except OSError:
        return []

