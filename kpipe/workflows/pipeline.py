"""The stages chained up to a built kernel, shared by every task and workflow:
tree -> scratch checkout -> patches -> merged kconfig -> build."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from ..build import kernel as buildmod
from .. import cache
from ..build import instrument, kconfig
from ..checks import suite as suitemod
from ..arches import Arch
from ..errors import UsageError
from ..source.checkout import Checkout, open_checkout, tree_hash
from ..source.patches import Applied, Series, apply_series, load_series
from ..build.profiles import get_profile
from ..progress import note, phase
from ..report.results import ConfigInfo
from ..checks.suite import Suite
from ..source.tree import Tree, open_tree


@dataclass(frozen=True)
class Options:
    arch: str | None = None
    tree: str | None = None
    base: str | None = None
    series: str | None = None
    patches: tuple[str, ...] = ()
    no_patches: bool = False
    kconfigs: tuple[str, ...] = ()
    defconfig: str = "tinyconfig"
    accel: str = "auto"
    expect: str | None = None
    selftests: str = "all-relevant"
    extra_tests: tuple[str, ...] = ()
    out: str | None = None
    jobs: int = 0
    boot_timeout: float | None = None
    kernel_args: tuple[str, ...] = ()      # appended to the guest kernel command line
    test_timeout: float | None = None      # per test (verifier run, each selftest); None: their defaults
    ccache: bool | None = None
    profile: str = "debug"                 # kconfigs/profiles.toml: debug (default) or fast
    range: str | None = None               # --range A..B: the series is those commits of the user's tree
    thread: str | None = None              # --thread MBOX|MSGID|URL: the series from its list thread (b4 am)
    thread_revision: int | None = None     # --thread-revision N: that revision instead of the newest
    warnings: bool = True                  # premerge: the compile checks (kpipe.workflows.compile_checks)
    allow_new_warnings: bool = False       # a new compiler/sparse warning is reported, not failing
    cases: tuple[str, ...] = ()            # --case: only these verifier cases (names or globs); () all
    leak_scan: bool = True                 # the kmemleak scan after the tests (debug profile)
    leak_scan_source: str = "built-in default"
    suite: str | None = None               # --suite NAME|PATH; after with_suite() the chosen suite's folder
    suite_reason: str = ""                 # why that suite (with_suite)


def run_suite(opts: Options) -> Suite:
    """The run's suite: the one with_suite() chose (or --suite, or the default when nothing chose one)."""
    return suitemod.get(opts.suite)


def with_suite(opts: Options, series: Series) -> Options:
    """Choose the run's suite once, from --suite or the files the series touches, so that every stage and both
    sides of a premerge or bisection use the same one."""
    choice = suitemod.choose(opts.suite, series.touched)
    return replace(opts, suite=str(choice.suite.root), suite_reason=opts.suite_reason or choice.why)


def runs_root_and_source() -> tuple[Path, str]:
    """Where run folders go: $KPIPE_RUNS, else $XDG_STATE_HOME/kpipe/runs (~/.local/state/kpipe/runs).
    Never the current directory: kpipe may be run inside a kernel tree (e.g. by `git bisect run`)."""
    env = os.environ.get("KPIPE_RUNS")
    if env:
        return Path(env).expanduser(), "environment KPIPE_RUNS"
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "kpipe" / "runs", "built-in default ($XDG_STATE_HOME/kpipe/runs)"


def new_run_dir(out: str | None, workflow: str) -> Path:
    """``--out DIR`` or ``<runs>/<timestamp>-<workflow>/`` with ``<runs>/latest`` pointing at it."""
    if out:
        d = Path(out).expanduser()
        if d.exists() and not d.is_dir():
            raise UsageError(f"--out {out} exists and is not a folder",
                             fix="pass --out with a folder path (new or existing)")
        d.mkdir(parents=True, exist_ok=True)
        return d.resolve()
    runs, _ = runs_root_and_source()
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the runs folder {runs}: {e.strerror}",
                         fix="set KPIPE_RUNS to a writable folder, or pass --out DIR") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = runs / f"{stamp}-{workflow}"
    n = 1
    while True:
        try:
            d.mkdir()
            break
        except FileExistsError:
            n += 1
            d = runs / f"{stamp}-{workflow}-{n}"
    latest = runs / "latest"
    tmp = runs / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(d.name)
    tmp.replace(latest)
    return d.resolve()


@contextlib.contextmanager
def locked_checkout(tree: Tree, log: Path | None = None) -> Iterator[Checkout]:
    """The tree's scratch checkout, held exclusively for the whole run (two runs on one tree take turns)."""
    with cache.file_lock(tree.lock_path, f"scratch checkout of {tree.spec}"):
        yield open_checkout(tree, log)


def resolve_tree(opts: Options, log: Path | None = None, timings: dict[str, float] | None = None) -> Tree:
    with phase("fetch", opts.tree or "debian:5.10", timings):
        return open_tree(opts.tree, opts.base, log)


def series_of(opts: Options) -> Series:
    return load_series(opts.series, list(opts.patches), opts.no_patches, opts.range, opts.tree, opts.thread,
                       opts.thread_revision)


