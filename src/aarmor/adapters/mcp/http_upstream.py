"""An upstream MCP server reached over Streamable HTTP, written by hand over one kept-alive HTTP client.

Why not the SDK's client transport: it turns every message into pydantic models and back, and the
gateway opened a new TCP connection per forwarded call through it. Here each upstream has one
`httpx2.AsyncClient` (the HTTP client the `mcp` SDK itself depends on) for its whole life, so calls reuse
pooled keep-alive connections, and messages stay dicts:

- every message is one POST; the answer is read as JSON or as SSE (parsed here: `event`, `data`, `id`,
  `retry`, multi-line data), and each message in it is handed on as it came. A response body is always
  read to its end, which is what returns the connection to the pool.
- `Mcp-Session-Id` (from the `initialize` answer), `MCP-Protocol-Version` (after it) and the configured
  headers go with every request; `DELETE` ends the session at close.
- after the handshake, a GET stream listens for server messages tied to no request (405: the server does
  not offer one). An SSE answer that ends before its response is resumed with `Last-Event-ID` when the
  server gave event ids (MCP 2025-11-25 polling).
- Failure is reported as the base class expects, never as a hang: a request whose POST fails gets
  UPSTREAM_UNAVAILABLE at once; a refused connection, or 404 for the session (the server forgot it), marks
  the upstream gone and fails everything in flight. There is no restart: a new session on the server would
  lose its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from typing import Any

from .jsonrpc import UPSTREAM_UNAVAILABLE, Message, RemoteError, check, dumps, is_request
from .upstream import Upstream

__all__ = ["HttpUpstream", "SseParser"]

log = logging.getLogger("aarmor.gateway")

#: a stream the server closed before answering is resumed at most this many times
_MAX_RESUMES = 5
#: how long the GET stream waits before reconnecting when the server gave no `retry`
_RECONNECT_DELAY = 1.0
#: refused reconnections of the GET stream before the upstream is taken for gone
_MAX_GET_FAILURES = 3


@functools.cache
def _tls() -> Any:
    """One TLS context for every upstream client: loading the trust store takes ~40 ms and some MiB, which
    each HTTP session (it has its own upstream clients) would otherwise pay again."""
    import httpx2

    return httpx2.create_ssl_context()


class SseParser:
    """Server-sent events (WHATWG HTML "event stream interpretation"), fed one line at a time."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry: float | None = None  # seconds
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        """(event type, data) when `line` ends an event, else None."""
        if not line:
            event, data = self._event or "message", "\n".join(self._data)
            self._event, self._data = "", []
            return (event, data) if data else None  # an empty event (a priming `id:`) dispatches nothing
        if line[0] == ":":
            return None
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value) / 1000
        return None


