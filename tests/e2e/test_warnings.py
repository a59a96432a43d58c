"""The compile checks (`kpipe warnings`, premerge's default) on wrong patches, through the real CLI with the real
gcc W=1, sparse and clang on the 5.10 tree: each test patch under tests/patches/warnings/ (on top of the seed)
adds exactly one kind of warning, which only its tool sees; the run exits 1 and names it as NEW, and the other
tools stay silent. The seed itself gets nothing new (tests/e2e/test_workflows.py's premerge, the lab's
premerge on both arches). What each compile found is cached by content: the same run again compiles nothing
and says the same. The parsing of the tools' output: tests/unit/test_compile_checks.py."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from kpipe_cli import REPO_ROOT, SEED, invoke

pytestmark = pytest.mark.e2e

WARN_PATCHES = REPO_ROOT / "tests" / "patches" / "warnings"

# patch -> {tool: words the new diagnostic's message must hold} (every other tool: nothing new). Words, not the
# whole message: gcc quotes names with the locale's quote marks
CAUGHT = {
    "w1-missing-prototype": {"gcc-W=1": ("no previous prototype for", "kpipe_dontunmap_ok"),
                             "sparse": ("kpipe_dontunmap_ok", "was not declared")},
    "sparse-user-deref": {"sparse": ("dereference of noderef expression",)},
    "clang-sometimes-uninitialized": {"clang": ("'limit' is used uninitialized whenever 'if' condition is false",)},
}


def _warnings(tmp_path: Path, name: str, patch: Path):
    t0 = time.monotonic()
    ran = invoke("warnings", "--arch", "x86_64", "--patch", str(SEED), "--patch", str(patch), out=tmp_path / name,
                 timeout=900)
    print(f"\n[measure] warnings {patch.name} ({name}): {time.monotonic() - t0:.1f} s, exit {ran.code}")
    return ran


@pytest.mark.parametrize("patch", sorted(CAUGHT))
def test_a_new_warning_of_each_tool_is_caught_and_named(patch, tmp_path):
    ran = _warnings(tmp_path, "run", WARN_PATCHES / f"{patch}.patch")
    assert ran.code == 1, ran
    w = ran.result["extra"]["warnings"]["x86_64"]
    new = {tool: [d["message"] for d in t["new"]] for tool, t in w["tools"].items()}
    assert {tool for tool, msgs in new.items() if msgs} == set(CAUGHT[patch]), new
    for tool, want in CAUGHT[patch].items():
        assert [m for m in new[tool] if all(w in m for w in want)], (tool, new[tool])
        assert all(d["file"] == "mm/mremap.c" for d in w["tools"][tool]["new"]), w["tools"][tool]["new"]
    assert [b["builds"] for b in w["bisect"]] == [True, True]          # the seed alone, then with the test patch
    said = ran.stdout + ran.stderr
    assert "x86_64: NEW warning" in said and "mm/mremap.c" in said, said[-3000:]
    if patch == sorted(CAUGHT)[0]:
        # the same run again: every compile is read back from the cache, and it says the same
        again = _warnings(tmp_path, "again", WARN_PATCHES / f"{patch}.patch")
        assert again.code == 1, again
        wa = again.result["extra"]["warnings"]["x86_64"]
        assert wa["reused"]["cached"] == wa["reused"]["of"] == w["reused"]["of"] >= 4, (w["reused"], wa["reused"])
        assert {t: x["new"] for t, x in wa["tools"].items()} == {t: x["new"] for t, x in w["tools"].items()}
        assert "compiles reused from the cache" in again.stderr
