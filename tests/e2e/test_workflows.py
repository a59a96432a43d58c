"""End-to-end: the workflows users run, through the real CLI, on real Debian kernels in real QEMU."""
from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kpipe.checks.verifier import load_expectations

from kpipe_cli import (LEAK_SCAN_ON, REPO_ROOT, SELFTESTS, assert_compile_checks_found_nothing_new, invoke,
                       results_by_name)

pytestmark = pytest.mark.e2e

SHMEM_MOVES = ["move-anon-shared", "move-devzero-shared", "move-memfd-shared", "move-memfd-private"]
NEEDS_514 = {"gc-uffd-minor-memfd"}     # UFFD_FEATURE_MINOR_SHMEM: 5.10 lacks it, the case SKIPs with the reason


def _shmem_cases() -> list[str]:
    """The verifier cases the seed patch is about: expected differently before and after it."""
    ex = load_expectations()
    before, after = ex.column("anon-only"), ex.column("anon+shmem")
    return [c for c in ex.cases if before[c] != after[c]]


def test_verify_all_default_tree_passes_with_zero_findings(seed_verify_all):
    """The newcomer's run (`verify --arch all`, the default tree and series, the debug kernel) with kmemleak's
    scan on: exit 0, every report, no finding on either arch, and each arch's run is the verifier's correct
    kernel (tests/test_debug_kernel.py's wrong kernels are judged against this one). The run is a session
    fixture: tests/e2e/test_lava.py compares the seed's LAVA job with it."""
    r = seed_verify_all
    out = r.out
    assert r.code == 0, r
    res = r.result
    for arch in ("x86_64", "arm64"):
        assert_zero_findings_and_the_correct_kernels_results(res, arch, out)
    assert res["verdict"] == "pass" and res["exit_code"] == 0
    for arch in ("x86_64", "arm64"):
        ar = res["arches"][arch]
        assert ar["verdict"] == "pass"
        assert ar["kernel"]["release"].startswith("5.10.")
        assert ar["kernel"]["policy"] == "anon+shmem"
        assert [p["status"] for p in ar["patches"]] == ["applied"]
        assert ar["patches"][0]["subject"] == "mm: Allow shmem mappings with MREMAP_DONTUNMAP"
        assert ar["build"]["cached"] is True          # built once per session by the fixture
        assert ar["boot"]["accel"] in ("tcg", "kvm")
        verifier = results_by_name(res, arch, "verifier")
        for case in SHMEM_MOVES:
            assert verifier[case]["status"] == "pass" and verifier[case]["observed"] == "ok", verifier[case]
        selftests = results_by_name(res, arch, "selftests")
        assert selftests["mremap_dontunmap"]["status"] == "pass", selftests["mremap_dontunmap"]
        assert not ar["findings"]
        for f in ("build.log", "serial.log", "dmesg.log", "verifier.tap"):
            assert (out / arch / f).is_file(), f
        assert "Linux version 5.10" in (out / arch / "serial.log").read_text()
    # reports: JUnit parses back and counts what result.json counts; HTML and Markdown carry the real results
    junit = ET.parse(out / "junit.xml").getroot()
    cases = junit.findall(".//testcase")
    assert len(cases) >= sum(len(res["arches"][a]["tests"]) for a in res["arches"])
    assert not junit.findall(".//failure")
    html = (out / "report.html").read_text()
    assert "move-memfd-shared" in html and "PASS" in html
    md = (out / "summary.md").read_text()
    assert "| verifier |" in md and "x86\\_64" in md and "arm64" in md        # markdown-escaped names
    assert re.search(r"reproduce with: invoke verify --arch all", r.stderr)
    # coverage of the changed lines: the seed's one changed line ran on both arches; measured with the
    # verifier alone (--selftests none): 5 of its 6 branch outcomes taken (not yet run with these selftests)
    for arch in ("x86_64", "arm64"):
        cov = res["arches"][arch]["coverage"]
        fc = cov["files"]["mm/mremap.c"]
        assert (fc["code_lines"], fc["executed"]) == (1, 1), fc
        assert fc["branches"] == 6 and fc["taken"] >= 5, fc
        assert not cov["errors"], cov["errors"]
        assert (out / arch / "gcov" / "mremap.gcda").is_file()
    [merged] = res["extra"]["coverage"]
    assert merged["file"] == "mm/mremap.c" and merged["never_executed"] == []
    assert merged["sentence"].startswith("mm/mremap.c: 1 of 1 changed line executed, "), merged["sentence"]
    assert merged["sentence"].endswith("on arm64 and x86_64"), merged["sentence"]
    assert "coverage: mm/mremap.c: 1 of 1 changed line executed" in r.stdout
    assert 'class="cov-hit"' in html and "cov-miss" not in html.split("</style>")[1]
    mail = (out / "report.txt").read_text()
    assert "[kpipe verify] PASS" in mail.splitlines()[0] and "Reported-by: " in mail
    assert max(len(ln) for ln in mail.splitlines()) <= 72


