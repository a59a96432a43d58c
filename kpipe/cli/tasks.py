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
from invoke.tasks import task

from ..errors import TaskOutcome
from .run import run_task
from ..workflows.pipeline import Options

COMMON_HELP = {
    "arch": "x86_64, arm64 or all (default: the host's arch; KPIPE_ARCH)",
    "tree": "debian:5.10, debian:6.1, debian:6.12, or PATH of a kernel git tree (never modified); default: the "
            "kernel git tree you are in, else debian:5.10 (KPIPE_TREE, kpipe.yaml)",
    "base": "commit of --tree PATH to start from (default HEAD)",
    "series": "series file listing patches in order (default patches/series)",
    "patch": "a patch file (repeatable; replaces the series), or one mbox holding a whole series (git format-patch "
             "--stdout, b4 am; a cover letter is skipped and kept as the series title)",
    "range": "A..B: the commits of B not in A in your --tree PATH as the series (--base defaults to A)",
    "thread": "a mailing-list thread as the series, through b4 am: an mbox FILE (cover letter, revisions, replies), "
              "or a message-id/lore URL (needs network); the newest revision, the replies' trailers added",
    "thread_revision": "with --thread: take revision N of the series instead of the newest",
    "no_patches": "apply no patches (baseline)",
    "kconfig": "extra kconfig fragment on top of kconfigs/ (repeatable; KPIPE_KCONFIGS, comma-separated)",
    "defconfig": "make target to start the config from (default tinyconfig)",
    "profile": "debug (default: SLUB, SMP, KASAN, DEBUG_VM, lockdep, hang detectors) or fast (tinyconfig, 1 vCPU); "
               "see kconfigs/profiles.toml (KPIPE_PROFILE)",
    "accel": "auto (probe KVM with a timeout, else TCG), kvm or tcg",
    "expect": "the suite's verifier policy, e.g. anon-only, anon+shmem or upstream for mremap-dontunmap (default: "
              "read from the tree's code and the series)",
    "selftests": "all-relevant (default), none, or a comma list of selftest names",
    "extra_test": "a C file or static binary to push and run like a selftest (repeatable)",
    "out": "output folder (default $KPIPE_RUNS/<timestamp>-<task>, with a `latest` link; $KPIPE_RUNS defaults "
           "to ~/.local/state/kpipe/runs)",
    "jobs": "make -j (default: all cores; KPIPE_JOBS)",
    "boot_timeout": "seconds to wait for the guest (default scaled for TCG)",
    "quiet": "no progress lines",
    "kernel_arg": "append this to the guest kernel command line (repeatable), e.g. oops=panic",
    "test_timeout": "seconds each test may run (the verifier, each selftest and extra test)",
    "suite": "the suite of checks: a shipped name (mremap-dontunmap, ...) or the PATH of a suite folder; default: "
             "the shipped suite the series' touched files select (see suites/README.md)",
    "case": "run only this verifier case (repeatable; a name or a glob such as 'plain-*'): a quick loop on one "
            "behaviour; the verdict covers only the cases run",
}
ITER = ["patch", "kconfig", "extra_test", "kernel_arg", "case"]


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
    for key, arg in (("tree", "tree"), ("arch", "arch"), ("profile", "profile"), ("kconfigs", "kconfig"),
                     ("jobs", "jobs"), ("out", "out")):
        if arg not in out or out[arg] not in (None, (), [], 0, ""):
            continue
        value = eff[key].value
        if value not in (None, (), 0, ""):
            # settings.effective() gives kconfigs as a tuple (Setting.value is typed object)
            out[arg] = list(value) if arg == "kconfig" and isinstance(value, tuple) else value
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


@task(auto_shortflags=False, help={"quiet": COMMON_HELP["quiet"]})
def setup(c: Context, quiet: bool = False) -> None:
    """Install host packages for both arches (toolchains, QEMU, guest-image tools); idempotent."""
    from .setup import run_setup
    _run("setup", run_setup, {}, quiet)


