"""Reading the machine's own apt sources, and a private apt configuration for other Debian suites.

The mirror is never written in kpipe: it is the one this machine's apt already uses. The private config has
its own source list, lists and cache, so the system's apt state is never changed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import proc
from ..errors import InfraError

DEBIAN_CODENAMES = ("buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "experimental")
ETC_APT = Path("/etc/apt")
SUITE_SUFFIXES = ("", "-updates", "-security", "-backports", "/updates")


def _debian_suite(suite: str) -> bool:
    return any(suite == c + sfx for c in DEBIAN_CODENAMES for sfx in SUITE_SUFFIXES)


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str = ""

    @property
    def is_debian(self) -> bool:
        """Debian's own archive: suites are exactly a codename or codename-{updates,security,backports}, and
        the key (when named) is Debian's. Third-party repos that name a codename (docker's `bookworm stable`,
        PostgreSQL's `bookworm-pgdg`) are not."""
        suites_ok = bool(self.suites) and all(_debian_suite(s) for s in self.suites)
        key_ok = not self.signed_by or "debian-archive" in self.signed_by
        return suites_ok and key_ok

    @property
    def is_security(self) -> bool:
        return any(s.endswith("-security") or "/updates" in s for s in self.suites)


def _parse_deb822(text: str) -> list[AptSource]:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            if ":" in line:
                key, val = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = val.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append(AptSource(uri.rstrip("/"), tuple(fields.get("suites", "").split()),
                                 tuple(fields.get("components", "main").split()), fields.get("signed-by", "")))
    return out


def _parse_list(text: str) -> list[AptSource]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if m:
            opts = m.group(1) or ""
            sb = re.search(r"signed-by=(\S+?)\]?(\s|$)", opts)
            out.append(AptSource(m.group(2).rstrip("/"), (m.group(3),), tuple(m.group(4).split() or ["main"]),
                                 sb.group(1).rstrip("]") if sb else ""))
    return out


def system_sources(etc: Path = ETC_APT) -> list[AptSource]:
    found: list[AptSource] = []
    main = etc / "sources.list"
    if main.is_file():
        found += _parse_list(main.read_text())
    d = etc / "sources.list.d"
    if d.is_dir():
        for f in sorted(d.iterdir()):
            if f.suffix == ".sources":
                found += _parse_deb822(f.read_text())
            elif f.suffix == ".list":
                found += _parse_list(f.read_text())
    return [s for s in found if s.is_debian]


def sources_for_suite(suite: str, etc: Path = ETC_APT) -> str:
    """A one-line-style sources.list for ``suite`` (+ -security, + -updates) on this machine's Debian mirrors."""
    srcs = system_sources(etc)
    if not srcs:
        raise InfraError("no Debian mirror found in this machine's apt sources (/etc/apt/sources.list{,.d})",
                         fix="configure apt with a Debian mirror (a deb822 .sources file or sources.list)")
    lines = []
    seen = set()
    for s in srcs:
        suites = [f"{suite}-security"] if s.is_security else [suite, f"{suite}-updates"]
        keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
        for st in suites:
            if (s.uri, st) in seen:
                continue
            seen.add((s.uri, st))
            lines.append(f"deb [signed-by={keyring}] {s.uri} {st} main")
    return "\n".join(lines) + "\n"


class PrivateApt:
    """apt-get with its own source list, lists and cache under ``root``."""

    def __init__(self, root: Path, suite: str, arch: str = "amd64"):
        self.root = root
        self.suite = suite
        self.arch = arch
        for d in ("lists/partial", "archives/partial"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "sources.list").write_text(sources_for_suite(suite))

    def opts(self) -> list[str]:
        r = self.root
        return ["-o", f"Dir::Etc::SourceList={r / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
                "-o", f"Dir::State::Lists={r / 'lists'}", "-o", f"Dir::Cache={r}",
                "-o", f"Dir::Cache::archives={r / 'archives'}", "-o", f"APT::Architecture={self.arch}",
                "-o", f"APT::Architectures::={self.arch}", "-o", "Acquire::Languages=none",
                "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]

    def update(self, log: Path | None = None) -> None:
        proc.run(["apt-get", *self.opts(), "-q", "update"], log=log, timeout=600, what="apt-get update")

    def candidate(self, package: str) -> str:
        cp = proc.run(["apt-cache", *self.opts(), "policy", package], timeout=120, what="apt-cache policy")
        m = re.search(r"Candidate:\s*(\S+)", cp.stdout or "")
        if not m or m.group(1) == "(none)":
            raise InfraError(f"package {package} not found in Debian {self.suite} on this machine's mirror",
                             fix="check the mirror in /etc/apt/sources.list.d and that it carries that suite")
        return m.group(1)

    def download(self, package: str, dest: Path, log: Path | None = None) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        proc.run(["apt-get", *self.opts(), "-q", "download", package], cwd=dest, log=log, timeout=1800,
                 what=f"apt-get download {package}")
        debs = sorted(dest.glob(f"{package}_*.deb"))
        if not debs:
            raise InfraError(f"apt-get download {package} produced no .deb in {dest}")
        return debs[-1]
