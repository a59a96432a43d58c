"""`kpipe lab up|down|status`: a single-machine LAVA lab on this host, for `kpipe lava --submit lab --wait`.

What ``up`` brings up, each step skipped when already done (a second ``up`` finds the lab running and says so):
  * Debian's lava-server and postgresql (apt-get install --no-install-recommends, as root; `kpipe setup`
    installs them too); the PostgreSQL cluster started with pg_ctlcluster when it is down (and then, only then,
    stopped again by ``down``); lava-server's own database set-up (its postinst.py), once;
  * a superuser ``kpipe`` with an API token (file mode 0600 in kpipe's cache: TOKEN_FILE), a worker with its
    token, device type qemu and one device per arch (machine, cpu, memory and vCPUs from kpipe's arch data,
    tagged with the arch's name: jobs pick their arch with ``tags:``), event-driven scheduling;
  * gunicorn (the web UI and XML-RPC), lava-publisher, lava-scheduler and ONE lava-worker, the worker from
    kpipe's own dispatcher install (kpipe.lava.install) through a ``lava-run`` wrapper the server's per-worker
    env.yaml puts first in PATH. Each runs in a session of its own (setsid) with a pid file in the lab's folder;
    every listener is bound to 127.0.0.1.
``down`` stops exactly what ``up`` started (its pid files) and leaves everything else alone.
No systemd is needed (nor used): the processes are started as the Debian units would start them.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from .. import cache, proc
from ..arches import ARCHES, Arch
from ..errors import InfraError, UsageError
from ..progress import note

HOST = "127.0.0.1"
HTTP_PORT = 8000            # gunicorn: web UI + XML-RPC (/RPC2)
PUBLISHER_PORT = 8001       # lava-publisher's websocket (the worker listens for "job queued" on it)
EVENT_PORT = 5500           # lava-publisher's ZMQ event socket (lava-scheduler reacts to it)
USER = "kpipe"
WORKER = "kpipe-worker"
DEVICE_TYPE = "qemu"
PROFILE = "debug"           # the guest size the devices default to (a job's context overrides it)
PACKAGES = ("lava-server", "postgresql")
PROCESSES = ("gunicorn", "publisher", "scheduler", "worker")      # start order (stopped all at once)
PING_INTERVAL = 2           # lava-worker's poll of the server (default 20 s: a job's end would wait for it)
UP_TIMEOUT = 60.0           # seconds for the server to answer and the worker to be Online
STOP_GRACE = 10.0           # seconds between SIGTERM and SIGKILL on down
SYSTEM_PYTHON = "/usr/bin/python3"          # Debian's (a bare python3 may be pyenv's, without django)
LAVA_SERVER = "/usr/bin/lava-server"
POSTINST = "/usr/share/lava-server/postinst.py"
GUNICORN = "/usr/bin/gunicorn3"
ETC = Path("/etc/lava-server")
SERVER_LOGS = Path("/var/log/lava-server")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MACS = {"x86_64": "52:54:00:12:34:60", "arm64": "52:54:00:12:34:61"}
# what identifies each process in /proc/PID/cmdline (a pid file whose pid now runs something else is stale)
MARKERS = {"gunicorn": "gunicorn", "publisher": "lava-publisher", "scheduler": "lava-scheduler",
           "worker": "lava-worker"}
EVENTS_SETTINGS = f"""# kpipe lab: event-driven scheduling (lava-publisher), on 127.0.0.1 only
EVENT_NOTIFICATION: true
EVENT_SOCKET: "tcp://{HOST}:{EVENT_PORT}"
"""


def url() -> str:
    return f"http://{HOST}:{HTTP_PORT}"


def lab_dir() -> Path:
    return cache.cache_dir("lab")


def token_file() -> Path:
    return lab_dir() / "api-token"


def _worker_token_file() -> Path:
    return lab_dir() / "worker-token"


def _pid_file(name: str) -> Path:
    return lab_dir() / "run" / f"{name}.pid"


def _log(name: str) -> Path:
    return lab_dir() / "logs" / f"{name}.log"


def _state_file() -> Path:
    return lab_dir() / "state.json"


def _state() -> dict[str, object]:
    try:
        data = json.loads(_state_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_state(state: dict[str, object]) -> None:
    tmp = _state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.rename(_state_file())


def credentials() -> tuple[str, str, str]:
    """(URL, user, token) of the local lab, for `kpipe lava --submit lab`."""
    path = token_file()
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if not token:
        raise UsageError(f"the local LAVA lab has no API token ({path})", fix="run `kpipe lab up` first")
    return url(), USER, token


# ------------------------------------------------------------------------------------------------ host

def _sys_env(**extra: str) -> dict[str, str]:
    """The environment for Debian's lava-server programs: the system PATH, no Python path of kpipe's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = SYSTEM_PATH
    env.update(extra)
    return env


