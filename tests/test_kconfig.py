"""kconfig model: fragment parsing, merge and conflicts, .config reading (unit); validation with the blocking
dependency against the real 5.10 tree and real olddefconfig results (both arches)."""
from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kpipe.build import kconfig as K
from kpipe import proc
from kpipe.arches import ARCHES, get_arch
from kpipe.errors import ConfigError, InfraError, UsageError
from kpipe.checks.suite import get as get_suite
from kpipe.checks.suite import shipped_names

SRC = Path("/nonexistent")    # the real Debian 5.10 tree: set by the needs_tree fixture


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------------------ parse

def test_parse_every_valid_form(tmp_path):
    p = write(tmp_path, "a.config", "\n".join([
        "# a comment",
        "",
        "CONFIG_A=y",
        "CONFIG_B=m",
        "# CONFIG_C is not set",
        "CONFIG_D=n",
        'CONFIG_E="console=ttyS0 \\"quoted\\" \\\\"',
        "CONFIG_F=-1",
        "CONFIG_G=0x1000",
        "CONFIG_64BIT=y   ",
        "#CONFIG_H is not set is just a comment",
        "# CONFIG_I=y is a comment too",
    ]) + "\n")
    f = K.parse_fragment(p)
    assert f.path == p
    assert f.values == {"A": "y", "B": "m", "C": "n", "D": "n", "E": '"console=ttyS0 \\"quoted\\" \\\\"',
                        "F": "-1", "G": "0x1000", "64BIT": "y"}


@pytest.mark.parametrize("bad, hint", [
    ("CONFIG_X=yes", "write y or n"),
    ("X=y", "start with CONFIG_"),
    ("CONFIG_X = y", "no spaces"),
    ('CONFIG_S="unterminated', "string"),
    ("CONFIG_X=y # trailing comment", "no comments after a value"),
    ("CONFIG_X", "expected CONFIG_NAME=value"),
    ("hello world", "not an assignment"),
    ("CONFIG_X=1.5", "is not y, m, n"),
])
def test_malformed_line_names_file_line_text_and_valid_form(tmp_path, bad, hint):
    p = write(tmp_path, "bad.config", f"CONFIG_OK=y\n# fine\n{bad}\n")
    with pytest.raises(ConfigError) as ei:
        K.parse_fragment(p)
    e = ei.value
    assert e.exit_code == 2
    assert f"{p}:3" in e.message and repr(bad) in e.message and hint in e.message
    assert 'CONFIG_NAME=y | m | n | "text"' in e.fix and "is not set" in e.fix


def test_same_symbol_twice_in_one_fragment(tmp_path):
    ok = write(tmp_path, "dup.config", "CONFIG_A=y\nCONFIG_A=y\n")
    assert K.parse_fragment(ok).values == {"A": "y"}
    bad = write(tmp_path, "clash.config", "CONFIG_A=y\n\n# CONFIG_A is not set\n")
    with pytest.raises(ConfigError, match=r"clash.config:3: CONFIG_A set twice.*line 1: y, line 3: n"):
        K.parse_fragment(bad)


def test_missing_fragment_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist") as ei:
        K.parse_fragment(tmp_path / "nope.config")
    assert ei.value.exit_code == 2 and "--kconfig" in ei.value.fix
    with pytest.raises(UsageError, match="is a directory"):
        K.parse_fragment(tmp_path)


# ------------------------------------------------------------------------------------------------ merge

def test_merge_later_wins_and_conflicts_are_reported(tmp_path):
    a = K.parse_fragment(write(tmp_path, "a.config", "CONFIG_X=y\nCONFIG_SAME=y\nCONFIG_N=5\n"))
    b = K.parse_fragment(write(tmp_path, "b.config", "# CONFIG_X is not set\nCONFIG_SAME=y\nCONFIG_B=m\n"))
    c = K.parse_fragment(write(tmp_path, "c.config", "CONFIG_N=7\nCONFIG_X=m\n"))
    m = K.merge([a, b, c])
    assert m.values == {"X": "m", "SAME": "y", "N": "7", "B": "m"}
    assert m.sources == {"X": c.path, "SAME": b.path, "N": c.path, "B": b.path}
    assert m.fragments == (a.path, b.path, c.path)
    assert [x.symbol for x in m.conflicts] == ["X", "N"]        # SAME: set twice to one value, no conflict
    x = m.conflicts[0]
    assert x.values == ((a.path, "y"), (b.path, "n"), (c.path, "m")) and x.winner == c.path
    assert x.describe() == "CONFIG_X: a.config sets y, b.config sets n, c.config sets m; c.config wins"
    assert m.conflicts[1].describe() == "CONFIG_N: a.config sets 5, c.config sets 7; c.config wins"


