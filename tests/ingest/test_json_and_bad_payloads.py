"""OTLP/HTTP JSON encoding (as the OTLP spec defines it: hex ids, lowerCamelCase, int64 as strings), bad
payloads (clear 400/415/401, nothing recorded), partial success, and concurrent redelivery."""

from __future__ import annotations

import copy
import gzip
import json
import threading
from typing import Any

import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from tests.ingest.support import never_claims_a_block, verified

TRACE = "5b8efff798038103d269b633813fc60c"


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _span_doc(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": [_kv("service.name", "json-agent")]},
                               "scopeSpans": [{"scope": {"name": "agent"}, "spans": list(spans)}]}]}


def _tool_span(span_id: str, tool: str, arguments: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"traceId": TRACE, "spanId": span_id, "name": f"execute_tool {tool}", "kind": 1,
            "startTimeUnixNano": "1796032800000000000", "endTimeUnixNano": "1796032800250000000",
            "attributes": [_kv("gen_ai.operation.name", "execute_tool"), _kv("gen_ai.tool.name", tool),
                           _kv("gen_ai.tool.call.arguments", json.dumps(arguments)), _kv("session.id", "json-1")],
            "status": {}, **extra}


def _log_doc(*records: dict[str, Any]) -> dict[str, Any]:
    return {"resourceLogs": [{"resource": {"attributes": [_kv("service.name", "claude-code")]},
                              "scopeLogs": [{"scope": {"name": "claude"}, "logRecords": list(records)}]}]}


def _log(tool: str, parameters: Any, use_id: str) -> dict[str, Any]:
    params = parameters if isinstance(parameters, str) else json.dumps(parameters)
    return {"timeUnixNano": "1796032800000000000",
            "attributes": [_kv("event.name", "claude_code.tool_result"), _kv("session.id", "json-1"),
                           _kv("tool_name", tool), _kv("tool_parameters", params), _kv("success", "true"),
                           _kv("tool_use_id", use_id)]}


def _post(receiver: Any, path: str, body: bytes, content_type: str = "application/json",
          **headers: str) -> httpx.Response:
    return httpx.post(receiver.url + path, content=body, timeout=30, headers={
        "Content-Type": content_type, "Authorization": f"Bearer {receiver.token}", **headers})


