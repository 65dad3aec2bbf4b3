"""Settings: defaults that are safe to show."""

from __future__ import annotations

import os
import socket

from vidanim.settings import Settings


def test_a_workers_default_id_names_neither_its_host_nor_its_process():
    """The id is `video_jobs.locked_by`, which the job's user reads."""
    first, second = (Settings(_env_file=None).worker_id for _ in range(2))  # type: ignore[call-arg]
    assert first != second
    for worker_id in (first, second):
        assert socket.gethostname() not in worker_id
        assert str(os.getpid()) not in worker_id
