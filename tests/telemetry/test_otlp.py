"""The `otlp` sink against a real OTLP/HTTP receiver on loopback that decodes what it gets with the official
`opentelemetry-proto` messages: spans, metrics and log records from events a real Guard recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from aarmor import ActionDenied, Identity
from aarmor.errors import ConfigError
from aarmor.telemetry import SinkError, TelemetryEvent
from aarmor.telemetry.events import project
from aarmor.telemetry.sinks import otlp
from aarmor.telemetry.sinks.otlp_signals import span_context, time_ns

POLICY = """
policy: {id: otel-test, version: "7", default: ALLOW}
rules:
  - id: no-deletes
    match: {tool: files, operation: delete}
    action: DENY
    reason: deleting files is not allowed
"""
SECRET = "hunter2-parameter-value"
REQUESTS = {"/v1/traces": ExportTraceServiceRequest, "/v1/metrics": ExportMetricsServiceRequest,
            "/v1/logs": ExportLogsServiceRequest}


class Receiver:
    """An OTLP/HTTP receiver: POST /v1/{traces,metrics,logs} with protobuf bodies, decoded and kept."""

    def __init__(self) -> None:
        self.port = 0
        self.status = 200
        self.got: dict[str, list[Any]] = {path: [] for path in REQUESTS}
        self.raw: list[bytes] = []
        self.headers: Any = None
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                kind = REQUESTS.get(self.path)
                if kind is None or self.headers["Content-Type"] != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                if receiver.status == 200:
                    msg: Message = kind()
                    msg.ParseFromString(body)
                    receiver.got[self.path].append(msg)
                    receiver.raw.append(body)
                    receiver.headers = self.headers  # case-insensitive
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[Any]:
        return [s for req in self.got["/v1/traces"] for rs in req.resource_spans for ss in rs.scope_spans
                for s in ss.spans]

    def logs(self) -> list[Any]:
        return [r for req in self.got["/v1/logs"] for rl in req.resource_logs for sl in rl.scope_logs
                for r in sl.log_records]

    def metric(self, name: str) -> Any:
        """The metric `name` in the latest metrics export that has it (they are cumulative)."""
        for req in reversed(self.got["/v1/metrics"]):
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == name:
                            return m
        raise AssertionError(f"no metric {name}")


def attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        out[kv.key] = [x.string_value for x in v.array_value.values] if which == "array_value" else getattr(v, which)
    return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    if r._server is not None:
        try:
            r.stop()
        except OSError:
            pass


def _events(make_guard: Any) -> tuple[list[TelemetryEvent], str]:
    """Events a real Guard recorded: an allowed call that succeeds, one whose tool fails, one denied."""
    guard = make_guard(POLICY)

    def ok(arguments: dict[str, Any]) -> str:
        return "read it"

    def broken(arguments: dict[str, Any]) -> str:
        raise TimeoutError("the backend timed out")

    with guard.session(identity=Identity(human="alice@company.com")) as s:
        s.invoke("files.read", {"path": "/tmp/a", "token": SECRET}, ok)
        with pytest.raises(TimeoutError):
            s.invoke("files.write", {"path": "/tmp/b", "body": SECRET}, broken)
        with pytest.raises(ActionDenied):
            s.invoke("files.delete", {"path": "/tmp/c", "why": SECRET}, ok)
    events = project(list(guard.store.read_log(s.session_id)), list(guard.store.read_receipts(s.session_id)))
    return events, s.session_id


def _sink(receiver: Receiver, **options: Any) -> otlp.OtlpSink:
    return otlp.build("collector", lambda ev: json.dumps(ev.to_json(), sort_keys=True) + "\n",
                      {"endpoint": receiver.url, "timeout": 0.5, **options})


def test_spans_logs_and_metrics_from_recorded_events(make_guard: Any, receiver: Receiver) -> None:
    events, session_id = _events(make_guard)
    assert [e.type for e in events] == ["action.decided", "action.executed", "action.decided", "action.failed",
                                        "action.decided"]
    sink = _sink(receiver, service_name="aarmor-test")
    sink.send(events)
    sink.close()

    spans = receiver.spans()
    assert [s.name for s in spans] == ["aarmor.evaluate files", "execute_tool files", "aarmor.evaluate files",
                                       "execute_tool files", "aarmor.evaluate files"]
    read_eval, read_exec, write_eval, write_exec, delete_eval = spans
    # one action's spans share a trace derived from (session, action id); the execution is the evaluation's child
    aid = events[0].action["action_id"]  # type: ignore[index]
    ctx = span_context(session_id, aid, "evaluate")
    assert read_eval.trace_id == ctx.trace_id.to_bytes(16, "big") == read_exec.trace_id
    assert read_eval.span_id == ctx.span_id.to_bytes(8, "big") == read_exec.parent_span_id
    assert read_eval.parent_span_id == b""
    assert len({read_eval.trace_id, write_eval.trace_id, delete_eval.trace_id}) == 3
    # timestamps are the events': evaluation ends at the decision, execution runs from it to the outcome
    assert read_eval.end_time_unix_nano == time_ns(events[0].time) == read_exec.start_time_unix_nano
    assert read_exec.end_time_unix_nano == time_ns(events[1].time)
    assert read_exec.start_time_unix_nano <= read_exec.end_time_unix_nano

    ex = attrs(read_exec.attributes)
    assert ex["gen_ai.operation.name"] == "execute_tool"
    assert ex["gen_ai.tool.name"] == "files"
    assert ex["gen_ai.tool.call.id"] == aid
    assert ex["gen_ai.conversation.id"] == session_id
    assert ex["aarmor.decision.result"] == "ALLOW"
    assert ex["aarmor.policy.id"] == "otel-test" and ex["aarmor.policy.version"] == "7"
    assert ex["aarmor.identity.human"] == "alice@company.com"
    assert ex["aarmor.action.parameters_digest"].startswith("sha256:")
    assert read_exec.status.code == 0  # UNSET

    failed = attrs(write_exec.attributes)
    assert write_exec.status.code == 2 and failed["error.type"] == "TimeoutError"
    denied = attrs(delete_eval.attributes)
    assert denied["aarmor.decision.result"] == "DENY" and denied["aarmor.decision.rule_id"] == "no-deletes"
    assert delete_eval.status.code == 2 and "no-deletes" in delete_eval.status.message
    assert "gen_ai.operation.name" not in denied  # never executed

    logs = receiver.logs()
    assert [attrs(r.attributes)["aarmor.event.id"] for r in logs] == [e.event_id for e in events]
    assert [r.event_name for r in logs] == [e.type for e in events]
    assert json.loads(logs[4].body.string_value)["decision"]["rule_id"] == "no-deletes"
    assert logs[4].severity_text == events[4].severity and logs[4].severity_number >= 13  # WARN or above
    assert logs[0].trace_id == read_eval.trace_id and logs[0].span_id == read_eval.span_id
    assert logs[0].time_unix_nano == time_ns(events[0].time)

    rm = receiver.got["/v1/traces"][0].resource_spans[0].resource
    assert attrs(rm.attributes)["service.name"] == "aarmor-test"

    decisions = {attrs(p.attributes)["aarmor.decision.result"]: p.as_int
                 for p in receiver.metric("aarmor.decisions").sum.data_points}
    assert decisions == {"ALLOW": 2, "DENY": 1}
    executions = {attrs(p.attributes)["aarmor.execution.success"]: p.as_int
                  for p in receiver.metric("aarmor.tool.executions").sum.data_points}
    assert executions == {True: 1, False: 1}

    # no parameter value travelled in any signal
    assert all(SECRET.encode() not in body for body in receiver.raw)


def test_dead_collector_raises_and_the_same_batch_is_delivered_later(make_guard: Any, receiver: Receiver) -> None:
    events, _ = _events(make_guard)
    sink = _sink(receiver)
    receiver.stop()
    with pytest.raises(SinkError, match=r"otlp sink `collector`: http://127\.0\.0\.1:\d+/v1/traces did not accept"):
        sink.send(events)
    assert receiver.spans() == []

    receiver.start()  # same port
    sink.send(events)
    assert len(receiver.spans()) == 5
    assert [attrs(r.attributes)["aarmor.event.id"] for r in receiver.logs()] == [e.event_id for e in events]
    # a retried batch is counted once
    sink.send(events)
    decisions = {attrs(p.attributes)["aarmor.decision.result"]: p.as_int
                 for p in receiver.metric("aarmor.decisions").sum.data_points}
    assert decisions == {"ALLOW": 2, "DENY": 1}
    sink.close()


def test_collector_rejecting_raises_sink_error(make_guard: Any, receiver: Receiver) -> None:
    events, _ = _events(make_guard)
    receiver.status = 400
    sink = _sink(receiver)
    with pytest.raises(SinkError, match="400"):
        sink.send(events)
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.send(events)


def test_spans_of_one_action_link_up_across_batches_and_sinks(make_guard: Any, receiver: Receiver) -> None:
    events, _ = _events(make_guard)
    first = _sink(receiver)
    first.send(events[:1])
    first.close()
    second = _sink(receiver)  # another process, say: it never saw the decision
    second.send(events[1:2])
    second.close()
    evaluation, execution = receiver.spans()
    assert execution.trace_id == evaluation.trace_id and execution.parent_span_id == evaluation.span_id
    # without the decision's time, the execution is an instant at the outcome
    assert execution.start_time_unix_nano == execution.end_time_unix_nano == time_ns(events[1].time)


def test_evaluation_duration_when_the_event_carries_the_action_timestamp(receiver: Receiver) -> None:
    ev = TelemetryEvent("evt_" + "1" * 32, "action.decided", "2026-11-29T10:00:00.250Z", "info", "sess-1", None,
                        {"action_id": "act-1", "tool": "files", "operation": "read", "parameters_digest": None,
                         "parameters": {}, "timestamp": "2026-11-29T10:00:00.000Z"},
                        None, {"result": "ALLOW"})
    sink = _sink(receiver)
    sink.set_queue_depth(42)
    sink.send([ev])
    sink.close()
    [span] = receiver.spans()
    assert span.end_time_unix_nano - span.start_time_unix_nano == 250_000_000
    [point] = receiver.metric("aarmor.decision.duration").histogram.data_points
    assert point.count == 1 and point.sum == pytest.approx(0.25)
    [depth] = receiver.metric("aarmor.telemetry.queue").gauge.data_points
    assert depth.as_int == 42 and attrs(depth.attributes) == {"aarmor.telemetry.sink": "collector"}


def test_queue_depth_and_alerts_export_without_spans(receiver: Receiver) -> None:
    alert = TelemetryEvent("evt_" + "2" * 32, "alert.injection", "2026-11-29T10:00:01.000Z", "high", "sess-1",
                           action={"action_id": "act-1", "tool": "web", "operation": "fetch",
                                   "parameters_digest": None, "parameters": {}},
                           alert={"kind": "injection_suspected", "message": "m", "detail": {}})
    sink = _sink(receiver)
    sink.send([alert])
    sink.set_queue_depth(3)
    sink.send([])  # metrics alone
    sink.close()
    assert receiver.spans() == []
    [record] = receiver.logs()
    assert record.severity_number == 17 and attrs(record.attributes)["aarmor.alert.kind"] == "injection_suspected"
    assert record.trace_id == span_context("sess-1", "act-1", "evaluate").trace_id.to_bytes(16, "big")
    [alerts] = receiver.metric("aarmor.alerts").sum.data_points
    assert alerts.as_int == 1 and attrs(alerts.attributes) == {"aarmor.event.type": "alert.injection"}
    [depth] = receiver.metric("aarmor.telemetry.queue").gauge.data_points
    assert depth.as_int == 3


def test_headers_from_the_named_environment_variable(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTLP_TEST_HEADERS", "Authorization=Bearer%20abc,x-scope = tenant-1")
    sink = _sink(receiver, headers_env="OTLP_TEST_HEADERS")
    sink.set_queue_depth(0)
    sink.send([])
    sink.close()
    assert receiver.headers["Authorization"] == "Bearer abc" and receiver.headers["x-scope"] == "tenant-1"


@pytest.mark.parametrize(("options", "message"), [
    ({"endpont": "http://x"}, "`endpont`: unknown key"),
    ({"endpoint": "ftp://x"}, "`endpoint`"),
    ({"endpoint": "http://x:4318/v1/traces"}, "base URL"),
    ({"endpoint": "http://user:pw@x:4318"}, "credentials"),
    ({"timeout": 0}, "`timeout`"),
    ({"compression": "brotli"}, "`compression`"),
    ({"headers_env": "OTLP_TEST_UNSET_VARIABLE"}, "`OTLP_TEST_UNSET_VARIABLE` is not set"),
])
def test_invalid_options_name_the_key(options: dict[str, Any], message: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTLP_TEST_UNSET_VARIABLE", raising=False)
    with pytest.raises(ConfigError, match="telemetry sink `s` \\(otlp\\)") as info:
        otlp.build("s", str, options)
    assert message in str(info.value)


def test_malformed_headers_never_echo_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTLP_TEST_HEADERS", "no-equals-sign-secret-token")
    with pytest.raises(ConfigError, match="item 1 of `OTLP_TEST_HEADERS`") as info:
        otlp.build("s", str, {"headers_env": "OTLP_TEST_HEADERS"})
    assert "secret-token" not in str(info.value)


def test_without_the_otel_extra_build_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'aarmor\[otel\]'"):
        otlp.build("s", str, {})
