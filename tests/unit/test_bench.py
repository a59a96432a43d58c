"""`invoke bench`: the row writer and the resume logic on a golden bench.json (fast tier). One real
`bench --quick` row: tests/e2e/test_bench_real_row.py."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from kpipe.bench import measure as bench, rows as benchrows
from kpipe.bench.rows import Step, add_row, load_doc, missing_steps, plan_steps, row_key, write_doc

GOLDEN = Path(__file__).parents[1] / "data" / "bench" / "stopped" / "bench.json"


@pytest.fixture
def stopped(tmp_path: Path) -> Path:
    d = tmp_path / "bench"
    d.mkdir()
    shutil.copy(GOLDEN, d / "bench.json")
    return d


def test_golden_resume_runs_only_the_missing_steps() -> None:
    doc = load_doc(GOLDEN)
    assert doc is not None
    steps = plan_steps(doc["plan"]["arches"], doc["plan"]["profiles"], doc["plan"]["quick"])
    todo = [s.name for s in missing_steps(steps, doc)]
    # the golden run stopped after x86_64's warm and unchanged rows
    assert todo == ["warm/arm64/debug", "unchanged/arm64/debug", "all/all/debug", "premerge/all/debug",
                    "lava/x86_64/debug", "lava/arm64/debug"]


def test_a_step_with_one_of_its_two_rows_is_run_again() -> None:
    doc = load_doc(GOLDEN)
    assert doc is not None
    doc["rows"] = [r for r in doc["rows"] if r["phase"] != "warm"]      # stopped between incremental and warm
    todo = missing_steps([Step("warm", "debug", "x86_64", ("incremental/x86_64/debug", "warm/x86_64/debug"))], doc)
    assert [s.name for s in todo] == ["warm/x86_64/debug"]


def test_plan_quick_has_no_cold_rows_and_full_has_them() -> None:
    quick = {s.kind for s in plan_steps(["x86_64", "arm64"], ["debug", "fast"], quick=True)}
    full = plan_steps(["x86_64", "arm64"], ["debug", "fast"], quick=False)
    assert quick == {"warm", "unchanged", "all", "premerge", "lava"}
    assert {s.name for s in full if s.kind in ("cold", "newdir")} == {
        f"{k}/{a}/{p}" for k in ("cold", "newdir") for a in ("x86_64", "arm64") for p in ("debug", "fast")}
    assert not [s for s in full if s.kind == "lava" and s.profile == "fast"]      # LAVA rows: debug only
    one = plan_steps(["arm64"], ["debug"], quick=True, only=("unchanged", "premerge"))
    assert [s.name for s in one] == ["unchanged/arm64/debug", "premerge/arm64/debug"]   # no `all` with one arch


def test_each_row_is_written_and_printed_the_moment_it_is_added(stopped: Path) -> None:
    path = stopped / "bench.json"
    doc = load_doc(path)
    assert doc is not None
    printed: list[str] = []
    row = benchrows._row("warm", "arm64", 58.4, 52.0, 1.5, note="new")
    row["load"] = [1.75, 1.5, 1.25]
    add_row(path, doc, row, printed.append)
    on_disk = json.loads(path.read_text())
    assert [row_key(r) for r in on_disk["rows"]][-1] == "warm/arm64/debug"
    assert len(on_disk["rows"]) == 4 and on_disk["rows"][-1]["ratio"] == 1.12 and on_disk["rows"][-1]["ok"] is True
    assert len(printed) == 1 and "58.4" in printed[0] and "52.0" in printed[0] and "1.75" in printed[0]
    # measured again: replaced, not duplicated
    add_row(path, doc, benchrows._row("warm", "arm64", 60.0, 50.0, 1.5), printed.append)
    rows = json.loads(path.read_text())["rows"]
    assert [r["kpipe_s"] for r in rows if row_key(r) == "warm/arm64/debug"] == [60.0]
    assert sorted(p.name for p in stopped.iterdir()) == ["bench.json"]     # no temporary file left behind


def test_a_write_that_fails_midway_leaves_the_previous_file(stopped: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = stopped / "bench.json"
    before = path.read_text()
    doc = load_doc(path)
    assert doc is not None
    doc["rows"].append(benchrows._row("warm", "arm64", 50.0, 45.0, 1.5))

    def half_then_crash(self: Path, data: str, *a: object, **k: object) -> int:     # the bench killed mid-write
        with open(self, "w") as f:
            f.write(data[: len(data) // 2])
        raise OSError("killed")
    monkeypatch.setattr(Path, "write_text", half_then_crash)
    with pytest.raises(OSError):
        write_doc(path, doc)
    monkeypatch.undo()
    assert path.read_text() == before and load_doc(path) is not None
    assert sorted(p.name for p in stopped.iterdir()) == ["bench.json"]


def test_cost_rows_divide_debug_by_fast() -> None:
    rows = [benchrows._row("warm", "x86_64", 45.0, 40.0, 1.5, profile="debug"),
            benchrows._row("warm", "x86_64", 18.0, 16.0, 1.5, profile="fast"),
            benchrows._row("unchanged", "x86_64", 30.0, 28.0, 1.2, profile="debug")]
    (cost,) = benchrows.cost_rows(rows)
    assert (cost["phase"], cost["ratio"]) == ("cost:warm", 2.5)


def test_older_one_shot_bench_json_is_not_resumed(tmp_path: Path) -> None:
    (tmp_path / "bench.json").write_text(json.dumps({"machine": {}, "rows": [], "targets": {}}))
    assert load_doc(tmp_path / "bench.json") is None
    with pytest.raises(Exception, match="no bench.json"):
        bench.run_bench(resume=str(tmp_path))


def test_resume_of_a_finished_bench_runs_nothing_and_prints_the_table(tmp_path: Path) -> None:
    d = tmp_path / "done"
    d.mkdir()
    doc = json.loads(GOLDEN.read_text())
    doc["plan"] = {**doc["plan"], "arches": ["x86_64"], "only": ["warm", "unchanged"]}
    (d / "bench.json").write_text(json.dumps(doc))
    printed: list[str] = []
    t = time.monotonic()
    assert bench.run_bench(resume=str(d), echo=printed.append) == 0
    assert time.monotonic() - t < 5                        # no tree fetched, nothing built or booted
    assert sorted(p.name for p in d.iterdir()) == ["bench.json"]
    after = json.loads((d / "bench.json").read_text())
    assert after["complete"] is True and len(after["rows"]) == 3
    assert sum("(from the earlier run)" in ln for ln in printed) == 3


def test_readme_measured_rows_come_from_the_recorded_bench_json() -> None:
    """The README's debug table is this real bench.json's rows (regenerate one with the other)."""
    real = load_doc(Path(__file__).parents[1] / "data" / "bench" / "2026-12-02-shared" / "bench.json")
    assert real is not None and real["rows"]
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for r in real["rows"]:
        assert f"| {r['phase']} | {r['arch']} | {r['profile']} | {r['kpipe_s']} | {r['raw_s']} | {r['ratio']} |" \
            in readme


def test_raw_side_scans_for_leaks_exactly_when_kpipes_run_did():
    """The warm/unchanged rows compare the same work: kpipe's debug run ends with kmemleak's scan (25-35 s per arch
    under TCG), so the raw side runs the same scan script then, and only then."""
    from kpipe.report.results import ArchResult, KmemleakInfo
    ar = ArchResult(arch="arm64")
    assert not bench.kpipe_scanned_for_leaks(ar)                       # fast profile: no scan at all
    ar.boot.kmemleak = KmemleakInfo(not_scanned="leak_scan is off (environment KPIPE_LEAK_SCAN)")
    assert not bench.kpipe_scanned_for_leaks(ar)
    ar.boot.kmemleak = KmemleakInfo(seconds=34.98, leaks=0)
    assert bench.kpipe_scanned_for_leaks(ar)
    assert "echo scan >" in bench.kmemleak.SCAN_SCRIPT                 # the script the raw side sends over ssh



def test_raw_side_that_failed_fast_is_not_a_measurement():
    """Every raw binary must run and pass (exit 0, or kselftest's skip 4): a raw run that exits early would make
    kpipe look slow against less work."""
    from kpipe.errors import InfraError
    runnable = [(Path("mremap_dontunmap"), ["-e", "verifier-expect.txt"]), (Path("userfaultfd"), ["anon", "16", "4"]),
                (Path("userfaultfd"), ["shmem", "16", "4"]), (Path("memfd_test"), [])]
    lines = ["KPIPE-RAW-EXIT 0 mremap_dontunmap -e verifier-expect.txt", "KPIPE-RAW-EXIT 0 userfaultfd anon 16 4",
             "KPIPE-RAW-EXIT 0 userfaultfd shmem 16 4", "KPIPE-RAW-EXIT 4 memfd_test "]
    bench.check_raw_exits("\n".join(lines) + "\n", runnable)
    failed = [ln.replace("0 userfaultfd shmem", "1 userfaultfd shmem") for ln in lines]
    with pytest.raises(InfraError, match=r"userfaultfd shmem 16 4 exited 1"):
        bench.check_raw_exits("\n".join(failed), runnable)
    with pytest.raises(InfraError, match=r"memfd_test did not run"):
        bench.check_raw_exits("\n".join(lines[:3]), runnable)


def test_resume_with_only_measures_just_those_kinds_of_what_is_missing(tmp_path: Path) -> None:
    """A stopped bench whose plan still lacks steps (premerge, LAVA): `--resume DIR --only warm,unchanged` runs
    none of them (their rows are there), it does not fall back to the whole plan."""
    d = tmp_path / "stopped"
    d.mkdir()
    doc = json.loads(GOLDEN.read_text())
    doc["plan"] = {**doc["plan"], "arches": ["x86_64"], "only": []}
    (d / "bench.json").write_text(json.dumps(doc))
    assert missing_steps(plan_steps(["x86_64"], doc["plan"]["profiles"], doc["plan"]["quick"]), doc)
    t = time.monotonic()
    bench.run_bench(resume=str(d), only="warm,unchanged", echo=[].append)
    assert time.monotonic() - t < 5                        # no tree fetched, nothing built or booted
    assert sorted(p.name for p in d.iterdir()) == ["bench.json"]
