"""Retention of job history: prune ended jobs in batches, one transaction each (migration 0041).

`vidanim jobs prune` and the worker (`VIDANIM_WORKER_PRUNE_OLDER_THAN_DAYS`) both loop over
`public.prune_video_jobs`, which deletes one batch and adds it to the daily totals. Each
batch commits on its own, so no lock is held longer than one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import LiteralString

import psycopg
from psycopg.rows import dict_row

SET_SERVICE_ROLE: LiteralString = "set role service_role"
PRUNE: LiteralString = "select * from public.prune_video_jobs(%s, %s)"
COUNT_PRUNABLE: LiteralString = "select * from public.count_prunable_video_jobs(%s)"


@dataclass
class PruneTotal:
    jobs: int = 0
    events: int = 0
    batches: int = 0

    def add(self, jobs: int, events: int) -> None:
        self.jobs += jobs
        self.events += events
        self.batches += 1


def prune_all(dsn: str, older_than: timedelta, batch_size: int, *, max_batches: int | None = None) -> PruneTotal:
    """Prune batch after batch (each committed) until one comes back empty."""
    total = PruneTotal()
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(SET_SERVICE_ROLE)
        while max_batches is None or total.batches < max_batches:
            row = conn.execute(PRUNE, (older_than, batch_size)).fetchone()
            jobs, events = (int(row["jobs"]), int(row["events"])) if row else (0, 0)
            if jobs == 0:
                break
            total.add(jobs, events)
    return total


__all__ = ["COUNT_PRUNABLE", "PRUNE", "PruneTotal", "prune_all"]
