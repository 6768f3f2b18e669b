"""How hard a run works: full (``make bench``), quick, or tiny (the smoke test)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    scale: float = 1.0      # iteration counts are multiplied by this
    trials: int = 5         # repeats of each multi-process figure (best or median kept)
    timeout: float = 60.0   # seconds one multi-process measurement may take before it
                            # is killed and reported as hung
    crash_trials: int = 6
    transports: tuple = ()  # channel case: only these transports (default: all)

    def n(self, full, minimum=10):
        """An iteration count: *full* scaled, never below *minimum*."""
        return max(minimum, int(full * self.scale))


FULL = Config()
QUICK = Config(scale=0.25, trials=3, timeout=30.0)
TINY = Config(scale=0.002, trials=1, timeout=20.0, crash_trials=1)
