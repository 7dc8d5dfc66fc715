"""The sessions the HTTP door holds open, and who may use them.

Rules:
- A session created through the API belongs to the principal (token name) that created it; only that
  principal or an admin may mediate, evaluate, update context or close it. The owner is recorded in the
  session's own hash-chained log as `context.api_principal` (source `aarmor-server`), so it survives a
  restart and policies may use it; the context route refuses to overwrite it.
- A session id the server does not hold is resumed from the store (`guard.session(session_id=...)`) with
  the identity its `session_start` entry recorded; a session that ended is 409, an unknown id 404.
- A session that was not created through the API (no recorded principal) is open to admins only.
- Mutual TLS (`server.tls.client_ca`, docs/identity.md): a session opened over a connection with a client
  certificate has that certificate's service (`verified_by` `mtls`); a body claiming another service is 403
  `service_mismatch`. A connection whose certificate names another service than the session's, or a
  connection without a certificate on a session a certificate vouched for, may not use it (403).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aarmor.errors import InputError, NotFound
from aarmor.identity import IdentityError
from aarmor.identity.delegation import links_from_tokens
from aarmor.identity.mtls import MTLS, PeerCertificate, ServiceMismatch, bind_service
from aarmor.model import Identity
from aarmor.server.http import ApiError
from aarmor.server.models import SessionIn
from aarmor.store import ApiToken

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.adapters.sdk import Session
    from aarmor.guard import Guard

__all__ = ["API_PRINCIPAL", "SOURCE", "SessionRegistry"]

API_PRINCIPAL = "api_principal"
SOURCE = "aarmor-server"


@dataclass(eq=False)
class _Entry:
    session: Session
    owner: str | None


class SessionRegistry:
    """Open sessions by id (in this process), resumed from the store on first use after a restart."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def create(self, tok: ApiToken, body: SessionIn, peer: PeerCertificate | None = None) -> Session:
        """Start a new session owned by `tok`'s principal (its service: `peer`'s, when the connection has a
        verified client certificate).

        Raises:
            ApiError: 409 the chosen id exists already; 403 the body claims another service than `peer`'s.
            InputError: the guard refused the identity or request text (422).
        """
        sid = body.session_id
        if sid is not None and (sid in self._entries or self._guard.store.log_head(sid) is not None):
            raise ApiError(409, "session_exists", f"session `{sid}` exists; use it by id (it resumes by itself)")
        i = body.identity
        try:
            links = links_from_tokens(i.delegation)
        except IdentityError as exc:
            raise ApiError(403, "identity_refused", f"identity.delegation: {exc}") from exc
        identity = Identity(human=i.human, service=i.service or tok.name, agent=i.agent, roles=i.roles,
                            scopes=i.scope, token=i.token, delegation=links)
        if peer is not None:
            try:
                identity = bind_service(identity, peer, claimed=i.service)
            except ServiceMismatch as exc:
                raise ApiError(403, "service_mismatch", str(exc)) from exc
        if i.token is not None or links:  # refuse now what could never act, with the precise reason
            try:
                self._guard.mediator.verify_identity(identity)
            except IdentityError as exc:
                raise ApiError(403, "identity_refused", str(exc)) from exc
        session = self._guard.session(identity=identity, original_request=body.original_request, session_id=sid,
                                      intent_classification=body.intent_classification)
        # AARM R6: the authenticated API principal goes into the session's chained log
        session.set_context(API_PRINCIPAL, tok.name, source=SOURCE)
        with self._lock:
            self._entries[session.session_id] = _Entry(session, tok.name)
        return session

    def get(self, sid: str, tok: ApiToken, peer: PeerCertificate | None = None) -> Session:
        """The open session `sid` if `tok`, over a connection with client certificate `peer`, may use it.

        Raises:
            ApiError: 404 unknown session, 403 another principal's session or another service's (mutual TLS),
                409 the session has ended.
            ChainError: the stored log of a session being resumed does not verify.
        """
        entry = self._entries.get(sid) or self._resume(sid)
        if tok.role != "admin" and (entry.owner is None or entry.owner != tok.name):
            raise ApiError(403, "not_owner", f"session `{sid}` belongs to another principal")
        _check_service(sid, entry.session.identity, peer)
        return entry.session

    def owner(self, sid: str) -> str | None:
        """The principal owning `sid` (None: unknown here, or not created through the API)."""
        entry = self._entries.get(sid)
        if entry is None:
            try:
                entry = self._resume(sid)
            except (ApiError, NotFound, InputError):
                return None
        return entry.owner

    def close(self, sid: str, tok: ApiToken, peer: PeerCertificate | None = None) -> None:
        session = self.get(sid, tok, peer)
        session.close()
        with self._lock:
            self._entries.pop(sid, None)

    def _resume(self, sid: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(sid)
            if entry is not None:
                return entry
            store = self._guard.store
            records = list(store.read_log(sid))
            first = records[0] if records else None
            if first is None or first.kind != "session_start":
                raise ApiError(404, "not_found", f"no session `{sid}`")
            owner = None
            for rec in records:
                body = rec.body
                if rec.kind == "context_value" and body.get("name") == API_PRINCIPAL and body.get("source") == SOURCE:
                    owner = str(body.get("value"))
            try:
                identity = Identity.from_json(first.body.get("identity") or {})
                session = self._guard.session(identity=identity, session_id=sid)
            except InputError as exc:
                raise ApiError(409, "session_ended", str(exc)) from exc
            except (TypeError, KeyError) as exc:
                raise ApiError(409, "session_unreadable", f"session `{sid}` cannot be resumed: {exc}") from exc
            entry = self._entries[sid] = _Entry(session, owner)
            return entry

    def forget(self) -> list[Session]:
        """Drop every open session (server shutdown); returns them."""
        with self._lock:
            out = [e.session for e in self._entries.values()]
            self._entries.clear()
        return out


def _check_service(sid: str, identity: Identity, peer: PeerCertificate | None) -> None:
    """A connection acts only as the service its client certificate names (see the module rules)."""
    if peer is not None and identity.service != peer.service:
        raise ApiError(403, "service_mismatch", f"session `{sid}` is service `{identity.service}`'s; this "
                       f"connection's client certificate `{peer.subject}` vouches for `{peer.service}`")
    if peer is None and MTLS in identity.verified_by.split("+"):
        raise ApiError(403, "service_mismatch", f"session `{sid}` was opened with the client certificate of "
                       f"service `{identity.service}`; this connection presents no client certificate")
