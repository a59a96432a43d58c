"""LAVA v2 job definitions from kpipe's prepared artifacts: one job per arch, rendered from jinja2 templates
(data, beside this file) and validated with the dispatcher's own schema (lava_common.schemas).

Where each QEMU setting comes from:
  * the job's ``context`` (machine, cpu, memory, extra_options: -smp, -accel, -no-reboot, the arch's extra
    devices): kpipe's arch data with the profile's guest size, exactly what `kpipe verify` boots with;
  * the kernel's ``-append``: ``qemu.kernel_cmdline`` (console, panic=-1, arch, profile and --kernel-arg);
  * the device (what a lab's qemu device type provides): the QEMU binary and the serial-on-stdio options.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import yaml

from ..arches import Arch
from ..errors import InfraError
from ..guest.findings import PATTERNS
from ..checks.kmemleak import SCAN_TIMEOUT
from ..guest.qemu_cmdline import kernel_cmdline
from .ramdisk import PROMPT, render

if TYPE_CHECKING:
    from .install import Lava

# what the lab's device type adds to every QEMU command line (serial console on stdio, nothing else)
DEVICE_OPTIONS = ("-nodefaults", "-display none", "-monitor none", "-serial stdio", "-nic none")
DEPLOY_SECONDS = 180
SLACK_SECONDS = 60
DMESG_SECONDS = 60


@dataclass(frozen=True)
class JobSpec:
    """Everything a job definition says, before rendering."""
    arch: Arch                     # the profile's guest arch (smp, memory, command line)
    accel: str                     # tcg | kvm
    kernel: Path
    ramdisk: Path
    append: str
    release: str
    kernel_key: str
    profile: str
    policy: str
    selftests: tuple[str, ...]
    boot_timeout: int
    test_timeout: int              # the verifier's + every selftest's timeout
    leak_scan: bool = False        # a kmemleak step after the tests


class WrittenJob(TypedDict):
    """What lava.workflow.write_job wrote for one arch, and what running or collecting the job needs to know."""
    job: Path
    device: Path
    ramdisk: Path
    accel: str
    accel_reason: str
    timeout: int               # the job's own timeout (seconds)
    verifier_timeout: float
    leak_scan: bool            # the job scans for kmemleak's leaks after the tests
    leak_not_scanned: str      # why it does not, on a kernel built with kmemleak ("" otherwise)
    cases: tuple[str, ...]     # the verifier cases the job runs (--case); () for all of them


def extra_options(arch: Arch, accel: str) -> list[str]:
    return [f"-smp {arch.smp}", f"-accel {accel}", "-no-reboot", *_pairs(arch.qemu_extra)]


def _pairs(args: tuple[str, ...]) -> list[str]:
    """("-device", "virtio-rng-pci") -> ["-device virtio-rng-pci"]: one option with its value per item."""
    out: list[str] = []
    for a in args:
        if a.startswith("-") or not out:
            out.append(a)
        else:
            out[-1] += " " + a
    return out


def dmesg_pattern() -> str:
    """kpipe's findings patterns as one grep -E expression (for LAVA's own kernel-log case)."""
    return "|".join(rx.pattern.replace("(?<!end )", "").replace("(?:", "(").replace("\\d", "[0-9]")
                    .replace("\\S", "[^ ]").replace("\\w", "[a-z_]").replace("\\b", "") for _, rx in PATTERNS)


def spec_for(arch: Arch, accel: str, kernel: Path, ramdisk: Path, kernel_args: tuple[str, ...], release: str,
             kernel_key: str, profile: str, policy: str, selftests: tuple[str, ...], boot_timeout: float,
             test_timeout: float, leak_scan: bool = False) -> JobSpec:
    return JobSpec(arch, accel, Path(kernel), Path(ramdisk), kernel_cmdline(arch, kernel_args), release, kernel_key,
                   profile, policy, selftests, int(boot_timeout), int(test_timeout), leak_scan)


def job_dict(spec: JobSpec, urls: dict[str, str] | None = None) -> dict[str, Any]:
    """The job definition as data (parsed back from the rendered YAML)."""
    job: dict[str, Any] = yaml.safe_load(job_yaml(spec, urls))
    return job


def job_yaml(spec: JobSpec, urls: dict[str, str] | None = None) -> str:
    a = spec.arch
    urls = urls or {"kernel": spec.kernel.resolve().as_uri(), "ramdisk": spec.ramdisk.resolve().as_uri()}
    test = spec.test_timeout + DMESG_SECONDS + SLACK_SECONDS + (int(SCAN_TIMEOUT) if spec.leak_scan else 0)
    timeouts = {"deploy": DEPLOY_SECONDS, "boot": spec.boot_timeout, "test": test, "action": 120,
                "connection": 60}
    timeouts["job"] = DEPLOY_SECONDS + spec.boot_timeout + test + SLACK_SECONDS
    definitions = [{"name": "verifier", "step": "/kpipe/run-verifier.sh",
                    "description": f"kpipe verifier, policy {spec.policy}: one case per mapping type and check"}]
    if spec.selftests:
        definitions.append({"name": "selftests", "step": "/kpipe/run-selftests.sh",
                            "description": "the tree's selftests: " + ", ".join(spec.selftests)})
    if spec.leak_scan:
        definitions.append({"name": "kmemleak", "step": "/kpipe/run-kmemleak.sh",
                            "description": "kmemleak after the tests: two scans, every unreferenced object"})
    definitions.append({"name": "kernel-log", "step": "/kpipe/run-dmesg.sh",
                        "description": "dmesg after the tests: panic, Oops, BUG, WARNING, KASAN, hung task, RCU stall"})
    arch_ctx = {"name": a.name, "lava_arch": a.debian_arch, "machine": a.qemu_machine, "cpu": a.qemu_cpu,
                "memory_mb": a.memory_mb, "extra_options": extra_options(a, spec.accel)}
    return render("job.yaml.j2", arch=arch_ctx, urls=urls, append=spec.append, timeouts=timeouts, prompt=PROMPT,
                  definitions=definitions,
                  kpipe={"workflow": "lava", "release": spec.release, "policy": spec.policy, "profile": spec.profile,
                         "kernel_key": spec.kernel_key, "selftests": list(spec.selftests)})


def device_yaml(job: dict[str, Any]) -> str:
    """The device dictionary lava-server would render for this job on a qemu device (for a local lava-run)."""
    ctx = job["context"]
    opts = [f"-machine {ctx['machine']}"] + ([f"-cpu {ctx['cpu']}"] if ctx.get("cpu") else []) + \
        [f"-m {ctx['memory']}", *DEVICE_OPTIONS, *ctx.get("extra_options", [])]
    binary = {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}.get(ctx["arch"], "")
    if not binary:
        raise InfraError(f"no QEMU binary known for LAVA arch {ctx['arch']}")
    return render("device.yaml.j2", lava_arch=ctx["arch"], qemu_binary=binary, options=opts)


_VALIDATE = r"""
import json, sys, yaml
from voluptuous import Invalid
from lava_common.schemas import validate
from lava_common.schemas.device import validate as validate_device
out = {}
for kind, path in (("job", sys.argv[1]), ("device", sys.argv[2])):
    if path == "-":
        continue
    try:
        data = yaml.safe_load(open(path))
        (validate(data, strict=True) if kind == "job" else validate_device(data))
    except Invalid as e:
        out[kind] = f"{e.msg} at {'/'.join(map(str, e.path))}"
    except Exception as e:
        out[kind] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def validate(lava: Lava, job_path: Path, device_path: Path | None = None) -> None:
    """Validate with the installed dispatcher's own schema; InfraError naming the invalid key otherwise."""
    cp = subprocess.run([str(lava.python), "-c", _VALIDATE, str(job_path), str(device_path or "-")], env=lava.env(),
                        capture_output=True, text=True, timeout=120)
    if cp.returncode != 0:
        raise InfraError("lava_common.schemas could not run", detail=(cp.stderr or cp.stdout).splitlines()[-10:])
    problems = json.loads(cp.stdout.strip().splitlines()[-1])
    if problems:
        raise InfraError(f"the generated LAVA {' and '.join(problems)} definition is invalid (lava_common.schemas)",
                         detail=[f"{k}: {v}" for k, v in problems.items()] + [f"job: {job_path}"],
                         fix="a bug in kpipe's LAVA templates (kpipe/lava/templates): report it with the job file")
