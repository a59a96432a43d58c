"""The verifier: expectations data, policy choice, TAP -> results (pure); the C harness and the real binary
built with the real compilers; a host run through a local session (the host kernel is 6.18: upstream rule);
and (e2e) the 5.10 kernels booted in QEMU for both arches."""
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

from kpipe import proc
from kpipe.arches import get_arch
from kpipe.errors import BuildError, InfraError, UsageError
from kpipe.report.results import Status
from kpipe.checks.suite import LIB_DIR
from kpipe.checks.suite import get as get_suite
from kpipe.checks.verifier import (build_verifier, choose_policy, expect_file_text, load_expectations, parse_tap,
                                   run_verifier)

SEED = get_suite()
VERIFY_DIR = SEED.sources
POLICIES = tuple(load_expectations(SEED).policies)

ELF_MACHINE = {"x86_64": 62, "arm64": 183}
SHMEM_MOVES = ["move-anon-shared", "move-devzero-shared", "move-memfd-shared", "move-memfd-private",
               "move-memfd-shared-ro", "move-tmpfs-shared", "move-tmpfs-private"]


@pytest.fixture(scope="module")
def exp():
    return load_expectations()


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


# ----------------------------------------------------------------------------------------- expectations

def test_every_case_has_all_three_policies(exp):
    assert len(exp.cases) >= 30
    for c in exp.cases.values():
        assert set(c.outcomes) == set(POLICIES), c.name
        for p, v in c.outcomes.items():
            assert re.fullmatch(r"ok|skip|E[A-Z0-9]+|xfail:[A-Z0-9]+", v), (c.name, p, v)
            assert v.startswith("xfail:") == bool(c.xfail.get(p)), (c.name, p, "an xfail needs its reason")
        assert c.description, c.name


def test_expectations_follow_the_field_notes_table(exp):
    col = {p: exp.column(p) for p in POLICIES}
    for name in SHMEM_MOVES:
        assert (col["anon-only"][name], col["anon+shmem"][name], col["upstream"][name]) == ("EINVAL", "ok", "ok")
    for name in ("move-ramfs-shared", "move-ramfs-private", "move-sysv-shm"):
        assert (col["anon-only"][name], col["anon+shmem"][name], col["upstream"][name]) == ("EINVAL", "EINVAL", "ok")
    for name in ("move-anon-private", "move-devzero-private"):
        assert {col[p][name] for p in POLICIES} == {"ok"}
    for name in ("move-hugetlb", "move-devmem", "move-vdso", "move-vvar"):
        assert {col[p][name] for p in POLICIES} == {"EINVAL"}
    args = [n for n in exp.cases if n.startswith("arg-")]
    assert len(args) >= 5
    for name in args:
        want = "EFAULT" if name == "arg-past-vma-end" else "EINVAL"
        assert {col[p][name] for p in POLICIES} == {want}, name


def test_data_cases_skip_exactly_where_their_move_is_refused(exp):
    dependent = [c for c in exp.cases.values() if c.requires]
    assert len(dependent) >= 10
    for c in dependent:
        for p in POLICIES:
            move_ok = exp.cases[c.requires].outcomes[p] == "ok"
            if move_ok and c.outcomes[p].startswith("xfail:"):
                continue        # the move is allowed; a known kernel bug under this policy (reason checked above)
            assert c.outcomes[p] == ("ok" if move_ok else "skip"), (c.name, p)


