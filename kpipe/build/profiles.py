"""Build-and-boot profiles (kconfigs/profiles.toml): which extra kconfig layers a kernel gets, and the guest's
vCPUs, memory and command line. ``debug`` is the default for every workflow; ``fast`` is the old tinyconfig kernel."""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..arches import Arch
from ..datadirs import data_dir
from ..errors import InfraError, UsageError

KCONFIG_DIR = data_dir("kconfigs")
PROFILES_FILE = KCONFIG_DIR / "profiles.toml"
DEFAULT_PROFILE = "debug"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    layers: tuple[Path, ...]        # essential: every option must be set ("{arch}" in a name: the arch's name)
    optional: tuple[Path, ...]      # set where the tree has them
    smp: int
    memory_mb: int
    kernel_args: tuple[str, ...]
    instrument: tuple[str, ...] = ()   # per-object instrumentation of the touched files (kpipe.build.instrument.KINDS)

    def layers_for(self, arch: Arch) -> tuple[Path, ...]:
        return tuple(Path(str(p).replace("{arch}", arch.name)) for p in self.layers)

    def guest_arch(self, arch: Arch) -> Arch:
        """The arch data with this profile's guest size and command line."""
        return dataclasses.replace(arch, smp=self.smp, memory_mb=self.memory_mb,
                                   kernel_cmdline_extra=arch.kernel_cmdline_extra + self.kernel_args)


@lru_cache(maxsize=4)
def load_profiles(path: Path = PROFILES_FILE) -> dict[str, Profile]:
    fix = f"restore {path} from the repository (see the comment at its top for the format)"
    try:
        raw = tomllib.loads(path.read_text())["profiles"]
    except FileNotFoundError:
        raise InfraError(f"{path} is missing", fix=fix) from None
    except (tomllib.TOMLDecodeError, KeyError) as e:
        raise InfraError(f"{path}: not a [profiles.NAME] table ({e})", fix=fix) from None
    out = {}
    for name, t in raw.items():
        try:
            files = {k: tuple(KCONFIG_DIR / str(f) for f in t.get(k, [])) for k in ("layers", "optional")}
            from ..arches import ARCHES
            expanded = [Path(str(p).replace("{arch}", a)) for p in files["layers"] + files["optional"] for a in ARCHES]
            absent = sorted({str(p) for p in expanded if not p.is_file()})
            if absent:
                raise InfraError(f"{path}: profile {name} names missing fragment(s): {', '.join(absent)}", fix=fix)
            from .instrument import KINDS
            instrument = tuple(str(k) for k in t.get("instrument", []))
            bad = [k for k in instrument if k not in KINDS]
            if bad:
                raise InfraError(f"{path}: profile {name}: unknown instrument kind(s) {bad} (known: "
                                 f"{', '.join(sorted(KINDS))})", fix=fix)
            out[name] = Profile(name, str(t.get("description", "")), files["layers"], files["optional"],
                                int(t["smp"]), int(t["memory_mb"]), tuple(str(a) for a in t.get("kernel_args", [])),
                                instrument)
        except (KeyError, TypeError, ValueError) as e:
            raise InfraError(f"{path}: profile {name} is malformed ({e})", fix=fix) from None
    return out


def get_profile(name: str | None) -> Profile:
    profiles = load_profiles()
    name = name or DEFAULT_PROFILE
    try:
        return profiles[name]
    except KeyError:
        raise UsageError(f"unknown profile {name!r}",
                         fix=f"use --profile with one of: {', '.join(sorted(profiles))} "
                             f"(defined in {PROFILES_FILE})") from None
