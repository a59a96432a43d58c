"""Where kpipe's data lives, found in one place.

kpipe ships data beside its code: kconfig fragments and profiles (kconfigs/), the guest image recipes
(vm_images/), the suites with their verifier sources (suites/) and the default series (patches/). In a
checkout (and an editable install) they are the checkout's top-level folders; a wheel carries copies of them in
kpipe/_data/ (setup.py's build step puts them there), so an installed kpipe works from any directory.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
FOLDERS = ("kconfigs", "vm_images", "suites", "patches")
BUNDLED = PACKAGE / "_data"


def installed() -> bool:
    """True for a wheel install (the data travels inside the package), False for a checkout."""
    return BUNDLED.is_dir()


def data_root() -> Path:
    """The folder holding kconfigs/, vm_images/, suites/ and patches/."""
    return BUNDLED if installed() else PACKAGE.parent


def data_dir(name: str) -> Path:
    if name not in FOLDERS:
        raise ValueError(f"{name!r} is not one of kpipe's data folders {FOLDERS}")
    return data_root() / name


def checkout_root() -> Path | None:
    """The kpipe checkout this code runs from (it has the tests), or None for an installed kpipe."""
    root = PACKAGE.parent
    return root if not installed() and (root / "tests").is_dir() and (root / "pyproject.toml").is_file() else None
