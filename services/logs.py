"""Log lines: one JSON object per line for the log pipeline, readable text on a terminal.

Every line has `ts`, `level`, `process`, `logger` and `event` (the message), plus the correlation
fields a call site attaches with `extra=` (CONTEXT): they tie a detection's topic offset to its
ticket, the ticket's events and their deliveries. A filter on the handler masks anything shaped
like a credential (a bearer token, an org API key, an `apikey=`, a webhook or integration secret)
before any line is written, whatever a message or a library says.
"""

import json
import logging
import logging.config
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final

CONTEXT: Final = (
    "correlation_id",
    "causation_id",
    "ticket_id",
    "event_id",
    "position",
    "topic",
    "partition",
    "offsets",
    "channel",
    "subscription",
    "count",
)
_SECRETS: Final = (
    (re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}"), "<token>"),  # a JWT
    (re.compile(r"\b(shk_[0-9a-f]{16})_[\w-]+"), r"\1_<redacted>"),  # an org API key: its id stays
    (re.compile(r"(?i)(apikey=|bearer\s+|basic\s+)[^\s\"',;]+"), r"\1<redacted>"),
    (re.compile(r"(?i)(\"?(?:api_key|secret|password)\"?\s*[:=]\s*\"?)[^\s\"',;}]+"), r"\1<redacted>"),
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "process": self.process,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key in CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str, ensure_ascii=False)


def logging_config(level: str, process: str, json_lines: bool | None = None) -> dict[str, Any]:
    """The `logging.config` dictionary of a process (faust's worker takes the same one)."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    formatter: dict[str, Any] = (
        {"()": JsonFormatter, "process": process}
        if json_lines
        else {"format": f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": Redact}},
        "formatters": {"line": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "line",
                "filters": ["redact"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def configure(level: str, process: str, json_lines: bool | None = None) -> None:
    logging.config.dictConfig(logging_config(level, process, json_lines))
