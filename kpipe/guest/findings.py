"""Kernel log findings: every report a (debug) kernel prints when it misbehaves.

``Scanner`` is fed one console or dmesg line at a time (live, from the console reader thread) and keeps
each finding with the lines that follow it (the report: registers, the KALLSYMS-symbolized call trace).
``scan_text`` does the same for a whole text (the guest's dmesg at the end of a run).

Kinds (the first pattern that matches a line names it):
  panic, kasan, kfence, ubsan, lockdep_circular, lockdep_recursive, lockdep_inconsistent, rcu_suspicious,
  sleep_in_atomic, kernel_bug, vm_bug_on, bad_page_state, bad_page_map, bad_rss_counter, soft_lockup, hard_lockup,
  hung_task, rcu_stall, kernel_bug, vm_bug_on, gpf, oops, kmemleak (an unreferenced object in kmemleak's report),
  kmemleak_off (the detector turned itself off), bug, warning, and blocked_task (a task in D state listed by SysRq-w,
  only inside a "Show Blocked State" dump).
FATAL_KINDS are the reports after which the faulting task died (holding whatever locks it had).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from ..report.results import Finding

CONTEXT_LINES = 40
LONG_CONTEXT_LINES = 90          # lockdep reports list both lock chains and two traces
LONG_CONTEXT_KINDS = frozenset({"lockdep_circular", "lockdep_recursive", "lockdep_inconsistent", "kasan",
                                "kfence", "rcu_stall", "hung_task", "soft_lockup", "hard_lockup"})

# Order matters: the first pattern that matches a line names its kind.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("panic", re.compile(r"(?<!end )Kernel panic - not syncing")),   # not the "---[ end Kernel panic" line
    ("kasan", re.compile(r"BUG: KASAN: |KASAN: \S+ in ")),
    ("kfence", re.compile(r"BUG: KFENCE: ")),
    ("ubsan", re.compile(r"UBSAN: \S")),
    ("lockdep_circular", re.compile(r"WARNING: possible circular locking dependency detected")),
    ("lockdep_recursive", re.compile(r"WARNING: possible recursive locking detected")),
    ("lockdep_inconsistent", re.compile(r"WARNING: inconsistent lock state")),
    ("lockdep", re.compile(r"WARNING: (?:possible irq lock inversion dependency detected|"
                           r"[\w-]+-safe -> [\w-]+-unsafe lock order detected|bad unlock balance detected!|"
                           r"held lock freed!|lock held when returning to user space!|"
                           r"suspicious unlock detected|Nested lock was not taken)|"
                           # lockdep_init_map / register_lock_class: a lock whose key lives in dynamic memory
                           r"INFO: trying to register non-static key")),
    ("rcu_suspicious", re.compile(r"WARNING: suspicious RCU usage")),
    ("sleep_in_atomic", re.compile(r"BUG: sleeping function called from invalid context|"
                                   r"BUG: scheduling while atomic")),
    ("bad_page_state", re.compile(r"BUG: Bad page state in process")),
    ("bad_page_map", re.compile(r"BUG: Bad page map in process")),
    ("bad_rss_counter", re.compile(r"BUG: Bad rss-counter state")),
    ("soft_lockup", re.compile(r"BUG: soft lockup - CPU#\d+ stuck")),
    # kernel/watchdog_hld.c (perf NMI watchdog, where the arch has one): "Watchdog detected hard LOCKUP on cpu %d"
    ("hard_lockup", re.compile(r"Watchdog detected hard LOCKUP on cpu \d+")),
    ("hung_task", re.compile(r"INFO: task \S+ blocked for more than \d+ seconds")),
    # tree_stall.h "INFO: %s detected stalls on CPUs/tasks", "INFO: %s self-detected stall on CPU";
    # tree_exp.h "INFO: %s detected expedited stalls on CPUs/tasks"; tasks.h "INFO: rcu_tasks[_trace] detected
    # stalls on tasks" (%s: the flavour, rcu_sched, rcu_preempt, rcu_bh ...)
    ("rcu_stall", re.compile(r"INFO: [\w-]+ (?:self-)?detected (?:expedited )?stalls?\b|"
                             r"rcu_\w+ detected stalls? on CPU")),
    ("kernel_bug", re.compile(r"kernel BUG at \S+")),
    # DEBUG_VM dumps printed before the BUG: VM_BUG_ON_PAGE/_FOLIO name the assertion; VM_BUG_ON_VMA/_MM
    # print dump_vma()/dump_mm() (only then does a line start with "vma <ptr> start <ptr> end").
    ("vm_bug_on", re.compile(r"page dumped because: VM_BUG_ON|^vma [0-9a-f]{8,} start [0-9a-f]{8,} end |"
                             r"^mm [0-9a-f]{8,} mmap [0-9a-f]{8,} seqnum ")),
    ("gpf", re.compile(r"general protection fault")),
    # x86 die(): "Oops: 0002 [#1]", "invalid opcode: 0000 [#1]" (a BUG()); arm64: "Internal error: Oops"
    ("oops", re.compile(r"\bOops(?::| -) |Internal error: Oops|Unable to handle kernel |: [0-9a-f]{4} \[#\d+\]")),
    ("kmemleak", re.compile(r"^unreferenced object 0x[0-9a-f]+ \(size \d+\)")),
    # kmemleak turned itself off (its early pool overflowed, an allocation of its own failed): every later
    # leak goes unseen, so the run cannot claim there was none
    ("kmemleak_off", re.compile(r"kmemleak: (?:Memory pool empty|Kernel memory leak detector disabled|"
                                r"Cannot allocate a kmemleak_object|Early log buffer exceeded)")),
    ("bug", re.compile(r"\bBUG: ")),
    ("warning", re.compile(r"WARNING: CPU: \d+ PID: \d+|WARNING: at \S+")),
)
KINDS = tuple(k for k, _ in PATTERNS) + ("blocked_task",)
FATAL_KINDS = frozenset({"panic", "kernel_bug", "oops", "gpf"})
# Reports that say the kernel (or a task in it) stopped making progress: before the guest is ready they end the
# boot (no later line can undo them); after it, the tests are abandoned once they persist.
ENDS_BOOT_KINDS = FATAL_KINDS | frozenset({"soft_lockup", "hard_lockup", "hung_task", "rcu_stall"})
# RUN_ERROR_KINDS (kpipe.report.results): not a report of the kernel's behaviour but of kpipe's view of it, e.g. the
# leak detector is off, so the run cannot say there was no leak.
BLOCKED_KINDS = frozenset({"hung_task", "blocked_task"})     # reports that name a task stuck in D state
# the kernel (or a task in it) stopped progressing
STUCK_KINDS = frozenset({"hung_task", "soft_lockup", "hard_lockup", "rcu_stall"})

# Lines that look like reports but are not (lockdep capacity, detector banners): never findings.
NOT_A_FINDING = re.compile(
    r"turning off the locking correctness validator|BUG: MAX_LOCKDEP_\w+ too low|"
    r"BUG: MAX_STACK_TRACE_ENTRIES too low|BUG: MAX_LOCK_DEPTH too low|"
    r"BUG: key [0-9a-f]+ has not been registered|INFO: lockdep is turned off|"
    # x86 show_signal(): a user-space program's fault, reported as it gets its SIGSEGV: not a kernel report
    r"traps: \S.*\[\d+\] (?:general protection|trap |segfault)")

# "------------[ cut here ]------------" opens a WARNING or BUG report: it is a finding of its own only
# when no named report follows within the next lines.
CUT_HERE = re.compile(r"-+\[ cut here \]-+")
CUT_LOOKAHEAD = 3
SAME_OOPS_LINES = 15             # an Oops line this close after another belongs to the same report

# SysRq-w: "sysrq: Show Blocked State", then one entry per task in D state (5.9+: "task:comm state:D ...";
# older: "comm D stack pid ppid flags"). Only such entries inside that dump are blocked-task findings.
SYSRQ_HEADER = re.compile(r"sysrq: (?:SysRq : )?(\w[\w -]*)")
SHOW_BLOCKED = "Show Blocked State"
SYSRQ_WINDOW = 400               # lines after the header that may still belong to the dump
BLOCKED_TASK = re.compile(r"^\s*task:(?P<comm>.+?)\s+state:D\b|^(?P<old>\S.{0,15}?)\s+D\s+[0-9a-f]+\s+\d+\s+\d+ 0x")
# A vfork() parent sleeps killably (listed as D) until its child execs or exits (kernel/fork.c: wait_for_vfork_done,
# inlined into kernel_clone): it holds no lock and waits on a child that runs, so its entry says nothing about the
# kernel (had the child hung, the child would be listed). kpipe's own command wrapper (busybox timeout) is such a
# parent for a moment at every guest command, its probe's own included: seen listed by the probe it ran.
VFORK_WAIT = re.compile(r"\b(?:__do_sys_vfork|__arm64_sys_vfork|__x64_sys_vfork|wait_for_vfork_done)\+0x")
ENTRY_LINES = 60                 # a SysRq-w entry is judged once its call trace is read: at most this many lines

_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
# a kernel line that starts inside another writer's line on the console (the guest's sshd logging to the same
# console, or another CPU's partial line): "dropbear[97]: Child conn[   33.1] watchdog: BUG: soft lockup ..."
_EMBEDDED_TIMESTAMP = re.compile(r"(?<=\S)\s*(?=\[\s*\d+\.\d{3,}\] )")
_FRAME = re.compile(r"(?:^|[\s:])(?:\? )?([A-Za-z_][\w.]*\+0x[0-9a-f]+/0x[0-9a-f]+)")   # also "RIP: 0010:f+0x1/0x2"


def strip_timestamp(line: str) -> str:
    return _TIMESTAMP.sub("", line)


def segments(line: str) -> list[str]:
    """A console line split where a kernel line starts inside it (an embedded printk timestamp)."""
    parts = _EMBEDDED_TIMESTAMP.split(line)
    return [p for p in parts if p.strip()] or [line]


def _classify_one(bare: str) -> str | None:
    if NOT_A_FINDING.search(bare):
        return None
    for kind, rx in PATTERNS:
        if rx.search(bare):
            return kind
    return None


def match(line: str) -> tuple[str, str] | None:
    """(kind, the segment of ``line`` that starts the report), else None (see ``segments``)."""
    for seg in segments(line):
        kind = _classify_one(strip_timestamp(seg).strip())
        if kind:
            return kind, seg
    return None


def classify(line: str) -> str | None:
    """The kind of report ``line`` starts (in any segment of it), else None."""
    m = match(line)
    return m[0] if m else None


def trace_of(finding: Finding) -> list[str]:
    """The symbolized frames (``func+0xoff/0xlen``) of a finding's report, in order."""
    return [m.group(1) for ln in finding.context for m in [_FRAME.search(strip_timestamp(ln))] if m]


