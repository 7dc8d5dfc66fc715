"""The `otlp` sink: telemetry events as OpenTelemetry traces, metrics and logs over OTLP/HTTP (protobuf).

Point it at an OpenTelemetry Collector (docs/telemetry-otel.md), which routes the signals to any backend.

    telemetry sink options: endpoint (http://127.0.0.1:4318), service_name (aarmor), headers_env (the name
    of an environment variable holding `k=v,k2=v2`, e.g. an API key), timeout (seconds, 10),
    compression (none | gzip), resource_attributes ({key: value}).

Delivery is synchronous: `send` hands spans, log records and metrics to the SDK's OTLP exporters directly
(not through batch processors, whose failures are only logged) and raises `SinkError` unless the collector
accepted all three, so the telemetry exporter keeps its cursor and sends the batch again later. Delivery is
at least once: a retried batch repeats its spans (same ids) and log records (same `aarmor.event.id`);
metrics are cumulative and count each `event_id` once per process, so a retry does not inflate them.

Needs the `otel` extra (`pip install 'aarmor[otel]'`); imported lazily, so core aarmor runs without it.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aarmor.errors import ConfigError
from aarmor.telemetry import SinkError, TelemetryEvent

if TYPE_CHECKING:  # pragma: no cover
    from opentelemetry.metrics import CallbackOptions, Observation

__all__ = ["OtlpOptions", "OtlpSink", "build"]

Formatter = Callable[[TelemetryEvent], str]
#: event types counted by `aarmor.alerts` (by `aarmor.event.type`)
ALERT_TYPES = frozenset({"alert.drift", "alert.injection", "alert.observed", "verification.failed",
                         "policy.rejected", "telemetry.degraded", "telemetry.dropped"})
#: seconds; decisions take milliseconds, approvals are not part of a decision
_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REMEMBER = 65_536


class OtlpOptions(BaseModel):
    """Options of an `otlp` sink; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = "http://127.0.0.1:4318"
    service_name: str = Field("aarmor", min_length=1)
    headers_env: str | None = Field(None, min_length=1)
    timeout: float = Field(10.0, gt=0, le=300)
    compression: Literal["none", "gzip"] = "none"
    resource_attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("endpoint")
    @classmethod
    def _base_url(cls, v: str) -> str:
        url = urllib.parse.urlsplit(v)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"`{v}` is not an http:// or https:// URL of an OTLP/HTTP receiver")
        if url.query or url.fragment or url.username or url.password:
            raise ValueError(f"`{v}` must not carry a query, fragment or credentials (use headers_env)")
        if url.path.rstrip("/").endswith(("/v1/traces", "/v1/metrics", "/v1/logs")):
            raise ValueError(f"`{v}` names a signal path; give the base URL (the sink appends /v1/<signal>)")
        return v.rstrip("/")


def build(name: str, formatter: Formatter, options: Mapping[str, Any]) -> OtlpSink:
    """The sink `name`; `formatter` renders each event as its log record's body.

    Raises:
        ConfigError: an unknown or invalid option (named), `headers_env` naming an unset or malformed
            variable, or the `otel` extra not installed.
    """
    try:
        opts = OtlpOptions.model_validate(dict(options))
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            parts.append(f"`{loc}`: {'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}")
        raise ConfigError(f"telemetry sink `{name}` (otlp): " + "; ".join(parts)) from None
    headers = _headers_from_env(name, opts.headers_env)
    try:
        for module in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
            importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"telemetry sink `{name}` (otlp) needs the OpenTelemetry SDK and OTLP exporter: "
                          f"pip install 'aarmor[otel]' ({exc})") from exc
    return OtlpSink(name, formatter, opts, headers)


