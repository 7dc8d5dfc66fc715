"""One aarmor action across two hook processes: parallel first calls, an outcome that never arrives."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.adapters_claude_code.conftest import GROUPS, POLICY, Env
from tests.server.conftest import Running, wait_for


def test_parallel_tool_calls_of_a_new_session_share_one_session(hook_env: Env) -> None:
    # Claude Code runs independent tool calls in parallel: the first hooks of a session race to open it
    env = hook_env
    events = [env.event("pre_bash_ls", tool_use_id=f"toolu_01Parallel{i}xxxxxxxxxxxx") for i in range(3)]
    procs = [env.popen() for _ in events]
    outs = [p.communicate(json.dumps(e), timeout=120) for p, e in zip(procs, events, strict=True)]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert json.loads(out)["hookSpecificOutput"]["permissionDecision"] == "allow"
    for e in events:
        assert env.run({**env.event("post_bash_ls"), "tool_use_id": e["tool_use_id"]}).code == 0
    starts = [r for r in env.server.guard.store.read_log(env.sid) if r.kind == "session_start"]
    assert len(starts) == 1
    assert len(env.receipts()) == 3


def test_an_outcome_that_never_arrives_is_recorded_as_unknown_and_a_late_one_is_refused(
        serve: Callable[..., Running], tmp_path: Path) -> None:
    from aarmor.config import ApprovalsConfig

    server = serve(POLICY, outcome_timeout=1.0, approvals=ApprovalsConfig(groups=GROUPS, poll_interval=0.02))
    server.token("sec@example.com", "approver")
    env = Env(server, {"AARMOR_URL": server.url, "AARMOR_TOKEN": server.token("claude-agent", "agent"),
                       "AARMOR_HOOK_STATE": str(tmp_path / "state")}, str(uuid.uuid4()))
    assert env.run(env.event("pre_bash_ls")).decision["permissionDecision"] == "allow"
    # Claude Code never sends PostToolUse (killed, say): the server's outcome deadline passes
    [rec] = wait_for(env.receipts, what="the outcome-unknown receipt")
    # the HTTP door's record of a missing report (docs/http-api.md `outcome_unknown`)
    assert rec["execution"]["success"] is None and rec["enforcement"]["executed"] == "unknown"
    assert rec["execution"]["error"].startswith("OutcomeUnknown: no outcome was reported within 1 s")
    r = env.run(env.event("post_bash_ls"))
    assert r.code == 2
    assert "409 not_allowed" in r.stderr and "the outcome was not recorded" in r.stderr
    assert len(env.receipts()) == 1
