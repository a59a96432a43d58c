"""The runner: one variant (a tree, a series, the options) through the stages on each arch — apply, build side
(kernel, guest image, verifier, selftests), boot side (QEMU, SSH, tests, the kernel's log) — and the verdict of
each arch. Every workflow (verify, premerge, bisect, lava) is a short function over it; it imports none of them."""
from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypedDict

from ..checks import coverage, intent, kmemleak, selftests, treebugs, verifier
from ..guest import image, qemu
from ..build import kconfig
from .. import proc
from ..arches import Arch
from ..build.kernel import Kernel, remember_kernel
from ..source.checkout import Checkout
from ..errors import (EXIT_BUILD, EXIT_INFRA, EXIT_KERNEL, EXIT_PASS, EXIT_PATCH, ConfigError, EarlyKernelError,
                      InfraError, UsageError, KernelError, KpipeError)
from ..guest.findings import BLOCKED_KINDS, FATAL_KINDS, blocked_task_name, describe, not_seen_on, summarize
from ..guest.findings import strip_timestamp as strip
from ..source.patches import Applied, Series
from .pipeline import Options, apply, build_kernel, run_suite
from ..build.profiles import get_profile
from ..progress import note, phase
from ..report.results import (RUN_ERROR_KINDS, ArchResult, BootInfo, BuildInfo, Finding, HangProbe, KernelInfo,
                              KmemleakInfo, Status)
from ..checks.suite import Suite
from ..source.tree import Tree

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
    suite: Suite


class _VerifierOptions(TypedDict, total=False):
    """run_verifier's keyword options a run may set (absent: its default)."""
    timeout: float
    only: bool


@dataclass
class Variant:
    """One side of a run: its series and the result folder layout."""
    name: str
    series: Series
    dir: Path
    results: dict[str, ArchResult] = field(default_factory=dict)


# ---------------------------------------------------------------- one arch: build side, boot side

def check_options(opts: Options, arches: list[Arch]) -> None:
    """Every usage error that does not depend on the tree or the commit, before anything is fetched or built:
    --expect, --profile, --selftests names, --extra-test files. Under `git bisect run` such an error would be the
    same on every commit (exit 128 stops the bisection); a selftest the catalogue knows but a commit's tree lacks
    is a condition of that commit (found in the run: 125, skip)."""
    suite = run_suite(opts)
    expectations = verifier.load_expectations(suite)
    if opts.expect:
        expectations.check(opts.expect)
    get_profile(opts.profile)
    selftests.check_choice(opts.selftests, suite.selftests)
    verifier.select(expectations, opts.cases)
    for name in opts.extra_tests:
        f = Path(name)
        if not f.is_file():
            raise UsageError(f"--extra-test {f}: no such file", fix="give the path of a .c file or a static binary")
        if f.suffix != ".c":
            for a in arches:
                selftests.check_static_binary(f, a)


