"""`kpipe clean`: cache use per kind, and removal by age, count or total size, never of what a running kpipe holds.

Kinds (folders of $KPIPE_CACHE): trees (bare mirrors), work (scratch worktrees), builds (incremental O= folders),
kernels (finished kernels), images (guest initramfs), ccache (compiler cache, evicted by ccache itself). Other
folders (downloaded packages, verifier and selftest binaries, probes) are shown but never removed here.

An entry is "in use" when one of its locks is held by a running kpipe: before removing an entry, clean takes each
of its locks non-blocking and keeps them while deleting, so a run cannot start using it half-way either.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import UsageError

KINDS = ("trees", "work", "builds", "kernels", "images")
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SPANS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.I)
    if not m:
        raise UsageError(f"--max-size {text!r} is not a size", fix="e.g. --max-size 20G (K, M, G, T)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def parse_age(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text), re.I)
    if not m:
        raise UsageError(f"--older-than {text!r} is not an age", fix="e.g. --older-than 14d (s, m, h, d, w)")
    return float(m.group(1)) * _SPANS[m.group(2).lower()]


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def du(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    with contextlib.suppress(OSError):
        total += os.lstat(path).st_blocks * 512
    return total


@dataclass
class Entry:
    kind: str
    path: Path
    size: int
    last_used: float
    locks: list[Path] = field(default_factory=list)
    extra: list[Path] = field(default_factory=list)        # removed with it (state files, dependent worktrees)
    needs_any_run_idle: bool = False                        # images: used by every run without a lock

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.path.name}" if self.kind != "kernels" else \
            f"kernels/{self.path.parent.name}/{self.path.name}"


def _last_used(p: Path) -> float:
    """The newest mtime of the entry and its direct children (cheap; a run rewrites files at the top)."""
    best = p.lstat().st_mtime
    with contextlib.suppress(OSError):
        for c in p.iterdir():
            with contextlib.suppress(OSError):
                best = max(best, c.lstat().st_mtime)
    return best


def _is_temp(name: str) -> bool:
    return name.startswith(".") or name.endswith((".lock", ".state.json", ".tmp"))


def entries(root: Path) -> list[Entry]:
    locks = root / "locks"
    out: list[Entry] = []
    for p in sorted((root / "trees").glob("*.git")):
        ident = p.name[:-4]
        wt = root / "work" / ident
        out.append(Entry("trees", p, du(p), _last_used(p),
                         [locks / f"fetch-{ident}.lock", locks / f"tree-{ident}.lock"],
                         [wt, root / "work" / f"{ident}.state.json"]))
    for p in sorted((root / "work").iterdir()) if (root / "work").is_dir() else []:
        if p.is_dir() and not _is_temp(p.name):
            out.append(Entry("work", p, du(p), _last_used(p), [locks / f"tree-{p.name}.lock"],
                             [p.parent / f"{p.name}.state.json"]))
    for p in sorted((root / "builds").iterdir()) if (root / "builds").is_dir() else []:
        if p.is_dir() and not _is_temp(p.name):
            ident = _ident_of_build(p.name, root)
            out.append(Entry("builds", p, du(p), _last_used(p),
                             [p.parent / f"{p.name}.lock"] + ([locks / f"tree-{ident}.lock"] if ident else [])))
    for p in sorted((root / "kernels").glob("*/*")):
        if p.is_dir() and not _is_temp(p.name):
            out.append(Entry("kernels", p, du(p), _last_used(p), _kernel_locks(p, root)))
    for p in sorted((root / "images").iterdir()) if (root / "images").is_dir() else []:
        if p.is_dir() and not _is_temp(p.name):
            arch = p.name.split("-", 1)[0]
            out.append(Entry("images", p, du(p), _last_used(p), [locks / f"image-{arch}.lock"],
                             needs_any_run_idle=True))
    return out


def _ident_of_build(name: str, root: Path) -> str:
    """builds/<tree ident>-<arch>-<config key>[-ccache]: the tree ident is a work/ or trees/ name it starts with."""
    known = [p.name[:-4] for p in (root / "trees").glob("*.git")]
    if (root / "work").is_dir():
        known += [p.name for p in (root / "work").iterdir() if p.is_dir()]
    return max((k for k in known if name.startswith(k + "-")), key=len, default="")


def _kernel_locks(entry: Path, root: Path) -> list[Path]:
    try:
        meta = json.loads((entry / "manifest.json").read_text()).get("meta", {})
    except (OSError, ValueError, AttributeError):
        return []
    out = []
    if meta.get("build_dir"):
        bd = Path(meta["build_dir"])
        out.append(bd.parent / f"{bd.name}.lock")
    if meta.get("src"):
        out.append(root / "locks" / f"tree-{Path(meta['src']).name}.lock")
    return out


@contextlib.contextmanager
def held(locks: list[Path]) -> Iterator[bool]:
    """Take every lock that exists non-blocking; yields False (holding none) when any is held elsewhere."""
    fds: list[int] = []
    ok = True
    try:
        for lk in locks:
            if not lk.is_file():
                continue
            fd = os.open(lk, os.O_RDWR)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                ok = False
                break
        yield ok
    finally:
        for fd in fds:
            os.close(fd)


def any_run_active(root: Path) -> bool:
    with held(sorted((root / "locks").glob("tree-*.lock"))) as idle:
        return not idle


def choose(all_entries: list[Entry], older_than: float | None, keep_last: int | None, max_size: int | None,
           now: float) -> list[tuple[Entry, str]]:
    """Which entries to remove and why (oldest use first)."""
    chosen: dict[Path, str] = {}
    if older_than is not None:
        for e in all_entries:
            if now - e.last_used > older_than:
                chosen[e.path] = f"unused for {(now - e.last_used) / 86400:.1f} days"
    if keep_last is not None:
        for kind in KINDS:
            ks = sorted((e for e in all_entries if e.kind == kind), key=lambda e: e.last_used, reverse=True)
            for e in ks[keep_last:]:
                chosen.setdefault(e.path, f"not among the {keep_last} most recently used {kind}")
    if max_size is not None:
        total = sum(e.size for e in all_entries if e.path not in chosen)
        for e in sorted(all_entries, key=lambda e: e.last_used):
            if total <= max_size:
                break
            if e.path not in chosen:
                chosen[e.path] = f"least recently used while the cache is over {human(max_size)}"
                total -= e.size
    by_path = {e.path: e for e in all_entries}
    return sorted(((by_path[p], why) for p, why in chosen.items()), key=lambda x: x[0].last_used)


def _remove(e: Entry, root: Path) -> None:
    for p in [e.path, *e.extra]:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    # Lock files stay (a few bytes each, never an entry): clean holds them while it deletes, and unlinking a lock
    # file while it is held lets a run that already opened it lock the unlinked inode while the next run locks a
    # new file of the same name: two "exclusive" holders.
    if e.kind in ("work", "trees"):                          # forget the worktree in its mirror
        repo = root / "trees" / f"{e.path.name if e.kind == 'work' else e.path.name[:-4]}.git"
        if repo.is_dir():
            subprocess.run(["git", "--git-dir", str(repo), "worktree", "prune"], capture_output=True)


def usage_lines(root: Path, all_entries: list[Entry]) -> list[str]:
    lines = [f"kpipe cache {root}", f"  {'kind':<9} {'entries':>7} {'size':>10}"]
    for kind in KINDS:
        ks = [e for e in all_entries if e.kind == kind]
        lines.append(f"  {kind:<9} {len(ks):>7} {human(sum(e.size for e in ks)):>10}")
    cc = root / "ccache"
    lines.append(f"  {'ccache':<9} {'-':>7} {human(du(cc)) if cc.is_dir() else human(0):>10}")
    others = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name not in (*KINDS, "ccache", "locks")]
    if others:
        lines.append(f"  {'other':<9} {len(others):>7} {human(sum(du(p) for p in others)):>10}  "
                     f"({', '.join(p.name for p in others)}; not removed by clean)")
    return lines


def run_clean(root: Path, older_than: str | None = None, keep_last: int | None = None, max_size: str | None = None,
              dry_run: bool = False, now: float | None = None) -> int:
    age = parse_age(older_than) if older_than else None
    limit = parse_size(max_size) if max_size else None
    if keep_last is not None and keep_last < 0:
        raise UsageError("--keep-last must be 0 or more", fix="e.g. --keep-last 2")
    now = time.time() if now is None else now
    if not root.is_dir():
        print(f"kpipe cache {root} does not exist: nothing to clean")
        return 0
    found = entries(root)
    print("\n".join(usage_lines(root, found)))
    if age is None and keep_last is None and limit is None:
        print("nothing removed: pass --older-than AGE, --keep-last N or --max-size SIZE (and --dry-run to preview)")
        return 0
    plan = choose(found, age, keep_last, limit, now)
    active = any_run_active(root)
    freed, kept = 0, 0
    verb = "would remove" if dry_run else "removed"
    for e, why in plan:
        with held(e.locks) as idle:
            if not idle or (e.needs_any_run_idle and active):
                print(f"  kept         {e.name} ({human(e.size)}): in use by a running kpipe")
                kept += 1
                continue
            if not dry_run:
                _remove(e, root)
        freed += e.size
        print(f"  {verb:<12} {e.name} ({human(e.size)}): {why}")
    if age is not None and (root / "ccache").is_dir() and shutil.which("ccache"):
        secs = int(age)
        if dry_run:
            print(f"  would run    ccache --evict-older-than {secs}s (CCACHE_DIR={root / 'ccache'})")
        else:
            r = subprocess.run(["ccache", "--evict-older-than", f"{secs}s"], capture_output=True, text=True,
                               env={**os.environ, "CCACHE_DIR": str(root / "ccache")})
            print(f"  ccache       --evict-older-than {secs}s: {(r.stdout or r.stderr).strip() or 'done'}")
    print(f"{verb} {human(freed)} in {len(plan) - kept} entr{'y' if len(plan) - kept == 1 else 'ies'}"
          + (f"; kept {kept} in use" if kept else ""))
    return 0
