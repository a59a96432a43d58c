"""Guest image parts that need no download: the newc cpio writer, the init template, the per-run overlay, the
recipe's overrides. Uses a private cache so nothing else is disturbed. Images built from real Debian packages:
tests/e2e/test_image.py."""
from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess

import paramiko
import pytest

from kpipe import cache
from kpipe.arches import ARCHES, get_arch
from kpipe.guest.cpio import CpioWriter, read_names, write_gz
from kpipe.errors import UsageError
from kpipe.guest.image import build_image, join_archives, load_recipe, make_overlay, render_init


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("kpipe-cache")
    old = os.environ.get("KPIPE_CACHE")
    os.environ["KPIPE_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("KPIPE_CACHE", None)
    else:
        os.environ["KPIPE_CACHE"] = old


# ---------------------------------------------------------------- cpio writer


def test_cpio_writer_root_owned_modes_symlinks_devices(tmp_path):
    src = tmp_path / "tree"
    (src / "bin").mkdir(parents=True)
    (src / "bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chown(src / "bin/tool", 1234, 1234)     # the archive must say root anyway
    os.chmod(src / "bin/tool", 0o4755)
    os.symlink("tool", src / "bin/alias")

    def build(w: CpioWriter):
        w.add_tree(src)
        w.add_dir("root", 0o700)
        w.add_file("root/secret", b"x" * 5, 0o600)
        w.add_chardev("dev/console", 5, 1)
    out = tmp_path / "a.cpio.gz"
    write_gz(out, build)
    names = read_names(out)
    mode, uid, gid, body = names["bin/tool"]
    assert (stat.S_IMODE(mode), uid, gid, body) == (0o4755, 0, 0, b"#!/bin/sh\necho hi\n")
    assert stat.S_ISLNK(names["bin/alias"][0]) and names["bin/alias"][3] == b"tool"
    assert stat.S_IMODE(names["root"][0]) == 0o700 and stat.S_ISDIR(names["root"][0])
    assert stat.S_ISCHR(names["dev/console"][0])
    # the host's own cpio agrees: newc, root-owned
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=gzip.decompress(out.read_bytes()),
                             capture_output=True, check=True).stdout.decode()
    line = next(ln for ln in listing.splitlines() if ln.endswith("bin/tool"))
    assert line.split()[0] == "-rwsr-xr-x" and line.split()[2] == "root"
    with pytest.raises(ValueError):
        w = CpioWriter(open(os.devnull, "wb"))
        w.add_dir("x")
        w.add_dir("x")


def test_write_gz_is_reproducible(tmp_path):
    def build(w):
        w.add_dir("etc")
        w.add_file("etc/a", b"a")
    write_gz(tmp_path / "1.gz", build)
    write_gz(tmp_path / "2.gz", build)
    assert (tmp_path / "1.gz").read_bytes() == (tmp_path / "2.gz").read_bytes()


def test_joined_initramfs_is_one_uncompressed_archive_cpio_reads_whole(tmp_path):
    """A compressed base and a compressed overlay join into one uncompressed stream the kernel unpacks without
    inflating; GNU cpio lists both archives' entries (it stops at the first trailer, so it is run per archive
    boundary through `cpio -it` on the whole and on what follows the first trailer)."""
    def base(w):
        w.add_dir("bin")
        w.add_file("bin/tool", b"x" * 1001, 0o755)

    def overlay(w):
        w.add_dir("root", 0o700)
        w.add_file("root/key", b"secret", 0o600)
    write_gz(tmp_path / "base.gz", base)
    write_gz(tmp_path / "overlay.gz", overlay)
    joined = join_archives([tmp_path / "base.gz", tmp_path / "overlay.gz"], tmp_path / "run.cpio")
    data = joined.read_bytes()
    assert data[:6] == b"070701" and b"\x1f\x8b" not in data
    assert stat.S_IMODE(joined.stat().st_mode) == 0o600
    assert set(read_names(joined)) >= {"bin/tool", "root/key"} and read_names(joined)["root/key"][3] == b"secret"
    first = subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True, check=True).stdout
    assert first.split() == [b"bin", b"bin/tool"]
    rest = data[data.index(b"TRAILER!!!"):].split(b"070701", 1)[1]
    second = subprocess.run(["cpio", "-it", "--quiet"], input=b"070701" + rest, capture_output=True,
                            check=True).stdout
    assert second.split() == [b"root", b"root/key"]
    assert len(data) % 4 == 0


# ---------------------------------------------------------------- recipe / template


def test_init_template_renders_both_variants():
    recipe = load_recipe()
    with_sshd = render_init(recipe, recipe.init_vars)
    assert "dropbear" in with_sshd and recipe.init_vars["ready_marker"] in with_sshd
    assert f"echo {recipe.init_vars['hugepages']} > /proc/sys/vm/nr_hugepages" in with_sshd
    without = render_init(recipe, {**recipe.init_vars, "start_sshd": False})
    assert "dropbear" not in without.replace("dropbear)", "")
    assert recipe.init_vars["ready_marker"] not in without


def test_unknown_override_is_a_usage_error(private_cache):
    with pytest.raises(UsageError, match="unknown guest image variable 'start_ssh'"):
        build_image(get_arch("x86_64"), overrides={"start_ssh": False})


# ---------------------------------------------------------------- per-run overlay


def test_overlay_keys_modes_and_pinning(tmp_path):
    ov = make_overlay(tmp_path)
    assert stat.S_IMODE(ov.client_key_path.stat().st_mode) == 0o600
    client = paramiko.PKey.from_path(ov.client_key_path)
    names = read_names(ov.path)
    mode, uid, gid, body = names["root/.ssh/authorized_keys"]
    assert (stat.S_IMODE(mode), uid, gid) == (0o600, 0, 0)
    assert body.decode().split()[:2] == [client.get_name(), client.get_base64()]
    assert stat.S_IMODE(names["etc/dropbear/host_key"][0]) == 0o600
    assert stat.S_IMODE(names["root/.ssh"][0]) == 0o700
    ktype, b64 = ov.host_pubkey
    assert ktype == "ssh-ed25519" and len(b64) > 40
    # the host key inside is the one whose public half is pinned
    hk = tmp_path / "hk"
    hk.write_bytes(names["etc/dropbear/host_key"][3])
    pub = subprocess.run([shutil.which("dropbearkey"), "-y", "-f", str(hk)], capture_output=True, text=True,
                         check=True).stdout
    assert b64 in pub
    # a second run gets different keys
    other = make_overlay(tmp_path / "other")
    assert other.host_pubkey != ov.host_pubkey
    assert not list(tmp_path.glob("hostkey-*")), "the temporary host key folder is removed"
