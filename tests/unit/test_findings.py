"""Findings scanner on real-looking kernel log snippets (5.10 x86_64 and arm64 formats)."""
from __future__ import annotations

from kpipe.guest.findings import CONTEXT_LINES, Scanner, classify, scan_text, summarize

CLEAN_BOOT = """\
[    0.000000] Linux version 5.10.262 (root@host) (gcc (Debian 12.2.0-14) 12.2.0) #1 Thu Nov 26 2026
[    0.000000] Command line: console=ttyS0 panic=-1
[    0.000000] x86/fpu: x87 FPU will use FXSAVE
[    0.010000] Spectre V2 : Mitigation: Retpolines
[    0.020000] clocksource: refined-jiffies: mask: 0xffffffff max_cycles: 0xffffffff
[    0.728019] virtio-pci 0000:00:01.0: PCI->APIC IRQ transform: INT A -> IRQ 10
[    1.032038] Run /init as init process
[    3.372184] random: crng init done
"""

X86_NULL_DEREF = """\
[   12.345678] BUG: kernel NULL pointer dereference, address: 0000000000000008
[   12.345900] #PF: supervisor read access in kernel mode
[   12.346000] #PF: error_code(0x0000) - not-present page
[   12.346100] PGD 0 P4D 0
[   12.346200] Oops: 0000 [#1] SMP NOPTI
[   12.346300] CPU: 0 PID: 57 Comm: verify_mremap Not tainted 5.10.262 #1
[   12.346400] RIP: 0010:move_vma+0x1d2/0x3c0
[   12.346500] Call Trace:
[   12.346600]  __x64_sys_mremap+0x2f0/0x4a0
[   12.346700]  do_syscall_64+0x33/0x40
"""

WARN_CUT_HERE = """\
[    5.000000] ------------[ cut here ]------------
[    5.000100] WARNING: CPU: 0 PID: 61 at mm/mremap.c:512 move_vma+0x99/0x3c0
[    5.000200] Modules linked in:
[    5.000300] CPU: 0 PID: 61 Comm: mremap_dontunm Not tainted 5.10.262 #1
[    5.000400] ---[ end trace 1c2d3e4f5a6b7c8d ]---
"""

ARM64_OOPS = """\
[   20.100000] Unable to handle kernel NULL pointer dereference at virtual address 0000000000000010
[   20.100100] Mem abort info:
[   20.100200]   ESR = 0x96000005
[   20.100300] Internal error: Oops: 96000005 [#1] SMP
[   20.100400] CPU: 0 PID: 70 Comm: userfaultfd Not tainted 5.10.262 #1
[   20.100500] pc : handle_userfault+0x10/0x4a0
"""

KASAN = """\
[    9.000000] ==================================================================
[    9.000100] BUG: KASAN: use-after-free in move_page_tables+0x5c/0x6a0
[    9.000200] Read of size 8 at addr ffff888006f1e000 by task mremap_test/80
"""

PANIC = """\
[    1.100000] Run /nonexistent as init process
[    1.100100] Kernel panic - not syncing: Requested init /nonexistent failed (error -2).
[    1.100200] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 5.10.262 #1
[    1.100300] Call Trace:
[    1.100400]  dump_stack+0x6d/0x88
[    1.100500]  panic+0xf6/0x2b7
[    1.100600] Kernel Offset: disabled
[    1.100700] ---[ end Kernel panic - not syncing: Requested init /nonexistent failed (error -2). ]---
"""

HUNG_AND_RCU = """\
[  245.000000] INFO: task uffd-stress:91 blocked for more than 120 seconds.
[  245.000100]       Not tainted 5.10.262 #1
[  300.000000] rcu: INFO: rcu_sched self-detected stall on CPU
[  300.000100] rcu: \t0-....: (5249 ticks this GP) idle=a5e/1/0x4000000000000002
[  310.000000] general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#2] SMP NOPTI
"""


def kinds(text: str) -> list[str]:
    return [f.kind for f in scan_text(text, "dmesg")]


def test_clean_boot_has_no_findings():
    assert scan_text(CLEAN_BOOT, "console") == []