def _arch_result(arch: Arch, applied: Applied | None) -> ArchResult:
    ar = ArchResult(arch=arch.name)
    if applied is not None:
        t = applied.checkout.tree
        ar.kernel = KernelInfo(tree=t.spec, base=applied.base, base_label=t.base_label, head=applied.head,
                               debian_version=t.version)
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
    suite = run_suite(opts)
    ar.kernel.suite, ar.kernel.suite_reason = suite.name, opts.suite_reason or "the default suite"
    specs = selftests.plan(src, touched, opts.selftests, suite.selftests)
    kernel, cfg = build_kernel(arch, applied, opts, log, ar.phases, touched=touched)
    remember_kernel(kernel, cfg.profile)
    ar.kernel.release, ar.kernel.profile = kernel.release, cfg.profile
    ar.config = cfg.report(opts.defconfig)
    ar.build = BuildInfo(seconds=kernel.seconds, cached=kernel.cached, key=kernel.key, compiler=kernel.compiler,
                         compiled=list(kernel.extra.get("compiled", [])), image=str(kernel.image))
    with phase("image", arch.name, ar.phases) as ph:
        initrd = image.build_image(arch, adir / "image.log")
        ph.update(f"{arch.name} {'cached' if initrd.cached else 'built'}")
    with phase("userspace", f"{arch.name} verifier + selftests", ar.phases):
        declared = intent.declared(intent.series_texts(series.patches), intent.base_source(src, applied.base, suite),
                                   suite)
        policy, ar.kernel.policy_reason = intent.choose(src, opts.expect, declared, suite)
        if (bugs := treebugs.detect_in_tree(src, suite)) is not None:
            ar.kernel.tree_bugs = treebugs.describe(bugs)
        vbin = verifier.build_verifier(arch, kernel.headers, adir / "bin" / "verifier", adir / "userspace.log",
                                       suite=suite)
        specs = selftests.skip_unconfigured(specs, kconfig.parse_dotconfig(kernel.config),
                                            {m.symbol: m.reason for m in cfg.optional_missing})
        ar.config.selftests = selftests.selection_report(src, touched, specs, suite.selftests)
        tests = selftests.build_selftests(specs, arch, src, kernel.headers, adir / "bin" / "selftests",
                                         adir / "userspace.log")
        if opts.extra_tests:
            tests += selftests.build_extra_tests([Path(f) for f in opts.extra_tests], arch, kernel.headers,
                                                 adir / "bin" / "extra", adir / "userspace.log")
    if opts.test_timeout:
        tests = [replace(t, spec=replace(t.spec, timeout=opts.test_timeout)) for t in tests]
    ar.kernel.policy = policy
    return Prepared(get_profile(opts.profile).guest_arch(arch), kernel, initrd, vbin, policy, tests, ar, adir, suite)


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
    expectations = _expectations(prep, opts)
    t_boot = time.monotonic()
    vm: qemu.VM | None = None
    wedged: KpipeError | None = None
    dmesg: list[Finding] = []
    leaks: list[Finding] = []
    try:
        with contextlib.ExitStack() as stack:
            with phase("boot", prep.arch.name, ar.phases) as ph:
                guest = stack.enter_context(qemu.boot(prep.arch, prep.kernel.image, prep.initrd, adir,
                                                      accel=opts.accel, timeout=opts.boot_timeout,
                                                      cmdline_extra=opts.kernel_args, collect_dmesg=False))
                vm = guest.vm
                ph.update(f"{prep.arch.name} {guest.accel} ({guest.boot_seconds:.1f}s to ready)")
            _after_boot(guest, prep, ar)
            wedged = _run_tests(guest, prep, opts, ar, expectations)
            guest.session.abort_check = guest.session.on_timeout = None
            if wedged is None and vm.running() and not vm.panicked:   # gcov counters of the changed lines
                ar.coverage = coverage.collect(guest.session, prep.kernel, adir, ar.kernel.base, ar.kernel.head)
            if (wedged is not None or guest.session.timed_out or vm.fatal_at is not None) \
                    and ar.boot.hang_probe is None:     # not yet asked for this run
                ask_wedged_kernel(guest, ar)
            leaks = _look_for_leaks(guest, prep, opts, ar, wedged)
            if vm.running() and not vm.panicked:
                dmesg, wedged = _collect_dmesg(guest, prep, ar, wedged)
    except KernelError as e:
        if vm is not None:
            _name_the_reports(e, vm, ar)
        raise
    finally:
        if vm is not None:
            ar.findings += vm.findings()       # the whole console, read to its end (QEMU has stopped)
            ar.boot.findings = [describe(f) for f in ar.findings]
    _add_findings(ar, vm, dmesg, leaks, t_boot)
    if wedged is not None and not ar.findings:
        raise _with_no_kernel_report(wedged, vm, adir)
    return judge(ar)


def _expectations(prep: Prepared, opts: Options) -> verifier.Expectations:
    """The verifier's expectations for this run: the selected cases, the tree's known bugs applied."""
    expectations = verifier.select(verifier.load_expectations(prep.suite), opts.cases)
    if prep.ar.kernel.tree_bugs is not None:
        expectations = treebugs.apply(expectations, prep.policy, prep.ar.kernel.tree_bugs)
    return expectations


def _after_boot(guest: qemu.Guest, prep: Prepared, ar: ArchResult) -> None:
    """The boot's facts, the guest's CPU count checked, and the session's hooks: abandon the tests when the
    kernel reports a wedge, ask the kernel on every timeout."""
    ar.boot = BootInfo(seconds=guest.boot_seconds, ssh_seconds=guest.ssh_seconds, accel=guest.accel,
                       accel_reason=guest.accel_reason, findings=[], vcpus=prep.arch.smp)
    ar.boot.cpus = check_guest_cpus(guest, prep.arch.smp, ar.kernel.profile or "")
    guest.session.abort_check = guest.vm.abandon_reason
    guest.session.on_timeout = lambda command: ask_wedged_kernel(guest, ar)


