"""The gateway's own Streamable HTTP legs (http_front.py, http_upstream.py), with real clients and servers.

Front: raw httpx requests and the official SDK client against `aarmor gateway --listen http://...`: a JSON
answer when the response is the first thing ready, SSE when progress comes first, the GET stream, DELETE,
the MCP-Protocol-Version, Accept and Content-Type checks, 413, batches only where the negotiated revision
has them. Upstream: npm server-everything over Streamable HTTP behind a byte-relaying TCP proxy that counts
connections (kept alive: a handful, not one per call), a gateway as another gateway's upstream (JSON
answers), and an upstream that dies (calls fail at once, no hang).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.mcp_support import everything_http_server, everything_server_argv, stop_process

from .conftest import GatewaySetup, upstream

ALLOW_ALL = """
policy: {id: http-transport, version: "1", default: DENY}
rules:
  - id: allow-all
    match: {tool: "*"}
    action: ALLOW
"""
ACCEPT = {"Accept": "application/json, text/event-stream"}
LONG = "trigger-long-running-operation"


def _init(version: str = "2025-06-18", rid: Any = 1, **caps: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": caps, "clientInfo": {"name": "t", "version": "1"}}}


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]


class RawSession:
    """Streamable HTTP by hand: a session opened with initialize, then one POST per message."""

    def __init__(self, c: httpx.Client, url: str, version: str = "2025-06-18", **caps: Any) -> None:
        self.c, self.url = c, url
        r = c.post(url, json=_init(version, **caps), headers=ACCEPT)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
        self.version = r.json()["result"]["protocolVersion"]
        self.headers = {**ACCEPT, "Mcp-Session-Id": r.headers["mcp-session-id"],
                        "MCP-Protocol-Version": self.version}
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202

    def post(self, body: Any, **headers: str) -> httpx.Response:
        return self.c.post(self.url, content=json.dumps(body), headers={
            **self.headers, "Content-Type": "application/json", **headers})


def test_json_unless_something_comes_first_then_sse_and_the_checks(
        gw: GatewaySetup, http_gateway: Callable[..., str]) -> None:
    gw.write(policy=ALLOW_ALL, gateway={"upstreams": {"everything": upstream(everything_server_argv())},
                                        "progress_interval": 60})
    url = http_gateway()
    with httpx.Client(timeout=30) as c:
        s = RawSession(c, url)
        echo = s.post({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"message": "hi"}}})
        assert echo.status_code == 200 and echo.headers["content-type"] == "application/json"
        assert echo.json()["result"]["content"][0]["text"] == "Echo: hi"
        # progress for the request comes before its answer: the same POST turns into an SSE stream
        long = s.post({"jsonrpc": "2.0", "id": "long-1", "method": "tools/call", "params": {
            "name": LONG, "arguments": {"duration": 0.6, "steps": 3}, "_meta": {"progressToken": "tok"}}})
        assert long.status_code == 200 and long.headers["content-type"] == "text/event-stream"
        events = _events(long.text)
        assert [e.get("method") for e in events] == ["notifications/progress"] * 3 + [None]
        assert [e["params"]["progress"] for e in events[:3]] == [1, 2, 3]
        assert events[-1]["id"] == "long-1" and "completed" in events[-1]["result"]["content"][0]["text"]

        bad_version = s.post({"jsonrpc": "2.0", "id": 3, "method": "ping"}, **{"MCP-Protocol-Version": "1999-01-01"})
        assert bad_version.status_code == 400 and "MCP-Protocol-Version" in bad_version.json()["error"]["message"]
        older = s.post({"jsonrpc": "2.0", "id": 4, "method": "ping"}, **{"MCP-Protocol-Version": "2025-03-26"})
        assert older.status_code == 200 and older.json() == {"jsonrpc": "2.0", "id": 4, "result": {}}
        assert s.post({"jsonrpc": "2.0", "id": 5, "method": "ping"}, Accept="application/json").status_code == 406
        plain = s.post({"jsonrpc": "2.0", "id": 6, "method": "ping"}, **{"Content-Type": "text/plain"})
        assert plain.status_code == 415
        batch = s.post([{"jsonrpc": "2.0", "id": 7, "method": "ping"}])
        assert batch.status_code == 400 and "batches are not allowed" in batch.json()["error"]["message"]
        garbage = c.post(url, content=b"{not json", headers={**s.headers, "Content-Type": "application/json"})
        assert garbage.status_code == 400 and garbage.json()["error"]["code"] == -32700

        # bodies over the limit: 413, told by Content-Length before the body is read
        huge = c.post(url, content=b" " * (4 * 1024 * 1024 + 1), headers={**ACCEPT, "Content-Type": "application/json"})
        assert huge.status_code == 413 and "over" in huge.json()["error"]["message"]

        assert c.delete(url, headers=s.headers).status_code == 200
        assert s.post({"jsonrpc": "2.0", "id": 8, "method": "ping"}).status_code == 404


def test_batches_in_a_session_that_negotiated_2025_03_26(gw: GatewaySetup, http_gateway: Callable[..., str]) -> None:
    gw.write(policy=ALLOW_ALL, gateway={"upstreams": {"everything": upstream(everything_server_argv())}})
    url = http_gateway()
    with httpx.Client(timeout=30) as c:
        s = RawSession(c, url, "2025-03-26")
        assert s.version == "2025-03-26"
        r = s.post([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                    {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}])
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        answers = {a["id"]: a for a in r.json()}
        assert answers[1]["result"] == {} and any(t["name"] == "echo" for t in answers[2]["result"]["tools"])
        notes = s.post([{"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}])
        assert notes.status_code == 202, notes.text
        assert s.post([]).status_code == 400


class CountingProxy:
    """A TCP relay (bytes both ways, nothing parsed) that counts the connections made through it."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            self._sockets.append(conn)
            t = threading.Thread(target=self._relay, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            out = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            conn.close()
            return
        self._sockets.append(out)
        pumps = [threading.Thread(target=self._pump, args=(a, b)) for a, b in ((conn, out), (out, conn))]
        for t in pumps:
            t.start()
        for t in pumps:
            t.join()
        conn.close()
        out.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)
        for s in self._sockets:
            s.close()


