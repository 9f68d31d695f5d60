"""Per-connection limits."""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` actions per second with bursts of ``burst``; ``refused`` counts refusals in a
    row (reset by the next allowed action), so a client that keeps pushing can be told apart
    from one that briefly went over."""

    __slots__ = ("burst", "rate", "refused", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.refused = 0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.refused = 0
            return True
        self.refused += 1
        return False
