"""Submitting kpipe's jobs to a LAVA server with lavacli, and collecting the results.

``--submit lab`` is the local lab (`kpipe lab up`, kpipe.lava.lab): its URL and the API token from its 0600 file;
each job gets ``tags: [<arch>]`` (the lab's devices are all of type qemu, one per arch, tagged with it). Else
``--submit URL``: the token comes from ``$LAVACLI_TOKEN`` (with ``$LAVACLI_USERNAME``) or from lavacli's own
config (``~/.config/lavacli.yaml``, identity ``default``). A token is handed to lavacli in a private 0600
config, never in an argv, and never shown (lavacli's own errors print it: redacted). The job's ``file://``
URLs only work on a worker of this machine (as the lab's is): for a remote lab, publish kernel and ramdisk
somewhere the lab can fetch and rewrite the URLs (``$KPIPE_LAVA_ARTIFACT_URL``: a base URL under which
``<arch>/{kernel image,ramdisk.cpio.gz}`` are served; ``<side>/<arch>/`` for `premerge --lab`).
Several jobs are submitted before any is waited for and polled together (one ``jobs list`` per poll); a job
past its deadline, or every unfinished one when kpipe is interrupted, is canceled on the server. Tested
against the local lab (tests/e2e/test_lab.py).
"""
from __future__ import annotations

import datetime
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .. import proc
from ..errors import InfraError, KpipeError, UsageError
from ..progress import note
from ..report.results import ArchResult, BootInfo, LavaInfo
from . import collect as collect_mod, logparse
from .watch import ConsoleWatch, Stop

if TYPE_CHECKING:
    from .install import Lava
    from ..workflows.runner import Prepared
    from .job import WrittenJob

POLL_SECONDS = 10
LAB_POLL_SECONDS = 2          # the local lab's worker reports every 2 s (kpipe.lava.lab.PING_INTERVAL)
QUEUE_SECONDS = 3600          # slack for a job's wait, beyond its own timeout and those of its arch's jobs ahead
LAB_QUEUE_SECONDS = 300       # the lab has one idle device per arch
LAB = "lab"                   # --submit lab: the local lab
FINISHED = {"Finished", "Canceled"}
POLL_FAILURES = 3             # polls failing in a row before the jobs still waiting are given up


def job_url(server: str, job_id: str) -> str:
    return f"{server.rstrip('/')}/scheduler/job/{job_id}"


@dataclass
class _Client:
    """lavacli's command line and environment for one server; ``private``: the folder of its 0600 config
    (remove it with close() once lavacli is done)."""
    cmd: list[str]
    env: dict[str, str]
    token: str
    private: str | None

    def close(self) -> None:
        import shutil
        if self.private is not None:
            shutil.rmtree(self.private, ignore_errors=True)


def _client(lava: Lava, url: str, credentials: tuple[str, str] | None) -> _Client:
    """A token (``credentials`` = (user, token), else from the environment) goes into a lavacli config (identity
    ``kpipe``) in a private 0700 folder, file mode 0600: never into an argv, which every user of the machine can
    read in /proc."""
    import tempfile
    cmd, env = [*lava.lavacli()], lava.env()
    if credentials is not None:
        user, token = credentials
    else:
        token, user = os.environ.get("LAVACLI_TOKEN") or "", os.environ.get("LAVACLI_USERNAME") or ""
    private: str | None = None
    if token:
        if not user:
            raise UsageError("LAVACLI_TOKEN is set but LAVACLI_USERNAME is not",
                             fix="export LAVACLI_USERNAME=<your LAVA user> (or use lavacli's config file)")
        private = tempfile.mkdtemp(prefix="kpipe-lavacli-")          # mode 0700
        conf = Path(private) / "lavacli.yaml"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump({"kpipe": {"uri": url.rstrip("/") + "/RPC2", "username": user, "token": token}}, fh)
        env["XDG_CONFIG_HOME"] = private
        cmd += ["--identity", "kpipe"]
    else:
        cmd += ["--uri", url.rstrip("/") + "/RPC2"]
    return _Client(cmd, env, token, private)


