"""The ceiling: bench/ring.c, a C SPSC ring of length-prefixed records in a
shared mapping with futex sleep/wake, two processes, no Python.

It is not driven through send/recv (that would put Python back in): the
channel case asks it for whole figures with ``measure``.
"""
import json
import subprocess

from . import Transport, register
from .. import env

MODES = {  # figure -> (ring.c mode, spin polls before sleeping)
    "tput64": ("tput", 2000),
    "frames": ("tput", 2000),
    "frames_zc": ("zc", 2000),
    # blocking: every wait sleeps, like the competitors' blocking receives
    "rtt64": ("rtt", 0),
    "rtt64_spin": ("rtt", 2000),
}


@register
class CRing(Transport):
    key = "c_ring"
    label = "C SPSC ring + futex (bench/ring.c)"
    figures = tuple(MODES)
    not_applicable = {"tput64_batch": "per-record publish only",
                      "crash": "the ceiling for speed, not a crash-safe design"}
    external = True

    @classmethod
    def unavailable(cls):
        return None if env.build_c("ring") else "no C compiler: bench/ring.c not built"

    @staticmethod
    def measure(figure, size, count, cpus, timeout):
        """One run of ring.c: {"msgs_per_s", "bytes_per_s"} or round-trip percentiles."""
        mode, spin = MODES[figure]
        out = subprocess.run([env.build_c("ring"), mode, str(size), str(count), str(spin),
                              str(cpus[0]), str(cpus[1])],
                             check=True, capture_output=True, text=True, timeout=timeout).stdout
        return json.loads(out)
