"""The LAVA token never appears in a process's argv: the real lavacli (kpipe's LAVA install) talks to a real
XML-RPC server on loopback that checks the credentials lavacli sends; every argv kpipe starts is recorded."""
from __future__ import annotations

import base64
import subprocess
import threading
import xmlrpc.server
from pathlib import Path

import pytest

from kpipe.lava import install as lava_install
from kpipe.errors import InfraError
from kpipe.lava import submit

pytestmark = pytest.mark.e2e      # kpipe's LAVA install (downloaded by `kpipe setup`)

TOKEN = "s3cret-token-9f2c"


class _Handler(xmlrpc.server.SimpleXMLRPCRequestHandler):
    rpc_paths = ("/RPC2",)
    seen_auth: list[str] = []

    def decode_request_content(self, data):  # every request: note its Basic credentials
        auth = self.headers.get("Authorization", "")
        _Handler.seen_auth.append(base64.b64decode(auth.split()[1]).decode() if auth.startswith("Basic ") else "")
        return super().decode_request_content(data)


def _serve(**functions) -> xmlrpc.server.SimpleXMLRPCServer:
    """A LAVA-like XML-RPC server on loopback answering ``functions`` (name: dots as '__') and system.version."""
    srv = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), requestHandler=_Handler, logRequests=False,
                                           allow_none=True)
    srv.register_function(lambda: "2023.01", "system.version")
    for name, fn in functions.items():
        srv.register_function(fn, name.replace("__", "."))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Handler.seen_auth = []
    return srv


@pytest.fixture()
def server():
    srv = _serve(scheduler__jobs__submit=lambda definition: 4242)
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_token_goes_to_the_server_and_never_into_an_argv(server, tmp_path, monkeypatch):
    lava = lava_install.ensure()
    job = tmp_path / "job.yaml"
    job.write_text("job_name: kpipe token test\n")
    argvs: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(cmd, *a, **kw):
        argvs.append([str(c) for c in cmd])
        return real_run(cmd, *a, **kw)

    monkeypatch.setattr(submit.subprocess, "run", recording_run)
    monkeypatch.setenv("LAVACLI_TOKEN", TOKEN)
    monkeypatch.setenv("LAVACLI_USERNAME", "kpipe-ci")
    out = submit._lavacli(lava, server, "jobs", "submit", str(job))
    assert "4242" in out
    assert argvs and not [a for a in argvs if any(TOKEN in part for part in a)], argvs
    assert "kpipe-ci:" + TOKEN in _Handler.seen_auth, _Handler.seen_auth     # lavacli did authenticate
    assert not list(Path("/tmp").glob("kpipe-lavacli-*")), "the private config folder is removed"


def test_a_wrong_server_is_an_infra_error_and_the_config_is_removed(tmp_path, monkeypatch):
    lava = lava_install.ensure()
    monkeypatch.setenv("LAVACLI_TOKEN", TOKEN)
    monkeypatch.setenv("LAVACLI_USERNAME", "kpipe-ci")
    with pytest.raises(InfraError, match="lavacli jobs submit failed") as ei:
        submit._lavacli(lava, "http://127.0.0.1:9", "jobs", "submit", str(tmp_path / "none.yaml"), timeout=60)
    assert TOKEN not in ei.value.render() and "Unable to connect" in ei.value.render()
    assert not list(Path("/tmp").glob("kpipe-lavacli-*"))


