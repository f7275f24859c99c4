"""Logging: one JSON object per line when stderr is not a terminal (log collectors), text otherwise."""

from __future__ import annotations

import json
import logging
import sys
import time

LOGGER = "kresume.sidecar"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", …extra}``; ``extra={"fields": {...}}`` adds keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def setup(fmt: str = "auto", level: int = logging.INFO) -> logging.Logger:
    """Configure the sidecar logger on stderr; ``fmt`` is ``json``, ``text`` or ``auto``."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log = logging.getLogger(LOGGER)
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    return log


def get() -> logging.Logger:
    """The sidecar logger."""
    return logging.getLogger(LOGGER)
