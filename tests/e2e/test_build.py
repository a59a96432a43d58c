"""Build stage on the real Debian 5.10 tree: configs really set, incremental rebuilds, cache, failures."""
from __future__ import annotations

import difflib
import re
import uuid
from pathlib import Path

import pytest

from kpipe.build import kconfig
from kpipe.arches import ARCHES
from kpipe.workflows.pipeline import Options, apply, build_kernel, locked_checkout, series_of
from kpipe.source.tree import git
from kpipe_cli import REPO_ROOT, invoke

pytestmark = pytest.mark.e2e
SEED = REPO_ROOT / "patches" / "0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch"


def edit_patch(tree, path: Path, new_line: str) -> Path:
    """A plain diff putting ``new_line`` first in mm/mremap.c (applies on top of the seed patch)."""
    old = git(tree.repo, "show", f"{tree.base}:mm/mremap.c", bare=True).stdout.splitlines(keepends=True)
    new = [new_line + "\n"] + old
    diff = "".join(difflib.unified_diff(old, new, "a/mm/mremap.c", "b/mm/mremap.c"))
    path.write_text("diff --git a/mm/mremap.c b/mm/mremap.c\n" + diff)
    return path


def series(tmp_path: Path, *patches: Path) -> Path:
    s = tmp_path / "series"
    s.write_text("".join(f"{p}\n" for p in patches))
    return s


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_every_requested_symbol_is_set(kernels, arch):
    actual = kconfig.parse_dotconfig(kernels[arch].config)
    for frag in kconfig.default_fragments(ARCHES[arch]):
        for sym, want in kconfig.parse_fragment(frag).values.items():
            assert actual.get(sym, "n") == want, \
                f"CONFIG_{sym}: requested {want}, got {actual.get(sym, 'n')} ({frag.name})"
    feature = kconfig.parse_fragment(REPO_ROOT / "suites" / "mremap-dontunmap" / "mremap-dontunmap.config").values
    for sym in ("SHMEM", "TMPFS", "MEMFD_CREATE", "USERFAULTFD", "HUGETLBFS", "SYSVIPC", "DEVMEM"):
        assert feature[sym] == "y" and actual[sym] == "y"
    assert kernels[arch].image.is_file() and kernels[arch].headers.joinpath("include/linux/mman.h").is_file()


def test_one_line_edit_rebuilds_only_that_file_and_unchanged_runs_no_make(patched_kernels, tree510, tmp_path):
    arch = ARCHES["x86_64"]
    # the premise: the build folder's last build was of this tree but for the edit. Another test's series (a
    # fault patch in mm/shmem.c, say) may have been built there last, so build one other edit first
    prior = edit_patch(tree510, tmp_path / "prior.patch", f"/* kpipe test edit {uuid.uuid4().hex} */")
    edit = edit_patch(tree510, tmp_path / "edit.patch", f"/* kpipe test edit {uuid.uuid4().hex} */")
    opts = Options(series=str(series(tmp_path, SEED, edit)))
    with locked_checkout(tree510) as co:
        (tmp_path / "prior").mkdir()
        prior_opts = Options(series=str(series(tmp_path / "prior", SEED, prior)))
        build_kernel(arch, apply(co, series_of(prior_opts), tmp_path / "apply0.log"), prior_opts,
                     tmp_path / "build0.log")
        applied = apply(co, series_of(opts), tmp_path / "apply.log")
        assert [p.status for p in applied.patches] == ["applied", "applied"]
        k1, _ = build_kernel(arch, applied, opts, tmp_path / "build1.log")
        assert not k1.cached
        compiled_c = [o for o in k1.extra["compiled"]
                      if not o.startswith(("init/", "arch/x86/boot/")) and "/tools/" not in o]
        assert compiled_c == ["mm/mremap.o"], compiled_c
        # nothing changed: the content key is found, make does not run at all
        applied = apply(co, series_of(opts), tmp_path / "apply.log")
        assert applied.reused
        k2, _ = build_kernel(arch, applied, opts, tmp_path / "build2.log")
    assert k2.cached and k2.key == k1.key and k2.image == k1.image
    assert not (tmp_path / "build2.log").exists() or "$ make" not in (tmp_path / "build2.log").read_text()


def test_unsatisfiable_request_names_symbol_and_dependency(kernels, tmp_path):
    frag = tmp_path / "soft-dirty.config"
    frag.write_text("CONFIG_CHECKPOINT_RESTORE=y\nCONFIG_MEM_SOFT_DIRTY=y\n")   # arm64 lacks HAVE_ARCH_SOFT_DIRTY
    r = invoke("build", "--arch", "arm64", "--no-patches", "--kconfig", str(frag), out=tmp_path / "run")
    assert r.code == 2, r
    assert "CONFIG_MEM_SOFT_DIRTY: requested y, got n" in r.stderr, r
    assert "HAVE_ARCH_SOFT_DIRTY [=n]" in r.stderr, r
    assert "exit 2" in r.stderr
    # the same through verify: result.json names the missing option and why
    r = invoke("verify", "--arch", "arm64", "--no-patches", "--kconfig", str(frag), out=tmp_path / "verify")
    assert r.code == 2, r
    missing = r.result["arches"]["arm64"]["config"]["missing"]
    assert any("CONFIG_MEM_SOFT_DIRTY" in m and "HAVE_ARCH_SOFT_DIRTY [=n]" in m for m in missing), missing


def test_patch_that_breaks_the_build_exits_4_with_the_error_line(patched_kernels, tree510, tmp_path):
    broken = edit_patch(tree510, tmp_path / "broken.patch", f"static int kpipe_broken_{uuid.uuid4().hex[:8]} = ;")
    r = invoke("build", "--arch", "x86_64", "--series", str(series(tmp_path, SEED, broken)), out=tmp_path / "run")
    assert r.code == 4, r
    assert re.search(r"mm/mremap\.c:1:\d+: error: expected expression", r.stderr), r
    assert str(tmp_path / "run" / "x86_64" / "build.log") in r.stderr
    assert "exit 4 (build failed)" in r.stderr