def _headers_from_env(name: str, var: str | None) -> dict[str, str]:
    """`k=v,k2=v2` (values percent-decoded, as OTEL_EXPORTER_OTLP_HEADERS) from the variable `var`. Values are
    secrets (API keys): no message repeats them."""
    if var is None:
        return {}
    raw = os.environ.get(var)
    if raw is None:
        raise ConfigError(f"telemetry sink `{name}` (otlp): `headers_env`: environment variable `{var}` is not set")
    headers: dict[str, str] = {}
    for i, item in enumerate(p for p in raw.split(",") if p.strip()):
        key, sep, value = item.partition("=")
        key = urllib.parse.unquote(key).strip().lower()
        if not sep or not key or any(c.isspace() or c in '"(),/:;<=>?@[\\]{}' for c in key):
            raise ConfigError(f"telemetry sink `{name}` (otlp): `headers_env`: item {i + 1} of `{var}` is not "
                              f"`name=value` with a valid header name")
        headers[key] = urllib.parse.unquote(value).strip()
    return headers


class _ErrorsOfThisThread(logging.Handler):
    """Collects what the OpenTelemetry exporters log as errors while this thread exports, so `SinkError`
    can say why the collector did not accept a batch (the exporters return only SUCCESS/FAILURE)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def _exporter_errors() -> Iterator[_ErrorsOfThisThread]:
    handler = _ErrorsOfThisThread()
    logger = logging.getLogger("opentelemetry.exporter.otlp")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class OtlpSink:
    """Exports batches of events as spans, log records and metrics; see the module docstring."""

    def __init__(self, name: str, formatter: Formatter, options: OtlpOptions, headers: Mapping[str, str]) -> None:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from aarmor import __version__
        from aarmor.telemetry.sinks.otlp_signals import ActionSpans

        self.name = name
        self.options = options
        self._formatter = formatter
        self._lock = threading.Lock()
        self._closed = False
        self._resource = Resource.create({**options.resource_attributes, "service.name": options.service_name,
                                          "service.version": __version__})
        self._scope = InstrumentationScope("aarmor.telemetry", __version__)
        self._spans = ActionSpans(self._resource, self._scope, remember=_REMEMBER)
        kw: dict[str, Any] = {
            "headers": dict(headers), "timeout": options.timeout,
            "compression": Compression.Gzip if options.compression == "gzip" else Compression.NoCompression}
        self._urls = {s: f"{options.endpoint}/v1/{s}" for s in ("traces", "logs", "metrics")}
        self._trace_exporter = OTLPSpanExporter(endpoint=self._urls["traces"], **kw)
        self._log_exporter = OTLPLogExporter(endpoint=self._urls["logs"], **kw)
        self._metric_exporter = OTLPMetricExporter(endpoint=self._urls["metrics"], **kw)
        # cumulative sums: a lost or repeated metrics export never skews a counter, the next one corrects it
        self._reader = InMemoryMetricReader()
        self._meter_provider = MeterProvider(metric_readers=[self._reader], resource=self._resource,
                                             shutdown_on_exit=False)
        meter = self._meter_provider.get_meter("aarmor.telemetry", __version__)
        self._decisions = meter.create_counter(
            "aarmor.decisions", unit="{decision}", description="Decisions, by result and tool")
        self._duration = meter.create_histogram(
            "aarmor.decision.duration", unit="s", explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            description="From an action's submission to its recorded decision (when its events carry both)")
        self._executions = meter.create_counter(
            "aarmor.tool.executions", unit="{execution}", description="Tool executions, by tool and success")
        self._alerts = meter.create_counter(
            "aarmor.alerts", unit="{alert}", description="Security and pipeline alerts, by event type")
        self._queue_depth: int | None = None
        meter.create_observable_gauge(
            "aarmor.telemetry.queue", callbacks=[self._observe_queue], unit="{event}",
            description="Events spooled and not yet delivered to this sink")
        self._counted: dict[str, None] = {}

    # --- the Sink contract ---------------------------------------------------------------------------

    def send(self, events: Sequence[TelemetryEvent]) -> None:
        """Deliver `events` as spans, log records and metrics, or raise `SinkError` (nothing is buffered:
        the caller sends the same batch again). An empty batch exports the metrics alone (the queue gauge)."""
        from opentelemetry.sdk._logs.export import LogRecordExportResult
        from opentelemetry.sdk.metrics.export import MetricExportResult
        from opentelemetry.sdk.trace.export import SpanExportResult

        from aarmor.telemetry.sinks.otlp_signals import log_record

        with self._lock:
            if self._closed:
                raise SinkError(f"otlp sink `{self.name}` is closed")
            observed = time.time_ns()
            spans, logs = [], []
            for ev in events:
                self._spans.note(ev)
                span = self._spans.span(ev)
                if span is not None:
                    spans.append(span)
                logs.append(log_record(ev, self._formatter(ev).rstrip("\n"), self._resource, self._scope, observed))
                self._count(ev)
            with _exporter_errors() as errors:
                if spans and self._trace_exporter.export(spans) is not SpanExportResult.SUCCESS:
                    raise self._failed("traces", f"{len(spans)} spans", errors.messages)
                if logs and self._log_exporter.export(logs) is not LogRecordExportResult.SUCCESS:
                    raise self._failed("logs", f"{len(logs)} log records", errors.messages)
                data = self._reader.get_metrics_data()
                if data is not None and data.resource_metrics:
                    result = self._metric_exporter.export(data, timeout_millis=self.options.timeout * 1000)
                    if result is not MetricExportResult.SUCCESS:
                        raise self._failed("metrics", "metrics", errors.messages)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._trace_exporter.shutdown()  # type: ignore[no-untyped-call]  # (untyped in the SDK)
            self._log_exporter.shutdown()  # type: ignore[no-untyped-call]
            self._metric_exporter.shutdown()
            self._meter_provider.shutdown()

    # --- for the telemetry exporter ------------------------------------------------------------------

    def set_queue_depth(self, n: int) -> None:
        """The number of spooled events this sink has not delivered yet (`aarmor.telemetry.queue`), exported
        with the next `send` (an empty one will do)."""
        if n < 0:
            raise ValueError(f"queue depth must be >= 0, found {n}")
        self._queue_depth = n

    # --- internals -----------------------------------------------------------------------------------

    def _failed(self, signal: str, what: str, messages: Sequence[str]) -> SinkError:
        why = messages[-1] if messages else "the exporter reported failure"
        return SinkError(f"otlp sink `{self.name}`: {self._urls[signal]} did not accept {what}: {why}")

    def _observe_queue(self, options: CallbackOptions) -> Iterator[Observation]:
        from opentelemetry.metrics import Observation

        if self._queue_depth is not None:
            yield Observation(self._queue_depth, {"aarmor.telemetry.sink": self.name})

    def _count(self, ev: TelemetryEvent) -> None:
        """Add `ev` to the metrics once per process, however often its batch is sent."""
        from aarmor.telemetry.sinks.otlp_signals import evaluation_start, time_ns

        if ev.event_id in self._counted:
            return
        self._counted[ev.event_id] = None
        if len(self._counted) > _REMEMBER:
            del self._counted[next(iter(self._counted))]
        tool = str((ev.action or {}).get("tool") or "")
        if ev.type == "action.decided":
            result = str((ev.decision or {}).get("result") or "")
            self._decisions.add(1, {"aarmor.decision.result": result, "gen_ai.tool.name": tool})
            start = evaluation_start(ev)
            if start is not None:
                self._duration.record(max(time_ns(ev.time) - start, 0) / 1e9,
                                      {"aarmor.decision.result": result, "gen_ai.tool.name": tool})
        elif ev.type in ("action.executed", "action.failed"):
            self._executions.add(1, {"gen_ai.tool.name": tool,
                                     "aarmor.execution.success": ev.type == "action.executed"})
        if ev.type in ALERT_TYPES:
            self._alerts.add(1, {"aarmor.event.type": ev.type})
