"""Profiles (kconfigs/profiles.toml) and the optional kconfig layers: pure logic on the shipped data and small
synthetic Kconfig trees. What the debug kernel really gets is proven by the e2e tests that build and boot it."""
from __future__ import annotations

from pathlib import Path

import pytest

from kpipe.build import kconfig as K
from kpipe.build import profiles
from kpipe.checks import selftests
from kpipe.arches import get_arch
from kpipe.errors import UsageError
from kpipe.workflows.pipeline import Options, fragments_for


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(text)
    return p


def test_shipped_profiles_debug_is_the_default():
    ps = profiles.load_profiles()
    assert set(ps) == {"debug", "fast"}
    assert profiles.DEFAULT_PROFILE == "debug" == Options().profile
    debug = profiles.get_profile(None)
    essential = K.merge([K.parse_fragment(p) for p in debug.layers_for(get_arch("x86_64"))]).values
    # what a verdict on an mm patch needs of the debug kernel
    for sym in ("DEBUG_KERNEL", "SMP", "SLUB", "KASAN", "KASAN_GENERIC", "DEBUG_VM", "PROVE_LOCKING",
                "DEBUG_ATOMIC_SLEEP", "DEBUG_LIST", "DETECT_HUNG_TASK", "SOFTLOCKUP_DETECTOR", "MAGIC_SYSRQ",
                "PANIC_ON_OOPS"):
        assert essential.get(sym) == "y", sym
    assert int(essential["NR_CPUS"]) >= 2 and debug.smp == 2
    assert essential["ACPI"] == "y"           # x86_64 enumerates the vCPUs through ACPI (q35's MP table lists one)
    fast = profiles.get_profile("fast")
    assert fast.layers == () and fast.smp == 1


def test_unknown_profile_names_the_choices():
    with pytest.raises(UsageError) as e:
        profiles.get_profile("slow")
    assert "debug" in e.value.fix and "fast" in e.value.fix


def test_guest_arch_takes_the_profile_size_and_command_line():
    arch = get_arch("arm64")
    g = profiles.Profile("p", "", (), (), 2, 1024, ("foo=1",)).guest_arch(arch)
    assert (g.smp, g.memory_mb, g.name) == (2, 1024, "arm64")
    assert g.kernel_cmdline_extra == arch.kernel_cmdline_extra + ("foo=1",)


def test_fragment_order_profile_after_layers_user_last():
    arch = get_arch("x86_64")
    paths = fragments_for(arch, Options(kconfigs=("/tmp/mine.config",)), (Path("/t/vm/config"),))
    names = [p.name for p in paths]
    assert names[:4] == ["base.config", "x86_64.config", "mremap-dontunmap.config", "memfd-seals.config"]
    assert names[4:] == ["debug.config", "debug-x86_64.config", "debug-extra.config", "config", "mine.config"]
    assert [p.name for p in fragments_for(arch, Options(profile="fast"))][4:] == []


def test_an_option_an_essential_fragment_also_asks_for_stays_essential(tmp_path):
    ess = K.parse_fragment(write(tmp_path, "e.config", "CONFIG_A=y\n"))
    opt = K.parse_fragment(write(tmp_path, "o.config", "CONFIG_A=y\nCONFIG_B=y\n"))
    assert K.optional_symbols([ess, opt], [opt.path]) == {"B"}


def test_optional_misses_not_in_tree_or_blocked_never_raise(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    write(tree, "Kconfig", 'config HAVE\n\tbool "have"\n\tdepends on DEP\nconfig DEP\n\tbool\nconfig SET\n\tbool "s"\n')
    ess = K.parse_fragment(write(tmp_path, "e.config", "CONFIG_SET=y\n"))
    opt = K.parse_fragment(write(tmp_path, "o.config", "CONFIG_HAVE=y\nCONFIG_NEWER=y\n# CONFIG_GONE is not set\n"
                                                      "CONFIG_SET=y\n"))
    merged = K.merge([ess, opt])
    optional = K.optional_symbols([ess, opt], [opt.path])
    dot = write(tmp_path, ".config", "CONFIG_SET=y\n# CONFIG_HAVE is not set\n")
    assert K.validate(merged, dot, tree, get_arch("x86_64"), optional) == []       # no error for them
    miss = {m.symbol: m for m in K.optional_misses(merged, optional, dot, tree, get_arch("x86_64"))}
    assert set(miss) == {"HAVE", "NEWER"}                # asking an absent symbol to be off is no news
    assert miss["NEWER"].reason == K.NOT_IN_TREE
    assert miss["HAVE"].reason.startswith("depends on DEP [=n]")
    # the same requests made essential: validation fails
    assert {m.symbol for m in K.validate(merged, dot, tree, get_arch("x86_64"))} == {"HAVE", "NEWER", "GONE"}


def test_a_selftest_whose_options_are_missing_is_skipped_with_the_reason():
    specs = [selftests.SelftestSpec("uffd", ("x.c",), needs=("USERFAULTFD",)),
             selftests.SelftestSpec("plain", ("y.c",)),
             selftests.SelftestSpec("gone", (), needs=("USERFAULTFD",), skip="not in this tree")]
    out = selftests.skip_unconfigured(specs, {"USERFAULTFD": "n"}, {"USERFAULTFD": "depends on MMU [=n]"})
    assert out[0].skip == "needs CONFIG_USERFAULTFD is not set in the built kernel (depends on MMU [=n])"
    assert out[1].skip == "" and out[2].skip == "not in this tree"
    assert selftests.skip_unconfigured(specs, {"USERFAULTFD": "y"}, {})[0].skip == ""


def test_collection_configs_are_the_chosen_collections_own_files(tmp_path):
    st = tmp_path / selftests.SELFTESTS
    for c in ("vm", "memfd"):
        (st / c).mkdir(parents=True)
    write(st / "vm", "config", "CONFIG_USERFAULTFD=y\n")
    specs = [selftests.SelftestSpec("a", ("x",), collection="vm"), selftests.SelftestSpec("b", ("y",), collection="vm"),
             selftests.SelftestSpec("c", ("z",), collection="memfd"),
             selftests.SelftestSpec("d", (), collection="mm", skip="absent")]
    assert selftests.collection_configs(tmp_path, specs) == (st / "vm" / "config",)    # memfd ships none here
