"""The static C verifier (verify/*.c): build it for an arch, pick the expectation policy, run it in the
guest, and turn its TAP into results.

The expectations are data (verify/expectations.toml): one expected outcome per case and policy. The
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
from typing import TYPE_CHECKING, Any, TypedDict

from . import cache, proc, toolchain
from .arches import Arch
from .errors import BuildError, InfraError, UsageError
from .ktap import parse_document
from .progress import note
from .results import Status, TestResult

if TYPE_CHECKING:
    from .selftests import Session

VERIFY_DIR = Path(__file__).resolve().parent.parent / "verify"
EXPECTATIONS = VERIFY_DIR / "expectations.toml"
BINARY_NAME = "mremap_dontunmap"
POLICIES = ("anon-only", "anon+shmem", "upstream")
SUITE = "verifier"
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
    policies: dict[str, str]        # policy -> what it means
    cases: dict[str, Case] = field(default_factory=dict)   # in file order

    def column(self, policy: str) -> dict[str, str]:
        check_policy(policy)
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


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise UsageError(f"unknown expectation policy {policy!r}; the policies are {', '.join(POLICIES)}",
                         fix=f"use one of: {', '.join(POLICIES)} (--expect POLICY)")
    return policy


def load_expectations(path: Path | None = None) -> Expectations:
    """Read and validate the expectations file (default verify/expectations.toml)."""
    path = Path(path) if path is not None else EXPECTATIONS
    fix = f"edit {path}: see the comment at its top for the format"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"expectations file not found: {path}",
                         fix="pass an existing file, or use the default verify/expectations.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"expectations file {path} is not valid TOML: {e}", fix=fix) from None
    policies = data.get("policies", {})
    if set(policies) != set(POLICIES):
        raise UsageError(f"{path}: [policies] must list exactly {', '.join(POLICIES)}; it lists "
                         f"{', '.join(policies) or 'nothing'}", fix=fix)
    raw = data.get("cases")
    if not isinstance(raw, dict) or not raw:
        raise UsageError(f"{path}: no [cases.NAME] tables", fix=fix)
    cases: dict[str, Case] = {}
    problems: list[str] = []
    for name, t in raw.items():
        if not _CASE_NAME.match(name) or not isinstance(t, dict):
            problems.append(f"[cases.{name}]: bad case name or not a table")
            continue
        unknown = set(t) - {"description", "requires", "xfail", *POLICIES}
        missing = [p for p in POLICIES if p not in t]
        bad = [f"{p} = {t[p]!r}" for p in POLICIES if p in t and not _OUTCOME.match(str(t[p]))]
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
        for p in POLICIES:
            xf = str(t.get(p, "")).startswith(XFAIL_PREFIX)
            if xf and not str(reasons.get(p, "")).strip():
                problems.append(f"[cases.{name}]: {p} is an expected failure without a reason "
                                f"(add {p!r} to [cases.{name}.xfail])")
            if not xf and p in reasons:
                problems.append(f"[cases.{name}.xfail]: a reason for {p}, whose outcome is not xfail:CODE")
        for p in set(reasons) - set(POLICIES):
            problems.append(f"[cases.{name}.xfail]: unknown policy {p!r}")
        cases[name] = Case(name, str(t.get("description", "")), {p: str(t.get(p, "")) for p in POLICIES},
                           str(t.get("requires", "")), {str(k): str(v) for k, v in reasons.items()})
    for c in cases.values():
        if c.requires and c.requires not in cases:
            problems.append(f"[cases.{c.name}]: requires unknown case {c.requires!r}")
    if problems:
        raise UsageError(f"{path}: {len(problems)} problem(s) in the expectations", detail=problems, fix=fix)
    return Expectations(path, {p: str(policies[p]) for p in POLICIES}, cases)


# What mm/mremap.c refuses under MREMAP_DONTUNMAP decides the policy: the rule is read from the built tree,
# not guessed from the kernel version or the series' subjects (a reworded or already-merged seed is judged
# by its code). Whitespace and comments are ignored; exactly one rule must be found.
POLICY_RULES = (
    ("upstream", "the 5.13 rewrite: refuse only VM_DONTEXPAND | VM_PFNMAP",
     re.compile(r"MREMAP_DONTUNMAP\s*\)?\s*&&\s*\(?\s*vma->vm_flags\s*&\s*\(\s*VM_DONTEXPAND\s*\|\s*VM_PFNMAP\s*\)")),
    ("anon+shmem", "the seed patch's rule: refuse what is neither anonymous nor shmem",
     re.compile(r"MREMAP_DONTUNMAP\s*\)?\s*&&\s*!\s*\(\s*vma_is_anonymous\s*\(\s*vma\s*\)\s*\|\|\s*"
                r"vma_is_shmem\s*\(\s*vma\s*\)\s*\)")),
    ("anon-only", "the 5.7 rule: refuse anything not private anonymous",
     re.compile(r"MREMAP_DONTUNMAP\s*\)?\s*&&\s*\(\s*!\s*vma_is_anonymous\s*\(\s*vma\s*\)\s*\|\|\s*"
                r"vma->vm_flags\s*&\s*VM_SHARED\s*\)")),
)
MREMAP_SOURCE = "mm/mremap.c"


def _strip_comments(code: str) -> str:
    code = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), code, flags=re.S)
    return re.sub(r"//[^\n]*", "", code)


def policy_from_source(code: str) -> tuple[str, str]:
    """(policy, why) from the text of mm/mremap.c; UsageError when no rule or more than one is found."""
    code = _strip_comments(code)
    found = []
    for policy, what, rx in POLICY_RULES:
        m = rx.search(code)
        if m:
            line = code.count("\n", 0, m.start()) + 1
            found.append((policy, f"{MREMAP_SOURCE}:{line} carries {what} "
                                  f"(`{' '.join(m.group(0).split())}`)"))
    fix = f"pass --expect POLICY (one of: {', '.join(POLICIES)})"
    if not found:
        raise UsageError(f"cannot tell the expectation policy: {MREMAP_SOURCE} has none of the known "
                         f"MREMAP_DONTUNMAP rules (5.7, the seed patch, the 5.13 rewrite)", fix=fix)
    if len(found) > 1:
        raise UsageError(f"cannot tell the expectation policy: {MREMAP_SOURCE} carries several MREMAP_DONTUNMAP "
                         f"rules", detail=[w for _, w in found], fix=fix)
    return found[0]


def choose_policy(source: Path | None, override: str | None) -> tuple[str, str]:
    """(policy, how it was chosen): --expect wins; otherwise the MREMAP_DONTUNMAP rule that the tree's
    mm/mremap.c (``source`` is the tree's root) carries."""
    if override:
        return check_policy(override), "--expect"
    path = Path(source or ".") / MREMAP_SOURCE
    try:
        code = path.read_text(errors="replace")
    except OSError as e:
        raise UsageError(f"cannot read {path} to choose the expectation policy: {e.strerror or e}",
                         fix=f"pass --expect POLICY (one of: {', '.join(POLICIES)})") from None
    return policy_from_source(code)


def expect_file_text(expectations: Expectations, policy: str) -> str:
    lines = [f"# kpipe verifier expectations, policy {policy}: {expectations.policies[check_policy(policy)]}",
             f"# from {expectations.path}"]
    lines += [f"{name}={value}" for name, value in expectations.column(policy).items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- build

def _digest_files(paths: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _headers_digest(include: Path) -> str:
    return _digest_files(sorted(p for p in include.rglob("*") if p.is_file()), include)


def verifier_sources() -> tuple[list[Path], list[Path]]:
    """(the .c files, the .h files) of the verifier."""
    return sorted(VERIFY_DIR.glob("*.c")), sorted(VERIFY_DIR.glob("*.h"))


def build_verifier(arch: Arch, headers: Path, out_dir: Path, log: Path | None = None) -> Path:
    """Build the verifier static for ``arch`` against the uapi headers in ``headers``/include; returns
    out_dir/mremap_dontunmap. Cached by the content of the sources, the headers and the compiler."""
    include = Path(headers) / "include"
    if not (include / "linux" / "userfaultfd.h").is_file():
        raise InfraError(f"installed uapi headers not found: {include}/linux/userfaultfd.h is missing",
                         fix="build the kernel first: its headers_install output is the headers folder")
    sources, local_headers = verifier_sources()
    if not sources:
        raise InfraError(f"no verifier sources in {VERIFY_DIR}", fix="restore verify/*.c from the repository")
    start = time.monotonic()
    key = cache.key_of("verifier", toolchain.compiler(arch.cc).ident, CFLAGS,
                       _digest_files(sources + local_headers, VERIFY_DIR), _headers_digest(include))
    entry = cache.cache_dir("verifier") / key

    def make(tmp: Path) -> dict[str, Any]:
        _compile(arch, include, sources, tmp / BINARY_NAME, log)
        return {"arch": arch.name, "cc": arch.cc, "headers": str(include)}

    _, hit = cache.cached_entry(entry, cache.cache_dir("verifier") / f"{key}.lock", "verifier build", make)
    built = not hit
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / BINARY_NAME
    tmp_dest = out_dir / f".{BINARY_NAME}.tmp"
    shutil.copy2(entry / BINARY_NAME, tmp_dest)
    tmp_dest.chmod(0o755)
    tmp_dest.replace(dest)
    how = f"built in {time.monotonic() - start:.1f} s" if built else "cached"
    note(f"verifier for {arch.name}: {how} ({dest})")
    if log is not None and not built:
        with open(log, "a") as fh:
            fh.write(f"\n# verifier for {arch.name}: cached ({entry})\n")
    return dest


def _compile(arch: Arch, include: Path, sources: list[Path], out: Path, log: Path | None) -> None:
    cmd = [arch.cc, *CFLAGS, "-isystem", str(include), *map(str, sources), "-o", str(out)]
    cp = proc.run(cmd, cwd=VERIFY_DIR, timeout=300, check=False, what=arch.cc)
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


class _Common(TypedDict):
    """The fields every result _judge returns shares."""
    suite: str
    name: str
    expected: str
    seconds: float


def _judge(name: str, s: _Seen, expected: str, policy: str, xfail_reason: str = "") -> TestResult:
    detail = "; ".join(s.notes)
    base = _Common(suite=SUITE, name=name, expected=expected, seconds=s.seconds)
    directive = s.directive
    if directive.upper().startswith("ERROR"):
        reason = directive[5:].strip() or "no reason given"
        return TestResult(**base, status=Status.ERROR, observed=s.observed or "ERROR",
                          detail="; ".join(x for x in (f"could not run: {reason}", detail) if x))
    known = expected[len(XFAIL_PREFIX):] if expected.startswith(XFAIL_PREFIX) else ""
    if directive.lower().startswith("crashed"):
        observed = s.observed or directive.split(":", 1)[-1].strip().split()[0]
        return TestResult(**base, status=Status.FAIL, observed=observed,
                          detail="; ".join(x for x in (directive, detail) if x))
    if s.expected and s.expected != expected:
        return TestResult(**base, status=Status.ERROR, observed=s.observed,
                          detail=f"the binary was given expected {s.expected!r}, but the expectations say "
                                 f"{expected!r} under policy {policy}")
    if directive.upper().startswith("SKIP"):
        if not s.ok:
            return TestResult(**base, status=Status.ERROR, observed=s.observed,
                              detail=f"'not ok' with a SKIP directive: {directive}")
        reason = directive[4:].strip() or "no reason given"
        return TestResult(**base, status=Status.SKIP, observed=s.observed or "skip",
                          detail="; ".join(x for x in (reason, detail) if x))
    if not s.observed:
        return TestResult(**base, status=Status.ERROR, observed="",
                          detail="no 'observed ... expected ...' diagnostic line for this case")
    if known:
        if s.observed == known and s.ok and directive.upper().startswith("XFAIL"):
            return TestResult(**base, status=Status.XFAIL, observed=s.observed,
                              detail="; ".join(x for x in (f"known failure under {policy}: {xfail_reason}", detail)
                                               if x))
        if s.observed == known:
            return TestResult(**base, status=Status.ERROR, observed=s.observed,
                              detail=f"the binary did not report the known failure {known} as XFAIL "
                                     f"('{'ok' if s.ok else 'not ok'} # {directive}')")
        why = (f"expected the known failure {known} under {policy} ({xfail_reason}) but the case passed: "
               f"if this kernel carries the fix, choose the policy with --expect" if s.observed == "ok" else
               f"expected the known failure {known} under {policy}, observed another failure {s.observed}")
        return TestResult(**base, status=Status.FAIL, observed=s.observed,
                          detail="; ".join(x for x in (why, detail) if x))
    status = Status.PASS if s.observed == expected else Status.FAIL
    if (status == Status.PASS) != s.ok:
        return TestResult(**base, status=Status.ERROR, observed=s.observed,
                          detail=f"the binary said {'ok' if s.ok else 'not ok'} for observed {s.observed} "
                                 f"expected {expected}")
    if status == Status.FAIL and expected == "skip":
        detail = "; ".join(x for x in ("the move succeeded where the policy refuses it", detail) if x)
    return TestResult(**base, status=status, observed=s.observed, detail=detail)


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

def run_verifier(session: Session, binary: Path, policy: str, expectations: Expectations, out_dir: Path,
                 timeout: float = 300, remote_dir: str = REMOTE_DIR, only: bool = False) -> list[TestResult]:
    """Push the binary and the policy's expectation file, run it, keep the TAP verbatim in
    out_dir/verifier.tap, and return one result per case. ``only``: ``expectations`` is a selection
    (``select``): the binary runs those cases by name."""
    check_policy(policy)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    expect_local = out_dir / "verifier-expect.txt"
    expect_local.write_text(expect_file_text(expectations, policy))
    remote_bin, remote_expect = f"{remote_dir}/{BINARY_NAME}", f"{remote_dir}/expect.txt"
    prep = session.run(["mkdir", "-p", remote_dir], timeout=30)
    if prep.exit_status != 0:
        raise InfraError(f"cannot create {remote_dir} in the guest (exit {prep.exit_status})",
                         detail=(prep.stderr or prep.stdout).strip().splitlines()[-5:])
    session.put(Path(binary), remote_bin, 0o755)
    session.put(expect_local, remote_expect, 0o644)
    case_timeout = int(max(5, min(30, timeout / 6)))
    names = list(expectations.cases) if only else []
    res = session.run([remote_bin, "-e", remote_expect, "-t", str(case_timeout), *names], timeout=timeout)
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

# latency-* (verify/state.c): LAT_MOVES DONTUNMAP moves of a 2 MiB-aligned heap (the PMD move), the median as
# latency_us and the range; older binaries printed one sample (latency_us and size_mb only)
_LATENCY = re.compile(r"\blatency_us=(\d+)(?:\s+min_us=(\d+)\s+max_us=(\d+)\s+moves=(\d+))?.*?\bsize_mb=(\d+)")
_VMPTE = re.compile(r"\bvmpte_max_kb=(-?\d+)|VmPTE ([+-]\d+) kB across the move \((\d+) PMDs")
LATENCY_FACTOR = 2.0            # premerge flags a patched move more than this many times slower ...
# ... and at least this much slower: a guest on the refined-jiffies clocksource reads in 4 ms steps, and the
# same kernel's 256 MiB move measured 24 ms on an idle TCG host and 140 ms on a loaded one (one sample only:
# with a range from repeated moves the rule is non-overlapping ranges, as LKP compares)
LATENCY_FLOOR_US = 20000
PAUSE_CASES = ("latency-anon", "latency-memfd")
FAST_PATH_CASES = ("pmd-anon", "pmd-memfd", "pmd-thp-anon")
GC_MINOR_CASE = "gc-uffd-minor-memfd"
GC_MINOR_NOTE = ("the GC flow on a memfd heap (userfaultfd MINOR + UFFDIO_CONTINUE) cannot run on this kernel: "
                 "UFFD_FEATURE_MINOR_SHMEM arrives in 5.14, so 5.10 (with or without the seed) never proves it; "
                 "6.12 does")


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


def fast_path(tests: list[TestResult]) -> dict[str, dict[str, Any]]:
    """pmd-* case -> its status and the VmPTE growth across the 2 MiB-aligned move (0: the PMD move ran)."""
    out: dict[str, dict[str, Any]] = {}
    for t in tests:
        if t.suite == SUITE and t.name in FAST_PATH_CASES:
            v: dict[str, Any] = {"status": t.status.value, "observed": t.observed}
            if (pm := _VMPTE.search(t.detail or "")) and pm.group(2) is not None:
                v.update(vmpte_kb=int(pm.group(2)), pmds=int(pm.group(3)))
            out[t.name] = v
    return out


def pause_summary(tests: list[TestResult]) -> dict[str, Any]:
    """What result.json's ``pause`` holds and the reports show: the GC pause (latency-*) and which path the
    aligned move took (pmd-*)."""
    out: dict[str, Any] = {"latency": pause_stats(tests), "fast_path": fast_path(tests)}
    for t in tests:
        if t.suite == SUITE and t.name == GC_MINOR_CASE:
            out["gc_minor"] = {"status": t.status.value,
                               "note": GC_MINOR_NOTE if t.status == Status.SKIP else (t.detail or "")[:200]}
    return out


def latency_regressions(base: list[TestResult], patched: list[TestResult]) -> list[str]:
    """The latency cases measured on both kernels (same size) whose patched move is slower: with ranges
    (repeated moves) when the ranges do not overlap (patched min > baseline max) and the median is more than
    LATENCY_FACTOR times the baseline's; with single samples > LATENCY_FACTOR times and > LATENCY_FLOOR_US.
    A patched memfd heap whose move the baseline refuses is compared with the baseline's anon heap (same
    size, the same PMD move: the seed claims shmem moves as fast)."""
    b, p = pause_stats(base), pause_stats(patched)
    ok = Status.PASS.value
    out = []
    for name in sorted(p):
        ref = name if name in b else ("latency-anon" if name == "latency-memfd" and "latency-anon" in b else "")
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
