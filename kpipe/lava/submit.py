"""Submitting kpipe's jobs to a LAVA server with lavacli, and collecting the results.

``--submit lab`` is the local lab (`kpipe lab up`, kpipe.lab): its URL and the API token from its 0600 file;
each job gets ``tags: [<arch>]`` (the lab's devices are all of type qemu, one per arch, tagged with it). Else
``--submit URL``: the token comes from ``$LAVACLI_TOKEN`` (with ``$LAVACLI_USERNAME``) or from lavacli's own
config (``~/.config/lavacli.yaml``, identity ``default``). A token is handed to lavacli in a private 0600
config, never in an argv, and never shown (lavacli's own errors print it: redacted). The job's ``file://``
URLs only work on a worker of this machine (as the lab's is): for a remote lab, publish kernel and ramdisk
somewhere the lab can fetch and rewrite the URLs (``$KPIPE_LAVA_ARTIFACT_URL``: a base URL under which
``<arch>/{kernel image,ramdisk.cpio.gz}`` are served). Tested against the local lab (tests/test_lab.py).
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ..errors import InfraError, UsageError
from ..progress import note
from ..results import BootInfo, LavaInfo
from . import collect, logparse

if TYPE_CHECKING:
    from ..lava_install import Lava
    from ..results import ArchResult
    from ..runner import Prepared
    from .job import WrittenJob

POLL_SECONDS = 10
LAB_POLL_SECONDS = 2          # the local lab's worker reports every 2 s (kpipe.lab.PING_INTERVAL)
QUEUE_SECONDS = 3600          # how long a job may wait for a device beyond its own timeout
LAB_QUEUE_SECONDS = 300       # the lab has one idle device per arch
LAB = "lab"                   # --submit lab: the local lab
FINISHED = {"Finished", "Canceled"}


def job_url(server: str, job_id: str) -> str:
    return f"{server.rstrip('/')}/scheduler/job/{job_id}"


def _lavacli(lava: Lava, url: str, *args: str, timeout: float = 120,
             credentials: tuple[str, str] | None = None) -> str:
    """Run lavacli against ``url``. A token (``credentials`` = (user, token), else from the environment) goes
    into a lavacli config (identity ``kpipe``) in a private 0700 folder, file mode 0600, removed afterwards:
    never into an argv, which every user of the machine can read in /proc."""
    import shutil
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
    try:
        cp = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
    if cp.returncode != 0:
        said = (cp.stderr or cp.stdout).strip()
        if token:                    # lavacli's "Unable to connect" prints the URI with the token in it
            said = said.replace(token, "<token>")
        refused = re.search(r"\b(401|403)\b|Unauthorized|Authorization Required|Permission denied|[Ff]orbidden",
                            said)
        what = f"lavacli {' '.join(args[:2])} failed (exit {cp.returncode})"
        if refused:
            what = f"the LAVA server at {url} refused the credentials (authentication failed): {what}"
        raise InfraError(what, detail=said.splitlines()[-8:],
                         fix="check the server URL and the token (LAVACLI_USERNAME/LAVACLI_TOKEN or "
                             "~/.config/lavacli.yaml)")
    return cp.stdout


def _rewrite(job_path: Path, arch: str, tags: list[str] | None = None) -> Path:
    """The job as submitted: artifact URLs under $KPIPE_LAVA_ARTIFACT_URL, device tags (job-submit.yaml);
    the written job itself when neither applies."""
    base = os.environ.get("KPIPE_LAVA_ARTIFACT_URL")
    if not base and not tags:
        return job_path
    job = yaml.safe_load(job_path.read_text())
    if base:
        for action in job["actions"]:
            for img in action.get("deploy", {}).get("images", {}).values():
                img["url"] = f"{base.rstrip('/')}/{arch}/{Path(img['url']).name}"
    if tags:
        job["tags"] = tags
    out = job_path.with_name("job-submit.yaml")
    out.write_text(yaml.safe_dump(job, sort_keys=False))
    return out


def _lab_url() -> str:
    from .. import lab
    return lab.url()


def _target(url: str) -> tuple[str, tuple[str, str] | None, float, float]:
    """(URL, credentials or None: lavacli's own, poll seconds, queue seconds) for --submit URL|lab."""
    if url != LAB:
        return url, None, POLL_SECONDS, QUEUE_SECONDS
    from .. import lab
    lab_url, user, token = lab.credentials()
    return lab_url, (user, token), LAB_POLL_SECONDS, LAB_QUEUE_SECONDS


def check_server(lava: Lava, url: str) -> None:
    """Before anything is built: the server answers and takes the credentials (``system whoami``); an
    InfraError naming a refused token otherwise."""
    url, creds, _, _ = _target(url)
    _lavacli(lava, url, "system", "whoami", timeout=60, credentials=creds)


def submit_and_collect(prep: Prepared, written: WrittenJob, url: str, wait: bool) -> ArchResult:
    from .. import lava_install
    lava = lava_install.ensure()
    url, creds, poll, queue = _target(url)
    # the local lab's devices are all of type qemu: the arch's tag picks the device (--submit lab or its URL)
    tags = [prep.arch.name] if url.rstrip("/") == _lab_url() else None

    def cli(*args: str, timeout: float = 120) -> str:
        return _lavacli(lava, url, *args, timeout=timeout, credentials=creds)
    path = _rewrite(written["job"], prep.arch.name, tags)
    t0 = time.monotonic()
    out = cli("jobs", "submit", str(path))
    ids = re.findall(r"\d+", out)
    if not ids:
        raise InfraError("lavacli printed no job id", detail=out.splitlines()[-5:])
    job_id = ids[-1]
    link = job_url(url, job_id)
    note(f"lava: {prep.arch.name} submitted as job {job_id}: {link}")
    where = LavaInfo(server=url, job_id=job_id, job_url=link)
    prep.ar.boot = BootInfo(lava=where)
    if not wait:
        prep.ar.verdict, prep.ar.exit_code = "pass", 0
        prep.ar.error = f"submitted as job {job_id} ({link}); not waited for (--wait collects the results)"
        return prep.ar
    deadline = time.monotonic() + written["timeout"] + queue
    while True:
        show = yaml.safe_load(cli("jobs", "show", job_id, "--yaml")) or {}
        if show.get("state") in FINISHED:
            break
        if time.monotonic() > deadline:
            raise InfraError(f"LAVA job {job_id} did not finish in time (state {show.get('state')}): {link}",
                             fix="look at the job on the server; a job waiting for a device needs a worker "
                                 "with a device of its type and tags")
        time.sleep(poll)
    seconds = round(time.monotonic() - t0, 1)
    text = cli("jobs", "logs", job_id, "--raw", timeout=600)
    (prep.dir / "lava.log").write_text(text)
    note(f"lava: {prep.arch.name} job {job_id} {show.get('health', '?')} after {seconds} s (submit to finished)")
    log = logparse.parse(text, prep.initrd.ready_marker or "KPIPE-GUEST-READY")
    ar = collect.to_arch_result(prep, log, written["accel"], written["accel_reason"], written["verifier_timeout"],
                                0, seconds, False, written["leak_scan"], written["leak_not_scanned"])
    if ar.boot.lava is not None:
        ar.boot.lava.server, ar.boot.lava.job_id, ar.boot.lava.job_url = where.server, job_id, link
    ar.phases["lava-job"] = seconds
    return ar
