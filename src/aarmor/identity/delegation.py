"""Signed delegation chains (AARM R6, threat 9 "cross-agent propagation"; docs/identity.md "Delegation").

An agent delegates to a sub-agent through its own mediated session (`Session.delegate`): aarmor verifies
the delegator's identity, narrows the requested scope to what the delegator holds, and signs a delegation
token with the Guard's Ed25519 key. The sub-agent presents the whole chain (its parent's links, then its
own) when it opens its session; every decision verifies it link by link:

1. each link is a compact JWS, header exactly `{"alg": "EdDSA", "typ": "aarmor-delegation+jwt", "kid"}`,
   signed by a key of the Guard's keyring (current or rotated: several nodes that share a key directory
   verify each other's links). The `typ` keeps other tokens signed with the same keys (receipts are not
   JWS at all; credentials have their own `typ`) from being passed off as a delegation;
2. claims: `iss` (the issuer), `dlg` (delegator), `sub` (delegatee), `scope` (a non-empty list), `prn`
   (the original human principal or null), `orq` (the original request or null), `iat`, `exp`, `jti`,
   `prev` (SHA-256 of the previous link's token; null on the first);
3. the chain: link `i` is signed after link `i - 1` (`prev`), starts where it ended (`dlg` = the previous
   `sub`), carries the same principal and request, and never widens: its scope is a subset of the previous
   link's scope (a wider link is refused, not silently narrowed), and it must not be depth-limit deep;
4. time, against the Guard's clock: no link used before its `iat` (beyond `leeway`) or after its `exp`;
5. the acting identity: the last link's delegatee is the acting agent, and the chain's principal is the
   identity's human principal (a sub-agent session without one takes the chain's).

Scope along the chain is the intersection (`Identity.effective_scope`), so it can only narrow. Unsigned,
claimed links are accepted only by the claimed identity modes (`enforce`, `flag`), and are still checked for
continuity, widening and expiry; identity mode `jwt` refuses them.

Every failure raises `DelegationError` (an `IdentityError`) whose `code` names it; the mediator turns it into
a DENY carrying the message. Messages never contain a token.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aarmor.identity import IdentityError, IdentityVerifier
from aarmor.model import DelegationLink, Identity

__all__ = ["DELEGATION_ERROR_CODES", "DELEGATION_TYP", "DelegationAuthority", "DelegationCheck",
           "DelegationError", "chain_original_request", "links_from_tokens"]

DELEGATION_TYP = "aarmor-delegation+jwt"
MAX_LINK_BYTES = 16 * 1024
_VERIFIED_CACHE = 4096
DELEGATION_ERROR_CODES = (
    "malformed", "bad_signature", "unknown_key", "unsigned", "broken_chain", "widening", "expired",
    "not_yet_valid", "too_deep", "principal_mismatch", "agent_mismatch", "not_delegable",
)
_CLAIMS = frozenset({"iss", "dlg", "sub", "scope", "prn", "orq", "iat", "exp", "jti", "prev"})


class DelegationError(IdentityError):
    """A delegation chain that does not verify, or a delegation that may not be made; `code` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"delegation {code.replace('_', ' ')}: {message}")
        self.code = code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(part: str) -> bytes:
    if not part or "=" in part:
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _link_digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("ascii")).hexdigest()


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class _Parsed:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _parse(token: Any, where: str) -> _Parsed:
    """Split and decode a link token (no signature check). Raises DelegationError(malformed)."""
    if not isinstance(token, str) or len(token) > MAX_LINK_BYTES or token.count(".") != 2:
        raise DelegationError("malformed", f"{where} is not a compact JWS of at most {MAX_LINK_BYTES} bytes")
    head, body, sig = token.split(".")
    try:
        header = json.loads(_unb64(head))
        claims = json.loads(_unb64(body))
        signature = _unb64(sig)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise DelegationError("malformed", f"{where}: unreadable header, claims or signature") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise DelegationError("malformed", f"{where}: header and claims must be JSON objects")
    if header.get("typ") != DELEGATION_TYP or header.get("alg") != "EdDSA" or set(header) != {"alg", "typ", "kid"}:
        raise DelegationError("malformed", f"{where}: the header must be exactly alg EdDSA, typ {DELEGATION_TYP} "
                                           "and a kid")
    _check_claims(claims, where)
    return _Parsed(header, claims, f"{head}.{body}".encode("ascii"), signature)


