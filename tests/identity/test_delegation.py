"""Signed delegation chains (AARM R6, threat 9): minted through a mediated session, verified link by link at
every decision, never widening, never outliving their expiry, carried through waits. Real Ed25519 keys."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.config import ApprovalsConfig, DelegationConfig
from aarmor.errors import InputError
from aarmor.identity.delegation import DelegationError, links_from_tokens
from aarmor.receipts import Keyring
from tests.identity.conftest import Signer

ALICE = Identity(human="alice@company.com", agent="orchestrator", scopes=["db:read", "email:send", "payments:write"])
REQUEST = "Find last quarter's invoices and email Bob a summary"
POLICY = """
policy: {id: delegation-tests, version: "1", default: ALLOW}
rules:
  - id: payments-need-the-scope
    match: {tool: payments, identity.effective_scope: {not: {contains: "payments:write"}}}
    action: DENY
    reason: the delegated scope does not include payments:write
  - id: admin-scope-on-routine-mail
    match: {tool: email, identity.effective_scope: {contains: "admin"}}
    action: STEP_UP
    approvers: [ops]
    timeout: 30
    reason: an admin-scoped identity used for routine mail
  - id: big-payments
    match: {tool: payments, parameters: {amount: {gt: 10000}}}
    action: STEP_UP
    approvers: [ops]
    timeout: 600
    reason: large payments need an approver
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Tool:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, arguments: dict[str, Any]) -> str:
        self.calls.append(arguments)
        return "ok"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(make_guard: Callable[..., Any], clock: Clock) -> Any:
    return make_guard(POLICY, clock=clock, approvals=ApprovalsConfig(groups=(("ops", ("carol@company.com",)),),
                                                                     poll_interval=0.02))


def delegate(guard: Any, to: str = "researcher", scope: tuple[str, ...] = ("db:read",), ttl: float = 300,
             identity: Identity = ALICE) -> tuple[str, ...]:
    with guard.session(identity=identity, original_request=REQUEST) as s:
        return s.delegate(to, list(scope), ttl=ttl)  # type: ignore[no-any-return]


def act(guard: Any, identity: Identity, tool: str = "db.query", args: dict[str, Any] | None = None,
        **session: Any) -> tuple[Tool, dict[str, Any], ActionDenied | None]:
    t, denied = Tool(), None
    with guard.session(identity=identity, **session) as s:
        try:
            s.invoke(tool, args or {"q": "select 1"}, t, operation="read")
        except ActionDenied as exc:
            denied = exc
    return t, [r.body for r in guard.store.read_receipts(s.session_id)][-1], denied


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


def resign(guard: Any, token: str, **changes: Any) -> str:
    """A link re-issued with changed claims and signed with the Guard's own key: what only a bug in minting
    (or a stolen key) could produce; the verifier must refuse it on its own terms."""
    return guard.delegation._encode({**claims(token), **changes})  # type: ignore[no-any-return]


def test_sub_agent_acts_with_the_humans_principal_request_and_narrowed_scope(guard: Any) -> None:
    chain = delegate(guard)
    assert len(chain) == 1
    sub = Identity(agent="researcher", delegation=links_from_tokens(chain))
    with guard.session(identity=sub) as s:
        tool = Tool()
        s.invoke("db.query", {"q": "select 1"}, tool, operation="read")
        assert s._state.ctx.original_request == REQUEST  # carried by the chain, not claimed
        with pytest.raises(ActionDenied) as info:
            s.invoke("payments", {"to": "ACME", "amount": 5}, tool, operation="send")
    assert tool.calls == [{"q": "select 1"}]
    assert info.value.decision.rule_id == "payments-need-the-scope"
    [first, second] = [r.body for r in guard.store.read_receipts(s.session_id)]
    rc = first["action"]["requester_context"]
    assert rc["human"] == "alice@company.com" and rc["agent"] == "researcher"
    assert rc["effective_scope"] == ["db:read"]
    [link] = rc["delegation_chain"]
    assert (link["delegator"], link["delegatee"], link["scope"]) == ("orchestrator", "researcher", ["db:read"])
    assert link["link_id"].startswith("dlg_") and link["signer"] == guard.keyring.current_key_id
    # the link token is a bearer credential: in no receipt and nowhere in the store
    assert chain[0].rsplit(".", 1)[1] not in json.dumps(first)
    for f in Path(guard.config.store.removeprefix("sqlite:///")).parent.glob("aarmor.db*"):
        assert chain[0].rsplit(".", 1)[1].encode() not in f.read_bytes()
    assert second["enforcement"]["result"] == "DENY"