def test_x86_null_deref_gives_bug_and_oops_with_context():
    found = scan_text(X86_NULL_DEREF, "dmesg")
    assert [f.kind for f in found] == ["bug", "oops"]
    bug = found[0]
    assert bug.source == "dmesg"
    assert "NULL pointer dereference" in bug.line
    assert any("move_vma" in ln for ln in bug.context)
    assert found[1].context[0].endswith("Comm: verify_mremap Not tainted 5.10.262 #1")


def test_cut_here_followed_by_warning_is_one_warning():
    found = scan_text(WARN_CUT_HERE, "console")
    assert [f.kind for f in found] == ["warning"]
    assert "mm/mremap.c:512" in found[0].line


def test_cut_here_alone_is_a_warning():
    text = "[ 1.0] ------------[ cut here ]------------\n[ 1.1] a\n[ 1.2] b\n[ 1.3] c\n"
    found = scan_text(text, "console")
    assert [f.kind for f in found] == ["warning"]
    assert "cut here" in found[0].line


def test_arm64_oops():
    assert kinds(ARM64_OOPS) == ["oops"]


def test_kasan_is_not_reported_as_plain_bug():
    assert kinds(KASAN) == ["kasan"]


def test_panic_counted_once_and_end_line_is_context():
    found = scan_text(PANIC, "console")
    assert [f.kind for f in found] == ["panic"]
    assert "Requested init /nonexistent failed" in found[0].line
    assert any("end Kernel panic" in ln for ln in found[0].context)


def test_hung_task_rcu_stall_gpf():
    assert kinds(HUNG_AND_RCU) == ["hung_task", "rcu_stall", "gpf"]
    assert summarize(scan_text(HUNG_AND_RCU, "dmesg")) == {"hung_task": 1, "rcu_stall": 1, "gpf": 1}


def test_streaming_scanner_keeps_bounded_context_and_reports_kind_live():
    s = Scanner("console")
    assert s.feed("[ 1.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\r\n") == "panic"
    for i in range(CONTEXT_LINES + 15):
        assert s.feed(f"[ 1.{i}] trace line {i}") is None
    (f,) = s.findings
    assert len(f.context) == CONTEXT_LINES
    assert f.context[0] == "[ 1.0] trace line 0"
    assert not f.line.endswith("\r\n")


def test_classify_words_that_only_look_alike():
    assert classify("[ 0.1] ACPI: bus type PCI registered") is None
    assert classify("[ 0.1] DEBUG: something") is None
    assert classify("[ 0.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!") == "soft_lockup"
    assert classify("[ 0.1] kernel BUG at mm/mremap.c:300!") == "kernel_bug"


# ------------------------------------------------------------------------------------------------ debug kernels
# Report formats of 5.10's debug options (the header lines are the kernel's own strings). The test kernel's
# debug mutants (tests/patches/test-kernel.patch) produce real ones: see the golden-file tests below.

