"""Reading a LAVA job log (lava-run's YAML records, one per line: ``{"dt": ..., "lvl": ..., "msg": ...}``; the
server's copy, ``lavacli jobs logs --raw``, is the same records as a YAML list: ``- {...}``).

What kpipe takes from it:
  * ``lvl: target`` lines: the guest's console. Kernel messages are scanned for findings (panic, Oops, BUG,
    WARNING, KASAN, ...) exactly as kpipe's own console watcher does; the test steps print their outputs as
    ``KPIPE|<block>|out|<line>`` between ``KPIPE-BEGIN <kind> <block>`` and
    ``KPIPE-END ... exit=N seconds=S timedout=0|1``, so kpipe's own TAP/KTAP parsers read the very bytes the
    tests printed;
  * ``lvl: results`` records: LAVA's own verdict per case (and the ``lava/job`` record: completed or the
    error type and message);
  * ``lvl: error`` lines, for the report.
Pure functions: text in, a ``LavaLog`` out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml

from ..guest.findings import Scanner
from ..report.results import Finding

_Loader: type[yaml.CSafeLoader | yaml.SafeLoader]
try:
    _Loader = yaml.CSafeLoader
except AttributeError:        # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader

_BEGIN = re.compile(r"^KPIPE-BEGIN (\S+)(?: (\S+))?\s*$")
_END = re.compile(r"^KPIPE-END (?:\S+ )?(\S+) exit=(-?\d+) seconds=([\d.]+) timedout=([01])\s*$")
_OUT = re.compile(r"^KPIPE\|([^|]+)\|(out|err)\|(.*)$")


@dataclass
class Block:
    """One test step's verbatim output and exit."""
    name: str
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    exit: int | None = None
    seconds: float = 0.0
    timed_out: bool = False
    ended: bool = False

    @property
    def text(self) -> str:
        return "".join(ln + "\n" for ln in self.out)


@dataclass
class LavaResult:
    definition: str          # "0_verifier" (LAVA prefixes the definition's index)
    case: str
    result: str              # pass | fail | skip | unknown
    measurement: str = ""
    units: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def suite(self) -> str:
        return self.definition.split("_", 1)[1] if re.match(r"^\d+_", self.definition) else self.definition


@dataclass
class LavaLog:
    target: list[str] = field(default_factory=list)          # every console line
    blocks: dict[str, Block] = field(default_factory=dict)
    results: list[LavaResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)   # from the console (kernel lines only)
    job_result: str = ""                                     # pass | fail
    error_type: str = ""                                     # Infrastructure | Job | Test | Bug | Canceled
    error_msg: str = ""
    first_dt: datetime | None = None
    ready_dt: datetime | None = None
    boot_dt: datetime | None = None                          # when LAVA started the boot action
    records: int = 0

    def block(self, name: str) -> Block | None:
        return self.blocks.get(name)

    @property
    def boot_seconds(self) -> float | None:
        if self.ready_dt and self.boot_dt:
            return round((self.ready_dt - self.boot_dt).total_seconds(), 3)
        return None

    def results_of(self, suite: str) -> dict[str, LavaResult]:
        return {r.case: r for r in self.results if r.suite == suite}


def _dt(s: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(s))
    except ValueError:
        return None


def record(raw: str) -> dict[str, Any] | None:
    """One line of a job log as its record (lava-run's ``{...}``, the server's ``- {...}``); None otherwise."""
    raw = raw.strip()
    if raw.startswith("- {"):         # lava-server's output.yaml (lavacli jobs logs --raw): a YAML list
        raw = raw[2:]
    if not raw.startswith("{"):
        return None
    try:
        rec = yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError:
        return None
    return rec if isinstance(rec, dict) else None


def is_step_output(line: str) -> bool:
    """A line kpipe's test steps print (KPIPE|..., KPIPE-BEGIN/END): the tests' output, never a kernel report."""
    return bool(_OUT.match(line) or _BEGIN.match(line) or _END.match(line))


def parse(text: str, ready_marker: str = "KPIPE-GUEST-READY") -> LavaLog:
    log = LavaLog()
    scanner = Scanner("console")
    for raw in text.splitlines():
        rec = record(raw)
        if rec is None:
            continue
        log.records += 1
        lvl, msg, dt = rec.get("lvl"), rec.get("msg"), _dt(rec.get("dt", ""))
        if log.first_dt is None:
            log.first_dt = dt
        if lvl == "target":
            line = str(msg).replace("\r", "")
            log.target.append(line)
            if ready_marker and log.ready_dt is None and ready_marker in line and "echo" not in line:
                log.ready_dt = dt
            if m := _OUT.match(line):
                blk = log.blocks.setdefault(m.group(1), Block(m.group(1)))
                (blk.out if m.group(2) == "out" else blk.err).append(m.group(3))
                continue
            if m := _BEGIN.match(line):
                name = m.group(2) or m.group(1)
                log.blocks.setdefault(name, Block(name))
                continue
            if m := _END.match(line):
                blk = log.blocks.setdefault(m.group(1), Block(m.group(1)))
                blk.exit, blk.seconds, blk.timed_out, blk.ended = (int(m.group(2)), float(m.group(3)),
                                                                   m.group(4) == "1", True)
                continue
            scanner.feed(line)
        elif lvl == "results" and isinstance(msg, dict):
            if msg.get("definition") == "lava" and msg.get("case") == "job":
                log.job_result = str(msg.get("result", ""))
                log.error_type = str(msg.get("error_type") or "")
                log.error_msg = str(msg.get("error_msg") or "")
                continue
            if msg.get("definition") == "lava":
                continue
            extra = {k: v for k, v in msg.items() if k not in ("definition", "case", "result", "measurement",
                                                                 "units")}
            log.results.append(LavaResult(str(msg.get("definition", "")), str(msg.get("case", "")),
                                          str(msg.get("result", "")), str(msg.get("measurement", "") or ""),
                                          str(msg.get("units", "") or ""), extra))
        elif lvl == "error":
            log.errors.append(str(msg))
        elif lvl == "info" and isinstance(msg, str) and log.boot_dt is None and msg.startswith("Boot command:"):
            log.boot_dt = dt
    scanner.close()
    log.findings = scanner.findings
    return log
