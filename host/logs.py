"""Logging set-up: structured JSON lines for machines (with run id and job type when a record
comes from a run), plain text for people at a terminal."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

#: Record attributes copied into JSON lines when present (set by the worker's run logger, and
#: by the notifier's notice when it disables a subscription).
_CONTEXT_FIELDS = ("run_id", "job_type", "attempt", "worker", "subscription_id", "subscription",
                   "tenant", "disabled_reason", "times_disabled")  # fmt: skip


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "info", fmt: str | None = None) -> None:
    """Log to stderr; `fmt` "json" or "text", by default text on a terminal and JSON otherwise."""
    fmt = fmt or ("text" if sys.stderr.isatty() else "json")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
