"""The Python SDK door: `Guard.open`, `guard.session`, `session.invoke/ainvoke/evaluate`, `guard.protect`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import aarmor
from aarmor import ActionDenied, DecisionResult, Identity, ToolSpec
from aarmor.adapters.sdk import current_session

POLICY = """
policy: {id: sdk, version: "3", default: ALLOW, internal_domains: [company.com]}
rules:
  - id: deny-shell
    match: {tool: shell}
    action: DENY
    reason: no shell
  - id: cap-limit
    match: {tool: db, operation: query, parameters: {limit: {gt: 10}}}
    action: MODIFY
    modifications: {parameters: {limit: 10}}
    reason: capped
  - id: big-payment
    match: {tool: payment, parameters: {payment.amount: {gt: 1000}}}
    action: DENY
    reason: nested amount over 1000
"""

ALICE = Identity(human="alice@company.com", roles=["analyst"])


def test_public_api_names_exist() -> None:
    for name in ("Guard", "Identity", "ToolSpec", "ActionDenied", "Decision", "DecisionResult", "Session"):
        assert hasattr(aarmor, name), name
    with pytest.raises(AttributeError):
        aarmor.not_a_thing  # noqa: B018


def test_protect_mediates_sync_function_with_positional_arguments(make_guard: Any) -> None:
    guard = make_guard(POLICY)
    calls: list[tuple[str, int]] = []

    @guard.protect("db.query")
    def query(sql: str, limit: int = 5) -> int:
        calls.append((sql, limit))
        return limit

    with guard.session(identity=ALICE, original_request="report"):
        assert query("SELECT 1", 500) == 10  # positional `limit` is seen by policy and capped
        assert query("SELECT 2") == 5
    assert calls == [("SELECT 1", 10), ("SELECT 2", 5)]


def test_protect_outside_a_session_refuses_to_run(make_guard: Any) -> None:
    guard = make_guard(POLICY)
    ran = []

    @guard.protect("db.query")
    def query(sql: str) -> None:
        ran.append(sql)

    with pytest.raises(RuntimeError, match="no aarmor session is active"):
        query("SELECT 1")
    assert ran == []


def test_protect_async_function_is_mediated_and_denied(make_guard: Any) -> None:
    guard = make_guard(POLICY)
    ran: list[str] = []

    @guard.protect("shell.run")
    async def run(cmd: str) -> str:
        ran.append(cmd)
        return "done"

    async def main() -> None:
        async with guard.session(identity=ALICE) as s:
            assert current_session() is s
            with pytest.raises(ActionDenied) as info:
                await run("id")
            assert info.value.decision.rule_id == "deny-shell"

    asyncio.run(main())
    assert ran == []


def test_evaluate_is_a_dry_run_that_records_nothing(make_guard: Any) -> None:
    guard = make_guard(POLICY)
    with guard.session(identity=ALICE) as s:
        d = s.evaluate("shell.run", {"cmd": "id"})
        assert d.result is DecisionResult.DENY and d.policy_id == "sdk" and d.policy_version == "3"
        assert d.policy_hash == guard.policy.hash
        assert list(guard.store.read_receipts(s.session_id)) == []


def test_dotted_path_into_nested_parameters(make_guard: Any) -> None:
    guard = make_guard(POLICY)
    with guard.session(identity=ALICE) as s:
        assert s.evaluate("payment.send", {"payment": {"amount": 5000}}).rule_id == "big-payment"
        assert s.evaluate("payment.send", {"payment": {"amount": 50}}).result is DecisionResult.ALLOW


def test_tool_failure_is_recorded_and_reraised(make_guard: Any) -> None:
    guard = make_guard(POLICY)

    def broken(arguments: dict[str, Any]) -> None:
        raise ConnectionError("mail server down")

    with guard.session(identity=ALICE) as s:
        with pytest.raises(ConnectionError):
            s.invoke("email.send", {"to": "bob@company.com"}, broken)
    [r] = [x.body for x in guard.store.read_receipts(s.session_id)]
    assert r["execution"]["success"] is False
    assert r["execution"]["error"] == "ConnectionError: mail server down"


def test_execute_cannot_mutate_the_recorded_arguments(make_guard: Any) -> None:
    guard = make_guard(POLICY)

    def mutating(arguments: dict[str, Any]) -> None:
        arguments["to"] = "eve@evil.example"

    with guard.session(identity=ALICE) as s:
        s.invoke("email.send", {"to": "bob@company.com"}, mutating)
    [r] = [x.body for x in guard.store.read_receipts(s.session_id)]
    assert r["action"]["parameters"]["to"] == "bob@company.com"


def test_closed_session_refuses_calls(make_guard: Any) -> None:
    guard = make_guard(POLICY)
    with guard.session(identity=ALICE) as s:
        pass
    with pytest.raises(RuntimeError, match="already closed"):
        s.invoke("email.send", {"to": "bob@company.com"}, lambda a: None)


def test_session_resume_after_restart_continues_both_chains(make_guard: Any) -> None:
    first = make_guard(POLICY)
    s = first.session(identity=ALICE, session_id="sess-resume", tools=[ToolSpec("db.query")])
    s.invoke("db.query", {"limit": 1}, lambda a: [])
    first.close()  # the process "restarts" without ending the session
    second = make_guard(POLICY)
    with second.session(identity=ALICE, session_id="sess-resume") as s2:
        s2.invoke("db.query", {"limit": 2}, lambda a: [])
    assert [r.seq for r in second.store.read_receipts("sess-resume")] == [0, 1]
    with pytest.raises(aarmor.AarmorError, match="has ended"):
        second.session(identity=ALICE, session_id="sess-resume")


def test_guard_open_with_keyword_overrides(tmp_path: Path) -> None:
    import warnings

    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with aarmor.Guard.open(policy=str(policy), store=f"sqlite:///{tmp_path / 'x.db'}",
                               keys=str(tmp_path / "k")) as guard:
            assert guard.policy.policy_id == "sdk"
            assert (tmp_path / "x.db").exists() and (tmp_path / "k" / "current").exists()


def test_default_guard_uses_builtin_policy_and_home(_isolated_home: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with aarmor.Guard.open() as guard:
            assert guard.policy.policy_id == "aarmor-agent-default"
            assert guard.config.store == f"sqlite:///{_isolated_home / 'aarmor.db'}"
    assert (_isolated_home / "keys" / "current").exists()
