"""The result model: a run -> per arch -> per test, with a status enum; result.json and junit.xml writers."""
from __future__ import annotations

import enum
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, fields, is_dataclass
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    XFAIL = "xfail"
    ERROR = "error"

    @property
    def bad(self) -> bool:
        return self in (Status.FAIL, Status.ERROR)


@dataclass(frozen=True)
class TestResult:
    suite: str                 # verifier | selftests | extra
    name: str
    status: Status
    expected: str = ""         # what the policy expects ("ok", "EINVAL", "exit 0", ...)
    observed: str = ""         # what the kernel did
    detail: str = ""           # diagnostic lines / reason
    seconds: float = 0.0
    output: str = ""           # path of the verbatim output file, relative to the run folder
    subtests: tuple["TestResult", ...] = ()   # nested KTAP levels, kept as they came
    runs: int = 1              # how many times it ran (a known hang of the test retried; a refused channel)

    def walk(self) -> Iterator[TestResult]:
        yield self
        for s in self.subtests:
            yield from s.walk()


@dataclass(frozen=True)
class Finding:
    kind: str                  # panic | oops | bug | warning | kasan | ...
    source: str                # console | dmesg
    line: str                  # the matching line
    context: tuple[str, ...] = ()   # the lines after it (the report)
    signature: str = ""             # kind + first kernel frames, offsets stripped (kpipe/checks/signatures.py)
    frames: tuple[str, ...] = ()    # the signature's frames decoded: "func file:line"


class Sparse:
    """A typed section of result.json: a field left None (not known for this run: a build that failed has no
    boot) is left out of the JSON, as the schema (kpipe/report/schema/result.schema.json) describes."""
    keep_none: ClassVar[frozenset[str]] = frozenset()   # fields written as null all the same

    def __bool__(self) -> bool:
        """Something is known (as an empty dict was false before these sections were typed)."""
        return any(v is not None for v in vars(self).values())


@dataclass
class KernelInfo(Sparse):
    tree: str | None = None            # debian:5.10, a path
    base: str | None = None            # the commit the series was applied on
    base_label: str | None = None      # how the user named it (HEAD, a tag)
    head: str | None = None            # the commit after the series
    debian_version: str | None = None
    release: str | None = None         # uname -r of the built kernel
    profile: str | None = None         # debug | fast
    suite: str | None = None           # the suite whose verifier and selftests ran (suites/<name>)
    suite_reason: str | None = None    # why that suite (--suite, the files the series touches, the default)
    policy: str | None = None          # the verifier's expectation column
    policy_reason: str | None = None   # why that column (read from the suite's policy source, or --expect)
    tree_bugs: list[str] | None = None  # the suite's known tree bugs read from its policy source: xfail


@dataclass
class ConfigInfo(Sparse):
    profile: str | None = None
    defconfig: str | None = None
    fragments: list[str] | None = None
    missing: list[str] | None = None            # requested options the build did not get (one line each)
    conflicts: list[str] | None = None
    optional_missing: list[str] | None = None
    selftests: list[dict[str, Any]] | None = None   # the selection report: collection, tests, why


@dataclass
class BuildInfo(Sparse):
    seconds: float | None = None
    cached: bool | None = None
    key: str | None = None
    compiler: str | None = None
    compiled: list[str] | None = None           # the object files make compiled (an incremental build: a few)
    image: str | None = None


@dataclass
class HangProbe(Sparse):
    """How a wedged kernel was asked what it is doing (SysRq), once per run."""
    sysrq: str | None = None
    via: str | None = None                      # ssh /proc/sysrq-trigger | serial BREAK | none (why)
    ssh_error: str | None = None
    seconds: float | None = None
    console_wait: float | None = None
    timed_out: list[str] | None = None          # the guest commands that ran past their deadline


@dataclass
class KmemleakInfo(Sparse):
    """kmemleak's explicit scan after the tests (debug profile)."""
    seconds: float | None = None                # both scans and the read
    leaks: int | None = None                    # unreferenced objects reported (findings of kind kmemleak)
    known: list[str] | None = None              # objects excused as a tree's known false positive, with why
    log: str | None = None
    not_scanned: str | None = None              # why no scan ran (leak_scan off, a fatal report, a blocked task)

    def sentence(self) -> str:
        if self.not_scanned:
            return f"not scanned: {self.not_scanned}"
        return (f"{self.leaks} leak(s) in two scans ({self.seconds} s)"
                + (f", {len(self.known)} known false positive(s) excused" if self.known else ""))