def apply(co: Checkout, series: Series, log: Path | None, timings: dict[str, float] | None = None) -> Applied:
    with phase("apply", f"{len(series.patches)} patch(es) on {co.tree.base_label}", timings) as ph:
        applied = apply_series(co, series, log)
        ph.update("(worktree already held this)" if applied.reused else "")
    return applied


def fragments_for(arch: Arch, opts: Options, extra_optional: tuple[Path, ...] = ()) -> list[Path]:
    """layers.toml's layers, the suites' kconfig needs, the profile's essential and optional layers,
    ``extra_optional`` (the selftest collections' own config files), then --kconfig files (they win)."""
    prof = get_profile(opts.profile)
    return (kconfig.default_fragments(arch) + suite_fragments(opts) + list(prof.layers_for(arch))
            + list(prof.optional) + list(extra_optional) + [Path(k) for k in opts.kconfigs])


def run_suites(opts: Options) -> list[Suite]:
    """Every shipped suite, and the run's own when it is not one of them (a --suite PATH): the kernel is
    configured for all of them, so that it does not depend on which suite runs (one kernel per tree, series
    and profile, whatever --suite says)."""
    shipped = suitemod.check_shipped()
    mine = run_suite(opts)
    return shipped + ([mine] if mine.root not in {s.root for s in shipped} else [])


def suite_fragments(opts: Options) -> list[Path]:
    return list(dict.fromkeys(p for s in run_suites(opts) for p in s.kconfig))


@dataclass(frozen=True)
class ConfigReport:
    """What the configuration asked for and what the tree could not give."""
    profile: str
    merged: "kconfig.MergedConfig"
    optional_missing: tuple["kconfig.Missing", ...] = ()

    def report(self, defconfig: str) -> ConfigInfo:
        return ConfigInfo(profile=self.profile, defconfig=defconfig,
                          fragments=[str(p) for p in self.merged.fragments], missing=[],
                          conflicts=[c.describe() for c in self.merged.conflicts],
                          optional_missing=kconfig.format_missing(list(self.optional_missing)))


def selftest_layers(src: Path, suites: list[Suite]) -> tuple[Path, ...]:
    """The config files of every selftest collection the suites' catalogues can run from this tree (vm or mm,
    memfd). Not only those a run picks: the kernel must not depend on --selftests, --suite or on what a series
    touches, or the baseline, the patched kernel and a `--selftests none` loop would each cost a cold build."""
    from ..checks import selftests
    out: list[Path] = []
    for s in suites:
        cat = s.selftests
        try:
            names = ",".join(selftests.catalogue_names(cat))
            out += selftests.collection_configs(src, selftests.plan(src, [], names, cat)) if names else ()
        except UsageError:          # a tree without selftests: nothing to merge
            return ()
    return tuple(dict.fromkeys(out))


def merged_config(arch: Arch, opts: Options, src: Path) -> tuple["kconfig.MergedConfig", frozenset[str]]:
    """Every layer merged (the selftest collections' own config files of ``src`` as an optional layer), and the
    symbols only optional layers ask for."""
    extra_optional = selftest_layers(src, run_suites(opts))
    fragments = [kconfig.parse_fragment(p) for p in fragments_for(arch, opts, extra_optional)]
    optional = kconfig.optional_symbols(fragments, get_profile(opts.profile).optional + tuple(extra_optional))
    return kconfig.merge(fragments), optional


def build_kernel(arch: Arch, applied: Applied, opts: Options, log: Path, timings: dict[str, float] | None = None,
                 touched: list[str] | None = None) -> tuple[buildmod.Kernel, ConfigReport]:
    """Merge the fragments (with the selftest collections' own config files as an optional layer), build (or
    reuse) the kernel, validate: essential requests must be set (exit 2 naming the blocking dependency),
    optional ones (the profile's, the selftests') are reported when missing."""
    prof = get_profile(opts.profile)
    merged, optional = merged_config(arch, opts, applied.checkout.path)
    for c in merged.conflicts:
        note(c.describe())
    src = applied.checkout.path
    touched = touched or []
    inst = instrument.plan(src, touched, prof.instrument)
    for s in inst.skipped:
        note(f"{arch.name} {prof.name} profile, not instrumented: {s}")
    req = buildmod.BuildRequest(arch=arch, src=src, tree_ident=applied.checkout.tree.ident,
                                tree_hash=tree_hash(applied.checkout), config_text=merged.text(),
                                config_key=merged.key(), defconfig=opts.defconfig, jobs=opts.jobs,
                                ccache=opts.ccache, make_vars=inst.make_vars, instrumented=inst.objects)
    with phase("build", f"{arch.name} {prof.name} profile (log: {log})", timings) as ph:
        kernel = buildmod.build(req, log, lambda dotconfig: kconfig.require(merged, dotconfig, src, arch, optional))
        ph.update(f"{arch.name} {prof.name} {kernel.release} " +
                  ("cached" if kernel.cached else f"built in {kernel.seconds:.0f}s"))
    soft = tuple(kconfig.optional_misses(merged, optional, kernel.config, src, arch)) if optional else ()
    for m in kconfig.format_missing(list(soft)):
        note(f"{arch.name} {prof.name} profile, optional: {m}")
    if kernel.cached:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"kpipe: {arch.name} kernel {kernel.release} reused from the cache (content key {kernel.key}, "
                    f"{kernel.image.parent}); make was not run\n")
    return kernel, ConfigReport(prof.name, merged, soft)
