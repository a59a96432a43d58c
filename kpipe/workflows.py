"""The three workflows users run: verify, premerge, bisect. Short functions that call the stages in order
and decide the verdict; each returns a RunResult whose exit_code follows the contract in errors.py."""
from __future__ import annotations

import concurrent.futures
import contextlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import image, kconfig, proc, qemu, report, selftests, verifier
from .arches import Arch, resolve_arches
from .build import Kernel
from .commands import remember_kernel
from .checkout import Checkout
from .errors import (EXIT_BUILD, EXIT_INFRA, EXIT_KERNEL, EXIT_PASS, EXIT_PATCH, ConfigError, InfraError,
                     KernelError, KpipeError)
from .findings import BLOCKED_KINDS, FATAL_KINDS, blocked_task_name, describe, summarize
from .patches import Applied, Series
from .pipeline import Options, apply, build_kernel, locked_checkout, new_run_dir, resolve_tree, series_of
from .profiles import get_profile
from .progress import note, phase
from .results import ArchResult, Finding, RunResult, Status, TestResult

# Which exit code wins when arches disagree: a patch that does not apply or a build failure says the most.
EXIT_PRIORITY = (EXIT_PATCH, EXIT_BUILD, EXIT_KERNEL, EXIT_INFRA, EXIT_PASS)
VERDICT_OF = {EXIT_PASS: "pass", EXIT_KERNEL: "fail"}


def worst(codes: list[int]) -> int:
    for c in EXIT_PRIORITY:
        if c in codes:
            return c
    return EXIT_PASS


@dataclass
class Prepared:
    """What the build side hands the boot side for one arch."""
    arch: Arch
    kernel: Kernel
    initrd: image.Initrd
    verifier_bin: Path
    policy: str
    tests: list[selftests.BuiltTest]
    ar: ArchResult
    dir: Path


@dataclass
class Variant:
    """One side of a run: its series and the result folder layout."""
    name: str
    series: Series
    dir: Path
    results: dict[str, ArchResult] = field(default_factory=dict)


# ---------------------------------------------------------------- one arch: build side, boot side

def _arch_result(arch: Arch, applied: Applied | None) -> ArchResult:
    ar = ArchResult(arch=arch.name)
    if applied is not None:
        t = applied.checkout.tree
        ar.kernel = {"tree": t.spec, "base": applied.base, "base_label": t.base_label, "head": applied.head,
                     "debian_version": t.version}
        ar.patches = [p.__dict__ for p in applied.patches]
    return ar


def prepare_arch(arch: Arch, applied: Applied, series: Series, opts: Options, adir: Path,
                 touched: list[str] | None = None) -> Prepared:
    """Build side (needs the locked checkout): kernel, guest image, verifier, selftests."""
    ar = _arch_result(arch, applied)
    adir.mkdir(parents=True, exist_ok=True)
    log = adir / "build.log"
    ar.logs["build"] = str(log)
    src = applied.checkout.path
    touched = series.touched if touched is None else touched
    specs = selftests.plan(src, touched, opts.selftests)
    kernel, cfg = build_kernel(arch, applied, opts, log, ar.phases)
    remember_kernel(kernel, cfg.profile)
    ar.kernel["release"] = kernel.release
    ar.kernel["profile"] = cfg.profile
    ar.config = cfg.as_dict(opts.defconfig)
    ar.build = {"seconds": kernel.seconds, "cached": kernel.cached, "key": kernel.key, "compiler": kernel.compiler,
                "compiled": kernel.extra.get("compiled", []), "image": str(kernel.image)}
    with phase("image", arch.name, ar.phases) as ph:
        initrd = image.build_image(arch, adir / "image.log")
        ph.update(f"{arch.name} {'cached' if initrd.cached else 'built'}")
    with phase("userspace", f"{arch.name} verifier + selftests", ar.phases):
        policy, ar.kernel["policy_reason"] = verifier.choose_policy(src, opts.expect)
        vbin = verifier.build_verifier(arch, kernel.headers, adir / "bin" / "verifier", adir / "userspace.log")
        specs = selftests.skip_unconfigured(specs, kconfig.parse_dotconfig(kernel.config),
                                            {m.symbol: m.reason for m in cfg.optional_missing})
        ar.config["selftests"] = selftests.selection_report(src, touched, specs)
        tests = selftests.build_selftests(specs, arch, src, kernel.headers, adir / "bin" / "selftests",
                                         adir / "userspace.log")
        if opts.extra_tests:
            tests += selftests.build_extra_tests([Path(f) for f in opts.extra_tests], arch, kernel.headers,
                                                 adir / "bin" / "extra", adir / "userspace.log")
    if opts.test_timeout:
        tests = [replace(t, spec=replace(t.spec, timeout=opts.test_timeout)) for t in tests]
    ar.kernel["policy"] = policy
    return Prepared(get_profile(opts.profile).guest_arch(arch), kernel, initrd, vbin, policy, tests, ar, adir)


