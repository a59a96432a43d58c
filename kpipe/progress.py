"""Live progress: one status line on a terminal (rich) listing every active phase with its elapsed time,
plain timestamped lines elsewhere (CI), nothing with --quiet. Phases may nest or run in parallel threads
(``--arch all``); each phase's seconds are recorded for the results."""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Iterator

_MODE = "auto"          # auto | plain | quiet | rich
_lock = threading.RLock()
_active: list["Phase"] = []
_live = None            # the rich status while any phase is active
_stop = threading.Event()


def set_mode(mode: str) -> None:
    global _MODE
    _MODE = mode


def mode() -> str:
    if _MODE != "auto":
        return _MODE
    return "rich" if sys.stderr.isatty() else "plain"


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def note(msg: str) -> None:
    """A one-off line (where logs are, what was cached, warnings)."""
    if mode() == "quiet":
        return
    with _lock:
        if _live is not None:
            _live.console.print(f"[{_stamp()}] {msg}", markup=False, highlight=False)
        else:
            print(f"[{_stamp()}] {msg}", file=sys.stderr, flush=True)


class Phase:
    def __init__(self, name: str, detail: str = ""):
        self.name = name
        self.detail = detail
        self.start = time.monotonic()
        self.seconds = 0.0

    def update(self, detail: str) -> None:
        self.detail = detail

    def line(self) -> str:
        return f"{self.name} {time.monotonic() - self.start:5.1f}s {self.detail}".strip()


def _render() -> str:
    return "  |  ".join(p.line() for p in _active)


def _ticker() -> None:
    while not _stop.wait(0.25):
        with _lock:
            if _live is not None:
                _live.update(_render())


def _start_live() -> None:
    global _live
    from rich.console import Console
    _live = Console(stderr=True).status(_render())
    _live.start()
    _stop.clear()
    threading.Thread(target=_ticker, daemon=True).start()


def _stop_live() -> None:
    global _live
    _stop.set()
    if _live is not None:
        _live.stop()
        _live = None


@contextlib.contextmanager
def phase(name: str, detail: str = "", timings: dict[str, float] | None = None) -> Iterator[Phase]:
    """Show ``name`` live while the body runs; record its seconds in ``timings`` (added up per name)."""
    ph = Phase(name, detail)
    m = mode()
    with _lock:
        _active.append(ph)
        if m == "rich" and _live is None:
            _start_live()
    if m == "plain":
        note(f"{name}: start {detail}".rstrip())
    ok = False
    try:
        yield ph
        ok = True
    finally:
        ph.seconds = time.monotonic() - ph.start
        if timings is not None:
            timings[name] = round(timings.get(name, 0.0) + ph.seconds, 3)
        with _lock:
            _active.remove(ph)
            if m != "quiet":
                note(f"{name}: {'done' if ok else 'failed'} in {ph.seconds:.1f}s {ph.detail}".rstrip())
            if m == "rich" and not _active:
                _stop_live()
