"""The gateway's Streamable HTTP front (MCP 2025-03-26, 2025-06-18, 2025-11-25), written by hand.

Why not the SDK's server transport: it validates every message into pydantic models, passes them through
memory streams between tasks and answers every request with an SSE response; that cost ~9 ms a call. Here
a message stays the dict the router uses, and a POST is answered directly:

- POST of one JSON-RPC message (a batch only in a session that negotiated 2024-11-05 or 2025-03-26:
  MCP removed batches in 2025-06-18). Notifications and responses alone: 202. Requests: `application/json`
  when the answer is the first message ready for them; `text/event-stream` (SSE written here) as soon as
  anything else for them (progress, logging, a sampling/elicitation/roots request) comes first.
- GET opens the session's one standalone SSE stream, for server messages tied to no open request
  (a second one: 409). DELETE ends the session (its upstreams are stopped before the answer).
- `Mcp-Session-Id` is issued at `initialize`, the only request that may open a session. A session answers
  only to the credential that opened it (another one gets 404, as for an unknown session).
- `MCP-Protocol-Version`, when sent, must be a revision this gateway speaks (400 otherwise); absent, MCP
  says assume 2025-03-26. Accept must name both JSON and SSE on POST (SSE on GET): 406. Content-Type must
  be JSON: 415. Bodies over the limit: 413. On a loopback listener Host (421) and Origin (403) must be
  local (DNS rebinding).
- No resumption (`Last-Event-ID`): events carry no ids, so clients never ask for it.
- Mutual TLS (`gateway.tls.client_ca`, docs/identity.md): the verified client certificate's service is the
  session's service (`verified_by` `mtls`); a token, identity header or principal configured with another
  service is 403. The certificate is part of the credential: its session answers to no other certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aarmor.identity import IdentityError
from aarmor.identity.mtls import CertificateError, ServiceMismatch, bind_service, client_certificate
from aarmor.model import Identity

from .gateway import DELEGATION_HEADER, ORIGINAL_REQUEST_HEADER, Gateway, identity_from
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    Message,
    RemoteError,
    check,
    dumps,
    error,
    is_request,
    is_response,
    parse,
)
from .router import ClientSession

__all__ = ["MAX_BODY", "MAX_OPENING_BODY", "SUPPORTED_VERSIONS", "HttpFront", "serve"]

log = logging.getLogger("aarmor.gateway")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

#: the initialize-handshake revisions (what `MCP-Protocol-Version` may name)
SUPPORTED_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
#: the revisions whose JSON-RPC still allows batches
_BATCH_VERSIONS = ("2024-11-05", "2025-03-26")
#: a POST in a session may carry a large tool argument (the same bound as a stdio line)
MAX_BODY = 64 * 1024 * 1024
#: the body of a POST that opens a session is an `initialize`: small
MAX_OPENING_BODY = 4 * 1024 * 1024
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_ANSWERED = object()
_ENDED = "the session ended (DELETE, or the gateway stopping) before this request was answered"


class _Session:
    """One MCP session: its router, and where each message for the client goes."""

    def __init__(self, sid: str, credential: str) -> None:
        self.sid, self.credential = sid, credential
        self.cs: ClientSession | None = None
        self.init_id: Any = None
        self.protocol_version: str | None = None
        # request id -> the queue of the POST waiting for it (one queue per POST, shared by a batch)
        self.streams: dict[Any, asyncio.Queue[Message | None]] = {}
        self.standalone: asyncio.Queue[Message | None] | None = None
        self.closed = False
        self.header = (b"mcp-session-id", sid.encode())

    async def to_client(self, msg: Message, related: Any) -> None:
        """The router's `send`: a response goes to the POST of its request; anything else to the POST of
        the request it belongs to while that is open, else to the GET stream, else nowhere (MCP allows
        a server message nobody listens for to be lost)."""
        if self.closed:
            return
        if is_response(msg):
            rid = msg["id"]
            if rid == self.init_id:  # the answer to initialize names the revision; later ids may repeat its id
                self.init_id = _ANSWERED
                v = msg["result"].get("protocolVersion") if isinstance(msg.get("result"), dict) else None
                self.protocol_version = v if isinstance(v, str) else None
            q = self.streams.get(rid)  # never the GET stream: MCP forbids responses there
        else:
            q = self.streams.get(related) if related is not None else None
            if q is None:
                q = self.standalone
        if q is None:
            log.debug("gateway: session %s: no stream for %s; dropped", self.sid, msg.get("method", "a response"))
            return
        q.put_nowait(msg)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # every waiting POST and the GET stream end now; the held calls are cancelled (recorded DENY)
        for q in {id(q): q for q in self.streams.values()}.values():
            q.put_nowait(None)
        if self.standalone is not None:
            self.standalone.put_nowait(None)
        if self.cs is not None:
            await self.cs.close()


class HttpFront:
    """The ASGI endpoint: `await front(scope, receive, send)` for every request on the MCP path."""

    def __init__(self, gw: Gateway, *, loopback: bool) -> None:
        self.gw = gw
        self.loopback = loopback
        self.sessions: dict[str, _Session] = {}
        self.stopping = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.close_all()

    async def close_all(self) -> None:
        """End every session (the server is stopping): open streams end, so the server can stop."""
        self.stopping = True
        sessions, self.sessions = list(self.sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        h = _headers(scope)
        method = scope["method"]
        if self.loopback:
            if not _local(h.get("host"), ""):
                return await _error(send, 421, "Misdirected Request: the Host header is not this loopback address")
            if "origin" in h and not (_local(h["origin"], "http://") or _local(h["origin"], "https://")):
                return await _error(send, 403, "Forbidden: the Origin header is not a loopback origin")
        if self.stopping:
            return await _error(send, 503, "the gateway is stopping")
        try:
            identity, credential = self._authenticate(h)
            identity, credential = self._bind_certificate(scope, h, identity, credential)
        except PermissionError as exc:
            return await _error(send, 401, str(exc), headers=[(b"www-authenticate", b'Bearer realm="aarmor"')])
        except (CertificateError, ServiceMismatch) as exc:
            return await _error(send, 403, f"Forbidden: {exc}")
        sid = h.get("mcp-session-id")
        if sid is None:
            if method != "POST":
                return await _error(send, 400, "Bad Request: no Mcp-Session-Id; open a session with initialize")
            return await self._open(h, receive, send, identity, credential)
        sess = self.sessions.get(sid)
        if sess is None or sess.credential != credential:  # another credential's session looks like none
            return await _error(send, 404, "Session not found")
        version = h.get("mcp-protocol-version")
        if version is not None and version not in SUPPORTED_VERSIONS:
            return await _error(send, 400, f"Bad Request: unsupported MCP-Protocol-Version `{version}` "
                                f"(this gateway speaks {', '.join(SUPPORTED_VERSIONS)})", headers=[sess.header])
        if method == "POST":
            await self._post(sess, h, receive, send)
        elif method == "GET":
            await self._get(sess, h, receive, send)
        else:  # DELETE (the route admits no other method)
            self.sessions.pop(sid, None)
            await sess.close()
            await send({"type": "http.response.start", "status": 200, "headers": [sess.header]})
            await send({"type": "http.response.body", "body": b""})

    def _authenticate(self, h: dict[str, str]) -> tuple[Identity, str]:
        cfg = self.gw.config
        auth = h.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            raw = auth[7:].strip()
            digest = hashlib.sha256(raw.encode()).hexdigest()
            for tok in cfg.tokens:
                if tok.sha256 == digest:
                    return identity_from(tok.identity), "token:" + digest
            if self.gw.guard.config.identity_mode == "jwt":
                # the caller's own identity token (OIDC/JWT): verified when a session opens (`_open`) and at
                # every decision; the human principal, roles and scopes come from it
                base = self._claimed(h) or identity_from(cfg.principal)
                return dataclasses.replace(base, token=raw), "jwt:" + digest
            raise PermissionError("unknown bearer token")
        claimed = self._claimed(h)
        if claimed is not None:
            fields = {level: h.get(header.lower()) for level, header in cfg.identity_headers}
            return claimed, "headers:" + json.dumps(fields, sort_keys=True)
        if cfg.tokens or self.gw.guard.config.identity_mode == "jwt":
            raise PermissionError("a bearer token is required")
        return self.gw.stdio_identity(), "principal"

    def _claimed(self, h: dict[str, str]) -> Identity | None:
        """The identity the configured identity headers carry, if any of them is present."""
        fields = {level: h.get(header.lower()) for level, header in self.gw.config.identity_headers}
        if not any(fields.values()):
            return None
        return identity_from({k: v for k, v in fields.items() if v})

    def _bind_certificate(self, scope: dict[str, Any], h: dict[str, str], identity: Identity,
                          credential: str) -> tuple[Identity, str]:
        """With a verified client certificate: its service on the identity, its fingerprint in the credential.

        The service the credential names is a claim to check: a configured token's or the identity headers'
        `service`, or the configured principal's (the stdio default `aarmor-gateway` is no claim).

        Raises:
            CertificateError: see `client_certificate`. ServiceMismatch: a claimed service is not the cert's.
        """
        peer = client_certificate(scope, self.gw.config.tls)
        if peer is None:
            return identity, credential
        if credential == "principal":
            claimed = dict(self.gw.config.principal).get("service")
        elif credential.startswith("headers:"):
            header = dict(self.gw.config.identity_headers).get("service")
            claimed = h.get(header.lower()) if header else None
        else:
            claimed = identity.service
        return bind_service(identity, peer, claimed=claimed), f"{credential}|mtls:{peer.fingerprint}"

    # --- POST ---------------------------------------------------------------------------------
    async def _read(self, h: dict[str, str], receive: Receive, send: Send, limit: int,
                    session: _Session | None) -> Any:
        """The decoded JSON body, or None once an error was answered."""
        extra = [session.header] if session is not None else []
        has_json, has_sse = _accepts(h.get("accept", ""))
        if not (has_json and has_sse):
            await _error(send, 406, "Not Acceptable: the Accept header must name both application/json and "
                         "text/event-stream", headers=extra)
            return None
        if h.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            await _error(send, 415, "Unsupported Media Type: Content-Type must be application/json", headers=extra)
            return None
        body = await _read_body(h, receive, limit)
        if body is None:
            await _error(send, 413, f"Payload Too Large: request body over {limit} bytes", headers=extra)
            return None
        try:
            return parse(body)  # strict: duplicate keys, NaN, overflowing numbers, deep nesting refused
        except RemoteError as exc:
            await _error(send, 400, exc.message, code=PARSE_ERROR, headers=extra)
            return None

    async def _open(self, h: dict[str, str], receive: Receive, send: Send, identity: Identity,
                    credential: str) -> None:
        raw = await self._read(h, receive, send, MAX_OPENING_BODY, None)
        if raw is None:
            return
        if isinstance(raw, list):
            return await _error(send, 400, "initialize must be sent alone, not in a batch")
        try:
            msg = check(raw)
        except RemoteError as exc:
            return await _error(send, 400, exc.message, code=exc.code)
        if msg.get("method") != "initialize" or "id" not in msg:
            if msg.get("method") == "server/discover":
                return await _error(send, 200, "this gateway speaks the initialize handshake: send initialize "
                                    "first", code=METHOD_NOT_FOUND, rid=msg.get("id"))
            return await _error(send, 400, "this gateway speaks the initialize handshake: send initialize first",
                                rid=msg.get("id"))
        if identity.token is not None:  # an identity token: refuse at once what could never act
            try:
                await asyncio.to_thread(self.gw.guard.mediator.verify_identity, identity)
            except IdentityError as exc:
                return await _error(send, 401, str(exc), headers=[(b"www-authenticate", b'Bearer realm="aarmor", '
                                                               b'error="invalid_token"')], rid=msg.get("id"))
        original = h.get(ORIGINAL_REQUEST_HEADER)
        if original is not None:
            original = urllib.parse.unquote(original)
        sess = _Session(uuid.uuid4().hex, credential)
        sess.init_id = msg["id"]
        sess.cs = ClientSession(self.gw, sess.to_client, identity=identity, original_request=original,
                                transport="http", delegation=h.get(DELEGATION_HEADER))
        self.sessions[sess.sid] = sess
        answers = await self._answer(sess, [msg], False, send)
        if not any("result" in a for a in answers):  # initialize failed: the session is of no use
            self.sessions.pop(sess.sid, None)
            await sess.close()

    async def _post(self, sess: _Session, h: dict[str, str], receive: Receive, send: Send) -> None:
        raw = await self._read(h, receive, send, MAX_BODY, sess)
        if raw is None:
            return
        batch = isinstance(raw, list)
        if batch and sess.protocol_version not in _BATCH_VERSIONS:
            return await _error(send, 400, f"JSON-RPC batches are not allowed in protocol version "
                                f"{sess.protocol_version} (MCP removed them in 2025-06-18): send one message "
                                "per POST", headers=[sess.header])
        items = raw if batch else [raw]
        if not items:
            return await _error(send, 400, "invalid request: an empty batch", headers=[sess.header])
        try:
            msgs = [check(m) for m in items]
        except RemoteError as exc:
            return await _error(send, 400, exc.message, code=exc.code, headers=[sess.header])
        rids = [m["id"] for m in msgs if is_request(m)]
        busy = [r for r in rids if r in sess.streams]
        if busy or len(set(rids)) != len(rids):
            return await _error(send, 400, f"request id {(busy or rids)[0]!r} is already in use in this session",
                                rid=(busy or rids)[0], headers=[sess.header])
        await self._answer(sess, msgs, batch, send)

    async def _answer(self, sess: _Session, msgs: list[Message], batch: bool, send: Send) -> list[Message]:
        """Hand `msgs` to the router and answer the POST; returns the answers sent."""
        assert sess.cs is not None
        rids = [m["id"] for m in msgs if is_request(m)]
        q: asyncio.Queue[Message | None] = asyncio.Queue()
        for rid in rids:
            sess.streams[rid] = q
        try:
            for m in msgs:  # a request starts its own task; a notification is forwarded before the 202
                try:
                    await sess.cs.on_client_message(m)
                except Exception as exc:  # a dead upstream pipe must not take the HTTP request with it
                    log.warning("gateway: session %s: forwarding %s failed: %s", sess.sid, m.get("method"), exc)
            if not rids:
                await send({"type": "http.response.start", "status": 202, "headers": [sess.header]})
                await send({"type": "http.response.body", "body": b""})
                return []
            return await self._stream_answers(sess, q, set(rids), batch, send)
        finally:
            for rid in rids:
                if sess.streams.get(rid) is q:
                    del sess.streams[rid]

    @staticmethod
    async def _stream_answers(sess: _Session, q: asyncio.Queue[Message | None], pending: set[Any], batch: bool,
                              send: Send) -> list[Message]:
        answers: list[Message] = []
        streaming = False
        while pending:
            item = await q.get()
            if item is None:  # the session ended: each request still gets an answer
                item = error(next(iter(pending)), INTERNAL_ERROR, _ENDED)
                q.put_nowait(None)
            if is_response(item) and item["id"] in pending:
                pending.discard(item["id"])
                answers.append(item)
                if not streaming:
                    continue
            elif not streaming:
                # something for the client before the answer: switch to SSE (and send what was held)
                streaming = True
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform"),
                    (b"x-accel-buffering", b"no"), sess.header]})
                for a in answers:
                    await send({"type": "http.response.body", "body": _event(a), "more_body": True})
            await send({"type": "http.response.body", "body": _event(item), "more_body": True})
        if streaming:
            await send({"type": "http.response.body", "body": b""})
        else:
            body = dumps(answers) if batch else dumps(answers[0])
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), sess.header]})
            await send({"type": "http.response.body", "body": body})
        return answers

    # --- GET ----------------------------------------------------------------------------------
    async def _get(self, sess: _Session, h: dict[str, str], receive: Receive, send: Send) -> None:
        if not _accepts(h.get("accept", ""))[1]:
            return await _error(send, 406, "Not Acceptable: the Accept header must name text/event-stream",
                                headers=[sess.header])
        if sess.standalone is not None:
            return await _error(send, 409, "Conflict: this session already has its GET stream",
                                headers=[sess.header])
        q = sess.standalone = asyncio.Queue()

        async def until_disconnect() -> None:  # the client leaving is the only other way this stream ends
            while (await receive())["type"] != "http.disconnect":
                pass
            q.put_nowait(None)

        watcher = asyncio.ensure_future(until_disconnect())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform"),
                (b"x-accel-buffering", b"no"), sess.header]})
            await send({"type": "http.response.body", "body": b": stream open\n\n", "more_body": True})
            while (item := await q.get()) is not None:
                await send({"type": "http.response.body", "body": _event(item), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            if sess.standalone is q:
                sess.standalone = None


def serve(gw: Gateway, host: str, port: int, path: str, *, loopback: bool) -> None:
    """Run the HTTP front under uvicorn until SIGINT/SIGTERM (uvicorn's default keep-alive); over HTTPS
    with `gateway.tls`.

    Raises:
        ConfigError: `gateway.tls` names a certificate, key, CA or CRL that cannot be used.
    """
    import uvicorn

    from aarmor.tls import uvicorn_config

    app = gw.http_app(path, loopback=loopback)
    front: HttpFront = app.state.front

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # uvicorn waits for open responses before the lifespan ends: end the sessions (their SSE
            # streams and held calls) first, or an open GET stream would keep the gateway running
            await front.close_all()
            await super().shutdown(sockets)

    config = uvicorn_config(app, host=host, port=port, tls=gw.config.tls, section="gateway", log_level="warning",
                            lifespan="on")
    _Server(config).run()


def _event(msg: Message) -> bytes:
    # `dumps` never writes a raw newline, so one `data:` line is the whole message
    return b"event: message\ndata: " + dumps(msg) + b"\n\n"


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        name, value = k.decode("latin-1").lower(), v.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _local(value: str | None, scheme: str) -> bool:
    """Host `127.0.0.1[:port]`, `localhost[:port]`, `[::1][:port]` (with `scheme` first, for an Origin)."""
    if not value or not value.startswith(scheme):
        return False
    rest = value[len(scheme):]
    return any(rest == h or (rest.startswith(h + ":") and rest[len(h) + 1:].isdigit()) for h in _LOCAL_HOSTS)


def _accepts(accept: str) -> tuple[bool, bool]:
    """(JSON accepted, SSE accepted), wildcards included (RFC 9110 media ranges)."""
    types = {t.split(";")[0].strip().lower() for t in accept.split(",")}
    anything = "*/*" in types
    return (anything or bool(types & {"application/json", "application/*"}),
            anything or bool(types & {"text/event-stream", "text/*"}))


async def _read_body(h: dict[str, str], receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None when it is over `limit` (told by Content-Length, or found reading)."""
    declared = h.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _error(send: Send, status: int, message: str, *, code: int = INVALID_REQUEST, rid: Any = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = dumps(error(rid, code, message))
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