def _run_tests(guest: qemu.Guest, prep: Prepared, opts: Options, ar: ArchResult,
               expectations: verifier.Expectations) -> KpipeError | None:
    """The verifier, then the selftests. The session's InfraError when it broke under them with QEMU still
    running and no panic (the results so far kept), else None; with a panic or QEMU gone it is raised."""
    vm = guest.vm
    try:
        _run_verifier(guest, prep, opts, ar, expectations)
        if prep.tests:          # a wedged kernel stops them: the session's abort_check
            with phase("run", f"{prep.arch.name} {len(prep.tests)} selftest(s)", ar.phases):
                ar.tests += selftests.run_selftests(guest.session, prep.tests, prep.dir, rel_to=prep.dir,
                                                   parallel=prep.arch.smp)
    except InfraError as e:
        if not vm.running() or vm.panicked:
            raise                       # qemu.boot turns it into the panic's KernelError
        ar.tests += e.partial_results
        return e
    return None


def _run_verifier(guest: qemu.Guest, prep: Prepared, opts: Options, ar: ArchResult,
                  expectations: verifier.Expectations) -> None:
    what = f" {len(expectations.cases)} selected case(s)" if opts.cases else ""
    with phase("run", f"{prep.arch.name} verifier ({prep.policy}){what}", ar.phases):
        vopts: _VerifierOptions = {"timeout": opts.test_timeout} if opts.test_timeout else {}
        if opts.cases:
            vopts["only"] = True
        ar.tests += verifier.run_verifier(guest.session, prep.verifier_bin, prep.policy, expectations,
                                          prep.dir, **vopts)
        ar.pause = verifier.pause_summary(ar.tests, expectations.suite.pause)


def _look_for_leaks(guest: qemu.Guest, prep: Prepared, opts: Options, ar: ArchResult,
                    wedged: KpipeError | None) -> list[Finding]:
    """kmemleak's findings when the kernel has it and a scan makes sense, else none (and why not)."""
    # leaks are looked for whenever the session still works (a test's own known hang, retried, is no reason
    # to skip it); not after a fatal report or with a task blocked in D state (the verdict is known, and
    # the scan would only wait on a broken kernel)
    leaks: list[Finding] = []
    if kmemleak.enabled(prep.kernel.config):
        vm = guest.vm
        why_not = ("the session broke" if wedged is not None or not vm.running() or vm.panicked
                   else "the kernel reported a fatal error (the verdict is known)" if vm.fatal_at is not None
                   else "a task is blocked in D state (the verdict is known)" if vm.blocked_at is not None
                   else f"leak_scan is off ({opts.leak_scan_source})" if not opts.leak_scan else None)
        if why_not is None:
            with phase("kmemleak", f"{prep.arch.name} scan twice, read the report", ar.phases):
                leaks = scan_kmemleak(guest, ar, prep.dir)
        else:
            ar.boot.kmemleak = KmemleakInfo(not_scanned=why_not)
    return leaks


def _collect_dmesg(guest: qemu.Guest, prep: Prepared, ar: ArchResult,
                   wedged: KpipeError | None) -> tuple[list[Finding], KpipeError | None]:
    """dmesg's findings (none when it cannot be read) and the run's wedge (the first one: its own, or
    this failure to read dmesg)."""
    dmesg: list[Finding] = []
    with phase("dmesg", prep.arch.name, ar.phases):
        try:
            dmesg = guest.collect_dmesg("dmesg.log", timeout=DMESG_TIMEOUT)
        except InfraError as e:
            wedged = wedged or e
    return dmesg, wedged


def _name_the_reports(e: KernelError, vm: qemu.VM, ar: ArchResult) -> None:
    """A kernel error's message names what the kernel reported before it died, not only the panic line."""
    _note_fatal_latency(ar, vm)
    seen = vm.findings()
    if seen:
        first = next((f for f in seen if f.kind in FATAL_KINDS), seen[0])
        kinds = ", ".join(summarize(seen))
        e.message = f"kernel misbehaved: {kinds}; first report: {describe(first)}; {e.message}"


