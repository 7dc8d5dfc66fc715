"""Identity revocation (AARM R6 "validate ... freshness and revocation"; docs/identity.md "Revocation").

A revocation names one of `REVOCATION_KINDS` and a value, and is kept in the store (so the CLI, the HTTP
API and every Guard on that store share it):

- `token`: a token id, the `jti` of a verified bearer token (`Identity.token_id`) or of a signed delegation
  token (`DelegationLink.link_id`);
- `subject`: a principal, matched against the human principal (`Identity.human`, the token's subject in
  mode `jwt`), the service identity (`Identity.service`) and every delegator and delegatee of the chain;
- `agent`: an agent, matched against `Identity.agent` and every delegator and delegatee of the chain.

`RevocationCheck` wraps whatever verifier the Guard uses (every identity mode, and a `verifier=` passed to
`Guard`): after the inner verifier accepted the identity, one indexed store read looks for a revocation of
any of its keys, at every call and with no cache, so a revocation written by another process takes effect
on the next decision, and on the re-verification just before an action that waited for an approval or a
deferral runs. A revocation found is `IdentityRevoked` (an `IdentityError`: the mediator's DENY); a store
that cannot be read is a `StoreError`, also a DENY (fail closed).

`revoke` and `unrevoke` are what the CLI and the HTTP API call: they validate the input and write one
revocation plus one history event in one transaction.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aarmor.canonical import format_ts
from aarmor.errors import InputError, Refused
from aarmor.identity import IdentityError, IdentityVerifier
from aarmor.model import Identity
from aarmor.store import REVOCATION_KINDS, Revocation, Store

__all__ = ["REVOCATION_KINDS", "VALUE_PATTERN", "IdentityRevoked", "RevocationCheck", "identity_keys", "revoke",
           "unrevoke"]

#: longest value, reason and author accepted (a `jti` is usually a UUID; a subject an email address)
MAX_VALUE = 1024
MAX_REASON = 2000
MAX_ACTOR = 256

_KIND_NAMES = {"token": "token id", "subject": "subject", "agent": "agent"}
#: a revocation value: no control characters, no white space at either end (in Python's, ECMAScript's and
#: pydantic's sense of white space alike: the HTTP API's schema uses this same pattern)
VALUE_PATTERN = r"^[^\s\x85\ufeff\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x85\ufeff\x00-\x1f\x7f])?$"
_VALUE = re.compile(VALUE_PATTERN.removeprefix("^").removesuffix("$"))


class IdentityRevoked(IdentityError):
    """The identity, or a token or party of its delegation chain, is revoked; `code` is `revoked`."""

    code = "revoked"

    def __init__(self, revocation: Revocation, where: str) -> None:
        r = revocation
        until = f", until {r.until}" if r.until else ""
        super().__init__(f"identity revoked: {_KIND_NAMES[r.kind]} `{r.value}` ({where}; reason: {r.reason}, "
                         f"revoked {r.revoked_at} by {r.revoked_by}{until})")
        self.revocation = revocation


def identity_keys(identity: Identity) -> dict[tuple[str, str], str]:
    """Every `(kind, value)` a revocation of this identity could name, with where it occurs (for the message)."""
    keys: dict[tuple[str, str], str] = {}

    def add(kind: str, value: str | None, where: str) -> None:
        if value:
            keys.setdefault((kind, value), where)

    add("token", identity.token_id, "the identity's token")
    add("subject", identity.human, "the human principal")
    add("subject", identity.service, "the service identity")
    add("agent", identity.agent, "the agent")
    for n, link in enumerate(identity.delegation, 1):
        add("token", link.link_id, f"delegation link {n}")
        for role, party in (("delegator", link.delegator), ("delegatee", link.delegatee)):
            add("agent", party, f"{role} of delegation link {n}")
            add("subject", party, f"{role} of delegation link {n}")
    return keys


class RevocationCheck:
    """An `IdentityVerifier` that refuses revoked identities after `inner` verified them (module doc)."""

    def __init__(self, inner: IdentityVerifier, store: Store) -> None:
        self.inner = inner
        self.store = store
        self.name = str(getattr(inner, "name", type(inner).__name__))  # a duck-typed verifier may lack it

    def verify(self, identity: Identity, *, now: datetime) -> tuple[Identity, str | None]:
        """Raises:
        IdentityError: from the inner verifier. IdentityRevoked: a revocation in force names the identity.
        StoreError: the revocations cannot be read (the mediator fails closed on it).
        """
        verified, flag = self.inner.verify(identity, now=now)
        keys = identity_keys(verified)
        found = self.store.revocation_find(tuple(keys), now=format_ts(now))
        if found is not None:
            raise IdentityRevoked(found, keys[(found.kind, found.value)])
        return verified, flag


def _text(what: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"revocation {what} must be a non-empty string")
    if len(value) > limit:
        raise InputError(f"revocation {what} is longer than {limit} characters")
    return value.strip()


def _value(value: object) -> str:
    text = _text("value", value, MAX_VALUE)
    # an identity never matches " abc": refuse rather than revoke something else
    if not _VALUE.fullmatch(text) or text != value:
        raise InputError("revocation value must not contain control characters nor start or end with white "
                         "space")
    return text


def _kind(kind: object) -> str:
    if kind not in REVOCATION_KINDS:
        raise InputError(f"revocation kind `{kind}` is not one of {', '.join(REVOCATION_KINDS)}")
    return str(kind)


def revoke(store: Store, kind: str, value: str, *, reason: str, by: str, now: datetime,
           until: datetime | None = None) -> tuple[Revocation, bool]:
    """Revoke `kind` = `value` from `now` (until `until`, or for ever). Returns the revocation in force and
    whether this call made it (False: one was already in force, and is kept as it was).

    Raises:
        InputError: unknown kind; empty or too long value, reason or by; control characters or white space
            at either end of the value; `until` without a timezone. Refused (`until_passed`): `until` is not
            after `now`.
        StoreError: the store cannot be written.
    """
    kind = _kind(kind)
    value = _value(value)
    reason = _text("reason", reason, MAX_REASON)
    by = _text("author", by, MAX_ACTOR)
    if until is not None:
        if until.tzinfo is None:
            raise InputError("revocation `until` needs a timezone (e.g. 2026-12-31T00:00:00Z)")
        if until <= now:  # well-formed, but already over: refused as of now (HTTP 409)
            raise Refused("until_passed", f"revocation `until` {format_ts(until)} is not after now "
                                          f"({format_ts(now)})")
    rev = Revocation(kind, value, reason, by, format_ts(now), format_ts(until.astimezone(UTC)) if until else None)
    return store.revocation_put(rev)


def unrevoke(store: Store, kind: str, value: str, *, reason: str, by: str, now: datetime) -> Revocation:
    """Lift the revocation of `kind` = `value` (recorded in the history with `reason` and `by`).

    Raises:
        InputError: bad kind, value, reason or by. NotFound: no such revocation. StoreError.
    """
    from aarmor.errors import NotFound

    kind = _kind(kind)
    value = _value(value)
    lifted = store.revocation_delete(kind, value, actor=_text("author", by, MAX_ACTOR), at=format_ts(now),
                                     reason=_text("reason", reason, MAX_REASON))
    if lifted is None:
        raise NotFound(f"no revocation of {_KIND_NAMES[kind]} `{value}`")
    return lifted

