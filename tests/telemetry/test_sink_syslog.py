"""The syslog sink against a real rsyslogd on loopback (UDP, TCP with octet counting, TLS), and its rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aarmor.errors import ConfigError
from aarmor.telemetry import SinkError, TelemetryEvent
from aarmor.telemetry.sinks import syslog
from tests.telemetry.rsyslog_support import Rsyslog, parse_sd
from tests.tls_support import Pki


def jsonl(e: TelemetryEvent) -> str:
    return json.dumps(e.to_json(), separators=(",", ":"))


SEVERITIES = ("info", "low", "medium", "high", "critical")
HOSTILE = 'x" injected="1"] [fake@1 a="b\\"]\\'


def event(i: int, *, session: str | None = None, severity: str | None = None, type_: str = "action.decided",
          message: str | None = None, time: str = "2026-11-29T10:00:00.000Z") -> TelemetryEvent:
    return TelemetryEvent(f"evt_{i:032x}", type_, time, severity or SEVERITIES[i % 5],
                          session if session is not None else f"sess-{i % 3}", f"rcpt_{i}",
                          alert={"kind": "k", "message": message or f"event {i}", "detail": {}})


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    server = Rsyslog(tmp_path / "rsyslog")
    yield server
    server.stop()


def sink(server: Rsyslog, transport: str = "tcp", **options: Any) -> syslog.SyslogSink:
    port = server.udp_port if transport == "udp" else server.tcp_port
    return syslog.build("siem", jsonl, {"host": "127.0.0.1", "port": port, "transport": transport, **options})


def sd_params(record: dict[str, Any]) -> dict[str, str]:
    elements = parse_sd(record["sd"])
    assert [sd_id for sd_id, _ in elements] == ["aarmor@32473"]
    return elements[0][1]


def test_tcp_delivers_every_event_in_order_with_its_pri_and_structured_data(rsyslog: Rsyslog) -> None:
    s = sink(rsyslog, hostname="agent-host-1")
    events = [event(i) for i in range(120)]
    for start in range(0, len(events), 40):
        s.send(events[start:start + 40])
    s.close()
    got = rsyslog.wait_for(len(events))
    assert len(got) == len(events)
    assert [sd_params(r)["event_id"] for r in got] == [e.event_id for e in events]
    for r, e in zip(got, events, strict=True):
        assert int(r["pri"]) == 16 * 8 + syslog.SEVERITY[e.severity]  # local0
        assert (r["app"], r["hostname"], r["msgid"]) == ("aarmor", "agent-host-1", "action.decided")
        assert r["time"] == "2026-11-29T10:00:00.000Z"
        assert sd_params(r) == {"event_id": e.event_id, "session": e.session_id, "receipt": e.receipt_id}
        assert json.loads(r["msg"]) == e.to_json()


def test_udp_delivers_each_event_as_one_datagram(rsyslog: Rsyslog) -> None:
    s = sink(rsyslog, "udp", facility="authpriv")
    events = [event(i) for i in range(40)]
    s.send(events)
    s.close()
    got = rsyslog.wait_for(len(events))
    assert sorted(sd_params(r)["event_id"] for r in got) == sorted(e.event_id for e in events)
    by_id = {e.event_id: e for e in events}
    for r in got:
        e = by_id[sd_params(r)["event_id"]]
        assert int(r["pri"]) == 10 * 8 + syslog.SEVERITY[e.severity]
        assert json.loads(r["msg"]) == e.to_json()


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_non_ascii_text_arrives_intact_after_a_bom_and_hostile_text_stays_inside_its_param(
        rsyslog: Rsyslog, transport: str) -> None:
    plain = event(1, session="plain")
    accents = event(2, session="séance-日本", message="Zugriff verweigert: «Überweisung» an José 💸")
    hostile = event(3, session=HOSTILE, message=HOSTILE + "\n<14>1 - - forged - - - injected line")
    s = syslog.build("siem", lambda e: json.dumps(e.to_json(), ensure_ascii=False),
                     {"host": "127.0.0.1", "transport": transport,
                      "port": rsyslog.udp_port if transport == "udp" else rsyslog.tcp_port})
    s.send([plain, accents, hostile])
    s.close()
    got = {sd_params(r)["event_id"]: r for r in rsyslog.wait_for(3)}
    assert len(got) == 3
    assert not got[plain.event_id]["msg"].startswith("\ufeff")  # pure ASCII: no BOM
    r = got[accents.event_id]
    assert r["msg"].startswith("\ufeff")  # RFC 5424 6.4: UTF-8 MSG starts with a BOM
    assert json.loads(r["msg"][1:]) == accents.to_json()
    assert sd_params(r)["session"] == "séance-日本"
    r = got[hostile.event_id]
    # the hostile session is one parameter value, exactly as sent, by our strict parser and by rsyslog's
    assert sd_params(r) == {"event_id": hostile.event_id, "session": HOSTILE, "receipt": hostile.receipt_id}
    assert set(json.loads(r["parsed"])["aarmor@32473"]) == {"event_id", "session", "receipt"}
    assert json.loads(r["msg"]) == hostile.to_json()  # the "forged" line stayed inside its message


def test_kill_mid_stream_fails_the_send_and_a_restart_is_reconnected_to(rsyslog: Rsyslog) -> None:
    s = sink(rsyslog)
    s.send([event(i) for i in range(10)])
    assert len(rsyslog.wait_for(10)) == 10
    rsyslog.stop()
    with pytest.raises(SinkError, match=r"telemetry sink `siem` \(syslog\): TCP send to 127\.0\.0\.1:\d+ failed"):
        s.send([event(i) for i in range(10, 20)])
    with pytest.raises(SinkError):  # still down: still an error, never a silent success
        s.send([event(i) for i in range(10, 20)])
    rsyslog.start()
    s.send([event(i) for i in range(10, 20)])  # the exporter resends the failed batch
    s.send([event(i) for i in range(20, 30)])
    s.close()
    got = rsyslog.wait_for(30)
    assert [sd_params(r)["event_id"] for r in got] == [event(i).event_id for i in range(30)]


def test_a_receiver_restarted_between_batches_loses_nothing(rsyslog: Rsyslog) -> None:
    """The kept connection is dead after a restart; writing into it would succeed locally and be lost.
    The sink sees the receiver's end of file before the batch and connects again."""
    s = sink(rsyslog)
    s.send([event(1)])
    assert len(rsyslog.wait_for(1)) == 1
    rsyslog.stop()
    rsyslog.start()
    s.send([event(2)])
    s.send([event(3)])
    s.close()
    got = rsyslog.wait_for(3)
    assert [sd_params(r)["event_id"] for r in got] == [event(i).event_id for i in (1, 2, 3)]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_an_over_long_message_is_truncated_with_a_marker_and_counted(rsyslog: Rsyslog, transport: str) -> None:
    s = sink(rsyslog, transport, max_message_bytes=2048)
    big = event(7, message="ü" * 3000)  # 6000 bytes of JSON-escaped text... and longer as \u00fc
    small = event(8)
    s.send([big, small])
    s.close()
    got = {sd_params(r)["event_id"]: r for r in rsyslog.wait_for(2)}
    assert len(got) == 2
    r = got[big.event_id]
    params = sd_params(r)
    assert int(params["truncated"]) > 2048
    assert r["msg"].endswith("[truncated]")
    assert r["msg"].startswith(jsonl(big)[:100])
    assert "truncated" not in sd_params(got[small.event_id])
    assert json.loads(got[small.event_id]["msg"]) == small.to_json()
    assert s.truncated == 1


