"""Fast: the warnings parser and the baseline/patched delta on real make output (tests/data/warnings/
seed-x86_64.log: `kpipe warnings --arch x86_64` on 5.10 + the seed, gcc W=1, sparse C=2, clang 14)."""
from __future__ import annotations

from pathlib import Path

from kpipe.workflows import compile_checks as cc

LOG = Path(__file__).parents[1] / "data" / "warnings" / "seed-x86_64.log"
SRC = Path("/root/.cache/kpipe/work/debian-5.10")


def _runs() -> list[str]:
    """The make runs of the golden: baseline gcc, sparse, clang, then patched gcc, sparse, clang."""
    return [c for c in LOG.read_text().split("\n$ make ")[0:] if c.strip()]


def test_parse_real_gcc_and_sparse_output() -> None:
    runs = _runs()
    assert len(runs) == 6
    gcc = cc.parse(runs[0], "gcc-W=1", SRC)
    assert [(d.file, d.line, d.flag) for d in gcc] == [("include/linux/mmzone.h", 1136, "-Wunused-but-set-variable")]
    assert gcc[0].message == "variable ‘nid’ set but not used" and gcc[0].severity == "warning"
    sparse = cc.parse(runs[1], "sparse", SRC)
    assert [(d.file, d.line) for d in sparse] == [("mm/mremap.c", 188), ("mm/mremap.c", 248)]
    assert "context imbalance in 'move_ptes'" in sparse[0].message
    assert cc.parse(runs[2], "clang", SRC) == []
    assert "mm/mremap.c:188: warning: context imbalance" in sparse[0].describe()
    assert sparse[0].describe().endswith("(sparse)")


def test_seed_delta_is_clean_and_both_sides_shown() -> None:
    runs = _runs()
    for i, tool in enumerate(("gcc-W=1", "sparse", "clang")):
        d = cc.delta(cc.parse(runs[i], tool, SRC), cc.parse(runs[i + 3], tool, SRC))
        assert d.new == [] and d.gone == []
    d = cc.delta(cc.parse(runs[1], "sparse", SRC), cc.parse(runs[4], "sparse", SRC))
    assert len(d.both) == 2


def test_moved_line_still_matches_new_message_is_new() -> None:
    base = cc.parse(_runs()[1], "sparse", SRC)
    moved = [cc.Diag(x.tool, x.file, x.line + 7, x.severity, x.message, x.flag) for x in base]
    extra = cc.Diag("sparse", "mm/mremap.c", 505, "warning", "dereference of noderef expression")
    d = cc.delta(base, moved + [extra])
    assert d.new == [extra] and len(d.both) == 2
    # one more copy of a warning the base already has is new; a warning the series removes is "gone"
    d = cc.delta(base, moved + moved[:1])
    assert len(d.new) == 1 and d.new[0].message == base[0].message
    d = cc.delta(base, moved[1:])
    assert [x.message for x in d.gone] == [base[0].message]


def test_sparse_expected_got_folded_and_errors() -> None:
    text = ("/k/mm/mremap.c:510:22: warning: incorrect type in argument 1 (different address spaces)\n"
            "/k/mm/mremap.c:510:22:    expected void const volatile [noderef] __user *ptr\n"
            "   expected void const volatile [noderef] __user *ptr\n"
            "   got unsigned long *\n"
            "/k/mm/mremap.c:9:1: error: unknown type name 'foo'\n")
    ds = cc.parse(text, "sparse", Path("/k"))
    assert ds[0].message.endswith("; expected void const volatile [noderef] __user *ptr; got unsigned long *")
    assert ds[-1].severity == "error" and ds[-1].file == "mm/mremap.c"


def test_exit_code_new_warning_and_not_bisectable() -> None:
    new = {"tools": {"sparse": {"new": [{"x": 1}]}}, "bisect": []}
    assert cc.exit_code({"x86_64": new}, False)[0] == 1
    code, why = cc.exit_code({"x86_64": new}, True)
    assert code == 0 and "allowed" in why[0]
    broken = {"tools": {}, "bisect": [{"builds": False, "patch": 1, "subject": "s", "failed": ["mm/a.o"]}]}
    assert cc.exit_code({"arm64": broken}, True)[0] == 4


def test_parse_tools_rejects_unknown() -> None:
    import pytest

    from kpipe.errors import UsageError
    assert cc.parse_tools("sparse, clang") == ("sparse", "clang")
    with pytest.raises(UsageError):
        cc.parse_tools("icc")
