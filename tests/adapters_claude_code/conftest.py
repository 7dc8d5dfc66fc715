"""The real `aarmor hook claude-code` command, run as a subprocess per event, against a real aarmor server.

The server is the one tests/server starts (uvicorn on 127.0.0.1, a real Guard on SQLite, in this process so
a test can decide approvals over HTTP while a hook process waits). Hook payloads are recorded in Claude
Code's documented schema (payloads/*.json); each test gives them its own session and tool-use ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import Running, serve  # noqa: F401  (the fixture, re-exported for these tests)

PAYLOADS = Path(__file__).parent / "payloads"
AARMOR = str(Path(sys.executable).parent / "aarmor")

POLICY = """
policy: {id: claude-code-test, version: "3", default: ALLOW}
rules:
  - id: no-recursive-delete
    match: {tool: Bash, parameters: {command: {contains: "rm -rf"}}}
    action: DENY
    reason: recursive deletes are not allowed
  - id: cap-shell-timeout
    match: {tool: Bash, parameters: {timeout: {gt: 60000}}}
    action: MODIFY
    modifications: {parameters: {timeout: 60000}}
    reason: shell commands run at most 60 s
  - id: etc-needs-security
    match: {tool: Write, parameters: {file_path: {matches: "^/etc/"}}}
    action: STEP_UP
    approvers: [security]
    timeout: 60
    reason: writes under /etc need the security team
  - id: deploy-waits-for-window
    match: {tool: mcp__ops__deploy, context: {maintenance_window: {ne: open}}}
    action: DEFER
    context_needed: [context.maintenance_window]
    timeout: 60
    reason: deploys wait for the maintenance window
  - id: no-fetch-after-injection
    match: {tool: WebFetch}
    when: "risk_signals.injection_suspected"
    action: DENY
    reason: no web requests once a tool output carried an injection
"""

GROUPS = (("security", ("sec@example.com",)),)


def payload(name: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
    data.update(changes)
    return data


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def decision(self) -> dict[str, Any]:
        """The PreToolUse answer's hookSpecificOutput (asserting it is the documented shape)."""
        out = json.loads(self.stdout)
        assert list(out) == ["hookSpecificOutput"], out
        spec: dict[str, Any] = out["hookSpecificOutput"]
        assert spec["hookEventName"] == "PreToolUse"
        assert spec["permissionDecision"] in ("allow", "deny", "ask")
        return spec


@dataclass
class Env:
    """One server, one agent token, one state directory; `run` is one hook invocation."""

    server: Running
    vars: dict[str, str]
    session: str

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """A hook process with its stdin open (the caller writes the event, or holds stdin open)."""
        full = {**os.environ, **self.vars, **(env or {})}
        return subprocess.Popen([AARMOR, "hook", "claude-code", *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full)

    def run(self, event: dict[str, Any] | str, *args: str, env: dict[str, str] | None = None) -> Result:
        proc = self.popen(*args, env=env)
        out, err = proc.communicate(event if isinstance(event, str) else json.dumps(event), timeout=120)
        return Result(proc.returncode, out, err)

    def event(self, name: str, **changes: Any) -> dict[str, Any]:
        return payload(name, **{"session_id": self.session, **changes})

    @property
    def sid(self) -> str:
        return f"cc-{self.session}"

    def receipts(self) -> list[dict[str, Any]]:
        with self.server.client(self.server.secrets["sec@example.com"]) as c:
            r = c.get("/v1/receipts", params={"session_id": self.sid})
            r.raise_for_status()
            body: list[dict[str, Any]] = r.json()["receipts"]
            return body

    def verify_receipts(self) -> dict[str, Any]:
        with self.server.client(self.server.secrets["sec@example.com"]) as c:
            lines = c.get("/v1/receipts", params={"session_id": self.sid, "format": "jsonl"}).text
            report: dict[str, Any] = c.post("/v1/receipts/verify", content=lines.encode(),
                                            headers={"Content-Type": "application/x-ndjson"}).json()
            return report


@pytest.fixture
def hook_env(serve: Callable[..., Running], tmp_path: Path) -> Iterator[Env]:  # noqa: F811
    from aarmor.config import ApprovalsConfig

    server = serve(POLICY, approvals=ApprovalsConfig(groups=GROUPS, poll_interval=0.02))
    agent = server.token("claude-agent", "agent")
    server.token("sec@example.com", "approver")
    yield Env(server, {"AARMOR_URL": server.url, "AARMOR_TOKEN": agent,
                       "AARMOR_HOOK_STATE": str(tmp_path / "hook-state"), "AARMOR_HUMAN": "dev@example.com"},
              str(uuid.uuid4()))
