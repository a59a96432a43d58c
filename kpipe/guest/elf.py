"""The one ELF reader: the header facts kpipe checks (the machine a binary is for, static or not)."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ElfInfo:
    machine: int
    elf_class: int        # 1 = 32-bit, 2 = 64-bit
    kind: int             # e_type: 2 EXEC, 3 DYN
    interpreter: str      # PT_INTERP contents ("" when static)


def read_elf(path: Path) -> ElfInfo | None:
    """The ELF header facts of ``path``; None when it is not an ELF file."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 52 or head[:4] != b"\x7fELF":
            return None
        cls, data = head[4], head[5]
        end = "<" if data == 1 else ">"
        kind, machine = struct.unpack_from(end + "HH", head, 16)
        if cls == 2:
            phoff, = struct.unpack_from(end + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
        else:
            phoff, = struct.unpack_from(end + "I", head, 28)
            phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
        interp = ""
        for i in range(min(phnum, 256)):
            f.seek(phoff + i * phentsize)
            ph = f.read(phentsize)
            if len(ph) < 8:
                break
            p_type, = struct.unpack_from(end + "I", ph, 0)
            if p_type == 3:  # PT_INTERP
                if cls == 2:
                    off, = struct.unpack_from(end + "Q", ph, 8)
                    size, = struct.unpack_from(end + "Q", ph, 32)
                else:
                    off, = struct.unpack_from(end + "I", ph, 4)
                    size, = struct.unpack_from(end + "I", ph, 16)
                f.seek(off)
                interp = f.read(min(size, 4096)).rstrip(b"\0").decode(errors="replace") or "?"
        return ElfInfo(machine, cls, kind, interp)
