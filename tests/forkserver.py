"""`python -m invoke ARGS` (or `python -m kpipe ARGS`) as a real process of its own, without paying for a new
interpreter and kpipe's imports on every call (~0.4-0.8 s each on a busy 2-CPU host; the fast tier runs the CLI
about a hundred times).

A zygote process started once per session imports invoke and kpipe's task modules, then forks one child per run.
The child is what `python -m invoke` would be after its imports: it takes the caller's stdin, stdout and stderr
(passed as file descriptors), environment, working directory and argv, runs invoke's __main__ through runpy, and
exits with Python's exit status. kpipe's own children see the caller's environment as in a real run; a run is a
process with its own pid, locks, signal handlers and module state (imports only: nothing of an earlier run).

What stays a real `python -m invoke`: every call from an e2e test (tests/e2e/: the command exactly as a user runs
it), a call whose environment changes a PYTHON* variable (imports would differ; adding the checkout to
PYTHONPATH does not: the zygote imported kpipe from it) and, in the test files, the tests
that signal or race runs (they start them with Popen themselves).
KPIPE_TEST_NO_FORKSERVER=1 turns the zygote off (every call a new interpreter)."""
from __future__ import annotations

import atexit
import importlib.util
import json
import locale
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent)
REPO_ROOT = Path(__file__).resolve().parent.parent
PRELOAD = ("invoke", "invoke.main", "invoke.program", "invoke.loader", "kpipe.cli.tasks", "kpipe.cli.program")


def _python_vars(env: dict) -> dict:
    """What decides a new interpreter's imports; PYTHONPATH as its entries in order, each once, less the checkout:
    the zygote imported kpipe from it (its working directory), as a new interpreter that has the checkout on its
    PYTHONPATH does (the fast tier's `python -m kpipe` runs put it there); a run's sys.path is its own
    PYTHONPATH's (_run)."""
    out = {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONPATH"}
    entries = [os.path.realpath(e) for e in env.get("PYTHONPATH", "").split(os.pathsep) if e]
    out["PYTHONPATH"] = str([e for e in dict.fromkeys(entries) if e != os.path.realpath(REPO_ROOT)])
    return out


def _sys_path(cwd: str, pythonpath: str, rest: list[str]) -> list[str]:
    """A new interpreter's sys.path for `python -m` in ``cwd``: the cwd, then PYTHONPATH's entries (an empty one is
    the cwd again) and ``rest`` (the standard library and site-packages), each of those once (site.py)."""
    entries = [os.path.join(cwd, e) if e else cwd for e in pythonpath.split(os.pathsep)] if pythonpath else []
    return [cwd, *dict.fromkeys([*map(os.path.normpath, entries), *rest])]


_REST: list[str] = []       # the zygote's sys.path without its own cwd, TESTS and PYTHONPATH entries (serve)


# ------------------------------------------------------------------------------------------------ zygote side

def _child(conn: socket.socket, lsock: socket.socket) -> None:
    """The handler forked for one request: forks the run, reports its pid and then its exit status."""
    lsock.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)       # the zygote ignores it (auto-reap): waitpid needs it back
    msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    while not msg.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            os._exit(1)
        msg += more
    req = json.loads(msg)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run(req, fds)                                  # never returns
    for fd in fds:
        os.close(fd)
    conn.sendall(f"pid {pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
    os._exit(0)


def _run(req: dict, fds: list[int]) -> None:
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        sys.argv = [req["argv0"], *req["args"]]
        sys.path[:] = _sys_path(req["cwd"], req["env"].get("PYTHONPATH", ""), _REST)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import runpy
        try:
            runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            import traceback
            traceback.print_exc()
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)     # as Python does: die of the signal
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        threading._shutdown()        # type: ignore[attr-defined]  # as at interpreter exit: join non-daemon threads
        atexit._run_exitfuncs()
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:
                pass
        os._exit(code & 0xFF)


