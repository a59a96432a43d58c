"""Booting a kernel and talking to it: the guest image (cpio, ELF checks), the QEMU and kernel command lines, the
accelerator, QEMU itself, the console's kernel-log findings, and the SSH session (ssh.py)."""
