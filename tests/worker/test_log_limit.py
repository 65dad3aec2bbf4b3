"""The refused-delivery log's rate limit: one line per reason per interval, with the count kept quiet."""

from __future__ import annotations

from vidanim.worker.log_limit import LOG_INTERVAL_SECONDS, LogLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_logs_one_line_per_reason_per_minute_and_says_how_many_it_kept_quiet():
    clock = Clock()
    limit = LogLimit(clock=clock)
    first = [limit.allow("bad_token") for _ in range(1000)]
    assert first[0] == 0
    assert first[1:] == [None] * 999
    assert limit.allow("unsigned") == 0, "another reason has a line of its own"
    clock.now += LOG_INTERVAL_SECONDS - 0.001
    assert limit.allow("bad_token") is None, "not before the minute is up"
    clock.now += 0.001
    assert limit.allow("bad_token") == 1000, "the next line counts the quiet ones"
    assert limit.allow("bad_token") is None
