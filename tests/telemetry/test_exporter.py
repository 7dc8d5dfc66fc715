"""Telemetry end to end with real Guards, a real SQLite store and the rotating file sink (AARM R8).

Every decision and lifecycle event reaches the sink; a sink outage loses nothing (events wait in the spool,
in order, and arrive when it returns); a full spool drops with an alert that counts; a blocked sink never
holds a decision; the spool survives a restart; parameters leave as digests unless allowlisted.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.config import ApprovalsConfig
from aarmor.errors import ConfigError
from aarmor.telemetry.events import TelemetryEvent, project

ALICE = Identity(human="alice@company.com", agent="mail-agent", roles=["analyst"])
POLICY = """
policy: {id: telemetry-tests, version: "1", default: ALLOW}
rules:
  - id: no-shell
    match: {tool: shell}
    action: DENY
    reason: no shell from agents
  - id: cap-rows
    match: {tool: db, parameters: {limit: {gt: 10}}}
    action: MODIFY
    modifications: {parameters: {limit: 10}}
    reason: at most 10 rows
  - id: big-payment
    match: {tool: payment, parameters: {amount: {gt: 1000}}}
    action: STEP_UP
    approvers: [carol@company.com]
    timeout: 30
    reason: big payments need carol
  - id: rotation-waits
    match: {tool: credentials}
    action: DEFER
    context_needed: [context.maintenance_window]
    timeout: 0.3
    reason: rotation waits for the maintenance window
"""


def wait_for(pred: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def tel(make_guard: Callable[..., Any], tmp_path: Path) -> Callable[..., Any]:
    def open_(*, sinks: list[dict[str, Any]] | None = None, **telemetry: Any) -> Any:
        if sinks is None:
            sinks = [{"name": "all", "type": "file", "options": {"path": str(tmp_path / "all.jsonl")}}]
        return make_guard(POLICY, telemetry={"sinks": sinks, "poll_interval": 0.05, **telemetry},
                          approvals=ApprovalsConfig(poll_interval=0.02))
    return open_


def test_every_decision_and_lifecycle_event_is_exported(tel: Any, tmp_path: Path) -> None:
    guard = tel()
    with guard.session(identity=ALICE, original_request="send the report") as s:
        s.invoke("email.send", {"to": "bob@company.com", "body": "Q3 numbers"}, lambda a: "sent")
        with pytest.raises(ActionDenied):
            s.invoke("shell", {"cmd": "id"}, lambda a: "root")
        s.invoke("db", {"sql": "select 1", "limit": 50}, lambda a: a["limit"])
        with pytest.raises(RuntimeError):
            s.invoke("files.read", {"path": "/nope"}, lambda a: (_ for _ in ()).throw(RuntimeError("gone")))

        def approve() -> None:
            item = wait_for(lambda: guard.approvals.list())[0]
            guard.approvals.decide(item["id"], approver="carol@company.com", granted=True, reason="ok", channel="t")

        t = threading.Thread(target=approve)
        t.start()
        s.invoke("payment", {"to": "acme", "amount": 5000}, lambda a: "paid")
        t.join()
        with pytest.raises(ActionDenied):  # DEFER, then its timeout
            s.invoke("credentials", {"key": "k"}, lambda a: "rotated", operation="rotate")
    got = wait_for(lambda: (x := lines(tmp_path / "all.jsonl")) and
                   sum(e["type"] == "deferral.timed_out" for e in x) and x)
    types = [e["type"] for e in got]
    assert types[0] == "policy.loaded"
    for t_ in ("action.decided", "action.executed", "action.failed", "approval.requested", "approval.decided",
               "deferral.created", "deferral.timed_out"):
        assert t_ in types, t_
    results = [e["decision"]["result"] for e in got if e["type"] == "action.decided"]
    assert results == ["ALLOW", "DENY", "MODIFY", "ALLOW", "STEP_UP", "DEFER"]
    defer = next(e for e in got if e["type"] == "deferral.created")
    assert defer["action"]["tool"] == "credentials" and defer["deferral"]["context_needed"]
    for e in got:
        assert e["schema"] == "aarmor.telemetry/1" and e["event_id"].startswith("evt_")
    assert len({e["event_id"] for e in got}) == len(got)
    # the receipt of a denied action is named on its event
    deny = next(e for e in got if e["type"] == "action.decided" and e["decision"]["result"] == "DENY")
    assert guard.store.get_receipt(deny["receipt_id"]) is not None and deny["severity"] == "high"  # risk HIGH


def test_parameters_leave_as_digests_and_outputs_never(tel: Any, tmp_path: Path) -> None:
    """Threat 10: after a PII read, the exported events carry digests, not the body or the output."""
    guard = tel(export_parameters=["to"])
    with guard.session(identity=ALICE) as s:
        s.invoke("crm.get", {"id": 7}, lambda a: {"name": "Jane Roe", "ssn": "123-45-6789",
                                                     "email": "jane.roe@example.org"})
        s.invoke("email.send", {"to": "bob@company.com", "body": "Jane Roe 123-45-6789"}, lambda a: "sent")
    got = wait_for(lambda: (x := lines(tmp_path / "all.jsonl")) and sum(e["type"] == "action.executed"
                                                                         for e in x) == 2 and x)
    text = (tmp_path / "all.jsonl").read_text()
    assert "123-45-6789" not in text and "Jane Roe" not in text and "jane.roe" not in text
    sent = next(e for e in got if e["type"] == "action.executed" and e["action"]["tool"] == "email")
    assert sent["action"]["parameters"] == {"to": "bob@company.com"}
    assert sent["action"]["parameters_digest"].startswith("sha256:")
    read = next(e for e in got if e["type"] == "action.executed" and e["action"]["tool"] == "crm")
    assert "PII" in read["execution"]["classifications"] and read["execution"]["output_digest"]


def _all_ids(guard: Any) -> list[str]:
    """Every event the store's records stand for (the same projection the spool got), in record order."""
    out = []
    for sid in guard.store.log_sessions():
        for ev in project(list(guard.store.read_log(sid)), list(guard.store.read_receipts(sid))):
            out.append(ev.event_id)
    return out


