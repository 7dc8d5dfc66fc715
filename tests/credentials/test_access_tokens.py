"""Access tokens: an EdDSA JWT per action, audience = the tool, scope from the operation, bound to the
arguments that run; `verify_access_token` is what a tool server runs (AARM R9)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.credentials import Credential, CredentialError, current_credential, verify_access_token
from aarmor.errors import ConfigError
from aarmor.receipts import Keyring, parameters_digest
from tests.credentials.conftest import POLICY

ALICE = Identity(human="alice@company.com", agent="pay-agent", roles=["analyst"])
AUDIENCE = "https://payments.internal"


@pytest.fixture
def guard(make_guard: Callable[..., Any]) -> Any:
    return make_guard(POLICY, credentials={"ttl": 60, "tools": {
        "payments": {"kind": "access_token", "audience": AUDIENCE, "bind_arguments": True},
        "ledger": {"kind": "access_token", "scopes": {"read": ["ledger:read"]}, "bind_arguments": False}}})


class Capture:
    """A tool that keeps the credential it was handed and the arguments it ran with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Credential, dict[str, Any]]] = []

    def __call__(self, args: dict[str, Any]) -> str:
        self.calls.append((current_credential(), args))
        return "done"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _part(token: str, i: int) -> dict[str, Any]:
    raw = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))


def test_a_token_per_action_scoped_to_the_operation_and_bound_to_the_arguments(guard: Any) -> None:
    tool = Capture()
    with guard.session(identity=ALICE) as s:
        s.invoke("payments", {"invoice": "INV-7", "limit": 5}, tool, operation="read")
        s.invoke("payments", {"invoice": "INV-8", "amount": 120}, tool, operation="write")
    (read, read_args), (write, write_args) = tool.calls
    assert read.credential_id != write.credential_id and read.token != write.token
    jwks = guard.credentials.export_public("jwks")
    claims = verify_access_token(read.token, keys=jwks, audience=AUDIENCE, scope="read", parameters=read_args)
    assert claims.subject == "alice@company.com" and claims.actor == "pay-agent"
    assert claims.scope == ("read",) and claims.credential_id == read.credential_id
    assert claims.expires_at - claims.issued_at == timedelta(seconds=60)
    assert claims.args_digest == parameters_digest({"invoice": "INV-7", "limit": 5})
    assert _part(read.token, 0) == {"alg": "EdDSA", "kid": guard.credentials.keyring.current_key_id, "typ": "at+jwt"}
    # the write token carries the write scope, not the read one
    with pytest.raises(CredentialError) as info:
        verify_access_token(write.token, keys=jwks, audience=AUDIENCE, scope="read", parameters=write_args)
    assert info.value.code == "scope_missing"
    assert verify_access_token(write.token, keys=jwks, audience=AUDIENCE, scope="write").scope == ("write",)
    # the receipts reference the credentials, and neither they nor the log hold a token
    receipts = [r.body for r in guard.store.read_receipts(s.session_id)]
    for r, cred in zip(receipts, (read, write), strict=True):
        block = r["execution"]["credential"]
        assert block["credential_id"] == cred.credential_id and block["audience"] == AUDIENCE
        assert block["scope"] == list(cred.scope) and block["bound_arguments_digest"] == cred.bound_arguments_digest
        assert r["action"]["action_id"] == _part(cred.token, 1)["action_id"]
        assert cred.token not in json.dumps(r) and cred.token not in repr(cred)
    events = guard.store.credential_events(session_id=s.session_id)
    assert [(e.credential_id, e.event) for e in events] == [
        (read.credential_id, "issued"), (read.credential_id, "released"),
        (write.credential_id, "issued"), (write.credential_id, "released")]
    assert all(read.token not in repr(e) for e in events)


