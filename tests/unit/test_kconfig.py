"""kconfig model: fragment parsing, merge and conflicts, .config reading, the fallback text scan (unit).
Validation against the real 5.10 tree and real olddefconfig results: tests/e2e/test_kconfig_tree.py."""
from __future__ import annotations
from pathlib import Path

import pytest

from kpipe.build import kconfig as K
from kpipe.arches import ARCHES, get_arch
from kpipe.errors import ConfigError, InfraError, UsageError


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------------------ parse


def test_parse_every_valid_form(tmp_path):
    p = write(tmp_path, "a.config", "\n".join([
        "# a comment",
        "",
        "CONFIG_A=y",
        "CONFIG_B=m",
        "# CONFIG_C is not set",
        "CONFIG_D=n",
        'CONFIG_E="console=ttyS0 \\"quoted\\" \\\\"',
        "CONFIG_F=-1",
        "CONFIG_G=0x1000",
        "CONFIG_64BIT=y   ",
        "#CONFIG_H is not set is just a comment",
        "# CONFIG_I=y is a comment too",
    ]) + "\n")
    f = K.parse_fragment(p)
    assert f.path == p
    assert f.values == {"A": "y", "B": "m", "C": "n", "D": "n", "E": '"console=ttyS0 \\"quoted\\" \\\\"',
                        "F": "-1", "G": "0x1000", "64BIT": "y"}


@pytest.mark.parametrize("bad, hint", [
    ("CONFIG_X=yes", "write y or n"),
    ("X=y", "start with CONFIG_"),
    ("CONFIG_X = y", "no spaces"),
    ('CONFIG_S="unterminated', "string"),
    ("CONFIG_X=y # trailing comment", "no comments after a value"),
    ("CONFIG_X", "expected CONFIG_NAME=value"),
    ("hello world", "not an assignment"),
    ("CONFIG_X=1.5", "is not y, m, n"),
])
def test_malformed_line_names_file_line_text_and_valid_form(tmp_path, bad, hint):
    p = write(tmp_path, "bad.config", f"CONFIG_OK=y\n# fine\n{bad}\n")
    with pytest.raises(ConfigError) as ei:
        K.parse_fragment(p)
    e = ei.value
    assert e.exit_code == 2
    assert f"{p}:3" in e.message and repr(bad) in e.message and hint in e.message
    assert 'CONFIG_NAME=y | m | n | "text"' in e.fix and "is not set" in e.fix


def test_same_symbol_twice_in_one_fragment(tmp_path):
    ok = write(tmp_path, "dup.config", "CONFIG_A=y\nCONFIG_A=y\n")
    assert K.parse_fragment(ok).values == {"A": "y"}
    bad = write(tmp_path, "clash.config", "CONFIG_A=y\n\n# CONFIG_A is not set\n")
    with pytest.raises(ConfigError, match=r"clash.config:3: CONFIG_A set twice.*line 1: y, line 3: n"):
        K.parse_fragment(bad)


def test_missing_fragment_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist") as ei:
        K.parse_fragment(tmp_path / "nope.config")
    assert ei.value.exit_code == 2 and "--kconfig" in ei.value.fix
    with pytest.raises(UsageError, match="is a directory"):
        K.parse_fragment(tmp_path)


# ------------------------------------------------------------------------------------------------ merge


def test_merge_later_wins_and_conflicts_are_reported(tmp_path):
    a = K.parse_fragment(write(tmp_path, "a.config", "CONFIG_X=y\nCONFIG_SAME=y\nCONFIG_N=5\n"))
    b = K.parse_fragment(write(tmp_path, "b.config", "# CONFIG_X is not set\nCONFIG_SAME=y\nCONFIG_B=m\n"))
    c = K.parse_fragment(write(tmp_path, "c.config", "CONFIG_N=7\nCONFIG_X=m\n"))
    m = K.merge([a, b, c])
    assert m.values == {"X": "m", "SAME": "y", "N": "7", "B": "m"}
    assert m.sources == {"X": c.path, "SAME": b.path, "N": c.path, "B": b.path}
    assert m.fragments == (a.path, b.path, c.path)
    assert [x.symbol for x in m.conflicts] == ["X", "N"]        # SAME: set twice to one value, no conflict
    x = m.conflicts[0]
    assert x.values == ((a.path, "y"), (b.path, "n"), (c.path, "m")) and x.winner == c.path
    assert x.describe() == "CONFIG_X: a.config sets y, b.config sets n, c.config sets m; c.config wins"
    assert m.conflicts[1].describe() == "CONFIG_N: a.config sets 5, c.config sets 7; c.config wins"


