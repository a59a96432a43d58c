"""The target tree's own selftests: pick the relevant ones, build them static per arch, run them one by one
in the guest, and keep every output verbatim plus a KTAP file wrapped the way the kselftest runner does.

  plan(tree, touched_files, choice, catalogue) -> [SelftestSpec]   (the catalogue is the suite's data)
  build_selftests(specs, arch, tree, headers, out_dir, log) -> [BuiltTest]
  build_extra_tests(files, arch, headers, out_dir, log)     -> [BuiltTest]   (--extra-test FILE)
  run_selftests(session, built, out_dir, suite)             -> [TestResult]

A test that fails to compile is an ERROR result, not a crash of the stage; a catalogue entry whose sources
the tree lacks is a SKIP result with the reason. Built binaries are cached by content key.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
import shutil
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import cache, proc
from ..build import toolchain
from ..guest.elf import read_elf
from ..errors import InfraError, KpipeError, UsageError
from ..guest.ssh import ChannelRefused
from .ktap import looks_like_ktap, parse_document
from ..progress import note
from ..report.results import Status, TestResult
from .suite import CatalogueEntry, KnownHang
from .suite import Selftests as Catalogue

if TYPE_CHECKING:
    from ..arches import Arch
    from ..guest.ssh import CommandResult

SELFTESTS = "tools/testing/selftests"

# kselftest exit codes (tools/testing/selftests/kselftest.h)
KSFT_PASS, KSFT_FAIL, KSFT_XFAIL, KSFT_XPASS, KSFT_SKIP = 0, 1, 2, 3, 4

# ---------------------------------------------------------------------------------------------------------
# The catalogue (the suite's selftests.toml): which of the tree's own selftests are relevant, with their
# arguments and timeouts.
# How they are built is the tree's business: each is a target of its collection's Makefile
# (tools/testing/selftests/<collection>/Makefile), built static, out of tree (OUTPUT=), cross for arm64.
# Each entry's variants are tried in order; the first whose collection has <target>.c and whose Makefile names
# the target is used ("{mm}" is the tree's vm/ or mm/ folder: renamed in 6.2; the userfaultfd stress test was
# vm/userfaultfd, now mm/uffd-stress). ``needs``: kconfig symbols without which the test cannot run.
# ``known_hang``: a bug of the test itself (user space) that can make it sleep forever on a correct kernel, found
# in the tree's source (``file`` has no ``fixed_by``): a timeout on which the kernel reports nothing (no hung or
# blocked task, no lockup, even when asked with SysRq) is retried, up to ``tries`` runs, and the result says so.
# ``stalled_after``: the hang is a sleep, so the test's process group (almost) stops using CPU time; a guest-side
# watchdog ends the run after that many seconds under 0.5 % of a CPU (as a timeout: the kernel is asked, the test
# retried) instead of waiting out the test's whole timeout. ``fix``: kpipe's own fix of the test (a patch), applied
# to a private copy of its collection, from which the test is built (_fixed_copy); its result says so.
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SelftestSpec:
    name: str                      # unique run name: userfaultfd-shmem
    sources: tuple[str, ...]       # relative to the tree (or absolute for --extra-test files)
    cflags: tuple[str, ...] = ()
    ldlibs: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    timeout: float = 120.0
    display: str = ""              # what runs: "vm/userfaultfd shmem 16 4"
    collection: str = "vm"         # the kselftest collection in the KTAP header: vm | mm | memfd | extra
    skip: str = ""                 # non-empty: not runnable here, the reason (sources absent)
    binary_name: str = ""          # file name of the binary (shared by runs of one binary)
    needs: tuple[str, ...] = ()    # kconfig symbols (no CONFIG_) the test cannot run without
    why: str = ""                  # why it was chosen (the suite's map, the tree's MAINTAINERS, --selftests)
    known_hang: str = ""           # a user-space hang of this tree's test on a correct kernel (why), see the catalogue
    tries: int = 1                 # runs allowed when a timeout is that known hang
    stalled_after: int = 0         # >0: end a run whose process group was idle (< 0.5 % CPU) for this many seconds
    fix: str = ""                  # kpipe's fix of that hang (a patch): the test is built from a fixed copy


@dataclass(frozen=True)
class BuiltTest:
    spec: SelftestSpec
    binary: Path | None
    error: str = ""                # compiler lines when the build failed
    seconds: float = 0.0
    cached: bool = False
    note: str = ""                 # how it was built when not from the tree as it is (kpipe's fix), for its result


# ------------------------------------------------------------------------------------------------ plan

def find_selftest_dir(tree: Path) -> Path:
    base = Path(tree) / SELFTESTS
    for name in ("mm", "vm"):
        if (base / name).is_dir():
            return base / name
    raise UsageError(f"{tree} has neither {SELFTESTS}/mm nor {SELFTESTS}/vm",
                     fix="point kpipe at a full kernel source tree, or run with --selftests none")


def catalogue_names(cat: Catalogue) -> list[str]:
    return cat.names()


def _makefile_builds(coll_dir: Path, binary: str) -> bool:
    try:
        text = (coll_dir / "Makefile").read_text(errors="replace")
    except OSError:
        return False
    return re.search(rf"(?<![\w-]){re.escape(binary)}(?![\w-])", text) is not None


def _spec_for(entry: CatalogueEntry, tree: Path, mmdir: str) -> SelftestSpec:
    base = Path(tree) / SELFTESTS
    tried = []
    for v in entry["variants"]:
        target = v["target"].replace("{mm}", mmdir)
        collection, binary = target.split("/", 1)
        tried.append(f"{target}.c")
        if not (base / f"{target}.c").is_file() or not _makefile_builds(base / collection, binary):
            continue
        args = tuple(v.get("args", ()))
        hang = _known_hang(base, v.get("known_hang"))
        return SelftestSpec(name=entry["name"], sources=(f"{SELFTESTS}/{target}.c",), args=args,
                            timeout=float(entry["timeout"]), display=" ".join([target, *args]),
                            collection=collection, binary_name=binary, needs=tuple(entry.get("needs", ())),
                            known_hang=hang["why"] if hang else "", tries=hang["tries"] if hang else 1,
                            stalled_after=hang.get("stalled_after", 0) if hang else 0,
                            fix=hang.get("fix", "") if hang else "")
    return SelftestSpec(name=entry["name"], sources=(), timeout=float(entry["timeout"]), collection=mmdir,
                        display=entry["name"],
                        skip=f"not in this tree (looked for {' and '.join(tried)} under {SELFTESTS}, built by "
                             f"its collection's Makefile)")


def _known_hang(base: Path, hang: KnownHang | None) -> KnownHang | None:
    """The catalogue's known test bug, when this tree's test source still has it."""
    if not hang:
        return None
    src = base / hang["file"]
    try:
        text = src.read_text(errors="replace")
    except OSError:
        return None
    return None if hang["fixed_by"] in text else hang


def _relevance(touched_files: list[str], cat: Catalogue) -> dict[str, list[str]]:
    """the suite's map: catalogue name -> why (the touched file and the pattern that made it relevant)."""
    why: dict[str, list[str]] = {}
    for f in touched_files:
        f = f.removeprefix("./")
        for pattern, names in cat.relevance:
            if fnmatch.fnmatch(f, pattern):
                for n in names:
                    why.setdefault(n, []).append(f"the suite's map: {f} ({pattern})")
        if f.startswith(SELFTESTS + "/"):
            stem = Path(f).stem
            for e in cat.catalogue:
                if any(v["target"].rsplit("/", 1)[1] == stem for v in e["variants"]):
                    why.setdefault(e["name"], []).append(f"the series changes its source {f}")
    return why


