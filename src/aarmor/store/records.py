"""Rows the stores keep: context log entries and signed receipts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "CREDENTIAL_EVENTS",
    "GENESIS",
    "RECOVERED",
    "REVOCATION_KINDS",
    "ApiToken",
    "CredentialEvent",
    "InflightRecord",
    "LogRecord",
    "PendingRecord",
    "ReceiptRecord",
    "Revocation",
    "RevocationEvent",
    "TreeHead",
]

#: previous-hash of the first entry of every chain
GENESIS = "sha256:" + "0" * 64

#: what an identity revocation names (docs/identity.md "Revocation"): a token id (`jti` of a bearer or
#: delegation token), a subject (a human principal or a service identity) or an agent
REVOCATION_KINDS = ("token", "subject", "agent")


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One entry of a session's context log. `entry_hash` chains it to `prev_hash` (see aarmor.context.chain)."""

    session_id: str
    seq: int
    kind: str
    body: dict[str, Any]
    recorded_at: str
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    """One signed receipt with the columns it is indexed by (AARM 2.7 storage)."""

    receipt_id: str
    session_id: str
    seq: int
    action_id: str
    timestamp: str
    tool: str
    operation: str
    decision: str
    policy_id: str | None
    human: str | None
    receipt_hash: str
    body: dict[str, Any]

    @property
    def prev_receipt_hash(self) -> str:
        return str(self.body.get("prev_receipt_hash", ""))


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A STEP_UP approval or a DEFER deferral waiting for resolution (AARM 2.5, 2.6), shared between
    processes through the store.

    `version` is the compare-and-set counter: every change goes through `Store.pending_update` with the
    version it read, so two approvers (or an approver and the timeout) cannot both win.
    `owner` names the process whose caller waits; `lease_until` is its heartbeat: an item whose lease ran
    out belongs to a caller that died (it ends as DENY on recovery). Times are RFC 3339 UTC strings.
    """

    item_id: str
    kind: str  # "approval" | "deferral"
    session_id: str
    action_id: str
    status: str
    created_at: str
    deadline: str
    owner: str
    lease_until: str
    body: dict[str, Any]
    outcome: dict[str, Any] | None = None
    version: int = 0


#: the owner an in-flight action passes to once crash recovery recorded its end: a tombstone, so that a late
#: outcome from the process that was taken for dead is refused instead of becoming a second outcome
RECOVERED = "recovered"


@dataclass(frozen=True, slots=True)
class InflightRecord:
    """An action whose `action_requested` entry is committed and whose outcome is not (yet).

    Written in the same transaction as the requested entry and removed in the one that records the outcome
    (`Store.append_all`), so crash recovery reads these rows instead of scanning every log. `owner` is the
    Guard that mediates it (`Store.owner`); it stays alive while its lease (`Store.owner_renew`) is renewed.
    """

    session_id: str
    action_id: str
    log_seq: int
    owner: str
    requested_at: str


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer credential for the HTTP API and the approver CLI; only its digest is stored."""

    token_id: str
    digest: str
    name: str
    role: str  # "agent" | "approver" | "admin"
    created_at: str
    revoked_at: str | None = None


@dataclass(frozen=True, slots=True)
class Revocation:
    """An identity revocation in force (AARM R6): actions bound to `kind` = `value` are DENY.

    Not to be confused with `ApiToken.revoked_at`, which revokes the server's own API credentials.
    `until` (RFC 3339 UTC, `format_ts` shape, or None: for ever) ends the revocation itself, e.g. once the
    revoked token has expired anyway. Times are fixed-width `format_ts` strings, so they compare as text.
    """

    kind: str  # one of REVOCATION_KINDS
    value: str
    reason: str
    revoked_by: str
    revoked_at: str
    until: str | None = None

    def in_force(self, now: str) -> bool:
        """Whether the revocation applies at `now` (a `format_ts` string)."""
        return self.until is None or self.until > now

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RevocationEvent:
    """One line of the append-only revocation history: a revocation made (`revoke`) or lifted (`unrevoke`)."""

    seq: int
    event: str  # "revoke" | "unrevoke"
    kind: str
    value: str
    reason: str
    actor: str
    at: str
    until: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: what happens to a just-in-time credential, in order: issued, then perhaps expired (its ttl ran out while
#: the action ran), then released (the tool's run ended and the credential was taken back) or release_failed
CREDENTIAL_EVENTS = ("issued", "expired", "released", "release_failed")


@dataclass(frozen=True, slots=True)
class CredentialEvent:
    """One line of the credential log (AARM R9: issuance and use logged). Never holds the secret."""

    credential_id: str
    event: str  # one of CREDENTIAL_EVENTS
    at: str
    session_id: str
    action_id: str
    tool: str
    kind: str  # "access_token" | "postgresql"
    scope: tuple[str, ...]
    expires_at: str
    #: released: how the tool's run ended; release_failed: the error
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed tree head of the receipt transparency log (aarmor.receipts.transparency, docs/transparency.md).

    `root_hash` (hex) is the RFC 6962 Merkle tree hash of the first `tree_size` receipt leaves; `signature`
    (base64 Ed25519 by `key_id`) covers `aarmor.receipts.transparency.tree_head_signing_bytes`. The store
    keeps every head it published, append-only, in publication order.
    """

    tree_size: int
    root_hash: str
    timestamp: str
    key_id: str
    signature: str
