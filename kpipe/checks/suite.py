"""Suites: what a patch needs checked, as data beside the pipeline (suites/<name>/).

The pipeline knows no patch. A suite folder holds ``suite.toml`` (what chooses it, its kconfig needs, its
verifier's sources and expectations, the rules that read the expectation policy from the tree, the patches
whose intent it knows, the tree bugs it recognises, its pause cases) and ``selftests.toml`` (which of the
tree's own selftests are relevant, with their arguments, timeouts and known test bugs). Every verifier is
compiled with the shared C harness in suites/lib.

A run uses one suite: ``--suite NAME|PATH``, else the first shipped suite (in name order, the default
first) whose ``selects`` patterns match a file the series touches, else the default suite. Premerge and
bisect choose once from the series, so both sides are judged (and their kernels configured) alike.
"""
from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from ..errors import InfraError, UsageError
from ..datadirs import data_dir

SUITES_DIR = data_dir("suites")
LIB_DIR = SUITES_DIR / "lib"
DEFAULT = "mremap-dontunmap"
SUITE_FILE = "suite.toml"
SELFTESTS_FILE = "selftests.toml"


@dataclass(frozen=True)
class PolicyRule:
    policy: str
    what: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class TreeBug:
    name: str
    cases: dict[str, str]          # case -> the failure code it shows on a tree with the bug
    why: str
    bug: re.Pattern[str]           # the buggy code (must be found) ...
    fix: re.Pattern[str]           # ... and not the fix


@dataclass(frozen=True)
class Pause:
    """The GC pause cases: the aligned moves that must take the PMD path (judged by VmPTE growth), a GC flow a
    kernel may lack (said when it skips), and stand-ins: a patched case whose move the baseline refuses is
    compared with the baseline's stand-in case."""
    fast_path_cases: tuple[str, ...] = ()
    gc_case: str = ""
    gc_note: str = ""
    stand_in: dict[str, str] = field(default_factory=dict)


class KnownHang(TypedDict):
    file: str                      # the test's source, relative to tools/testing/selftests
    fixed_by: str                  # a string the fixed source has
    tries: int
    why: str
    stalled_after: NotRequired[int]   # seconds of almost no CPU time in the test's process group: the hang, end it
    fix: NotRequired[str]          # kpipe's fix of the test (a patch, made absolute on load), built from a copy


class CatalogueVariant(TypedDict):
    target: str                    # <collection>/<binary>; "{mm}" is the tree's vm/ or mm/
    args: NotRequired[list[str]]
    known_hang: NotRequired[KnownHang]


class CatalogueEntry(TypedDict):
    name: str
    timeout: int
    needs: NotRequired[list[str]]
    variants: list[CatalogueVariant]


@dataclass(frozen=True)
class Selftests:
    """Which of the tree's selftests the suite runs (see kpipe/checks/selftests.py for the entry format)."""
    catalogue: tuple[CatalogueEntry, ...] = ()
    relevance: tuple[tuple[str, tuple[str, ...]], ...] = ()
    default_set: tuple[str, ...] = ()

    def names(self) -> list[str]:
        return [str(e["name"]) for e in self.catalogue]


@dataclass(frozen=True)
class Suite:
    name: str
    root: Path
    description: str
    selects: tuple[str, ...]
    kconfig: tuple[Path, ...]
    binary: str
    sources: Path
    expectations: Path
    policy_source: str                 # the tree file the policy rules read ("" : the suite has one policy)
    policy_what: str
    rules: tuple[PolicyRule, ...]
    known_patches: dict[Path, str]     # patch file -> the policy a tree carrying it must show
    tree_bugs: tuple[TreeBug, ...]
    pause: Pause
    selftests: Selftests

    def matches(self, touched: list[str]) -> list[str]:
        """The touched files that choose this suite."""
        return [f for f in touched if any(fnmatch.fnmatch(f.removeprefix("./"), p) for p in self.selects)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.root), "description": self.description}


def _err(path: Path, what: str) -> UsageError:
    return UsageError(f"{path}: {what}", fix="see suites/README.md for a suite's files and keys")


