"""A suite's static C verifier (suites/<name>/verify/*.c with the shared harness in suites/lib): build it for an
arch, pick the expectation policy, run it in the guest, and turn its TAP into results.

The expectations are the suite's data (its expectations.toml): one expected outcome per case and policy. The
binary gets the chosen policy's column as a ``case=expected`` file and judges each case itself; this
module re-judges every case against the same table, so a case the binary left out, a crash, a timeout or
a binary run with the wrong expectations never passes silently.
"""
from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterable

from .. import cache, proc
from ..build import toolchain
from ..arches import Arch
from ..errors import BuildError, InfraError, UsageError
from .ktap import parse_document
from ..progress import note
from ..report.results import Status, TestResult
from .suite import LIB_DIR, Pause, Suite
from .suite import get as get_suite

if TYPE_CHECKING:
    from .selftests import Session

SUITE = "verifier"                  # the results' suite name, whichever suite's verifier ran
REMOTE_DIR = "/tmp/kpipe-verify"
CFLAGS = ("-std=c11", "-O2", "-Wall", "-Wextra", "-static", "-pthread")

_CASE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_OUTCOME = re.compile(r"^(ok|skip|E[A-Z0-9]+|xfail:[A-Z0-9]+)$")
XFAIL_PREFIX = "xfail:"


# ------------------------------------------------------------------------------------------ expectations

@dataclass(frozen=True)
class Case:
    name: str
    description: str
    outcomes: dict[str, str]        # policy -> "ok" | "skip" | errno name | "xfail:CODE"
    requires: str = ""              # the matrix case whose move a data case depends on
    xfail: dict[str, str] = field(default_factory=dict)    # policy -> why CODE is the known failure there


@dataclass(frozen=True)
class Expectations:
    path: Path
    policies: dict[str, str]        # policy -> what it means (in file order)
    cases: dict[str, Case]          # in file order
    suite: Suite

    def check(self, policy: str) -> str:
        return check_policy(policy, self.policies)

    def column(self, policy: str) -> dict[str, str]:
        self.check(policy)
        return {name: c.outcomes[policy] for name, c in self.cases.items()}


def select(ex: Expectations, patterns: tuple[str, ...]) -> Expectations:
    """Only the cases matching ``patterns`` (names or shell globs, e.g. ``plain-*``), in file order; every
    pattern must match a case. No patterns: all of them."""
    if not patterns:
        return ex
    import fnmatch
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in ex.cases)]
    if unknown:
        raise UsageError(f"--case {', '.join(unknown)}: no verifier case of that name",
                         fix=f"pick names from {ex.path} (e.g. pmd-memfd, or a glob: 'plain-*')")
    return replace(ex, cases={n: c for n, c in ex.cases.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)})


def check_policy(policy: str, policies: Iterable[str]) -> str:
    names = list(policies)
    if policy not in names:
        raise UsageError(f"unknown expectation policy {policy!r}; the policies are {', '.join(names)}",
                         fix=f"use one of: {', '.join(names)} (--expect POLICY)")
    return policy


