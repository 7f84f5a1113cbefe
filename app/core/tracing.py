"""OpenTelemetry tracing, off unless ``CONDUIT_OTEL_ENDPOINT`` is set (docs/observability.md).

FastAPI traces its own requests (its native OpenTelemetry support: one server span per request, named
by route, with spans for the dependencies, the endpoint and the serialization), configured through
``fastapi_telemetry``. SQLAlchemy, Redis, httpx and Celery are traced by the OpenTelemetry contrib
instrumentations. Spans are exported over OTLP/HTTP in batches, from a background thread.

If the process already has an SDK tracer provider (set up by ``opentelemetry-instrument``, by an
application embedding Conduit, or by a test with an in-memory exporter), it is used as it is, with
its exporters, and none is added.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.sqlalchemy.version import __version__ as sqlalchemy_instrumentation
from opentelemetry.metrics import NoOpUpDownCounter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings


def setup(settings: Settings) -> TracerProvider | None:
    """The process's tracer provider (made and installed the first time), or None without an endpoint.
    Also instruments Redis, httpx and Celery, which are patched process-wide."""
    if not settings.otel_endpoint:
        return None
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
        endpoint = f"{settings.otel_endpoint.rstrip('/')}/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
    for instrumentor in _library_instrumentors():
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
    return provider


def _library_instrumentors() -> list[BaseInstrumentor]:
    instrumentors: list[BaseInstrumentor] = [RedisInstrumentor(), CeleryInstrumentor()]  # type: ignore[no-untyped-call]
    if importlib.util.find_spec("httpx") is not None:  # a development dependency: absent in the image
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        instrumentors.append(HTTPXClientInstrumentor())
    return instrumentors


def trace_engine(engine: AsyncEngine, provider: TracerProvider) -> None:
    """A span per SQL statement of ``engine``. The instrumentation's ``EngineTracer`` directly: its
    instrumentor is a process-wide singleton that takes engines in one call only, while a process
    makes several (a Celery worker one per thread, the tests one per app)."""
    tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", sqlalchemy_instrumentation)
    # The instrumentation's connection-usage metric is not wanted: the pool is in the Prometheus metrics.
    EngineTracer(tracer, engine.sync_engine, NoOpUpDownCounter("db.client.connections.usage"))  # type: ignore[no-untyped-call]


def fastapi_telemetry(
    provider: TracerProvider | None, *, exclude: Callable[[MutableMapping[str, Any]], bool]
) -> TelemetryConfig:
    """FastAPI's own telemetry: request spans with ``provider``, if any. Its metrics and log export
    stay off (the metrics are Prometheus's, the logs structlog's); without a provider the per-request
    check is skipped altogether."""
    return {
        "tracer_provider": provider,
        "tracing": provider is not None,
        "metrics": False,
        "logs": False,
        "exclude": exclude,
    }


def shutdown(provider: TracerProvider | None) -> None:
    """Send the spans still queued and undo the process-wide patches (at the end of the app)."""
    if provider is None:
        return
    for instrumentor in _library_instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    provider.force_flush()