GOLDEN_FINDINGS = REPO_ROOT / "tests" / "data" / "findings"


def assert_zero_findings_and_the_correct_kernels_results(res: dict, arch: str, out: Path) -> None:
    """The seed on 5.10's debug kernel: no finding, kmemleak really scanned (its premise) and found nothing, and
    the verifier's correct kernel: anon+shmem chosen from mm/mremap.c, every case passes (the partial mlock one
    as the known 5.10 failure), the pause and the fast path reported. Its console is the fast findings tests'
    golden clean-seed-ARCH.log (KPIPE_UPDATE_GOLDEN=1 refreshes it)."""
    ar = res["arches"][arch]
    print(f"\n{arch} seed on debug: phases {ar['phases']}")
    assert ar["findings"] == [] and ar["kernel"]["profile"] == "debug", ar["findings"]
    assert ar["boot"]["kmemleak"]["leaks"] == 0 and "kmemleak" in ar["phases"], ar["boot"]
    assert "kmemleak" in ar["logs"]
    golden = GOLDEN_FINDINGS / f"clean-seed-{arch}.log"
    if os.environ.get("KPIPE_UPDATE_GOLDEN") or not golden.exists():
        shutil.copyfile(out / arch / "serial.log", golden)
    kernel = ar["kernel"]
    assert kernel["policy"] == "anon+shmem" and "seed patch's rule" in kernel["policy_reason"], kernel
    vr = results_by_name(res, arch, "verifier")
    assert vr["mlock-part-anon"]["status"] == "xfail" and vr["mlock-part-memfd"]["status"] == "xfail"
    for name in ("state-memfd-shared", "state-anon-private", "uffd-remap-event-memfd", "geom-middle-memfd",
                 "pmd-memfd", "fork-memfd-shared", "mlock-whole-memfd"):
        assert vr[name]["status"] == "pass", vr[name]
    assert not [n for n, t in vr.items() if t["status"] in ("fail", "error")], vr
    lat = {n: re.search(r"latency_us=(\d+) min_us=\d+ max_us=\d+ moves=15 size_mb=(\d+)", vr[n]["detail"])
           for n in ("latency-anon", "latency-memfd")}
    assert all(lat.values()), lat
    pause = ar["pause"]
    assert set(pause["latency"]) == {"latency-anon", "latency-memfd"}
    assert pause["fast_path"]["pmd-memfd"]["vmpte_kb"] == 0
    assert "5.14" in pause["gc_minor"]["note"] and "5.14" in (out / "summary.md").read_text()
    assert all(vr[n]["status"] == "pass" for n in vr if n.startswith("plain-")), vr
    print(f"[observed] {arch} latency anon {lat['latency-anon'].group(1)} us / memfd "
          f"{lat['latency-memfd'].group(1)} us for {lat['latency-anon'].group(2)} MiB")


@pytest.mark.parametrize("arch", ["arm64"])
def test_unpatched_kernel_fails_the_shmem_cases_under_the_patched_policy(kernels, tmp_path, arch):
    """5.10 without the patch through the CLI, judged as the seed's kernel (--expect anon+shmem): the shmem cases
    fail (exit 1), each as the verifier observed it, named on the terminal. The same kernel under its own
    policy (anon-only) passes every case: x86_64 in tests/e2e/test_verifier_510.py's test_e2e_510_unpatched
    (both policies in one boot, the stage itself), both arches through the CLI as the baseline side of
    tests/e2e/test_lab.py's premerge --lab (every case counted against its expectation) and x86_64 as the local
    premerge's baseline (below)."""
    r = invoke("verify", "--arch", arch, "--no-patches", "--expect", "anon+shmem", "--selftests", "none",
               out=tmp_path / "strict")
    assert r.code == 1, r
    verifier = results_by_name(r.result, arch, "verifier")
    failing = {n for n, t in verifier.items() if t["status"] == "fail"}
    assert failing == set(_shmem_cases()), failing      # the MINOR-mode GC case fails at its memfd move too
    for case in SHMEM_MOVES:
        assert verifier[case]["observed"] == "EINVAL" and verifier[case]["expected"] == "ok"
    assert verifier["move-anon-private"]["status"] == "pass"
    assert list(verifier) == list(load_expectations().cases)
    assert "FAIL" in r.stdout and "move-memfd-shared" in r.stdout      # the terminal table names them


