"""Outgoing approval notifications over real HTTP (a local ThreadingHTTPServer; urllib is never mocked)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aarmor.approvals.notify import Notifications, slack_payload, webhook_payload
from aarmor.config import NotifierConfig

PAGE = "http://127.0.0.1:8731"
FAST = 0.01  # backoff_base: retries in milliseconds
Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A local HTTP endpoint; `respond(n, request)` picks the answer to the n-th request (1-based)."""

    respond: Callable[[int, Seen], Reply]
    requests: list[Seen] = field(default_factory=list)
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def wait_requests(self, n: int, timeout: float = 5.0) -> None:
        for _ in range(n):
            assert self.arrived.acquire(timeout=timeout), f"expected {n} requests, got {len(self.requests)}"


class Results:
    """Collects on_result calls and lets a test wait for them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, bool, str]] = []
        self._cond = threading.Condition()

    def __call__(self, item_id: str, event: str, channel: str, ok: bool, detail: str) -> None:
        with self._cond:
            self.calls.append((item_id, event, channel, ok, detail))
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = 5.0) -> list[tuple[str, str, str, bool, str]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.calls) >= n, timeout), f"results so far: {self.calls}"
            return list(self.calls)


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(respond: Callable[[int, Seen], Reply] | None = None) -> Receiver:
        rec = Receiver(respond or (lambda n, req: (200, {}, b"ok")))
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                seen = Seen(self.path, dict(self.headers.items()),
                            self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                with lock:
                    rec.requests.append(seen)
                    n = len(rec.requests)
                rec.arrived.release()
                status, headers, body = rec.respond(n, seen)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST  # a followed redirect arrives as a GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        rec.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(rec.server)
        threading.Thread(target=rec.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return rec

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def notifications() -> Iterator[Callable[..., Notifications]]:
    opened: list[Notifications] = []

    def make(*configs: NotifierConfig, results: Results | None = None, **kw: Any) -> Notifications:
        kw.setdefault("backoff_base", FAST)
        n = Notifications(tuple(configs), page_url=PAGE, on_result=results, **kw)
        opened.append(n)
        return n

    yield make
    for n in opened:
        n.close(timeout=1.0)


def webhook(url: str, **kw: Any) -> NotifierConfig:
    kw.setdefault("retries", 2)
    kw.setdefault("timeout", 2.0)
    return NotifierConfig("webhook", url, **kw)


def make_view(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "original_request": "summarise the Q3 pipeline", "tool": "email", "operation": "send",
        "parameters": {"to": "x@external.example", "body": "hello"}, "parameters_digest": "sha256:ab",
        "identity": {"human": "alice@company.com", "service": "crm-bot", "agent": "agent-7", "session": "s1",
                     "roles": ["sales"], "scope": ["email:send"], "delegation_chain": []},
        "prior_actions": [{"tool": "crm", "operation": "query", "decision": "ALLOW"}],
        "classifications": ["PII"], "risk_level": "HIGH", "rule_id": "external-email",
        "policy": {"policy_id": "main", "version": "3", "hash": "sha256:cd"},
        "reason": "external recipient", "confidence": 0.9, "semantic_distance": 0.2}
    request.update(overrides.pop("request", {}))
    view: dict[str, Any] = {
        "id": "apr_123", "kind": "approval", "status": "pending", "source": "step_up", "session_id": "s1",
        "action_id": "act_1", "created_at": "2026-01-01T00:00:00Z", "deadline": "2026-01-01T01:00:00Z",
        "escalated": False, "approvers": ["security-team", "carol@company.com"], "request": request,
        "decision": None}
    view.update(overrides)
    return view


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mrkdwn_texts(payload: dict[str, Any]) -> str:
    return json.dumps(payload["blocks"])


# --- delivery -------------------------------------------------------------------------------------------


def test_webhook_delivers_view_links_headers_and_idempotency_key(receiver: Any, notifications: Any) -> None:
    rec = receiver()
    results = Results()
    n = notifications(webhook(rec.url(), headers=(("Authorization", "Bearer tok-123"),)), results=results)
    view = make_view()
    n.send("approval_requested", view)
    (item_id, event, channel, ok, detail), = results.wait(1)
    assert (item_id, event, ok) == ("apr_123", "approval_requested", True)
    assert channel == f"webhook {rec.url()}" and "HTTP 200" in detail and "1 attempt" in detail
    seen = rec.requests[0]
    assert seen.json() == {"event": "approval_requested", "item": view,
                           "links": {"review": f"{PAGE}/approvals/apr_123"},
                           "idempotency_key": "apr_123:approval_requested"}
    assert seen.headers["Authorization"] == "Bearer tok-123"
    assert seen.headers["Idempotency-Key"] == "apr_123:approval_requested"
    assert seen.headers["Content-Type"] == "application/json"


def test_transient_503_is_retried_until_delivered(receiver: Any, notifications: Any) -> None:
    rec = receiver(lambda n, req: (503, {}, b"busy") if n <= 2 else (200, {}, b"ok"))
    results = Results()
    notifications(webhook(rec.url(), retries=5), results=results).send("approval_requested", make_view())
    (_, _, _, ok, detail), = results.wait(1)
    assert ok and "3 attempts" in detail
    assert len(rec.requests) == 3
    assert {r.headers["Idempotency-Key"] for r in rec.requests} == {"apr_123:approval_requested"}


def test_429_honours_retry_after(receiver: Any, notifications: Any) -> None:
    rec = receiver(lambda n, req: (429, {"Retry-After": "0"}, b"") if n == 1 else (200, {}, b"ok"))
    results = Results()
    notifications(webhook(rec.url()), results=results).send("approval_requested", make_view())
    assert results.wait(1)[0][3] is True and len(rec.requests) == 2


def test_persistent_500_fails_after_retries_plus_one_attempts(receiver: Any, notifications: Any) -> None:
    rec = receiver(lambda n, req: (500, {}, b"database\n  unavailable"))
    results = Results()
    notifications(webhook(rec.url(), retries=2), results=results).send("approval_requested", make_view())
    (_, _, _, ok, detail), = results.wait(1)
    assert not ok
    assert detail == "HTTP 500: database unavailable (3 attempts)"
    assert len(rec.requests) == 3


def test_client_error_is_final_at_once(receiver: Any, notifications: Any) -> None:
    rec = receiver(lambda n, req: (400, {}, b"invalid_payload"))
    results = Results()
    notifications(webhook(rec.url(), retries=5), results=results).send("approval_requested", make_view())
    (_, _, _, ok, detail), = results.wait(1)
    assert not ok and detail == "HTTP 400: invalid_payload (1 attempt)"
    assert len(rec.requests) == 1


def test_redirect_is_not_followed_so_tokens_stay_home(receiver: Any, notifications: Any) -> None:
    elsewhere = receiver()
    # urllib would follow a 303 as a GET, carrying the Authorization header to the new host
    rec = receiver(lambda n, req: (303, {"Location": elsewhere.url()}, b""))
    results = Results()
    n = notifications(webhook(rec.url(), headers=(("Authorization", "Bearer tok-123"),)), results=results)
    n.send("approval_requested", make_view())
    (_, _, _, ok, detail), = results.wait(1)
    assert not ok and "HTTP 303" in detail and "not followed" in detail
    assert len(rec.requests) == 1 and elsewhere.requests == []


def test_connection_refused_fails_after_retries(notifications: Any) -> None:
    results = Results()
    url = f"http://127.0.0.1:{closed_port()}/hook"
    notifications(webhook(url, retries=2), results=results).send("approval_requested", make_view())
    (_, _, channel, ok, detail), = results.wait(1)
    assert not ok and channel == f"webhook {url}"
    assert "connection failed" in detail and "refused" in detail.lower() and "3 attempts" in detail


def test_receiver_slower_than_timeout_fails_as_timeout(receiver: Any, notifications: Any) -> None:
    release = threading.Event()
    rec = receiver(lambda n, req: (release.wait(5), (200, {}, b"late"))[1])
    results = Results()
    try:
        notifications(webhook(rec.url(), timeout=0.2, retries=1), results=results).send("approval_requested",
                                                                                        make_view())
        (_, _, _, ok, detail), = results.wait(1)
        assert not ok and "timed out" in detail and "2 attempts" in detail
    finally:
        release.set()


def test_dead_channel_does_not_delay_a_healthy_one(receiver: Any, notifications: Any) -> None:
    release = threading.Event()
    stuck = receiver(lambda n, req: (release.wait(5), (200, {}, b"late"))[1])
    healthy = receiver()
    results = Results()
    n = notifications(webhook(stuck.url("/stuck"), timeout=4.0), webhook(healthy.url("/ok")), results=results)
    try:
        n.send("approval_requested", make_view())
        stuck.wait_requests(1)
        (_, _, channel, ok, _), = results.wait(1)
        # the stuck receiver still holds its request: the healthy delivery did not wait for it
        assert not release.is_set() and channel == f"webhook {healthy.url('/ok')}" and ok
    finally:
        release.set()
    assert {c[2] for c in results.wait(2)} == {f"webhook {stuck.url('/stuck')}", f"webhook {healthy.url('/ok')}"}


def test_send_returns_before_the_receiver_answers(receiver: Any, notifications: Any) -> None:
    release, answered = threading.Event(), threading.Event()

    def slow(n: int, req: Seen) -> Reply:
        release.wait(3)  # if send() blocked, it would return only after this (and `answered`)
        answered.set()
        return 200, {}, b"ok"

    rec = receiver(slow)
    results = Results()
    n = notifications(webhook(rec.url(), timeout=5.0), results=results)
    n.send("approval_requested", make_view())
    returned_first = not answered.is_set()
    release.set()
    assert returned_first
    assert results.wait(1)[0][3] is True and len(rec.requests) == 1


def test_full_queue_drops_and_reports_without_blocking(receiver: Any, notifications: Any) -> None:
    release = threading.Event()
    rec = receiver(lambda n, req: (release.wait(5), (200, {}, b"ok"))[1])
    results = Results()
    n = notifications(webhook(rec.url(), timeout=5.0), results=results, queue_size=2)
    try:
        n.send("approval_requested", make_view(id="apr_1"))
        rec.wait_requests(1)  # the first is in flight, so the queue is empty
        for i in (2, 3, 4):
            n.send("approval_requested", make_view(id=f"apr_{i}"))
        (item_id, _, _, ok, detail), = results.wait(1)
        assert (item_id, ok) == ("apr_4", False) and "queue full" in detail and "dropped" in detail
    finally:
        release.set()
    assert sorted(c[0] for c in results.wait(4) if c[3]) == ["apr_1", "apr_2", "apr_3"]


def test_close_drains_pending_deliveries(receiver: Any, notifications: Any) -> None:
    release = threading.Event()
    rec = receiver(lambda n, req: (release.wait(5), (200, {}, b"ok"))[1])
    results = Results()
    n = notifications(webhook(rec.url(), timeout=5.0), results=results)
    for i in (1, 2, 3):
        n.send("approval_requested", make_view(id=f"apr_{i}"))
    rec.wait_requests(1)
    threading.Timer(0.05, release.set).start()
    n.close(timeout=5.0)
    assert [(c[0], c[3]) for c in results.calls] == [("apr_1", True), ("apr_2", True), ("apr_3", True)]
    assert len(rec.requests) == 3
    n.send("approval_requested", make_view(id="apr_late"))  # documented no-op after close
    n.close()  # idempotent
    assert len(results.calls) == 3 and len(rec.requests) == 3


def test_close_timeout_reports_what_was_never_sent(receiver: Any, notifications: Any) -> None:
    release = threading.Event()
    rec = receiver(lambda n, req: (release.wait(5), (200, {}, b"ok"))[1])
    results = Results()
    n = notifications(webhook(rec.url(), timeout=5.0), results=results)
    for i in (1, 2, 3):
        n.send("approval_requested", make_view(id=f"apr_{i}"))
    rec.wait_requests(1)
    n.close(timeout=0.1)
    release.set()
    calls = results.wait(3)
    assert [(c[0], c[3]) for c in calls] == [("apr_1", True), ("apr_2", False), ("apr_3", False)]
    assert "closed before delivery" in calls[1][4]
    assert len(rec.requests) == 1


def test_no_configs_means_disabled_and_no_thread() -> None:
    before = {t.name for t in threading.enumerate()}
    n = Notifications((), page_url=PAGE)
    assert n.enabled is False
    n.send("approval_requested", make_view())
    n.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("aarmor-notify") and t.name not in before]


def test_unknown_event_and_bad_config_are_caller_errors() -> None:
    with pytest.raises(ValueError, match="approval_requested"):
        Notifications((), page_url=PAGE).send("approval_maybe", {})
    with pytest.raises(ValueError, match="http") as info:
        Notifications((NotifierConfig("slack", "ftp://hooks.example/T0/B0/SECRET"),), page_url=PAGE)
    assert "SECRET" not in str(info.value)


# --- secrets never leak into channel names, details or logs --------------------------------------------


def test_channel_and_detail_never_carry_header_values_or_slack_path(
        receiver: Any, notifications: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aarmor.notify")
    # a hostile receiver echoes what it got, hoping the error detail will carry it onward
    rec = receiver(lambda n, req: (500, {}, f"{req.path} {req.headers.get('Authorization')}".encode()))
    ok_rec = receiver()
    slack_path = "/services/T000/B000/XXXXslacksecret"
    token = "Bearer tok-SECRET-123"
    results = Results()
    n = notifications(NotifierConfig("slack", rec.url(slack_path), retries=1),
                      webhook(rec.url("/hook?key=querysecret"), headers=(("Authorization", token),), retries=1),
                      NotifierConfig("slack", ok_rec.url(slack_path), headers=(("X-Api-Key", "apikey-SECRET"),)),
                      results=results)
    n.send("approval_requested", make_view())
    calls = results.wait(3)
    assert sorted(c[3] for c in calls) == [False, False, True]
    assert sorted(c[2] for c in calls) == ["slack", "slack #3", f"webhook {rec.url('/hook')}"]
    leaked = json.dumps(calls) + "\n".join(r.getMessage() for r in caplog.records)
    for secret in (slack_path, "XXXXslacksecret", token, "tok-SECRET-123", "querysecret", "apikey-SECRET"):
        assert secret not in leaked
    assert "[redacted]" in leaked  # the echoed values were scrubbed, not just absent


# --- Slack payload --------------------------------------------------------------------------------------


def test_slack_message_over_http(receiver: Any, notifications: Any) -> None:
    rec = receiver()
    results = Results()
    cfg = NotifierConfig("slack", rec.url("/services/T0/B0/abc"),
                         channel_mapping=(("carol@company.com", "#carol"), ("security-team", "#security-approvals")))
    notifications(cfg, results=results).send("approval_requested", make_view())
    assert results.wait(1)[0][2:4] == ("slack", True)
    body = rec.requests[0].json()
    assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "Approval Required"}}
    assert "Approval Required" in body["text"] and "email.send" in body["text"]
    fields = " ".join(f["text"] for f in body["blocks"][1]["fields"])
    for expected in ("`email.send`", "HIGH", "alice@company.com → crm-bot → agent-7", "external-email",
                     "external recipient", "s1", "2026-01-01T01:00:00Z", "security-team, carol@company.com"):
        assert expected in fields
    # the first approver with a mapping wins, in approver order
    assert "*Slack channel*\n#security-approvals" in fields


def test_slack_header_names_the_source() -> None:
    step_up = slack_payload("approval_requested", make_view(), page_url=PAGE)
    deferred = slack_payload("approval_requested", make_view(source="defer_escalation"), page_url=PAGE)
    assert step_up["blocks"][0]["text"]["text"] == "Approval Required"
    assert deferred["blocks"][0]["text"]["text"] == "Escalated from DEFER"
    assert deferred["text"].startswith("Escalated from DEFER")


def test_slack_drift_warning_only_above_half() -> None:
    def drift(distance: float | None) -> bool:
        view = make_view(request={"semantic_distance": distance})
        return "Intent drift" in mrkdwn_texts(slack_payload("approval_requested", view, page_url=PAGE))

    assert drift(0.62) and not drift(0.5) and not drift(0.2) and not drift(None)


def test_slack_parameters_cut_to_500_characters() -> None:
    view = make_view(request={"parameters": {"body": "x" * 2000}})
    texts = [b["text"]["text"] for b in slack_payload("approval_requested", view, page_url=PAGE)["blocks"]
             if b["type"] == "section" and "text" in b]
    params = next(t for t in texts if t.startswith("*Parameters*"))
    shown = params.split("```")[1]
    full = json.dumps({"body": "x" * 2000}, indent=2, sort_keys=True)
    assert shown == full[:500] and "cut to 500" in params


def test_slack_buttons_open_the_page_only() -> None:
    payload = slack_payload("approval_requested", make_view(), page_url=PAGE + "/")
    actions = next(b for b in payload["blocks"] if b["type"] == "actions")["elements"]
    assert [(a["action_id"], a["url"]) for a in actions] == [
        ("approve_apr_123", f"{PAGE}/approvals/apr_123"), ("deny_apr_123", f"{PAGE}/approvals/apr_123")]


def test_slack_escapes_markup_in_request_data() -> None:
    view = make_view(request={"parameters": {"q": "<script>alert(1)</script> & more"},
                              "reason": "<!channel> see <https://evil.example|here>"})
    payload = slack_payload("approval_requested", view, page_url=PAGE)
    dumped = json.dumps(payload)
    assert "<script>" not in dumped and "&lt;script&gt;" in dumped and "&amp; more" in dumped
    assert "<!channel>" not in dumped and "<https://evil" not in dumped


def test_slack_escalated_and_decided_events() -> None:
    escalated = slack_payload("approval_escalated", make_view(escalated=True), page_url=PAGE)
    assert "Approval escalated" in mrkdwn_texts(escalated) and "Approval escalated" in escalated["text"]
    assert any(b["type"] == "actions" for b in escalated["blocks"])
    decision = {"approver": "carol@company.com", "granted": True, "reason": "ticket OPS-1",
                "decided_at": "2026-01-01T00:10:00Z", "channel": "web"}
    granted = slack_payload("approval_decided", make_view(status="approved", decision=decision), page_url=PAGE)
    assert "Approval granted by carol@company.com" in mrkdwn_texts(granted)
    assert not any(b["type"] == "actions" for b in granted["blocks"])
    denied = slack_payload("approval_decided", make_view(decision={**decision, "granted": False}), page_url=PAGE)
    assert "Approval denied by carol@company.com" in denied["text"]


def test_formatting_survives_missing_and_odd_keys() -> None:
    for view in ({}, {"request": "not a dict", "approvers": None}, make_view(request={"identity": None})):
        for event in ("approval_requested", "approval_escalated", "approval_decided"):
            assert slack_payload(event, view, page_url=PAGE)["blocks"][0]["type"] == "header"
            assert webhook_payload(event, view, page_url=PAGE)["event"] == event
