"""A KTAP / TAP 13 parser that keeps every nesting level.

Pure functions, no I/O. Understood:
  * version lines ``TAP version 13`` / ``KTAP version 1`` and the ``# Subtest: NAME`` header;
  * the plan ``1..N`` (first or last; ``1..0 # SKIP reason`` skips the whole document);
  * test points ``ok N desc # DIRECTIVE reason`` / ``not ok ...`` with SKIP, TODO, XFAIL, XPASS, TIMEOUT,
    ERROR directives (case-insensitive; ``\\#`` is a literal ``#`` in a description);
  * ``Bail out! reason``;
  * nesting by indentation (KTAP: the subtest's lines are indented and precede the parent's test point)
    and, when a version line shows it is a document, by the ``# `` prefix the kselftest runner adds to a
    test's output.

Every test point becomes its own :class:`TestResult`, in order: two points with the same name are two
results, so a later pass can never hide an earlier failure. A parent reported ``ok`` whose subtests
failed is FAIL, with the reason in its detail. Missing test points (against the plan, or after a bail
out) become ERROR results.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..report.results import Status, TestResult

_VERSION = re.compile(r"^(K?TAP) version (\d+)\s*$")
_PLAN = re.compile(r"^1\.\.(\d+)\s*(?:#\s*(.*))?$")
_POINT = re.compile(r"^(not ok|ok)\b\s*(\d+)?\s*(?:-\s+)?(.*)$")
_BAIL = re.compile(r"^Bail out!\s*(.*)$")
_SUBTEST = re.compile(r"^#\s*Subtest:\s*(.*)$")
_DIRECTIVES = {"SKIP": Status.SKIP, "TODO": Status.XFAIL, "XFAIL": Status.XFAIL,
               "XPASS": Status.FAIL, "TIMEOUT": Status.FAIL, "ERROR": Status.ERROR}


@dataclass(frozen=True)
class Point:
    """A test point of this level as printed, for readers that interpret their own diagnostics (the
    verifier's ``# case: observed X expected Y`` lines): the ``#`` and free lines since the previous point."""
    ok: bool
    number: int
    name: str
    directive: str
    diagnostics: tuple[str, ...]


@dataclass
class KtapDoc:
    """One parsed document (a level): its results and what was wrong with it as a whole."""
    tests: list[TestResult] = field(default_factory=list)
    version: str = ""              # "TAP version 13" / "KTAP version 1" / "" when absent
    plan: int | None = None
    plan_directive: str = ""       # "SKIP reason" from ``1..0 # SKIP reason``
    name: str = ""                 # from "# Subtest: NAME"
    bailed: str | None = None      # the Bail out! reason
    problems: list[str] = field(default_factory=list)   # plan mismatches etc., also present as ERROR results
    diagnostics: list[str] = field(default_factory=list)  # lines after the last test point
    preamble: list[str] = field(default_factory=list)     # lines before the version line
    points: list[Point] = field(default_factory=list)     # this level's test points as printed

    @property
    def is_ktap(self) -> bool:
        return bool(self.version or self.plan is not None or self.tests)

    def status(self) -> Status:
        """The document's overall status: ERROR/FAIL when anything bad, SKIP when all skipped."""
        statuses = [t.status for t in self.tests]
        if Status.ERROR in statuses:
            return Status.ERROR
        if Status.FAIL in statuses:
            return Status.FAIL
        if statuses and all(s == Status.SKIP for s in statuses):
            return Status.SKIP
        if not statuses and self.plan == 0 and self.plan_directive.upper().startswith("SKIP"):
            return Status.SKIP
        return Status.PASS


def looks_like_ktap(text: str) -> bool:
    """True when the text (or its first level) carries a version line, a plan or a test point."""
    for raw in text.splitlines():
        line = raw.strip()
        if _VERSION.match(line) or _PLAN.match(line) or _POINT.match(line):
            return True
    return False


def parse_ktap(text: str, suite: str = "ktap") -> list[TestResult]:
    """The nested results of a KTAP / TAP text (an empty list for text with no test points)."""
    return parse_document(text, suite).tests


def parse_document(text: str, suite: str = "ktap") -> KtapDoc:
    return _parse_level(text.splitlines(), suite)


def _split_directive(rest: str) -> tuple[str, str]:
    """``desc # directive`` -> (desc, directive); ``\\#`` stays part of the description.

    Accepted format: "[<description>] [# <DIRECTIVE> [<reason>]]"
    """
    m = re.search(r"(?<!\\)#", rest)
    if not m:
        return rest.strip().replace("\\#", "#"), ""
    return rest[:m.start()].strip().replace("\\#", "#"), rest[m.end():].strip()


def _directive_status(directive: str) -> tuple[str, Status | None]:
    """The directive's key and the status it imposes (``("", None)`` for none or an unknown word).

    Accepted format: "<WORD>[...] [<reason>]" where WORD starts with SKIP, TODO, XFAIL, XPASS, TIMEOUT
    or ERROR, in any case.
    """
    word = directive.split(maxsplit=1)[0].upper() if directive else ""
    for key, status in _DIRECTIVES.items():
        if word.startswith(key):
            return key, status
    return "", None


def _dedent(lines: list[str]) -> list[str]:
    """Remove the common leading whitespace (tabs count as 8 columns) of the non-blank lines."""
    expanded = [ln.expandtabs(8) for ln in lines]
    widths = [len(ln) - len(ln.lstrip()) for ln in expanded if ln.strip()]
    cut = min(widths) if widths else 0
    return [ln[cut:] for ln in expanded]


def _unhash(lines: list[str]) -> list[str]:
    """Strip the ``# `` prefix the kselftest runner puts before each line of a test's output."""
    out = []
    for ln in lines:
        s = ln[1:]
        out.append(s[1:] if s.startswith(" ") else s)
    return out


def _has_version(lines: list[str]) -> bool:
    return any(_VERSION.match(ln.strip()) for ln in lines)


def _make_point(m: re.Match[str], number: int, suite: str, children: KtapDoc | None,
                diag: list[str]) -> TestResult:
    ok = m.group(1) == "ok"
    desc, directive = _split_directive(m.group(3))
    key, dstatus = _directive_status(directive)
    if dstatus is not None:
        status = dstatus
        if key == "TODO":
            status = Status.PASS if ok else Status.XFAIL
    else:
        status = Status.PASS if ok else Status.FAIL
    if not desc and children is not None and children.name:
        desc = children.name
    name = desc or f"test {number}"
    observed = f"{m.group(1)} {number}" + (f" # {directive}" if directive else "")
    details = list(diag)
    if directive:
        details.insert(0, directive)
    if key == "XPASS":
        details.insert(0, "unexpected pass (XPASS) counts as a failure")
    subtests: tuple[TestResult, ...] = ()
    if children is not None:
        subtests = tuple(children.tests)
        bad = [t for t in children.tests if t.status.bad]
        if bad and status not in (Status.FAIL, Status.ERROR):
            names = ", ".join(t.name for t in bad[:5]) + (" ..." if len(bad) > 5 else "")
            details.insert(0, f"reported '{m.group(1)}' but {len(bad)} subtest(s) failed: {names}")
            status = Status.FAIL
        if children.problems:
            details += [f"subtests: {p}" for p in children.problems]
    return TestResult(suite=suite, name=name, status=status, expected="ok", observed=observed,
                      detail="\n".join(details), subtests=subtests)


@dataclass
class _Level:
    """The state of one level while its lines are read: the document so far and the lines not yet
    attached to a test point."""
    suite: str
    doc: KtapDoc = field(default_factory=KtapDoc)
    indented: list[str] = field(default_factory=list)   # lines indented deeper than this level (a KTAP subtest)
    hashed: list[str] = field(default_factory=list)     # '#' lines since the last test point
    other: list[str] = field(default_factory=list)      # free text since the last test point
    numbers: list[int] = field(default_factory=list)


def _parse_level(lines: list[str], suite: str) -> KtapDoc:
    level = _Level(suite)
    for raw in lines:
        raw = raw.rstrip("\r\n")
        if _parse_indented(level, raw):
            continue
        line = raw.rstrip()
        if (_parse_version_line(level, line) or _parse_subtest_header(level, line)
                or _parse_diagnostic(level, line) or _parse_plan(level, line)):
            continue
        if _parse_bail_out(level, line):
            break
        if _parse_test_line(level, line):
            continue
        level.other.append(line)
    doc = level.doc
    doc.diagnostics = level.hashed + level.other + [ln.strip() for ln in level.indented if ln.strip()]
    _check_plan(doc, level.numbers, suite)
    return doc


def _parse_indented(level: _Level, raw: str) -> bool:
    """A blank line (kept only inside a subtest being collected) or a line of a nested KTAP subtest.

    Accepted format: "<whitespace><any line of the subtest>" or an empty/blank line.
    """
    if not raw.strip():
        if level.indented:
            level.indented.append(raw)
        return True
    if raw[0] in " \t":
        level.indented.append(raw)
        return True
    return False


def _parse_version_line(level: _Level, line: str) -> bool:
    """The document's version line; one after the first (or after a test point) is free text.

    Accepted format: "KTAP version <n>" or "TAP version <n>"
    """
    if not _VERSION.match(line):
        return False
    doc = level.doc
    if not doc.version and not doc.tests:
        doc.version = line
        doc.preamble += level.hashed + level.other   # e.g. the runner's "selftests: vm: X"
        level.hashed, level.other = [], []
    else:
        level.other.append(line)
    return True


def _parse_subtest_header(level: _Level, line: str) -> bool:
    """The level's name, read only before its first test point and only once.

    Accepted format: "# Subtest: <name>"
    """
    ms = _SUBTEST.match(line)
    if ms and not level.doc.tests and not level.doc.name:
        level.doc.name = ms.group(1).strip()
        return True
    return False


def _parse_diagnostic(level: _Level, line: str) -> bool:
    """A diagnostic line, kept for the next test point (or for a hashed nested document in it).

    Accepted format: "# <diagnostic text>"
    """
    if line.startswith("#"):
        level.hashed.append(line)
        return True
    return False


def _parse_plan(level: _Level, line: str) -> bool:
    """The plan; a second one is a problem and otherwise ignored.

    Accepted format: "1..<N> [# <directive>]"
    """
    mp = _PLAN.match(line)
    if not mp:
        return False
    doc = level.doc
    if doc.plan is None:
        doc.plan = int(mp.group(1))
        doc.plan_directive = (mp.group(2) or "").strip()
    else:
        doc.problems.append(f"second plan line {line!r} ignored (first was 1..{doc.plan})")
    return True


def _parse_bail_out(level: _Level, line: str) -> bool:
    """A bail out, which ends the level (True: stop reading).

    Accepted format: "Bail out! [<reason>]"
    """
    mb = _BAIL.match(line)
    if not mb:
        return False
    level.doc.bailed = mb.group(1).strip() or "(no reason given)"
    return True


def _parse_test_line(level: _Level, line: str) -> bool:
    """A test point, with the subtest and diagnostics collected since the previous one.

    Accepted format: "ok|not ok [<number>] [- ]<description> [# <directive> [<reason>]]"
    (an omitted number is the previous one plus one).
    """
    mpt = _POINT.match(line)
    if not mpt:
        return False
    numbers = level.numbers
    number = int(mpt.group(2)) if mpt.group(2) else (numbers[-1] + 1 if numbers else 1)
    children, diag = _parse_subtest(level)
    desc, directive = _split_directive(mpt.group(3))
    level.doc.points.append(Point(mpt.group(1) == "ok", number, desc, directive,
                                  tuple(level.hashed + level.other)))
    level.doc.tests.append(_make_point(mpt, number, level.suite, children, diag))
    numbers.append(number)
    level.indented, level.hashed, level.other = [], [], []
    return True


def _parse_subtest(level: _Level) -> tuple[KtapDoc | None, list[str]]:
    """The nested document that belongs to the coming test point, if any, and that point's diagnostics.

    Accepted format: either the lines indented under this level (KTAP), or, when they carry a version
    line, the '#'-prefixed lines the kselftest runner prints for a test's own KTAP output:
    "# KTAP version 1", "# 1..N", "# ok 1 ...".
    """
    children = None
    diag = level.hashed + level.other
    if level.indented:
        sub = _parse_level(_dedent(level.indented), level.suite)
        if sub.is_ktap:
            children = sub
        else:
            diag += [ln.strip() for ln in level.indented if ln.strip()]
    if children is None and level.hashed and _has_version(_unhash(level.hashed)):
        sub = _parse_level(_unhash(level.hashed), level.suite)
        if sub.is_ktap:
            children = sub
            diag = [f"# {d}" for d in sub.diagnostics] + level.other
    return children, diag


def _check_plan(doc: KtapDoc, numbers: list[int], suite: str) -> None:
    seen = set(numbers)
    dups = sorted({x for x in numbers if numbers.count(x) > 1})
    if dups:
        doc.problems.append(f"test point number(s) reported more than once: {', '.join(map(str, dups))}")
    why = f"bailed out ({doc.bailed})" if doc.bailed is not None else ""
    if doc.plan is not None:
        missing = [k for k in range(1, doc.plan + 1) if k not in seen]
        extra = sorted(x for x in seen if x > doc.plan)
        if missing:
            doc.problems.append(f"plan 1..{doc.plan} but {len(missing)} test point(s) never reported: "
                                f"{_ranges(missing)}" + (f"; {why}" if why else ""))
            for k in missing[:50]:
                doc.tests.append(TestResult(suite=suite, name=f"test {k} (missing)", status=Status.ERROR,
                                            expected="ok", observed="not reported",
                                            detail=f"planned in 1..{doc.plan} but never reported"
                                            + (f"; {why}" if why else "")))
        if extra:
            doc.problems.append(f"test point(s) {_ranges(extra)} beyond the plan 1..{doc.plan}")
            doc.tests.append(TestResult(suite=suite, name="plan", status=Status.ERROR, expected=f"1..{doc.plan}",
                                        observed=f"{len(numbers)} test points",
                                        detail=doc.problems[-1]))
    elif doc.bailed is not None:
        doc.problems.append(f"bailed out before any plan: {doc.bailed}")
    if doc.bailed is not None and (doc.plan is None or not [k for k in range(1, doc.plan + 1) if k not in seen]):
        doc.tests.append(TestResult(suite=suite, name="Bail out!", status=Status.ERROR, observed="Bail out!",
                                    detail=doc.bailed))


def _ranges(nums: list[int]) -> str:
    out: list[str] = []
    start: int | None = None
    prev = 0                    # read only once start is set, which sets it too
    for x in sorted(nums):
        if start is None:
            start = prev = x
        elif x == prev + 1:
            prev = x
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = x
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)
