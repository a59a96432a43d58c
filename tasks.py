"""kpipe's Invoke tasks: parse options, call the package, exit with the contract's code. Nothing else.

Exit codes: 0 pass, 1 the kernel misbehaved, 2 infrastructure or usage, 3 patch does not apply, 4 build failed.
"""
from invoke import Exit, task

from kpipe.cli import run_task
from kpipe.pipeline import Options

COMMON_HELP = {
    "arch": "x86_64, arm64 or all (default: the host's arch)",
    "tree": "debian:5.10 (default), debian:6.1, debian:6.12, or PATH of a kernel git tree (never modified)",
    "base": "commit of --tree PATH to start from (default HEAD)",
    "series": "series file listing patches in order (default patches/series)",
    "patch": "a patch file (repeatable; replaces the series)",
    "no_patches": "apply no patches (baseline)",
    "kconfig": "extra kconfig fragment on top of kconfigs/ (repeatable)",
    "defconfig": "make target to start the config from (default tinyconfig)",
    "profile": "debug (default: SLUB, SMP, KASAN, DEBUG_VM, lockdep, hang detectors) or fast (tinyconfig, 1 vCPU); "
               "see kconfigs/profiles.toml",
    "accel": "auto (probe KVM with a timeout, else TCG), kvm or tcg",
    "expect": "verifier policy: anon-only, anon+shmem or upstream (default: from kernel version and series)",
    "selftests": "all-relevant (default), none, or a comma list of selftest names",
    "extra_test": "a C file or static binary to push and run like a selftest (repeatable)",
    "out": "output folder (default runs/<timestamp>-<task>, with runs/latest)",
    "jobs": "make -j (default: all cores)",
    "boot_timeout": "seconds to wait for the guest (default scaled for TCG)",
    "quiet": "no progress lines",
    "kernel_arg": "append this to the guest kernel command line (repeatable), e.g. oops=panic",
    "test_timeout": "seconds each test may run (the verifier, each selftest and extra test)",
}
ITER = ["patch", "kconfig", "extra_test", "kernel_arg"]


def _opts(arch=None, tree=None, base=None, series=None, patch=None, no_patches=False, kconfig=None,
          defconfig="tinyconfig", accel="auto", expect=None, selftests="all-relevant", extra_test=None, out=None,
          jobs=0, boot_timeout=None, kernel_arg=None, test_timeout=None, profile=None):
    return Options(profile=profile or "debug", arch=arch, tree=tree, base=base, series=series, patches=tuple(patch or ()),
                   no_patches=no_patches, kconfigs=tuple(kconfig or ()), defconfig=defconfig, accel=accel,
                   expect=expect, selftests=selftests, extra_tests=tuple(extra_test or ()), out=out,
                   jobs=int(jobs or 0), boot_timeout=float(boot_timeout) if boot_timeout else None,
                   kernel_args=tuple(kernel_arg or ()), test_timeout=float(test_timeout) if test_timeout else None)


def _resolved(args):
    """The options as the run will use them, for the one-line reproducer."""
    from kpipe.arches import host_arch_name
    out = dict(args)
    if "tree" in out:
        out["tree"] = out["tree"] or "debian:5.10"
    if "arch" in out:
        out["arch"] = out["arch"] or host_arch_name()
    return out


def _run(name, fn, args, quiet=False, bisect_exit_codes=False):
    args = _resolved(args)
    code = run_task(name, fn, args, quiet=quiet, bisect_exit_codes=bisect_exit_codes)
    if code:
        raise Exit(code=code)


@task(auto_shortflags=False, help={"quiet": COMMON_HELP["quiet"]})
def setup(c, quiet=False):
    """Install host packages for both arches (toolchains, QEMU, guest-image tools); idempotent."""
    from kpipe.setup import run_setup
    _run("setup", run_setup, {}, quiet)


@task(auto_shortflags=False, help={k: COMMON_HELP[k] for k in ("tree", "base", "quiet")})
def fetch(c, tree=None, base=None, quiet=False):
    """Fetch a kernel tree into kpipe's cache (debian:* from this machine's apt mirror)."""
    from kpipe import commands
    _run("fetch", lambda: commands.fetch(_opts(tree=tree, base=base)), {"tree": tree, "base": base}, quiet)


@task(auto_shortflags=False, iterable=["patch"], help={k: COMMON_HELP[k] for k in ("tree", "base", "series", "patch", "no_patches", "out", "quiet")})
def apply(c, tree=None, base=None, series=None, patch=None, no_patches=False, out=None, quiet=False):
    """Apply the patch series in kpipe's scratch checkout (exit 3 when a patch does not apply)."""
    from kpipe import commands
    args = dict(tree=tree, base=base, series=series, patch=patch, no_patches=no_patches, out=out)
    _run("apply", lambda: commands.apply_only(_opts(**args)), args, quiet)


