"""Turning a run into text, JSON and a chart (nothing here measures)."""
import json
import math
import os

from .figures import fmt


def table(head, rows):
    """Rows of strings as aligned text columns under a dashed header."""
    cells = [tuple(head)] + [tuple("" if c is None else str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def targets_table(rows):
    return table(("figure", "issue", "pymmapdev", "anchor (same run)", "ratio", "goal", "verdict"),
                 [(r["figure"], r["issue"], r["ours"], r["anchor"], r["ratio"], r["goal"],
                   r["verdict"]) for r in rows])


def markdown_table(rows):
    """The targets table as the README shows it (bench/results/table.md)."""
    lines = ["| figure | pymmapdev | anchor (same run) | ratio | goal | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        verdict = r["verdict"] if r["met"] is not False else f"**{r['verdict']}**"
        lines.append(f"| {r['figure']} (#{r['issue']}) | {r['ours']} | {r['anchor']} | "
                     f"{r['ratio']} | {r['goal']} | {verdict} |")
    return "\n".join(lines) + "\n"


def markdown_matrix(figs, prefix):
    """Groups whose keys start with *prefix* as one Markdown table: a row per
    contender (the key's third part: ``channel.tput64.pyzmq.p50`` -> pyzmq),
    a column per group, "n/a" where a contender does not take part."""
    groups = [g for g in figs.groups if g["keys"] and g["keys"][0].startswith(prefix)]
    rows = {}
    for col, g in enumerate(groups):
        for key in g["keys"]:
            e = figs.values.get(key, {"missing": "not measured", "label": key})
            who = key.split(".")[2]
            label = e["label"].removesuffix(" p50")
            row = rows.setdefault(who, {"label": label, "cells": ["n/a"] * len(groups)})
            if "missing" not in e:
                partial = e.get("note") and g["unit"] != "count"    # counts always carry notes
                row["cells"][col] = fmt(e["value"], g["unit"]) + ("*" if partial else "")
            elif not e["missing"].startswith("n/a"):
                row["cells"][col] = "missing" if "not available" not in e["missing"] \
                    else "not in this build"
    lines = ["| | " + " | ".join(g["short"] for g in groups) + " |",
             "| --- |" + " --- |" * len(groups)]
    lines += [f"| {r['label']} | " + " | ".join(r["cells"]) + " |" for r in rows.values()]
    notes = [f"{figs.values[k]['label']}, {g['short']}: {figs.values[k]['note']}"
             for g in groups for k in g["keys"]
             if figs.values.get(k, {}).get("note") and g["unit"] != "count"]
    return "\n".join(lines) + "\n" + "".join(f"\n\\* {n}" for n in notes) + \
        ("\n" if notes else "")


def group_tables(figs):
    """One small table per group: every contender's figure, or why it is missing."""
    out = []
    for g in figs.groups:
        rows = []
        for key in g["keys"]:
            e = figs.values.get(key, {"missing": "not measured", "label": key})
            rows.append((e["label"], fmt(e.get("value"), g["unit"]) if "missing" not in e
                         else f"missing: {e['missing']}", e.get("note", "")))
        out.append(f"{g['title']}\n" + table(("", g["unit"], ""), rows))
    return "\n\n".join(out)


def competitors_table(statuses):
    return table(("competitor", "status"),
                 [(name, version if ok else f"MISSING: {version}")
                  for name, (ok, version) in statuses.items()])


def save_json(path, run):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(run, f, indent=1, default=str)


def chart(figs, machine, path):
    """One horizontal bar panel per group: pymmapdev blue, C anchors red, others grey
    (by label: "pymmapdev ..." and "C ..." are the conventions the cases follow)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in figs.groups
              if any(figs.value(k) is not None for k in g["keys"])]
    cols = 3
    rows = max(1, math.ceil(len(groups) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    for ax, g in zip(axes.flat, groups):
        labels, values, colors = [], [], []
        for key in g["keys"]:
            e = figs.values.get(key, {})
            if e.get("missing", "").startswith("n/a"):
                continue        # not applicable: the table says why; a bar would be noise
            labels.append(e.get("label", key) + ("" if "missing" not in e else " (missing)"))
            values.append(e.get("value", 0) or 0)
            label = e.get("label", key)
            colors.append("C0" if label.startswith("pymmapdev") else
                          "C3" if label.startswith("C ") else "C7")
        y = range(len(labels))
        ax.barh(y, values, color=colors)
        ax.set_yticks(list(y), labels, fontsize=7)
        positive = [v for v in values if v > 0]
        if positive and min(positive) * 20 < max(positive):
            ax.set_xscale("log")
        ax.set_title(g["title"], fontsize=9)
        ax.set_xlabel(g["unit"], fontsize=8)
        ax.invert_yaxis()
        for i, v in enumerate(values):
            if v:
                ax.text(v, i, " " + fmt(v, g["unit"]), va="center", fontsize=6)
    fig.suptitle(f"pymmapdev bench: {machine['cpu']}, {machine['cpus']} CPUs, "
                 f"Linux {machine['kernel']}, Python {machine['python']}, load average "
                 f"{machine['loadavg_start'][0]:.2f} at the start, other work "
                 f"{machine.get('other_cpus', float('nan')):.2f} CPUs "
                 f"(blue: pymmapdev, red: C, grey: others)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))   # room for the title
    fig.savefig(path, dpi=100)
    plt.close(fig)
