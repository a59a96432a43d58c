"""End to end on real 5.10 kernels: each kernel-state check fails a kernel broken in exactly its behaviour (a
mutant of the test kernel, tests/patches/test-kernel.patch on top of the seed: one build per arch for all of
them, each mutant switched on at run time in one boot per arch; or, where what breaks is the source kpipe
reads, a patch under tests/patches/verifier/, through the real CLI) and names the failing case; the correct
kernels pass every check (5.10 + the seed: tests/e2e/test_workflows.py's zero-findings `verify --arch all`;
upstream's rule backported; a reworded seed is judged by its code). A mutant picked at boot with
kpipe_mutant=<name> through the CLI (`verify --kernel-arg`, exit 1 naming the finding): the debug reports and
boot faults of tests/e2e/test_debug_kernel.py and test_boot_faults.py.
That every mutant names what it breaks and whom it must fail: tests/unit/test_verifier_mutant_list.py."""
from __future__ import annotations
import time
from pathlib import Path

import pytest
from kpipe_cli import REPO_ROOT, SEED, invoke, results_by_name

from kpipe.arches import get_arch
from kpipe.build.profiles import get_profile
from kpipe.checks.verifier import build_verifier, run_verifier, select
from kpipe.guest.image import build_image
from kpipe.guest.qemu import boot
from kpipe.report.results import Status

from test_verifier import SEED as SUITE, exp  # noqa: F401  (shared with the fast tier)
from test_verifier_mutant_list import MUTANTS, CAUGHT, SOURCE_CHANGES  # shared with the fast tier

PARAM = "/sys/module/mremap/parameters/kpipe_mutant"     # the test kernel's run-time switch


def _verify(tmp_path: Path, arch: str, *args: str):
    t = time.monotonic()
    ran = invoke("verify", "--arch", arch, "--selftests", "none", *args, out=tmp_path / "run")
    print(f"\n[measure] verify {arch} {' '.join(a for a in args if not a.startswith('/'))}: "
          f"{time.monotonic() - t:.1f} s (exit {ran.code})")
    return ran


# a mutant whose damage outlives its run, so it runs last in its boot: its moves' charge is never made, so
# their unmap leaves vm_committed_as below zero; Committed_AS then reads 0 and every later COMMIT check would
# see a wrong delta (measured: the next mutants' controls failed). Any other leftover fails the next control.
RUNS_LAST = ("dontunmap-no-charge",)


def _switch(session, name: str) -> str:
    """Switch the test kernel's mutant at run time; what the kernel then says is on (or why it refused)."""
    r = session.run(["sh", "-c", f"echo {name} > {PARAM} && cat {PARAM}"], timeout=30)
    return r.stdout.strip() if r.exit_status == 0 else f"refused (exit {r.exit_status}): {r.stderr.strip()}"


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_e2e_mutants_are_caught_each_beside_its_control_in_one_boot(arch, test_kernels, tmp_path, exp):
    """One boot of the test kernel per arch, the debug profile's guest as verify boots it. For each mutant of
    kernel state proven on this arch, its cases run twice: first with no mutant on, where they must pass (the
    premise: the check passes the correct kernel it runs on, and nothing an earlier mutant left behind is what
    it sees), then with the mutant switched on, where they must fail with their codes. The kernel's own word
    that each mutant was on: the parameter read back, and its log line. The policy is the seed's (anon+shmem):
    the test kernel patch leaves the seed's rule as it is, which the CLI reads from mm/mremap.c
    (test_debug_kernel.py)."""
    mine = sorted((m for m, (a, _) in CAUGHT.items() if a == arch and m not in SOURCE_CHANGES),
                  key=lambda m: (m in RUNS_LAST, m))
    a = get_profile("debug").guest_arch(get_arch(arch))
    k = test_kernels[arch]
    binary = build_verifier(a, k.headers, tmp_path / "bin", log=tmp_path / "build.log", suite=SUITE)
    initrd = build_image(a, log=tmp_path / "image.log")
    problems: list[str] = []
    t0 = time.monotonic()
    with boot(a, k.image, initrd, tmp_path / "run") as guest:
        print(f"\n[measure] {arch} boot {time.monotonic() - t0:.1f} s")
        s = guest.session
        assert _switch(s, "uaf").startswith("refused"), "the debug reports must stay boot-only"
        for mutant in mine:
            t = time.monotonic()
            cases = CAUGHT[mutant][1]
            sel = select(exp, tuple(cases))
            off = {r.name: r for r in run_verifier(s, binary, "anon+shmem", sel, tmp_path / mutant / "off", only=True)}
            said_on = _switch(s, mutant)
            on = {r.name: r for r in run_verifier(s, binary, "anon+shmem", sel, tmp_path / mutant / "on", only=True)}
            said_off = _switch(s, "none")
            if (said_on, said_off) != (mutant, "none"):
                problems.append(f"{mutant}: the kernel said {said_on!r} when switched on, {said_off!r} when off")
            for case, code in cases.items():
                r_on, r_off = on.get(case), off.get(case)
                if r_on is None or (r_on.status, r_on.observed) != (Status.FAIL, code):
                    problems.append(f"{mutant}: {case} with the mutant on: "
                                    f"{r_on and (r_on.status.value, r_on.observed, r_on.detail)} (want fail {code})")
                if r_off is None or r_off.status != Status.PASS:
                    problems.append(f"{mutant}: {case} before the mutant was on (the control): "
                                    f"{r_off and (r_off.status.value, r_off.observed, r_off.detail)} (want pass)")
            if set(on) != set(cases) or set(off) != set(cases):
                problems.append(f"{mutant}: ran {sorted(on)} / {sorted(off)}, want {sorted(cases)}")
            print(f"[observed] {arch} {mutant} ({time.monotonic() - t:.1f} s): off "
                  f"{ {c: r.status.value for c, r in off.items()} }, on "
                  f"{ {c: (r.status.value, r.observed) for c, r in on.items()} }")
        log = s.dmesg()
    print(f"[measure] {arch} {len(mine)} mutants in one boot: {time.monotonic() - t0:.1f} s")
    for mutant in mine:
        assert f"kpipe test kernel: mutant {mutant}\n" in log, f"the kernel never said mutant {mutant} was on"
    assert not problems, "\n".join(problems)


