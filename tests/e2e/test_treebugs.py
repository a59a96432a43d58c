"""Known tree bugs keyed to the code of mm/mremap.c (kpipe/checks/treebugs.py), read from the real trees kpipe fetches
(5.10 and 6.12 in the shared tree cache) and from the backport patch under tests/patches/."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kpipe.checks import treebugs
from kpipe.checks.suite import get as get_suite
from kpipe.checks.verifier import load_expectations, policy_from_source

SEED = get_suite()

REPO = Path(__file__).resolve().parents[2]
SOURCES: dict[str, str] = {}
BACKPORT = REPO / "tests" / "patches" / "backport-5.13-rule.patch"


@pytest.fixture(autouse=True)
def _sources(mremap_sources):
    SOURCES.update(mremap_sources)


def _mremap(tree: str) -> str:
    return SOURCES[tree]


def _patched(code: str, patch: Path) -> str:
    """mm/mremap.c with the patch's one hunk applied (by the real `git apply`, in a scratch repo)."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "mm").mkdir()
        (Path(d) / "mm" / "mremap.c").write_text(code)
        subprocess.run(["git", "init", "-q", d], check=True)
        subprocess.run(["git", "-C", d, "apply", str(patch)], check=True)
        return (Path(d) / "mm" / "mremap.c").read_text()


def test_510_carries_the_partial_mlock_bug_and_612_the_fix():
    (f,) = treebugs.detect(_mremap("debian-5.10"), SEED)
    assert f.bug.name == "dontunmap-partial-mlock" and "VM_LOCKED_CLEAR_MASK" in f.where
    assert treebugs.detect(_mremap("debian-6.12"), SEED) == []


def test_the_backport_is_upstreams_rule_on_510s_move_vma():
    code = _patched(_mremap("debian-5.10"), BACKPORT)
    assert policy_from_source(code, SEED)[0] == "upstream"
    assert [f.bug.name for f in treebugs.detect(code, SEED)] == ["dontunmap-partial-mlock"]


def test_a_found_bug_is_an_xfail_under_any_policy_and_a_fixed_one_is_ok():
    exp = load_expectations()
    found = treebugs.describe(treebugs.detect(_mremap("debian-5.10"), SEED))
    up = treebugs.apply(exp, "upstream", found)
    assert up.cases["mlock-part-anon"].outcomes["upstream"] == "xfail:VMLCK"
    assert "read from mm/mremap.c:" in up.cases["mlock-part-anon"].xfail["upstream"]
    assert exp.cases["mlock-part-anon"].outcomes["upstream"] == "ok"        # the table itself is unchanged
    seed = treebugs.apply(exp, "anon+shmem", [])                           # a tree with the fix
    assert seed.cases["mlock-part-memfd"].outcomes["anon+shmem"] == "ok"
    assert treebugs.apply(exp, "anon-only", found).cases["mlock-part-memfd"].outcomes["anon-only"] == \
        exp.cases["mlock-part-memfd"].outcomes["anon-only"]                 # refused there: left alone
