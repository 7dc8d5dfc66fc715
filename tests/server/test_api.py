"""The JSON API on a real server: auth on every changing route, and the mediate protocol end to end.

Each mediate test walks the protocol a non-Python agent follows: create a session, POST the action,
execute only on `allowed`, report the outcome, then check the signed receipt the pipeline wrote.
"""

from __future__ import annotations

from typing import Any

import pytest

from aarmor.receipts import verify_receipts
from tests.server.conftest import Running, wait_for

ALICE = {"human": "alice@company.com", "agent": "billing-agent", "roles": ["analyst"], "scope": ["payments"]}

#: (method, path, body) for every route that changes something, plus the protected reads
CHANGING = [
    ("POST", "/v1/sessions", {"identity": ALICE}),
    ("POST", "/v1/sessions/sess_x/evaluate", {"tool": "db.query"}),
    ("POST", "/v1/sessions/sess_x/actions", {"tool": "db.query"}),
    ("POST", "/v1/sessions/sess_x/context", {"fields": {"a": 1}}),
    ("POST", "/v1/sessions/sess_x/close", None),
    ("POST", "/v1/actions/act_x/outcome", {"success": True}),
    ("POST", "/v1/approvals/apr_x/approve", {"reason": "ok"}),
    ("POST", "/v1/approvals/apr_x/deny", {"reason": "no"}),
    ("POST", "/v1/deferrals/dfr_x/resolve", {"fields": {"a": 1}}),
    ("POST", "/v1/receipts/verify", None),
]
READS = [("GET", "/v1/approvals", None), ("GET", "/v1/approvals/apr_x", None), ("GET", "/v1/deferrals", None),
         ("GET", "/v1/receipts", None), ("GET", "/v1/receipts/rct_x", None), ("GET", "/v1/actions/act_x", None),
         ("GET", "/v1/keys", None)]
#: the role each route wants and one role it refuses
WRONG_ROLE = [
    ("POST", "/v1/sessions", {"identity": ALICE}, "approver"),
    ("POST", "/v1/sessions/sess_x/actions", {"tool": "db.query"}, "approver"),
    ("POST", "/v1/sessions/sess_x/context", {"fields": {"a": 1}}, "approver"),
    ("POST", "/v1/actions/act_x/outcome", {"success": True}, "approver"),
    ("POST", "/v1/approvals/apr_x/approve", {"reason": "ok"}, "agent"),
    ("POST", "/v1/approvals/apr_x/deny", {"reason": "no"}, "agent"),
    ("GET", "/v1/approvals", None, "agent"),
    ("GET", "/v1/receipts", None, "agent"),
    ("POST", "/v1/receipts/verify", None, "agent"),
]


def _send(client: Any, method: str, path: str, body: Any) -> Any:
    return client.request(method, path, json=body) if body is not None else client.request(method, path)


def _session(srv: Running, agent: str, identity: dict[str, Any] = ALICE, request: str = "pay the invoices") -> str:
    with srv.client(agent) as c:
        r = c.post("/v1/sessions", json={"identity": identity, "original_request": request})
        assert r.status_code == 201, r.text
        return str(r.json()["session_id"])


def _verify_all(srv: Running, approver: str, session_id: str) -> dict[str, Any]:
    with srv.client(approver) as c:
        lines = c.get("/v1/receipts", params={"session_id": session_id, "format": "jsonl"})
        assert lines.status_code == 200 and lines.headers["content-type"].startswith("application/x-ndjson")
        report = c.post("/v1/receipts/verify", content=lines.content,
                        headers={"Content-Type": "application/x-ndjson"}).json()
    assert report["ok"] is True and report["checked"] >= 1, report
    # and offline, with only the public keys
    bodies = [r.body for r in srv.guard.store.read_receipts(session_id)]
    assert verify_receipts(bodies, srv.guard.keyring.public_keys()).ok
    return dict(report)


def test_health_and_readiness_need_no_token_and_say_little(serve: Any) -> None:
    srv = serve()
    with srv.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready",
                                                             "checks": {"store": "ok", "policy": "ok"}}


