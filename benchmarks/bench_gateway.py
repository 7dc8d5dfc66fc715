"""MCP gateway: the latency a `tools/call` gains when it goes through `aarmor gateway`.

The same upstream (npm `@modelcontextprotocol/server-everything`, tool `echo`) is reached directly and
through a real `aarmor gateway` subprocess, in one run, in alternating batches (direct, gateway,
direct, ...) so that machine noise falls on both sides alike. Two clients:
- raw: JSON-RPC written by hand (one line per message on a pipe; one httpx POST per message over HTTP),
  so the figure is the servers' and the gateway's, not a client library's;
- sdk: the official MCP Python SDK client (`ClientSession` over `stdio_client` / `streamable_http_client`),
  what an application would use; its own overhead is in both columns.
Each sample is one `tools/call` from send to the matching answer, `perf_counter_ns`.

The gateway's policy ALLOWs every tool (`default: DENY` + an allow-all rule), its store is SQLite in a
temporary directory with the default `synchronous=full`. Extra stdio variants: the store at
`synchronous=normal`, and a policy that DENYs (the call is mediated and receipted, the upstream is not
called: mediation cost alone, the rest of the ALLOW figure is proxying).

Streamable HTTP: server-everything `streamableHttp` on its own port, the gateway `--listen` on another
with that server as its `{url: ...}` upstream. Throughput: 8 concurrent raw clients (each its own MCP
session, so its own upstream connection at the gateway) for a fixed time, direct then gateway, twice.
Memory: VmRSS of the gateway process (not its upstream children) after initialize and after the run.

    .venv/bin/python benchmarks/bench_gateway.py            # everything, Markdown tables
    .venv/bin/python benchmarks/bench_gateway.py --quick    # fewer samples
    .venv/bin/python benchmarks/bench_gateway.py --profile  # cProfile of a stdio gateway under load

Needs `npm ci --prefix tests/mcp_tools` (server-everything and Node 22).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.mcp_support import (  # noqa: E402
    everything_server_argv,
    free_port,
    stop_process,
    wait_for_port,
)

PYTHON = sys.executable
AARMOR = str(Path(sys.executable).parent / "aarmor")
PROTOCOL = "2025-06-18"
ECHO = {"name": "echo", "arguments": {"message": "hello from the benchmark"}}

ALLOW_POLICY = """
policy: {id: bench, version: "1", default: DENY}
rules:
  - id: allow-all
    match: {tool: "*"}
    action: ALLOW
"""
DENY_POLICY = """
policy: {id: bench-deny, version: "1", default: DENY}
rules:
  - id: allow-something-else
    match: {tool: not-echo}
    action: ALLOW