@task(auto_shortflags=False, iterable=["patch", "kconfig"], help={k: COMMON_HELP[k] for k in (
    "arch", "tree", "base", "series", "patch", "no_patches", "kconfig", "defconfig", "profile", "jobs", "out", "quiet")})
def build(c, arch=None, tree=None, base=None, series=None, patch=None, no_patches=False, kconfig=None,
          defconfig="tinyconfig", jobs=0, out=None, quiet=False, profile="debug"):
    """Configure (validated) and build the kernel out of tree, cached by content key (exit 4 on failure)."""
    from kpipe import commands
    args = dict(arch=arch, tree=tree, base=base, series=series, patch=patch, no_patches=no_patches, kconfig=kconfig,
                defconfig=defconfig, jobs=jobs, out=out, profile=profile)
    _run("build", lambda: commands.build(_opts(**args)), args, quiet)


@task(auto_shortflags=False, help={k: COMMON_HELP[k] for k in ("arch", "out", "quiet")})
def image(c, arch=None, out=None, quiet=False):
    """Build the guest initramfs for an arch from vm_images/ (cached)."""
    from kpipe import commands
    _run("image", lambda: commands.build_image(_opts(arch=arch, out=out)), {"arch": arch, "out": out}, quiet)


@task(auto_shortflags=False, iterable=["kernel_arg"],
      help={**{k: COMMON_HELP[k] for k in ("arch", "accel", "boot_timeout", "kernel_arg", "out", "quiet")},
            "cmd": "run this command in the guest and exit with its status", "shell": "interactive shell in the guest"})
def boot(c, arch=None, accel="auto", cmd=None, shell=False, boot_timeout=None, kernel_arg=None, out=None, quiet=False):
    """Boot the last built kernel for an arch in QEMU and run `uname -a`, --cmd, or a --shell."""
    from kpipe import commands
    args = dict(arch=arch, accel=accel, cmd=cmd, shell=shell, boot_timeout=boot_timeout, kernel_arg=kernel_arg, out=out)
    _run("boot", lambda: commands.boot(_opts(arch=arch, accel=accel, boot_timeout=boot_timeout, kernel_arg=kernel_arg,
                                             out=out), cmd, shell), args, quiet)


VERIFY_KEYS = ("arch", "tree", "base", "series", "patch", "no_patches", "kconfig", "defconfig", "profile", "accel", "expect",
               "selftests", "extra_test", "out", "jobs", "boot_timeout", "kernel_arg", "test_timeout", "quiet")


@task(auto_shortflags=False, iterable=ITER, help={**{k: COMMON_HELP[k] for k in VERIFY_KEYS},
                           "bisect_exit_codes": "map exit codes for `git bisect run` (0 good, 1 bad, 125 skip)"})
def verify(c, arch=None, tree=None, base=None, series=None, patch=None, no_patches=False, kconfig=None,
           defconfig="tinyconfig", accel="auto", expect=None, selftests="all-relevant", extra_test=None, out=None,
           jobs=0, boot_timeout=None, kernel_arg=None, test_timeout=None, bisect_exit_codes=False, quiet=False,
           profile="debug"):
    """The whole chain: apply, configure, build, boot, verifier + selftests, dmesg scan, reports."""
    from kpipe import workflows
    args = dict(arch=arch, tree=tree, base=base, series=series, patch=patch, no_patches=no_patches, kconfig=kconfig,
                defconfig=defconfig, accel=accel, expect=expect, selftests=selftests, extra_test=extra_test, out=out,
                jobs=jobs, boot_timeout=boot_timeout, kernel_arg=kernel_arg, test_timeout=test_timeout, profile=profile)
    from kpipe.cli import reproducer
    repro = reproducer("verify", _resolved({**args, "bisect_exit_codes": bisect_exit_codes}))
    _run("verify", lambda: workflows.verify(_opts(**args), repro).exit_code,
         {**args, "bisect_exit_codes": bisect_exit_codes}, quiet, bisect_exit_codes)


@task(auto_shortflags=False, iterable=ITER, help={k: COMMON_HELP[k] for k in VERIFY_KEYS})
def premerge(c, arch="all", tree=None, base=None, series=None, patch=None, kconfig=None, defconfig="tinyconfig",
             accel="auto", selftests="all-relevant", extra_test=None, out=None, jobs=0, boot_timeout=None, quiet=False,
             expect=None, no_patches=False, kernel_arg=None, test_timeout=None, profile="debug"):
    """Maintainer check: baseline vs patched on every arch, expected flip, checkpatch, verdict, premerge.md."""
    from kpipe import workflows
    from kpipe.cli import reproducer
    args = dict(arch=arch, tree=tree, base=base, series=series, patch=patch, kconfig=kconfig, defconfig=defconfig,
                accel=accel, selftests=selftests, extra_test=extra_test, out=out, jobs=jobs, boot_timeout=boot_timeout,
                kernel_arg=kernel_arg, test_timeout=test_timeout, profile=profile)
    repro = reproducer("premerge", _resolved(args))
    _run("premerge", lambda: workflows.premerge(_opts(**args), repro).exit_code, args, quiet)


