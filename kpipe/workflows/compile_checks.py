"""Compile-only checks of a series, as netdev's patch CI and the 0-day robot run them: the warnings delta of the
touched objects (gcc ``W=1``, sparse ``C=2``, clang), baseline vs patched, per arch, and bisectability (every
prefix of the series builds its touched objects).

Two extra build folders per (tree, arch, config), beside kpipe's own build folder and kept between runs:
  builds/<tree>-<arch>-<key>-warn/    gcc with W=1 (and sparse, C=2, on the objects gcc just built)
  builds/<tree>-<arch>-<key>-clang/   CC=clang (Debian's clang; CROSS_COMPILE stays for arm64's binutils)
Each is configured once from kpipe's merged .config and prepared once; a run then compiles only the touched
objects (their .o removed first, so the compiler really runs and prints its warnings on both sides).
What each compile found is kept in the cache (compile-checks/<key>), keyed by the source tree's content at that
commit, the folder (tree, arch, config), the objects, the tools and their versions: the same side of another
run (the baseline of every series on one tree, a premerge run again, its lab run) is read back, not compiled.

New warnings are matched on (tool, file, message): line numbers move with the patch.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..build import kernel as buildmod
from ..build import toolchain
from .. import cache
from ..arches import Arch
from ..source.checkout import Checkout, tree_hash
from ..errors import InfraError
from ..progress import note, phase
from ..source.tree import git

TOOLS = ("gcc-W=1", "sparse", "clang")
# gcc/clang/sparse diagnostics: FILE:LINE[:COL]: warning|error: MESSAGE [-Wflag]
_DIAG = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)? (?P<sev>warning|error|fatal error): "
                   r"(?P<msg>.*?)(?: \[(?P<flag>-W[^\]]+)\])?$")
_CONT = re.compile(r"^ {2,}(expected|got) (.*)$")      # sparse's "   expected X / got Y" lines
_NO_RULE = re.compile(r"No rule to make target '(?P<t>[^']+)'")


@dataclass(frozen=True)
class Diag:
    tool: str
    file: str           # relative to the source tree
    line: int
    severity: str       # warning | error
    message: str        # with sparse's expected/got folded in
    flag: str = ""      # -Wmissing-prototypes, -Wsometimes-uninitialized ...

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.tool, self.file, self.message)

    def describe(self) -> str:
        how = f"{self.tool} {self.flag}".strip()
        return f"{self.file}:{self.line}: {self.severity}: {self.message} ({how})"

    def to_json(self) -> dict[str, Any]:
        return {"tool": self.tool, "file": self.file, "line": self.line, "severity": self.severity,
                "message": self.message, "flag": self.flag}


def _relpath(path: str, src: Path | None) -> str:
    p = path
    if src is not None:
        for root in (str(src.resolve()), str(src)):
            if p.startswith(root + "/"):
                return p[len(root) + 1:]
    while p.startswith("../"):
        p = p[3:]
    return p[2:] if p.startswith("./") else p


def parse(text: str, tool: str, src: Path | None = None) -> list[Diag]:
    """The warnings and errors in a make log of one tool (gcc, clang or sparse), duplicates kept."""
    out: list[Diag] = []
    for ln in text.splitlines():
        m = _DIAG.match(ln)
        if m:
            sev = "error" if "error" in m["sev"] else "warning"
            out.append(Diag(tool, _relpath(m["file"], src), int(m["line"]), sev, m["msg"].strip(), m["flag"] or ""))
            continue
        c = _CONT.match(ln)
        if c and out and out[-1].tool == "sparse":
            d = out[-1]
            out[-1] = Diag(d.tool, d.file, d.line, d.severity, f"{d.message}; {c[1]} {c[2].strip()}", d.flag)
    return out


@dataclass
class Delta:
    new: list[Diag] = field(default_factory=list)       # only on the patched side: blocks premerge
    both: list[Diag] = field(default_factory=list)      # on both sides: shown, does not block
    gone: list[Diag] = field(default_factory=list)      # fixed by the series


def delta(baseline: Iterable[Diag], patched: Iterable[Diag]) -> Delta:
    """Match on (tool, file, message), counting: a second copy of a warning the base already has is new."""
    left = Counter(d.key for d in baseline)
    base_list = list(baseline) if not isinstance(baseline, list) else baseline
    out = Delta()
    for d in patched:
        if left[d.key] > 0:
            left[d.key] -= 1
            out.both.append(d)
        else:
            out.new.append(d)
    for d in base_list:
        if left[d.key] > 0:
            left[d.key] -= 1
            out.gone.append(d)
    return out


# ---------------------------------------------------------------- running the tools

def touched_objects(src: Path, touched: Iterable[str]) -> list[str]:
    """The objects of the touched C files that exist in ``src`` (headers reach the compiler through them)."""
    return sorted(f[:-2] + ".o" for f in set(touched) if f.endswith(".c") and (src / f).is_file()
                  and (src / Path(f).parent / "Makefile").is_file())


@dataclass(frozen=True)
class Folder:
    tool: str            # warn | clang
    arch: Arch
    bdir: Path
    make_vars: tuple[str, ...]


def _folder(kind: str, req: buildmod.BuildRequest) -> Folder:
    name = f"{req.tree_ident}-{req.arch.name}-{cache.key_of(req.config_key, req.defconfig)[:12]}-{kind}"
    bdir = cache.cache_dir("builds") / name
    mv: tuple[str, ...] = ("W=1",) if kind == "warn" else ("CC=clang",)
    return Folder(kind, req.arch, bdir, mv)


def _make(src: Path, f: Folder, extra: Iterable[str], targets: Iterable[str], log: Path, jobs: int,
          timeout: float = 1800) -> tuple[int, str]:
    """make in folder ``f`` under the machine's build lock; its output (returned) is appended to ``log``."""
    cmd = ["make", "-C", str(src), f"O={f.bdir}", *f.arch.make_vars, *f.make_vars, *extra, f"-j{jobs}", "-k",
           *targets]
    env = {**os.environ, "LC_ALL": "C", "KBUILD_BUILD_USER": "kpipe", "KBUILD_BUILD_HOST": "kpipe"}
    with buildmod.machine_build_lock():
        try:
            cp = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise InfraError("make: command not found", fix="run `kpipe setup`") from None
        except subprocess.TimeoutExpired:
            raise InfraError(f"make timed out after {timeout:.0f}s in {f.bdir}", log=str(log)) from None
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n{cp.stdout}\n(exit {cp.returncode})\n")
    return cp.returncode, cp.stdout