@pytest.mark.parametrize("how", ["deadline", "interrupted", "polls-fail"])
def test_a_job_left_waiting_is_canceled_on_the_server(tmp_path, monkeypatch, how):
    """Nothing of kpipe's stays queued on a LAVA server: a job past its deadline is canceled and is its arch's
    error naming the job; an interrupted wait cancels every job it still waited for; polls that keep failing
    (three in a row) give the job up with lavacli's error, canceled too."""
    from kpipe.arches import ARCHES
    from kpipe.report.results import ArchResult
    from kpipe.workflows.runner import Prepared
    cancelled: list[str] = []         # job 4242 never leaves the queue; what lavacli cancels is recorded
    polls: list[int] = []

    def jobs_list(*args):
        polls.append(1)
        if how == "polls-fail":
            raise RuntimeError("database is down")
        return [{"id": 4242, "state": "Submitted", "health": "Unknown"}]
    srv = _serve(scheduler__jobs__list=jobs_list, scheduler__jobs__cancel=lambda job_id: cancelled.append(str(job_id)))
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        server = submit.Server(url, ("kpipe-ci", TOKEN), 0.2, 0.0, lava_install.ensure())
        prep = Prepared(ARCHES["x86_64"], None, None, tmp_path, "anon+shmem", [], ArchResult(arch="x86_64"),
                        tmp_path, None)
        job = submit.Submitted(prep, {"timeout": 1}, "4242", submit.job_url(url, "4242"), 0.0, 0.0)
        if how == "deadline":
            (got,) = submit.wait_and_collect(server, [job])
            assert isinstance(got, InfraError), got
            assert got.message.startswith("LAVA job 4242 did not finish in time (state Submitted; canceled)")
        elif how == "polls-fail":
            job.deadline = float("inf")
            (got,) = submit.wait_and_collect(server, [job])
            assert isinstance(got, InfraError) and got.message == "lavacli jobs list failed (exit 1)", got
            assert "database is down" in " ".join(got.detail) and len(polls) == submit.POLL_FAILURES
        else:
            job.deadline = float("inf")

            def interrupt(_):
                raise KeyboardInterrupt
            monkeypatch.setattr(submit.time, "sleep", interrupt)
            with pytest.raises(KeyboardInterrupt):
                submit.wait_and_collect(server, [job])
        assert cancelled == ["4242"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_running_job_whose_kernel_locks_up_is_canceled_after_verifys_grace(tmp_path, monkeypatch):
    """A submitted job's log is followed while it runs: the server hands out the real lockup job's records
    (tests/data/lava/lockup-at-boot-arm64.log) a batch per `jobs logs --start N`; kpipe's watch sees the soft
    lockup before the guest is ready and, STUCK_GRACE later (a simulated clock: one poll = 2 s), cancels the
    job; the job then reads as canceled on the server and is collected as a kernel failure saying why."""
    import types

    from kpipe.arches import ARCHES
    from kpipe.guest.qemu import STUCK_GRACE
    from kpipe.lava import watch
    from kpipe.report.results import ArchResult
    from kpipe.workflows.runner import Prepared

    from kpipe.checks.suite import get as get_suite
    from kpipe.build.profiles import get_profile
    records = [ln for ln in (Path(__file__).parent.parent / "data" / "lava" / "lockup-at-boot-arm64.log")
               .read_text().splitlines() if ln.startswith("{")]      # lava-run's records: the server stores them
    cut = next(i for i, r in enumerate(records) if "soft lockup" in r) + 40
    records = records[:cut]                          # what the server has when kpipe would stop it
    served, cancelled, starts = [0], [], []
    now = [1000.0]

    def jobs_list(*args):
        return [{"id": 4242, "state": "Canceled" if cancelled else "Running", "health": "Canceled" if cancelled
                 else "Unknown"}]

    def jobs_logs(job_id, start=0, end=None):
        starts.append(start)
        served[0] = min(len(records), max(served[0], start) + 200)   # 200 new records a poll, then no more
        text = "".join("- " + r + "\n" for r in records[start:served[0]])
        return (bool(cancelled), text)

    def jobs_show(job_id):
        from xmlrpc.client import DateTime
        return {"id": 4242, "state": "Finished" if cancelled else "Running", "health": "Canceled",
                **{k: DateTime(v) for k, v in (("submit_time", "20261207T02:22:40"),
                                                ("start_time", "20261207T02:22:41"),
                                                ("end_time", "20261207T02:23:30"))}}

    srv = _serve(scheduler__jobs__list=jobs_list, scheduler__jobs__logs=jobs_logs, scheduler__jobs__show=jobs_show,
                 scheduler__jobs__cancel=lambda job_id: cancelled.append(str(job_id)))

    def tick(seconds):
        now[0] += 2.0
    clock = types.SimpleNamespace(monotonic=lambda: now[0], sleep=tick)     # these two modules' clock only
    monkeypatch.setattr(watch, "time", clock)
    monkeypatch.setattr(submit, "time", clock)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        server = submit.Server(url, ("kpipe-ci", TOKEN), 2.0, 0.0, lava_install.ensure())
        arch = get_profile("debug").guest_arch(ARCHES["arm64"])
        prep = Prepared(arch, None, types.SimpleNamespace(ready_marker="KPIPE-GUEST-READY"), tmp_path / "v",
                        "anon+shmem", [], ArchResult(arch="arm64"), tmp_path, get_suite())
        written = {"timeout": 900, "accel": "tcg", "accel_reason": "TCG (requested)", "verifier_timeout": 300,
                   "leak_scan": False, "leak_not_scanned": "", "cases": ()}
        job = submit.Submitted(prep, written, "4242", submit.job_url(url, "4242"), now[0], now[0] + 300)
        (ar,) = submit.wait_and_collect(server, [job])
    finally:
        srv.shutdown()
        srv.server_close()
    assert cancelled == ["4242"], cancelled
    want = sorted({min(n, len(records)) for n in range(0, len(records) + 200, 200)})
    *follows, whole = starts              # each follow asks only for what is new; collect reads the whole log
    assert follows[:len(want)] == want and set(follows[len(want):]) <= {len(records)} and whole == 0, starts
    assert job.stopped is not None and STUCK_GRACE <= job.stopped.after_report_s <= STUCK_GRACE + 2.0, job.stopped
    assert not isinstance(ar, Exception), ar.render()
    assert ar.boot.lava is not None and "soft_lockup before the guest was ready" in ar.boot.lava.stopped
    assert ar.exit_code == 1 and "soft_lockup" in ar.error, (ar.exit_code, ar.error)
    assert ar.boot.verdict_after_fatal_s == job.stopped.after_report_s
    assert not (tmp_path / "lava.live.log").exists() and (tmp_path / "lava.log").is_file()


def test_premerge_lab_on_a_server_that_does_not_answer_is_exit_2_before_anything_is_built(tmp_path):
    from kpipe_cli import invoke
    ran = invoke("premerge", "--lab", "http://127.0.0.1:9", "--selftests", "none", out=tmp_path / "pm",
                 env={"LAVACLI_TOKEN": TOKEN, "LAVACLI_USERNAME": "kpipe-ci"}, timeout=300)
    assert ran.code == 2, ran
    said = ran.stdout + ran.stderr + (tmp_path / "pm" / "result.json").read_text()
    assert "the LAVA server at http://127.0.0.1:9 does not answer: lavacli system whoami failed" in said, ran
    assert "Unable to connect" in said, ran                       # lavacli's own words
    assert TOKEN not in said
    assert "fetch" not in ran.result["extra"]["phases"], "nothing fetched, applied or built"
    assert not (tmp_path / "pm" / "baseline").exists() and not (tmp_path / "pm" / "patched").exists()
