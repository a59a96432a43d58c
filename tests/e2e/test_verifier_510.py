"""The verifier, e2e: the real binary built with the real compilers for both arches, a host run through a local
session (the host kernel is 6.18: upstream rule), the policy of the real 5.10 tree, and the 5.10 kernels booted
in QEMU for both arches. The pure parts: tests/unit/test_verifier.py."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from local_session import LocalSession
from kpipe.arches import get_arch
from kpipe.errors import BuildError, InfraError, UsageError
from kpipe.report.results import Status
from kpipe.checks.verifier import (build_verifier, choose_policy, expect_file_text, load_expectations, parse_tap,
                                   run_verifier, select)

from test_verifier import SEED, SHMEM_MOVES, exp  # noqa: F401  (shared with the fast tier)

ELF_MACHINE = {"x86_64": 62, "arm64": 183}


def _elf(path: Path) -> tuple[int, bool]:
    """(e_machine, has a PT_INTERP) of a little-endian ELF64 file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2
    machine = int.from_bytes(data[18:20], "little")
    phoff = int.from_bytes(data[32:40], "little")
    phentsize, phnum = int.from_bytes(data[54:56], "little"), int.from_bytes(data[56:58], "little")
    interp = any(int.from_bytes(data[phoff + i * phentsize:phoff + i * phentsize + 4], "little") == 3
                 for i in range(phnum))
    return machine, interp


def test_policy_of_the_real_510_tree(tree_src):
    """The Debian 5.10 scratch checkout (read only; the fixture fetches it, so this is e2e): whichever patch
    state it is in, the rule found is one of the two 5.10 ones and names its line."""
    policy, why = choose_policy(tree_src, None, SEED)
    assert policy in ("anon-only", "anon+shmem") and re.match(r"mm/mremap\.c:\d+ carries ", why), (policy, why)