def _maintainers_choice(tree: Path, touched_files: list[str], mmdir: str, cat: Catalogue
                        ) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """The tree's MAINTAINERS: sections covering a touched file that list selftest paths. Returns catalogue
    name -> why, and the collections such sections name that the suite's catalogue has no tests of."""
    from ..source import maintainers
    sections = maintainers.load(tree)
    why: dict[str, list[str]] = {}
    uncovered: dict[str, list[str]] = {}
    for f in touched_files:
        for sec in maintainers.sections_for(sections, f.removeprefix("./")):
            for pat in sec.selftest_patterns:
                rest = pat[len(maintainers.SELFTESTS):]
                if "/" not in rest.rstrip("/") and not rest.strip("/"):
                    continue            # the whole selftests tree (the framework's own section)
                reason = f"MAINTAINERS {sec.title!r} covers {f} and lists {pat}"
                hit = False
                for e in cat.catalogue:
                    for v in e["variants"]:
                        src = f"{maintainers.SELFTESTS}{v['target'].replace('{mm}', mmdir)}.c"
                        if maintainers.matches(pat, src) and (Path(tree) / src).is_file():
                            why.setdefault(e["name"], []).append(reason)
                            hit = True
                if not hit:
                    uncovered.setdefault(pat, []).append(reason)
    return why, [{"collection": pat[len(maintainers.SELFTESTS):].split("/")[0], "why": w, "tests": [],
                  "note": f"the suite's catalogue has no test matching {pat}: not run"} for pat, w in uncovered.items()]


def relevant_names(touched_files: list[str], cat: Catalogue) -> list[str]:
    """Catalogue names relevant to the touched files by the suite's map (in catalogue order); the suite's
    default set when none map."""
    wanted = set(_relevance(touched_files, cat)) or set(cat.default_set)
    return [n for n in catalogue_names(cat) if n in wanted]


def choose(tree: Path, touched_files: list[str], mmdir: str, cat: Catalogue
           ) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """``all-relevant``: catalogue name -> why, from the suite's map and the tree's MAINTAINERS; plus the
    collections MAINTAINERS names that kpipe cannot run (reported, never silently dropped)."""
    why = _relevance(touched_files, cat)
    m_why, uncovered = _maintainers_choice(tree, touched_files, mmdir, cat)
    for n, w in m_why.items():
        why.setdefault(n, []).extend(w)
    if not why:
        why = {n: ["no file of the series maps to a selftest: the suite's default set"] for n in cat.default_set}
    return {n: "; ".join(dict.fromkeys(why[n])) for n in catalogue_names(cat) if n in why}, uncovered


def check_choice(choice: str, cat: Catalogue) -> list[str]:
    """The names a ``--selftests a,b,c`` choice asks for; UsageError for a name the suite's catalogue does not know
    (the same on every tree and commit). all-relevant and none ask for no name."""
    choice = (choice or "all-relevant").strip()
    if choice in ("all-relevant", "none"):
        return []
    names = [n.strip() for n in choice.split(",") if n.strip()]
    unknown = [n for n in names if n not in catalogue_names(cat)]
    if unknown or not names:
        raise UsageError(f"unknown selftest name(s) in --selftests {choice!r}: {', '.join(unknown) or '(empty)'}",
                         fix="use all-relevant, none, or a comma list of: " + ", ".join(catalogue_names(cat)))
    return names


def plan(tree: Path, touched_files: list[str], choice: str, cat: Catalogue) -> list[SelftestSpec]:
    """The selftests to run: ``all-relevant`` (from the touched files: the suite's map and the tree's MAINTAINERS),
    ``none``, or ``a,b,c``. Each spec says why it was chosen."""
    tree = Path(tree)
    choice = (choice or "all-relevant").strip()
    if choice == "none":
        return []
    mmdir = find_selftest_dir(tree).name
    if choice == "all-relevant":
        why, _ = choose(tree, touched_files, mmdir, cat)
    else:
        why = {n: "asked for with --selftests" for n in check_choice(choice, cat)}
    by_name = {e["name"]: e for e in cat.catalogue}
    return [replace(_spec_for(by_name[n], tree, mmdir), why=w) for n, w in why.items()]


def selection_report(tree: Path, touched_files: list[str], specs: list[SelftestSpec], cat: Catalogue
                     ) -> list[dict[str, Any]]:
    """Per collection: which tests run and why each was chosen; collections the tree's MAINTAINERS names for
    the series that kpipe has no tests of are listed too (for the reports)."""
    out: dict[str, dict[str, Any]] = {}
    for s in specs:
        c = out.setdefault(s.collection, {"collection": s.collection, "tests": [], "why": [], "note": ""})
        c["tests"].append(s.name)
        if s.why and s.why not in c["why"]:
            c["why"].append(s.why)
    try:
        mmdir = find_selftest_dir(tree).name
    except UsageError:
        return list(out.values())
    _, uncovered = _maintainers_choice(Path(tree), touched_files, mmdir, cat)
    return list(out.values()) + uncovered


def collection_configs(tree: Path, specs: list[SelftestSpec]) -> tuple[Path, ...]:
    """The kconfig fragments the chosen tests' collections ship (tools/testing/selftests/<collection>/config):
    merged into the kernel's configuration as an optional layer."""
    out = []
    for c in dict.fromkeys(s.collection for s in specs if not s.skip):
        p = Path(tree) / SELFTESTS / c / "config"
        if p.is_file():
            out.append(p)
    return tuple(out)


