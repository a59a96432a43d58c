"""The stale-entry sweep never removes what a live run is still writing (a 6.12 fetch untars for minutes
without touching its temp folder's mtime; a concurrent 5.10 fetch used to sweep it away mid-way)."""
from __future__ import annotations

import os
import subprocess

from kpipe import cache


def test_sweep_keeps_a_live_runs_entry_and_removes_a_dead_ones(tmp_path):
    live = tmp_path / f".debian-6.12.git.tmp-{os.getpid()}-abc"
    live.mkdir()
    os.utime(live, (0, 0))                      # ancient mtime: only the owner check protects it
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f".debian-6.12.git.tmp-{gone.pid}-def"
    dead.mkdir()
    legacy_old = tmp_path / ".user.git.tmp-xyz"      # no pid in the name: the 60 s rule
    legacy_old.mkdir()
    os.utime(legacy_old, (0, 0))
    legacy_new = tmp_path / ".user2.git.tmp-xyz"
    legacy_new.mkdir()
    trash = tmp_path / f".kern.old-{gone.pid}"
    trash.mkdir()
    cache.sweep_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, legacy_new.name])


def test_new_entry_names_its_owner(tmp_path):
    with cache.new_entry(tmp_path / "e") as tmp:
        assert f".tmp-{os.getpid()}-" in tmp.name
        (tmp / "f").write_text("x")
    assert (tmp_path / "e" / "f").read_text() == "x"
