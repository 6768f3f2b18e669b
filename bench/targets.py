"""The goals the issues set, as data, and the one function that judges them.

Each row names the figure the README shows, the figure key of ours, the key
of its anchor (measured in the same run), how they are compared, the goal,
and the issue that set it.  An anchor key with ``*`` means "the best of the
competitors matching it" (the fastest, whichever that is in this run);
such a row is "met" only when every competitor it names was measured (one
not installed, hung or left out might have been the best), while a miss
stands.

Comparisons:
  ``time<=x``    ours / anchor <= goal    (both are times: "at most goal x the time")
  ``faster>=x``  speedup >= goal           (anchor/ours for times, ours/anchor for rates)
  ``<=``         ours <= goal              (absolute, in ours' unit)
  ``==``         ours == goal              (counts, e.g. 0 torn messages)
  ``==all``      ours == anchor            (counts: all of the anchor's trials; goal unused)
"""
import fnmatch
from dataclasses import dataclass

from .figures import fmt, higher_is_better


@dataclass(frozen=True)
class Target:
    figure: str
    ours: str
    anchor: object          # key, glob, or None for an absolute goal
    comparison: str
    goal: float
    issue: int
    exclude: tuple = ()     # keys a glob anchor never picks (ours, the C ceiling)


PP = "pingpong.{}.{}.p50"
CH_EXCLUDE = ("*.pymmapdev*", "*.c_ring*")

TARGETS = (
    # issue 8: the rebuilt core must be faster, not slower
    Target("round trip, sleeping [split] vs C futex", PP.format("split", "sleep"),
           PP.format("split", "c_futex"), "time<=x", 1.1, 8),
    Target("round trip, sleeping [split] vs posix_ipc semaphores", PP.format("split", "sleep"),
           PP.format("split", "posix_ipc"), "time<=x", 1.0, 8),
    Target("round trip, sleeping [shared] vs C futex", PP.format("shared", "sleep"),
           PP.format("shared", "c_futex"), "time<=x", 1.1, 8),
    Target("round trip, sleeping [shared] vs posix_ipc semaphores", PP.format("shared", "sleep"),
           PP.format("shared", "posix_ipc"), "time<=x", 1.0, 8),
    Target("round trip, spinning [split] vs C spin", PP.format("split", "spin"),
           PP.format("split", "c_spin"), "time<=x", 2.5, 8),
    Target("Lock acquire();release() vs multiprocessing.Lock", "lock.pymmapdev", "lock.mp_lock",
           "faster>=x", 5, 8),
    Target("Lock 'with lock:' vs multiprocessing.Lock", "lock.pymmapdev_with",
           "lock.mp_lock_with", "faster>=x", 5, 8),
    Target("Lock acquire();release() vs the glibc-based Lock", "lock.pymmapdev",
           "lock.glibc_lock", "faster>=x", 1.0, 8),
    Target("Lock 'with lock:' vs the glibc-based Lock", "lock.pymmapdev_with",
           "lock.glibc_lock_with", "faster>=x", 1.0, 8),
    Target("read_u32 vs precompiled struct.Struct('I').unpack_from", "typed.read_u32",
           "typed.struct_unpack_from", "time<=x", 0.5, 8),
    # issue 4: the first figures
    Target("write_u32 vs precompiled struct.Struct('I').pack_into", "typed.write_u32",
           "typed.struct_pack_into", "time<=x", 0.5, 4),
    Target("fetch_add, 2 processes vs multiprocessing.Value + lock", "atomics.pymmapdev",
           "atomics.mp_value_lock", "faster>=x", 20, 4),
    Target("round trip, spinning [split]", PP.format("split", "spin"), None, "<=", 500, 4),
    Target("round trip, spinning [split] vs multiprocessing.Pipe", PP.format("split", "spin"),
           PP.format("split", "pipe"), "faster>=x", 80, 4),
    Target("bulk copy 1 MiB vs libc memmove on the same pages", "copy.1m.pymmapdev_slice",
           "copy.1m.memmove", "faster>=x", 0.95, 4),
    # issue 9: the channel against every Python IPC
    Target("channel 64 B one-way, one call per message, vs pyzmq", "channel.tput64.pymmapdev",
           "channel.tput64.pyzmq", "faster>=x", 4, 9),
    Target("channel 64 B one-way, send_many/recv_many, vs pyzmq",
           "channel.tput64_batch.pymmapdev", "channel.tput64.pyzmq", "faster>=x", 10, 9),
    Target("channel 64 B round trip p50, blocking, vs the best competitor",
           "channel.rtt64.pymmapdev.p50", "channel.rtt64.*.p50", "time<=x", 0.8, 9,
           CH_EXCLUDE),
    # the same without iceoryx2's busy-poll, which spins where the others sleep
    Target("channel 64 B round trip p50, blocking, vs the best sleeping competitor",
           "channel.rtt64.pymmapdev.p50", "channel.rtt64.*.p50", "time<=x", 0.8, 9,
           CH_EXCLUDE + ("*.iceoryx2_poll*",)),
    Target("channel 64 B round trip p50, blocking, vs the C futex ring",
           "channel.rtt64.pymmapdev.p50", "channel.rtt64.c_ring.p50", "time<=x", 1.2, 9),
    Target("channel 64 B round trip p50, spin-then-sleep [split]",
           "channel.rtt64_spin.pymmapdev.p50", None, "<=", 2000, 9),
    Target("channel 64 B round trip p99, spin-then-sleep [split]",
           "channel.rtt64_spin.pymmapdev.p99", None, "<=", 50000, 9),
    Target("channel 1 MiB frames, send_array, vs iceoryx2 event wait",
           "channel.frames.pymmapdev", "channel.frames.iceoryx2_event", "faster>=x", 1.2, 9),
    Target("channel 1 MiB frames, reserve/recv_view, vs iceoryx2 event wait (loan)",
           "channel.frames_zc.pymmapdev", "channel.frames_zc.iceoryx2_event", "faster>=x", 2, 9),
    Target("channel crash probe: trials recovered, of all", "channel.crash.pymmapdev.recovered",
           "channel.crash.pymmapdev.trials", "==all", 1, 9),
    Target("channel crash probe: trials hung", "channel.crash.pymmapdev.hung", None,
           "==", 0, 9),
    Target("channel crash probe: torn messages", "channel.crash.pymmapdev.torn", None,
           "==", 0, 9),
)


