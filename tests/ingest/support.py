"""Helpers for tests/ingest: real OpenTelemetry SDK exporters aimed at the receiver, and receipt checks."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


#: attributes of a Claude Code `tool_result` event (AARM 4.3), with the tool and parameters given
def claude_tool_result(tool: str, parameters: Mapping[str, Any], *, session: str = "cc-session-1",
                       tool_use_id: str, source: str | None = None, success: bool = True,
                       prefixed: bool = True, error: str | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "event.name": "claude_code.tool_result" if prefixed else "tool_result",
        "event.timestamp": "2026-11-29T10:00:00.000Z", "session.id": session, "user.email": "dev@example.com",
        "tool_name": tool, "success": "true" if success else "false", "duration_ms": 42,
        "tool_parameters": json.dumps(parameters), "tool_use_id": tool_use_id,
    }
    if source is not None:
        attrs["source"] = source
    if error is not None:
        attrs["error"] = error
    return attrs


@contextmanager
def log_exporter(url: str, token: str, service: str = "claude-code") -> Iterator[Any]:
    """A real SDK logger whose records go out through the OTLP/HTTP protobuf exporter at once."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPLogExporter(endpoint=f"{url}/v1/logs", headers={"Authorization": f"Bearer {token}"})
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    try:
        yield provider.get_logger("com.anthropic.claude_code.events")
    finally:
        provider.shutdown()


@contextmanager
def tracer(url: str, token: str, service: str = "research-agent") -> Iterator[tuple[Any, Any]]:
    """A real SDK tracer exporting each ended span at once over OTLP/HTTP protobuf; also kept in memory
    (the second item) so a test can export the very same spans again, as an exporter's retry would."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {token}"})
    kept = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    try:
        yield provider.get_tracer("agent"), (exporter, kept)
    finally:
        provider.shutdown()


def verified(receiver: Any, session_id: str) -> list[dict[str, Any]]:
    """The session's receipts, after checking that every one verifies offline (signature and chain)."""
    from aarmor.receipts import verify_records

    records = list(receiver.guard.store.read_receipts(session_id))
    report = verify_records(records, receiver.guard.keyring.public_keys())
    assert report.ok, report.failures
    return [r.body for r in records]


def never_claims_a_block(receipt: Mapping[str, Any]) -> None:
    """An observed receipt says what the policy would have decided, never that aarmor blocked anything."""
    enf = receipt["enforcement"]
    assert enf["mode"] == "observed" and enf["result"] == "OBSERVED"
    text = json.dumps(receipt).lower()
    assert "blocked" not in text.replace("not blocked", "")