def _need(tool: str, pkg: str) -> None:
    from shutil import which
    if not which(tool):
        raise InfraError(f"{tool} is not installed (the compile checks need it)",
                         fix=f"run `kpipe setup` (or apt-get install {pkg}), or pass --no-warnings")


def prepare_folder(req: buildmod.BuildRequest, f: Folder, log: Path, jobs: int) -> float:
    """Configure from kpipe's merged config and `make prepare`, once per folder (a stamp records it)."""
    start = time.monotonic()
    f.bdir.mkdir(parents=True, exist_ok=True)
    creq = buildmod.BuildRequest(arch=req.arch, src=req.src, tree_ident=req.tree_ident, tree_hash=req.tree_hash,
                                 config_text=req.config_text, config_key=req.config_key, defconfig=req.defconfig,
                                 ccache=False, make_vars=f.make_vars)
    with buildmod.machine_build_lock():
        # a clang .config differs (CC_IS_CLANG, the flags it has): options are not re-validated against gcc's
        buildmod.configure(creq, f.bdir, False, log, lambda _p: None)
    stamp = f.bdir / ".kpipe-prepared"
    if not stamp.exists() or stamp.read_text() != req.tree_hash:
        rc, out = _make(req.src, f, (), ["prepare"], log, jobs)
        if rc != 0:
            raise InfraError(f"{f.arch.name}: `make prepare` failed in the {f.tool} folder {f.bdir}", log=str(log),
                             detail=[ln for ln in out.splitlines() if "rror" in ln][:8],
                             fix="read the log; for clang: is Debian's clang installed (`kpipe setup`)?")
        stamp.write_text(req.tree_hash)
    return round(time.monotonic() - start, 2)


