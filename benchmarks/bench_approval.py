"""Approval round trip without the human wait: request, notify, approve, execute, receipt.

A STEP_UP call blocks in `session.invoke`; the approval request is stored and handed to the notification
channel; an approver thread takes it from that channel at once and approves it through the desk (what the
CLI, the HTTP API and the page call); the waiting caller wakes, consumes the grant, executes and writes the
receipt. Measured per call from `invoke` to its return, twice: the approver calling the desk in-process,
and the approver calling the HTTP API of a real `aarmor serve` app (uvicorn on loopback) with its bearer
token, as a webhook-driven SOAR would. Baseline in the same run: the same call under an ALLOW rule (no
approval), so the difference is the cost of the approval machinery.

The approver is a thread of the measured process, so its work competes with the caller's for the GIL;
an approver in another process (the usual case) does not.
"""

from __future__ import annotations

import dataclasses
import queue
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from _timing import Result, measure

from aarmor import Guard, Identity
from aarmor.config import load_config

POLICY = """
policy: {id: bench-approval, version: "1", default: ALLOW}
rules:
  - id: needs-approval
    match: {tool: payment, operation: transfer}
    action: STEP_UP
    approvers: [finance]
    timeout: 30
    reason: payments need finance
"""


class _Channel:
    """An in-process notification channel: the approver reads requests from it as they are made."""

    def __init__(self) -> None:
        self.requests: queue.Queue[str] = queue.Queue()

    def send(self, event: str, view: dict[str, Any]) -> None:
        if event == "approval_requested":
            self.requests.put(view["id"])

    def close(self, timeout: float = 5.0) -> None:
        pass


def _serve(guard: Guard) -> tuple[str, Any]:
    import socket

    import uvicorn

    from aarmor.server import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(guard), host="127.0.0.1", port=port, log_level="warning",
                                           ws="none", http="h11"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server


def run(n: int = 500) -> list[Result]:
    tmp = Path(tempfile.mkdtemp(prefix="aarmor-bench-approval-"))
    (tmp / "policy.yaml").write_text(POLICY)
    cfg = load_config(policy=str(tmp / "policy.yaml"), store=f"sqlite:///{tmp}/a.db", keys=str(tmp / "keys"))
    cfg = dataclasses.replace(cfg, approvals=dataclasses.replace(cfg.approvals, groups=(("finance", ("carol",)),)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = Guard(cfg)
    import httpx

    from aarmor.tokens import create_token

    channel = _Channel()
    guard.approvals.notifications = channel
    stop = threading.Event()
    url, server = _serve(guard)
    _, secret = create_token(guard.store, "carol", "approver", now=guard._clock())
    via = {"http": False}

    def approver() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as client:
            while not stop.is_set():
                try:
                    item = channel.requests.get(timeout=0.1)
                except queue.Empty:
                    continue
                if via["http"]:
                    client.post(f"/v1/approvals/{item}/approve", json={"reason": "ok"}).raise_for_status()
                else:
                    guard.approvals.decide(item, approver="carol", granted=True, reason="ok", channel="bench")

    t = threading.Thread(target=approver, daemon=True)
    t.start()
    results = []
    with guard.session(identity=Identity(human="alice@company.com", service="agent")) as s:
        results.append(measure("baseline: session.invoke ALLOW (no approval), synchronous=full",
                               lambda: s.invoke("payment.refund", {"amount": 5}, lambda a: "ok"), n=n, warmup=20))
        results.append(measure("STEP_UP round trip, approver calls the desk in-process",
                               lambda: s.invoke("payment.transfer", {"amount": 5}, lambda a: "ok"), n=n,
                               warmup=20))
        via["http"] = True
        results.append(measure("STEP_UP round trip, approver calls the HTTP API (uvicorn, loopback)",
                               lambda: s.invoke("payment.transfer", {"amount": 5}, lambda a: "ok"), n=n,
                               warmup=20))
    stop.set()
    t.join()
    server.should_exit = True
    guard.close()
    return results


if __name__ == "__main__":
    from _timing import HEADER

    print(HEADER)
    for r in run():
        print(r.row())
