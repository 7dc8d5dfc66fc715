"""The gateway fails closed (AARM R1, section 4.2): with the policy, the context store or the signing key
unavailable, a call policy would allow is refused with a readable error and never reaches the upstream.

Every test runs the real `aarmor gateway` subprocess in front of a real server with a visible side effect
(@modelcontextprotocol/server-filesystem: `write_file` creates a file) and checks the file afterwards.
What each fault really does (see also docs/mcp-gateway.md, "Failing closed"):
- policy: loaded at start (a missing or invalid file stops the gateway, exit 2, before any upstream runs);
  re-read every 2 s when its file changes, and a file that turns invalid or disappears never replaces
  the policy in force (the last good one keeps deciding).
- store: a write that fails (here: the file size limit of the gateway process, as a disk that is full)
  refuses the call at once; a database locked by another process holds the call for SQLite's 30 s busy
  timeout, then refuses it; in both cases later calls work again once the store does.
- signing key: read once at start; a bad key stops the gateway, and a key file removed while it runs
  changes nothing (the key is in memory).
- upstream: when a server answers a call with a broken line or a wrong id, the client gets an error once
  the upstream's `request_timeout` has passed (never a hang).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mcp_support import filesystem_server_argv

from .conftest import AARMOR, GatewaySetup, upstream

PRINCIPAL = {"human": "alice@company.com"}

ALLOW_WRITES = """
policy: {id: faults, version: "1", default: DENY}
rules:
  - id: writes-ok
    match: {tool: write_file}
    action: ALLOW
"""

DENY_WRITES = """
policy: {id: faults, version: "2", default: DENY}
rules:
  - id: no-writes
    match: {tool: write_file}
    action: DENY
    reason: writes are closed
"""


def _text(result: Any) -> str:
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


class Stderr:
    """The gateway's stderr through a pipe (not a file: the disk-full test limits the gateway's file sizes)."""

    def __init__(self) -> None:
        r, w = os.pipe()
        self.file = os.fdopen(w, "w")
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._drain, args=(r,), daemon=True)
        self._reader.start()

    def _drain(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as f:
            while chunk := f.read1(65536):
                self._chunks.append(chunk)

    def close(self) -> None:
        self.file.close()
        self._reader.join(10)

    @property
    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")


@contextlib.asynccontextmanager
async def client(gw: GatewaySetup, stderr: Stderr) -> AsyncIterator[Any]:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import stdio_client

    async with stdio_client(gw.stdio_params(), errlog=stderr.file) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        yield s


@pytest.fixture
def stderr() -> Iterator[Stderr]:
    s = Stderr()
    yield s
    s.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d.resolve()


def fs_gateway(gw: GatewaySetup, data: Path, policy: str = ALLOW_WRITES) -> GatewaySetup:
    return gw.write(policy=policy, gateway={"principal": PRINCIPAL,
                                            "upstreams": {"fs": upstream(filesystem_server_argv(data))}})


def write(s: Any, path: Path) -> Any:
    return s.call_tool("write_file", {"path": str(path), "content": "written through the gateway"})


def gateway_pid(gw: GatewaySetup) -> int:
    """The `aarmor gateway` process the SDK client started (a child of this process)."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"gateway" in argv and str(gw.config).encode() in argv:
            return int(p.name)
    raise AssertionError("the gateway process was not found")


def run_gateway_once(gw: GatewaySetup, data: Path) -> subprocess.CompletedProcess[str]:
    """`aarmor gateway` on stdio fed an initialize and a write_file call, to the end of its input."""
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "write_file", "arguments": {"path": str(data / "a.txt"), "content": "x"}}},
    ]
    return subprocess.run([AARMOR, "gateway", "--config", str(gw.config)], env=gw.env, text=True,
                          input="".join(json.dumps(m) + "\n" for m in lines), capture_output=True, timeout=60)