def compile_objects(src: Path, f: Folder, objects: list[str], log: Path, jobs: int,
                    sparse: bool = False) -> dict[str, Any]:
    """Compile ``objects`` in folder ``f`` (removed first: the compiler runs, warm or cold), then sparse (C=2) on
    them when asked. Returns each tool's diagnostics, failed objects and seconds."""
    res: dict[str, Any] = {}
    for o in objects:
        (f.bdir / o).unlink(missing_ok=True)
    t0 = time.monotonic()
    rc, out = _make(src, f, (), objects, log, jobs)
    tool = "clang" if f.tool == "clang" else "gcc-W=1"
    diags = parse(out, tool, src)
    failed = [o for o in objects if not (f.bdir / o).exists()]
    res[tool] = {"diags": diags, "failed": failed, "seconds": round(time.monotonic() - t0, 2), "rc": rc,
                 "no_rule": _NO_RULE.findall(out)}
    if sparse and not failed:
        t0 = time.monotonic()
        rc, out = _make(src, f, ("C=2",), objects, log, jobs)
        res["sparse"] = {"diags": parse(out, "sparse", src), "failed": [], "seconds": round(time.monotonic() - t0, 2),
                         "rc": rc}
    return res


CHECKS_RECIPE = 1        # bump when what compile_objects records changes: older cached results are then not reused