def test_conflict_between_same_named_files_shows_paths(tmp_path):
    (tmp_path / "u").mkdir()
    a = K.parse_fragment(write(tmp_path, "x.config", "CONFIG_X=y\n"))
    b = K.parse_fragment(write(tmp_path / "u", "x.config", "CONFIG_X=n\n"))
    d = K.merge([a, b]).conflicts[0].describe()
    assert d == f"CONFIG_X: {a.path} sets y, {b.path} sets n; {b.path} wins"


def test_text_and_key_are_deterministic(tmp_path):
    a = K.parse_fragment(write(tmp_path, "a.config", "CONFIG_Z=y\n# CONFIG_A is not set\n"))
    b = K.parse_fragment(write(tmp_path, "b.config", 'CONFIG_S="x y"\n'))
    m1, m2 = K.merge([a, b]), K.merge([b, a])
    assert m1.text() == '# CONFIG_A is not set\nCONFIG_S="x y"\nCONFIG_Z=y\n'
    assert m1.text() == m2.text() and m1.key() == m2.key() and len(m1.key()) == 64
    # the text round-trips through the parser
    assert K.parse_fragment(write(tmp_path, "t.config", m1.text())).values == m1.values
    c = K.parse_fragment(write(tmp_path, "c.config", "CONFIG_Z=m\n"))
    assert K.merge([a, b, c]).key() != m1.key()
    assert K.merge([]).text() == ""


def test_default_fragments_per_arch():
    for arch in ARCHES.values():
        paths = K.default_fragments(arch)
        assert [p.name for p in paths] == ["base.config", arch.kconfig_fragment]
        assert all(p.is_file() for p in paths)
        K.merge([K.parse_fragment(p) for p in paths])      # every shipped fragment parses
        # the run's suite adds its own needs right after them (the seed suite's by default)
        from kpipe.workflows.pipeline import Options, fragments_for
        got = fragments_for(arch, Options(profile="fast"))
        assert [str(p.relative_to(K.REPO_ROOT)) for p in got][2:] == ["suites/mremap-dontunmap/mremap-dontunmap.config",
                                                                      "suites/memfd-seals/memfd-seals.config"]


def test_default_fragments_missing_files(tmp_path):
    arch = get_arch("x86_64")
    with pytest.raises(InfraError, match="layers.toml is missing"):
        K.default_fragments(arch, repo_root=tmp_path)
    (tmp_path / "kconfigs").mkdir()
    write(tmp_path / "kconfigs", "layers.toml", 'layers = ["base.config", "{arch}"]\n')
    write(tmp_path / "kconfigs", "base.config", "CONFIG_A=y\n")
    with pytest.raises(InfraError, match="x86_64.config"):
        K.default_fragments(arch, repo_root=tmp_path)


def test_shipped_feature_fragment_requests_what_the_issue_names():
    want = {"SHMEM", "TMPFS", "MEMFD_CREATE", "USERFAULTFD", "HUGETLBFS", "SYSVIPC", "DEVMEM"}
    feature = K.parse_fragment(K.REPO_ROOT / "suites/mremap-dontunmap/mremap-dontunmap.config").values
    assert all(feature.get(s) == "y" for s in want)


# ------------------------------------------------------------------------------------------------ .config


