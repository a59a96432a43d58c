"""Live progress: one phase line with a spinner and elapsed time on a terminal (rich), plain timestamped
lines elsewhere (CI), nothing with --quiet. Every phase's seconds are recorded for the results."""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Iterator

_MODE = "auto"          # auto | plain | quiet | rich
_lock = threading.Lock()


def set_mode(mode: str) -> None:
    global _MODE
    _MODE = mode


def _mode() -> str:
    if _MODE != "auto":
        return _MODE
    return "rich" if sys.stderr.isatty() else "plain"


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def note(msg: str) -> None:
    """A one-off line (where logs are, what was cached, warnings)."""
    if _mode() == "quiet":
        return
    with _lock:
        print(f"[{_stamp()}] {msg}", file=sys.stderr, flush=True)


class Phase:
    def __init__(self, name: str, detail: str = ""):
        self.name = name
        self.detail = detail
        self.start = time.monotonic()
        self.seconds = 0.0

    def update(self, detail: str) -> None:
        self.detail = detail


@contextlib.contextmanager
def phase(name: str, detail: str = "", timings: dict | None = None) -> Iterator[Phase]:
    """Show ``name`` live while the body runs; record its seconds in ``timings`` (added up per name)."""
    ph = Phase(name, detail)
    mode = _mode()
    status = None
    if mode == "rich":
        from rich.console import Console
        console = Console(stderr=True)
        status = console.status(f"{name} {detail}")
        status.start()
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(0.5):
                status.update(f"[bold]{ph.name}[/bold] {ph.detail}  {time.monotonic() - ph.start:5.1f}s")
        t = threading.Thread(target=tick, daemon=True)
        t.start()
    elif mode == "plain":
        note(f"{name}: start {detail}".rstrip())
    ok = False
    try:
        yield ph
        ok = True
    finally:
        ph.seconds = time.monotonic() - ph.start
        if timings is not None:
            timings[name] = round(timings.get(name, 0.0) + ph.seconds, 3)
        if status is not None:
            stop.set()
            status.stop()
        if mode != "quiet":
            note(f"{name}: {'done' if ok else 'failed'} in {ph.seconds:.1f}s {ph.detail}".rstrip())
