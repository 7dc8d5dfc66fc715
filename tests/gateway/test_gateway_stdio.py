"""The gateway over stdio, between the official MCP Python SDK client and real MCP servers.

Upstreams are the reference servers: `@modelcontextprotocol/server-filesystem` and
`@modelcontextprotocol/server-everything` (npm), `mcp-server-time` (PyPI). Nothing here is a fake.
"""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

from tests.mcp_support import everything_server_argv, filesystem_server_argv, time_server_argv

from .conftest import GatewaySetup, upstream

FS_POLICY = """
policy: {id: fs-gateway, version: "1", default: DENY}
rules:
  - id: no-secrets
    match: {tool: [read_file, read_text_file, read_multiple_files, read_media_file],
            parameters.path: {matches: "(secret|\\\\.env$|id_rsa)"}}
    action: DENY
    priority: 100
    reason: reading secrets is not allowed
  - id: writes-stay-in-work
    match: {tool: [write_file, edit_file, create_directory, move_file],
            parameters.path: {not: {matches: "^WORK/"}}}
    action: DENY
    priority: 90
    reason: writes are allowed only under the work directory
  - id: the-rest
    match: {tool: "*"}
    action: ALLOW
"""


def _text(result: Any) -> str:
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def _fs_setup(gw: GatewaySetup, tmp_path: Path, **gateway: Any) -> tuple[Path, Path]:
    data = tmp_path / "data"
    work = data / "work"
    work.mkdir(parents=True)
    (data / "notes.txt").write_text("meeting at noon")
    (data / "secret.txt").write_text("the launch code is 0000")
    policy = FS_POLICY.replace("WORK/", str(work.resolve()) + "/")
    gw.write(policy=policy, gateway={
        "principal": {"human": "alice@company.com", "agent": "ide-agent"},
        "upstreams": {"fs": upstream(filesystem_server_argv(data.resolve()))},
        **gateway})
    return data.resolve(), work.resolve()


def test_filesystem_behind_the_gateway_denies_secrets_and_writes_outside_and_receipts_every_call(
        gw: GatewaySetup, tmp_path: Path) -> None:
    data, work = _fs_setup(gw, tmp_path)

    async def run() -> dict[str, Any]:
        async with gw.client() as s:
            names = [t.name for t in (await s.list_tools()).tools]
            ok = await s.call_tool("read_text_file", {"path": str(data / "notes.txt")})
            secret = await s.call_tool("read_text_file", {"path": str(data / "secret.txt")})
            outside = await s.call_tool("write_file", {"path": str(data / "evil.txt"), "content": "x"})
            inside = await s.call_tool("write_file", {"path": str(work / "out.txt"), "content": "report"})
            return {"names": names, "ok": ok, "secret": secret, "outside": outside, "inside": inside}

    r = asyncio.run(run())
    assert "read_text_file" in r["names"] and "write_file" in r["names"]
    assert not r["ok"].is_error and "meeting at noon" in _text(r["ok"])
    # DENY comes back as a tool result the model can read, with the rule and the receipt id
    assert r["secret"].is_error and "reading secrets is not allowed" in _text(r["secret"])
    assert "launch code" not in _text(r["secret"])
    assert r["secret"].meta["aarmor/decision"] == "DENY" and r["secret"].meta["aarmor/rule_id"] == "no-secrets"
    assert r["secret"].meta["aarmor/receipt_id"] in _text(r["secret"])
    assert r["outside"].is_error and "writes-stay-in-work" in _text(r["outside"])
    assert not (data / "evil.txt").exists()  # never forwarded
    assert not r["inside"].is_error and (work / "out.txt").read_text() == "report"

    receipts = gw.receipts()
    calls = [(rc.tool, rc.decision) for rc in receipts]
    assert calls == [("read_text_file", "ALLOW"), ("read_text_file", "DENY"), ("write_file", "DENY"),
                     ("write_file", "ALLOW")]
    assert {rc.human for rc in receipts} == {"alice@company.com"}
    by_id = {rc.receipt_id: rc for rc in receipts}
    assert by_id[r["secret"].meta["aarmor/receipt_id"]].body["decision"]["rule_id"] == "no-secrets"