@dataclass
class LavaInfo(Sparse):
    keep_none: ClassVar[frozenset[str]] = frozenset({     # LAVA's answer is written whole, nulls included
        "job_result", "error_type", "error_msg", "lava_run_exit", "lava_run_seconds", "timed_out", "results",
        "mismatches", "errors"})
    server: str | None = None
    job_id: str | None = None
    job_url: str | None = None                  # the job's page on the server (--submit)
    device: str | None = None                   # the server's device that ran the job (--submit)
    queued_seconds: float | None = None         # the server's submit -> start (waiting for a device)
    ran_seconds: float | None = None            # the server's start -> end
    job_result: str | None = None
    error_type: str | None = None
    error_msg: str | None = None
    lava_run_exit: int | None = None
    lava_run_seconds: float | None = None
    timed_out: bool | None = None
    results: int | None = None                  # LAVA's own result count
    mismatches: list[str] | None = None         # where LAVA's results and kpipe's disagree
    errors: list[str] | None = None
    stopped: str | None = None                  # kpipe ended the job on a kernel report (lava --run-local)


@dataclass
class BootInfo(Sparse):
    seconds: float | None = None                # QEMU start -> the guest's ready marker
    ssh_seconds: float | None = None
    accel: str | None = None
    accel_reason: str | None = None
    vcpus: int | None = None                    # what the profile gives the guest
    cpus: int | None = None                     # what the guest kernel runs on (nproc)
    findings: list[str] | None = None
    hang_probe: HangProbe | None = None
    hang_probes: list[HangProbe] | None = None      # every probe (one per timeout); hang_probe is the first
    first_fatal_report: str | None = None
    verdict_after_fatal_s: float | None = None
    kmemleak: KmemleakInfo | None = None
    lava: LavaInfo | None = None


@dataclass
class ArchResult:
    arch: str
    verdict: str = "error"     # pass | fail | error
    exit_code: int = 2
    kernel: KernelInfo = field(default_factory=KernelInfo)
    patches: list[dict[str, Any]] = field(default_factory=list)    # file, subject, author, status, commit
    config: ConfigInfo = field(default_factory=ConfigInfo)
    build: BuildInfo = field(default_factory=BuildInfo)
    boot: BootInfo = field(default_factory=BootInfo)
    tests: list[TestResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)     # phase -> seconds
    error: str = ""            # the error message when verdict is error
    logs: dict[str, str] = field(default_factory=dict)       # name -> relative path
    # the GC pause (verifier latency-*: median and range of repeated 2 MiB-aligned moves) and the path the
    # aligned move took (pmd-*: VmPTE growth), verifier.pause_summary; empty when the verifier did not run
    pause: dict[str, Any] = field(default_factory=dict)
    coverage: dict[str, Any] | None = None     # the changed lines' gcov counts (kpipe/checks/coverage.py); None: none

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for t in self.tests:
            c = out.setdefault(t.suite, {s.value: 0 for s in Status})
            c[t.status.value] += 1
        return out

    def failures(self) -> list[TestResult]:
        return [t for t in self.tests if t.status.bad]


@dataclass
class PremergeArch:
    """One arch's premerge verdict and the evidence for it (kpipe/workflows/comparison.py judges)."""
    comparison: list[dict[str, Any]]           # per test: baseline, patched, change (fixed, regressed, ...)
    flip: dict[str, Any]                       # the verifier cases the series is about, as each policy says
    new_findings: list[str]
    reasons: list[str]
    latency: dict[str, Any]
    exit_code: int
    verdict: str
    baseline: dict[str, Any]                   # verdict, exit_code, error of each side (+ job_url: LAVA)
    patched: dict[str, Any]


@dataclass
class Commit(Sparse):
    commit: str | None = None                  # a sha, or "K patch(es)" / a patch file in --series mode
    subject: str | None = None
    index: int | None = None                   # --series mode: the first bad patch's position (1-based)


@dataclass
class BisectStep(Sparse):
    """One kernel kpipe built and judged during a bisection."""
    exit_code: int | None = None
    mark: str | None = None                    # good | bad | skip (what git bisect was told)
    verdict: str | None = None
    why: str | None = None
    dir: str | None = None                     # the step's run folder
    policies: list[str] | None = None          # the --expect policies this kernel behaves as
    policy: str | None = None
    commit: str | None = None
    subject: str | None = None
    endpoint: str | None = None                # good | bad: the endpoint checks before the search


