"""`kpipe premerge --lab URL|lab`: premerge's two sides as LAVA jobs (a workflows.flows.Sides).

  check   the dispatcher install (lavacli), then the server answers and takes the credentials (`system whoami`),
          before anything is fetched or built: exit 2 naming it, as `kpipe lava --submit` does
  start   in premerge's checkout, each side's kernels, guest image, verifier and selftests built as `kpipe lava`
          builds them (prepare_variant + write_job: baseline/<arch>/, patched/<arch>/), then every job submitted
          before any is waited for (baseline first); the server runs them as its devices allow (the local lab has
          one device per arch: an arch's patched job waits for its baseline job)
  finish  each job collected as `kpipe lava --submit URL --wait` collects it (submit.collect_all), into its
          side's results; premerge then judges the two sides as it judges local ones
  cancel  premerge interrupted between the two (during the compile checks): the submitted jobs are canceled

Not on this path (the jobs do not do it): the changed lines' gcov counters (`--require-coverage` is refused
before anything is built). kmemleak's scan is a step of each job (kpipe/lava/workflow.py), as for `kpipe lava`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..arches import Arch
from ..source.checkout import Checkout
from ..errors import KpipeError, UsageError
from ..workflows.pipeline import Options
from ..progress import phase
from ..report.results import ArchResult, RunResult
from ..workflows.runner import Variant, _record_error, prepare_variant
from ..source.tree import Tree
from . import submit
from .workflow import write_job


def lab_sides(target: str, require_coverage: bool = False) -> LabSides:
    """The sides for ``--lab URL|lab``; usage errors (no local lab, --require-coverage) before any run folder."""
    if require_coverage:
        raise UsageError("premerge --lab cannot --require-coverage: the LAVA jobs do not read the kernel's gcov "
                         "counters", fix="drop --require-coverage, or run premerge here (without --lab)")
    if target == submit.LAB:
        from . import lab
        lab.credentials()                 # is there a local lab at all
    return LabSides(target)


@dataclass
class LabSides:
    target: str                                    # --lab URL|lab
    srv: submit.Server | None = None
    arches: list[Arch] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    jobs: list[tuple[Variant, submit.Submitted | ArchResult]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    collected: bool = False

    def check(self, run_dir: Path, timings: dict[str, float]) -> None:
        from . import install as lava_install
        with phase("lava-install", "lava-dispatcher (cached)", timings):
            lava = lava_install.ensure(run_dir / "lava-install.log")
        self.srv = submit.server(self.target, lava)
        with phase("lava-server", f"{self.srv.url}: answers and takes the credentials", timings):
            submit.check_server(self.srv)

    def start(self, arches: list[Arch], tree: Tree, variants: list[Variant], opts: Options, co: Checkout,
              timings: dict[str, float], touched: list[str]) -> None:
        assert self.srv is not None, "check() first"
        self.arches, self.variants, self.timings = arches, variants, timings
        written = []
        for v in variants:
            for a, got in prepare_variant(arches, tree, v.series, opts, v.dir, v.dir, co, timings, touched):
                if isinstance(got, ArchResult):
                    v.results[a.name] = got
                    continue
                try:
                    written.append((v, (got, write_job(got, opts, self.srv.lava), f"{v.name}/{a.name}")))
                except KpipeError as e:
                    v.results[a.name] = _record_error(got.ar, e)
        subs = submit.submit_all(self.srv, [job for _, job in written])
        self.jobs = [(v, s) for (v, _), s in zip(written, subs)]

    def finish(self, run: RunResult) -> None:
        assert self.srv is not None, "check() first"
        live = [s for _, s in self.jobs if isinstance(s, submit.Submitted)]
        self.collected = True
        with phase("lava-jobs", f"{len(live)} job(s) on {self.srv.url}", self.timings):
            done = submit.collect_all(self.srv, [s for _, s in self.jobs])
        for (v, _), ar in zip(self.jobs, done):
            v.results[ar.arch] = ar
        for v in self.variants:
            v.results = {a.name: v.results[a.name] for a in self.arches if a.name in v.results}
        run.extra.lava = {"server": self.srv.url, "dispatcher": self.srv.lava.version,
                          "jobs": {f"{v.name}/{s.prep.arch.name}": str(s.written["job"]) for v, s in self.jobs
                                   if isinstance(s, submit.Submitted)},
                          "job_urls": {f"{v.name}/{name}": ar.boot.lava.job_url for v in self.variants
                                       for name, ar in v.results.items() if ar.boot.lava and ar.boot.lava.job_url}}

    def cancel(self) -> None:
        if self.srv is not None and not self.collected:
            submit.cancel(self.srv, [s for _, s in self.jobs if isinstance(s, submit.Submitted)])
