"""The ramdisk of a LAVA job: kpipe's guest image with the test payload inside, as ONE newc archive.

LAVA appends its test overlay to a ``cpio.newc`` ramdisk by extracting it with ``cpio --extract`` and
archiving the folder again; cpio stops at the first trailer, so the concatenated archives kpipe's own boots
use would lose everything after the base image. This module copies the base image's entries verbatim
(except ``/init``) and adds the payload after them, under one trailer:

  /init                       kpipe's LAVA init (a root shell on the console instead of sshd)
  /etc/profile                the shell prompt LAVA waits for
  /kpipe/bin/<verifier>       the verifier, same binary as `kpipe verify` pushes over SSH
  /kpipe/expect.txt           the policy's expectations file
  /kpipe/selftests/<binary>   the built selftests (vm/mremap_dontunmap shares the verifier's name)
  /kpipe/selftests.list       name, timeout, binary, args per line
  /kpipe/run-*.sh             the test steps (templates beside this file)
  /kpipe/kmemleak-scan.sh     kmemleak's scans, the same lines `kpipe verify` runs over SSH (leak scan on)
"""
from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ..checks import kmemleak
from ..guest.cpio import CpioWriter

TEMPLATES = Path(__file__).resolve().parent / "templates"
PROMPT = "kpipe-lava# "
_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"
REPLACED = {"init", "etc/profile"}


@dataclass(frozen=True)
class Payload:
    """What goes under /kpipe in the ramdisk."""
    verifier: Path
    expect_text: str
    verifier_timeout: int
    case_timeout: int
    selftests: tuple[tuple[str, int, Path, tuple[str, ...]], ...]    # name, timeout, binary, args
    dmesg_pattern: str
    ready_marker: str = "KPIPE-GUEST-READY"
    hugepages: int = 16
    leak_scan: bool = False          # kmemleak's two scans and report after the tests (run-kmemleak.sh)
    cases: tuple[str, ...] = ()      # only these verifier cases, by name (--case); () runs every case


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def render(name: str, **variables: object) -> str:
    return _env().get_template(name).render(**variables)


def base_entries(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(name, raw entry bytes incl. padding) of each entry of an uncompressed newc stream, trailers skipped;
    the concatenated archives of a kpipe image (padding between them) are read through."""
    pos, n = 0, len(data)
    while pos < n:
        if data[pos:pos + 6] != _MAGIC:
            if data[pos] == 0:
                pos += 1
                continue
            raise ValueError(f"cpio: bad magic at offset {pos}")
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        size, namesize = f[6], f[11]
        start = pos
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        pos += size + (-size % 4)
        if name != _TRAILER:
            yield name, data[start:pos]


def write_ramdisk(base_initrd: Path, payload: Payload, dest: Path) -> Path:
    """gzip(newc) at ``dest``: the base image's entries, then kpipe's LAVA init and the payload."""
    data = gzip.decompress(Path(base_initrd).read_bytes())
    selftest_list = "".join(f"{name} {int(t)} {binary.name} {' '.join(args)}\n"
                            for name, t, binary, args in payload.selftests)
    scripts = {
        "kpipe/run-verifier.sh": render("run-verifier.sh", binary=payload.verifier.name,
                                        timeout=payload.verifier_timeout, case_timeout=payload.case_timeout,
                                        cases="".join(f" {c}" for c in payload.cases)),
        "kpipe/run-selftests.sh": render("run-selftests.sh"),
        "kpipe/run-dmesg.sh": render("run-dmesg.sh", pattern=payload.dmesg_pattern),
        "kpipe/step.sh": render("step.sh"),
    }
    if payload.leak_scan:
        scripts["kpipe/run-kmemleak.sh"] = render("run-kmemleak.sh", timeout=int(kmemleak.SCAN_TIMEOUT))
        scripts["kpipe/kmemleak-scan.sh"] = kmemleak.SCAN_SCRIPT + "\n"
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        names = set()
        for name, entry in base_entries(data):
            if name in REPLACED or name.startswith("kpipe/") or name == "kpipe":
                continue
            gz.write(entry)
            names.add(name)
        w = CpioWriter(gz)
        w._ino = 100000          # past the base image's inode numbers: hard links must not be implied
        w._seen |= names
        w.add_file("init", render("init.sh", prompt=PROMPT, ready_marker=payload.ready_marker,
                                  hugepages=payload.hugepages).encode(), 0o755)
        if "etc" not in names:
            w.add_dir("etc", 0o755)
        w.add_file("etc/profile", render("profile", prompt=PROMPT).encode(), 0o644)
        w.add_dir("kpipe", 0o755)
        w.add_dir("kpipe/bin", 0o755)
        w.add_file(f"kpipe/bin/{payload.verifier.name}", payload.verifier.read_bytes(), 0o755)
        w.add_file("kpipe/expect.txt", payload.expect_text.encode(), 0o644)
        # selftests in their own folder: vm/mremap_dontunmap has the verifier's file name
        w.add_dir("kpipe/selftests", 0o755)
        seen: dict[str, Path] = {}
        for name, _t, binary, _args in payload.selftests:
            if binary.name in seen and Path(seen[binary.name]).resolve() != Path(binary).resolve():
                raise ValueError(f"two different selftest binaries named {binary.name} ({seen[binary.name]}, {binary})")
            if binary.name not in seen:
                seen[binary.name] = binary
                w.add_file(f"kpipe/selftests/{binary.name}", Path(binary).read_bytes(), 0o755)
        w.add_file("kpipe/selftests.list", selftest_list.encode(), 0o644)
        for rel, text in scripts.items():
            w.add_file(rel, text.encode(), 0o755)
        w.close()
    os.replace(tmp, dest)
    return dest
