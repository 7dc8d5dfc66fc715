"""The third-party MCP servers the gateway tests put behind `aarmor gateway`, driven directly (no gateway).

With the official Python SDK client (`mcp.Client`, v2 API) each upstream lists its tools and answers one
tools/call; the Inspector CLI and the conformance suite are run once against server-everything over
Streamable HTTP, the conformance run pinned to the baseline that the gateway must match.

These fail (never skip) when the tools are missing: `npm ci --prefix tests/mcp_tools` and
`pip install -e '.[test]'` install them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests import mcp_support as ms

#: a generous bound per SDK round trip: each test takes well under 5 s here
TIMEOUT = 20.0


def _run(fn: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        with anyio.fail_after(TIMEOUT):
            return await fn()

    return anyio.run(bounded)


async def _list_and_call(server: Any, tool: str, arguments: dict[str, Any]) -> tuple[list[str], Any]:
    from mcp import Client

    async with Client(server) as client:
        listed = await client.list_tools()
        result = await client.call_tool(tool, arguments)
    return [t.name for t in listed.tools], result


def _text(result: Any) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "type", None) == "text")


def test_time_server_lists_and_calls() -> None:
    params = ms.stdio_params(ms.time_server_argv("UTC"))
    names, result = _run(lambda: _list_and_call(params, "get_current_time", {"timezone": "Europe/Paris"}))
    assert {"get_current_time", "convert_time"} <= set(names)
    assert not result.is_error
    assert result.structured_content["timezone"] == "Europe/Paris"
    assert "datetime" in json.loads(_text(result))


def test_git_server_lists_and_calls(tmp_path: Path) -> None:
    repo = ms.make_git_repo(tmp_path / "repo")
    params = ms.stdio_params(ms.git_server_argv(repo))
    names, result = _run(lambda: _list_and_call(params, "git_status", {"repo_path": str(repo)}))
    assert {"git_status", "git_log", "git_diff", "git_commit"} <= set(names)
    assert not result.is_error
    assert "notes.txt" in _text(result)  # the untracked file


def test_git_server_refuses_a_path_outside_its_repository(tmp_path: Path) -> None:
    repo = ms.make_git_repo(tmp_path / "repo")
    other = ms.make_git_repo(tmp_path / "other")
    params = ms.stdio_params(ms.git_server_argv(repo))
    _, result = _run(lambda: _list_and_call(params, "git_status", {"repo_path": str(other)}))
    assert result.is_error
    assert "outside the allowed repository" in _text(result)


def test_filesystem_server_lists_and_calls(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hello\n")
    (tmp_path / "sub").mkdir()
    params = ms.stdio_params(ms.filesystem_server_argv(tmp_path))
    names, result = _run(lambda: _list_and_call(params, "list_directory", {"path": str(tmp_path)}))
    assert {"list_directory", "read_text_file", "write_file", "list_allowed_directories"} <= set(names)
    assert not result.is_error
    assert "[FILE] hello.txt" in _text(result)
    assert "[DIR] sub" in _text(result)


def test_everything_server_over_stdio_lists_and_calls() -> None:
    params = ms.stdio_params(ms.everything_server_argv("stdio"))
    names, result = _run(lambda: _list_and_call(params, "echo", {"message": "over stdio"}))
    assert {"echo", "get-sum", "get-tiny-image"} <= set(names)
    assert _text(result) == "Echo: over stdio"


def test_everything_server_over_streamable_http_lists_and_calls() -> None:
    with ms.everything_http_server() as server:
        assert server.url.endswith("/mcp")
        names, result = _run(lambda: _list_and_call(server.url, "echo", {"message": "over http"}))
        assert "Session initialized" in server.log()
    assert {"echo", "get-sum"} <= set(names)
    assert _text(result) == "Echo: over http"
    assert server.process.poll() is not None  # stopped on exit


def test_inspector_cli_calls_a_tool_over_streamable_http(tmp_path: Path) -> None:
    env = ms.inspector_env(tmp_path)
    with ms.everything_http_server() as server:
        listed = subprocess.run(ms.inspector_cli_argv(server.url, "--method", "tools/list", "--format", "json",
                                                      "-q"), capture_output=True, text=True, timeout=TIMEOUT, env=env)
        called = subprocess.run(ms.inspector_cli_argv(server.url, "--method", "tools/call", "--tool-name", "get-sum",
                                                      "--tool-arg", "a=2", "b=3", "--format", "json", "-q"),
                                capture_output=True, text=True, timeout=TIMEOUT, env=env)
        missing = subprocess.run(ms.inspector_cli_argv(server.url, "--method", "tools/call", "--tool-name", "nope",
                                                       "--format", "json", "-q"),
                                 capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "echo" in [t["name"] for t in json.loads(listed.stdout)["result"]["tools"]]
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"result": {"content": [{"type": "text", "text": "The sum of 2 and 3 is 5."}]}}
    assert missing.returncode == 5  # EXIT_CODES.TOOL_ERROR; the error envelope goes to stderr
    assert json.loads(missing.stderr)["error"]["code"] == "tool_not_found"
    assert (tmp_path / ".mcp-inspector").is_dir()  # what it would have left in the real HOME


@pytest.mark.slow
def test_conformance_baseline_against_server_everything(tmp_path: Path) -> None:
    with ms.everything_http_server() as server:
        run = subprocess.run(ms.conformance_server_argv(server.url, output_dir=tmp_path / "results",
                                                        expected_failures=ms.CONFORMANCE_BASELINE),
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = ms.read_conformance_results(tmp_path / "results")
    failing = {name for name, r in results.items() if not r.ok}
    assert failing == ms.EVERYTHING_CONFORMANCE_EXPECTED_FAILURES
    assert {"server-initialize", "ping", "tools-list", "tools-call-simple-text", "tools-call-error",
            "resources-list", "prompts-list"} <= {name for name, r in results.items() if r.ok}