def test_tls_with_the_receivers_ca_delivers_and_an_unknown_ca_is_refused(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    server = Rsyslog(tmp_path / "rsyslog-tls", tls=(pki.ca_file, pki.server.cert, pki.server.key))
    try:
        s = syslog.build("siem", jsonl, {"host": "localhost", "port": server.tcp_port, "transport": "tls",
                                         "ca_file": str(pki.ca_file)})
        s.send([event(1), event(2)])
        s.send([event(3)])
        s.close()
        got = server.wait_for(3)
        assert [sd_params(r)["event_id"] for r in got] == [event(i).event_id for i in (1, 2, 3)]
        untrusting = syslog.build("siem", jsonl, {"host": "localhost", "port": server.tcp_port, "transport": "tls"})
        with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.send([event(4)])
        untrusting.close()
    finally:
        server.stop()


def test_nothing_listening_is_a_sink_error() -> None:
    from tests.telemetry.rsyslog_support import free_port

    s = syslog.build("siem", jsonl, {"host": "127.0.0.1", "port": free_port(0x1), "timeout": 2})
    with pytest.raises(SinkError, match="ConnectionRefusedError"):
        s.send([event(1)])


def test_a_formatter_that_fails_is_a_sink_error_naming_the_event() -> None:
    def broken(e: TelemetryEvent) -> str:
        raise ValueError("no")

    s = syslog.build("siem", broken, {"host": "127.0.0.1", "port": 9})
    with pytest.raises(SinkError, match=f"event `{event(1).event_id}` failed: ValueError: no"):
        s.send([event(1)])


# --- the message itself ----------------------------------------------------------------------------------

def render(e: TelemetryEvent, text: str = "m", max_bytes: int = 8192) -> tuple[bytes, int | None]:
    return syslog.render(e, text, facility=16, hostname="h", procid="42", sd_id="aarmor@32473", max_bytes=max_bytes)


def test_render_is_the_rfc_5424_layout() -> None:
    msg, cut = render(event(1, severity="critical", session="s"))
    assert cut is None
    assert msg == (b'<130>1 2026-11-29T10:00:00.000Z h aarmor 42 action.decided '
                   b'[aarmor@32473 event_id="evt_00000000000000000000000000000001" session="s" receipt="rcpt_1"] m')


def test_render_escapes_sd_values_and_sanitises_header_fields() -> None:
    e = TelemetryEvent("evt_1", "type with spaces and a very long name indeed.x", "2026-11-29T12:00:00.5+02:00",
                       "high", 'a"b\\c]d', None)
    msg, _ = render(e)
    assert msg.startswith(b"<131>1 2026-11-29T10:00:00.500Z h aarmor 42 type_with_spaces_and_a_very_long ")
    assert b'session="a\\"b\\\\c\\]d"]' in msg
    assert b"receipt" not in msg  # absent values are left out, not sent as "None"


def test_a_time_without_a_zone_is_the_nil_timestamp() -> None:
    msg, _ = render(event(1, time="2026-11-29T10:00:00"))
    assert msg.split(b" ")[1] == b"-"


def test_a_hostile_session_of_any_length_cannot_push_the_message_out_of_the_limit() -> None:
    e = event(1, session='"]' * 5000)
    msg, cut = render(e, "x" * 5000, max_bytes=2048)
    assert len(msg) <= 2048 and cut is not None
    assert msg.endswith(b"[truncated]")


# --- options ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    ({"host": "h", "colour": 1}, r"option `colour`: unknown key"),
    ({"host": "h", "facility": "local9"}, r"option `facility`: .*`local9` is not a syslog facility"),
    ({"host": "h", "transport": "quic"}, r"option `transport`"),
    ({"host": "h", "ca_file": "/x"}, r"option `ca_file` needs `transport: tls`"),
    ({"host": "h", "transport": "udp", "max_message_bytes": 70000}, r"option `max_message_bytes`: 70000"),
    ({"host": "h", "max_message_bytes": 100}, r"option `max_message_bytes`"),
    ({"host": "h", "port": "514"}, r"option `port`"),
    ({"host": "h", "sd_id": "aarmor"}, r"option `sd_id`"),
    ({"host": "h", "hostname": "two words"}, r"option `hostname`"),
    ({}, r"option `host`: Field required"),
    ({"host": "h", "transport": "tls", "ca_file": "/nonexistent/ca.pem"}, r"cannot use the TLS files `/nonexistent"),
])
def test_bad_options_are_config_errors_naming_the_key(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"telemetry sink `siem` \(syslog\): .*" + message):
        syslog.build("siem", jsonl, options)
