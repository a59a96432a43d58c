"""kpipe's defaults from invoke's config system, and where each effective value came from.

Levels, lowest first (a later level wins; a command-line option beats them all):
  built-in default
  /etc/kpipe.yaml                       (system file; .yml/.json/.py also read, as invoke does)
  $XDG_CONFIG_HOME/kpipe.yaml           (user file; default ~/.config/kpipe.yaml)
  the kernel git tree you are in        (only for `tree`: run kpipe inside a kernel checkout)
  ./kpipe.yaml                          (project file in the current directory)
  KPIPE_TREE, KPIPE_ARCH, ...           (environment)

leak_scan (default yes): the debug profile's kmemleak scan after the tests (two scans, ~40 s per arch under TCG).
Off (`leak_scan: no`, KPIPE_LEAK_SCAN=0) for a quick edit loop: the report then says leaks were not looked for.

The same loader serves both entry points (`kpipe` and `invoke` in the checkout), so they agree.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke.config import Config
from invoke.env import Environment
from invoke.exceptions import UncastableEnvVar

from .options import SETTINGS

KEYS = tuple(SETTINGS)
BUILTIN = {key: spec.config_default for key, spec in SETTINGS.items()}
BUILTIN_MEANING = {key: spec.config_default_meaning for key, spec in SETTINGS.items() if spec.config_default_meaning}


def user_prefix() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "")


class _Environment(Environment):
    """invoke's env loader, but a list-valued key (kconfigs from a file) takes a comma-separated string and a bad
    number is kept as text for kpipe to report, instead of crashing before any task runs."""
    def _cast(self, old: Any, new: Any) -> Any:
        try:
            return super()._cast(old, new)
        except (UncastableEnvVar, ValueError):
            return new


class KpipeConfig(Config):
    """invoke's Config with kpipe's file names (kpipe.yaml), env prefix (KPIPE_) and keys."""
    prefix = "kpipe"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("user_prefix", user_prefix())
        super().__init__(*args, **kwargs)

    def load_shell_env(self) -> None:
        self.merge()
        self._set(_env=_Environment(config=self._config, prefix=self._env_prefix).load())
        self.merge()

    @staticmethod
    def global_defaults() -> dict[str, Any]:
        d = Config.global_defaults()
        d.update(BUILTIN)
        return d


@dataclass(frozen=True)
class Setting:
    key: str
    value: object
    source: str


def kernel_tree_here(cwd: Path | None = None) -> Path | None:
    """The top of the kernel git tree containing ``cwd`` (read-only probe), or None."""
    cwd = Path(cwd or os.getcwd())
    r = subprocess.run(["git", "--no-optional-locks", "-C", str(cwd), "rev-parse", "--show-toplevel"],
                       capture_output=True, text=True, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    if r.returncode:
        return None
    top = Path(r.stdout.strip())
    mk = top / "Makefile"
    try:
        head = mk.read_text(errors="replace")[:3000]
    except OSError:
        return None
    if "VERSION =" in head and "PATCHLEVEL =" in head and (top / "Kconfig").is_file() and (top / "mm").is_dir():
        return top.resolve()
    return None


def load(cwd: Path | None = None) -> KpipeConfig:
    cfg = KpipeConfig(project_location=str(cwd or os.getcwd()))
    cfg.load_system()
    cfg.load_user()
    cfg.load_project()
    cfg.load_shell_env()
    return cfg


def _normalise(key: str, value: Any) -> object:
    spec = SETTINGS[key]
    if spec.type is list:
        if value in (None, ""):
            return ()
        if isinstance(value, str):
            return tuple(v for v in value.replace(",", " ").split() if v)
        return tuple(str(v) for v in value)
    if spec.type is int:
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            from ..errors import UsageError
            raise UsageError(f"{key} must be a number, got {value!r}",
                             fix=f"fix {spec.env} or `{key}:` in your kpipe.yaml ({spec.config_default} = "
                                 f"{spec.config_default_meaning})") from None
    if spec.type is bool:           # a file's yes/no, or the environment's text (KPIPE_LEAK_SCAN=0)
        if isinstance(value, str):
            return value.strip().lower() not in ("0", "no", "false", "off", "")
        return bool(value)
    if key in ("tree", "out") and isinstance(value, str) and value and not value.startswith("debian:"):
        return os.path.expanduser(value)
    return value


def effective(cwd: Path | None = None) -> dict[str, Setting]:
    """Each key's value and source (see the module docstring for the order)."""
    cfg = load(cwd)
    files = [("system", cfg._system_path, cfg._system), ("user", cfg._user_path, cfg._user)]
    out: dict[str, Setting] = {}
    for key in KEYS:
        meaning = f" ({BUILTIN_MEANING[key]})" if key in BUILTIN_MEANING else ""
        value, source = BUILTIN[key], "built-in default" + meaning
        for _, path, data in files:
            if key in data:
                value, source = data[key], f"{path}"
        if key == "tree":
            here = kernel_tree_here(cwd)
            if here is not None:
                value, source = str(here), "the kernel git tree you are in"
        if key in cfg._project:
            value, source = cfg._project[key], f"{cfg._project_path}"
        if key in cfg._env:
            value, source = cfg._env[key], f"environment {SETTINGS[key].env}"
        out[key] = Setting(key, _normalise(key, value), source)
    return out


def describe(cwd: Path | None = None) -> list[str]:
    """The lines `kpipe config` prints."""
    from ..workflows.pipeline import runs_root_and_source
    cfg = load(cwd)
    lines = []
    for s in effective(cwd).values():
        shown = ", ".join(s.value) if isinstance(s.value, tuple) else s.value
        shown = "-" if shown in (None, "") else shown
        lines.append(f"{s.key:<9} {str(shown):<40} from {s.source}")
    runs, why = runs_root_and_source()
    lines.append(f"{'runs':<9} {str(runs):<40} from {why}")
    if os.environ.get("KPIPE_CACHE"):
        cache, why = os.environ["KPIPE_CACHE"], "environment KPIPE_CACHE"
    else:
        cache, why = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kpipe"), \
            "built-in default ($XDG_CACHE_HOME/kpipe)"
    lines.append(f"{'cache':<9} {str(cache):<40} from {why}")
    from ..datadirs import data_root, installed
    from ..checks.suite import shipped_names
    where = "the installed package" if installed() else "the kpipe checkout"
    lines.append(f"{'data':<9} {str(data_root()):<40} from {where} (kconfigs, vm_images, suites, patches)")
    lines.append(f"{'suites':<9} {', '.join(shipped_names()):<40} from {data_root() / 'suites'}")
    lines.append("config files (later wins): " + "; ".join(
        f"{name} {path if path and os.path.isfile(path) else prefix + 'kpipe.yaml (none)'}"
        for name, path, prefix in (("system", cfg._system_path, cfg._system_prefix),
                                   ("user", cfg._user_path, cfg._user_prefix),
                                   ("project", cfg._project_path, cfg._project_prefix))))
    return lines
