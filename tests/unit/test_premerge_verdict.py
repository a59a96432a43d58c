"""Premerge's per-arch judgement (kpipe/workflows/comparison.py) on ArchResults shaped like real runs: a correct flip
passes; a regression, a new failing test or a new kernel finding is the patch's fault (exit 1); a side that
could not be verified is exit 2, and its ERRORs and missing cases are never counted against the patch (seen
in CI: an SSH channel refused mid-selftests on the patched arm64 kernel was reported as a regression)."""
from __future__ import annotations

import pytest

from kpipe.workflows.comparison import judge_premerge_arch
from kpipe.errors import EXIT_INFRA, EXIT_KERNEL, EXIT_PASS
from kpipe.report.results import ArchResult, Finding, RunExtra, RunResult, Status, to_dict
from kpipe.report.results import TestResult as Result
from kpipe.checks.verifier import load_expectations

SELFTESTS = ("mremap_dontunmap", "map_fixed_noreplace", "mlock2-tests", "memfd_test")


@pytest.fixture(scope="module")
def exp():
    return load_expectations()


def _verifier_rows(exp, policy):
    """Every verifier case as that policy says it goes on a correct kernel."""
    rows = []
    for name, case in exp.cases.items():
        want = case.outcomes[policy]
        if want == "skip":
            rows.append(Result("verifier", name, Status.SKIP, want, "EINVAL"))
        elif want.startswith("xfail:"):
            rows.append(Result("verifier", name, Status.XFAIL, want, want.removeprefix("xfail:")))
        else:
            rows.append(Result("verifier", name, Status.PASS, want, want))
    return rows


def _side(exp, policy, exit_code=EXIT_PASS, selftests=None, error=""):
    ar = ArchResult(arch="arm64", exit_code=exit_code, verdict={0: "pass", 1: "fail"}.get(exit_code, "error"),
                    error=error)
    ar.kernel.policy = policy
    ar.tests = _verifier_rows(exp, policy) + [
        Result("selftests", n, st, "exit 0", "exit 0" if st == Status.PASS else "")
        for n, st in (selftests or {n: Status.PASS for n in SELFTESTS}).items()]
    return ar


def test_correct_flip_passes(exp):
    j = judge_premerge_arch(_side(exp, "anon-only"), _side(exp, "anon+shmem"), exp)
    assert j.exit_code == EXIT_PASS and j.verdict == "pass" and not j.reasons, j.reasons
    assert j.flip["ok"] and j.flip["flipped"] > 0
    run = RunResult(workflow="premerge", extra=RunExtra(premerge={"arm64": j}))
    assert to_dict(run)["extra"]["premerge"]["arm64"]["verdict"] == "pass"       # result.json's shape


def test_regressed_selftest_is_the_patch(exp):
    st = {n: Status.PASS for n in SELFTESTS} | {"mlock2-tests": Status.FAIL}
    j = judge_premerge_arch(_side(exp, "anon-only"), _side(exp, "anon+shmem", EXIT_KERNEL, st), exp)
    assert j.exit_code == EXIT_KERNEL
    assert j.reasons == ["regressed: selftests/mlock2-tests"]


def test_new_kernel_finding_is_the_patch(exp):
    p = _side(exp, "anon+shmem", EXIT_KERNEL)
    p.findings = [Finding("warning", "dmesg", "[   12.3] WARNING: CPU: 1 PID: 80 at mm/mremap.c:123 move_vma")]
    j = judge_premerge_arch(_side(exp, "anon-only"), p, exp)
    assert j.exit_code == EXIT_KERNEL and "1 new kernel finding(s) in the patched kernel" in j.reasons


def test_patched_side_cut_short_by_the_infrastructure_is_exit_2_not_a_regression(exp):
    """The CI case: the verifier ran, then SSH refused mlock2-tests' channel: that test is an ERROR, the
    others never ran, the arch's run is exit 2."""
    st = {"mremap_dontunmap": Status.PASS, "mlock2-tests": Status.ERROR}
    p = _side(exp, "anon+shmem", EXIT_INFRA, st, error="SSH to the guest failed while running mlock2-tests")
    j = judge_premerge_arch(_side(exp, "anon-only"), p, exp)
    assert j.exit_code == EXIT_INFRA and j.verdict == "error"
    assert j.reasons == ["patched could not be verified: SSH to the guest failed while running mlock2-tests"]
    # ... and before the verifier: no flip to judge, still an infrastructure verdict
    early = _side(exp, "anon+shmem", EXIT_INFRA, {}, error="boot timed out")
    early.tests = []
    j = judge_premerge_arch(_side(exp, "anon-only"), early, exp)
    assert j.exit_code == EXIT_INFRA and not j.flip["ok"]
    assert all("flip" not in r.lower() for r in j.reasons), j.reasons