@task(auto_shortflags=False, help={k: COMMON_HELP[k] for k in ("tree", "base", "quiet")})
def fetch(c: Context, tree: str | None = None, base: str | None = None, quiet: bool = False) -> None:
    """Fetch a kernel tree into kpipe's cache (debian:* from this machine's apt mirror)."""
    from . import commands
    args = _configured(dict(tree=tree, base=base))
    _run("fetch", lambda: commands.fetch(_opts(**args)), args, quiet)


@task(auto_shortflags=False, iterable=["patch"],
      help={k: COMMON_HELP[k] for k in ("tree", "base", "series", "patch", "range", "thread", "thread_revision",
                                        "no_patches", "out", "quiet")})
def apply(c: Context, tree: str | None = None, base: str | None = None, series: str | None = None,
          patch: list[str] | None = None, no_patches: bool = False, out: str | None = None, quiet: bool = False,
          range: str | None = None, thread: str | None = None, thread_revision: str | None = None) -> None:
    """Apply the patch series in kpipe's scratch checkout (exit 3 when a patch does not apply)."""
    from . import commands
    args = _configured(dict(tree=tree, base=base, series=series, patch=patch, no_patches=no_patches, out=out,
                            range=range, thread=thread, thread_revision=thread_revision))
    _run("apply", lambda: commands.apply_only(_opts(**args)), args, quiet)


@task(auto_shortflags=False, iterable=["patch", "kconfig"], help={k: COMMON_HELP[k] for k in (
    "arch", "tree", "base", "series", "patch", "no_patches", "kconfig", "defconfig", "profile", "jobs", "out",
    "quiet")})
def build(c: Context, arch: str | None = None, tree: str | None = None, base: str | None = None,
          series: str | None = None, patch: list[str] | None = None, no_patches: bool = False,
          kconfig: list[str] | None = None, defconfig: str = "tinyconfig", jobs: int = 0, out: str | None = None,
          quiet: bool = False, profile: str | None = None) -> None:
    """Configure (validated) and build the kernel out of tree, cached by content key (exit 4 on failure)."""
    from . import commands
    args = _configured(dict(arch=arch, tree=tree, base=base, series=series, patch=patch, no_patches=no_patches,
                            kconfig=kconfig, defconfig=defconfig, jobs=jobs, out=out, profile=profile))
    _run("build", lambda: commands.build(_opts(**args)), args, quiet)


@task(auto_shortflags=False, help={k: COMMON_HELP[k] for k in ("arch", "out", "quiet")})
def image(c: Context, arch: str | None = None, out: str | None = None, quiet: bool = False) -> None:
    """Build the guest initramfs for an arch from vm_images/ (cached)."""
    from . import commands
    args = _configured(dict(arch=arch, out=out))
    _run("image", lambda: commands.build_image(_opts(**args)), args, quiet)


@task(auto_shortflags=False, iterable=["kernel_arg"],
      help={**{k: COMMON_HELP[k] for k in ("arch", "accel", "boot_timeout", "kernel_arg", "out", "quiet")},
            "cmd": "run this command in the guest and exit with its status", "shell": "interactive shell in the guest"})
def boot(c: Context, arch: str | None = None, accel: str = "auto", cmd: str | None = None, shell: bool = False,
         boot_timeout: str | None = None, kernel_arg: list[str] | None = None, out: str | None = None,
         quiet: bool = False) -> None:
    """Boot the last built kernel for an arch in QEMU and run `uname -a`, --cmd, or a --shell."""
    from . import commands
    args = _configured(dict(arch=arch, accel=accel, boot_timeout=boot_timeout, kernel_arg=kernel_arg, out=out))
    _run("boot", lambda: commands.boot(_opts(**args), cmd, shell), {**args, "cmd": cmd, "shell": shell}, quiet)


VERIFY_KEYS = ("arch", "tree", "base", "series", "patch", "range", "thread", "thread_revision", "no_patches", "kconfig",
               "defconfig", "profile",
               "accel", "expect", "suite",
               "selftests", "extra_test", "out", "jobs", "boot_timeout", "kernel_arg", "test_timeout", "quiet")


