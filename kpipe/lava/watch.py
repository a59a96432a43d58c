"""Following a local LAVA job's log as lava-run writes it, as `verify` follows its console.

lava-run knows nothing of kernel reports: a kernel that locks up before userspace keeps the job in its boot
action until LAVA's boot timeout, and one that oopses during the tests keeps it until the test timeout. kpipe
reads the job's console records as they come, through the same scanner as its own console watcher, and ends the
job the same number of seconds after a report that `verify` waits (kpipe.guest.qemu's graces): before the guest is
ready, REPORT_GRACE after an Oops/BUG/GPF and STUCK_GRACE after a lockup, stall or hung task; once the tests run,
FATAL_GRACE. A panic is not watched: QEMU stops on it (-no-reboot) and LAVA ends the job by itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..guest.findings import ENDS_BOOT_KINDS, FATAL_KINDS, Scanner
from ..guest.qemu import FATAL_GRACE, REPORT_GRACE, STUCK_GRACE
from . import logparse

WATCHED = ENDS_BOOT_KINDS - {"panic"}


@dataclass(frozen=True)
class Stop:
    """Why kpipe ended the job, and how long after the report."""
    reason: str
    after_report_s: float


class ConsoleWatch:
    """``poll()`` once a second or so: reads the log's new complete lines; a Stop once a report's grace is over."""

    def __init__(self, log: Path, ready_marker: str):
        self.log, self.ready_marker = log, ready_marker
        self._offset = 0
        self._partial = ""
        self._scanner = Scanner("console")
        self.ready = False
        self.first: tuple[float, str, str, bool] | None = None     # when seen, kind, line, guest ready then

    def _lines(self) -> list[str]:
        try:
            with open(self.log, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return []
        self._offset += len(data)
        text = self._partial + data.decode("utf-8", errors="replace")
        *lines, self._partial = text.split("\n")
        return lines

    def poll(self) -> Stop | None:
        for raw in self._lines():
            rec = logparse.record(raw)
            if rec is None or rec.get("lvl") != "target":
                continue
            line = str(rec.get("msg")).replace("\r", "")
            if self.ready_marker and self.ready_marker in line and "echo" not in line:
                self.ready = True
            if logparse.is_step_output(line):
                continue
            kind = self._scanner.feed(line)
            if kind in WATCHED and self.first is None:
                self.first = (time.monotonic(), kind, line.strip(), self.ready)
        if self.first is None:
            return None
        seen, kind, line, ready = self.first
        grace = FATAL_GRACE if ready else REPORT_GRACE if kind in FATAL_KINDS else STUCK_GRACE
        waited = time.monotonic() - seen
        if waited < grace:
            return None
        when = "during the tests" if ready else "before the guest was ready"
        return Stop(f"the kernel reported {kind} {when} ({line}); kpipe ended the job {waited:.0f} s later",
                    round(waited, 2))
