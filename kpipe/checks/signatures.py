"""Crash signatures: a stable name for every kernel-log finding, its frames decoded to file:line, and the
same report folded wherever it was seen.

A signature is the finding's kind and the first frames of its call trace that belong to the code that went
wrong: the report machinery (dump_stack, kasan_report, __warn, ...) and the syscall entry are skipped, "? "
(unreliable) frames are dropped, offsets, addresses and compiler suffixes (.constprop.0, .isra.0) are stripped
and the arch's syscall wrapper (__x64_sys_mremap, __arm64_sys_mremap) becomes sys_mremap, so the same bug has
the same signature on x86_64 and arm64, in both premerge sides, on every bisect step and in every repeat.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..guest.findings import strip_timestamp
from ..report.results import ArchResult, Finding, RunResult

SIGNATURE_FRAMES = 3
TRACE_LINES = 12                 # the reliable frames a report prints under a signature
_TRACE_START = re.compile(r"\bCall [Tt]race:")
_FRAME_LINE = re.compile(r"^\s*(\? )?([A-Za-z_][\w.]*)\+(0x[0-9a-f]+)/0x[0-9a-f]+(?:\s+\[\w+\])?\s*$")
_MARKER = re.compile(r"^\s*</?(?:IRQ|TASK|NMI|SOFTIRQ|EOI)>\s*$")
_SUFFIX = re.compile(r"(?:\.(?:constprop|isra|part|cold|lto_priv|llvm)(?:\.\d+)?)+$")
_SYSCALL = re.compile(r"^__(?:x64|ia32|arm64|se|do)_sys_")
# report machinery and entry code: never what went wrong
_SKIP = re.compile(
    r"^(?:dump_backtrace|show_stack|dump_stack(?:_lvl)?|__dump_stack|print_address_description|"
    r"print_report|kasan_report\w*|__kasan_\w+|kasan_\w+|__asan_\w+|check_memory_region\w*|"
    r"__warn|warn_slowpath\w*|report_bug|handle_bug|exc_invalid_op|asm_exc_\w+|do_error_trap|do_trap|"
    r"die|bug_handler|brk_handler|do_debug_exception|el1_\w+|el0_\w+|do_el0_svc|el0_svc\w*|invoke_syscall|"
    r"panic|___might_sleep|__might_sleep|__might_fault|might_fault|__might_resched|"
    r"lockdep_\w+|__lock_acquire|lock_acquire|validate_chain|check_\w+_deps?|print_\w+|"
    r"__lock_release|lock_release|do_syscall_64|entry_SYSCALL_64\w*|syscall_exit\w*|ret_from_fork|"
    r"kthread|bad_page|dump_page|__dump_page|__schedule|schedule|schedule_timeout|schedule_preempt_disabled|"
    r"io_schedule\w*)$")
# the faulting instruction of an Oops/BUG: "RIP: 0010:func+0x1/0x2" (x86), "pc : func+0x1/0x2" (arm64)
_FAULT_PC = re.compile(r"^\s*(?:RIP: [0-9a-f]{4}:|pc : )([A-Za-z_][\w.]*)\+(0x[0-9a-f]+)/0x[0-9a-f]+")


def _clean(func: str) -> str:
    return _SYSCALL.sub("sys_", _SUFFIX.sub("", func))


def trace_frames(f: Finding) -> list[tuple[str, str]]:
    """(function, offset) of the reliable frames of the finding's first call trace."""
    out: list[tuple[str, str]] = []
    lines = [strip_timestamp(ln) for ln in f.context]
    start = next((i for i, ln in enumerate(lines) if _TRACE_START.search(ln)), None)
    if start is None:
        return out
    pc = next((m for ln in lines[:start] for m in [_FAULT_PC.match(ln)] if m), None)
    if pc is not None:
        out.append((pc.group(1), pc.group(2)))
    for ln in lines[start + 1:]:
        m = _FRAME_LINE.match(ln)
        if m is None:
            if _MARKER.match(ln):
                continue
            break
        if m.group(1):
            continue                    # "? " frames: stale stack contents
        if out and out[-1][0] == m.group(2) and len(out) == 1 and pc is not None:
            continue                    # the faulting function is also the trace's first frame (arm64)
        out.append((m.group(2), m.group(3)))
    return out


def _title(f: Finding) -> str:
    """The report's own line with numbers, addresses and task names stripped."""
    t = strip_timestamp(f.line).strip()
    t = re.sub(r"0x[0-9a-f]+|\b[0-9a-f]{8,}\b", "ADDR", t)
    t = re.sub(r"\+ADDR/ADDR", "", t)
    t = re.sub(r"\d+", "N", t)
    return _SUFFIX.sub("", t)


