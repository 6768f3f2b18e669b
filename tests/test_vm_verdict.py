"""The VM run's verdict on the kernel log (tests/vm/run.sh runs
tests/device/kernel_log.py on the guest's dmesg): trouble fails the run,
the OOM report the out-of-memory test provokes on purpose does not.

Host-side: the script is plain Python, run as run.sh runs it."""
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "device" / "kernel_log.py"

BOOT = """\
[    0.590587] rcu: Hierarchical SRCU implementation.
[    1.287325] PCI: Using host bridge windows from ACPI; if necessary, use "pci=nocrs" and report a bug
[    4.934430] mmapdev-vmtest: start
[  186.838660] mmapdev: 1 device(s) of 1048576 bytes, mode 0600, heartbeat 0 ms
"""

# The report that failed the sid kernel's run of the final rehearsal of
# session 24 (its test passed; run.sh's grep for "Call Trace" did not),
# cut short: the kernel's teardown of the failed load invoked the OOM killer.
TEARDOWN_OOM = """\
[  232.137929] mmapdev: cannot allocate 552247296 bytes for mmapdev0
[  232.157201] kthreadd invoked oom-killer: gfp_mask=0x2dc2(GFP_KERNEL|__GFP_HIGHMEM|__GFP_ZERO|__GFP_NOWARN), order=0, oom_score_adj=0
[  232.158894] Call Trace:
[  232.159873]  <TASK>
[  232.160149]  dump_stack_lvl+0x5d/0x80
[  232.166613] active_anon:0 inactive_anon:8870 isolated_anon:0
                active_file:0 inactive_file:10 isolated_file:0
[  232.175737] Out of memory: Killed process 181 (python3.11) total-vm:195900kB, anon-rss:30488kB
[  238.509985] mmapdev: 1 device(s) of 1048576 bytes, mode 0600, heartbeat 0 ms
"""

OOM_WITHOUT_OUR_FAILURE = TEARDOWN_OOM.replace(
    "mmapdev: cannot allocate 552247296 bytes for mmapdev0", "mmapdev: unloaded")

WARNING = "[  300.000001] WARNING: CPU: 1 PID: 77 at mm/vmalloc.c:3000 vfree+0x10/0x20\n"
OOPS = "[  300.000002] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"


def verdict(tmp_path, log):
    dmesg = tmp_path / "dmesg.txt"
    dmesg.write_text(log)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(dmesg)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, proc.stdout.splitlines()


def test_a_clean_log_and_the_provoked_oom_report_pass(tmp_path):
    assert verdict(tmp_path, BOOT) == (0, [])
    assert verdict(tmp_path, BOOT + TEARDOWN_OOM) == (0, [])


def test_boot_noise_before_the_guest_starts_is_not_ours(tmp_path):
    assert verdict(tmp_path, WARNING + BOOT) == (0, [])


@pytest.mark.parametrize("trouble", [WARNING, OOPS])
def test_trouble_fails_before_and_after_the_provoked_oom_report(tmp_path, trouble):
    assert verdict(tmp_path, BOOT + trouble + TEARDOWN_OOM) == (1, [trouble.rstrip()])
    assert verdict(tmp_path, BOOT + TEARDOWN_OOM + trouble) == (1, [trouble.rstrip()])


def test_an_oom_report_not_after_our_allocation_failure_fails(tmp_path):
    status, lines = verdict(tmp_path, BOOT + OOM_WITHOUT_OUR_FAILURE)
    assert status == 1 and any("Call Trace" in line for line in lines), lines
