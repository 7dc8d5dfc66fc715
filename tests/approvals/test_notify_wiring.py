"""The guard wires notifications into the approval desk: a real webhook receiver gets the request and the
decision, and each delivery's outcome is kept on the approval item."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aarmor import Identity
from aarmor.config import ApprovalsConfig, NotifierConfig

POLICY = """
policy: {id: notify-wiring, version: "1", default: ALLOW}
rules:
  - id: pay
    match: {tool: payment, operation: transfer}
    action: STEP_UP
    approvers: [finance]
    timeout: 20
    reason: payments need finance
"""


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()


def test_request_and_decision_reach_the_webhook_and_are_recorded(
        make_guard: Callable[..., Any], receiver: tuple[str, list[dict[str, Any]]]) -> None:
    url, got = receiver
    guard = make_guard(POLICY, approvals=ApprovalsConfig(
        groups=(("finance", ("carol@company.com",)),), poll_interval=0.02,
        notifiers=(NotifierConfig("webhook", url),)))

    def approver() -> None:
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:  # act on the notification, as a SOAR would
            time.sleep(0.01)
        guard.approvals.decide(got[0]["item"]["id"], approver="carol@company.com", granted=True, reason="ok",
                               channel="test")

    with guard.session(identity=Identity(human="alice@company.com")) as s:
        t = threading.Thread(target=approver)
        t.start()
        assert s.invoke("payment.transfer", {"amount": 5}, lambda a: "paid") == "paid"
        t.join()
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [g["event"] for g in got] == ["approval_requested", "approval_decided"]
    assert got[0]["item"]["request"]["tool"] == "payment" and got[0]["links"]["review"].endswith(got[0]["item"]["id"])
    item_id = got[0]["item"]["id"]
    while time.monotonic() < deadline and len(guard.store.pending_get(item_id).body.get("notifications", [])) < 2:
        time.sleep(0.01)
    deliveries = guard.store.pending_get(item_id).body["notifications"]
    assert [(d["event"], d["ok"]) for d in deliveries] == [("approval_requested", True), ("approval_decided", True)]
