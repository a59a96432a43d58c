"""A parsed LAVA log -> kpipe's own ArchResult: the same parsers, files and verdict as `kpipe verify`.

  * verifier: the TAP block goes through ``verifier.parse_tap`` with the same expectations and policy;
  * selftests: each block through ``selftests`` (exit-code mapping, KTAP nesting), logs and selftests.ktap
    written as `verify` writes them;
  * kernel log: console findings (kernel lines of LAVA's target log) + dmesg findings, as `verify` adds both;
  * LAVA's own per-case results are cross-checked: a case kpipe passes but LAVA failed (or never reported) is
    an ERROR naming both verdicts; where kpipe is the stricter judge (a failed KTAP subtest) its FAIL stands;
  * a kernel panic is a kernel failure (exit 1) whatever LAVA calls it ("Infrastructure: Connection closed").
"""
from __future__ import annotations

from dataclasses import replace

from ..checks import kmemleak, selftests, verifier
from ..guest.findings import scan_text
from ..report.results import ArchResult, BootInfo, Finding, KmemleakInfo, LavaInfo, Status, TestResult
from ..workflows.runner import Prepared, judge
from .logparse import LavaLog

LAVA_STATUS = {Status.PASS: "pass", Status.XFAIL: "pass", Status.SKIP: "skip", Status.FAIL: "fail",
               Status.ERROR: "fail"}


def _not_run(suite: str, name: str, why: str) -> TestResult:
    return TestResult(suite, name, Status.ERROR, "exit 0" if suite != "verifier" else "", "not run", why)


def _why(log: LavaLog, what: str = "before this ran") -> str:
    if log.error_type or log.error_msg:
        return f"the LAVA job ended {what} ({log.error_type or 'error'}: {log.error_msg})"
    return f"the LAVA job ended {what}"


def verifier_results(prep: Prepared, log: LavaLog, expectations: verifier.Expectations,
                     timeout: float) -> list[TestResult]:
    adir = prep.dir
    (adir / "verifier-expect.txt").write_text(verifier.expect_file_text(expectations, prep.policy))
    blk = log.block("verifier")
    if blk is None or not blk.ended:
        text = blk.text if blk else ""
        (adir / "verifier.tap").write_text(text)
        results = verifier.parse_tap(text, None, expectations, prep.policy)
        why = _why(log)
        return [replace(r, detail=f"{r.detail}; {why}" if r.detail else why, output="verifier.tap") for r in results]
    (adir / "verifier.tap").write_text(blk.text)
    if blk.err:
        (adir / "verifier.stderr").write_text("\n".join(blk.err) + "\n")
    exit_status = None if blk.timed_out else blk.exit
    results = verifier.parse_tap(blk.text, exit_status, expectations, prep.policy)
    if blk.err:
        tail = " | ".join(blk.err[-3:])
        results = [replace(r, detail=f"{r.detail}; stderr: {tail}" if r.detail else f"stderr: {tail}")
                   if r.status == Status.ERROR else r for r in results]
    return [replace(r, output="verifier.tap") for r in results]


def selftest_results(prep: Prepared, log: LavaLog, suite: str = "selftests") -> list[TestResult]:
    adir = prep.dir
    logdir = adir / suite
    logdir.mkdir(parents=True, exist_ok=True)
    results: list[TestResult] = []
    ktap = []
    for b in prep.tests:
        spec = b.spec
        if spec.skip:
            run = selftests._Run(Status.SKIP, "not built", f"SKIP {spec.skip}", [spec.skip])
            results.append(TestResult(suite, spec.name, Status.SKIP, "exit 0", "not in this tree", spec.skip))
            ktap.append((b, run, ""))
            continue
        if b.binary is None:
            run = selftests._Run(Status.ERROR, "build failed", "error build failed", [b.error])
            results.append(TestResult(suite, spec.name, Status.ERROR, "exit 0", "build failed", b.error))
            ktap.append((b, run, b.error))
            continue
        blk = log.block(spec.name)
        if blk is None or not blk.ended:
            why = _why(log)
            run = selftests._Run(Status.ERROR, "not run", "error not run", [why])
            results.append(_not_run(suite, spec.name, why))
            ktap.append((b, run, blk.text if blk else ""))
            if blk is not None:
                (logdir / f"{spec.name}.log").write_text(blk.text)
            continue
        output = blk.text
        (logdir / f"{spec.name}.log").write_text(output)
        run = selftests.status_from_exit(blk.exit, blk.timed_out, spec.timeout)
        res, run = selftests._result(b, adir, suite, adir, output, run, blk.seconds)
        results.append(res)
        ktap.append((b, run, output))
    if prep.tests:
        selftests.write_ktap(adir / f"{suite}.ktap", ktap)
    return results


