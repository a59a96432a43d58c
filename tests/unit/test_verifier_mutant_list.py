"""The mutant patches under tests/patches/verifier/ (fast): each names what it breaks and the cases it must
fail, as tests/e2e/test_verifier_mutants.py proves on real 5.10 kernels."""
from __future__ import annotations
from kpipe_cli import REPO_ROOT, invoke, results_by_name

MUTANTS = REPO_ROOT / "tests" / "patches" / "verifier"

# mutant -> the arch it is proven on, and the cases that must fail with their observed code
CAUGHT = {
    "dontunmap-no-charge.patch": ("x86_64", {"state-anon-private": "COMMIT", "state-memfd-private": "COMMIT"}),
    "dontunmap-leaks-file-ref.patch": ("arm64", {"state-memfd-shared": "SHMEM", "state-memfd-private": "SHMEM",
                                                 "state-anon-shared": "COMMIT"}),
    "dontunmap-old-stays-locked.patch": ("arm64", {"mlock-whole-anon": "OLDLOCKED",
                                                   "mlock-onfault-whole-anon": "OLDLOCKED"}),
    "move-ptes-skips-last.patch": ("x86_64", {"state-anon-private": "NEWPTE", "state-memfd-shared": "NEWPTE"}),
    "no-remap-event.patch": ("arm64", {"uffd-remap-event-anon": "NOEVENT", "uffd-no-remap-feature-anon": "NEWUFFD"}),
    "fixed-dontunmap-keeps-replaced-charge.patch": ("x86_64", {"replace-anon-private": "COMMIT",
                                                               "backforth-anon-private": "COMMIT"}),
    "move-ptes-stops-at-hole.patch": ("arm64", {"size-sparse-anon": "NEWPTE", "size-sparse-memfd": "NEWPTE"}),
    "move-page-tables-stops-at-16m.patch": ("x86_64", {"gc-mt-missing-anon": "NOTRAP", "size-sparse-anon": "NEWPTE",
                                                       "size-sparse-memfd": "NEWPTE"}),
    "move-vma-skips-one-page.patch": ("arm64", {"size-1page-anon": "NEWPTE", "size-1page-memfd": "NEWPTE"}),
    "dontunmap-shmem-part-wrong-pgoff.patch": ("arm64", {"geom-middle-memfd": "BADDATA", "geom-tail-memfd": "BADDATA"}),
    "plain-shmem-part-wrong-pgoff.patch": ("x86_64", {"plain-fixed-middle-memfd-shared": "BADDATA",
                                                      "plain-fixed-tail-memfd-shared": "BADDATA",
                                                      "plain-move-middle-tmpfs-shared": "BADDATA"}),
    "shmem-off-pmd-path.patch": ("arm64", {"pmd-memfd": "PTEPATH", "latency-memfd": "PTEPATH"}),
    "seed-rule-unreadable-loosened.patch": ("x86_64", {"move-ramfs-shared": "ok", "move-ramfs-private": "ok"}),
}


def test_every_mutant_names_what_it_breaks_and_whom_it_must_fail():
    files = sorted(p.name for p in MUTANTS.glob("*.patch"))
    assert files == sorted(CAUGHT)
    for name in files:
        text = (MUTANTS / name).read_text()
        assert "Subject: [PATCH] TEST ONLY: " in text and "diff --git a/mm/mremap.c b/mm/mremap.c" in text
        for case, code in CAUGHT[name][1].items():
            assert f"{case} ({code})" in text, (name, case)
