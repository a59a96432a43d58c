"""The `kpipe` command's first install: the README's set-up command on Debian's own Python (e2e: it installs
kpipe's dependencies). The command itself on synthetic trees: tests/unit/test_command.py."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kernel_fixture import make_kernel_repo, private_cache, tree_snapshot  # noqa: F401  (autouse fixture)
from kpipe_cli import REPO_ROOT

from test_command import env, readme_commands  # noqa: F401  (shared with the fast tier)


# ------------------------------------------------------------------ install on Debian's own Python

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.mark.e2e
def test_first_command_installs_on_debians_own_python(tmp_path):
    """The README's first command's install step (kpipe-setup without the job) in a fresh clone, with PATH
    limited to the system's directories: Debian's /usr/bin/python3 (PEP 668, no pyenv), a venv, and a working
    `kpipe` in it, run from outside the checkout."""
    if not Path("/usr/bin/python3").exists():
        pytest.fail("this machine has no /usr/bin/python3: the test proves the install on Debian's own Python")
    src = tmp_path / "kpipe"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(src)], check=True)
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}
    setup_cmd = readme_commands()[0].split()[0]
    r = subprocess.run([setup_cmd], cwd=src, env=env, capture_output=True, text=True, timeout=900,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-4000:]
    cfg = (src / ".venv" / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg, cfg            # made from Debian's python3, not pyenv's
    h = subprocess.run([str(src / ".venv" / "bin" / "kpipe"), "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert h.returncode == 0 and "verify" in h.stdout, h.stderr
    # a second run only checks (no venv or pip work)
    again = subprocess.run([setup_cmd], cwd=src, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "installing" not in again.stderr and "creating" not in again.stderr, again.stderr
