"""The tree's MAINTAINERS file: which sections a touched file belongs to, and which selftest paths those
sections list (their F: entries under tools/testing/selftests/). Matching follows get_maintainer.pl: a pattern
ending in "/" covers everything below it; "*", "?" and [...] match within one path component (and not below);
a plain pattern naming a directory without the slash covers it too; X: entries exclude."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SELFTESTS = "tools/testing/selftests/"


@dataclass(frozen=True)
class Section:
    title: str
    files: tuple[str, ...]         # F: patterns
    excludes: tuple[str, ...]      # X: patterns

    def covers(self, path: str) -> bool:
        return any(matches(p, path) for p in self.files) and not any(matches(p, path) for p in self.excludes)

    @property
    def selftest_patterns(self) -> tuple[str, ...]:
        return tuple(p for p in self.files if p.startswith(SELFTESTS))


@lru_cache(maxsize=512)
def _glob_re(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        end = pattern.find("]", i + 1) if ch == "[" else -1
        if end > 0:                                  # a character class: [ch], [!x]
            body = pattern[i + 1:end]
            out += "[" + ("^" + re.escape(body[1:]) if body.startswith("!") else re.escape(body)) + "]"
            i = end + 1
            continue
        out += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
        i += 1
    if pattern.endswith("/"):
        return re.compile(out + ".*$")                  # everything below
    if any(c in pattern for c in "*?["):
        return re.compile(out + "$")                    # those files, not below
    return re.compile(out + r"(?:/.*)?$")               # a file, or a directory named without its slash


def matches(pattern: str, path: str) -> bool:
    return _glob_re(pattern).match(path) is not None


def parse(text: str) -> list[Section]:
    """Sections start at a line with no "X:" tag after a blank line; only F: and X: lines matter here."""
    sections: list[Section] = []
    title: str | None = None
    files: list[str] = []
    excl: list[str] = []
    started = False
    for line in text.splitlines():
        m = re.match(r"^([A-Z]):\s*(.*?)\s*$", line)
        if m and title is not None:
            tag, value = m.groups()
            if tag == "F":
                files.append(value)
            elif tag == "X":
                excl.append(value)
            continue
        if not line.strip():
            if title is not None and files:
                sections.append(Section(title, tuple(files), tuple(excl)))
            title, files, excl = None, [], []
            continue
        if title is None and not m:
            title = line.strip()
            started = started or title.isupper()
    if title is not None and files:
        sections.append(Section(title, tuple(files), tuple(excl)))
    return sections


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> tuple[Section, ...]:
    return tuple(parse(Path(path).read_text(errors="replace")))


def load(tree: Path) -> list[Section]:
    """The tree's sections; [] when it has no MAINTAINERS file."""
    p = Path(tree) / "MAINTAINERS"
    try:
        return list(_load(str(p), p.stat().st_mtime))
    except OSError:
        return []


def sections_for(sections: list[Section], path: str) -> list[Section]:
    return [s for s in sections if s.covers(path)]