def serve(path: str) -> None:
    """The zygote: import, then fork a handler per connection until the test session (its parent) is gone."""
    import importlib
    import pkgutil
    for name in PRELOAD:
        importlib.import_module(name)
    import kpipe           # and every module a task imports when it runs (paramiko, jinja2, ...): one that fails
    for mod in pkgutil.walk_packages(kpipe.__path__, "kpipe."):     # here is imported (and fails) in the run again
        if not mod.name.endswith("__main__"):
            try:
                importlib.import_module(mod.name)
            except Exception:
                pass
    own = set(_sys_path(os.getcwd(), os.environ.get("PYTHONPATH", ""), []))
    _REST[:] = [p for p in sys.path if p not in ("", TESTS) and p not in own]
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(16)
    lsock.settimeout(1.0)
    print("ready", flush=True)
    while os.getppid() == parent:
        try:
            conn, _ = lsock.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            try:
                _child(conn, lsock)
            finally:
                os._exit(1)
        conn.close()


# ------------------------------------------------------------------------------------------------ test side

class _Zygote:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="kpipe-zygote-")
        self.path = os.path.join(self.dir, "sock")
        # no KPIPE_* in its environment: tests look for a run's processes by the KPIPE_CACHE in /proc/PID/environ
        env = {k: v for k, v in os.environ.items() if not k.startswith("KPIPE_")}
        log = open(os.path.join(self.dir, "zygote.log"), "wb")
        self.p = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {TESTS!r}); "
                                   f"import forkserver; forkserver.serve({self.path!r})"],
                                  cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=log, text=True)
        log.close()
        assert self.p.stdout is not None
        if self.p.stdout.readline().strip() != "ready":
            raise RuntimeError("the invoke zygote did not start:\n" + Path(self.dir, "zygote.log").read_text())
        atexit.register(self.stop)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


_zygote: _Zygote | None = None
_lock = threading.Lock()


def _in_an_e2e_test() -> bool:
    """The e2e tier runs the command exactly as a user does (a new interpreter, whose run boots QEMU and builds
    kernels); the zygote is for the fast tier's many short CLI runs. Set by pytest for a test's setup, call and
    teardown, so a session fixture first asked for by an e2e test counts too."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    return current.startswith("tests/e2e/") or "/tests/e2e/" in current


def run_invoke(args: list[str], cwd: Path, env: dict, timeout: float,
               stdin: int | None = None) -> subprocess.CompletedProcess:
    """What ``subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, env=env, capture_output=True,
    text=True, timeout=timeout, stdin=stdin)`` returns, from a child of the zygote."""
    return run_module("invoke", args, cwd, env, timeout, stdin)


def run_module(module: str, args: list[str], cwd: Path, env: dict, timeout: float,
               stdin: int | None = None) -> subprocess.CompletedProcess:
    """What ``subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
    text=True, timeout=timeout, stdin=stdin)`` returns, from a child of the zygote (``module``: invoke or kpipe)."""
    global _zygote
    cmd = [sys.executable, "-m", module, *args]
    if os.environ.get("KPIPE_TEST_NO_FORKSERVER") == "1" or _python_vars(env) != _python_vars(os.environ) \
            or _in_an_e2e_test():
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=stdin)
    with _lock:
        if _zygote is None or _zygote.p.poll() is not None:
            _zygote = _Zygote()
        path = _zygote.path
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            open(os.devnull, "rb") as devnull, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        in_fd = devnull.fileno() if stdin == subprocess.DEVNULL else 0
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.submodule_search_locations, module
        req = {"module": module, "args": args, "env": env, "cwd": str(cwd),
               "argv0": os.path.join(spec.submodule_search_locations[0], "__main__.py")}
        socket.send_fds(s, [json.dumps(req).encode() + b"\n"], [in_fd, out.fileno(), err.fileno()])
        s.settimeout(timeout)
        lines = s.makefile("r")
        pid = int(lines.readline().split()[1])
        try:
            line = lines.readline()
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            raise subprocess.TimeoutExpired(cmd, timeout) from None
        if not line.startswith("exit "):
            log = Path(_zygote.dir, "zygote.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the invoke zygote lost the run of {args}: {line!r}\n{log}")
        code = int(line.split()[1])
        return subprocess.CompletedProcess(cmd, code, _text(out), _text(err))


def _text(f) -> str:
    """As subprocess's text=True reads a pipe: the locale's encoding, universal newlines."""
    f.seek(0)
    return f.read().decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")
