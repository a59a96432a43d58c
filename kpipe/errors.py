"""The error families of kpipe, each carrying its exit code and a how-to-fix line.

Exit codes (the contract every task follows):
  0 pass, 1 the kernel misbehaved, 2 infrastructure or usage, 3 patch does not apply, 4 build failed.
"""
from __future__ import annotations

from typing import Any, TypeAlias

EXIT_PASS = 0
EXIT_KERNEL = 1
EXIT_INFRA = 2
EXIT_PATCH = 3
EXIT_BUILD = 4

EXIT_MEANING = {
    EXIT_PASS: "pass",
    EXIT_KERNEL: "the kernel misbehaved",
    EXIT_INFRA: "infrastructure or usage error",
    EXIT_PATCH: "patch does not apply",
    EXIT_BUILD: "build failed",
}

# What a task's function returns (kpipe.cli.run.run_task): an exit code, or (exit status, what it means) when the status
# is not kpipe's own (boot --cmd passes the guest command's).
TaskOutcome: TypeAlias = int | tuple[int, str]


class KpipeError(Exception):
    """Base class: a message naming what is wrong, a fix line, an exit code, optional detail lines."""

    exit_code = EXIT_INFRA
    kind = "error"

    def __init__(self, message: str, fix: str = "", detail: list[str] | None = None, log: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.detail = list(detail or [])
        self.log = log
        self.partial_results: list[Any] = []    # results a stage had when it failed (TestResult; kept on)
        self.findings: list[Any] = []           # the kernel's reports seen before it failed (Finding; kept on)

    def render(self) -> str:
        lines = [f"kpipe: {self.kind}: {self.message}"]
        lines += [f"  {d}" for d in self.detail]
        if self.log:
            lines.append(f"  log: {self.log}")
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        lines.append(f"  exit {self.exit_code} ({EXIT_MEANING[self.exit_code]})")
        return "\n".join(lines)


class UsageError(KpipeError):
    """The user asked for something that cannot be: bad option, missing file, unknown arch."""
    kind = "usage error"


class InfraError(KpipeError):
    """The machinery failed: missing tool, network, QEMU, SSH, timeouts without a kernel verdict."""
    kind = "infrastructure error"


class ConfigError(UsageError):
    """A kconfig fragment is malformed or a requested option could not be set."""
    kind = "kconfig error"


class PatchError(KpipeError):
    exit_code = EXIT_PATCH
    kind = "patch does not apply"


class BuildError(KpipeError):
    exit_code = EXIT_BUILD
    kind = "build failed"


class KernelError(KpipeError):
    """A verdict against the kernel: panic at boot, or similar."""
    exit_code = EXIT_KERNEL
    kind = "kernel failure"


class EarlyKernelError(KernelError):
    """The kernel reported something before the guest was ready (the boot, init, sshd or the SSH connect)."""

    def __init__(self, message: str, *, first_report: str, after_report_s: float | None, **kw: Any):
        super().__init__(message, **kw)
        self.first_report = first_report
        self.after_report_s = after_report_s     # host seconds from the first report to this verdict


class Interrupted(KpipeError):
    kind = "interrupted"

    def __init__(self, message: str = "interrupted by the user (SIGINT)"):
        super().__init__(message, fix="run the same command again; the cache was left consistent")
