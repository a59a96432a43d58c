"""`invoke bench`: kpipe against the raw commands doing the same work, side by side in one run.

Rows (per arch and profile unless noted), each with kpipe seconds, raw seconds and their ratio:
  cold       kpipe build in an empty build folder, no artifact cache, no ccache
             vs raw: make tinyconfig + fragments + olddefconfig + make -jN + headers_install in an empty O=
  newdir     kpipe build in a NEW build folder (another tree ident: what a far bisect step, a new config key or
             a user tree's mirror gets) with a warm ccache vs the cold row's raw make (an empty O=, no ccache)
  incremental  the build phase of the warm run vs raw incremental make after the same kind of edit, in the same
             build folder with the same make variables
  warm       a one-line patch edit -> verdict (`verify`: apply, incremental build, boot, verifier + selftests)
             vs raw: incremental make after the same kind of edit + raw QEMU boot to the ready marker +
             the same test binaries pushed and run with the OpenSSH client
  unchanged  re-verify with nothing changed (the build is skipped by its content key)
             vs raw: QEMU boot + the same binaries over ssh (no make)
  all        `verify --arch all` (unchanged) vs the slower single arch's unchanged verify
  premerge   `premerge --arch all`, warm (every kernel cached)
  lava       lava-run (local) vs kpipe's boot+tests of the same kernel (debug profile)
  cost:*     derived: debug kpipe seconds / fast kpipe seconds per phase (with --profile all)
The raw commands are the physical limit: a ratio of 1.0 means kpipe adds nothing.

bench.json is written after every row (and each row printed as it is measured), so a stopped bench keeps its
rows; `bench --resume DIR` runs only the steps whose rows are missing. Every row records the load average at its
start and end. --quick: no cold/newdir rows, one sample per row. A full run: three samples of warm and
unchanged (kpipe and raw alternating; the rows hold the medians and every sample).
"""
from __future__ import annotations

import difflib
import json
import os
import platform
import shutil
import subprocess
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..build import kernel as buildmod
from .. import cache, proc
from ..guest import image, qemu
from ..build import kconfig
from ..checks import kmemleak
from ..workflows import flows as workflows
from ..arches import ARCHES, Arch, resolve_arches
from .rows import (HEADER, Step, _row, add_row, format_row, load_doc, median, missing_steps, new_doc, plan_steps, table,
                   write_doc)
from ..source.checkout import tree_hash
from ..errors import EXIT_PASS, InfraError, UsageError
from ..workflows.pipeline import (Options, apply, build_kernel, locked_checkout, merged_config, new_run_dir,
                                  resolve_tree, series_of)
from ..build.profiles import get_profile
from ..progress import note, phase
from ..guest.qemu_cmdline import kernel_cmdline, qemu_command
from ..report.results import ArchResult, RunResult
from ..source.tree import Tree, git

T = TypeVar("T")

TARGETS = {"cold": 1.10, "newdir": 0.3, "incremental": 1.3, "warm": 1.5, "warm_seconds": 45.0, "unchanged": 1.2,
           "all": 1.3, "premerge_seconds": 180.0, "lava": 1.5}
FULL_SAMPLES = 3
UNCHANGED_EDIT = "unchanged"      # the unchanged rows' edit is always the same text: cached after the first run


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    t = time.monotonic()
    out = fn()
    return round(time.monotonic() - t, 2), out


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def machine_info(arches: list[Arch]) -> dict[str, Any]:
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "machine": platform.machine(), "kernel": platform.release(),
            "python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "load_at_start": _load(),
            "qemu": {a.name: _version([a.qemu_binary, "--version"]) for a in arches},
            "gcc": {a.name: _version([a.cc, "--version"]) for a in arches}}


# ---------------------------------------------------------------- series: the one-line edits