@functools.lru_cache(maxsize=None)
def _sparse_version() -> str:
    try:
        cp = subprocess.run(["sparse", "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InfraError(f"sparse --version failed: {e}", fix="run `kpipe setup`") from None
    return cp.stdout.strip() or cp.stderr.strip()


def _to_json(res: dict[str, Any]) -> dict[str, Any]:
    return {tool: {**r, "diags": [d.to_json() for d in r["diags"]]} for tool, r in res.items()}


def _from_json(data: dict[str, Any]) -> dict[str, Any]:
    return {tool: {**r, "diags": [Diag(**d) for d in r["diags"]]} for tool, r in data.items()}


def compile_cached(src: Path, source_id: str, f: Folder, objects: list[str], log: Path, jobs: int,
                   sparse: bool = False) -> tuple[dict[str, Any], bool]:
    """compile_objects, or what it found for the same source content (``source_id``: the checkout's tree, as the
    kernel's own content key has it), folder, objects and tools before (read from the cache; an interrupted
    compile leaves nothing there). Returns (results, whether they were cached)."""
    cc = "clang" if f.tool == "clang" else f.arch.cc
    key = cache.key_of("compile-checks", CHECKS_RECIPE, f.bdir.name, f.make_vars, f.arch.make_vars, objects, sparse,
                       source_id, toolchain.compiler(cc).ident, _sparse_version() if sparse else "")
    entry = cache.cache_dir("compile-checks") / key

    def make(_tmp: Path) -> dict[str, Any]:
        return {"what": f"{f.arch.name} {f.tool}{' + sparse' if sparse else ''}: {' '.join(objects)}",
                "result": _to_json(compile_objects(src, f, objects, log, jobs, sparse=sparse))}
    meta, hit = cache.cached_entry(entry, entry.with_name(entry.name + ".lock"),
                                   f"compile checks {f.arch.name} {f.tool} in {f.bdir.name}", make, deep=False)
    if hit:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            fh.write(f"\n# {meta['what']}: reused from the cache ({entry}), compiled by an earlier run\n")
    return _from_json(meta["result"]), hit


def run(req: buildmod.BuildRequest, co: Checkout, touched: list[str], log: Path, tools: tuple[str, ...] = TOOLS,
        jobs: int = 0) -> dict[str, Any]:
    """One arch: baseline (the series' base), every prefix of the series (bisectability: gcc W=1 on its touched
    objects), and the full series with every tool. The checkout is left at the series' head again."""
    jobs = jobs or os.cpu_count() or 1
    src = co.path
    head = git(src, "rev-parse", "HEAD").stdout.strip()
    base = co.tree.base
    commits = [c for c in git(src, "rev-list", "--reverse", f"{base}..{head}").stdout.split() if c]
    if "sparse" in tools:
        _need("sparse", "sparse")
    if "clang" in tools:
        _need("clang", "clang")
    folders = [_folder("warn", req)] + ([_folder("clang", req)] if "clang" in tools else [])
    cost: dict[str, Any] = {}
    for f in folders:
        cost[f"prepare-{f.tool}"] = prepare_folder(req, f, log, jobs)
    sides: dict[str, dict[str, Any]] = {}
    bisect: list[dict[str, Any]] = []
    hits: list[bool] = []               # each compile asked for: read back from the cache or not
    try:
        for i, rev in enumerate([base] + commits):
            git(src, "checkout", "-q", "--detach", rev)
            source_id = tree_hash(co)
            prefix_touched = _touched_between(src, base, rev) if i else []
            objs = touched_objects(src, touched if i in (0, len(commits)) else prefix_touched)
            last = i == len(commits)
            if i == 0 or last:
                side: dict[str, Any] = {}
                for f in folders:
                    got, hit = compile_cached(src, source_id, f, objs, log, jobs,
                                              sparse=f.tool == "warn" and "sparse" in tools)
                    side.update(got)
                    hits.append(hit)
                sides["baseline" if i == 0 else "patched"] = side
                if i == 0 and not last:
                    continue
                if i == 0:      # no patches: baseline is patched
                    sides["patched"] = side
                    continue
                g = side["gcc-W=1"]
            else:
                got, hit = compile_cached(src, source_id, folders[0], objs, log, jobs)
                g = got["gcc-W=1"]
                hits.append(hit)
            subj = git(src, "log", "-1", "--format=%s", rev).stdout.strip()
            errs = [d.describe() for d in g["diags"] if d.severity == "error"]
            bisect.append({"patch": i, "commit": rev[:12], "subject": subj, "objects": objs,
                           "builds": not g["failed"], "failed": g["failed"], "errors": errs[:8],
                           "seconds": g["seconds"]})
    finally:
        git(src, "checkout", "-q", "--detach", head)
    out = summarize(sides, bisect, cost)
    out["reused"] = {"cached": sum(hits), "of": len(hits)}
    return out


def _touched_between(src: Path, a: str, b: str) -> list[str]:
    return [ln for ln in git(src, "diff", "--name-only", a, b).stdout.splitlines() if ln]


def summarize(sides: dict[str, dict[str, Any]], bisect: list[dict[str, Any]], cost: dict[str, Any]) -> dict[str, Any]:
    per_tool: dict[str, Any] = {}
    for tool in sides.get("patched", {}):
        b = sides["baseline"].get(tool, {"diags": [], "failed": []})
        p = sides["patched"][tool]
        d = delta(b["diags"], p["diags"])
        per_tool[tool] = {"new": [x.to_json() for x in d.new], "both": [x.to_json() for x in d.both],
                          "gone": [x.to_json() for x in d.gone], "failed": p["failed"],
                          "baseline_failed": b["failed"],
                          "seconds": {"baseline": b.get("seconds", 0.0), "patched": p.get("seconds", 0.0)}}
        cost[tool] = per_tool[tool]["seconds"]
    return {"tools": per_tool, "bisect": bisect, "seconds": cost}


def new_count(arch_res: dict[str, Any]) -> int:
    return sum(len(t["new"]) for t in arch_res["tools"].values())


def not_bisectable(arch_res: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in arch_res["bisect"] if not b["builds"]]


def lines(arch: str, arch_res: dict[str, Any]) -> list[str]:
    """The terminal / markdown lines of one arch."""
    out: list[str] = []
    for tool, t in arch_res["tools"].items():
        for d in t["new"]:
            out.append(f"{arch}: NEW {d['severity']} ({tool}{' ' + d['flag'] if d['flag'] else ''}): "
                       f"{d['file']}:{d['line']}: {d['message']}")
        for d in t["both"]:
            out.append(f"{arch}: on both sides ({tool}): {d['file']}:{d['line']}: {d['message']}")
    for b in arch_res["bisect"]:
        state = "builds" if b["builds"] else f"DOES NOT BUILD ({', '.join(b['failed'])})"
        out.append(f"{arch}: patch {b['patch']} {b['commit']} \"{b['subject']}\": {state}")
        out.extend(f"{arch}:   {e}" for e in b["errors"] if not b["builds"])
    return out


def check_series(reqs: list[buildmod.BuildRequest], co: Checkout, touched: list[str], run_dir: Path,
                 tools: tuple[str, ...] = TOOLS, jobs: int = 0,
                 timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Every arch of ``reqs``: result.json's ``extra.warnings``."""
    res: dict[str, Any] = {}
    for req in reqs:
        with phase("warnings", f"{req.arch.name}: {', '.join(tools)} on the touched objects, baseline vs patched, "
                               f"and each patch on its own", timings) as ph:
            r = run(req, co, touched, run_dir / req.arch.name / "warnings.log", tools, jobs)
            reused = r["reused"]
            ph.update(f"{req.arch.name}: {new_count(r)} new, {len(not_bisectable(r))} patch(es) not building alone"
                      + (f" ({reused['cached']} of {reused['of']} compiles reused from the cache)"
                         if reused["cached"] else ""))
        for ln in lines(req.arch.name, r):
            note(ln)
        res[req.arch.name] = r
    return res


# ---------------------------------------------------------------- wiring into the workflows

def request_for(arch: Arch, co: Checkout, opts: Any) -> buildmod.BuildRequest:
    """The build request of kpipe's own kernel for ``arch`` (its merged config), without the instrumentation."""
    from .pipeline import merged_config
    merged, _ = merged_config(arch, opts, co.path)
    return buildmod.BuildRequest(arch=arch, src=co.path, tree_ident=co.tree.ident, tree_hash=tree_hash(co),
                                 config_text=merged.text(), config_key=merged.key(), defconfig=opts.defconfig,
                                 jobs=opts.jobs)


def exit_code(res: dict[str, Any], allow_new_warnings: bool) -> tuple[int, list[str]]:
    """1 for a new warning or error (unless allowed), 4 when a patch of the series does not build on its own."""
    from ..errors import EXIT_BUILD, EXIT_KERNEL, EXIT_PASS
    code, why = EXIT_PASS, []
    for arch, r in res.items():
        n = new_count(r)
        if n:
            why.append(f"{arch}: {n} new compiler/sparse warning(s) or error(s) in the touched files"
                       + (" (allowed by --allow-new-warnings)" if allow_new_warnings else ""))
            if not allow_new_warnings:
                code = max(code, EXIT_KERNEL)
        for b in not_bisectable(r):
            why.append(f"{arch}: patch {b['patch']} ({b['subject']}) does not build on its own: "
                       f"{', '.join(b['failed'])}")
            code = max(code, EXIT_BUILD)
    return code, why


def parse_tools(spec: str) -> tuple[str, ...]:
    from ..errors import UsageError
    chosen = tuple(t.strip() for t in spec.split(",") if t.strip())
    bad = [t for t in chosen if t not in TOOLS]
    if bad or not chosen:
        raise UsageError(f"unknown compile-check tool(s): {', '.join(bad) or '(none)'}",
                         fix=f"pass --tools with a comma-separated subset of {','.join(TOOLS)}")
    return chosen


def for_premerge(opts: Any, co: Checkout, series: Any, arches: list[Arch], run_dir: Path,
                 timings: dict[str, float]) -> tuple[dict[str, Any], int, list[str]]:
    """premerge's compile checks, in the scratch checkout premerge holds (left at the patched head)."""
    from ..errors import KpipeError
    if not series.patches:
        return {}, 0, []
    try:
        reqs = [request_for(a, co, opts) for a in arches]
        res = check_series(reqs, co, series.touched, run_dir, TOOLS, opts.jobs, timings)
    except KpipeError as e:
        note(e.render())
        return {}, e.exit_code, [f"compile checks could not run: {e.message}"]
    code, why = exit_code(res, opts.allow_new_warnings)
    for w in why:
        note(w)
    return res, code, why
