"""EXPERIMENTAL: submitting kpipe's jobs to a LAVA server with lavacli, and collecting the results.

The token comes from ``$LAVACLI_TOKEN`` (with ``$LAVACLI_USERNAME``; handed to lavacli in a private 0600 config,
never in an argv) or from lavacli's own config
(``~/.config/lavacli.yaml``, identity ``default``). The job's ``file://`` URLs only work on a worker of
this machine: for a remote lab, publish kernel and ramdisk somewhere the lab can fetch and rewrite the
URLs (``$KPIPE_LAVA_ARTIFACT_URL``: a base URL under which ``<arch>/{kernel image,ramdisk.cpio.gz}`` are served).
Not tested against a real server: bringing up lava-server (PostgreSQL, Django, lava-scheduler) on this
machine was not quick enough to make part of kpipe's tests.
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
FINISHED = {"Finished", "Canceled"}


def _lavacli(lava: Lava, url: str, *args: str, timeout: float = 120) -> str:
    """Run lavacli against ``url``. A token from the environment goes into a lavacli config (identity ``kpipe``)
    in a private 0700 folder, file mode 0600, removed afterwards: never into an argv, which every user of the
    machine can read in /proc."""
    import shutil
    import tempfile
    cmd, env = [*lava.lavacli()], lava.env()
    token, user = os.environ.get("LAVACLI_TOKEN"), os.environ.get("LAVACLI_USERNAME")
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
        raise InfraError(f"lavacli {' '.join(args[:2])} failed (exit {cp.returncode})",
                         detail=said.splitlines()[-8:],
                         fix="check the server URL and the token (LAVACLI_USERNAME/LAVACLI_TOKEN or "
                             "~/.config/lavacli.yaml)")
    return cp.stdout


def _rewrite_urls(job_path: Path, arch: str) -> Path:
    base = os.environ.get("KPIPE_LAVA_ARTIFACT_URL")
    if not base:
        return job_path
    job = yaml.safe_load(job_path.read_text())
    for action in job["actions"]:
        for img in action.get("deploy", {}).get("images", {}).values():
            img["url"] = f"{base.rstrip('/')}/{arch}/{Path(img['url']).name}"
    out = job_path.with_name("job-submit.yaml")
    out.write_text(yaml.safe_dump(job, sort_keys=False))
    return out


def submit_and_collect(prep: Prepared, written: WrittenJob, url: str, wait: bool) -> ArchResult:
    from .. import lava_install
    lava = lava_install.ensure()
    path = _rewrite_urls(written["job"], prep.arch.name)
    out = _lavacli(lava, url, "jobs", "submit", str(path))
    ids = re.findall(r"\d+", out)
    if not ids:
        raise InfraError("lavacli printed no job id", detail=out.splitlines()[-5:])
    job_id = ids[-1]
    note(f"lava: {prep.arch.name} submitted as job {job_id} on {url}")
    prep.ar.boot = BootInfo(lava=LavaInfo(server=url, job_id=job_id))
    if not wait:
        prep.ar.verdict, prep.ar.exit_code = "pass", 0
        prep.ar.error = f"submitted as job {job_id} on {url}; not waited for (--wait collects the results)"
        return prep.ar
    deadline = time.monotonic() + written["timeout"] + 3600
    while True:
        show = yaml.safe_load(_lavacli(lava, url, "jobs", "show", job_id, "--yaml")) or {}
        if show.get("state") in FINISHED:
            break
        if time.monotonic() > deadline:
            raise InfraError(f"LAVA job {job_id} did not finish in time (state {show.get('state')})")
        time.sleep(POLL_SECONDS)
    text = _lavacli(lava, url, "jobs", "logs", job_id, "--raw", timeout=600)
    (prep.dir / "lava.log").write_text(text)
    log = logparse.parse(text, prep.initrd.ready_marker or "KPIPE-GUEST-READY")
    return collect.to_arch_result(prep, log, written["accel"], written["accel_reason"], written["verifier_timeout"],
                                  0, 0.0, False)