def test_the_delegation_is_recorded_in_the_delegators_log(guard: Any) -> None:
    with guard.session(identity=ALICE, original_request=REQUEST) as s:
        chain = s.delegate("researcher", ["db:read"], ttl=120)
    entries = [r for r in guard.store.read_log(s.session_id) if r.kind == "delegation"]
    [entry] = entries
    assert entry.body["delegatee"] == "researcher" and entry.body["scope"] == ["db:read"]
    assert entry.body["link_id"] == claims(chain[0])["jti"]
    assert chain[0] not in json.dumps(entry.body)


def test_a_sub_agent_delegates_further_only_within_what_it_holds(guard: Any) -> None:
    chain = delegate(guard, scope=("db:read", "email:send"))
    sub = Identity(agent="researcher", delegation=links_from_tokens(chain))
    with guard.session(identity=sub) as s:
        with pytest.raises(DelegationError, match=r"not delegable: scope \['payments:write'\] is not held"):
            s.delegate("helper", ["payments:write"])
        chain2 = s.delegate("helper", ["email:send"])
    assert len(chain2) == 2 and chain2[0] == chain[0]
    helper = Identity(agent="helper", delegation=links_from_tokens(chain2))
    _, r, denied = act(guard, helper, "email", {"to": "bob@company.com"})
    assert denied is None
    rc = r["action"]["requester_context"]
    assert rc["human"] == "alice@company.com" and rc["effective_scope"] == ["email:send"]
    assert [link["delegatee"] for link in rc["delegation_chain"]] == ["researcher", "helper"]


