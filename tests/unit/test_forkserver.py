"""The tests' forked `python -m invoke` (tests/forkserver.py) is what a new interpreter does: same exit status,
stdout and stderr, for a usage error kpipe reports, a command line invoke refuses and a run that succeeds."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from forkserver import run_invoke, run_module
from kernel_fixture import REPO_ROOT, kpipe_env, make_kernel_repo, private_cache  # noqa: F401  (autouse)


def _same(forked: subprocess.CompletedProcess, real: subprocess.CompletedProcess, *same: tuple[str, str]) -> None:
    """Equal once wall-clock stamps, durations and each pair of ``same`` paths (the two runs' caches) are one."""
    def norm(text: str) -> str:
        for a, b in same:
            text = text.replace(b, a)
        return re.sub(r"\d\d:\d\d:\d\d|\d+\.\ds", "T", text)
    assert (forked.returncode, norm(forked.stdout), norm(forked.stderr)) == \
        (real.returncode, norm(real.stdout), norm(real.stderr))


@pytest.mark.parametrize("args,code", [(["build", "--arch", "sparc"], 2), (["--no-such-flag"], 1),
                                       (["apply", "--tree", "{repo}"], 0)])
def test_forked_invoke_is_a_new_interpreters_run(tmp_path, args, code):
    repo = make_kernel_repo(tmp_path / "k")
    args = [a.replace("{repo}", str(repo)) for a in args]
    forked = run_invoke(args, cwd=REPO_ROOT, env=kpipe_env(tmp_path / "cache1"), timeout=60)
    assert forked.returncode == code, forked.stderr
    real = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO_ROOT, env=kpipe_env(tmp_path / "cache2"),
                          capture_output=True, text=True, timeout=60)
    _same(forked, real, (str(tmp_path / "cache1"), str(tmp_path / "cache2")))


def test_forked_python_m_kpipe_is_a_new_interpreters_run(tmp_path):
    """`python -m kpipe` forked: a module's __main__ under the caller's environment and cwd, exit status kept."""
    env = {**os.environ, "KPIPE_CACHE": str(tmp_path / "c"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    r = run_module("kpipe", ["config"], cwd=tmp_path, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert str(tmp_path / "c") in r.stdout                      # the caller's KPIPE_CACHE, not the zygote's
    real = subprocess.run([sys.executable, "-m", "kpipe", "config"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    _same(r, real)


def test_e2e_tests_run_a_new_interpreter(monkeypatch):
    """Only the fast tier forks from the zygote: an e2e test's CLI run (also a session fixture it set up) is the
    command as a user runs it."""
    import forkserver
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/e2e/test_workflows.py::test_x (setup)")
    assert forkserver._in_an_e2e_test()
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/unit/test_command.py::test_y (call)")
    assert not forkserver._in_an_e2e_test()


def test_a_run_that_puts_the_checkout_on_pythonpath_forks_with_a_new_interpreters_sys_path(tmp_path, monkeypatch):
    """The fast tier's `python -m kpipe` runs add the checkout to PYTHONPATH (whatever the session's is): they fork
    from the zygote too, and their sys.path is the one a new interpreter would have (the checkout included)."""
    pkg = tmp_path / "showpath"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("import os, sys\nprint(os.getppid())\nprint(sys.path)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("KPIPE_TEST_NO_FORKSERVER", raising=False)     # about the zygote: on, whatever the session's
    for pythonpath in ([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")], [os.environ.get("PYTHONPATH", "")],
                       [str(tmp_path / "lib"), str(REPO_ROOT)]):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
        forked = run_module("showpath", [], cwd=tmp_path, env=env, timeout=60)
        real = subprocess.run([sys.executable, "-m", "showpath"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        assert forked.returncode == real.returncode == 0, forked.stderr + real.stderr
        assert forked.stdout.splitlines()[1] == real.stdout.splitlines()[1], pythonpath
        assert int(real.stdout.split()[0]) == os.getpid()
        forks = str(tmp_path / "lib") not in pythonpath         # a PYTHONPATH entry of its own: a new interpreter
        assert (int(forked.stdout.split()[0]) != os.getpid()) == forks, pythonpath
