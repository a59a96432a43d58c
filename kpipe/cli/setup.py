"""`invoke setup`: install what a fresh Debian 12 machine needs for both arches. Idempotent."""
from __future__ import annotations

import os
import shlex
import subprocess

from .. import proc
from ..arches import ARCHES
from ..errors import InfraError
from ..progress import note

HOST_PACKAGES = (
    # kernel build, native and cross
    "build-essential", "flex", "bison", "bc", "libelf-dev", "libssl-dev", "cpio", "kmod", "ccache", "rsync",
    "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross",
    # lz4c compresses the x86_64 bzImage (kconfigs/x86_64.config: KERNEL_LZ4, fast to unpack under TCG)
    "lz4",
    # QEMU for both arches
    "qemu-system-x86", "qemu-system-arm",
    # git for trees and patches; perl for checkpatch; dropbearkey makes the guests' per-run host keys
    "git", "perl", "dropbear-bin", "xz-utils", "ca-certificates",
    # --thread: a series from its mailing-list thread (kpipe.source.thread runs Debian's b4 0.12)
    "b4",
    # LAVA's dispatcher runs from a venv of its own (kpipe.lava.install)
    "python3-venv",
    # the local LAVA lab (kpipe.lava.lab, `kpipe lab up`): Debian's lava-server and its database (~26 s, 82 packages)
    "lava-server", "postgresql",
    # compile checks (kpipe.workflows.compile_checks): sparse C=2 and a clang build of the touched objects
    "sparse", "clang",
    # the test suite loads report.html in a real headless browser (escaping check)
    "chromium",
)


def foreign_arches_needed() -> list[str]:
    native = proc.run(["dpkg", "--print-architecture"]).stdout.strip()
    return sorted({a.debian_arch for a in ARCHES.values()} - {native})


def missing_packages() -> list[str]:
    cp = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *HOST_PACKAGES],
                        capture_output=True, text=True)
    installed = {ln.split()[0] for ln in cp.stdout.splitlines()
                 if len(ln.split()) > 1 and ln.split()[1].startswith("ii")}
    return [p for p in HOST_PACKAGES if p not in installed]


def run_setup() -> int:
    """The host packages and foreign dpkg arches, then LAVA's dispatcher (kpipe.lava.install: Debian's .debs
    unpacked beside a venv of their Python dependencies; never the system's Python)."""
    _host_packages()
    from ..lava.install import ensure
    lava = ensure()
    note(f"setup: LAVA dispatcher ready ({lava})")
    return 0


def _host_packages() -> None:
    missing = missing_packages()
    have = set(proc.run(["dpkg", "--print-foreign-architectures"]).stdout.split())
    foreign = [a for a in foreign_arches_needed() if a not in have]
    if not missing and not foreign:
        note("setup: everything is already installed (host packages and foreign dpkg arches)")
        return
    cmds = [["dpkg", "--add-architecture", a] for a in foreign]
    cmds += [["apt-get", "update", "-q"]]
    if missing:
        cmds += [["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]]
    if os.geteuid() != 0:
        lines = [f"sudo {shlex.join(c)}" for c in cmds]
        raise InfraError("setup needs root to install packages", detail=lines,
                         fix="run the commands above (or `sudo invoke setup`), then run kpipe again")
    for c in cmds:
        note(f"setup: {shlex.join(c)}")
        proc.run(c, env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=3600, what=c[0])
    note(f"setup: installed {', '.join(missing) or 'no packages'}; "
         f"foreign arches added: {', '.join(foreign) or 'none'}")