# --- 1. policy -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("policy", "message"), [
    (None, "cannot read policy"),
    ("policy: {id: x, version: '1', default: DENY}\nrules:\n  - id: r\n    match: {tool: '*'}\n"
     "    action: PERMIT\n", "unknown decision `PERMIT`"),
    ("policy: {id: x, version: '1'\n", "invalid YAML"),
], ids=["missing", "unknown-decision", "broken-yaml"])
def test_without_a_loadable_policy_the_gateway_does_not_start(gw: GatewaySetup, data: Path, policy: str | None,
                                                              message: str) -> None:
    fs_gateway(gw, data)
    if policy is None:
        (gw.tmp / "policy.yaml").unlink()
    else:
        (gw.tmp / "policy.yaml").write_text(policy)
    run = run_gateway_once(gw, data)
    assert run.returncode == 2
    assert message in run.stderr and "policy.yaml" in run.stderr
    assert run.stdout == ""  # not even `initialize` is answered: no session, no call
    assert not (data / "a.txt").exists()


def test_a_policy_that_turns_invalid_while_running_never_replaces_the_one_in_force(
        gw: GatewaySetup, data: Path, stderr: Stderr) -> None:
    fs_gateway(gw, data)
    policy = gw.tmp / "policy.yaml"

    async def run() -> list[Any]:
        async with client(gw, stderr) as s:
            out = [await write(s, data / "a.txt")]
            policy.write_text("policy: {id: faults, version: '3'\n")  # broken YAML
            await asyncio.sleep(2.05)  # the gateway looks at the file at most every 2 s
            out.append(await write(s, data / "b.txt"))
            policy.write_text(DENY_WRITES)  # a valid policy is picked up: reloading works
            await asyncio.sleep(2.05)
            out.append(await write(s, data / "c.txt"))
            policy.unlink()  # gone: the last good policy (DENY_WRITES) stays
            await asyncio.sleep(2.05)
            out.append(await write(s, data / "d.txt"))
            return out

    a, b, c, d = asyncio.run(run())
    assert not a.is_error and not b.is_error
    assert (data / "b.txt").exists()  # still decided by ALLOW_WRITES, the policy in force
    assert "policy reload rejected, keeping faults" in stderr.text and "invalid YAML" in stderr.text
    assert c.is_error and "writes are closed" in _text(c) and not (data / "c.txt").exists()
    assert d.is_error and "writes are closed" in _text(d) and not (data / "d.txt").exists()
    assert [(r.tool, r.decision, r.body["decision"]["policy"]["version"]) for r in gw.receipts()] == [
        ("write_file", "ALLOW", "1"), ("write_file", "ALLOW", "1"), ("write_file", "DENY", "2"),
        ("write_file", "DENY", "2")]


# --- 2. context store ------------------------------------------------------------------------------

def test_a_store_that_cannot_be_written_refuses_the_call_and_service_resumes(
        gw: GatewaySetup, data: Path, stderr: Stderr) -> None:
    # A full disk without root: the gateway process's file size limit (RLIMIT_FSIZE, set from here with
    # prlimit) makes every write to the database fail, as ENOSPC would; Python ignores SIGXFSZ.
    fs_gateway(gw, data)

    async def run() -> tuple[Any, Any, Any]:
        async with client(gw, stderr) as s:
            a = await write(s, data / "a.txt")
            pid = gateway_pid(gw)
            limits = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, limits[1]))
            try:
                b = await asyncio.wait_for(write(s, data / "b.txt"), 20)
            finally:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, limits)
            return a, b, await write(s, data / "c.txt")

    a, b, c = asyncio.run(run())
    assert not a.is_error
    assert b.is_error and "fail closed: StoreError" in _text(b) and "No receipt could be written" in _text(b)
    assert b.meta["aarmor/decision"] == "DENY" and b.meta["aarmor/receipt_id"] is None
    assert not (data / "b.txt").exists()
    assert "could not record denied action" in stderr.text  # the attempt is at least in the log
    assert not c.is_error and (data / "c.txt").exists()
    # nothing of the refused call could be written; the chains go on unbroken (receipts verify)
    assert [(r.tool, r.decision) for r in gw.receipts()] == [("write_file", "ALLOW"), ("write_file", "ALLOW")]


