"""What counts as trouble in the kernel log.

One rule for both places that read the log: each device test's own part
of it (conftest.py, kernel_log_clean) and the whole run's, from the
guest's start on (tests/vm/run.sh runs this file on the VM's dmesg.txt:
it prints the lines that show trouble and exits 1 if there are any).

Plain Python, no imports of the suite's: run.sh runs it on the host.
"""
import re
import sys

TROUBLE = re.compile(r"Oops|BUG|WARNING|Call Trace|KASAN|UBSAN|general protection")

# Our module's message when a buffer cannot be allocated.  The test that
# drives the VM out of memory on purpose (test_module.py) provokes it; the
# kernel's teardown of that failed load may then invoke the OOM killer,
# whose report carries a Call Trace: the kernel's business, not trouble.
ALLOCATION_FAILED = "mmapdev: cannot allocate "

# The guest script's first message (tests/vm/guest.sh): boot noise before
# it is not ours.
GUEST_START = "mmapdev-vmtest: start"


def kernel_trouble(messages, oom_after=None):
    """The messages that show trouble, but for the OOM reports (from
    "invoked oom-killer" to its "Killed process" line) that begin after a
    message containing *oom_after*."""
    bad = []
    marker_seen = in_oom_report = False
    for message in messages:
        marker_seen = marker_seen or bool(oom_after and oom_after in message)
        if marker_seen and "invoked oom-killer" in message:
            in_oom_report = True
        if in_oom_report:
            in_oom_report = "Killed process" not in message
            continue
        if TROUBLE.search(message):
            bad.append(message.rstrip())
    return bad


def main(argv):
    """`kernel_log.py DMESG`: the whole run's trouble, after the guest's start.

    An OOM report after an allocation failure of ours is let pass here as
    the test that provoked it lets it pass; in any other test, the report
    fails that test (its kernel_log_clean names no oom_after)."""
    with open(argv[1], errors="replace") as f:
        lines = f.read().splitlines()
    starts = [i for i, line in enumerate(lines) if GUEST_START in line]
    bad = kernel_trouble(lines[starts[0] if starts else 0:], ALLOCATION_FAILED)
    for line in bad:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
