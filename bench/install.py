"""Install the competitors before a run: ``python -m bench.install``.

One pip call per requirement, so one that cannot be installed (no wheel for
this Python, a failed build) does not keep the others out; the run then
reports it as missing.  Exits 0 either way: a missing competitor is a result.
"""
import subprocess
import sys

from .competitors import REGISTRY


def main():
    failed = []
    for comp in REGISTRY.values():
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", comp.requirement],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            failed.append(comp.requirement)
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"bench.install: could not install {comp.requirement}: {tail}")
    print(f"bench.install: {len(REGISTRY) - len(failed)} of {len(REGISTRY)} competitors installed"
          + (f"; missing: {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
    main()
