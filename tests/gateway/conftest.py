"""Fixtures for the MCP gateway tests: a real `aarmor gateway` subprocess between the official MCP Python
SDK client and real MCP servers (PyPI `mcp-server-time`/`mcp-server-git`, npm server-filesystem and
server-everything installed by `npm ci --prefix tests/mcp_tools`, see .ci/run)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.mcp_support import free_port, wait_for_port

VENV_BIN = Path(sys.executable).parent
AARMOR = str(VENV_BIN / "aarmor")


def upstream(argv: list[str]) -> dict[str, Any]:
    """A `gateway.upstreams` entry for a stdio server given as argv (from tests/mcp_support.py)."""
    return {"command": argv[0], "args": argv[1:]}


class GatewaySetup:
    """A gateway configuration file (with its own store and keys) and helpers to use it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config = tmp / "gateway.yaml"
        self.env = {**os.environ, "AARMOR_CONFIG": str(self.config), "PYTHONWARNINGS": "ignore"}

    def write(self, *, policy: str, gateway: dict[str, Any], **extra: Any) -> GatewaySetup:
        (self.tmp / "policy.yaml").write_text(policy)
        doc = {"store": f"sqlite:///{self.tmp / 'aarmor.db'}", "keys": str(self.tmp / "keys"),
               "policy": "policy.yaml", "gateway": gateway, **extra}
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self

    def stdio_params(self, *args: str) -> Any:
        from mcp.client.stdio import StdioServerParameters

        return StdioServerParameters(command=AARMOR, args=["gateway", "--config", str(self.config), *args],
                                     env=self.env)

    @contextlib.asynccontextmanager
    async def client(self, *args: str, **session_kw: Any) -> AsyncIterator[Any]:
        """The official SDK client session, connected to the gateway over stdio and initialised."""
        from mcp.client.session import ClientSession
        from mcp.client.stdio import stdio_client

        async with stdio_client(self.stdio_params(*args)) as (r, w), ClientSession(r, w, **session_kw) as s:
            await s.initialize()
            yield s

    def receipts(self) -> list[Any]:
        """Every receipt in the gateway's store, oldest first, after verifying them offline."""
        from aarmor.config import load_config
        from aarmor.receipts import Keyring, verify_receipts
        from aarmor.store import open_store

        cfg = load_config(self.config)
        store = open_store(cfg.store)
        try:
            out = [r for s in store.log_sessions() for r in store.read_receipts(s)]
            if out:
                report = verify_receipts([r.body for r in out], Keyring.open(cfg.keys).public_keys())
                assert report.ok, report
            return sorted(out, key=lambda r: r.timestamp)
        finally:
            store.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([AARMOR, *args, "--config", str(self.config)], env=self.env, text=True,
                              capture_output=True, timeout=60)


@pytest.fixture
def gw(tmp_path: Path) -> GatewaySetup:
    return GatewaySetup(tmp_path)


@pytest.fixture
def http_gateway(gw: GatewaySetup) -> Iterator[Callable[..., str]]:
    """Start `aarmor gateway --listen http://...` on the written config; returns the MCP URL."""
    procs: list[subprocess.Popen[Any]] = []

    def start(*args: str) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}/mcp"
        p = subprocess.Popen([AARMOR, "gateway", "--config", str(gw.config), "--listen", url, *args],
                             env=gw.env, stdout=subprocess.DEVNULL)
        procs.append(p)
        wait_for_port(port, p)
        return url

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