@pytest.fixture
def everything_http() -> Iterator[Any]:
    with everything_http_server() as srv:
        yield srv


@pytest.fixture
def proxy(everything_http: Any) -> Iterator[CountingProxy]:
    p = CountingProxy(everything_http.port)
    yield p
    p.close()


async def _sdk(url: str, body: Callable[[Any], Any], **session_kw: Any) -> Any:
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (r, w), ClientSession(r, w, **session_kw) as s:
        await s.initialize()
        return await body(s)


def test_the_upstream_connection_is_kept_alive_and_sse_passes_through(
        proxy: CountingProxy, gw: GatewaySetup, http_gateway: Callable[..., str]) -> None:
    gw.write(policy=ALLOW_ALL, gateway={"upstreams": {"everything": {"url": f"http://127.0.0.1:{proxy.port}/mcp"}}})
    url = http_gateway()
    progress: list[float] = []

    async def use(s: Any) -> list[Any]:
        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append(p)

        out = [await s.call_tool("echo", {"message": f"call {i}"}) for i in range(30)]
        out.append(await s.call_tool(LONG, {"duration": 0.4, "steps": 2}, progress_callback=on_progress))
        return out

    results = asyncio.run(_sdk(url, use))
    assert [r.content[0].text for r in results[:30]] == [f"Echo: call {i}" for i in range(30)]
    assert "completed" in results[30].content[0].text and progress == [1, 2]
    # initialize, initialized, tools/list, 31 calls and DELETE went through a few pooled connections (plus
    # the GET stream); a connection per message would be 35 or more
    assert 1 <= proxy.connections <= 5, proxy.connections
    assert [r.decision for r in gw.receipts()] == ["ALLOW"] * 31


def test_the_get_stream_carries_server_requests_and_ends_with_delete(
        gw: GatewaySetup, http_gateway: Callable[..., str], everything_http: Any) -> None:
    gw.write(policy=ALLOW_ALL, gateway={"upstreams": {"everything": {"url": everything_http.url}}})
    url = http_gateway()
    with httpx.Client(timeout=30) as c:
        # server-everything asks a client that declares roots for them ~350 ms after initialized, on its
        # standalone stream: upstream GET stream -> gateway -> this client's GET stream
        s = RawSession(c, url, roots={"listChanged": True})
        with c.stream("GET", url, headers={**s.headers, "Accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"] == "text/event-stream"
            assert c.get(url, headers={**s.headers, "Accept": "text/event-stream"}).status_code == 409
            request, lines = None, stream.iter_lines()
            for line in lines:
                if line.startswith("data:"):
                    request = json.loads(line[5:])
                    break
            assert request is not None and request["method"] == "roots/list"
            answer = s.post({"jsonrpc": "2.0", "id": request["id"], "result": {"roots": []}})
            assert answer.status_code == 202
            assert c.delete(url, headers=s.headers).status_code == 200
            rest = [json.loads(x[5:]) for x in lines if x.startswith("data:")]  # ends: DELETE ended the stream
            assert all("id" not in m for m in rest)  # what came meanwhile was notifications (server logging)


def test_a_gateway_as_upstream_answers_json_and_sse(gw: GatewaySetup, http_gateway: Callable[..., str],
                                                    tmp_path: Any) -> None:
    inner = GatewaySetup(tmp_path / "inner")
    inner.tmp.mkdir()
    inner.write(policy=ALLOW_ALL, gateway={"upstreams": {"everything": upstream(everything_server_argv())}})
    gw.config, gw.env = inner.config, inner.env
    inner_url = http_gateway()
    outer = GatewaySetup(tmp_path / "outer")
    outer.tmp.mkdir()
    outer.write(policy=ALLOW_ALL, gateway={"upstreams": {"inner": {"url": inner_url}}})
    gw.config, gw.env = outer.config, outer.env
    url = http_gateway()
    progress: list[float] = []

    async def use(s: Any) -> list[Any]:
        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append(p)

        return [await s.call_tool("echo", {"message": "through two"}),
                await s.call_tool(LONG, {"duration": 0.4, "steps": 2}, progress_callback=on_progress)]

    echo, long = asyncio.run(_sdk(url, use))
    assert echo.content[0].text == "Echo: through two" and "completed" in long.content[0].text
    assert progress == [1, 2]
    assert len(inner.receipts()) == len(outer.receipts()) == 2


def test_a_dead_upstream_fails_calls_at_once(gw: GatewaySetup, http_gateway: Callable[..., str],
                                             everything_http: Any) -> None:
    from mcp.shared.exceptions import MCPError

    gw.write(policy=ALLOW_ALL, gateway={"upstreams": {"everything": {"url": everything_http.url}}})
    url = http_gateway()

    async def use(s: Any) -> tuple[Any, str, float]:
        first = await s.call_tool("echo", {"message": "alive"})
        stop_process(everything_http.process)
        started = time.monotonic()
        try:
            res = await asyncio.wait_for(s.call_tool("echo", {"message": "dead"}), 20)
            said = res.content[0].text if res.is_error else f"not an error: {res}"
        except MCPError as exc:
            said = str(exc)
        return first, said, time.monotonic() - started

    first, said, seconds = asyncio.run(_sdk(url, use))
    assert first.content[0].text == "Echo: alive"
    assert "unavailable" in said and "everything" in said, said
    assert seconds < 5