def test_premerge_shows_the_flip(patched_kernels, tmp_path):
    """The local premerge on one arch (arm64): the flip, checkpatch, the compile checks. x86_64's premerge (the
    same flip assertions, its compile checks in the same detail) is tests/e2e/test_lab.py's premerge --lab."""
    out = tmp_path / "pm"
    r = invoke("premerge", "--arch", "arm64", *SELFTESTS, out=out)
    assert r.code == 0, r
    res = r.result
    pm = res["extra"]["premerge"]
    assert sorted(pm) == ["arm64"]
    for arch in ("arm64",):
        flip = pm[arch]["flip"]
        assert flip["ok"], flip
        assert flip["baseline_policy"] == "anon-only" and flip["patched_policy"] == "anon+shmem"
        flipped = {c["case"] for c in flip["cases"] if c["flipped"] == "yes"}
        assert flipped == set(_shmem_cases()) - NEEDS_514
        assert {c["case"] for c in flip["cases"] if c["flipped"] == "n/a"} == NEEDS_514
        memfd = next(c for c in flip["cases"] if c["case"] == "move-memfd-shared")
        assert (memfd["baseline_observed"], memfd["patched_observed"]) == ("EINVAL", "ok")
        assert not [c for c in pm[arch]["comparison"] if c["change"] != "unchanged"], "same tests on both sides"
        assert (out / "baseline" / arch / "verifier.tap").is_file()
        assert (out / "patched" / arch / "verifier.tap").is_file()
    cp = res["extra"]["checkpatch"]
    assert [c["file"] for c in cp] == ["0001-mm-Allow-shmem-mappings-with-MREMAP_DONTUNMAP.patch"]
    assert cp[0]["errors"] == 0
    text = (out / "premerge.md").read_text()
    assert "Expected flip (anon-only -> anon+shmem): yes, " in text
    assert "checkpatch" in text and "0 error(s)" in text
    # the compile checks (premerge's default): gcc W=1, sparse and clang on the touched object, baseline vs
    # patched, nothing new; the one patch builds on its own; sparse's and W=1's old warnings show as "both".
    warn = res["extra"]["warnings"]
    assert sorted(warn) == ["arm64"]
    assert_compile_checks_found_nothing_new(warn)
    assert "compile checks" in text and "arm64 clang: 0 new" in text


def test_default_profile_is_debug_on_two_cpus_and_fast_is_tinyconfig_on_one(seed_verify_all, tmp_path):
    """verify's default kernel is the debug profile (KASAN, lockdep, DEBUG_VM) on 2 vCPUs the guest really
    runs on (the session's `verify --arch all`, run without --profile); --profile fast is the tinyconfig kernel
    on one, shown as such in result.json and the reproducer."""
    r = seed_verify_all
    assert r.code == 0, r
    ar = r.result["arches"]["x86_64"]
    assert ar["kernel"]["profile"] == "debug" and ar["config"]["profile"] == "debug"
    assert ar["boot"]["cpus"] == ar["boot"]["vcpus"] == 2
    assert "--profile debug" in r.result["reproducer"]
    debug_cfg = (Path(ar["build"]["image"]).parent / "config").read_text()
    for sym in ("KASAN", "PROVE_LOCKING", "DEBUG_VM", "SMP", "SLUB", "DETECT_HUNG_TASK", "PANIC_ON_OOPS"):
        assert f"CONFIG_{sym}=y\n" in debug_cfg, sym
    assert any(m.startswith("CONFIG_DEBUG_VM_MAPLE_TREE: requested y, got n — not in this tree")
               for m in ar["config"]["optional_missing"])
    debug_key = ar["build"]["key"]

    r = invoke("verify", "--arch", "x86_64", "--selftests", "none", "--profile", "fast", out=tmp_path / "fast")
    assert r.code == 0, r
    ar = r.result["arches"]["x86_64"]
    assert ar["kernel"]["profile"] == "fast" and ar["boot"]["cpus"] == ar["boot"]["vcpus"] == 1
    fast_cfg = (Path(ar["build"]["image"]).parent / "config").read_text()
    assert "CONFIG_KASAN=y" not in fast_cfg and "CONFIG_SLOB=y\n" in fast_cfg
    assert ar["build"]["key"] != debug_key                     # the profile is part of the content key
    assert "--profile fast" in r.result["reproducer"]
