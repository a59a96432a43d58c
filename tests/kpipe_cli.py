"""Running kpipe's real CLI (`invoke ...`) from tests, and reading what a run wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    out: Path | None

    @property
    def result(self) -> dict:
        """result.json, checked against kpipe's JSON Schema on every read."""
        from kpipe.report.results import schema_problems
        assert self.out is not None
        data = json.loads((self.out / "result.json").read_text())
        problems = schema_problems(data)
        assert not problems, f"{self.out / 'result.json'} does not conform to the schema: {problems[:10]}"
        return data

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return f"exit {self.code}\n--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-6000:]}"


LEAK_SCAN_ON = {"KPIPE_LEAK_SCAN": "1"}     # a run of the tests about kmemleak (conftest turns the scan off)

# The tree's own tests without 5.10's vm/userfaultfd stress: with 2 CPUs its "racing" bounce can hang in user
# space (seen once in four arm64 runs: no task blocked in the kernel, both CPUs idle; see the project notes).
# That test is exercised by tests/e2e/test_selftests.py; this selection proves the workflows.
SELFTESTS = ("--selftests", "mremap_dontunmap,map_fixed_noreplace,mlock2-tests,memfd_test")


def invoke(*args: str, out: Path | None = None, env: dict | None = None, timeout: float = 1800,
           cwd: Path = REPO_ROOT) -> Ran:
    from forkserver import run_invoke       # a process of its own, forked with kpipe already imported
    cmd = [*args]
    if out is not None:
        cmd += ["--out", str(out)]
    full_env = {**os.environ, **(env or {})}
    p = run_invoke(cmd, cwd=cwd, env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)
    sys.stderr.write(p.stderr[-3000:])
    return Ran(p.returncode, p.stdout, p.stderr, out)


def results_by_name(result: dict, arch: str, suite: str | None = None) -> dict[str, dict]:
    return {t["name"]: t for t in result["arches"][arch]["tests"] if suite is None or t["suite"] == suite}


def assert_compile_checks_found_nothing_new(warn: dict) -> None:
    """premerge's compile checks on the seed, per arch: the three tools ran on the touched object, nothing new,
    nothing failed on either side, sparse's old warnings seen on both, the one patch builds on its own."""
    for arch, w in warn.items():
        assert sorted(w["tools"]) == ["clang", "gcc-W=1", "sparse"], (arch, w["tools"])
        for tool, t in w["tools"].items():
            assert t["new"] == [] and t["failed"] == [] and t["baseline_failed"] == [], (arch, tool, t)
        assert w["tools"]["sparse"]["both"], (arch, "sparse ran: the checked files have old warnings")
        assert [(b["patch"], b["builds"], b["objects"]) for b in w["bisect"]] == [(1, True, ["mm/mremap.o"])]


SEED = REPO_ROOT / "patches" / "0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch"
# kpipe's wrong kernels as one build per arch: 5.10 + the seed + this patch, whose kpipe_mutant=<name> boot
# parameter breaks exactly one behaviour (its commit message lists them, and what must catch each)
TEST_KERNEL = REPO_ROOT / "tests" / "patches" / "test-kernel.patch"


def mutant_args(name: str) -> list[str]:
    """The verify arguments of the test kernel with mutant `name` active."""
    return ["--patch", str(SEED), "--patch", str(TEST_KERNEL), "--kernel-arg", f"kpipe_mutant={name}"]


def assert_mutant_was_active(run_dir: Path, arch: str, name: str) -> None:
    """The premise of a wrong-kernel test, from the same run: the booted kernel says the mutant is active."""
    console = (run_dir / arch / "serial.log").read_text(errors="replace")
    assert f"kpipe test kernel: mutant {name}\n" in console.replace("\r\n", "\n"), \
        f"the booted kernel did not activate mutant {name}: {run_dir / arch / 'serial.log'}"