HANG_SYSRQ_KEYS = "wl"        # SysRq: show blocked (D state) tasks, then a backtrace of every CPU
CONSOLE_QUIET = 2.0           # after SysRq: read the console until it is quiet this long ...
CONSOLE_LIMIT = 12.0          # ... but no longer than this
DMESG_TIMEOUT = 15.0


def boot_and_run_tests(prep: Prepared, opts: Options) -> ArchResult:
    """Boot side: boot, push and run the verifier and the selftests, collect dmesg, judge.

    A wedged kernel is a verdict, not a timeout: when a guest command runs past its deadline, the session
    breaks, or the kernel printed an Oops/BUG and the tests were abandoned, kpipe asks the kernel what it is
    doing (SysRq w + l: through a fresh SSH connection when one still answers, else a serial BREAK), reads
    the console for a bounded time and judges on what the kernel reported (hung task, blocked task, soft
    lockup, RCU stall, lockdep, Oops: exit 1). Only a guest that stopped answering with no kernel report
    at all is an infrastructure error (exit 2)."""
    ar, adir = prep.ar, prep.dir
    ar.logs.update({"serial": str(adir / "serial.log"), "dmesg": str(adir / "dmesg.log")})
    expectations = verifier.load_expectations()
    t_boot = time.monotonic()
    vm: qemu.VM | None = None
    wedged: KpipeError | None = None
    dmesg: list[Finding] = []
    try:
        with contextlib.ExitStack() as stack:
            with phase("boot", prep.arch.name, ar.phases) as ph:
                guest = stack.enter_context(qemu.boot(prep.arch, prep.kernel.image, prep.initrd, adir,
                                                      accel=opts.accel, timeout=opts.boot_timeout,
                                                      cmdline_extra=opts.kernel_args, collect_dmesg=False))
                vm = guest.vm
                ph.update(f"{prep.arch.name} {guest.accel} ({guest.boot_seconds:.1f}s to ready)")
            ar.boot = {"seconds": guest.boot_seconds, "ssh_seconds": guest.ssh_seconds, "accel": guest.accel,
                       "accel_reason": guest.accel_reason, "findings": [], "vcpus": prep.arch.smp}
            ar.boot["cpus"] = check_guest_cpus(guest, prep.arch.smp, ar.kernel.get("profile", ""))
            guest.session.abort_check = vm.abandon_reason
            guest.session.on_timeout = lambda command: ask_wedged_kernel(guest, ar)
            try:
                with phase("run", f"{prep.arch.name} verifier ({prep.policy})", ar.phases):
                    ar.tests += verifier.run_verifier(guest.session, prep.verifier_bin, prep.policy, expectations,
                                                      adir, **({"timeout": opts.test_timeout}
                                                               if opts.test_timeout else {}))
                if prep.tests:          # a wedged kernel stops them: the session's abort_check
                    with phase("run", f"{prep.arch.name} {len(prep.tests)} selftest(s)", ar.phases):
                        ar.tests += selftests.run_selftests(guest.session, prep.tests, adir, rel_to=adir,
                                                           parallel=prep.arch.smp)
            except InfraError as e:
                if not vm.running() or vm.panicked:
                    raise                       # qemu.boot turns it into the panic's KernelError
                wedged = e
                ar.tests += getattr(e, "partial_results", [])
            guest.session.abort_check = guest.session.on_timeout = None
            if wedged is not None or guest.session.timed_out or vm.fatal_at is not None:
                ask_wedged_kernel(guest, ar)
            if vm.running() and not vm.panicked:
                with phase("dmesg", prep.arch.name, ar.phases):
                    try:
                        dmesg = guest.collect_dmesg("dmesg.log", timeout=DMESG_TIMEOUT)
                    except InfraError as e:
                        wedged = wedged or e
    except KernelError as e:
        if vm is not None:
            _note_fatal_latency(ar, vm)
            seen = vm.findings()
            if seen:          # name what the kernel reported before it died, not only the panic line
                first = next((f for f in seen if f.kind in FATAL_KINDS), seen[0])
                kinds = ", ".join(summarize(seen))
                e.message = f"kernel misbehaved: {kinds}; first report: {describe(first)}; {e.message}"
        raise
    finally:
        if vm is not None:
            ar.findings += vm.findings()       # the whole console, read to its end (QEMU has stopped)
            ar.boot["findings"] = [describe(f) for f in ar.findings]
    ar.findings += dmesg
    if vm is not None:
        _note_fatal_latency(ar, vm)
    ar.boot["findings"] = [describe(f) for f in ar.findings]
    ar.phases["boot+tests"] = round(time.monotonic() - t_boot, 3)
    if wedged is not None and not ar.findings:
        wedged.detail = [*wedged.detail, "the kernel reported nothing (no hung task, lockup, stall, Oops or "
                         "blocked task, even when asked with SysRq); last console lines:",
                         *(vm.tail_lines() if vm else [])]
        wedged.log = wedged.log or str(adir / "serial.log")
        raise wedged
    return judge(ar)


