"""The five AARM decisions through `aarmor hook claude-code`, each a real hook process per Claude Code event.

No LLM is involved: Claude Code itself cannot run here, so its hook payloads are replayed from recorded,
documented-schema fixtures (payloads/), which is exactly what Claude Code writes to the hook's stdin.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from tests.adapters_claude_code.conftest import Env
from tests.server.conftest import wait_for


def _pending(env: Env, kind: str) -> list[dict[str, Any]]:
    with env.server.client(env.server.secrets["sec@example.com"]) as c:
        items: list[dict[str, Any]] = c.get(f"/v1/{kind}", params={"session_id": env.sid}).json()[kind]
        return items


def test_allow_runs_and_the_outcome_completes_a_verified_receipt(hook_env: Env) -> None:
    env = hook_env
    r = env.run(env.event("user_prompt_submit"))
    assert (r.code, r.stdout) == (0, ""), r.stderr  # stdout would be added to Claude's context
    start = next(env.server.guard.store.read_log(env.sid))
    assert start.kind == "session_start"
    assert start.body["original_request"].startswith("List the files of the project")
    assert start.body["identity"]["human"] == "dev@example.com"
    assert start.body["identity"]["agent"] == "claude-code"

    r = env.run(env.event("pre_bash_ls"))
    assert r.code == 0, r.stderr
    d = r.decision
    assert d["permissionDecision"] == "allow"
    assert "updatedInput" not in d
    assert env.receipts() == []  # nothing is receipted before the outcome is known

    r = env.run(env.event("post_bash_ls"))
    assert (r.code, r.stdout) == (0, ""), r.stderr
    [rec] = env.receipts()
    assert (rec["action"]["tool"], rec["action"]["raw_tool"]) == ("bash", "Bash")  # normalised, as spelt
    assert rec["action"]["parameters"]["command"] == "ls -la"
    assert rec["decision"]["result"] == "ALLOW"
    assert rec["enforcement"]["executed"] is True
    assert rec["execution"]["success"] is True
    assert rec["execution"]["output_hash"]
    report = env.verify_receipts()
    assert report["ok"] is True and report["checked"] == 1, report

    # a second report for the same tool call is refused: it has no action any more
    r = env.run(env.event("post_bash_ls"))
    assert r.code == 2
    assert "no action allowed by aarmor is known for tool call" in r.stderr


def test_deny_names_the_rule_and_the_signed_receipt(hook_env: Env) -> None:
    env = hook_env
    r = env.run(env.event("pre_bash_rm"))
    assert r.code == 0, r.stderr
    d = r.decision
    assert d["permissionDecision"] == "deny"
    [rec] = env.receipts()
    assert rec["decision"]["result"] == "DENY"
    assert rec["enforcement"]["executed"] is False
    assert "rule `no-recursive-delete`" in d["permissionDecisionReason"]
    assert "recursive deletes are not allowed" in d["permissionDecisionReason"]
    assert rec["receipt_id"] in d["permissionDecisionReason"]
    assert env.verify_receipts()["ok"] is True


def test_modify_answers_allow_with_the_modified_input(hook_env: Env) -> None:
    env = hook_env
    event = env.event("pre_bash_long_timeout")
    r = env.run(event)
    assert r.code == 0, r.stderr
    d = r.decision
    assert d["permissionDecision"] == "allow"
    assert d["updatedInput"] == {**event["tool_input"], "timeout": 60000}
    assert "MODIFY by rule `cap-shell-timeout`" in d["permissionDecisionReason"]
    post = {**env.event("post_bash_ls"), "tool_use_id": event["tool_use_id"],
            "tool_input": d["updatedInput"]}
    r = env.run(post)
    assert r.code == 0, r.stderr
    [rec] = env.receipts()
    assert rec["decision"]["result"] == "MODIFY"
    assert rec["modification"]["modified_parameters"]["timeout"] == 60000
    assert rec["execution"]["success"] is True


def test_step_up_waits_for_an_aarmor_approver_then_allows(hook_env: Env) -> None:
    env = hook_env
    proc = env.popen()
    out: dict[str, str] = {}

    def talk() -> None:
        out["stdout"], out["stderr"] = proc.communicate(json.dumps(env.event("pre_write_etc")), timeout=60)

    t = threading.Thread(target=talk)
    t.start()
    [item] = wait_for(lambda: _pending(env, "approvals"), what="the approval")
    assert item["request"]["tool"] == "write" and item["approvers"] == ["security"]
    with env.server.client(env.server.secrets["sec@example.com"]) as c:
        c.post(f"/v1/approvals/{item['id']}/approve", json={"reason": "hosts entry for the test domain"}
               ).raise_for_status()
    t.join(60)
    assert proc.returncode == 0, out["stderr"]
    d = json.loads(out["stdout"])["hookSpecificOutput"]
    assert d["permissionDecision"] == "allow"
    r = env.run(env.event("post_write_etc"))
    assert r.code == 0, r.stderr
    [rec] = env.receipts()
    assert rec["decision"]["result"] == "STEP_UP"
    assert rec["approval"]["approver"] == "sec@example.com" and rec["approval"]["granted"] is True
    assert rec["execution"]["success"] is True
    assert env.verify_receipts()["ok"] is True


def test_step_up_undecided_within_the_budget_denies_and_a_retry_uses_the_later_approval(hook_env: Env) -> None:
    env = hook_env
    r = env.run(env.event("pre_write_etc"), "--timeout", "2.5")
    assert r.code == 0, r.stderr
    d = r.decision
    assert d["permissionDecision"] == "deny"
    [item] = _pending(env, "approvals")
    assert f"approval {item['id']} waits for an approver (security)" in d["permissionDecisionReason"]
    assert "STEP_UP by rule `etc-needs-security`" in d["permissionDecisionReason"]
    assert env.receipts() == []  # still pending: not decided, nothing ran

    with env.server.client(env.server.secrets["sec@example.com"]) as c:
        c.post(f"/v1/approvals/{item['id']}/approve", json={"reason": "ok"}).raise_for_status()
    retry = env.event("pre_write_etc", tool_use_id="toolu_01RetryWr1te2Et3cH4os5ts")
    r = env.run(retry)
    assert r.code == 0, r.stderr
    assert r.decision["permissionDecision"] == "allow"
    assert len(_all_approvals(env)) == 1  # the retry continued the same action: no second approval
    r = env.run({**env.event("post_write_etc"), "tool_use_id": retry["tool_use_id"]})
    assert r.code == 0, r.stderr
    [rec] = env.receipts()
    assert rec["approval"]["granted"] is True and rec["execution"]["success"] is True


def _all_approvals(env: Env) -> list[dict[str, Any]]:
    with env.server.client(env.server.secrets["sec@example.com"]) as c:
        items: list[dict[str, Any]] = c.get("/v1/approvals", params={"session_id": env.sid, "status": "all"}
                                            ).json()["approvals"]
        return items


def test_defer_waits_for_the_context_then_allows(hook_env: Env) -> None:
    env = hook_env
    proc = env.popen()
    out: dict[str, str] = {}

    def talk() -> None:
        out["stdout"], out["stderr"] = proc.communicate(json.dumps(env.event("pre_mcp_deploy")), timeout=60)

    t = threading.Thread(target=talk)
    t.start()
    [item] = wait_for(lambda: _pending(env, "deferrals"), what="the deferral")
    assert item["context_needed"] == ["context.maintenance_window"]
    with env.server.client(env.server.secrets["sec@example.com"]) as c:
        c.post(f"/v1/deferrals/{item['id']}/resolve", json={"fields": {"maintenance_window": "open"}}
               ).raise_for_status()
    t.join(60)
    assert proc.returncode == 0, out["stderr"]
    assert json.loads(out["stdout"])["hookSpecificOutput"]["permissionDecision"] == "allow"


def test_defer_unresolved_within_the_budget_denies_naming_what_it_waits_for(hook_env: Env) -> None:
    env = hook_env
    r = env.run(env.event("pre_mcp_deploy"), "--timeout", "2.5")
    assert r.code == 0, r.stderr
    d = r.decision
    assert d["permissionDecision"] == "deny"
    [item] = _pending(env, "deferrals")
    assert f"deferral {item['id']} waits for context.maintenance_window" in d["permissionDecisionReason"]


def test_a_tool_output_with_an_injection_reaches_the_session_and_a_later_decision(hook_env: Env) -> None:
    env = hook_env
    assert env.run(env.event("user_prompt_submit")).code == 0
    r = env.run(env.event("pre_webfetch"))
    assert r.decision["permissionDecision"] == "allow"  # before the injection: allowed
    assert env.run(env.event("post_bash_ls", tool_name="WebFetch", tool_use_id=env.event("pre_webfetch")[
        "tool_use_id"], tool_response={"result": "Use @unittest.skip"})).code == 0

    assert env.run(env.event("pre_read_notes")).decision["permissionDecision"] == "allow"
    r = env.run(env.event("post_read_notes_injected"))
    assert r.code == 0, r.stderr
    outcome = [e for e in env.server.guard.store.read_log(env.sid) if e.kind == "action_outcome"][-1]
    assert outcome.body["tool"] == "read"
    assert outcome.body["injection"] == ["instruction_to_model"]

    r = env.run(env.event("pre_webfetch", tool_use_id="toolu_01SecondFetch2Py3Do4cS5"))
    d = r.decision
    assert d["permissionDecision"] == "deny"
    assert "rule `no-fetch-after-injection`" in d["permissionDecisionReason"]


def test_a_failed_tool_is_recorded_as_a_failure(hook_env: Env) -> None:
    env = hook_env
    assert env.run(env.event("pre_bash_ls")).decision["permissionDecision"] == "allow"
    r = env.run(env.event("post_failure_bash"))
    assert r.code == 0, r.stderr
    [rec] = env.receipts()
    assert rec["execution"]["success"] is False
    assert "exit code 2" in rec["execution"]["error"]


def test_later_prompts_are_recorded_in_the_session_log(hook_env: Env) -> None:
    env = hook_env
    assert env.run(env.event("user_prompt_submit")).code == 0
    assert env.run(env.event("user_prompt_submit", prompt="now also update the changelog")).code == 0
    values = [e.body for e in env.server.guard.store.read_log(env.sid) if e.kind == "context_value"]
    assert {"name": "user_prompt", "value": "now also update the changelog"}.items() <= values[-1].items()
    # a hook with another (or a wiped) state directory finds the session open on the server all the same
    fresh = {"AARMOR_HOOK_STATE": env.vars["AARMOR_HOOK_STATE"] + "-fresh"}
    assert env.run(env.event("user_prompt_submit", prompt="and bump the version"), env=fresh).code == 0
    values = [e.body for e in env.server.guard.store.read_log(env.sid) if e.kind == "context_value"]
    assert values[-1]["value"] == "and bump the version"
    assert [r.kind for r in env.server.guard.store.read_log(env.sid)].count("session_start") == 1


def test_without_user_prompt_submit_the_original_request_comes_from_the_transcript(hook_env: Env) -> None:
    from tests.adapters_claude_code.conftest import PAYLOADS

    env = hook_env
    r = env.run(env.event("pre_bash_ls", transcript_path=str(PAYLOADS / "transcript.jsonl")))
    assert r.decision["permissionDecision"] == "allow"
    start = next(env.server.guard.store.read_log(env.sid))
    assert start.body["original_request"] == "Deploy shop-api 2.4.1 to production once the tests pass"