def test_parse_dotconfig(tmp_path):
    p = write(tmp_path, ".config", "#\n# Automatically generated file; DO NOT EDIT.\n#\nCONFIG_A=y\n"
                                   "# CONFIG_B is not set\nCONFIG_S=\"\"\nCONFIG_H=0x10\n# comment CONFIG_C=y\n")
    d = K.parse_dotconfig(p)
    assert d == {"A": "y", "B": "n", "S": '""', "H": "0x10"}
    with pytest.raises(InfraError, match="does not exist"):
        K.parse_dotconfig(tmp_path / "none")


def test_validate_passes_without_loading_kconfig(tmp_path, monkeypatch):
    """All requests met (numbers compared as numbers): no kconfiglib child, no Missing."""
    monkeypatch.setattr(K, "_explain_in_child", lambda *a: pytest.fail("kconfiglib loaded for nothing"))
    tree = tmp_path / "tree"
    tree.mkdir()
    write(tree, "Kconfig", "config GONE\n\tbool \"gone\"\n")
    frag = K.parse_fragment(write(tmp_path, "f.config", "CONFIG_A=y\nCONFIG_H=0x0010\n# CONFIG_GONE is not set\n"))
    dot = write(tmp_path, ".config", "CONFIG_A=y\nCONFIG_H=0x10\n")
    assert K.validate(K.merge([frag]), dot, tree, get_arch("x86_64")) == []


def test_text_scan_skips_help_text():
    defs: dict = {}
    K._scan_file("config FOO\n\tbool \"foo\"\n\tdepends on BAR && !BAZ # why\n\thelp\n\t  depends on NOT_THIS\n"
                 "\n\t  more help\nconfig QUX\n\tdepends on FOO\n", "x/Kconfig", defs)
    assert defs["FOO"][0].depends == ("BAR && !BAZ",) and defs["FOO"][0].line == 1
    assert defs["QUX"][0].depends == ("FOO",)


def test_fallback_text_scan_when_kconfiglib_cannot_load(tmp_path):
    """A tree kconfiglib cannot parse: the reason still names the dependency, and says it came from a text scan."""
    tree = tmp_path / "tree"
    (tree / "arch/arm64").mkdir(parents=True)
    (tree / "arch/x86").mkdir(parents=True)
    write(tree, "Kconfig", 'config FOO\n\tbool "foo"\n\tdepends on BAR && BAZ\n\nconfig BAR\n\tbool\n'
                           "config BAZ\n\tbool\nthis is no kconfig syntax\n")
    write(tree / "arch/x86", "Kconfig", 'config X86_ONLY\n\tbool "x"\n')
    frag = K.parse_fragment(write(tmp_path, "f.config", "CONFIG_FOO=y\nCONFIG_X86_ONLY=y\nCONFIG_NOPE=y\n"
                                                        "# CONFIG_ALSO_NOPE is not set\n"))
    dot = write(tmp_path, ".config", "# CONFIG_FOO is not set\nCONFIG_BAZ=y\n")
    miss = K.validate(K.merge([frag]), dot, tree, get_arch("arm64"))
    by = {m.symbol: m for m in miss}
    assert list(by) == ["FOO", "X86_ONLY", "NOPE", "ALSO_NOPE"]
    assert by["FOO"].reason.startswith("depends on BAR [=n] && BAZ [=y] (Kconfig:1)")
    assert "text scan" in by["FOO"].reason and "kconfiglib failed" in by["FOO"].reason
    assert "defined only in arch/x86/Kconfig" in by["X86_ONLY"].reason
    assert "not a symbol of this tree" in by["NOPE"].reason
    assert (by["ALSO_NOPE"].requested, by["ALSO_NOPE"].actual) == ("n", "n")
    assert "not a symbol of this tree" in by["ALSO_NOPE"].reason


def test_format_missing():
    lines = K.format_missing([K.Missing("FOO", "y", "n", "depends on BAR [=n] && BAZ [=y]")])
    assert lines == ["CONFIG_FOO: requested y, got n — depends on BAR [=n] && BAZ [=y]"]