@pytest.mark.parametrize(("method", "path", "body"), CHANGING + READS)
def test_missing_token_is_401_on_every_protected_route(serve: Any, method: str, path: str, body: Any) -> None:
    srv = serve()
    with srv.client() as c:
        r = _send(c, method, path, body)
    assert r.status_code == 401, (path, r.text)
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_wrong_role_is_403_and_revoked_or_forged_tokens_are_401(serve: Any) -> None:
    srv = serve()
    for method, path, body, role in WRONG_ROLE:
        with srv.client(srv.token(f"someone-{role}", role)) as c:
            r = _send(c, method, path, body)
        assert r.status_code == 403, (path, role, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    agent = srv.token("agent-1", "agent")
    [tok] = [t for t in srv.guard.store.token_list() if t.name == "agent-1"]
    srv.guard.store.token_revoke(tok.token_id, "2030-01-01T00:00:00Z")
    with srv.client(agent) as c:
        r = c.post("/v1/sessions", json={"identity": ALICE})
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    with srv.client("aat_" + "x" * 43) as c:
        assert c.post("/v1/sessions", json={"identity": ALICE}).status_code == 401
    with srv.client() as c:
        r = c.post("/v1/sessions", json={"identity": ALICE}, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401
    assert list(srv.guard.store.log_sessions()) == []  # nothing was created by any refused call


def test_allow_round_trip_outcome_completes_a_receipt_that_verifies(serve: Any) -> None:
    srv = serve()
    agent, approver = srv.token("billing-agent-svc", "agent"), srv.token("auditor", "approver")
    sid = _session(srv, agent)
    with srv.client(agent) as c:
        r = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "db", "operation": "query",
                                                        "arguments": {"sql": "SELECT 1", "limit": 5}})
        assert r.status_code == 200, r.text
        act = r.json()
        assert act["status"] == "allowed" and act["parameters"] == {"sql": "SELECT 1", "limit": 5}
        assert act["modified"] is False and act["decision"]["result"] == "ALLOW"
        assert r.headers["location"] == f"/v1/actions/{act['action_id']}"
        # the client runs the tool only now, then reports
        done = c.post(f"/v1/actions/{act['action_id']}/outcome", json={"success": True, "output": {"rows": 1}})
        assert done.status_code == 200, done.text
        final = done.json()
        assert final["status"] == "completed" and final["receipt_id"].startswith("rct_")
        again = c.post(f"/v1/actions/{act['action_id']}/outcome", json={"success": True})
        assert again.status_code == 409 and again.json()["error"]["code"] == "not_allowed"
        assert c.get(f"/v1/actions/{act['action_id']}").json()["receipt_id"] == final["receipt_id"]
    receipt = srv.guard.store.get_receipt(final["receipt_id"]).body
    assert receipt["action"]["action_id"] == act["action_id"]
    assert receipt["execution"]["success"] is True and receipt["execution"]["output_hash"]
    assert receipt["action"]["requester_context"]["service"] == "billing-agent-svc"  # the token's principal
    _verify_all(srv, approver, sid)


def test_deny_answers_denied_with_the_receipt_id_and_nothing_to_run(serve: Any) -> None:
    srv = serve()
    agent = srv.token("agent", "agent")
    sid = _session(srv, agent)
    with srv.client(agent) as c:
        r = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "shell.run", "arguments": {"cmd": "id"}})
    assert r.status_code == 200
    act = r.json()
    assert act["status"] == "denied" and "parameters" not in act
    assert act["decision"]["result"] == "DENY" and act["decision"]["rule_id"] == "deny-shell"
    receipt = srv.guard.store.get_receipt(act["receipt_id"]).body
    assert receipt["decision"]["result"] == "DENY" and receipt["execution"] is None


def test_modify_hands_the_client_the_modified_parameters(serve: Any) -> None:
    srv = serve()
    agent = srv.token("agent", "agent")
    sid = _session(srv, agent)
    with srv.client(agent) as c:
        act = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "db.query",
                                                          "arguments": {"sql": "SELECT *", "limit": 500}}).json()
        assert act["status"] == "allowed" and act["decision"]["result"] == "MODIFY"
        assert act["parameters"] == {"sql": "SELECT *", "limit": 10} and act["modified"] is True
        final = c.post(f"/v1/actions/{act['action_id']}/outcome", json={"success": True, "output": []}).json()
    receipt = srv.guard.store.get_receipt(final["receipt_id"]).body
    assert receipt["decision"]["result"] == "MODIFY" and receipt["execution"]["success"] is True


