"""STEP_UP through the gateway: the call is held (with progress notifications) until an approver decides
with the real `aarmor approvals` CLI in another process; a cancelled held call is a recorded DENY.
Upstream: the PyPI reference server `mcp-server-git` on a temporary repository."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

from tests.mcp_support import git_server_argv, make_git_repo

from .conftest import GatewaySetup, upstream

POLICY = """
policy: {id: git-gateway, version: "1", default: DENY}
rules:
  - id: destructive-git-needs-a-maintainer
    match: {tool: [git_reset, git_checkout]}
    action: STEP_UP
    priority: 100
    approvers: [maintainers]
    timeout: 30
    reason: destructive git commands need a maintainer
  - id: the-rest
    match: {tool: "git_*"}
    action: ALLOW
"""


def _setup(gw: GatewaySetup, tmp_path: Path) -> tuple[Path, str]:
    repo = make_git_repo(tmp_path / "repo")
    gw.write(policy=POLICY, gateway={"principal": {"human": "alice@company.com", "agent": "coder"},
                                     "progress_interval": 0.2,
                                     "upstreams": {"git": upstream(git_server_argv(repo))}},
             approvals={"groups": {"maintainers": ["carol@company.com"]}, "poll_interval": 0.05})
    made = gw.cli("tokens", "create", "carol@company.com", "--role", "approver", "--json")
    assert made.returncode == 0, made.stderr
    return repo, json.loads(made.stdout)["secret"]


def _approve_when_listed(gw: GatewaySetup, token: str, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = gw.cli("approvals", "list", "--json")
            items = json.loads(listed.stdout or "[]")
            if items:
                out["item"] = items[0]
                out["approve"] = gw.cli("approvals", "approve", items[0]["id"], "-r", "reviewed the diff",
                                        "--token", token)
                return
            time.sleep(0.1)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_a_destructive_git_command_waits_for_a_cli_approval_with_progress(gw: GatewaySetup,
                                                                         tmp_path: Path) -> None:
    repo, carol = _setup(gw, tmp_path)
    approved: dict[str, Any] = {}
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, _total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async def run() -> tuple[Any, Any]:
        async with gw.client() as s:
            added = await s.call_tool("git_add", {"repo_path": str(repo), "files": ["notes.txt"]})
            t = _approve_when_listed(gw, carol, approved)
            reset = await s.call_tool("git_reset", {"repo_path": str(repo)}, progress_callback=on_progress)
            await asyncio.to_thread(t.join, 30)
            return added, reset

    added, reset = asyncio.run(run())
    assert not added.is_error
    assert approved["approve"].returncode == 0, approved["approve"].stderr
    assert not reset.is_error, reset
    assert progress and "held by aarmor" in (progress[0][1] or "")
    receipts = gw.receipts()
    assert [(r.tool, r.decision) for r in receipts] == [("git_add", "ALLOW"), ("git_reset", "STEP_UP")]
    approval = receipts[-1].body["approval"]
    assert approval["approver"] == "carol@company.com" and approval["reason"] == "reviewed the diff"


def test_cancelling_a_held_call_denies_and_records_it(gw: GatewaySetup, tmp_path: Path) -> None:
    repo, _carol = _setup(gw, tmp_path)

    async def run() -> Any:
        async with gw.client() as s:
            task = asyncio.ensure_future(s.call_tool("git_reset", {"repo_path": str(repo)}))
            deadline = time.monotonic() + 20
            while not json.loads(gw.cli("approvals", "list", "--json").stdout or "[]"):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            task.cancel()  # the SDK sends notifications/cancelled for the request
            try:
                await task
            except asyncio.CancelledError:
                pass
            await asyncio.sleep(0.5)
            return await s.call_tool("git_status", {"repo_path": str(repo)})

    status = asyncio.run(run())
    assert not status.is_error  # the connection is still usable
    receipts = gw.receipts()
    reset = [r for r in receipts if r.tool == "git_reset"]
    assert len(reset) == 1 and reset[0].body["decision"]["result"] == "STEP_UP"
    body = reset[0].body
    assert body["enforcement"]["result"] == "DENY" and body["enforcement"]["executed"] is False
    assert body["error"]["message"] == "cancelled by the caller while waiting" and body["execution"] is None
    assert json.loads(gw.cli("approvals", "list", "--json").stdout or "[]") == []
