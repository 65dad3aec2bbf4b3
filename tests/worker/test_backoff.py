"""Backoff: exponential steps, jitter that spreads retries, Retry-After as a floor."""

from __future__ import annotations

import random

from vidanim.worker.backoff import backoff_bounds, backoff_delay


def test_two_seeds_draw_different_delays_within_the_jitter_bounds():
    low, high = backoff_bounds(3, base=1.0, cap=100.0)
    first = backoff_delay(3, base=1.0, cap=100.0, rng=random.Random(1))
    second = backoff_delay(3, base=1.0, cap=100.0, rng=random.Random(2))
    assert first != second, "without jitter, every worker retries at the same instant"
    assert low <= first <= high
    assert low <= second <= high
    assert (low, high) == (4.0, 8.0)


def test_jitter_spreads_delays_across_the_lower_half_of_the_step():
    delays = [backoff_delay(2, base=1.0, cap=100.0, rng=random.Random(seed)) for seed in range(200)]
    assert min(delays) >= 2.0
    assert max(delays) <= 4.0
    assert max(delays) - min(delays) > 1.5


def test_the_step_stops_at_the_cap_and_retry_after_is_a_floor():
    assert backoff_bounds(20, base=2.0, cap=300.0) == (150.0, 300.0)
    assert backoff_delay(0, base=1.0, cap=10.0, retry_after=42.0, rng=random.Random(0)) == 42.0
