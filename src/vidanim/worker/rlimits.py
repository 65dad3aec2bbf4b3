"""The worker's open-files limit: raised from the soft to the hard limit at start.

A worker holds a socket per provider request, database connection and HTTP client; the
common soft default (1,024) is reached long before the hard one (often 524,288). Running
out means EMFILE on our own outbound calls: jobs wait for nothing.
"""

from __future__ import annotations

import logging
import resource

from vidanim.logs import log_event

log = logging.getLogger("vidanim.worker")


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (or as near as the kernel allows); the (soft, hard) now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if hard != soft:
        # An unlimited hard limit cannot be the soft one on Linux (fs.nr_open caps it): try a bounded value.
        target = hard if hard != resource.RLIM_INFINITY else 1_048_576
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log_event(log, "worker.open_files_limit", logging.WARNING, soft=soft, hard=hard, error=str(exc))
            return soft, hard
        soft = target
    log_event(log, "worker.open_files_limit", soft_before=before, soft=soft, hard=hard)
    return soft, hard