def _lavacli(lava: Lava, url: str, *args: str, timeout: float = 120,
             credentials: tuple[str, str] | None = None) -> str:
    """Run lavacli against ``url`` (credentials as _client() hands them over; its config removed afterwards)."""
    client = _client(lava, url, credentials)
    token = client.token
    try:
        cp = subprocess.run([*client.cmd, *args], env=client.env, capture_output=True, text=True, timeout=timeout)
    finally:
        client.close()
    if cp.returncode != 0:
        said = (cp.stderr or cp.stdout).strip()
        if token:                    # lavacli's "Unable to connect" prints the URI with the token in it
            said = said.replace(token, "<token>")
        refused = re.search(r"\b(401|403)\b|Unauthorized|Authorization Required|Permission denied|[Ff]orbidden",
                            said)
        what = f"lavacli {' '.join(args[:2])} failed (exit {cp.returncode})"
        if refused:
            what = f"the LAVA server at {url} refused the credentials (authentication failed): {what}"
        elif "Unable to connect" in said:
            what = f"the LAVA server at {url} does not answer: {what}"
        raise InfraError(what, detail=said.splitlines()[-8:],
                         fix="check the server URL and the token (LAVACLI_USERNAME/LAVACLI_TOKEN or "
                             "~/.config/lavacli.yaml)")
    return cp.stdout


def _rewrite(job_path: Path, artifact_dir: str, tags: list[str] | None = None) -> Path:
    """The job as submitted: artifact URLs under $KPIPE_LAVA_ARTIFACT_URL/<artifact_dir>/ (`kpipe lava`: the
    arch; `premerge --lab`: side/arch), device tags (job-submit.yaml); the written job itself when neither
    applies."""
    base = os.environ.get("KPIPE_LAVA_ARTIFACT_URL")
    if not base and not tags:
        return job_path
    job = yaml.safe_load(job_path.read_text())
    if base:
        for action in job["actions"]:
            for img in action.get("deploy", {}).get("images", {}).values():
                img["url"] = f"{base.rstrip('/')}/{artifact_dir}/{Path(img['url']).name}"
    if tags:
        job["tags"] = tags
    out = job_path.with_name("job-submit.yaml")
    out.write_text(yaml.safe_dump(job, sort_keys=False))
    return out


def _lab_url() -> str:
    from . import lab
    return lab.url()


@dataclass(frozen=True)
class Server:
    """A LAVA server as kpipe talks to it: lavacli with the credentials (None: lavacli's own config), how often
    to poll, how long a job may wait for a device beyond the timeouts of the jobs ahead of it."""
    url: str
    credentials: tuple[str, str] | None
    poll: float
    queue: float
    lava: Lava

    def cli(self, *args: str, timeout: float = 120) -> str:
        return _lavacli(self.lava, self.url, *args, timeout=timeout, credentials=self.credentials)


def server(url: str, lava: Lava | None = None) -> Server:
    """--submit URL|lab: the local lab's URL and token from its own files, else URL with lavacli's credentials."""
    if lava is None:
        from . import install as lava_install
        lava = lava_install.ensure()
    if url != LAB:
        return Server(url, None, POLL_SECONDS, QUEUE_SECONDS, lava)
    from . import lab
    lab_url, user, token = lab.credentials()
    return Server(lab_url, (user, token), LAB_POLL_SECONDS, LAB_QUEUE_SECONDS, lava)


def check_server(srv: Server) -> None:
    """Before anything is built: the server answers and takes the credentials (``system whoami``); an
    InfraError naming a refused token otherwise."""
    srv.cli("system", "whoami", timeout=60)


@dataclass
class Submitted:
    """A job on the server, waiting to be collected into its arch's result."""
    prep: Prepared
    written: WrittenJob
    job_id: str
    link: str
    t0: float                      # time.monotonic() at submission
    deadline: float = 0.0          # set by deadlines()
    follower: LogFollower | None = None  # follows the job's log while it runs
    stopped: Stop | None = None          # kpipe canceled the job on a kernel report


