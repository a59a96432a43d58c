"""Guest image: real packages from apt, unpacked (not executed), written as root-owned newc cpio; the
content-keyed cache entry. Uses a private cache so nothing else is disturbed. The parts that need no download
(the cpio writer, the init template, the per-run overlay): tests/unit/test_image_parts.py."""
from __future__ import annotations
import stat
import pytest

from kpipe import cache
from kpipe.arches import ARCHES, get_arch
from kpipe.guest.cpio import CpioWriter, read_names, write_gz
from kpipe.guest.image import build_image, join_archives, load_recipe, make_overlay, render_init

from test_image_parts import private_cache  # noqa: F401  (shared with the fast tier)


@pytest.fixture(scope="module")
def built(private_cache):
    out = {}
    for name in sorted(ARCHES):
        cold = build_image(get_arch(name))
        warm = build_image(get_arch(name))
        out[name] = (cold, warm)
        print(f"\nimage {name}: cold {cold.seconds:.2f}s, cached {warm.seconds:.3f}s, "
              f"{cold.path.stat().st_size // 1024} KiB")
    return out


def _elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF", "not an ELF file"
    return int.from_bytes(data[18:20], "little")


# ---------------------------------------------------------------- built images


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_image_contents_are_the_guest_arch_and_root_owned(built, arch):
    cold, warm = built[arch]
    assert not cold.cached and warm.cached
    assert warm.key == cold.key and warm.path == cold.path
    assert warm.seconds < 1.0, "a cached image must be answered without rebuilding"
    assert set(cold.packages) == set(load_recipe().packages)
    names = read_names(cold.path)
    a = get_arch(arch)
    for exe in ("bin/busybox", "usr/sbin/dropbear", "usr/lib/sftp-server"):
        mode, uid, gid, body = names[exe]
        assert (uid, gid) == (0, 0) and mode & 0o111, exe
        assert _elf_machine(body) == a.elf_machine, f"{exe} is not an {arch} binary"
    assert a.dynamic_loader.lstrip("/") in names
    assert stat.S_IMODE(names["init"][0]) == 0o755
    assert stat.S_IMODE(names["root"][0]) == 0o700
    assert not any(n.startswith("usr/share/doc") for n in names)
    assert not any("authorized_keys" in n or "host_key" in n for n in names), "no secrets in the cached image"


def test_truncated_entry_is_detected_and_rebuilt(built):
    cold, _ = built["x86_64"]
    good = cold.path.read_bytes()
    with open(cold.path, "r+b") as fh:
        fh.truncate(len(good) // 2)
    again = build_image(get_arch("x86_64"))
    assert not again.cached and again.key == cold.key
    assert again.path.read_bytes() == good            # reproducible bytes
    assert cache.verify_entry(again.path.parent) is not None
    leftovers = [p.name for p in again.path.parent.parent.iterdir() if ".tmp-" in p.name or "rootfs-" in p.name]
    assert leftovers == []


def test_variant_has_its_own_key(built):
    cold, _ = built["x86_64"]
    variant = build_image(get_arch("x86_64"), overrides={"start_sshd": False})
    assert variant.key != cold.key and not variant.start_sshd
    assert b"dropbear -F" not in read_names(variant.path)["init"][3]


def test_join_archives_unpacks_as_one(tmp_path, built):
    cold, _ = built["arm64"]
    ov = make_overlay(tmp_path)
    joined = join_archives([cold.path, ov.path], tmp_path / "joined.cpio")
    assert stat.S_IMODE(joined.stat().st_mode) == 0o600
    assert joined.read_bytes()[:6] == b"070701"           # uncompressed: the guest kernel does not inflate it
    names = read_names(joined)
    assert "bin/busybox" in names and "root/.ssh/authorized_keys" in names
