"""`invoke bench`: kpipe against the raw commands doing the same work, side by side in one run.

Rows (per arch unless noted), each with kpipe seconds, raw seconds and their ratio:
  cold       kpipe build in an empty build folder, no artifact cache, no ccache
             vs raw: make tinyconfig + fragments + olddefconfig + make -jN + headers_install in an empty O=
  incremental  the build phase of that warm run vs raw incremental make after the same kind of edit
  warm       a one-line patch edit -> verdict (`verify`: apply, incremental build, boot, verifier + selftests)
             vs raw: incremental make after the same kind of edit + raw QEMU boot to the ready marker +
             the same test binaries pushed and run with the OpenSSH client
  unchanged  re-verify with nothing changed (the build is skipped by its content key)
             vs raw: QEMU boot + the same binaries over ssh (no make)
  all        `verify --arch all` (unchanged) vs the slower single arch's unchanged verify
  premerge   `premerge --arch all`, warm
The raw commands are the physical limit: a ratio of 1.0 means kpipe adds nothing.
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

from . import build as buildmod
from . import cache, image, kconfig, proc, qemu, workflows
from .arches import Arch, resolve_arches
from .checkout import tree_hash
from .errors import EXIT_PASS, InfraError
from .pipeline import Options, apply, locked_checkout, merged_config, new_run_dir, resolve_tree, series_of
from .benchrows import _row, cost_rows
from .profiles import get_profile
from .progress import note, phase
from .qemu_cmdline import kernel_cmdline, qemu_command
from .results import RunResult
from .tree import Tree, git

T = TypeVar("T")

TARGETS = {"cold": 1.10, "incremental": 1.3, "warm": 1.5, "unchanged_seconds": 8.0, "all": 1.3,
           "premerge_seconds": 60.0}


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    t = time.monotonic()
    out = fn()
    return round(time.monotonic() - t, 2), out


# ---------------------------------------------------------------- cold

def bench_cold(arch: Arch, tree: Tree, run_dir: Path, profile: str = "debug") -> dict[str, Any]:
    opts = Options(profile=profile)
    nonce = uuid.uuid4().hex[:8]
    raw_dir = cache.cache_dir("bench") / f"raw-{arch.name}-{nonce}"
    kp_ident = f"bench-{nonce}"
    try:
        with locked_checkout(tree) as co:
            apply(co, series_of(opts), run_dir / "apply.log")
            merged, optional = merged_config(arch, opts, co.path)
            req = buildmod.BuildRequest(arch=arch, src=co.path, tree_ident=kp_ident, tree_hash=tree_hash(co),
                                        config_text=merged.text(), config_key=merged.key(), ccache=False,
                                        use_cache=False)
            with phase("bench", f"cold kpipe build {arch.name}"):
                k_secs, kern = _timed(lambda: buildmod.build(
                    req, run_dir / f"cold-kpipe-{arch.name}.log",
                    lambda dc: kconfig.require(merged, dc, co.path, arch, optional)))
            shutil.rmtree(buildmod.build_dir(req, False), ignore_errors=True)
            raw_dir.mkdir(parents=True)
            log = run_dir / f"cold-raw-{arch.name}.log"
            mk = ["make", "-C", str(co.path), f"O={raw_dir}", *arch.make_vars]
            jobs = f"-j{os.cpu_count() or 1}"

            def raw() -> None:
                proc.run([*mk, "tinyconfig"], log=log)
                with open(raw_dir / ".config", "a") as f:
                    f.write(merged.text())
                proc.run([*mk, "olddefconfig"], log=log)
                proc.run([*mk, jobs, arch.image_target], log=log, timeout=7200)
                proc.run([*mk, "headers_install", f"INSTALL_HDR_PATH={raw_dir}/hdr"], log=log)
            with phase("bench", f"cold raw make {arch.name}"):
                r_secs, _ = _timed(raw)
    finally:
        shutil.rmtree(raw_dir, ignore_errors=True)
    return _row("cold", arch.name, k_secs, r_secs, TARGETS["cold"], profile=profile,
                note=f"kpipe {kern.seconds:.1f}s inside build() (no ccache, no artifact cache)")


# ---------------------------------------------------------------- warm / unchanged

def _edit_patch(src_text: str, nonce: str, path: Path) -> Path:
    """A one-line edit of mm/mremap.c (a comment), as a plain git diff."""
    lines = src_text.splitlines(keepends=True)
    new = lines[:1] + [f"/* kpipe bench edit {nonce} */\n"] + lines[1:]
    diff = difflib.unified_diff(lines, new, "a/mm/mremap.c", "b/mm/mremap.c", n=3)
    path.write_text("diff --git a/mm/mremap.c b/mm/mremap.c\n" + "".join(diff))
    return path


def _verify(opts: Options, out: Path) -> tuple[float, RunResult]:
    secs, run = _timed(lambda: workflows.verify(replace(opts, out=str(out))))
    if run.exit_code != EXIT_PASS:
        raise InfraError(f"benchmark verify run did not pass (exit {run.exit_code}); see {out}/summary.md")
    return secs, run


def _raw_boot_and_test(arch: Arch, kernel: Path, initrd: image.Initrd, binaries: list[tuple[Path, list[str]]],
                       work: Path) -> float:
    """Raw QEMU to the ready marker, then the OpenSSH client pushes and runs the same binaries."""
    work.mkdir(parents=True, exist_ok=True)
    ov = image.make_overlay(work)
    joined = image.join_archives([initrd.path, ov.path], work / "initrd.cpio.gz")
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
            return "(" + "; ".join(f"./{b.name} {' '.join(a)} >/dev/null 2>&1" for b, a in group) + ")"
        if verifier:
            subprocess.run([*ssh, "cd /tmp/raw && " + run(verifier) + "; true"], timeout=600)
        if rest:
            subprocess.run([*ssh, "cd /tmp/raw && " + " & ".join(run(g) for g in lanes if g) + " & wait; true"],
                           timeout=1200)
        subprocess.run([*ssh, "reboot -f"], timeout=30, capture_output=True)
        p.wait(timeout=60)
        return round(time.monotonic() - t0, 2)
    finally:
        proc.kill_group(p)
        shutil.rmtree(work, ignore_errors=True)


def _binaries(arch_dir: Path, src: Path, touched: list[str]) -> list[tuple[Path, list[str]]]:
    """The verifier and the selftest binaries kpipe ran in ``arch_dir``, each with the arguments kpipe gave it."""
    from . import selftests
    from .verifier import BINARY_NAME
    out = [(arch_dir / "bin" / "verifier" / BINARY_NAME, ["-e", "verifier-expect.txt"])]
    for spec in selftests.plan(src, touched, "all-relevant"):
        binary = arch_dir / "bin" / "selftests" / spec.binary_name
        if not spec.skip and binary.is_file():
            out.append((binary, list(spec.args)))
    return out


def bench_warm(arch: Arch, tree: Tree, run_dir: Path, profile: str = "debug") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    base_opts = Options(arch=arch.name, accel="tcg", profile=profile)
    # settle: the shipped series built and verified once (not timed)
    _verify(base_opts, run_dir / f"settle-{arch.name}")
    src_text = git(tree.worktree, "show", "HEAD:mm/mremap.c").stdout
    series_file = run_dir / f"series-{arch.name}"
    seed = [str(p.path) for p in series_of(Options()).patches]
    nonce = uuid.uuid4().hex[:8]
    edit = _edit_patch(src_text, nonce, run_dir / f"edit-{arch.name}-{nonce}.patch")
    series_file.write_text("\n".join(seed + [str(edit)]) + "\n")
    opts = replace(base_opts, series=str(series_file))
    k_warm, run = _verify(opts, run_dir / f"warm-{arch.name}")
    kern_image = Path(run.arches[arch.name].build.image or "")
    initrd = image.build_image(arch)
    warm_dir = run_dir / f"warm-{arch.name}" / arch.name
    bins = _binaries(warm_dir, tree.worktree, ["mm/mremap.c"])
    bins.append((warm_dir / "verifier-expect.txt", []))
    # raw warm: another one-line edit in the same build folder, raw make, raw boot + tests
    wt = tree.worktree
    bdir = Path(json.loads((kern_image.parent / cache.MANIFEST).read_text())
                ["meta"]["build_dir"])
    target = wt / "mm/mremap.c"
    original = target.read_bytes()
    try:
        target.write_bytes(original + f"/* raw bench edit {nonce} */\n".encode())
        mk = ["make", "-C", str(wt), f"O={bdir}", *arch.make_vars]
        if bdir.name.endswith("-ccache"):
            mk.append(f"CC=ccache {arch.cc}")
        r_make, _ = _timed(lambda: proc.run([*mk, f"-j{os.cpu_count() or 1}", arch.image_target],
                                            log=run_dir / f"warm-raw-{arch.name}.log",
                                            env={"CCACHE_DIR": str(cache.cache_dir("ccache"))}))
    finally:
        target.write_bytes(original)
    guest = get_profile(profile).guest_arch(arch)
    r_boot = _raw_boot_and_test(guest, kern_image, initrd, bins, run_dir / f"raw-{arch.name}-{profile}")
    k_build = run.arches[arch.name].phases.get("build", 0.0)
    rows.append(_row("incremental", arch.name, round(k_build, 2), r_make, TARGETS["incremental"], profile=profile,
                     note="the one-line edit: kpipe's build phase (make + headers_install + cache entry) vs raw make"))
    rows.append(_row("warm", arch.name, k_warm, round(r_make + r_boot, 2), TARGETS["warm"], profile=profile,
                     note=f"raw = make {r_make}s + boot/tests {r_boot}s"))
    k_unch, _ = _verify(opts, run_dir / f"unchanged-{arch.name}")
    rows.append(_row("unchanged", arch.name, k_unch, r_boot, None, profile=profile,
                     note=f"target <= {TARGETS['unchanged_seconds']:.0f}s per arch; raw = boot/tests only",
                     ok=k_unch <= TARGETS["unchanged_seconds"]))
    rows[-1]["series"] = str(series_file)
    return rows


def run_bench(arch_spec: str = "all", out: str | None = None, quick: bool = False, profile: str = "debug") -> int:
    run_dir = new_run_dir(out, "bench")
    arches = resolve_arches(arch_spec)
    profiles = ["debug", "fast"] if profile == "all" else [get_profile(profile).name]
    tree = resolve_tree(Options(), run_dir / "fetch.log")
    rows: list[dict[str, Any]] = []
    for prof in profiles:
        if not quick:
            for a in arches:
                rows.append(bench_cold(a, tree, run_dir, prof))
        unchanged: dict[str, tuple[float, str]] = {}
        for a in arches:
            warm_rows = bench_warm(a, tree, run_dir, prof)
            rows += warm_rows
            unchanged[a.name] = (warm_rows[-1]["kpipe_s"], warm_rows[-1]["series"])
        if len(arches) > 1:
            series = next(iter(unchanged.values()))[1]
            # every arch's edit in one series would change the kernels; use the first arch's series for all,
            # settle once (builds), then time the unchanged `all` run
            o = Options(arch="all", accel="tcg", series=series, profile=prof)
            _verify(o, run_dir / f"all-settle-{prof}")
            singles: dict[str, float] = {}
            for a in arches:
                singles[a.name], _ = _verify(replace(o, arch=a.name), run_dir / f"all-single-{a.name}-{prof}")
            k_all, _ = _verify(o, run_dir / f"all-{prof}")
            slower = max(singles.values())
            rows.append(_row("all", "all", k_all, slower, TARGETS["all"], profile=prof,
                             note="raw = the slower single arch, kpipe"))
            po = Options(arch="all", accel="tcg", profile=prof)
            workflows.premerge(replace(po, out=str(run_dir / f"premerge-settle-{prof}")))   # builds, untimed
            p_secs, prun = _timed(lambda: workflows.premerge(replace(po, out=str(run_dir / f"premerge-{prof}"))))
            rows.append(_row("premerge", "all", p_secs, None, None, profile=prof,
                             note=f"warm; target <= {TARGETS['premerge_seconds']:.0f}s; verdict {prun.verdict}",
                             ok=p_secs <= TARGETS["premerge_seconds"]))
        if prof == "debug":
            from .lava.bench import bench_lava
            rows += [bench_lava(a, run_dir) for a in arches]
    rows += cost_rows(rows)
    machine = {"cpus": os.cpu_count(), "machine": platform.machine(), "kernel": platform.release(),
               "python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    (run_dir / "bench.json").write_text(json.dumps({"machine": machine, "rows": rows, "targets": TARGETS}, indent=2))
    lines = [f"{'phase':<16} {'arch':<7} {'profile':<10} {'kpipe s':>8} {'raw s':>8} {'ratio':>6}  ok   note"]
    for r in rows:
        lines.append(f"{r['phase']:<16} {r['arch']:<7} {r['profile']:<10} {r['kpipe_s']:>8} {r['raw_s'] if r['raw_s'] is not None else '-':>8} "
                     f"{r['ratio'] if r['ratio'] is not None else '-':>6}  {'yes' if r['ok'] else 'NO ' if r['ok'] is not None else '-  '}  {r['note']}")
    print("\n".join(lines))
    note(f"bench: wrote {run_dir / 'bench.json'} ({machine['cpus']} cpus, {machine['machine']})")
    return EXIT_PASS