def signature(f: Finding) -> tuple[str, list[tuple[str, str]]]:
    """The signature and the frames (raw name, offset) it was made of."""
    frames = [(fn, off) for fn, off in trace_frames(f) if not _SKIP.match(_SUFFIX.sub("", fn))]
    picked = frames[:SIGNATURE_FRAMES]
    if not picked:
        return f"{f.kind}: {_title(f)}", []
    return f"{f.kind}: " + " < ".join(_clean(fn) for fn, _ in picked), picked


# ---------------------------------------------------------------- file:line from the build's vmlinux

def _addr2line_tool(arch: str) -> str | None:
    return shutil.which("aarch64-linux-gnu-addr2line" if arch == "arm64" else "addr2line")


def _symbols(system_map: Path) -> dict[str, int]:
    syms: dict[str, int] = {}
    for ln in system_map.read_text(errors="replace").splitlines():
        parts = ln.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.setdefault(parts[2], int(parts[0], 16))
    return syms


def decode(frames: list[tuple[str, str]], vmlinux: Path, system_map: Path, arch: str) -> list[str]:
    """"func file:line" for each frame (the tree-relative file), from addr2line on the build's vmlinux; a
    frame that cannot be decoded stays "func+off"."""
    tool = _addr2line_tool(arch)
    if not frames or tool is None or not vmlinux.is_file() or not system_map.is_file():
        return [f"{fn}+{off}" for fn, off in frames]
    syms = _symbols(system_map)
    addrs = [syms.get(fn) for fn, _ in frames]
    # the return address points after the call: decode the call instruction (addr - 1) as the tree's
    # decode_stacktrace.sh does
    query = [f"{a + int(off, 16) - 1:x}" for a, (_, off) in zip(addrs, frames) if a is not None]
    try:
        cp = subprocess.run([tool, "-e", str(vmlinux), *query], capture_output=True, text=True, timeout=60)
        locs = cp.stdout.splitlines() if cp.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        locs = []
    out, it = [], iter(locs)
    for a, (fn, off) in zip(addrs, frames):
        loc = next(it, "") if a is not None else ""
        loc = re.sub(r" \(discriminator \d+\)", "", loc)
        if not loc or loc.startswith("??"):
            out.append(f"{fn}+{off}")
            continue
        loc = re.sub(r"^.*?/(?=(?:arch|mm|kernel|fs|include|lib|drivers|block|net|security|ipc|init)/)", "", loc)
        out.append(f"{_clean(fn)} {loc}")
    return out


# ---------------------------------------------------------------- a run: annotate and fold

def annotate(ar: ArchResult) -> None:
    """Give each finding of one arch's result its signature and decoded frames (in place)."""
    image = Path(ar.build.image) if ar.build.image else None
    vmlinux = image.parent / "vmlinux" if image else Path("/nonexistent")
    smap = image.parent / "System.map" if image else Path("/nonexistent")
    done: dict[tuple[str, str], Finding] = {}
    new = []
    for f in ar.findings:
        if f.signature:
            new.append(f)
            continue
        key = (f.line, "\n".join(f.context[:60]))
        if key not in done:
            sig, frames = signature(f)
            done[key] = replace(f, signature=sig, frames=tuple(decode(frames, vmlinux, smap, ar.arch)))
        new.append(done[key])
    ar.findings[:] = new


def fold(seen: list[tuple[str, Finding]]) -> list[dict[str, Any]]:
    """Findings with the same signature, wherever they were seen ("x86_64", "baseline/arm64", "step-03/...")."""
    out: dict[str, dict[str, Any]] = {}
    for where, f in seen:
        e = out.setdefault(f.signature, {"signature": f.signature, "kind": f.kind,
                                         "first": strip_timestamp(f.line).strip(), "frames": list(f.frames),
                                         "trace": [f"{fn}+{off}" for fn, off in trace_frames(f)][:TRACE_LINES],
                                         "trace_from": where,
                                         "count": 0, "seen": []})
        e["count"] += 1
        if where not in e["seen"]:
            e["seen"].append(where)
    for e in out.values():
        e["arches"] = sorted({w.split("/")[-1] for w in e["seen"]})
        e["in_baseline"] = any(w.startswith("baseline/") for w in e["seen"])
        e["not_the_patch"] = e["in_baseline"]      # the base kernel reports it too
    return list(out.values())


def annotate_run(run: RunResult) -> None:
    """Signatures on every finding of a run (premerge: both sides) and run.extra.crashes folded."""
    seen: list[tuple[str, Finding]] = []
    side = "patched/" if run.workflow == "premerge" else ""
    for name, ar in run.arches.items():
        annotate(ar)
        seen += [(f"{side}{name}", f) for f in ar.findings]
    for name, ar in (run.extra.baseline or {}).items():
        annotate(ar)
        seen += [(f"baseline/{name}", f) for f in ar.findings]
    if seen:
        run.extra.crashes = fold(seen)