def _run(cmd: list[str], what: str, timeout: float = 180, check: bool = True,
         log: Path | None = None) -> subprocess.CompletedProcess[str]:
    log = log or _log("setup")
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        cp = subprocess.run(cmd, env=_sys_env(), capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise InfraError(f"{what}: {cmd[0]} not found", fix="run `kpipe lab up` as root (it installs "
                         f"{' '.join(PACKAGES)})") from None
    except subprocess.TimeoutExpired:
        raise InfraError(f"{what} timed out after {timeout:.0f} s", detail=[shlex.join(cmd)], log=str(log)) from None
    with open(log, "a") as fh:
        fh.write(f"\n$ {shlex.join(cmd[:3] if 'tokens' in cmd or 'workers' in cmd else cmd)} -> {cp.returncode}\n")
        if "tokens" not in cmd and "workers" not in cmd:     # those print tokens: never into a log
            fh.write(cp.stdout + cp.stderr)
    if check and cp.returncode != 0:
        said = [ln for ln in (cp.stderr or cp.stdout).strip().splitlines() if "oken" not in ln][-8:]
        raise InfraError(f"{what} failed (exit {cp.returncode})", detail=[shlex.join(cmd[:4]), *said], log=str(log))
    return cp


def _manage(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([LAVA_SERVER, "manage", *args], f"lava-server manage {args[0]} {args[1] if len(args) > 1 else ''}",
                check=check)


def missing_packages() -> list[str]:
    cp = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *PACKAGES],
                        capture_output=True, text=True)
    ok = {ln.split()[0] for ln in cp.stdout.splitlines() if len(ln.split()) > 1 and ln.split()[1].startswith("ii")}
    return [p for p in PACKAGES if p not in ok]


def _install_packages() -> None:
    missing = missing_packages()
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        raise InfraError("the LAVA lab needs packages installed as root", detail=[f"sudo {shlex.join(cmd)}"],
                         fix="run the command above (or `sudo kpipe setup`), then `sudo kpipe lab up`")
    note(f"lab: {shlex.join(cmd)}")
    t0 = time.monotonic()
    proc.run(cmd, env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=1800, log=_log("apt"), what="apt-get install")
    note(f"lab: installed {', '.join(missing)} in {time.monotonic() - t0:.0f} s")


def _pg_cluster() -> tuple[str, str, bool]:
    """(version, name, online) of the machine's first PostgreSQL cluster (pg_lsclusters)."""
    cp = _run(["pg_lsclusters", "--no-header"], "pg_lsclusters")
    for line in cp.stdout.splitlines():
        f = line.split()
        if len(f) >= 4:
            return f[0], f[1], f[3].startswith("online")
    raise InfraError("no PostgreSQL cluster on this machine (pg_lsclusters lists none)",
                     fix="pg_createcluster --start $(ls /usr/lib/postgresql | sort -n | tail -1) main")


def _pg_ready() -> None:
    deadline = time.monotonic() + 30
    while subprocess.run(["pg_isready", "-q", "-h", HOST], env=_sys_env()).returncode != 0:
        if time.monotonic() > deadline:
            raise InfraError("PostgreSQL does not accept connections 30 s after starting",
                             fix="read /var/log/postgresql/*.log")
        time.sleep(0.3)


# ------------------------------------------------------------------------------------------------ provisioning

def device_name(arch: Arch) -> str:
    return f"kpipe-qemu-{arch.name}"


