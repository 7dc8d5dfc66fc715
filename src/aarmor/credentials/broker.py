"""The credential broker (AARM R9): per mediated action, a credential scoped to its operation, briefly valid.

The mediator calls `issue` just before a tool runs (after the decision, any approval or deferral, and the
identity re-check) and `release` right after it returns or fails. Which tool gets what is configuration
(`credentials.tools`, docs/credentials.md); a tool not listed gets nothing and runs as before.

Rules:
- Fail closed: a credential that cannot be issued, or whose issuance cannot be logged, means the action
  does not run (the mediator records a DENY with the error). An operation with no scope or privileges
  configured gets no credential, so it is denied too.
- Every credential is logged in the store's credential log: `issued`, then `expired` (when its ttl ran
  out before release) and `released` or `release_failed`. The log and the receipt carry ids, scope and
  times, never the secret.
- Expiry is enforced by the credential itself (a token's `exp`, a role's VALID UNTIL) and, for kinds that
  can be switched off (PostgreSQL roles), by the broker at `expires_at` if the action is still running.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from aarmor.canonical import format_ts
from aarmor.config import AccessTokenToolConfig, CredentialsConfig
from aarmor.credentials.model import Credential, CredentialError, IssueRequest
from aarmor.model import Action
from aarmor.store import CredentialEvent, Store

__all__ = ["CredentialBroker", "Issuer"]

log = logging.getLogger("aarmor.credentials")


class Issuer(Protocol):
    """One kind of credential for one configured tool."""

    kind: str
    #: True when issuing or releasing waits on the network (async callers then use a worker thread)
    blocking: bool

    def scope(self, operation: str) -> tuple[str, ...]: ...
    def issue(self, req: IssueRequest) -> Credential: ...
    def expire(self, credential: Credential) -> None: ...
    def release(self, credential: Credential) -> str | None: ...
    def close(self) -> None: ...


class CredentialBroker:
    """Issues, logs, expires and releases just-in-time credentials. Built by `Guard` from `credentials`."""

    def __init__(self, config: CredentialsConfig, *, store: Store, clock: Callable[[], datetime],
                 keyring: Any = None) -> None:
        """`keyring`: the `Keyring` that signs access tokens; opened from `config.keys` when None and needed.

        Raises:
            SigningKeyError: an access-token tool is configured and the credential keyring cannot be opened.
        """
        self._cfg = config
        self._store = store
        self._clock = clock
        self.keyring = keyring
        self._issuers: dict[str, Issuer] = {}
        for name, tool in config.tools:
            if isinstance(tool, AccessTokenToolConfig):
                from aarmor.credentials.access_token import AccessTokenIssuer

                if self.keyring is None:
                    from aarmor.receipts.keys import Keyring

                    if config.keys is None:
                        raise ValueError("`credentials.keys` names no directory for the access-token signing keys")
                    self.keyring = Keyring.open(config.keys)
                self._issuers[name] = AccessTokenIssuer(name, tool, self.keyring, config.issuer)
            else:
                from aarmor.credentials.postgres import PostgresRoleIssuer

                self._issuers[name] = PostgresRoleIssuer(name, tool)
        self._expiry = _ExpiryTimer(self._expire)
        self._closed = False

    @property
    def enabled(self) -> bool:
        return bool(self._issuers)

    def issuer_for(self, action: Action) -> Issuer | None:
        """The issuer configured for the action's `tool.operation`, else for its `tool`; None: no credential."""
        found = self._cfg.for_tool(action.name, action.tool)
        return self._issuers[found[0]] if found else None

    def issue(self, action: Action, parameters: Mapping[str, Any]) -> Credential | None:
        """The credential for this action (None: its tool gets none). `parameters`: what the tool runs with.

        Raises:
            CredentialError: no scope for the operation, the issuer failed, or the issuance could not be
                logged (then the credential is released again first).
            SigningKeyError: the access-token key cannot sign.
        """
        if self._closed:
            raise RuntimeError("credential broker already closed")
        issuer = self.issuer_for(action)
        if issuer is None:
            return None
        found = self._cfg.for_tool(action.name, action.tool)
        assert found is not None
        tool = found[1]
        ttl = tool.ttl or self._cfg.ttl
        req = IssueRequest(credential_id="cred_" + uuid.uuid4().hex, action=action, parameters=parameters,
                           scope=issuer.scope(action.operation), ttl=ttl, now=self._clock())
        cred = issuer.issue(req)
        try:
            self._log(cred, "issued", None)
        except Exception as exc:  # unlogged use would break R9: take it back, then refuse
            self._release_quietly(issuer, cred)
            raise CredentialError("log_failed", f"credential issuance could not be logged: {exc}") from exc
        self._expiry.add(cred, issuer, ttl)
        return cred

    def blocking(self, action: Action) -> bool:
        issuer = self.issuer_for(action)
        return issuer is not None and issuer.blocking

    def release(self, credential: Credential, *, outcome: str) -> dict[str, Any]:
        """End the credential's use (after the tool ran); never raises.

        `outcome` says how the tool's run ended (logged as the credential's use). Returns the keys the
        receipt's credential block gains: `released_at`, and `release_error` or `release_note`.
        """
        issuer = self._issuers.get(credential.tool)
        self._expiry.discard(credential.credential_id)
        out: dict[str, Any] = {}
        try:
            assert issuer is not None
            note = issuer.release(credential)
            out["released_at"] = format_ts(self._clock())
            if note:
                out["release_note"] = note
            event, detail = "released", f"{outcome}" + (f"; {note}" if note else "")
        except Exception as exc:
            out["released_at"] = None
            out["release_error"] = f"{type(exc).__name__}: {exc}"
            log.error("credential %s (%s) not released: %s", credential.credential_id, credential.kind, exc)
            event, detail = "release_failed", f"{outcome}; {type(exc).__name__}: {exc}"
        try:
            self._log(credential, event, detail)
        except Exception:
            log.exception("could not log the release of credential %s", credential.credential_id)
        return out

    def sweep(self) -> dict[str, list[str]]:
        """Drop leftovers of crashed brokers now (PostgreSQL roles past VALID UNTIL). Tool name -> dropped."""
        out: dict[str, list[str]] = {}
        for name, issuer in self._issuers.items():
            sweep = getattr(issuer, "sweep", None)
            if sweep is not None:
                out[name] = sweep()
        return out

    def export_public(self, fmt: str = "jwks") -> str:
        """The public keys tool servers verify access tokens with (`jwks` or `pem`).

        Raises:
            RuntimeError: no access-token tool is configured (there is no credential keyring).
        """
        if self.keyring is None:
            raise RuntimeError("no access-token tool is configured, so there is no credential signing key")
        return str(self.keyring.export_public(fmt))

    def _expire(self, credential: Credential, issuer: Issuer) -> None:
        try:
            issuer.expire(credential)
            self._log(credential, "expired", "ttl ran out before the action ended")
        except Exception as exc:
            log.error("credential %s could not be expired: %s", credential.credential_id, exc)

    def _release_quietly(self, issuer: Issuer, credential: Credential) -> None:
        try:
            issuer.release(credential)
        except Exception as exc:
            log.error("credential %s could not be taken back: %s", credential.credential_id, exc)

    def _log(self, cred: Credential, event: str, detail: str | None) -> None:
        self._store.credential_event(CredentialEvent(
            credential_id=cred.credential_id, event=event, at=format_ts(self._clock()),
            session_id=cred.session_id, action_id=cred.action_id, tool=cred.tool, kind=cred.kind,
            scope=cred.scope, expires_at=format_ts(cred.expires_at), detail=detail))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._expiry.close()
        for issuer in self._issuers.values():
            try:
                issuer.close()
            except Exception:
                log.exception("closing the %s issuer", issuer.kind)


class _ExpiryTimer:
    """One thread that calls `on_expiry` for every credential still in use when its ttl runs out.

    Only issuers that can switch a credential off need it (PostgreSQL); access tokens expire by themselves.
    The thread starts with the first such credential.
    """

    def __init__(self, on_expiry: Callable[[Credential, Issuer], None]) -> None:
        self._on_expiry = on_expiry
        self._cond = threading.Condition()
        self._heap: list[tuple[float, str]] = []
        self._live: dict[str, tuple[Credential, Issuer]] = {}
        self._thread: threading.Thread | None = None
        self._stop = False

    def add(self, credential: Credential, issuer: Issuer, ttl: float) -> None:
        if not issuer.blocking:
            return
        with self._cond:
            self._live[credential.credential_id] = (credential, issuer)
            heapq.heappush(self._heap, (time.monotonic() + ttl, credential.credential_id))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="aarmor-credential-expiry", daemon=True)
                self._thread.start()
            self._cond.notify()

    def discard(self, credential_id: str) -> None:
        with self._cond:
            self._live.pop(credential_id, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                if self._stop:
                    return
                _, cid = heapq.heappop(self._heap)
                due = self._live.pop(cid, None)
            if due is not None:
                self._on_expiry(*due)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