def test_bad_expectation_files_are_usage_errors(tmp_path):
    good = (VERIFY_DIR / "expectations.toml").read_text()
    f = tmp_path / "e.toml"
    f.write_text(good.replace('"upstream" = "EFAULT"', "", 1))
    with pytest.raises(UsageError) as e:
        load_expectations(path=f)
    assert any("arg-past-vma-end" in d and "no outcome for upstream" in d for d in e.value.detail)
    f.write_text(good.replace('"anon-only" = "EFAULT"', '"anon-only" = "maybe"', 1))
    with pytest.raises(UsageError) as e:
        load_expectations(path=f)
    assert any("bad outcome anon-only = 'maybe'" in d for d in e.value.detail)
    f.write_text(good.replace('"anon-only" = "EFAULT"', '"anon_only" = "EFAULT"', 1))
    with pytest.raises(UsageError) as e:
        load_expectations(path=f)
    assert any("unknown keys anon_only" in d for d in e.value.detail)
    f.write_text(good.replace('requires = "move-anon-shared"', 'requires = "move-nothing"', 1))
    with pytest.raises(UsageError) as e:
        load_expectations(path=f)
    assert any("requires unknown case 'move-nothing'" in d for d in e.value.detail)
    f.write_text("[cases\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_expectations(path=f)
    with pytest.raises(UsageError, match="not found"):
        load_expectations(path=tmp_path / "missing.toml")


def test_expect_file_text(exp):
    text = expect_file_text(exp, "anon+shmem")
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines == [f"{n}={c.outcomes['anon+shmem']}" for n, c in exp.cases.items()]
    assert "move-memfd-shared=ok" in lines and "move-sysv-shm=EINVAL" in lines
    with pytest.raises(UsageError, match="anon-only, anon\\+shmem, upstream"):
        expect_file_text(exp, "everything")


# ------------------------------------------------------------------------------------------------ policy

RULE_57 = """	if (flags & MREMAP_DONTUNMAP && (!vma_is_anonymous(vma) ||
			vma->vm_flags & VM_SHARED))
		return ERR_PTR(-EINVAL);
"""
RULE_SEED = """	if (flags & MREMAP_DONTUNMAP && !(vma_is_anonymous(vma) || vma_is_shmem(vma)))
		return ERR_PTR(-EINVAL);
"""
RULE_612 = """	if ((flags & MREMAP_DONTUNMAP) &&
			(vma->vm_flags & (VM_DONTEXPAND | VM_PFNMAP)))
		return ERR_PTR(-EINVAL);
"""
RULE_NEWEST = """	if ((vrm->flags & MREMAP_DONTUNMAP) &&
			(vma->vm_flags & (VM_DONTEXPAND | VM_PFNMAP)))
		return -EINVAL;
"""


def _tree(tmp_path, body: str) -> Path:
    (tmp_path / "mm").mkdir(parents=True, exist_ok=True)
    (tmp_path / "mm" / "mremap.c").write_text("// SPDX\n#include <linux/mm.h>\n\nstatic int f(void)\n{\n" + body + "}\n")
    return tmp_path


def test_policy_comes_from_the_code(tmp_path):
    for body, want in ((RULE_57, "anon-only"), (RULE_SEED, "anon+shmem"), (RULE_612, "upstream"),
                       (RULE_NEWEST, "upstream")):
        policy, why = choose_policy(_tree(tmp_path, body), None, SEED)
        assert policy == want and why.startswith("mm/mremap.c:6 carries "), (policy, why)
    assert "`MREMAP_DONTUNMAP && !(vma_is_anonymous(vma) || vma_is_shmem(vma))`" in \
        choose_policy(_tree(tmp_path, RULE_SEED), None, SEED)[1]
    # the rule in a comment does not count; the seed rule in the code does
    policy, _ = choose_policy(_tree(tmp_path, "/* was: " + RULE_57.replace("*/", "") + " */\n" + RULE_SEED), None, SEED)
    assert policy == "anon+shmem"
    # --expect wins, and says so
    assert choose_policy(_tree(tmp_path, RULE_57), "upstream", SEED) == ("upstream", "--expect")
    with pytest.raises(UsageError) as e:
        choose_policy(tmp_path, "anon", SEED)
    assert "anon-only, anon+shmem, upstream" in e.value.fix and e.value.exit_code == 2
    # no rule, two rules, no file: usage errors that say to pass --expect
    with pytest.raises(UsageError, match="none of suite mremap-dontunmap's") as e:
        choose_policy(_tree(tmp_path, "return 0;\n"), None, SEED)
    assert "--expect" in e.value.fix
    with pytest.raises(UsageError, match="several") as e:
        choose_policy(_tree(tmp_path, RULE_57 + RULE_612), None, SEED)
    with pytest.raises(UsageError, match="cannot read"):
        choose_policy(tmp_path / "nowhere", None, SEED)


def test_policy_of_the_real_510_tree(tree_src):
    """The Debian 5.10 scratch checkout (read only; the fixture fetches it, so this is e2e): whichever patch
    state it is in, the rule found is one of the two 5.10 ones and names its line."""
    policy, why = choose_policy(tree_src, None, SEED)
    assert policy in ("anon-only", "anon+shmem") and re.match(r"mm/mremap\.c:\d+ carries ", why), (policy, why)


# --------------------------------------------------------------------------------------------- TAP parse

def _tap(exp, policy, observed: dict[str, str] | None = None, drop=(), crash: dict[str, str] | None = None,
         skip: dict[str, str] | None = None, expected_override: dict[str, str] | None = None) -> str:
    """TAP as the binary prints it, for the cases of ``exp`` under ``policy``."""
    observed, crash, skip = observed or {}, crash or {}, skip or {}
    names = [n for n in exp.cases if n not in drop]
    out = ["TAP version 13", f"1..{len(exp.cases)}", "# mremap_dontunmap: kernel test x86_64"]
    for i, n in enumerate(names, 1):
        want = (expected_override or {}).get(n, exp.cases[n].outcomes[policy])
        if want.startswith("xfail:") and n not in observed and n not in crash and n not in skip:
            code = want[len("xfail:"):]
            out += [f"# {n}: observed {code} expected {want} (0.001 s)",
                    f"ok {i} {n} # XFAIL observed {code}, the known failure the expectations name"]
        elif n in crash:
            out += [f"# {n}: observed {crash[n]} expected {want} (0.001 s)", f"not ok {i} {n} # crashed: {crash[n]}"]
        elif n in skip:
            out += [f"# {n}: observed skip expected {want} (0.000 s)", f"ok {i} {n} # SKIP {skip[n]}"]
        elif want == "skip" and n not in observed:
            out += [f"# {n}: observed EINVAL expected skip (0.000 s)",
                    f"ok {i} {n} # SKIP move rejected as expected under this kernel (EINVAL)"]
        else:
            obs = observed.get(n, want)
            out += [f"# {n}: observed {obs} expected {want} (0.002 s)", f"# {n}: moved 0x1000 -> 0x2000",
                    f"{'ok' if obs == want else 'not ok'} {i} {n}"]
    return "\n".join(out) + "\n"


def test_parse_all_passing(exp):
    res = parse_tap(_tap(exp, "anon-only"), 0, exp, "anon-only")
    by = {r.name: r for r in res}
    assert list(by) == list(exp.cases)                 # one per case, in order, nothing extra
    assert by["move-anon-private"].status == Status.PASS and by["move-anon-private"].observed == "ok"
    assert by["move-anon-private"].detail == "moved 0x1000 -> 0x2000"
    assert by["move-memfd-shared"].status == Status.PASS and by["move-memfd-shared"].observed == "EINVAL"
    assert by["data-memfd-shared-old-same"].status == Status.SKIP
    assert "move rejected as expected" in by["data-memfd-shared-old-same"].detail
    assert all(r.suite == "verifier" for r in res)
    assert by["arg-past-vma-end"].expected == "EFAULT" and by["move-anon-private"].seconds == 0.002


def test_parse_too_permissive_kernel_fails(exp):
    # an unpatched-looking policy on a kernel that moves memfd: must fail, not pass
    text = _tap(exp, "anon-only", observed={"move-memfd-shared": "ok", "data-memfd-shared-old-same": "ok"})
    by = {r.name: r for r in parse_tap(text, 1, exp, "anon-only")}
    r = by["move-memfd-shared"]
    assert (r.status, r.expected, r.observed) == (Status.FAIL, "EINVAL", "ok")
    d = by["data-memfd-shared-old-same"]
    assert d.status == Status.FAIL and "refuses" in d.detail
    assert "verifier-exit" not in by


def test_parse_too_strict_kernel_fails(exp):
    text = _tap(exp, "anon+shmem", observed={"move-memfd-shared": "EINVAL"})
    by = {r.name: r for r in parse_tap(text, 1, exp, "anon+shmem")}
    assert by["move-memfd-shared"].status == Status.FAIL and by["move-memfd-shared"].observed == "EINVAL"


def test_parse_crash_skip_and_missing(exp):
    text = _tap(exp, "upstream", crash={"gc-uffd-minor-memfd": "SIGSEGV"}, drop={"move-vvar"},
                skip={"move-hugetlb": "no free huge pages (HugePages_Free: 0)"})
    by = {r.name: r for r in parse_tap(text, 1, exp, "upstream")}
    c = by["gc-uffd-minor-memfd"]
    assert c.status == Status.FAIL and c.observed == "SIGSEGV" and "crashed: SIGSEGV" in c.detail
    h = by["move-hugetlb"]
    assert h.status == Status.SKIP and "HugePages_Free" in h.detail
    m = by["move-vvar"]
    assert m.status == Status.ERROR and m.observed == "missing" and "not in the verifier's output" in m.detail
    assert by["verifier-exit"].status == Status.ERROR and "plan announced" in by["verifier-exit"].detail


def test_parse_truncated_by_timeout(exp):
    full = _tap(exp, "upstream")
    cut = full[:full.index("ok 10 ")]          # the host gave up mid-run
    res = parse_tap(cut, None, exp, "upstream")
    by = {r.name: r for r in res}
    assert len(res) == len(exp.cases) + 1
    assert sum(r.status == Status.PASS for r in res) == 9
    assert [r.name for r in res if r.status == Status.ERROR][:-1] == list(exp.cases)[9:]
    assert "did not finish" in by[list(exp.cases)[20]].detail
    assert by["verifier-exit"].observed == "timeout"


def test_parse_nothing_at_all(exp):
    res = parse_tap("", 127, exp, "upstream")
    assert all(r.status == Status.ERROR for r in res) and len(res) == len(exp.cases) + 1
    assert "exited with status 127" in res[0].detail


def test_parse_wrong_expectations_inconsistency_and_unknown(exp):
    # the binary ran with another policy's expectation: every affected case is an error, even a "pass"
    text = _tap(exp, "upstream")
    by = {r.name: r for r in parse_tap(text, 0, exp, "anon-only")}
    assert by["move-memfd-shared"].status == Status.ERROR and "given expected 'ok'" in by["move-memfd-shared"].detail
    assert by["move-anon-private"].status == Status.PASS
    # ok for a mismatch, an unknown case, a duplicate, a 0 exit with a failure
    lines = _tap(exp, "upstream").replace("not ok", "ok").splitlines()
    i = lines.index("ok 1 move-anon-private")
    lines[i - 2] = "# move-anon-private: observed EINVAL expected ok (0.001 s)"
    lines += ["# move-new-thing: observed ok expected ok", "ok 38 move-new-thing",
              "# move-vdso: observed EINVAL expected EINVAL", "not ok 39 move-vdso"]
    by = {}
    for r in parse_tap("\n".join(lines), 0, exp, "upstream"):
        by.setdefault(r.name, []).append(r)
    assert by["move-anon-private"][0].status == Status.ERROR and "said ok" in by["move-anon-private"][0].detail
    assert by["move-new-thing"][0].status == Status.ERROR and "not in expectations.toml" in by["move-new-thing"][0].detail
    assert [r.status for r in by["move-vdso"]] == [Status.PASS, Status.ERROR]
    assert "plan announced" in by["verifier-exit"][0].detail
    # exit status that contradicts the points
    by = {r.name: r for r in parse_tap(_tap(exp, "upstream"), 1, exp, "upstream")}
    assert "exit status 1" in by["verifier-exit"].detail
    bail = _tap(exp, "upstream", drop=set(list(exp.cases)[5:])) + "Bail out! out of memory\n"
    by = {r.name: r for r in parse_tap(bail, 1, exp, "upstream")}
    assert by[list(exp.cases)[6]].detail == "the verifier bailed out: out of memory"


# ------------------------------------------------------------------------------- the C harness, for real

HARNESS_FAKE = r'''
#define _GNU_SOURCE
#include "harness.h"
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
static void c_ok(const struct test_case *t, struct result *r) { (void)t; observe(r, "ok"); }
static void c_einval(const struct test_case *t, struct result *r) { (void)t; observe_errno(r, EINVAL); }
static void c_segv(const struct test_case *t, struct result *r) { (void)t; (void)r; *(volatile int *)8 = 1; }
static void c_hang(const struct test_case *t, struct result *r) { (void)t; (void)r; for (;;) pause(); }
static void c_abort(const struct test_case *t, struct result *r) { (void)t; (void)r; abort(); }
static void c_skip(const struct test_case *t, struct result *r) { (void)t; skip(r, "not here: %s", "reason"); }
static void c_rejected(const struct test_case *t, struct result *r) { (void)t; observe_errno(r, EINVAL); r->rejected = 1; }
static void c_guard(const struct test_case *t, struct result *r) {
	char buf[8]; (void)t;
	observe(r, guarded_copy(buf, (void *)8, sizeof(buf)) == SIGSEGV ? "ok" : "NOGUARD");
}
static const struct test_case cases[] = {
	{"ok-case", c_ok, 0}, {"einval-case", c_einval, 0}, {"segv-case", c_segv, 0}, {"hang-case", c_hang, 0},
	{"after-crashes", c_ok, 0}, {"abort-case", c_abort, 0}, {"skip-case", c_skip, 0},
	{"rejected-case", c_rejected, 0}, {"guard-case", c_guard, 0},
};
int main(int argc, char **argv) { return harness_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]), "fake"); }
'''


@pytest.fixture(scope="module")
def fake_harness(tmp_path_factory):
    d = tmp_path_factory.mktemp("harness")
    (d / "fake.c").write_text("#include <signal.h>\n" + HARNESS_FAKE)
    binary = d / "fake"
    proc.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-static", "-I", str(LIB_DIR),
              str(LIB_DIR / "harness.c"), str(d / "fake.c"), "-o", str(binary)], timeout=120)
    return binary, d


