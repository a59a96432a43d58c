"""Every option of kpipe's tasks, declared once: its name, type, default, help, whether it repeats, and the
environment variable and kpipe.yaml key that set it. The tasks' signatures, help and repeatable options
(kpipe.cli.task_from_options), the config's keys, defaults and listing (kpipe.cli.settings) and the reproducer's flags
(kpipe.cli.run) are all read from this table."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

REQUIRED: Any = inspect.Parameter.empty


@dataclass(frozen=True)
class OptionSpec:
    name: str
    type: type
    default: object
    help: str
    repeatable: bool = False
    env: str | None = None
    config_key: str | None = None
    config_default: object = None
    config_default_meaning: str | None = None

    @property
    def flag(self) -> str:
        return flag_of(self.name)


def flag_of(name: str) -> str:
    """The command line's spelling of option ``name`` (invoke's: underscores become dashes)."""
    return "--" + name.replace("_", "-")


def _setting(name: str, type_: type, default: object, help_: str, key: str, config_default: object = None,
             meaning: str | None = None, repeatable: bool = False) -> OptionSpec:
    return OptionSpec(name, type_, default, help_, repeatable, f"KPIPE_{key.upper()}", key, config_default, meaning)


_SPECS = (
    # the settings, in `kpipe config`'s order
    _setting("tree", str, None, "debian:5.10, debian:6.1, debian:6.12, or PATH of a kernel git tree (never modified); "
             "default: the kernel git tree you are in, else debian:5.10 (KPIPE_TREE, kpipe.yaml)", "tree",
             meaning="debian:5.10"),
    _setting("arch", str, None, "x86_64, arm64 or all (default: the host's arch; KPIPE_ARCH)", "arch",
             meaning="the host's arch"),
    _setting("profile", str, None, "debug (default: SLUB, SMP, KASAN, DEBUG_VM, lockdep, hang detectors) or fast "
             "(tinyconfig, 1 vCPU); see kconfigs/profiles.toml (KPIPE_PROFILE)", "profile", config_default="debug"),
    _setting("kconfig", list, None, "extra kconfig fragment on top of kconfigs/ (repeatable; KPIPE_KCONFIGS, "
             "comma-separated)", "kconfigs", meaning="none", repeatable=True),
    _setting("jobs", int, 0, "make -j (default: all cores; KPIPE_JOBS)", "jobs", config_default=0,
             meaning="all cores"),
    _setting("out", str, None, "output folder (default $KPIPE_RUNS/<timestamp>-<task>, with a `latest` link; "
             "$KPIPE_RUNS defaults to ~/.local/state/kpipe/runs)", "out",
             meaning="a new folder under the runs folder"),
    _setting("leak_scan", bool, True, "the debug profile's kmemleak scan after the tests (off: `leak_scan: no`, "
             "KPIPE_LEAK_SCAN=0)", "leak_scan", config_default=True),
    # the options every kernel task shares
    OptionSpec("base", str, None, "commit of --tree PATH to start from (default HEAD)"),
    OptionSpec("series", str, None, "series file listing patches in order (default patches/series)"),
    OptionSpec("patch", list, None, "a patch file (repeatable; replaces the series), or one mbox holding a whole "
               "series (git format-patch --stdout, b4 am; a cover letter is skipped and kept as the series title)",
               repeatable=True),
    OptionSpec("range", str, None, "A..B: the commits of B not in A in your --tree PATH as the series (--base defaults "
               "to A)"),
    OptionSpec("thread", str, None, "a mailing-list thread as the series, through b4 am: an mbox FILE (cover letter, "
               "revisions, replies), or a message-id/lore URL (needs network); the newest revision, the replies' "
               "trailers added"),
    OptionSpec("thread_revision", str, None, "with --thread: take revision N of the series instead of the newest"),
    OptionSpec("no_patches", bool, False, "apply no patches (baseline)"),
    OptionSpec("defconfig", str, "tinyconfig", "make target to start the config from (default tinyconfig)"),
    OptionSpec("accel", str, "auto", "auto (probe KVM with a timeout, else TCG), kvm or tcg"),
    OptionSpec("expect", str, None, "the suite's verifier policy, e.g. anon-only, anon+shmem or upstream for "
               "mremap-dontunmap (default: read from the tree's code and the series)"),
    OptionSpec("selftests", str, "all-relevant", "all-relevant (default), none, or a comma list of selftest names"),
    OptionSpec("extra_test", list, None, "a C file or static binary to push and run like a selftest (repeatable)",
               repeatable=True),
    OptionSpec("boot_timeout", str, None, "seconds to wait for the guest (default scaled for TCG)"),
    OptionSpec("quiet", bool, False, "no progress lines"),
    OptionSpec("kernel_arg", list, None, "append this to the guest kernel command line (repeatable), e.g. oops=panic",
               repeatable=True),
    OptionSpec("test_timeout", str, None, "seconds each test may run (the verifier, each selftest and extra test)"),
    OptionSpec("suite", str, None, "the suite of checks: a shipped name (mremap-dontunmap, ...) or the PATH of a suite "
               "folder; default: the shipped suite the series' touched files select (see suites/README.md)"),
    OptionSpec("case", list, None, "run only this verifier case (repeatable; a name or a glob such as 'plain-*'): a "
               "quick loop on one behaviour; the verdict covers only the cases run", repeatable=True),
    # one task's own options
    OptionSpec("cmd", str, None, "run this command in the guest and exit with its status"),
    OptionSpec("shell", bool, False, "interactive shell in the guest"),
    OptionSpec("bisect_exit_codes", bool, False, "map exit codes for `git bisect run` (0 good, 1 bad, 125 skip)"),
    OptionSpec("report", str, None, "mail: print report.txt (the robot's mail) on stdout at the end"),
    OptionSpec("no_warnings", bool, False, "skip the compile checks (W=1, sparse, clang warnings delta; "
               "bisectability)"),
    OptionSpec("allow_new_warnings", bool, False, "report new compiler/sparse warnings without failing"),
    OptionSpec("require_coverage", bool, False, "fail when a changed line ran in no test on any arch"),
    OptionSpec("lab", str, None, "boot and test both sides as LAVA jobs on this server (URL, token: $LAVACLI_TOKEN or "
               "lavacli's config), or `lab`: the local lab of `kpipe lab up`; all jobs are queued at once"),
    OptionSpec("tools", str, "gcc-W=1,sparse,clang", "comma-separated subset of gcc-W=1,sparse,clang (default all)"),
    OptionSpec("good", str, None, "a good revision (verified first: it must pass under the policy)"),
    OptionSpec("bad", str, None, "a bad revision (verified first: it must fail under the policy)"),
    OptionSpec("build_failure_is_bad", bool, False, "count build failures as bad instead of skip"),
    OptionSpec("series_mode", bool, False, "bisect inside the patch series: which patch first breaks"),
    OptionSpec("run_local", bool, False, "run each job here with lava-run and report as verify does"),
    OptionSpec("submit", str, None, "submit each job to this LAVA server with lavacli (token: $LAVACLI_TOKEN or "
               "lavacli's config), or to `lab`: the local lab of `kpipe lab up`"),
    OptionSpec("wait", bool, False, "with --submit: wait for the jobs and collect their results"),
    OptionSpec("quick", bool, False, "skip the cold builds (warm, unchanged, premerge only)"),
    OptionSpec("resume", str, None, "a stopped bench's folder: run only the steps whose rows its bench.json lacks"),
    OptionSpec("only", str, None, "just these step kinds, comma-separated (cold,newdir,warm,unchanged,all,premerge,"
               "lava)"),
    OptionSpec("older_than", str, None, "remove entries unused for longer than this (e.g. 14d, 12h, 2w)"),
    OptionSpec("keep_last", str, None, "keep only the N most recently used entries of each kind"),
    OptionSpec("max_size", str, None, "remove least recently used entries until the cache is under this size "
               "(e.g. 20G)"),
    OptionSpec("dry_run", bool, False, "show what would be removed; remove nothing"),
    OptionSpec("k", str, None, "only tests matching this pytest -k expression"),
    OptionSpec("fast", bool, False, "the fast tier only (builds, boots and downloads nothing; under 60 s)"),
    OptionSpec("no_lint", bool, False, "skip ruff and mypy (they run first otherwise)"),
    OptionSpec("action", str, REQUIRED, "up (install if needed, start; idempotent), down (stop what up started) or "
               "status"),
)
CONFIG_ONLY = frozenset({"leak_scan"})      # set by the config only; no task takes it
OPTIONS: dict[str, OptionSpec] = {s.name: s for s in _SPECS}

# the few options one task gives another default or help than the table's
TASK_VARIANTS: dict[tuple[str, str], OptionSpec] = {
    ("bench", "arch"): OptionSpec("arch", str, "all", "x86_64, arm64 or all (default all)"),
    ("bench", "out"): OptionSpec("out", str, None, "where bench.json goes (default under the runs folder)"),
    ("bench", "profile"): OptionSpec("profile", str, "debug", "debug (default), fast, or all (both, plus the "
                                     "debug/fast cost per phase)"),
    ("warnings", "allow_new_warnings"): OptionSpec("allow_new_warnings", bool, False,
                                                   "report new warnings without failing (exit 0)"),
}

SETTINGS: dict[str, OptionSpec] = {s.config_key: s for s in _SPECS if s.config_key}      # by kpipe.yaml key


def spec_for(task: str, name: str) -> OptionSpec:
    return TASK_VARIANTS.get((task, name)) or OPTIONS[name]


def unset(name: str, value: object) -> bool:
    """Whether ``value`` leaves option ``name`` to its default: nothing given, or a zero count (jobs)."""
    spec = OPTIONS.get(name)
    return value is None or value is False or value == () or value == [] or (
        spec is not None and spec.type is int and not value)