def load_expectations(suite: Suite | None = None, path: Path | None = None) -> Expectations:
    """Read and validate a suite's expectations file (default: the default suite's); ``path`` reads another
    file against the suite's rules."""
    suite = suite or get_suite()
    path = Path(path) if path is not None else suite.expectations
    fix = f"edit {path}: see the comment at its top for the format"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"expectations file not found: {path}",
                         fix=f"pass an existing file, or use the suite's {suite.expectations}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"expectations file {path} is not valid TOML: {e}", fix=fix) from None
    policies = data.get("policies", {})
    policy_names = tuple(policies)
    if not policy_names:
        raise UsageError(f"{path}: [policies] lists no policy", fix=fix)
    named = {r.policy for r in suite.rules} | set(suite.known_patches.values())
    if stray := sorted(named - set(policy_names)):
        raise UsageError(f"{path}: [policies] lacks {', '.join(stray)}, which suite {suite.name}'s rules or known "
                         f"patches name; it lists {', '.join(policy_names)}", fix=fix)
    raw = data.get("cases")
    if not isinstance(raw, dict) or not raw:
        raise UsageError(f"{path}: no [cases.NAME] tables", fix=fix)
    cases: dict[str, Case] = {}
    problems: list[str] = []
    for name, t in raw.items():
        if not _CASE_NAME.match(name) or not isinstance(t, dict):
            problems.append(f"[cases.{name}]: bad case name or not a table")
            continue
        unknown = set(t) - {"description", "requires", "xfail", *policy_names}
        missing = [p for p in policy_names if p not in t]
        bad = [f"{p} = {t[p]!r}" for p in policy_names if p in t and not _OUTCOME.match(str(t[p]))]
        if unknown:
            problems.append(f"[cases.{name}]: unknown keys {', '.join(sorted(unknown))}")
        if missing:
            problems.append(f"[cases.{name}]: no outcome for {', '.join(missing)}")
        if bad:
            problems.append(f"[cases.{name}]: bad outcome {', '.join(bad)} (use ok, skip, an errno name or "
                            f"xfail:CODE)")
        reasons = t.get("xfail", {})
        if not isinstance(reasons, dict):
            problems.append(f"[cases.{name}]: xfail must be a table of policy = reason")
            reasons = {}
        for p in policy_names:
            xf = str(t.get(p, "")).startswith(XFAIL_PREFIX)
            if xf and not str(reasons.get(p, "")).strip():
                problems.append(f"[cases.{name}]: {p} is an expected failure without a reason "
                                f"(add {p!r} to [cases.{name}.xfail])")
            if not xf and p in reasons:
                problems.append(f"[cases.{name}.xfail]: a reason for {p}, whose outcome is not xfail:CODE")
        for p in set(reasons) - set(policy_names):
            problems.append(f"[cases.{name}.xfail]: unknown policy {p!r}")
        cases[name] = Case(name, str(t.get("description", "")), {p: str(t.get(p, "")) for p in policy_names},
                           str(t.get("requires", "")), {str(k): str(v) for k, v in reasons.items()})
    for c in cases.values():
        if c.requires and c.requires not in cases:
            problems.append(f"[cases.{c.name}]: requires unknown case {c.requires!r}")
    if problems:
        raise UsageError(f"{path}: {len(problems)} problem(s) in the expectations", detail=problems, fix=fix)
    return Expectations(path, {p: str(policies[p]) for p in policy_names}, cases, suite)


# What the suite's policy source (mm/mremap.c for the seed's suite) refuses decides the policy: the rule is read
# from the built tree, not guessed from the kernel version or the series' subjects (a reworded or already-merged
# patch is judged by its code). Whitespace and comments are ignored; exactly one rule must be found.

def _strip_comments(code: str) -> str:
    code = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), code, flags=re.S)
    return re.sub(r"//[^\n]*", "", code)


def policy_from_source(code: str, suite: Suite) -> tuple[str, str]:
    """(policy, why) from the text of the suite's policy source; UsageError when no rule or more than one is
    found."""
    code = _strip_comments(code)
    found = []
    src = suite.policy_source
    for rule in suite.rules:
        m = rule.pattern.search(code)
        if m:
            line = code.count("\n", 0, m.start()) + 1
            found.append((rule.policy, f"{src}:{line} carries {rule.what} "
                                       f"(`{' '.join(m.group(0).split())}`)"))
    fix = f"pass --expect POLICY (one of: {', '.join(load_expectations(suite).policies)})"
    if not found:
        raise UsageError(f"cannot tell the expectation policy: {src} has none of suite {suite.name}'s "
                         f"{suite.policy_what}", fix=fix)
    if len(found) > 1:
        raise UsageError(f"cannot tell the expectation policy: {src} carries several of suite {suite.name}'s "
                         f"{suite.policy_what}", detail=[w for _, w in found], fix=fix)
    return found[0]


def choose_policy(source: Path | None, override: str | None, suite: Suite) -> tuple[str, str]:
    """(policy, how it was chosen): --expect wins; otherwise the rule that the tree's policy source (``source``
    is the tree's root) carries; a suite with a single policy and no rules: that policy."""
    policies = load_expectations(suite).policies
    if override:
        return check_policy(override, policies), "--expect"
    if not suite.rules and len(policies) == 1:
        return next(iter(policies)), f"suite {suite.name} has one policy"
    fix = f"pass --expect POLICY (one of: {', '.join(policies)})"
    if not suite.policy_source:
        raise UsageError(f"suite {suite.name} has several policies and no rule to read one from the tree", fix=fix)
    path = Path(source or ".") / suite.policy_source
    try:
        code = path.read_text(errors="replace")
    except OSError as e:
        raise UsageError(f"cannot read {path} to choose the expectation policy: {e.strerror or e}",
                         fix=fix) from None
    return policy_from_source(code, suite)


