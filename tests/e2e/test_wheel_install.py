"""kpipe installed as a wheel (`pip install .`, not `-e`) finds its data from any directory.

The wheel is built from a copy of the checkout's files (the checkout gets no build/ folder), installed with its
dependencies from the package index into a fresh venv, and run from a folder that is not the checkout, with only
Debian's directories on PATH: `kpipe verify --help`, `kpipe config` (which names where the data was found), the
shipped suites, kconfig layers, guest recipes and default series loaded from the installed package, and
`kpipe test` refusing with a fix (the tests belong to a checkout).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_no_bare_python import DEBIAN_PATH

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e        # downloads kpipe's dependencies from the package index

# what the installed package must load by itself: every shipped suite with its verifier sources, the kconfig
# layers and profile fragments of both arches, the guest recipes, and the default series
LOAD_EVERYTHING = """
import json
from kpipe import datadirs
from kpipe.build import kconfig, profiles
from kpipe.checks import suite
from kpipe.guest import image
from kpipe.source import patches
from kpipe.arches import ARCHES
out = {"installed": datadirs.installed(), "root": str(datadirs.data_root())}
out["suites"] = {}
for name in suite.shipped_names():
    s = suite.get(name)
    sources = sorted(p.name for p in s.sources.iterdir())
    out["suites"][name] = {"sources": sources, "expectations": s.expectations.is_file(),
                           "kconfig": [p.is_file() for p in s.kconfig]}
out["fragments"] = {a: [str(p) for p in kconfig.default_fragments(arch)] + [str(p) for p in
                        profiles.get_profile("debug").layers_for(arch)] for a, arch in ARCHES.items()}
out["recipes"] = sorted(p.name for p in image.RECIPE_DIR.iterdir())
out["series"] = [p.path.name for p in patches.load_series().patches]
print(json.dumps(out))
"""


def _copy_checkout(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_installed_wheel_finds_its_data_from_any_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    src, wheels, venv, elsewhere = (tmp_path / n for n in ("src", "wheels", "venv", "elsewhere"))
    for d in (src, wheels, elsewhere):
        d.mkdir()
    _copy_checkout(src)
    t0 = time.monotonic()
    r = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)], elsewhere, env)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = wheels.glob("kpipe-*.whl")
    r = _run([sys.executable, "-m", "venv", str(venv)], elsewhere, env)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], elsewhere, env)
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"\nwheel built and installed with its dependencies in {time.monotonic() - t0:.1f}s")
    shutil.rmtree(src)                     # nothing may still read the copy it was built from

    env["PATH"] = DEBIAN_PATH
    kpipe = str(venv / "bin" / "kpipe")
    r = _run([kpipe, "verify", "--help"], elsewhere, env, timeout=120)
    assert r.returncode == 0 and "--arch" in r.stdout and "--suite" in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])

    r = _run([kpipe, "config"], elsewhere, env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    pkg = next(venv.glob("lib/python*/site-packages/kpipe"))
    data_line = next(ln for ln in r.stdout.splitlines() if ln.startswith("data "))
    assert str(pkg / "_data") in data_line and "installed package" in data_line, r.stdout
    suites_line = next(ln for ln in r.stdout.splitlines() if ln.startswith("suites "))
    assert "mremap-dontunmap" in suites_line and "memfd-seals" in suites_line, r.stdout

    import json
    r = _run([str(venv / "bin" / "python"), "-c", LOAD_EVERYTHING], elsewhere, env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    assert got["installed"] and got["root"] == str(pkg / "_data"), got
    assert set(got["suites"]) == {"mremap-dontunmap", "memfd-seals"}, got["suites"]
    for name, s in got["suites"].items():
        assert any(f.endswith(".c") for f in s["sources"]) and s["expectations"], (name, s)
        assert s["kconfig"] and all(s["kconfig"]), (name, s)
    for arch, frags in got["fragments"].items():
        assert frags and all(f.startswith(str(pkg / "_data" / "kconfigs")) for f in frags), (arch, frags)
        assert all(Path(f).is_file() for f in frags), (arch, frags)
    assert got["recipes"], got
    assert got["series"] == ["0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch"], got

    r = _run([kpipe, "test"], elsewhere, env, timeout=120)
    assert r.returncode == 2 and "kpipe checkout" in r.stderr and "fix:" in r.stderr, (r.stdout, r.stderr)
