"""The bench row of the LAVA path: lava-run (local) vs kpipe's own boot + tests, same kernel and binaries.

kpipe side: `verify`'s boot+tests phase (QEMU start -> ready, SSH, verifier, selftests, dmesg, shutdown).
LAVA side: the whole lava-run of the same artifacts (validate, copy kernel and ramdisk, unpack/repack the
ramdisk with LAVA's overlay, boot to the shell prompt, the same tests through lava-test-shell, power off).
Both runs reuse the cached kernel and binaries, so neither includes a build. Target: LAVA <= 1.5x kpipe.

To add it to `invoke bench` (kpipe/bench.py, run_bench): ``rows += [bench_lava(a, run_dir) for a in arches]``.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import workflows
from ..arches import Arch
from ..benchrows import _row
from ..errors import EXIT_PASS, InfraError
from ..pipeline import Options

TARGET = 1.5


def bench_lava(arch: Arch, run_dir: Path, selftests: str = "all-relevant") -> dict[str, Any]:
    from .workflow import lava
    opts = Options(arch=arch.name, accel="tcg", selftests=selftests)
    workflows.verify(replace(opts, out=str(run_dir / f"lava-settle-{arch.name}")))      # builds if needed, untimed
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
