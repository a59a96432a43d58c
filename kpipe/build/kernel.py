"""Build stage: configure from kconfig fragments, validate, build out of tree (O=), cache by content key.

Layout in the cache:
  builds/<tree>-<arch>-<config key>[-ccache]/   the incremental build folder (kept between runs)
  kernels/<arch>/<content key>/                 finished artifacts + manifest (image, vmlinux, System.map,
                                                .config, uapi headers); reused without running make

Content key = source tree hash (base + applied patches) + merged config + start target + compiler + arch.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import cache, proc
from . import toolchain
from ..arches import Arch
from ..errors import BuildError, InfraError, KpipeError
from .profiles import Profile, get_profile
from ..progress import note

BUILD_RECIPE = 3     # bump when the way kernels are built changes, to invalidate old entries (3: .gcno kept)
CONFIG_STAMP = ".kpipe-config.json"
_ERROR_LINE = re.compile(r"^(\S+?:\d+:(\d+:)? (fatal )?error: .*|.*undefined reference to .*|make\[\d+\]: \*\*\* .*|"
                         r"\S+: error: .*)$")
_COMPILED = re.compile(r"^\s+CC\s+(\S+\.o)\s*$", re.M)


@dataclass(frozen=True)
class Kernel:
    arch: str
    image: Path          # bzImage / Image
    vmlinux: Path | None
    system_map: Path | None
    config: Path         # the final .config
    headers: Path        # uapi headers installed by headers_install: <headers>/include/...
    release: str         # make kernelrelease
    compiler: str        # gcc --version first line
    key: str = ""
    seconds: float = 0.0
    cached: bool = False
    tree_src: Path | None = None   # the scratch checkout the kernel was built from
    extra: dict[str, Any] = field(default_factory=dict)   # compiled: objects make compiled; build_dir


@dataclass(frozen=True)
class BuildRequest:
    arch: Arch
    src: Path                 # scratch checkout
    tree_ident: str
    tree_hash: str            # content of the checkout (git tree id)
    config_text: str          # merged fragment text
    config_key: str
    defconfig: str = "tinyconfig"
    jobs: int = 0             # 0: all cores
    ccache: bool | None = None  # None: use it when installed
    use_cache: bool = True    # False: ignore the artifact cache (the benchmark's cold build)
    make_vars: tuple[str, ...] = ()   # per-object instrumentation (kpipe.build.instrument): GCOV_PROFILE_mremap.o=y ...
    instrumented: tuple[str, ...] = ()  # the objects those variables instrument, e.g. mm/mremap.o


def compiler_version(arch: Arch) -> str:
    return toolchain.compiler(arch.cc).version


def use_ccache(requested: bool | None) -> bool:
    if requested is None:
        requested = os.environ.get("KPIPE_CCACHE", "1") != "0"
    return bool(requested and shutil.which("ccache"))


def content_key(req: BuildRequest, compiler: str) -> str:
    return cache.key_of("kernel", BUILD_RECIPE, req.arch.name, req.tree_hash, req.config_text, req.defconfig, compiler,
                        *req.make_vars)


def machine_build_lock() -> contextlib.AbstractContextManager[None]:
    """One kernel make at a time on this machine, whatever cache, tree or process it is for: a build uses every
    core, and two at once only make both slower (and every measurement wrong). ``$KPIPE_BUILD_LOCK`` names the
    lock file (default: /tmp/kpipe-kernel-build.lock, shared by every cache on the machine)."""
    path = Path(os.environ.get("KPIPE_BUILD_LOCK") or "/tmp/kpipe-kernel-build.lock")
    return cache.file_lock(path, "kernel build (one make at a time on this machine)")


RELOCATABLE_STAMP = ".kpipe-ccache-relocatable"


def ccache_relocation(src: Path, bdir: Path) -> tuple[dict[str, str], list[str]]:
    """The environment and make variables that let ccache hit across build folders (a far bisect step, a new
    config key's folder, a second tree ident of the same source): kbuild compiles with absolute source paths
    (srctree is absolute with O=), so ccache needs CCACHE_BASEDIR (the common root of the source and build
    folders: paths under it are hashed, and given to gcc, relative to the build folder) and CCACHE_NOHASHDIR
    (with -g ccache hashes the working directory otherwise). gcc then gets relative paths, so the kernel's own
    ``-fmacro-prefix-map=$(srctree)/=`` no longer matches: KCPPFLAGS adds the relative form, so that
    ``__FILE__`` (``kernel BUG at mm/mremap.c:N``, WARN lines) stays ``mm/...``. The debug info's file names
    become relative to DW_AT_comp_dir (the folder that first compiled the object): addr2line prints
    ``<that folder>/../../work/<tree>/mm/mremap.c``, the same source file once the path is normalised.
    Nothing when the two folders share no root below ``/``."""
    s, b = os.path.abspath(src), os.path.abspath(bdir)
    root = os.path.commonpath([s, b])
    if root in ("/", ""):
        return {}, []
    return ({"CCACHE_BASEDIR": root, "CCACHE_NOHASHDIR": "1"},
            [f"KCPPFLAGS=-fmacro-prefix-map={os.path.relpath(s, b)}/="])


def relocatable(bdir: Path, ccache: bool) -> bool:
    """A build folder configured with ccache relocation keeps it (RELOCATABLE_STAMP); an older folder keeps its
    absolute-path command lines, so that kbuild does not recompile all of it for a flag change."""
    return ccache and (bdir / RELOCATABLE_STAMP).is_file()


def mark_relocatable(bdir: Path, ccache: bool) -> None:
    """A brand-new build folder (no .config yet) with ccache on uses ccache relocation from its first make."""
    if ccache and not (bdir / ".config").exists():
        bdir.mkdir(parents=True, exist_ok=True)
        (bdir / RELOCATABLE_STAMP).write_text("CCACHE_BASEDIR + CCACHE_NOHASHDIR + KCPPFLAGS (kpipe.build.kernel)\n")


def _make_cmd(req: BuildRequest, bdir: Path, ccache: bool, *targets: str) -> list[str]:
    cmd = ["make", "-C", str(req.src), f"O={bdir}", *req.arch.make_vars, *req.make_vars]
    if ccache:
        cmd.append(f"CC=ccache {req.arch.cc}")
        if relocatable(bdir, ccache):
            cmd += ccache_relocation(req.src, bdir)[1]
    return cmd + list(targets)


def _make_env(ccache: bool, src: Path | None = None, bdir: Path | None = None) -> dict[str, str]:
    env = {"KBUILD_BUILD_USER": "kpipe", "KBUILD_BUILD_HOST": "kpipe", "LC_ALL": "C"}
    if ccache:
        env["CCACHE_DIR"] = str(cache.cache_dir("ccache"))
        if src is not None and bdir is not None and relocatable(bdir, ccache):
            env.update(ccache_relocation(src, bdir)[0])
    return env


def cached_kernel(arch: Arch, key: str) -> Kernel | None:
    entry = cache.cache_root() / "kernels" / arch.name / key
    meta = cache.verify_entry(entry)
    if meta is None:
        if entry.exists():
            note(f"cached kernel {entry} is damaged (a file is missing or altered): rebuilding it")
        return None
    return _kernel_from_entry(arch, entry, meta, cached=True)


def _last_path(arch: str) -> Path:
    return cache.cache_dir("last") / f"{arch}.json"


def remember_kernel(k: Kernel, profile: str) -> None:
    _last_path(k.arch).write_text(json.dumps({"key": k.key, "release": k.release, "profile": profile}))


def last_kernel(arch: Arch) -> tuple[Kernel, Profile]:
    """The last kernel built for ``arch`` and the profile it was built with (its guest size and command line)."""
    try:
        last = json.loads(_last_path(arch.name).read_text())
        key, profile = last["key"], last.get("profile", "fast")
    except (OSError, ValueError, KeyError):
        key, profile = None, None
    k = cached_kernel(arch, key) if key else None
    if k is None:
        raise InfraError(f"no built {arch.name} kernel to boot", fix=f"run `invoke build --arch {arch.name}` first")
    return k, get_profile(profile)


def _kernel_from_entry(arch: Arch, entry: Path, meta: dict[str, Any], cached: bool) -> Kernel:
    return Kernel(arch=arch.name, image=entry / Path(arch.image_path).name,
                  vmlinux=entry / "vmlinux" if (entry / "vmlinux").exists() else None,
                  system_map=entry / "System.map" if (entry / "System.map").exists() else None,
                  config=entry / "config", headers=entry / "headers", release=meta["release"],
                  compiler=meta["compiler"], key=meta["key"], seconds=meta.get("seconds", 0.0), cached=cached,
                  tree_src=Path(meta["src"]) if meta.get("src") else None,
                  extra={"compiled": meta.get("compiled", []), "build_dir": meta.get("build_dir", ""),
                         "make_vars": meta.get("make_vars", []), "instrumented": meta.get("instrumented", []),
                         "gcno_dir": str(entry / "gcno") if (entry / "gcno").is_dir() else ""})


def build_dir(req: BuildRequest, ccache: bool) -> Path:
    name = f"{req.tree_ident}-{req.arch.name}-{cache.key_of(req.config_key, req.defconfig)[:12]}"
    return cache.cache_dir("builds") / (name + ("-ccache" if ccache else ""))


def configure(req: BuildRequest, bdir: Path, ccache: bool, log: Path, validate: Callable[[Path], None]) -> Path:
    """tinyconfig (or --defconfig) + fragments + olddefconfig, once per build folder; then validation."""
    stamp = bdir / CONFIG_STAMP
    dotconfig = bdir / ".config"
    want = {"config_key": req.config_key, "defconfig": req.defconfig}
    try:
        ok = json.loads(stamp.read_text()) == want and dotconfig.is_file()
    except (OSError, ValueError):
        ok = False
    if not ok:
        stamp.unlink(missing_ok=True)
        env = _make_env(ccache, req.src, bdir)
        proc.run(_make_cmd(req, bdir, ccache, req.defconfig), log=log, env=env, timeout=600,
                 what=f"make {req.defconfig}")
        with open(dotconfig, "a") as f:
            f.write("\n# ---- kpipe fragments ----\n" + req.config_text)
        proc.run(_make_cmd(req, bdir, ccache, "olddefconfig"), log=log, env=env, timeout=600, what="make olddefconfig")
        validate(dotconfig)
        stamp.write_text(json.dumps(want))
    return dotconfig


def build(req: BuildRequest, log: Path, validate: Callable[[Path], None]) -> Kernel:
    """The kernel for ``req``: from the cache when its content key is there, else built with make.

    ``validate(dotconfig)`` raises ConfigError when a requested option did not get set.
    """
    arch = req.arch
    compiler = compiler_version(arch)
    key = content_key(req, compiler)
    entry = cache.cache_root() / "kernels" / arch.name / key
    cc = use_ccache(req.ccache)
    bdir = build_dir(req, cc)
    jobs = req.jobs or os.cpu_count() or 1

    def make(tmp: Path) -> dict[str, Any]:
        if req.use_cache and entry.exists():
            note(f"cached kernel {entry} is damaged (a file is missing or altered): rebuilding it")
        with machine_build_lock():
            start = time.monotonic()
            mark_relocatable(bdir, cc)
            configure(req, bdir, cc, log, validate)
            log_start = log.stat().st_size if log.exists() else 0
            try:
                proc.run(_make_cmd(req, bdir, cc, f"-j{jobs}", arch.image_target), log=log,
                         env=_make_env(cc, req.src, bdir),
                         timeout=7200, what=f"make {arch.image_target}")
            except InfraError as e:
                if "failed with exit" not in e.message:
                    raise
                raise build_error(arch, log, log_start) from None
            hdr_tmp = install_headers(req, bdir, cc, log)
            seconds = round(time.monotonic() - start, 2)
        shutil.copy2(bdir / arch.image_path, tmp / Path(arch.image_path).name)
        for name, dest in (("vmlinux", "vmlinux"), ("System.map", "System.map"), (".config", "config")):
            if (bdir / name).exists():
                shutil.copy2(bdir / name, tmp / dest)
        shutil.copytree(hdr_tmp, tmp / "headers", symlinks=True)
        for obj in req.instrumented:          # gcov's notes of this very build: the build folder's change later
            gcno = bdir / f"{obj[:-2]}.gcno"
            if gcno.is_file():
                (tmp / "gcno" / obj).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(gcno, tmp / "gcno" / f"{obj[:-2]}.gcno")
        return {"key": key, "release": (bdir / "include/config/kernel.release").read_text().strip(),
                "compiler": compiler, "seconds": seconds, "arch": arch.name, "src": str(req.src),
                "tree_hash": req.tree_hash, "compiled": sorted(set(_COMPILED.findall(_read_from(log, log_start)))),
                "build_dir": str(bdir), "ccache": cc, "jobs": jobs, "make_vars": list(req.make_vars),
                "instrumented": list(req.instrumented)}

    # the lock is the build folder's (one make at a time in it); another run may build this key meanwhile
    meta, hit = cache.cached_entry(entry, bdir.parent / f"{bdir.name}.lock", f"{arch.name} build folder", make,
                                   reuse=req.use_cache)
    if not hit:
        note(f"{arch.name}: built {meta['release']} in {meta['seconds']:.1f}s ({len(meta['compiled'])} files "
             f"compiled); cached as {entry}")
    return _kernel_from_entry(arch, entry, meta, cached=hit)


def uapi_inputs(req: BuildRequest) -> dict[str, str]:
    """Git tree ids of what `make headers_install` reads (uapi headers, syscall tables, the scripts)."""
    from .kconfig import srcarch
    from ..source.tree import git
    sa = srcarch(req.arch)
    paths = ["include/uapi", f"arch/{sa}/include/uapi", f"arch/{sa}/entry/syscalls", f"arch/{sa}/kernel/syscalls",
             "scripts"]
    out: dict[str, str] = {}
    for p in paths:
        cp = git(req.src, "rev-parse", "--verify", "--quiet", f"HEAD:{p}", check=False)
        out[p] = cp.stdout.strip() if cp.returncode == 0 else ""
    return out


def install_headers(req: BuildRequest, bdir: Path, ccache: bool, log: Path) -> Path:
    """`make headers_install` into the build folder, skipped when none of its inputs changed since the last
    install there (a one-line edit of mm/ does not reinstall ~900 headers)."""
    dest = bdir / "kpipe-headers"
    stamp = bdir / ".kpipe-headers.json"
    want = uapi_inputs(req)
    try:
        if json.loads(stamp.read_text()) == want and (dest / "include").is_dir():
            with open(log, "a") as f:
                f.write("kpipe: uapi headers unchanged since the last headers_install here: reused\n")
            return dest
    except (OSError, ValueError):
        pass
    stamp.unlink(missing_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    proc.run(_make_cmd(req, bdir, ccache, "headers_install", f"INSTALL_HDR_PATH={dest}"), log=log,
             env=_make_env(ccache, req.src, bdir), timeout=600, what="make headers_install")
    stamp.write_text(json.dumps(want))
    return dest


def _read_from(log: Path, offset: int) -> str:
    with open(log, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def build_error(arch: Arch, log: Path, offset: int) -> KpipeError:
    lines = [ln for ln in _read_from(log, offset).splitlines() if _ERROR_LINE.match(ln)]
    errors = [ln for ln in lines if "error" in ln and not ln.startswith("make")] or lines
    return BuildError(f"{arch.name} kernel build failed", detail=errors[:12] or proc.tail_lines(log, 15),
                      log=str(log), fix="fix the error above in the patch series (the full log is at the path shown)")

