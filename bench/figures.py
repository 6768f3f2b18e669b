"""The record every case fills: named figures, and groups of them to show.

A figure is one number with a unit under a dotted key
(``"channel.tput64.pyzmq"``); a figure that could not be measured is kept
with the reason (a competitor not installed, a hung peer, pymmapdev.Channel
not in this build), so the report shows it as missing instead of dropping
it.  A group is what a reader compares: one chart panel and one detail table
(pymmapdev beside every competitor for one figure).
"""

# unit -> True when a larger value is better
UNITS = {"ns": False, "us": False, "/s": True, "GB/s": True, "count": True}


class Figures:
    def __init__(self):
        self.values = {}     # key -> {"value", "unit", "label"} or {"missing", "unit", "label"}
        self.groups = []     # {"title", "unit", "keys"}

    def put(self, key, value, unit, label=None, note=None):
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r} for {key}")
        self.values[key] = {"value": value, "unit": unit, "label": label or key}
        if note:
            self.values[key]["note"] = note

    def missing(self, key, reason, unit, label=None):
        self.values[key] = {"missing": str(reason), "unit": unit, "label": label or key}

    def group(self, title, unit, keys, short=None):
        """*short*: the group's column heading in a Markdown matrix (report.markdown_matrix)."""
        self.groups.append({"title": title, "unit": unit, "keys": list(keys),
                            "short": short or title})

    def value(self, key):
        """The number under *key*, or None when missing or never recorded."""
        entry = self.values.get(key)
        return None if entry is None or "missing" in entry else entry["value"]

    def why_missing(self, key):
        entry = self.values.get(key)
        if entry is None:
            return "not measured in this run"
        return entry.get("missing")

    def to_json(self):
        return {"values": self.values, "groups": self.groups}


def higher_is_better(unit):
    return UNITS[unit]


def fmt(value, unit):
    """A figure as a short human string: 1.23 us, 4.5 M/s, 12.1 GB/s."""
    if value is None:
        return "-"
    if unit == "ns":
        return f"{value:.0f} ns" if value < 1000 else f"{value / 1000:.2f} us"
    if unit == "us":
        return f"{value:.2f} us"
    if unit == "/s":
        for scale, suffix in ((1e6, " M/s"), (1e3, " k/s")):
            if value >= scale:
                return f"{value / scale:.2f}{suffix}"
        return f"{value:.0f} /s"
    if unit == "GB/s":
        return f"{value:.2f} GB/s"
    return f"{value:g}"
