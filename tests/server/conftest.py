"""A real `aarmor serve` for the tests: uvicorn on 127.0.0.1 (free port) in a thread, a real Guard on SQLite.

The guard lives in the test process, so a test can block in `session.invoke` in one thread and decide the
approval through HTTP (API or browser) in another.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from aarmor.config import ApprovalsConfig, DeferralsConfig

POLICY = """
policy: {id: http-test, version: "1", default: ALLOW, internal_domains: [company.com]}
rules:
  - id: deny-shell
    match: {tool: shell}
    action: DENY
    reason: no shell from agents
  - id: cap-limit
    match: {tool: db, operation: query, parameters: {limit: {gt: 10}}}
    action: MODIFY
    modifications: {parameters: {limit: 10}}
    reason: queries return at most 10 rows
  - id: big-payment
    match: {tool: payment, operation: send, parameters: {amount: {gt: 1000}}}
    action: STEP_UP
    approvers: [finance]
    timeout: 30
    reason: payments over 1000 need finance
  - id: rotation-waits-for-window
    match: {tool: credentials, operation: rotate, context: {maintenance_window: {ne: open}}}
    action: DEFER
    context_needed: [context.maintenance_window]
    timeout: 30
    reason: rotation waits for the maintenance window status
"""

#: approver group `finance`: bob and alice (alice also requests actions: she may not approve her own)
GROUPS = (("finance", ("bob@company.com", "alice@company.com")),)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Running:
    """One running server: its URL, the guard behind it and tokens by principal name."""

    url: str
    guard: Any
    secrets: dict[str, str] = field(default_factory=dict)

    def token(self, name: str, role: str) -> str:
        from aarmor.tokens import create_token

        _, secret = create_token(self.guard.store, name, role, now=datetime.now(UTC))
        self.secrets[name] = secret
        return secret

    def client(self, secret: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def serve(make_guard: Callable[..., Any]) -> Iterator[Callable[..., Running]]:
    import uvicorn

    from aarmor.server import create_app

    started: list[tuple[Any, threading.Thread]] = []

    def start(policy: str = POLICY, *, outcome_timeout: float | None = 30.0, **overrides: Any) -> Running:
        """`outcome_timeout=None`: the configuration's `server.outcome_timeout`, as `aarmor serve` runs."""
        overrides.setdefault("approvals", ApprovalsConfig(groups=GROUPS, poll_interval=0.02))
        overrides.setdefault("deferrals", DeferralsConfig(poll_interval=0.02))
        guard = make_guard(policy, **overrides)
        app = create_app(guard, outcome_timeout=outcome_timeout)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="on", ws="none", http="h11"))
        thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        started.append((server, thread))
        return Running(f"http://127.0.0.1:{port}", guard)

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(15)


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout} s")
