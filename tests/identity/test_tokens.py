"""Identity mode `jwt` through the SDK: real keys, real tokens, a JWKS file and a JWKS over HTTP (AARM R6)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.errors import ConfigError
from tests.identity.conftest import AUDIENCE, ISSUER, JwksServer, Signer, unsigned_token


class Tool:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, arguments: dict[str, Any]) -> str:
        self.calls.append(arguments)
        return "ok"


def receipts(guard: Any, session_id: str) -> list[dict[str, Any]]:
    return [r.body for r in guard.store.read_receipts(session_id)]


def run(guard: Any, identity: Identity, tool_name: str = "calendar.read",
        args: dict[str, Any] | None = None) -> tuple[Tool, dict[str, Any], ActionDenied | None]:
    tool, denied = Tool(), None
    with guard.session(identity=identity) as s:
        try:
            s.invoke(tool_name, args or {"day": "monday"}, tool)
        except ActionDenied as exc:
            denied = exc
    [r] = receipts(guard, s.session_id)
    return tool, r, denied


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_valid_token_allows_and_the_receipt_carries_its_roles_and_scopes(
        open_guard: Any, jwks_file: Path, signers: dict[str, Signer], alg: str, tmp_path: Path) -> None:
    guard = open_guard(jwks_file=str(jwks_file))
    token = signers[alg].token()
    tool, r, denied = run(guard, Identity(agent="mail-agent", token=token))
    assert denied is None and tool.calls == [{"day": "monday"}]
    rc = r["action"]["requester_context"]
    assert rc["human"] == "alice@company.com" and rc["agent"] == "mail-agent"
    assert rc["roles"] == ["analyst"] and rc["scope"] == ["db:read", "email:send"]
    assert rc["verified_by"] == "jwt"
    assert r["enforcement"]["result"] == "ALLOW"
    guard.close()
    # the bearer token is a credential: nowhere in the store (receipts, context log, events)
    signature = token.rsplit(".", 1)[1]
    for f in tmp_path.glob("aarmor-*.db*"):
        assert signature.encode() not in f.read_bytes()
    assert "token=" not in repr(Identity(token=token)) and token not in repr(Identity(token=token))


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@company.com", "iat": now, "exp": now + 600, **over}


def _bad_tokens(s: dict[str, Signer]) -> dict[str, tuple[str, str]]:
    now = int(time.time())
    return {
        "another key": (s["other"].token(), "identity token bad signature"),
        "alg none": (unsigned_token({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, _claims()),
                     "identity token algorithm not allowed: `none`"),
        "HS256 with the public key": (
            unsigned_token({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, _claims(), s["RS256"].public_pem),
            "identity token algorithm not allowed: `HS256`"),
        "ES256 header on the RSA kid": (s["ES256"].token(kid="rsa-1"),
                                        "does not match key `rsa-1`, which verifies RS256 only"),
        "expired": (s["RS256"].token(iat=now - 1000, exp=now - 300), "identity token expired: expired at"),
        "not yet valid": (s["ES256"].token(nbf=now + 600, exp=now + 1200), "identity token not yet valid"),
        "issued in the future": (s["ES256"].token(iat=now + 600), "identity token not yet valid: issued in"),
        "too old": (s["EdDSA"].token(iat=now - 7200, exp=now + 600), "identity token too old"),
        "wrong audience": (s["RS256"].token(aud=["someone-else"]), "identity token audience mismatch"),
        "no audience": (s["RS256"].token(aud=None), "identity token audience mismatch"),
        "wrong issuer": (s["RS256"].token(iss="https://evil.example/"), "identity token issuer mismatch"),
        "unknown kid": (s["RS256"].token(kid="rsa-9"), "identity token unknown key: no key `rsa-9`"),
        "no exp": (s["RS256"].token(exp=None), "identity token malformed: the token has no `exp`"),
        "not a JWT": ("not-a-token", "identity token malformed"),
        "tampered payload": (s["EdDSA"].token().split(".")[0] + "." + s["EdDSA"].token(sub="mallory").split(".")[1]
                             + "." + s["EdDSA"].token().split(".")[2], "identity token bad signature"),
    }


CASES = ["another key", "alg none", "HS256 with the public key", "ES256 header on the RSA kid", "expired",
         "not yet valid", "issued in the future", "too old", "wrong audience", "no audience", "wrong issuer",
         "unknown kid", "no exp", "not a JWT", "tampered payload"]


@pytest.mark.parametrize("case", CASES)
def test_bad_tokens_are_denied_with_a_precise_reason(open_guard: Any, jwks_file: Path,
                                                     signers: dict[str, Signer], case: str) -> None:
    guard = open_guard(jwks_file=str(jwks_file), max_age=3600, leeway=5)
    token, reason = _bad_tokens(signers)[case]
    tool, r, denied = run(guard, Identity(token=token))
    assert denied is not None and tool.calls == []
    assert reason in denied.decision.reason
    assert r["enforcement"]["result"] == "DENY" and r["enforcement"]["executed"] is False
    assert reason in r["decision"]["reason"] and r["error"]["class"] == "TokenError"
    assert token not in str(r)


def test_no_token_and_a_mismatched_principal_are_denied(open_guard: Any, jwks_file: Path,
                                                        signers: dict[str, Signer]) -> None:
    guard = open_guard(jwks_file=str(jwks_file))
    _, _, denied = run(guard, Identity(human="alice@company.com"))
    assert denied is not None and "identity token missing" in denied.decision.reason
    _, _, denied = run(guard, Identity(human="bob@company.com", token=signers["RS256"].token()))
    assert denied is not None and "identity token principal mismatch" in denied.decision.reason


def test_leeway_tolerates_small_clock_skew(open_guard: Any, jwks_file: Path, signers: dict[str, Signer]) -> None:
    guard = open_guard(jwks_file=str(jwks_file), leeway=120)
    now = int(time.time())
    _, _, denied = run(guard, Identity(token=signers["ES256"].token(exp=now - 30, nbf=now + 30)))
    assert denied is None


def test_configured_claim_names(open_guard: Any, jwks_file: Path, signers: dict[str, Signer]) -> None:
    guard = open_guard(jwks_file=str(jwks_file), roles_claim="realm_access.roles", principal_claim="email",
                       scopes_claim="scp")
    token = signers["EdDSA"].token(sub="0b5e-opaque", email="dana@company.com", roles=None, scope=None,
                                   realm_access={"roles": ["admin", "ops"]}, scp=["tickets:write"])
    _, r, denied = run(guard, Identity(token=token))
    assert denied is None
    rc = r["action"]["requester_context"]
    assert (rc["human"], rc["roles"], rc["scope"]) == ("dana@company.com", ["admin", "ops"], ["tickets:write"])


def test_scp_is_read_when_there_is_no_scope_claim(open_guard: Any, jwks_file: Path,
                                                  signers: dict[str, Signer]) -> None:
    guard = open_guard(jwks_file=str(jwks_file))
    _, r, _ = run(guard, Identity(token=signers["RS256"].token(scope=None, scp=["files:read", "files:write"])))
    assert r["action"]["requester_context"]["scope"] == ["files:read", "files:write"]


def test_jwks_url_is_fetched_cached_and_refetched_on_an_unknown_kid(
        open_guard: Any, jwks_server: JwksServer, signers: dict[str, Signer]) -> None:
    guard = open_guard(jwks_url=jwks_server.url, jwks_refetch_interval=0)
    assert jwks_server.hits == 0  # nothing fetched at start
    for _ in range(3):
        _, _, denied = run(guard, Identity(token=signers["RS256"].token()))
        assert denied is None
    assert jwks_server.hits == 1  # cached
    # the provider rotates in an EC key: the first token naming its kid fetches the set again
    jwks_server.keys = [*jwks_server.keys, signers["ES256"].jwk]
    _, r, denied = run(guard, Identity(token=signers["ES256"].token()))
    assert denied is None and r["action"]["requester_context"]["verified_by"] == "jwt"
    assert jwks_server.hits == 2


def test_a_key_the_provider_withdraws_stops_a_token_already_verified(
        open_guard: Any, jwks_server: JwksServer, signers: dict[str, Signer]) -> None:
    """A token's signature is verified once per key object (a session presents it at every decision): when the
    JWKS refresh replaces the key under the same kid, the same token is verified again, and fails."""
    guard = open_guard(jwks_url=jwks_server.url, jwks_cache_seconds=0, jwks_refetch_interval=0)
    token = signers["RS256"].token()
    tool = Tool()
    with guard.session(identity=Identity(token=token)) as s:
        s.invoke("calendar.read", {"day": "monday"}, tool)
        s.invoke("calendar.read", {"day": "tuesday"}, tool)
        # the provider replaces the compromised key `rsa-1` by a new one under the same kid
        jwks_server.keys = [Signer("RS256", "rsa-1").jwk]
        with pytest.raises(ActionDenied) as info:
            s.invoke("calendar.read", {"day": "wednesday"}, tool)
    assert [c["day"] for c in tool.calls] == ["monday", "tuesday"]
    assert "identity token bad signature" in info.value.decision.reason


def test_unknown_kids_refetch_at_most_once_per_interval(open_guard: Any, jwks_server: JwksServer,
                                                        signers: dict[str, Signer]) -> None:
    guard = open_guard(jwks_url=jwks_server.url, jwks_refetch_interval=3600)
    _, _, denied = run(guard, Identity(token=signers["RS256"].token()))
    assert denied is None and jwks_server.hits == 1
    for i in range(5):
        _, _, denied = run(guard, Identity(token=signers["RS256"].token(kid=f"made-up-{i}")))
        assert denied is not None and "unknown key" in denied.decision.reason
    assert jwks_server.hits == 1


def test_unreachable_jwks_url_is_a_deny(open_guard: Any, signers: dict[str, Signer]) -> None:
    server = JwksServer([])
    url = server.url
    server.close()  # nothing listens there any more
    guard = open_guard(jwks_url=url, jwks_timeout=2)
    tool, r, denied = run(guard, Identity(token=signers["RS256"].token()))
    assert denied is not None and tool.calls == []
    assert "identity token jwks unavailable: cannot fetch JWKS" in r["decision"]["reason"]


def _approve_after(guard: Any, delay_until: float) -> threading.Thread:
    def approve() -> None:
        deadline = time.monotonic() + 10
        while not guard.approvals.list() and time.monotonic() < deadline:
            time.sleep(0.01)
        [item] = guard.approvals.list()
        while time.time() < delay_until:
            time.sleep(0.05)
        guard.approvals.decide(item["id"], approver="carol@company.com", granted=True, reason="ok", channel="t")

    t = threading.Thread(target=approve)
    t.start()
    return t


def test_identity_is_reverified_after_a_step_up_wait(open_guard: Any, jwks_file: Path,
                                                     signers: dict[str, Signer]) -> None:
    guard = open_guard(jwks_file=str(jwks_file), leeway=0)
    # still valid after the wait: runs, and the approval records the re-verification
    tool, r, denied = _step_up(guard, signers["ES256"].token(), delay_until=0)
    assert denied is None and len(tool.calls) == 1
    assert r["approval"]["identity_verified"] is True and r["enforcement"]["result"] == "ALLOW"
    # expires while the approver takes their time: DENY, not executed
    exp = int(time.time()) + 2
    tool, r, denied = _step_up(guard, signers["ES256"].token(exp=exp), delay_until=exp + 0.2)
    assert denied is not None and tool.calls == []
    assert r["decision"]["result"] == "STEP_UP" and r["enforcement"]["result"] == "DENY"
    assert "identity token expired" in r["enforcement"]["reason"] and r["error"]["class"] == "TokenError"
    assert r["approval"]["granted"] is True and r["approval"]["identity_verified"] is False


def _step_up(guard: Any, token: str, delay_until: float) -> tuple[Tool, dict[str, Any], ActionDenied | None]:
    t = _approve_after(guard, delay_until)
    try:
        return run(guard, Identity(token=token), "payment.transfer", {"amount": 25_000, "to": "ACME"})
    finally:
        t.join()


def test_configuration_errors(tmp_path: Path, jwks_file: Path) -> None:
    from aarmor.config import load_config

    with pytest.raises(ConfigError, match=r"needs an `identity\.jwt` section"):
        load_config(identity_mode="jwt")
    with pytest.raises(ConfigError, match="exactly one of `jwks_file` or `jwks_url`"):
        load_config(identity_mode="jwt", identity_jwt={"issuer": ISSUER, "audience": AUDIENCE})
    with pytest.raises(ConfigError, match="algorithms"):
        load_config(identity_mode="jwt", identity_jwt={"issuer": ISSUER, "audience": AUDIENCE,
                                                       "jwks_file": str(jwks_file), "algorithms": ["HS256"]})
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}')
    cfg = load_config(identity_mode="jwt", store="memory://", keys=str(tmp_path / "keys"),
                      identity_jwt={"issuer": ISSUER, "audience": [AUDIENCE], "jwks_file": str(bad)})
    from aarmor import Guard

    with pytest.raises(ConfigError, match="no usable signing key"):
        Guard(cfg)