# ------------------------------------------------------------------------------------------------ build


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KPIPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_build_for_each_arch_static_and_cached(kernels, private_cache, tmp_path, exp):
    x86_headers = kernels["x86_64"].headers
    for arch in ("x86_64", "arm64"):
        headers = kernels[arch].headers if arch in kernels and (kernels[arch].headers / "include").is_dir() \
            else None
        if headers is None:
            # the arm64 kernel is not built yet: its arch's uapi headers from the cross libc stand in
            headers = tmp_path / "arm64-hdr"
            (headers / "include").mkdir(parents=True, exist_ok=True)
            for sub in ("linux", "asm", "asm-generic"):
                src = Path("/usr/aarch64-linux-gnu/include") / sub
                if not (headers / "include" / sub).exists():
                    shutil.copytree(src, headers / "include" / sub)
        t = time.monotonic()
        b = build_verifier(get_arch(arch), headers, tmp_path / arch, log=tmp_path / f"{arch}.log", suite=SEED)
        first = time.monotonic() - t
        assert b == tmp_path / arch / "mremap_dontunmap" and os.access(b, os.X_OK)
        assert _elf(b) == (ELF_MACHINE[arch], False), "must be a static binary for the arch"
        log = (tmp_path / f"{arch}.log").read_text()
        assert f"-isystem {headers}/include" in log and "-static" in log
        t = time.monotonic()
        again = build_verifier(get_arch(arch), headers, tmp_path / f"{arch}-again", log=tmp_path / f"{arch}.log",
                               suite=SEED)
        second = time.monotonic() - t
        assert again.read_bytes() == b.read_bytes() and "cached" in (tmp_path / f"{arch}.log").read_text()
        print(f"\n[measure] verifier build {arch}: {first:.2f} s cold, {second:.2f} s cached")
    # other headers -> another cache entry
    assert len([p for p in (private_cache / "verifier").iterdir() if p.is_dir()]) == 2
    # the native binary lists exactly the cases of the expectations file
    names = subprocess.run([tmp_path / "x86_64" / "mremap_dontunmap", "-l"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert names == list(exp.cases)
    assert x86_headers


def test_build_errors(kernels, private_cache, tmp_path):
    x86 = get_arch("x86_64")
    with pytest.raises(InfraError) as e:
        build_verifier(replace(x86, cross_compile="no-such-cross-"), kernels["x86_64"].headers, tmp_path, suite=SEED)
    assert "no-such-cross-gcc" in e.value.message and "invoke setup" in e.value.fix and e.value.exit_code == 2
    with pytest.raises(InfraError, match="uapi headers not found"):
        build_verifier(x86, tmp_path / "nothing", tmp_path, suite=SEED)
    broken = tmp_path / "broken"
    (broken / "include" / "linux").mkdir(parents=True)
    (broken / "include" / "linux" / "userfaultfd.h").write_text("#error this header is broken on purpose\n")
    with pytest.raises(BuildError) as e:
        build_verifier(x86, broken, tmp_path / "out", log=tmp_path / "b.log", suite=SEED)
    assert "does not compile for x86_64" in e.value.message
    assert any("broken on purpose" in d for d in e.value.detail)
    assert "broken on purpose" in (tmp_path / "b.log").read_text()
    assert not (tmp_path / "out" / "mremap_dontunmap").exists()
    leftovers = [p.name for p in (private_cache / "verifier").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == [], "no half-written cache entry"


# ------------------------------------------------------------------------------ host run (6.18: upstream)


@pytest.fixture(scope="module")
def host_binary(tmp_path_factory, kernels):
    """Built against the 5.10 headers (as deployed); the ABI it uses runs unchanged on the newer host."""
    d = tmp_path_factory.mktemp("hostbin")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KPIPE_CACHE", str(d / "cache"))
        return build_verifier(get_arch("x86_64"), kernels["x86_64"].headers, d / "out", suite=SEED)


def test_host_run_upstream_passes(host_binary, tmp_path, exp):
    if os.uname().machine != "x86_64" or tuple(map(int, os.uname().release.split(".")[:2])) < (5, 14):
        pytest.skip("needs an x86_64 host with a 5.14+ kernel")
    if os.geteuid() != 0:
        pytest.skip("the verifier runs as root")
    session = LocalSession()
    t = time.monotonic()
    res = run_verifier(session, host_binary, "upstream", exp, tmp_path / "out", timeout=120,
                       remote_dir=str(tmp_path / "guest"))
    print(f"\n[measure] verifier run on the host ({os.uname().release}): {time.monotonic() - t:.2f} s")
    for r in res:
        print(f"[observed] {r.name:34} {r.status.value:5} observed {r.observed:8} expected {r.expected}"
              + (f"  ({r.detail})" if r.status == Status.SKIP else ""))
    # this host's 6.18 leaks locked_vm on DONTUNMAP of mlocked memory (see test_verifier_state.py): the mlock
    # cases catch it, exactly those
    from test_verifier_state import HOST_MLOCK_LEAK
    leaky = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2]) >= (6, 16)
    bad = [(r.name, r.observed, r.expected, r.detail) for r in res if r.status.bad
           and not (leaky and r.name in HOST_MLOCK_LEAK and r.observed == "VMLCK")]
    assert not bad
    assert [r.name for r in res] == list(exp.cases)
    # what this host cannot provide is skipped with its reason, never more
    skipped = {r.name: r.detail for r in res if r.status == Status.SKIP}
    assert set(skipped) <= {"move-hugetlb", "move-devmem"}, skipped
    tap = (tmp_path / "out" / "verifier.tap").read_text()
    assert tap.startswith("TAP version 13\n1..") and all(r.output == "verifier.tap" for r in res)
    assert (tmp_path / "out" / "verifier-expect.txt").read_text() == expect_file_text(exp, "upstream")
    assert session.puts == [(str(tmp_path / "guest" / "mremap_dontunmap"), 0o755),
                            (str(tmp_path / "guest" / "expect.txt"), 0o644)]


def test_host_run_under_a_stricter_policy_fails_the_shmem_cases(host_binary, tmp_path, exp):
    """The host kernel allows more than the 5.10 rule: judged as anon-only, it must fail."""
    if tuple(map(int, os.uname().release.split(".")[:2])) < (5, 13) or os.geteuid() != 0:
        pytest.skip("needs a 5.13+ kernel and root")
    res = {r.name: r for r in run_verifier(LocalSession(), host_binary, "anon-only", exp, tmp_path,
                                            remote_dir=str(tmp_path / "guest"))}
    for name in SHMEM_MOVES + ["move-sysv-shm", "data-memfd-shared-old-same", "gc-uffd-minor-memfd"]:
        assert res[name].status == Status.FAIL, res[name]
    assert res["move-anon-private"].status == Status.PASS
    assert res["gc-uffd-missing-anon"].status == Status.PASS


# ---------------------------------------------------------------------------------------------- e2e


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["x86_64"])
def test_e2e_510_unpatched(kernels, arch, tmp_path, exp):
    """Unpatched 5.10 in QEMU: every case passes under anon-only; judged as anon+shmem the shmem cases fail.
    One arch at this level (both policies in one boot); arm64's on the same kernel through the CLI: under
    anon+shmem tests/e2e/test_workflows.py's test_unpatched_kernel_fails_the_shmem_cases_under_the_patched_policy,
    under anon-only the baseline side of tests/e2e/test_lab.py's premerge --lab."""
    from kpipe.guest.image import build_image
    from kpipe.guest.qemu import boot

    if arch not in kernels:
        pytest.skip(f"no {arch} kernel")
    k = kernels[arch]
    a = get_arch(arch)
    t = time.monotonic()
    binary = build_verifier(a, k.headers, tmp_path / "bin", log=tmp_path / "build.log", suite=SEED)
    print(f"\n[measure] verifier build {arch}: {time.monotonic() - t:.2f} s")
    initrd = build_image(a, log=tmp_path / "image.log")
    with boot(a, k.image, initrd, tmp_path / "run") as guest:
        t = time.monotonic()
        res = run_verifier(guest.session, binary, "anon-only", exp, tmp_path / "anon-only")
        print(f"[measure] verifier run {arch} 5.10 anon-only: {time.monotonic() - t:.2f} s")
        # judged as the seed's kernel: the moves are what the policies disagree on (the CLI's arm64 test runs all)
        strict = {r.name: r for r in run_verifier(guest.session, binary, "anon+shmem", select(exp, ("move-*",)),
                                                  tmp_path / "shmem", only=True)}
    for r in res:
        print(f"[observed] {arch} {r.name:34} {r.status.value:5} observed {r.observed:8} expected {r.expected}"
              + (f"  ({r.detail})" if r.status == Status.SKIP else ""))
    assert not [(r.name, r.observed, r.expected, r.detail) for r in res if r.status.bad]
    assert [r.name for r in res] == list(exp.cases)
    by = {r.name: r for r in res}
    for name in SHMEM_MOVES + ["move-hugetlb", "move-devmem", "move-sysv-shm", "move-ramfs-shared"]:
        assert by[name].status == Status.PASS and by[name].observed == "EINVAL", by[name]
    assert by["gc-uffd-missing-anon"].status == Status.PASS
    for name in SHMEM_MOVES:
        assert strict[name].status == Status.FAIL and strict[name].observed == "EINVAL", strict[name]
    assert strict["move-anon-private"].status == Status.PASS