def test_a_sink_outage_loses_nothing_and_delivery_resumes_in_order(tel: Any, tmp_path: Path) -> None:
    out = tmp_path / "siem" / "events.jsonl"
    guard = tel(sinks=[{"name": "siem", "type": "file", "options": {"path": str(out)}}])
    with guard.session(identity=ALICE) as s:
        for i in range(5):
            s.invoke("email.send", {"to": "bob@company.com", "n": i}, lambda a: "ok")
        wait_for(lambda: len(lines(out)) >= 11)
        # the sink breaks: its directory becomes a file (a real failure, even as root)
        (tmp_path / "siem-moved").mkdir()
        out.rename(tmp_path / "siem-moved" / "events.jsonl")
        out.parent.rmdir()
        out.parent.write_text("not a directory")
        for i in range(5, 40):
            s.invoke("email.send", {"to": "bob@company.com", "n": i}, lambda a: "ok")
        wait_for(lambda: guard.telemetry.status["siem"].failures_in_a_row >= 3)
        assert guard.store.telemetry_span()[0] >= 70  # waiting in the spool
        # it comes back
        out.parent.unlink()
        out.parent.mkdir()
        (tmp_path / "siem-moved" / "events.jsonl").rename(out)
        s.invoke("email.send", {"to": "bob@company.com", "n": 40}, lambda a: "ok")
    expected = _all_ids(guard)
    got = wait_for(lambda: (x := lines(out)) and {e["event_id"] for e in x} >= set(expected) and x)
    ids = [e["event_id"] for e in got if e["type"].startswith("action.")]
    assert ids == [i for i in expected], "every action event, once, in the order it was recorded"
    degraded = [e for e in got if e["type"] == "telemetry.degraded"]
    assert degraded and degraded[0]["alert"]["detail"]["sink"] == "siem"  # the outage itself is reported
    wait_for(lambda: guard.telemetry.status["siem"].failures_in_a_row == 0)
    wait_for(lambda: guard.store.telemetry_span()[0] == 0)  # delivered events leave the spool


