"""kpipe's tasks, the one definition behind both entry points: the `kpipe` command (kpipe.cli.program.main, an invoke
Program over this module) and `invoke` inside the checkout (the top-level tasks.py re-exports this module).
Parse options, fill defaults from kpipe's config (kpipe.cli.settings), call the package, exit with the contract's code.

Exit codes: 0 pass, 1 the kernel misbehaved, 2 infrastructure or usage, 3 patch does not apply, 4 build failed.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit

from ..errors import TaskOutcome
from .options import SETTINGS
from .run import run_task
from .task_from_options import Values, kpipe_task
from ..workflows.pipeline import Options

VERIFY_ARGS = ("arch", "tree", "base", "series", "patch", "no_patches", "kconfig", "defconfig", "accel", "expect",
               "selftests", "extra_test", "out", "jobs", "boot_timeout", "kernel_arg", "test_timeout", "profile",
               "range", "thread", "thread_revision", "case", "suite")
LAVA_ARGS = VERIFY_ARGS
PREMERGE_ARGS = tuple(n for n in VERIFY_ARGS if n not in ("no_patches", "expect", "case"))
WARNINGS_ARGS = ("arch", "tree", "base", "series", "patch", "kconfig", "defconfig", "out", "jobs", "profile", "range",
                 "thread", "thread_revision", "no_patches")
BISECT_ARGS = ("good", "bad", "arch", "tree", "series", "patch", "kconfig", "defconfig", "accel", "expect", "selftests",
               "extra_test", "out", "jobs", "boot_timeout", "build_failure_is_bad", "series_mode", "kernel_arg",
               "test_timeout", "profile", "range", "thread", "thread_revision", "case", "suite")


def _pick(values: Values, names: tuple[str, ...]) -> dict[str, Any]:
    """The named values, in the order named (the reproducer's flag order)."""
    return {n: values[n] for n in names}


def _opts(arch: str | None = None, tree: str | None = None, base: str | None = None, series: str | None = None,
          patch: list[str] | None = None, no_patches: bool = False, kconfig: list[str] | None = None,
          defconfig: str = "tinyconfig", accel: str = "auto", expect: str | None = None,
          selftests: str = "all-relevant", extra_test: list[str] | None = None, out: str | None = None,
          jobs: int = 0, boot_timeout: str | None = None, kernel_arg: list[str] | None = None,
          test_timeout: str | None = None, profile: str | None = None, range: str | None = None,
          case: list[str] | None = None, suite: str | None = None, thread: str | None = None,
          thread_revision: str | None = None) -> Options:
    from . import settings
    from ..errors import UsageError
    if range and not base and ".." in range:
        base = range.split("..", 1)[0]
    if thread_revision is not None and not str(thread_revision).isdigit():
        raise UsageError(f"--thread-revision {thread_revision!r} is not a number", fix="e.g. --thread-revision 2")
    leak = settings.effective()["leak_scan"]
    return Options(suite=suite, cases=tuple(case or ()), leak_scan=bool(leak.value), leak_scan_source=leak.source,
                   range=range, thread=thread, thread_revision=int(thread_revision) if thread_revision else None,
                   profile=profile or "debug", arch=arch, tree=tree, base=base, series=series,
                   patches=tuple(patch or ()),
                   no_patches=no_patches, kconfigs=tuple(kconfig or ()), defconfig=defconfig, accel=accel,
                   expect=expect, selftests=selftests, extra_tests=tuple(extra_test or ()), out=out,
                   jobs=int(jobs or 0), boot_timeout=float(boot_timeout) if boot_timeout else None,
                   kernel_args=tuple(kernel_arg or ()), test_timeout=float(test_timeout) if test_timeout else None)


def _configured(args: dict[str, Any]) -> dict[str, Any]:
    """Fill the options the command line left out from kpipe's config (kpipe.cli.settings: files, KPIPE_* env vars,
    the kernel tree you are in). Only keys the task has are filled."""
    from . import settings
    from ..errors import KpipeError
    try:
        eff = settings.effective()
    except KpipeError as e:
        print(e.render(), file=sys.stderr)
        raise Exit(code=e.exit_code) from None
    out = dict(args)
    for key, spec in SETTINGS.items():
        arg = spec.name
        if arg not in out or out[arg] not in (None, (), [], 0, ""):
            continue
        value = eff[key].value
        if value not in (None, (), 0, ""):
            # settings.effective() gives a repeatable option (kconfigs) as a tuple (Setting.value is typed object)
            out[arg] = list(value) if spec.repeatable and isinstance(value, tuple) else value
    return out


def _resolved(args: dict[str, Any]) -> dict[str, Any]:
    """The options as the run will use them, for the one-line reproducer."""
    from ..arches import host_arch_name
    out = dict(args)
    if "tree" in out:
        out["tree"] = out["tree"] or "debian:5.10"
    if "arch" in out:
        out["arch"] = out["arch"] or host_arch_name()
    return out


REPORT_KINDS = ("mail",)


def _check_report(report: str | None) -> None:
    if report is not None and report not in REPORT_KINDS:
        print(f"kpipe: error: --report {report!r}: known: {', '.join(REPORT_KINDS)}", file=sys.stderr)
        raise Exit(code=2)


def _mail(run: Any, report: str | None) -> int:
    """--report mail: the run's report.txt on stdout (after the table)."""
    if report == "mail":
        from pathlib import Path
        txt = Path(run.out_dir) / "report.txt"
        if txt.is_file():
            print(txt.read_text(), end="", flush=True)
    return int(run.exit_code)


def _run(name: str, fn: Callable[[], TaskOutcome], args: dict[str, Any], quiet: bool = False,
         bisect_exit_codes: bool = False) -> None:
    args = _resolved(args)
    code = run_task(name, fn, args, quiet=quiet, bisect_exit_codes=bisect_exit_codes)
    if code:
        raise Exit(code=code)


@kpipe_task("quiet")
def setup(c: Context, o: Values) -> None:
    """Install host packages for both arches (toolchains, QEMU, guest-image tools); idempotent."""
    from .setup import run_setup
    _run("setup", run_setup, {}, o["quiet"])


@kpipe_task("tree", "base", "quiet")
def fetch(c: Context, o: Values) -> None:
    """Fetch a kernel tree into kpipe's cache (debian:* from this machine's apt mirror)."""
    from . import commands
    args = _configured(_pick(o, ("tree", "base")))
    _run("fetch", lambda: commands.fetch(_opts(**args)), args, o["quiet"])


APPLY_ARGS = ("tree", "base", "series", "patch", "no_patches", "out", "range", "thread", "thread_revision")


@kpipe_task(*APPLY_ARGS, "quiet")
def apply(c: Context, o: Values) -> None:
    """Apply the patch series in kpipe's scratch checkout (exit 3 when a patch does not apply)."""
    from . import commands
    args = _configured(_pick(o, APPLY_ARGS))
    _run("apply", lambda: commands.apply_only(_opts(**args)), args, o["quiet"])


BUILD_ARGS = ("arch", "tree", "base", "series", "patch", "no_patches", "kconfig", "defconfig", "jobs", "out", "profile")


@kpipe_task(*BUILD_ARGS, "quiet")
def build(c: Context, o: Values) -> None:
    """Configure (validated) and build the kernel out of tree, cached by content key (exit 4 on failure)."""
    from . import commands
    args = _configured(_pick(o, BUILD_ARGS))
    _run("build", lambda: commands.build(_opts(**args)), args, o["quiet"])


@kpipe_task("arch", "out", "quiet")
def image(c: Context, o: Values) -> None:
    """Build the guest initramfs for an arch from vm_images/ (cached)."""
    from . import commands
    args = _configured(_pick(o, ("arch", "out")))
    _run("image", lambda: commands.build_image(_opts(**args)), args, o["quiet"])


BOOT_ARGS = ("arch", "accel", "boot_timeout", "kernel_arg", "out")


@kpipe_task(*BOOT_ARGS, "cmd", "shell", "quiet")
def boot(c: Context, o: Values) -> None:
    """Boot the last built kernel for an arch in QEMU and run `uname -a`, --cmd, or a --shell."""
    from . import commands
    args = _configured(_pick(o, BOOT_ARGS))
    cmd, shell = o["cmd"], o["shell"]
    _run("boot", lambda: commands.boot(_opts(**args), cmd, shell), {**args, "cmd": cmd, "shell": shell}, o["quiet"])


@kpipe_task(*VERIFY_ARGS, "bisect_exit_codes", "report", "quiet")
def verify(c: Context, o: Values) -> None:
    """The whole chain: apply, configure, build, boot, verifier + selftests, dmesg scan, reports."""
    from ..workflows import flows as workflows
    from .run import reproducer
    args = _configured(_pick(o, VERIFY_ARGS))
    bisect_exit_codes, report = o["bisect_exit_codes"], o["report"]
    repro = reproducer("verify", _resolved({**args, "bisect_exit_codes": bisect_exit_codes}))
    _check_report(report)
    _run("verify", lambda: _mail(workflows.verify(_opts(**args), repro), report),
         {**args, "bisect_exit_codes": bisect_exit_codes}, o["quiet"], bisect_exit_codes)


@kpipe_task(*PREMERGE_ARGS, "expect", "no_patches", "no_warnings", "allow_new_warnings", "report",
            "require_coverage", "lab", "quiet")
def premerge(c: Context, o: Values) -> None:
    """Maintainer check: baseline vs patched on every arch (default all), expected flip, checkpatch, premerge.md."""
    from ..workflows import flows as workflows
    from .run import reproducer
    args = _configured(_pick(o, PREMERGE_ARGS))
    args["arch"] = args["arch"] or "all"
    import dataclasses
    no_warnings, allow_new_warnings, lab = o["no_warnings"], o["allow_new_warnings"], o["lab"]
    report, require_coverage = o["report"], o["require_coverage"]
    repro = reproducer("premerge", _resolved({**args, "no_warnings": no_warnings,
                                              "allow_new_warnings": allow_new_warnings, "lab": lab}))
    _check_report(report)
    if require_coverage:
        repro += " --require-coverage"

    def sides() -> workflows.Sides | None:
        from ..lava.premerge import lab_sides
        return lab_sides(lab, require_coverage) if lab else None
    _run("premerge", lambda: _mail(workflows.premerge(dataclasses.replace(
        _opts(**args), warnings=not no_warnings, allow_new_warnings=allow_new_warnings), repro,
        require_coverage=require_coverage, sides=sides()), report), {**args, "lab": lab}, o["quiet"])


@kpipe_task(*WARNINGS_ARGS, "allow_new_warnings", "tools", "quiet")
def warnings(c: Context, o: Values) -> None:
    """Compile-only: the warnings delta (gcc W=1, sparse C=2, clang) of the touched objects, baseline vs
    patched, and each patch of the series building on its own. No boot."""
    from ..workflows import compile_checks, flows as workflows
    from .run import reproducer
    args = _configured(_pick(o, WARNINGS_ARGS))
    args["arch"] = args["arch"] or "all"
    allow_new_warnings = o["allow_new_warnings"]
    chosen = compile_checks.parse_tools(o["tools"])
    repro = reproducer("warnings", _resolved({**args, "allow_new_warnings": allow_new_warnings}))
    _run("warnings", lambda: workflows.warnings(_opts(**args), repro, allow_new_warnings, chosen).exit_code,
         args, o["quiet"])


@kpipe_task(*BISECT_ARGS, "base", "no_patches", "quiet")
def bisect(c: Context, o: Values) -> None:
    """Bisect in kpipe's own checkout: both endpoints verified first, then each step verifies incrementally."""
    from ..workflows import flows as workflows
    from .run import reproducer
    args = _configured(_pick(o, BISECT_ARGS))
    opt_args = {k: v for k, v in args.items() if k not in ("good", "bad", "build_failure_is_bad", "series_mode")}
    repro = reproducer("bisect", _resolved(args))
    # workflows.bisect types good and bad as str, but takes None for a missing one (bisection.bisect_commits
    # raises the UsageError)
    _run("bisect", lambda: workflows.bisect(_opts(**opt_args, base=o["base"]), o["good"], o["bad"],
                                            o["build_failure_is_bad"], o["series_mode"], repro).exit_code,
         args, o["quiet"])


@kpipe_task(*LAVA_ARGS, "run_local", "submit", "wait", "quiet")
def lava(c: Context, o: Values) -> None:
    """The same kernels and tests as LAVA v2 jobs (one per arch): write, --run-local with lava-run, or --submit."""
    from .run import reproducer
    from ..lava import workflow
    args = _configured(_pick(o, LAVA_ARGS))
    extra = _pick(o, ("run_local", "submit", "wait"))
    repro = reproducer("lava", _resolved({**args, **extra}))
    _run("lava", lambda: workflow.lava(_opts(**args), o["run_local"], o["submit"], o["wait"], repro).exit_code,
         {**args, **extra}, o["quiet"])


BENCH_ARGS = ("arch", "out", "quick", "profile", "resume", "only")


@kpipe_task(*BENCH_ARGS, "quiet")
def bench(c: Context, o: Values) -> None:
    """Measure kpipe against raw make and raw qemu doing the same work; prints each row and rewrites bench.json
    as it is measured (--resume DIR finishes a stopped one)."""
    from ..bench import measure as benchmod
    _run("bench", lambda: benchmod.run_bench(o["arch"], o["out"], o["quick"], o["profile"], o["resume"], o["only"]),
         _pick(o, BENCH_ARGS), o["quiet"])


@kpipe_task()
def config(c: Context, o: Values) -> None:
    """Print the effective defaults (tree, arch, profile, kconfigs, jobs, out, runs, cache) and their sources.

    Sources, later wins: built-in, /etc/kpipe.yaml, ~/.config/kpipe.yaml ($XDG_CONFIG_HOME), the kernel git tree
    you are in (tree only), ./kpipe.yaml, KPIPE_* environment variables; a command-line option beats them all."""
    from . import settings
    print("\n".join(settings.describe()))


@kpipe_task("older_than", "keep_last", "max_size", "dry_run")
def clean(c: Context, o: Values) -> None:
    """Show cache use per kind (trees, work, builds, kernels, images, ccache); remove by age, count or size.

    Nothing is removed without --older-than, --keep-last or --max-size; what a running kpipe holds is never
    removed (each entry's locks are taken non-blocking first)."""
    from .. import cache
    from ..build.clean import run_clean
    keep_last = o["keep_last"]
    _run("clean", lambda: run_clean(cache.cache_root(), o["older_than"],
                                    int(keep_last) if keep_last is not None else None, o["max_size"], o["dry_run"]),
         dict(o))


@kpipe_task("k", "fast", "no_lint")
def test(c: Context, o: Values) -> None:
    """Lint (ruff) and type-check (mypy --strict on kpipe/), then run the test suite (real git, real builds,
    real QEMU and SSH) from the kpipe checkout."""
    import importlib.util
    import shlex
    import sys
    from ..datadirs import checkout_root
    root = checkout_root()
    if root is None:
        print("kpipe: error: `kpipe test` runs the tests of a kpipe checkout; this kpipe is installed without them\n"
              "  fix: clone kpipe and run ./kpipe-setup test there", file=sys.stderr)
        raise Exit(code=2)
    cmd = [sys.executable, "-m", "pytest", "-ra", "--durations=10"]
    where = "tests"
    if o["fast"]:
        # tests/unit/ holds every test `-m "not e2e"` selects (tests/conftest.py): the e2e modules are not even
        # imported (each worker's collection rewrites every module it imports: ~1 s of CPU for tests/e2e/)
        cmd += ["-m", "not e2e"]
        where = "tests/unit"
        # the fast tier's tests are independent (each its own temp folders, cache and zygote): two pytest-xdist
        # workers, about half the wall time on two cores. The full suite stays one process: it boots kernels.
        if importlib.util.find_spec("xdist") is not None:
            cmd += ["-n", "2"]
        else:
            print("kpipe: note: pytest-xdist is not installed (./kpipe-setup installs the test extras): the fast "
                  "tier runs in one process", file=sys.stderr)
    if o["k"]:
        cmd += ["-k", o["k"]]
    with c.cd(str(root)):
        if not o["no_lint"]:
            c.run(shlex.join([sys.executable, "-m", "ruff", "check", "kpipe", "tests", "tasks.py", "scripts"]),
                  pty=False)
            c.run(shlex.join([sys.executable, "-m", "mypy"]), pty=False)      # strict on kpipe/ (pyproject.toml)
        c.run(shlex.join(cmd + [where]), pty=False)


LAB_ACTIONS = ("up", "down", "status")


@kpipe_task("action", "quiet")
def lab(c: Context, o: Values) -> None:
    """A single-machine LAVA lab (lava-server, PostgreSQL, one worker; 127.0.0.1 only) for
    `kpipe lava --submit lab --wait`: `kpipe lab up|down|status`."""
    from ..lava import lab as labmod
    action = o["action"]
    if action not in LAB_ACTIONS:
        print(f"kpipe: error: lab {action!r}: use one of {', '.join(LAB_ACTIONS)}", file=sys.stderr)
        raise Exit(code=2)
    fn = {"up": labmod.up, "down": labmod.down, "status": labmod.status}[action]
    _run("lab", fn, {"action": action}, o["quiet"])
