"""Patch application on the real Debian 5.10 tree (e2e): the seed applies to its mm/mremap.c at an offset.
Intake and application on synthetic trees: tests/unit/test_patches.py."""
from __future__ import annotations

import re

from kernel_fixture import (private_cache, scratch_of, SEED_AUTHOR, SEED_PATCH, SEED_SUBJECT, git, held_locks, invoke,
                            leftovers, make_kernel_repo, make_repo)

from test_patches import assert_clean_exit  # noqa: F401  (shared with the fast tier)


def test_seed_applies_to_the_real_510_mremap_at_an_offset(tmp_path, private_cache, tree510):
    """Debian's real 5.10 files (read from kpipe's mirror at the base into a small repo): applied at the known
    offset."""
    from kpipe.source.tree import git as kgit
    files = {rel: kgit(tree510.repo, "show", f"{tree510.base}:{rel}", bare=True).stdout
             for rel in ("Makefile", "Kconfig", "mm/mremap.c", "mm/Kconfig")}
    repo = make_repo(tmp_path / "linux", files, "real 5.10 files")
    cp = invoke("apply", "--tree", str(repo), cache=private_cache, out=tmp_path / "run")
    assert_clean_exit(cp, 0, private_cache)
    assert cp.stdout.startswith("applied")
    wt = scratch_of(cp.stdout)
    diff = git(wt, "show", "--format=", "HEAD").stdout
    assert re.search(r"^@@ -496,8 \+496,7 @@", diff, re.M), diff        # measured: the hunk lands at 496 (offset -157)
    assert "+\tif (flags & MREMAP_DONTUNMAP && !(vma_is_anonymous(vma) || vma_is_shmem(vma)))" in diff