def check_guest_cpus(guest: qemu.Guest, vcpus: int, profile: str) -> int:
    """The guest kernel must run on every vCPU the profile gives it: an SMP profile booting a one-CPU kernel
    (seen: x86_64 without ACPI, whose q35 MP table lists only the boot CPU) would judge without SMP, silently."""
    res = guest.session.run(["nproc"], timeout=30)
    try:
        cpus = int(res.stdout.strip())
    except ValueError:
        raise InfraError(f"cannot read the guest's CPU count (nproc: exit {res.exit_status}, {res.stdout[:80]!r})",
                         fix="read guest.log in the run folder") from None
    if cpus != vcpus:
        raise InfraError(f"the guest kernel runs on {cpus} CPU(s) but QEMU gives it {vcpus} ({profile} profile): "
                         "the verdict would not be made on the kernel the profile promises",
                         log=str(guest.run_dir / "serial.log"),
                         fix="read serial.log for how the CPUs were enumerated (x86_64 needs CONFIG_ACPI; "
                             "arm64 PSCI); fix the profile's kconfig layer (kconfigs/debug-<arch>.config)")
    return cpus


def ask_wedged_kernel(guest: qemu.Guest, ar: ArchResult) -> None:
    """SysRq w + l (fresh SSH when it answers, else serial BREAK), then read the console for a bounded time.
    Once per run; nothing to ask when QEMU is gone or the kernel panicked."""
    vm = guest.vm
    if "hang_probe" in ar.boot or not vm.running() or vm.panicked:
        return
    t0 = time.monotonic()
    why_not = guest.session.sysrq(HANG_SYSRQ_KEYS, alive=vm.running)
    via = "ssh /proc/sysrq-trigger"
    if why_not is not None:
        via = "serial BREAK" if vm.send_sysrq(HANG_SYSRQ_KEYS) else f"none ({why_not})"
    waited = vm.wait_console_quiet(CONSOLE_QUIET, CONSOLE_LIMIT)
    ar.boot["hang_probe"] = {"sysrq": HANG_SYSRQ_KEYS, "via": via, "ssh_error": why_not or "",
                             "seconds": round(time.monotonic() - t0, 2), "console_wait": round(waited, 2),
                             "timed_out": list(guest.session.timed_out)}
    note(f"{guest.arch.name}: the guest stopped answering; asked the kernel with SysRq {HANG_SYSRQ_KEYS!r} "
         f"via {via}")