def cross_check(tests: list[TestResult], log: LavaLog) -> tuple[list[TestResult], list[str]]:
    """Every case kpipe judged must be in LAVA's results with the same verdict (else ERROR, named)."""
    out, mismatches = [], []
    for suite in ("verifier", "selftests"):
        lava = log.results_of(suite)
        for t in tests:
            if t.suite != suite or t.observed in ("not run", "missing", "not in this tree", "build failed"):
                continue
            if t.name == "verifier-exit":
                continue
            got = lava.get(t.name)
            want = LAVA_STATUS[t.status]
            if got is None:
                mismatches.append(f"{suite}/{t.name}: kpipe {t.status.value}, LAVA has no result")
            elif got.result != want:
                mismatches.append(f"{suite}/{t.name}: kpipe {t.status.value}, LAVA {got.result}")
    for t in tests:
        bad = [m for m in mismatches if m.startswith(f"{t.suite}/{t.name}:")]
        if bad and t.status.bad:
            # kpipe is the stricter judge (KTAP subtests, expectations): keep its failure, say what LAVA said
            t = replace(t, detail="; ".join([t.detail, *bad]) if t.detail else bad[0])
        elif bad:
            t = replace(t, status=Status.ERROR, detail="; ".join([*bad, t.detail]) if t.detail else bad[0])
        out.append(t)
    return out, mismatches


def kmemleak_result(prep: Prepared, log: LavaLog, leak_scan: bool, not_scanned: str
                    ) -> tuple[list[Finding], KmemleakInfo | None]:
    """The job's kmemleak step judged as `verify` judges its scan; why there was none when the kernel has it."""
    if not leak_scan:
        return [], KmemleakInfo(not_scanned=not_scanned) if not_scanned else None
    blk = log.block("kmemleak")
    if blk is None:
        return [], KmemleakInfo(not_scanned=_why(log, "before the scan"))
    path = prep.dir / "kmemleak.log"
    path.write_text(blk.text + ("--- stderr\n" + "\n".join(blk.err) + "\n" if blk.err else ""))
    cut_off = "" if blk.ended or blk.timed_out else _why(log, "during the scan")
    rep = kmemleak.judge(blk.text, "\n".join(blk.err), blk.exit if blk.ended else None, blk.timed_out,
                         prep.ar.kernel.release or "", blk.seconds, cut_off=cut_off)
    prep.ar.logs["kmemleak"] = str(path)
    return rep.findings, kmemleak.info(rep, path)


def to_arch_result(prep: Prepared, log: LavaLog, accel: str, accel_reason: str, verifier_timeout: float,
                   lava_exit: int, lava_seconds: float, timed_out: bool, leak_scan: bool = False,
                   leak_not_scanned: str = "", cases: tuple[str, ...] = ()) -> ArchResult:
    """The job's log as verify's result of the arch; ``cases``: the verifier cases the job ran (--case), judged
    against those expectations only (() for all)."""
    ar, adir = prep.ar, prep.dir
    ar.logs.update({"lava": str(adir / "lava.log"), "serial": str(adir / "serial.log"),
                    "dmesg": str(adir / "dmesg.log")})
    (adir / "serial.log").write_text("".join(ln + "\n" for ln in log.target))
    expectations = verifier.select(verifier.load_expectations(prep.suite), cases)
    started = log.block("verifier") is not None or any(log.block(b.spec.name) for b in prep.tests)
    tests: list[TestResult] = []
    if started:
        tests += verifier_results(prep, log, expectations, verifier_timeout)
        tests += selftest_results(prep, log)
    tests, mismatches = cross_check(tests, log)
    ar.tests += tests
    findings = list(log.findings)
    dm = log.block("dmesg")
    if dm is not None:
        (adir / "dmesg.log").write_text(dm.text)
        findings += scan_text(dm.text, "dmesg")
    leaks, leak_info = kmemleak_result(prep, log, leak_scan, leak_not_scanned)
    ar.findings += findings + leaks
    panic = next((f for f in findings if f.kind == "panic"), None)
    ar.boot = BootInfo(seconds=log.boot_seconds, accel=accel, accel_reason=accel_reason,
                       findings=[f"{f.source}: {f.kind}: {f.line}" for f in ar.findings],
                       lava=LavaInfo(job_result=log.job_result, error_type=log.error_type, error_msg=log.error_msg,
                                     lava_run_exit=lava_exit, lava_run_seconds=lava_seconds, timed_out=timed_out,
                                     results=len(log.results), mismatches=mismatches, errors=log.errors[-5:]),
                       kmemleak=leak_info)
    ar.phases["lava-run"] = lava_seconds
    judge(ar)
    if panic is not None:
        reason = panic.line.split("not syncing:", 1)[-1].strip()
        ar.error = f"kernel panic on {prep.arch.name}: {reason}" + (
            f" (LAVA reported it as {log.error_type}: {log.error_msg})" if log.error_type else "") + \
            ("\n" + ar.error if ar.error else "")
    elif not started and ar.exit_code == 0:
        # nothing ran and the kernel said nothing: the job did not get to the tests (LAVA's fault or a hang)
        ar.verdict, ar.exit_code = "error", 2
        ar.error = ("the LAVA job ran no test" + (f": {log.error_type}: {log.error_msg}" if log.error_type else "") +
                    (" (lava-run hit kpipe's wall-clock limit)" if timed_out else "") +
                    f"; read {adir / 'lava.log'}")
    return ar
