"""The `kpipe` command: one task collection behind two entry points, run from any directory, defaults from
invoke's config system, output never in a kernel tree. Fast tier: synthetic trees, nothing is built or booted.

`python3 -m kpipe` is exactly what the `kpipe` console script runs (kpipe.cli.program:main);
tests/e2e/test_first_install.py runs the README's first command on Debian's own Python, and
tests/e2e/test_wheel_install.py checks the installed script itself."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernel_fixture import make_kernel_repo, private_cache, tree_snapshot  # noqa: F401  (autouse fixture)
from kpipe_cli import REPO_ROOT


def run_kpipe(*args: str, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m kpipe ARGS` as a process of its own, forked from the session's zygote (tests/forkserver.py)."""
    from forkserver import run_module
    return run_module("kpipe", [*args], cwd=cwd, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def env(tmp_path, private_cache):
    """A user with no kpipe config files, a private cache and runs folder, kpipe importable from this checkout."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    e = {k: v for k, v in os.environ.items() if not k.startswith("KPIPE_") and not k.startswith("XDG_")}
    e.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_STATE_HOME": str(home / "state"),
              "KPIPE_CACHE": str(private_cache), "KPIPE_CCACHE": "0",
              "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])})
    return e


def test_help_lists_every_task_of_the_one_collection(tmp_path, env):
    from invoke import Collection

    import kpipe.cli.tasks
    r = run_kpipe("--help", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "Usage: kpipe" in r.stdout
    names = sorted(Collection.from_module(kpipe.cli.tasks).task_names)
    assert {"verify", "premerge", "bisect", "config", "setup", "test"} <= set(names)
    for name in names:
        assert f"\n  {name} " in r.stdout, (name, r.stdout)
    # `invoke` in the checkout sees the same collection (tasks.py re-exports kpipe.cli.tasks)
    inv = subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert inv.returncode == 0, inv.stderr
    assert sorted(ln.split()[0] for ln in inv.stdout.splitlines()[2:] if ln.startswith("  ") and
                  not ln.startswith("   ")) == names


def test_task_help_and_completion(tmp_path, env):
    r = run_kpipe("verify", "--help", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    for flag in ("--arch", "--tree", "--expect", "--profile", "--bisect-exit-codes", "--out"):
        assert flag in r.stdout
    assert "KPIPE_ARCH" in r.stdout
    c = run_kpipe("--complete", "--", "kpipe", "ver", cwd=tmp_path, env=env)
    assert "verify" in c.stdout.split()
    c = run_kpipe("--complete", "--", "kpipe", "verify", "--", cwd=tmp_path, env=env)
    assert {"--arch", "--expect", "--bisect-exit-codes"} <= set(c.stdout.split())
    s = run_kpipe("--print-completion-script", "bash", cwd=tmp_path, env=env)
    assert "complete -F _complete_kpipe" in s.stdout and "kpipe --complete" in s.stdout


def _config(cwd: Path, env: dict) -> dict[str, tuple[str, str]]:
    r = run_kpipe("config", cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    out = {}
    for ln in r.stdout.splitlines():
        if " from " in ln and not ln.startswith("config files"):
            key, rest = ln.split(None, 1)
            value, source = rest.rsplit(" from ", 1)
            out[key] = (value.strip(), source.strip())
    return out


def test_config_shows_each_value_and_where_it_came_from(tmp_path, env):
    tree = make_kernel_repo(tmp_path / "linux")
    (Path(env["XDG_CONFIG_HOME"]) / "kpipe.yaml").write_text(
        "arch: arm64\ntree: debian:6.12\nkconfigs: [a.config, b.config]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "kpipe.yaml").write_text("profile: fast\n")
    c = _config(elsewhere, {**env, "KPIPE_JOBS": "3"})
    assert c["arch"] == ("arm64", str(Path(env["XDG_CONFIG_HOME"]) / "kpipe.yaml"))
    assert c["tree"][0] == "debian:6.12"
    assert c["kconfigs"][0] == "a.config, b.config"
    assert c["profile"] == ("fast", str(elsewhere / "kpipe.yaml"))
    assert c["jobs"] == ("3", "environment KPIPE_JOBS")
    assert c["out"][1].startswith("built-in default")
    assert c["runs"] == (str(Path(env["XDG_STATE_HOME"]) / "kpipe" / "runs"),
                         "built-in default ($XDG_STATE_HOME/kpipe/runs)")
    # inside a kernel git tree (even a subfolder) that tree beats the config files; KPIPE_TREE beats it
    c = _config(tree / "mm", {**env, "KPIPE_KCONFIGS": "x.config,y.config", "KPIPE_RUNS": str(tmp_path / "r")})
    assert c["tree"] == (str(tree.resolve()), "the kernel git tree you are in")
    assert c["kconfigs"] == ("x.config, y.config", "environment KPIPE_KCONFIGS")
    assert c["runs"] == (str(tmp_path / "r"), "environment KPIPE_RUNS")
    c = _config(tree, {**env, "KPIPE_TREE": "debian:6.1"})
    assert c["tree"] == ("debian:6.1", "environment KPIPE_TREE")
    # the leak scan: on by default, off from a file's "no" or the environment's 0
    assert _config(elsewhere, env)["leak_scan"] == ("True", "built-in default")
    (elsewhere / "kpipe.yaml").write_text("leak_scan: no\n")
    assert _config(elsewhere, env)["leak_scan"] == ("False", str(elsewhere / "kpipe.yaml"))
    assert _config(elsewhere, {**env, "KPIPE_LEAK_SCAN": "1"})["leak_scan"] == ("True", "environment KPIPE_LEAK_SCAN")
    assert _config(tmp_path, {**env, "KPIPE_LEAK_SCAN": "0"})["leak_scan"] == ("False", "environment KPIPE_LEAK_SCAN")
    # the kpipe checkout itself is not a kernel tree
    (Path(env["XDG_CONFIG_HOME"]) / "kpipe.yaml").unlink()
    assert _config(REPO_ROOT, env)["tree"] == ("-", "built-in default (debian:5.10)")


def test_config_defaults_reach_the_tasks(tmp_path, env):
    """KPIPE_ARCH is what `build` uses when --arch is left out (a bad value fails before any fetch)."""
    r = run_kpipe("build", cwd=tmp_path, env={**env, "KPIPE_ARCH": "sparc-from-env"})
    assert r.returncode == 2, r.stderr
    assert "sparc-from-env" in r.stderr
    r = run_kpipe("build", "--arch", "sparc-from-cli", cwd=tmp_path, env={**env, "KPIPE_ARCH": "sparc-from-env"})
    assert r.returncode == 2 and "sparc-from-cli" in r.stderr and "sparc-from-env" not in r.stderr, r.stderr
    r = run_kpipe("build", cwd=tmp_path, env={**env, "KPIPE_JOBS": "many"})
    assert r.returncode == 2 and "KPIPE_JOBS" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_command_line_mistakes_are_usage_errors_not_kernel_verdicts(tmp_path, env):
    """invoke's own parser exits 1 on an unknown flag; for kpipe 1 means "the kernel misbehaved" (and `git bisect
    run` would mark the commit bad), so kpipe makes it 2, or 128 (git bisect run aborts) with --bisect-exit-codes."""
    r = run_kpipe("verify", "--no-such-flag", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "No idea what '--no-such-flag' is" in r.stderr, r.stderr
    r = run_kpipe("verify", "--bisect-exit-codes", "--no-such-flag", cwd=tmp_path, env=env)
    assert r.returncode == 128, r.stderr
    r = run_kpipe("verify", "--bisect-exit-codes", "--arch", "sparc", cwd=tmp_path, env=env)
    assert r.returncode == 128 and "abort" in r.stderr, r.stderr
    r = run_kpipe("no-such-task", cwd=tmp_path, env=env)
    assert r.returncode == 2, r.stderr


def test_runs_inside_a_kernel_tree_without_touching_it(tmp_path, env):
    """`kpipe apply` in a kernel tree's subfolder: --tree is that tree, the run folder goes under $KPIPE_RUNS
    (with `latest`), and not one byte of the tree (files, mtimes, .git) changes."""
    tree = make_kernel_repo(tmp_path / "linux")
    runs = tmp_path / "runs"
    before = tree_snapshot(tree)
    r = run_kpipe("apply", cwd=tree / "mm", env={**env, "KPIPE_RUNS": str(runs)})
    assert r.returncode == 0, r.stderr
    assert "applied" in r.stdout and "mm: Allow shmem mappings with MREMAP_DONTUNMAP" in r.stdout
    assert f"reproduce with: kpipe apply --tree {tree.resolve()}" in r.stderr
    assert tree_snapshot(tree) == before
    made = [p for p in runs.iterdir() if p.name != "latest"]
    assert len(made) == 1 and made[0].name.endswith("-apply"), made
    assert (runs / "latest").resolve() == made[0].resolve()
    assert (made[0] / "apply.log").is_file()
    # --out still wins (and leaves the runs folder alone)
    out = tmp_path / "mine"
    r = run_kpipe("apply", "--out", str(out), cwd=tree, env={**env, "KPIPE_RUNS": str(runs)})
    assert r.returncode == 0 and out.is_dir(), r.stderr
    assert [p for p in runs.iterdir() if p.name != "latest"] == made
    # with no KPIPE_RUNS: the XDG state folder, not the current directory
    r = run_kpipe("apply", cwd=tree, env=env)
    assert r.returncode == 0, r.stderr
    assert (Path(env["XDG_STATE_HOME"]) / "kpipe" / "runs" / "latest").resolve().name.endswith("-apply")
    assert tree_snapshot(tree) == before


def test_invoke_in_the_checkout_still_works(tmp_path, env):
    tree = make_kernel_repo(tmp_path / "linux")
    r = subprocess.run([sys.executable, "-m", "invoke", "apply", "--tree", str(tree), "--out", str(tmp_path / "o")],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "reproduce with: invoke apply" in r.stderr and (tmp_path / "o" / "apply.log").is_file()


def readme_commands() -> list[str]:
    """The set-up section's commands (indented code lines), in order."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [ln.strip() for ln in section.splitlines() if ln.startswith("    ") and ln.strip()]


def test_readme_set_up_is_two_commands_and_ci_runs_the_second():
    cmds = readme_commands()
    assert cmds == ["./kpipe-setup verify --arch all", "./kpipe-setup test"], cmds
    ci = [ln.strip() for ln in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.lstrip().startswith("#")]
    assert ci[-1] == f"exec {cmds[1]}", ci


def test_usage_errors_found_only_in_a_run_are_caught_before_any_build(tmp_path, env):
    """--expect, --selftests and --extra-test were checked deep in a run (after a full build: exit 2, so `git bisect
    run` skipped every commit with 125). They are the same on every commit: 128 at once, nothing fetched or built."""
    static = tmp_path / "not-an-elf"
    static.write_text("#!/bin/sh\necho hi\n")
    for bad, says in ((["--expect", "bogus"], "bogus"), (["--selftests", "nosuch"], "unknown selftest name"),
                      (["--extra-test", str(tmp_path / "missing.c")], "no such file"),
                      (["--extra-test", str(static)], "not a C file (.c) and not an ELF executable"),
                      (["--profile", "nosuch"], "unknown profile")):
        t0 = time.monotonic()
        r = run_kpipe("verify", "--bisect-exit-codes", *bad, cwd=tmp_path, env=env)
        assert r.returncode == 128, (bad, r.stderr[-2000:])
        assert says in r.stderr and "abort" in r.stderr, r.stderr[-2000:]
        assert "fetch: start" not in r.stderr and "build: start" not in r.stderr, r.stderr[-2000:]
        assert time.monotonic() - t0 < 30
        r = run_kpipe("verify", *bad, cwd=tmp_path, env=env)
        assert r.returncode == 2, r.stderr[-2000:]
