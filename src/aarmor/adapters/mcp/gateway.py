"""The MCP gateway: upstream MCP servers presented as one, with every `tools/call` mediated.

Two fronts share `ClientSession` (router.py):
- stdio: one client (a desktop app or IDE started us); identity = the configured `principal`.
- Streamable HTTP: many clients, each an MCP session (`Mcp-Session-Id`) with its own upstream connections
  and its own aarmor session. Identity from a configured bearer token (by SHA-256), else from configured
  identity headers, else - only when no token is configured - the `principal`. A session answers only to
  the credential that opened it. The SDK's server transport handles the HTTP framing (POST, SSE, GET
  stream, DELETE); the gateway feeds it plain messages.

The user's original request reaches the session at `initialize`: `params._meta["aarmor/original_request"]`
or the `X-Aarmor-Original-Request` header (percent-encoded UTF-8) on the initialize POST. A delegation
chain can come the same way in `_meta["aarmor/delegation"]` (a list of links, see `DelegationLink`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aarmor.config import GatewayConfig, UpstreamConfig
from aarmor.errors import InputError
from aarmor.model import DelegationLink, Identity

from .jsonrpc import (
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    LineTooLong,
    Message,
    RemoteError,
    dumps,
    error,
    loads,
    read_messages,
)
from .router import ClientSession
from .tools import ToolHandler
from .upstream import MAX_LINE_BYTES

__all__ = ["ORIGINAL_REQUEST_HEADER", "ORIGINAL_REQUEST_META", "Gateway"]

log = logging.getLogger("aarmor.gateway")

ORIGINAL_REQUEST_META = "aarmor/original_request"
DELEGATION_META = "aarmor/delegation"
ORIGINAL_REQUEST_HEADER = "x-aarmor-original-request"
#: the body of a POST that opens an HTTP session is read whole to check it is `initialize`
_MAX_OPENING_BODY = 4 * 1024 * 1024


def identity_from(fields: tuple[tuple[str, Any], ...] | dict[str, Any], **defaults: Any) -> Identity:
    d = {**defaults, **dict(fields)}
    return Identity(human=d.get("human"), service=d.get("service"), agent=d.get("agent"),
                    roles=tuple(d.get("roles") or ()), scopes=tuple(d.get("scopes") or ()))


class Gateway:
    """Shared by every client connection: the guard (policy, store, keys) and the gateway settings."""

    def __init__(self, guard: Any, config: GatewayConfig | None = None) -> None:
        self.guard = guard
        self.config = config or guard.config.gateway
        if not self.config.upstreams:
            raise InputError("gateway: no upstream MCP servers configured (`gateway.upstreams` in the "
                             "configuration, or `aarmor gateway -- COMMAND ARGS...`)")
        self.upstream_configs: tuple[UpstreamConfig, ...] = self.config.upstreams

    def tool_handler(self, cs: ClientSession) -> ToolHandler:
        return ToolHandler(cs, hide_denied=self.config.hide_denied_tools,
                           progress_interval=self.config.progress_interval, policy=lambda: self.guard.policy)

    def open_session(self, cs: ClientSession, meta: dict[str, Any]) -> Any:
        """The aarmor session of one client connection, opened at its `initialize`."""
        identity = cs.identity
        chain = meta.get(DELEGATION_META)
        if chain is not None:
            if not isinstance(chain, list):
                raise RemoteError(-32602, f"`_meta.{DELEGATION_META}` must be a list of delegation links")
            try:
                links = tuple(DelegationLink.from_json(x) for x in chain)
            except Exception as exc:
                raise RemoteError(-32602, f"`_meta.{DELEGATION_META}`: {exc}") from None
            identity = Identity(human=identity.human, service=identity.service, agent=identity.agent,
                                roles=identity.roles, scopes=identity.scopes, delegation=links)
        original = cs.original_request
        if original is None and isinstance(meta.get(ORIGINAL_REQUEST_META), str):
            original = meta[ORIGINAL_REQUEST_META]
        try:
            return self.guard.session(identity=identity, original_request=original)
        except InputError as exc:
            raise RemoteError(-32602, f"aarmor: {exc}") from None

    def stdio_identity(self) -> Identity:
        return identity_from(self.config.principal, service="aarmor-gateway")

    # --- stdio front ----------------------------------------------------------------------------
    async def serve_stdio(self) -> None:
        """Serve one client on this process's stdin and stdout until stdin closes."""
        loop = asyncio.get_running_loop()
        # Protocol bytes only on the real stdout: anything else printed goes to stderr instead.
        out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        w_transport, w_protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, out)
        writer = asyncio.StreamWriter(w_transport, w_protocol, None, loop)
        lock = asyncio.Lock()

        async def send(msg: Message, _related: Any) -> None:
            async with lock:
                writer.write(dumps(msg) + b"\n")
                await writer.drain()

        cs = ClientSession(self, send, identity=self.stdio_identity(), transport="stdio")
        main = asyncio.current_task()

        def terminate() -> None:
            # SIGTERM: the upstreams run in their own process groups and would not get it; stop them
            # first, then end (held calls are cancelled, so they are recorded as DENY on the way out)
            cs.kill_upstreams()
            if main is not None:
                main.cancel()

        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, terminate)
        try:
            async for item in read_messages(reader):
                if isinstance(item, RemoteError):
                    await send(error(None, item.code, item.message), None)
                else:
                    await cs.on_client_message(item)
        except LineTooLong:
            await send(error(None, PARSE_ERROR, f"message over {MAX_LINE_BYTES} bytes"), None)
        finally:
            await cs.close()
            with contextlib.suppress(Exception):
                w_transport.close()

    # --- Streamable HTTP front ------------------------------------------------------------------
    def http_app(self, path: str = "/mcp", *, loopback: bool = True) -> Any:
        """A Starlette app serving the MCP endpoint at `path` (POST, GET and DELETE)."""
        from starlette.applications import Starlette
        from starlette.routing import Route

        front = _HttpFront(self, loopback=loopback)

        @contextlib.asynccontextmanager
        async def lifespan(_app: Any) -> AsyncIterator[None]:
            async with front.running():
                yield

        class _Endpoint:  # a raw ASGI endpoint: the SDK transport writes the response itself
            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                await front.handle(scope, receive, send)

        return Starlette(routes=[Route(path, _Endpoint(), methods=["GET", "POST", "DELETE"])],
                         lifespan=lifespan)


