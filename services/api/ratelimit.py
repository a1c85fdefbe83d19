"""Token buckets per API token: the seed's 20 requests/s sustained with bursts of 50.

Kept in the API process's memory: with N API replicas a token gets N times the rate.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    rate_per_s: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, updated)

    def take(self, key: str) -> float:
        """Spend one request; return 0 when allowed, else the seconds until one is available."""
        now = self.clock()
        tokens, updated = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.rate_per_s)
        if tokens >= 1:
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._forget_full_buckets(now)
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate_per_s

    def _forget_full_buckets(self, now: float) -> None:
        # A bucket that has refilled is indistinguishable from a new one: drop those.
        refill = self.burst / self.rate_per_s
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
