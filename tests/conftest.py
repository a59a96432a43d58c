"""Session fixtures shared by every test: the Debian 5.10 tree and its kernels, built once per session
through kpipe's own stages (and reused from kpipe's cache across sessions), and a guard that no QEMU child
outlives a test.

Two folders, two tiers: tests/unit/ is the fast tier (it downloads, builds and boots nothing) and tests/e2e/ the
real one. Every test under tests/e2e/ is marked e2e, and so is every test that uses a fixture of
REAL_WORLD_FIXTURES wherever it is; a test under tests/unit/ that would be marked e2e stops the collection.
The helpers both tiers use live here in tests/ (kpipe_cli.py, kernel_fixture.py, local_session.py); an e2e test
may import a fast test module's data (tests/unit/ is on sys.path), never the other way round."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

from kpipe.arches import ARCHES
from kpipe.build.kernel import Kernel
from kpipe.workflows.pipeline import Options, apply, build_kernel, locked_checkout, resolve_tree, series_of

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
UNIT, E2E = TESTS / "unit", TESTS / "e2e"
for _helpers in (UNIT, TESTS):     # `from kpipe_cli import ...` anywhere; e2e files reuse fast-tier data
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))
SHARED_CACHE = os.environ.get("KPIPE_CACHE")     # as the session started: where shared trees and kernels live
# kmemleak's scan costs ~40 s per arch and run under TCG: the suite's runs leave it out (the `leak_scan` setting),
# except the tests about it (tests/e2e/test_workflows.py's zero-findings `verify --arch all`, the leaked-object
# kernels), which set KPIPE_LEAK_SCAN=1 for their run. A value the caller exported wins.
os.environ.setdefault("KPIPE_LEAK_SCAN", "0")


@contextlib.contextmanager
def shared_cache():
    """Session fixtures use the shared kpipe cache even when first asked for by a test that set a private one."""
    with pytest.MonkeyPatch.context() as mp:
        if SHARED_CACHE is None:
            mp.delenv("KPIPE_CACHE", raising=False)
        else:
            mp.setenv("KPIPE_CACHE", SHARED_CACHE)
        yield


# Fixtures that fetch a real tree or build real kernels: a test that uses any of them is e2e, whatever its file
# says, so that `-m "not e2e"` (the fast tier) downloads, builds and boots nothing.
REAL_WORLD_FIXTURES = {"tree510", "mremap_sources", "kernels", "patched_kernels", "test_kernels", "fast_kernel_x86",
                       "seed_verify_all", "tree_src", "src510", "needs_tree", "olddefconfig", "built_510", "fakes",
                       "host_binary", "built"}    # test_image: guest images made from downloaded Debian packages


def pytest_collection_modifyitems(config, items):
    misplaced = []
    for item in items:
        path = Path(str(item.path)).resolve()
        if REAL_WORLD_FIXTURES & set(getattr(item, "fixturenames", ())) or E2E in path.parents:
            item.add_marker(pytest.mark.e2e)
        if UNIT in path.parents and item.get_closest_marker("e2e") is not None:
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError("tests/unit/ is the fast tier, but these tests are e2e (a real-world fixture or the "
                                "e2e mark): move them to tests/e2e/\n  " + "\n  ".join(misplaced))


def pytest_runtest_logreport(report):
    """KPIPE_TEST_LOG=<file>: one line per test phase as it ends (wall clock, seconds, outcome), to watch a long
    session live and to see where its time went even when it is cut short. Under pytest-xdist (the fast tier's
    `kpipe test --fast`) the controller writes it, from the reports its workers send."""
    path = os.environ.get("KPIPE_TEST_LOG")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    # a fixture's set-up or tear-down is logged when it took a second or more (kernels, the lab, session runs)
    if path and (report.when == "call" or report.outcome != "passed" or report.duration >= 1.0):
        import time
        with open(path, "a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {report.duration:8.1f}s {report.outcome:7} {report.when:8} "
                     f"{report.nodeid}\n")


def _qemu_children() -> list[str]:
    me = str(os.getpid())
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            comm = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        if fields[1] == me and comm.startswith("qemu-system"):
            out.append(f"{stat.parent.name} {comm}")
    return out


@pytest.fixture(autouse=True)
def no_qemu_left_behind():
    yield
    from kpipe import proc
    left = _qemu_children()
    registered = [p for p in list(proc._children) if "qemu" in str(p.args)]
    assert not left and not registered, f"QEMU left running after the test: {left or registered}"


@pytest.fixture(scope="session")
def host_suite_binary(tmp_path_factory):
    """A shipped suite's verifier compiled for this host (gcc -Werror, static), once per session and suite:
    test_suite checks every suite's, test_verifier_state runs the seed's."""
    from kpipe import proc
    from kpipe.checks import suite
    from kpipe.checks.suite import LIB_DIR
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            s = suite.get(name)
            binary = tmp_path_factory.mktemp(f"suite-{name}") / s.binary
            proc.run(["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-static", "-pthread", "-I",
                      str(LIB_DIR), *map(str, sorted(s.sources.glob("*.c")) + sorted(LIB_DIR.glob("*.c"))), "-o",
                      str(binary)], timeout=300)
            built[name] = binary
        return built[name]
    return get


@pytest.fixture(scope="session")
def tree510():
    with shared_cache():
        return resolve_tree(Options())


def _build_all(tree, opts: Options, logdir: Path, arches: tuple[str, ...] = ()) -> dict[str, Kernel]:
    out = {}
    with shared_cache(), locked_checkout(tree) as co:
        series = series_of(opts)
        applied = apply(co, series, logdir / "apply.log")
        for name in sorted(arches or ARCHES):
            out[name], _ = build_kernel(ARCHES[name], applied, opts, logdir / f"build-{name}.log",
                                        touched=series.touched)
    return out


@pytest.fixture(scope="session")
def kernels(tree510, tmp_path_factory) -> dict[str, Kernel]:
    """Debian 5.10 without patches, both arches (the pre-patch kernel)."""
    return _build_all(tree510, Options(no_patches=True), tmp_path_factory.mktemp("build-baseline"))


@pytest.fixture(scope="session")
def patched_kernels(tree510, kernels, tmp_path_factory) -> dict[str, Kernel]:
    """Debian 5.10 with the shipped series, both arches (built after the baseline: incremental)."""
    return _build_all(tree510, Options(), tmp_path_factory.mktemp("build-patched"))


@pytest.fixture(scope="session")
def fast_kernel_x86(tree510, patched_kernels, tmp_path_factory) -> Kernel:
    """5.10 + the seed, the fast profile (tinyconfig, 1 vCPU: boots in seconds), x86_64: the build `verify --arch
    x86_64 --profile fast` reuses; for boots whose mechanics do not depend on the kernel's config."""
    return _build_all(tree510, Options(profile="fast"), tmp_path_factory.mktemp("build-fast"), ("x86_64",))["x86_64"]


