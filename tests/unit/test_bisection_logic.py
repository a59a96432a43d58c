"""Which --expect describes a kernel (bisect's endpoint hint), on verifier results made from the expectations
table itself: a kernel that behaves exactly as a policy says, known failures (xfail:CODE) included."""
from __future__ import annotations

from kpipe.report import results as R
from kpipe.workflows.bisection import matching_policies
from kpipe.checks.suite import get as get_suite
from kpipe.checks.verifier import load_expectations

SEED = get_suite()
POLICIES = tuple(load_expectations(SEED).policies)


def _kernel_as(policy: str) -> dict:
    col = load_expectations().column(policy)
    tests = []
    for case, expected in col.items():
        if expected == "skip":          # a refused data case: SKIP, not an answer
            tests.append(R.TestResult("verifier", case, R.Status.SKIP, expected, "skip"))
        elif expected.startswith("xfail:"):
            tests.append(R.TestResult("verifier", case, R.Status.XFAIL, expected, expected.split(":", 1)[1]))
        else:
            tests.append(R.TestResult("verifier", case, R.Status.PASS, expected, expected))
    ar = R.ArchResult(arch="x86_64")
    ar.tests = tests
    return {"x86_64": ar}


def test_each_policy_is_recognised_from_a_kernel_that_follows_it():
    for p in POLICIES:
        assert p in matching_policies(_kernel_as(p), SEED), p
    assert matching_policies(_kernel_as("anon-only"), SEED) == ["anon-only"]


def test_a_known_failure_seen_as_a_failure_under_another_policy_still_matches_its_own():
    """The seed kernel judged under anon-only: mlock-part-memfd is a FAIL there (observed VMLCK), which is
    exactly anon+shmem's known failure xfail:VMLCK."""
    results = _kernel_as("anon+shmem")
    ar = results["x86_64"]
    ar.tests = [R.TestResult(t.suite, t.name, R.Status.FAIL if t.status == R.Status.XFAIL else t.status, "EINVAL",
                             t.observed) for t in ar.tests]
    assert "anon+shmem" in matching_policies(results, SEED)
