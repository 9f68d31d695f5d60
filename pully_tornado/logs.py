"""Logging set-up: readable lines, or JSON lines (``PULLY_LOG_FORMAT=json``) that also carry
the access log and connection events as structured fields."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

access_log = logging.getLogger("pully.access")
events = logging.getLogger("pully.events")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Root logging for ``pully serve``: ``fmt`` is ``text`` or ``json``. Connection events
    (``pully.events``) are emitted in JSON mode only: as text they would drown the log."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        events.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))


def log_request(handler: Any) -> None:
    """Tornado's ``log_function``: the access log, with structured fields."""
    request = handler.request
    log_access(
        handler.get_status(), request.method, request.path, request.remote_ip,
        request.request_time(),
    )  # fmt: skip


def log_access(status: int, method: str, path: str, remote_ip: str, seconds: float) -> None:
    """One access log line (also for requests answered before any handler saw them).
    WebSocket upgrades (101) are debug: the ``connect`` event records each connection, and a
    reconnect storm would otherwise cost every connection a second line (~10 % of its CPU)."""
    level = (
        logging.DEBUG if status == 101 else logging.INFO if status < 400
        else logging.WARNING if status < 500 else logging.ERROR
    )  # fmt: skip
    if not access_log.isEnabledFor(level):
        return
    duration_ms = round(1000.0 * seconds, 2)
    access_log.log(
        level, "%d %s %s (%s) %.2fms", status, method, path, remote_ip, duration_ms,
        extra={"status": status, "method": method, "path": path, "remote_ip": remote_ip,
               "duration_ms": duration_ms},
    )  # fmt: skip
