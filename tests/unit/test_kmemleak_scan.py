"""kmemleak's scan script (kpipe/checks/kmemleak.py's SCAN_SCRIPT, run by verify over SSH and by a LAVA job) under
the host's sh, its debugfs file a plain file and `date` and `sleep` stand-ins on PATH: the second scan waits only
for what is left of SCAN_GAP after the first scan started. The real scans: tests/e2e/test_workflows.py's
zero-findings run and the leak tests of tests/e2e/test_boot_faults.py and test_lava.py."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kpipe.checks import kmemleak


def _run(tmp_path: Path, clock: list[int]) -> tuple[str, list[str], list[str]]:
    """SCAN_SCRIPT with `date +%s` answering ``clock`` in turn; (stdout, sleeps asked for, what the file got)."""
    bin_dir, debugfs = tmp_path / "bin", tmp_path / "kmemleak"
    bin_dir.mkdir()
    debugfs.write_text("")
    (tmp_path / "clock").write_text("\n".join(map(str, clock)) + "\n")
    (bin_dir / "date").write_text(f"#!/bin/sh\nhead -n1 {tmp_path}/clock\nsed -i 1d {tmp_path}/clock\n")
    (bin_dir / "sleep").write_text(f"#!/bin/sh\necho \"$1\" >> {tmp_path}/sleeps\n")
    for f in ("date", "sleep"):
        (bin_dir / f).chmod(0o755)
    script = kmemleak.SCAN_SCRIPT.replace(kmemleak.KMEMLEAK, str(debugfs))
    ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert ran.returncode == 0, ran
    sleeps = (tmp_path / "sleeps").read_text().split() if (tmp_path / "sleeps").exists() else []
    return ran.stdout, sleeps, debugfs.read_text().split()


@pytest.mark.parametrize("first_scan_took, waits", [(0, ["6"]), (1, ["5"]), (5, ["1"]), (6, []), (19, [])])
def test_the_second_scan_waits_only_for_what_is_left_of_the_gap(tmp_path, first_scan_took, waits):
    assert kmemleak.SCAN_GAP == 6
    out, sleeps, written = _run(tmp_path, [1000, 1000 + first_scan_took])
    assert sleeps == waits
    assert written == ["scan"] and out == "scan\n"      # each scan overwrote the file; the report read last


def test_a_missing_debugfs_file_says_so(tmp_path):
    script = kmemleak.SCAN_SCRIPT.replace(kmemleak.KMEMLEAK, str(tmp_path / "absent"))
    ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert ran.returncode == 3 and kmemleak.ABSENT in ran.stdout
