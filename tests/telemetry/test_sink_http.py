"""The webhook and Splunk HEC sinks against real HTTP(S) receivers on loopback."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aarmor.errors import ConfigError
from aarmor.telemetry import SinkError, TelemetryEvent
from aarmor.telemetry.sinks import splunk_hec, webhook
from tests.telemetry.http_support import Answer, Receiver
from tests.tls_support import Pki

TOKEN = "s3cr3t-token-value"


def jsonl(e: TelemetryEvent) -> str:
    return json.dumps(e.to_json(), separators=(",", ":"))


def cef(e: TelemetryEvent) -> str:
    return f"CEF:0|aarmor|aarmor|0.1|{e.type}|decision|5|externalId={e.event_id}"


def event(i: int, session: str | None = "sess-1") -> TelemetryEvent:
    return TelemetryEvent(f"evt_{i:032x}", "action.decided", "2026-11-29T10:00:00.250Z", "high", session,
                          f"rcpt_{i}", decision={"result": "DENY", "reason": "Überweisung «verweigert»"})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AARMOR_TEST_SINK_TOKEN", TOKEN)
    return "AARMOR_TEST_SINK_TOKEN"


# --- webhook ---------------------------------------------------------------------------------------------

def test_webhook_posts_the_batch_as_a_json_array_with_token_and_idempotency_key(receiver: Receiver,
                                                                                 token: str) -> None:
    s = webhook.build("soc", jsonl, {"url": receiver.url("/ingest?tenant=a"), "token_env": token,
                                     "headers": {"X-Tenant": "blue"}})
    events = [event(i) for i in range(5)]
    s.send(events)
    s.send(events)  # a resend: the same key
    s.send(events[:2])
    first, again, other = receiver.requests
    assert first.path == "/ingest?tenant=a"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["x-tenant"] == "blue"
    assert json.loads(first.body) == [e.to_json() for e in events]
    assert first.headers["idempotency-key"] == again.headers["idempotency-key"] == webhook.batch_key(events)
    assert other.headers["idempotency-key"] != first.headers["idempotency-key"]
    assert first.headers["idempotency-key"].startswith("batch_")


def test_webhook_ndjson_sends_one_line_per_event_in_any_format(receiver: Receiver) -> None:
    s = webhook.build("soc", cef, {"url": receiver.url(), "body": "ndjson"})
    s.send([event(1), event(2)])
    (req,) = receiver.requests
    assert req.headers["content-type"] == "application/x-ndjson"
    assert req.body.decode().splitlines() == [cef(event(1)), cef(event(2))]
    assert "authorization" not in req.headers


def test_webhook_json_array_wraps_a_text_format(receiver: Receiver) -> None:
    webhook.build("soc", cef, {"url": receiver.url()}).send([event(1)])
    assert json.loads(receiver.requests[0].body) == [{"event_id": event(1).event_id, "message": cef(event(1))}]


def test_the_token_is_read_at_each_send_and_never_shown(receiver: Receiver, token: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    s = webhook.build("soc", jsonl, {"url": receiver.url(), "token_env": token})
    monkeypatch.setenv(token, "rotated")
    s.send([event(1)])
    assert receiver.requests[-1].headers["authorization"] == "Bearer rotated"
    receiver.answers = [Answer(401, b'{"error":"bad token rotated"}')]
    with pytest.raises(SinkError) as err:
        s.send([event(1)])
    assert "HTTP 401" in str(err.value) and "rotated" not in str(err.value)
    monkeypatch.delenv(token)
    with pytest.raises(SinkError, match=f"`{token}` .* is not set"):
        s.send([event(1)])


def test_a_token_with_a_line_break_is_refused_before_anything_is_sent(receiver: Receiver, token: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    s = webhook.build("soc", jsonl, {"url": receiver.url(), "token_env": token})
    monkeypatch.setenv(token, "abc\r\nX-Injected: 1")
    with pytest.raises(SinkError, match=f"the token in `{token}` is not a valid header value"):
        s.send([event(1)])
    assert receiver.requests == []


@pytest.mark.parametrize(("status", "body"), [(500, b"boom"), (404, b""), (302, b""), (429, b"slow down")])
def test_webhook_non_2xx_is_a_sink_error_with_the_status(receiver: Receiver, status: int, body: bytes) -> None:
    receiver.answers = [Answer(status, body, {"Location": "http://127.0.0.1:1/elsewhere"})]
    s = webhook.build("soc", jsonl, {"url": receiver.url()})
    with pytest.raises(SinkError, match=rf"telemetry sink `soc` \(webhook\): http://127\.0\.0\.1:\d+ answered "
                                        rf"HTTP {status}"):
        s.send([event(1)])
    assert len(receiver.requests) == 1  # a redirect is not followed


def test_a_receiver_that_does_not_answer_in_time_is_a_sink_error(receiver: Receiver) -> None:
    receiver.answers = [Answer(stall=True)]
    s = webhook.build("soc", jsonl, {"url": receiver.url(), "timeout": 0.5})
    with pytest.raises(SinkError, match="TimeoutError"):
        s.send([event(1)])


def test_nothing_listening_is_a_sink_error() -> None:
    r = Receiver()
    url = r.url()
    r.close()
    with pytest.raises(SinkError, match="ConnectionRefusedError"):
        webhook.build("soc", jsonl, {"url": url}).send([event(1)])


def test_https_is_verified_by_default(tmp_path: Path, token: str) -> None:
    pki = Pki(tmp_path / "pki")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server.cert, pki.server.key)
    r = Receiver(ctx)
    try:
        with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED"):
            webhook.build("soc", jsonl, {"url": r.url(), "token_env": token}).send([event(1)])
        assert r.requests == []  # nothing, the token least of all, went to an unverified server
        webhook.build("soc", jsonl, {"url": r.url(), "token_env": token, "ca_file": str(pki.ca_file)}
                      ).send([event(1)])
        assert r.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    finally:
        r.close()


@pytest.mark.parametrize(("options", "message"), [
    ({"url": "http://127.0.0.1/", "colour": 1}, r"option `colour`: unknown key"),
    ({"url": "ftp://h/"}, r"option `url`: `ftp://h` is not an http:// or https:// URL"),
    ({"url": "https://user:pw@h/"}, r"option `url`: user info in the URL is refused"),
    ({"url": "http://siem.example/", "token_env": "AARMOR_TEST_SINK_TOKEN"}, r"a token is sent only over https"),
    ({"url": "https://h/", "token_env": "AARMOR_TEST_UNSET_VARIABLE"},
     r"option `token_env`: the environment variable `AARMOR_TEST_UNSET_VARIABLE` is not set"),
    ({"url": "https://h/", "headers": {"Authorization": "Bearer x"}}, r"option `headers`: .*set by the sink"),
    ({"url": "https://h/", "body": "xml"}, r"option `body`"),
    ({"url": "https://h/", "timeout": 0}, r"option `timeout`"),
    ({"url": "https://h/", "ca_file": "/nonexistent.pem"}, r"option `ca_file`: cannot use `/nonexistent.pem`"),
    ({"url": "https://h/", "token_scheme": "Bearer x"}, r"option `token_scheme`"),
])
def test_webhook_bad_options_are_config_errors_naming_the_key(token: str, options: dict[str, Any],
                                                              message: str) -> None:
    with pytest.raises(ConfigError, match=r"telemetry sink `soc` \(webhook\): .*" + message):
        webhook.build("soc", jsonl, options)


# --- Splunk HEC ------------------------------------------------------------------------------------------

def hec_objects(body: bytes) -> list[dict[str, Any]]:
    """The concatenated JSON objects of a HEC body, parsed as HEC does (one after another)."""
    text, out, decoder, i = body.decode(), [], json.JSONDecoder(), 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text):
            obj, i = decoder.raw_decode(text, i)
            out.append(obj)
    return out


def test_hec_posts_concatenated_events_to_the_collector(receiver: Receiver, token: str) -> None:
    channel = "0aeeac95-ac74-4aa9-b30d-6c4c0ac581ba"
    s = splunk_hec.build("splunk", jsonl, {"url": receiver.url(), "token_env": token, "index": "security",
                                           "host": "agent-host-1", "channel": channel})
    events = [event(1), event(2, session=None)]
    s.send(events)
    (req,) = receiver.requests
    assert req.path == "/services/collector/event"
    assert req.headers["authorization"] == f"Splunk {TOKEN}"
    assert req.headers["x-splunk-request-channel"] == channel
    objs = hec_objects(req.body)
    assert objs[0] == {"time": 1795946400.25, "host": "agent-host-1", "source": "aarmor",
                       "sourcetype": "aarmor:event", "index": "security", "event": events[0].to_json(),
                       "fields": {"event_id": events[0].event_id, "event_type": "action.decided",
                                  "severity": "high", "session_id": "sess-1"}}
    assert objs[1]["fields"] == {"event_id": events[1].event_id, "event_type": "action.decided", "severity": "high"}


def test_hec_sends_a_text_format_as_a_string_event(receiver: Receiver, token: str) -> None:
    s = splunk_hec.build("splunk", cef, {"url": receiver.url("/custom/path"), "token_env": token,
                                         "sourcetype": "aarmor:cef"})
    s.send([event(1)])
    (obj,) = hec_objects(receiver.requests[0].body)
    assert receiver.requests[0].path == "/custom/path"
    assert (obj["event"], obj["sourcetype"]) == (cef(event(1)), "aarmor:cef")
    assert "index" not in obj


@pytest.mark.parametrize(("status", "body", "message"), [
    (403, b'{"text":"Invalid token","code":4}', r"HTTP 403: \{\"text\":\"Invalid token\",\"code\":4\}"),
    (503, b'{"text":"Server is busy","code":9}', r"HTTP 503"),
    (400, b'{"text":"No data","code":5}', r"HTTP 400"),
    (200, b'{"text":"Something else","code":7}', r"HTTP 200 without HEC's success .*'code': 7"),
    (200, b"<html>proxy page</html>", r"HTTP 200 without HEC's success .*proxy page"),
])
def test_hec_errors_are_sink_errors_quoting_hec(receiver: Receiver, token: str, status: int, body: bytes,
                                                message: str) -> None:
    receiver.answers = [Answer(status, body)]
    s = splunk_hec.build("splunk", jsonl, {"url": receiver.url(), "token_env": token})
    with pytest.raises(SinkError, match=r"telemetry sink `splunk` \(splunk_hec\): .*" + message):
        s.send([event(1)])


def test_hec_timeout_is_a_sink_error(receiver: Receiver, token: str) -> None:
    receiver.answers = [Answer(stall=True)]
    s = splunk_hec.build("splunk", jsonl, {"url": receiver.url(), "token_env": token, "timeout": 0.5})
    with pytest.raises(SinkError, match="TimeoutError"):
        s.send([event(1)])


@pytest.mark.parametrize(("options", "message"), [
    ({"url": "https://h:8088"}, r"option `token_env`: Field required"),
    ({"url": "https://h:8088", "token_env": "AARMOR_TEST_SINK_TOKEN", "channel": "not-a-guid"}, r"option `channel`"),
    ({"url": "https://h:8088", "token_env": "AARMOR_TEST_SINK_TOKEN", "index": ""}, r"option `index`"),
    ({"url": "https://h:8088", "token_env": "AARMOR_TEST_SINK_TOKEN", "token": "x"}, r"option `token`: unknown key"),
])
def test_hec_bad_options_are_config_errors_naming_the_key(token: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"telemetry sink `splunk` \(splunk_hec\): .*" + message):
        splunk_hec.build("splunk", jsonl, options)
