"""What a tool receives: one `Credential` per mediated action, found through `current_credential()`.

Rules:
- The secret (an access token, or a connection string with a password) is reachable only through
  `Credential.token` / `Credential.dsn`: `repr`, `str`, `describe()` (the receipt block) and the
  credential log never contain it.
- The credential is bound to the execution of one action: the mediator sets it in a context variable
  around the tool call, so a sync tool, an async tool awaited in the same task, and tasks or threads
  started from it (they copy the context) see it; nothing else does.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from aarmor.canonical import format_ts
from aarmor.errors import AarmorError

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.model import Action

__all__ = ["Credential", "CredentialError", "IssueRequest", "binding", "current", "current_credential",
           "operation_scope"]

Kind = Literal["access_token", "postgresql"]


class CredentialError(AarmorError):
    """A credential could not be issued (or a token does not verify); `code` is a stable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def operation_scope(tool: str, key: str, table: tuple[tuple[str, tuple[str, ...]], ...],
                    operation: str) -> tuple[str, ...]:
    """What `credentials.tools.<tool>.<key>` grants `operation`.

    Raises:
        CredentialError: `operation_not_configured` (fail closed: an operation not listed gets nothing).
    """
    granted = dict(table)
    if operation not in granted:
        raise CredentialError("operation_not_configured",
                              f"no credential for operation `{operation or '(none)'}` of `{tool}`: "
                              f"`credentials.tools.{tool}.{key}` lists only " + ", ".join(f"`{op}`" for op in granted))
    return granted[operation]


@dataclass(frozen=True, slots=True)
class IssueRequest:
    """What an issuer needs to mint one credential: the action, the arguments that will run, the scope."""

    credential_id: str
    action: Action
    #: the arguments the tool runs with (after MODIFY, the modified ones)
    parameters: Mapping[str, Any]
    scope: tuple[str, ...]
    ttl: float
    now: datetime


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Credential:
    """A just-in-time credential scoped to one action's operation (AARM R9)."""

    credential_id: str
    kind: Kind
    #: the configured tool name it was issued for
    tool: str
    #: the action it belongs to (and its session)
    action_id: str
    session_id: str
    operation: str
    #: access token: its scopes; postgresql: the table privileges granted
    scope: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    #: access token: `aud`; postgresql: None
    audience: str | None = None
    #: postgresql: the temporary login role; access token: None
    role: str | None = None
    #: access token with `bind_arguments`: the digest of the arguments the tool runs with
    bound_arguments_digest: str | None = None
    _secret: str = field(default="", repr=False)

    @property
    def token(self) -> str:
        """The signed access token (kind `access_token`), to send as `Authorization: Bearer <token>`.

        Raises:
            AttributeError: not an access token.
        """
        if self.kind != "access_token":
            raise AttributeError(f"a {self.kind} credential has no token; use `.dsn`")
        return self._secret

    @property
    def dsn(self) -> str:
        """The connection string of the temporary role (kind `postgresql`).

        Raises:
            AttributeError: not a PostgreSQL credential.
        """
        if self.kind != "postgresql":
            raise AttributeError(f"an {self.kind} credential has no dsn; use `.token`")
        return self._secret

    def describe(self) -> dict[str, Any]:
        """The receipt's `execution.credential` block: what was issued, never the secret."""
        out: dict[str, Any] = {
            "credential_id": self.credential_id, "kind": self.kind, "tool": self.tool,
            "scope": list(self.scope), "issued_at": format_ts(self.issued_at),
            "expires_at": format_ts(self.expires_at),
        }
        if self.audience is not None:
            out["audience"] = self.audience
        if self.role is not None:
            out["role"] = self.role
        if self.bound_arguments_digest is not None:
            out["bound_arguments_digest"] = self.bound_arguments_digest
        return out

    def __repr__(self) -> str:
        return (f"Credential({self.credential_id!r}, kind={self.kind!r}, tool={self.tool!r}, "
                f"scope={list(self.scope)!r}, expires_at={format_ts(self.expires_at)!r})")

    __str__ = __repr__


_current: contextvars.ContextVar[Credential | None] = contextvars.ContextVar("aarmor_credential", default=None)


def current_credential() -> Credential:
    """The credential minted for the action whose tool is running now.

    Raises:
        RuntimeError: no credential here (the tool is not configured under `credentials.tools`, or this
            code does not run inside a mediated tool call).
    """
    cred = _current.get()
    if cred is None:
        raise RuntimeError("no aarmor credential for this call: the tool has no `credentials.tools` entry, or "
                           "this code runs outside a mediated tool call")
    return cred


def current() -> Credential | None:
    """The current credential, or None (for doors that pass it on when there is one)."""
    return _current.get()


@contextlib.contextmanager
def binding(credential: Credential | None) -> Iterator[None]:
    """Make `credential` the current one for the duration of the block (None: leave things as they are)."""
    if credential is None:
        yield
        return
    token = _current.set(credential)
    try:
        yield
    finally:
        _current.reset(token)