def test_a_full_spool_drops_the_oldest_and_counts_them(make_guard: Callable[..., Any], tmp_path: Path) -> None:
    from aarmor.telemetry.exporter import EventFilter, Exporter
    from aarmor.telemetry.sinks.file import FileSink

    (tmp_path / "x").write_text("a file: the sink cannot write")
    guard = make_guard(POLICY, telemetry={"sinks": [{"name": "x", "type": "file",
                                                      "options": {"path": str(tmp_path / "x" / "y.jsonl")}}]})
    guard.telemetry.close()  # the Guard's own exporter is replaced by one with a tiny bound
    sink = FileSink("x", lambda e: json.dumps(e.to_json()), tmp_path / "x" / "y.jsonl", 1 << 20, 1)
    exp = Exporter(guard.store, [(sink, EventFilter())], max_events=10, poll_interval=0.05)
    with guard.session(identity=ALICE) as s:
        for i in range(20):
            s.invoke("email.send", {"n": i}, lambda a: "ok")
    total = guard.store.telemetry_span()[0]
    exp._maintain()
    assert exp.dropped == total - 10
    (tmp_path / "x").unlink()
    while exp.deliver_once(sink, EventFilter()):
        pass
    got = lines(tmp_path / "x" / "y.jsonl")
    dropped = [e for e in got if e["type"] == "telemetry.dropped"]
    assert len(dropped) == 1 and dropped[0]["alert"]["detail"]["dropped"] == total - 10
    # accounted for: delivered + dropped = everything spooled (the alert itself is the one extra)
    assert len(got) - 1 + dropped[0]["alert"]["detail"]["dropped"] == total