def expect_file_text(expectations: Expectations, policy: str) -> str:
    lines = [f"# kpipe verifier expectations, policy {policy}: {expectations.policies[expectations.check(policy)]}",
             f"# from {expectations.path}"]
    lines += [f"{name}={value}" for name, value in expectations.column(policy).items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- build

def _digest_files(paths: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(root) if p.is_relative_to(root) else p.name).encode() + b"\0" + p.read_bytes()
                 + b"\0")
    return h.hexdigest()


def _headers_digest(include: Path) -> str:
    return _digest_files(sorted(p for p in include.rglob("*") if p.is_file()), include)


def verifier_sources(suite: Suite) -> tuple[list[Path], list[Path]]:
    """(the .c files, the .h files) of a suite's verifier: its own, then the shared harness (suites/lib)."""
    return (sorted(suite.sources.glob("*.c")) + sorted(LIB_DIR.glob("*.c")),
            sorted(suite.sources.glob("*.h")) + sorted(LIB_DIR.glob("*.h")))


def build_verifier(arch: Arch, headers: Path, out_dir: Path, log: Path | None = None, *, suite: Suite) -> Path:
    """Build the suite's verifier static for ``arch`` against the uapi headers in ``headers``/include; returns
    out_dir/<binary>. Cached by the content of the sources, the headers and the compiler."""
    include = Path(headers) / "include"
    if not (include / "linux" / "userfaultfd.h").is_file():
        raise InfraError(f"installed uapi headers not found: {include}/linux/userfaultfd.h is missing",
                         fix="build the kernel first: its headers_install output is the headers folder")
    sources, local_headers = verifier_sources(suite)
    if not [s for s in sources if s.parent == suite.sources]:
        raise InfraError(f"no verifier sources in {suite.sources}", fix="restore the suite's *.c from the repository")
    start = time.monotonic()
    binary = suite.binary
    key = cache.key_of("verifier", toolchain.compiler(arch.cc).ident, CFLAGS, binary,
                       _digest_files(sources + local_headers, suite.sources), _headers_digest(include))
    entry = cache.cache_dir("verifier") / key

    def make(tmp: Path) -> dict[str, Any]:
        _compile(arch, include, sources, tmp / binary, log, suite.sources)
        return {"arch": arch.name, "cc": arch.cc, "headers": str(include)}

    _, hit = cache.cached_entry(entry, cache.cache_dir("verifier") / f"{key}.lock", "verifier build", make)
    built = not hit
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / binary
    tmp_dest = out_dir / f".{binary}.tmp"
    shutil.copy2(entry / binary, tmp_dest)
    tmp_dest.chmod(0o755)
    tmp_dest.replace(dest)
    how = f"built in {time.monotonic() - start:.1f} s" if built else "cached"
    note(f"verifier for {arch.name}: {how} ({dest})")
    if log is not None and not built:
        with open(log, "a") as fh:
            fh.write(f"\n# verifier for {arch.name}: cached ({entry})\n")
    return dest


def _compile(arch: Arch, include: Path, sources: list[Path], out: Path, log: Path | None, cwd: Path) -> None:
    cmd = [arch.cc, *CFLAGS, "-I", str(LIB_DIR), "-isystem", str(include), *map(str, sources), "-o", str(out)]
    cp = proc.run(cmd, cwd=cwd, timeout=300, check=False, what=arch.cc)
    output = ((cp.stdout or "") + (cp.stderr or "")).strip()
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            fh.write(f"\n$ {shlex.join(cmd)}\n{output}\n[exit {cp.returncode}]\n")
    if cp.returncode != 0:
        lines = output.splitlines()
        errors = [ln for ln in lines if re.search(r"\b(fatal )?error:", ln)]
        shown = errors[:20] + ([f"... {len(errors) - 20} more errors"] if len(errors) > 20 else [])
        raise BuildError(f"the verifier does not compile for {arch.name} against {include}",
                         detail=[f"$ {shlex.join(cmd)}", *(shown or lines[-40:])], log=str(log) if log else None,
                         fix="read the compiler lines above; the headers must come from the target tree's "
                             "headers_install")


# ------------------------------------------------------------------------------------------- TAP -> results

