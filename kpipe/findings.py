"""Kernel log findings: panic, Oops, BUG, WARNING, KASAN, GPF, hung task, RCU stall.

``Scanner`` is fed one console or dmesg line at a time (live, from the console reader thread) and keeps
each finding with the ~20 lines that follow it (the report: registers, call trace). ``scan_text`` does
the same for a whole text (the guest's dmesg at the end of a run).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from .results import Finding

CONTEXT_LINES = 20

# Order matters: the first pattern that matches a line names its kind.
PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("panic", re.compile(r"(?<!end )Kernel panic - not syncing")),   # not the "---[ end Kernel panic" line
    ("kasan", re.compile(r"BUG: KASAN: |KASAN: \S+ in ")),
    ("gpf", re.compile(r"general protection fault")),
    ("oops", re.compile(r"\bOops(?::| -) |Internal error: Oops")),
    ("hung_task", re.compile(r"INFO: task \S+ blocked for more than \d+ seconds")),
    ("rcu_stall", re.compile(r"rcu: INFO: \S+ (?:self-)?detected stalls?|rcu_\w+ detected stalls? on CPU")),
    ("bug", re.compile(r"\bBUG: |kernel BUG at ")),
    ("warning", re.compile(r"WARNING: CPU: \d+ PID: \d+|WARNING: at \S+")),
)
# "------------[ cut here ]------------" opens a WARNING or BUG report: it is a finding of its own only
# when no named report follows within the next lines.
CUT_HERE = re.compile(r"-+\[ cut here \]-+")
CUT_LOOKAHEAD = 3

_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")


def classify(line: str) -> str | None:
    for kind, rx in PATTERNS:
        if rx.search(line):
            return kind
    return None


@dataclass
class _Open:
    kind: str
    line: str
    context: list[str] = field(default_factory=list)


class Scanner:
    """Streaming scanner: ``feed(line)`` for each line; ``findings`` lists what was seen so far."""

    def __init__(self, source: str, context_lines: int = CONTEXT_LINES):
        self.source = source
        self.context_lines = context_lines
        self._items: list[_Open] = []
        self._cut: tuple[str, int] | None = None   # (cut-here line, lines seen since)
        self._lock = threading.Lock()

    def feed(self, line: str) -> str | None:
        """Scan one line; returns the kind when this line starts a finding."""
        line = line.rstrip("\r\n")
        with self._lock:
            for item in self._items:
                if len(item.context) < self.context_lines:
                    item.context.append(line)
            kind = classify(line)
            if kind:
                self._items.append(_Open(kind, line))
                self._cut = None
                return kind
            if CUT_HERE.search(line):
                self._flush_cut()
                self._cut = (line, 0)
                return None
            if self._cut is not None:
                cut_line, n = self._cut
                self._cut = (cut_line, n + 1)
                if n + 1 >= CUT_LOOKAHEAD:
                    return self._flush_cut()
            return None

    def _flush_cut(self) -> str | None:
        if self._cut is None:
            return None
        cut_line, _ = self._cut
        self._cut = None
        self._items.append(_Open("warning", cut_line))
        return "warning"

    def close(self) -> None:
        with self._lock:
            self._flush_cut()

    @property
    def findings(self) -> list[Finding]:
        with self._lock:
            items = list(self._items)
            if self._cut is not None:       # a trailing cut-here with nothing after it yet
                items.append(_Open("warning", self._cut[0]))
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


def strip_timestamp(line: str) -> str:
    return _TIMESTAMP.sub("", line)


def summarize(findings: list[Finding]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in findings:
        out[f.kind] = out.get(f.kind, 0) + 1
    return out