def _check_claims(c: Mapping[str, Any], where: str) -> None:
    if set(c) != _CLAIMS:
        missing, extra = sorted(_CLAIMS - set(c)), sorted(set(c) - _CLAIMS)
        raise DelegationError("malformed", f"{where}: claims must be exactly {sorted(_CLAIMS)} "
                                           f"(missing {missing}, unexpected {extra})")
    for name in ("iss", "dlg", "sub", "jti"):
        if not isinstance(c[name], str) or not c[name]:
            raise DelegationError("malformed", f"{where}: `{name}` must be a non-empty string")
    for name in ("prn", "orq", "prev"):
        if c[name] is not None and not isinstance(c[name], str):
            raise DelegationError("malformed", f"{where}: `{name}` must be a string or null")
    for name in ("iat", "exp"):
        if isinstance(c[name], bool) or not isinstance(c[name], int | float):
            raise DelegationError("malformed", f"{where}: `{name}` must be a number (seconds since the epoch)")
    scope = c["scope"]
    if not isinstance(scope, list) or not scope or not all(isinstance(s, str) and s for s in scope):
        raise DelegationError("malformed", f"{where}: `scope` must be a non-empty list of strings")


def _link(p: _Parsed, token: str, signer: str | None) -> DelegationLink:
    c = p.claims
    return DelegationLink(c["dlg"], c["sub"], tuple(c["scope"]), _ts(c["iat"]), _ts(c["exp"]), link_id=c["jti"],
                          signer=signer, token=token)


def links_from_tokens(tokens: Iterable[str]) -> tuple[DelegationLink, ...]:
    """Read a chain of delegation tokens (root first) into links for `Identity(delegation=...)`.

    Nothing is verified here: every decision verifies the chain (`DelegationCheck`). A string with several
    tokens separated by whitespace or commas is accepted too (the form `Session.delegate` returns).

    Raises:
        DelegationError: a token that is not a well-formed delegation token (`malformed`).
    """
    if isinstance(tokens, str):
        tokens = tokens.replace(",", " ").split()
    out = []
    for i, token in enumerate(tokens):
        p = _parse(token, f"delegation link {i}")
        out.append(dataclasses.replace(_link(p, token, None), signer=None))
    return tuple(out)


def chain_original_request(links: Sequence[DelegationLink]) -> str | None:
    """The original request a signed chain carries (`orq` of its first link; None: none, or unsigned)."""
    if not links or links[0].token is None:
        return None
    orq = _parse(links[0].token, "delegation link 0").claims["orq"]
    return orq if isinstance(orq, str) else None


class SigningKeys(Protocol):
    """What the authority needs of a keyring (`aarmor.receipts.keys.Keyring`)."""

    @property
    def current_key_id(self) -> str: ...

    def sign(self, data: bytes) -> tuple[str, bytes]: ...

    def public_keys(self) -> dict[str, Ed25519PublicKey]: ...


