"""The worker raises its soft open-files limit to the hard one when it starts."""

from __future__ import annotations

import resource

import pytest

from vidanim.worker.rlimits import raise_open_files_limit


def test_the_soft_open_files_limit_is_raised_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"this machine's hard limit ({hard}) leaves nothing to raise")
    low = 1024
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        now = raise_open_files_limit()
        after = resource.getrlimit(resource.RLIMIT_NOFILE)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert after[0] > low
    assert now == after
    if hard != resource.RLIM_INFINITY:
        assert after == (hard, hard)
