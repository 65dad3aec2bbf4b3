"""Structured logs: one line per event, key=value or JSON, secrets never included.

    log_event(logger, "job.created", job_id=..., user_id=...)

Values that look like credentials are masked and URLs lose their query string
(signed URLs carry their token there), both when a field is logged and again in
the formatter, as a second line of defence.

`configure` puts the one handler on the root logger, so what the libraries log
(psycopg's pool, psycopg, uvicorn, httpx, asyncio, Python's warnings) comes out
in the same format, one line each, with `logger=` naming where it came from; the
libraries at WARNING and above (or the chosen level, if higher), vidanim at the
chosen level. A traceback becomes the line's `error` field, never lines of its own.
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


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a library's record whose arguments do not fit its format: say what it had
        return f"{record.msg} {record.args}"


class _Base(logging.Formatter):
    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or redact(_message(record)),
        }
        if not record.name.startswith("vidanim"):
            out["logger"] = record.name  # a library's message: where it came from
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
            parts.append(f"{key}={kv_value(str(value))}")
        return " ".join(parts)


def kv_value(text: str) -> str:
    """The value as it stands, or JSON-quoted when it would not read back as one token of one line."""
    if text and not any(c.isspace() or c in '="' or not c.isprintable() for c in text):
        return text
    return json.dumps(text)


class JsonFormatter(_Base):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """vidanim's handler on the root logger (told apart from others, e.g. a test runner's)."""


def configure(fmt: str = "kv", level: str = "INFO") -> None:
    """Send every log line to stderr in one format, one line per event: vidanim's and the libraries'."""
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    chosen = logging.getLevelName(level.upper())
    if not isinstance(chosen, int):
        raise ValueError(f"Unknown level: {level!r}")
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Handler)] + [handler]
    root.setLevel(max(chosen, logging.WARNING))
    ours = logging.getLogger("vidanim")
    ours.handlers[:] = []
    ours.setLevel(chosen)
    ours.propagate = True
    logging.captureWarnings(True)
