"""Capture the `tools/list` of the MCP reference servers the tests install, for test_tool_risk.py.

Run from the repository root after `npm ci --prefix tests/mcp_tools` and `.venv/bin/pip install -e '.[test]'`:

    .venv/bin/python tests/context/data/capture_mcp_tools.py > tests/context/data/mcp_reference_tools.json

It speaks plain JSON-RPC over stdio (initialize, notifications/initialized, tools/list) to
server-filesystem, server-everything (npm, pinned in tests/mcp_tools), mcp-server-git and
mcp-server-time (PyPI, the `test` extra), and prints {server: [tool, ...]} with each tool's name,
description, inputSchema and annotations exactly as the server listed them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.mcp_support import (
    everything_server_argv,
    filesystem_server_argv,
    git_server_argv,
    make_git_repo,
    time_server_argv,
)


def _list_tools(argv: list[str]) -> list[dict[str, Any]]:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    assert proc.stdin is not None and proc.stdout is not None

    def send(msg: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(msg) + "\n")
        proc.stdin.flush()

    def answer(msg_id: int) -> dict[str, Any]:
        assert proc.stdout is not None
        for line in proc.stdout:
            msg = json.loads(line)
            if msg.get("id") == msg_id:
                return msg  # type: ignore[no-any-return]
        raise RuntimeError(f"{argv[0]} closed its output before answering {msg_id}")

    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "aarmor-capture", "version": "0"}}})
        answer(1)
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        tools: list[dict[str, Any]] = []
        cursor = None
        msg_id = 2
        while True:
            send({"jsonrpc": "2.0", "id": msg_id, "method": "tools/list",
                  "params": {"cursor": cursor} if cursor else {}})
            result = answer(msg_id)["result"]
            tools += [{k: t[k] for k in ("name", "description", "inputSchema", "annotations") if k in t}
                      for t in result["tools"]]
            cursor = result.get("nextCursor")
            msg_id += 1
            if not cursor:
                return tools
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_git_repo(Path(tmp) / "repo")
        out = {
            "server-filesystem": _list_tools(filesystem_server_argv(tmp)),
            "server-everything": _list_tools(everything_server_argv()),
            "mcp-server-git": _list_tools(git_server_argv(repo)),
            "mcp-server-time": _list_tools(time_server_argv()),
        }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
