"""The compilers kpipe uses: one lookup per compiler and process (path, version, target), shared by the
kernel build, the verifier and the selftests, which all key their caches on it."""
from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import proc
from ..errors import InfraError


@dataclass(frozen=True)
class Compiler:
    name: str
    path: Path
    version: str      # first line of `cc --version`
    machine: str      # `cc -dumpmachine`

    @property
    def ident(self) -> str:
        """What a cache key of something this compiler built must include."""
        return f"{self.path}|{self.version}|{self.machine}"


@functools.lru_cache(maxsize=None)
def compiler(cc: str) -> Compiler:
    path = shutil.which(cc)
    if path is None:
        raise InfraError(f"the compiler {cc} is not installed (or not on PATH)",
                         fix="run `invoke setup` (installs build-essential and gcc-aarch64-linux-gnu)")
    lines = proc.run([cc, "--version"], timeout=60, what=cc).stdout.splitlines()
    machine = proc.run([cc, "-dumpmachine"], timeout=60, what=cc).stdout.strip()
    return Compiler(cc, Path(path).resolve(), lines[0].strip() if lines else cc, machine)