def _note_fatal_latency(ar: ArchResult, vm: qemu.VM) -> None:
    if vm.fatal_at is not None:
        ar.boot = {**ar.boot, "first_fatal_report": vm.fatal_line,
                   "verdict_after_fatal_s": round(time.monotonic() - vm.fatal_at, 2)}


def judge(ar: ArchResult) -> ArchResult:
    failed = [t for t in ar.tests if any(x.status == Status.FAIL for x in t.walk())]
    errored = [t for t in ar.tests if any(x.status == Status.ERROR for x in t.walk())]
    if ar.findings:
        ar.verdict, ar.exit_code = "fail", EXIT_KERNEL
        kinds = summarize(ar.findings)
        blocked = sorted({blocked_task_name(f.line) or "?" for f in ar.findings if f.kind in BLOCKED_KINDS})
        why = [f"{k} x{n}" if n > 1 else k for k, n in kinds.items()]
        ar.error = "kernel misbehaved: " + ", ".join(why)
        if blocked:
            ar.error += "; blocked task(s): " + ", ".join(blocked)
        if failed:
            ar.error += "; failed: " + ", ".join(f"{t.suite}/{t.name}" for t in failed[:8])
        first = next((f for f in ar.findings if f.kind in FATAL_KINDS), ar.findings[0])
        ar.error += "\nfirst report: " + describe(first)
    elif failed:
        ar.verdict, ar.exit_code = "fail", EXIT_KERNEL
        why = [f"{t.suite}/{t.name}" for t in failed]
        ar.error = "kernel misbehaved: " + ", ".join(why[:8]) + (" ..." if len(why) > 8 else "")
    elif errored:
        ar.verdict, ar.exit_code = "error", EXIT_INFRA
        ar.error = "tests could not run: " + ", ".join(f"{t.suite}/{t.name}" for t in errored[:8])
    else:
        ar.verdict, ar.exit_code = "pass", EXIT_PASS
    return ar


def _record_error(ar: ArchResult, e: KpipeError) -> ArchResult:
    ar.exit_code = e.exit_code
    ar.verdict = VERDICT_OF.get(e.exit_code, "error")
    ar.error = e.message
    if isinstance(e, ConfigError):
        ar.config["missing"] = list(e.detail)       # one line per option: requested, got, and why
    if isinstance(e, KernelError):
        ar.findings.append(Finding(kind="panic", source="console", line=e.message, context=tuple(e.detail)))
    if e.detail:
        ar.error += "\n" + "\n".join(e.detail)
    if e.log:
        ar.logs["failure"] = e.log
    note(e.render())
    return ar


# ---------------------------------------------------------------- a variant over arches

def run_variant(arches: list[Arch], tree, series: Series, opts: Options, vdir: Path, log_dir: Path,
                co: Checkout, timings: dict, touched: list[str] | None = None) -> dict[str, ArchResult]:
    """Apply ``series`` and verify each arch: builds one after another (each uses every core), each arch's
    boot and tests start as soon as its build is done, overlapping the next arch's build."""
    results: dict[str, ArchResult] = {}
    co = replace(co, tree=tree)          # the same worktree, reset to this variant's base (bisect steps differ)
    try:
        applied = apply(co, series, log_dir / "apply.log", timings)
    except KpipeError as e:
        for a in arches:
            results[a.name] = _record_error(_arch_result(a, None), e)
            results[a.name].kernel = {"tree": tree.spec, "base": tree.base, "base_label": tree.base_label}
        return results
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(arches)) as pool:
        futures = {}
        try:
            for a in arches:
                adir = vdir / a.name
                try:
                    prep = prepare_arch(a, applied, series, opts, adir, touched)
                except KpipeError as e:
                    results[a.name] = _record_error(_arch_result(a, applied), e)
                    continue
                futures[a.name] = (pool.submit(boot_and_run_tests, prep, opts), prep)
            for name, (fut, prep) in futures.items():
                try:
                    results[name] = fut.result()
                except KpipeError as e:
                    results[name] = _record_error(prep.ar, e)
        except BaseException:
            # Ctrl-C (KeyboardInterrupt lands in this thread): stop every QEMU/make child now, so the boots
            # running in the pool fail at once instead of finishing their tests before the pool lets go.
            # A boot may be just starting its QEMU: keep killing until every worker has given up.
            pending = [fut for fut, _ in futures.values() if not fut.cancel()]
            while pending:
                proc.kill_all()
                pending = list(concurrent.futures.wait(pending, timeout=0.5).not_done)
            raise
    return {a.name: results[a.name] for a in arches}


