"""Logging for the server, the CLI, uvicorn and Celery: structlog over the standard library.

Every record, logged through structlog (``structlog.stdlib.get_logger``) or the standard library
(``logging.getLogger``: our modules, uvicorn, Celery, SQLAlchemy), is rendered by one structlog
``ProcessorFormatter``: JSON lines in production (or with ``CONDUIT_LOG_FORMAT=json``), readable
``key=value`` lines otherwise. Each line carries what is bound in the context (the request id, for
lines logged during a request: ``app/core/observability.py``) and, while a span is active, its trace
and span ids.

Secrets are redacted from the final text of each line (message, fields and traceback alike), so
nothing reaches a log that looks like a JWT, a bcrypt hash, a credential header, a cookie or a
password or token field, whoever logged it. The patterns also match inside JSON strings, whose
quotes are escaped, and never consume a backslash, so a redacted JSON line stays valid JSON.
"""

from __future__ import annotations

import logging
import logging.config
import re
from collections.abc import Callable
from typing import IO, Any, Literal

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console"]

_QUOTE = r"""(?:\\?["'])"""  # a quote, escaped or not
# Each pattern with the words (lowercase) that any text it matches contains: a pattern runs only on a
# line that has one, which spares most lines (access lines) all four scans, 40 µs a line.
_PATTERNS = [
    (("eyj",), re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (("$2",), re.compile(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}"), "[redacted-hash]"),
    (
        ("authorization", "cookie"),
        re.compile(rf"(?i)\b(authorization|cookie|set-cookie)({_QUOTE}?\s*[:=]\s*{_QUOTE}?)[^'\"\n\\]+"),
        r"\1\2[redacted]",
    ),
    (
        ("password", "passwd", "secret", "token", "pepper"),
        re.compile(
            rf"(?i)({_QUOTE}?\b(?:password|passwd|secret|token|refresh_token|access_token|pepper)\b"
            rf"{_QUOTE}?\s*[:=]\s*{_QUOTE}?)"
            r"[^\"'&\s,}\\]+"
        ),
        r"\1[redacted]",
    ),
]
# Fields of a structured event whose values are replaced whatever their type (the patterns above
# would turn a non-string JSON value into invalid JSON).
SECRET_FIELDS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "refresh_token",
        "access_token",
        "pepper",
        "authorization",
        "cookie",
        "set-cookie",
    }
)


def redact(text: str) -> str:
    lowered = text.lower()
    for words, pattern, replacement in _PATTERNS:
        if any(word in lowered for word in words):
            text = pattern.sub(replacement, text)
    return text


def _redact_fields(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    for key in SECRET_FIELDS.intersection(event):
        event[key] = "[redacted]"
    return event


def add_trace_context(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """The active span's trace and span ids (OpenTelemetry's hex spelling), if a span is active."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


def _dumps(value: Any, default: Callable[[Any], Any] | None = None, **_options: Any) -> str:
    return orjson.dumps(value, default=default).decode()


class RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """structlog's formatter for every record, structlog's and the standard library's; redacts the
    rendered line."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def make_formatter(log_format: LogFormat = "console") -> RedactingFormatter:
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    # The formatter runs in the thread and context that logged (the handlers are synchronous), so
    # context variables and the active span are those of the code that logged.
    return RedactingFormatter(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_trace_context,
            _redact_fields,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def configure_structlog() -> None:
    """Route structlog's loggers into the standard library's, to be rendered by ``make_formatter``'s
    formatter. Per process; ``create_app`` calls it, since uvicorn only applies ``logging_config``."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def logging_config(
    level: str, stream: IO[str] | None = None, log_format: LogFormat = "console"
) -> dict[str, Any]:
    """A ``dictConfig`` for the root logger, uvicorn's and Celery's (pass it as uvicorn's ``log_config``).

    uvicorn's access log is off: ``app/core/observability.py`` logs one line per request instead.
    """
    target = {"stream": stream} if stream is not None else {"stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structlog": {"()": make_formatter, "log_format": log_format}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "structlog", **target}},
        "loggers": {
            "": {"handlers": ["default"], "level": level},
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"level": level},
            # No handler and no propagation: uvicorn sees that and skips its access log entirely.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            # aiosqlite's debug lines carry every statement's raw parameters: never below WARNING.
            "aiosqlite": {"level": "WARNING"},
        },
    }


def configure_logging(level: str, stream: IO[str] | None = None, log_format: LogFormat = "console") -> None:
    logging.config.dictConfig(logging_config(level, stream, log_format))
    configure_structlog()