@task(auto_shortflags=False, iterable=ITER, help={**{k: COMMON_HELP[k] for k in VERIFY_KEYS},
                           "bisect_exit_codes": "map exit codes for `git bisect run` (0 good, 1 bad, 125 skip)",
                           "report": "mail: print report.txt (the robot's mail) on stdout at the end",
                           "case": COMMON_HELP["case"]})
def verify(c: Context, arch: str | None = None, tree: str | None = None, base: str | None = None,
           series: str | None = None, patch: list[str] | None = None, no_patches: bool = False,
           kconfig: list[str] | None = None, defconfig: str = "tinyconfig", accel: str = "auto",
           expect: str | None = None, selftests: str = "all-relevant", extra_test: list[str] | None = None,
           out: str | None = None, jobs: int = 0, boot_timeout: str | None = None, kernel_arg: list[str] | None = None,
           test_timeout: str | None = None, bisect_exit_codes: bool = False, quiet: bool = False,
           profile: str | None = None, range: str | None = None, thread: str | None = None,
           thread_revision: str | None = None, report: str | None = None,
           case: list[str] | None = None, suite: str | None = None) -> None:
    """The whole chain: apply, configure, build, boot, verifier + selftests, dmesg scan, reports."""
    from ..workflows import flows as workflows
    from .run import reproducer
    args = _configured(dict(arch=arch, tree=tree, base=base, series=series, patch=patch, no_patches=no_patches,
                            kconfig=kconfig, defconfig=defconfig, accel=accel, expect=expect, selftests=selftests,
                            extra_test=extra_test, out=out, jobs=jobs, boot_timeout=boot_timeout,
                            kernel_arg=kernel_arg, test_timeout=test_timeout, profile=profile, range=range,
                            thread=thread, thread_revision=thread_revision, case=case, suite=suite))
    repro = reproducer("verify", _resolved({**args, "bisect_exit_codes": bisect_exit_codes}))
    _check_report(report)
    _run("verify", lambda: _mail(workflows.verify(_opts(**args), repro), report),
         {**args, "bisect_exit_codes": bisect_exit_codes}, quiet, bisect_exit_codes)


@task(auto_shortflags=False, iterable=ITER, help={**{k: COMMON_HELP[k] for k in VERIFY_KEYS},
      "no_warnings": "skip the compile checks (W=1, sparse, clang warnings delta; bisectability)",
      "allow_new_warnings": "report new compiler/sparse warnings without failing",
                           "report": "mail: print report.txt (the robot's mail) on stdout at the end",
                           "require_coverage": "fail when a changed line ran in no test on any arch",
                           "lab": "boot and test both sides as LAVA jobs on this server (URL, token: "
                                  "$LAVACLI_TOKEN or lavacli's config), or `lab`: the local lab of `kpipe lab up`; "
                                  "all jobs are queued at once"})
def premerge(c: Context, arch: str | None = None, tree: str | None = None, base: str | None = None,
             series: str | None = None, patch: list[str] | None = None, kconfig: list[str] | None = None,
             defconfig: str = "tinyconfig", accel: str = "auto", selftests: str = "all-relevant",
             extra_test: list[str] | None = None, out: str | None = None, jobs: int = 0,
             boot_timeout: str | None = None, quiet: bool = False, expect: str | None = None, no_patches: bool = False,
             kernel_arg: list[str] | None = None, test_timeout: str | None = None, profile: str | None = None,
             range: str | None = None, thread: str | None = None, thread_revision: str | None = None,
             no_warnings: bool = False,
             allow_new_warnings: bool = False, report: str | None = None, require_coverage: bool = False,
             suite: str | None = None, lab: str | None = None) -> None:
    """Maintainer check: baseline vs patched on every arch (default all), expected flip, checkpatch, premerge.md."""
    from ..workflows import flows as workflows
    from .run import reproducer
    args = _configured(dict(arch=arch, tree=tree, base=base, series=series, patch=patch, kconfig=kconfig,
                            defconfig=defconfig, accel=accel, selftests=selftests, extra_test=extra_test, out=out,
                            jobs=jobs, boot_timeout=boot_timeout, kernel_arg=kernel_arg, test_timeout=test_timeout,
                            profile=profile, range=range, thread=thread, thread_revision=thread_revision,
                            suite=suite))
    args["arch"] = args["arch"] or "all"
    import dataclasses
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
        require_coverage=require_coverage, sides=sides()), report), {**args, "lab": lab}, quiet)


