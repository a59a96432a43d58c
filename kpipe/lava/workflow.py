"""`kpipe lava`: the same artifacts as `verify` (same content keys), handed to LAVA as one job per arch.

  write only (default)   runs/<ts>-lava/<arch>/job.yaml, device.yaml (for lava-run), ramdisk.cpio.gz
  --run-local            each job through lava-run here; the log becomes result.json/junit/reports as `verify`
  --submit URL [--wait]  lavacli submission: the job must reach files the lab can fetch
  --submit lab [--wait]  the local lab (`kpipe lab up`): URL and token from the lab's own files
"""
from __future__ import annotations

import concurrent.futures
import os
import time
from typing import TYPE_CHECKING

from ..checks import kmemleak, verifier
from .. import proc
from ..guest import qemu
from ..workflows import flows as workflows
from ..guest.accel import choose_accel
from ..arches import resolve_arches
from ..errors import KpipeError, UsageError
from ..workflows.pipeline import Options, apply, locked_checkout, resolve_tree, series_of, with_suite
from ..workflows.runner import check_options
from ..progress import note, phase
from ..report.results import ArchResult, RunResult
from ..workflows.runner import Prepared, _arch_result, _record_error, prepare_arch
from . import collect, job as jobmod, logparse, ramdisk, runner

if TYPE_CHECKING:
    from .install import Lava

RUN_SLACK = 120.0          # lava-run's wall-clock limit beyond the job's own timeout


def _verifier_timeout(opts: Options) -> float:
    return float(opts.test_timeout or verifier.TIMEOUT)


def write_job(prep: Prepared, opts: Options, lava: Lava | None = None) -> jobmod.WrittenJob:
    """job.yaml, device.yaml and ramdisk.cpio.gz in the arch's folder; validated when the dispatcher is there."""
    adir = prep.dir
    expectations = verifier.select(verifier.load_expectations(prep.suite), opts.cases)
    cases = tuple(expectations.cases) if opts.cases else ()
    vto = _verifier_timeout(opts)
    runnable = [b for b in prep.tests if b.binary is not None and not b.spec.skip]
    has_kmemleak = kmemleak.enabled(prep.kernel.config)
    not_scanned = f"leak_scan is off ({opts.leak_scan_source})" if has_kmemleak and not opts.leak_scan else ""
    leak_scan = has_kmemleak and opts.leak_scan
    payload = ramdisk.Payload(
        verifier=prep.verifier_bin, expect_text=verifier.expect_file_text(expectations, prep.policy),
        verifier_timeout=int(vto), case_timeout=verifier.case_timeout(vto), cases=cases,
        selftests=tuple((b.spec.name, int(b.spec.timeout), b.binary, tuple(b.spec.args)) for b in runnable
                        if b.binary is not None),     # true of every runnable test; narrows Path | None
        dmesg_pattern=jobmod.dmesg_pattern(), ready_marker=prep.initrd.ready_marker or "KPIPE-GUEST-READY",
        leak_scan=leak_scan)
    with phase("lava-job", f"{prep.arch.name} ramdisk + job", prep.ar.phases):
        rd = ramdisk.write_ramdisk(prep.initrd.path, payload, adir / "ramdisk.cpio.gz")
        accel, reason = choose_accel(prep.arch, opts.accel, prep.kernel.image)
        test_timeout = vto + sum(b.spec.timeout for b in runnable)
        spec = jobmod.spec_for(prep.arch, accel, prep.kernel.image, rd, opts.kernel_args, prep.kernel.release,
                               prep.kernel.key, prep.ar.kernel.profile or opts.profile, prep.policy,
                               tuple(b.spec.name for b in runnable),
                               qemu.boot_timeout(prep.arch, accel, opts.boot_timeout), test_timeout, leak_scan)
        text = jobmod.job_yaml(spec)
        job_path = adir / "job.yaml"
        job_path.write_text(text)
        device_path = adir / "device.yaml"
        device_path.write_text(jobmod.device_yaml(jobmod.job_dict(spec)))
        if lava is not None:
            jobmod.validate(lava, job_path, device_path)
    timeout = jobmod.job_dict(spec)["timeouts"]["job"]["seconds"]
    note(f"lava: {prep.arch.name} job {job_path} ({'validated' if lava else 'not validated'}; accel {accel})")
    return {"job": job_path, "device": device_path, "ramdisk": rd, "accel": accel, "accel_reason": reason,
            "timeout": timeout, "verifier_timeout": vto, "leak_scan": leak_scan, "leak_not_scanned": not_scanned,
            "cases": cases}