def test_conflict_between_same_named_files_shows_paths(tmp_path):
    (tmp_path / "u").mkdir()
    a = K.parse_fragment(write(tmp_path, "x.config", "CONFIG_X=y\n"))
    b = K.parse_fragment(write(tmp_path / "u", "x.config", "CONFIG_X=n\n"))
    d = K.merge([a, b]).conflicts[0].describe()
    assert d == f"CONFIG_X: {a.path} sets y, {b.path} sets n; {b.path} wins"


def test_text_and_key_are_deterministic(tmp_path):
    a = K.parse_fragment(write(tmp_path, "a.config", "CONFIG_Z=y\n# CONFIG_A is not set\n"))
    b = K.parse_fragment(write(tmp_path, "b.config", 'CONFIG_S="x y"\n'))
    m1, m2 = K.merge([a, b]), K.merge([b, a])
    assert m1.text() == '# CONFIG_A is not set\nCONFIG_S="x y"\nCONFIG_Z=y\n'
    assert m1.text() == m2.text() and m1.key() == m2.key() and len(m1.key()) == 64
    # the text round-trips through the parser
    assert K.parse_fragment(write(tmp_path, "t.config", m1.text())).values == m1.values
    c = K.parse_fragment(write(tmp_path, "c.config", "CONFIG_Z=m\n"))
    assert K.merge([a, b, c]).key() != m1.key()
    assert K.merge([]).text() == ""


def test_default_fragments_per_arch():
    for arch in ARCHES.values():
        paths = K.default_fragments(arch)
        assert [p.name for p in paths] == ["base.config", arch.kconfig_fragment]
        assert all(p.is_file() for p in paths)
        K.merge([K.parse_fragment(p) for p in paths])      # every shipped fragment parses
        # the run's suite adds its own needs right after them (the seed suite's by default)
        from kpipe.workflows.pipeline import Options, fragments_for
        got = fragments_for(arch, Options(profile="fast"))
        assert [str(p.relative_to(K.REPO_ROOT)) for p in got][2:] == ["suites/mremap-dontunmap/mremap-dontunmap.config",
                                                                      "suites/memfd-seals/memfd-seals.config"]


def test_default_fragments_missing_files(tmp_path):
    arch = get_arch("x86_64")
    with pytest.raises(InfraError, match="layers.toml is missing"):
        K.default_fragments(arch, repo_root=tmp_path)
    (tmp_path / "kconfigs").mkdir()
    write(tmp_path / "kconfigs", "layers.toml", 'layers = ["base.config", "{arch}"]\n')
    write(tmp_path / "kconfigs", "base.config", "CONFIG_A=y\n")
    with pytest.raises(InfraError, match="x86_64.config"):
        K.default_fragments(arch, repo_root=tmp_path)


def test_shipped_feature_fragment_requests_what_the_issue_names():
    want = {"SHMEM", "TMPFS", "MEMFD_CREATE", "USERFAULTFD", "HUGETLBFS", "SYSVIPC", "DEVMEM"}
    feature = K.parse_fragment(K.REPO_ROOT / "suites/mremap-dontunmap/mremap-dontunmap.config").values
    assert all(feature.get(s) == "y" for s in want)


# ------------------------------------------------------------------------------------------------ .config

def test_parse_dotconfig(tmp_path):
    p = write(tmp_path, ".config", "#\n# Automatically generated file; DO NOT EDIT.\n#\nCONFIG_A=y\n"
                                   "# CONFIG_B is not set\nCONFIG_S=\"\"\nCONFIG_H=0x10\n# comment CONFIG_C=y\n")
    d = K.parse_dotconfig(p)
    assert d == {"A": "y", "B": "n", "S": '""', "H": "0x10"}
    with pytest.raises(InfraError, match="does not exist"):
        K.parse_dotconfig(tmp_path / "none")


def test_validate_passes_without_loading_kconfig(tmp_path, monkeypatch):
    """All requests met (numbers compared as numbers): no kconfiglib child, no Missing."""
    monkeypatch.setattr(K, "_explain_in_child", lambda *a: pytest.fail("kconfiglib loaded for nothing"))
    tree = tmp_path / "tree"
    tree.mkdir()
    write(tree, "Kconfig", "config GONE\n\tbool \"gone\"\n")
    frag = K.parse_fragment(write(tmp_path, "f.config", "CONFIG_A=y\nCONFIG_H=0x0010\n# CONFIG_GONE is not set\n"))
    dot = write(tmp_path, ".config", "CONFIG_A=y\nCONFIG_H=0x10\n")
    assert K.validate(K.merge([frag]), dot, tree, get_arch("x86_64")) == []