class HttpUpstream(Upstream):
    """A server at `cfg.url`, spoken to over Streamable HTTP."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: Any = None  # httpx2.AsyncClient
        self._sid: str | None = None
        self._listener: asyncio.Task[None] | None = None
        self.url = self.cfg.url or ""

    async def _connect(self) -> None:
        import httpx2

        # no read timeout: a tool may take its time (a client that gives up cancels); connecting is bounded.
        # An idle connection is dropped after 1.5 s, before servers drop theirs (uvicorn and Node: 5 s,
        # gunicorn: 2 s): a request written onto a connection the server is closing would fail, and
        # is not retried (a tool call must not run twice).
        self._client = httpx2.AsyncClient(
            headers=dict(self.cfg.headers), follow_redirects=True,
            timeout=httpx2.Timeout(self.cfg.startup_timeout, read=None), verify=_tls(),
            limits=httpx2.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=1.5))
        self.alive = True

    async def _handshake(self) -> dict[str, Any]:
        res = await super()._handshake()
        self._listener = asyncio.ensure_future(self._listen())
        return res

    def _headers(self, initialize: bool = False) -> dict[str, str]:
        h = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        if self._sid is not None:
            h["mcp-session-id"] = self._sid
        if self.protocol_version is not None and not initialize:
            h["mcp-protocol-version"] = self.protocol_version
        return h

    def _lost(self, reason: str) -> None:
        """The server is gone (or forgot the session): nothing in flight will be answered."""
        if self.alive and not self.closing:
            log.error("upstream %s at %s: %s", self.name, self.url, reason)
        self.alive = False
        self._fail_pending(reason)

    def _unavailable(self, what: str) -> RemoteError:
        return RemoteError(UPSTREAM_UNAVAILABLE, f"upstream `{self.name}` at {self.url}: {what}")

    # --- sending ------------------------------------------------------------------------------
    async def _write(self, msg: Message) -> None:
        import httpx2

        if self._client is None or not self.alive:
            raise self._gone()
        initialize = msg.get("method") == "initialize"
        try:
            async with self._client.stream("POST", self.url, content=dumps(msg),
                                           headers=self._headers(initialize)) as r:
                if initialize and "mcp-session-id" in r.headers:
                    self._sid = r.headers["mcp-session-id"]
                await self._take(msg, r)
        except httpx2.ConnectError as exc:
            self._lost(f"cannot connect: {exc}")
            raise self._unavailable(f"cannot connect: {exc}") from None
        except httpx2.HTTPError as exc:  # the connection broke mid-answer, a timeout, a bad response
            raise self._unavailable(f"{type(exc).__name__}: {exc}") from None
        if is_request(msg) and msg["id"] in self._pending:
            raise self._unavailable("the server ended its answer without a response to the request")

    async def _take(self, msg: Message, r: Any) -> None:
        """Read the answer to the POST of `msg` (to its end: that keeps the connection reusable)."""
        status = r.status_code
        if status == 404 and self._sid is not None and msg.get("method") != "initialize":
            await r.aread()
            self._lost("the server no longer knows the MCP session (HTTP 404)")
            raise self._gone()
        if status >= 400:
            body = await r.aread()
            if is_request(msg) and self._error_answer(msg["id"], body):
                return
            raise self._unavailable(f"HTTP {status}: {body[:300].decode('utf-8', 'replace')}")
        if status == 202 or not is_request(msg):
            await r.aread()
            return
        ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                data = json.loads(await r.aread())
            except ValueError as exc:
                raise self._unavailable(f"an answer that is not JSON: {exc}") from None
            for m in data if isinstance(data, list) else [data]:
                await self._deliver(m)
        elif ctype == "text/event-stream":
            parser = SseParser()
            await self._consume(r, parser)
            await self._resume(msg["id"], parser)
        else:
            raise self._unavailable(f"HTTP {status} with Content-Type `{ctype}` (expected JSON or SSE)")

    def _error_answer(self, rid: int, body: bytes) -> bool:
        """An HTTP error whose body is a JSON-RPC error: that error is the request's answer."""
        try:
            e = json.loads(body)
        except ValueError:
            return False
        fut = self._pending.pop(rid, None) if isinstance(e, dict) and isinstance(e.get("error"), dict) else None
        if fut is None:
            return False
        if not fut.done():
            fut.set_result({"jsonrpc": "2.0", "id": rid, "error": e["error"]})
        return True

    # --- receiving ----------------------------------------------------------------------------
    async def _consume(self, r: Any, parser: SseParser) -> None:
        async for line in r.aiter_lines():
            ev = parser.feed(line)
            if ev is None or ev[0] != "message":
                continue
            try:
                m = json.loads(ev[1])
            except ValueError as exc:
                log.warning("upstream %s sent an event that is not JSON: %s", self.name, exc)
                continue
            await self._deliver(m)

    async def _deliver(self, m: Any) -> None:
        try:
            await self._dispatch(check(m))
        except RemoteError as exc:
            log.warning("upstream %s sent something that is not JSON-RPC: %s", self.name, exc.message)
        except Exception:  # the router's failure on one message must not end the stream
            log.exception("upstream %s: handling a message failed", self.name)

    async def _resume(self, rid: int, parser: SseParser) -> None:
        """The SSE answer ended before the response: reconnect with `Last-Event-ID` if the server allows."""
        for _ in range(_MAX_RESUMES):
            if rid not in self._pending or parser.last_id is None or not self.alive:
                return
            await asyncio.sleep(parser.retry if parser.retry is not None else _RECONNECT_DELAY)
            headers = {**self._headers(), "accept": "text/event-stream", "last-event-id": parser.last_id}
            async with self._client.stream("GET", self.url, headers=headers) as r:
                if r.status_code != 200:
                    await r.aread()
                    return
                await self._consume(r, parser)

    async def _listen(self) -> None:
        """The GET stream: server requests and notifications tied to no request, for as long as we live."""
        import httpx2

        parser, failures = SseParser(), 0
        while self.alive and not self.closing:
            headers = {**self._headers(), "accept": "text/event-stream"}
            if parser.last_id is not None:
                headers["last-event-id"] = parser.last_id
            try:
                async with self._client.stream("GET", self.url, headers=headers) as r:
                    if r.status_code == 404:
                        await r.aread()
                        self._lost("the server no longer knows the MCP session (HTTP 404)")
                        return
                    if r.status_code != 200:  # 405: the server offers no GET stream
                        await r.aread()
                        if r.status_code != 405:
                            log.warning("upstream %s: GET stream refused: HTTP %d", self.name, r.status_code)
                        return
                    failures = 0
                    await self._consume(r, parser)
            except httpx2.ConnectError as exc:
                failures += 1
                if failures >= _MAX_GET_FAILURES:
                    self._lost(f"cannot connect: {exc}")
                    return
            except httpx2.HTTPError as exc:
                log.info("upstream %s: GET stream broke: %s", self.name, exc)
            await asyncio.sleep(parser.retry if parser.retry is not None else _RECONNECT_DELAY)

    # --- the end --------------------------------------------------------------------------------
    async def _disconnect(self) -> None:
        self.alive = False
        if self._listener is not None:
            self._listener.cancel()
        for task in list(self._background):  # POSTs in flight: their callers were already failed
            task.cancel()
        client, self._client = self._client, None
        if client is None:
            return
        if self._sid is not None:  # MCP: a client that is done ends the session (405: the server keeps it)
            with contextlib.suppress(Exception):
                await client.delete(self.url, headers=self._headers(), timeout=2.0)
        await client.aclose()