def _add_findings(ar: ArchResult, vm: qemu.VM | None, dmesg: list[Finding], leaks: list[Finding],
                  t_boot: float) -> None:
    """dmesg's findings the console did not show and the leaks join the console's; the boot+tests time."""
    ar.findings += not_seen_on(ar.findings, dmesg) + leaks
    if vm is not None:
        _note_fatal_latency(ar, vm)
    ar.boot.findings = [describe(f) for f in ar.findings]
    ar.phases["boot+tests"] = round(time.monotonic() - t_boot, 3)


def _with_no_kernel_report(wedged: KpipeError, vm: qemu.VM | None, adir: Path) -> KpipeError:
    """The wedge as the run's (infrastructure) error when the kernel reported nothing: the console's last lines."""
    wedged.detail = [*wedged.detail, "the kernel reported nothing (no hung task, lockup, stall, Oops or "
                     "blocked task, even when asked with SysRq); last console lines:",
                     *(vm.tail_lines() if vm else [])]
    wedged.log = wedged.log or str(adir / "serial.log")
    return wedged


def scan_kmemleak(guest: qemu.Guest, ar: ArchResult, adir: Path) -> list[Finding]:
    """kmemleak's report after the tests: each leak a finding; its being off an error of the run."""
    try:
        rep = kmemleak.scan(guest.session, adir, ar.kernel.release or "")
    except InfraError as e:
        rep = kmemleak.KmemleakReport(findings=[Finding(kind="kmemleak_off", source="kmemleak",
                                                        line=f"kmemleak: no leak report: {e.message}")])
    ar.boot.kmemleak = kmemleak.info(rep, adir / "kmemleak.log")
    ar.logs["kmemleak"] = str(adir / "kmemleak.log")
    return rep.findings


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
    On every timeout (a retried test's second hang is asked about too: its retry depends on the answer), one
    probe at a time (tests time out side by side); nothing to ask when QEMU is gone or the kernel panicked.
    ``boot.hang_probe`` is the first probe, ``boot.hang_probes`` every one."""
    vm = guest.vm
    with guest.probe_lock:
        if not vm.running() or vm.panicked:
            return
        t0 = time.monotonic()
        why_not = guest.session.sysrq(HANG_SYSRQ_KEYS, alive=vm.running)
        via = "ssh /proc/sysrq-trigger"
        if why_not is not None:
            via = "serial BREAK" if vm.send_sysrq(HANG_SYSRQ_KEYS) else f"none ({why_not})"
        waited = vm.wait_console_quiet(CONSOLE_QUIET, CONSOLE_LIMIT)
        probe = HangProbe(sysrq=HANG_SYSRQ_KEYS, via=via, ssh_error=why_not or "",
                          seconds=round(time.monotonic() - t0, 2), console_wait=round(waited, 2),
                          timed_out=list(guest.session.timed_out))
        if ar.boot.hang_probe is None:
            ar.boot.hang_probe = probe
        ar.boot.hang_probes = [*(ar.boot.hang_probes or []), probe]
    note(f"{guest.arch.name}: a guest command ran past its deadline; asked the kernel with SysRq "
         f"{HANG_SYSRQ_KEYS!r} via {via}")


def _note_fatal_latency(ar: ArchResult, vm: qemu.VM) -> None:
    if vm.fatal_at is not None:
        ar.boot.first_fatal_report = vm.fatal_line
        ar.boot.verdict_after_fatal_s = round(time.monotonic() - vm.fatal_at, 2)


def judge(ar: ArchResult) -> ArchResult:
    failed = [t for t in ar.tests if any(x.status == Status.FAIL for x in t.walk())]
    errored = [t for t in ar.tests if any(x.status == Status.ERROR for x in t.walk())]
    reports = [f for f in ar.findings if f.kind not in RUN_ERROR_KINDS]    # what the kernel itself reported
    blind = [f for f in ar.findings if f.kind in RUN_ERROR_KINDS]          # a detector kpipe relies on was off
    if reports:
        ar.verdict, ar.exit_code = "fail", EXIT_KERNEL
        kinds = summarize(reports)
        blocked = sorted({blocked_task_name(f.line) or "?" for f in reports if f.kind in BLOCKED_KINDS})
        why = [f"{k} x{n}" if n > 1 else k for k, n in kinds.items()]
        ar.error = "kernel misbehaved: " + ", ".join(why)
        if blocked:
            ar.error += "; blocked task(s): " + ", ".join(blocked)
        if failed:
            ar.error += "; failed: " + ", ".join(f"{t.suite}/{t.name}" for t in failed[:8])
        first = next((f for f in reports if f.kind in FATAL_KINDS), reports[0])
        ar.error += "\nfirst report: " + describe(first)
    elif failed:
        ar.verdict, ar.exit_code = "fail", EXIT_KERNEL
        why = [f"{t.suite}/{t.name}" for t in failed]
        ar.error = "kernel misbehaved: " + ", ".join(why[:8]) + (" ..." if len(why) > 8 else "")
    elif errored or blind:
        ar.verdict, ar.exit_code = "error", EXIT_INFRA
        ar.error = "; ".join(
            ([f"tests could not run: {', '.join(f'{t.suite}/{t.name}' for t in errored[:8])}"] if errored else []) +
            [f"the run cannot vouch for the kernel: {strip(f.line)}" for f in blind])
    else:
        ar.verdict, ar.exit_code = "pass", EXIT_PASS
    return ar


def _record_error(ar: ArchResult, e: KpipeError) -> ArchResult:
    ar.exit_code = e.exit_code
    ar.verdict = VERDICT_OF.get(e.exit_code, "error")
    ar.error = e.message
    if isinstance(e, ConfigError):
        ar.config.missing = list(e.detail)       # one line per option: requested, got, and why
    if isinstance(e, KernelError):
        # the console's reports when the boot itself failed (boot_and_run_tests had no VM to read them from)
        ar.findings += [f for f in e.findings if f not in ar.findings]
        if not ar.findings:
            ar.findings.append(Finding(kind="panic", source="console", line=e.message, context=tuple(e.detail)))
        ar.boot.findings = [describe(f) for f in ar.findings]
    if isinstance(e, EarlyKernelError):
        ar.boot.first_fatal_report = e.first_report
        ar.boot.verdict_after_fatal_s = e.after_report_s
    if e.detail:
        ar.error += "\n" + "\n".join(e.detail)
    if e.log:
        ar.logs["failure"] = e.log
    note(e.render())
    return ar


# ---------------------------------------------------------------- a variant over arches

def prepare_variant(arches: list[Arch], tree: Tree, series: Series, opts: Options, vdir: Path, log_dir: Path,
                    co: Checkout, timings: dict[str, float], touched: list[str] | None = None
                    ) -> Iterator[tuple[Arch, Prepared | ArchResult]]:
    """Apply ``series`` and build each arch's side (prepare_arch), one arch after another (each build uses every
    core): yields (arch, Prepared), or (arch, its error result) when the series does not apply or the arch could
    not be prepared. Lazy: the caller starts an arch's boot (or writes its LAVA job) before the next arch builds."""
    co = replace(co, tree=tree)          # the same worktree, reset to this variant's base (bisect steps differ)
    try:
        applied = apply(co, series, log_dir / "apply.log", timings)
    except KpipeError as e:
        for a in arches:
            ar = _record_error(_arch_result(a, None), e)
            ar.kernel = KernelInfo(tree=tree.spec, base=tree.base, base_label=tree.base_label)
            yield a, ar
        return
    for a in arches:
        try:
            yield a, prepare_arch(a, applied, series, opts, vdir / a.name, touched)
        except KpipeError as e:
            yield a, _record_error(_arch_result(a, applied), e)


def run_variant(arches: list[Arch], tree: Tree, series: Series, opts: Options, vdir: Path, log_dir: Path,
                co: Checkout, timings: dict[str, float], touched: list[str] | None = None) -> dict[str, ArchResult]:
    """Apply ``series`` and verify each arch: builds one after another (each uses every core), each arch's
    boot and tests start as soon as its build is done, overlapping the next arch's build."""
    results: dict[str, ArchResult] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(arches)) as pool:
        futures = {}
        try:
            for a, prep in prepare_variant(arches, tree, series, opts, vdir, log_dir, co, timings, touched):
                if isinstance(prep, ArchResult):
                    results[a.name] = prep
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


BISECT_EXIT = {EXIT_PASS: "good", EXIT_KERNEL: "bad"}


def step_mark(code: int, build_failure_is_bad: bool) -> str:
    if code == EXIT_BUILD and build_failure_is_bad:
        return "bad"
    return BISECT_EXIT.get(code, "skip")
