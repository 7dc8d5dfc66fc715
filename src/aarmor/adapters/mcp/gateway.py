"""The MCP gateway: upstream MCP servers presented as one, with every `tools/call` mediated.

Two fronts share `ClientSession` (router.py):
- stdio: one client (a desktop app or IDE started us); identity = the configured `principal`.
- Streamable HTTP: many clients, each an MCP session (`Mcp-Session-Id`) with its own upstream connections
  and its own aarmor session. Identity from a configured bearer token (by SHA-256), else from configured
  identity headers, else - only when no token is configured - the `principal`; with mutual TLS
  (`gateway.tls.client_ca`) the service is the verified client certificate's. A session answers only to
  the credential (and client certificate) that opened it. The HTTP framing (POST, SSE, GET stream,
  DELETE) is http_front.py.

The user's original request reaches the session at `initialize`: `params._meta["aarmor/original_request"]`
or the `X-Aarmor-Original-Request` header (percent-encoded UTF-8) on the initialize POST. A delegation
chain can come the same way: `_meta["aarmor/delegation"]` or the `X-Aarmor-Delegation` header (signed
tokens from `Session.delegate`; see `delegation_links`). With identity mode `jwt`, a bearer token that is
not one of the configured static tokens is the caller's identity token (`Identity.token`): verified when
the session opens (401 otherwise) and again at every decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from aarmor.config import GatewayConfig, UpstreamConfig
from aarmor.errors import InputError
from aarmor.identity import IdentityError
from aarmor.identity.delegation import links_from_tokens
from aarmor.model import DelegationLink, Identity

from .jsonrpc import (
    PARSE_ERROR,
    LineTooLong,
    Message,
    RemoteError,
    dumps,
    error,
    read_messages,
)
from .router import ClientSession
from .tools import ToolHandler
from .upstream import MAX_LINE_BYTES

__all__ = ["DELEGATION_HEADER", "ORIGINAL_REQUEST_HEADER", "ORIGINAL_REQUEST_META", "Gateway", "delegation_links"]

log = logging.getLogger("aarmor.gateway")

ORIGINAL_REQUEST_META = "aarmor/original_request"
DELEGATION_META = "aarmor/delegation"
ORIGINAL_REQUEST_HEADER = "x-aarmor-original-request"
DELEGATION_HEADER = "x-aarmor-delegation"


def delegation_links(chain: Any) -> tuple[DelegationLink, ...]:
    """A delegation chain as a client sends it: signed tokens (a list, or one string of tokens separated by
    commas or spaces; `Session.delegate` makes them) or, for the claimed identity modes only, a list of
    link objects (`DelegationLink.to_json`). Verified at every decision, not here.

    Raises:
        InputError: neither shape. DelegationError: a token that is not a delegation token.
    """
    if isinstance(chain, str):
        return links_from_tokens(chain)
    if not isinstance(chain, list):
        raise InputError("a delegation chain must be a list of signed links (or of link objects)")
    if all(isinstance(x, str) for x in chain):
        return links_from_tokens(chain)
    try:
        return tuple(DelegationLink.from_json(x) for x in chain)
    except Exception as exc:
        raise InputError(f"not a list of delegation links: {type(exc).__name__}: {exc}") from None


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
        if chain is None:
            chain = cs.delegation
        if chain is not None:
            try:
                links = delegation_links(chain)
            except (InputError, IdentityError) as exc:
                raise RemoteError(-32602, f"delegation chain (`_meta.{DELEGATION_META}` or the {DELEGATION_HEADER} "
                                          f"header): {exc}") from None
            # replace, not rebuild: the bearer token and how the identity was vouched for (`verified_by`) stay
            identity = dataclasses.replace(identity, delegation=links)
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
        """A Starlette app serving the MCP endpoint at `path` (POST, GET and DELETE; see http_front.py).

        `app.state.front` is the endpoint, for a server that must end its sessions before stopping.
        """
        from starlette.applications import Starlette
        from starlette.routing import Route

        from .http_front import HttpFront

        front = HttpFront(self, loopback=loopback)

        @contextlib.asynccontextmanager
        async def lifespan(_app: Any) -> AsyncIterator[None]:
            async with front.running():
                yield

        app = Starlette(routes=[Route(path, front, methods=["GET", "POST", "DELETE"])], lifespan=lifespan)
        app.state.front = front
        return app

    def serve_http(self, host: str, port: int, path: str = "/mcp", *, loopback: bool = True) -> None:
        """Serve Streamable HTTP at http://host:port/path under uvicorn until SIGINT or SIGTERM."""
        from .http_front import serve

        serve(self, host, port, path, loopback=loopback)