def test_the_token_is_bound_to_the_modified_arguments_that_run(guard: Any) -> None:
    tool = Capture()
    with guard.session(identity=ALICE) as s:
        s.invoke("payments", {"invoice": "INV-9", "limit": 5000}, tool, operation="read")
    [(cred, ran_with)] = tool.calls
    assert ran_with == {"invoice": "INV-9", "limit": 100}  # MODIFY capped it
    jwks = guard.credentials.export_public("jwks")
    assert verify_access_token(cred.token, keys=jwks, audience=AUDIENCE, parameters=ran_with).args_digest == \
        parameters_digest(ran_with)
    with pytest.raises(CredentialError) as info:  # the agent's original arguments are not what was approved
        verify_access_token(cred.token, keys=jwks, audience=AUDIENCE, parameters={"invoice": "INV-9", "limit": 5000})
    assert info.value.code == "arguments_mismatch"
    [r] = [x.body for x in guard.store.read_receipts(s.session_id)]
    assert r["execution"]["credential"]["bound_arguments_digest"] == r["modification"]["modified_parameters_digest"]


def test_the_verifier_refuses_every_kind_of_bad_token(guard: Any, tmp_path: Path) -> None:
    tool = Capture()
    with guard.session(identity=ALICE) as s:
        s.invoke("payments", {"invoice": "INV-1"}, tool, operation="read")
    [(cred, args)] = tool.calls
    token, jwks = cred.token, guard.credentials.export_public("jwks")

    def code(tok: str, **kw: Any) -> str:
        kw.setdefault("keys", jwks)
        kw.setdefault("audience", AUDIENCE)
        with pytest.raises(CredentialError) as info:
            verify_access_token(tok, **kw)
        assert tok not in str(info.value)
        return info.value.code

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = Keyring.open(tmp_path / "other-keys")
    assert code(token, keys=other.export_public("jwks")) == "unknown_key"
    assert code(token, keys=other.public_keys()) == "unknown_key"
    assert code(token, audience="https://other.internal") == "audience_mismatch"
    assert code(token, issuer="someone-else") == "issuer_mismatch"
    assert code(token, now=cred.expires_at) == "expired"
    assert code(token, now=cred.issued_at - timedelta(seconds=30)) == "not_yet_valid"
    assert code(token, parameters={**args, "invoice": "INV-2"}) == "arguments_mismatch"
    h, p, sig = token.split(".")
    tampered = _b64(json.dumps({**_part(token, 1), "scope": "read write"}).encode())
    assert code(f"{h}.{tampered}.{sig}") == "bad_signature"
    flipped = sig[:10] + ("B" if sig[10] != "B" else "C") + sig[11:]  # always a different signature
    assert code(f"{h}.{p}.{flipped}") == "bad_signature"
    # algorithm confusion: HS256 "signed" with the public key as the HMAC secret, and `none`
    x = base64.urlsafe_b64decode(json.loads(jwks)["keys"][0]["x"] + "==")
    hs_header = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": _part(token, 0)["kid"]}).encode())
    hs_sig = _b64(hmac.new(x, f"{hs_header}.{p}".encode(), hashlib.sha256).digest())
    assert code(f"{hs_header}.{p}.{hs_sig}") == "algorithm_not_allowed"
    none_header = _b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    assert code(f"{none_header}.{p}.") == "algorithm_not_allowed"
    id_header = _b64(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": _part(token, 0)["kid"]}).encode())
    assert code(f"{id_header}.{p}.{sig}") == "wrong_type"
    assert code("not-a-token") == "malformed"
    assert code(token + ".x") == "malformed"


def test_a_standard_jwt_library_verifies_the_tokens(guard: Any) -> None:
    import jwt
    tool = Capture()
    with guard.session(identity=ALICE) as s:
        s.invoke("payments", {"invoice": "INV-3"}, tool, operation="read")
    [(cred, _)] = tool.calls
    key = jwt.PyJWK(json.loads(guard.credentials.export_public("jwks"))["keys"][0]).key
    claims = jwt.decode(cred.token, key, algorithms=["EdDSA"], audience=AUDIENCE, issuer="aarmor")
    assert claims["jti"] == cred.credential_id and claims["scope"] == "read"


def test_an_operation_without_a_scope_gets_no_credential_and_is_denied(guard: Any) -> None:
    tool = Capture()
    with guard.session(identity=ALICE) as s:
        assert s.invoke("ledger", {}, tool, operation="read") == "done"
        with pytest.raises(ActionDenied) as denied:
            s.invoke("ledger", {}, tool, operation="write")
        with pytest.raises(ActionDenied) as unnamed:  # no operation at all: no scope can be derived
            s.invoke("payments", {}, tool)
    assert len(tool.calls) == 1 and tool.calls[0][0].scope == ("ledger:read",)
    assert tool.calls[0][0].bound_arguments_digest is None  # bind_arguments: false
    assert "no credential for operation `write` of `ledger`" in denied.value.decision.reason
    assert "`payments` was called with no operation" in unnamed.value.decision.reason
    r = [x.body for x in guard.store.read_receipts(s.session_id)][1]
    assert r["enforcement"]["executed"] is False and r["error"]["class"] == "CredentialError"


def test_an_async_tool_sees_its_credential_and_other_tools_see_none(guard: Any) -> None:
    seen: dict[str, Any] = {}

    async def pay(args: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        seen["inner"] = await asyncio.create_task(_credential_in_a_task())
        seen["cred"] = current_credential()
        return "paid"

    def plain(args: dict[str, Any]) -> str:
        try:
            current_credential()
        except RuntimeError as exc:
            seen["plain"] = str(exc)
        return "ok"

    async def main() -> None:
        async with guard.session(identity=ALICE) as s:
            assert await s.ainvoke("payments", {"n": 1}, pay, operation="write") == "paid"
            assert await s.ainvoke("calendar", {}, plain, operation="read") == "ok"

    asyncio.run(main())
    assert seen["cred"].scope == ("write",) and seen["inner"] is seen["cred"]
    assert "no aarmor credential for this call" in seen["plain"]
    with pytest.raises(RuntimeError):  # and nothing leaks out of the tool call
        current_credential()


async def _credential_in_a_task() -> Credential:
    return current_credential()


def test_a_credential_never_shows_its_secret(guard: Any) -> None:
    tool = Capture()
    with guard.session(identity=ALICE) as s:
        s.invoke("payments", {}, tool, operation="read")
    [(cred, _)] = tool.calls
    assert cred.token not in repr(cred) and cred.token not in str(cred)
    assert cred.token not in json.dumps(cred.describe())
    with pytest.raises(AttributeError):
        _ = cred.dsn


@pytest.mark.parametrize(("credentials", "message"), [
    ({"ttl": 0}, "`ttl`: Input should be greater than 0"),
    ({"ttl": 7200}, "`ttl`: Input should be less than or equal to 3600"),
    ({"tools": {"x": {"kind": "vault"}}}, "does not match any of the expected tags"),
    ({"tools": {"x": {"kind": "access_token", "secret": "y"}}}, "`tools.x.access_token.secret`: unknown key"),
    ({"tools": {"x": {"kind": "postgresql", "admin_dsn": "postgresql://h/db", "tables": ["orders"]}}},
     "table `orders` must be schema-qualified"),
    ({"tools": {"x": {"kind": "postgresql", "admin_dsn": "postgresql://h/db", "tables": ["public.o"],
                      "privileges": {"read": ["SELECT", "TRUNCATE"]}}}}, "privilege `TRUNCATE` is not one of"),
    ({"tools": {"x": {"kind": "postgresql", "tables": ["public.o"]}}},
     "`tools.x.postgresql.admin_dsn`: Field required"),
])
def test_configuration_errors_name_the_key(make_guard: Callable[..., Any], credentials: dict[str, Any],
                                           message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_guard(POLICY, credentials=credentials)
    assert message in str(info.value)


def test_credentials_from_the_configuration_file(tmp_path: Path) -> None:
    from aarmor.config import AccessTokenToolConfig, PostgresToolConfig, load_config

    (tmp_path / "aarmor.yaml").write_text("""
keys: ./k
credentials:
  ttl: 30
  tools:
    db.query:
      kind: postgresql
      admin_dsn: postgresql://postgres:hunter2@127.0.0.1:5432/test
      tables: [public.orders]
    payments.api: {kind: access_token, ttl: 10}
""")
    cfg = load_config(tmp_path / "aarmor.yaml").credentials
    assert cfg.ttl == 30 and cfg.keys == tmp_path / "k" / "credentials"
    db, api = dict(cfg.tools)["db.query"], dict(cfg.tools)["payments.api"]
    assert isinstance(db, PostgresToolConfig) and dict(db.privileges) == {
        "read": ("SELECT",), "write": ("SELECT", "INSERT", "UPDATE", "DELETE")}
    assert isinstance(api, AccessTokenToolConfig) and api.ttl == 10 and api.bind_arguments
    assert "hunter2" not in repr(cfg)


def test_the_http_door_hands_the_token_to_its_client_while_allowed(serve: Callable[..., Any]) -> None:
    """`POST /v1/sessions/{sid}/actions`: the client that runs the tool gets the token with `allowed`."""
    srv = serve(POLICY, credentials={"tools": {"payments": {"kind": "access_token", "audience": AUDIENCE}}})
    with srv.client(srv.token("pay-agent-svc", "agent")) as c:
        sid = c.post("/v1/sessions", json={"identity": {"human": "alice@company.com"}}).json()["session_id"]
        act = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "payments", "operation": "write",
                                                          "arguments": {"amount": 20}}).json()
        assert act["status"] == "allowed", act
        cred = act["credential"]
        claims = verify_access_token(cred["token"], keys=srv.guard.credentials.export_public("jwks"),
                                     audience=AUDIENCE, scope="write", parameters={"amount": 20})
        assert claims.credential_id == cred["credential_id"] and claims.action_id == act["action_id"]
        done = c.post(f"/v1/actions/{act['action_id']}/outcome", json={"success": True}).json()
        # once reported, the credential is released and no longer shown
        assert "credential" not in done and "credential" not in c.get(f"/v1/actions/{act['action_id']}").json()
    receipt = srv.guard.store.get_receipt(done["receipt_id"]).body
    assert receipt["execution"]["credential"]["credential_id"] == cred["credential_id"]
    assert cred["token"] not in json.dumps(receipt)


def test_a_step_up_gets_its_credential_only_after_the_approval(guard: Any, make_guard: Callable[..., Any]) -> None:
    tool = Capture()
    decided: list[str] = []

    def approve() -> None:
        deadline = time.monotonic() + 10
        while not (items := guard.approvals.list()) and time.monotonic() < deadline:
            time.sleep(0.01)
        # nothing was minted while the action waited for a human
        decided.append(str(len(guard.store.credential_events())))
        guard.approvals.decide(items[0]["id"], approver="carol@company.com", granted=True, reason="ok", channel="t")

    with guard.session(identity=ALICE) as s:
        t = threading.Thread(target=approve)
        t.start()
        s.invoke("payments", {"amount": 5000}, tool, operation="write")
        t.join()
    assert decided == ["0"]
    [(cred, _)] = tool.calls
    [r] = [x.body for x in guard.store.read_receipts(s.session_id)]
    assert r["approval"]["granted"] is True
    issued = guard.store.credential_events(credential_id=cred.credential_id)[0]
    assert issued.event == "issued" and issued.at >= r["approval"]["decided_at"]
    # unattended: the STEP_UP ends at once, and no credential is ever issued
    unattended = make_guard(POLICY, unattended=True, credentials={"tools": {"payments": {"kind": "access_token"}}})
    with unattended.session(identity=ALICE) as s2:
        with pytest.raises(ActionDenied):
            s2.invoke("payments", {"amount": 5000}, tool, operation="write")
    assert unattended.store.credential_events(session_id=s2.session_id) == [] and len(tool.calls) == 1


def test_a_credentials_object_signs_with_a_keyring_under_the_guard_keys(make_guard: Callable[..., Any],
                                                                         tmp_path: Path) -> None:
    from aarmor.config import AccessTokenToolConfig, CredentialsConfig

    guard = make_guard(POLICY, credentials=CredentialsConfig(tools=(("api", AccessTokenToolConfig()),)))
    assert guard.credentials.keyring.directory == tmp_path / "keys" / "credentials"
    assert guard.credentials.keyring.current_key_id != guard.keyring.current_key_id  # not the receipt key
