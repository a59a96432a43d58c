"""kpipe's fix of a test's known hang (a suite's `fix` patch): the test is built from a private copy of its
collection with the fix applied, the tree untouched, and its result says so; a fix that does not apply builds the
tree's test as it is and says that. Real git apply, real make and gcc on a small kselftest-shaped tree (5.10's
userfaultfd stress with the shipped fix: tests/e2e/test_selftests.py)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kpipe.arches import get_arch
from kpipe.checks import suite
from kpipe.checks.selftests import SelftestSpec, build_selftests, run_selftests

from local_session import LocalSession

# the Makefile's way of building one target out of tree (as lib.mk's pattern rule does)
MAKEFILE = "$(OUTPUT)/t: t.c\n\t$(CC) -Wall $(EXTRA_CFLAGS) $(LDFLAGS) $< -o $@\n"
HANGS = "int main(void)\n{\n\treturn 1;\t/* the test's bug */\n}\n"
FIX = """--- a/tools/testing/selftests/vm/t.c
+++ b/tools/testing/selftests/vm/t.c
@@ -1,4 +1,4 @@
 int main(void)
 {
-\treturn 1;\t/* the test's bug */
+\treturn 0;
 }
"""


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KPIPE_CACHE", str(tmp_path / "cache"))


def _tree(tmp_path: Path, source: str = HANGS) -> Path:
    vm = tmp_path / "tree/tools/testing/selftests/vm"
    vm.mkdir(parents=True)
    (vm / "Makefile").write_text(MAKEFILE)
    (vm / "t.c").write_text(source)
    (vm.parent / "lib.mk").write_text("# the selftests' top folder files go into the copy too\n")
    (tmp_path / "headers/include").mkdir(parents=True)
    return tmp_path / "tree"


def _build(tmp_path: Path, tree: Path, fix: Path | None, out: str):
    spec = SelftestSpec("t", ("tools/testing/selftests/vm/t.c",), binary_name="t", collection="vm",
                        known_hang="its own bug", fix=str(fix) if fix else "")
    [b] = build_selftests([spec], get_arch("x86_64"), tree, tmp_path / "headers", tmp_path / out,
                          tmp_path / f"{out}.log")
    return b


def test_the_fix_is_built_from_a_copy_and_the_result_says_so(tmp_path):
    tree = _tree(tmp_path)
    fix = tmp_path / "fix.patch"
    fix.write_text(FIX)
    b = _build(tmp_path, tree, fix, "fixed")
    assert b.binary is not None and subprocess.run([b.binary]).returncode == 0     # the fixed test ran
    assert (tree / "tools/testing/selftests/vm/t.c").read_text() == HANGS            # the tree is untouched
    assert b.note.startswith("built from a copy of the tree's source with kpipe's fix of its known hang applied "
                             "(fix.patch)"), b.note
    log = (tmp_path / "fixed.log").read_text()
    assert "git apply fix.patch" in log.replace(str(tmp_path) + "/", "") and "Applied patch" in log, log
    [r] = run_selftests(LocalSession(), [b], tmp_path / "run", remote_dir=str(tmp_path / "g"))
    assert r.detail.startswith(b.note), r.detail
    # the tree's test without the fix is another build (the fix is part of the cache key): it still fails
    plain = _build(tmp_path, tree, None, "plain")
    assert plain.note == "" and subprocess.run([plain.binary]).returncode == 1


def test_a_fix_that_does_not_apply_builds_the_tree_as_it_is_and_says_so(tmp_path):
    tree = _tree(tmp_path, HANGS.replace("return 1;", "return 2;"))           # another version of the test
    fix = tmp_path / "fix.patch"
    fix.write_text(FIX)
    b = _build(tmp_path, tree, fix, "out")
    assert b.binary is not None and subprocess.run([b.binary]).returncode == 2
    assert b.note.startswith("kpipe's fix fix.patch did not apply to this tree's test (") and \
        b.note.endswith("): built as it is"), b.note


def test_a_suites_fix_must_exist(tmp_path):
    (tmp_path / suite.SELFTESTS_FILE).write_text(
        '[known_hangs.h]\nfile = "vm/t.c"\nfixed_by = "fixed"\ntries = 3\nwhy = "its own bug"\nfix = "fixes/h.patch"\n'
        '\n[[catalogue]]\nname = "t"\ntimeout = 60\nvariants = [{ target = "vm/t", known_hang = "h" }]\n')
    with pytest.raises(suite.UsageError, match=r"\[known_hangs.h\] fix 'fixes/h.patch': no such file under"):
        suite._selftests(tmp_path)
    (tmp_path / "fixes").mkdir()
    (tmp_path / "fixes/h.patch").write_text(FIX)
    [entry] = suite._selftests(tmp_path).catalogue
    assert entry["variants"][0]["known_hang"]["fix"] == str(tmp_path / "fixes/h.patch")


def test_the_shipped_uffd_fix_is_data_of_the_seeds_suite():
    hang = next(v["known_hang"] for e in suite.get("mremap-dontunmap").selftests.catalogue
                for v in e["variants"] if v.get("known_hang"))
    fix = Path(hang["fix"])
    assert fix.is_file() and fix.parent.name == "fixes"
    text = fix.read_text()
    assert "+++ b/tools/testing/selftests/vm/userfaultfd.c" in text and "UFFDIO_WAKE" in text