LOCKDEP_CIRCULAR = """\
[   30.100000] ======================================================
[   30.100001] WARNING: possible circular locking dependency detected
[   30.100002] 5.10.262 #1 Not tainted
[   30.100003] ------------------------------------------------------
[   30.100004] mremap_dontunma/95 is trying to acquire lock:
[   30.100005] ffff888004a1e0a8 (&mapping->i_mmap_rwsem){++++}-{3:3}, at: vma_to_resize+0x1f5/0x3c0
"""
LOCKDEP_INCONSISTENT = """\
[   31.000000] ================================
[   31.000001] WARNING: inconsistent lock state
[   31.000002] 5.10.262 #1 Not tainted
[   31.000003] --------------------------------
[   31.000004] inconsistent {SOFTIRQ-ON-W} -> {IN-SOFTIRQ-W} usage.
"""
RCU_SUSPICIOUS = """\
[   32.000000] =============================
[   32.000001] WARNING: suspicious RCU usage
[   32.000002] 5.10.262 #1 Not tainted
[   32.000003] -----------------------------
[   32.000004] include/linux/rcupdate.h:339 Illegal context switch in RCU read-side critical section!
"""
UBSAN = """\
[   33.000000] ================================================================================
[   33.000001] UBSAN: shift-out-of-bounds in mm/mremap.c:500:20
[   33.000002] shift exponent 64 is too large for 64-bit type 'long unsigned int'
"""
KFENCE = """\
[   34.000000] ==================================================================
[   34.000001] BUG: KFENCE: use-after-free read in vma_to_resize+0xb3/0x143
"""
BAD_PAGES = """\
[   35.000000] BUG: Bad page state in process mremap_dontunma  pfn:05e4c
[   35.000001] BUG: Bad page map in process mremap_dontunma  pte:8000000005e4c067 pmd:05e4d067
[   35.000002] BUG: Bad rss-counter state mm:000000004b5a7d4b type:MM_ANONPAGES val:1
"""
LOCKUPS = """\
[   60.000000] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [mremap_dontunma:95]
[   61.000000] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:
[   62.000000] INFO: task mremap_dontunma:95 blocked for more than 15 seconds.
"""
SYSRQ_W = """\
[   70.000000] sysrq: Show Blocked State
[   70.000001] task:mremap_dontunma state:D stack:27448 pid:   95 ppid:    93 flags:0x00004000
[   70.000002] Call Trace:
[   70.000003]  __schedule+0x5a4/0xd40
[   70.000004]  schedule+0x7a/0x110
[   70.000005]  schedule_timeout+0x1c4/0x220
[   70.000006]  wait_for_completion+0x112/0x1a0
[   70.000007]  vma_to_resize+0x2b1/0x3e0
[   70.000008]  __x64_sys_mremap+0x2f0/0x4a0
[   70.000009] task:kworker/u4:1    state:I stack:28864 pid:   30 ppid:     2 flags:0x00004000
[   70.000010] sysrq: Show backtrace of all active CPUs
[   70.000011] NMI backtrace for cpu 0
[   70.000012] task:late_after_dump state:D stack:0 pid:   99 ppid:    93 flags:0x00004000
"""
NOISE = """\
[    0.100000] kasan: KernelAddressSanitizer initialized
[    0.200000] Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar
[    0.300000] INFO: lockdep is turned off.
[    0.400000] BUG: MAX_LOCKDEP_ENTRIES too low!
[    0.400001] turning off the locking correctness validator.
[    0.500000] sysrq: Show Blocked State
[    0.500001] sysrq: Show backtrace of all active CPUs
"""


def test_each_debug_report_kind():
    assert kinds(LOCKDEP_CIRCULAR) == ["lockdep_circular"]
    assert kinds(LOCKDEP_INCONSISTENT) == ["lockdep_inconsistent"]
    assert kinds(RCU_SUSPICIOUS) == ["rcu_suspicious"]
    assert kinds(UBSAN) == ["ubsan"]
    assert kinds(KFENCE) == ["kfence"]
    assert kinds(BAD_PAGES) == ["bad_page_state", "bad_page_map", "bad_rss_counter"]
    assert kinds(LOCKUPS) == ["soft_lockup", "rcu_stall", "hung_task"]


def test_sysrq_w_lists_only_tasks_in_d_state_inside_the_dump():
    from kpipe.guest.findings import blocked_task_name, describe, trace_of

    found = scan_text(SYSRQ_W, "console")
    assert [f.kind for f in found] == ["blocked_task"]      # not the idle kworker, not after the next dump
    assert blocked_task_name(found[0].line) == "mremap_dontunma:95"
    assert "vma_to_resize+0x2b1/0x3e0" in trace_of(found[0])
    assert "'mremap_dontunma:95'" in describe(found[0])
    (hung,) = [f for f in scan_text(LOCKUPS, "console") if f.kind == "hung_task"]
    assert blocked_task_name(hung.line) == "mremap_dontunma:95"


VFORK_ENTRY = """\
[   70.000020] task:timeout         state:D stack:    0 pid:  105 ppid:   103 flags:0x00000000
[   70.000021] Call Trace:
[   70.000022]  __schedule+0x709/0x764
[   70.000023]  schedule+0x63/0xa0
[   70.000024]  schedule_timeout+0x74/0x150
[   70.000025]  __wait_for_common+0x120/0x21e
[   70.000026]  wait_for_completion_killable+0x1b/0x2f
[   70.000027]  kernel_clone+0x29d/0x33d
[   70.000028]  __do_sys_vfork+0x79/0x8d
[   70.000029]  do_syscall_64+0x2d/0x3a
"""


