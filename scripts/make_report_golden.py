"""Re-make tests/data/report/uaf-result.json: a premerge run's result.json whose findings are the real uaf
consoles (tests/data/findings/uaf-*.log, real debug-kernel runs of the uaf mutant), with signatures, and its
report.txt golden. Run: python scripts/make_report_golden.py (then review the diff)."""
from __future__ import annotations

import json
from pathlib import Path

from kpipe.report import mail as report_mail
from kpipe.guest.findings import scan_text
from kpipe.report.results import ArchResult, BuildInfo, KernelInfo, RunResult, to_dict
from kpipe.checks.signatures import annotate_run

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


def main() -> None:
    run = RunResult(workflow="premerge", verdict="fail", exit_code=1, started="2026-12-02T21:00:00+0000",
                    reproducer="kpipe premerge --arch all --tree debian:5.10 --patch "
                              "patches/0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch --patch "
                              "tests/patches/test-kernel.patch --kernel-arg kpipe_mutant=uaf --profile debug")
    run.extra.series = {"source": "--patch", "title": "", "patches": [
        {"file": "0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch", "origin": "",
         "subject": "mm: Allow shmem mappings with MREMAP_DONTUNMAP", "author": "Brian Geffon <bgeffon@google.com>"},
        {"file": "test-kernel.patch", "origin": "",
         "subject": "TEST KERNEL (never merge): mm/mremap: kpipe_mutant= picks one wrong behaviour at boot",
         "author": "kpipe tests <kpipe@localhost>"}]}
    compilers = {"x86_64": "gcc (Debian 12.2.0-14+deb12u1) 12.2.0",
                 "arm64": "aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0"}
    for arch in ("x86_64", "arm64"):
        console = (DATA / "findings" / f"uaf-{arch}.log").read_text()
        ar = ArchResult(arch=arch, verdict="fail", exit_code=1,
                        kernel=KernelInfo(tree="debian:5.10", base="b685228d75d52881b56ad65587bee740a1df8311",
                                          base_label="debian/5.10.262-1", release="5.10.262+", profile="debug"),
                        build=BuildInfo(compiler=compilers[arch]), findings=scan_text(console, "console"))
        ar.error = "kernel misbehaved: kasan\nfirst report: " + ar.findings[0].line
        run.arches[arch] = ar
    annotate_run(run)
    d = to_dict(run)
    (DATA / "report" / "uaf-result.json").write_text(json.dumps(d, indent=1) + "\n")
    (DATA / "report" / "uaf-report.txt").write_text(report_mail.render(d))


if __name__ == "__main__":
    main()
