"""Which objects of a build get per-object instrumentation (gcov coverage, UBSAN), from the files a series
touches.

kbuild reads ``GCOV_PROFILE_<name>.o`` / ``UBSAN_SANITIZE_<name>.o`` (scripts/Makefile.lib, by basename) before
the folder's own ``GCOV_PROFILE := n``: given on make's command line, such a variable instruments every object of
that basename in the tree, including those in folders that opt out (boot code, the vDSO, the instrumentation's
own runtime), which then fail to link or to run. So a basename is instrumented only when no folder that opts out
of that kind holds a source file of the same name; otherwise it is left out with the reason.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# what a profile may ask for (kconfigs/profiles.toml `instrument`): make variable prefix -> what it is for
KINDS = {"GCOV_PROFILE": "gcov coverage of the changed lines", "UBSAN_SANITIZE": "UBSAN on the touched code"}


@dataclass(frozen=True)
class Plan:
    objects: tuple[str, ...]              # tree-relative object paths instrumented, e.g. mm/mremap.o
    make_vars: tuple[str, ...]            # GCOV_PROFILE_mremap.o=y ...
    skipped: tuple[str, ...] = ()         # "mm/foo.c: GCOV_PROFILE: arch/x86/boot/foo.c's folder opts out"


def _opts_out(makefile: Path, kind: str, base: str) -> bool:
    try:
        text = makefile.read_text(errors="replace")
    except OSError:
        return False
    pat = rf"^\s*{kind}(_{re.escape(base)}\.o)?\s*:?=\s*n\b"
    return re.search(pat, text, re.M) is not None


def _namesakes(src: Path, base: str) -> list[PurePosixPath]:
    """Every C or assembler source of that basename in the checkout (git knows them; a walk of 70k files would
    not be cheap)."""
    cp = subprocess.run(["git", "-C", str(src), "ls-files", "-z", "--", f"{base}.c", f"*/{base}.c", f"{base}.S",
                         f"*/{base}.S"], capture_output=True, text=True, timeout=60)
    if cp.returncode != 0:
        return [PurePosixPath(q.relative_to(src)) for q in src.rglob(f"{base}.[cS]")]
    return [PurePosixPath(n) for n in cp.stdout.split("\0") if n]


def plan(src: Path, touched: list[str], kinds: tuple[str, ...]) -> Plan:
    """The objects built from the touched C files (``.c`` beside a kbuild Makefile), each instrumented for
    every kind in ``kinds`` that no same-named object's folder opts out of."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown instrumentation kind(s) {unknown}; known: {sorted(KINDS)}")
    objects: list[str] = []
    make_vars: list[str] = []
    skipped: list[str] = []
    if not kinds:
        return Plan((), ())
    for rel in sorted(set(touched)):
        p = PurePosixPath(rel)
        if p.suffix != ".c" or not (src / p.parent / "Makefile").is_file() or not (src / p).is_file():
            continue
        base = p.stem
        namesakes = _namesakes(src, base)
        took = False
        for kind in kinds:
            blocker = next((q for q in namesakes if _opts_out(src / q.parent / "Makefile", kind, base)), None)
            if blocker is not None:
                skipped.append(f"{rel}: {kind}: {blocker}'s folder opts out of it, and kbuild matches the "
                               f"variable by basename ({base}.o)")
                continue
            make_vars.append(f"{kind}_{base}.o=y")
            took = True
        if took:
            objects.append(str(p.with_suffix(".o")))
    return Plan(tuple(objects), tuple(make_vars), tuple(skipped))
