from . import Arch

ARCH = Arch(
    name="arm64",
    kernel_arch="arm64",
    cross_compile="aarch64-linux-gnu-",
    image_target="Image",
    image_path="arch/arm64/boot/Image",
    kconfig_fragment="arm64.config",
    debian_arch="arm64",
    elf_machine=183,
    host_machines=("aarch64", "arm64"),
    qemu_binary="qemu-system-aarch64",
    qemu_machine="virt",
    qemu_cpu="cortex-a57",
    qemu_extra=("-device", "virtio-rng-pci"),
    console="ttyAMA0",
    dynamic_loader="/lib/ld-linux-aarch64.so.1",
    tcg_boot_factor=1.0,
    kernel_cmdline_extra=("earlycon",),
)
