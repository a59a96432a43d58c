"""Shared, session-scoped fixtures. TEMPORARY: kernels come from KPIPE_TEST_PREBUILT (default /tmp/kb) until
the build stage lands; then they are built once per session through kpipe.build."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from kpipe.build import Kernel

PREBUILT = Path(os.environ.get("KPIPE_TEST_PREBUILT", "/tmp/kb"))
SRC = Path(os.environ.get("KPIPE_TEST_SRC", "/tmp/k510/linux-source-5.10"))
_IMAGE = {"x86_64": "arch/x86/boot/bzImage", "arm64": "arch/arm64/boot/Image"}


@pytest.fixture(scope="session")
def kernels() -> dict[str, Kernel]:
    out = {}
    for arch, rel in _IMAGE.items():
        d = PREBUILT / arch
        if not (d / rel).is_file():
            continue
        release = (d / "include/config/kernel.release").read_text().strip()
        out[arch] = Kernel(arch=arch, image=d / rel, vmlinux=d / "vmlinux", system_map=d / "System.map",
                           config=d / ".config", headers=d / "hdr", release=release, compiler="gcc",
                           tree_src=SRC)
    if not out:
        pytest.skip("no prebuilt kernels")
    return out


@pytest.fixture(scope="session")
def tree_src() -> Path:
    return SRC
