"""Guest images: a cached initramfs per arch built from Debian packages, plus a per-run overlay.

The base image holds no secrets and is cached under a content key (package versions + recipe + init
template + init variables). The per-run overlay (authorized key, fresh host key) is a second small
archive; QEMU gets both concatenated in one file (the kernel unpacks concatenated archives in order).
Target-arch binaries are only unpacked (``dpkg-deb -x``), never executed on the host.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .. import cache, proc
from ..arches import Arch
from .cpio import CpioWriter, write_gz
from ..datadirs import data_dir
from .elf import read_elf
from ..errors import InfraError, UsageError

RECIPE_DIR = data_dir("vm_images")
IMAGE_FORMAT = 1          # bump when the way images are assembled changes
INITRD_NAME = "initrd.cpio.gz"


@dataclass(frozen=True)
class Recipe:
    packages: tuple[str, ...]
    prune: tuple[str, ...]
    copies: tuple[tuple[str, str], ...]
    init_vars: dict[str, Any]
    text: str                 # recipe.toml as read (part of the key)
    template: str             # init.j2 as read (part of the key)


@dataclass(frozen=True)
class DebRef:
    name: str
    version: str
    filename: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Initrd:
    arch: str
    path: Path
    key: str
    packages: dict[str, str]  # package -> version
    cached: bool
    seconds: float
    ready_marker: str = ""
    not_ready_marker: str = ""
    start_sshd: bool = True


@dataclass(frozen=True)
class Overlay:
    path: Path
    client_key_path: Path
    host_pubkey: tuple[str, str]     # (key type, base64) pinned by the client


# ---------------------------------------------------------------- recipe

def load_recipe(directory: Path | None = None) -> Recipe:
    d = Path(directory or RECIPE_DIR)
    toml_path, tpl_path = d / "recipe.toml", d / "init.j2"
    for p in (toml_path, tpl_path):
        if not p.is_file():
            raise UsageError(f"guest image recipe file missing: {p}", fix="restore vm_images/ from the repository")
    text = toml_path.read_text()
    try:
        data = tomllib.loads(text)
        recipe = Recipe(packages=tuple(data["packages"]), prune=tuple(data.get("prune", ())),
                        copies=tuple((a, b) for a, b in data.get("copies", ())),
                        init_vars=dict(data["init"]), text=text, template=tpl_path.read_text())
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as e:
        raise UsageError(f"bad guest image recipe {toml_path}: {e}",
                         fix="it needs `packages = [...]` and an [init] table; see the comments in the file") from None
    if not recipe.packages:
        raise UsageError(f"guest image recipe {toml_path} lists no packages", fix="list at least busybox-static")
    return recipe


def init_vars(recipe: Recipe, overrides: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(recipe.init_vars)
    for k, v in (overrides or {}).items():
        if k not in out:
            raise UsageError(f"unknown guest image variable {k!r}",
                             fix=f"use one of the [init] keys of vm_images/recipe.toml: {', '.join(sorted(out))}")
        out[k] = v
    return out


def render_init(recipe: Recipe, variables: dict[str, Any]) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return env.from_string(recipe.template).render(**variables)
    except jinja2.TemplateError as e:
        raise UsageError(f"vm_images/init.j2 does not render: {e}",
                         fix="every variable it uses must be in the [init] table of vm_images/recipe.toml") from None


# ---------------------------------------------------------------- packages

_URI_LINE = re.compile(r"^'(?P<uri>[^']+)' (?P<file>\S+) (?P<size>\d+) SHA256:(?P<sha>[0-9a-f]{64})$")


def _apt_state() -> str:
    """A signature of what apt would answer: its package lists, preferences and dpkg's arch list."""
    sig = []
    for d in (Path("/var/lib/apt/lists"), Path("/etc/apt")):
        if d.is_dir():
            for p in sorted(d.rglob("*")):
                if p.is_file():
                    st = p.stat()
                    sig.append((str(p), st.st_size, st.st_mtime_ns))
    return cache.key_of(sig)


