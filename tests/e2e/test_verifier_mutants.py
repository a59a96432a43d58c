"""End to end through the real CLI on real 5.10 kernels: each kernel-state check fails a kernel broken in
exactly its behaviour (a mutant of the test kernel, tests/patches/test-kernel.patch on top of the seed, picked
at boot with kpipe_mutant=<name>: one build per arch for all of them; or, where what breaks is the source kpipe
reads, a patch under tests/patches/verifier/) and names the failing case; the correct kernels pass every
check (5.10 + the seed: tests/e2e/test_workflows.py's zero-findings `verify --arch all`; upstream's rule
backported; a reworded seed is judged by its code).
That every mutant names what it breaks and whom it must fail: tests/unit/test_verifier_mutant_list.py."""
from __future__ import annotations
import time
from pathlib import Path

import pytest
from kpipe_cli import REPO_ROOT, SEED, assert_mutant_was_active, invoke, mutant_args, results_by_name

from test_verifier_mutant_list import MUTANTS, CAUGHT, SOURCE_CHANGES  # shared with the fast tier


def _verify(tmp_path: Path, arch: str, *args: str):
    t = time.monotonic()
    ran = invoke("verify", "--arch", arch, "--selftests", "none", *args, out=tmp_path / "run")
    print(f"\n[measure] verify {arch} {' '.join(a for a in args if not a.startswith('/'))}: "
          f"{time.monotonic() - t:.1f} s (exit {ran.code})")
    return ran


@pytest.mark.e2e
@pytest.mark.parametrize("mutant", sorted(CAUGHT))
def test_e2e_mutant_is_caught(mutant, tmp_path):
    arch, cases = CAUGHT[mutant]
    # only the cases that must catch it run (--case): the correct kernels run every case elsewhere
    only = [a for c in cases for a in ("--case", c)]
    if mutant in SOURCE_CHANGES:
        ran = _verify(tmp_path, arch, "--patch", str(SEED), "--patch", str(MUTANTS / f"{mutant}.patch"), *only)
    else:
        ran = _verify(tmp_path, arch, *mutant_args(mutant), *only)
        assert_mutant_was_active(tmp_path / "run", arch, mutant)
    assert ran.code == 1, ran
    res = results_by_name(ran.result, arch, "verifier")
    for case, code in cases.items():
        assert res[case]["status"] == "fail" and res[case]["observed"] == code, (case, res[case])
        assert case in ran.stdout + ran.stderr, f"the failing case {case} is not named in the output"
    assert set(res) == set(cases), sorted(res)
    print(f"[observed] {mutant} on {arch}: {ran.result['arches'][arch]['phases']}")


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_e2e_backport_of_the_513_rule_passes(arch, tmp_path):
    """Upstream's 5.13 rule on 5.10 (a correct kernel from the field): policy upstream from the code, 5.10's
    partial-mlock bug read from the same code, so mlock-part-* are known failures under upstream too."""
    ran = _verify(tmp_path, arch, "--patch", str(REPO_ROOT / "tests" / "patches" / "backport-5.13-rule.patch"))
    assert ran.code == 0, ran
    kernel = ran.result["arches"][arch]["kernel"]
    assert kernel["policy"] == "upstream" and kernel["tree_bugs"][0].startswith("dontunmap-partial-mlock: mm/mremap.c:")
    res = results_by_name(ran.result, arch, "verifier")
    assert res["mlock-part-anon"]["status"] == "xfail" and res["mlock-part-memfd"]["status"] == "xfail"
    assert res["move-ramfs-shared"]["status"] == "pass"


@pytest.mark.e2e
def test_e2e_reworded_seed_is_judged_by_its_code(tmp_path):
    """The same diff under another subject: the policy still comes out anon+shmem, and the kernel passes."""
    text = SEED.read_text().replace("Subject: [PATCH] mm: Allow shmem mappings with MREMAP_DONTUNMAP",
                                    "Subject: [PATCH v2] mremap: let MREMAP_DONTUNMAP move memfd and shmem heaps", 1)
    assert "let MREMAP_DONTUNMAP move memfd" in text
    reworded = tmp_path / "0001-reworded.patch"
    reworded.write_text(text)
    ran = _verify(tmp_path, "x86_64", "--patch", str(reworded), "--case", "move-*", "--case", "state-memfd-shared")
    assert ran.code == 0, ran
    kernel = ran.result["arches"]["x86_64"]["kernel"]
    assert kernel["policy"] == "anon+shmem" and kernel["policy_reason"].startswith("mm/mremap.c:"), kernel
    res = results_by_name(ran.result, "x86_64", "verifier")
    assert res["move-memfd-shared"]["status"] == "pass" and res["state-memfd-shared"]["status"] == "pass"