def test_a_vfork_parent_waiting_for_its_child_is_not_a_blocked_task():
    """A vfork() parent sleeps killably (D) until its child execs or exits: set aside once its trace shows it,
    before or after a really blocked task in the same dump, and when the console ends inside its trace."""
    from kpipe.guest.findings import Scanner, blocked_task_name
    header, mremap, rest = SYSRQ_W.partition("[   70.000001]")[0], "[   70.000001]" + \
        SYSRQ_W.partition("[   70.000001]")[2].partition("[   70.000009]")[0], \
        "[   70.000009]" + SYSRQ_W.partition("[   70.000009]")[2]
    for text in (header + VFORK_ENTRY + mremap + rest, header + mremap + VFORK_ENTRY + rest):
        s = Scanner("console")
        said = [k for k in map(s.feed, text.splitlines()) if k]
        assert said == ["blocked_task"], said
        assert [blocked_task_name(f.line) for f in s.findings] == ["mremap_dontunma:95"]
        assert [blocked_task_name(ln) for ln in s.vfork_waits] == ["timeout:105"]
    assert kinds(header + VFORK_ENTRY) == []                          # the console ends in its trace
    # a blocked task's entry is a finding when the next line is not its own: the next entry, dump or the end
    s = Scanner("console")
    said = [s.feed(ln) for ln in (header + mremap).splitlines()]
    assert not any(said) and s.findings == []                         # its trace may still show a vfork
    s.close()
    assert [f.kind for f in s.findings] == ["blocked_task"]


def test_debug_kernel_noise_is_not_a_finding():
    assert kinds(NOISE) == []


# ------------------------------------------------------------------------------------------------ golden logs
# Serial consoles of real debug-kernel runs (tests/e2e/test_debug_kernel.py and the zero-findings run of
# tests/e2e/test_workflows.py write them): exactly these kinds.
import tomllib  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

