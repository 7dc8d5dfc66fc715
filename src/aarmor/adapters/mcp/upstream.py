"""Connections to the MCP servers behind the gateway: stdio subprocesses and Streamable HTTP endpoints.

Rules:
- The gateway numbers its own requests to each upstream; answers are matched here, and requests and
  notifications the server sends are handed to `on_message` untouched.
- An upstream that exits or drops its connection fails every request in flight with an error at once: a
  client never hangs on a dead server. A stdio server is restarted per its `restart` policy (at most
  `max_restarts` times, with a growing pause) and initialised again with the client's original
  `initialize` parameters; `on_restart` then lets the gateway tell the client its lists may have changed.
- stdio framing is one JSON object per line (MCP stdio transport). The server's stderr goes to ours.
- Streamable HTTP: http_upstream.py (one kept-alive HTTP client per upstream, the same dicts).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aarmor.config import UpstreamConfig

from .jsonrpc import (
    UPSTREAM_UNAVAILABLE,
    LineTooLong,
    Message,
    RemoteError,
    dumps,
    is_response,
    obj,
    read_messages,
)

__all__ = ["StdioUpstream", "Upstream", "open_upstream"]

log = logging.getLogger("aarmor.gateway")

#: one stdio line may carry a large tool result; larger lines end the connection with an error
MAX_LINE_BYTES = 64 * 1024 * 1024

OnMessage = Callable[["Upstream", Message], Awaitable[None]]


class Upstream:
    """What the router needs of one server. Subclasses move bytes; this class matches answers."""

    def __init__(self, cfg: UpstreamConfig, on_message: OnMessage,
                 on_restart: Callable[[Upstream], Awaitable[None]] | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._on_message = on_message
        self._on_restart = on_restart
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self.init_params: dict[str, Any] | None = None
        self.init_result: dict[str, Any] | None = None
        self.protocol_version: str | None = None
        self.alive = False
        self.closing = False
        self.gone_reason = "not started"
        self._background: set[asyncio.Future[Any]] = set()

    # --- the router's side ------------------------------------------------------------------
    async def initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        """Start the server and run the handshake with the client's own `initialize` parameters."""
        self.init_params = params
        await self._connect()
        return await self._handshake()

    def send_request(self, method: str, params: Any) -> tuple[int, asyncio.Future[Message]]:
        """Send a request now; return the id it went out with and the future of its answer."""
        rid = next(self._ids)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        if not self.alive:
            fut.set_exception(self._gone())
            return rid, fut
        self._pending[rid] = fut
        msg: Message = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self._spawn(self._send_or_fail(msg, rid))
        return rid, fut

    async def request(self, method: str, params: Any = None) -> dict[str, Any]:
        """The result of one request. Raises RemoteError (the server's error, or UPSTREAM_UNAVAILABLE)."""
        _, fut = self.send_request(method, params)
        return unwrap(await fut)

    async def send(self, msg: Message) -> None:
        """A notification, or the answer to a request the server sent."""
        if self.alive:
            await self._write(msg)

    async def close(self) -> None:
        self.closing = True
        self._fail_pending("the gateway is shutting down")
        await self._disconnect()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- the transport's side ------------------------------------------------------------------
    def forget(self, rid: int) -> None:
        """Stop waiting for request `rid` (it timed out or was cancelled); a late answer is dropped."""
        self._pending.pop(rid, None)

    async def _dispatch(self, msg: Message) -> None:
        if is_response(msg):
            fut = self._pending.pop(msg["id"], None) if isinstance(msg["id"], int) else None
            if fut is None:
                log.warning("upstream `%s` answered id %r, which no request is waiting for (late or wrong)",
                            self.name, msg.get("id"))
            elif not fut.done():
                fut.set_result(msg)
            return
        await self._on_message(self, msg)

    async def _send_or_fail(self, msg: Message, rid: int) -> None:
        try:
            await self._write(msg)
        except Exception as exc:  # a broken pipe: the request cannot reach the server
            fut = self._pending.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_exception(RemoteError(UPSTREAM_UNAVAILABLE, f"upstream `{self.name}`: {exc}"))

    async def _handshake(self) -> dict[str, Any]:
        assert self.init_params is not None
        try:
            res = await asyncio.wait_for(self.request("initialize", self.init_params), self.cfg.startup_timeout)
        except TimeoutError:
            raise RemoteError(UPSTREAM_UNAVAILABLE, f"upstream `{self.name}` did not answer initialize within "
                              f"{self.cfg.startup_timeout:g} s") from None
        self.init_result = res
        self.protocol_version = res.get("protocolVersion") if isinstance(res.get("protocolVersion"), str) else None
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return res

    def _gone(self) -> RemoteError:
        return RemoteError(UPSTREAM_UNAVAILABLE, f"upstream `{self.name}` is unavailable: {self.gone_reason}")

    def _fail_pending(self, reason: str) -> None:
        self.gone_reason = reason
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(self._gone())

    def kill(self) -> None:
        """Stop the server now, without waiting (a stdio subprocess gets SIGTERM on its process group)."""
        self.closing = True

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    async def _write(self, msg: Message) -> None:
        raise NotImplementedError