class GatedSink:
    """The file sink behind a gate the test opens: a sink that hangs (a dead TCP peer, say)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.gate, self.entered = inner, inner.name, threading.Event(), threading.Event()

    def send(self, events: Sequence[TelemetryEvent]) -> None:
        self.entered.set()
        self.gate.wait()
        self.inner.send(events)

    def close(self) -> None:
        self.gate.set()


def test_a_hanging_sink_never_holds_a_decision(make_guard: Callable[..., Any], tmp_path: Path) -> None:
    from aarmor.telemetry.exporter import EventFilter, Exporter
    from aarmor.telemetry.sinks.file import FileSink

    guard = make_guard(POLICY, telemetry={"sinks": [{"name": "g", "type": "file",
                                                      "options": {"path": str(tmp_path / "g.jsonl")}}]})
    guard.telemetry.close()  # replaced by an exporter over a sink that hangs
    gated = GatedSink(FileSink("g", lambda e: json.dumps(e.to_json()), tmp_path / "g.jsonl", 1 << 20, 1))
    exp = Exporter(guard.store, [(gated, EventFilter())], poll_interval=0.05)
    exp.start()
    with guard.session(identity=ALICE) as s:
        s.invoke("email.send", {"n": 0}, lambda a: "ok")
        assert gated.entered.wait(10)  # the exporter is now stuck inside the sink
        done = [s.invoke("email.send", {"n": i}, lambda a: "ok") for i in range(1, 30)]
    assert done == ["ok"] * 29  # every decision and execution completed while the sink hung
    gated.gate.set()
    wait_for(lambda: len(lines(tmp_path / "g.jsonl")) >= 61)
    exp.close()


def test_the_spool_survives_a_restart(make_guard: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "later" / "events.jsonl"
    (tmp_path / "later").write_text("blocked")
    guard = make_guard(POLICY, telemetry={"sinks": [{"name": "later", "type": "file", "options": {"path": str(out)}}]})
    with guard.session(identity=ALICE) as s:
        s.invoke("email.send", {"n": 1}, lambda a: "ok")
    guard.close()
    assert not out.exists()
    (tmp_path / "later").unlink()
    again = make_guard(POLICY, telemetry={"sinks": [{"name": "later", "type": "file", "options": {"path": str(out)}}]})
    got = wait_for(lambda: (x := lines(out)) and any(e["type"] == "action.executed" for e in x) and x)
    assert [e["type"] for e in got].count("policy.loaded") == 2  # one per start, both kept
    again.close()


def test_filters_by_type_decision_tool_identity_and_severity(tel: Any, tmp_path: Path) -> None:
    p = {n: str(tmp_path / f"{n}.jsonl") for n in ("defer", "alerts", "bob", "db")}
    guard = tel(sinks=[
        {"name": "defer", "type": "file", "options": {"path": p["defer"]}, "filter": {"decisions": ["DEFER"]}},
        {"name": "alerts", "type": "file", "options": {"path": p["alerts"]},
         "filter": {"min_severity": "medium"}},
        {"name": "bob", "type": "file", "options": {"path": p["bob"]},
         "filter": {"identities": ["bob@company.com"]}},
        {"name": "db", "type": "file", "options": {"path": p["db"]},
         "filter": {"types": ["action.*"], "tools": ["db"]}},
    ])
    with guard.session(identity=ALICE) as s:
        s.invoke("db", {"limit": 5}, lambda a: 1)
        with pytest.raises(ActionDenied):
            s.invoke("shell", {"cmd": "id"}, lambda a: 1)
        with pytest.raises(ActionDenied):
            s.invoke("credentials", {"key": "k"}, lambda a: 1, operation="rotate")
    with guard.session(identity=Identity(human="bob@company.com")) as s:
        s.invoke("email.send", {"to": "x"}, lambda a: 1)
    wait_for(lambda: len(lines(Path(p["bob"]))) >= 2)
    time.sleep(0.3)
    assert {e["decision"]["result"] for e in lines(Path(p["defer"]))} == {"DEFER"}
    assert all(e["severity"] in ("medium", "high", "critical") for e in lines(Path(p["alerts"])))
    assert {e["identity"]["human"] for e in lines(Path(p["bob"]))} == {"bob@company.com"}
    assert {(e["type"].split(".")[0], e["action"]["tool"]) for e in lines(Path(p["db"]))} == {("action", "db")}


@pytest.mark.parametrize(("sinks", "message"), [
    ([{"type": "carrier-pigeon"}], "type"),
    ([{"type": "file", "options": {"path": "x", "colour": "red"}}], "colour"),
    ([{"type": "file", "path": "x"}], "path"),
    ([{"type": "file"}], "path"),
    ([{"type": "file", "options": {"path": "x"}, "filter": {"types": ["action.nope"]}}], "action.nope"),
    ([{"name": "a", "type": "file", "options": {"path": "x"}},
      {"name": "a", "type": "file", "options": {"path": "y"}}], "another sink"),
])
def test_bad_sink_configuration_is_a_clear_error(make_guard: Callable[..., Any], sinks: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_guard(POLICY, telemetry={"sinks": sinks})


def test_the_cli_exports_history_and_shows_the_spool(tel: Any, tmp_path: Path, cli: Any) -> None:
    import yaml

    guard = tel()
    with guard.session(identity=ALICE) as s:
        s.invoke("email.send", {"to": "bob@company.com"}, lambda a: "ok")
        with pytest.raises(ActionDenied):
            s.invoke("shell", {"cmd": "id"}, lambda a: 1)
    guard.close()
    cfg = tmp_path / "aarmor.yaml"
    cfg.write_text(yaml.safe_dump({"store": guard.config.store, "keys": str(guard.config.keys),
                                   "policy": guard.config.policy,
                                   "telemetry": {"sinks": [{"name": "all", "type": "file",
                                                            "options": {"path": "all.jsonl"}}]}}))
    r = cli("telemetry", "export", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    exported = [json.loads(x) for x in r.stdout.splitlines()]
    assert [e["type"] for e in exported] == ["action.decided", "action.executed", "action.decided"]
    live = [e for e in lines(tmp_path / "all.jsonl") if e["type"].startswith("action.")]
    assert [e["event_id"] for e in exported] == [e["event_id"] for e in live]  # the same events, same ids
    r = cli("telemetry", "export", "--config", str(cfg), "--since", "2999-01-01T00:00:00Z")
    assert r.returncode == 0 and r.stdout == ""
    r = cli("telemetry", "export", "--config", str(cfg), "--since", "yesterday")
    assert r.returncode == 2 and "ISO 8601" in r.stderr
    r = cli("telemetry", "status", "--config", str(cfg), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["sinks"][0]["name"] == "all"


class Receiver:
    """A real HTTP webhook receiver on loopback that refuses (400) any batch holding a shell call."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.events: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                refused = any((e.get("action") or {}).get("tool") == "shell" for e in batch)
                if not refused:
                    outer.events.extend(batch)
                self.send_response(400 if refused else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_an_event_the_receiver_refuses_for_good_is_set_aside_counted_and_the_rest_delivered(tel: Any) -> None:
    rx = Receiver()
    guard = tel(sinks=[{"name": "hook", "type": "webhook", "options": {"url": rx.url}}])
    with guard.session(identity=ALICE) as s:
        s.invoke("email.send", {"n": 1}, lambda a: "ok")
        with pytest.raises(ActionDenied):
            s.invoke("shell", {"cmd": "id"}, lambda a: 1)  # its event is the one the receiver refuses
        s.invoke("email.send", {"n": 2}, lambda a: "ok")
    got = wait_for(lambda: len([e for e in rx.events if e["type"] == "telemetry.dropped"]) and rx.events)
    wait_for(lambda: sum(e["type"] == "action.executed" for e in rx.events) == 2)
    assert not any((e.get("action") or {}).get("tool") == "shell" for e in rx.events)
    [dropped] = [e for e in got if e["type"] == "telemetry.dropped"]
    assert dropped["alert"]["kind"] == "rejected" and dropped["alert"]["detail"]["dropped"] == 1
    assert "HTTP 400" in dropped["alert"]["message"]
    assert guard.telemetry.status["hook"].rejected == 1
    guard.close()
    rx.httpd.shutdown()
    rx.httpd.server_close()


def test_a_log_that_does_not_verify_is_an_event(tel: Any, tmp_path: Path, cli: Any) -> None:
    import sqlite3

    import yaml

    guard = tel()
    with guard.session(identity=ALICE) as s:
        s.invoke("email.send", {"to": "bob@company.com"}, lambda a: "ok")
    guard.close()
    db = guard.config.store.removeprefix("sqlite:///")
    con = sqlite3.connect(db)
    con.execute("UPDATE log_entries SET body = replace(body, 'bob@company.com', 'eve@evil.test') "
                "WHERE kind = 'action_requested'")
    con.commit()
    con.close()
    cfg = tmp_path / "aarmor.yaml"
    cfg.write_text(yaml.safe_dump({"store": guard.config.store, "keys": str(guard.config.keys),
                                   "policy": guard.config.policy,
                                   "telemetry": {"sinks": [{"name": "all", "type": "file",
                                                            "options": {"path": str(tmp_path / "all.jsonl")}}]}}))
    r = cli("log", "verify", "--config", str(cfg))
    assert r.returncode == 1, r.stdout + r.stderr
    again = tel()  # the next Guard on the store delivers what the CLI spooled
    got = wait_for(lambda: [e for e in lines(tmp_path / "all.jsonl") if e["type"] == "verification.failed"])
    assert got[0]["severity"] == "critical" and got[0]["alert"]["kind"] == "chain_not_verified"
    assert "seq" in got[0]["alert"]["message"]
    again.close()
