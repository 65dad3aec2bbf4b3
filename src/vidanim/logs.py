"""Structured logs: one line per event, key=value or JSON, secrets never included.

    log_event(logger, "job.created", job_id=..., user_id=...)

Values that look like credentials are masked and URLs lose their query string
(signed URLs carry their token there), both when a field is logged and again in
the formatter, as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_SECRETISH = re.compile(
    r"(?i)\b(Key|Bearer)\s+[A-Za-z0-9._:\-]+|([?&](token|sig|signature|_jwt|apikey|key)=)[^&\s\"']+"
)


def safe_url(url: str | None) -> str | None:
    """The URL without query or fragment (where signed URLs keep their tokens)."""
    if not url:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def redact(text: str) -> str:
    return _SECRETISH.sub(lambda m: (m.group(2) + "***") if m.group(2) else f"{m.group(1)} ***", text)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    # The message itself is readable under any handler; our formatters use the fields.
    text = " ".join([event, *(f"{k}={redact(str(v))}" for k, v in fields.items() if v is not None)])
    logger.log(level, "%s", text, extra={"event": event, "fields": fields})


class _Base(logging.Formatter):
    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        for key, value in (getattr(record, "fields", None) or {}).items():
            if value is not None:
                out[key] = value if isinstance(value, int | float | bool) else redact(str(value))
        if record.exc_info and record.exc_info[1] is not None:
            out["error"] = redact(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        return out


class KeyValueFormatter(_Base):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for key, value in self.fields(record).items():
            text = str(value)
            parts.append(f"{key}={json.dumps(text) if (' ' in text or '=' in text or not text) else text}")
        return " ".join(parts)


class JsonFormatter(_Base):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), default=str)


def configure(fmt: str = "kv", level: str = "INFO") -> None:
    """Send vidanim's logs to stderr, one line per event."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger("vidanim")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
