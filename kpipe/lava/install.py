"""Installing LAVA's dispatcher for kpipe, without apt-get install's ~147 packages and without touching the
system's Python.

Debian bookworm's lava-dispatcher, lava-dispatcher-host and lava-common are pure Python: their .debs are
downloaded with ``apt-get download``, unpacked with ``dpkg -x`` into ``$KPIPE_CACHE/lava/<version>/root``, and run
from a venv beside them holding their Python dependencies (and lavacli, for ``--submit``). libguestfs is not
installed: kpipe's jobs use a ``cpio.newc`` ramdisk, to which the dispatcher appends its overlay itself; a stub
``guestfs`` module lets the dispatcher import and fails loudly if a job ever asks for it.

Idempotent: a finished install is a folder with a ``manifest.json``; it is built in a temp folder and renamed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import cache, proc
from ..errors import InfraError

PACKAGES = ("lava-dispatcher", "lava-dispatcher-host", "lava-common")
# The dispatcher's Python dependencies (Depends: of the .debs, less guestfs, bmap-tools and aiohttp, which
# QEMU jobs do not import), and lavacli for submission to a server.
PY_DEPS = ("voluptuous", "pyyaml", "jinja2", "pexpect", "configobj", "requests", "setproctitle", "pytz",
           "netifaces", "pyudev", "python-magic", "lavacli")
FORMAT = 1          # bump when the layout of an install changes
GUESTFS_STUB = '''"""kpipe: libguestfs is not installed; kpipe's LAVA jobs use cpio.newc ramdisks, which need none."""


class GuestFS:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("libguestfs is not installed (kpipe installs lava-dispatcher without it): "
                           "use a cpio.newc ramdisk, or apt-get install python3-guestfs")
'''


@dataclass(frozen=True)
class Lava:
    """An installed dispatcher: how to run its programs."""
    root: Path              # the unpacked .debs
    python: Path            # the venv's interpreter
    version: str

    @property
    def site(self) -> Path:
        return self.root / "usr/lib/python3/dist-packages"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.site)
        env.pop("PYTHONHOME", None)
        return env

    def lava_run(self) -> list[str]:
        return [str(self.python), str(self.root / "usr/bin/lava-run")]

    def lavacli(self) -> list[str]:
        return [str(self.python), "-m", "lavacli"]


def _lava_dir() -> Path:
    return cache.cache_dir("lava")


def _candidate(pkg: str) -> str:
    cp = proc.run(["apt-cache", "policy", pkg], timeout=60, check=False, what="apt-cache policy")
    for line in (cp.stdout or "").splitlines():
        if line.strip().startswith("Candidate:"):
            v = line.split(":", 1)[1].strip()
            if v and v != "(none)":
                return v
    raise InfraError(f"apt offers no {pkg} (Debian bookworm has it in main)",
                     fix="run `apt-get update` (the machine needs Debian 12's main component)")


def find_installed() -> Lava | None:
    """The newest finished install, or None."""
    best = None
    for m in sorted(_lava_dir().glob("*/manifest.json")):
        try:
            data = json.loads(m.read_text())
        except (OSError, ValueError):
            continue
        if data.get("format") != FORMAT:
            continue
        lava = Lava(m.parent / "root", m.parent / "venv/bin/python", data["version"])
        if lava.python.exists() and (lava.root / "usr/bin/lava-run").is_file():
            best = lava
    return best


def ensure(log: Path | None = None, quiet: bool = False) -> Lava:
    """The installed dispatcher (installing it on first use: ~20 s with a warm pip cache)."""
    found = find_installed()
    if found is not None:
        return found
    version = _candidate("lava-dispatcher")
    dest = _lava_dir() / f"{version}-f{FORMAT}"
    with cache.file_lock(_lava_dir() / "install.lock", "lava-dispatcher install"):
        found = find_installed()
        if found is not None:
            return found
        t0 = time.monotonic()
        if dest.exists():
            shutil.rmtree(dest)
        tmp = Path(tempfile.mkdtemp(prefix=".install-", dir=_lava_dir()))
        try:
            _install_into(tmp, version, log)
            (tmp / "manifest.json").write_text(json.dumps(
                {"format": FORMAT, "version": version, "packages": list(PACKAGES), "python_deps": list(PY_DEPS),
                 "seconds": round(time.monotonic() - t0, 1)}, indent=2))
            tmp.rename(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if not quiet:
        print(f"kpipe: lava-dispatcher {version} installed in {dest} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    return Lava(dest / "root", dest / "venv/bin/python", version)


def _install_into(d: Path, version: str, log: Path | None) -> None:
    debs = d / "debs"
    debs.mkdir()
    proc.run(["apt-get", "download", *[f"{p}={version}" for p in PACKAGES]], cwd=debs, log=log, timeout=600,
             what="apt-get download lava-dispatcher")
    root = d / "root"
    for deb in sorted(debs.glob("*.deb")):
        proc.run(["dpkg-deb", "-x", str(deb), str(root)], log=log, timeout=120, what="dpkg-deb -x")
    shutil.rmtree(debs)
    if not (root / "usr/bin/lava-run").is_file():
        raise InfraError("lava-run is not in the unpacked lava-dispatcher package", log=str(log) if log else None)
    proc.run([sys.executable, "-m", "venv", str(d / "venv")], log=log, timeout=300, what="python3 -m venv",
             )
    py = d / "venv/bin/python"
    proc.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", *PY_DEPS], log=log,
             timeout=900, what="pip install (lava-dispatcher's Python dependencies)")
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "guestfs.py").write_text(GUESTFS_STUB)
    lava = Lava(root, py, version)
    cp = subprocess.run([*lava.lava_run(), "--help"], env=lava.env(), capture_output=True, text=True, timeout=120)
    if cp.returncode != 0:
        raise InfraError("the unpacked lava-run does not start", detail=(cp.stderr or cp.stdout).splitlines()[-10:],
                         fix="read the traceback: a Python dependency may be missing from kpipe.lava.install.PY_DEPS")


def main() -> int:
    """`python3 -m kpipe.lava.install`: install (or find) the dispatcher and print where it is."""
    try:
        lava = ensure()
    except InfraError as e:
        print(e.render() if hasattr(e, "render") else e, file=sys.stderr)
        return 2
    print(f"lava-dispatcher {lava.version}: {lava.root} (python {lava.python})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
