"""kpipe's wrong kernels (fast): the test kernel's mutants (tests/patches/test-kernel.patch, picked at boot with
kpipe_mutant=<name>) and the one that must stay a source change (tests/patches/verifier/) each name what they
break and the cases that must fail them, as tests/e2e/test_verifier_mutants.py, test_debug_kernel.py and
test_boot_faults.py prove on real 5.10 kernels."""
from __future__ import annotations
import re

from kpipe_cli import REPO_ROOT, TEST_KERNEL

MUTANTS = REPO_ROOT / "tests" / "patches" / "verifier"

# mutant -> the arch it is proven on, and the cases that must fail with their observed code
CAUGHT = {
    "dontunmap-no-charge": ("x86_64", {"state-anon-private": "COMMIT", "state-memfd-private": "COMMIT"}),
    "dontunmap-leaks-file-ref": ("arm64", {"state-memfd-shared": "SHMEM", "state-memfd-private": "SHMEM",
                                           "state-anon-shared": "COMMIT"}),
    "dontunmap-old-stays-locked": ("arm64", {"mlock-whole-anon": "OLDLOCKED", "mlock-onfault-whole-anon": "OLDLOCKED"}),
    "move-ptes-skips-last": ("x86_64", {"state-anon-private": "NEWPTE", "state-memfd-shared": "NEWPTE"}),
    "no-remap-event": ("arm64", {"uffd-remap-event-anon": "NOEVENT", "uffd-no-remap-feature-anon": "NEWUFFD"}),
    "fixed-dontunmap-keeps-replaced-charge": ("x86_64", {"replace-anon-private": "COMMIT",
                                                         "backforth-anon-private": "COMMIT"}),
    "move-ptes-stops-at-hole": ("arm64", {"size-sparse-anon": "NEWPTE", "size-sparse-memfd": "NEWPTE"}),
    "move-page-tables-stops-at-16m": ("x86_64", {"gc-mt-missing-anon": "NOTRAP", "size-sparse-anon": "NEWPTE",
                                                 "size-sparse-memfd": "NEWPTE"}),
    "move-vma-skips-one-page": ("arm64", {"size-1page-anon": "NEWPTE", "size-1page-memfd": "NEWPTE"}),
    "dontunmap-shmem-part-wrong-pgoff": ("arm64", {"geom-middle-memfd": "BADDATA", "geom-tail-memfd": "BADDATA"}),
    "plain-shmem-part-wrong-pgoff": ("x86_64", {"plain-fixed-middle-memfd-shared": "BADDATA",
                                                "plain-fixed-tail-memfd-shared": "BADDATA",
                                                "plain-move-middle-tmpfs-shared": "BADDATA"}),
    "shmem-off-pmd-path": ("arm64", {"pmd-memfd": "PTEPATH", "latency-memfd": "PTEPATH"}),
    "seed-rule-unreadable-loosened": ("x86_64", {"move-ramfs-shared": "ok", "move-ramfs-private": "ok"}),
}
# what it breaks is the seed's rule as kpipe reads it from the source: no boot parameter can do that
SOURCE_CHANGES = {"seed-rule-unreadable-loosened"}
# the test kernel's other mutants: reports only a debug kernel makes (test_debug_kernel.py), faults in every
# phase of a run (test_boot_faults.py, and the LAVA jobs of test_lava.py and test_lab.py)
DEBUG_MUTANTS = {"uaf", "vm-bug-on", "sleep-in-atomic", "recursive-lock", "deadlock"}
FAULTS = {"lockup", "hung", "warn", "leak"}


def _enum(name: str) -> str:
    return "KM_" + name.upper().replace("-", "_")


def test_the_test_kernels_mutants_are_named_gated_and_documented():
    text = TEST_KERNEL.read_text()
    message, diff = text.split("\n---\n", 1)
    assert "Subject: [PATCH] TEST KERNEL (never merge): " in message
    assert "diff --git a/mm/mremap.c b/mm/mremap.c" in diff
    names = re.findall(r'^\+\t\[(KM_\w+)\] = "([a-z0-9-]+)",$', diff, re.M)
    assert sorted(n for _, n in names) == sorted((set(CAUGHT) - SOURCE_CHANGES) | DEBUG_MUTANTS | FAULTS)
    for enum, name in names:
        assert enum == _enum(name), (enum, name)
        assert f"KPIPE_MUTANT({enum})" in diff, f"mutant {name} changes nothing"
        assert re.search(rf"^  {re.escape(name)}: ", message, re.M), f"the commit message does not describe {name}"
    for name in set(CAUGHT) - SOURCE_CHANGES:
        for case, code in CAUGHT[name][1].items():
            assert f"{case} ({code})" in message, (name, case)


def test_the_source_change_mutants_name_what_they_break_and_whom_they_must_fail():
    files = sorted(p.name for p in MUTANTS.glob("*.patch"))
    assert files == sorted(f"{n}.patch" for n in SOURCE_CHANGES)
    for name in SOURCE_CHANGES:
        text = (MUTANTS / f"{name}.patch").read_text()
        assert "Subject: [PATCH] TEST ONLY: " in text and "diff --git a/mm/mremap.c b/mm/mremap.c" in text
        for case, code in CAUGHT[name][1].items():
            assert f"{case} ({code})" in text, (name, case)
