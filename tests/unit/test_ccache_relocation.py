"""ccache across build folders (kpipe.build.kernel.ccache_relocation): the environment and make variables kpipe gives a
new build folder, and a real gcc + ccache compile of the same source from two build folders, the way kbuild
calls it with O= (absolute source path, -g, the kernel's own -fmacro-prefix-map=$(srctree)/=)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kpipe.build import kernel as buildmod
from kpipe.arches import ARCHES


def test_relocation_is_relative_to_the_common_root(tmp_path: Path) -> None:
    env, make_vars = buildmod.ccache_relocation(tmp_path / "work/debian-5.10", tmp_path / "builds/x-ccache")
    assert env == {"CCACHE_BASEDIR": str(tmp_path), "CCACHE_NOHASHDIR": "1"}
    assert make_vars == ["KCPPFLAGS=-fmacro-prefix-map=../../work/debian-5.10/="]
    # two build folders of one source get the same flags: the same ccache hashes
    assert buildmod.ccache_relocation(tmp_path / "work/debian-5.10", tmp_path / "builds/y")[1] == make_vars
    assert buildmod.ccache_relocation(Path("/src/linux"), Path("/cache/b")) == ({}, [])   # nothing shared below /


def test_only_a_new_ccache_folder_is_made_relocatable(tmp_path: Path) -> None:
    new, old = tmp_path / "builds/new", tmp_path / "builds/old"
    old.mkdir(parents=True)
    (old / ".config").write_text("CONFIG_MMU=y\n")
    for d in (new, old):
        buildmod.mark_relocatable(d, True)
    buildmod.mark_relocatable(tmp_path / "builds/plain", False)
    assert buildmod.relocatable(new, True) and not buildmod.relocatable(old, True)
    assert not (tmp_path / "builds/plain").exists()
    req = buildmod.BuildRequest(arch=ARCHES["x86_64"], src=tmp_path / "work/t", tree_ident="t", tree_hash="h",
                                config_text="", config_key="k")
    assert any(a.startswith("KCPPFLAGS=") for a in buildmod._make_cmd(req, new, True, "bzImage"))
    assert not any(a.startswith("KCPPFLAGS=") for a in buildmod._make_cmd(req, old, True, "bzImage"))
    assert buildmod._make_env(True, req.src, new)["CCACHE_BASEDIR"] == str(tmp_path)
    assert "CCACHE_BASEDIR" not in buildmod._make_env(True, req.src, old)


@pytest.mark.skipif(not (shutil.which("ccache") and shutil.which("gcc")), reason="needs ccache and gcc")
def test_a_second_build_folder_hits_and_file_names_stay_tree_relative(tmp_path: Path) -> None:
    src = tmp_path / "work/tree"
    (src / "mm").mkdir(parents=True)
    (src / "mm/m.c").write_text('const char *where(void) { return __FILE__; }\nint f(int x) { return x + 1; }\n')
    base_env = {**os.environ, "CCACHE_DIR": str(tmp_path / "ccache")}
    objects = []
    for name in ("a", "b"):
        bdir = tmp_path / "builds" / name
        (bdir / "mm").mkdir(parents=True)
        env, make_vars = buildmod.ccache_relocation(src, bdir)
        flags = [v.split("=", 1)[1] for v in make_vars]          # KCPPFLAGS=...: what kbuild adds to cpp flags
        cmd = ["ccache", "gcc", "-g", "-O2", f"-fmacro-prefix-map={src}/=", *flags, "-c", str(src / "mm/m.c"),
               "-o", "mm/m.o"]
        subprocess.run(cmd, cwd=bdir, env={**base_env, **env}, check=True)
        objects.append(bdir / "mm/m.o")
    stats = subprocess.run(["ccache", "--print-stats"], env=base_env, capture_output=True, text=True).stdout
    got = dict(ln.split("\t") for ln in stats.splitlines() if "\t" in ln)
    assert int(got["direct_cache_hit"]) + int(got["preprocessed_cache_hit"]) == 1 and int(got["cache_miss"]) == 1
    rodata = subprocess.run(["objdump", "-s", "-j", ".rodata.str1.1", "-j", ".rodata", str(objects[1])],
                            capture_output=True, text=True).stdout
    text = "".join(ln[43:] for ln in rodata.splitlines() if ln.startswith(" "))
    assert "mm/m.c" in text and ".." not in text and "work" not in text     # __FILE__ as kbuild would give it