def skip_unconfigured(specs: list[SelftestSpec], dotconfig: dict[str, str],
                      reasons: dict[str, str]) -> list[SelftestSpec]:
    """A test whose ``needs`` the built kernel lacks is skipped with the option and why it is not set (from the
    configuration report when kpipe asked for it), never run to fail or silently dropped."""
    out = []
    for s in specs:
        unmet = [n for n in s.needs if dotconfig.get(n, "n") not in ("y", "m")]
        if s.skip or not unmet:
            out.append(s)
            continue
        why = "; ".join(f"CONFIG_{n} is not set in the built kernel" + (f" ({reasons[n]})" if n in reasons else "")
                        for n in unmet)
        out.append(replace(s, skip=f"needs {why}"))
    return out


# ----------------------------------------------------------------------------------------------- build

def _tree_fingerprint(root: Path, content: bool = False) -> str:
    """The identity of a folder: every file's relative path with its size and mtime (cheap: a headers folder
    written once), or with its bytes (``content``: sources that may be edited in place)."""
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = Path(dirpath, f)
            if content:
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
            else:
                st = p.stat()
                h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def _local_inputs(sources: list[Path], include_dirs: list[Path]) -> list[Path]:
    """The sources and every ``#include "..."`` file they reach (kselftest.h, vm_util.h, mm/gup_test.h)."""
    seen: dict[Path, None] = {}
    todo = [s.resolve() for s in sources]
    while todo:
        f = todo.pop(0)
        if f in seen or not f.is_file():
            continue
        seen[f] = None
        for name in _INCLUDE.findall(f.read_text(errors="replace")):
            for d in [f.parent, *include_dirs]:
                cand = (d / name).resolve()
                if cand.is_file():
                    todo.append(cand)
                    break
    return list(seen)


def _inputs_digest(sources: list[Path], cflags: tuple[str, ...]) -> str:
    dirs = [Path(c[2:]) for c in cflags if c.startswith("-I") and len(c) > 2]
    h = hashlib.sha256()
    for p in _local_inputs(sources, dirs):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _compile(spec: SelftestSpec, cc: str, sources: list[Path], headers: Path, out_dir: Path,
             log: Path) -> BuiltTest:
    """Compile one --extra-test C file (or take it from the cache) into out_dir/<binary_name>. The tree's own
    selftests are built by their Makefiles (build_selftests)."""
    start = time.monotonic()
    hdr = Path(headers) / "include"
    if not hdr.is_dir():
        raise InfraError(f"installed uapi headers not found: {hdr} is missing",
                         fix="build the kernel first (its headers_install output is the headers folder)")
    # the kernel's installed uapi headers come first, as KHDR_INCLUDES does in the selftests' lib.mk
    argv_tail = ["-static", "-Wall", "-isystem", str(hdr), *spec.cflags]
    flags_key = [c for c in argv_tail if c != str(hdr)]
    key = cache.key_of("selftest-bin", toolchain.compiler(cc).ident, flags_key, spec.ldlibs,
                       _inputs_digest(sources, spec.cflags), [s.name for s in sources], _tree_fingerprint(hdr))
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / spec.binary_name
    entry = cache.cache_dir("selftests") / key

    def make(tmp: Path) -> dict[str, Any]:
        cmd = [cc, *argv_tail, *map(str, sources), "-o", str(tmp / "bin"), *spec.ldlibs]
        cp = proc.run(cmd, cwd=sources[0].parent, timeout=600, check=False, what=cc)
        out = (cp.stdout or "") + (cp.stderr or "")
        with open(log, "a") as fh:
            fh.write(f"\n$ {shlex.join(cmd)}\n{out}")
            if cp.returncode:
                fh.write(f"[exit {cp.returncode}]\n")
        if cp.returncode != 0:
            lines = out.strip().splitlines()
            raise _CompileFailed("\n".join([f"{cc} failed with exit {cp.returncode}: {shlex.join(cmd)}",
                                            *lines[-40:]]))
        return {"name": spec.binary_name, "cmd": cmd}

    _, cached = cache.cached_entry(entry, cache.cache_dir("selftests") / f"{key}.lock", "selftest build", make,
                                   deep=False)
    if dest.exists():
        dest.unlink()
    try:
        os.link(entry / "bin", dest)
    except OSError:
        shutil.copy2(entry / "bin", dest)
    dest.chmod(0o755)
    if cached:
        with open(log, "a") as fh:
            fh.write(f"\n# {spec.binary_name}: cached ({entry})\n")
    return BuiltTest(spec, dest, "", round(time.monotonic() - start, 3), cached)


class _CompileFailed(Exception):
    pass


MAKE_RECIPE = "selftest-make-1"
# What a collection's build reads besides its own folder (lib.mk, kselftest*.h, tools/include; 5.10's memfd
# Makefile even adds the kernel's include/): their git tree ids key the cache, so an edit there rebuilds.
_MAKE_INPUTS = (SELFTESTS, "tools/include", "include", "usr", "scripts/Kbuild.include")


def _source_ids(tree: Path) -> list[str]:
    """Git tree ids of what the selftest Makefiles read (instant in kpipe's scratch worktree, where every patch
    is a commit); outside git, a digest of the selftests folder's files."""
    out = []
    for rel in _MAKE_INPUTS:
        cp = proc.run(["git", "-C", str(tree), "rev-parse", "-q", "--verify", f"HEAD:{rel}"], check=False,
                      timeout=30, what="git rev-parse")
        if cp.returncode != 0 and rel == SELFTESTS:
            return [_tree_fingerprint(Path(tree) / SELFTESTS, content=True)]
        out.append(f"{rel}={cp.stdout.strip() if cp.returncode == 0 else '-'}")
    dirty = proc.run(["git", "-C", str(tree), "status", "--porcelain", "--", *_MAKE_INPUTS[:2]], check=False,
                     timeout=60, what="git status").stdout.strip()
    if dirty:
        out.append(_tree_fingerprint(Path(tree) / SELFTESTS, content=True))
    return out


def make_command(arch: Arch, tree: Path, collection: str, headers: Path, output: Path, binaries: list[str],
                 jobs: int) -> list[str]:
    """The tree's own selftest build for some targets of one collection: static, out of tree, cross for arch."""
    hdr = Path(headers) / "include"
    return ["make", "-C", str(Path(tree) / SELFTESTS / collection), "-k", f"-j{jobs}",
            f"ARCH={arch.kernel_arch}", f"MACHINE={arch.name}", f"CROSS_COMPILE={arch.cross_compile}",
            f"CC={arch.cc}", "LDFLAGS=-static", f"OUTPUT={output}",
            f"KHDR_INCLUDES=-isystem {hdr}", f"EXTRA_CFLAGS=-isystem {hdr}",
            *[f"{output}/{b}" for b in binaries]]