def _payment(srv: Running, agent: str, sid: str) -> dict[str, Any]:
    with srv.client(agent) as c:
        r = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "payment.send",
                                                        "arguments": {"to": "acme", "amount": 5000}})
    assert r.status_code == 202, r.text
    act: dict[str, Any] = r.json()
    assert act["status"] == "pending_approval" and act["approval_id"].startswith("apr_")
    assert act["decision"]["result"] == "STEP_UP" and "parameters" not in act
    return act


def test_step_up_approved_through_the_api_releases_the_waiting_action(serve: Any) -> None:
    srv = serve()
    agent, bob = srv.token("agent", "agent"), srv.token("bob@company.com", "approver")
    sid = _session(srv, agent)
    act = _payment(srv, agent, sid)
    with srv.client(bob) as c:
        listed = c.get("/v1/approvals").json()["approvals"]
        assert [a["id"] for a in listed] == [act["approval_id"]]
        item = c.get(f"/v1/approvals/{act['approval_id']}").json()
        assert item["request"]["original_request"] == "pay the invoices"
        assert item["request"]["parameters"] == {"to": "acme", "amount": 5000}
        r = c.post(f"/v1/approvals/{act['approval_id']}/approve", json={"reason": "invoice 42 checked"})
        assert r.status_code == 200 and r.json()["status"] == "approved"
        assert r.json()["decision"]["approver"] == "bob@company.com" and r.json()["decision"]["channel"] == "api"
        twice = c.post(f"/v1/approvals/{act['approval_id']}/deny", json={"reason": "changed my mind"})
        assert twice.status_code == 409 and twice.json()["error"]["code"] == "not_pending"
    with srv.client(agent) as c:
        now = c.get(f"/v1/actions/{act['action_id']}", params={"wait": 10}).json()
        assert now["status"] == "allowed" and now["parameters"] == {"to": "acme", "amount": 5000}
        final = c.post(f"/v1/actions/{act['action_id']}/outcome", json={"success": True, "output": "paid"}).json()
    receipt = srv.guard.store.get_receipt(final["receipt_id"]).body
    assert receipt["approval"]["approver"] == "bob@company.com" and receipt["approval"]["granted"] is True
    assert receipt["execution"]["success"] is True


def test_step_up_denied_through_the_api_denies_the_action(serve: Any) -> None:
    srv = serve()
    agent, bob = srv.token("agent", "agent"), srv.token("bob@company.com", "approver")
    sid = _session(srv, agent)
    act = _payment(srv, agent, sid)
    with srv.client(bob) as c:
        r = c.post(f"/v1/approvals/{act['approval_id']}/deny", json={"reason": "unknown payee"})
        assert r.status_code == 200 and r.json()["status"] == "denied"
    with srv.client(agent) as c:
        final = c.get(f"/v1/actions/{act['action_id']}", params={"wait": 10}).json()
        assert final["status"] == "denied" and "unknown payee" in final["decision"]["reason"]
        late = c.post(f"/v1/actions/{act['action_id']}/outcome", json={"success": True})
        assert late.status_code == 409
    receipt = srv.guard.store.get_receipt(final["receipt_id"]).body
    assert receipt["approval"]["granted"] is False and receipt["execution"] is None