class DelegationAuthority:
    """Mints and verifies delegation tokens with a keyring's Ed25519 keys: links are signed with the current
    key and verified with any key the keyring knows (current, rotated or retired)."""

    def __init__(self, keys: SigningKeys, *, issuer: str = "aarmor", max_ttl: float = 3600.0, max_depth: int = 4,
                 leeway: float = 30.0) -> None:
        self._keys = keys
        # token -> its parsed form, once its signature verified: a signature never stops verifying (keys are
        # fixed for the Guard's life), so each decision re-checks only the chain and the clock (~10 us, not
        # the ~140 us of an Ed25519 verification per link). Bounded: cleared when full.
        self._verified: dict[str, _Parsed] = {}
        self.issuer = issuer
        self.max_ttl = max_ttl
        self.max_depth = max_depth
        self.leeway = leeway

    # --- minting ------------------------------------------------------------------------------------
    def delegate(self, delegator: Identity, *, to: str, scope: Sequence[str], ttl: float, now: datetime,
                 original_request: str | None) -> tuple[str, ...]:
        """Sign a link from the (already verified) `delegator` to agent `to`; returns the whole chain.

        The new link's scope must lie within the delegator's effective scope (when it has one) and within
        its own last link; its expiry is capped by the parent link's. The principal and original request
        are the delegator's chain's, or the delegator's own at the root.

        Raises:
            DelegationError: `not_delegable` (no agent to delegate to, an empty or widening scope, a ttl out
                of range, a chain already `max_depth` links deep, a parent link that is unsigned or expired).
            SigningKeyError: the keyring cannot sign.
        """
        if not isinstance(to, str) or not to.strip():
            raise DelegationError("not_delegable", "the delegatee (`to`) must be a non-empty agent name")
        if isinstance(scope, str) or not scope or not all(isinstance(s, str) and s for s in scope):
            raise DelegationError("not_delegable", "`scope` must be a non-empty list of scope names: a delegation "
                                                   "names what it hands over")
        if not 0 < ttl <= self.max_ttl:
            raise DelegationError("not_delegable", f"ttl {ttl} s is outside (0, {self.max_ttl:g}] "
                                                   "(`identity.delegation.max_ttl`)")
        wanted = tuple(dict.fromkeys(scope))
        held = delegator.effective_scope
        if held and not set(wanted) <= set(held):
            raise DelegationError("not_delegable", f"scope {sorted(set(wanted) - set(held))} is not held by the "
                                                   f"delegator (effective scope {list(held)}); a delegation "
                                                   "can only narrow")
        parent = delegator.delegation
        if len(parent) >= self.max_depth:
            raise DelegationError("not_delegable", f"the chain is already {len(parent)} links deep "
                                                   f"(`identity.delegation.max_depth` {self.max_depth})")
        expires = now + timedelta(seconds=ttl)
        prev = principal = None
        if parent:
            last = parent[-1]
            if last.token is None:
                raise DelegationError("not_delegable", "an unsigned (claimed) chain cannot be extended")
            first = _parse(parent[0].token, "delegation link 0").claims if parent[0].token else {}
            principal, original_request = first.get("prn"), first.get("orq")
            prev = _link_digest(last.token)
            if last.expires_at is not None:
                if last.expires_at <= now:
                    raise DelegationError("not_delegable", "the delegator's own delegation has expired")
                expires = min(expires, last.expires_at)
        else:
            principal = delegator.human
        delegating_as = delegator.agent or delegator.service or delegator.human
        if not delegating_as:
            raise DelegationError("not_delegable", "the delegator has no agent, service or human identity")
        claims = {"iss": self.issuer, "dlg": delegating_as, "sub": to, "scope": list(wanted), "prn": principal,
                  "orq": original_request, "iat": int(now.timestamp()), "exp": int(expires.timestamp()),
                  "jti": "dlg_" + uuid.uuid4().hex, "prev": prev}
        token = self._encode(claims)
        return (*(link.token for link in parent if link.token), token)

    def _encode(self, claims: Mapping[str, Any]) -> str:
        kid = self._keys.current_key_id
        header = {"alg": "EdDSA", "typ": DELEGATION_TYP, "kid": kid}
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()))
        signed_kid, signature = self._keys.sign(signing_input.encode("ascii"))
        if signed_kid != kid:  # the key rotated in between: sign again, naming the new key
            return self._encode(claims)
        return signing_input + "." + _b64(signature)

    # --- verification -------------------------------------------------------------------------------
    def verify(self, identity: Identity, *, now: datetime, require_signed: bool) -> Identity:
        """Verify `identity.delegation` link by link; returns the identity with verified links.

        Raises:
            DelegationError: the chain does not verify (`code` says how).
        """
        links = identity.delegation
        if not links:
            return identity
        if len(links) > self.max_depth:
            raise DelegationError("too_deep", f"{len(links)} links; at most {self.max_depth} "
                                              "(`identity.delegation.max_depth`)")
        if any(link.token is None for link in links):
            if any(link.token is not None for link in links):
                raise DelegationError("broken_chain", "a chain mixes signed and unsigned links")
            if require_signed:
                raise DelegationError("unsigned", "identity mode `jwt` accepts only signed delegation links "
                                                  "(`Session.delegate`)")
            self._check_claimed(links, now)
            return identity
        verified: list[DelegationLink] = []
        prev: _Parsed | None = None
        prev_token: str | None = None
        for i, link in enumerate(links):
            assert link.token is not None
            where = f"delegation link {i} ({link.delegator} -> {link.delegatee})"
            p = self._signed(link.token, where)
            c = p.claims
            if c["iss"] != self.issuer:
                raise DelegationError("malformed", f"{where}: issuer `{c['iss']}` is not `{self.issuer}`")
            if prev is None:
                if c["prev"] is not None:
                    raise DelegationError("broken_chain", f"{where}: the first link names a previous one")
            else:
                pc = prev.claims
                assert prev_token is not None
                if c["prev"] != _link_digest(prev_token):
                    raise DelegationError("broken_chain", f"{where} was not issued after link {i - 1}")
                if c["dlg"] != pc["sub"]:
                    raise DelegationError("broken_chain", f"{where}: delegator `{c['dlg']}` is not the previous "
                                                          f"delegatee `{pc['sub']}`")
                if (c["prn"], c["orq"]) != (pc["prn"], pc["orq"]):
                    raise DelegationError("broken_chain", f"{where}: principal or original request differs from "
                                                          "the previous link's")
                if not set(c["scope"]) <= set(pc["scope"]):
                    raise DelegationError("widening", f"{where}: scope {sorted(set(c['scope']) - set(pc['scope']))}"
                                                      f" was not delegated by link {i - 1}")
            self._check_time(c["iat"], c["exp"], now, where)
            verified.append(_link(p, link.token, p.header["kid"]))
            prev, prev_token = p, link.token
        assert prev is not None
        principal = self._signed(links[0].token or "", "delegation link 0").claims["prn"]
        human = identity.human
        if principal is not None:
            if human is not None and human != principal:
                raise DelegationError("principal_mismatch", f"the chain was issued for principal `{principal}`, "
                                                            f"not `{human}`")
            human = principal
        agent = identity.agent
        if agent is not None and agent != verified[-1].delegatee:
            raise DelegationError("agent_mismatch", f"the chain delegates to `{verified[-1].delegatee}`, but the "
                                                    f"acting agent is `{agent}`")
        return dataclasses.replace(identity, human=human, agent=agent or verified[-1].delegatee,
                                   delegation=tuple(verified))

    def _signed(self, token: str, where: str) -> _Parsed:
        """The parsed token, its signature verified (once: see `_verified`)."""
        p = self._verified.get(token)
        if p is None:
            p = _parse(token, where)
            self._check_signature(p, where)
            if len(self._verified) >= _VERIFIED_CACHE:
                self._verified.clear()
            self._verified[token] = p
        return p

    def _check_signature(self, p: _Parsed, where: str) -> None:
        kid = p.header["kid"]
        key = self._keys.public_keys().get(kid) if isinstance(kid, str) else None
        if key is None:
            raise DelegationError("unknown_key", f"{where}: signed by key `{kid}`, which this keyring does not hold")
        try:
            key.verify(p.signature, p.signing_input)
        except InvalidSignature:
            raise DelegationError("bad_signature", f"{where}: the signature does not verify") from None

    def _check_time(self, iat: float, exp: float, now: datetime, where: str) -> None:
        t = now.timestamp()
        if t > exp + self.leeway:
            raise DelegationError("expired", f"{where} expired at {_ts(exp).isoformat()}")
        if iat > t + self.leeway:
            raise DelegationError("not_yet_valid", f"{where} is issued in the future ({_ts(iat).isoformat()})")

    def _check_claimed(self, links: Sequence[DelegationLink], now: datetime) -> None:
        """Unsigned links (claimed modes): continuity, no widening, not expired."""
        for i, link in enumerate(links):
            where = f"delegation link {i} ({link.delegator} -> {link.delegatee})"
            if i and link.delegator != links[i - 1].delegatee:
                raise DelegationError("broken_chain", f"{where}: delegator `{link.delegator}` is not the previous "
                                                      f"delegatee `{links[i - 1].delegatee}`")
            if i and links[i - 1].scope and not set(link.scope) <= set(links[i - 1].scope):
                raise DelegationError("widening", f"{where}: scope {sorted(set(link.scope) - set(links[i - 1].scope))}"
                                                  f" was not delegated by link {i - 1}")
            if link.expires_at is not None and now.timestamp() > link.expires_at.timestamp() + self.leeway:
                raise DelegationError("expired", f"{where} expired at {link.expires_at.isoformat()}")


class DelegationCheck:
    """An `IdentityVerifier` around another: the inner one verifies the identity, then the chain is verified.

    `require_signed`: unsigned links are refused (identity mode `jwt`); otherwise they are checked as claims.
    """

    def __init__(self, inner: IdentityVerifier, authority: DelegationAuthority, *, require_signed: bool) -> None:
        self.inner = inner
        self.authority = authority
        self.require_signed = require_signed
        self.name = getattr(inner, "name", type(inner).__name__)

    def verify(self, identity: Identity, *, now: datetime) -> tuple[Identity, str | None]:
        """Raises:
        IdentityError: from the inner verifier. DelegationError: the chain does not verify.
        """
        if isinstance(identity, Identity) and identity.delegation:
            # the chain's principal can supply a sub-agent's human principal: verify it before the inner
            # verifier's "human or service present" rule runs
            identity = self.authority.verify(identity, now=now, require_signed=self.require_signed)
        return self.inner.verify(identity, now=now)