@dataclass
class BisectOutcome(Sparse):
    keep_none: ClassVar[frozenset[str]] = frozenset({"first_bad"})     # null: no first bad commit
    mode: str | None = None                    # commits | series
    good: str | None = None
    bad: str | None = None
    candidates: int | None = None              # commits between the endpoints
    steps: list[BisectStep] = field(default_factory=list)
    first_bad: Commit | None = None
    why: str | None = None                     # why there is no first bad commit
    fix: str | None = None
    log: str | None = None                     # git bisect log, in the run folder
    skipped_candidates: list[Commit] | None = None


# premerge's tag checks of each patch (kpipe/source/tags.py makes them)
@dataclass(frozen=True)
class TagProblem:
    tag: str                    # Signed-off-by | Fixes
    severity: str               # error (fails a premerge) | warning | unchecked
    message: str


@dataclass(frozen=True)
class FixesTag:
    line: str                   # as written, after "Fixes:"
    sha: str                    # the id as written ("" when the line names none)
    subject: str                # the quoted subject as written ("" when none)
    commit: str = ""            # the full id in the tree ("" when not found)
    real_subject: str = ""      # that commit's subject
    status: str = "ok"          # ok | absent | ambiguous | not-in-base | wrong-subject | unchecked | malformed


@dataclass(frozen=True)
class PatchTags:
    file: str
    author: str                 # who git am records as the author ("" for a plain diff)
    signoffs: tuple[str, ...]
    fixes: tuple[FixesTag, ...]
    problems: tuple[TagProblem, ...]
    checkpatch: tuple[str, ...]     # checkpatch's own messages of tags.CHECKPATCH_TYPES for this patch

    @property
    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)


@dataclass
class RunExtra(Sparse):
    """What a workflow adds to its run (result.json's ``extra``)."""
    series: dict[str, Any] | None = None       # the series as given (source, patches)
    phases: dict[str, float] | None = None     # the run's own phases (fetch, apply, checkpatch)
    error: str | None = None                   # the workflow could not run (before any arch)
    premerge: dict[str, PremergeArch] | None = None
    checkpatch: list[dict[str, Any]] | None = None
    tags: list[PatchTags] | None = None        # premerge: each patch's Signed-off-by and Fixes: (kpipe/source/tags.py)
    baseline: dict[str, ArchResult] | None = None   # premerge: the baseline kernel's results
    bisect: BisectOutcome | None = None
    lava: dict[str, Any] | None = None
    warnings: dict[str, Any] | None = None     # compile_checks (workflows/): per arch, the warnings delta +
                                               # bisectability
    crashes: list[dict[str, Any]] | None = None   # findings folded by signature (kpipe/checks/signatures.py)
    coverage: list[dict[str, Any]] | None = None  # changed-line coverage over the arches (kpipe/checks/coverage.py)
    warnings_delta: dict[str, Any] | None = None  # new compiler/sparse/clang warnings (another section's data)
    exit_code_extra: int | None = None         # the workflow's own verdict beyond the arches' (checkpatch errors,
                                               # no first bad commit, a premerge that could not run)


@dataclass
class RunResult:
    workflow: str
    verdict: str = "error"
    exit_code: int = 2
    arches: dict[str, ArchResult] = field(default_factory=dict)
    reproducer: str = ""
    started: str = ""
    seconds: float = 0.0
    out_dir: str = ""
    extra: RunExtra = field(default_factory=RunExtra)


def _plain(o: Any) -> Any:
    if isinstance(o, enum.Enum):
        return o.value
    if is_dataclass(o) and not isinstance(o, type):
        keep = o.keep_none if isinstance(o, Sparse) else None
        return {f.name: _plain(getattr(o, f.name)) for f in fields(o)
                if keep is None or getattr(o, f.name) is not None or f.name in keep}
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, Path):
        return str(o)
    return o


SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).resolve().parent / "schema" / "result.schema.json"


def to_dict(run: RunResult) -> dict[str, Any]:
    """The one serialisation of a run (result.json): schema_version first, described by SCHEMA_FILE."""
    d = {"schema_version": SCHEMA_VERSION, **_plain(run)}
    for name, ar in run.arches.items():
        d["arches"][name]["counts"] = ar.counts()
    return d


def schema_problems(data: dict[str, Any]) -> list[str]:
    """Where ``data`` (a loaded result.json) departs from SCHEMA_FILE; [] when it conforms."""
    import jsonschema
    schema = json.loads(SCHEMA_FILE.read_text())
    v = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(v.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))]


def write_json(run: RunResult, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_dict(run), indent=2, sort_keys=False, default=str))
    tmp.replace(path)


# Finding kinds that say a detector kpipe relies on was off (not a report of the kernel's behaviour): an error of
# the run, exit 2, unless the kernel reported something else (kpipe.guest.findings classifies lines into these).
RUN_ERROR_KINDS = frozenset({"kmemleak_off"})