def test_self_approval_and_non_approvers_are_refused_and_change_nothing(serve: Any) -> None:
    srv = serve()
    agent = srv.token("agent", "agent")
    # alice is in the finance group, but she is the human principal of this action
    alice, mallory = srv.token("alice@company.com", "approver"), srv.token("mallory@company.com", "approver")
    sid = _session(srv, agent)
    act = _payment(srv, agent, sid)
    with srv.client(alice) as c:
        r = c.post(f"/v1/approvals/{act['approval_id']}/approve", json={"reason": "trust me"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "self_approval"
    with srv.client(mallory) as c:
        r = c.post(f"/v1/approvals/{act['approval_id']}/approve", json={"reason": "looks fine"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_an_approver"
    assert srv.guard.approvals.get(act["approval_id"])["status"] == "pending"
    with srv.client(agent) as c:
        assert c.get(f"/v1/actions/{act['action_id']}").json()["status"] == "pending_approval"


def test_context_update_resolves_a_defer_and_the_action_is_allowed(serve: Any) -> None:
    srv = serve()
    agent = srv.token("agent", "agent")
    sid = _session(srv, agent, request="rotate the API key in the window")
    with srv.client(agent) as c:
        r = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "credentials", "operation": "rotate",
                                                        "arguments": {"key": "billing"}})
        assert r.status_code == 202, r.text
        act = r.json()
        assert act["status"] == "deferred" and act["context_needed"] == ["context.maintenance_window"]
        for reserved in ("api_principal", "action_count"):  # the server's principal, a built-in fact
            r = c.post(f"/v1/sessions/{sid}/context", json={"fields": {reserved: "x"}})
            assert r.status_code == 422 and "reserved" in r.json()["error"]["message"]
        upd = c.post(f"/v1/sessions/{sid}/context", json={"fields": {"maintenance_window": "open"}})
        assert upd.status_code == 200, upd.text
        now = c.get(f"/v1/actions/{act['action_id']}", params={"wait": 10}).json()
        assert now["status"] == "allowed", now
        final = c.post(f"/v1/actions/{act['action_id']}/outcome", json={"success": True}).json()
    kinds = [r.body["kind"] for r in srv.guard.store.read_receipts(sid) if r.action_id == act["action_id"]]
    assert kinds == ["deferral", "resolution"] and final["receipt_id"]


def test_deferral_resolved_through_the_api_by_an_approver(serve: Any) -> None:
    srv = serve()
    agent, ops = srv.token("agent", "agent"), srv.token("ops@company.com", "approver")
    sid = _session(srv, agent)
    with srv.client(agent) as c:
        act = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "credentials.rotate",
                                                          "arguments": {"key": "db"}}).json()
    with srv.client(ops) as c:
        assert [d["id"] for d in c.get("/v1/deferrals").json()["deferrals"]] == [act["deferral_id"]]
        bad = c.post(f"/v1/deferrals/{act['deferral_id']}/resolve", json={"fields": {"weather": "sunny"}})
        assert bad.status_code == 409 and bad.json()["error"]["code"] == "bad_field"
        ok = c.post(f"/v1/deferrals/{act['deferral_id']}/resolve",
                    json={"fields": {"maintenance_window": "open"}})
        assert ok.status_code == 200 and ok.json()["supplied"] == {"maintenance_window": "open"}
    with srv.client(agent) as c:
        assert c.get(f"/v1/actions/{act['action_id']}", params={"wait": 10}).json()["status"] == "allowed"


def test_the_outcome_deadline_comes_from_the_configuration(serve: Any) -> None:
    from aarmor.config import ServerConfig

    srv = serve(outcome_timeout=None, server=ServerConfig(outcome_timeout=0.5))  # as `aarmor serve` builds it
    agent = srv.token("agent", "agent")
    sid = _session(srv, agent)
    with srv.client(agent) as c:
        a = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "email.send", "arguments": {"to": "x"}}).json()
        done = wait_for(lambda: c.get(f"/v1/actions/{a['action_id']}").json()["status"] == "outcome_unknown"
                        and c.get(f"/v1/actions/{a['action_id']}").json(), what="outcome_unknown")
    body = srv.guard.store.get_receipt(done["receipt_id"]).body
    assert "within 0.5 s" in body["execution"]["error"] and body["enforcement"]["executed"] == "unknown"


def test_reported_failure_and_missing_outcome_are_recorded(serve: Any) -> None:
    srv = serve(outcome_timeout=0.5)
    agent = srv.token("agent", "agent")
    sid = _session(srv, agent)
    with srv.client(agent) as c:
        a = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "email.send", "arguments": {"to": "x"}}).json()
        failed = c.post(f"/v1/actions/{a['action_id']}/outcome",
                        json={"success": False, "error": "SMTP 550"}).json()
        assert failed["status"] == "completed" and failed["outcome"] == {"success": False, "error": "SMTP 550"}
        b = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "email.send", "arguments": {"to": "y"}}).json()
        silent = wait_for(lambda: c.get(f"/v1/actions/{b['action_id']}").json()["status"] == "outcome_unknown"
                          and c.get(f"/v1/actions/{b['action_id']}").json(), what="outcome_unknown")
        late = c.post(f"/v1/actions/{b['action_id']}/outcome", json={"success": True})
        assert late.status_code == 409
    r1 = srv.guard.store.get_receipt(failed["receipt_id"]).body
    assert r1["execution"]["success"] is False and "SMTP 550" in r1["execution"]["error"]
    r2 = srv.guard.store.get_receipt(silent["receipt_id"]).body
    # neither ran nor failed: unknown, as for an action whose process ended (docs/receipts.md)
    assert r2["execution"]["success"] is None and "OutcomeUnknown" in r2["execution"]["error"]
    assert r2["execution"]["executed"] == "unknown" and r2["enforcement"]["executed"] == "unknown"