_DIAG = re.compile(r"^#\s+(\S+):\s+observed\s+(\S+)\s+expected\s+(\S+)(?:\s+\(([\d.]+) s\))?\s*$")
_NOTE = re.compile(r"^#\s+([a-z0-9][a-z0-9-]*):\s+(.*)$")
KSFT_EXIT = {0: "all passed", 1: "some failed", 4: "all skipped"}


@dataclass
class _Seen:
    ok: bool
    number: int
    directive: str
    observed: str = ""
    expected: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _scan(text: str) -> tuple[dict[str, list[_Seen]], int | None, str | None]:
    """Test points by name (in order), the plan, the Bail out! reason: kpipe's one TAP reader (ktap.py)
    reads the document; the verifier's own diagnostics before each point (``# case: observed X expected
    Y (T s)``, ``# case: note``) are interpreted here."""
    doc = parse_document(text, SUITE)
    points: dict[str, list[_Seen]] = {}
    for p in doc.points:
        seen = _Seen(p.ok, p.number, p.directive)
        for line in p.diagnostics:
            if (m := _DIAG.match(line)) and m.group(1) == p.name:
                seen.observed, seen.expected, seen.seconds = m.group(2), m.group(3), float(m.group(4) or 0)
            elif (m := _NOTE.match(line)) and m.group(1) == p.name:
                seen.notes.append(m.group(2))
        points.setdefault(p.name, []).append(seen)
    return points, doc.plan, doc.bailed


def _why_missing(exit_status: int | None, bail: str | None, plan: int | None, seen: int) -> str:
    if bail:
        return f"the verifier bailed out: {bail}"
    if exit_status is None:
        return "the verifier did not finish (timed out or lost)"
    if exit_status not in KSFT_EXIT:
        return f"the verifier exited with status {exit_status}"
    if plan is None:
        return "the verifier printed no TAP plan"
    return f"not in the verifier's output ({seen} of {plan} planned points seen; is the binary older " \
           f"than the expectations?)"


@dataclass(frozen=True)
class _Judging:
    """One case's inputs to the judging rules: the test point as seen, what the expectations say."""
    s: _Seen
    expected: str
    policy: str
    xfail_reason: str

    @property
    def directive(self) -> str:
        return self.s.directive

    @property
    def known(self) -> str:
        """The known failure's code when the expectation is ``xfail:CODE``, else ""."""
        return self.expected[len(XFAIL_PREFIX):] if self.expected.startswith(XFAIL_PREFIX) else ""

    def has(self, word: str) -> bool:
        """The directive starts with this word (any case)."""
        return self.directive.upper().startswith(word)


@dataclass(frozen=True)
class _Rule:
    """A judging rule: when it applies, the status, what was observed and why (the detail). With
    ``notes``, the case's own notes follow the why."""
    name: str
    applies: Callable[[_Judging], bool]
    status: Status
    observed: Callable[[_Judging], str]
    why: Callable[[_Judging], str]
    notes: bool = False


def _observed(j: _Judging) -> str:
    return j.s.observed


def _crash_observed(j: _Judging) -> str:
    return j.s.observed or j.directive.split(":", 1)[-1].strip().split()[0]


def _xfail_passed_why(j: _Judging) -> str:
    return (f"expected the known failure {j.known} under {j.policy} ({j.xfail_reason}) but the case passed: "
            f"if this kernel carries the fix, choose the policy with --expect")