@task(auto_shortflags=False, iterable=ITER,
      help={**{k: COMMON_HELP[k] for k in ("arch", "tree", "base", "series", "patch", "kconfig", "defconfig", "out",
                                            "jobs", "quiet", "profile", "range", "thread", "thread_revision",
                                            "no_patches") if k in COMMON_HELP},
            "allow_new_warnings": "report new warnings without failing (exit 0)",
            "tools": "comma-separated subset of gcc-W=1,sparse,clang (default all)"})
def warnings(c: Context, arch: str | None = None, tree: str | None = None, base: str | None = None,
             series: str | None = None, patch: list[str] | None = None, kconfig: list[str] | None = None,
             defconfig: str = "tinyconfig", out: str | None = None, jobs: int = 0, quiet: bool = False,
             profile: str | None = None, range: str | None = None, thread: str | None = None,
             thread_revision: str | None = None, no_patches: bool = False,
             allow_new_warnings: bool = False, tools: str = "gcc-W=1,sparse,clang") -> None:
    """Compile-only: the warnings delta (gcc W=1, sparse C=2, clang) of the touched objects, baseline vs
    patched, and each patch of the series building on its own. No boot."""
    from ..workflows import compile_checks, flows as workflows
    from .run import reproducer
    args = _configured(dict(arch=arch, tree=tree, base=base, series=series, patch=patch, kconfig=kconfig,
                            defconfig=defconfig, out=out, jobs=jobs, profile=profile, range=range, thread=thread,
                            thread_revision=thread_revision, no_patches=no_patches))
    args["arch"] = args["arch"] or "all"
    chosen = compile_checks.parse_tools(tools)
    repro = reproducer("warnings", _resolved({**args, "allow_new_warnings": allow_new_warnings}))
    _run("warnings", lambda: workflows.warnings(_opts(**args), repro, allow_new_warnings, chosen).exit_code,
         args, quiet)


@task(auto_shortflags=False, iterable=ITER, help={**{k: COMMON_HELP[k] for k in VERIFY_KEYS},
                           "good": "a good revision (verified first: it must pass under the policy)",
                           "bad": "a bad revision (verified first: it must fail under the policy)",
                           "build_failure_is_bad": "count build failures as bad instead of skip",
                           "series_mode": "bisect inside the patch series: which patch first breaks",
                           "case": COMMON_HELP["case"]})
def bisect(c: Context, good: str | None = None, bad: str | None = None, arch: str | None = None,
           tree: str | None = None, series: str | None = None, patch: list[str] | None = None,
           kconfig: list[str] | None = None, defconfig: str = "tinyconfig", accel: str = "auto",
           expect: str | None = None, selftests: str = "all-relevant", extra_test: list[str] | None = None,
           out: str | None = None, jobs: int = 0, boot_timeout: str | None = None, build_failure_is_bad: bool = False,
           series_mode: bool = False, quiet: bool = False, base: str | None = None, no_patches: bool = False,
           kernel_arg: list[str] | None = None, test_timeout: str | None = None, profile: str | None = None,
           range: str | None = None, thread: str | None = None,
           thread_revision: str | None = None, case: list[str] | None = None, suite: str | None = None) -> None:
    """Bisect in kpipe's own checkout: both endpoints verified first, then each step verifies incrementally."""
    from ..workflows import flows as workflows
    from .run import reproducer
    args = _configured(dict(good=good, bad=bad, arch=arch, tree=tree, series=series, patch=patch, kconfig=kconfig,
                            defconfig=defconfig, accel=accel, expect=expect, selftests=selftests,
                            extra_test=extra_test, out=out, jobs=jobs, boot_timeout=boot_timeout,
                            build_failure_is_bad=build_failure_is_bad, series_mode=series_mode,
                            kernel_arg=kernel_arg, test_timeout=test_timeout, profile=profile, range=range,
                            thread=thread, thread_revision=thread_revision, case=case, suite=suite))
    opt_args = {k: v for k, v in args.items() if k not in ("good", "bad", "build_failure_is_bad", "series_mode")}
    repro = reproducer("bisect", _resolved(args))
    # workflows.bisect types good and bad as str, but takes None for a missing one (bisection.bisect_commits
    # raises the UsageError): drop this ignore when it says str | None
    _run("bisect", lambda: workflows.bisect(_opts(**opt_args, base=base), good, bad,
                                            build_failure_is_bad,
                                            series_mode, repro).exit_code, args, quiet)