@pytest.fixture(scope="session")
def test_kernels(tree510, patched_kernels, tmp_path_factory) -> dict[str, Kernel]:
    """5.10 + the seed + kpipe's test kernel patch (tests/patches/test-kernel.patch: kpipe_mutant= picks a wrong
    behaviour), both arches: the build `verify --patch SEED --patch TEST_KERNEL` reuses from the cache."""
    from kpipe_cli import SEED, TEST_KERNEL
    return _build_all(tree510, Options(patches=(str(SEED), str(TEST_KERNEL))),
                      tmp_path_factory.mktemp("build-test-kernel"))


@pytest.fixture(scope="session")
def seed_verify_all(patched_kernels, tmp_path_factory):
    """The newcomer's run through the CLI, once per session: `verify --arch all` on the default tree and series,
    the debug kernel, the workflows' selftests, kmemleak's scan on. tests/e2e/test_workflows.py judges it;
    tests/e2e/test_lava.py compares the seed's LAVA job with it."""
    from kpipe_cli import LEAK_SCAN_ON, SELFTESTS, invoke
    with shared_cache():
        return invoke("verify", "--arch", "all", *SELFTESTS, out=tmp_path_factory.mktemp("verify-all") / "run",
                      env=LEAK_SCAN_ON)


@pytest.fixture(scope="session")
def mremap_sources(tree510) -> dict[str, str]:
    """mm/mremap.c at the base of each Debian tree kpipe knows (fetched through kpipe's tree stage when missing)."""
    from kpipe.source.tree import git
    out = {}
    with shared_cache():
        for spec in ("debian:5.10", "debian:6.12"):
            tree = tree510 if spec == "debian:5.10" else resolve_tree(Options(tree=spec))
            out[tree.ident] = git(tree.repo, "show", f"{tree.base}:mm/mremap.c", bare=True).stdout
    return out


@pytest.fixture(scope="session")
def tree_src(tree510) -> Path:
    """The 5.10 sources (kpipe's scratch worktree); read it, never write it."""
    return tree510.worktree