# XML 1.0 allows no control characters but tab, newline and carriage return (nor U+FFFE/U+FFFF, lone
# surrogates): a test's output can hold any byte, so they are written as \xNN instead.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_text(s: str | None) -> str:
    return _XML_BAD.sub(lambda m: f"\\x{ord(m.group()):02x}", s or "")


def _case(parent: ET.Element, classname: str, name: str, seconds: float = 0.0) -> ET.Element:
    return ET.SubElement(parent, "testcase", classname=xml_text(classname), name=xml_text(name),
                         time=f"{seconds:.3f}")


def _outcome(tc: ET.Element, tag: str, message: str, text: str = "") -> None:
    el = ET.SubElement(tc, tag, message=xml_text(message))
    if text:
        el.text = xml_text(text)


def write_junit(run: RunResult, path: Path) -> None:
    """junit.xml says what the verdict says: every test (nested ones flattened, kunit's rule), every kernel
    finding as a failing case of the arch's ``kernel`` suite, and a run error no test or finding accounts for
    (a build or apply failure, a boot that never got ready) as the ``pipeline`` suite's error or failure."""
    root = ET.Element("testsuites", name=xml_text(f"kpipe {run.workflow}"))
    for arch, ar in run.arches.items():
        by_suite: dict[str, list[TestResult]] = {}
        for t in ar.tests:
            by_suite.setdefault(t.suite, []).append(t)
        for suite, tests in by_suite.items():
            flat = [x for t in tests for x in _flatten(t)]
            ts = ET.SubElement(root, "testsuite", name=xml_text(f"{arch}.{suite}"), tests=str(len(flat)),
                               failures=str(sum(x.status == Status.FAIL for x, _ in flat)),
                               errors=str(sum(x.status == Status.ERROR for x, _ in flat)),
                               skipped=str(sum(x.status in (Status.SKIP, Status.XFAIL) for x, _ in flat)))
            for t, name in flat:
                tc = _case(ts, f"{arch}.{suite}", name, t.seconds)
                msg = f"expected {t.expected}, observed {t.observed}".strip()
                if t.status == Status.FAIL:
                    _outcome(tc, "failure", msg, t.detail)
                elif t.status == Status.ERROR:
                    _outcome(tc, "error", msg, t.detail)
                elif t.status in (Status.SKIP, Status.XFAIL):
                    _outcome(tc, "skipped", t.detail or t.status.value)
        if ar.findings:
            ts = ET.SubElement(root, "testsuite", name=xml_text(f"{arch}.kernel"), tests=str(len(ar.findings)),
                               failures=str(sum(f.kind not in RUN_ERROR_KINDS for f in ar.findings)),
                               errors=str(sum(f.kind in RUN_ERROR_KINDS for f in ar.findings)), skipped="0")
            for i, f in enumerate(ar.findings, 1):
                tc = _case(ts, f"{arch}.kernel", f"{i:02d} {f.kind} ({f.source})")
                _outcome(tc, "error" if f.kind in RUN_ERROR_KINDS else "failure", f"{f.kind}: {f.line.strip()}",
                         "\n".join(f.context))
        bad_tests = any(x.status.bad for t in ar.tests for x, _ in _flatten(t))
        if ar.exit_code != 0 and not bad_tests and not ar.findings:
            ts = ET.SubElement(root, "testsuite", name=xml_text(f"{arch}.pipeline"), tests="1",
                               failures="1" if ar.exit_code == 1 else "0",
                               errors="0" if ar.exit_code == 1 else "1", skipped="0")
            tc = _case(ts, f"{arch}.pipeline", "pipeline")
            _outcome(tc, "failure" if ar.exit_code == 1 else "error",
                     (ar.error or f"{ar.verdict} (exit {ar.exit_code})").splitlines()[0], ar.error or "")
    ET.indent(root)
    tmp = path.with_suffix(".xml.tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)


def _flatten(t: TestResult, prefix: str = "") -> list[tuple[TestResult, str]]:
    """JUnit test cases, as kunit's writer does: nested results become ``parent/child`` leaves. A parent is a
    case of its own only when it has no children, or when it went wrong by itself (bad while no child is: an
    exit 1 after all-ok KTAP, a crash after the last subtest); a parent that failed because a child failed is
    only a container, so one failure is counted once."""
    name = f"{prefix}{t.name}"
    if not t.subtests:
        return [(t, name)]
    out = []
    for s in t.subtests:
        out += _flatten(s, f"{name}/")
    if t.status.bad and not any(x.status.bad for x, _ in out):
        out.insert(0, (t, name))
    return out
