"""AARM R4 / 2.6: DEFER suspends, gathers context, re-evaluates with the PDP, bounded in time and depth.

Context arrives the three ways the issue names: `session.update_context`, the desk's `supply` (what the
CLI and the HTTP API call), and resolvers (a Python callable and a real HTTP callback on loopback).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.config import ApprovalsConfig, DeferralsConfig, ResolverConfig
from aarmor.errors import InputError, Refused
from tests.conformance.conftest import Tool, receipts

POLICY = """
policy: {id: deferrals-test, version: "1", default: ALLOW}
rules:
  - id: defer-rotation-until-window-known
    match: {tool: credentials, operation: rotate, context: {maintenance_window: {ne: open}}}
    action: DEFER
    context_needed: [context.maintenance_window]
    timeout: 20
    reason: rotation waits for the maintenance window status
  - id: rotation-outside-window-denied
    match: {tool: credentials, operation: rotate, context: {maintenance_window: closed}}
    action: DENY
    priority: 900
    reason: no rotation outside a maintenance window
  - id: defer-quick
    match: {tool: cache, operation: purge, context: {purge_confirmed: {ne: true}}}
    action: DEFER
    context_needed: [purge_confirmed]
    timeout: 0.3
    reason: purge needs a confirmation
  - id: defer-delete-until-confirmed
    match: {tool: records, operation: delete, context: {user_confirmed_count: {ne: 47}}}
    action: DEFER
    context_needed: [user_confirmed_count]
    timeout: 20
    reason: ask the user to confirm deleting 47 staging records
  - id: delete-needs-approval
    match: {tool: records, operation: delete, context: {user_confirmed_count: 47}}
    action: STEP_UP
    approvers: [data-owner]
    timeout: 20
    reason: confirmed deletes still need the data owner