def resolve_packages(arch: Arch, recipe: Recipe, log: Path | None = None) -> list[DebRef]:
    """Which .deb of each package apt would download for the guest arch. apt takes ~2 s to answer, so the
    answer is remembered until apt's lists or configuration change."""
    memo = cache.cache_dir("images") / f"resolved-{arch.debian_arch}.json"
    sig = cache.key_of(_apt_state(), recipe.packages)
    try:
        data = json.loads(memo.read_text())
        if data["sig"] == sig:
            return [DebRef(**r) for r in data["refs"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    refs = _ask_apt(arch, recipe)
    tmp = memo.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"sig": sig, "refs": [r.__dict__ for r in refs]}))
    tmp.replace(memo)
    return refs


def _ask_apt(arch: Arch, recipe: Recipe) -> list[DebRef]:
    specs = [f"{p}:{arch.debian_arch}" for p in recipe.packages]
    try:
        cp = proc.run(["apt-get", "download", "--print-uris", *specs], timeout=120, what="apt-get download",
                      check=True)
    except InfraError as e:
        raise InfraError(f"apt cannot resolve the guest packages for {arch.debian_arch}: {e.message}",
                         detail=e.detail,
                         fix=f"run `dpkg --add-architecture {arch.debian_arch} && apt-get update` "
                             f"(or `invoke setup`)") from None
    refs: dict[str, DebRef] = {}
    for line in cp.stdout.splitlines():
        m = _URI_LINE.match(line.strip())
        if not m:
            continue
        fname = m["file"]
        name, version = fname.split("_")[0], fname.split("_")[1].replace("%3a", ":")
        refs[name] = DebRef(name, version, fname, int(m["size"]), m["sha"])
    missing = [p for p in recipe.packages if p not in refs]
    if missing:
        raise InfraError(f"apt did not offer {', '.join(missing)} for {arch.debian_arch}",
                         fix=f"check `apt-cache policy {missing[0]}:{arch.debian_arch}`; run apt-get update")
    return [refs[p] for p in recipe.packages]


def _deb_ok(path: Path, ref: DebRef) -> bool:
    return path.is_file() and path.stat().st_size == ref.size and cache.sha256_file(path) == ref.sha256


def fetch_debs(arch: Arch, refs: list[DebRef], log: Path | None = None) -> list[Path]:
    """The .debs in the cache (downloaded with the system's apt when missing or damaged)."""
    ddir = cache.cache_dir("debs", arch.debian_arch)
    with cache.file_lock(cache.cache_dir("locks") / f"debs-{arch.debian_arch}.lock", "package download"):
        todo = [r for r in refs if not _deb_ok(ddir / r.filename, r)]
        for r in todo:
            (ddir / r.filename).unlink(missing_ok=True)
        if todo:
            try:
                proc.run(["apt-get", "download", *[f"{r.name}:{arch.debian_arch}={r.version}" for r in todo]],
                         cwd=ddir, log=log, timeout=600, what="apt-get download")
            except InfraError as e:
                e.fix = "run `apt-get update` (the mirror may have dropped that version) and try again"
                raise
        bad = [r.filename for r in refs if not _deb_ok(ddir / r.filename, r)]
        if bad:
            raise InfraError(f"downloaded packages do not match apt's checksums: {', '.join(bad)}",
                             fix="run `apt-get update` and try again", log=str(log) if log else None)
    return [ddir / r.filename for r in refs]


# ---------------------------------------------------------------- assembly

def _prune(root: Path, patterns: tuple[str, ...]) -> None:
    for pat in patterns:
        for p in root.glob(pat):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)