def test_text_scan_skips_help_text():
    defs: dict = {}
    K._scan_file("config FOO\n\tbool \"foo\"\n\tdepends on BAR && !BAZ # why\n\thelp\n\t  depends on NOT_THIS\n"
                 "\n\t  more help\nconfig QUX\n\tdepends on FOO\n", "x/Kconfig", defs)
    assert defs["FOO"][0].depends == ("BAR && !BAZ",) and defs["FOO"][0].line == 1
    assert defs["QUX"][0].depends == ("FOO",)


def test_fallback_text_scan_when_kconfiglib_cannot_load(tmp_path):
    """A tree kconfiglib cannot parse: the reason still names the dependency, and says it came from a text scan."""
    tree = tmp_path / "tree"
    (tree / "arch/arm64").mkdir(parents=True)
    (tree / "arch/x86").mkdir(parents=True)
    write(tree, "Kconfig", 'config FOO\n\tbool "foo"\n\tdepends on BAR && BAZ\n\nconfig BAR\n\tbool\n'
                           "config BAZ\n\tbool\nthis is no kconfig syntax\n")
    write(tree / "arch/x86", "Kconfig", 'config X86_ONLY\n\tbool "x"\n')
    frag = K.parse_fragment(write(tmp_path, "f.config", "CONFIG_FOO=y\nCONFIG_X86_ONLY=y\nCONFIG_NOPE=y\n"
                                                        "# CONFIG_ALSO_NOPE is not set\n"))
    dot = write(tmp_path, ".config", "# CONFIG_FOO is not set\nCONFIG_BAZ=y\n")
    miss = K.validate(K.merge([frag]), dot, tree, get_arch("arm64"))
    by = {m.symbol: m for m in miss}
    assert list(by) == ["FOO", "X86_ONLY", "NOPE", "ALSO_NOPE"]
    assert by["FOO"].reason.startswith("depends on BAR [=n] && BAZ [=y] (Kconfig:1)")
    assert "text scan" in by["FOO"].reason and "kconfiglib failed" in by["FOO"].reason
    assert "defined only in arch/x86/Kconfig" in by["X86_ONLY"].reason
    assert "not a symbol of this tree" in by["NOPE"].reason
    assert (by["ALSO_NOPE"].requested, by["ALSO_NOPE"].actual) == ("n", "n")
    assert "not a symbol of this tree" in by["ALSO_NOPE"].reason


def test_format_missing():
    lines = K.format_missing([K.Missing("FOO", "y", "n", "depends on BAR [=n] && BAZ [=y]")])
    assert lines == ["CONFIG_FOO: requested y, got n — depends on BAR [=n] && BAZ [=y]"]


# ------------------------------------------------------------------------------------------------ real 5.10 tree

@pytest.fixture
def needs_tree(tree_src):
    """The real Debian 5.10 tree (kpipe's scratch worktree of debian:5.10, read only)."""
    global SRC
    SRC = tree_src
    assert (SRC / "Kconfig").is_file()


class Olddefconfig:
    """One O= folder per arch with `make tinyconfig` done once; each call appends a fragment text to the
    tinyconfig result and runs `make olddefconfig` (kconfig only, writes only into O=)."""

    def __init__(self, root: Path):
        self.root = root
        self.tiny: dict[str, str] = {}
        self.n = 0

    def _make(self, arch, out: Path, target: str):
        proc.run(["make", "-s", "-C", SRC, f"O={out}", *arch.make_vars, target], timeout=300, what=f"make {target}")

    def __call__(self, arch, fragment_text: str) -> Path:
        out = self.root / arch.name
        if arch.name not in self.tiny:
            self._make(arch, out, "tinyconfig")
            self.tiny[arch.name] = (out / ".config").read_text()
        (out / ".config").write_text(self.tiny[arch.name] + fragment_text)
        self._make(arch, out, "olddefconfig")
        self.n += 1
        keep = self.root / f"{arch.name}-{self.n}.config"
        shutil.copy(out / ".config", keep)
        return keep


@pytest.fixture(scope="session")
def olddefconfig():
    with tempfile.TemporaryDirectory(prefix="kpipe-test-kconfig-") as d:
        yield Olddefconfig(Path(d))


