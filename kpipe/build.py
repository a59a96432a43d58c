"""Build stage (placeholder: the Kernel value; the build itself lands next)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Kernel:
    arch: str
    image: Path          # bzImage / Image
    vmlinux: Path | None
    system_map: Path | None
    config: Path         # the final .config
    headers: Path        # uapi headers installed by headers_install: <headers>/include/...
    release: str         # make kernelrelease
    compiler: str        # gcc --version first line
    key: str = ""
    seconds: float = 0.0
    cached: bool = False
    tree_src: Path | None = None   # the scratch checkout the kernel was built from
    extra: dict = field(default_factory=dict)