@task(auto_shortflags=False, iterable=ITER, help={**{k: COMMON_HELP[k] for k in VERIFY_KEYS},
                           "run_local": "run each job here with lava-run and report as verify does",
                           "submit": "submit each job to this LAVA server with lavacli (token: $LAVACLI_TOKEN "
                                     "or lavacli's config), or to `lab`: the local lab of `kpipe lab up`",
                           "wait": "with --submit: wait for the jobs and collect their results"})
def lava(c: Context, arch: str | None = None, tree: str | None = None, base: str | None = None,
         series: str | None = None, patch: list[str] | None = None, no_patches: bool = False,
         kconfig: list[str] | None = None, defconfig: str = "tinyconfig", accel: str = "auto",
         expect: str | None = None, selftests: str = "all-relevant", extra_test: list[str] | None = None,
         out: str | None = None, jobs: int = 0, boot_timeout: str | None = None, kernel_arg: list[str] | None = None,
         test_timeout: str | None = None, quiet: bool = False, profile: str | None = None, range: str | None = None,
         thread: str | None = None, thread_revision: str | None = None,
         run_local: bool = False, submit: str | None = None, wait: bool = False, suite: str | None = None) -> None:
    """The same kernels and tests as LAVA v2 jobs (one per arch): write, --run-local with lava-run, or --submit."""
    from .run import reproducer
    from ..lava import workflow
    args = _configured(dict(arch=arch, tree=tree, base=base, series=series, patch=patch, no_patches=no_patches,
                            kconfig=kconfig, defconfig=defconfig, accel=accel, expect=expect, selftests=selftests,
                            extra_test=extra_test, out=out, jobs=jobs, boot_timeout=boot_timeout,
                            kernel_arg=kernel_arg, test_timeout=test_timeout, profile=profile, range=range,
                            thread=thread, thread_revision=thread_revision, suite=suite))
    extra = dict(run_local=run_local, submit=submit, wait=wait)
    repro = reproducer("lava", _resolved({**args, **extra}))
    _run("lava", lambda: workflow.lava(_opts(**args), run_local, submit, wait, repro).exit_code, {**args, **extra},
         quiet)


@task(auto_shortflags=False, help={"arch": "x86_64, arm64 or all (default all)",
                                   "out": "where bench.json goes (default under the runs folder)",
            "quick": "skip the cold builds (warm, unchanged, premerge only)", "quiet": COMMON_HELP["quiet"],
            "profile": "debug (default), fast, or all (both, plus the debug/fast cost per phase)",
            "resume": "a stopped bench's folder: run only the steps whose rows its bench.json lacks",
            "only": "just these step kinds, comma-separated (cold,newdir,warm,unchanged,all,premerge,lava)"})
def bench(c: Context, arch: str = "all", out: str | None = None, quick: bool = False, quiet: bool = False,
          profile: str = "debug", resume: str | None = None, only: str | None = None) -> None:
    """Measure kpipe against raw make and raw qemu doing the same work; prints each row and rewrites bench.json
    as it is measured (--resume DIR finishes a stopped one)."""
    from ..bench import measure as benchmod
    _run("bench", lambda: benchmod.run_bench(arch, out, quick, profile, resume, only),
         {"arch": arch, "out": out, "quick": quick, "profile": profile, "resume": resume, "only": only}, quiet)