def device_dictionary(arch: Arch) -> str:
    """The device's jinja2 (extends lava-server's qemu.jinja2). machine, cpu, memory and vCPUs come from kpipe's
    arch data with the default profile's guest size; a job's context (kpipe's jobs send all four) wins. The qemu
    device type passes machine and cpu for arm but not for x86 (there it wants -enable-kvm): for x86 they go into
    the extra options, and KVM stays off (kpipe decides KVM or TCG per run, -accel in the job's context)."""
    from ..build.profiles import get_profile
    a = get_profile(PROFILE).guest_arch(arch)
    lines = ["{% extends 'qemu.jinja2' %}", "{# written by kpipe lab (kpipe/lava/lab.py) #}",
             f"{{% set arch = '{a.debian_arch}' %}}", "{% set no_kvm = True %}", "{% set netdevice = 'user' %}",
             f"{{% set mac_addr = '{MACS.get(a.name, '52:54:00:12:34:6f')}' %}}",
             f"{{% set memory = memory | default({a.memory_mb}) %}}"]
    extra = f"(extra_options | default(['-smp {a.smp}']))"
    if a.debian_arch in ("arm64", "arm"):
        lines += [f"{{% set machine = machine | default('{a.qemu_machine}') %}}"]
        if a.qemu_cpu:
            lines += [f"{{% set cpu = cpu | default('{a.qemu_cpu}') %}}"]
        lines += [f"{{% set extra_options = {extra} %}}"]
    else:
        head = f"['-machine ' ~ (machine | default('{a.qemu_machine}'))"
        head += f", '-cpu ' ~ (cpu | default('{a.qemu_cpu}'))]" if a.qemu_cpu else "]"
        lines += [f"{{% set extra_options = {head} + {extra} %}}"]
    return "\n".join(lines) + "\n"


def _lava_run_wrapper() -> str:
    from .install import ensure
    lava = ensure(_log("lava-install"), quiet=True)
    return ("#!/bin/sh\n# kpipe lab: lava-worker runs `lava-run` by name with the env the server sends (env.yaml):\n"
            "# this is kpipe's dispatcher install\n"
            f"PYTHONPATH={shlex.quote(str(lava.site))} exec {shlex.quote(str(lava.python))} "
            f"{shlex.quote(str(lava.root / 'usr/bin/lava-run'))} \"$@\"\n")


def _worker_env_yaml() -> str:
    return ("# kpipe lab: lava-run from kpipe's dispatcher install (the wrapper's folder first in PATH)\n"
            "purge: true\noverrides:\n  LC_ALL: C.UTF-8\n  LANG: C\n"
            f"  PATH: {lab_dir() / 'bin'}:{SYSTEM_PATH}\n")


def _write(path: Path, text: str, mode: int = 0o644, owner: str | None = "lavaserver") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.rename(path)
    path.chmod(mode)
    if owner:
        with contextlib.suppress(KeyError, OSError):
            import pwd
            pw = pwd.getpwnam(owner)
            os.chown(path, pw.pw_uid, pw.pw_gid)


