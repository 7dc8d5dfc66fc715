"""Verified identities over the JSON API on a real server (AARM R6): an agent in another language opens its
session with the human's OIDC/JWT token (identity mode jwt), delegates to a sub-agent through
`POST /v1/sessions/{sid}/delegations`, and the sub-agent's session acts within the delegated scope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.identity.conftest import AUDIENCE, ISSUER, Signer
from tests.server.conftest import Running

POLICY = """
policy: {id: http-identity, version: "1", default: ALLOW}
rules:
  - id: payments-need-the-scope
    match: {tool: payment, identity.effective_scope: {not: {contains: "payments:write"}}}
    action: DENY
    reason: the delegated scope does not include payments:write
"""


@pytest.fixture
def idp(tmp_path: Path) -> tuple[Signer, Path]:
    signer = Signer("ES256", "ec-api")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [signer.jwk]}))
    return signer, jwks


@pytest.fixture
def srv(serve: Any, idp: tuple[Signer, Path]) -> Running:
    return serve(POLICY, identity_mode="jwt",  # type: ignore[no-any-return]
                 identity_jwt={"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(idp[1])})


def _act(c: Any, sid: str, tool: str) -> dict[str, Any]:
    r = c.post(f"/v1/sessions/{sid}/actions", json={"tool": tool, "operation": "send", "arguments": {"x": 1}})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_token_identity_delegates_to_a_sub_agent_over_http(srv: Running, idp: tuple[Signer, Path]) -> None:
    signer = idp[0]
    agent = srv.token("orchestrator-svc", "agent")
    token = signer.token(scope="payments:write email:send", jti="tok-api")
    with srv.client(agent) as c:
        r = c.post("/v1/sessions", json={"identity": {"agent": "orchestrator", "token": token},
                                         "original_request": "Pay the ACME invoice"})
        assert r.status_code == 201, r.text
        orchestrator = r.json()["session_id"]
        assert _act(c, orchestrator, "payment")["status"] == "allowed"
        r = c.post(f"/v1/sessions/{orchestrator}/delegations", json={"to": "mailer", "scope": ["email:send"],
                                                                     "ttl": 120})
        assert r.status_code == 201, r.text
        chain = r.json()["chain"]
        assert r.json()["scope"] == ["email:send"] and r.json()["link_id"].startswith("dlg_")
        wider = c.post(f"/v1/sessions/{orchestrator}/delegations", json={"to": "mailer", "scope": ["admin"]})
        assert wider.status_code == 403 and wider.json()["error"]["code"] == "not_delegable"
        r = c.post("/v1/sessions", json={"identity": {"agent": "mailer", "token": token, "delegation": chain}})
        assert r.status_code == 201, r.text
        sub = r.json()["session_id"]
        assert _act(c, sub, "email")["status"] == "allowed"
        assert _act(c, sub, "payment")["status"] == "denied"
    # the allowed call's receipt comes with its reported outcome; the denied one is written at once
    [denied] = [x.body for x in srv.guard.store.read_receipts(sub)]
    assert denied["decision"]["rule_id"] == "payments-need-the-scope"
    rc = denied["action"]["requester_context"]
    assert (rc["human"], rc["agent"], rc["effective_scope"]) == ("alice@company.com", "mailer", ["email:send"])
    assert rc["token_id"] == "tok-api" and rc["verified_by"] == "jwt"
    # the sub-agent's session carries the human's original request
    start = next(iter(srv.guard.store.read_log(sub)))
    assert start.body["original_request"] == "Pay the ACME invoice"
    # the token and the chain are credentials: not in the store
    raw = Path(srv.guard.config.store.removeprefix("sqlite:///")).read_bytes()
    assert token.rsplit(".", 1)[1].encode() not in raw and chain[0].rsplit(".", 1)[1].encode() not in raw


@pytest.mark.parametrize("case", ["expired", "foreign", "bad_chain", "chain_of_someone_else"])
def test_an_identity_that_cannot_act_is_refused_when_the_session_opens(srv: Running, idp: tuple[Signer, Path],
                                                                        case: str) -> None:
    signer = idp[0]
    agent = srv.token("svc", "agent")
    identity: dict[str, Any] = {"agent": "mailer", "token": signer.token()}
    if case == "expired":
        identity["token"] = signer.token(iat=1_700_000_000, exp=1_700_000_600)
    elif case == "foreign":
        identity["token"] = Signer("ES256", "ec-api").token()
    elif case == "bad_chain":
        identity["delegation"] = ["not.a.token"]
    else:  # a valid chain, but issued for bob: alice's token cannot use it
        with srv.client(agent) as c:
            sid = c.post("/v1/sessions", json={"identity": {"agent": "orchestrator",
                                                            "token": signer.token(sub="bob@company.com")}}).json()
            identity["delegation"] = c.post(f"/v1/sessions/{sid['session_id']}/delegations",
                                            json={"to": "mailer", "scope": ["email:send"]}).json()["chain"]
    with srv.client(agent) as c:
        r = c.post("/v1/sessions", json={"identity": identity})
    expected = {"expired": (403, "identity token expired"), "foreign": (403, "identity token bad signature"),
                "bad_chain": (403, "delegation malformed"),
                "chain_of_someone_else": (403, "principal mismatch")}[case]
    assert (r.status_code, expected[1] in r.json()["error"]["message"]) == (expected[0], True), r.text