def submit(srv: Server, prep: Prepared, written: WrittenJob, artifact_dir: str | None = None) -> Submitted:
    """Submit one written job (the lab's devices are all of type qemu: the arch's tag picks the device)."""
    tags = [prep.arch.name] if srv.url.rstrip("/") == _lab_url() else None
    path = _rewrite(written["job"], artifact_dir or prep.arch.name, tags)
    t0 = time.monotonic()
    out = srv.cli("jobs", "submit", str(path))
    ids = re.findall(r"\d+", out)
    if not ids:
        raise InfraError("lavacli printed no job id", detail=out.splitlines()[-5:])
    job_id = ids[-1]
    link = job_url(srv.url, job_id)
    note(f"lava: {artifact_dir or prep.arch.name} submitted as job {job_id}: {link}")
    prep.ar.boot = BootInfo(lava=LavaInfo(server=srv.url, job_id=job_id, job_url=link))
    return Submitted(prep, written, job_id, link, t0, t0 + written["timeout"] + srv.queue)


def deadlines(jobs: list[Submitted], queue: float) -> None:
    """Each job's deadline: it may wait for the jobs of its arch submitted before it (a lab may have one device
    per arch: each of those runs at most its own timeout), then runs at most its own, plus ``queue`` seconds
    of slack for the server."""
    ahead: dict[str, float] = {}
    for j in jobs:
        ahead[j.prep.arch.name] = ahead.get(j.prep.arch.name, 0.0) + j.written["timeout"]
        j.deadline = j.t0 + ahead[j.prep.arch.name] + queue


def _states(srv: Server, ids: list[str]) -> dict[str, str]:
    """Each job's state: one `jobs list` (the server's newest 100 jobs) for all of them, `jobs show` for a job
    no longer among those (one lavacli call per poll however many jobs wait)."""
    listed = yaml.safe_load(srv.cli("jobs", "list", "--yaml", "--limit", "100")) or []
    states = {str(j.get("id")): str(j.get("state")) for j in listed if isinstance(j, dict)}
    for job_id in ids:
        if job_id not in states:
            states[job_id] = str((yaml.safe_load(srv.cli("jobs", "show", job_id, "--yaml")) or {}).get("state"))
    return {i: states[i] for i in ids}


def _server_time(value: object) -> datetime.datetime | None:
    """lavacli's YAML of an XML-RPC DateTime ("20261207T01:23:45", the server's UTC)."""
    try:
        return datetime.datetime.strptime(str(value), "%Y%m%dT%H:%M:%S")
    except ValueError:
        return None


def _seconds(a: datetime.datetime | None, b: datetime.datetime | None) -> float | None:
    return round((b - a).total_seconds(), 1) if a is not None and b is not None else None


def cancel(srv: Server, jobs: list[Submitted]) -> None:
    """Cancel these jobs on the server (nothing of kpipe's is left queued or running there); a failure is noted."""
    if not jobs:
        return
    try:
        srv.cli("jobs", "cancel", *[j.job_id for j in jobs], timeout=60)
        note(f"lava: canceled job(s) {', '.join(j.job_id for j in jobs)} on {srv.url}")
    except KpipeError as e:
        note(f"lava: could not cancel job(s) {', '.join(j.job_id for j in jobs)}: {e.message}")