"""

ALICE = Identity(human="alice@company.com", service="ops-agent-svc", agent="ops-agent", roles=["operator"],
                 scopes=["ops:write"])


@pytest.fixture
def guard(make_guard: Callable[..., Any]) -> Any:
    # default_timeout bounds the DEFERs the PDP itself raises for unpopulated context (R3 trigger (a))
    return make_guard(POLICY, deferrals=DeferralsConfig(default_timeout=10, poll_interval=0.02, max_cascade=2),
                      approvals=ApprovalsConfig(groups=(("data-owner", ("olga@company.com",)),), poll_interval=0.02))


def _when(pred: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def _in_thread(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn)
    t.start()
    return t


def test_update_context_resolves_and_two_receipts_keep_the_identity(guard: Any) -> None:
    rotated = Tool("rotated")
    with guard.session(identity=ALICE, original_request="rotate the payment credentials tonight") as s:
        def host() -> None:
            _when(guard.deferrals.list)
            s.update_context(maintenance_window="open")

        t = _in_thread(host)
        assert s.invoke("credentials.rotate", {"target": "payments"}, rotated) == "rotated"
        t.join()
    assert rotated.calls == [{"target": "payments"}]
    first, second = receipts(guard, s.session_id)
    assert first["kind"] == "deferral" and first["decision"]["result"] == "DEFER"
    assert "maintenance_window" in first["deferral"]["reason"]  # R3 trigger (a): unpopulated context
    assert first["deferral"]["context_needed"] == ["context.maintenance_window"]
    assert second["kind"] == "resolution" and second["enforcement"]["result"] == "ALLOW"
    assert second["deferral"]["resolution_method"] == "context_supplied" or \
        second["deferral"]["resolution_method"] == "re-evaluation"
    assert second["deferral"]["resolved_at"] and second["deferral"]["result"] == "ALLOW"
    for r in (first, second):  # AARM R6: the original identity in both receipts
        assert r["action"]["requester_context"]["human"] == "alice@company.com"
        assert r["action"]["requester_context"]["agent"] == "ops-agent"
    [item] = guard.deferrals.list(status="resolved")
    assert item["resolution"]["result"] == "ALLOW"


def test_supplied_context_can_also_lead_to_deny(guard: Any) -> None:
    with guard.session(identity=ALICE) as s:
        def ops() -> None:
            [item] = _when(guard.deferrals.list)
            guard.deferrals.supply(item["id"], {"context.maintenance_window": "closed"}, by="change-desk",
                                   channel="test")

        t = _in_thread(ops)
        with pytest.raises(ActionDenied) as info:
            s.invoke("credentials.rotate", {"target": "payments"}, Tool())
        t.join()
    assert "no rotation outside a maintenance window" in info.value.decision.reason
    _first, second = receipts(guard, s.session_id)
    assert second["deferral"]["resolution_method"] == "context_supplied"
    assert second["deferral"]["resolver"] == "change-desk"
    log = [e for e in guard.store.read_log(s.session_id) if e.kind == "context_value"]
    assert log and log[-1].body["source"] == "test:change-desk"  # the supplied value is in the chained log


def test_deferral_timeout_is_deny_never_allow(guard: Any) -> None:
    purged = Tool()
    with guard.session(identity=ALICE) as s, pytest.raises(ActionDenied) as info:
        s.set_context("purge_confirmed", False, source="test")  # populated: the rule (timeout 0.3 s) fires
        s.invoke("cache.purge", {"all": True}, purged)
    assert purged.calls == [] and "not available within 0.3 s" in info.value.decision.reason
    _first, second = receipts(guard, s.session_id)
    assert second["deferral"]["result"] == "TIMEOUT" and second["enforcement"]["result"] == "DENY"
    [item] = guard.deferrals.list(status="expired")
    with pytest.raises(Refused) as late:
        guard.deferrals.supply(item["id"], {"purge_confirmed": True}, by="bob", channel="test")
    assert late.value.code == "not_pending"


def test_only_the_needed_fields_are_accepted(guard: Any) -> None:
    with guard.session(identity=ALICE) as s:
        def ops() -> None:
            [item] = _when(guard.deferrals.list)
            for fields in ({"is_admin": True}, {}):
                try:
                    guard.deferrals.supply(item["id"], fields, by="mallory", channel="test")
                except Refused as exc:
                    codes.append(exc.code)
                except InputError:
                    codes.append("input")
            guard.deferrals.supply(item["id"], {"purge_confirmed": True}, by="bob", channel="test")

        codes: list[str] = []
        t = _in_thread(ops)
        s.invoke("cache.purge", {"all": True}, Tool())
        t.join()
    assert codes == ["bad_field", "input"]


def test_a_python_resolver_supplies_the_context(guard: Any) -> None:
    asked: list[str] = []

    def window_service(view: dict[str, Any]) -> dict[str, Any] | None:
        asked.append(view["id"])
        return {"maintenance_window": "open"} if "context.maintenance_window" in view["context_needed"] else None

    guard.add_resolver(window_service)
    with guard.session(identity=ALICE) as s:
        assert s.invoke("credentials.rotate", {"target": "db"}, Tool("ok")) == "ok"
    [item] = guard.deferrals.list(status="resolved")
    assert asked == [item["id"]]
    assert item["attempts"][0]["resolver"] == "window_service" and item["attempts"][0]["fields"] == [
        "maintenance_window"]


@pytest.fixture
def http_resolver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            answer = json.dumps({"fields": {"maintenance_window": "open"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/resolve", seen
    server.shutdown()
    server.server_close()


def test_an_http_callback_resolver(make_guard: Callable[..., Any],
                                   http_resolver: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = http_resolver
    guard = make_guard(POLICY, deferrals=DeferralsConfig(poll_interval=0.02, resolvers=(ResolverConfig(url),)))
    with guard.session(identity=ALICE) as s:
        assert s.invoke("credentials.rotate", {"target": "db"}, Tool("ok")) == "ok"
    assert seen[0]["deferral"]["request"]["tool"] == "credentials"
    [item] = guard.deferrals.list(status="resolved")
    assert item["supplied"] == {"maintenance_window": "open"}


def test_confirmation_then_approval_is_an_escalated_defer(guard: Any) -> None:
    """AARM 4.5: "delete 47 staging records?" confirmed by the user, then a human approves (labelled)."""
    deleted = Tool("deleted")
    sources: list[str] = []
    with guard.session(identity=ALICE, original_request="clean up staging") as s:
        def people() -> None:
            _when(guard.deferrals.list)
            s.update_context(user_confirmed_count=47)
            [item] = _when(guard.approvals.list)
            sources.append(item["source"])
            guard.approvals.decide(item["id"], approver="olga@company.com", granted=True, reason="ok",
                                   channel="test")

        t = _in_thread(people)
        assert s.invoke("records.delete", {"env": "staging", "count": 47}, deleted) == "deleted"
        t.join()
    assert sources == ["defer_escalation"]
    _first, second = receipts(guard, s.session_id)
    assert second["deferral"]["result"] == "STEP_UP"
    assert second["approval"]["source"] == "defer_escalation" and second["approval"]["granted"] is True
    assert second["enforcement"]["result"] == "ALLOW"


def test_dependents_wait_and_independents_proceed(guard: Any) -> None:
    order: list[str] = []

    def tool(name: str) -> Callable[[dict[str, Any]], str]:
        def run(arguments: dict[str, Any]) -> str:
            order.append(name)
            return name

        return run

    with guard.session(identity=ALICE) as s:
        rotate_id = s.new_action_id()
        results: dict[str, Any] = {}

        def call(key: str, *args: Any, **kwargs: Any) -> threading.Thread:
            def run() -> None:
                try:
                    results[key] = s.invoke(*args, **kwargs)
                except ActionDenied as exc:
                    results[key] = exc

            return _in_thread(run)

        t_rotate = call("rotate", "credentials.rotate", {"target": "db"}, tool("rotate"), action_id=rotate_id)
        _when(lambda: guard.deferrals.list())
        t_dep = call("restart", "service.restart", {"after": s.handle(rotate_id)}, tool("restart"))
        _when(lambda: len(guard.deferrals.list()) == 2)
        [dep_item] = [i for i in guard.deferrals.list() if i["trigger"] == "dependency"]
        assert dep_item["depends_on"] == [rotate_id] and dep_item["cascade"] == 2
        assert s.invoke("metrics.read", {}, tool("metrics")) == "metrics"  # independent: runs at once
        assert order == ["metrics"]
        s.update_context(maintenance_window="open")
        t_rotate.join()
        t_dep.join()
    assert results == {"rotate": "rotate", "restart": "restart"}
    assert order == ["metrics", "rotate", "restart"]  # the dependent ran after what it waited for


def test_dependent_of_a_denied_action_is_denied(guard: Any) -> None:
    with guard.session(identity=ALICE) as s:
        purge_id = s.new_action_id()
        results: dict[str, Any] = {}

        s.set_context("purge_confirmed", False, source="test")  # the rule's 0.3 s timeout applies

        def purge() -> None:
            try:
                s.invoke("cache.purge", {"all": True}, Tool(), action_id=purge_id)
            except ActionDenied as exc:
                results["purge"] = exc

        t = _in_thread(purge)
        _when(guard.deferrals.list)
        warm = Tool()
        with pytest.raises(ActionDenied) as info:
            s.invoke("cache.warm", {}, warm, depends_on=[purge_id])  # deferred, then the purge times out
        t.join()
    assert warm.calls == [] and "did not execute" in info.value.decision.reason
    with guard.session(identity=ALICE) as s2:
        with pytest.raises(ActionDenied) as again:  # depending on an action that already failed: DENY at once
            s2.invoke("cache.warm", {}, Tool(), depends_on=["act_unknown"])
        assert "has not seen" in again.value.decision.reason


def test_cascade_deeper_than_the_limit_is_denied(guard: Any) -> None:
    """max_cascade=2: A deferred (depth 1), B waits for A (depth 2), C waits for B (depth 3): DENY."""
    with guard.session(identity=ALICE) as s:
        a, b = s.new_action_id(), s.new_action_id()
        threads = [
            _in_thread(lambda: _swallow(lambda: s.invoke("cache.purge", {}, Tool(), action_id=a))),
        ]
        _when(lambda: len(guard.deferrals.list()) == 1)
        threads.append(_in_thread(lambda: _swallow(lambda: s.invoke("cache.warm", {}, Tool(), action_id=b,
                                                                    depends_on=[a]))))
        _when(lambda: len(guard.deferrals.list()) == 2)
        with pytest.raises(ActionDenied) as info:
            s.invoke("cache.report", {}, Tool(), depends_on=[b])
        assert "cascade of depth 3 exceeds the limit of 2" in info.value.decision.reason
        s.update_context(purge_confirmed=True)  # A resolves, then B
        for t in threads:
            t.join()


def test_async_deferral_does_not_block_the_event_loop(guard: Any) -> None:
    import asyncio

    async def main() -> Any:
        ticks: list[float] = []

        async def ticker(s: Any) -> None:
            for i in range(10):
                ticks.append(time.monotonic())
                if i == 5:
                    s.update_context(maintenance_window="open")
                await asyncio.sleep(0.02)

        with guard.session(identity=ALICE) as s:
            result, _ = await asyncio.gather(s.ainvoke("credentials.rotate", {"target": "x"}, Tool("ok")),
                                             ticker(s))
        return result, len(ticks)

    assert asyncio.run(main()) == ("ok", 10)


def _swallow(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except ActionDenied:
        pass


def test_a_dependency_that_fails_while_its_dependent_waits_is_never_mistaken_for_done(guard: Any) -> None:
    """Regression: the deferral loop read the dependencies twice; a dependency denied in between looked
    open to the first reading and finished to the second, and the dependent ran (about one round in five
    here before the fix). A stress loop: each round races the dependency's timeout against the check."""
    for _ in range(10):
        with guard.session(identity=ALICE) as s:
            purge_id = s.new_action_id()
            s.set_context("purge_confirmed", False, source="test")

            def purge(s: Any = s, purge_id: str = purge_id) -> None:
                with pytest.raises(ActionDenied):
                    s.invoke("cache.purge", {"all": True}, Tool(), action_id=purge_id)

            t = _in_thread(purge)
            _when(guard.deferrals.list)
            warm = Tool()
            with pytest.raises(ActionDenied):
                s.invoke("cache.warm", {}, warm, depends_on=[purge_id])
            t.join()
            assert warm.calls == []