@task(auto_shortflags=False)
def config(c: Context) -> None:
    """Print the effective defaults (tree, arch, profile, kconfigs, jobs, out, runs, cache) and their sources.

    Sources, later wins: built-in, /etc/kpipe.yaml, ~/.config/kpipe.yaml ($XDG_CONFIG_HOME), the kernel git tree
    you are in (tree only), ./kpipe.yaml, KPIPE_* environment variables; a command-line option beats them all."""
    from . import settings
    print("\n".join(settings.describe()))


@task(auto_shortflags=False, help={
    "older_than": "remove entries unused for longer than this (e.g. 14d, 12h, 2w)",
    "keep_last": "keep only the N most recently used entries of each kind",
    "max_size": "remove least recently used entries until the cache is under this size (e.g. 20G)",
    "dry_run": "show what would be removed; remove nothing"})
def clean(c: Context, older_than: str | None = None, keep_last: str | None = None, max_size: str | None = None,
          dry_run: bool = False) -> None:
    """Show cache use per kind (trees, work, builds, kernels, images, ccache); remove by age, count or size.

    Nothing is removed without --older-than, --keep-last or --max-size; what a running kpipe holds is never
    removed (each entry's locks are taken non-blocking first)."""
    from .. import cache
    from ..build.clean import run_clean
    args = {"older_than": older_than, "keep_last": keep_last, "max_size": max_size, "dry_run": dry_run}
    _run("clean", lambda: run_clean(cache.cache_root(), older_than, int(keep_last) if keep_last is not None else None,
                                    max_size, dry_run), args)


@task(auto_shortflags=False, help={"k": "only tests matching this pytest -k expression",
                                   "fast": "the fast tier only (builds, boots and downloads nothing; under 60 s)",
                                   "no_lint": "skip ruff and mypy (they run first otherwise)"})
def test(c: Context, k: str | None = None, fast: bool = False, no_lint: bool = False) -> None:
    """Lint (ruff) and type-check (mypy --strict on kpipe/), then run the test suite (real git, real builds,
    real QEMU and SSH) from the kpipe checkout."""
    import shlex
    import sys
    from ..datadirs import checkout_root
    root = checkout_root()
    if root is None:
        print("kpipe: error: `kpipe test` runs the tests of a kpipe checkout; this kpipe is installed without them\n"
              "  fix: clone kpipe and run ./kpipe-setup test there", file=sys.stderr)
        raise Exit(code=2)
    cmd = [sys.executable, "-m", "pytest", "-ra", "--durations=10"]
    if fast:
        cmd += ["-m", "not e2e"]
    if k:
        cmd += ["-k", k]
    with c.cd(str(root)):
        if not no_lint:
            c.run(shlex.join([sys.executable, "-m", "ruff", "check", "kpipe", "tests", "tasks.py", "scripts"]),
                  pty=False)
            c.run(shlex.join([sys.executable, "-m", "mypy"]), pty=False)      # strict on kpipe/ (pyproject.toml)
        c.run(shlex.join(cmd + ["tests"]), pty=False)


LAB_ACTIONS = ("up", "down", "status")


@task(auto_shortflags=False, help={"action": "up (install if needed, start; idempotent), down (stop what up "
                                             "started) or status", "quiet": COMMON_HELP["quiet"]})
def lab(c: Context, action: str, quiet: bool = False) -> None:
    """A single-machine LAVA lab (lava-server, PostgreSQL, one worker; 127.0.0.1 only) for
    `kpipe lava --submit lab --wait`: `kpipe lab up|down|status`."""
    from ..lava import lab as labmod
    if action not in LAB_ACTIONS:
        print(f"kpipe: error: lab {action!r}: use one of {', '.join(LAB_ACTIONS)}", file=sys.stderr)
        raise Exit(code=2)
    fn = {"up": labmod.up, "down": labmod.down, "status": labmod.status}[action]
    _run("lab", fn, {"action": action}, quiet)