def test_another_agent_cannot_use_or_read_a_session_or_action(serve: Any) -> None:
    srv = serve()
    owner, other = srv.token("agent-a", "agent"), srv.token("agent-b", "agent")
    sid = _session(srv, owner)
    with srv.client(owner) as c:
        act = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "db.query", "arguments": {}}).json()
    with srv.client(other) as c:
        for path, body in ((f"/v1/sessions/{sid}/actions", {"tool": "db.query"}),
                           (f"/v1/sessions/{sid}/evaluate", {"tool": "db.query"}),
                           (f"/v1/sessions/{sid}/context", {"fields": {"x": 1}}),
                           (f"/v1/actions/{act['action_id']}/outcome", {"success": True})):
            r = c.post(path, json=body)
            assert r.status_code == 403 and r.json()["error"]["code"] == "not_owner", path
        assert c.get(f"/v1/actions/{act['action_id']}").status_code == 403
    with srv.client(owner) as c:
        c.post(f"/v1/actions/{act['action_id']}/outcome", json={"success": True})


def test_bad_input_is_4xx_with_a_json_error_never_500(serve: Any) -> None:
    srv = serve()
    agent = srv.token("agent", "agent")
    sid = _session(srv, agent)
    with srv.client(agent) as c:
        cases = [
            (c.post("/v1/sessions", content=b"{not json"), 400, "bad_json"),
            (c.post("/v1/sessions", content=b'{"identity": {}, "identity": {}}'), 400, "bad_json"),
            (c.post("/v1/sessions", content=b""), 400, "bad_json"),
            (c.post("/v1/sessions", json={"identity": ALICE, "colour": "red"}), 422, "invalid"),
            (c.post("/v1/sessions", json={"identity": {"roles": "admin"}}), 422, "invalid"),
            (c.post("/v1/sessions", json=[1, 2]), 422, "invalid"),
            (c.post("/v1/sessions", json={"identity": ALICE, "session_id": sid}), 409, "session_exists"),
            (c.post("/v1/sessions/nope/actions", json={"tool": "db.query"}), 404, "not_found"),
            (c.post(f"/v1/sessions/{sid}/actions", json={"tool": "db.query", "wait": 61}), 422, "invalid"),
            (c.get("/v1/actions/act_nope"), 404, "not_found"),
            (c.get("/v1/nothing-here"), 404, "not_found"),
            (c.delete("/v1/sessions"), 405, "method_not_allowed"),
            (c.post("/v1/sessions", content=b"x" * (3 * 1024 * 1024)), 413, "too_large"),
        ]
        for r, status, code in cases:
            assert r.status_code == status, (r.request.url, r.text)
            assert r.json()["error"]["code"] == code, r.text
        # a tool name the pipeline cannot normalise is a recorded DENY, not an HTTP error
        weird = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "db;rm -rf", "arguments": {}}).json()
        assert weird["status"] == "denied" and weird["receipt_id"]
        dry = c.post(f"/v1/sessions/{sid}/evaluate", json={"tool": "shell", "arguments": {"cmd": "id"}})
        assert dry.status_code == 200 and dry.json()["result"] == "DENY"


def test_a_session_resumes_by_id_after_a_restart_with_its_owner(serve: Any) -> None:
    first = serve()
    owner, other = first.token("agent-a", "agent"), first.token("agent-b", "agent")
    sid = _session(first, owner)
    # a restarted server: a new guard on the same store, holding no session in memory
    second = serve()
    with second.client(other) as c:
        r = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "db.query", "arguments": {}})
        assert r.status_code == 403 and r.json()["error"]["code"] == "not_owner"
    with second.client(owner) as c:
        act = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "db.query", "arguments": {"limit": 1}}).json()
        assert act["status"] == "allowed"
        final = c.post(f"/v1/actions/{act['action_id']}/outcome", json={"success": True}).json()
        assert c.post(f"/v1/sessions/{sid}/close").status_code == 200
        ended = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "db.query", "arguments": {}})
        assert ended.status_code == 409 and ended.json()["error"]["code"] == "session_ended"
    receipt = second.guard.store.get_receipt(final["receipt_id"]).body
    assert receipt["action"]["requester_context"]["human"] == "alice@company.com"
    assert receipt["session_id"] == sid
