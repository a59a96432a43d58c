"""The bench row of the LAVA path: lava-run (local) vs kpipe's own boot + tests, same kernel and binaries.

kpipe side: `verify`'s boot+tests phase (QEMU start -> ready, SSH, verifier, selftests, dmesg, shutdown).
LAVA side: the whole lava-run of the same artifacts (validate, copy kernel and ramdisk, unpack/repack the
ramdisk with LAVA's overlay, boot to the shell prompt, the same tests through lava-test-shell, power off).
Both runs reuse the cached kernel and binaries, so neither includes a build. Target: LAVA <= 1.5x kpipe.

In `invoke bench` (kpipe/bench/measure.py) it is the "lava" step, with the bench's own series (its kernels
already cached).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..workflows import flows as workflows
from ..arches import Arch
from .rows import _row
from ..errors import EXIT_PASS, InfraError
from ..workflows.pipeline import Options

TARGET = 1.5


def bench_lava(arch: Arch, run_dir: Path, selftests: str = "all-relevant", series: str | None = None,
               settle: bool = False) -> dict[str, Any]:
    """``series``: the bench's own (its kernels are cached by then); ``settle``: one untimed verify first. Neither
    figure includes a build either way (boot+tests and lava-run are timed without it)."""
    from ..lava.workflow import lava
    opts = Options(arch=arch.name, accel="tcg", selftests=selftests, series=series)
    if settle:
        workflows.verify(replace(opts, out=str(run_dir / f"lava-settle-{arch.name}")))      # builds if needed
    v = workflows.verify(replace(opts, out=str(run_dir / f"lava-kpipe-{arch.name}")))
    l_run = lava(replace(opts, out=str(run_dir / f"lava-{arch.name}")), run_local_jobs=True)
    if v.exit_code != EXIT_PASS or l_run.exit_code != EXIT_PASS:
        raise InfraError(f"bench: verify exit {v.exit_code}, lava exit {l_run.exit_code} (both must pass); "
                         f"see {run_dir}")
    kp = v.arches[arch.name].phases["boot+tests"]
    lv = l_run.arches[arch.name].phases["lava-run"]
    boot = l_run.arches[arch.name].boot.seconds
    return _row("lava", arch.name, lv, kp, TARGET,
                note=f"kpipe = verify's boot+tests; LAVA = whole lava-run (boot to prompt {boot}s), "
                     f"selftests {selftests}")