# The judging ladder, in order of precedence: the first rule that applies decides.
_RULES: tuple[_Rule, ...] = (
    _Rule("could not run", lambda j: j.has("ERROR"), Status.ERROR,
          lambda j: j.s.observed or "ERROR",
          lambda j: f"could not run: {j.directive[5:].strip() or 'no reason given'}", notes=True),
    _Rule("crashed", lambda j: j.directive.lower().startswith("crashed"), Status.FAIL,
          _crash_observed, lambda j: j.directive, notes=True),
    _Rule("run with other expectations", lambda j: bool(j.s.expected and j.s.expected != j.expected), Status.ERROR,
          _observed, lambda j: f"the binary was given expected {j.s.expected!r}, but the expectations say "
                               f"{j.expected!r} under policy {j.policy}"),
    _Rule("'not ok' skip", lambda j: j.has("SKIP") and not j.s.ok, Status.ERROR,
          _observed, lambda j: f"'not ok' with a SKIP directive: {j.directive}"),
    _Rule("skipped", lambda j: j.has("SKIP"), Status.SKIP,
          lambda j: j.s.observed or "skip", lambda j: j.directive[4:].strip() or "no reason given", notes=True),
    _Rule("nothing observed", lambda j: not j.s.observed, Status.ERROR,
          lambda j: "", lambda j: "no 'observed ... expected ...' diagnostic line for this case"),
    _Rule("known failure", lambda j: bool(j.known) and j.s.observed == j.known and j.s.ok and j.has("XFAIL"),
          Status.XFAIL, _observed, lambda j: f"known failure under {j.policy}: {j.xfail_reason}", notes=True),
    _Rule("known failure not XFAIL", lambda j: bool(j.known) and j.s.observed == j.known, Status.ERROR,
          _observed, lambda j: f"the binary did not report the known failure {j.known} as XFAIL "
                               f"('{'ok' if j.s.ok else 'not ok'} # {j.directive}')"),
    _Rule("known failure fixed", lambda j: bool(j.known) and j.s.observed == "ok", Status.FAIL,
          _observed, _xfail_passed_why, notes=True),
    _Rule("other than the known failure", lambda j: bool(j.known), Status.FAIL,
          _observed, lambda j: f"expected the known failure {j.known} under {j.policy}, observed another "
                               f"failure {j.s.observed}", notes=True),
    _Rule("ok contradicts", lambda j: (j.s.observed == j.expected) != j.s.ok, Status.ERROR,
          _observed, lambda j: f"the binary said {'ok' if j.s.ok else 'not ok'} for observed {j.s.observed} "
                               f"expected {j.expected}"),
    _Rule("refused move succeeded", lambda j: j.s.observed != j.expected and j.expected == "skip", Status.FAIL,
          _observed, lambda j: "the move succeeded where the policy refuses it", notes=True),
    _Rule("as expected", lambda j: j.s.observed == j.expected, Status.PASS,
          _observed, lambda j: "", notes=True),
    _Rule("not as expected", lambda j: True, Status.FAIL,
          _observed, lambda j: "", notes=True),
)


def _judge(name: str, s: _Seen, expected: str, policy: str, xfail_reason: str = "") -> TestResult:
    """The result of one case: the first rule of :data:`_RULES` that applies."""
    j = _Judging(s, expected, policy, xfail_reason)
    rule = next(r for r in _RULES if r.applies(j))
    why = rule.why(j)
    if rule.notes:
        why = "; ".join(x for x in (why, "; ".join(s.notes)) if x)
    return TestResult(suite=SUITE, name=name, expected=expected, seconds=s.seconds, status=rule.status,
                      observed=rule.observed(j), detail=why)


def parse_tap(text: str, exit_status: int | None, expectations: Expectations, policy: str) -> list[TestResult]:
    """One result per expected case (in the expectations' order), then anything unexpected: unknown
    cases, duplicates, and an exit status that contradicts the results. Never drops a case."""
    column = expectations.column(policy)
    points, plan, bail = _scan(text)
    seen = sum(len(v) for v in points.values())
    results: list[TestResult] = []
    for name, expected in column.items():
        got = points.get(name)
        if not got:
            results.append(TestResult(SUITE, name, Status.ERROR, expected=expected, observed="missing",
                                      detail=_why_missing(exit_status, bail, plan, seen)))
            continue
        results.append(_judge(name, got[0], expected, policy, expectations.cases[name].xfail.get(policy, "")))
        for extra in got[1:]:
            results.append(TestResult(SUITE, name, Status.ERROR, expected=expected, observed=extra.observed,
                                      detail=f"reported again as test point {extra.number}"))
    for name, got in points.items():
        if name not in column:
            results.append(TestResult(SUITE, name, Status.ERROR, observed=got[0].observed,
                                      detail=f"case not in {expectations.path.name}: add its expected outcomes"))
    results += _exit_check(exit_status, plan, seen, bail, points)
    return results


