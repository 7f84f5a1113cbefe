"""Logging set-up shared by the server, the CLI and uvicorn, with secrets redacted from every line.

Redaction works on the final formatted text (message, arguments and traceback alike), so nothing
reaches a log that looks like a JWT, a bcrypt hash, a credential header, a cookie or a password or
token field, whoever logged it.
"""

from __future__ import annotations

import logging
import logging.config
import re
from typing import IO, Any

_PATTERNS = [
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (re.compile(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}"), "[redacted-hash]"),
    (
        re.compile(r"(?i)\b(authorization|cookie|set-cookie)(['\"]?\s*[:=]\s*['\"]?)[^'\"\n]+"),
        r"\1\2[redacted]",
    ),
    (
        re.compile(
            r"(?i)([\"']?\b(?:password|passwd|secret|token|refresh_token|access_token|pepper)\b[\"']?\s*[:=]\s*[\"']?)"
            r"[^\"'&\s,}]+"
        ),
        r"\1[redacted]",
    ),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats with another formatter class, then redacts the result."""

    def __init__(self, inner: str = "logging.Formatter", **options: Any) -> None:
        super().__init__()
        module, _, name = inner.rpartition(".")
        self._inner: logging.Formatter = getattr(__import__(module, fromlist=[name]), name)(**options)

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._inner.format(record))


def logging_config(level: str, stream: IO[str] | None = None) -> dict[str, Any]:
    """A ``dictConfig`` for the root logger and uvicorn's loggers (pass it as uvicorn's ``log_config``)."""
    target = {"stream": stream} if stream is not None else {"stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {
                "()": RedactingFormatter,
                "inner": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(name)s: %(message)s",
                "use_colors": False,
            },
            "access": {
                "()": RedactingFormatter,
                "inner": "uvicorn.logging.AccessFormatter",
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
                "use_colors": False,
            },
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", **target},
            "access": {"class": "logging.StreamHandler", "formatter": "access", **target},
        },
        "loggers": {
            "": {"handlers": ["default"], "level": level},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
            # aiosqlite's debug lines carry every statement's raw parameters: never below WARNING.
            "aiosqlite": {"level": "WARNING"},
        },
    }


def configure_logging(level: str, stream: IO[str] | None = None) -> None:
    logging.config.dictConfig(logging_config(level, stream))
