"""Tracing, exported to OpenTelemetry's own in-memory exporter: a server span per request named by
its route template, a span per SQL statement in the same trace, and the trace id in the log lines."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from tests.conftest import make_settings
from tests.ops.conftest import LogLines, access_lines


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """The process's tracer provider (set once: OpenTelemetry allows no other), exporting here. An app
    with CONDUIT_OTEL_ENDPOINT uses a provider already installed, as it would one set up by
    ``opentelemetry-instrument``, so the endpoint below is never contacted."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


async def test_a_request_and_its_statements_are_traced(
    database_url: str,
    tmp_path: Path,
    engine: AsyncEngine,
    exporter: InMemorySpanExporter,
    log_lines: LogLines,
) -> None:
    settings = make_settings(database_url, tmp_path, otel_endpoint="http://127.0.0.1:4318", log_level="INFO")
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/api/v1") as client,
    ):
        exporter.clear()
        response = await client.get("/articles/no-such-article")
    assert response.status_code == 404

    spans = exporter.get_finished_spans()
    (server,) = [span for span in spans if span.kind == SpanKind.SERVER]
    assert server.name == "GET /api/v1/articles/{slug}"
    assert server.attributes is not None and server.attributes["http.route"] == "/api/v1/articles/{slug}"
    assert server.attributes["http.response.status_code"] == 404
    statements = [
        span
        for span in spans
        if span.instrumentation_scope is not None
        and span.instrumentation_scope.name == "opentelemetry.instrumentation.sqlalchemy"
    ]
    assert statements, [span.name for span in spans]
    assert all(span.context.trace_id == server.context.trace_id for span in statements)

    (line,) = access_lines(log_lines())
    assert line["trace_id"] == format(server.context.trace_id, "032x")
    assert len(line["span_id"]) == 16


async def test_tracing_is_off_without_an_endpoint(
    database_url: str,
    tmp_path: Path,
    engine: AsyncEngine,
    exporter: InMemorySpanExporter,
    log_lines: LogLines,
) -> None:
    app = create_app(make_settings(database_url, tmp_path, log_level="INFO"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as client:
        exporter.clear()
        assert (await client.get("/articles/no-such-article")).status_code == 404
    await app.state.engine.dispose()
    assert exporter.get_finished_spans() == ()
    (line,) = access_lines(log_lines())
    assert "trace_id" not in line
