"""Every SQLSTATE of docs/api.md maps to its exception class."""

from __future__ import annotations

import json

import pytest

from vidanim import errors


@pytest.mark.parametrize(
    ("sqlstate", "detail", "cls"),
    [
        ("42501", None, errors.NotSignedIn),
        ("22023", None, errors.InvalidInput),
        ("PT404", None, errors.NotFound),
        ("PT409", None, errors.Conflict),
        ("PT422", None, errors.IdempotencyMismatch),
        (
            "PT429",
            json.dumps({"reason": "daily_quota", "resets_at": "2026-11-26T00:00:00+00:00"}),
            errors.QuotaExceeded,
        ),
        ("PT429", json.dumps({"reason": "active_jobs", "limit": 5}), errors.TooManyActiveJobs),
        ("PT429", None, errors.QuotaExceeded),
        ("XX000", None, errors.VidanimError),
        (None, None, errors.VidanimError),
    ],
)
def test_sqlstates_map_to_typed_exceptions(sqlstate, detail, cls):
    exc = errors.from_sqlstate(sqlstate, "message for people", detail=detail, hint="a hint")
    assert type(exc) is cls
    assert str(exc) == "message for people"
    assert exc.hint == "a hint"
    assert exc.sqlstate == sqlstate


def test_quota_exceeded_carries_its_reset_time():
    exc = errors.from_sqlstate(
        "PT429", "m", detail=json.dumps({"reason": "daily_quota", "resets_at": "2026-11-26T00:00:00+00:00"})
    )
    assert isinstance(exc, errors.QuotaExceeded)
    assert exc.resets_at is not None
    assert exc.resets_at.isoformat() == "2026-11-26T00:00:00+00:00"


def test_a_malformed_detail_is_ignored_not_fatal():
    exc = errors.from_sqlstate("PT429", "m", detail="not json")
    assert isinstance(exc, errors.QuotaExceeded)
    assert exc.details == {}
    assert exc.resets_at is None


def test_a_default_message_comes_from_the_class():
    assert str(errors.NotFound()) == "Not found."
