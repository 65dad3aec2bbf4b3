"""At most one log line per reason per interval: outsiders must not be able to flood the logs.

The webhook endpoint is public, and each refused delivery used to log a WARNING line.
`LogLimit.allow(reason)` says whether this one may be logged, and how many of that
reason were kept quiet since the last line (so the line can say so); the metrics
still count every one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LOG_INTERVAL_SECONDS = 60.0
# reasons remembered at once; past this the oldest is forgotten (reasons are a short fixed list)
MAX_REASONS = 64


class LogLimit:
    def __init__(self, interval: float = LOG_INTERVAL_SECONDS, *, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def allow(self, reason: str) -> int | None:
        """None: stay quiet. Else the number of lines of this reason suppressed since the last one."""
        now = self.clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._quiet[reason] = self._quiet.get(reason, 0) + 1
            return None
        if last is None and len(self._last) >= MAX_REASONS:
            oldest = min(self._last, key=self._last.__getitem__)
            del self._last[oldest]
            self._quiet.pop(oldest, None)
        self._last[reason] = now
        return self._quiet.pop(reason, 0)