def _fixed_copy(tree: Path, collection: str, fix: str, where: Path, log: Path) -> tuple[Path, str]:
    """A private copy of the tree's selftests with ``fix`` applied to ``collection``: the top folder's own files
    (lib.mk, kselftest headers) and the collection, nothing else of the tree, which is never touched. Returns the
    copy's root (the tree to build from) and, for the test's result, how it was built: from the fixed copy, or,
    when the fix does not apply, from the tree itself as it is, and why."""
    top = Path(tree) / SELFTESTS
    dest = where / SELFTESTS
    dest.mkdir(parents=True)
    for f in top.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
    shutil.copytree(top / collection, dest / collection, symlinks=True)
    cp = proc.run(["git", "apply", "--verbose", fix], cwd=where, timeout=60, check=False, what="git apply (fix)")
    with open(log, "a") as fh:
        fh.write(f"\n$ (in a copy of {top}) git apply {fix}\n{cp.stdout or ''}{cp.stderr or ''}")
    if cp.returncode != 0:
        why = ((cp.stderr or cp.stdout or "").strip().splitlines() or ["git apply failed"])[-1]
        return Path(tree), f"kpipe's fix {Path(fix).name} did not apply to this tree's test ({why}): built as it is"
    return where, (f"built from a copy of the tree's source with kpipe's fix of its known hang applied "
                   f"({Path(fix).name})")


def _build_collection(arch: Arch, tree: Path, collection: str, binaries: list[str], headers: Path,
                      log: Path, fix: str = "") -> tuple[Path, dict[str, str], bool, str]:
    """Build ``binaries`` of ``collection`` (cached by content), from a private copy with ``fix`` applied when
    one is given; returns the cache entry, {binary: compiler error lines} for those that failed, whether it came
    from the cache, and how the fix went (a note for the results)."""
    import contextlib
    import tempfile

    hdr = Path(headers) / "include"
    if not hdr.is_dir():
        raise InfraError(f"installed uapi headers not found: {hdr} is missing",
                         fix="build the kernel first (its headers_install output is the headers folder)")
    key = cache.key_of(MAKE_RECIPE, toolchain.compiler(arch.cc).ident, arch.name, collection, sorted(binaries),
                       _tree_fingerprint(hdr), _source_ids(tree),
                       hashlib.sha256(Path(fix).read_bytes()).hexdigest() if fix else "")
    entry = cache.cache_dir("selftests") / key

    def make(tmp: Path) -> dict[str, Any]:
        with contextlib.ExitStack() as stack:
            src, fix_note = Path(tree), ""
            if fix:
                copy = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kpipe-selftest-fix-")))
                src, fix_note = _fixed_copy(tree, collection, fix, copy, log)
            cmd = make_command(arch, src, collection, headers, tmp, binaries, os.cpu_count() or 1)
            cp = proc.run(cmd, timeout=900, check=False, what="make (selftests)")
        out = (cp.stdout or "") + (cp.stderr or "")
        with open(log, "a") as fh:
            fh.write(f"\n$ {shlex.join(cmd)}\n{out}" + (f"[exit {cp.returncode}]\n" if cp.returncode else ""))
        failed = {}
        for b in binaries:
            if not (tmp / b).is_file():
                lines = out.strip().splitlines()
                failed[b] = "\n".join([f"the {collection} Makefile did not build {b} (make exit {cp.returncode}): "
                                       f"{shlex.join(cmd)}", *lines[-40:]])
        for junk in [p for p in tmp.iterdir() if p.name not in binaries]:    # objects, helper outputs
            shutil.rmtree(junk) if junk.is_dir() else junk.unlink()
        return {"collection": collection, "cmd": cmd, "failed": failed, "fix": fix_note}

    meta, cached = cache.cached_entry(entry, cache.cache_dir("selftests") / f"{key}.lock",
                                      f"selftest build ({collection})", make, deep=False)
    return entry, meta.get("failed", {}), cached, meta.get("fix", "")


def build_selftests(specs: list[SelftestSpec], arch: Arch, tree: Path, headers: Path, out_dir: Path,
                    log: Path) -> list[BuiltTest]:
    """Build every spec with its collection's own Makefile, static for ``arch`` (one make per collection); a
    target the Makefile could not build becomes BuiltTest(binary=None, error=the compiler's lines)."""
    out_dir = Path(out_dir)
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    # one make per collection, and one more for the binaries built from a fixed copy (kpipe's fix of a known hang)
    wanted: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        if not spec.skip and spec.binary_name not in wanted.setdefault((spec.collection, spec.fix), []):
            wanted[(spec.collection, spec.fix)].append(spec.binary_name)
    made: dict[tuple[str, str], BuiltTest] = {}
    for (collection, fix), binaries in wanted.items():
        start = time.monotonic()
        entry, failed, cached, fix_note = _build_collection(arch, Path(tree), collection, binaries, headers, log,
                                                            fix)
        secs = round(time.monotonic() - start, 3)
        if cached:
            with open(log, "a") as fh:
                fh.write(f"\n# {collection}: {', '.join(binaries)} cached ({entry})\n")
        for b in binaries:
            if b in failed:
                made[(collection, b)] = BuiltTest(SelftestSpec(b, ()), None, failed[b], secs, cached)
                continue
            dest = out_dir / b
            dest.unlink(missing_ok=True)
            try:
                os.link(entry / b, dest)
            except OSError:
                shutil.copy2(entry / b, dest)
            dest.chmod(0o755)
            made[(collection, b)] = BuiltTest(SelftestSpec(b, ()), dest, "", secs, cached, fix_note)
    built = []
    for spec in specs:
        if spec.skip:
            built.append(BuiltTest(spec, None, ""))
            continue
        m = made[(spec.collection, spec.binary_name)]
        built.append(BuiltTest(spec, m.binary, m.error, m.seconds, m.cached, m.note))
    return built


# --------------------------------------------------------------------------------------- --extra-test

def check_static_binary(path: Path, arch: Arch) -> None:
    """UsageError unless ``path`` is a static executable for ``arch``."""
    info = read_elf(path)
    if info is None:
        raise UsageError(f"--extra-test {path}: not a C file (.c) and not an ELF executable",
                         fix="pass a .c source or a static binary built for the target arch")
    want = arch.elf_machine
    if want is not None and info.machine != want:
        raise UsageError(f"--extra-test {path}: built for ELF machine {info.machine}, but {arch.name} needs "
                         f"{want}", fix=f"rebuild it with {arch.cc} -static, or pass the .c source instead")
    if info.kind not in (2, 3):
        raise UsageError(f"--extra-test {path}: ELF type {info.kind} is not an executable",
                         fix="pass a linked static executable (gcc -static), not an object file")
    if info.interpreter:
        raise UsageError(f"--extra-test {path}: dynamically linked (interpreter {info.interpreter})",
                         fix=f"rebuild it with {arch.cc} -static; the guest has no matching shared libraries")


