"""The `kpipe` console script: invoke's Program over kpipe.cli.tasks (the same tasks `invoke` runs in the checkout),
with kpipe's exit-code contract for command-line mistakes. Above run.py and tasks.py; nothing imports it."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from . import run as cli
from .run import BISECT_ABORT
from ..errors import EXIT_INFRA, Interrupted, KpipeError, UsageError

if TYPE_CHECKING:
    from invoke.program import Program


def _program_class() -> type[Program]:
    from invoke.exceptions import Exit, ParseError, UnexpectedExit
    from invoke.program import Program

    class KpipeProgram(Program):
        """invoke's Program with kpipe's exit-code contract: a command-line mistake is exit 2 (usage), never 1
        (which means the kernel misbehaved, and which `git bisect run` would take for a bad commit)."""

        def run(self, argv: list[str] | None = None, exit: bool = True) -> None:
            bisect = "--bisect-exit-codes" in (argv if isinstance(argv, list) else sys.argv)
            try:
                self.create_config()
                self.parse_core(argv)
                self.parse_collection()
                self.parse_tasks()
                self.parse_cleanup()
                self.update_config()
                self.execute()
            except ParseError as e:
                err = UsageError(str(e), fix="see `kpipe --help` and `kpipe TASK --help`")
                print(err.render(), file=sys.stderr)
                sys.exit(BISECT_ABORT if bisect else err.exit_code)
            except KpipeError as e:          # raised while reading the config, before run_task took over
                print(e.render(), file=sys.stderr)
                sys.exit(BISECT_ABORT if bisect and type(e) is UsageError else e.exit_code)
            except Exit as e:
                if e.message:
                    print(e.message, file=sys.stderr)
                sys.exit(e.code)
            except UnexpectedExit as e:
                sys.exit(e.result.exited)
            except KeyboardInterrupt:
                print(Interrupted().render(), file=sys.stderr)
                sys.exit(EXIT_INFRA)

    return KpipeProgram


def main(argv: list[str] | None = None) -> None:
    """The `kpipe` console script: invoke's Program over kpipe.cli.tasks (the same tasks `invoke` runs in the
    checkout), runnable from any directory. Shell completion: `kpipe --print-completion-script bash`."""
    from importlib.metadata import PackageNotFoundError, version

    from invoke.collection import Collection

    from . import tasks
    from .settings import KpipeConfig
    cli.PROGRAM = "kpipe"
    try:
        ver = version("kpipe")
    except PackageNotFoundError:
        ver = "unknown"
    _program_class()(name="kpipe", binary="kpipe", binary_names=["kpipe"], version=ver,
                     namespace=Collection.from_module(tasks), config_class=KpipeConfig).run(argv)
