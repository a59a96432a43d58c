"""kconfig validation with the blocking dependency against the real 5.10 tree and real olddefconfig results
(both arches). The model itself (parsing, merge, conflicts): tests/unit/test_kconfig.py."""
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

from test_kconfig import write  # noqa: F401  (shared with the fast tier)

SRC = Path("/nonexistent")    # the real Debian 5.10 tree: set by the needs_tree fixture


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


@pytest.mark.parametrize("spec", ["debian:5.10", "debian:6.12"])
def test_every_essential_off_request_is_a_symbol_of_each_known_tree(spec, tree510):
    """An essential `# CONFIG_X is not set` is checked to be a symbol of the tree (typos stop the run), so one the
    tree removed stops every run on it: the debug profile's UBSAN_SANITIZE_ALL (gone in 6.9) did on 6.12 until it
    moved to the optional layer. Each arch, every known tree: the essential off-requests all exist (a text scan)."""
    from conftest import shared_cache
    from kpipe.workflows.pipeline import Options, merged_config, resolve_tree
    with shared_cache():
        src = (tree510 if spec == "debian:5.10" else resolve_tree(Options(tree=spec))).worktree
    defs = K.kconfig_definitions(src)
    for name in ("x86_64", "arm64"):
        merged, optional = merged_config(get_arch(name), Options(tree=spec), src)
        gone = [s for s, v in merged.values.items() if v == "n" and s not in optional and s not in defs]
        assert gone == [], (spec, name, gone)
