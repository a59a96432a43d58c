"""Unit tests of the KTAP / TAP parser (pure logic)."""
from __future__ import annotations

import textwrap

from kpipe.checks.ktap import looks_like_ktap, parse_document, parse_ktap
from kpipe.report.results import Status


def _k(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_flat_tap13_statuses_and_directives():
    res = parse_ktap(_k("""
        TAP version 13
        1..8
        ok 1 plain pass
        not ok 2 plain fail
        ok 3 # SKIP no hugetlb pages
        not ok 4 skipped the old way # SKIP reason
        ok 5 # XFAIL known broken
        not ok 6 # error could not set up
        not ok 7 a todo # TODO later
        ok 8 - with dash \\# not a directive
        # Totals: pass:2 fail:1
        """))
    assert [(r.name, r.status) for r in res] == [
        ("plain pass", Status.PASS), ("plain fail", Status.FAIL), ("test 3", Status.SKIP),
        ("skipped the old way", Status.SKIP), ("test 5", Status.XFAIL), ("test 6", Status.ERROR),
        ("a todo", Status.XFAIL), ("with dash # not a directive", Status.PASS)]
    assert res[2].detail.startswith("SKIP no hugetlb pages")
    assert res[5].observed == "not ok 6 # error could not set up"


def test_xpass_and_timeout_are_failures():
    res = parse_ktap("1..2\nok 1 foo # XPASS\nnot ok 2 selftests: vm: bar # TIMEOUT 45 seconds\n")
    assert [r.status for r in res] == [Status.FAIL, Status.FAIL]
    assert "unexpected pass" in res[0].detail
    assert "TIMEOUT 45 seconds" in res[1].observed


def test_unknown_directive_is_a_comment_and_keeps_the_status():
    res = parse_ktap("1..2\nnot ok 1 selftests: vm: x # exit=1\nok 2 y # some note\n")
    assert [r.status for r in res] == [Status.FAIL, Status.PASS]
    assert res[0].name == "selftests: vm: x" and "exit=1" in res[0].detail


def test_diagnostics_attach_to_the_following_test_point():
    res = parse_ktap("1..2\n# setting up\nfree text from the test\nok 1 a\n# about b\nnot ok 2 b\n# tail\n")
    assert res[0].detail == "# setting up\nfree text from the test"
    assert res[1].detail == "# about b"
    assert parse_document("1..1\nok 1 a\n# tail\n").diagnostics == ["# tail"]


def test_ktap_indented_nesting_keeps_every_level():
    text = _k("""
        KTAP version 1
        1..2
            KTAP version 1
            # Subtest: outer
            1..2
                KTAP version 1
                # Subtest: inner
                1..2
                ok 1 leaf_a
                ok 2 leaf_b
            ok 1 inner
            ok 2 other
        ok 1 outer
        ok 2 sibling
        """)
    doc = parse_document(text)
    assert doc.version == "KTAP version 1" and doc.plan == 2 and not doc.problems
    outer, sibling = doc.tests
    assert outer.name == "outer" and outer.status == Status.PASS
    assert [s.name for s in outer.subtests] == ["inner", "other"]
    assert [s.name for s in outer.subtests[0].subtests] == ["leaf_a", "leaf_b"]
    assert sibling.subtests == ()
    assert [r.name for r in outer.walk()] == ["outer", "inner", "leaf_a", "leaf_b", "other"]


def test_later_pass_never_hides_earlier_failure_of_the_same_name():
    text = _k("""
        KTAP version 1
        1..1
            KTAP version 1
            # Subtest: mremap
            1..3
            not ok 1 dontunmap_shmem
            ok 2 dontunmap_shmem
            ok 3 dontunmap_shmem
        ok 1 mremap
        """)
    (parent,) = parse_ktap(text)
    assert [s.status for s in parent.subtests] == [Status.FAIL, Status.PASS, Status.PASS]
    # the parent said ok, but a child failed: the parent is FAIL and says why
    assert parent.status == Status.FAIL
    assert "reported 'ok' but 1 subtest(s) failed: dontunmap_shmem" in parent.detail
    # same at the top level: both results of the same name survive
    res = parse_ktap("1..2\nnot ok 1 same\nok 2 same\n")
    assert [(r.name, r.status) for r in res] == [("same", Status.FAIL), ("same", Status.PASS)]


def test_deep_failure_propagates_through_every_parent():
    text = "1..1\n    1..1\n        1..1\n        not ok 1 deep\n    ok 1 mid\nok 1 top\n"
    (top,) = parse_ktap(text)
    assert top.status == Status.FAIL and top.subtests[0].status == Status.FAIL
    assert top.subtests[0].subtests[0].status == Status.FAIL


def test_kselftest_runner_hash_prefixed_nesting():
    text = _k("""
        TAP version 13
        1..2
        # selftests: mm: mremap_test
        # TAP version 13
        # 1..3
        # ok 1 expand
        # not ok 2 shrink
        # ok 3 # SKIP no THP
        # # Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0
        not ok 1 selftests: mm: mremap_test # exit=1
        # selftests: vm: mremap_dontunmap
        # OK
        ok 2 selftests: vm: mremap_dontunmap
        """)
    first, second = parse_ktap(text)
    assert first.status == Status.FAIL and "exit=1" in first.detail
    assert [(s.name, s.status) for s in first.subtests] == [
        ("expand", Status.PASS), ("shrink", Status.FAIL), ("test 3", Status.SKIP)]
    # free text without a version line stays diagnostics, not subtests
    assert second.subtests == () and second.status == Status.PASS
    assert "# OK" in second.detail


def test_hash_prefixed_child_failure_fails_an_ok_parent():
    text = "1..1\n# TAP version 13\n# 1..2\n# ok 1 a\n# not ok 2 b\nok 1 selftests: vm: t\n"
    (t,) = parse_ktap(text)
    assert t.status == Status.FAIL and "subtest(s) failed: b" in t.detail


def test_missing_test_points_against_the_plan_are_errors():
    doc = parse_document("TAP version 13\n1..4\nok 1 a\nok 3 c\n")
    assert [r.name for r in doc.tests] == ["a", "c", "test 2 (missing)", "test 4 (missing)"]
    assert [r.status for r in doc.tests][2:] == [Status.ERROR, Status.ERROR]
    assert doc.problems and "2, 4" in doc.problems[0]
    assert doc.status() == Status.ERROR


def test_trailing_plan_and_points_beyond_the_plan():
    assert [r.status for r in parse_ktap("ok 1 a\nok 2 b\n1..2\n")] == [Status.PASS, Status.PASS]
    doc = parse_document("1..1\nok 1 a\nok 2 b\n")
    assert doc.tests[-1].name == "plan" and doc.tests[-1].status == Status.ERROR
    assert "beyond the plan" in doc.problems[0]


def test_bail_out_stops_and_marks_the_rest():
    doc = parse_document("TAP version 13\n1..3\nok 1 a\nBail out! no userfaultfd\nok 2 never parsed\n")
    assert [r.name for r in doc.tests] == ["a", "test 2 (missing)", "test 3 (missing)"]
    assert "bailed out (no userfaultfd)" in doc.tests[1].detail
    assert doc.bailed == "no userfaultfd"
    doc = parse_document("ok 1 a\nBail out!\n")
    assert doc.tests[-1].name == "Bail out!" and doc.tests[-1].status == Status.ERROR


def test_nested_missing_points_fail_the_parent():
    (p,) = parse_ktap("1..1\n    1..3\n    ok 1 a\nok 1 parent\n")
    assert p.status == Status.FAIL
    assert "never reported" in p.detail
    assert [s.status for s in p.subtests] == [Status.PASS, Status.ERROR, Status.ERROR]


def test_whole_document_skip_plan():
    doc = parse_document("TAP version 13\n1..0 # SKIP userfaultfd not available\n")
    assert doc.tests == [] and doc.plan == 0 and doc.status() == Status.SKIP


def test_duplicate_numbers_are_kept_and_flagged():
    doc = parse_document("1..2\nok 1 a\nnot ok 1 a\nok 2 b\n")
    assert [r.status for r in doc.tests] == [Status.PASS, Status.FAIL, Status.PASS]
    assert any("more than once" in p for p in doc.problems)


def test_subtest_header_names_an_unnamed_parent():
    (p,) = parse_ktap("1..1\n    KTAP version 1\n    # Subtest: memfd\n    1..1\n    ok 1 x\nok 1\n")
    assert p.name == "memfd" and p.status == Status.PASS


def test_free_text_is_not_ktap():
    text = "running mremap tests\nOK\nall done\n"
    assert not looks_like_ktap(text)
    assert parse_ktap(text) == []
    assert looks_like_ktap("TAP version 13\n")
    assert looks_like_ktap("blah\nok 1 x\n")


def test_crlf_and_tabs():
    res = parse_ktap("1..1\r\n\t1..1\r\n\tnot ok 1 inner\r\nok 1 outer\r\n")
    assert res[0].status == Status.FAIL and res[0].subtests[0].name == "inner"