@pytest.mark.e2e
@pytest.mark.parametrize("mutant", sorted(SOURCE_CHANGES))
def test_e2e_source_mutant_is_caught_through_the_cli(mutant, tmp_path):
    """A wrong rule kpipe must read from the source (no boot parameter can break that): verify exits 1 and
    names each failing case. Only the cases that must catch it run (--case): the correct kernels run every case
    elsewhere."""
    arch, cases = CAUGHT[mutant]
    only = [a for c in cases for a in ("--case", c)]
    ran = _verify(tmp_path, arch, "--patch", str(SEED), "--patch", str(MUTANTS / f"{mutant}.patch"), *only)
    assert ran.code == 1, ran
    res = results_by_name(ran.result, arch, "verifier")
    for case, code in cases.items():
        assert res[case]["status"] == "fail" and res[case]["observed"] == code, (case, res[case])
        assert case in ran.stdout + ran.stderr, f"the failing case {case} is not named in the output"
    assert set(res) == set(cases), sorted(res)
    print(f"[observed] {mutant} on {arch}: {ran.result['arches'][arch]['phases']}")


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_e2e_backport_of_the_513_rule_passes(arch, tmp_path):
    """Upstream's 5.13 rule on 5.10 (a correct kernel from the field): policy upstream from the code, 5.10's
    partial-mlock bug read from the same code, so mlock-part-* are known failures under upstream too."""
    ran = _verify(tmp_path, arch, "--patch", str(REPO_ROOT / "tests" / "patches" / "backport-5.13-rule.patch"))
    assert ran.code == 0, ran
    kernel = ran.result["arches"][arch]["kernel"]
    assert kernel["policy"] == "upstream" and kernel["tree_bugs"][0].startswith("dontunmap-partial-mlock: mm/mremap.c:")
    res = results_by_name(ran.result, arch, "verifier")
    assert res["mlock-part-anon"]["status"] == "xfail" and res["mlock-part-memfd"]["status"] == "xfail"
    assert res["move-ramfs-shared"]["status"] == "pass"


@pytest.mark.e2e
def test_e2e_reworded_seed_is_judged_by_its_code(tmp_path):
    """The same diff under another subject: the policy still comes out anon+shmem, and the kernel passes."""
    text = SEED.read_text().replace("Subject: [PATCH] mm: Allow shmem mappings with MREMAP_DONTUNMAP",
                                    "Subject: [PATCH v2] mremap: let MREMAP_DONTUNMAP move memfd and shmem heaps", 1)
    assert "let MREMAP_DONTUNMAP move memfd" in text
    reworded = tmp_path / "0001-reworded.patch"
    reworded.write_text(text)
    ran = _verify(tmp_path, "x86_64", "--patch", str(reworded), "--case", "move-*", "--case", "state-memfd-shared")
    assert ran.code == 0, ran
    kernel = ran.result["arches"]["x86_64"]["kernel"]
    assert kernel["policy"] == "anon+shmem" and kernel["policy_reason"].startswith("mm/mremap.c:"), kernel
    res = results_by_name(ran.result, "x86_64", "verifier")
    assert res["move-memfd-shared"]["status"] == "pass" and res["state-memfd-shared"]["status"] == "pass"
