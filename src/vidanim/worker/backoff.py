"""Exponential backoff with jitter (Runway: "exponential backoff and jitter ... a
random delay of up to 50%"), honouring a provider's Retry-After."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: float = 0.5,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first retry).

    The exponential step is `min(cap, base * 2**attempt)`; jitter takes off up to
    `jitter` of it, so the delay lies in `[step * (1 - jitter), step]`. A
    Retry-After from the provider is a floor.
    """
    step = min(cap, base * (2 ** max(attempt, 0)))
    delay: float = step * (1 - (rng or random).uniform(0, jitter))
    return max(delay, retry_after or 0.0)


def backoff_bounds(attempt: int, *, base: float, cap: float, jitter: float = 0.5) -> tuple[float, float]:
    """The interval `backoff_delay` draws from (without Retry-After)."""
    step = min(cap, base * (2 ** max(attempt, 0)))
    return step * (1 - jitter), step
