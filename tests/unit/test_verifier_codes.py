"""The verifiers' failure codes are one list (suites/lib/codes.h): every code an expectation, a mutant or a test
names must be one a case can observe, and the C names them only through that list."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from kpipe.checks.suite import LIB_DIR, SUITES_DIR, get, shipped_names
from kpipe.checks.verifier import load_expectations

TESTS = Path(__file__).resolve().parents[1]


def failure_codes() -> list[str]:
    return re.findall(r"^\s*X\((\w+)\)", (LIB_DIR / "codes.h").read_text(), re.M)


def errno_names() -> set[str]:
    """What harness.c's errno_name prints for a known errno."""
    return set(re.findall(r'\{E\w+, "(E\w+)"\}', (LIB_DIR / "harness.c").read_text()))


def signal_names() -> set[str]:
    """What the harness reports for a case a signal ended (and read_check for a faulting read)."""
    return set(re.findall(r'case SIG\w+: return "(SIG\w+)"', (LIB_DIR / "harness.c").read_text()))


def observable() -> set[str]:
    return {"ok"} | set(failure_codes()) | errno_names() | signal_names()


def test_the_lists_parse_and_do_not_overlap():
    codes = failure_codes()
    assert len(codes) > 30 and codes == sorted(set(codes)), "codes.h: one X(NAME) per line, sorted, unique"
    assert "EINVAL" in errno_names() and "SIGSEGV" in signal_names() and "SIGALRM" in signal_names()
    assert not set(codes) & (errno_names() | signal_names())


@pytest.mark.parametrize("name", shipped_names())
def test_every_expected_value_is_observable(name):
    """"ok", "skip", an errno name, or xfail:CODE naming what a case can observe."""
    exp = load_expectations(get(name))
    bad = []
    for case, c in exp.cases.items():
        for policy, value in c.outcomes.items():
            if value.startswith("xfail:"):
                ok = value[6:] in observable() - {"ok"}
            else:
                ok = value in {"ok", "skip"} | errno_names()
            if not ok:
                bad.append(f"{case} [{policy}] = {value!r}")
    assert not bad, f"{exp.path}: values no case can observe: {bad}"


def test_the_mutants_and_tests_name_real_codes():
    from test_verifier_mutant_list import CAUGHT
    named = {(f"mutant {m}: {case}", code) for m, (_, cases) in CAUGHT.items() for case, code in cases.items()}
    for p in TESTS.rglob("*.py"):
        for code in re.findall(r'\.observed\s*==\s*"([A-Z][A-Z0-9]+)"', p.read_text()):
            named.add((p.name, code))
    assert len(named) > 20
    assert [(who, code) for who, code in sorted(named) if code not in observable()] == []


def test_the_c_names_failure_codes_only_through_codes_h():
    """A code as a bare string literal in a suite's C (outside comments) escapes the compile-time check."""
    codes = set(failure_codes())
    found = []
    for c in sorted(SUITES_DIR.glob("*/verify/*.[ch]")) + sorted(LIB_DIR.glob("*.[ch]")):
        text = re.sub(r"/\*.*?\*/", "", c.read_text(), flags=re.S)
        found += [f"{c.relative_to(SUITES_DIR)}: \"{s}\"" for s in re.findall(r'"([A-Z][A-Z0-9]+)"', text)
                  if s in codes]
    assert not found
