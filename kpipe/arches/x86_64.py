from . import Arch

ARCH = Arch(
    name="x86_64",
    kernel_arch="x86_64",
    cross_compile="",
    image_target="bzImage",
    image_path="arch/x86/boot/bzImage",
    kconfig_fragment="x86_64.config",
    debian_arch="amd64",
    elf_machine=62,
    host_machines=("x86_64", "amd64"),
    qemu_binary="qemu-system-x86_64",
    qemu_machine="q35",
    qemu_cpu="max",
    qemu_extra=("-device", "virtio-rng-pci"),
    console="ttyS0",
    dynamic_loader="/lib64/ld-linux-x86-64.so.2",
    tcg_boot_factor=2.0,
    kernel_cmdline_extra=("earlyprintk=serial,ttyS0,115200",),
)