@task(auto_shortflags=False, iterable=ITER, help={**{k: COMMON_HELP[k] for k in VERIFY_KEYS},
                           "good": "a good revision", "bad": "a bad revision",
                           "build_failure_is_bad": "count build failures as bad instead of skip",
                           "series_mode": "bisect inside the patch series: which patch first breaks"})
def bisect(c, good=None, bad=None, arch=None, tree=None, series=None, patch=None, kconfig=None,
           defconfig="tinyconfig", accel="auto", expect=None, selftests="all-relevant", extra_test=None, out=None,
           jobs=0, boot_timeout=None, build_failure_is_bad=False, series_mode=False, quiet=False, base=None,
           no_patches=False, kernel_arg=None, test_timeout=None, profile="debug"):
    """Bisect in kpipe's own checkout: each step verifies incrementally; ends with the first bad commit."""
    from kpipe import workflows
    from kpipe.cli import reproducer
    args = dict(good=good, bad=bad, arch=arch, tree=tree, series=series, patch=patch, kconfig=kconfig,
                defconfig=defconfig, accel=accel, expect=expect, selftests=selftests, extra_test=extra_test, out=out,
                jobs=jobs, boot_timeout=boot_timeout, build_failure_is_bad=build_failure_is_bad,
                series_mode=series_mode, kernel_arg=kernel_arg, test_timeout=test_timeout, profile=profile)
    opt_args = {k: v for k, v in args.items() if k not in ("good", "bad", "build_failure_is_bad", "series_mode")}
    repro = reproducer("bisect", _resolved(args))
    _run("bisect", lambda: workflows.bisect(_opts(**opt_args, base=base), good, bad, build_failure_is_bad,
                                            series_mode, repro).exit_code, args, quiet)


@task(auto_shortflags=False, help={"arch": "x86_64, arm64 or all (default all)", "out": "where bench.json goes (default runs/<ts>-bench)",
            "quick": "skip the cold builds (warm, unchanged, premerge only)", "quiet": COMMON_HELP["quiet"]})
def bench(c, arch="all", out=None, quick=False, quiet=False):
    """Measure kpipe against raw make and raw qemu doing the same work; prints a table, writes bench.json."""
    from kpipe import bench as benchmod
    _run("bench", lambda: benchmod.run_bench(arch, out, quick), {"arch": arch, "out": out, "quick": quick}, quiet)


@task(auto_shortflags=False, help={"k": "only tests matching this pytest -k expression", "fast": "unit tests only (no kernels booted)"})
def test(c, k=None, fast=False):
    """Run the test suite (real git, real builds, real QEMU and SSH)."""
    import shlex
    cmd = ["python3", "-m", "pytest", "-ra"]
    if fast:
        cmd += ["-m", "not e2e"]
    if k:
        cmd += ["-k", k]
    c.run(shlex.join(cmd), pty=False)


@task(auto_shortflags=False, iterable=ITER, help={**{k: COMMON_HELP[k] for k in VERIFY_KEYS},
                           "run_local": "run each job here with lava-run and report as verify does",
                           "submit": "EXPERIMENTAL: submit each job to this LAVA server with lavacli "
                                     "(token: $LAVACLI_TOKEN or lavacli's config)",
                           "wait": "with --submit: wait for the jobs and collect their results"})
def lava(c, arch=None, tree=None, base=None, series=None, patch=None, no_patches=False, kconfig=None,
         defconfig="tinyconfig", accel="auto", expect=None, selftests="all-relevant", extra_test=None, out=None,
         jobs=0, boot_timeout=None, kernel_arg=None, test_timeout=None, quiet=False, profile="debug",
         run_local=False, submit=None, wait=False):
    """The same kernels and tests as LAVA v2 jobs (one per arch): write, --run-local with lava-run, or --submit."""
    from kpipe.cli import reproducer
    from kpipe.lava import workflow
    args = dict(arch=arch, tree=tree, base=base, series=series, patch=patch, no_patches=no_patches, kconfig=kconfig,
                defconfig=defconfig, accel=accel, expect=expect, selftests=selftests, extra_test=extra_test, out=out,
                jobs=jobs, boot_timeout=boot_timeout, kernel_arg=kernel_arg, test_timeout=test_timeout, profile=profile)
    extra = dict(run_local=run_local, submit=submit, wait=wait)
    repro = reproducer("lava", _resolved({**args, **extra}))
    _run("lava", lambda: workflow.lava(_opts(**args), run_local, submit, wait, repro).exit_code, {**args, **extra},
         quiet)
