"""Access tokens: an EdDSA-signed JWT (RFC 9068 profile, `typ: at+jwt`) minted per mediated action.

What a token says (claims):
- `iss` (`credentials.issuer`), `aud` (the tool's audience, default its name), `sub` (the human principal,
  else the service), `act: {sub: <agent>}` when an agent acts for them (RFC 8693), `scope` (space-separated,
  from the action's operation), `iat`, `exp` (`iat` + ttl), `jti` (the credential id), `action_id`,
  `session_id`, and with `bind_arguments` `args_digest`: the digest of the exact arguments the tool runs
  with (`aarmor.receipts.parameters_digest`, the one receipts use; after MODIFY, the modified arguments).
- Signed with the credential keyring's current Ed25519 key (a keyring of its own, not the receipt keys:
  one key, one purpose); the header names the key (`kid`).

`verify_access_token` is the check a tool server runs (it needs only `cryptography`, a core dependency):
EdDSA only (no `none`, no HMAC, no algorithm the header picks), `typ` must be `at+jwt`, the key by `kid`
from the keys it trusts, then issuer, audience, expiry, issue time, the scopes it requires and, when it is
given the arguments it received, their digest. Every failure raises `CredentialError` with a `code` from
`TOKEN_ERRORS`; messages never contain the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aarmor.config import AccessTokenToolConfig
from aarmor.credentials.model import Credential, CredentialError, IssueRequest, operation_scope
from aarmor.receipts.keys import Keyring
from aarmor.receipts.redact import parameters_digest

__all__ = ["MAX_TOKEN_BYTES", "TOKEN_ERRORS", "TOKEN_TYPE", "AccessTokenClaims", "AccessTokenIssuer",
           "mint_access_token",
           "verify_access_token"]

TOKEN_TYPE = "at+jwt"
MAX_TOKEN_BYTES = 16 * 1024
TOKEN_ERRORS = (
    "malformed", "algorithm_not_allowed", "wrong_type", "unknown_key", "bad_signature", "issuer_mismatch",
    "audience_mismatch", "expired", "not_yet_valid", "scope_missing", "arguments_mismatch", "arguments_unbound",
)
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(part: str, what: str) -> bytes:
    if not _B64URL.fullmatch(part):
        raise CredentialError("malformed", f"access token {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise CredentialError("malformed", f"access token {what} is not base64url") from exc


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise CredentialError("malformed", f"access token repeats the member `{k}`")
        out[k] = v
    return out


def _object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CredentialError("malformed", f"access token {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise CredentialError("malformed", f"access token {what} is not a JSON object")
    return value


def mint_access_token(keyring: Keyring, claims: Mapping[str, Any]) -> tuple[str, str]:
    """Sign `claims` as a compact JWS with the keyring's current key; returns (token, key id).

    Raises:
        SigningKeyError: the keyring cannot sign. CredentialError: its current key changed twice meanwhile.
    """
    payload = _b64url(_json(dict(claims)))
    for _ in range(2):  # a rotation between reading the key id and signing: sign again with the new key
        kid = keyring.current_key_id
        signing_input = _b64url(_json({"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": kid})) + "." + payload
        used, signature = keyring.sign(signing_input.encode("ascii"))
        if used == kid:
            return signing_input + "." + _b64url(signature), kid
    raise CredentialError("signing_key_changed", "the credential signing key changed while a token was signed")


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    """A verified access token's claims."""

    credential_id: str
    issuer: str
    subject: str
    actor: str | None
    audience: str
    scope: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    action_id: str | None
    session_id: str | None
    args_digest: str | None
    key_id: str
    claims: dict[str, Any]