def test_tools_collide_across_upstreams_and_are_namespaced(gw: GatewaySetup, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x.txt").write_text("from a")
    (b / "x.txt").write_text("from b")
    gw.write(policy=FS_POLICY.replace("WORK/", "/nowhere/"), gateway={
        "principal": {"human": "alice@company.com"},
        "upstreams": {"a": upstream(filesystem_server_argv(a)), "b": upstream(filesystem_server_argv(b)),
                      "clock": upstream(time_server_argv())}})

    async def run() -> tuple[list[str], str, str, Any]:
        async with gw.client() as s:
            names = [t.name for t in (await s.list_tools()).tools]
            ra = await s.call_tool("a__read_text_file", {"path": str(a / "x.txt")})
            rb = await s.call_tool("b__read_text_file", {"path": str(b / "x.txt")})
            now = await s.call_tool("get_current_time", {"timezone": "UTC"})
            return names, _text(ra), _text(rb), now

    names, ta, tb, now = asyncio.run(run())
    assert "a__read_text_file" in names and "b__read_text_file" in names and "read_text_file" not in names
    assert "get_current_time" in names  # no collision, no prefix
    assert ta == "from a" and tb == "from b"
    assert not now.is_error and "UTC" in _text(now)
    assert [rc.tool for rc in gw.receipts()] == ["a__read_text_file", "b__read_text_file", "get_current_time"]


def test_the_one_line_wrapper_form_fronts_a_single_server(gw: GatewaySetup, tmp_path: Path) -> None:
    gw.write(policy=FS_POLICY.replace("WORK/", "/nowhere/"), gateway={"principal": {"human": "alice@company.com"}})

    async def run() -> Any:
        async with gw.client("--", *time_server_argv()) as s:
            return await s.call_tool("get_current_time", {"timezone": "Europe/Paris"})

    res = asyncio.run(run())
    assert not res.is_error and "Europe/Paris" in _text(res)
    assert [(rc.tool, rc.decision) for rc in gw.receipts()] == [("get_current_time", "ALLOW")]


def test_everything_server_passes_resources_prompts_completion_and_logging_through(
        gw: GatewaySetup) -> None:
    gw.write(policy=FS_POLICY.replace("WORK/", "/nowhere/"), gateway={
        "principal": {"human": "alice@company.com"},
        "upstreams": {"everything": upstream(everything_server_argv())}})

    async def run() -> dict[str, Any]:
        from mcp_types import PromptReference

        async with gw.client() as s:
            resources = (await s.list_resources()).resources
            first = await s.read_resource(resources[0].uri)
            templates = (await s.list_resource_templates()).resource_templates
            prompts = (await s.list_prompts()).prompts
            prompt = await s.get_prompt("args-prompt", {"city": "Paris"})
            completion = await s.complete(PromptReference(type="ref/prompt", name="completable-prompt"),
                                          {"name": "department", "value": "E"})
            with warnings.catch_warnings():  # the SDK deprecates the logging capability; servers still have it
                warnings.simplefilter("ignore")
                await s.set_logging_level("debug")
            pong = await s.send_ping()
            echo = await s.call_tool("echo", {"message": "hello"})
            return {"resources": resources, "first": first, "templates": templates, "prompts": prompts,
                    "prompt": prompt, "completion": completion, "pong": pong, "echo": echo}

    r = asyncio.run(run())
    assert r["resources"] and r["first"].contents
    assert r["templates"] and r["prompts"]
    assert "Paris" in str(r["prompt"].messages)
    assert r["completion"].completion.values  # routed to the owner of the prompt
    assert r["pong"] is not None
    assert not r["echo"].is_error and "hello" in _text(r["echo"])


def test_tools_policy_forbids_outright_can_be_hidden(gw: GatewaySetup, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    policy = FS_POLICY.replace("WORK/", "/nowhere/") + """
  - id: never-move
    match: {tool: move_file}
    action: DENY
    classification: forbidden
  - id: writes-only-small
    match: {tool: write_file, parameters.content: {length: {gt: 1000}}}
    action: DENY
    classification: forbidden
"""
    gw.write(policy=policy, gateway={"principal": {"human": "alice@company.com"}, "hide_denied_tools": True,
                                     "upstreams": {"fs": upstream(filesystem_server_argv(data.resolve()))}})

    async def run() -> tuple[list[str], Any]:
        async with gw.client() as s:
            names = [t.name for t in (await s.list_tools()).tools]
            return names, await s.call_tool("move_file", {"source": "a", "destination": "b"})

    names, moved = asyncio.run(run())
    assert "move_file" not in names  # unconditionally forbidden: hidden
    assert "write_file" in names  # forbidden only for some arguments: listed
    assert moved.is_error and "never-move" in _text(moved)  # hidden is not the control: calling it is DENY