def _exit_check(exit_status: int | None, plan: int | None, seen: int, bail: str | None,
                points: dict[str, list[_Seen]]) -> list[TestResult]:
    """A result named 'verifier-exit' when the run as a whole says something the cases do not."""
    any_fail = any(not s.ok for v in points.values() for s in v)
    all_skip = seen > 0 and all(s.directive.upper().startswith("SKIP") for v in points.values() for s in v)
    problem = ""
    if exit_status is None:
        problem = "the verifier did not finish (timed out or lost)"
    elif exit_status not in KSFT_EXIT:
        problem = f"the verifier exited with status {exit_status}"
    elif bail:
        problem = f"the verifier bailed out: {bail}"
    elif plan is not None and plan != seen:
        problem = f"the plan announced {plan} test points, {seen} were printed"
    elif exit_status == 1 and not any_fail:
        problem = "exit status 1 (failure) but no test point failed"
    elif exit_status == 0 and any_fail:
        problem = "exit status 0 (pass) but a test point failed"
    elif exit_status == 4 and not all_skip:
        problem = "exit status 4 (all skipped) but some test points ran"
    if not problem:
        return []
    observed = "timeout" if exit_status is None else f"exit {exit_status}"
    return [TestResult(SUITE, "verifier-exit", Status.ERROR, expected="exit 0, 1 or 4", observed=observed,
                       detail=problem)]


# ------------------------------------------------------------------------------------------------- run

TIMEOUT = 300.0        # the whole verifier run, unless --test-timeout (`kpipe verify` and the LAVA job alike)


def case_timeout(timeout: float) -> int:
    """The binary's per-case limit (-t) for a whole-run limit of ``timeout`` seconds."""
    return int(max(5, min(30, timeout / 6)))


def run_verifier(session: Session, binary: Path, policy: str, expectations: Expectations, out_dir: Path,
                 timeout: float = TIMEOUT, remote_dir: str = REMOTE_DIR, only: bool = False) -> list[TestResult]:
    """Push the binary and the policy's expectation file, run it, keep the TAP verbatim in
    out_dir/verifier.tap, and return one result per case. ``only``: ``expectations`` is a selection
    (``select``): the binary runs those cases by name."""
    expectations.check(policy)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    expect_local = out_dir / "verifier-expect.txt"
    expect_local.write_text(expect_file_text(expectations, policy))
    remote_bin, remote_expect = f"{remote_dir}/{Path(binary).name}", f"{remote_dir}/expect.txt"
    prep = session.run(["mkdir", "-p", remote_dir], timeout=30)
    if prep.exit_status != 0:
        raise InfraError(f"cannot create {remote_dir} in the guest (exit {prep.exit_status})",
                         detail=(prep.stderr or prep.stdout).strip().splitlines()[-5:])
    session.put(Path(binary), remote_bin, 0o755)
    session.put(expect_local, remote_expect, 0o644)
    names = list(expectations.cases) if only else []
    res = session.run([remote_bin, "-e", remote_expect, "-t", str(case_timeout(timeout)), *names], timeout=timeout)
    (out_dir / "verifier.tap").write_text(res.stdout)
    if res.stderr:
        (out_dir / "verifier.stderr").write_text(res.stderr)
    exit_status = None if res.timed_out else res.exit_status
    results = parse_tap(res.stdout, exit_status, expectations, policy)
    if res.stderr.strip():
        tail = " | ".join(res.stderr.strip().splitlines()[-3:])
        results = [replace(r, detail=f"{r.detail}; stderr: {tail}" if r.detail else f"stderr: {tail}")
                   if r.status == Status.ERROR else r for r in results]
    return [replace(r, output="verifier.tap") for r in results]


# --------------------------------------------------------------------------------------------- latency

# latency-* (the seed suite's state.c): LAT_MOVES DONTUNMAP moves of a 2 MiB-aligned heap (the PMD move), the median as
# latency_us and the range; older binaries printed one sample (latency_us and size_mb only)
_LATENCY = re.compile(r"\blatency_us=(\d+)(?:\s+min_us=(\d+)\s+max_us=(\d+)\s+moves=(\d+))?.*?\bsize_mb=(\d+)")
_VMPTE = re.compile(r"\bvmpte_max_kb=(-?\d+)|VmPTE ([+-]\d+) kB across the move \((\d+) PMDs")
LATENCY_FACTOR = 2.0            # premerge flags a patched move more than this many times slower ...
# ... and at least this much slower: a guest on the refined-jiffies clocksource reads in 4 ms steps, and the
# same kernel's 256 MiB move measured 24 ms on an idle TCG host and 140 ms on a loaded one (one sample only:
# with a range from repeated moves the rule is non-overlapping ranges, as LKP compares)
LATENCY_FLOOR_US = 20000


def latencies(tests: list[TestResult]) -> dict[str, tuple[int, int]]:
    """case -> (latency_us, size_mb) of the verifier's latency-* cases that ran (latency_us: the median)."""
    return {name: (int(v["median_us"]), int(v["size_mb"])) for name, v in pause_stats(tests).items()
            if v["status"] == Status.PASS.value}