def _finish(run: RunResult, run_dir: Path, started: float) -> RunResult:
    codes = [ar.exit_code for ar in run.arches.values()] + [run.extra.get("exit_code_extra", EXIT_PASS)]
    run.exit_code = worst(codes)
    run.verdict = VERDICT_OF.get(run.exit_code, "error")
    run.seconds = round(time.monotonic() - started, 2)
    report.write_all(run, run_dir)
    return run


def _new_run(workflow: str, opts: Options, repro: str) -> tuple[RunResult, Path]:
    run_dir = new_run_dir(opts.out, workflow)
    run = RunResult(workflow=workflow, reproducer=repro, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    out_dir=str(run_dir))
    note(f"{workflow}: output folder {run_dir} (logs, result.json, junit.xml, summary.md, report.html)")
    return run, run_dir


# ---------------------------------------------------------------- verify

def verify(opts: Options, repro: str = "") -> RunResult:
    started = time.monotonic()
    arches = resolve_arches(opts.arch)
    series = series_of(opts)
    run, run_dir = _new_run("verify", opts, repro)
    run.extra["series"] = series.describe()
    timings: dict = {}
    try:
        tree = resolve_tree(opts, run_dir / "fetch.log", timings)
        with locked_checkout(tree, run_dir / "apply.log") as co:
            run.arches = run_variant(arches, tree, series, opts, run_dir, run_dir, co, timings)
    except KpipeError as e:
        for a in arches:
            run.arches.setdefault(a.name, _record_error(_arch_result(a, None), e))
    run.extra["phases"] = timings
    return _finish(run, run_dir, started)


# ---------------------------------------------------------------- premerge

def compare(base: list[TestResult], patched: list[TestResult]) -> list[dict]:
    """Per test: fixed (fail->pass), regressed (pass->fail), unchanged, new, gone."""
    def flat(ts):
        return {f"{t.suite}/{name}": t for top in ts for t, name in _walk_named(top)}
    b, p = flat(base), flat(patched)
    rows = []
    for name in sorted(set(b) | set(p)):
        bs = b[name].status if name in b else None
        ps = p[name].status if name in p else None
        if bs is None:
            change = "new"
        elif ps is None:
            change = "gone"
        elif bs.bad and ps == Status.PASS:
            change = "fixed"
        elif bs == Status.PASS and ps.bad:
            change = "regressed"
        else:
            change = "unchanged"
        rows.append({"test": name, "baseline": bs.value if bs else "", "patched": ps.value if ps else "",
                     "change": change,
                     "baseline_observed": b[name].observed if name in b else "",
                     "patched_observed": p[name].observed if name in p else ""})
    return rows


def _walk_named(t: TestResult, prefix: str = ""):
    name = prefix + t.name
    yield t, name
    for s in t.subtests:
        yield from _walk_named(s, name + "/")