def _regex(path: Path, where: str, text: Any) -> re.Pattern[str]:
    try:
        return re.compile(str(text))
    except re.error as e:
        raise _err(path, f"{where}: not a regular expression ({e})") from None


def _file(root: Path, path: Path, key: str, value: Any, folder: bool = False) -> Path:
    p = (root / str(value)).resolve()
    if not (p.is_dir() if folder else p.is_file()):
        raise _err(path, f"{key} = {value!r}: no such {'folder' if folder else 'file'} ({p})")
    return p


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise _err(path, "no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise _err(path, f"not valid TOML ({e})") from None


def _selftests(root: Path) -> Selftests:
    path = root / SELFTESTS_FILE
    if not path.is_file():
        return Selftests()
    data = _toml(path)
    hangs = data.get("known_hangs", {})
    catalogue = []
    for i, e in enumerate(data.get("catalogue", [])):
        if not isinstance(e, dict) or not {"name", "timeout", "variants"} <= set(e):
            raise _err(path, f"catalogue entry {i + 1} needs name, timeout and variants")
        variants = []
        for v in e["variants"]:
            v = dict(v)
            if "target" not in v:
                raise _err(path, f"catalogue entry {e['name']!r}: a variant without target")
            if "known_hang" in v:
                if v["known_hang"] not in hangs:
                    raise _err(path, f"catalogue entry {e['name']!r}: known_hang {v['known_hang']!r} is not "
                                     f"a [known_hangs] table")
                hang = dict(hangs[v["known_hang"]])
                stall = hang.get("stalled_after")
                if stall is not None and (not isinstance(stall, int) or isinstance(stall, bool) or stall < 5):
                    raise _err(path, f"[known_hangs.{v['known_hang']}] stalled_after must be a whole number of "
                                     f"seconds, at least 5 (got {stall!r})")
                if "fix" in hang:
                    fix = root / str(hang["fix"])
                    if not fix.is_file():
                        raise _err(path, f"[known_hangs.{v['known_hang']}] fix {hang['fix']!r}: no such file under "
                                         f"{root}")
                    hang["fix"] = str(fix)
                v["known_hang"] = hang
            variants.append(v)
        catalogue.append(cast(CatalogueEntry, {**e, "variants": variants}))
    names = {str(e["name"]) for e in catalogue}
    relevance = []
    for r in data.get("relevance", []):
        unknown = [n for n in r.get("tests", []) if n not in names]
        if "files" not in r or unknown:
            raise _err(path, f"relevance entry {r!r}: needs files and tests from the catalogue "
                             f"(unknown: {', '.join(unknown) or 'none'})")
        relevance.append((str(r["files"]), tuple(r["tests"])))
    default = tuple(data.get("default", ()))
    if bad := [n for n in default if n not in names]:
        raise _err(path, f"default names tests not in the catalogue: {', '.join(bad)}")
    return Selftests(tuple(catalogue), tuple(relevance), default)


def load(root: Path) -> Suite:
    """Read and check a suite folder (read once per process while its two files are unchanged); a UsageError
    names the file, the key and the fix."""
    root = Path(root).resolve()
    path = root / SUITE_FILE
    if not root.is_dir() or not path.is_file():
        raise UsageError(f"{root} is not a suite: it has no {SUITE_FILE}",
                         fix=f"pass a suite folder (one of: {', '.join(shipped_names()) or 'none shipped'}) "
                             f"or a folder with a {SUITE_FILE}")
    stamps = tuple(p.stat().st_mtime_ns if p.is_file() else 0 for p in (path, root / SELFTESTS_FILE))
    return _load(root, stamps)


@cache
def _load(root: Path, stamps: tuple[int, ...]) -> Suite:
    path = root / SUITE_FILE
    d = _toml(path)
    for key in ("name", "verifier"):
        if key not in d:
            raise _err(path, f"{key} is missing")
    v = d["verifier"]
    for key in ("binary", "sources", "expectations"):
        if key not in v:
            raise _err(path, f"[verifier] {key} is missing")
    pol = d.get("policy", {})
    rules = tuple(PolicyRule(str(r["policy"]), str(r.get("what", r["policy"])),
                             _regex(path, f"policy rule {r.get('policy')!r}", r.get("pattern", "")))
                  for r in pol.get("rules", []))
    if rules and not pol.get("source"):
        raise _err(path, "[policy] has rules but no source (the tree file they read)")
    bugs = tuple(TreeBug(str(b["name"]), {str(k): str(c) for k, c in b.get("cases", {}).items()}, str(b["why"]),
                         _regex(path, f"tree bug {b['name']!r} bug", b["bug"]),
                         _regex(path, f"tree bug {b['name']!r} fix", b["fix"]))
                 for b in d.get("tree_bugs", []))
    if bugs and not pol.get("source"):
        raise _err(path, "tree_bugs need [policy] source (the tree file whose code shows them)")
    known = {_file(root, path, "known_patches.file", k["file"]): str(k["policy"]) for k in d.get("known_patches", [])}
    p = d.get("pause", {})
    pause = Pause(tuple(p.get("fast_path_cases", ())), str(p.get("gc_case", "")), str(p.get("gc_note", "")),
                  {str(a): str(b) for a, b in p.get("stand_in", {}).items()})
    kconf = d.get("kconfig", [])
    kconf = [kconf] if isinstance(kconf, str) else kconf
    return Suite(name=str(d["name"]), root=root, description=str(d.get("description", "")),
                 selects=tuple(d.get("selects", ())),
                 kconfig=tuple(_file(root, path, "kconfig", k) for k in kconf),
                 binary=str(v["binary"]), sources=_file(root, path, "[verifier] sources", v["sources"], folder=True),
                 expectations=_file(root, path, "[verifier] expectations", v["expectations"]),
                 policy_source=str(pol.get("source", "")), policy_what=str(pol.get("what", "rules")),
                 rules=rules, known_patches=known, tree_bugs=bugs, pause=pause, selftests=_selftests(root))


def shipped_names() -> list[str]:
    """The suites shipped in suites/ (the default first, then by name)."""
    names = sorted(p.parent.name for p in SUITES_DIR.glob(f"*/{SUITE_FILE}"))
    return sorted(names, key=lambda n: n != DEFAULT)


def get(spec: str | Path | None = None) -> Suite:
    """A suite by shipped name or folder path (None: the default suite)."""
    spec = str(spec or DEFAULT)
    if "/" not in spec and (SUITES_DIR / spec / SUITE_FILE).is_file():
        return load(SUITES_DIR / spec)
    p = Path(spec).expanduser()
    if not p.exists():
        raise UsageError(f"--suite {spec}: no shipped suite of that name and no such folder",
                         fix=f"use one of: {', '.join(shipped_names())}, or the path of a suite folder")
    return load(p)


@dataclass(frozen=True)
class Choice:
    suite: Suite
    why: str


def choose(spec: str | None, touched: list[str]) -> Choice:
    """The run's suite: ``--suite`` wins; else the first shipped suite a touched file selects; else the
    default. The reason is in every report."""
    if spec:
        return Choice(get(spec), "--suite")
    for name in shipped_names():
        s = get(name)
        if files := s.matches(touched):
            others = [n for n in shipped_names() if n != name and get(n).matches(touched)]
            also = f"; also selected: {', '.join(others)} (run it with --suite)" if others else ""
            return Choice(s, f"the series touches {', '.join(files[:3])}{also}")
    return Choice(get(DEFAULT), "no shipped suite selects a touched file: the default suite")


def check_shipped() -> list[Suite]:
    """Load every shipped suite (a broken one is an InfraError: the repository is damaged)."""
    out = []
    for name in shipped_names():
        try:
            out.append(load(SUITES_DIR / name))
        except UsageError as e:
            raise InfraError(f"the shipped suite {name} is broken: {e}", fix="restore suites/ from the "
                             "repository") from None
    return out