def _edit_patch(src_text: str, nonce: str, path: Path) -> Path:
    """A one-line edit of mm/mremap.c (a comment), as a plain git diff."""
    lines = src_text.splitlines(keepends=True)
    new = lines[:1] + [f"/* kpipe bench edit {nonce} */\n"] + lines[1:]
    diff = difflib.unified_diff(lines, new, "a/mm/mremap.c", "b/mm/mremap.c", n=3)
    path.write_text("diff --git a/mm/mremap.c b/mm/mremap.c\n" + "".join(diff))
    return path


def _series_with_edit(tree: Tree, run_dir: Path, nonce: str) -> Path:
    """The shipped series plus a one-line edit named by ``nonce`` (same nonce: same patch text, same kernels)."""
    src_text = git(tree.repo, "show", f"{tree.base}:mm/mremap.c", bare=True).stdout     # the base, not HEAD
    seed = [str(p.path) for p in series_of(Options()).patches]
    edit = _edit_patch(src_text, nonce, run_dir / f"edit-{nonce}.patch")
    series_file = run_dir / f"series-{nonce}"
    series_file.write_text("\n".join(seed + [str(edit)]) + "\n")
    return series_file


def _verify(opts: Options, out: Path) -> tuple[float, RunResult]:
    secs, run = _timed(lambda: workflows.verify(replace(opts, out=str(out))))
    if run.exit_code != EXIT_PASS:
        raise InfraError(f"benchmark verify run did not pass (exit {run.exit_code}); see {out}/summary.md")
    return secs, run


def _settle_build(arch: Arch, tree: Tree, opts: Options, log: Path) -> None:
    """Build (or find cached) ``opts``'s kernel for ``arch``, no boot: the build folder then holds that series,
    so the next edit is an incremental build. Untimed."""
    with locked_checkout(tree) as co:
        series = series_of(opts)
        applied = apply(co, series, log.with_suffix(".apply.log"))
        build_kernel(arch, applied, opts, log, touched=series.touched)


# ---------------------------------------------------------------- raw commands

def _raw_cold_make(arch: Arch, src: Path, config_text: str, raw_dir: Path, log: Path) -> None:
    mk = ["make", "-C", str(src), f"O={raw_dir}", *arch.make_vars]
    jobs = f"-j{os.cpu_count() or 1}"
    proc.run([*mk, "tinyconfig"], log=log)
    with open(raw_dir / ".config", "a") as f:
        f.write(config_text)
    proc.run([*mk, "olddefconfig"], log=log)
    proc.run([*mk, jobs, arch.image_target], log=log, timeout=7200)
    proc.run([*mk, "headers_install", f"INSTALL_HDR_PATH={raw_dir}/hdr"], log=log)