def expected_flip(base_ar: ArchResult, patched_ar: ArchResult, expectations) -> dict:
    """The verifier cases whose expected outcome differs between the baseline's and the patched kernel's
    policies must behave as each policy says: that proves the tests exercise the patch. A flip case that
    skipped for want of something (a feature, a config option) on both sides proved nothing: it fails."""
    bp, pp = base_ar.kernel.get("policy"), patched_ar.kernel.get("policy")
    if not bp or not pp:
        return {"cases": [], "ok": False, "why": "one side did not run"}
    bcol, pcol = expectations.column(bp), expectations.column(pp)
    cases = [c for c in expectations.cases if bcol[c] != pcol[c]]
    bt = {t.name: t for t in base_ar.tests if t.suite == "verifier"}
    pt = {t.name: t for t in patched_ar.tests if t.suite == "verifier"}

    def unmet(t: TestResult) -> bool:
        """Skipped because something it needs is missing (not a move the policy refuses, whose SKIP
        carries the refusal's errno)."""
        return t.status == Status.SKIP and t.observed in ("skip", "")

    rows = []
    for c in cases:
        b, p = bt.get(c), pt.get(c)
        detail = ""
        if b is None or p is None:
            state = "no"
        elif unmet(b) and unmet(p):
            state, detail = "no", f"skipped on both sides: baseline: {b.detail}; patched: {p.detail}"
        elif p.status == Status.SKIP and pcol[c] != "skip":
            state, detail = "n/a", p.detail   # not exercised on this kernel (e.g. a uffd feature it lacks)
        else:
            state = "yes" if _as_policy(b, bcol[c]) and _as_policy(p, pcol[c]) else "no"
        rows.append({"case": c, "baseline_expected": bcol[c], "baseline_observed": b.observed if b else "missing",
                     "patched_expected": pcol[c], "patched_observed": p.observed if p else "missing",
                     "flipped": state, "detail": detail})
    flipped = [r for r in rows if r["flipped"] == "yes"]
    ok = bool(flipped) and all(r["flipped"] != "no" for r in rows)
    if not rows:
        why = (f"NOTHING FLIPS: the baseline and patched policies ({bp} vs {pp}) expect the same outcome for every "
               "verifier case, so the verifier does not exercise this series")
    elif not flipped:
        why = "NOTHING FLIPPED: no case the series is about behaved as the policies expect on both kernels"
    elif not ok:
        why = "some cases did not flip as the policies expect: " + \
            ", ".join(r["case"] + (" (skipped on both sides)" if r["detail"].startswith("skipped on both") else "")
                      for r in rows if r["flipped"] == "no")
    else:
        why = ""
    return {"baseline_policy": bp, "patched_policy": pp, "cases": rows, "ok": ok, "why": why,
            "flipped": len(flipped)}


def _as_policy(t: TestResult, expected: str) -> bool:
    """The case behaved as its policy says: it passed, it is a data case the policy expects to SKIP, or it
    showed exactly the known failure the policy expects (XFAIL)."""
    return t.status == Status.PASS or (t.status == Status.SKIP and expected == "skip") or \
        (t.status == Status.XFAIL and expected.startswith("xfail:"))