def test_json_encoded_traces_and_logs_are_recorded(receiver: Any) -> None:
    r = _post(receiver, "/v1/traces", json.dumps(_span_doc(_tool_span("eee19b7ec3c1b174", "read_file",
                                                                       {"path": "a.txt"}))).encode())
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == {}  # every record accepted: no partial_success
    r = _post(receiver, "/v1/logs", gzip.compress(json.dumps(_log_doc(_log("Bash", {"command": "ls"}, "t1"))).encode()),
              **{"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    span, log = verified(receiver, "json-1")
    never_claims_a_block(span)
    never_claims_a_block(log)
    assert span["observation"]["trace_id"] == TRACE and span["observation"]["span_id"] == "eee19b7ec3c1b174"
    assert span["action"]["timestamp"] == "2026-11-30T10:00:00.000Z"
    assert span["execution"]["completed_at"] == "2026-11-30T10:00:00.250Z"
    assert log["decision"]["result"] == "DENY" and log["enforcement"]["alert"] == "observed_violation"


def test_some_records_rejected_is_a_partial_success_naming_them(receiver: Any) -> None:
    doc = _log_doc(_log("Read", {"file_path": "x"}, "ok-1"), _log("Read", "{not json", "bad-1"),
                   _log("Read", ["a", "list"], "bad-2"),
                   {"attributes": [_kv("event.name", "tool_result"), _kv("session.id", "json-1")]},
                   {"attributes": [_kv("event.name", "api_request"), _kv("session.id", "json-1")]})  # not a tool event
    r = _post(receiver, "/v1/logs", json.dumps(doc).encode())
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "3"
    msg = partial["errorMessage"]
    assert "`tool_parameters` is not JSON" in msg and "must be a JSON object, found list" in msg
    assert "no `tool_name`" in msg
    [only] = verified(receiver, "json-1")
    assert only["action"]["tool"] == "read"


def test_partial_success_in_protobuf(receiver: Any) -> None:
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2

    def kv(k: str, v: str) -> common_pb2.KeyValue:
        return common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))

    rec = logs_pb2.LogRecord(attributes=[kv("event.name", "tool_use"), kv("session.id", "pb-1"),
                                         kv("tool_parameters", "{}")])
    req = logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        scope_logs=[logs_pb2.ScopeLogs(log_records=[rec])])])
    r = _post(receiver, "/v1/logs", req.SerializeToString(), "application/x-protobuf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    resp = logs_service_pb2.ExportLogsServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_log_records == 1 and "no `tool_name`" in resp.partial_success.error_message


GOOD = _span_doc(_tool_span("eee19b7ec3c1b174", "read_file", {"path": "a"}))
BAD_ID = _span_doc(_tool_span("eee19b7ec3c1b175", "read_file", {"path": "b"}),
                   _tool_span("nothex!!", "read_file", {"path": "c"}))


@pytest.mark.parametrize(("body", "content_type", "status", "says"), [
    (b"\x0a\xff\xff\xff", "application/x-protobuf", 400, "is not a protobuf ExportTraceServiceRequest"),
    (b"{not json", "application/json", 400, "the body is not JSON"),
    (b"[1, 2]", "application/json", 400, "must be an object"),
    (json.dumps(BAD_ID).encode(), "application/json", 400, "spans[1].spanId: `nothex!!` is not a hex id"),
    (json.dumps({"resourceSpans": "nope"}).encode(), "application/json", 400, "resourceSpans"),
    (json.dumps(GOOD).encode(), "text/plain", 415, "Content-Type `text/plain` is not supported"),
])
def test_bad_payloads_are_rejected_clearly_and_nothing_is_recorded(receiver: Any, body: bytes, content_type: str,
                                                                   status: int, says: str) -> None:
    r = _post(receiver, "/v1/traces", body, content_type)
    assert r.status_code == status
    if content_type == "application/x-protobuf":
        message = status_pb2.Status.FromString(r.content).message
    else:
        message = r.json()["message"]
    assert says in message, message
    assert list(receiver.guard.store.read_receipts()) == []
    assert receiver.guard.store.log_sessions() == []


def test_corrupt_gzip_and_missing_token_are_rejected(receiver: Any) -> None:
    r = _post(receiver, "/v1/traces", b"not gzip", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "not valid gzip" in r.json()["message"]
    r = httpx.post(receiver.url + "/v1/traces", content=json.dumps(GOOD), headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and "Bearer" in r.json()["message"]
    r = _post(receiver, "/v1/traces", json.dumps(GOOD).encode(), Authorization="Bearer aat_wrong")
    assert r.status_code == 401
    assert list(receiver.guard.store.read_receipts()) == []


def test_concurrent_redeliveries_give_one_receipt(receiver: Any) -> None:
    body = json.dumps(_span_doc(*[_tool_span(f"{i:016x}", "read_file", {"path": str(i)}) for i in range(1, 6)]))
    barrier = threading.Barrier(4)
    codes: list[int] = []

    def send() -> None:
        barrier.wait()
        codes.append(_post(receiver, "/v1/traces", copy.copy(body).encode()).status_code)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 4
    receipts = verified(receiver, "json-1")
    assert sorted(r["action"]["parameters"]["path"] for r in receipts) == ["1", "2", "3", "4", "5"]


def test_a_meta_tool_not_naming_its_tool_is_recorded_as_the_deny_aarmor_would_have_made(receiver: Any) -> None:
    r = _post(receiver, "/v1/logs", json.dumps(_log_doc(_log("Skill", {"args": "x"}, "skill-1"))).encode())
    assert r.status_code == 200 and r.json() == {}
    [rec] = verified(receiver, "json-1")
    never_claims_a_block(rec)
    assert rec["decision"]["result"] == "DENY" and rec["error"]["class"] == "InputError"
    assert "meta-tool `Skill`" in rec["decision"]["reason"] and rec["enforcement"]["alert"] == "observed_violation"
    assert rec["action"]["raw_tool"] == "Skill" and rec["enforcement"]["executed"] is True


def test_deduplication_survives_a_restart_of_the_receiver(receiver: Any) -> None:
    from aarmor.ingest.otlp_codec import JSON, decode_request
    from aarmor.ingest.recorder import Recorder
    from aarmor.ingest.tool_events import parse_logs

    body = json.dumps(_log_doc(_log("Read", {"file_path": "x"}, "restart-1"))).encode()
    assert _post(receiver, "/v1/logs", body).status_code == 200
    # a new receiver process state (fresh Recorder) on the same store: the event is known from its receipts
    again = Recorder(receiver.guard).record(parse_logs(decode_request("logs", body, JSON)))
    assert (again.recorded, again.duplicates) == ([], 1)
    assert len(verified(receiver, "json-1")) == 1
