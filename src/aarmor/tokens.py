"""Bearer tokens for the HTTP API, the approver page and the approver CLI.

A token is shown once when created; the store keeps only `sha256:` of it, so a copy of the store does not
hand out credentials. The token's name is the principal it authenticates (an approver's name is what
approval receipts record). Roles: `agent` (evaluate and mediate), `approver` (decide approvals and
resolve deferrals, read what they need for it), `admin` (everything, including token management).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime

from aarmor.canonical import format_ts
from aarmor.errors import AuthError, InputError
from aarmor.store import ApiToken, Store

__all__ = ["ROLES", "authenticate", "create_token", "token_digest"]

ROLES = ("agent", "approver", "admin")
_PREFIX = "aat_"


def token_digest(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(store: Store, name: str, role: str, *, now: datetime) -> tuple[ApiToken, str]:
    """Create a token for principal `name`; returns the stored record and the secret (shown once).

    Raises:
        InputError: empty name or unknown role.
    """
    if role not in ROLES:
        raise InputError(f"role `{role}` is not one of {', '.join(ROLES)}")
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise InputError("token name must be a non-empty string of at most 256 characters")
    secret = _PREFIX + secrets.token_urlsafe(32)
    tok = ApiToken("tok_" + uuid.uuid4().hex[:16], token_digest(secret), name.strip(), role, format_ts(now))
    store.token_put(tok)
    return tok, secret


def authenticate(store: Store, secret: str | None, *, roles: tuple[str, ...] = ROLES) -> ApiToken:
    """The token record for `secret`, if it exists, is not revoked and has one of `roles` (admin always may).

    Raises:
        AuthError: missing, malformed, unknown or revoked token, or a role not allowed here.
    """
    if not secret:
        raise AuthError("no token given")
    if not secret.startswith(_PREFIX) or len(secret) > 128:
        raise AuthError("malformed token")
    digest = token_digest(secret)
    tok = store.token_by_digest(digest)
    if tok is None or not hmac.compare_digest(tok.digest, digest):
        raise AuthError("unknown token")
    if tok.revoked_at is not None:
        raise AuthError(f"token `{tok.token_id}` was revoked at {tok.revoked_at}")
    if tok.role != "admin" and tok.role not in roles:
        raise AuthError(f"token `{tok.token_id}` has role `{tok.role}`; this needs {' or '.join(roles)}")
    return tok