class LogFollower:
    """`lavacli jobs logs ID --raw --polling N` running beside the wait, for one running job: lavacli asks the
    server for the records it has not printed yet every N seconds, prints each as one line, and ends with the job
    (one long-lived client per job: a lavacli started per poll cost the lab's 2-core host most of a core). kpipe's
    console watch (the one `--run-local` uses) reads its output file: poll() -> a Stop once a kernel report's grace
    is over. close() ends lavacli and removes its config and the file."""

    def __init__(self, srv: Server, sub: Submitted):
        self.path = sub.prep.dir / "lava.live.log"
        self.client = _client(srv.lava, srv.url, srv.credentials)
        self.client.env["PYTHONUNBUFFERED"] = "1"            # each record reaches the file when lavacli has it
        self.out = open(self.path, "w")
        try:
            self.p = proc.spawn([*self.client.cmd, "jobs", "logs", sub.job_id, "--raw", "--polling",
                                 str(max(1, round(srv.poll)))], env=self.client.env, stdin=subprocess.DEVNULL,
                                stdout=self.out, stderr=subprocess.DEVNULL)
        except BaseException:
            self.out.close()
            self.client.close()
            raise
        self.watch = ConsoleWatch(self.path, sub.prep.initrd.ready_marker or "KPIPE-GUEST-READY")

    def poll(self) -> Stop | None:
        return self.watch.poll()

    def close(self) -> None:
        proc.kill_group(self.p, grace=2.0)
        self.out.close()
        self.client.close()
        self.path.unlink(missing_ok=True)


def collect(srv: Server, sub: Submitted) -> ArchResult:
    """A finished job: its log from the server, parsed and judged as `--run-local` does. Its seconds are the
    server's, submit to end (kpipe may see the end later: polls, or premerge's compile checks before it looks),
    else kpipe's own since the submission."""
    prep, written = sub.prep, sub.written
    show = yaml.safe_load(srv.cli("jobs", "show", sub.job_id, "--yaml")) or {}
    submitted, started, ended = (_server_time(show.get(k)) for k in ("submit_time", "start_time", "end_time"))
    seconds = server_s if (server_s := _seconds(submitted, ended)) is not None else round(time.monotonic() - sub.t0, 1)
    text = srv.cli("jobs", "logs", sub.job_id, "--raw", timeout=600)
    (prep.dir / "lava.log").write_text(text)
    device, queued = show.get("device"), _seconds(submitted, started)
    note(f"lava: {prep.arch.name} job {sub.job_id} {show.get('health', '?')} after {seconds} s (submit to finished"
         + (f"; queued {queued} s" if queued is not None else "") + (f", on {device}" if device else "") + ")")
    log = logparse.parse(text, prep.initrd.ready_marker or "KPIPE-GUEST-READY")
    ar = collect_mod.to_arch_result(prep, log, written["accel"], written["accel_reason"], written["verifier_timeout"],
                                    0, seconds, False, written["leak_scan"], written["leak_not_scanned"],
                                    written["cases"])
    if ar.boot.lava is not None:
        ar.boot.lava.server, ar.boot.lava.job_id, ar.boot.lava.job_url = srv.url, sub.job_id, sub.link
        ar.boot.lava.device, ar.boot.lava.queued_seconds = device, queued
        ar.boot.lava.ran_seconds = _seconds(started, ended)
        if sub.stopped is not None:
            ar.boot.lava.stopped = sub.stopped.reason
            ar.boot.verdict_after_fatal_s = sub.stopped.after_report_s
            ar.error = f"{sub.stopped.reason}\n{ar.error}" if ar.error else sub.stopped.reason
    ar.phases["lava-job"] = seconds
    return ar


def _follow(srv: Server, sub: Submitted) -> Stop | None:
    """The running job's watch (its follower started at the first call): a Stop once a report's grace is over."""
    if sub.follower is None:
        try:
            sub.follower = LogFollower(srv, sub)
        except (KpipeError, OSError) as e:     # the job is still judged by its end, as before
            note(f"lava: cannot follow job {sub.job_id}'s log ({e}); its result comes when it ends")
            return None
    return sub.follower.poll()


def _unfollow(jobs: list[Submitted]) -> None:
    for j in jobs:
        if j.follower is not None:
            j.follower.close()
            j.follower = None