def test_harness_isolates_crashes_and_hangs(fake_harness, tmp_path):
    binary, d = fake_harness
    (tmp_path / "e.txt").write_text("# comment\nok-case=ok\neinval-case=ok\nsegv-case=ok\nhang-case=ok\n"
                                    "after-crashes = ok\nabort-case=ok\nskip-case=ok\nrejected-case=skip\n"
                                    "guard-case=ok\n")
    t = time.monotonic()
    cp = subprocess.run([binary, "-e", tmp_path / "e.txt", "-t", "1"], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t < 10
    out = cp.stdout
    assert cp.returncode == 1
    assert out.startswith("TAP version 13\n1..9\n")
    assert "ok 1 ok-case\n" in out
    assert "# einval-case: observed EINVAL expected ok" in out and "not ok 2 einval-case\n" in out
    assert "not ok 3 segv-case # crashed: SIGSEGV\n" in out
    assert "not ok 4 hang-case # crashed: SIGALRM (timeout after 1 s)\n" in out
    assert "ok 5 after-crashes\n" in out                      # a crash does not take the others down
    assert "not ok 6 abort-case # crashed: SIGABRT\n" in out
    assert "ok 7 skip-case # SKIP not here: reason\n" in out
    assert "ok 8 rejected-case # SKIP move rejected as expected under this kernel (EINVAL)\n" in out
    assert "ok 9 guard-case\n" in out
    # list, a subset, exit 4 when all skip, exit 0 when all pass, no expectation = fail
    lst = subprocess.run([binary, "-l"], capture_output=True, text=True).stdout.split()
    assert lst[:3] == ["ok-case", "einval-case", "segv-case"]
    one = subprocess.run([binary, "-e", tmp_path / "e.txt", "skip-case"], capture_output=True, text=True)
    assert one.returncode == 4 and "1..1\n" in one.stdout
    one = subprocess.run([binary, "-e", tmp_path / "e.txt", "ok-case", "guard-case"], capture_output=True, text=True)
    assert one.returncode == 0
    none = subprocess.run([binary, "ok-case"], capture_output=True, text=True)
    assert none.returncode == 1 and "expected (none)" in none.stdout
    bad = subprocess.run([binary, "no-such-case"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown case no-such-case" in bad.stderr


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
        again = build_verifier(get_arch(arch), headers, tmp_path / f"{arch}-again", log=tmp_path / f"{arch}.log", suite=SEED)
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


def test_run_verifier_timeout_is_reported_per_case(tmp_path, exp):
    """A binary that hangs (here: sleep) ends in a timeout: every case is an error, none is dropped."""
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\necho 'TAP version 13'\necho '1..37'\nsleep 30\n")
    hang.chmod(0o755)
    t = time.monotonic()
    res = run_verifier(LocalSession(), hang, "upstream", exp, tmp_path / "out", timeout=1,
                       remote_dir=str(tmp_path / "guest"))
    assert time.monotonic() - t < 10
    assert len(res) == len(exp.cases) + 1 and all(r.status == Status.ERROR for r in res)
    assert res[-1].name == "verifier-exit" and res[-1].observed == "timeout"


# ---------------------------------------------------------------------------------------------- e2e

@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_e2e_510_unpatched(kernels, arch, tmp_path, exp):
    """Unpatched 5.10 in QEMU: every case passes under anon-only; judged as anon+shmem the shmem cases fail."""
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
        strict = {r.name: r for r in run_verifier(guest.session, binary, "anon+shmem", exp, tmp_path / "shmem")}
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