def test_a_fail_on_a_side_cut_short_is_still_the_patch(exp):
    """A FAIL is the kernel's doing even when the run ended in an infrastructure error later."""
    st = {"mremap_dontunmap": Status.FAIL, "mlock2-tests": Status.ERROR}
    j = judge_premerge_arch(_side(exp, "anon-only"), _side(exp, "anon+shmem", EXIT_INFRA, st, "ssh"), exp)
    assert j.exit_code == EXIT_KERNEL
    assert j.reasons[0] == "regressed: selftests/mremap_dontunmap"


def test_baseline_that_could_not_run_is_exit_2(exp):
    j = judge_premerge_arch(_side(exp, "anon-only", EXIT_INFRA, error="QEMU exited"),
                            _side(exp, "anon+shmem"), exp)
    assert j.exit_code == EXIT_INFRA and j.reasons == ["baseline could not be verified: QEMU exited"]


def test_a_test_that_passed_on_the_baseline_and_skipped_on_the_patched_kernel_is_a_regression(exp):
    st = {n: Status.PASS for n in SELFTESTS} | {"memfd_test": Status.SKIP}
    j = judge_premerge_arch(_side(exp, "anon-only"), _side(exp, "anon+shmem", selftests=st), exp)
    assert j.exit_code == EXIT_KERNEL, j.reasons
    assert j.reasons == ["regressed: selftests/memfd_test"]
    assert [r["change"] for r in j.comparison if r["test"] == "selftests/memfd_test"] == ["lost"]


def test_pass_to_skip_of_a_case_whose_policies_differ_is_not_a_regression(exp):
    # a verifier case the patched policy expects to skip while the baseline's expects a pass
    base, patched = _side(exp, "anon-only"), _side(exp, "anon+shmem")
    flip = next(n for n, c in exp.cases.items()
                if c.outcomes["anon-only"] != c.outcomes["anon+shmem"])
    for side, status in ((base, Status.PASS), (patched, Status.SKIP)):
        side.tests = [Result(t.suite, t.name, status, t.expected, t.observed) if t.name == flip else t
                      for t in side.tests]
    j = judge_premerge_arch(base, patched, exp)
    assert not any("regressed" in r for r in j.reasons), j.reasons


def test_a_retry_needed_only_on_the_patched_side_is_flagged_not_failed(exp):
    patched = _side(exp, "anon+shmem")
    patched.tests = [Result(t.suite, t.name, t.status, t.expected, t.observed, runs=2) if t.name == "mlock2-tests"
                     else t for t in patched.tests]
    j = judge_premerge_arch(_side(exp, "anon-only"), patched, exp)
    assert j.exit_code == EXIT_PASS
    assert any("needed a retry on the patched kernel but not on the baseline" in r and "mlock2-tests (2 runs)" in r
               for r in j.reasons), j.reasons


def test_lava_sides_carry_their_job_pages_into_every_report(exp, tmp_path):
    """premerge --lab: each side's LAVA job page (boot.lava.job_url) is in result.json's premerge verdict, in
    premerge.md, summary.md, report.html and the mail, for every arch."""
    from kpipe.report import writers as report
    from kpipe.report.results import LavaInfo
    urls, run = [], RunResult(workflow="premerge", verdict="pass", exit_code=0, out_dir=str(tmp_path))
    run.extra.premerge, run.extra.checkpatch = {}, []
    for n, arch in enumerate(("x86_64", "arm64")):
        sides = []
        for k, policy in enumerate(("anon-only", "anon+shmem")):
            ar = _side(exp, policy)
            ar.arch = arch
            url = f"http://127.0.0.1:8000/scheduler/job/{10 + 2 * k + n}"
            ar.boot.lava = LavaInfo(server="http://127.0.0.1:8000", job_id=url.rsplit("/", 1)[1], job_url=url)
            sides.append(ar)
            urls.append(url)
        j = judge_premerge_arch(*sides, exp)
        assert (j.baseline["job_url"], j.patched["job_url"]) == (urls[-2], urls[-1])
        run.extra.premerge[arch], run.arches[arch] = j, sides[1]
    report.write_all(run, tmp_path)
    for name in ("premerge.md", "summary.md", "report.html", "report.txt", "result.json"):
        text = (tmp_path / name).read_text()
        assert all(u in text for u in urls), (name, [u for u in urls if u not in text])
    assert "- LAVA jobs: baseline http://127.0.0.1:8000/scheduler/job/10, patched " \
           "http://127.0.0.1:8000/scheduler/job/12" in (tmp_path / "premerge.md").read_text()
    assert "not measured (the LAVA jobs do not read the kernel's gcov counters)" in \
        (tmp_path / "report.txt").read_text()


def test_local_sides_have_no_job_page(exp):
    j = judge_premerge_arch(_side(exp, "anon-only"), _side(exp, "anon+shmem"), exp)
    assert "job_url" not in j.baseline and "job_url" not in j.patched
