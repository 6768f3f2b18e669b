"""pymmapdev benchmark: ``python -m bench`` (``make bench`` installs the
competitors first, then runs this).

Every figure is measured next to its anchors in the same run and judged
against the goals in bench/targets.py; the run prints the machine, the load
average at the start and the CPU time other work took during each case, the
competitors found, the targets table and one table per figure group, and saves bench/results/results.json, the targets
table in Markdown (bench/results/table.md, what the README shows) and the
chart bench/results/bench.png.

Layout: env.py (machine, CPUs, scratch files, C builds), stats.py,
figures.py (the record cases fill), procs.py (two-process runs with a
deadline), competitors.py (the registry of competitor packages),
targets.py (the goals as data), report.py (text, JSON, chart), one
case_*.py per case, transports/ (one module per message transport for the
channel case), and the C anchors pingpong.c, memcpy.c, ring.c.
"""
import argparse
import dataclasses
import os
import sys
import time

from . import (case_atomics, case_channel, case_copy, case_lock, case_pingpong, case_slot,
               case_typed, competitors, config, env, report, targets)
from .figures import Figures

CASES = {
    "typed": case_typed.run,
    "atomics": case_atomics.run,
    "pingpong": case_pingpong.run,
    "copy": case_copy.run,
    "slot": case_slot.run,
    "lock": case_lock.run,
    "channel": case_channel.run,
}


def wait_quiet(limit, patience):
    """Wait up to *patience* seconds for the 1-minute load average to drop below *limit*."""
    end = time.monotonic() + patience
    while os.getloadavg()[0] > limit and time.monotonic() < end:
        print(f"  load average {os.getloadavg()[0]:.2f} > {limit}: waiting for a quiet "
              f"machine ({end - time.monotonic():.0f} s left)", flush=True)
        time.sleep(min(15, max(1, end - time.monotonic())))


def not_quiet_why(machine):
    """Why a run was not quiet, in one line."""
    return (f"load average {machine['loadavg_start'][0]:.2f} at the start (quiet: "
            f"{env.QUIET_LOAD} or less), other work {machine['other_cpus']:.2f} CPUs on average "
            f"during the run (quiet: {env.QUIET_OTHER} or less)")


def run(case_names, cfg, figs=None):
    """Run the named cases into *figs*; returns {case: seconds or error text}."""
    figs = figs if figs is not None else Figures()
    took = {}
    for name in case_names:
        t0, other = time.monotonic(), env.OtherLoad()
        print(f"  {name} ...", end="", flush=True)
        CASES[name](figs, cfg)
        took[name] = {"seconds": time.monotonic() - t0, "other_cpus": other.cpus()}
        print(f" {took[name]['seconds']:.1f} s (other work used {took[name]['other_cpus']:.2f} "
              "CPUs meanwhile)", flush=True)
    return figs, took


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("cases", nargs="*", metavar="CASE",
                    help=f"cases to run (default: all): {', '.join(CASES)}")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and trials")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help=f"first wait up to SECONDS for the load average to fall below "
                         f"{env.QUIET_LOAD}")
    ap.add_argument("--transports", metavar="KEY,KEY", default="",
                    help="channel case: only these transports (e.g. pymmapdev,pyzmq,c_ring)")
    ap.add_argument("--no-chart", action="store_true")
    args = ap.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case {', '.join(unknown)}; choose from {', '.join(CASES)}")
    cfg = config.QUICK if args.quick else config.FULL
    if args.transports:
        from .transports import REGISTRY
        keys = tuple(k for k in args.transports.split(",") if k)
        bad = [k for k in keys if k not in REGISTRY]
        if bad:
            ap.error(f"unknown transport {', '.join(bad)}; choose from {', '.join(REGISTRY)}")
        cfg = dataclasses.replace(cfg, transports=keys)
    names = args.cases or list(CASES)
    if args.wait_quiet:
        wait_quiet(env.QUIET_LOAD, args.wait_quiet)

    machine = env.machine()
    statuses = {name: competitors.status(name) for name in competitors.REGISTRY}
    print(f"pymmapdev bench: {machine['cpu']}, {machine['cpus']} CPUs, Linux {machine['kernel']}, "
          f"Python {machine['python']}, pymmapdev from {machine['pymmapdev']}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in machine['loadavg_start'])}"
          + ("" if machine["loadavg_start"][0] <= env.QUIET_LOAD else
             f"  (NOT QUIET: above {env.QUIET_LOAD}; figures are not comparable)"))
    print("placement: processes pinned, "
          + (f"split = CPUs {env.SPLIT[0]} and {env.SPLIT[1]}, " if env.SPLIT else "")
          + f"shared = CPU {env.SHARED[0]}")
    print(report.competitors_table(statuses))
    started, other = time.monotonic(), env.OtherLoad()
    figs, took = run(names, cfg)
    machine["loadavg_end"] = os.getloadavg()
    machine["other_cpus"] = other.cpus()
    machine["seconds"] = time.monotonic() - started
    quiet = machine["loadavg_start"][0] <= env.QUIET_LOAD and \
        machine["other_cpus"] <= env.QUIET_OTHER
    machine["quiet"] = quiet
    rows = targets.judge_all(figs)

    print()
    print(report.targets_table(rows))
    print()
    print(report.group_tables(figs))
    out = os.path.join(env.RESULTS, "results.json")
    report.save_json(out, {"machine": machine, "competitors": statuses, "config": vars(cfg),
                           "cases": took, "figures": figs.to_json(), "targets": rows})
    md = os.path.join(env.RESULTS, "table.md")
    with open(md, "w") as f:
        if not quiet:       # what the README shows must not pass for a quiet run's
            f.write(f"NOT QUIET: {not_quiet_why(machine)}\n\n")
        f.write(report.markdown_table(rows))
        if any(k.startswith("channel.") for k in figs.values):
            f.write("\n" + report.markdown_matrix(figs, "channel."))
    saved = [os.path.relpath(p, env.ROOT) for p in (out, md)]
    if not args.no_chart:
        if competitors.available("matplotlib"):
            png = os.path.join(env.RESULTS, "bench.png")
            report.chart(figs, machine, png)
            saved.append(os.path.relpath(png, env.ROOT))
        else:
            print(f"no chart: {competitors.status('matplotlib')[1]}")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in machine['loadavg_end'])}")
    print(f"saved {', '.join(saved)} ({machine['seconds']:.0f} s; other work used "
          f"{machine['other_cpus']:.2f} CPUs on average during the run: "
          + ("a quiet run)" if quiet else f"NOT QUIET: load average {env.QUIET_LOAD} or less at "
             f"the start and {env.QUIET_OTHER} CPUs of other work or less are quiet)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