@pytest.mark.slow
def test_a_store_locked_by_another_process_holds_then_refuses_the_call(
        gw: GatewaySetup, data: Path, stderr: Stderr) -> None:
    fs_gateway(gw, data)

    async def run() -> tuple[Any, Any, Any, Any]:
        async with client(gw, stderr) as s:
            await write(s, data / "a.txt")
            db = sqlite3.connect(gw.tmp / "aarmor.db", isolation_level=None)
            # a short lock: the call waits for the store, is not forwarded meanwhile, then runs
            db.execute("BEGIN EXCLUSIVE")
            call = asyncio.ensure_future(write(s, data / "b.txt"))
            await asyncio.sleep(1.0)
            held = not call.done() and not (data / "b.txt").exists()
            db.execute("ROLLBACK")
            b = await asyncio.wait_for(call, 20)
            # a lock longer than SQLite's busy timeout (30 s): the call is refused; the DENY is recorded
            # once the lock is gone (the lock is released just after the refusal)
            db.execute("BEGIN EXCLUSIVE")
            started = time.monotonic()
            call = asyncio.ensure_future(write(s, data / "c.txt"))
            await asyncio.sleep(30.5)
            db.execute("ROLLBACK")
            db.close()
            c = await asyncio.wait_for(call, 40)
            assert time.monotonic() - started < 45
            return held, b, c, await write(s, data / "d.txt")

    held, b, c, d = asyncio.run(run())
    assert held
    assert not b.is_error and (data / "b.txt").exists()
    assert c.is_error and "fail closed: StoreError" in _text(c) and "database is locked" in _text(c)
    assert not (data / "c.txt").exists()
    assert not d.is_error and (data / "d.txt").exists()
    # `decision` is the PDP's verdict (ALLOW), `enforcement` what happened (docs/receipts.md)
    receipts = gw.receipts()
    assert [(r.decision, r.body["enforcement"]["result"], r.body["enforcement"]["executed"]) for r in receipts] == [
        ("ALLOW", "ALLOW", True), ("ALLOW", "ALLOW", True), ("ALLOW", "DENY", False), ("ALLOW", "ALLOW", True)]
    denied = receipts[2].body
    assert denied["receipt_id"] == c.meta["aarmor/receipt_id"]
    assert denied["error"]["class"] == "StoreError" and "database is locked" in denied["enforcement"]["reason"]
    assert denied["execution"] is None


# --- 3. signing ------------------------------------------------------------------------------------

def _keyring(keys: Path) -> Path:
    from aarmor.receipts import Keyring

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DevelopmentKeyWarning: a generated key is what this test wants
        ring = Keyring.open(keys)
    ring.close()
    return keys / f"{ring.current_key_id}.pem"


@pytest.mark.parametrize("fault", ["corrupt", "readable-by-others"])
def test_without_a_usable_signing_key_the_gateway_does_not_start(gw: GatewaySetup, data: Path, fault: str) -> None:
    fs_gateway(gw, data)
    pem = _keyring(gw.tmp / "keys")
    if fault == "corrupt":
        pem.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        message = "is not a PEM private key"
    else:
        pem.chmod(0o644)
        message = "must not be accessible to group"
    run = run_gateway_once(gw, data)
    assert run.returncode == 2
    assert message in run.stderr and pem.name in run.stderr
    assert run.stdout == ""
    assert not (data / "a.txt").exists()


def test_the_signing_key_is_read_once_so_removing_its_files_while_running_changes_nothing(
        gw: GatewaySetup, data: Path, stderr: Stderr) -> None:
    fs_gateway(gw, data)
    keys = gw.tmp / "keys"
    _keyring(keys)
    away = gw.tmp / "keys-away"

    async def run() -> Any:
        async with client(gw, stderr) as s:
            await write(s, data / "a.txt")
            keys.rename(away)  # the key directory is gone while the gateway runs
            try:
                return await write(s, data / "b.txt")
            finally:
                away.rename(keys)

    b = asyncio.run(run())
    # The private key is held in memory from start-up: nothing on disk can make signing fail later. (The
    # signer's own failure, a closed keyring, is checked before execution: see tests of the mediator.)
    assert not b.is_error and (data / "b.txt").exists()
    receipts = gw.receipts()  # verified with the keyring's public keys
    assert [(r.decision, r.body["signature"]["key_id"]) for r in receipts] == [
        ("ALLOW", receipts[0].body["signature"]["key_id"])] * 2