def wait_and_collect(srv: Server, jobs: list[Submitted]) -> list[ArchResult | KpipeError]:
    """Poll until every job finished (each collected as soon as it has) or passed its deadline (canceled, an
    InfraError naming it); a running job's log is followed as `--run-local` follows it, and a job whose kernel
    reported a lockup, stall, hung task or Oops is canceled after verify's grace (its result says why); when the
    server stops answering every job still waiting has that error; on an interruption every unfinished job is
    canceled. In the order of ``jobs``."""
    out: dict[int, ArchResult | KpipeError] = {}
    waiting = dict(enumerate(jobs))
    failed_polls = 0
    try:
        while waiting:
            try:
                states = _states(srv, [j.job_id for j in waiting.values()])
                failed_polls = 0
            except KpipeError as e:
                failed_polls += 1
                if failed_polls < POLL_FAILURES:          # a server's hiccup: ask again at the next poll
                    note(f"lava: polling {srv.url} failed ({e.message}); trying again")
                    time.sleep(srv.poll)
                    continue
                cancel(srv, list(waiting.values()))      # the server stopped answering: every job waiting fails
                out.update((i, e) for i in waiting)
                break
            now = time.monotonic()
            for i, j in list(waiting.items()):
                state = states[j.job_id]
                if state in FINISHED:
                    del waiting[i]
                    _unfollow([j])
                    try:
                        out[i] = collect(srv, j)
                    except KpipeError as e:
                        out[i] = e
                elif state == "Running" and j.stopped is None and (stop := _follow(srv, j)) is not None:
                    j.stopped = stop                     # collected as finished once the server has canceled it
                    note(f"lava: {j.prep.arch.name} job {j.job_id}: {stop.reason}")
                    cancel(srv, [j])
                elif now > j.deadline:
                    del waiting[i]
                    cancel(srv, [j])
                    out[i] = InfraError(f"LAVA job {j.job_id} did not finish in time (state {state}; canceled): "
                                        f"{j.link}",
                                        fix="look at the job on the server; a job waiting for a device needs a "
                                            "worker with a device of its type and tags")
            if waiting:
                time.sleep(srv.poll)
    except BaseException:
        cancel(srv, list(waiting.values()))
        raise
    finally:
        _unfollow(jobs)
    return [out[i] for i in range(len(jobs))]


def submit_all(srv: Server, jobs: list[tuple[Prepared, WrittenJob, str | None]]) -> list[Submitted | ArchResult]:
    """Every job submitted before any is waited for (the server queues them all and runs them as its devices
    allow), each with its deadline (deadlines()): ``jobs`` are (prepared arch, its written job, the folder of its
    artifacts under $KPIPE_LAVA_ARTIFACT_URL, None: the arch). A job that could not be submitted is its arch's
    error result; an interruption cancels what was submitted."""
    from ..workflows.runner import _record_error
    subs: list[Submitted | ArchResult] = []
    try:
        for prep, written, where in jobs:
            try:
                subs.append(submit(srv, prep, written, where))
            except KpipeError as e:
                subs.append(_record_error(prep.ar, e))
    except BaseException:
        cancel(srv, [s for s in subs if isinstance(s, Submitted)])
        raise
    deadlines([s for s in subs if isinstance(s, Submitted)], srv.queue)
    return subs


def collect_all(srv: Server, subs: list[Submitted | ArchResult], wait: bool = True) -> list[ArchResult]:
    """submit_all's jobs as results, in the same order: each collected as it finishes (wait_and_collect); a job
    that could not be collected is its arch's error result. Without ``wait``: submitted, not waited for."""
    from ..workflows.runner import _record_error
    live = [s for s in subs if isinstance(s, Submitted)]
    if not wait:
        for j in live:
            j.prep.ar.verdict, j.prep.ar.exit_code = "pass", 0
            j.prep.ar.error = f"submitted as job {j.job_id} ({j.link}); not waited for (--wait collects the results)"
        return [s.prep.ar if isinstance(s, Submitted) else s for s in subs]
    got = dict(zip(map(id, live), wait_and_collect(srv, live)))
    out: list[ArchResult] = []
    for s in subs:
        if isinstance(s, ArchResult):
            out.append(s)
            continue
        r = got[id(s)]
        out.append(_record_error(s.prep.ar, r) if isinstance(r, KpipeError) else r)
    return out
