"""Observe-only ingestion of agent telemetry (AARM 4.3 OTel ingestion pattern): `aarmor ingest otlp`.

An OTLP/HTTP receiver (`receiver`) decodes traces and logs (`otlp_codec`), picks out agent tool events
(`tool_events`: OpenTelemetry GenAI `execute_tool` spans and Claude Code `tool_result`/`tool_use` log
records) and records each once (`recorder`) through the one pipeline, `Session.observe`: judged by the
policy, nothing enforced, a signed receipt marked observed. Needs the `ingest` extra (starlette, uvicorn,
opentelemetry-proto); the core imports nothing of it. See docs/ingest-otlp.md.
"""

from __future__ import annotations

__all__ = ["MISSING_EXTRA"]

MISSING_EXTRA = "`aarmor ingest otlp` needs the `ingest` extra: pip install 'aarmor[ingest]'"