def shipped(arch) -> list[K.Fragment]:
    """The layers, then every shipped suite's kconfig: what the pipeline merges before a user's --kconfig."""
    suites = [p for name in shipped_names() for p in get_suite(name).kconfig]
    return [K.parse_fragment(p) for p in [*K.default_fragments(arch), *dict.fromkeys(suites)]]


@pytest.mark.usefixtures("needs_tree")
@pytest.mark.parametrize("arch_name", ["x86_64", "arm64"])
def test_shipped_fragments_fully_satisfied_after_olddefconfig(olddefconfig, arch_name):
    arch = get_arch(arch_name)
    merged = K.merge(shipped(arch))
    assert merged.conflicts == ()
    dot = olddefconfig(arch, merged.text())
    assert K.validate(merged, dot, SRC, arch) == []
    K.require(merged, dot, SRC, arch)


@pytest.mark.usefixtures("needs_tree")
@pytest.mark.parametrize("arch_name", ["x86_64", "arm64"])
def test_shipped_fragments_satisfied_in_built_kernel(kernels, arch_name):
    if arch_name not in kernels:
        pytest.skip(f"no {arch_name} kernel")
    arch = get_arch(arch_name)
    merged = K.merge(shipped(arch))
    missing = K.validate(merged, kernels[arch_name].config, SRC, arch)
    assert missing == [], "\n".join(K.format_missing(missing))


UNSATISFIABLE = "\n".join([
    "CONFIG_MEM_SOFT_DIRTY=y",          # needs CHECKPOINT_RESTORE (tinyconfig: n) and HAVE_ARCH_SOFT_DIRTY (x86 only)
    "CONFIG_X86_PLATFORM_DEVICES=y",    # depends on X86
    "CONFIG_X86_X2APIC=y",              # lives in arch/x86/Kconfig
    "CONFIG_EXT4_FS=y",                 # depends on BLOCK, left off by tinyconfig
    "# CONFIG_VIRTIO is not set",       # selected by VIRTIO_PCI from the base fragment
    "CONFIG_LOG_BUF_SHIFT=99",          # outside range 12..25
    "CONFIG_NO_SUCH_OPTION=y",          # typo
]) + "\n"


@pytest.mark.usefixtures("needs_tree")
def test_unsatisfiable_requests_on_arm64_name_the_blocking_dependency(olddefconfig, tmp_path):
    arch = get_arch("arm64")
    extra = K.parse_fragment(write(tmp_path, "user.config", UNSATISFIABLE))
    merged = K.merge(shipped(arch) + [extra])
    dot = olddefconfig(arch, merged.text())
    t0 = time.monotonic()
    miss = {m.symbol: m for m in K.validate(merged, dot, SRC, arch)}
    print(f"validate with kconfiglib, arm64: {time.monotonic() - t0:.1f} s")
    assert list(miss) == ["MEM_SOFT_DIRTY", "X86_PLATFORM_DEVICES", "X86_X2APIC", "EXT4_FS", "VIRTIO",
                          "LOG_BUF_SHIFT", "NO_SUCH_OPTION"]
    r = {s: m.reason for s, m in miss.items()}
    assert (miss["MEM_SOFT_DIRTY"].requested, miss["MEM_SOFT_DIRTY"].actual) == ("y", "n")
    assert "unmet: CHECKPOINT_RESTORE [=n] && HAVE_ARCH_SOFT_DIRTY [=n]" in r["MEM_SOFT_DIRTY"]
    assert "HAVE_ARCH_SOFT_DIRTY has no prompt and nothing selects it on arm64" in r["MEM_SOFT_DIRTY"]
    assert r["X86_PLATFORM_DEVICES"] == "depends on X86 [=n] (no such symbol on arm64)"
    assert "defined only in arch/x86/Kconfig" in r["X86_X2APIC"]
    assert r["EXT4_FS"] == "depends on BLOCK [=n]"
    assert r["VIRTIO"].startswith("selected by VIRTIO_PCI [=y]") and miss["VIRTIO"].actual == "y"
    assert "outside its range 12..25" in r["LOG_BUF_SHIFT"] and miss["LOG_BUF_SHIFT"].actual == "17"
    assert "not a symbol of this tree" in r["NO_SUCH_OPTION"]
    with pytest.raises(ConfigError) as ei:
        K.require(merged, dot, SRC, arch)
    assert ei.value.exit_code == 2 and "7 requested kconfig option(s)" in ei.value.message
    assert ei.value.detail[0].startswith("CONFIG_MEM_SOFT_DIRTY: requested y, got n — depends on CHECKPOINT_RESTORE")


