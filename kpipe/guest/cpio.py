"""A small writer for the kernel's initramfs format (cpio "newc", gzip-compressed).

Every entry is owned by root (uid/gid 0) with the mode we give it, and mtime 0, so the archive is the same
bytes for the same input and needs no fakeroot. Hard links are written as independent files.
"""
from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path
from typing import Callable, Protocol

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


class _BinaryWriter(Protocol):
    """What CpioWriter writes to: a binary file object or a gzip.GzipFile."""

    def write(self, data: bytes, /) -> int: ...


class CpioWriter:
    """Write newc entries to a binary file object. Paths are archive paths without a leading '/'."""

    def __init__(self, fh: _BinaryWriter):
        self._fh = fh
        self._ino = 721
        self._seen: set[str] = set()
        self._closed = False

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1,
               rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/") or "."
        if name in self._seen and name != _TRAILER:
            raise ValueError(f"cpio: duplicate entry {name!r}")
        self._seen.add(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = _MAGIC + b"".join(b"%08X" % f for f in fields)
        self._fh.write(header + encoded + _pad4(len(header) + len(encoded)))
        self._fh.write(data + _pad4(len(data)))

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | (mode & 0o7777), nlink=2)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | (mode & 0o7777), data)

    def add_symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | (mode & 0o7777), rdev=(major, minor))

    def has(self, name: str) -> bool:
        return name.strip("/") in self._seen

    def add_tree(self, root: Path, prefix: str = "") -> None:
        """Add everything under ``root`` (parents before children, sorted), keeping permission bits."""
        root = Path(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            base = prefix.strip("/") if rel_dir == "." else os.path.join(prefix.strip("/"), rel_dir)
            if rel_dir != "." and not self.has(base):
                self.add_dir(base, os.lstat(dirpath).st_mode)
            # symlinks to directories show up in dirnames: write them as links, do not descend
            for d in list(dirnames):
                full = os.path.join(dirpath, d)
                if os.path.islink(full):
                    self.add_symlink(os.path.join(base, d), os.readlink(full))
                    dirnames.remove(d)
            for f in sorted(filenames):
                full = os.path.join(dirpath, f)
                name = os.path.join(base, f)
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    self.add_symlink(name, os.readlink(full))
                elif stat.S_ISREG(st.st_mode):
                    self.add_file(name, Path(full).read_bytes(), st.st_mode)
                # sockets, fifos, devices from packages: not expected; skipped

    def close(self) -> None:
        if not self._closed:
            self._entry(_TRAILER, 0, nlink=1)
            self._closed = True


def write_gz(path: Path, build: Callable[[CpioWriter], None], level: int = 6) -> None:
    """Create ``path`` as gzip(cpio) where ``build(writer)`` adds the entries."""
    with open(path, "wb") as raw, \
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=level, mtime=0) as gz:
        w = CpioWriter(gz)
        build(w)
        w.close()


def read_names(path: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Parse a newc archive, gzipped or not: name -> (mode, uid, gid, data). For tests and sanity checks."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    out: dict[str, tuple[int, int, int, bytes]] = {}
    pos = 0
    while pos < len(data):
        if data[pos:pos + 6] != _MAGIC:
            if data[pos] == 0:     # padding between concatenated archives
                pos += 1
                continue
            raise ValueError(f"cpio: bad magic at offset {pos}")
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, size, namesize = f[1], f[2], f[3], f[6], f[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        body = data[pos:pos + size]
        pos += size + (-size % 4)
        if name == _TRAILER:
            continue
        out[name] = (mode, uid, gid, body)
    return out
