"""AARM R6: identity captured at submission, bound into every receipt; unverifiable identity is denied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from tests.conformance.conftest import POLICY, Tool, receipts


def test_receipts_attribute_each_principal_and_session(guard: Any) -> None:
    people = [Identity(human="alice@company.com", roles=["analyst"], scopes=["db:read"]),
              Identity(service="billing-svc", agent="billing-bot", roles=["service"], scopes=["payments:write"])]
    sessions = []
    for who in people:
        with guard.session(identity=who) as s:
            s.invoke("calendar.read", {"day": "monday"}, Tool())
        sessions.append(s.session_id)
    assert sessions[0] != sessions[1]
    for who, sid in zip(people, sessions, strict=True):
        [r] = receipts(guard, sid)
        rc = r["action"]["requester_context"]
        assert (rc["human"], rc["service"], rc["session"]) == (who.human, who.service, sid)
        assert rc["roles"] == list(who.roles) and rc["scope"] == list(who.scopes)


def test_action_without_human_or_service_identity_is_denied(guard: Any) -> None:
    tool = Tool()
    with guard.session(identity=Identity(agent="anonymous-agent")) as s:
        with pytest.raises(ActionDenied) as info:
            s.invoke("calendar.read", {"day": "monday"}, tool)
    assert tool.calls == []
    assert "identity" in info.value.decision.reason
    [r] = receipts(guard, s.session_id)
    assert r["error"]["class"] == "IdentityError"


def test_flag_mode_records_and_allows(make_guard: Any) -> None:
    guard = make_guard(policy=str(POLICY), identity_mode="flag")
    tool = Tool()
    with guard.session(identity=Identity(agent="anonymous-agent")) as s:
        s.invoke("calendar.read", {"day": "monday"}, tool)
    assert len(tool.calls) == 1
    [r] = receipts(guard, s.session_id)
    assert "no human principal or service identity" in r["enforcement"]["identity_flag"]


def test_defer_then_resolve_keeps_original_identity(guard: Any, alice: Any) -> None:
    with guard.session(identity=alice) as s:
        s.set_context("environment_state_conflict", True, source="monitor")
        with pytest.raises(ActionDenied):
            s.invoke("credentials.rotate", {"target": "prod"}, Tool())
    deferral, resolution = receipts(guard, s.session_id)
    assert resolution["action"]["requester_context"] == deferral["action"]["requester_context"]
    assert resolution["action"]["requester_context"]["human"] == "alice@company.com"


# --- the same rows with verified identities: real OIDC/JWT tokens against a JWKS (identity mode jwt) ------

@pytest.fixture
def idp(tmp_path: Path) -> Any:
    """An identity provider: an Ed25519 and an RSA key, their JWKS file, and tokens signed with PyJWT."""
    from tests.identity.conftest import Signer

    signers = {"ed": Signer("EdDSA", "ed-1"), "rsa": Signer("RS256", "rsa-1")}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [s.jwk for s in signers.values()]}))
    return signers, jwks


@pytest.fixture
def jwt_guard(make_guard: Any, idp: Any) -> Any:
    from tests.identity.conftest import AUDIENCE, ISSUER

    return make_guard(policy=str(POLICY), identity_mode="jwt",
                      identity_jwt={"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(idp[1])})


def test_verified_principals_and_sessions_are_attributed_from_their_tokens(jwt_guard: Any, idp: Any) -> None:
    signers = idp[0]
    tokens = [signers["ed"].token(sub="alice@company.com", roles=["analyst"], scope="db:read", jti="t-alice"),
              signers["rsa"].token(sub="bob@company.com", roles=["ops"], scope="payments:write", jti="t-bob")]
    sessions = []
    for token in tokens:
        with jwt_guard.session(identity=Identity(agent="assistant", token=token)) as s:
            s.invoke("calendar.read", {"day": "monday"}, Tool())
        sessions.append(s.session_id)
    got = [receipts(jwt_guard, sid)[0]["action"]["requester_context"] for sid in sessions]
    assert [(rc["human"], rc["roles"], rc["scope"], rc["token_id"], rc["verified_by"]) for rc in got] == [
        ("alice@company.com", ["analyst"], ["db:read"], "t-alice", "jwt"),
        ("bob@company.com", ["ops"], ["payments:write"], "t-bob", "jwt")]
    assert [rc["session"] for rc in got] == sessions and sessions[0] != sessions[1]


@pytest.mark.parametrize("case", ["other_key", "expired", "wrong_audience", "wrong_issuer", "alg_none",
                                  "claimed_human_differs"])
def test_unverifiable_tokens_are_denied(jwt_guard: Any, idp: Any, case: str) -> None:
    from tests.identity.conftest import Signer, unsigned_token

    ed = idp[0]["ed"]
    identity = {
        "other_key": Identity(token=Signer("EdDSA", "ed-1").token()),
        "expired": Identity(token=ed.token(iat=1_700_000_000, exp=1_700_000_600)),
        "wrong_audience": Identity(token=ed.token(aud="someone-else")),
        "wrong_issuer": Identity(token=ed.token(iss="https://evil.example/")),
        "alg_none": Identity(token=unsigned_token({"alg": "none", "kid": "ed-1"}, {"sub": "alice@company.com",
                                                                                   "exp": 4_000_000_000})),
        "claimed_human_differs": Identity(human="root@company.com", token=ed.token()),
    }[case]
    tool = Tool()
    with jwt_guard.session(identity=identity) as s:
        with pytest.raises(ActionDenied):
            s.invoke("calendar.read", {"day": "monday"}, tool)
    assert tool.calls == []
    [r] = receipts(jwt_guard, s.session_id)
    assert r["error"]["class"] == "TokenError" and "TokenError: identity token " in r["enforcement"]["reason"]


def test_defer_then_resolve_keeps_the_verified_identity(jwt_guard: Any, idp: Any) -> None:
    token = idp[0]["ed"].token(roles=["ops"], scope="credentials:rotate", jti="t-1")
    with jwt_guard.session(identity=Identity(agent="ops-bot", token=token)) as s:
        s.set_context("environment_state_conflict", True, source="monitor")
        with pytest.raises(ActionDenied):
            s.invoke("credentials.rotate", {"target": "prod"}, Tool())
    deferral, resolution = receipts(jwt_guard, s.session_id)
    assert resolution["action"]["requester_context"] == deferral["action"]["requester_context"]
    rc = resolution["action"]["requester_context"]
    assert (rc["human"], rc["verified_by"], rc["token_id"]) == ("alice@company.com", "jwt", "t-1")


def test_a_sub_agent_acts_for_the_human_within_the_delegated_scope(jwt_guard: Any, idp: Any) -> None:
    from aarmor.identity.delegation import links_from_tokens

    token = idp[0]["ed"].token(scope="db:read email:send")
    with jwt_guard.session(identity=Identity(agent="orchestrator", token=token), original_request="summarise Q3") as s:
        chain = s.delegate("researcher", ["db:read"])
    sub = Identity(agent="researcher", token=token, delegation=links_from_tokens(chain))
    with jwt_guard.session(identity=sub) as s:
        s.invoke("calendar.read", {"day": "monday"}, Tool())
    [r] = receipts(jwt_guard, s.session_id)
    rc = r["action"]["requester_context"]
    assert (rc["human"], rc["agent"], rc["effective_scope"]) == ("alice@company.com", "researcher", ["db:read"])
    assert rc["delegation_chain"][0]["signer"] == jwt_guard.keyring.current_key_id
