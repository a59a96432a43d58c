"""Reading the machine's apt sources (unit): deb822 and one-line formats, Debian vs third-party sources, and the
private source list for another suite, which must reuse only the machine's own hosts."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kpipe.source.aptsrc import AptSource, _parse_deb822, _parse_list, sources_for_suite, system_sources
from kpipe.errors import InfraError

DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example.net/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://security.example.net/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

NODESOURCE = """\
Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Architectures: amd64
Signed-By: /usr/share/keyrings/nodesource.gpg
"""


def hosts(text: str) -> set[str]:
    return {urlsplit(u).hostname for u in re.findall(r"\b(?:https?|ftp)://\S+", text)}


def make_etc(tmp_path: Path, files: dict[str, str]) -> Path:
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for rel, text in files.items():
        (etc / rel).write_text(text)
    return etc


# ------------------------------------------------------------------------------------------------ parsing

def test_deb822_with_comments_inside_stanzas():
    main, sec = _parse_deb822(DEBIAN_SOURCES)
    assert main == AptSource("http://mirror.example.net/debian", ("bookworm", "bookworm-updates"), ("main",),
                             "/usr/share/keyrings/debian-archive-keyring.gpg")
    assert sec.uri == "http://security.example.net/debian-security" and sec.suites == ("bookworm-security",)
    assert main.is_debian and not main.is_security
    assert sec.is_debian and sec.is_security


def test_deb822_disabled_source_only_multi_uri_and_folded_fields():
    text = """\
Types: deb-src
URIs: http://src.example.net/debian
Suites: bookworm
Components: main

Types: deb
Enabled: no
URIs: http://off.example.net/debian
Suites: bookworm
Components: main

Types: deb deb-src
URIs: http://a.example.net/debian/ http://b.example.net/debian
Suites: bookworm
 bookworm-updates
Components: main contrib
"""
    got = _parse_deb822(text)
    assert [s.uri for s in got] == ["http://a.example.net/debian", "http://b.example.net/debian"]
    assert got[0].suites == ("bookworm", "bookworm-updates") and got[0].components == ("main", "contrib")


def test_one_line_format_with_options_comments_and_deb_src():
    text = """\
# the main archive
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example.net/debian/ bookworm main contrib
deb-src http://mirror.example.net/debian bookworm main
deb http://security.example.net/debian-security bookworm-security main  # security
   deb http://mirror.example.net/debian bookworm-updates
"""  # noqa: E501
    got = _parse_list(text)
    assert [(s.uri, s.suites, s.components, s.signed_by) for s in got] == [
        ("http://mirror.example.net/debian", ("bookworm",), ("main", "contrib"),
         "/usr/share/keyrings/debian-archive-keyring.gpg"),
        ("http://security.example.net/debian-security", ("bookworm-security",), ("main",), ""),
        ("http://mirror.example.net/debian", ("bookworm-updates",), ("main",), ""),
    ]
    assert got[1].is_security and not got[0].is_security


def test_nodesource_and_other_non_debian_suites_are_not_debian():
    [node] = _parse_deb822(NODESOURCE)
    assert not node.is_debian
    [gcloud] = _parse_list("deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n")
    assert not gcloud.is_debian


# ------------------------------------------------------------------------------------------------ the machine's sources

def test_system_sources_reads_both_formats_and_skips_third_party(tmp_path):
    etc = make_etc(tmp_path, {
        "sources.list": "deb http://legacy.example.net/debian bookworm main\n",
        "sources.list.d/debian.sources": DEBIAN_SOURCES,
        "sources.list.d/nodesource.sources": NODESOURCE,
        "sources.list.d/google-cloud-sdk.list": "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n",
        "sources.list.d/old.list.disabled": "deb http://disabled.example.net/debian bookworm main\n",
    })
    uris = [s.uri for s in system_sources(etc)]
    assert uris == ["http://legacy.example.net/debian", "http://mirror.example.net/debian",
                    "http://security.example.net/debian-security"]


def test_sources_for_suite_maps_main_and_security(tmp_path):
    etc = make_etc(tmp_path, {"sources.list.d/debian.sources": DEBIAN_SOURCES,
                              "sources.list.d/nodesource.sources": NODESOURCE})
    text = sources_for_suite("bullseye", etc)
    lines = text.splitlines()
    key = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    assert lines == [
        f"deb {key} http://mirror.example.net/debian bullseye main",
        f"deb {key} http://mirror.example.net/debian bullseye-updates main",
        f"deb {key} http://security.example.net/debian-security bullseye-security main",
    ]
    assert "bookworm" not in text and "nodesource" not in text
    assert hosts(text) == {"mirror.example.net", "security.example.net"}


@pytest.mark.parametrize("suite", ["bullseye", "bookworm", "trixie"])
def test_sources_for_suite_never_invents_a_host(tmp_path, suite):
    etc = make_etc(tmp_path, {
        "sources.list": "deb http://one.example.org/debian bookworm main\n"
                        "deb http://one.example.org/debian-security bookworm-security main\n",
        "sources.list.d/nodesource.sources": NODESOURCE,
    })
    text = sources_for_suite(suite, etc)
    assert hosts(text) == {"one.example.org"}
    assert f"debian-security {suite}-security main" in text and f"/debian {suite} main" in text
    assert len(text.splitlines()) == len(set(text.splitlines()))        # no duplicates


def test_no_debian_source_is_an_infra_error_with_a_fix(tmp_path):
    etc = make_etc(tmp_path, {"sources.list.d/nodesource.sources": NODESOURCE})
    with pytest.raises(InfraError) as ei:
        sources_for_suite("bullseye", etc)
    assert "no Debian mirror" in ei.value.message and ei.value.fix and ei.value.exit_code == 2


def test_this_machines_sources_give_only_its_own_hosts():
    etc = Path("/etc/apt")
    srcs = system_sources(etc)
    if not srcs:
        pytest.skip("this machine has no Debian apt source")
    configured = set()
    for f in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]:
        if f.is_file() and f.suffix in (".list", ".sources"):
            configured |= hosts(f.read_text())
    text = sources_for_suite("bullseye", etc)
    assert hosts(text) and hosts(text) <= configured
    assert re.search(r" bullseye main$", text, re.M) and re.search(r" bullseye-security main$", text, re.M)


def test_third_party_repos_with_debian_codenames_are_not_debian(tmp_path):
    etc = make_etc(tmp_path, {
        "sources.list.d/debian.sources": DEBIAN_SOURCES,
        "sources.list.d/docker.list": "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.gpg] "
                                      "https://download.docker.com/linux/debian bookworm stable\n",
        "sources.list.d/pgdg.list": "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] "
                                    "https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main\n",
    })
    text = sources_for_suite("bullseye", etc)
    assert hosts(text) == {"mirror.example.net", "security.example.net"}, text