def run_local(prep: Prepared, written: jobmod.WrittenJob, lava: Lava) -> ArchResult:
    with phase("lava-run", f"{prep.arch.name} (log: {prep.dir / 'lava.log'})", prep.ar.phases) as ph:
        marker = prep.initrd.ready_marker or "KPIPE-GUEST-READY"
        lr = runner.run_job(lava, written["job"], written["device"], prep.dir, f"kpipe-{prep.arch.name}-{os.getpid()}",
                            written["timeout"] + RUN_SLACK, marker)
        log = logparse.parse(lr.log.read_text(errors="replace"), marker)
        ph.update(f"{prep.arch.name} lava-run exit {lr.exit_code} in {lr.seconds:.1f}s, "
                  f"{len(log.results)} LAVA results, job {log.job_result or '?'}")
    ar = collect.to_arch_result(prep, log, written["accel"], written["accel_reason"], written["verifier_timeout"],
                                lr.exit_code, lr.seconds, lr.timed_out, written["leak_scan"],
                                written["leak_not_scanned"], written["cases"])
    if lr.stopped is not None and ar.boot.lava is not None:
        ar.boot.lava.stopped = lr.stopped.reason
        ar.boot.verdict_after_fatal_s = lr.stopped.after_report_s
        ar.error = f"{lr.stopped.reason}\n{ar.error}" if ar.error else lr.stopped.reason
    return ar


def lava(opts: Options, run_local_jobs: bool = False, submit: str | None = None, wait: bool = False,
         repro: str = "") -> RunResult:
    from . import install as lava_install

    started = time.monotonic()
    if wait and not submit:
        raise UsageError("--wait needs --submit URL", fix="pass --submit URL (a LAVA server) or drop --wait")
    if submit == "lab":
        from . import lab
        lab.credentials()                 # before anything is built: is there a local lab at all
    arches = resolve_arches(opts.arch)
    series = series_of(opts)
    opts = with_suite(opts, series)
    check_options(opts, arches)
    run, run_dir = workflows._new_run("lava", opts, repro)
    timings: dict[str, float] = {}
    preps: dict[str, tuple[Prepared, jobmod.WrittenJob]] = {}
    try:
        with phase("lava-install", "lava-dispatcher (cached)", timings):
            lava_inst = lava_install.ensure(run_dir / "lava-install.log")
        if submit:
            from . import submit as submod
            with phase("lava-server", f"{submit}: answers and takes the credentials", timings):
                submod.check_server(submod.server(submit, lava_inst))
        tree = resolve_tree(opts, run_dir / "fetch.log", timings)
        with locked_checkout(tree, run_dir / "apply.log") as co:
            applied = apply(co, series, run_dir / "apply.log", timings)
            for a in arches:
                try:
                    prep = prepare_arch(a, applied, series, opts, run_dir / a.name)
                    preps[a.name] = (prep, write_job(prep, opts, lava_inst))
                except KpipeError as e:
                    run.arches[a.name] = _record_error(_arch_result(a, applied), e)
    except KpipeError as e:
        for a in arches:
            run.arches.setdefault(a.name, _record_error(_arch_result(a, None), e))
    run.extra.phases = timings
    run.extra.lava = {"dispatcher": getattr(locals().get("lava_inst"), "version", ""),
                         "jobs": {n: str(w["job"]) for n, (_, w) in preps.items()}}
    if submit and preps:
        from . import submit as submod
        srv = submod.server(submit, lava_inst)
        done = submod.collect_all(srv, submod.submit_all(srv, [(p, w, None) for p, w in preps.values()]), wait)
        run.arches.update(zip(preps, done))
    elif run_local_jobs:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(preps))) as pool:
            futs = {n: pool.submit(run_local, p, w, lava_inst) for n, (p, w) in preps.items()}
            try:
                for name, fut in futs.items():
                    try:
                        run.arches[name] = fut.result()
                    except KpipeError as e:
                        run.arches[name] = _record_error(preps[name][0].ar, e)
            except BaseException:
                pending = [f for f in futs.values() if not f.cancel()]
                while pending:
                    proc.kill_all()
                    pending = list(concurrent.futures.wait(pending, timeout=0.5).not_done)
                raise
    else:
        for name, (prep, written) in preps.items():
            prep.ar.verdict, prep.ar.exit_code = "pass", 0
            prep.ar.error = f"job written, not run: {written['job']} (run it with --run-local, or --submit URL)"
            run.arches[name] = prep.ar
    run.arches = {a.name: run.arches[a.name] for a in arches if a.name in run.arches}
    return workflows._finish(run, run_dir, started)