# --- 4. upstream misbehaving -----------------------------------------------------------------------

# A fault injector, not a fake of a real server: no published MCP server sends a broken line or answers
# with a wrong id on purpose. It speaks just enough MCP (initialize, tools/list, tools/call) over stdio.
FAULTY_SERVER = r'''
import json, sys
from pathlib import Path

TOOLS = [{"name": n, "description": n, "inputSchema": {"type": "object"}}
         for n in ("write_file", "garbled", "misaddressed")]


def send(m):
    sys.stdout.write(json.dumps(m) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    rid, method, params = msg["id"], msg.get("method"), msg.get("params") or {}
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": rid, "result": {"protocolVersion": params["protocolVersion"],
              "capabilities": {"tools": {}}, "serverInfo": {"name": "faulty", "version": "0"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}})
    elif method == "tools/call" and params["name"] == "garbled":
        sys.stdout.write('{"jsonrpc": "2.0", "id": %d, "result": {"content": [\n' % rid)
        sys.stdout.flush()
    elif method == "tools/call" and params["name"] == "misaddressed":
        send({"jsonrpc": "2.0", "id": rid + 1000, "result": {"content": []}})
    elif method == "tools/call":
        Path(params["arguments"]["path"]).write_text("written")
        send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "ok"}]}})
    else:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "method not found"}})
'''

ALLOW_ALL = """
policy: {id: faults, version: "1", default: DENY}
rules:
  - id: all-ok
    match: {tool: "*"}
    action: ALLOW
"""


def faulty_gateway(gw: GatewaySetup) -> GatewaySetup:
    server = gw.tmp / "faulty_server.py"
    server.write_text(FAULTY_SERVER)
    return gw.write(policy=ALLOW_ALL, gateway={"principal": PRINCIPAL, "upstreams": {
        "faulty": {"command": sys.executable, "args": [str(server)], "request_timeout": 1}}})


@pytest.mark.parametrize("tool", ["garbled", "misaddressed"])
def test_a_garbled_or_misaddressed_upstream_answer_gives_the_client_an_error(gw: GatewaySetup, stderr: Stderr,
                                                                            tool: str) -> None:
    from mcp.shared.exceptions import MCPError

    faulty_gateway(gw)

    async def run() -> str:
        async with client(gw, stderr) as s:
            try:
                res = await asyncio.wait_for(s.call_tool(tool, {}), 20)
            except MCPError as exc:
                return str(exc)
            assert res.is_error
            return _text(res)

    # the gateway gives up after the upstream's `request_timeout` (1 s here), long before the client would
    assert "did not answer `tools/call` within 1 s" in asyncio.run(run())


def test_a_call_the_client_gives_up_on_is_recorded_and_the_connection_goes_on(gw: GatewaySetup,
                                                                             stderr: Stderr) -> None:
    faulty_gateway(gw)
    target = gw.tmp / "after.txt"

    async def run() -> Any:
        async with client(gw, stderr) as s:
            for tool in ("garbled", "misaddressed"):
                with contextlib.suppress(Exception):  # today a hang the client ends; later an error
                    await asyncio.wait_for(s.call_tool(tool, {}), 2)
            return await s.call_tool("write_file", {"path": str(target)})

    after = asyncio.run(run())
    assert not after.is_error and target.read_text() == "written"
    receipts = gw.receipts()
    assert [(r.tool, r.decision, r.body["execution"]["success"]) for r in receipts] == [
        ("garbled", "ALLOW", False), ("misaddressed", "ALLOW", False), ("write_file", "ALLOW", True)]