GOLDEN = Path(__file__).parents[1] / "data" / "findings"
EXPECTED = tomllib.loads((GOLDEN / "expected.toml").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_console_of_a_real_run(name):
    from kpipe.guest.findings import trace_of

    want = EXPECTED[name]
    found = scan_text((GOLDEN / f"{name}.log").read_text(errors="replace"), "console")
    assert sorted({f.kind for f in found}) == sorted(want["kinds"]), [(f.kind, f.line) for f in found]
    for kind in want.get("trace_through", {}):
        f = next(f for f in found if f.kind == kind)
        frames = trace_of(f)
        assert any(want["trace_through"][kind] in fr for fr in frames), (kind, frames)
    if "blocked" in want:
        from kpipe.guest.findings import blocked_task_name
        names = {blocked_task_name(f.line) for f in found if f.kind in ("blocked_task", "hung_task")}
        assert any(n and n.startswith(want["blocked"]) for n in names), names


# The kernel's own message texts (5.10 kernel/locking/lockdep.c, kernel/rcu/tree_exp.h, tree_stall.h, tasks.h;
# arch/x86/kernel/traps.c show_signal) that the scanner once missed or misread.
def test_lockdep_non_static_key_is_a_lockdep_finding():
    text = ("[    7.100000] INFO: trying to register non-static key.\n"
            "[    7.100100] The code is fine but needs lockdep annotation, or maybe\n"
            "[    7.100200] you didn't initialize this object before use?\n")
    assert summarize(scan_text(text, "console")) == {"lockdep": 1}


def test_every_rcu_stall_flavour_is_a_stall():
    for line in ("rcu: INFO: rcu_sched detected expedited stalls on CPUs/tasks: { 1-... } 21003 jiffies s: 93",
                 "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: {",
                 "rcu: INFO: rcu_tasks detected stalls on tasks:",
                 "rcu: INFO: rcu_tasks_trace detected stalls on tasks:",
                 "rcu: INFO: rcu_sched self-detected stall on CPU",
                 "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:"):
        assert classify(f"[   40.000000] {line}") == "rcu_stall", line


def test_a_user_space_gpf_is_not_a_kernel_report():
    line = ("[   30.200000] traps: mremap_test[91] general protection fault ip:401d2e sp:7ffd4c1e8f40 error:0 in "
            "mremap_test[401000+93000]")
    assert classify(line) is None
    # the kernel's own GPF still is one
    assert classify("[   30.300000] general protection fault, probably for non-canonical address "
                    "0xdead000000000100: 0000 [#1] SMP KASAN") == "gpf"


def test_a_report_inside_another_writers_console_line_is_found():
    # the guest's sshd logs to the same console; another CPU's partial line can precede a report too
    console = ("[   28.000000] dropbear[97]: Child connection from 10.0.2.2:40112[   33.418001] watchdog: BUG: soft "
               "lockup - CPU#1 stuck for 23s! [init:1]\n"
               "[   33.418100] Modules linked in:\n"
               "CPU1: partial line[   33.500000] INFO: task dropbear:97 blocked for more than 15 seconds.\n")
    found = scan_text(console, "console")
    assert [f.kind for f in found] == ["soft_lockup", "hung_task"]
    assert found[0].line.startswith("[   33.418001] watchdog: BUG: soft lockup"), found[0].line
    assert "blocked for more than" in found[1].line and not found[1].line.startswith("CPU1")


def test_kmemleak_reports_and_kmemleak_turning_itself_off():
    report = ("unreferenced object 0xffff888006a3c000 (size 200):\n"
              "  comm \"mremap_dontunmap\", pid 88, jiffies 4294902334 (age 21.340s)\n"
              "  backtrace:\n"
              "    [<000000003a2f6a4b>] vm_area_dup+0x1f/0x150\n"
              "    [<00000000b4f1c2d7>] move_vma+0x2a1/0x6b0\n")
    found = scan_text(report, "kmemleak")
    assert [f.kind for f in found] == ["kmemleak"]
    assert any("move_vma" in c for c in found[0].context)
    assert classify("[    0.000000] kmemleak: Memory pool empty, consider increasing "
                    "CONFIG_DEBUG_KMEMLEAK_MEM_POOL_SIZE") == "kmemleak_off"
    assert classify("[    2.000000] kmemleak: Kernel memory leak detector disabled") == "kmemleak_off"
    assert classify("[    2.000000] kmemleak: Kernel memory leak detector initialized (mem pool available: "
                    "39123)") is None


def test_a_report_on_the_console_and_in_dmesg_counts_once():
    """Captured from a real run (5.10 + seed + the warn fault, then boot-faults.patch with kpipe_fault=warn,
    now the test kernel's warn mutant; arm64): the WARNING is on the console and again in the dmesg read after
    the tests; it is one report."""
    from kpipe.guest.findings import not_seen_on
    here = Path(__file__).parents[1] / "data" / "consoles" / "boot-warn-arm64"
    console = scan_text((here / "serial.log").read_text(), "console")
    dmesg = scan_text((here / "dmesg.log").read_text(), "dmesg")
    assert [f.kind for f in console] == ["warning"] and [f.kind for f in dmesg] == ["warning"]
    assert not_seen_on(console, dmesg) == []
    # a record the console never showed (its loglevel filtered it, or the console fell behind) is kept
    assert not_seen_on([], dmesg) == dmesg


def test_hard_lockup_is_a_stuck_kind():
    """kernel/watchdog_hld.c's report (perf NMI watchdog) is a lockup like the soft one: it ends a boot."""
    from kpipe.guest.findings import ENDS_BOOT_KINDS, STUCK_KINDS
    line = "[   41.017329] NMI watchdog: Watchdog detected hard LOCKUP on cpu 1"
    assert classify(line) == "hard_lockup" and "hard_lockup" in STUCK_KINDS & ENDS_BOOT_KINDS


def test_a_warnings_own_message_opens_its_context():
    """WARN(cond, fmt) prints fmt between "cut here" and "WARNING: CPU:" (the real boot-warn console)."""
    here = Path(__file__).parents[1] / "data" / "consoles" / "boot-warn-arm64"
    [f] = scan_text((here / "serial.log").read_text(), "console")
    assert f.line.split("] ", 1)[1].startswith("WARNING: CPU: 1 PID: 1 at mm/mremap.c:")
    assert "kpipe test fault: a WARNING during boot" in f.context[0]
    assert any("Call trace:" in ln for ln in f.context)
