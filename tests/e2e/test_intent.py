"""The expectation policy from the series' intent and the code together (kpipe/checks/intent.py), with the real
`git patch-id --stable`, the real seed, the real 5.10 and 6.12 sources (the shared tree cache) and the wrong
kernel under tests/patches/verifier/ that hides the rule in a helper."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from kpipe.checks import intent
from kpipe.errors import UsageError
from kpipe.checks.suite import get as get_suite

SUITE = get_suite()

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "patches" / "0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch"
UNREADABLE = REPO / "tests" / "patches" / "verifier" / "seed-rule-unreadable-loosened.patch"
BACKPORT = REPO / "tests" / "patches" / "backport-5.13-rule.patch"
SOURCES: dict[str, str] = {}
SCRATCH: list[Path] = []        # the running test's tmp_path: scratch trees go there, and pytest removes them


@pytest.fixture(autouse=True)
def _sources(mremap_sources, tmp_path):
    SOURCES.update(mremap_sources)
    SCRATCH[:] = [tmp_path]


def _tree(name: str, *patches: Path) -> Path:
    """A scratch tree holding the real mm/mremap.c of `name` with `patches` applied by git apply."""
    d = Path(tempfile.mkdtemp(prefix="intent-", dir=SCRATCH[0]))
    (d / "mm").mkdir()
    (d / "mm" / "mremap.c").write_text(SOURCES[name])
    subprocess.run(["git", "init", "-q", str(d)], check=True)
    for p in patches:
        subprocess.run(["git", "-C", str(d), "apply", str(p)], check=True)
    return d


def _choose(tree: Path, *patches: Path, texts: list[tuple[str, str]] | None = None) -> tuple[str, str]:
    texts = texts if texts is not None else [(p.name, p.read_text()) for p in patches]
    return intent.choose(tree, None, intent.declared(texts, None, SUITE), SUITE)


def test_a_reworded_seed_is_known_by_patch_id():
    reworded = SEED.read_text().replace("Subject: [PATCH] mm: Allow shmem mappings with MREMAP_DONTUNMAP",
                                        "Subject: [PATCH v3] mremap: DONTUNMAP for memfd heaps", 1)
    assert intent.patch_id(reworded) == intent.patch_id(SEED.read_text())
    policy, why = _choose(_tree("debian-5.10", SEED), texts=[("v3.patch", reworded)])
    assert policy == "anon+shmem" and why.startswith("mm/mremap.c:") and "by patch-id" in why


def test_an_unreadable_rule_is_judged_against_the_series_intent():
    policy, why = _choose(_tree("debian-5.10", SEED, UNREADABLE), SEED, UNREADABLE)
    assert policy == "anon+shmem" and "kpipe cannot read the code's rule" in why and "series' expectation" in why


def test_no_intent_and_no_readable_rule_asks_for_expect():
    with pytest.raises(UsageError, match="declares no intent"):
        _choose(_tree("debian-5.10", SEED, UNREADABLE), texts=[("x.patch", UNREADABLE.read_text())])


def test_a_trailer_declares_the_intent_and_the_code_is_checked_against_it():
    text = BACKPORT.read_text().replace("---\n", "Kpipe-Expect: anon+shmem\n---\n", 1)
    policy, why = _choose(_tree("debian-5.10", BACKPORT), texts=[("bp.patch", text)])
    assert policy == "anon+shmem" and "the code's rule is upstream" in why


def test_no_patches_intend_the_base_rule_and_an_unknown_patch_is_read_from_the_code():
    base = SOURCES["debian-6.12"]
    assert intent.choose(_tree("debian-6.12"), None, intent.declared([], base, SUITE), SUITE)[0] == "upstream"
    policy, why = _choose(_tree("debian-5.10", BACKPORT), BACKPORT)        # not a patch kpipe knows
    assert policy == "upstream" and why.startswith("mm/mremap.c:")
