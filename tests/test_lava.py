"""kpipe on LAVA.

Fast tier: the job definition against golden copies (tests/data/lava/job-*.yaml), the ramdisk as one cpio
archive that `cpio --extract` (what the dispatcher runs) reads whole, and LAVA logs captured from real
lava-run jobs (tests/data/lava/*.log) turned into kpipe's results.
e2e tier: real lava-run (Debian's dispatcher, installed by kpipe.lava_install), real Debian 5.10 kernels.
"""
from __future__ import annotations

import gzip
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from kpipe import qemu
from kpipe.arches import ARCHES
from kpipe.cpio import read_names, write_gz
from kpipe.lava import collect, job as jobmod, logparse, ramdisk
from kpipe.profiles import get_profile
from kpipe.results import ArchResult, Status
from kpipe.selftests import BuiltTest, SelftestSpec
from kpipe.workflows import Prepared

from kpipe_cli import invoke, results_by_name

DATA = Path(__file__).resolve().parent / "data" / "lava"
SEED = "patches/0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch"


def golden_spec(arch_name: str) -> jobmod.JobSpec:
    arch = get_profile("debug").guest_arch(ARCHES[arch_name])
    image = "bzImage" if arch_name == "x86_64" else "Image"
    return jobmod.spec_for(arch, "tcg", Path(f"/artifacts/{arch_name}/{image}"),
                           Path(f"/artifacts/{arch_name}/ramdisk.cpio.gz"), (), "5.10.262", "0123456789abcdef",
                           "debug", "anon+shmem", ("mremap_dontunmap", "userfaultfd-shmem"), 120, 540)


# ------------------------------------------------------------------------------------------------ job

@pytest.mark.parametrize("arch_name", ["x86_64", "arm64"])
def test_job_matches_golden_copy(arch_name):
    """The job's shape is reviewable: a change to the templates shows up as a diff of this file.
    Regenerate with KPIPE_REGEN_GOLDEN=1 after a deliberate change."""
    text = jobmod.job_yaml(golden_spec(arch_name))
    golden = DATA / f"job-{arch_name}.yaml"
    if os.environ.get("KPIPE_REGEN_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("arch_name", ["x86_64", "arm64"])
def test_job_boots_as_kpipe_does(arch_name):
    """Machine, cpu, memory, vCPUs, command line: the arch + profile data `verify` boots with, plus -no-reboot
    (a panic must end the job at once, not wait for LAVA's boot timeout)."""
    spec = golden_spec(arch_name)
    job = jobmod.job_dict(spec)
    a = spec.arch
    ctx = job["context"]
    assert (ctx["machine"], ctx["cpu"], ctx["memory"]) == (a.qemu_machine, a.qemu_cpu, a.memory_mb)
    assert a.memory_mb == 1024 and a.smp == 2                 # the debug profile's guest
    assert {"-smp 2", "-no-reboot", "-accel tcg", "-device virtio-rng-pci"} <= set(ctx["extra_options"])
    deploy, boot, test = (next(iter(x.values())) for x in job["actions"])
    kernel = deploy["images"]["kernel"]
    assert kernel["image_arg"] == f'-kernel {{kernel}} -append "{qemu.kernel_cmdline(a)}"'
    assert "panic=-1" in kernel["image_arg"]
    rd = deploy["images"]["ramdisk"]
    assert (rd["format"], rd["compression"], rd["overlays"]) == ("cpio.newc", "gz", {"lava": True})
    assert boot["prompts"] == [ramdisk.PROMPT]
    assert [d["name"] for d in test["definitions"]] == ["verifier", "selftests", "kernel-log"]
    for action in (deploy, boot, test):
        assert action["timeout"]["seconds"] > 0
    assert job["timeouts"]["job"]["seconds"] >= sum(x["timeout"]["seconds"] for x in (deploy, boot, test))
    dev = yaml.safe_load(jobmod.device_yaml(job))
    opts = dev["actions"]["boot"]["methods"]["qemu"]["parameters"]["options"]
    assert f"-machine {a.qemu_machine}" in opts and "-m 1024" in opts and "-no-reboot" in opts
    assert dev["available_architectures"] == [a.debian_arch]


def test_dmesg_pattern_is_kpipes_findings():
    rx = jobmod.dmesg_pattern()
    for line in ("Kernel panic - not syncing: VFS", "BUG: KASAN: use-after-free in x", "kernel BUG at mm/mremap.c:1",
                 "WARNING: CPU: 0 PID: 1 at mm/x.c:3", "INFO: task a:1 blocked for more than 15 seconds"):
        assert subprocess.run(["grep", "-qE", rx], input=line, text=True).returncode == 0, line
    assert subprocess.run(["grep", "-qE", rx], input="all fine here\n", text=True).returncode == 1


# ------------------------------------------------------------------------------------------------ ramdisk

def test_ramdisk_is_one_archive_cpio_extracts_whole(tmp_path):
    """LAVA extracts the ramdisk with `cpio --extract` (stops at the first trailer) before adding its overlay:
    the base image, kpipe's init and the payload must all be in one archive."""
    base = tmp_path / "base.cpio.gz"

    def build(w):
        w.add_dir("bin")
        w.add_file("bin/busybox", b"\x7fELF fake", 0o755)
        w.add_file("init", b"#!/bin/sh\necho old init\n", 0o755)
        w.add_dir("etc")
        w.add_chardev("dev/console", 5, 1)
    write_gz(base, build)
    vbin = tmp_path / "mremap_dontunmap"
    vbin.write_bytes(b"verifier")
    sbin = tmp_path / "userfaultfd"
    sbin.write_bytes(b"selftest")
    payload = ramdisk.Payload(vbin, "a=ok\n", 120, 20, (("userfaultfd-shmem", 300, sbin, ("shmem", "16", "4")),),
                              "Kernel panic")
    out = ramdisk.write_ramdisk(base, payload, tmp_path / "ramdisk.cpio.gz")
    raw = gzip.decompress(out.read_bytes())
    assert raw.count(b"TRAILER!!!") == 1
    names = read_names(out)
    assert b"old init" not in names["init"][3] and b"cttyhack" in names["init"][3]
    assert names["kpipe/bin/mremap_dontunmap"][3] == b"verifier"
    assert names["kpipe/selftests.list"][3] == b"userfaultfd-shmem 300 userfaultfd shmem 16 4\n"
    assert b"-t 20" in names["kpipe/run-verifier.sh"][3]
    x = tmp_path / "x"
    x.mkdir()
    (tmp_path / "r.cpio").write_bytes(raw)
    subprocess.run(["cpio", "--extract", "--make-directories", "--unconditional", "--quiet", "--file",
                    str(tmp_path / "r.cpio")], cwd=x, check=True, capture_output=True)
    assert (x / "bin/busybox").read_bytes() == b"\x7fELF fake"
    assert (x / "kpipe/bin/userfaultfd").read_bytes() == b"selftest"
    assert os.access(x / "kpipe/run-selftests.sh", os.X_OK)
