"""kmemleak: leaked kernel objects, which no /proc counter shows, as findings.

The debug profile builds kmemleak with its automatic scan off (its first pass, 60 s after boot, would land inside
the verifier's memory-counter window). After the tests kpipe asks for a scan twice, the second starting at least
five seconds after the first did (kmemleak reports only objects older than 5 s, and a new object only from its
second scan on, so a leak made by the last test is reported by the second scan),
then reads /sys/kernel/debug/kmemleak. Each "unreferenced object" is a finding with its allocation backtrace,
except a tree's known boot-time false positives (kmemleak_known.toml: each with its reason and the frames it is
recognised by). kmemleak turning itself off, or its file missing on a kernel built with it, is an error of the
run (kind ``kmemleak_off``): the run cannot claim there was no leak.
"""
from __future__ import annotations

import re
import time
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..report.results import Finding, KmemleakInfo

if TYPE_CHECKING:
    from ..guest.ssh import GuestSession

KNOWN_FILE = Path(__file__).resolve().parent / "kmemleak_known.toml"
KMEMLEAK = "/sys/kernel/debug/kmemleak"
SCAN_GAP = 6                     # seconds from the first scan's start to the second's: kmemleak reports only
                                 # objects at least 5 s old when a scan starts (`date +%s` may lose one second)
SCAN_TIMEOUT = 180.0             # both scans and the read (a KASAN kernel under TCG scans slowly)
ABSENT = "KPIPE-KMEMLEAK: absent"
SCAN_FAILED = "KPIPE-KMEMLEAK: scan failed"
_OBJECT = re.compile(r"^unreferenced object (0x[0-9a-f]+) \(size (\d+)\):")
_BT_FRAME = re.compile(r"\[<[0-9a-f]+>\]\s+([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+")


@dataclass(frozen=True)
class Known:
    tree: str                    # a tree version prefix ("5.10") or "*"
    frames: tuple[str, ...]      # every one of these functions is in the object's backtrace
    reason: str


@dataclass
class KmemleakReport:
    findings: list[Finding] = field(default_factory=list)          # leaks, or one kmemleak_off
    known: list[str] = field(default_factory=list)                 # "<object line>: <reason>"
    seconds: float = 0.0


def enabled(dotconfig: Path) -> bool:
    try:
        return re.search(r"^CONFIG_DEBUG_KMEMLEAK=y$", dotconfig.read_text(), re.M) is not None
    except OSError:
        return False


@lru_cache(maxsize=2)
def load_known(path: Path = KNOWN_FILE) -> tuple[Known, ...]:
    raw = tomllib.loads(path.read_text()).get("known", [])
    out = []
    for k in raw:
        if not k.get("reason") or not k.get("frames"):
            raise ValueError(f"{path}: every [[known]] entry needs frames and a reason: {k}")
        out.append(Known(str(k.get("tree", "*")), tuple(k["frames"]), str(k["reason"])))
    return tuple(out)


def objects(text: str) -> list[Finding]:
    """Each "unreferenced object" block of kmemleak's report as a finding (its lines as the context)."""
    out: list[Finding] = []
    cur: list[str] | None = None
    for line in text.splitlines():
        if _OBJECT.match(line):
            if cur is not None:
                out.append(Finding(kind="kmemleak", source="kmemleak", line=cur[0], context=tuple(cur[1:])))
            cur = [line]
        elif cur is not None and line.strip():
            cur.append(line)
    if cur is not None:
        out.append(Finding(kind="kmemleak", source="kmemleak", line=cur[0], context=tuple(cur[1:])))
    return out


def backtrace(f: Finding) -> list[str]:
    return [m.group(1) for ln in f.context for m in [_BT_FRAME.search(ln)] if m]


def known_reason(f: Finding, release: str, known: tuple[Known, ...]) -> str | None:
    frames = set(backtrace(f))
    for k in known:
        if (k.tree == "*" or release.startswith(k.tree)) and set(k.frames) <= frames:
            return k.reason
    return None


def _off(line: str, detail: list[str]) -> Finding:
    return Finding(kind="kmemleak_off", source="kmemleak", line=line, context=tuple(detail))


# both scans and the read, as one shell line: kpipe's guest runs it over SSH, a LAVA job in its kmemleak step.
# The second scan waits only for what is left of SCAN_GAP after the first: a scan of a debug kernel takes 13-20 s
# under TCG, so a leak made before the first one is old enough for the second at once.
SCAN_SCRIPT = (f"f={KMEMLEAK}; [ -e $f ] || {{ echo '{ABSENT}'; exit 3; }}; t0=$(date +%s); "
               f"echo scan > $f || {{ echo '{SCAN_FAILED}'; exit 4; }}; left=$((t0 + {SCAN_GAP} - $(date +%s))); "
               f"[ $left -le 0 ] || sleep $left; "
               f"echo scan > $f || {{ echo '{SCAN_FAILED}'; exit 4; }}; cat $f")


def judge(stdout: str, stderr: str, exit_status: int | None, timed_out: bool, release: str,
          seconds: float, cut_off: str = "") -> KmemleakReport:
    """The scan's output -> leaks (known false positives set apart), or kmemleak_off saying why there is no
    report. ``exit_status`` None: the scan never ended; ``cut_off``: why it never ended, when something other
    than its own timeout ended it (a LAVA job that ended during the scan)."""
    report = KmemleakReport(seconds=round(seconds, 2))
    if timed_out or exit_status != 0 or cut_off:
        why = ("its debugfs file is missing (DEBUG_FS not mounted, or kmemleak off at boot)" if ABSENT in stdout
               else cut_off if cut_off
               else "writing 'scan' failed (kmemleak has turned itself off)" if SCAN_FAILED in stdout
               else f"the scan did not finish within {SCAN_TIMEOUT:.0f} s" if timed_out
               else f"exit {exit_status}")
        report.findings.append(_off(f"kmemleak: no leak report: {why}", [stderr.strip()[-300:]]))
        return report
    known = load_known()
    for f in objects(stdout):
        reason = known_reason(f, release, known)
        if reason is None:
            report.findings.append(f)
        else:
            report.known.append(f"{f.line} {' <- '.join(backtrace(f)[:3])}: known ({reason})")
    return report


def info(report: KmemleakReport, log: Path) -> KmemleakInfo:
    """What the reports say of a scan that ran."""
    leaks = [f for f in report.findings if f.kind == "kmemleak"]
    return KmemleakInfo(seconds=report.seconds, leaks=len(leaks), known=report.known or None, log=str(log))


def scan(session: "GuestSession", run_dir: Path, release: str) -> KmemleakReport:
    """Scan twice, read the report, write it to kmemleak.log, judge each object."""
    t0 = time.monotonic()
    res = session.run(["sh", "-c", SCAN_SCRIPT], timeout=SCAN_TIMEOUT)
    (run_dir / "kmemleak.log").write_text(res.stdout + (f"\n--- stderr\n{res.stderr}" if res.stderr else ""))
    return judge(res.stdout, res.stderr, res.exit_status, res.timed_out, release, time.monotonic() - t0)
