"""Running one LAVA job locally with lava-run (the dispatcher kpipe installed), with a wall-clock limit,
its YAML log kept in the run folder, and QEMU never left behind."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import proc
from ..errors import InfraError
from .watch import ConsoleWatch, Stop

POLL = 1.0                  # seconds between two looks at the job's log

if TYPE_CHECKING:
    from .install import Lava


@dataclass(frozen=True)
class LavaRun:
    log: Path                 # lava.log: the job's YAML records
    exit_code: int            # lava-run's own exit (0 even when test cases fail)
    seconds: float
    timed_out: bool
    stopped: Stop | None = None     # kpipe ended the job on a kernel report (watch.ConsoleWatch)


def run_job(lava: Lava, job_path: Path, device_path: Path, out_dir: Path, job_id: str, limit: float,
            ready_marker: str = "") -> LavaRun:
    """lava-run JOB --device DEVICE; its records (stderr) go to out_dir/lava.log, followed as they come: a kernel
    report ends the job after verify's grace (``ready_marker``: the guest's, to tell boot from tests)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "lava.log"
    work = out_dir / "lava-work"
    shutil.rmtree(work, ignore_errors=True)
    cmd = [*lava.lava_run(), "--job-id", job_id, "--output-dir", str(work), "--device", str(device_path),
           str(job_path)]
    (out_dir / "lava-run.cmd").write_text(" ".join(cmd) + "\n")
    t0 = time.monotonic()
    timed_out = False
    with open(log, "wb") as fh:
        try:
            p = proc.spawn(cmd, env=lava.env(), stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                           cwd=out_dir)
        except OSError as e:
            raise InfraError(f"cannot start lava-run: {e}", fix="reinstall: python3 -m kpipe.lava.install") from None
        watch = ConsoleWatch(log, ready_marker)
        stopped: Stop | None = None
        try:
            while True:
                try:
                    p.wait(timeout=POLL)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() - t0 >= limit:
                        timed_out = True
                        break
                    stopped = watch.poll()
                    if stopped is not None:
                        break
        finally:
            # QEMU runs under a pty in a session of its own (pexpect): kill lava-run's descendants first
            kids = descendants(p.pid)
            proc.kill_group(p, grace=5)
            for pid in kids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            proc.unregister(p)
    # the dispatcher's copies of the kernel and the ramdisk: large, and reproducible from the job
    shutil.rmtree(work, ignore_errors=True)
    return LavaRun(log, p.returncode if p.returncode is not None else -1, round(time.monotonic() - t0, 2), timed_out,
                   stopped)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        cur = todo.pop()
        kids = [c for c, pp in parent.items() if pp == cur]
        out += kids
        todo += kids
    return out