def premerge(opts: Options, repro: str = "") -> RunResult:
    from . import checkpatch

    started = time.monotonic()
    arches = resolve_arches(opts.arch or "all")
    series = series_of(opts)
    run, run_dir = _new_run("premerge", opts, repro)
    run.extra["series"] = series.describe()
    timings: dict = {}
    variants = [Variant("baseline", Series((), "none"), run_dir / "baseline"),
                Variant("patched", series, run_dir / "patched")]
    extra_code = EXIT_PASS
    try:
        tree = resolve_tree(opts, run_dir / "fetch.log", timings)
        with locked_checkout(tree, run_dir / "apply.log") as co:
            with phase("checkpatch", f"{len(series.patches)} patch(es)", timings):
                cp = checkpatch.run_checkpatch(co, series, run_dir / "checkpatch.log")
            for v in variants:
                v.results = run_variant(arches, tree, v.series, opts, v.dir, v.dir, co, timings, series.touched)
    except KpipeError as e:
        note(e.render())
        run.extra["error"] = e.message
        extra_code = e.exit_code
        cp = []
    base, patched = variants
    expectations = verifier.load_expectations()
    per_arch = {}
    for a in arches:
        b, p = base.results.get(a.name), patched.results.get(a.name)
        if b is None or p is None:
            continue
        comp = compare(b.tests, p.tests)
        flip = expected_flip(b, p, expectations)
        base_lines = {_norm(f.line) for f in b.findings}
        new_findings = [f"{f.source}: {f.kind}: {f.line}" for f in p.findings if _norm(f.line) not in base_lines]
        regressed = [r["test"] for r in comp if r["change"] == "regressed"]
        new_failing = [r["test"] for r in comp if r["change"] == "new" and r["patched"] in ("fail", "error")]
        reasons = []
        if regressed:
            reasons.append(f"regressed: {', '.join(regressed)}")
        if new_failing:
            reasons.append(f"new tests failing on the patched kernel: {', '.join(new_failing)}")
        if new_findings:
            reasons.append(f"{len(new_findings)} new kernel finding(s) in the patched kernel")
        if not flip["ok"]:
            reasons.append(flip["why"])
        slower = verifier.latency_regressions(b.tests, p.tests)
        if slower:
            reasons.append("stop-the-world move latency regressed: " + "; ".join(slower))
        infra = []
        for side, r in (("baseline", b), ("patched", p)):
            if r.exit_code not in (EXIT_PASS, EXIT_KERNEL):
                infra.append(r.exit_code)
                reasons.append(f"{side} could not be verified: {(r.error or '').splitlines()[0] if r.error else r.exit_code}")
        kernel_bad = bool(regressed or new_failing or new_findings or not flip["ok"] or slower)
        code = worst(infra + ([EXIT_KERNEL] if kernel_bad else []))
        per_arch[a.name] = {"comparison": comp, "flip": flip, "new_findings": new_findings, "reasons": reasons,
                            "latency": {"baseline": verifier.latencies(b.tests), "patched": verifier.latencies(p.tests),
                                        "regressed": slower},
                            "exit_code": code, "verdict": VERDICT_OF.get(code, "error"),
                            "baseline": {"verdict": b.verdict, "exit_code": b.exit_code, "error": b.error},
                            "patched": {"verdict": p.verdict, "exit_code": p.exit_code, "error": p.error}}
        # the run's per-arch result is the patched kernel's, with the premerge verdict
        ar = replace(p)
        ar.exit_code, ar.verdict = code, VERDICT_OF.get(code, "error")
        if reasons:
            ar.error = "; ".join(reasons)
        run.arches[a.name] = ar
    for a in arches:
        if a.name not in run.arches:
            run.arches[a.name] = patched.results.get(a.name) or base.results.get(a.name) or \
                ArchResult(arch=a.name, error=run.extra.get("error", "not run"))
    cp_errors = sum(r["errors"] for r in cp)
    if cp_errors:
        extra_code = worst([extra_code, EXIT_KERNEL])
    run.extra.update({"premerge": per_arch, "checkpatch": cp, "exit_code_extra": extra_code,
                      "baseline": {k: v for k, v in base.results.items()}, "phases": timings})
    return _finish(run, run_dir, started)


def _norm(line: str) -> str:
    from .findings import strip_timestamp
    return strip_timestamp(line).strip()


# ---------------------------------------------------------------- bisect

BISECT_EXIT = {EXIT_PASS: "good", EXIT_KERNEL: "bad"}


def step_mark(code: int, build_failure_is_bad: bool) -> str:
    if code == EXIT_BUILD and build_failure_is_bad:
        return "bad"
    return BISECT_EXIT.get(code, "skip")


def bisect(opts: Options, good: str, bad: str, build_failure_is_bad: bool = False, series_mode: bool = False,
           repro: str = "") -> RunResult:
    from . import bisection
    started = time.monotonic()
    arches = resolve_arches(opts.arch)
    run, run_dir = _new_run("bisect", opts, repro)
    timings: dict = {}
    try:
        if series_mode:
            outcome = bisection.bisect_series(arches, opts, run_dir, timings, build_failure_is_bad)
        else:
            outcome = bisection.bisect_commits(arches, opts, good, bad, run_dir, timings, build_failure_is_bad)
    except KpipeError as e:
        note(e.render())
        run.exit_code = e.exit_code
        run.verdict = "error"
        run.extra["error"] = e.message
        report.write_all(run, run_dir)
        return run
    run.extra.update({"bisect": outcome, "phases": timings})
    if not outcome.get("first_bad"):
        note(f"bisect: no first bad commit: {outcome.get('why', '')}" +
             (f"\n  fix: {outcome['fix']}" if outcome.get("fix") else ""))
    for a in arches:
        run.arches[a.name] = ArchResult(arch=a.name, verdict="pass" if outcome.get("first_bad") else "error",
                                        exit_code=EXIT_PASS if outcome.get("first_bad") else EXIT_INFRA)
    run.extra["exit_code_extra"] = EXIT_PASS if outcome.get("first_bad") else EXIT_INFRA
    return _finish(run, run_dir, started)
