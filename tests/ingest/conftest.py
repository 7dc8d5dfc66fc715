"""A real `aarmor ingest otlp` receiver for the tests: uvicorn on 127.0.0.1 (free port) in a thread, a real
Guard on SQLite, an API token with role agent. Exporters talk to it over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.server.conftest import free_port

POLICY = """
policy: {id: ingest-test, version: "7", default: ALLOW}
rules:
  - id: no-shell
    match: {tool: bash}
    action: DENY
    reason: agents get no shell
  - id: issues-need-a-human
    match: {tool: linear-server, operation: create_issue}
    action: STEP_UP
    approvers: [leads]
    reason: creating issues needs a lead
"""


@dataclass
class Receiver:
    url: str
    guard: Any
    token: str

    def receipts(self, session_id: str | None = None) -> list[dict[str, Any]]:
        return [r.body for r in self.guard.store.read_receipts(session_id)]

    def log(self, session_id: str) -> list[Any]:
        return list(self.guard.store.read_log(session_id))


@pytest.fixture
def receiver(make_guard: Callable[..., Any]) -> Iterator[Receiver]:
    import uvicorn

    from aarmor.ingest.receiver import build_ingest_app
    from aarmor.tokens import create_token

    guard = make_guard(POLICY)
    _, secret = create_token(guard.store, "claude-code", "agent", now=datetime.now(UTC))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_ingest_app(guard), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off", ws="none", http="h11"))
    thread = threading.Thread(target=server.run, name="uvicorn-ingest", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:  # uvicorn offers no start event to wait on
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    yield Receiver(f"http://127.0.0.1:{port}", guard, secret)
    server.should_exit = True
    thread.join(15)