def build_extra_tests(files: list[Path], arch: Arch, headers: Path, out_dir: Path, log: Path) -> list[BuiltTest]:
    """--extra-test FILE: a .c file is built static for ``arch``; a binary must be a static ``arch`` ELF."""
    out_dir = Path(out_dir)
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    built: list[BuiltTest] = []
    names: set[str] = set()
    for f in files:
        f = Path(f)
        if not f.is_file():
            raise UsageError(f"--extra-test {f}: no such file", fix="give the path of a .c file or a static binary")
        name = f.stem if f.suffix == ".c" else f.name
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.add(name)
        spec = SelftestSpec(name=name, sources=(str(f.resolve()),), timeout=300.0, display=f"extra/{f.name}",
                            collection="extra", binary_name=name,
                            cflags=("-O2",) if f.suffix == ".c" else (),
                            ldlibs=("-lpthread", "-lrt") if f.suffix == ".c" else ())
        if f.suffix == ".c":
            try:
                built.append(_compile(spec, arch.cc, [f.resolve()], headers, out_dir, log))
            except _CompileFailed as e:
                built.append(BuiltTest(spec, None, str(e)))
        else:
            check_static_binary(f, arch)
            out_dir.mkdir(parents=True, exist_ok=True)
            dest = out_dir / name
            shutil.copy2(f, dest)
            dest.chmod(0o755)
            built.append(BuiltTest(spec, dest, ""))
    return built


# ------------------------------------------------------------------------------------------------- run

REMOTE_DIR = "/tmp/kpipe-tests"


class Session(Protocol):
    """What the tests need of a guest session: kpipe.guest.ssh.GuestSession (tests: a host-side stand-in)."""

    def put(self, local: Path, remote: str, mode: int = ...) -> None: ...

    def run(self, argv: list[str], timeout: float) -> CommandResult: ...


@dataclass
class _Run:
    status: Status
    observed: str
    directive: str = ""            # for the KTAP line: "SKIP", "TIMEOUT 60 seconds", "exit=1", ...
    details: list[str] = field(default_factory=list)


def status_from_exit(exit_status: int | None, timed_out: bool, timeout: float) -> _Run:
    """kselftest exit codes -> status (0 pass, 1 fail, 2 xfail, 3 xpass = fail, 4 skip; others fail)."""
    if timed_out:
        return _Run(Status.FAIL, f"timeout after {timeout:g} s", f"TIMEOUT {timeout:g} seconds",
                    [f"# TIMEOUT: killed after {timeout:g} s"])
    if exit_status is None or exit_status < 0:
        return _Run(Status.FAIL, "killed by a signal (no exit status)", "exit=signal",
                    ["the test died without an exit status (killed by a signal?)"])
    if exit_status == KSFT_PASS:
        return _Run(Status.PASS, "exit 0")
    if exit_status == KSFT_SKIP:
        return _Run(Status.SKIP, "exit 4 (skip)", "SKIP")
    if exit_status == KSFT_XFAIL:
        return _Run(Status.XFAIL, "exit 2 (xfail)", "XFAIL")
    if exit_status == KSFT_XPASS:
        return _Run(Status.FAIL, "exit 3 (xpass)", "exit=3", ["unexpected pass (XPASS) counts as a failure"])
    extra = [f"exit {exit_status}: crashed? (killed by signal {exit_status - 128}, {_signal_name(exit_status - 128)})"
             ] if exit_status > 128 else []
    return _Run(Status.FAIL, f"exit {exit_status}", f"exit={exit_status}", extra)


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"SIG{n}"


def _tail(text: str, n: int) -> list[str]:
    return [ln for ln in text.rstrip().splitlines()[-n:]]


def _result(built: BuiltTest, out_dir: Path, suite: str, rel_to: Path, output: str | None, run: _Run,
            seconds: float) -> tuple[TestResult, _Run]:
    spec = built.spec
    rel = ""
    subtests: tuple[TestResult, ...] = ()
    details = list(run.details)
    if output is not None:
        logf = out_dir / suite / f"{spec.name}.log"
        rel = os.path.relpath(logf, rel_to)
        if looks_like_ktap(output):
            doc = parse_document(output, suite)
            subtests = tuple(doc.tests)
            bad = [t for t in doc.tests if t.status.bad]
            if bad and not run.status.bad:
                names = ", ".join(t.name for t in bad[:5]) + (" ..." if len(bad) > 5 else "")
                details.insert(0, f"{run.observed} but {len(bad)} KTAP subtest(s) failed: {names}")
                run = _Run(Status.FAIL, run.observed, run.directive or "subtests failed", details)
            details += [f"KTAP: {p}" for p in doc.problems]
        if run.status.bad or run.status == Status.SKIP:
            details += ["--- last lines of the output ---", *_tail(output, 15 if run.status.bad else 4)]
    if built.note:
        details.insert(0, built.note)
    return TestResult(suite=suite, name=spec.name, status=run.status, expected="exit 0", observed=run.observed,
                      detail="\n".join(details), seconds=round(seconds, 3), output=rel, subtests=subtests), run


def run_selftests(session: Session, built: list[BuiltTest], out_dir: Path, suite: str = "selftests",
                  rel_to: Path | None = None, remote_dir: str = REMOTE_DIR, parallel: int = 1) -> list[TestResult]:
    """Push and run the tests in the guest: the tree's own up to ``parallel`` side by side (the guest's vCPUs: each
    is its own process tree, and none reads system-wide state another changes), --extra-test ones one by one
    after them; write out_dir/<suite>/<name>.log
    and out_dir/<suite>.ktap, both in catalogue order. ``TestResult.output`` is relative to ``rel_to``.

    If the session dies mid-way (guest crashed, SSH lost), the tests that were running and all later ones are
    ERROR results, the logs and the KTAP file are still written, and then the session's error is raised
    again (an InfraError; ``qemu.boot`` turns it into a KernelError when the console shows a panic) with
    the results so far in its ``partial_results`` attribute."""
    import concurrent.futures

    out_dir = Path(out_dir)
    rel_to = Path(rel_to) if rel_to else out_dir
    tr = _TestRun(session, out_dir, suite, rel_to, remote_dir)
    if built:
        tr.make_remote_dir()

    # The tree's own tests are known to be independent processes: side by side. --extra-test files are the
    # user's: nothing says one does not look at what another leaves running, so they run one by one, after.
    own = [b for b in built if b.spec.collection != "extra"]
    extra = [b for b in built if b.spec.collection == "extra"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel),
                                               thread_name_prefix="selftest") as pool:
        done = dict(zip(map(id, own), pool.map(tr.one, own)))
    done.update({id(b): tr.one(b) for b in extra})
    outcomes = [done[id(b)] for b in built]
    results = [r for r, _, _ in outcomes]
    write_ktap(out_dir / f"{suite}.ktap", [(b, run, out) for b, (_, run, out) in zip(built, outcomes)])
    error = tr.error
    if error is not None:
        # read back with getattr by runner.boot_and_run_tests; KpipeError does not declare it (kpipe/errors.py)
        error.partial_results = results
        raise error
    return results