class _HttpFront:
    def __init__(self, gw: Gateway, *, loopback: bool) -> None:
        self.gw = gw
        self._loopback = loopback
        self._sessions: dict[str, tuple[Any, str]] = {}  # session id -> (transport, credential digest)
        self._tg: Any = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        import anyio

        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                for transport, _ in list(self._sessions.values()):
                    with contextlib.suppress(Exception):
                        await transport.terminate()
                tg.cancel_scope.cancel()

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.requests import Request

        request = Request(scope, receive)
        try:
            identity, credential = self._authenticate(request)
        except PermissionError as exc:
            await _json_error(send, 401, str(exc), headers=[(b"www-authenticate", b'Bearer realm="aarmor"')])
            return
        sid = request.headers.get("mcp-session-id")
        if sid is not None:
            entry = self._sessions.get(sid)
            if entry is None or entry[1] != credential:  # another credential's session looks like none
                await _json_error(send, 404, "Session not found")
                return
            transport = entry[0]
            await transport.handle_request(scope, receive, send)
            if transport.is_terminated:
                self._sessions.pop(sid, None)
            return
        if request.method != "POST":
            await _json_error(send, 400, "Bad Request: no Mcp-Session-Id; open a session with initialize")
            return
        body = await _read_body(receive, _MAX_OPENING_BODY)
        if body is None:
            await _json_error(send, 413, f"opening request over {_MAX_OPENING_BODY} bytes")
            return
        try:
            msg = loads(body)
        except RemoteError as exc:
            await _json_error(send, 400, exc.message, code=exc.code)
            return
        if msg.get("method") != "initialize":
            code = METHOD_NOT_FOUND if msg.get("method") == "server/discover" else -32600
            await _json_error(send, 400 if code != METHOD_NOT_FOUND else 200,
                              "this gateway speaks the initialize handshake: send initialize first",
                              code=code, rid=msg.get("id"))
            return
        original = request.headers.get(ORIGINAL_REQUEST_HEADER)
        if original is not None:
            original = urllib.parse.unquote(original)
        await self._open(scope, _replay(body, receive), send, identity, credential, original)

    def _authenticate(self, request: Any) -> tuple[Identity, str]:
        cfg = self.gw.config
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            digest = hashlib.sha256(auth[7:].strip().encode()).hexdigest()
            for tok in cfg.tokens:
                if tok.sha256 == digest:
                    return identity_from(tok.identity), "token:" + digest
            raise PermissionError("unknown bearer token")
        if cfg.identity_headers:
            fields = {level: request.headers.get(header) for level, header in cfg.identity_headers}
            if any(fields.values()):
                return identity_from({k: v for k, v in fields.items() if v}), "headers:" + json.dumps(
                    fields, sort_keys=True)
        if cfg.tokens:
            raise PermissionError("a bearer token is required")
        return self.gw.stdio_identity(), "principal"

    async def _open(self, scope: Any, receive: Any, send: Any, identity: Identity, credential: str,
                    original: str | None) -> None:
        import anyio
        from mcp.server.streamable_http import StreamableHTTPServerTransport
        from mcp.server.transport_security import TransportSecuritySettings
        from mcp.shared.message import ServerMessageMetadata, SessionMessage
        from mcp_types import jsonrpc_message_adapter

        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        ) if self._loopback else None
        sid = uuid.uuid4().hex
        transport = StreamableHTTPServerTransport(mcp_session_id=sid, security_settings=security)
        self._sessions[sid] = (transport, credential)

        async def run(*, task_status: Any) -> None:
            async with transport.connect() as (read, write):
                task_status.started()

                async def to_client(msg: Message, related: Any) -> None:
                    meta = ServerMessageMetadata(related_request_id=related) if related is not None else None
                    with contextlib.suppress(Exception):
                        await write.send(SessionMessage(jsonrpc_message_adapter.validate_python(msg),
                                                        metadata=meta))

                cs = ClientSession(self.gw, to_client, identity=identity, original_request=original,
                                   transport="http")
                try:
                    async for item in read:
                        if isinstance(item, Exception):
                            continue
                        await cs.on_client_message(item.message.model_dump(mode="json", by_alias=True,
                                                                           exclude_unset=True))
                except (anyio.ClosedResourceError, anyio.EndOfStream):
                    pass  # the session was terminated (DELETE, or the gateway shutting down)
                finally:
                    self._sessions.pop(sid, None)
                    await cs.close()

        assert self._tg is not None
        await self._tg.start(run)
        await transport.handle_request(scope, receive, send)


async def _read_body(receive: Any, limit: int) -> bytes | None:
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


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def again() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def _json_error(send: Any, status: int, message: str, *, code: int = -32600, rid: Any = None,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = dumps(error(rid, code, message))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
