"""vidanim's exceptions, mapped from the SQLSTATEs of the SQL API (docs/api.md).

    VidanimError
     ├── NotSignedIn          42501  not signed in / permission denied
     ├── InvalidInput         22023  malformed path, prompt, options, request id
     ├── NotFound             PT404  image or job missing, or not the caller's
     ├── Conflict             PT409  job already ended, lease lost, illegal change
     ├── IdempotencyMismatch  PT422  client_request_id reused with other parameters
     ├── QuotaError           PT429
     │    ├── QuotaExceeded        daily quota used up (carries resets_at)
     │    └── TooManyActiveJobs    too many queued or processing jobs
     └── Unavailable                     a service vidanim needs could not be reached

A user never sees a traceback: each class carries the database's message, which is
written for people.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


class VidanimError(Exception):
    """Something went wrong in vidanim."""

    sqlstate: str | None = None

    def __init__(self, message: str | None = None, *, detail: str | None = None, hint: str | None = None):
        self.message = message or (self.__doc__ or "").strip()
        self.detail = detail
        self.hint = hint
        super().__init__(self.message)

    @property
    def details(self) -> dict[str, Any]:
        """The machine-readable detail the SQL API attaches (JSON), if any."""
        if not self.detail:
            return {}
        try:
            value = json.loads(self.detail)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class NotSignedIn(VidanimError):
    """Not signed in, or not allowed to do this."""

    sqlstate = "42501"


class InvalidInput(VidanimError):
    """The request is malformed."""

    sqlstate = "22023"


class NotFound(VidanimError):
    """Not found."""

    sqlstate = "PT404"


class Conflict(VidanimError):
    """The job is not in a state that allows this."""

    sqlstate = "PT409"


class IdempotencyMismatch(VidanimError):
    """This client_request_id was already used with different parameters."""

    sqlstate = "PT422"


class QuotaError(VidanimError):
    """A quota limit was reached."""

    sqlstate = "PT429"


class QuotaExceeded(QuotaError):
    """The daily video quota is used up."""

    @property
    def resets_at(self) -> datetime | None:
        value = self.details.get("resets_at")
        return datetime.fromisoformat(value) if isinstance(value, str) else None


class TooManyActiveJobs(QuotaError):
    """Too many jobs are queued or processing."""


class Unavailable(VidanimError):
    """A service vidanim needs (Supabase's API, Storage) could not be reached; try again later."""


_BY_SQLSTATE: dict[str, type[VidanimError]] = {
    cls.sqlstate: cls
    for cls in (NotSignedIn, InvalidInput, NotFound, Conflict, IdempotencyMismatch, QuotaError)
    if cls.sqlstate
}


def from_sqlstate(
    sqlstate: str | None, message: str, *, detail: str | None = None, hint: str | None = None
) -> VidanimError:
    """The exception for a database error; unknown codes give the base class."""
    cls = _BY_SQLSTATE.get(sqlstate or "", VidanimError)
    if cls is QuotaError:
        reason = ""
        if detail:
            try:
                reason = str(json.loads(detail).get("reason", ""))
            except (ValueError, AttributeError):
                reason = ""
        cls = TooManyActiveJobs if reason == "active_jobs" else QuotaExceeded
    error = cls(message, detail=detail, hint=hint)
    error.sqlstate = sqlstate
    return error
