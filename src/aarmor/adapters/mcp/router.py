"""One client's connection through the gateway: many upstream servers presented as one MCP server.

Rules:
- Every `tools/call` is one action through the one mediation pipeline (`session.ainvoke`); the router
  only translates (see `tools.py`). Nothing else the client sends can run a tool.
- Everything else passes through: requests are routed to the upstream that owns the tool, prompt or
  resource (lists are merged, names prefixed `<upstream><sep><name>` only where two upstreams collide);
  notifications go to every upstream or to the client; requests a server sends the client (sampling,
  elicitation, roots) get a gateway id and their answers are routed back. Parameters and results are
  forwarded as they came, `_meta` included.
- Each client request runs in its own task: a call held for an approval never blocks the connection.
- A request cancelled by the client gets no answer (MCP cancellation); the cancellation is forwarded.
- The era of per-request envelopes (`server/discover`, protocol 2026-07-28) is refused with
  METHOD_NOT_FOUND, which makes clients fall back to the `initialize` handshake the gateway speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNAVAILABLE,
    Message,
    RemoteError,
    error,
    is_notification,
    is_request,
    is_response,
    obj,
    result,
)
from .upstream import Upstream, open_upstream, unwrap

if TYPE_CHECKING:  # pragma: no cover
    from .gateway import Gateway

__all__ = ["ClientSession"]

log = logging.getLogger("aarmor.gateway")

#: MCP's "resource not found"
RESOURCE_NOT_FOUND = -32002
#: pages fetched from one upstream for one list before the gateway stops (a server that loops its cursor)
_MAX_PAGES = 1000
#: list methods: method -> (result key, capability, the field that names an item, namespaced?)
_LISTS = {
    "tools/list": ("tools", "tools", "name", True),
    "prompts/list": ("prompts", "prompts", "name", True),
    "resources/list": ("resources", "resources", "uri", False),
    "resources/templates/list": ("resourceTemplates", "resources", "uriTemplate", False),
}

Send = Callable[[Message, Any], Awaitable[None]]


@dataclass(eq=False)
class InFlight:
    """A client request being served: its task, and where it was forwarded (for cancellation)."""

    task: asyncio.Task[None] | None = None
    upstream: Upstream | None = None
    upstream_id: int | None = None
    cancelled: bool = False
    progress_token: Any = None


@dataclass(eq=False)
class Catalog:
    """The merged list of one kind (tools, prompts, resources, templates): exposed name -> owner."""

    items: list[dict[str, Any]] = field(default_factory=list)
    owner: dict[str, tuple[Upstream, str]] = field(default_factory=dict)
    fresh: bool = False


class ClientSession:
    """The gateway side of one MCP client connection. `send(msg, related_request_id)` writes to the client."""

    def __init__(self, gateway: Gateway, send: Send, *, identity: Any, original_request: str | None = None,
                 transport: str = "stdio", delegation: str | None = None) -> None:
        self.gw = gateway
        self._send = send
        self.identity = identity
        self.original_request = original_request
        #: a delegation chain from the `X-Aarmor-Delegation` header (`_meta` wins when both are sent)
        self.delegation = delegation
        self.transport = transport
        self.upstreams: dict[str, Upstream] = {}
        self.session: Any = None  # aarmor.Session, opened at initialize
        self.initialized = False
        self.closed = False
        self._inflight: dict[Any, InFlight] = {}
        self._by_token: dict[Any, Any] = {}  # progress token -> client request id
        self._server_requests: dict[int, tuple[Upstream, Any]] = {}
        self._server_tokens: dict[Any, Upstream] = {}
        self._ids = itertools.count(1)
        self._catalogs: dict[str, Catalog] = {m: Catalog() for m in _LISTS}
        self._catalog_locks: dict[str, asyncio.Lock] = {m: asyncio.Lock() for m in _LISTS}
        self.tools = self.gw.tool_handler(self)

    # --- from the client ----------------------------------------------------------------------
    async def on_client_message(self, msg: Message) -> None:
        """Take one message from the client. Requests are served in their own task."""
        if is_request(msg):
            rid = msg["id"]
            if rid in self._inflight:
                await self._send(error(rid, INVALID_REQUEST, f"request id {rid!r} is already in use"), None)
                return
            fl = self._inflight[rid] = InFlight()
            fl.task = asyncio.ensure_future(self._serve(msg, fl))
        elif is_notification(msg):
            await self._client_notification(msg)
        elif is_response(msg):
            await self._client_answer(msg)
        else:
            await self._send(error(msg.get("id"), INVALID_REQUEST, "invalid request: not a request, "
                                   "notification or response"), None)

    async def _serve(self, msg: Message, fl: InFlight) -> None:
        rid, method = msg["id"], msg["method"]
        params = msg.get("params")
        if params is not None and not isinstance(params, dict):
            answer = error(rid, INVALID_PARAMS, "`params` must be an object")
        else:
            meta = obj((params or {}).get("_meta"))
            if "progressToken" in meta:
                fl.progress_token = meta["progressToken"]
                self._by_token[fl.progress_token] = rid
            try:
                answer = result(rid, await self._dispatch(method, params or {}, msg, fl))
            except RemoteError as exc:
                answer = {"jsonrpc": "2.0", "id": rid, "error": exc.to_error()}
            except asyncio.CancelledError:
                answer = None
            except Exception as exc:  # a gateway bug must still answer, never hang the client
                log.exception("gateway: serving %s failed", method)
                answer = error(rid, INTERNAL_ERROR, f"aarmor gateway: {type(exc).__name__}: {exc}")
        self._inflight.pop(rid, None)
        if fl.progress_token is not None:
            self._by_token.pop(fl.progress_token, None)
        if answer is not None and not fl.cancelled and not self.closed:
            await self._send(answer, None)

    async def _dispatch(self, method: str, params: dict[str, Any], msg: Message, fl: InFlight) -> dict[str, Any]:
        if method == "initialize":
            return await self._initialize(params)
        if method == "ping":
            return {}
        if method == "server/discover":
            raise RemoteError(METHOD_NOT_FOUND, "server/discover: this gateway speaks the initialize handshake")
        if not self.initialized:
            raise RemoteError(INVALID_REQUEST, f"`{method}` before `initialize`")
        if method in _LISTS:
            return await self._list(method)
        if method == "tools/call":
            return await self.tools.call(params, fl)
        if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            return await self.forward(await self._resource_owner(params.get("uri")), method, params, fl)
        if method == "prompts/get":
            up, name = await self._owner("prompts/list", params.get("name"), "prompt")
            return await self.forward(up, method, {**params, "name": name}, fl)
        if method == "completion/complete":
            return await self._complete(params, fl)
        if method == "logging/setLevel":
            ups = [u for u in self.live() if self._has(u, "logging")]
            await asyncio.gather(*(u.request(method, params) for u in ups))
            return {}
        live = self.live()
        if len(live) == 1:  # a method the gateway does not know: one upstream, so it can only be its
            return await self.forward(live[0], method, params, fl)
        raise RemoteError(METHOD_NOT_FOUND, f"method not found: `{method}`")

    async def forward(self, up: Upstream, method: str, params: dict[str, Any], fl: InFlight) -> dict[str, Any]:
        """The upstream's answer to one client request; after `request_timeout` the upstream is told to
        cancel it and the client gets an error (a server that never answers must not hang the client)."""
        rid, fut = up.send_request(method, params)
        fl.upstream, fl.upstream_id = up, rid
        limit = up.cfg.request_timeout
        try:
            return unwrap(await (asyncio.wait_for(fut, limit) if limit is not None else fut))
        except TimeoutError:
            up.forget(rid)
            with contextlib.suppress(Exception):  # a server gone meanwhile: the client's error is the same
                await up.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                               "params": {"requestId": rid, "reason": f"no answer within {limit:g} s"}})
            raise RemoteError(UPSTREAM_TIMEOUT, f"upstream `{up.name}` did not answer `{method}` within "
                                                f"{limit:g} s (request_timeout)") from None
        finally:
            fl.upstream = fl.upstream_id = None

    async def _client_notification(self, msg: Message) -> None:
        method = msg["method"]
        params = obj(msg.get("params"))
        if method == "notifications/initialized":
            return  # each upstream got its own right after its handshake
        if method == "notifications/cancelled":
            await self._cancel(params.get("requestId"), params.get("reason"))
            return
        if method == "notifications/progress" and params.get("progressToken") in self._server_tokens:
            await self._server_tokens[params["progressToken"]].send(msg)
            return
        for up in self.live():
            await up.send(msg)

    async def _cancel(self, rid: Any, reason: Any) -> None:
        fl = self._inflight.get(rid)
        if fl is None:
            return  # already answered: MCP says ignore
        fl.cancelled = True
        if fl.upstream is not None and fl.upstream_id is not None:
            note: Message = {"jsonrpc": "2.0", "method": "notifications/cancelled",
                             "params": {"requestId": fl.upstream_id}}
            if isinstance(reason, str):
                note["params"]["reason"] = reason
            await fl.upstream.send(note)
        if fl.task is not None:
            fl.task.cancel()

    async def _client_answer(self, msg: Message) -> None:
        entry = self._server_requests.pop(msg["id"], None) if isinstance(msg["id"], int) else None
        if entry is None:
            log.warning("gateway: the client answered an unknown request id %r", msg.get("id"))
            return
        up, upstream_id = entry
        await up.send({**msg, "id": upstream_id})

    # --- from an upstream ----------------------------------------------------------------------
    async def on_upstream_message(self, up: Upstream, msg: Message) -> None:
        if is_request(msg):
            if msg["method"] == "ping":
                await up.send(result(msg["id"], {}))
                return
            gid = next(self._ids)
            self._server_requests[gid] = (up, msg["id"])
            meta = obj(obj(msg.get("params")).get("_meta"))
            if "progressToken" in meta:
                self._server_tokens[meta["progressToken"]] = up
            await self._send({**msg, "id": gid}, self._related(up))
            return
        method = msg.get("method", "")
        params = obj(msg.get("params"))
        related = None
        if method == "notifications/progress":
            related = self._by_token.get(params.get("progressToken"))
        elif method == "notifications/cancelled":
            mine = next((g for g, (u, uid) in self._server_requests.items()
                         if u is up and uid == params.get("requestId")), None)
            if mine is None:
                return
            self._server_requests.pop(mine, None)
            msg = {**msg, "params": {**params, "requestId": mine}}
        elif method == "notifications/tools/list_changed":
            self._catalogs["tools/list"].fresh = False
        elif method == "notifications/prompts/list_changed":
            self._catalogs["prompts/list"].fresh = False
        elif method == "notifications/resources/list_changed":
            self._catalogs["resources/list"].fresh = self._catalogs["resources/templates/list"].fresh = False
        await self._send(msg, related)

    def _related(self, up: Upstream) -> Any:
        """The client request a server's request most likely belongs to: the newest one sent to `up`."""
        for rid, fl in reversed(list(self._inflight.items())):
            if fl.upstream is up:
                return rid
        return None

    async def on_upstream_restart(self, up: Upstream) -> None:
        for cat in self._catalogs.values():
            cat.fresh = False
        for method, cap in (("notifications/tools/list_changed", "tools"),
                            ("notifications/prompts/list_changed", "prompts"),
                            ("notifications/resources/list_changed", "resources")):
            if self._has(up, cap):
                await self._send({"jsonrpc": "2.0", "method": method}, None)

    # --- initialize ----------------------------------------------------------------------------
    async def _initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.initialized:
            raise RemoteError(INVALID_REQUEST, "`initialize` was already called on this connection")
        meta = obj(params.get("_meta"))
        self.session = self.gw.open_session(self, meta)
        self.tools.start()
        for cfg in self.gw.upstream_configs:
            self.upstreams[cfg.name] = open_upstream(cfg, self.on_upstream_message, self.on_upstream_restart)
        outcomes = await asyncio.gather(*(u.initialize(params) for u in self.upstreams.values()),
                                        return_exceptions=True)
        answers: list[tuple[Upstream, dict[str, Any]]] = []
        for up, out in zip(self.upstreams.values(), outcomes, strict=True):
            if isinstance(out, BaseException):
                log.error("gateway: upstream %s failed to start: %s", up.name, out)
            else:
                answers.append((up, out))
        if not answers:
            raise RemoteError(UPSTREAM_UNAVAILABLE, "no upstream server could be started: " + "; ".join(
                f"{u.name}: {o}" for u, o in zip(self.upstreams.values(), outcomes, strict=True)))
        self.initialized = True
        return merge_initialize(answers, params)

    # --- lists ---------------------------------------------------------------------------------
    def live(self) -> list[Upstream]:
        return [u for u in self.upstreams.values() if u.alive]

    def kill_upstreams(self) -> None:
        """At once, from a signal handler: stop every upstream process (they run in their own groups)."""
        for up in self.upstreams.values():
            up.kill()

    @staticmethod
    def _has(up: Upstream, capability: str) -> bool:
        caps = (up.init_result or {}).get("capabilities")
        return isinstance(caps, dict) and capability in caps

    async def catalog(self, method: str) -> Catalog:
        """The merged list for `method`, fetched from every upstream when it is not fresh."""
        key, cap, field_name, namespaced = _LISTS[method]
        async with self._catalog_locks[method]:
            cat = self._catalogs[method]
            if cat.fresh:
                return cat
            ups = [u for u in self.live() if self._has(u, cap)]
            pages = await asyncio.gather(*(self._all_pages(u, method, key) for u in ups), return_exceptions=True)
            seen: dict[str, int] = {}
            fetched: list[tuple[Upstream, list[dict[str, Any]]]] = []
            for up, items in zip(ups, pages, strict=True):
                if isinstance(items, BaseException):
                    log.error("gateway: %s from upstream %s failed: %s", method, up.name, items)
                    continue
                fetched.append((up, items))
                for it in items:
                    seen[str(it.get(field_name))] = seen.get(str(it.get(field_name)), 0) + 1
            new = Catalog(fresh=True)
            sep = self.gw.config.namespace_separator
            for up, items in fetched:
                for it in items:
                    original = str(it.get(field_name))
                    exposed = f"{up.name}{sep}{original}" if namespaced and seen[original] > 1 else original
                    new.owner[exposed] = (up, original)
                    new.items.append({**it, field_name: exposed} if exposed != original else it)
            self._catalogs[method] = new
            if method == "tools/list":
                self.tools.inspect(new)
            return new

    @staticmethod
    async def _all_pages(up: Upstream, method: str, key: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        for _ in range(_MAX_PAGES):
            res = await up.request(method, {"cursor": cursor} if cursor is not None else None)
            items = res.get(key)
            out.extend(i for i in (items if isinstance(items, list) else []) if isinstance(i, dict))
            cursor = res.get("nextCursor")
            if not cursor:
                break
        return out

    async def _list(self, method: str) -> dict[str, Any]:
        # a list the client asks for is always fetched anew: what it shows is what the servers say now
        # (and a changed tool definition is caught even when the server sends no list_changed)
        self._catalogs[method].fresh = False
        cat = await self.catalog(method)
        items = cat.items
        if method == "tools/list":
            items = await self.tools.visible(cat)
        return {_LISTS[method][0]: items}

    async def _owner(self, method: str, name: Any, what: str) -> tuple[Upstream, str]:
        if not isinstance(name, str):
            raise RemoteError(INVALID_PARAMS, f"{what} name must be a string")
        cat = await self.catalog(method)
        if name not in cat.owner:  # the list may have changed without a notification: look once more
            cat.fresh = False
            cat = await self.catalog(method)
        hit = cat.owner.get(name)
        if hit is None:
            raise RemoteError(INVALID_PARAMS, f"unknown {what}: `{name}`")
        return hit

    async def owner_of_tool(self, name: str) -> tuple[Upstream, str]:
        return await self._owner("tools/list", name, "tool")

    async def _resource_owner(self, uri: Any) -> Upstream:
        if not isinstance(uri, str):
            raise RemoteError(INVALID_PARAMS, "resource `uri` must be a string")
        ups = [u for u in self.live() if self._has(u, "resources")]
        if len(ups) == 1:
            return ups[0]
        cat = await self.catalog("resources/list")
        if uri in cat.owner:
            return cat.owner[uri][0]
        for item in (await self.catalog("resources/templates/list")).items:
            template = item.get("uriTemplate")
            if isinstance(template, str) and _template_regex(template).fullmatch(uri):
                return (await self.catalog("resources/templates/list")).owner[template][0]
        raise RemoteError(RESOURCE_NOT_FOUND, f"resource not found: `{uri}`", {"uri": uri})

    async def _complete(self, params: dict[str, Any], fl: InFlight) -> dict[str, Any]:
        ref = obj(params.get("ref"))
        if ref.get("type") == "ref/prompt":
            up, name = await self._owner("prompts/list", ref.get("name"), "prompt")
            return await self.forward(up, "completion/complete", {**params, "ref": {**ref, "name": name}}, fl)
        if ref.get("type") == "ref/resource":
            uri = ref.get("uri")
            ups = [u for u in self.live() if self._has(u, "resources")]
            if len(ups) != 1:
                cat = await self.catalog("resources/templates/list")
                hit = cat.owner.get(uri) if isinstance(uri, str) else None
                if hit is None:
                    raise RemoteError(INVALID_PARAMS, f"unknown resource template: `{uri}`")
                ups = [hit[0]]
            return await self.forward(ups[0], "completion/complete", params, fl)
        raise RemoteError(INVALID_PARAMS, "completion `ref.type` must be ref/prompt or ref/resource")

    # --- progress while held ---------------------------------------------------------------------
    async def progress(self, fl: InFlight, step: int, message: str) -> None:
        if fl.progress_token is None or fl.cancelled:
            return
        rid = self._by_token.get(fl.progress_token)
        await self._send({"jsonrpc": "2.0", "method": "notifications/progress",
                          "params": {"progressToken": fl.progress_token, "progress": step,
                                     "message": message}}, rid)

    # --- the end -------------------------------------------------------------------------------
    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fl in list(self._inflight.values()):
            if fl.task is not None:
                fl.task.cancel()
        tasks = [fl.task for fl in self._inflight.values() if fl.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        await asyncio.gather(*(u.close() for u in self.upstreams.values()), return_exceptions=True)
        if self.session is not None:
            await asyncio.to_thread(self.session.close)


def _template_regex(template: str) -> re.Pattern[str]:
    """RFC 6570 level-1 matching, enough to route: `{var}` matches one segment, `{+var}` anything."""
    out, pos = [], 0
    for m in re.finditer(r"\{([+#]?)[^}]*\}", template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(".+" if m.group(1) else "[^/]+")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def merge_initialize(answers: list[tuple[Upstream, dict[str, Any]]], params: dict[str, Any]) -> dict[str, Any]:
    """One `initialize` result for the client from every upstream's.

    One upstream: its result as it is (the gateway is transparent). Several: the client's protocol version
    if every upstream accepted it, else the oldest any chose; capabilities united; instructions joined.
    """
    from aarmor import __version__

    if len(answers) == 1:
        return answers[0][1]
    from mcp_types.version import KNOWN_PROTOCOL_VERSIONS

    versions = [a.get("protocolVersion") for _, a in answers]
    wanted = params.get("protocolVersion")
    if all(v == wanted for v in versions):
        version = wanted
    else:
        known = [v for v in versions if v in KNOWN_PROTOCOL_VERSIONS]
        version = min(known, key=KNOWN_PROTOCOL_VERSIONS.index) if known else versions[0]
    caps: dict[str, Any] = {}
    for _, a in answers:
        for k, v in (a.get("capabilities") or {}).items():
            caps[k] = _merge_cap(caps.get(k), v)
    notes = [f"[{u.name}] {a['instructions']}" for u, a in answers if isinstance(a.get("instructions"), str)]
    out: dict[str, Any] = {"protocolVersion": version, "capabilities": caps,
                           "serverInfo": {"name": "aarmor-gateway", "version": __version__,
                                          "title": "aarmor gateway: " + ", ".join(u.name for u, _ in answers)}}
    if notes:
        out["instructions"] = "\n\n".join(notes)
    return out


def _merge_cap(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merge_cap(a.get(k), b.get(k)) if k in a and k in b else a.get(k, b.get(k))
                for k in {**a, **b}}
    if isinstance(a, bool) and isinstance(b, bool):
        return a or b
    return b if a is None else a