def _assemble_rootfs(arch: Arch, recipe: Recipe, debs: list[Path], variables: dict[str, Any], root: Path,
                     log: Path | None) -> None:
    for deb in debs:
        proc.run(["dpkg-deb", "-x", str(deb), str(root)], log=log, timeout=120, what="dpkg-deb -x")
    _prune(root, recipe.prune)
    for src, dst in recipe.copies:
        s, d = root / src, root / dst
        if not s.is_file():
            raise InfraError(f"guest image: {src} is not in the unpacked packages",
                             fix="fix the `copies` entry in vm_images/recipe.toml")
        d.parent.mkdir(parents=True, exist_ok=True)
        if d.is_symlink() or d.exists():
            d.unlink()
        shutil.copy2(s, d)
    for need in ("bin/busybox", "usr/sbin/dropbear", arch.dynamic_loader.lstrip("/")):
        if not (root / need).exists() and not (root / need).is_symlink():
            raise InfraError(f"guest image for {arch.name}: /{need} missing after unpacking the packages",
                             fix="check the package list in vm_images/recipe.toml")
    for exe in ("bin/busybox", "usr/sbin/dropbear"):
        info = read_elf(root / exe)
        machine = info.machine if info else None
        if machine != arch.elf_machine:
            raise InfraError(f"guest image for {arch.name}: /{exe} is not a {arch.name} executable "
                             f"(ELF machine {machine}, want {arch.elf_machine})",
                             fix=f"the packages must be the {arch.debian_arch} ones: check apt's foreign "
                                 f"architectures (dpkg --print-foreign-architectures)")
    for rel_dir, mode in (("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("tmp", 0o1777), ("run", 0o755),
                    ("root", 0o700), ("etc", 0o755), ("etc/dropbear", 0o700), ("var", 0o755),
                    ("sbin", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755)):
        (root / rel_dir).mkdir(parents=True, exist_ok=True)
        os.chmod(root / rel_dir, mode)
    if not (root / "bin/sh").exists():
        os.symlink("busybox", root / "bin/sh")
    files = {
        "init": (render_init(recipe, variables), 0o755),
        "etc/passwd": ("root:x:0:0:root:/root:/bin/sh\n", 0o644),
        "etc/group": ("root:x:0:\ntty:x:5:\n", 0o644),
        "etc/shells": ("/bin/sh\n/bin/ash\n", 0o644),
        "etc/hostname": ("kpipe-guest\n", 0o644),
        "etc/hosts": ("127.0.0.1 localhost kpipe-guest\n", 0o644),
    }
    for rel, (content, mode) in files.items():
        p = root / rel
        p.write_text(content)
        os.chmod(p, mode)


def _write_image(root: Path, dest: Path) -> None:
    def build(w: CpioWriter) -> None:
        w.add_tree(root)
        w.add_chardev("dev/console", 5, 1, 0o600)
        w.add_chardev("dev/null", 1, 3, 0o666)
    write_gz(dest, build)


def build_image(arch: Arch, log: Path | None = None, *, overrides: dict[str, Any] | None = None) -> Initrd:
    """The guest initramfs for ``arch`` (cached by content key; a damaged entry is rebuilt)."""
    t0 = time.monotonic()
    recipe = load_recipe()
    variables = init_vars(recipe, overrides)
    render_init(recipe, variables)              # fail early on a template error
    refs = resolve_packages(arch, recipe, log)
    packages = {r.name: r.version for r in refs}
    key = cache.key_of(IMAGE_FORMAT, arch.name, arch.debian_arch, [(r.name, r.version, r.sha256) for r in refs],
                       recipe.text, recipe.template, variables)
    images = cache.cache_dir("images")
    entry = images / f"{arch.name}-{key}"

    def result(cached: bool) -> Initrd:
        return Initrd(arch=arch.name, path=entry / INITRD_NAME, key=key, packages=packages, cached=cached,
                      seconds=round(time.monotonic() - t0, 3), ready_marker=str(variables["ready_marker"]),
                      not_ready_marker=str(variables["not_ready_marker"]), start_sshd=bool(variables["start_sshd"]))

    def make(tmp: Path) -> dict[str, Any]:
        debs = fetch_debs(arch, refs, log)
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=images) as stage:
            root = Path(stage)
            os.chmod(root, 0o755)
            _assemble_rootfs(arch, recipe, debs, variables, root, log)
            _write_image(root, tmp / INITRD_NAME)
        return {"arch": arch.name, "key": key, "packages": packages, "variables": variables}

    cache.sweep_stale(images)                   # temp folders of runs killed hard (their creator is gone)
    _, hit = cache.cached_entry(entry, cache.cache_dir("locks") / f"image-{arch.name}.lock", "guest image", make)
    return result(hit)


