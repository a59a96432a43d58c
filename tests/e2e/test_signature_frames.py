"""Crash signatures' frames decoded to file:line with addr2line on the session's real debug kernels (e2e).
Signatures and folding on captured consoles: tests/unit/test_signatures.py."""
from __future__ import annotations

import re

import pytest
from kpipe.checks.signatures import annotate, annotate_run, decode, fold, signature


@pytest.mark.parametrize("arch,entry", [("x86_64", "__x64_sys_mremap"), ("arm64", "__arm64_sys_mremap")])
def test_frames_decode_to_file_and_line_from_a_real_vmlinux(kernels, arch: str, entry: str) -> None:
    """addr2line on the session's debug kernel (kpipe's build, debug info on): a frame names mm/mremap.c:LINE."""
    k = kernels[arch]
    assert k.vmlinux is not None and k.system_map is not None, "the debug profile keeps vmlinux and System.map"
    smap = k.system_map.read_text()
    vtr = next(ln.split()[2] for ln in smap.splitlines() if ln.split()[2].startswith("vma_to_resize"))
    out = decode([(vtr, "0x40"), (entry, "0x40")], k.vmlinux, k.system_map, arch)
    assert re.fullmatch(r"vma_to_resize mm/mremap\.c:\d+", out[0]), out
    assert re.fullmatch(r"sys_mremap mm/mremap\.c:\d+", out[1]), out