def unwrap(answer: Message) -> dict[str, Any]:
    """The `result` of an answer, or its error raised as RemoteError."""
    if "error" in answer:
        e = obj(answer["error"])
        code = e["code"] if isinstance(e.get("code"), int) else -32603
        raise RemoteError(code, str(e.get("message", "error")), e.get("data"))
    res = answer.get("result")
    return res if isinstance(res, dict) else {}


class StdioUpstream(Upstream):
    """A server run as a subprocess, spoken to over its stdin and stdout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._restarts = 0
        self._write_lock = asyncio.Lock()

    async def _connect(self) -> None:
        assert self.cfg.command is not None
        env = {**os.environ, **dict(self.cfg.env)}
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.cfg.command, *self.cfg.args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=None, env=env, cwd=self.cfg.cwd, limit=MAX_LINE_BYTES, start_new_session=True)
        except OSError as exc:
            self.gone_reason = f"cannot start `{self.cfg.command}`: {exc}"
            raise RemoteError(UPSTREAM_UNAVAILABLE, f"upstream `{self.name}`: {self.gone_reason}") from None
        self.alive = True
        self._reader = asyncio.ensure_future(self._read_loop(self._proc))

    async def _read_loop(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        reason = "its output ended"
        try:
            async for item in read_messages(proc.stdout):
                if isinstance(item, RemoteError):
                    log.warning("upstream %s sent something that is not JSON-RPC: %s", self.name, item.message)
                    continue
                try:
                    await self._dispatch(item)
                except Exception:  # the router's failure on one message must not end the connection
                    log.exception("upstream %s: handling a message failed", self.name)
        except LineTooLong:
            reason = f"it sent a line over {MAX_LINE_BYTES} bytes"
        finally:
            self.alive = False
            code = await _reap(proc)
            why = f"{reason} (exit status {code})" if code is not None else reason
            self._fail_pending(f"the server process ended: {why}")
            if not self.closing:
                self._spawn(self._maybe_restart(code))

    async def _maybe_restart(self, code: int | None) -> None:
        policy = self.cfg.restart
        failed = code is None or code != 0
        if policy == "never" or (policy == "on-failure" and not failed) or self._restarts >= self.cfg.max_restarts:
            log.error("upstream %s ended (%s); not restarted (restart: %s, %d of %d restarts used)",
                      self.name, self.gone_reason, policy, self._restarts, self.cfg.max_restarts)
            return
        self._restarts += 1
        await asyncio.sleep(min(0.2 * 2 ** (self._restarts - 1), 10.0))
        if self.closing:
            return
        log.warning("upstream %s ended (%s); restart %d of %d", self.name, self.gone_reason,
                    self._restarts, self.cfg.max_restarts)
        try:
            await self._connect()
            await self._handshake()
        except Exception as exc:
            log.error("upstream %s: restart failed: %s", self.name, exc)
            return
        if self._on_restart is not None:
            await self._on_restart(self)

    async def _write(self, msg: Message) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or not self.alive:
            raise self._gone()
        async with self._write_lock:
            proc.stdin.write(dumps(msg) + b"\n")
            await proc.stdin.drain()

    def kill(self) -> None:
        super().kill()
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGTERM)

    async def _disconnect(self) -> None:
        proc = self._proc
        if proc is None:
            return
        # MCP stdio shutdown: close stdin, wait, then SIGTERM, then SIGKILL (the whole process group:
        # `npx` and `uvx` start the real server as a child)
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), 2.0)
                break
            except TimeoutError:
                continue
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._reader, 1.0)


async def _reap(proc: asyncio.subprocess.Process) -> int | None:
    try:
        return await asyncio.wait_for(proc.wait(), 2.0)
    except TimeoutError:
        return None


def open_upstream(cfg: UpstreamConfig, on_message: OnMessage,
                  on_restart: Callable[[Upstream], Awaitable[None]] | None = None) -> Upstream:
    """The connection object for `cfg` (not yet started: `initialize` starts it)."""
    if cfg.command is not None:
        return StdioUpstream(cfg, on_message, on_restart)
    from .http_upstream import HttpUpstream  # here: it builds on this module

    return HttpUpstream(cfg, on_message, on_restart)