# ---------------------------------------------------------------- per-run overlay

def _dropbearkey() -> str:
    exe = shutil.which("dropbearkey")
    if not exe:
        raise InfraError("dropbearkey (host tool that makes the guest's host key) is not installed",
                         fix="apt-get install dropbear-bin (or run `invoke setup`)")
    return exe


def make_host_key(directory: Path, key_type: str = "ed25519") -> tuple[bytes, tuple[str, str]]:
    """A fresh dropbear host key: (private key bytes in dropbear format, (type, base64) of the public half)."""
    exe = _dropbearkey()
    with tempfile.TemporaryDirectory(prefix="hostkey-", dir=directory) as td:
        path = Path(td) / "host_key"
        proc.run([exe, "-t", key_type, "-f", str(path)], timeout=30, what="dropbearkey")
        cp = proc.run([exe, "-y", "-f", str(path)], timeout=30, what="dropbearkey -y")
        private = path.read_bytes()
    for line in cp.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and (parts[0].startswith("ssh-") or parts[0].startswith("ecdsa-")):
            return private, (parts[0], parts[1])
    raise InfraError("dropbearkey -y printed no public key", detail=cp.stdout.splitlines()[-5:])


def make_overlay(run_dir: Path) -> Overlay:
    """Per-run secrets as a small cpio.gz: /root/.ssh/authorized_keys and /etc/dropbear/host_key."""
    import paramiko

    run_dir.mkdir(parents=True, exist_ok=True)
    client_key_path = run_dir / "ssh_client_key"
    client_key_path.unlink(missing_ok=True)
    key = paramiko.ECDSAKey.generate(bits=256)
    fd = os.open(client_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        key.write_private_key(fh)
    os.chmod(client_key_path, 0o600)
    host_private, host_pub = make_host_key(run_dir)
    authorized = f"{key.get_name()} {key.get_base64()} kpipe-run\n".encode()

    def build(w: CpioWriter) -> None:
        w.add_dir("root", 0o700)
        w.add_dir("root/.ssh", 0o700)
        w.add_file("root/.ssh/authorized_keys", authorized, 0o600)
        w.add_dir("etc", 0o755)
        w.add_dir("etc/dropbear", 0o700)
        w.add_file("etc/dropbear/host_key", host_private, 0o600)

    path = run_dir / "overlay.cpio.gz"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    write_gz(path, build)
    return Overlay(path=path, client_key_path=client_key_path, host_pubkey=host_pub)


def join_archives(parts: list[Path], dest: Path) -> Path:
    """The boot's initramfs: the cpio archives ``parts`` (gzip-compressed or not) concatenated into ``dest``
    uncompressed (each padded to 4 bytes), mode 0600. Uncompressed because the guest kernel inflates it with every
    boot: under TCG with KASAN, inflating the 3.4-4.3 MB image took 1.4 s of its 2.4-2.6 s unpack (measured on
    5.10's debug kernels); the host inflates it in ~50 ms. The cache keeps the compressed image (LAVA's ramdisk
    is made from it)."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        for p in parts:
            with open(p, "rb") as raw:
                compressed = raw.read(2) == b"\x1f\x8b"
                raw.seek(0)
                src = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
                shutil.copyfileobj(src, out, 1 << 20)
            pad = -out.tell() % 4
            out.write(b"\0" * pad)
    return dest
