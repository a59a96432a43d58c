"""No module, test or script runs a bare `python3`/`pip` (whichever PATH finds first: on a stock Debian that is
Debian's own interpreter, without kpipe's dependencies); they run `sys.executable`. And kpipe's entry point works
with nothing but Debian's own directories on PATH."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# an argv whose program is a bare interpreter or pip: ["python3", ...], ("pip", ...), or a shell line starting so
BARE = re.compile(r"""[\[(]\s*["'](?:python3?|pip3?)["']|["'](?:sh|bash)["'],\s*["']-c["'],\s*["'](?:python3?|pip3?) """)  # noqa: E501
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _sources() -> list[Path]:
    return [*sorted((REPO / "kpipe").rglob("*.py")),
            *sorted(p for p in (REPO / "tests").rglob("*.py") if not p.is_relative_to(REPO / "tests" / "data")),
            *sorted((REPO / "scripts").glob("*.py")), REPO / "tasks.py"]


def _scanned() -> list[Path]:
    return [p for p in _sources() if p != Path(__file__).resolve()]


def test_no_bare_interpreter_in_any_argv():
    hits = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in _scanned()
            for n, line in enumerate(p.read_text().splitlines(), 1) if BARE.search(line)]
    assert hits == [], "run sys.executable (the venv's interpreter), never a bare python3/pip:\n" + "\n".join(hits)


def test_the_checker_sees_a_bare_interpreter():
    assert BARE.search('subprocess.run(["python3", "-c", "import kconfiglib"])')
    assert BARE.search("proc.run(('pip', 'install', x))")
    assert BARE.search('session.run(["sh", "-c", "python3 -m http.server"])')
    assert not BARE.search('proc.run([sys.executable, "-m", "venv", d], what="python3 -m venv")')


def test_entry_point_works_with_only_debians_directories_on_path(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = DEBIAN_PATH
    kpipe = Path(sys.executable).parent / "kpipe"
    for args in (["config"], ["verify", "--help"]):
        r = subprocess.run([str(kpipe), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (args, r.stdout[-1500:], r.stderr[-1500:])
    assert "--arch" in r.stdout