class _TestRun:
    """One run_selftests call: where the tests go and what is shared between the tests running side by side
    (the binaries pushed so far, the retry notes, whether the session was lost)."""

    def __init__(self, session: Session, out_dir: Path, suite: str, rel_to: Path, remote_dir: str) -> None:
        import threading

        self.session = session
        self.out_dir = out_dir
        self.suite = suite
        self.rel_to = rel_to
        self.remote_dir = remote_dir
        self.logdir = out_dir / suite
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.lost = ""                           # non-empty: the session failed, why (later tests are not run)
        self.error: KpipeError | None = None     # the session's error, raised again after the results are written
        self.retried: list[str] = []
        self.push_lock = threading.Lock()
        self.pushed: dict[Path, str] = {}

    def make_remote_dir(self) -> None:
        try:
            self.session.run(["mkdir", "-p", self.remote_dir], 30)
        except (KpipeError, OSError, EOFError) as e:
            err = _as_kpipe_error(e, "before the tests")
            self.error = err
            self.lost = f"guest session failed before the tests: {err.message}"

    def one(self, b: BuiltTest) -> tuple[TestResult, _Run, str]:
        """One test: its result, its run (for the KTAP line) and its output."""
        spec = b.spec
        not_run = self._not_run(b)
        if not_run is not None:
            return not_run
        assert b.binary is not None                  # _not_run answered for a failed build
        remote = f"{self.remote_dir}/{b.binary.name}"
        start = time.monotonic()
        pidfile = f"{self.remote_dir}/{spec.name}.pid"
        try:
            self._push(b.binary, remote)
            script = _test_script(self.remote_dir, pidfile, b.binary.name, spec.args, spec.stalled_after)
            cr, runs = self._run_with_retries(spec, script, pidfile)
        except (KpipeError, OSError, EOFError) as e:
            return self._session_lost(spec, e, start)
        return self._to_results(b, cr, runs, pidfile, start)

    def _not_run(self, b: BuiltTest) -> tuple[TestResult, _Run, str] | None:
        """The outcome of a test that is not run: the session is lost, it is not in this tree, or its build
        failed (None: run it)."""
        spec, suite = b.spec, self.suite
        if self.lost:
            return (TestResult(suite, spec.name, Status.ERROR, "exit 0", "not run", self.lost),
                    _Run(Status.ERROR, "not run", "error not run", [self.lost]), "")
        if spec.skip:
            return (TestResult(suite, spec.name, Status.SKIP, "exit 0", "not in this tree", spec.skip),
                    _Run(Status.SKIP, "not built", f"SKIP {spec.skip}", [spec.skip]), "")
        if b.binary is None:
            return (TestResult(suite, spec.name, Status.ERROR, "exit 0", "build failed", b.error),
                    _Run(Status.ERROR, "build failed", "error build failed", [b.error]), b.error)
        return None

    def _push(self, binary: Path, remote: str) -> None:
        """Copy the binary into the guest, once per binary whichever tests share it."""
        with self.push_lock:
            if binary not in self.pushed:
                self.session.put(binary, remote, 0o755)
                self.pushed[binary] = remote

    def _run_with_retries(self, spec: SelftestSpec, script: str, pidfile: str) -> tuple[CommandResult, int]:
        """The test's runs: the first, and again while it timed out in its known hang (up to spec.tries runs)
        and the kernel, asked with SysRq, reported nothing; the last run's result and the number of runs."""
        session = self.session
        cr = _run_once(session, spec, script, pidfile, self.retried)
        runs = 1
        while cr.timed_out and runs < spec.tries and spec.known_hang and not _kernel_reported(session):
            self._keep_hang(spec, pidfile, f"{spec.name}.run{runs}.hang")
            _kill_remote(session, pidfile)
            (self.logdir / f"{spec.name}.run{runs}.log").write_text(_output(cr))
            self.retried.append(f"{spec.name}: run {runs} of {spec.tries} {_hung_how(spec, cr)} and "
                                f"the kernel reported nothing (no hung or blocked task, no lockup, asked with "
                                f"SysRq): a known hang of the test itself, {spec.known_hang}; its output: "
                                f"{spec.name}.run{runs}.log, its threads: {spec.name}.run{runs}.hang; run again")
            note(f"{spec.name}: {_hung_how(spec, cr)} with no kernel report, a known hang of this tree's test; "
                 f"run {runs + 1} of {spec.tries}")
            runs += 1
            cr = _run_once(session, spec, script, pidfile, self.retried)
        return cr, runs

    def _keep_hang(self, spec: SelftestSpec, pidfile: str, name: str) -> None:
        """What a hung test was doing when its time ran out, kept in the test's folder before it is killed."""
        try:
            cr = self.session.run(["sh", "-c", _hang_evidence_script(pidfile)], HANG_EVIDENCE_TIMEOUT)
        except (KpipeError, OSError, EOFError) as e:
            (self.logdir / name).write_text(f"not read: {e}\n")
            return
        (self.logdir / name).write_text(_output(cr) + ("(timed out)\n" if cr.timed_out else ""))

    def _session_lost(self, spec: SelftestSpec, e: BaseException, start: float) -> tuple[TestResult, _Run, str]:
        """The test's outcome when the session failed under it; the first such failure is the run's error."""
        err = _as_kpipe_error(e, f"while running {spec.name}")
        if not self.lost:
            self.error = err
            self.lost = f"guest session failed while running {spec.name}: {err.message}"
        lost = f"guest session failed while running {spec.name}: {err.message}"
        return (TestResult(self.suite, spec.name, Status.ERROR, "exit 0", "session lost", lost,
                           round(time.monotonic() - start, 3)),
                _Run(Status.ERROR, "session lost", "error session lost", [lost]), "")

    def _to_results(self, b: BuiltTest, cr: CommandResult, runs: int, pidfile: str,
                    start: float) -> tuple[TestResult, _Run, str]:
        """The test's last run as results: its log written, what a timeout left killed, its status (ERROR,
        inconclusive, when every run hung in the known hang and the kernel said nothing) and the retry notes."""
        spec, session = b.spec, self.session
        output = _output(cr)
        (self.logdir / f"{spec.name}.log").write_text(output)
        if cr.timed_out:
            self._keep_hang(spec, pidfile, f"{spec.name}.hang")
            _kill_remote(session, pidfile)
        run = status_from_exit(cr.exit_status, cr.timed_out, spec.timeout)
        if _stalled(spec, cr):
            run = _Run(Status.FAIL, f"stalled: almost no CPU time for {spec.stalled_after} s",
                       f"TIMEOUT stalled {spec.stalled_after} seconds",
                       [f"# STALLED: killed after {spec.stalled_after} s with almost no CPU time"])
        if cr.timed_out and spec.known_hang and spec.tries > 1 and runs >= spec.tries and \
                not _kernel_reported(session):
            # every run hung in the test's known user-space bug and the kernel said nothing when asked: nothing
            # is known about the kernel from this test (exit 2), it is not the kernel's failure (exit 1)
            why = (f"inconclusive: all {runs} runs hung (the last {_hung_how(spec, cr)}) and the kernel "
                   f"reported nothing, even asked with SysRq each time: the known hang of the test itself "
                   f"({spec.known_hang})")
            run = _Run(Status.ERROR, f"inconclusive: {runs} timeouts",
                       f"TIMEOUT {spec.timeout:g} seconds, {runs} runs, inconclusive", [why])
        res, run = _result(b, self.out_dir, self.suite, self.rel_to, output, run,
                           cr.seconds or time.monotonic() - start)
        mine = [r for r in self.retried if r.startswith(f"{spec.name}: ")]
        res = replace(res, runs=runs + sum("refused its channel" in r for r in mine))
        if mine:
            res = replace(res, detail="\n".join([*mine, res.detail]).strip())
        return res, run, output


