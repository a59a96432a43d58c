"""Arch facts as data: one small module per arch, each defining ``ARCH = Arch(...)``.

Adding an arch (say riscv64) is adding one file here; nothing else branches on the arch name.
"""
from __future__ import annotations

import importlib
import pkgutil
import platform
from dataclasses import dataclass, field

from ..errors import UsageError


@dataclass(frozen=True)
class Arch:
    name: str                 # kpipe's name: x86_64, arm64
    kernel_arch: str          # ARCH= for make
    cross_compile: str        # CROSS_COMPILE= prefix ("" for native)
    image_target: str         # make target producing the boot image
    image_path: str           # path of the boot image inside the build folder
    kconfig_fragment: str     # kconfigs/<this>.config
    debian_arch: str          # Debian architecture of guest packages
    elf_machine: int          # e_machine of the arch's executables (EM_X86_64 62, EM_AARCH64 183)
    host_machines: tuple[str, ...]  # platform.machine() values that can run this natively (KVM)
    qemu_binary: str
    qemu_machine: str
    qemu_cpu: str | None
    console: str              # kernel console device
    memory_mb: int = 512
    smp: int = 1
    qemu_extra: tuple[str, ...] = ()
    nic_device: str = "virtio-net-pci"
    dynamic_loader: str = ""  # path of the glibc loader in the guest
    tcg_boot_factor: float = 1.0  # how much slower than KVM this arch boots under TCG
    kernel_cmdline_extra: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cc(self) -> str:
        return f"{self.cross_compile}gcc"

    @property
    def make_vars(self) -> list[str]:
        out = [f"ARCH={self.kernel_arch}"]
        if self.cross_compile:
            out.append(f"CROSS_COMPILE={self.cross_compile}")
        return out

    def native_on_host(self) -> bool:
        return platform.machine() in self.host_machines


def _load() -> dict[str, Arch]:
    found: dict[str, Arch] = {}
    for mod in pkgutil.iter_modules(__path__):
        m = importlib.import_module(f"{__name__}.{mod.name}")
        arch = getattr(m, "ARCH", None)
        if isinstance(arch, Arch):
            found[arch.name] = arch
    return found


ARCHES: dict[str, Arch] = _load()


def host_arch_name() -> str:
    for a in ARCHES.values():
        if a.native_on_host():
            return a.name
    return "x86_64"


def get_arch(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        raise UsageError(f"unknown arch {name!r}",
                         fix=f"use one of: {', '.join(sorted(ARCHES))} (or 'all' where a task accepts it)") from None


def resolve_arches(spec: str | None) -> list[Arch]:
    """'x86_64' / 'arm64' / 'all' / 'x86_64,arm64' / None (the host's arch)."""
    if not spec:
        return [get_arch(host_arch_name())]
    if spec == "all":
        return [ARCHES[n] for n in sorted(ARCHES)]
    return [get_arch(p.strip()) for p in spec.split(",") if p.strip()]
