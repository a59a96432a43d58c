"""kpipe's cache: where trees, builds, kernels, images and probes live, and how entries are made safely.

Entries are made in a temporary sibling folder and renamed into place once complete, so a crash or Ctrl-C
never leaves a half-written entry under its final name. Each entry carries ``manifest.json`` listing its
files with size and sha256; ``verify_entry`` detects a truncated or altered file so the caller rebuilds.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import InfraError

MANIFEST = "manifest.json"


def cache_root() -> Path:
    env = os.environ.get("KPIPE_CACHE")
    if env:
        root = Path(env)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kpipe"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(*parts: str) -> Path:
    p = cache_root().joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def key_of(*parts: object) -> str:
    """A short stable content key from the given parts."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


LOCK_REMIND = 30.0       # while waiting for a lock: say again who holds it this often (and when it changes)


def lock_holder(fd: int) -> str | None:
    """Who holds the flock on the open file ``fd``: "pid N (command line)", from /proc/locks (the kernel's
    own record, so a holder that never wrote its name is found too), else None."""
    st = os.fstat(fd)
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        rows = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for row in rows:
        parts = row.split()
        if len(parts) < 6 or parts[1] == "->" or parts[1] != "FLOCK":
            continue
        if parts[5] == want:
            return describe_pid(int(parts[4]))
    return None


def describe_pid(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        cmd = " ".join(a.decode(errors="replace") for a in argv)
    except OSError:
        cmd = "?"
    if len(cmd) > 400:
        cmd = cmd[:400] + "..."
    return f"pid {pid} ({cmd})"


@contextlib.contextmanager
def file_lock(path: Path, what: str, timeout: float | None = None) -> Iterator[None]:
    """An exclusive flock on ``path``; while another run holds it, says which process (pid and command
    line) at once, and again every LOCK_REMIND seconds or when the holder changes."""
    from .progress import note
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        told_at, told_who = None, None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                who = lock_holder(fd) or "a process kpipe cannot see"
                if told_at is None or who != told_who or now - told_at >= LOCK_REMIND:
                    waited = f" (waiting {now - start:.0f} s)" if told_at is not None else ""
                    note(f"waiting for another kpipe run that holds the {what} lock ({path}): held by "
                         f"{who}{waited}")
                    told_at, told_who = now, who
                if timeout is not None and now - start > timeout:
                    raise InfraError(f"timed out after {timeout:.0f} s waiting for the {what} lock {path} "
                                     f"held by {who}",
                                     fix="another kpipe run is using it; wait for it or stop it") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def write_manifest(entry_dir: Path, meta: dict[str, Any]) -> None:
    files: dict[str, dict[str, int | str]] = {}
    for p in sorted(entry_dir.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != MANIFEST:
            rel = str(p.relative_to(entry_dir))
            files[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    (entry_dir / MANIFEST).write_text(json.dumps({"meta": meta, "files": files}, indent=1, sort_keys=True))


def verify_entry(entry_dir: Path, deep: bool = True) -> dict[str, Any] | None:
    """The entry's meta when every listed file is present and intact; None when missing or damaged."""
    mf = entry_dir / MANIFEST
    if not mf.is_file():
        return None
    try:
        data = json.loads(mf.read_text())
        for rel, info in data["files"].items():
            p = entry_dir / rel
            if not p.is_file() or p.stat().st_size != info["size"]:
                return None
            if deep and sha256_file(p) != info["sha256"]:
                return None
        meta: dict[str, Any] = data["meta"]
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def new_entry(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on success it replaces ``final`` atomically, else it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            trash = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_entry(entry: Path, lock: Path, what: str, make: Callable[[Path], dict[str, Any]], *,
                 deep: bool = True, reuse: bool = True) -> tuple[dict[str, Any], bool]:
    """kpipe's one check / lock / build / manifest sequence: the meta of ``entry`` and whether it was a cache hit.

    A complete, intact entry (its manifest; ``deep`` also checks every file's sha256) is used as it is, unless
    ``reuse`` is false. Otherwise, under the exclusive ``lock`` (another run building the same thing waits,
    then finds it built), ``make(tmp)`` fills a temp folder beside the entry and returns the meta; the manifest
    is written and the folder renamed into place. If ``make`` raises (or Ctrl-C), nothing is left behind."""
    if reuse and (meta := verify_entry(entry, deep)) is not None:
        return meta, True
    with file_lock(lock, what):
        if reuse and (meta := verify_entry(entry, deep)) is not None:
            return meta, True                  # built by another run while this one waited
        with new_entry(entry) as tmp:
            meta = make(tmp)
            write_manifest(tmp, meta)
    return meta, False


_OWNER = re.compile(r"\.(?:tmp|old)-(\d+)(?:-|$)")


def _owner_alive(name: str) -> bool:
    """Temp and trash folders carry their creator's pid: a live creator may still be writing into one (a tree
    fetch untars for minutes without touching the folder's own mtime)."""
    m = _OWNER.search(name)
    return m is not None and Path(f"/proc/{m.group(1)}").exists()


def sweep_stale(parent: Path) -> None:
    """Remove temp folders left by a run that was killed hard (SIGKILL) before it could clean up: those whose
    creating process is gone (older ones without a pid in their name: after 60 s)."""
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name):
            with contextlib.suppress(OSError):
                if _owner_alive(p.name):
                    continue
                if _OWNER.search(p.name) or time.time() - p.stat().st_mtime > 60:
                    shutil.rmtree(p, ignore_errors=True)
