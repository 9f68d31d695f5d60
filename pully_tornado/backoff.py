"""Full-jitter exponential backoff (AWS Architecture Blog, "Exponential Backoff And Jitter").

The one backoff of Pully: the server's reconnect and reload loops (Redis subscriber,
relationships manager) and the Python client's reconnects all use it, each with its own
``base`` and ``cap``. Pure stdlib, so the client package imports it without Tornado.

The n-th retry (n = 0, 1, 2, ...) waits a uniformly random time in ``[0, min(cap, base * 2**n)]``:
clients that lost the same node at the same moment spread their reconnects over the window
instead of arriving together.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

_MAX_EXPONENT = 62  # 2**62 * any sane base is past every cap; avoids float overflow


@dataclass(frozen=True)
class Backoff:
    """Retry delays: ``base`` seconds doubling per attempt, never above ``cap``. Stateless:
    the caller counts its attempts (0 for the first retry, back to 0 after a success).

    ``rng`` returns a float in ``[0, 1)``; it is ``random.random`` unless a test fixes it.
    Raises ``ValueError`` for a negative base or a cap below the base.
    """

    base: float = 0.5
    cap: float = 20.0
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < self.base:
            raise ValueError(f"backoff needs 0 <= base <= cap, got base={self.base} cap={self.cap}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt ``attempt`` may wait: ``min(cap, base * 2**attempt)``."""
        return min(self.cap, self.base * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))

    def delay(self, attempt: int) -> float:
        """A delay in ``[0, ceiling(attempt)]`` (full jitter)."""
        return self.rng() * self.ceiling(attempt)
