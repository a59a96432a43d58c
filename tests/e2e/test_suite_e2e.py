"""End to end through the real CLI on real 5.10 kernels: the second suite (memfd-seals) runs through the same
pipeline as the seed's, on the same cached kernel (the kernel is configured for every shipped suite), passes
the correct kernels and fails a kernel broken in exactly one of its behaviours. x86_64 only: the seal checks
are arch-independent C in mm/shmem.c; the suite machinery (choice, build, push, judge) is the seed's, which the
rest of the suite runs on both arches. 6.12: tests/e2e/test_upstream_tree.py."""
from __future__ import annotations

import pytest
from kpipe_cli import REPO_ROOT, invoke, results_by_name

pytestmark = pytest.mark.e2e
SEED = REPO_ROOT / "patches" / "0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch"
NO_GROW_SEAL = REPO_ROOT / "tests" / "patches" / "suites" / "shmem-truncate-ignores-grow-seal.patch"


def _verify(tmp_path, *args):
    return invoke("verify", "--arch", "x86_64", "--suite", "memfd-seals", "--accel", "tcg", *args,
                  out=tmp_path / "v")


@pytest.mark.parametrize("side", ["baseline", "seed"])
def test_memfd_seals_pass_the_correct_510_kernels(side, kernels, patched_kernels, tmp_path):
    r = _verify(tmp_path, *(["--no-patches"] if side == "baseline" else ["--patch", str(SEED)]),
                *(["--selftests", "none"] if side == "baseline" else []))
    assert r.code == 0, r
    ar = r.result["arches"]["x86_64"]
    assert ar["build"]["cached"], "the session's kernel serves every suite: no build for another suite"
    assert ar["kernel"]["suite"] == "memfd-seals" and ar["kernel"]["suite_reason"] == "--suite"
    assert ar["kernel"]["policy"] == "sealing"
    verifier = results_by_name(r.result, "x86_64", "verifier")
    assert len(verifier) == 12 and all(t["status"] == "pass" for t in verifier.values()), verifier
    assert verifier["grow-sealed-truncate"]["observed"] == "EPERM"
    if side == "seed":          # the suite's own selftest choice: the tree's memfd_test
        selftests = results_by_name(r.result, "x86_64", "selftests")
        assert list(selftests) == ["memfd_test"] and selftests["memfd_test"]["status"] == "pass", selftests


def test_memfd_seals_fail_a_kernel_that_ignores_the_grow_seal(kernels, tmp_path):
    """shmem_setattr without its F_SEAL_GROW check: exactly grow-sealed-truncate fails (fallocate keeps its own
    check, the shrink seal still holds), exit 1."""
    r = _verify(tmp_path, "--patch", str(NO_GROW_SEAL), "--selftests", "none")
    assert r.code == 1, r
    verifier = results_by_name(r.result, "x86_64", "verifier")
    failed = {n: t["observed"] for n, t in verifier.items() if t["status"] != "pass"}
    assert failed == {"grow-sealed-truncate": "ok"}, failed
    assert verifier["grow-sealed-fallocate"]["status"] == "pass"
    assert verifier["shrink-sealed-truncate"]["status"] == "pass"