_HUNG_TASK = re.compile(r"INFO: task (?P<comm>.+?):(?P<pid>\d+) blocked for more than")


def blocked_task_name(line: str) -> str | None:
    """The task a hung-task report or a SysRq-w entry names ("comm" or "comm:pid"), else None."""
    bare = strip_timestamp(line)
    m = _HUNG_TASK.search(bare)
    if m:
        return f"{m.group('comm')}:{m.group('pid')}"
    m = BLOCKED_TASK.search(bare)
    if not m:
        return None
    name = (m.group("comm") or m.group("old") or "").strip()
    pid = re.search(r"\bpid:\s*(\d+)", bare)
    return f"{name}:{pid.group(1)}" if pid else name


@dataclass
class _Open:
    kind: str
    line: str
    limit: int
    context: list[str] = field(default_factory=list)


class Scanner:
    """Streaming scanner: ``feed(line)`` for each line; ``findings`` lists what was seen so far."""

    def __init__(self, source: str, context_lines: int = CONTEXT_LINES):
        self.source = source
        self.context_lines = context_lines
        self._items: list[_Open] = []
        self._cut: tuple[str, int] | None = None   # (cut-here line, lines seen since)
        self._cut_text: list[str] = []              # those lines: the report's own message (WARN's format text)
        self._sysrq_w_left = 0                      # lines left in a SysRq-w dump
        self._entry: _Open | None = None            # a SysRq-w entry whose call trace is still being read
        self._entry_lines = 0                       # lines read of it
        self.vfork_waits: list[str] = []            # entries set aside: a vfork parent waiting for its child
        self._lock = threading.Lock()

    def _limit(self, kind: str) -> int:
        return max(self.context_lines, LONG_CONTEXT_LINES) if kind in LONG_CONTEXT_KINDS else self.context_lines

    def feed(self, line: str) -> str | None:
        """Scan one line; returns the kind when this line starts a finding (a SysRq-w entry: when its call trace
        has been read, at the line after it)."""
        line = line.rstrip("\r\n")
        with self._lock:
            for item in self._items:
                if len(item.context) < item.limit:
                    item.context.append(line)
            bare = strip_timestamp(line)
            hdr = SYSRQ_HEADER.search(bare)
            in_dump = bool(self._sysrq_w_left) and not hdr
            is_entry = in_dump and blocked_task_name(bare) is not None
            entry_done = self._end_entry(bare, line, ends=bool(hdr) or is_entry or not in_dump)
            if hdr:
                self._sysrq_w_left = SYSRQ_WINDOW if hdr.group(1).startswith(SHOW_BLOCKED) else 0
                return entry_done
            if in_dump:
                self._sysrq_w_left -= 1
                if is_entry:
                    self._entry, self._entry_lines = _Open("blocked_task", line, self._limit("blocked_task")), 0
                    return entry_done
                if entry_done:
                    return entry_done
            m = match(line)
            kind, seg = m if m else (None, line)
            if kind == "oops" and self._same_oops():
                return None                 # arm64: "Unable to handle kernel ..." then "Internal error: Oops"
            if kind:
                # the lines between "cut here" and the report's first line are its message (WARN(cond, fmt)
                # prints fmt before "WARNING: CPU:"): they open its context
                lead = list(self._cut_text) if self._cut is not None else []
                self._items.append(_Open(kind, seg, self._limit(kind), lead))
                self._cut, self._cut_text = None, []
                return kind
            if CUT_HERE.search(line):
                self._flush_cut()
                self._cut, self._cut_text = (line, 0), []
                return None
            if self._cut is not None:
                cut_line, n = self._cut
                self._cut = (cut_line, n + 1)
                self._cut_text.append(line)
                if n + 1 >= CUT_LOOKAHEAD:
                    return self._flush_cut()
            return None

    def _end_entry(self, bare: str, line: str, ends: bool) -> str | None:
        """The open SysRq-w entry, at ``line``: set aside when its trace shows a vfork wait; a finding
        ("blocked_task") when ``line`` no longer belongs to it (the next entry, the next dump, the window's end)
        or its trace is read; else still open (None)."""
        e = self._entry
        if e is None:
            return None
        if not ends:
            self._entry_lines += 1
            if len(e.context) < e.limit:
                e.context.append(line)
            if VFORK_WAIT.search(bare):
                self.vfork_waits.append(e.line)
                self._entry = None
                return None
            if self._entry_lines < ENTRY_LINES:
                return None
        self._items.append(e)
        self._entry = None
        return "blocked_task"

    def _same_oops(self) -> bool:
        last = self._items[-1] if self._items else None
        return last is not None and last.kind == "oops" and len(last.context) <= SAME_OOPS_LINES

    def _flush_cut(self) -> str | None:
        if self._cut is None:
            return None
        cut_line, _ = self._cut
        self._cut, lead = None, self._cut_text
        self._cut_text = []
        self._items.append(_Open("warning", cut_line, self.context_lines, lead))
        return "warning"

    def close(self) -> None:
        with self._lock:
            self._end_entry("", "", ends=True)
            self._flush_cut()

    @property
    def findings(self) -> list[Finding]:
        with self._lock:
            items = list(self._items)
            if self._cut is not None:       # a trailing cut-here with nothing after it yet
                items.append(_Open("warning", self._cut[0], 0))
            return [Finding(kind=i.kind, source=self.source, line=i.line, context=tuple(i.context))
                    for i in items]

    def has(self, kind: str) -> bool:
        with self._lock:
            return any(i.kind == kind for i in self._items)


def scan_text(text: str, source: str) -> list[Finding]:
    s = Scanner(source)
    for line in text.splitlines():
        s.feed(line)
    s.close()
    return s.findings


def not_seen_on(console: list[Finding], dmesg: list[Finding]) -> list[Finding]:
    """The dmesg findings the console did not already report. The console carries the same printk records as
    the log buffer (same line, same timestamp) unless its loglevel filtered them or it fell behind: a record
    read twice is one report, counted once (the console's, read live)."""
    seen = {f.line for f in console}
    return [f for f in dmesg if f.line not in seen]


def summarize(findings: list[Finding]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in findings:
        out[f.kind] = out.get(f.kind, 0) + 1
    return out


def describe(f: Finding) -> str:
    """One line for a report: kind, the report's line and (for a blocked task) the task's name."""
    if f.kind in BLOCKED_KINDS:
        return f"blocked_task {blocked_task_name(f.line)!r} in {f.source}: {strip_timestamp(f.line).strip()}"
    return f"{f.kind} in {f.source}: {strip_timestamp(f.line).strip()}"
