"""Reports are safe to publish: a hostile patch subject, author, test name and kernel log line come out as text in
report.html (checked in a real headless Chromium), summary.md and premerge.md (checked with a CommonMark+tables
renderer). Nothing is built or booted."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from kpipe.report import writers as report
from kpipe.report.results import (ArchResult, BisectOutcome, BisectStep, Commit, Finding, KernelInfo, PremergeArch,
                                  RunExtra, RunResult, Status)
from kpipe.report.results import TestResult as Case

PWN = "document.title='PWNED'"
SUBJECT = f'mm: <script>{PWN}</script> | `x` [click](javascript:alert(1)) **b** & co'
AUTHOR = f'"<img src=x onerror="{PWN}">" <evil@example.org>'
LOGLINE = f'[    1.0] WARNING: CPU: 0 <svg onload="{PWN}"> at mm/mremap.c:1 ``` | ` end'
TESTNAME = f'case<iframe src="javascript:{PWN}">'
HOSTILE_MARKUP = ("<script", "<img", "<svg", "<iframe", "href=\"javascript", "src=\"javascript")


def hostile_run(out: Path) -> RunResult:
    ar = ArchResult(arch="x86_64", verdict="fail", exit_code=1)
    ar.kernel = KernelInfo(release="5.10.0", tree="debian:5.10", base_label="HEAD", policy="anon+shmem", head="ab" * 20)
    ar.patches = [{"file": "0001-x.patch", "subject": SUBJECT, "author": AUTHOR, "status": "applied",
                   "commit": "cd" * 20}]
    ar.tests = [Case("verifier", TESTNAME, Status.FAIL, expected="ok", observed=f"<b>{LOGLINE}</b>",
                           detail=LOGLINE, output="javascript:alert(1)")]
    ar.findings = [Finding(kind="warning", source="dmesg", line=LOGLINE, context=(LOGLINE, "</pre><script>x</script>"))]
    ar.error = f"kernel misbehaved: {SUBJECT}"
    ar.logs = {"dmesg": str(out / "x86_64" / "dmesg.log")}
    run = RunResult(workflow="premerge", verdict="fail", exit_code=1, arches={"x86_64": ar},
                    reproducer=f"kpipe premerge --patch '{SUBJECT}'", started="2026-12-01T14:00:00", out_dir=str(out))
    flip = {"baseline_policy": "anon-only", "patched_policy": "anon+shmem", "ok": False, "why": SUBJECT, "flipped": 0,
            "cases": [{"case": TESTNAME, "baseline_expected": "EINVAL", "baseline_observed": LOGLINE,
                       "patched_expected": "ok", "patched_observed": SUBJECT, "flipped": "no", "detail": AUTHOR}]}
    run.extra = RunExtra(
        premerge={"x86_64": PremergeArch(
            comparison=[{"test": TESTNAME, "baseline": "pass", "patched": "fail", "change": "regressed"}],
            flip=flip, new_findings=[LOGLINE], reasons=[SUBJECT], latency={}, exit_code=1, verdict="fail",
            baseline={"verdict": "pass"}, patched={"verdict": "fail"})},
        checkpatch=[{"file": SUBJECT, "errors": 1, "warnings": 0, "messages": [LOGLINE]}],
        bisect=BisectOutcome(first_bad=Commit(commit="ef" * 20, subject=SUBJECT),
                             steps=[BisectStep(commit="ef" * 20, subject=SUBJECT, verdict="fail", exit_code=1,
                                               mark="bad", why=LOGLINE)]),
    )
    return run


@pytest.fixture
def written(tmp_path) -> Path:
    report.write_all(hostile_run(tmp_path), tmp_path)
    return tmp_path


def test_report_html_escapes_everything(written):
    html = (written / "report.html").read_text()
    for bad in HOSTILE_MARKUP:
        assert bad not in html, bad
    assert "&lt;script&gt;" in html and "&lt;img src=x" in html and "&lt;svg onload" in html
    assert 'href="#"' in html                                      # the javascript: link target was dropped
    assert "</pre><script>" not in html


def _md_html(path: Path) -> str:
    return MarkdownIt("commonmark").enable("table").render(path.read_text())


def test_markdown_reports_render_as_text(written):
    for name in ("summary.md", "premerge.md"):
        rendered = _md_html(written / name)
        for bad in HOSTILE_MARKUP:
            assert bad not in rendered, (name, bad)
        assert "PWNED" in rendered                                  # the text is still there, as text
    summary = _md_html(written / "summary.md")
    # the hostile subject stays inside its one table cell: the patches row keeps its 5 cells
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", summary, re.S) if "0001-x.patch" in r)
    assert row.count("<td") == 5, row
    assert "**b**" in summary and "<strong>b</strong>" not in summary        # no emphasis taken from a subject
    # the kernel log line is one code span holding the line verbatim (its backticks could not close it)
    codes = re.findall(r"<code>(.*?)</code>", summary, re.S)
    assert any("WARNING: CPU: 0 &lt;svg onload" in c and "``` | ` end" in c for c in codes), codes
    assert "<th>why</th>" in summary                                # the bisection table renders as a table
    premerge = _md_html(written / "premerge.md")
    assert any("kpipe premerge --patch" in c for c in re.findall(r"<code>(.*?)</code>", premerge, re.S))


def test_md_code_span_fence_is_longer_than_any_backtick_run():
    assert report.md_code("a ``` b") == "````a ``` b````"
    assert report.md_code("`x`") == "`` `x` ``"
    assert report.md_escape("a|b <i>\nc") == "a\\|b &lt;i&gt; c"


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("chromium is missing: `kpipe setup` installs it (the report check runs in a real browser)")
    return exe


def test_report_html_in_a_real_browser_runs_no_injected_code(written):
    """Headless Chromium loads report.html; had any hostile value become markup, its handler would set the title."""
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            f"--user-data-dir={profile}", "--virtual-time-budget=2000", "--dump-dom",
                            (written / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert re.search(r"<title>kpipe premerge: fail</title>", dom), dom[:500]
    assert "PWNED</title>" not in dom
    for tag in ("<script", "<img", "<svg", "<iframe"):
        assert tag not in dom, tag
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom


def test_reports_render_sections_left_empty(tmp_path):
    """A kernel that panicked at boot under LAVA: a boot section with LAVA's answer but no boot time, no build
    (seen: the boot line read a time that was never measured); every report is still written."""
    from kpipe.report.results import BootInfo, LavaInfo, to_dict
    ar = ArchResult(arch="x86_64", verdict="fail", exit_code=1, error="kernel panic on x86_64: no init")
    ar.boot = BootInfo(accel="tcg", lava=LavaInfo(job_result="fail", error_type="Infrastructure"))
    run = RunResult(workflow="lava", verdict="fail", exit_code=1, arches={"x86_64": ar}, out_dir=str(tmp_path))
    report.write_all(run, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "| boot | - |" in summary and "| build | - |" in summary
    assert "kernel panic on x86_64" in (tmp_path / "report.html").read_text()
    lava = to_dict(run)["arches"]["x86_64"]["boot"]["lava"]
    assert lava["error_msg"] is None and lava["job_result"] == "fail"     # LAVA's answer whole, nulls included
    assert "seconds" not in to_dict(run)["arches"]["x86_64"]["boot"]
