"""report.txt, the robot's mail (kpipe/report/mail.py): goldens rendered from result.json files whose findings
are real debug-kernel consoles and whose coverage is a real run's (fast)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpipe.report import mail as report_mail

DATA = Path(__file__).parents[1] / "data" / "report"
GOLDENS = sorted(p.name[:-len("-result.json")] for p in DATA.glob("*-result.json"))


@pytest.mark.parametrize("name", GOLDENS)
def test_report_txt_matches_its_golden(name: str) -> None:
    run = json.loads((DATA / f"{name}-result.json").read_text())
    text = report_mail.render(run)
    assert text == (DATA / f"{name}-report.txt").read_text(), \
        f"report.txt changed: python scripts/make_report_golden.py and review the diff ({name})"


@pytest.mark.parametrize("name", GOLDENS)
def test_report_txt_is_plain_72_columns(name: str) -> None:
    text = (DATA / f"{name}-report.txt").read_text()
    assert max(len(ln) for ln in text.splitlines() if not ln.startswith("Closes: ")) <= 72
    assert text.isascii() and not any(m in text for m in ("**", "<b>", "```", "\t"))
    assert text.startswith("Subject: [kpipe ")
    assert "\nReported-by: kpipe <kpipe@localhost>\n" in text


def test_uaf_mail_names_the_cause_the_signature_and_how_to_reproduce() -> None:
    text = (DATA / "uaf-report.txt").read_text()
    assert text.splitlines()[0] == "Subject: [kpipe premerge] FAIL: kasan: vma_to_resize < sys_mremap (mm:"
    assert "seen 2x in: patched/x86_64, patched/arm64" in text       # one signature over both arches
    assert ("      --patch tests/patches/test-kernel.patch --kernel-arg \\\n"
            "      kpipe_mutant=uaf --profile debug\n") in text
    assert "Closes:" not in text                                     # the series came without a URL


def test_closes_and_warnings_delta_when_result_json_has_them() -> None:
    run = json.loads((DATA / "uaf-result.json").read_text())
    run["extra"]["series"]["url"] = "https://lore.kernel.org/r/20210303175235.3308220-1-bgeffon@google.com"
    run["extra"]["warnings_delta"] = {"new": [{"file": "mm/mremap.c", "line": 502, "tool": "W=1",
                                               "message": "no previous prototype for 'f' [-Wmissing-prototypes]"}]}
    text = report_mail.render(run)
    assert "\nCloses: https://lore.kernel.org/r/20210303175235.3308220-1-bgeffon@google.com\n" in text
    assert "  mm/mremap.c:502: [W=1] no previous prototype for 'f'" in text
    assert "not measured in this run" not in text.split("New warnings")[1].split("To reproduce")[0]


def test_reproducer_keeps_72_columns_with_a_long_path() -> None:
    """A run folder path of 65-70 characters (a pytest tmp path, a deep $KPIPE_RUNS) still fits: continuation
    lines need no indent. Only a single word longer than the width stands alone on its line."""
    from kpipe.report.mail import _command
    path = "/tmp/pytest-of-root/pytest-49/test_verify_all_default_tree_p0/run"      # 65 characters
    lines = _command(f"kpipe verify --arch all --tree debian:5.10 --out {path} --selftests a,b")
    assert max(map(len, lines)) <= 72 and f"{path} \\" in lines, lines
    assert " ".join(ln.rstrip(" \\").strip() for ln in lines).split() == \
        f"kpipe verify --arch all --tree debian:5.10 --out {path} --selftests a,b".split()
    huge = "/" + "x" * 90
    lines = _command(f"kpipe verify --out {huge} --arch all")
    assert [ln for ln in lines if len(ln) > 72] == [f"{huge} \\"], lines
