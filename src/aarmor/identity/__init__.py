"""Identity binding (AARM R6): the seam token verification will fill.

`IdentityVerifier.verify` is called at submission and again just before a waited-for action runs
(STEP_UP/DEFER: AARM 2.5 "re-validate before executing"). `ClaimedIdentityVerifier` accepts the claims
as given (`verified_by="none"`) and enforces the binding rule: an action needs a human principal or a
service identity, else DENY (`enforce`) or recorded-and-allowed-on (`flag`). `aarmor.identity.tokens.
TokenVerifier` (mode `jwt`) verifies a bearer token on `Identity.token` against a JWKS (docs/identity.md).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Literal, Protocol

from aarmor.errors import AarmorError
from aarmor.model import Identity

__all__ = ["ClaimedIdentityVerifier", "IdentityError", "IdentityVerifier"]


class IdentityError(AarmorError):
    """The identity cannot be bound to the action (missing, expired, revoked, unverifiable)."""


class IdentityVerifier(Protocol):
    name: str

    def verify(self, identity: Identity, *, now: datetime) -> tuple[Identity, str | None]:
        """Return the identity to bind (possibly enriched) and a flag note, or raise IdentityError."""


class ClaimedIdentityVerifier:
    name = "claimed"

    def __init__(self, mode: Literal["enforce", "flag"] = "enforce") -> None:
        if mode not in ("enforce", "flag"):
            raise ValueError(f"identity mode `{mode}` is not one of enforce, flag")
        self.mode = mode

    def verify(self, identity: Identity, *, now: datetime) -> tuple[Identity, str | None]:
        """Raises:
        IdentityError: (enforce mode) neither a human principal nor a service identity is present.
        """
        if not isinstance(identity, Identity):
            raise IdentityError(f"identity must be an aarmor.Identity, found {type(identity).__name__}")
        if identity.human or identity.service:
            return identity, None
        note = "no human principal or service identity"
        if self.mode == "enforce":
            raise IdentityError(f"identity: {note}; AARM R6 requires one (identity mode `enforce`)")
        return dataclasses.replace(identity, verified_by="none-flagged"), f"{note} (identity mode `flag`)"