def _test_script(remote_dir: str, pidfile: str, binary_name: str, args: tuple[str, ...],
                 stalled_after: int = 0) -> str:
    """The shell command that runs one test in the guest, its pid in ``pidfile``.

    The test must lead its own process group, so that a timeout also kills what it forked, not only its main
    process (_kill_remote kills the group): setsid when this shell is no group leader (then setsid keeps the
    pid); a shell that already leads its group execs the test directly. With ``stalled_after``, the stall
    watchdog's script instead (_watched_test_script)."""
    if stalled_after:
        return _watched_test_script(remote_dir, pidfile, binary_name, args, stalled_after)
    return (f"cd {shlex.quote(remote_dir)} && echo $$ > {shlex.quote(pidfile)} && "
            f"read -r _ _ _ _ g _ < /proc/$$/stat; s=setsid; [ \"$g\" = $$ ] && s=; "
            f"exec $s {shlex.join(['./' + binary_name, *args])} </dev/null 2>&1")


STALL_MARKER = "KPIPE-STALLED"
STALL_SCAN = 10        # seconds between two looks at the test's CPU time (the stall's resolution)
# idle: fewer clock ticks than one per IDLE_SECONDS_PER_TICK seconds of a look, i.e. < 0.5 % of a CPU (USER_HZ 100)
IDLE_SECONDS_PER_TICK = 2


# A /proc/<pid>/stat line's fields after the command name's ")" (which may hold spaces), as f[1] (state),
# f[3] (process group), f[12..15] (utime, stime, cutime, cstime: fields 14-17 of the line)
_STAT_FIELDS_AWK = '{ s = $0; sub(/.*\\) /, "", s); split(s, f, " "); '
# The CPU time (utime, stime, and the reaped children's cutime, cstime) of the processes of group p among the
# stat lines given.
_GROUP_CPU_AWK = _STAT_FIELDS_AWK + 'if (f[3] == p) t += f[12] + f[13] + f[14] + f[15] } END { print t + 0 }'


def watch_file(pidfile: str) -> str:
    """Where the stall watchdog writes what it saw, one line per look: beside the test's pid file."""
    return (pidfile[:-len(".pid")] if pidfile.endswith(".pid") else pidfile) + ".watch"


def _watched_test_script(remote_dir: str, pidfile: str, binary_name: str, args: tuple[str, ...],
                         stalled_after: int) -> str:
    """The test in the background, its own process group (setsid in a background job, which leads no group,
    keeps the pid); the shell waits for it (its end is seen at once) while a watchdog subshell looks every
    STALL_SCAN seconds (POSIX sh and awk: busybox in the guest, dash and the host's awk in the fast tier).

    Idle means almost no CPU time: less than one clock tick per IDLE_SECONDS_PER_TICK seconds of the look
    (0.5 % of one CPU at Linux's USER_HZ of 100), not none: 5.10's userfaultfd stress asleep in its known hang (every
    thread in S: a fault that is never woken, its readers in read(), main in pthread_join) still gained a tick
    every 10-20 s (measured in a real arm64 debug guest), and the first watchdog, which waited for no CPU time
    at all, never ended it; the working test uses ~100 ticks per second and CPU. When the test's main process
    (all its threads, its reaped children) was not idle since the last look, the test is busy; else the
    watchdog reads the CPU time of every process in the test's group (a child may work while the main process
    waits): a group idle over looks that add up to ``stalled_after`` seconds is a stall: the watchdog says so
    (STALL_MARKER) and kills the group. The group's files are read by cat, which goes on past a process that
    ended between the glob and its open (awk stops at such a file, with nothing printed: seen under load; and an
    empty sum never counts as idle). Reading /proc/<pid>/stat is not free under TCG and a debug kernel
    (busybox's `read` takes it a byte at a time: 2.8 s for 39 processes on arm64; awk 0.5 s with its exec), hence
    one file in the usual case and a look every few seconds. Each look is a line in the watch file beside the
    pid file (watch_file: the CPU time seen, in clock ticks), which kpipe keeps when the run hangs anyway.
    Exit status: the test's, 128+9 when killed."""
    scan = min(STALL_SCAN, int(stalled_after))
    cpu = f"awk -v p=$p {shlex.quote(_GROUP_CPU_AWK)}"
    watch = shlex.quote(watch_file(pidfile))

    def idle(now: str, before: str) -> str:      # sh has integers only: ticks * seconds-per-tick < seconds
        return f"[ $((({now} - {before}) * {IDLE_SECONDS_PER_TICK})) -lt {scan} ]"
    return "\n".join([
        f"cd {shlex.quote(remote_dir)} || exit 1",
        f"setsid {shlex.join(['./' + binary_name, *args])} </dev/null 2>&1 &",
        "p=$!",
        f"echo $p > {shlex.quote(pidfile)}",
        f": > {watch}",
        "(",
        "  lead=; last=; still=0; n=0",
        f"  while sleep {scan} >/dev/null 2>&1; do",
        f"    n=$((n + {scan}))",
        "    kill -0 $p 2>/dev/null || exit 0",
        f"    l=$({cpu} </proc/$p/stat 2>/dev/null)",
        f"    if [ -z \"$lead\" ] || [ -z \"$l\" ] || ! {idle('l', 'lead')}; then",
        f"      echo \"$n s: main $l\" >> {watch}; lead=$l; last=; still=0; continue",
        "    fi",
        "    lead=$l",
        f"    t=$(cat /proc/[0-9]*/stat 2>/dev/null | {cpu})",
        f"    if [ -n \"$t\" ] && [ -n \"$last\" ] && {idle('t', 'last')}; then still=$((still + {scan}))",
        "    else still=0; fi",
        "    [ -n \"$t\" ] && last=$t",
        f"    echo \"$n s: main $l, group $t, idle for $still s\" >> {watch}",
        f"    if [ $still -ge {int(stalled_after)} ]; then",
        f"      echo \"{STALL_MARKER}: the test's process group used almost no CPU time for {int(stalled_after)} s: "
        "killed\"",
        "      kill -9 -$p 2>/dev/null; exit 0",
        "    fi",
        "  done",
        ") &",
        "w=$!",
        "wait $p",
        "rc=$?",
        "kill $w 2>/dev/null",
        "exit $rc",
    ])