def pause_stats(tests: list[TestResult]) -> dict[str, dict[str, Any]]:
    """case -> the stop-the-world pause the latency-* cases measured (median, range, moves, size, the largest
    VmPTE growth of a move and the case's status: a PTEPATH failure is reported with its numbers too)."""
    out: dict[str, dict[str, Any]] = {}
    for t in tests:
        if t.suite != SUITE or not (m := _LATENCY.search(t.detail or "")):
            continue
        med = int(m.group(1))
        v: dict[str, Any] = {"median_us": med, "min_us": int(m.group(2) or med), "max_us": int(m.group(3) or med),
                             "moves": int(m.group(4) or 1), "size_mb": int(m.group(5)), "status": t.status.value}
        if (pm := _VMPTE.search(t.detail or "")) and pm.group(1) is not None:
            v["vmpte_max_kb"] = int(pm.group(1))
        out[t.name] = v
    return out


def fast_path(tests: list[TestResult], pause: Pause) -> dict[str, dict[str, Any]]:
    """The suite's fast-path case -> its status and the VmPTE growth across the 2 MiB-aligned move (0: the PMD
    move ran)."""
    out: dict[str, dict[str, Any]] = {}
    for t in tests:
        if t.suite == SUITE and t.name in pause.fast_path_cases:
            v: dict[str, Any] = {"status": t.status.value, "observed": t.observed}
            if (pm := _VMPTE.search(t.detail or "")) and pm.group(2) is not None:
                v.update(vmpte_kb=int(pm.group(2)), pmds=int(pm.group(3)))
            out[t.name] = v
    return out


def pause_summary(tests: list[TestResult], pause: Pause) -> dict[str, Any]:
    """What result.json's ``pause`` holds and the reports show: the GC pause (latency-*) and which path the
    aligned move took (the suite's fast-path cases)."""
    out: dict[str, Any] = {"latency": pause_stats(tests), "fast_path": fast_path(tests, pause)}
    for t in tests:
        if pause.gc_case and t.suite == SUITE and t.name == pause.gc_case:
            out["gc_minor"] = {"status": t.status.value,
                               "note": pause.gc_note if t.status == Status.SKIP else (t.detail or "")[:200]}
    return out


def latency_regressions(base: list[TestResult], patched: list[TestResult], pause: Pause) -> list[str]:
    """The latency cases measured on both kernels (same size) whose patched move is slower: with ranges
    (repeated moves) when the ranges do not overlap (patched min > baseline max) and the median is more than
    LATENCY_FACTOR times the baseline's; with single samples > LATENCY_FACTOR times and > LATENCY_FLOOR_US.
    A patched case whose move the baseline refuses is compared with the baseline's stand-in case (the suite's
    ``pause.stand_in``: for the seed, a memfd heap with the anon heap of the same size and the same PMD move)."""
    b, p = pause_stats(base), pause_stats(patched)
    ok = Status.PASS.value
    out = []
    for name in sorted(p):
        stand_in = pause.stand_in.get(name, "")
        ref = name if name in b else (stand_in if stand_in in b else "")
        if not ref or p[name]["status"] != ok or b[ref]["status"] != ok or b[ref]["size_mb"] != p[name]["size_mb"]:
            continue
        pv, bv = p[name], b[ref]
        vs = f"the baseline's {ref}" if ref != name else "the baseline"
        if pv["moves"] > 1 and bv["moves"] > 1:
            if pv["min_us"] > bv["max_us"] and pv["median_us"] > LATENCY_FACTOR * bv["median_us"]:
                out.append(f"{name}: median {pv['median_us']} us (range {pv['min_us']}-{pv['max_us']}) vs "
                           f"{bv['median_us']} us ({bv['min_us']}-{bv['max_us']}) on {vs} ({pv['size_mb']} MiB, "
                           f"{pv['moves']} moves each: ranges do not overlap, > {LATENCY_FACTOR:g}x)")
        elif pv["median_us"] > LATENCY_FACTOR * bv["median_us"] and \
                pv["median_us"] - bv["median_us"] > LATENCY_FLOOR_US:
            out.append(f"{name}: {pv['median_us']} us vs {bv['median_us']} us on {vs} ({pv['size_mb']} MiB, "
                       f"> {LATENCY_FACTOR:g}x)")
    return out
