"""AARM R8: SIEM export -> events with the right schema, DEFER included, in real time, filterable.

One Guard exports the same decisions three ways at once: CEF over RFC 5424 syslog (TCP) into a real
rsyslogd on loopback, OCSF into a file (every object validated against the official OCSF schema), and
OTLP/HTTP into a loopback OpenTelemetry receiver that decodes the official protobuf messages (no
Collector binary exists on PyPI, npm or Debian: the receiver is the protocol's, written for the test).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from tests.telemetry.ocsf_schema import validate
from tests.telemetry.rsyslog_support import Rsyslog
from tests.telemetry.test_otlp import Receiver, attrs

POLICY = """
policy: {id: r8, version: "1", default: ALLOW}
rules:
  - id: no-shell
    match: {tool: shell}
    action: DENY
    reason: no shell from agents
  - id: rotation-waits
    match: {tool: credentials}
    action: DEFER
    context_needed: [context.maintenance_window]
    timeout: 0.3
    reason: rotation waits for the maintenance window
"""


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    r = Rsyslog(tmp_path / "rsyslog")
    yield r
    r.stop()


@pytest.fixture
def otlp() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


def wait_for(pred: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("not delivered in time")


def test_siem_export_has_the_right_schema_including_defer(make_guard: Callable[..., Any], tmp_path: Path,
                                                           rsyslog: Rsyslog, otlp: Receiver) -> None:
    ocsf_file, defer_file = tmp_path / "ocsf.jsonl", tmp_path / "defer.jsonl"
    guard = make_guard(POLICY, telemetry={"poll_interval": 0.05, "sinks": [
        {"name": "siem-syslog", "type": "syslog", "format": "cef",
         "options": {"host": "127.0.0.1", "port": rsyslog.tcp_port, "transport": "tcp"}},
        {"name": "siem-ocsf", "type": "file", "format": "ocsf", "options": {"path": str(ocsf_file)}},
        {"name": "collector", "type": "otlp", "options": {"endpoint": otlp.url}},
        {"name": "defer-only", "type": "file", "filter": {"decisions": ["DEFER"]},
         "options": {"path": str(defer_file)}},
    ]})
    with guard.session(identity=Identity(human="alice@company.com", agent="ops-agent")) as s:
        s.invoke("email.send", {"to": "bob@company.com"}, lambda a: "sent")
        with pytest.raises(ActionDenied):
            s.invoke("shell", {"cmd": "id"}, lambda a: "root")
        with pytest.raises(ActionDenied):
            s.invoke("credentials", {"key": "k"}, lambda a: "rotated", operation="rotate")

    # syslog: CEF lines in RFC 5424 records, the event id in the structured data, DEFER present
    records = wait_for(lambda: (r := rsyslog.records()) and any("DEFER" in x["msg"] for x in r) and r)
    cef = [r["msg"] for r in records]
    assert all(line.startswith("CEF:0|aarmor|aarmor|") for line in cef)
    assert any("act=DEFER" in line for line in cef) and any("act=DENY" in line for line in cef)
    assert all(r["app"] == "aarmor" and "event_id=" in r["sd"] for r in records)

    # OCSF: every object valid against the official schema; the DEFER decision is an API Activity
    objects = wait_for(lambda: (o := [json.loads(x) for x in ocsf_file.read_text().splitlines()]
                                     if ocsf_file.exists() else []) and len(o) >= 7 and o)
    for obj in objects:
        validate(obj)
    assert {o["class_uid"] for o in objects} >= {6003, 2004}
    assert any(o["class_uid"] == 6003 and o.get("disposition_id") == 14 for o in objects)  # 14: Delayed

    # OTLP: evaluation spans for every decision, DEFER included, and one log record per event
    spans = wait_for(lambda: len(otlp.spans()) >= 3 and otlp.spans())
    results = {attrs(sp.attributes).get("aarmor.decision.result") for sp in spans}
    assert {"ALLOW", "DENY", "DEFER"} <= results
    assert len(otlp.logs()) >= 7

    # filtering by decision: the DEFER-only sink got the DEFER decision and nothing else
    deferred = wait_for(lambda: defer_file.exists() and [json.loads(x) for x in defer_file.read_text().splitlines()])
    assert {e["decision"]["result"] for e in deferred} == {"DEFER"}
    guard.close()
