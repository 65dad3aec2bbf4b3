"""vidanim.jobs: what a job's fields mean to the people who wait for it."""

from __future__ import annotations

import re
from pathlib import Path

from vidanim.jobs import WAITING_REASONS

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def documented_waiting_reasons() -> set[str]:
    (row,) = [
        line for line in API_DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| `waiting_reason`")
    ]
    described = row.split("|")[3]
    return set(re.findall(r"`([a-z_]+)`", described))


def test_every_documented_waiting_reason_has_a_message_for_its_user_and_none_is_undocumented():
    documented = documented_waiting_reasons()
    assert {"providers_unavailable", "provider_unconfigured", "storage_unavailable"} <= documented
    assert documented == set(WAITING_REASONS)
