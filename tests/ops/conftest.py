"""Observability tests: the log lines a test produced, as production renders them (JSON), parsed."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from app.core.logging import configure_logging

LogLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Every line logged from here on at DEBUG or above (the ``conduit`` logger's own level, set by
    each app from CONDUIT_LOG_LEVEL, still applies), in the JSON format, each parsed."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("DEBUG", stream, log_format="json")
    yield lambda: [orjson.loads(line) for line in stream.getvalue().splitlines()]
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "conduit.access"]


def sample(metric: str, /, **labels: str) -> float:
    """The current value of a sample in this process's registry (0 if it does not exist yet)."""
    return REGISTRY.get_sample_value(metric, labels) or 0.0