@pytest.mark.usefixtures("needs_tree")
def test_same_request_on_x86_64_differs_where_the_arch_differs(olddefconfig, tmp_path):
    arch = get_arch("x86_64")
    extra = K.parse_fragment(write(tmp_path, "user.config", UNSATISFIABLE))
    merged = K.merge(shipped(arch) + [extra])
    dot = olddefconfig(arch, merged.text())
    miss = {m.symbol: m for m in K.validate(merged, dot, SRC, arch)}
    # X86_PLATFORM_DEVICES is met on x86_64; soft-dirty is blocked only by CHECKPOINT_RESTORE here
    assert "X86_PLATFORM_DEVICES" not in miss
    assert "X86_X2APIC" in miss and "IRQ_REMAP [=n] || HYPERVISOR_GUEST [=n]" in miss["X86_X2APIC"].reason
    r = miss["MEM_SOFT_DIRTY"].reason
    assert "HAVE_ARCH_SOFT_DIRTY [=y]" in r and r.endswith("unmet: CHECKPOINT_RESTORE [=n]")


@pytest.mark.usefixtures("needs_tree")
def test_user_fragment_overriding_the_feature_fragment(olddefconfig, tmp_path):
    """--kconfig turning HUGETLBFS off: the conflict is reported, and HUGETLB_PAGE (def_bool HUGETLBFS), still
    requested by the feature fragment, is explained by its default."""
    arch = get_arch("x86_64")
    user = K.parse_fragment(write(tmp_path, "nohuge.config", "# CONFIG_HUGETLBFS is not set\n"))
    merged = K.merge(shipped(arch) + [user])
    assert [c.describe() for c in merged.conflicts] == [
        "CONFIG_HUGETLBFS: mremap-dontunmap.config sets y, nohuge.config sets n; nohuge.config wins"]
    dot = olddefconfig(arch, merged.text())
    miss = K.validate(merged, dot, SRC, arch)
    assert K.format_missing(miss) == [
        "CONFIG_HUGETLB_PAGE: requested y, got n — symbol has no prompt; its value comes only from its default: "
        "HUGETLBFS [=n]"]


@pytest.mark.usefixtures("needs_tree")
def test_kconfiglib_unusable_falls_back_to_text_scan(kernels, tmp_path):
    """No compiler for the arch: Kconfig.include stops kconfiglib; the text scan still names the dependency."""
    if "arm64" not in kernels:
        pytest.skip("no arm64 kernel")
    arch = dataclasses.replace(get_arch("arm64"), cross_compile="kpipe-no-such-")
    extra = K.parse_fragment(write(tmp_path, "user.config", "CONFIG_MEM_SOFT_DIRTY=y\n"))
    merged = K.merge([extra])
    [m] = K.validate(merged, kernels["arm64"].config, SRC, arch)
    assert m.reason.startswith("depends on CHECKPOINT_RESTORE [=n] && HAVE_ARCH_SOFT_DIRTY [=n] && PROC_FS [=y]")
    assert "(mm/Kconfig:" in m.reason and "text scan" in m.reason
    assert "kconfiglib failed: scripts/Kconfig.include:39: compiler 'kpipe-no-such-gcc' not found" in m.reason


@pytest.mark.usefixtures("needs_tree")
@pytest.mark.parametrize("arch_name", ["x86_64", "arm64"])
def test_kconfiglib_agrees_with_make_olddefconfig(kernels, arch_name, tmp_path, capsys):
    """The environment kconfig_env() builds makes kconfiglib compute the very .config that make wrote (else its
    explanations could describe another configuration). Also measures the load time."""
    if arch_name not in kernels:
        pytest.skip(f"no {arch_name} kernel")
    arch = get_arch(arch_name)
    script = ("import kconfiglib, sys, time; t = time.monotonic(); k = kconfiglib.Kconfig('Kconfig', warn=False); "
              "print(f'{time.monotonic() - t:.2f}'); k.load_config(sys.argv[1]); k.write_config(sys.argv[2])")
    out = tmp_path / "kconfiglib.config"
    cp = proc.run([sys.executable, "-c", script, kernels[arch_name].config, out], cwd=tmp_path,
                  env=K.kconfig_env(arch, SRC), timeout=120)
    with capsys.disabled():
        print(f"\nkconfiglib load of 5.10 Kconfig, {arch_name}: {cp.stdout.strip()} s")
    assert K.parse_dotconfig(out) == K.parse_dotconfig(kernels[arch_name].config)