def _pick_anchor(target, figs):
    """(key, value, unit, absent) of the anchor, or (None, None, reason, absent).

    *absent*: for a glob, the competitors it names that were not measured
    (not installed, hung, failed, left out), as "label: reason"; a figure
    that does not apply ("n/a: ...") is not absent.
    """
    if "*" not in target.anchor:
        value = figs.value(target.anchor)
        if value is None:
            return None, None, figs.why_missing(target.anchor), []
        return target.anchor, value, figs.values[target.anchor]["unit"], []
    skip = (target.ours,) + target.exclude
    named = [(k, e) for k, e in figs.values.items()
             if fnmatch.fnmatchcase(k, target.anchor)
             and not any(fnmatch.fnmatchcase(k, s) for s in skip)]
    found = [(k, e) for k, e in named if "missing" not in e]
    absent = [f"{e['label']}: {e['missing']}" for k, e in named
              if "missing" in e and not e["missing"].startswith("n/a")]
    if not found:
        return None, None, f"no competitor measured for {target.anchor}", absent
    better = max if higher_is_better(found[0][1]["unit"]) else min
    key, entry = better(found, key=lambda ke: ke[1]["value"])
    return key, entry["value"], entry["unit"], absent


def _goal_text(t, unit):
    return {"time<=x": f"<= {t.goal:g}x the time", "faster>=x": f">= {t.goal:g}x",
            "<=": f"<= {fmt(t.goal, unit)}", "==": f"= {t.goal:g}",
            "==all": "= the anchor (all trials)"}[t.comparison]


def judge(target, figs):
    """One row of the targets table as a dict of strings (plus 'met': True/False/None)."""
    ours = figs.value(target.ours)
    unit = figs.values.get(target.ours, {}).get("unit", "count")
    row = {"figure": target.figure, "issue": target.issue, "ours": fmt(ours, unit),
           "anchor": "-", "ratio": "-", "goal": _goal_text(target, unit), "met": None}
    if ours is None:
        row["verdict"] = figs.why_missing(target.ours)
        return row
    if target.anchor is None:
        met = ours <= target.goal if target.comparison == "<=" else ours == target.goal
        row.update(met=met, verdict="met" if met else "MISSED")
        return row
    key, anchor, anchor_unit, absent = _pick_anchor(target, figs)
    if key is None:
        row["verdict"] = f"anchor missing: {anchor_unit}"
        return row
    row["anchor"] = f"{figs.values[key]['label']}: {fmt(anchor, anchor_unit)}"
    if target.comparison == "==all":
        met = ours == anchor
        row["anchor"], row["goal"] = "-", f"= {fmt(anchor, anchor_unit)} (all trials)"
    elif target.comparison == "time<=x":
        ratio = ours / anchor if anchor else float("inf")
        met = ratio <= target.goal
        row["ratio"] = f"{ratio:.2f}x the time"
    elif target.comparison == "faster>=x":
        if higher_is_better(unit):
            ratio = ours / anchor if anchor else float("inf")
        else:
            ratio = anchor / ours if ours else float("inf")
        met = ratio >= target.goal
        row["ratio"] = f"{ratio:.2f}x"
    else:
        raise ValueError(f"{target.figure}: unknown comparison {target.comparison!r}")
    if met and absent:
        # "the best competitor" is not known: a missing one may be better.
        # (A miss stands: more competitors could only make the best better.)
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        row["verdict"] = f"not judged, a competitor is missing: {absent[0]}{more}"
        return row
    row.update(met=met, verdict="met" if met else "MISSED")
    return row


def judge_all(figs, targets=TARGETS):
    return [judge(t, figs) for t in targets]
