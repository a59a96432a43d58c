"""Per-object instrumentation of the touched files (kpipe/build/instrument.py) on a small git tree: a basename whose
namesake lives in a folder that opts out is left out with the reason, since kbuild matches by basename."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kpipe.build import instrument


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    return tmp_path


def test_touched_c_files_get_one_variable_per_kind(tmp_path):
    src = _tree(tmp_path, {"mm/Makefile": "obj-y := mremap.o\n", "mm/mremap.c": "int x;\n",
                           "Documentation/x.rst": "doc\n", "mm/internal.h": "/* h */\n"})
    p = instrument.plan(src, ["mm/mremap.c", "mm/internal.h", "Documentation/x.rst"],
                        ("GCOV_PROFILE", "UBSAN_SANITIZE"))
    assert p.objects == ("mm/mremap.o",)
    assert p.make_vars == ("GCOV_PROFILE_mremap.o=y", "UBSAN_SANITIZE_mremap.o=y")
    assert p.skipped == ()


def test_a_namesake_in_a_folder_that_opts_out_is_not_instrumented(tmp_path):
    src = _tree(tmp_path, {"mm/Makefile": "obj-y := util.o\n", "mm/util.c": "int x;\n",
                           "arch/x86/boot/Makefile": "GCOV_PROFILE := n\n", "arch/x86/boot/util.c": "int y;\n"})
    p = instrument.plan(src, ["mm/util.c"], ("GCOV_PROFILE", "UBSAN_SANITIZE"))
    assert p.make_vars == ("UBSAN_SANITIZE_util.o=y",)
    assert p.objects == ("mm/util.o",)
    assert len(p.skipped) == 1 and "arch/x86/boot/util.c" in p.skipped[0] and "GCOV_PROFILE" in p.skipped[0]


def test_a_per_object_opt_out_counts_too_and_no_kinds_means_nothing(tmp_path):
    src = _tree(tmp_path, {"mm/Makefile": "obj-y := a.o\nUBSAN_SANITIZE_a.o := n\n", "mm/a.c": "int x;\n"})
    p = instrument.plan(src, ["mm/a.c"], ("GCOV_PROFILE", "UBSAN_SANITIZE"))
    assert p.make_vars == ("GCOV_PROFILE_a.o=y",)
    assert instrument.plan(src, ["mm/a.c"], ()) == instrument.Plan((), ())
    with pytest.raises(ValueError):
        instrument.plan(src, ["mm/a.c"], ("KCOV",))
