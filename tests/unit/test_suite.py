"""Suites as data (kpipe/checks/suite.py): the shipped suites load and agree with their C sources, a suite is chosen by
the files a series touches (or --suite), and a broken suite folder is a usage error naming file, key and fix.
The host runs of each suite's verifier are real: compiled with the host gcc and run on this machine's kernel."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kpipe import proc
from kpipe.checks import suite
from kpipe.errors import UsageError
from kpipe.checks.suite import LIB_DIR
from kpipe.checks.verifier import expect_file_text, load_expectations, parse_tap
from kpipe.report.results import Status


def test_shipped_suites_load_default_first():
    names = suite.shipped_names()
    assert names[0] == suite.DEFAULT == "mremap-dontunmap"
    assert "memfd-seals" in names
    for s in suite.check_shipped():
        exp = load_expectations(s)
        assert exp.suite is s and exp.cases and exp.policies
        assert all(k.is_file() for k in s.kconfig)
        assert {r.policy for r in s.rules} <= set(exp.policies)


def test_seed_suite_holds_the_seed_knowledge():
    s = suite.get("mremap-dontunmap")
    assert [r.policy for r in s.rules] == ["upstream", "anon+shmem", "anon-only"]
    assert s.policy_source == "mm/mremap.c" and s.binary == "mremap_dontunmap"
    assert list(s.known_patches.values()) == ["anon+shmem"]
    assert [b.name for b in s.tree_bugs] == ["dontunmap-partial-mlock"]
    assert s.pause.fast_path_cases == ("pmd-anon", "pmd-memfd", "pmd-thp-anon")
    assert s.pause.stand_in == {"latency-memfd": "latency-anon"}
    assert s.selftests.default_set == ("mremap_dontunmap", "map_fixed_noreplace", "userfaultfd-anon")
    hang = next(v["known_hang"] for e in s.selftests.catalogue for v in e["variants"] if "known_hang" in v)
    assert hang["fixed_by"] == "wake_range" and hang["tries"] == 3


def test_chosen_by_touched_files_or_suite():
    c = suite.choose(None, ["mm/mremap.c"])
    assert c.suite.name == "mremap-dontunmap" and "mm/mremap.c" in c.why
    c = suite.choose(None, ["mm/memfd.c"])
    assert c.suite.name == "memfd-seals" and "mm/memfd.c" in c.why
    both = suite.choose(None, ["mm/mremap.c", "mm/memfd.c"])
    assert both.suite.name == "mremap-dontunmap" and "also selected: memfd-seals" in both.why
    assert suite.choose(None, ["drivers/net/x.c"]).suite.name == suite.DEFAULT
    assert suite.choose(None, []).why.startswith("no shipped suite selects")
    assert suite.choose("memfd-seals", ["mm/mremap.c"]).why == "--suite"


def test_single_policy_suite_needs_no_rule(tmp_path):
    from kpipe.checks import intent
    from kpipe.checks.verifier import choose_policy
    s = suite.get("memfd-seals")
    assert choose_policy(tmp_path, None, s) == ("sealing", "suite memfd-seals has one policy")
    assert intent.choose(tmp_path, None, intent.declared([], None, s), s)[0] == "sealing"
    with pytest.raises(UsageError, match="unknown expectation policy 'upstream'"):
        choose_policy(tmp_path, "upstream", s)


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    return dst


def test_broken_suites_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no shipped suite of that name and no such folder") as e:
        suite.get("nosuch")
    assert "memfd-seals" in e.value.fix
    with pytest.raises(UsageError, match="is not a suite: it has no suite.toml"):
        suite.get(str(tmp_path))
    d = _copy(suite.SUITES_DIR / "memfd-seals", tmp_path / "mine")
    toml = d / "suite.toml"
    text = toml.read_text()
    toml.write_text(text.replace('binary = "memfd_seals"\n', ""))
    with pytest.raises(UsageError, match=r"\[verifier\] binary is missing"):
        suite.load(d)
    toml.write_text(text.replace('kconfig = "memfd-seals.config"', 'kconfig = "gone.config"'))
    with pytest.raises(UsageError, match="kconfig = 'gone.config': no such file"):
        suite.load(d)
    toml.write_text(text + '\n[policy]\nsource = "mm/memfd.c"\n[[policy.rules]]\npolicy = "other"\npattern = "x"\n')
    s = suite.load(d)
    with pytest.raises(UsageError, match=r"\[policies\] lacks other"):
        load_expectations(s)
    toml.write_text(text + '\n[[tree_bugs]]\nname = "b"\nwhy = "w"\nbug = "("\nfix = "x"\n')
    with pytest.raises(UsageError, match="not a regular expression"):
        suite.load(d)
    (d / "selftests.toml").write_text('default = ["nosuch"]\n')
    toml.write_text(text)
    with pytest.raises(UsageError, match="default names tests not in the catalogue: nosuch"):
        suite.load(d)


def test_a_user_suite_folder_loads_by_path(tmp_path):
    d = _copy(suite.SUITES_DIR / "memfd-seals", tmp_path / "my-suite")
    (d / "suite.toml").write_text((d / "suite.toml").read_text().replace('name = "memfd-seals"', 'name = "mine"'))
    s = suite.get(str(d))
    assert s.name == "mine" and s.root == d.resolve()
    assert suite.choose(str(d), []).suite is s


@pytest.mark.parametrize("name", suite.shipped_names())
def test_each_suite_verifier_matches_its_expectations_on_the_host(name, tmp_path, host_suite_binary):
    """Every shipped suite's C cases are exactly its expectations' cases, and on this host (a recent kernel)
    the cases that need no policy of the tree run as the expectations say (the seed's upstream column).
    The compile (gcc -Werror) is conftest's host_suite_binary, shared with test_verifier_state."""
    s = suite.get(name)
    binary = host_suite_binary(name)
    exp = load_expectations(s)
    listed = subprocess.run([binary, "-l"], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(listed) == sorted(exp.cases)
    if name != "memfd-seals":
        return                  # the seed's host run is tests/e2e/test_verifier_510.py's
    policy = next(iter(exp.policies))
    (tmp_path / "e.txt").write_text(expect_file_text(exp, policy))
    r = subprocess.run([binary, "-e", tmp_path / "e.txt"], capture_output=True, text=True, timeout=120)
    results = parse_tap(r.stdout, r.returncode, exp, policy)
    assert {t.name: t.status for t in results} == {c: Status.PASS for c in exp.cases}, r.stdout