def _stalled(spec: SelftestSpec, cr: CommandResult) -> bool:
    """The stall watchdog ended this run: its marker, the test killed, before the timeout (a group asleep in D
    state, which no kill ends, runs on to its timeout: that run is the timeout's)."""
    return (bool(spec.stalled_after) and cr.exit_status == 128 + 9 and STALL_MARKER in (cr.stdout or "")
            and cr.seconds < spec.timeout - 1)


def _hung_how(spec: SelftestSpec, cr: CommandResult) -> str:
    if _stalled(spec, cr):
        return f"stalled (almost no CPU time in its process group for {spec.stalled_after} s, killed)"
    return f"timed out after {spec.timeout:g} s"


def _run_once(session: Session, spec: SelftestSpec, script: str, pidfile: str,
              retried: list[str]) -> CommandResult:
    """One run of a test's script. When the connection is up but sshd refused this channel (ChannelRefused),
    whatever started is killed (pid file) and the test runs once more; a second refusal is the session's
    error as any other."""
    try:
        cr = session.run(["sh", "-c", script], spec.timeout)
    except ChannelRefused as e:
        _kill_remote(session, pidfile)
        session.run(["rm", "-f", pidfile], 10)
        retried.append(f"{spec.name}: run again after the guest's SSH server refused its channel: {e.message}")
        note(f"{spec.name}: the guest's SSH server refused the test's channel; running it again")
        cr = session.run(["sh", "-c", script], spec.timeout)
    if not cr.timed_out and _stalled(spec, cr):
        # the known hang ended early is a timeout as any other: the kernel is asked (SysRq) before anything is
        # judged or run again
        hung = getattr(session, "command_hung", None)
        if hung is not None:
            hung(cr.command)
        cr = replace(cr, timed_out=True)
    return cr


def _kernel_reported(session: Session) -> bool:
    """The kernel reported something that stops the tests (an Oops, a hung or blocked task, a lockup): the
    session's abort check, fed by the console (a host-side session has none)."""
    check = getattr(session, "abort_check", None)
    return bool(check and check())


def _output(cr: CommandResult) -> str:
    out = cr.stdout or ""
    if cr.stderr:
        out += ("" if out.endswith("\n") or not out else "\n") + cr.stderr
    return out


def _as_kpipe_error(e: BaseException, when: str) -> KpipeError:
    if isinstance(e, KpipeError):
        return e
    return InfraError(f"the guest session failed {when}: {type(e).__name__}: {e}",
                      fix="the guest may have crashed: read serial.log")


HANG_EVIDENCE_TIMEOUT = 30.0
# each thread of the test's process group: its tid, state, user and system time (clock ticks), then its wait
# channel and kernel stack, read by the same awk (getline): one process, not two execs per thread (each exec
# costs a fraction of a second under TCG and a debug kernel)
_GROUP_THREADS_AWK = (_STAT_FIELDS_AWK + 'if (f[3] != p) next; '
                      't = "/proc/" $1; w = ""; getline w < (t "/wchan"); close(t "/wchan"); '
                      'print "tid", $1, "state", f[1], "utime", f[12], "stime", f[13], "wchan", w; '
                      'while ((getline l < (t "/stack")) > 0) print "    " l; close(t "/stack") }')


def _hang_evidence_script(pidfile: str) -> str:
    """A hung test's state, read before it is killed: the stall watchdog's looks (when it watched), then each
    thread of its process group with its state, CPU time, wait channel and kernel stack. It tells a test asleep
    (S, nothing moving) from one spinning, and where in the kernel each thread waits."""
    return "\n".join([
        f"p=$(cat {shlex.quote(pidfile)} 2>/dev/null) || exit 0",
        f"if [ -s {shlex.quote(watch_file(pidfile))} ]; then",
        "  echo \"the stall watchdog's looks (CPU time in clock ticks):\"",
        f"  cat {shlex.quote(watch_file(pidfile))}",
        "fi",
        "echo \"the test's threads (process group $p):\"",
        f"cat /proc/[0-9]*/task/[0-9]*/stat 2>/dev/null | awk -v p=$p {shlex.quote(_GROUP_THREADS_AWK)}",
        "true",
    ])


def _kill_remote(session: Session, pidfile: str) -> None:
    """After a host-side timeout: kill the test's process group (and the process) in the guest."""
    script = (f"p=$(cat {shlex.quote(pidfile)} 2>/dev/null) && "
              "{ kill -9 -$p 2>/dev/null; kill -9 $p 2>/dev/null; }; true")
    try:
        session.run(["sh", "-c", script], 10)
    except (KpipeError, OSError, EOFError):
        pass


def write_ktap(path: Path, runs: list[tuple[BuiltTest, _Run, str]]) -> None:
    """The run wrapped as the kselftest runner does: a header, each output as ``# `` lines, one test point."""
    lines = ["TAP version 13", f"1..{len(runs)}"]
    for n, (b, run, output) in enumerate(runs, 1):
        title = f"selftests: {b.spec.collection}: {b.spec.name}"
        lines.append(f"# {title}")
        lines += [f"# {ln}".rstrip() for ln in output.splitlines()]
        ok = "ok" if run.status in (Status.PASS, Status.SKIP, Status.XFAIL) else "not ok"
        lines.append(f"{ok} {n} {title}" + (f" # {run.directive}" if run.directive else ""))
    tmp = path.with_suffix(".ktap.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
