"""Kconfig fragments: parse, merge (later wins, conflicts reported), and validate a final .config.

The validation is the part no other tool in the field does: for every requested symbol that did not get its
value after ``make olddefconfig``, it says *why*, from the tree's own Kconfig files -- the unmet ``depends on``
with the value of every symbol in it (as menuconfig shows it: ``A [=y] && B [=n]``), the ``select`` that forces
a symbol on, the missing prompt, or that the name is no symbol of this tree at all.

kconfiglib loads the tree's Kconfig (a few seconds, only when something is missing) in a child process, so its
environment (srctree, ARCH, CC, ...) and the compiler probes that ``$(shell,...)`` runs never touch this
process. If kconfiglib cannot load the tree, a plain-text scan of the Kconfig files gives the ``depends on``
lines instead, and the reason says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..arches import Arch
from ..datadirs import data_dir
from .. import proc
from ..errors import ConfigError, InfraError, UsageError

if TYPE_CHECKING:
    # kconfiglib ships no type hints (no stubs, no py.typed): its names are Any to mypy, used here as documentation
    import kconfiglib  # type: ignore[import-untyped]

# A kconfiglib expression: a Symbol or Choice, or a tuple (AND / OR / NOT / a relation, operands...).
_KExpr = Any

REPO_ROOT = Path(__file__).resolve().parents[2]
LAYERS_FILE = "layers.toml"
KCONFIGLIB_TIMEOUT = 300.0

_NAME = r"[A-Za-z0-9_]+"
_SET_RE = re.compile(rf"^CONFIG_({_NAME})=(.*)$")
_UNSET_RE = re.compile(rf"^# CONFIG_({_NAME}) is not set$")
_VALUE_RE = re.compile(r'^(?:[ymn]|-?[0-9]+|0[xX][0-9a-fA-F]+|"(?:[^"\\]|\\.)*")$')
_VALID_FORMS = ('CONFIG_NAME=y | m | n | "text" | 123 | 0x1f, or "# CONFIG_NAME is not set"; '
                "any other line must be blank or a comment starting with #")


# --------------------------------------------------------------------------------------------------- fragments

@dataclass(frozen=True)
class Fragment:
    """One fragment file: symbol (without CONFIG_) -> value exactly as written ('n' for "is not set")."""
    path: Path
    values: dict[str, str]


def _line_hint(line: str) -> str:
    """A short guess at what is wrong with a line that is not a valid fragment line."""
    m = re.match(rf"^\s*(CONFIG_)?({_NAME})\s*=\s*(.*?)\s*$", line)
    if not m:
        if line.lstrip().startswith("CONFIG_"):
            return "expected CONFIG_NAME=value"
        return "not an assignment and not a comment"
    prefix, _, value = m.groups()
    if not prefix:
        return "symbol names start with CONFIG_"
    if line != line.strip() or " =" in line or "= " in line:
        return "no spaces around '=' or at the start of the line"
    if value.startswith('"'):
        return "unterminated or badly escaped string (use \\\" and \\\\ inside quotes)"
    if value.lower() in ("yes", "no", "true", "false", "on", "off"):
        return f"write y or n, not {value}"
    if "#" in value:
        return "no comments after a value: put them on their own line"
    return f"{value!r} is not y, m, n, a number or a quoted string"


def parse_fragment(path: Path | str) -> Fragment:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"kconfig fragment {path} does not exist",
                         fix="pass the path of an existing fragment file (--kconfig FILE)") from None
    except IsADirectoryError:
        raise UsageError(f"kconfig fragment {path} is a directory", fix="pass a fragment file, not a folder") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})",
                          fix="a fragment is a text file of CONFIG_ lines") from None
    values: dict[str, str] = {}
    where: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line:
            continue
        m = _SET_RE.match(line)
        if m:
            sym, value = m.groups()
            if not _VALUE_RE.match(value):
                raise ConfigError(f"{path}:{lineno}: cannot read {raw!r}: {_line_hint(line)}",
                                  fix=f"a valid line is {_VALID_FORMS}")
        elif (m := _UNSET_RE.match(line)):
            sym, value = m.group(1), "n"
        elif line.lstrip().startswith("#"):
            continue
        else:
            raise ConfigError(f"{path}:{lineno}: cannot read {raw!r}: {_line_hint(line)}",
                              fix=f"a valid line is {_VALID_FORMS}")
        if sym in values and values[sym] != value:
            raise ConfigError(
                f"{path}:{lineno}: CONFIG_{sym} set twice in one fragment "
                f"(line {where[sym]}: {values[sym]}, line {lineno}: {value})",
                fix="keep one of the two lines")
        values[sym] = value
        where.setdefault(sym, lineno)
    return Fragment(path=path, values=values)


# --------------------------------------------------------------------------------------------------- merge

def _short_names(paths: list[Path]) -> dict[Path, str]:
    """File names where they tell the paths apart, full paths where they do not."""
    names = [p.name for p in paths]
    return {p: (p.name if names.count(p.name) == 1 else str(p)) for p in paths}


@dataclass(frozen=True)
class Conflict:
    symbol: str
    values: tuple[tuple[Path, str], ...]   # every (fragment, value) that set the symbol, in merge order
    winner: Path

    def describe(self) -> str:
        short = _short_names(list(dict.fromkeys(p for p, _ in self.values)))
        sets = ", ".join(f"{short[p]} sets {v}" for p, v in self.values)
        return f"CONFIG_{self.symbol}: {sets}; {short[self.winner]} wins"


def _line(sym: str, value: str) -> str:
    return f"# CONFIG_{sym} is not set" if value == "n" else f"CONFIG_{sym}={value}"


@dataclass(frozen=True)
class MergedConfig:
    values: dict[str, str]
    sources: dict[str, Path]               # symbol -> the fragment whose value won
    fragments: tuple[Path, ...]
    conflicts: tuple[Conflict, ...]

    def text(self) -> str:
        """The merged requests as fragment text to append to a .config: sorted, so the same requests always
        give the same text (and key), whatever the fragments' order or location."""
        return "".join(_line(s, self.values[s]) + "\n" for s in sorted(self.values))

    def key(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()


def merge(fragments: list[Fragment]) -> MergedConfig:
    values: dict[str, str] = {}
    sources: dict[str, Path] = {}
    seen: dict[str, list[tuple[Path, str]]] = {}
    for frag in fragments:
        for sym, value in frag.values.items():
            seen.setdefault(sym, []).append((frag.path, value))
            values[sym] = value
            sources[sym] = frag.path
    conflicts = tuple(Conflict(sym, tuple(sets), sets[-1][0])
                      for sym, sets in seen.items() if len({v for _, v in sets}) > 1)
    return MergedConfig(values=values, sources=sources, fragments=tuple(f.path for f in fragments),
                        conflicts=conflicts)


def default_fragments(arch: Arch, repo_root: Path | None = None) -> list[Path]:
    """The shipped layers (kconfigs/layers.toml) for this arch, in merge order."""
    kdir = (repo_root / "kconfigs") if repo_root else data_dir("kconfigs")
    layers_file = kdir / LAYERS_FILE
    try:
        layers = tomllib.loads(layers_file.read_text())["layers"]
    except FileNotFoundError:
        raise InfraError(f"{layers_file} is missing", fix="restore kconfigs/layers.toml from the repository") from None
    except (tomllib.TOMLDecodeError, KeyError) as e:
        raise InfraError(f"{layers_file}: not a list of layers ({e})",
                         fix='write: layers = ["base.config", "{arch}", "<feature>.config"]') from None
    paths = [kdir / str(name).replace("{arch}", arch.kconfig_fragment) for name in layers]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise InfraError(f"kconfig fragment(s) named in {layers_file} missing: {', '.join(map(str, absent))}",
                         fix="restore the file or remove it from layers.toml")
    return paths


# --------------------------------------------------------------------------------------------------- .config

def parse_dotconfig(path: Path | str) -> dict[str, str]:
    """Symbol -> value of a final .config; 'n' for "is not set". Symbols it does not mention are n too:
    look them up with ``.get(sym, "n")``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise InfraError(f"{path} does not exist", fix="run make olddefconfig in the build folder first") from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        if (m := _SET_RE.match(line)):
            out[m.group(1)] = m.group(2)
        elif (m := _UNSET_RE.match(line)):
            out[m.group(1)] = "n"
    return out


def _number(v: str) -> int | None:
    try:
        return int(v, 16) if v.lower().startswith(("0x", "-0x")) else int(v, 10)
    except ValueError:
        return None


def _same(requested: str, actual: str) -> bool:
    if requested == actual:
        return True
    a, b = _number(requested), _number(actual)
    return a is not None and a == b


# --------------------------------------------------------------------------------------------------- validation

@dataclass(frozen=True)
class Missing:
    symbol: str
    requested: str
    actual: str
    reason: str


def format_missing(missing: list[Missing]) -> list[str]:
    return [f"CONFIG_{m.symbol}: requested {m.requested}, got {m.actual} — {m.reason}" for m in missing]


def srcarch(arch: Arch) -> str:
    """The arch/<dir> of the kernel tree: where the image lands (arch/x86/boot/bzImage), else ARCH itself."""
    parts = Path(arch.image_path).parts
    return parts[1] if len(parts) > 2 and parts[0] == "arch" else arch.kernel_arch


def kernelversion(srctree: Path) -> str:
    try:
        text = (Path(srctree) / "Makefile").read_text(errors="replace")[:4000]
    except OSError:
        return "unknown"
    f = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=[ \t]*(\S*)", text, re.M))
    if not f.get("VERSION"):
        return "unknown"
    return f"{f['VERSION']}.{f.get('PATCHLEVEL', '0')}.{f.get('SUBLEVEL', '0')}{f.get('EXTRAVERSION', '')}"


def kconfig_env(arch: Arch, srctree: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the kernel's Makefile gives scripts/kconfig, for kconfiglib: the tools from the arch's
    cross prefix, SRCARCH, KERNELVERSION, CC_VERSION_TEXT (init/Kconfig reads them all)."""
    env = dict(os.environ if base is None else base)
    for var, tool in (("LD", "ld"), ("NM", "nm"), ("AR", "ar"), ("OBJCOPY", "objcopy"), ("OBJDUMP", "objdump"),
                      ("READELF", "readelf"), ("STRIP", "strip")):
        env[var] = arch.cross_compile + tool
    env.update(srctree=str(srctree), ARCH=arch.kernel_arch, SRCARCH=srcarch(arch), SUBARCH=arch.kernel_arch,
               CC=arch.cc, HOSTCC="gcc", HOSTCXX="g++", CLANG_FLAGS="", KERNELVERSION=kernelversion(srctree))
    try:
        out = proc.run([arch.cc, "--version"], timeout=30, check=False).stdout or ""
        env["CC_VERSION_TEXT"] = out.splitlines()[0] if out else ""
    except InfraError:   # no compiler: Kconfig.include then stops with "compiler not found"
        env["CC_VERSION_TEXT"] = ""
    return env


def optional_symbols(fragments: list[Fragment], optional: tuple[Path, ...] | list[Path]) -> frozenset[str]:
    """The symbols only optional fragments request: one an essential fragment also requests stays essential."""
    opt = {Path(p) for p in optional}
    essential = {s for f in fragments if Path(f.path) not in opt for s in f.values}
    return frozenset(s for f in fragments if Path(f.path) in opt for s in f.values if s not in essential)


def validate(merged: MergedConfig, dotconfig: Path, srctree: Path, arch: Arch,
             optional: frozenset[str] = frozenset()) -> list[Missing]:
    """Every requested symbol (but the ``optional`` ones) must have its requested value in the final .config
    ('n' == absent or not set). Returns one Missing per miss, with the reason from the tree's Kconfig; [] when all
    is as requested."""
    actual = parse_dotconfig(dotconfig)
    wanted = {s: r for s, r in merged.values.items() if s not in optional}
    misses = [(s, r, actual.get(s, "n")) for s, r in wanted.items() if not _same(r, actual.get(s, "n"))]
    # Requests for n are met by any name, typos included: those the .config never mentions must at least be
    # symbols of the tree (a cheap text scan, no kconfiglib).
    unmentioned = [s for s, r in wanted.items() if r == "n" and s not in actual]
    found: list[Missing] = []
    if unmentioned:
        defs = kconfig_definitions(Path(srctree))
        for s in unmentioned:
            if s not in defs:
                found.append(Missing(s, "n", "n", _undefined_reason(s, defs, arch)))
    if misses:
        reasons = explain(misses, Path(dotconfig), Path(srctree), arch)
        found += [Missing(s, r, a, reasons[s]) for s, r, a in misses]
    order = {s: i for i, s in enumerate(merged.values)}
    return sorted(found, key=lambda m: order[m.symbol])


NOT_IN_TREE = "not in this tree"


def optional_misses(merged: MergedConfig, optional: frozenset[str], dotconfig: Path, srctree: Path,
                    arch: Arch) -> list[Missing]:
    """The optional requests the .config does not carry: ``not in this tree`` when the tree (for this arch) has
    no such symbol, else the blocking ``depends on`` from a text scan (cheap: no kconfiglib). Never an error."""
    actual = parse_dotconfig(dotconfig)
    out = []
    for s in sorted(optional):
        r = merged.values[s]
        if _same(r, actual.get(s, "n")):
            continue
        mine = _for_arch(kconfig_definitions(Path(srctree)).get(s, ()), arch)
        got = actual.get(s, "n")
        if not mine:
            reason = NOT_IN_TREE
        elif r == "m" and actual.get("MODULES", "n") != "y":
            reason = ("m needs loadable modules and this kernel has none (CONFIG_MODULES is not set)"
                      + ("; built in instead" if got == "y" else ""))
        else:
            reason = _text_reason(s, r, Path(dotconfig), Path(srctree), arch)
        if not mine and r == "n":
            continue            # asking a symbol the tree lacks to be off: nothing to report
        out.append(Missing(s, r, got, reason))
    return out


def require(merged: MergedConfig, dotconfig: Path, srctree: Path, arch: Arch,
            optional: frozenset[str] = frozenset()) -> None:
    """validate(), raising ConfigError (exit 2) with one detail line per miss."""
    missing = validate(merged, dotconfig, srctree, arch, optional)
    if missing:
        raise ConfigError(
            f"{len(missing)} requested kconfig option(s) not set as requested in {dotconfig} ({arch.name})",
            detail=format_missing(missing),
            fix="drop or change those requests, or also request what they depend on (--kconfig FILE)")


def explain(misses: list[tuple[str, str, str]], dotconfig: Path, srctree: Path, arch: Arch) -> dict[str, str]:
    """symbol -> why it does not have the requested value; kconfiglib first, a text scan if that fails."""
    try:
        reasons = _explain_in_child(misses, dotconfig, srctree, arch)
        fallback_note = ""
    except _KconfiglibFailed as e:
        reasons, fallback_note = {}, f" (from a text scan of the Kconfig files; kconfiglib failed: {e})"
    out = {}
    for sym, req, act in misses:
        out[sym] = reasons.get(sym) or (_text_reason(sym, req, dotconfig, srctree, arch) + fallback_note)
    return out


class _KconfiglibFailed(Exception):
    pass


def _explain_in_child(misses: list[tuple[str, str, str]], dotconfig: Path, srctree: Path, arch: Arch) -> dict[str, str]:
    env = kconfig_env(arch, srctree)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH", "")] if p])
    request = {"dotconfig": str(Path(dotconfig).resolve()), "arch": arch.name,
               "misses": [list(m) for m in misses]}
    # cwd: Kconfig.include's cc-option makes and removes .tmp_$$ folders in the current directory.
    with tempfile.TemporaryDirectory(prefix="kpipe-kconfig-") as cwd:
        try:
            cp = proc.run([sys.executable, "-m", "kpipe.build.kconfig", "explain"], input=json.dumps(request), env=env,
                          cwd=cwd, timeout=KCONFIGLIB_TIMEOUT, check=False, what="kconfiglib")
        except InfraError as e:
            raise _KconfiglibFailed(e.message) from None
    if cp.returncode != 0:
        lines = [ln for ln in (cp.stderr or "").splitlines() if ln.strip()]
        last = re.sub(r"^[\w.]*(?:Error|Exception): ", "", lines[-1]) if lines else f"exit {cp.returncode}"
        raise _KconfiglibFailed(last)
    try:
        reasons: dict[str, str] = json.loads(cp.stdout)
        return reasons
    except json.JSONDecodeError:
        raise _KconfiglibFailed("unreadable answer from the kconfiglib child") from None


# --------------------------------------------------------------------------------------------------- kconfiglib
# Runs in the child process (python -m kpipe.build.kconfig explain), with the environment from kconfig_env().

def _kconfiglib_reasons(request: dict[str, Any]) -> dict[str, str]:
    import kconfiglib as kl

    kconf = kl.Kconfig("Kconfig", warn=False)
    kconf.load_config(request["dotconfig"])
    arch_name = request["arch"]
    out: dict[str, str] = {}
    for sym_name, req, act in request["misses"]:
        sym = kconf.syms.get(sym_name)
        if sym is not None and sym.nodes:
            out[sym_name] = _KconfExplainer(kl, kconf, arch_name).reason(sym, req, act)
    return out   # symbols kconfiglib does not know are left to the text scan (it says where they live)


class _KconfExplainer:
    def __init__(self, kl: ModuleType, kconf: kconfiglib.Kconfig, arch_name: str):
        self.kl, self.kconf, self.arch = kl, kconf, arch_name

    # -- rendering
    def sc(self, sc: kconfiglib.Symbol | kconfiglib.Choice) -> str:
        kl = self.kl
        if isinstance(sc, kl.Choice):
            return f"<choice {sc.name or ''}>".replace(" >", ">")
        if sc.is_constant:
            name: str = sc.name
            return name if name in ("y", "m", "n") else '"' + kl.escape(name) + '"'
        if not sc.nodes:
            return f"{sc.name} [=n] (no such symbol on {self.arch})"
        value = sc.str_value if sc.orig_type in (kl.BOOL, kl.TRISTATE) else f'"{sc.str_value}"'
        return f"{sc.name} [={value}]"

    def expr(self, e: _KExpr) -> str:
        text: str = self.kl.expr_str(e, self.sc)
        return text

    def terms(self, e: _KExpr, op: int) -> list[_KExpr]:
        terms: list[_KExpr] = self.kl.split_expr(e, op)
        return terms

    # -- explaining
    def reason(self, sym: kconfiglib.Symbol, req: str, act: str) -> str:
        kl = self.kl
        if sym.orig_type in (kl.BOOL, kl.TRISTATE):
            if req in ("y", "m"):
                return self.why_not_on(sym, req)
            if req == "n":
                return self.why_not_off(sym)
            return f"is a {kl.TYPE_TO_STR[sym.orig_type]} symbol: {req} is not a valid value (use y, m or n)"
        if req in ("y", "m"):
            return f"is a {kl.TYPE_TO_STR[sym.orig_type]} symbol: give it a value, not {req}"
        return self.why_not_value(sym, req)

    def and_terms(self, e: _KExpr) -> list[_KExpr]:
        """The conjuncts of an expression, each once (an `if X` block around `depends on X` repeats it)."""
        out: list[_KExpr] = []
        for t in self.terms(e, self.kl.AND):
            if not any(t is o or t == o for o in out):
                out.append(t)
        return out

    def conj(self, terms: list[_KExpr]) -> str:
        kl = self.kl
        return " && ".join(f"({self.expr(t)})" if isinstance(t, tuple) and t[0] == kl.OR and len(terms) > 1
                           else self.expr(t) for t in terms)

    def unmet_deps(self, sym: kconfiglib.Symbol, need: int) -> str | None:
        if self.kl.expr_value(sym.direct_dep) >= need:
            return None
        terms = self.and_terms(sym.direct_dep)
        unmet = [t for t in terms if self.kl.expr_value(t) < need]
        msg = f"depends on {self.conj(terms)}"
        if len(unmet) < len(terms):
            msg += "; unmet: " + self.conj(unmet)
        notes = [self.promptless_note(t) for t in unmet]
        return msg + "".join(f" ({n})" for n in notes if n)

    def promptless_note(self, term: _KExpr) -> str | None:
        """For an unmet dependency that is a plain symbol nobody can switch on by hand, say so."""
        kl = self.kl
        if not isinstance(term, kl.Symbol) or term.is_constant or not term.nodes:
            return None
        if any(n.prompt for n in term.nodes):
            return None
        sel = self.terms(term.rev_dep, kl.OR) if term.rev_dep is not self.kconf.n else []
        if not sel:
            return f"{term.name} has no prompt and nothing selects it on {self.arch}"
        return f"{term.name} has no prompt; only select sets it: {', '.join(self.expr(t) for t in sel)}"

    def why_not_on(self, sym: kconfiglib.Symbol, req: str) -> str:
        kl = self.kl
        need = 2 if req == "y" else 1
        if req == "m" and sym.orig_type == kl.BOOL:
            return "is a bool symbol: it cannot be m (use y)"
        if req == "m" and self.kconf.modules.tri_value == 0:
            return f"m needs loadable modules: {self.sc(self.kconf.modules)} (request CONFIG_MODULES=y or use y)"
        dep = self.unmet_deps(sym, need)
        if dep:
            return dep
        if sym.choice is not None and sym.choice.selection is not None and sym.choice.selection is not sym:
            return (f"is one choice of {sym.choice.name or 'a choice'}, where "
                    f"{sym.choice.selection.name} [=y] is chosen (request that one as n or this one's rivals)")
        prompts = [n for n in sym.nodes if n.prompt]
        if not prompts:
            return self.promptless(sym)
        hidden = self.hidden_prompt(sym)
        if hidden:
            return hidden
        if sym.visibility < need:
            return "limited to m: its dependencies or prompt condition evaluate to m"
        deps = "no dependencies" if sym.direct_dep is self.kconf.y else \
            f"dependencies met: {self.conj(self.and_terms(sym.direct_dep))}"
        return (f"kconfig would accept {req} now ({deps}): the .config was not made from these requests "
                "(append the merged fragment before running make olddefconfig)")

    def active_default(self, sym: kconfiglib.Symbol) -> str | None:
        """The default that applies now (the first whose condition holds), rendered."""
        for v, c in sym.defaults:
            if self.kl.expr_value(c):
                return self.expr(v) + ("" if c is self.kconf.y else f" (if {self.expr(c)})")
        return None

    def promptless(self, sym: kconfiglib.Symbol) -> str:
        kl = self.kl
        sel = [] if sym.rev_dep is self.kconf.n else self.terms(sym.rev_dep, kl.OR)
        imp = [] if sym.weak_rev_dep is self.kconf.n else self.terms(sym.weak_rev_dep, kl.OR)
        parts = []
        if sel:
            parts.append("selected by " + " || ".join(self.expr(t) for t in sel))
        if imp:
            parts.append("implied by " + " || ".join(self.expr(t) for t in imp))
        default = self.active_default(sym)
        if default:
            parts.append(f"its default: {default}")
        if not parts:
            return "symbol has no prompt and nothing selects it"
        return "symbol has no prompt; its value comes only from " + ", ".join(parts)

    def hidden_prompt(self, sym: kconfiglib.Symbol) -> str | None:
        """Prompts exist but none is offered now (`prompt "..." if COND`)."""
        prompts = [n for n in sym.nodes if n.prompt]
        if not prompts or sym.visibility:
            return None
        conds = " || ".join(self.expr(n.prompt[1]) for n in prompts)
        default = self.active_default(sym)
        return f"its prompt is only offered if {conds}" + (f"; until then its default applies: {default}"
                                                           if default else "")

    def why_not_off(self, sym: kconfiglib.Symbol) -> str:
        kl = self.kl
        active = [t for t in self.terms(sym.rev_dep, kl.OR) if kl.expr_value(t)] \
            if sym.rev_dep is not self.kconf.n else []
        if active:
            return "selected by " + " || ".join(self.expr(t) for t in active) + " (a select cannot be overridden)"
        if sym.choice is not None and sym.choice.tri_value == 2 and sym.choice.selection is sym:
            return f"is the chosen member of {sym.choice.name or 'a choice'}: request another member as y instead"
        if not any(n.prompt for n in sym.nodes) or sym.visibility == 0:
            implied = [t for t in self.terms(sym.weak_rev_dep, kl.OR) if kl.expr_value(t)] \
                if sym.weak_rev_dep is not self.kconf.n else []
            default = self.active_default(sym)
            why = []
            if implied:
                why.append("implied by " + " || ".join(self.expr(t) for t in implied))
            if default:
                why.append(f"default {default}")
            hidden = self.hidden_prompt(sym)
            head = hidden if hidden else "has no prompt"
            return f"{head}, so it cannot be switched off" + (": " + "; ".join(why) if why else "")
        return "kconfig would accept n now: the .config was not made from these requests"

    def why_not_value(self, sym: kconfiglib.Symbol, req: str) -> str:
        kl = self.kl
        dep = self.unmet_deps(sym, 1)
        if dep:
            return dep
        hidden = self.hidden_prompt(sym)
        if hidden:
            return hidden
        if not any(n.prompt for n in sym.nodes):
            return self.promptless(sym)
        n = _number(req)
        for low, high, cond in sym.ranges:
            if kl.expr_value(cond) and n is not None:
                lo, hi = _number(low.str_value), _number(high.str_value)
                if lo is not None and hi is not None and not lo <= n <= hi:
                    return f"{req} is outside its range {low.str_value}..{high.str_value}"
                break
        if sym.orig_type in (kl.INT, kl.HEX) and n is None:
            return f"is an {kl.TYPE_TO_STR[sym.orig_type]} symbol: {req} is not a number"
        return "kconfig would accept that value now: the .config was not made from these requests"


# --------------------------------------------------------------------------------------------------- text scan

@dataclass(frozen=True)
class _Definition:
    file: str                 # relative to srctree
    line: int
    depends: tuple[str, ...]  # the entry's own `depends on` expressions (not enclosing if/menu)


_ENTRY_RE = re.compile(rf"^\s*(?:menu)?config\s+({_NAME})\s*$")
_DEPENDS_RE = re.compile(r"^\s*depends\s+on\s+(.*?)\s*(?:#.*)?$")
_END_RE = re.compile(r"^\s*(?:config|menuconfig|choice|endchoice|menu|endmenu|if|endif|comment|source|mainmenu)\b")
_HELP_RE = re.compile(r"^\s*(?:help|---help---)\s*$")


def _indent(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


def _scan_file(text: str, rel: str, defs: dict[str, list[_Definition]]) -> None:
    current: tuple[str, int, list[str]] | None = None
    help_indent: int | None = None
    in_help = False

    def close() -> None:
        if current:
            defs.setdefault(current[0], []).append(_Definition(rel, current[1], tuple(current[2])))

    for lineno, line in enumerate(text.splitlines(), 1):
        if in_help:
            if not line.strip():
                continue
            if help_indent is None:
                help_indent = _indent(line)
            if _indent(line) >= help_indent and help_indent > 0:
                continue
            in_help = False
        if (m := _ENTRY_RE.match(line)):
            close()
            current = (m.group(1), lineno, [])
        elif _HELP_RE.match(line):
            in_help, help_indent = True, None
        elif _END_RE.match(line):
            close()
            current = None
        elif current and (m := _DEPENDS_RE.match(line)):
            current[2].append(m.group(1))
    close()


@lru_cache(maxsize=8)
def _definitions(srctree: str) -> dict[str, tuple[_Definition, ...]]:
    defs: dict[str, list[_Definition]] = {}
    for root, dirs, files in os.walk(srctree):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("Kconfig"):
                p = os.path.join(root, name)
                with open(p, encoding="utf-8", errors="replace") as f:
                    _scan_file(f.read(), os.path.relpath(p, srctree), defs)
    return {k: tuple(v) for k, v in defs.items()}


def kconfig_definitions(srctree: Path) -> dict[str, tuple[_Definition, ...]]:
    """Every `config NAME` of the tree, from a plain-text scan of its Kconfig files (~0.2 s, cached)."""
    return _definitions(str(Path(srctree).resolve()))


def _for_arch(defs: tuple[_Definition, ...], arch: Arch) -> list[_Definition]:
    mine = f"arch/{srcarch(arch)}/"
    return [d for d in defs if not d.file.startswith("arch/") or d.file.startswith(mine)]


def _undefined_reason(sym: str, defs: dict[str, tuple[_Definition, ...]], arch: Arch) -> str:
    elsewhere = defs.get(sym, ())
    if elsewhere:
        files = sorted({d.file for d in elsewhere})
        return (f"not a symbol on {arch.name}: defined only in {', '.join(files[:3])}"
                f"{' ...' if len(files) > 3 else ''}, which ARCH={arch.kernel_arch} does not read")
    return "not a symbol of this tree (no `config` entry for it in any Kconfig file; misspelt or removed?)"


def _annotate(expr: str, values: dict[str, str]) -> str:
    """`A && !B` -> `A [=y] && !B [=n]`, values from the .config (strings in quotes left alone)."""
    parts = re.split(r'("(?:[^"\\]|\\.)*")', expr)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(rf"\b({_NAME})\b",
                          lambda m: m.group(1) if m.group(1) in ("y", "m", "n") or m.group(1).isdigit()
                          else f"{m.group(1)} [={values.get(m.group(1), 'n')}]", parts[i])
    return "".join(parts)


def _text_reason(sym: str, req: str, dotconfig: Path, srctree: Path, arch: Arch) -> str:
    defs = kconfig_definitions(srctree)
    mine = _for_arch(defs.get(sym, ()), arch)
    if not mine:
        return _undefined_reason(sym, defs if sym in defs else {}, arch)
    values = parse_dotconfig(dotconfig)
    deps = list(dict.fromkeys(d for df in mine for d in df.depends))
    where = ", ".join(sorted({f"{d.file}:{d.line}" for d in mine}))
    if not deps:
        return f"no `depends on` in its entry ({where}); enclosing if/menu conditions or a missing prompt may block it"
    return "depends on " + " && ".join(_annotate(d, values) for d in deps) + f" ({where})"


# --------------------------------------------------------------------------------------------------- child entry

def _child_main(argv: list[str]) -> int:
    if argv[:1] != ["explain"]:
        print("usage: python -m kpipe.build.kconfig explain < request.json", file=sys.stderr)
        return 2
    request = json.load(sys.stdin)
    json.dump(_kconfiglib_reasons(request), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
