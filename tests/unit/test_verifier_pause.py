"""The GC pause and the fast path, as the verifier's latency-* and pmd-* cases print them (the lines below are
the binary's own format, the seed suite's state.c) and as premerge judges them: non-overlapping ranges of
repeated moves."""
from __future__ import annotations

from kpipe.report.results import Status
from kpipe.report.results import TestResult as Result
from kpipe.checks.suite import get as get_suite
from kpipe.checks.verifier import fast_path, latencies, latency_regressions, pause_summary

SEED = get_suite()


def _lat(name: str, med: int, lo: int, hi: int, status: Status = Status.PASS, mb: int = 16, vmpte: int = 0) -> Result:
    return Result("verifier", name, status, observed="ok" if status == Status.PASS else "PTEPATH",
                  detail=f"latency_us={med} min_us={lo} max_us={hi} moves=15 size_mb={mb} kind=memfd shared "
                         f"clocksource=tsc vmpte_max_kb={vmpte} (2 MiB aligned: the PMD move)")


def test_pause_summary_reads_median_range_and_vmpte():
    tests = [_lat("latency-anon", 310, 250, 900),
             _lat("latency-memfd", 4100, 3900, 5200, Status.FAIL, vmpte=32),
             Result("verifier", "pmd-memfd", Status.FAIL, observed="PTEPATH",
                    detail="new VMA Rss 4096 kB AnonHugePages 0 kB; VmPTE +8 kB across the move (2 PMDs: PTE by PTE "
                           "allocates a 4 kB page-table page per PMD at the destination, a PMD move none); VmPTE grew")]
    s = pause_summary(tests, SEED.pause)
    assert s["latency"]["latency-anon"] == {"median_us": 310, "min_us": 250, "max_us": 900, "moves": 15,
                                            "size_mb": 16, "status": "pass", "vmpte_max_kb": 0}
    assert s["latency"]["latency-memfd"]["status"] == "fail" and s["latency"]["latency-memfd"]["vmpte_max_kb"] == 32
    assert fast_path(tests, SEED.pause) == {"pmd-memfd": {"status": "fail", "observed": "PTEPATH", "vmpte_kb": 8,
                                                          "pmds": 2}}
    assert latencies(tests) == {"latency-anon": (310, 16)}      # only what passed is compared


def test_premerge_needs_non_overlapping_ranges():
    base = [_lat("latency-anon", 300, 250, 900)]
    assert latency_regressions(base, [_lat("latency-anon", 700, 400, 1200)], SEED.pause) == []     # ranges overlap
    (msg,) = latency_regressions(base, [_lat("latency-anon", 4000, 3500, 5000)], SEED.pause)
    assert msg.startswith("latency-anon: median 4000 us (range 3500-5000) vs 300 us (250-900)")
    assert latency_regressions([_lat("latency-anon", 300, 250, 400)], [_lat("latency-anon", 550, 500, 700)],
                               SEED.pause) == []  # apart, < 2x


def test_premerge_compares_a_memfd_heap_with_the_baselines_anon_heap():
    """5.10 refuses the memfd move: the patched memfd pause is held against the baseline's anon pause."""
    base = [_lat("latency-anon", 300, 250, 900),
            Result("verifier", "latency-memfd", Status.SKIP, observed="EINVAL", detail="move rejected as expected")]
    (msg,) = latency_regressions(base, [_lat("latency-anon", 310, 250, 880), _lat("latency-memfd", 4000, 3600, 4700)],
                                 SEED.pause)
    assert msg.startswith("latency-memfd:") and "the baseline's latency-anon" in msg
    assert latency_regressions(base, [_lat("latency-memfd", 320, 260, 700)], SEED.pause) == []