def _write_secret(path: Path, secret: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    path.chmod(0o600)


def _files() -> dict[Path, str]:
    """Every file the lab writes outside its own folder, or beside its processes, with its text."""
    files = {ETC / "settings.d/01-kpipe-events.yaml": EVENTS_SETTINGS,
             ETC / f"dispatcher.d/{WORKER}/env.yaml": _worker_env_yaml(),
             lab_dir() / "bin/lava-run": _lava_run_wrapper()}
    for a in ARCHES.values():
        files[ETC / f"dispatcher-config/devices/{device_name(a)}.jinja2"] = device_dictionary(a)
    return files


def _provision(state: dict[str, object]) -> None:
    """Users, tokens, worker, device type, devices, tags: once (remembered in state.json by a key of what it
    made); the files every time (cheap, and a changed arch shows up at once)."""
    for path, text in _files().items():
        if path.name == "lava-run":
            _write(path, text, 0o755, owner=None)
        else:
            _write(path, text, 0o640 if path.suffix == ".yaml" and "settings.d" in str(path) else 0o644)
    key = hashlib.sha256(json.dumps([USER, WORKER, DEVICE_TYPE, sorted(ARCHES)]).encode()).hexdigest()[:16]
    if state.get("provisioned") == key and token_file().is_file() and _worker_token_file().is_file():
        return
    t0 = time.monotonic()
    if _manage("users", "details", USER, check=False).returncode != 0:
        _manage("users", "add", "--superuser", "--staff", "--email", f"{USER}@localhost", USER)
    if not token_file().is_file() or not token_file().read_text().strip():
        _new_api_token()
    if _manage("workers", "details", WORKER, check=False).returncode != 0:
        out = _manage("workers", "add", "--description", "kpipe local worker", WORKER).stdout
        tok = [ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Token:")]
    else:
        out = _manage("workers", "details", WORKER).stdout
        tok = [ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.strip().startswith("token")]
    if not tok or not tok[0]:
        raise InfraError(f"lava-server printed no token for worker {WORKER}", log=str(_log("setup")))
    _write_secret(_worker_token_file(), tok[0])
    if _manage("device-types", "details", DEVICE_TYPE, check=False).returncode != 0:
        _manage("device-types", "add", DEVICE_TYPE)
    tags = set(re.findall(r"Name: '([^']*)'", _manage("device-tags", "list").stdout))
    for a in ARCHES.values():
        if _manage("devices", "details", device_name(a), check=False).returncode != 0:
            _manage("devices", "add", "--device-type", DEVICE_TYPE, "--worker", WORKER, "--description",
                    f"kpipe {a.name}", device_name(a))
        if a.name not in tags:
            _manage("device-tags", "create", a.name, f"kpipe arch {a.name}")
        _manage("device-tags", "add", "--tags", a.name, "--", device_name(a))
    state["provisioned"] = key
    _save_state(state)
    note(f"lab: provisioned user {USER}, worker {WORKER}, devices "
         f"{', '.join(device_name(a) for a in ARCHES.values())} ({time.monotonic() - t0:.1f} s)")


def _new_api_token() -> None:
    out = _manage("tokens", "add", "--user", USER, "--description", "kpipe lab").stdout.strip()
    if not out:
        raise InfraError("lava-server printed no API token", log=str(_log("setup")))
    _write_secret(token_file(), out.splitlines()[0].strip())


# ------------------------------------------------------------------------------------------------ processes

def _alive(name: str) -> int | None:
    """The pid of the lab's ``name`` process when it runs (its pid file, checked against /proc), else None."""
    try:
        pid = int(_pid_file(name).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if stat.rsplit(")", 1)[1].split()[0] == "Z" or MARKERS[name] not in cmdline:
        return None
    return pid


def _commands() -> dict[str, tuple[list[str], dict[str, str]]]:
    from .install import ensure
    lava = ensure(_log("lava-install"), quiet=True)
    worker_dir = lab_dir() / "worker"
    worker_env = {**_sys_env(), "PYTHONPATH": str(lava.site)}
    return {
        "gunicorn": ([GUNICORN, "lava_server.wsgi", "--log-level", "INFO", "--log-file",
                      str(SERVER_LOGS / "gunicorn.log"), "-u", "lavaserver", "-g", "lavaserver",
                      "--worker-class", "eventlet", "--workers", "2", "--bind", f"{HOST}:{HTTP_PORT}"], _sys_env()),
        "publisher": ([LAVA_SERVER, "manage", "lava-publisher", "--level", "INFO", "--log-file",
                       str(SERVER_LOGS / "lava-publisher.log"), "--host", HOST, "--port", str(PUBLISHER_PORT)],
                      _sys_env()),
        "scheduler": ([LAVA_SERVER, "manage", "lava-scheduler", "--level", "INFO", "--log-file",
                       str(SERVER_LOGS / "lava-scheduler.log"), "--event-url", f"tcp://{HOST}:{EVENT_PORT}"],
                      _sys_env()),
        "worker": ([str(lava.python), str(lava.root / "usr/bin/lava-worker"), "--name", WORKER,
                    "--url", url() + "/", "--ws-url", f"http://{HOST}:{PUBLISHER_PORT}/ws/",
                    "--token-file", str(_worker_token_file()), "--ping-interval", str(PING_INTERVAL),
                    "--level", "INFO", "--log-file", str(_log("lava-worker")), "--worker-dir", str(worker_dir)],
                   worker_env),
    }


def _start(name: str, cmd: list[str], env: dict[str, str]) -> bool:
    """Start ``name`` in a session of its own (setsid), its pid in run/NAME.pid; False when it already runs."""
    if _alive(name) is not None:
        return False
    _pid_file(name).parent.mkdir(parents=True, exist_ok=True)
    out = lab_dir() / "logs" / f"{name}.out"
    with open(out, "ab") as fh:
        # not proc.spawn: these outlive this kpipe process (proc.kill_all must not stop them)
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                             start_new_session=True, cwd="/")
    _pid_file(name).write_text(f"{p.pid}\n")
    return True


def _rpc(auth: bool = False, timeout: float = 5) -> xmlrpc.client.ServerProxy:
    u = f"{HOST}:{HTTP_PORT}"
    if auth:
        _, user, token = credentials()
        u = f"{user}:{token}@{u}"
    return xmlrpc.client.ServerProxy(f"http://{u}/RPC2", allow_none=True,
                                     transport=_Transport(timeout))


class _Transport(xmlrpc.client.Transport):
    def __init__(self, timeout: float):
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def server_version() -> str | None:
    try:
        return str(_rpc().system.version())
    except (OSError, xmlrpc.client.Error):
        return None


def worker_state() -> str | None:
    try:
        info = _rpc(auth=True).scheduler.workers.show(WORKER)
    except (OSError, xmlrpc.client.Error, UsageError):
        return None
    return str(info.get("state")) if isinstance(info, dict) else None


def _token_works() -> bool:
    try:
        return bool(_rpc(auth=True).system.whoami())
    except xmlrpc.client.ProtocolError:
        return False
    except (OSError, xmlrpc.client.Error, UsageError):
        return False


def _wait(what: str, ok: object, deadline: float, log: Path) -> None:
    while True:
        if callable(ok) and ok():
            return
        if time.monotonic() > deadline:
            raise InfraError(f"the LAVA lab's {what} did not come up in {UP_TIMEOUT:.0f} s", log=str(log),
                             fix="read the log; `kpipe lab down` stops what was started")
        time.sleep(0.3)


# ------------------------------------------------------------------------------------------------ commands

def up() -> int:
    """Bring the lab up (idempotent); prints the URL and where the token is."""
    t0 = time.monotonic()
    with cache.file_lock(lab_dir() / "lab.lock", "kpipe lab"):
        if all(_alive(n) for n in PROCESSES) and server_version() and worker_state() == "Online":
            print(f"kpipe lab: already up at {url()} (token: {token_file()})")
            return 0
        _install_packages()
        if os.geteuid() != 0:
            raise InfraError("kpipe lab up needs root (it writes /etc/lava-server and runs lava-server manage)",
                             fix="sudo kpipe lab up")
        state = _state()
        ver, name, online = _pg_cluster()
        if not online:
            _run(["pg_ctlcluster", ver, name, "start"], f"pg_ctlcluster {ver} {name} start", timeout=120)
            state["pg_started"] = f"{ver}/{name}"       # down stops it again; a cluster that ran stays running
            _save_state(state)
        _pg_ready()
        if state.get("db") != POSTINST or not (ETC / "settings.d/00-database.yaml").is_file():
            t1 = time.monotonic()
            _run([SYSTEM_PYTHON, POSTINST], "lava-server's database set-up (postinst.py)", timeout=600)
            state["db"] = POSTINST
            _save_state(state)
            note(f"lab: database set up and migrated ({time.monotonic() - t1:.1f} s)")
        _provision(state)
        cmds = _commands()
        _ports_free()
        started = []
        for n in PROCESSES[:-1]:
            if _start(n, *cmds[n]):
                started.append(n)
        deadline = time.monotonic() + UP_TIMEOUT
        _wait("web server (XML-RPC system.version)", lambda: server_version() is not None, deadline,
              SERVER_LOGS / "gunicorn.log")
        if not _token_works():          # a token file from another database: make a new one
            _new_api_token()
        if _start("worker", *cmds["worker"]):
            started.append("worker")
        _wait(f"worker {WORKER} (Online)", lambda: worker_state() == "Online" or _dead("worker"), deadline,
              _log("lava-worker"))
        if _dead("worker"):
            raise InfraError(f"lava-worker exited at start (read {lab_dir() / 'logs/worker.out'})",
                             log=str(_log("lava-worker")))
        for n in PROCESSES:
            if _dead(n):
                raise InfraError(f"the LAVA lab's {n} exited", log=str(lab_dir() / "logs" / f"{n}.out"))
    print(f"kpipe lab: up at {url()} in {time.monotonic() - t0:.1f} s (started: {', '.join(started) or 'none'}; "
          f"token: {token_file()}; user {USER})")
    return 0


PORTS = {"gunicorn": (HTTP_PORT,), "publisher": (PUBLISHER_PORT, EVENT_PORT)}


def _ports_free() -> None:
    """A port of a part that is not running must be free (Debian's own lava-server units, started by systemd on
    a machine that has it, listen on the same ports)."""
    import socket
    for name, ports in PORTS.items():
        if _alive(name) is not None:
            continue
        for port in ports:
            with socket.socket() as sk:
                sk.settimeout(1)
                if sk.connect_ex((HOST, port)) == 0:
                    raise InfraError(f"{HOST}:{port} (the lab's {name}) is taken by another process",
                                     fix="find it with `ss -ltnp`; if it is Debian's lava-server service: "
                                         "systemctl disable --now lava-server-gunicorn lava-publisher "
                                         "lava-scheduler")


def _dead(name: str) -> bool:
    return _alive(name) is None


def down() -> int:
    """Stop what ``up`` started (its pid files; PostgreSQL only when ``up`` started it)."""
    t0 = time.monotonic()
    with cache.file_lock(lab_dir() / "lab.lock", "kpipe lab"):
        pids = {n: p for n in PROCESSES if (p := _alive(n)) is not None}
        from .runner import descendants
        kids = {pid for p in pids.values() for pid in descendants(p)}   # lava-run and QEMU of a running job
        for pid in pids.values():
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while any(_pid_running(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in [*pids.values(), *kids]:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL) if pid in pids.values() else os.kill(pid, signal.SIGKILL)
        for n in PROCESSES:
            _pid_file(n).unlink(missing_ok=True)
        state = _state()
        pg = state.pop("pg_started", None)
        if isinstance(pg, str):
            ver, name = pg.split("/", 1)
            _run(["pg_ctlcluster", ver, name, "stop"], f"pg_ctlcluster {ver} {name} stop", timeout=120, check=False)
        _save_state(state)
    stopped = ", ".join(f"{n} ({p})" for n, p in pids.items()) or "nothing was running"
    print(f"kpipe lab: down in {time.monotonic() - t0:.1f} s: stopped {stopped}"
          + (f"; PostgreSQL {pg} stopped" if isinstance(pg, str) else ""))
    return 0


def _pid_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def status() -> int:
    """Each part of the lab, the URL and the token file (exit 0 whether it is up or not: it only reports)."""
    rows = []
    for n in PROCESSES:
        pid = _alive(n)
        rows.append(f"  {n:<10} {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")
    try:
        ver, name, online = _pg_cluster()
        pg = f"{ver}/{name} {'online' if online else 'down'}"
        pg += " (started by kpipe lab)" if _state().get("pg_started") else ""
    except InfraError as e:
        pg, online = e.message, False
    rows.append(f"  {'postgresql':<10} {pg}")
    version = server_version()
    wstate = worker_state() if version else None
    rows.append(f"  {'server':<10} {('lava-server ' + version) if version else 'not answering'} at {url()}")
    rows.append(f"  {'worker':<10} {WORKER}: {wstate or '?'}")
    rows.append(f"  {'token':<10} {token_file()} ({'present' if token_file().is_file() else 'missing'})")
    up_ = all(_alive(n) for n in PROCESSES) and bool(version) and wstate == "Online" and online
    print(f"kpipe lab: {'up' if up_ else 'down'} ({url()})\n" + "\n".join(rows))
    sys.stdout.flush()
    return 0