def _raw_boot_and_test(arch: Arch, kernel: Path, initrd: image.Initrd, binaries: list[tuple[Path, list[str]]],
                       work: Path, leak_scan: bool = False) -> float:
    """Raw QEMU to the ready marker, then the OpenSSH client pushes and runs the same binaries, and (``leak_scan``,
    when kpipe's run scanned) the same kmemleak scan (two scans and the read: 25-35 s per arch under TCG)."""
    work.mkdir(parents=True, exist_ok=True)
    ov = image.make_overlay(work)
    joined = image.join_archives([initrd.path, ov.path], work / "initrd.cpio")
    lease = qemu.PortLease()
    port = lease.port
    cmd = qemu_command(arch, kernel, accel="tcg", append=kernel_cmdline(arch), initrd=joined, ssh_port=port)
    ssh = ["ssh", "-q", "-i", str(ov.client_key_path), "-p", str(port), "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "root@127.0.0.1"]
    t0 = time.monotonic()
    p = proc.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        lease.release()
        assert p.stdout is not None     # stdout=PIPE
        for raw in p.stdout:
            if initrd.ready_marker.encode() in raw:
                break
        else:
            raise InfraError("raw QEMU exited before the ready marker")
        while subprocess.run([*ssh, "true"], capture_output=True, timeout=30).returncode != 0:
            if time.monotonic() - t0 > 120:
                raise InfraError("raw ssh never answered")
            time.sleep(0.2)
        scp = ["scp", "-q", "-i", str(ov.client_key_path), "-P", str(port), "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]
        subprocess.run([*ssh, "mkdir -p /tmp/raw"], check=True, timeout=30)
        subprocess.run([*scp, *[str(b) for b, _ in binaries], "root@127.0.0.1:/tmp/raw/"], check=True, timeout=120,
                       capture_output=True)
        runnable = [(b, args) for b, args in binaries if args or os.access(b, os.X_OK)]
        verifier, rest = runnable[:1], runnable[1:]
        lanes = [rest[i::max(1, arch.smp)] for i in range(max(1, arch.smp))]     # as kpipe: one lane per vCPU

        def run(group: list[tuple[Path, list[str]]]) -> str:
            return "(" + "; ".join(f"./{b.name} {' '.join(a)} >/dev/null 2>&1; echo \"{RAW_EXIT} $? {b.name} "
                                   f"{' '.join(a)}\"" for b, a in group) + ")"
        said = ""
        if verifier:
            said += subprocess.run([*ssh, "cd /tmp/raw && " + run(verifier) + "; true"], timeout=600,
                                   capture_output=True, text=True).stdout
        if rest:
            # `cd X && (a) & (b) & wait` would background `cd X && (a)` as one job and run (b) where ssh started:
            # the cd comes first, on its own
            said += subprocess.run([*ssh, "cd /tmp/raw || exit 1; " + " & ".join(run(g) for g in lanes if g)
                                    + " & wait; true"], timeout=1200, capture_output=True, text=True).stdout
        check_raw_exits(said, runnable)
        if leak_scan:
            subprocess.run([*ssh, kmemleak.SCAN_SCRIPT], timeout=kmemleak.SCAN_TIMEOUT, capture_output=True)
        subprocess.run([*ssh, "reboot -f"], timeout=30, capture_output=True)
        p.wait(timeout=60)
        return round(time.monotonic() - t0, 2)
    finally:
        proc.kill_group(p)
        shutil.rmtree(work, ignore_errors=True)


RAW_EXIT = "KPIPE-RAW-EXIT"


def check_raw_exits(said: str, runnable: list[tuple[Path, list[str]]]) -> None:
    """The raw side's premise: every binary ran and passed (exit 0; 4 is kselftest's skip), as in kpipe's passing
    run. A raw run that failed fast would make the ratio compare kpipe's work with less (exit 2 naming it)."""
    exits = [ln.split(None, 2)[1:] for ln in said.splitlines() if ln.startswith(RAW_EXIT + " ")]
    bad = [f"{cmd.strip()} exited {code}" for code, cmd in exits if code not in ("0", "4")]
    if len(exits) != len(runnable) or bad:
        ran = {cmd.split()[0] for _, cmd in exits}
        missing = [b.name for b, _ in runnable if b.name not in ran]
        raise InfraError("the raw side did not do kpipe's work: " + "; ".join(bad + [f"{m} did not run"
                                                                                    for m in missing]),
                         fix="run the binaries by hand in `kpipe boot --shell` to see why; the row is not measured")


def _binaries(arch_dir: Path, src: Path, touched: list[str]) -> list[tuple[Path, list[str]]]:
    """The verifier and the selftest binaries kpipe ran in ``arch_dir``, each with the arguments kpipe gave it."""
    from ..checks import selftests
    from ..checks.suite import choose
    suite = choose(None, touched).suite
    out = [(arch_dir / "bin" / "verifier" / suite.binary, ["-e", "verifier-expect.txt"])]
    for spec in selftests.plan(src, touched, "all-relevant", suite.selftests):
        binary = arch_dir / "bin" / "selftests" / spec.binary_name
        if not spec.skip and binary.is_file():
            out.append((binary, list(spec.args)))
    out.append((arch_dir / "verifier-expect.txt", []))
    return out


def _raw_boot_of(run: RunResult, arch: Arch, tree: Tree, out: Path, profile: str, work: Path) -> float:
    """Raw QEMU + OpenSSH with the kernel and binaries of the kpipe run in ``out``."""
    ar = run.arches[arch.name]
    kern_image = Path(ar.build.image or "")
    bins = _binaries(out / arch.name, tree.worktree, ["mm/mremap.c"])
    return _raw_boot_and_test(get_profile(profile).guest_arch(arch), kern_image, image.build_image(arch), bins, work,
                              leak_scan=kpipe_scanned_for_leaks(ar))


def kpipe_scanned_for_leaks(ar: ArchResult) -> bool:
    """Whether kpipe's run of this arch ran kmemleak's scan (the debug profile's default): the raw side then runs
    the same scan, or the ratio would compare unequal work."""
    km = ar.boot.kmemleak
    return bool(km and not km.not_scanned and km.seconds is not None)


def _raw_incremental_make(arch: Arch, tree: Tree, run: RunResult, nonce: str, log: Path) -> float:
    """Another one-line edit of mm/mremap.c in kpipe's own build folder, then raw make with the same variables
    kpipe gave it (so make rebuilds what the edit touches, nothing more); the machine's build lock held."""
    kern_image = Path(run.arches[arch.name].build.image or "")
    meta = json.loads((kern_image.parent / cache.MANIFEST).read_text())["meta"]
    bdir = Path(meta["build_dir"])
    with locked_checkout(tree) as co:
        src = co.path
        cc = bool(meta.get("ccache"))
        mk = ["make", "-C", str(src), f"O={bdir}", *arch.make_vars, *meta.get("make_vars", [])]
        env = {"LC_ALL": "C", "KBUILD_BUILD_USER": "kpipe", "KBUILD_BUILD_HOST": "kpipe"}
        if cc:
            mk.append(f"CC=ccache {arch.cc}")
            env["CCACHE_DIR"] = str(cache.cache_dir("ccache"))
            if buildmod.relocatable(bdir, cc):
                renv, rvars = buildmod.ccache_relocation(src, bdir)
                mk += rvars
                env.update(renv)
        target = src / "mm/mremap.c"
        original = target.read_bytes()
        try:
            target.write_bytes(original + f"/* raw bench edit {nonce} */\n".encode())
            with buildmod.machine_build_lock():
                secs, _ = _timed(lambda: proc.run([*mk, f"-j{os.cpu_count() or 1}", arch.image_target], log=log,
                                                  env=env, timeout=3600))
        finally:
            target.write_bytes(original)
    return secs


# ---------------------------------------------------------------- steps

class Bench:
    def __init__(self, run_dir: Path, doc: dict[str, Any], tree: Tree, samples: int,
                 echo: Callable[[str], None]) -> None:
        self.run_dir, self.doc, self.tree, self.samples, self.echo = run_dir, doc, tree, samples, echo
        self.path = run_dir / "bench.json"
        self._load_start: list[float] = []

    def add(self, row: dict[str, Any], samples: dict[str, list[float]] | None = None) -> dict[str, Any]:
        row["load"], row["load_start"] = _load(), self._load_start
        row["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
        if samples:
            row["samples"] = samples
        add_row(self.path, self.doc, row, self.echo)
        return row

    def row(self, key: str) -> dict[str, Any] | None:
        return next((r for r in self.doc["rows"] if f"{r['phase']}/{r['arch']}/{r['profile']}" == key), None)

    def series(self, name: str) -> Path:
        """The edit series ``name`` of this bench folder, made once (a resumed bench keeps its series)."""
        state = self.doc.setdefault("state", {})
        have = state.get(f"series:{name}")
        if have and Path(have).is_file():
            return Path(have)
        path = _series_with_edit(self.tree, self.run_dir, name)
        state[f"series:{name}"] = str(path)
        write_doc(self.path, self.doc)
        return path

    def run(self, step: Step) -> None:
        self._load_start = _load()
        with phase("bench", step.name):
            getattr(self, f"step_{step.kind}")(step)

    # -- cold / newdir
    def _request(self, arch: Arch, co: Any, profile: str, ident: str, ccache: bool) -> tuple[Any, Any, Any]:
        opts = Options(profile=profile)
        apply(co, series_of(opts), self.run_dir / "apply.log")
        merged, optional = merged_config(arch, opts, co.path)
        req = buildmod.BuildRequest(arch=arch, src=co.path, tree_ident=ident, tree_hash=tree_hash(co),
                                    config_text=merged.text(), config_key=merged.key(), ccache=ccache,
                                    use_cache=False)
        return req, merged, optional

    def step_cold(self, step: Step) -> None:
        arch, prof, nonce = ARCHES[step.arch], step.profile, uuid.uuid4().hex[:8]
        raw_dir = cache.cache_dir("bench") / f"raw-{arch.name}-{nonce}"
        try:
            with locked_checkout(self.tree) as co:
                req, merged, optional = self._request(arch, co, prof, f"bench-{nonce}", False)
                k_secs, kern = _timed(lambda: buildmod.build(
                    req, self.run_dir / f"cold-kpipe-{arch.name}-{prof}.log",
                    lambda dc: kconfig.require(merged, dc, co.path, arch, optional)))
                shutil.rmtree(buildmod.build_dir(req, False), ignore_errors=True)
                raw_dir.mkdir(parents=True)
                with buildmod.machine_build_lock():
                    r_secs, _ = _timed(lambda: _raw_cold_make(arch, co.path, merged.text(), raw_dir,
                                                              self.run_dir / f"cold-raw-{arch.name}-{prof}.log"))
        finally:
            shutil.rmtree(raw_dir, ignore_errors=True)
        self.add(_row("cold", arch.name, k_secs, r_secs, TARGETS["cold"], profile=prof,
                      note=f"kpipe {kern.seconds:.1f}s inside build() (no ccache, no artifact cache)"))

    def step_newdir(self, step: Step) -> None:
        arch, prof = ARCHES[step.arch], step.profile
        cold = self.row(f"cold/{arch.name}/{prof}")
        k_secs, stats, fill = newdir_build(arch, self.tree, self.run_dir, prof)
        raw = cold["raw_s"] if cold else None
        self.add(_row("newdir", arch.name, k_secs, raw, TARGETS["newdir"], profile=prof,
                      note=f"new build folder, warm ccache: {stats['hits']} hits / {stats['misses']} misses "
                           f"(the untimed fill build before it: {fill}s); raw = the cold row's raw make"),
                 samples={"kpipe": [k_secs]})

    # -- warm / unchanged
    def step_warm(self, step: Step) -> None:
        arch, prof = ARCHES[step.arch], step.profile
        base = Options(arch=arch.name, accel="tcg", profile=prof)
        _settle_build(arch, self.tree, replace(base, series=str(self.series(UNCHANGED_EDIT))),
                      self.run_dir / f"settle-{arch.name}-{prof}.log")
        k_warm: list[float] = []
        k_build: list[float] = []
        r_make: list[float] = []
        r_boot: list[float] = []
        for i in range(self.samples):     # kpipe, then raw, alternating
            nonce = uuid.uuid4().hex[:8]
            opts = replace(base, series=str(_series_with_edit(self.tree, self.run_dir, nonce)))
            out = self.run_dir / f"warm-{arch.name}-{prof}-{i}"
            secs, run = _verify(opts, out)
            k_warm.append(secs)
            k_build.append(round(run.arches[arch.name].phases.get("build", 0.0), 2))
            r_make.append(_raw_incremental_make(arch, self.tree, run, nonce,
                                                self.run_dir / f"warm-raw-{arch.name}-{prof}-{i}.log"))
            r_boot.append(_raw_boot_of(run, arch, self.tree, out, prof, self.run_dir / f"raw-{arch.name}-{prof}"))
        kb, rm, kw, rb = median(k_build), median(r_make), median(k_warm), median(r_boot)
        self.add(_row("incremental", arch.name, kb, rm, TARGETS["incremental"], profile=prof,
                      note="the one-line edit: kpipe's build phase (make + headers + cache entry) vs raw make"),
                 samples={"kpipe": k_build, "raw": r_make})
        row = _row("warm", arch.name, kw, round(rm + rb, 2), TARGETS["warm"], profile=prof,
                   note=f"raw = make {rm}s + boot/tests {rb}s; target also <= {TARGETS['warm_seconds']:.0f}s")
        row["ok"] = bool(row["ok"]) and kw <= TARGETS["warm_seconds"]
        self.add(row, samples={"kpipe": k_warm, "raw_make": r_make, "raw_boot_tests": r_boot})

    def step_unchanged(self, step: Step) -> None:
        arch, prof = ARCHES[step.arch], step.profile
        opts = Options(arch=arch.name, accel="tcg", profile=prof, series=str(self.series(UNCHANGED_EDIT)))
        _settle_build(arch, self.tree, opts, self.run_dir / f"settle-{arch.name}-{prof}.log")
        k: list[float] = []
        r: list[float] = []
        for i in range(self.samples):
            out = self.run_dir / f"unchanged-{arch.name}-{prof}-{i}"
            secs, run = _verify(opts, out)
            k.append(secs)
            r.append(_raw_boot_of(run, arch, self.tree, out, prof, self.run_dir / f"raw-{arch.name}-{prof}"))
        self.add(_row("unchanged", arch.name, median(k), median(r), TARGETS["unchanged"], profile=prof,
                      note="raw = QEMU boot + the same binaries over OpenSSH (no make)"),
                 samples={"kpipe": k, "raw": r})

    # -- all / premerge / lava
    def step_all(self, step: Step) -> None:
        prof = step.profile
        series = str(self.series(UNCHANGED_EDIT))
        o = Options(arch="all", accel="tcg", series=series, profile=prof)
        singles: dict[str, float] = {}
        for name in self.doc["plan"]["arches"]:
            have = self.row(f"unchanged/{name}/{prof}")
            if have:
                singles[name] = have["kpipe_s"]
            else:
                _settle_build(ARCHES[name], self.tree, replace(o, arch=name),
                              self.run_dir / f"settle-{name}-{prof}.log")
                singles[name], _ = _verify(replace(o, arch=name), self.run_dir / f"all-single-{name}-{prof}")
        k_all, _ = _verify(o, self.run_dir / f"all-{prof}")
        slower = max(singles, key=lambda n: singles[n])
        self.add(_row("all", "all", k_all, singles[slower], TARGETS["all"], profile=prof,
                      note=f"raw = the slower single arch's unchanged kpipe verify ({slower})"))

    def step_premerge(self, step: Step) -> None:
        prof = step.profile
        po = Options(arch=step.arch, accel="tcg", profile=prof)
        for i in range(3):
            p_secs, prun = _timed(lambda: workflows.premerge(
                replace(po, out=str(self.run_dir / f"premerge-{prof}-{i}"))))
            results = list(prun.arches.values()) + list((prun.extra.baseline or {}).values())
            if all(a.build is not None and a.build.cached for a in results):
                break           # warm: every kernel came from the cache (else that run was the settle)
        self.add(_row("premerge", step.arch, p_secs, None, None, profile=prof,
                      note=f"warm (4 kernels cached); target <= {TARGETS['premerge_seconds']:.0f}s; "
                           f"verdict {prun.verdict}", ok=p_secs <= TARGETS["premerge_seconds"]))

    def step_lava(self, step: Step) -> None:
        from .lava import bench_lava
        self.add(bench_lava(ARCHES[step.arch], self.run_dir, series=str(self.series(UNCHANGED_EDIT))))


def _ccache_stats() -> dict[str, int]:
    cp = subprocess.run(["ccache", "--print-stats"], capture_output=True, text=True,
                        env={**os.environ, "CCACHE_DIR": str(cache.cache_dir("ccache"))})
    out: dict[str, int] = {}
    for ln in cp.stdout.splitlines():
        k, _, v = ln.partition("\t")
        if v.strip().isdigit():
            out[k] = int(v)
    return out


def newdir_build(arch: Arch, tree: Tree, run_dir: Path, profile: str) -> tuple[float, dict[str, int], float]:
    """kpipe's build in a brand-new build folder (a new tree ident) with ccache warm for this source: one untimed
    fill build in another new folder first (a hit-everything no-op when ccache is already warm), then the timed
    one. Returns its seconds, ccache's hits and misses during it, and the fill build's seconds."""
    folders: list[Path] = []
    try:
        with locked_checkout(tree) as co:
            opts = Options(profile=profile)
            apply(co, series_of(opts), run_dir / "apply.log")
            merged, optional = merged_config(arch, opts, co.path)
            secs: list[float] = []
            stats: dict[str, int] = {}
            for i in range(2):
                nonce = uuid.uuid4().hex[:8]
                req = buildmod.BuildRequest(arch=arch, src=co.path, tree_ident=f"bench-newdir-{nonce}",
                                            tree_hash=tree_hash(co), config_text=merged.text(),
                                            config_key=merged.key(), ccache=True, use_cache=False)
                folders.append(buildmod.build_dir(req, True))
                before = _ccache_stats()
                s, _ = _timed(lambda: buildmod.build(
                    req, run_dir / f"newdir-{arch.name}-{profile}-{i}.log",
                    lambda dc: kconfig.require(merged, dc, co.path, arch, optional)))
                after = _ccache_stats()
                secs.append(s)
                stats = {"hits": sum(after.get(k, 0) - before.get(k, 0) for k in ("direct_cache_hit",
                                                                                   "preprocessed_cache_hit")),
                         "misses": after.get("cache_miss", 0) - before.get("cache_miss", 0)}
                note(f"bench newdir {arch.name} {profile} build {i}: {s}s, ccache {stats}")
    finally:
        for f in folders:
            shutil.rmtree(f, ignore_errors=True)
    return secs[1], stats, secs[0]


# ---------------------------------------------------------------- the run

def run_bench(arch_spec: str = "all", out: str | None = None, quick: bool = False, profile: str = "debug",
              resume: str | None = None, only: str | None = None, echo: Callable[[str], None] | None = None) -> int:
    def say(line: str) -> None:
        print(line, flush=True)
    echo = echo or say
    kinds = tuple(k.strip() for k in (only or "").split(",") if k.strip())
    if resume:
        run_dir = Path(resume).expanduser().resolve()
        doc = load_doc(run_dir / "bench.json")
        if doc is None:
            raise UsageError(f"--resume {resume}: no bench.json of this kpipe there",
                             fix="pass the folder of a bench that was stopped (it holds bench.json)")
        plan = doc["plan"]
    else:
        run_dir = new_run_dir(out, "bench")
        arches = resolve_arches(arch_spec)
        profiles = ["debug", "fast"] if profile == "all" else [get_profile(profile).name]
        plan = {"arches": [a.name for a in arches], "profiles": profiles, "quick": quick, "only": list(kinds),
                "samples": 1 if quick else FULL_SAMPLES}
        doc = new_doc(plan, machine_info(arches), TARGETS)
        write_doc(run_dir / "bench.json", doc)
    steps = plan_steps(plan["arches"], plan["profiles"], plan["quick"], tuple(plan.get("only", ())))
    todo = missing_steps(steps, doc)
    if resume and kinds:
        # --resume keeps the stopped bench's plan; --only narrows what this run measures of what is missing
        todo = [s for s in todo if s.kind in kinds]
    note(f"bench: {len(steps) - len(todo)} of {len(steps)} steps already in {run_dir / 'bench.json'}; "
         f"running {len(todo)}: {', '.join(s.name for s in todo) or 'none'}")
    echo(HEADER)
    for r in doc["rows"]:
        echo(format_row(r) + "   (from the earlier run)")
    if todo:
        bench = Bench(run_dir, doc, resolve_tree(Options(), run_dir / "fetch.log"), int(plan.get("samples", 1)), echo)
        for step in todo:
            bench.run(step)
    doc["complete"] = True
    write_doc(run_dir / "bench.json", doc)
    echo("")
    echo(table(doc))
    note(f"bench: wrote {run_dir / 'bench.json'} ({doc['machine']['cpus']} cpus, load now {_load()})")
    return EXIT_PASS