def _trusted_keys(keys: Mapping[str, Ed25519PublicKey] | Mapping[str, Any] | str) -> dict[str, Ed25519PublicKey]:
    """`key id -> Ed25519 key` from a mapping of keys or a JWKS (a dict or its JSON text).

    Raises:
        CredentialError: a JWKS that is not one, or holds no Ed25519 signing key.
    """
    if isinstance(keys, str):
        try:
            keys = json.loads(keys)
        except json.JSONDecodeError as exc:
            raise CredentialError("malformed", "the trusted keys are not a JWKS JSON document") from exc
    if not isinstance(keys, Mapping):
        raise TypeError("keys must be a mapping of key ids to Ed25519 public keys, or a JWKS")
    if "keys" in keys and isinstance(keys["keys"], list):
        out: dict[str, Ed25519PublicKey] = {}
        for jwk in keys["keys"]:
            if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" \
                    or jwk.get("use", "sig") != "sig" or not isinstance(jwk.get("kid"), str) \
                    or not isinstance(jwk.get("x"), str):
                continue  # only Ed25519 signing keys can verify these tokens
            try:
                out[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(_unb64url(jwk["x"], "key"))
            except (CredentialError, ValueError):
                continue
        if not out:
            raise CredentialError("unknown_key", "the JWKS holds no Ed25519 signing key")
        return out
    for kid, key in keys.items():
        if not isinstance(key, Ed25519PublicKey):
            raise TypeError(f"key `{kid}` is a {type(key).__name__}, expected an Ed25519 public key")
    return dict(keys)


def _numeric(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CredentialError("malformed", f"access token claim `{name}` is missing or not a number")
    return float(value)


def verify_access_token(token: str, *, keys: Mapping[str, Ed25519PublicKey] | Mapping[str, Any] | str,
                        audience: str, issuer: str = "aarmor", scope: str | Iterable[str] = (),
                        parameters: Mapping[str, Any] | None = None, now: datetime | None = None,
                        leeway: float = 0.0) -> AccessTokenClaims:
    """Verify an aarmor access token for the tool server at `audience`.

    `keys`: the public keys the server trusts (`key id -> Ed25519PublicKey`, e.g. from
    `load_public_keys`, or a JWKS as a dict or JSON text: `CredentialBroker.export_public("jwks")`).
    `scope`: every scope the operation needs must be in the token. `parameters`: the arguments the server
    received; they must match the token's `args_digest` (a token without one is refused: nothing binds it).

    Raises:
        CredentialError: `code` in `TOKEN_ERRORS`, the message says what failed.
    """
    if not isinstance(token, str) or not token:
        raise CredentialError("malformed", "no access token")
    if len(token) > MAX_TOKEN_BYTES:
        raise CredentialError("malformed", f"access token longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise CredentialError("malformed", "access token is not a compact JWS (three parts)")
    header = _object(_unb64url(parts[0], "header"), "header")
    if header.get("alg") != "EdDSA":
        raise CredentialError("algorithm_not_allowed",
                              f"access token algorithm `{header.get('alg')}` is not EdDSA")
    if header.get("typ") != TOKEN_TYPE:
        raise CredentialError("wrong_type", f"token type `{header.get('typ')}` is not `{TOKEN_TYPE}`")
    if "crit" in header:
        raise CredentialError("malformed", "access token header has critical extensions (`crit`)")
    trusted = _trusted_keys(keys)
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in trusted:
        raise CredentialError("unknown_key", f"access token signed by key `{kid}`, which is not trusted here")
    signature = _unb64url(parts[2], "signature")
    try:
        trusted[kid].verify(signature, (parts[0] + "." + parts[1]).encode("ascii"))
    except InvalidSignature as exc:
        raise CredentialError("bad_signature", f"access token signature does not verify with key `{kid}`") from exc
    claims = _object(_unb64url(parts[1], "payload"), "payload")
    return _check_claims(claims, kid=kid, audience=audience, issuer=issuer, scope=scope, parameters=parameters,
                         now=now, leeway=leeway)


def _check_claims(claims: dict[str, Any], *, kid: str, audience: str, issuer: str, scope: str | Iterable[str],
                  parameters: Mapping[str, Any] | None, now: datetime | None, leeway: float) -> AccessTokenClaims:
    if claims.get("iss") != issuer:
        raise CredentialError("issuer_mismatch", f"access token issuer `{claims.get('iss')}` is not `{issuer}`")
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in auds:
        raise CredentialError("audience_mismatch", f"access token is for `{aud}`, not `{audience}`")
    t = (now or datetime.now(UTC)).timestamp()
    exp, iat = _numeric(claims, "exp"), _numeric(claims, "iat")
    if t >= exp + leeway:
        at = datetime.fromtimestamp(exp, UTC)
        raise CredentialError("expired", f"access token expired at {at:%Y-%m-%dT%H:%M:%SZ}")
    if iat > t + leeway or ("nbf" in claims and _numeric(claims, "nbf") > t + leeway):
        raise CredentialError("not_yet_valid", "access token is not valid yet (iat or nbf in the future)")
    granted = tuple(str(claims.get("scope", "")).split())
    needed = [scope] if isinstance(scope, str) else list(scope)
    missing = [s for s in needed if s not in granted]
    if missing:
        raise CredentialError("scope_missing", f"access token scope `{' '.join(granted)}` lacks `{' '.join(missing)}`")
    bound = claims.get("args_digest")
    if parameters is not None:
        if not isinstance(bound, str):
            raise CredentialError("arguments_unbound", "access token is not bound to arguments (no `args_digest`)")
        if parameters_digest(parameters) != bound:
            raise CredentialError("arguments_mismatch",
                                  "the arguments received are not the ones the access token was issued for")
    actor = claims.get("act")
    return AccessTokenClaims(
        credential_id=str(claims.get("jti", "")), issuer=issuer, subject=str(claims.get("sub", "")),
        actor=str(actor["sub"]) if isinstance(actor, dict) and "sub" in actor else None, audience=audience,
        scope=granted, issued_at=datetime.fromtimestamp(iat, UTC), expires_at=datetime.fromtimestamp(exp, UTC),
        action_id=claims.get("action_id"), session_id=claims.get("session_id"),
        args_digest=bound if isinstance(bound, str) else None, key_id=kid, claims=claims)


class AccessTokenIssuer:
    """Mints one access token per action for a tool of kind `access_token` (see the module doc)."""

    kind = "access_token"
    #: minting is a signature in memory: no need to leave the event loop for it
    blocking = False

    def __init__(self, tool: str, config: AccessTokenToolConfig, keyring: Keyring, issuer: str) -> None:
        self.tool = tool
        self._cfg = config
        self._keyring = keyring
        self._issuer = issuer
        self.audience = config.audience or tool

    def scope(self, operation: str) -> tuple[str, ...]:
        """The scopes of `operation`: the configured ones, else the operation's own name.

        Raises:
            CredentialError: `operation_not_configured` (scopes are configured and this one is not listed,
                or the action names no operation).
        """
        if self._cfg.scopes:
            return operation_scope(self.tool, "scopes", self._cfg.scopes, operation)
        if not operation:
            raise CredentialError("operation_not_configured",
                                  f"`{self.tool}` was called with no operation, so no scope can be derived; "
                                  f"declare one (`tools: {{{self.tool}: {{operation: ...}}}}`)")
        return (operation,)

    def issue(self, req: IssueRequest) -> Credential:
        ident = req.action.identity
        iat = int(req.now.timestamp())
        exp = max(iat + 1, int(req.now.timestamp() + req.ttl))
        claims: dict[str, Any] = {
            "iss": self._issuer, "aud": self.audience,
            "sub": ident.human or ident.service or ident.agent or "unknown",
            "scope": " ".join(req.scope), "iat": iat, "exp": exp, "jti": req.credential_id,
            "action_id": req.action.action_id, "session_id": req.action.session_id,
        }
        if ident.agent and ident.agent != claims["sub"]:
            claims["act"] = {"sub": ident.agent}
        bound = parameters_digest(req.parameters) if self._cfg.bind_arguments else None
        if bound is not None:
            claims["args_digest"] = bound
        token, _kid = mint_access_token(self._keyring, claims)
        return Credential(
            credential_id=req.credential_id, kind="access_token", tool=self.tool,
            action_id=req.action.action_id, session_id=req.action.session_id, operation=req.action.operation,
            scope=req.scope, issued_at=datetime.fromtimestamp(iat, UTC), expires_at=datetime.fromtimestamp(exp, UTC),
            audience=self.audience, bound_arguments_digest=bound, _secret=token)

    def expire(self, credential: Credential) -> None:
        """Nothing to do: the token carries its own `exp`, which every verifier checks."""

    def release(self, credential: Credential) -> str | None:
        """A token cannot be recalled: it stays valid until `exp` (hence the short ttl)."""
        return "a token cannot be revoked; it stays valid until its expiry"

    def close(self) -> None:
        pass
