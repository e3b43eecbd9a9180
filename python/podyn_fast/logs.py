"""`--log-format json`: one JSON object per line, for log collectors."""

from __future__ import annotations

import logging
import time

import orjson


def configure(*, json: bool = False, verbose: bool = False) -> None:
    """Log to stderr, as text (``podyn-fast: message``) or JSON lines; debug with ``verbose``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json else logging.Formatter("podyn-fast: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # JSON lines carry the progress and summaries too (info); text shows those on the console.
    root.setLevel(logging.DEBUG if verbose else logging.INFO if json else logging.WARNING)
    # Third-party debug output (botocore's wire logs) stays out even with --verbose.
    for noisy in ("botocore", "urllib3", "psycopg"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class JsonFormatter(logging.Formatter):
    """``{"time": …, "level": …, "logger": …, "message": …}`` plus ``fields`` given as ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()
