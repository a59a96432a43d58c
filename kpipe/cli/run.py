"""Entry points behind the Invoke tasks: run a task, render errors, map everything to the exit-code contract,
clean up children on Ctrl-C/SIGTERM, and print the one-line reproducer and verdict."""
from __future__ import annotations

import shlex
import signal
import sys
import time
import traceback
from types import FrameType
from typing import Any, Callable

from .. import proc, progress
from .options import flag_of, unset
from ..errors import EXIT_MEANING, InfraError, Interrupted, KpipeError, TaskOutcome, UsageError

BISECT_MAP = {0: 0, 1: 1, 2: 125, 3: 125, 4: 125}
BISECT_ABORT = 128          # `git bisect run` stops on >= 128: a usage error is the same on every commit
PROGRAM = "invoke"          # how the reproducer names the command: `kpipe` when run through main()


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def reproducer(task: str, args: dict[str, Any]) -> str:
    parts = [PROGRAM, task]
    for k, v in args.items():
        if unset(k, v):
            continue
        flag = flag_of(k)
        if v is True:
            parts.append(flag)
        elif isinstance(v, (list, tuple)):
            for item in v:
                parts += [flag, str(item)]
        else:
            parts += [flag, str(v)]
    return shlex.join(parts)


def run_task(task: str, fn: Callable[[], TaskOutcome], args: dict[str, Any] | None = None, quiet: bool = False,
             bisect_exit_codes: bool = False) -> int:
    """Run ``fn`` (returns an exit code) under kpipe's error and signal handling."""
    progress.set_mode("quiet" if quiet else "auto")
    old = signal.signal(signal.SIGTERM, _sigterm)
    start = time.monotonic()
    repro = reproducer(task, args or {})
    if not quiet:
        print(f"kpipe: reproduce with: {repro}", file=sys.stderr)
    meaning = None
    try:
        outcome = fn()
        if isinstance(outcome, tuple):       # (exit status, what it means): boot --cmd passes the guest's status
            code, meaning = outcome
        else:
            code = outcome
    except KpipeError as e:
        print(e.render(), file=sys.stderr)
        code = e.exit_code
        if bisect_exit_codes and type(e) is UsageError:
            print(f"kpipe: bisect exit code {BISECT_ABORT} (abort: this usage error would be the same on every "
                  "commit; fix the command and run `git bisect run` again)", file=sys.stderr)
            return BISECT_ABORT
    except KeyboardInterrupt as e:
        proc.kill_all()
        why = "SIGTERM" if str(e) == f"signal {int(signal.SIGTERM)}" else "SIGINT"
        err: KpipeError = Interrupted(f"stopped by {why}; every QEMU/make child was killed, no half-written cache "
                                      "entry was kept")
        print(err.render(), file=sys.stderr)
        code = err.exit_code
    except Exception as e:      # a bug or an unforeseen host problem: never let it pass for exit 1 (kernel verdict)
        traceback.print_exc(file=sys.stderr)
        err = InfraError(f"unexpected {type(e).__name__}: {e}",
                         fix="check the message above (a path or permission problem?); if it persists, report it "
                             "with the traceback and the reproducer line")
        print(err.render(), file=sys.stderr)
        code = err.exit_code
    finally:
        proc.kill_all()
        signal.signal(signal.SIGTERM, old)
    secs = time.monotonic() - start
    print(f"kpipe: {task}: exit {code} ({meaning or EXIT_MEANING.get(code, '?')}) after {secs:.1f}s", file=sys.stderr)
    if bisect_exit_codes:
        mapped = BISECT_MAP.get(code, 125)
        print(f"kpipe: bisect exit code {mapped} ({'skip' if mapped == 125 else 'bad' if mapped else 'good'})",
              file=sys.stderr)
        return mapped
    return code