"""

Call = Callable[[], Awaitable[Any]]


# ------------------------------------------------------------------------------------------- configs


def write_config(tmp: Path, name: str, *, policy: str, upstream: dict[str, Any], sync: str = "full") -> Path:
    d = tmp / name
    d.mkdir()
    (d / "policy.yaml").write_text(policy)
    store = f"sqlite:///{d / 'aarmor.db'}" + ("" if sync == "full" else f"?synchronous={sync}")
    doc = {"store": store, "keys": str(d / "keys"), "policy": str(d / "policy.yaml"),
           "gateway": {"upstreams": {"everything": upstream}}}
    path = d / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def gateway_env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


# ------------------------------------------------------------------------------------------- clients


class RawStdio:
    """Newline-delimited JSON-RPC on a subprocess's stdin/stdout."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv, self.env = argv, env
        self.proc: asyncio.subprocess.Process | None = None
        self._id = 0

    async def start(self) -> RawStdio:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=self.env, limit=16 * 1024 * 1024)
        await self.request("initialize", {"protocolVersion": PROTOCOL, "capabilities": {},
                                          "clientInfo": {"name": "bench", "version": "0"}})
        await self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await self.request("tools/list", {})
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _write(self, msg: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        await self.proc.stdin.drain()

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        self._id += 1
        rid = self._id
        await self._write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.argv[:2]} closed its stdout")
            msg = json.loads(line)
            if msg.get("id") == rid and "method" not in msg:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg["result"]
                return result

    async def call(self) -> Any:
        return await self.request("tools/call", ECHO)

    async def close(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class RawHttp:
    """Streamable HTTP by hand: one POST per message, JSON or SSE answer read whole."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url
        self.client = httpx.AsyncClient(timeout=60)
        self.headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        self._id = 0

    async def start(self) -> RawHttp:
        res, sid = await self._post_request("initialize", {"protocolVersion": PROTOCOL, "capabilities": {},
                                                           "clientInfo": {"name": "bench", "version": "0"}})
        if sid:
            self.headers["mcp-session-id"] = sid
        self.headers["mcp-protocol-version"] = res.get("protocolVersion", PROTOCOL)
        r = await self.client.post(self.url, headers=self.headers,
                                   content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        r.raise_for_status()
        await self.request("tools/list", {})
        return self

    async def _post_request(self, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        self._id += 1
        rid = self._id
        r = await self.client.post(self.url, headers=self.headers,
                                   content=json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                                       "params": params}))
        r.raise_for_status()
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            msgs = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")
                    and line[5:].strip()]
        else:
            msgs = [r.json()]
        for msg in msgs:
            if msg.get("id") == rid and "method" not in msg:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"], r.headers.get("mcp-session-id")
        raise RuntimeError(f"{method}: no answer in {r.text[:300]!r}")

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return (await self._post_request(method, params))[0]

    async def call(self) -> Any:
        return await self.request("tools/call", ECHO)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if "mcp-session-id" in self.headers:
                await self.client.delete(self.url, headers=self.headers)
        await self.client.aclose()


@contextlib.asynccontextmanager
async def sdk_stdio(argv: list[str], env: dict[str, str] | None = None) -> AsyncIterator[Call]:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
    with open(os.devnull, "w") as devnull:  # the servers' stderr banners
        async with stdio_client(params, errlog=devnull) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            await s.list_tools()
            yield lambda: s.call_tool(ECHO["name"], ECHO["arguments"])


@contextlib.asynccontextmanager
async def sdk_http(url: str) -> AsyncIterator[Call]:
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        await s.list_tools()
        yield lambda: s.call_tool(ECHO["name"], ECHO["arguments"])


# ------------------------------------------------------------------------------------------- timing


def pct(samples: list[int], q: float) -> float:
    s = sorted(samples)
    return s[max(0, int(len(s) * q) - 1)] / 1e6  # ms


def p50(samples: list[int]) -> float:
    return statistics.median(samples) / 1e6


async def interleaved(targets: dict[str, Call], *, rounds: int, batch: int, warmup: int = 50) -> dict[str, list[int]]:
    """`rounds` x (`batch` calls of each target in turn; the order rotates each round). Samples in ns."""
    names = list(targets)
    for name in names:
        for _ in range(warmup):
            await targets[name]()
    samples: dict[str, list[int]] = {n: [] for n in names}
    gc.collect()
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn, out = targets[name], samples[name]
            for _ in range(batch):
                t0 = time.perf_counter_ns()
                await fn()
                out.append(time.perf_counter_ns() - t0)
    return samples


def table(samples: dict[str, list[int]], pairs: list[tuple[str, str]]) -> str:
    rows = ["| path | samples | p50 (ms) | p99 (ms) |", "|---|---|---|---|"]
    for name, s in samples.items():
        rows.append(f"| {name} | {len(s)} | {p50(s):.3f} | {pct(s, 0.99):.3f} |")
    rows += ["", "| added by the gateway | p50 added (ms) | p99 added (ms) | p50 ratio | p99 ratio |",
             "|---|---|---|---|---|"]
    for base, gw in pairs:
        b, g = samples[base], samples[gw]
        rows.append(f"| {gw} - {base} | {p50(g) - p50(b):+.3f} | {pct(g, 0.99) - pct(b, 0.99):+.3f} "
                    f"| {p50(g) / p50(b):.2f} | {pct(g, 0.99) / pct(b, 0.99):.2f} |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------- stdio


async def bench_stdio(tmp: Path, rounds: int, batch: int) -> tuple[str, dict[str, int]]:
    everything = everything_server_argv("stdio")
    up = {"command": everything[0], "args": everything[1:]}
    allow = write_config(tmp, "stdio-allow", policy=ALLOW_POLICY, upstream=up)
    normal = write_config(tmp, "stdio-normal", policy=ALLOW_POLICY, upstream=up, sync="normal")
    deny = write_config(tmp, "stdio-deny", policy=DENY_POLICY, upstream=up)
    env = gateway_env()

    def gw(cfg: Path) -> list[str]:
        return [AARMOR, "gateway", "--config", str(cfg)]

    mem: dict[str, int] = {}
    raw_direct = await RawStdio(everything).start()
    raw_gw = await RawStdio(gw(allow), env).start()
    mem["stdio gateway, after initialize + tools/list"] = rss_kib(raw_gw.pid)
    raw_normal = await RawStdio(gw(normal), env).start()
    raw_deny = await RawStdio(gw(deny), env).start()
    denied = await raw_deny.call()
    assert denied.get("isError") is True, denied
    allowed = await raw_gw.call()
    assert not allowed.get("isError"), allowed
    try:
        async with sdk_stdio(everything) as sdk_direct, sdk_stdio(gw(allow), env) as sdk_gw:
            samples = await interleaved({
                "stdio direct (raw)": raw_direct.call,
                "stdio gateway ALLOW (raw)": raw_gw.call,
                "stdio direct (SDK client)": sdk_direct,
                "stdio gateway ALLOW (SDK client)": sdk_gw,
                "stdio gateway ALLOW, store synchronous=normal (raw)": raw_normal.call,
                "stdio gateway DENY, upstream not called (raw)": raw_deny.call,
            }, rounds=rounds, batch=batch)
        n = len(samples["stdio gateway ALLOW (raw)"])
        mem[f"stdio gateway, after {n} + warm-up calls"] = rss_kib(raw_gw.pid)
    finally:
        for c in (raw_direct, raw_gw, raw_normal, raw_deny):
            await c.close()
    return table(samples, [
        ("stdio direct (raw)", "stdio gateway ALLOW (raw)"),
        ("stdio direct (SDK client)", "stdio gateway ALLOW (SDK client)"),
        ("stdio direct (raw)", "stdio gateway ALLOW, store synchronous=normal (raw)"),
        ("stdio direct (raw)", "stdio gateway DENY, upstream not called (raw)"),
    ]), mem


# ------------------------------------------------------------------------------------------- HTTP


@contextlib.contextmanager
def http_processes(tmp: Path) -> Any:
    q = free_port()
    server = subprocess.Popen(everything_server_argv("streamableHttp"), env={**os.environ, "PORT": str(q)},
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    gateway = None
    try:
        wait_for_port(q, server)
        direct_url = f"http://127.0.0.1:{q}/mcp"
        cfg = write_config(tmp, "http-allow", policy=ALLOW_POLICY, upstream={"url": direct_url})
        p = free_port()
        gw_url = f"http://127.0.0.1:{p}/mcp"
        gateway = subprocess.Popen([AARMOR, "gateway", "--config", str(cfg), "--listen", gw_url],
                                   env=gateway_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(p, gateway)
        yield direct_url, gw_url, gateway.pid
    finally:
        if gateway is not None:
            stop_process(gateway)
        stop_process(server)


async def throughput(url: str, clients: int, seconds: float) -> tuple[int, float, list[int]]:
    conns = [await RawHttp(url).start() for _ in range(clients)]
    lat: list[int] = []
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(c: RawHttp) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            t0 = time.perf_counter_ns()
            await c.call()
            lat.append(time.perf_counter_ns() - t0)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    wall = time.perf_counter() - start
    for c in conns:
        await c.close()
    return done, wall, lat


async def bench_http(tmp: Path, rounds: int, batch: int, tp_seconds: float) -> tuple[str, str, dict[str, int]]:
    mem: dict[str, int] = {}
    with http_processes(tmp) as (direct_url, gw_url, gw_pid):
        raw_direct = await RawHttp(direct_url).start()
        raw_gw = await RawHttp(gw_url).start()
        mem["HTTP gateway, after one session's initialize + tools/list"] = rss_kib(gw_pid)
        try:
            async with sdk_http(direct_url) as sdk_direct, sdk_http(gw_url) as sdk_gw:
                samples = await interleaved({
                    "HTTP direct (raw)": raw_direct.call,
                    "HTTP gateway ALLOW (raw)": raw_gw.call,
                    "HTTP direct (SDK client)": sdk_direct,
                    "HTTP gateway ALLOW (SDK client)": sdk_gw,
                }, rounds=rounds, batch=batch)
            mem["HTTP gateway, after the latency run (2 sessions open)"] = rss_kib(gw_pid)
            tp: dict[str, list[tuple[int, float, list[int]]]] = {"direct": [], "gateway": []}
            for _ in range(2):
                tp["direct"].append(await throughput(direct_url, 8, tp_seconds))
                tp["gateway"].append(await throughput(gw_url, 8, tp_seconds))
            mem["HTTP gateway, after 2 x 8 concurrent sessions (closed with DELETE)"] = rss_kib(gw_pid)
        finally:
            await raw_direct.close()
            await raw_gw.close()
    lat_table = table(samples, [("HTTP direct (raw)", "HTTP gateway ALLOW (raw)"),
                                ("HTTP direct (SDK client)", "HTTP gateway ALLOW (SDK client)")])
    rows = ["| 8 concurrent raw clients over HTTP | calls | seconds | calls/s | p50 per call (ms) | p99 (ms) |",
            "|---|---|---|---|---|---|"]
    rates = {}
    for side, runs in tp.items():
        calls, wall = sum(r[0] for r in runs), sum(r[1] for r in runs)
        lat = [x for r in runs for x in r[2]]
        rates[side] = calls / wall
        rows.append(f"| {side} | {calls} | {wall:.1f} | {calls / wall:,.0f} | {p50(lat):.2f} | {pct(lat, 0.99):.2f} |")
    rows.append(f"\nGateway throughput / direct: {rates['gateway'] / rates['direct']:.2f}")
    return lat_table, "\n".join(rows), mem


# ------------------------------------------------------------------------------------------- profile


async def profile(tmp: Path, calls: int) -> None:
    """The stdio gateway under cProfile (the mediation runs on its event loop thread), `calls` echo calls."""
    everything = everything_server_argv("stdio")
    cfg = write_config(tmp, "profile", policy=ALLOW_POLICY,
                       upstream={"command": everything[0], "args": everything[1:]})
    out = tmp / "gateway.prof"
    code = ("import cProfile, sys; from aarmor.cli import main; "
            f"sys.argv = ['aarmor', 'gateway', '--config', {str(cfg)!r}]; "
            f"cProfile.run('main()', {str(out)!r})")
    c = await RawStdio([PYTHON, "-c", code], gateway_env()).start()
    for _ in range(calls):
        await c.call()
    await c.close()
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(45)


# ------------------------------------------------------------------------------------------- main


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from run_all import machine as m

    return m()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    ap.add_argument("--profile", action="store_true", help="cProfile a stdio gateway instead of benchmarking")
    args = ap.parse_args()
    rounds, batch, tp_seconds = (4, 25, 2.0) if args.quick else (40, 50, 8.0)
    with tempfile.TemporaryDirectory(prefix="aarmor-bench-gateway-") as t:
        tmp = Path(t)
        if args.profile:
            await profile(tmp, 1000)
            return
        print(f"Machine: {machine()}\n")
        print(f"Interleaved: {rounds} rounds x {batch} calls per path, after 50 warm-up calls per path.\n")
        stdio_table, mem1 = await bench_stdio(tmp, rounds, batch)
        print("### stdio\n\n" + stdio_table + "\n")
        http_table, tp_table, mem2 = await bench_http(tmp, rounds, batch, tp_seconds)
        print("### Streamable HTTP\n\n" + http_table + "\n")
        print("### Throughput\n\n" + tp_table + "\n")
        print("### Gateway memory (VmRSS of the gateway process, upstreams excluded)\n")
        print("| when | VmRSS (MiB) |\n|---|---|")
        for k, v in {**mem1, **mem2}.items():
            print(f"| {k} | {v / 1024:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
