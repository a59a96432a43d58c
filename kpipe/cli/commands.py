"""What each stage task does (fetch, apply, build, image, boot); workflows live in kpipe/workflows/flows.py.
Each returns an exit code; errors are raised as KpipeError and rendered by run.run_task."""
from __future__ import annotations

import sys

from ..guest import image, qemu
from ..arches import resolve_arches
from ..build.kernel import last_kernel, remember_kernel
from ..errors import EXIT_PASS, InfraError, TaskOutcome
from ..workflows.pipeline import (Options, apply, build_kernel, locked_checkout, new_run_dir, resolve_tree, series_of,
                                  with_suite)
from ..progress import note


def fetch(opts: Options) -> int:
    t = resolve_tree(opts)
    print(f"{t.spec}: {t.base_label} {t.base[:12]}" + (f" (Debian {t.version})" if t.version else "") + f" in {t.repo}")
    return EXIT_PASS


def apply_only(opts: Options) -> int:
    run_dir = new_run_dir(opts.out, "apply")
    tree = resolve_tree(opts, run_dir / "fetch.log")
    series = series_of(opts)
    with locked_checkout(tree, run_dir / "apply.log") as co:
        a = apply(co, series, run_dir / "apply.log")
    if series.title:
        print(f"series: {series.title} (cover letter skipped)")
    if series.revision is not None:
        print(f"thread: v{series.revision} <{series.message_id}>" + (f" {series.link}" if series.link else ""))
        for n in series.notes:
            print(f"b4: {n}")
        sp = series.since_previous
        if sp is not None:
            counts = ", ".join(f"{n} {s}" for s, n in sp.counts().items()) or "nothing compared"
            print(f"since v{sp.previous}: {counts}" + (f" ({sp.note})" if sp.note else ""))
    for p in a.patches:
        print(f"{p.status:16} {p.file}  {p.subject}  {p.commit[:12]}" + (f"  from {p.origin}" if p.origin else ""))
    print(f"scratch checkout {a.checkout.path} at {a.head[:12]} (base {tree.base_label})")
    return EXIT_PASS


def build(opts: Options) -> int:
    arches = resolve_arches(opts.arch)      # a bad --arch fails before any fetch, checkout or run folder
    run_dir = new_run_dir(opts.out, "build")
    tree = resolve_tree(opts, run_dir / "fetch.log")
    with locked_checkout(tree, run_dir / "apply.log") as co:
        series = series_of(opts)
        opts = with_suite(opts, series)
        a = apply(co, series, run_dir / "apply.log")
        for arch in arches:
            k, cfg = build_kernel(arch, a, opts, run_dir / arch.name / "build.log", touched=series.touched)
            remember_kernel(k, cfg.profile)
            print(f"{arch.name}: {k.release} ({cfg.profile} profile) "
                  f"{'cached' if k.cached else f'built in {k.seconds:.1f}s'}: {k.image}")
            print(f"  vmlinux {k.vmlinux}\n  System.map {k.system_map}\n  .config {k.config}\n  headers {k.headers}\n"
                  f"  compiler {k.compiler}\n  key {k.key}")
    return EXIT_PASS


def build_image(opts: Options) -> int:
    arches = resolve_arches(opts.arch)
    run_dir = new_run_dir(opts.out, "image")
    for arch in arches:
        i = image.build_image(arch, run_dir / f"image-{arch.name}.log")
        print(f"{arch.name}: {i.path} ({'cached' if i.cached else f'built in {i.seconds:.1f}s'}; key {i.key})")
    return EXIT_PASS


def boot(opts: Options, cmd: str | None, shell: bool) -> TaskOutcome:
    kernel, prof = last_kernel(resolve_arches(opts.arch)[0])
    arch = prof.guest_arch(resolve_arches(opts.arch)[0])
    run_dir = new_run_dir(opts.out, "boot")
    initrd = image.build_image(arch, run_dir / "image.log")
    note(f"booting {arch.name} {kernel.release} ({prof.name} profile, {arch.smp} vCPU); "
         f"console log {run_dir / 'serial.log'}")
    with qemu.boot(arch, kernel.image, initrd, run_dir, accel=opts.accel, timeout=opts.boot_timeout,
                   cmdline_extra=opts.kernel_args) as guest:
        note(f"{arch.name} ready in {guest.boot_seconds:.1f}s ({guest.accel}: {guest.accel_reason}); "
             f"ssh port {guest.port}")
        if shell:
            return _interactive(guest), "the guest shell's exit status"
        res = guest.session.run(cmd or "uname -a", timeout=120)
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        if res.timed_out:
            raise InfraError(f"command timed out in the guest: {cmd}")
        if cmd:
            if res.exit_status is None:     # no exit-status message: exit code unknown, not a pass
                raise InfraError(f"the guest sent no exit status for the command: {cmd}",
                                 fix="the guest may have crashed: read serial.log")
            return res.exit_status, "the guest command's exit status"
        return EXIT_PASS


def _interactive(guest: qemu.Guest) -> int:
    """An interactive shell in the guest: the host's OpenSSH client, pinned to this run's host key."""
    import subprocess
    note("interactive shell in the guest; `exit` (or Ctrl-D) ends it and stops the guest")
    return subprocess.run(guest.ssh_command()).returncode
