"""Identity revocations over the JSON API on a real server: admin only, round trip, bad input refused with
nothing written, and a revocation that stops an agent's session at its next action."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.conftest import Running

BOT = {"human": "alice@company.com", "agent": "billing-agent"}


def _act(srv: Running, agent: str, sid: str) -> dict[str, Any]:
    with srv.client(agent) as c:
        r = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "db", "operation": "query",
                                                        "arguments": {"sql": "SELECT 1", "limit": 5}})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_revocation_over_http_denies_the_next_action_and_unrevoke_lifts_it(serve: Any) -> None:
    srv = serve()
    admin, agent = srv.token("secops@company.com", "admin"), srv.token("billing-svc", "agent")
    with srv.client(agent) as c:
        sid = c.post("/v1/sessions", json={"identity": BOT}).json()["session_id"]
    assert _act(srv, agent, sid)["status"] == "allowed"
    with srv.client(admin) as c:
        r = c.post("/v1/identity/revocations", json={"kind": "agent", "value": "billing-agent",
                                                     "reason": "prompt-injected", "until": "2099-01-01T00:00:00Z"})
        assert r.status_code == 201, r.text
        rev = r.json()["revocation"]
        assert rev["revoked_by"] == "secops@company.com" and rev["until"] == "2099-01-01T00:00:00.000Z"
        again = c.post("/v1/identity/revocations", json={"kind": "agent", "value": "billing-agent", "reason": "x"})
        assert again.status_code == 200 and again.json() == {"revocation": rev, "created": False}
        listed = c.get("/v1/identity/revocations").json()["revocations"]
        assert listed == [{**rev, "in_force": True}]
    denied = _act(srv, agent, sid)
    assert denied["status"] == "denied"
    assert "identity revoked: agent `billing-agent` (the agent; reason: prompt-injected" in denied["decision"]["reason"]
    with srv.client(admin) as c:
        r = c.delete("/v1/identity/revocations/agent/billing-agent", params={"reason": "cleaned up"})
        assert r.status_code == 200 and r.json()["unrevoked"] == rev
        assert c.delete("/v1/identity/revocations/agent/billing-agent").status_code == 404
        events = c.get("/v1/identity/revocations/history").json()["events"]
    assert [(e["event"], e["actor"], e["reason"]) for e in events] == [
        ("revoke", "secops@company.com", "prompt-injected"), ("unrevoke", "secops@company.com", "cleaned up")]
    assert _act(srv, agent, sid)["status"] == "allowed"


def test_values_with_slashes_round_trip(serve: Any) -> None:
    srv = serve()
    admin = srv.token("secops@company.com", "admin")
    spiffe = "spiffe://company.com/ns/billing/sa/worker"
    with srv.client(admin) as c:
        assert c.post("/v1/identity/revocations", json={"kind": "subject", "value": spiffe,
                                                        "reason": "rotated"}).status_code == 201
        r = c.delete("/v1/identity/revocations/subject/" + spiffe.replace("/", "%2F"))
        assert r.status_code == 200 and r.json()["unrevoked"]["value"] == spiffe


@pytest.mark.parametrize("role", ["agent", "approver"])
def test_only_admins_manage_revocations(serve: Any, role: str) -> None:
    srv = serve()
    with srv.client(srv.token(f"someone-{role}", role)) as c:
        r = c.post("/v1/identity/revocations", json={"kind": "agent", "value": "x", "reason": "r"})
        assert r.status_code == 403
        assert c.get("/v1/identity/revocations").status_code == 403
        assert c.get("/v1/identity/revocations/history").status_code == 403
        assert c.delete("/v1/identity/revocations/agent/x").status_code == 403
    assert srv.guard.store.revocation_list() == []


@pytest.mark.parametrize(("body", "status"), [
    ({"value": "x", "reason": "r"}, 422),                                   # no kind
    ({"kind": "user", "value": "x", "reason": "r"}, 422),                   # unknown kind
    ({"kind": "agent", "value": "", "reason": "r"}, 422),                   # empty value
    ({"kind": "agent", "value": " bot", "reason": "r"}, 422),               # white space at an end
    ({"kind": "agent", "value": "b\nt", "reason": "r"}, 422),               # control character
    ({"kind": "agent", "value": "bot"}, 422),                               # no reason
    ({"kind": "agent", "value": "bot", "reason": "   "}, 422),              # blank reason
    ({"kind": "agent", "value": "bot", "reason": "r", "agent": "x"}, 422),  # two kinds / unknown field
    ({"kind": "agent", "value": "bot", "reason": "r", "until": "soon"}, 422),
    ({"kind": "agent", "value": "bot", "reason": "r", "until": "2001-01-01T00:00:00Z"}, 409),  # already over
])
def test_bad_revocations_are_refused_and_nothing_is_written(serve: Any, body: dict[str, Any], status: int) -> None:
    srv = serve()
    with srv.client(srv.token("secops@company.com", "admin")) as c:
        r = c.post("/v1/identity/revocations", json=body)
        assert r.status_code == status, r.text
        assert r.json()["error"]["message"]
        assert c.get("/v1/identity/revocations", params={"status": "bogus"}).status_code == 422
        assert c.delete("/v1/identity/revocations/user/x").status_code == 422
    assert srv.guard.store.revocation_list() == [] and srv.guard.store.revocation_history() == []