def test_minting_refuses_what_may_not_be_delegated(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(POLICY, identity_delegation=DelegationConfig(max_ttl=600, max_depth=2))
    with guard.session(identity=ALICE) as s:
        with pytest.raises(DelegationError, match="non-empty list"):
            s.delegate("researcher", [])
        with pytest.raises(DelegationError, match="outside"):
            s.delegate("researcher", ["db:read"], ttl=601)
        with pytest.raises(DelegationError, match="non-empty agent name"):
            s.delegate(" ", ["db:read"])
        with pytest.raises(DelegationError, match=r"not held by the delegator"):
            s.delegate("researcher", ["admin"])
        chain = s.delegate("researcher", ["db:read"])
    with guard.session(identity=Identity(agent="researcher", delegation=links_from_tokens(chain))) as s:
        chain = s.delegate("helper", ["db:read"])
    with guard.session(identity=Identity(agent="helper", delegation=links_from_tokens(chain))) as s:
        with pytest.raises(DelegationError, match="already 2 links deep"):
            s.delegate("third", ["db:read"])


def test_a_widening_link_is_denied(guard: Any) -> None:
    chain = delegate(guard, scope=("db:read",))
    with guard.session(identity=Identity(agent="researcher", delegation=links_from_tokens(chain))) as s:
        chain2 = s.delegate("helper", ["db:read"])
    wide = resign(guard, chain2[1], scope=["db:read", "payments:write"])
    tool, r, denied = act(guard, Identity(agent="helper", delegation=links_from_tokens((chain2[0], wide))),
                          "payments", {"to": "ACME", "amount": 5})
    assert tool.calls == [] and denied is not None
    assert "delegation widening" in r["enforcement"]["reason"] and "payments:write" in r["enforcement"]["reason"]
    assert r["error"]["class"] == "DelegationError"


@pytest.mark.parametrize("case", ["tampered", "other_key", "same_kid_other_key", "cut", "reordered", "spliced"])
def test_a_chain_that_does_not_verify_is_denied(guard: Any, tmp_path: Path, case: str) -> None:
    chain = delegate(guard, scope=("db:read", "email:send"))
    with guard.session(identity=Identity(agent="researcher", delegation=links_from_tokens(chain))) as s:
        chain2 = s.delegate("helper", ["db:read"])
    head, body, sig = chain2[1].split(".")
    if case == "tampered":  # scope widened in the payload, signature kept
        wider = {**claims(chain2[1]), "scope": ["db:read", "email:send"]}
        forged = (chain2[0], f"{head}.{b64(json.dumps(wider).encode())}.{sig}")
        expect = "delegation bad signature"
    elif case == "other_key":  # signed by another aarmor installation's key
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = Keyring.open(tmp_path / "other-keys")
        from aarmor.identity.delegation import DelegationAuthority

        forged = (chain2[0], DelegationAuthority(other)._encode(claims(chain2[1])))
        expect = "delegation unknown key"
    elif case == "same_kid_other_key":  # another key that claims our key id
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        signing_input = f"{head}.{body}".encode()
        forged = (chain2[0], f"{head}.{body}.{b64(key.sign(signing_input))}")
        expect = "delegation bad signature"
    elif case == "cut":  # the second link alone: it names a previous link
        forged = (chain2[1],)
        expect = "delegation broken chain"
    elif case == "reordered":
        forged = (chain2[1], chain2[0])
        expect = "delegation broken chain"
    else:  # a link from another chain (same delegator and delegatee) in place of the real first link
        other_chain = delegate(guard, scope=("db:read", "email:send"))
        forged = (other_chain[0], chain2[1])
        expect = "delegation broken chain"
    tool, r, denied = act(guard, Identity(agent="helper", delegation=links_from_tokens(forged)))
    assert tool.calls == [] and denied is not None
    assert expect in r["enforcement"]["reason"], r["enforcement"]["reason"]


def test_malformed_link_tokens_are_refused_at_session_start(guard: Any) -> None:
    chain = delegate(guard)
    head, body, sig = chain[0].split(".")
    none_header = b64(json.dumps({"alg": "none", "typ": "aarmor-delegation+jwt", "kid": "x"}).encode())
    for bad in ("not-a-token", f"{none_header}.{body}.", f"{head}.{b64(b'[1]')}.{sig}", "a.b.c" * 5000):
        with pytest.raises(DelegationError, match="delegation malformed"):
            links_from_tokens([bad])
    with pytest.raises(InputError, match="delegation malformed"):
        # a link read by hand (typ not checked by the caller) still cannot open a session
        from aarmor.model import DelegationLink

        guard.session(identity=Identity(agent="researcher", delegation=[
            DelegationLink("orchestrator", "researcher", ("db:read",), token="x.y.z")]))


def test_a_delegation_used_past_its_expiry_is_denied(guard: Any, clock: Clock) -> None:
    chain = delegate(guard, ttl=60)
    sub = Identity(agent="researcher", delegation=links_from_tokens(chain))
    tool, _, denied = act(guard, sub)
    assert denied is None and len(tool.calls) == 1
    clock.now += timedelta(seconds=60 + 31)  # past exp + the 30 s leeway
    tool, r, denied = act(guard, sub)
    assert tool.calls == [] and denied is not None
    assert "delegation expired" in r["enforcement"]["reason"]


def test_a_link_never_outlives_its_parent(guard: Any) -> None:
    chain = delegate(guard, ttl=60)
    with guard.session(identity=Identity(agent="researcher", delegation=links_from_tokens(chain))) as s:
        chain2 = s.delegate("helper", ["db:read"], ttl=3000)
    assert claims(chain2[1])["exp"] == claims(chain[0])["exp"]


def test_the_acting_agent_and_principal_must_be_the_chains(guard: Any) -> None:
    links = links_from_tokens(delegate(guard))
    tool, r, _ = act(guard, Identity(agent="someone-else", delegation=links))
    assert tool.calls == [] and "delegation agent mismatch" in r["enforcement"]["reason"]
    tool, r, _ = act(guard, Identity(human="mallory@evil.test", agent="researcher", delegation=links))
    assert tool.calls == [] and "delegation principal mismatch" in r["enforcement"]["reason"]
    with pytest.raises(InputError, match="original request differs"):
        guard.session(identity=Identity(agent="researcher", delegation=links), original_request="Pay Mallory")


def test_claimed_links_are_still_checked_for_widening_and_expiry(guard: Any, clock: Clock) -> None:
    from aarmor.model import DelegationLink

    t0 = clock.now
    wide = [DelegationLink("orchestrator", "a", ("db:read",)), DelegationLink("a", "b", ("db:read", "admin"))]
    tool, r, _ = act(guard, Identity(human="alice@company.com", agent="b", delegation=wide))
    assert tool.calls == [] and "delegation widening" in r["enforcement"]["reason"]
    gap = [DelegationLink("orchestrator", "a", ("db:read",)), DelegationLink("x", "b", ("db:read",))]
    _, r, _ = act(guard, Identity(human="alice@company.com", agent="b", delegation=gap))
    assert "delegation broken chain" in r["enforcement"]["reason"]
    old = [DelegationLink("orchestrator", "b", ("db:read",), t0 - timedelta(hours=2), t0 - timedelta(hours=1))]
    _, r, _ = act(guard, Identity(human="alice@company.com", agent="b", delegation=old))
    assert "delegation expired" in r["enforcement"]["reason"]
    # a well-formed claimed link is accepted as a claim (identity mode enforce)
    ok = [DelegationLink("orchestrator", "b", ("db:read",))]
    tool, r, denied = act(guard, Identity(human="alice@company.com", agent="b", delegation=ok))
    assert denied is None and r["action"]["requester_context"]["delegation_chain"][0]["signer"] is None


def _approve_when_pending(guard: Any, before: Callable[[], None] = lambda: None) -> threading.Thread:
    def approve() -> None:
        deadline = time.monotonic() + 10
        while not guard.approvals.list() and time.monotonic() < deadline:
            time.sleep(0.01)
        [item] = guard.approvals.list()
        before()
        guard.approvals.decide(item["id"], approver="carol@company.com", granted=True, reason="ok", channel="test")

    t = threading.Thread(target=approve)
    t.start()
    return t


def test_delegation_expiring_while_an_approval_is_pending_denies(guard: Any, clock: Clock) -> None:
    chain = delegate(guard, to="payer", scope=("payments:write",), ttl=60)
    sub = Identity(agent="payer", delegation=links_from_tokens(chain))

    def later() -> None:
        clock.now += timedelta(seconds=120)

    t = _approve_when_pending(guard, later)
    tool, r, denied = act(guard, sub, "payments", {"to": "ACME", "amount": 25_000})
    t.join()
    assert tool.calls == [] and denied is not None
    assert r["approval"]["granted"] is True and r["approval"]["identity_verified"] is False
    assert "delegation expired" in r["enforcement"]["reason"]
    # the identity captured at submission is the one in the receipt: the human behind the sub-agent
    assert r["action"]["requester_context"]["human"] == "alice@company.com"


def test_identity_and_chain_kept_through_a_deferral(make_guard: Callable[..., Any], clock: Clock) -> None:
    policy = POLICY + """
  - id: need-ticket
    match: {tool: deploy, context.ticket: {exists: false}}
    action: DEFER
    context_needed: [ticket]
    timeout: 600
    reason: a deploy needs its change ticket
"""
    guard = make_guard(policy, clock=clock)
    chain = delegate(guard, scope=("db:read",), ttl=60)
    sub = Identity(agent="researcher", delegation=links_from_tokens(chain))
    results: list[Any] = []
    with guard.session(identity=sub) as s:
        def resolve() -> None:
            deadline = time.monotonic() + 10
            while not guard.deferrals.list() and time.monotonic() < deadline:
                time.sleep(0.01)
            clock.now += timedelta(seconds=120)  # the delegation ends while the deferral waits
            s.update_context(ticket="CHG-1")

        t = threading.Thread(target=resolve)
        t.start()
        try:
            s.invoke("deploy", {"service": "api"}, lambda a: results.append(a), operation="write")
        except ActionDenied as exc:
            denied = exc
        t.join()
    assert results == [] and "delegation expired" in denied.decision.reason
    bodies = [r.body for r in guard.store.read_receipts(s.session_id)]
    assert [b["kind"] for b in bodies] == ["deferral", "resolution"]
    for b in bodies:  # the original identity, chain included, in both receipts (AARM R6)
        rc = b["action"]["requester_context"]
        assert rc["human"] == "alice@company.com" and rc["delegation_chain"][0]["delegatee"] == "researcher"


# --- identity mode jwt: the sub-agent's token and the chain together -----------------------------------

@pytest.fixture
def jwt_guard(open_guard: Any, jwks_file: Path) -> Any:
    return open_guard(jwks_file=str(jwks_file))


def test_jwt_mode_refuses_unsigned_links(jwt_guard: Any, signers: dict[str, Signer]) -> None:
    from aarmor.model import DelegationLink

    claimed = [DelegationLink("orchestrator", "researcher", ("db:read",))]
    tool, r, _ = act(jwt_guard, Identity(agent="researcher", token=signers["EdDSA"].token(),
                                              delegation=claimed))
    assert tool.calls == [] and "delegation unsigned" in r["enforcement"]["reason"]


def test_jwt_mode_chain_and_token_must_name_the_same_principal(jwt_guard: Any, signers: dict[str, Signer]) -> None:
    orchestrator = Identity(agent="orchestrator", token=signers["RS256"].token())  # alice, db:read email:send
    with jwt_guard.session(identity=orchestrator, original_request=REQUEST) as s:
        with pytest.raises(DelegationError, match="not held"):
            s.delegate("researcher", ["payments:write"])  # alice's token does not hold it
        chain = s.delegate("researcher", ["db:read"])
    links = links_from_tokens(chain)
    tool, r, denied = act(jwt_guard, Identity(agent="researcher", token=signers["ES256"].token(), delegation=links))
    assert denied is None and r["action"]["requester_context"]["verified_by"] == "jwt"
    assert r["action"]["requester_context"]["effective_scope"] == ["db:read"]
    bob = signers["ES256"].token(sub="bob@company.com")
    tool, r, denied = act(jwt_guard, Identity(agent="researcher", token=bob, delegation=links))
    assert tool.calls == [] and "principal mismatch" in r["enforcement"]["reason"]


def test_policy_steps_up_when_an_admin_scope_is_used_for_routine_mail(open_guard: Any, jwks_file: Path,
                                                                      signers: dict[str, Signer]) -> None:
    """AARM 2.9: policies may check `identity.effective_scope`, e.g. STEP_UP for an admin token on routine mail."""
    guard = open_guard(POLICY, jwks_file=str(jwks_file))
    decisions = []
    for scope in ("email:send admin", "email:send"):
        with guard.session(identity=Identity(agent="mailer", token=signers["EdDSA"].token(scope=scope))) as s:
            decisions.append(s.evaluate("email", {"to": "bob@company.com"}, operation="send"))
    assert [(d.result.value, d.rule_id) for d in decisions] == [("STEP_UP", "admin-scope-on-routine-mail"),
                                                                 ("ALLOW", None)]
