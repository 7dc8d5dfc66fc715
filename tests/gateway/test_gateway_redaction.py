"""MODIFY of results at the gateway: a `redact_output` rule scrubs what a real upstream returned before the
MCP client sees it (`@modelcontextprotocol/server-filesystem` reading a file that holds secrets)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.mcp_support import filesystem_server_argv

from .conftest import GatewaySetup, upstream

POLICY = """
policy: {id: scrub, version: "1", default: DENY}
rules:
  - id: scrub-reads
    priority: 20
    match: {tool: read_text_file}
    action: MODIFY
    modifications: {redact_output: [CREDENTIALS, email]}
    reason: file contents reach the model without keys or addresses
  - id: the-rest
    priority: 10
    match: {tool: "*"}
    action: ALLOW
"""
KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"


def _text(result: Any) -> str:
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def test_a_file_read_through_the_gateway_reaches_the_client_redacted(gw: GatewaySetup, tmp_path: Path) -> None:
    data = (tmp_path / "data").resolve()
    data.mkdir()
    (data / "env.txt").write_text(f"OPENAI_API_KEY={KEY}\nowner: ops@company.com\nregion: eu-west-1\n")
    gw.write(policy=POLICY, gateway={"principal": {"human": "alice@company.com"},
                                     "upstreams": {"fs": upstream(filesystem_server_argv(data))}})

    async def run() -> tuple[Any, Any]:
        async with gw.client() as s:
            read = await s.call_tool("read_text_file", {"path": str(data / "env.txt")})
            missing = await s.call_tool("read_text_file", {"path": str(data / f"{KEY}.txt")})
            return read, missing

    read, missing = asyncio.run(run())
    assert not read.is_error
    text = _text(read)
    assert "OPENAI_API_KEY=[REDACTED:api_key]" in text and "owner: [REDACTED:email]" in text
    assert "region: eu-west-1" in text and KEY not in text
    # an error result is redacted too (the server echoes the path it could not open)
    assert missing.is_error and KEY not in _text(missing) and "[REDACTED:api_key]" in _text(missing)
    # the server returns the text twice (`content` and `structuredContent`): both copies are scrubbed
    assert KEY not in str(read.structured_content) and "[REDACTED:api_key]" in str(read.structured_content)
    first = gw.receipts()[0]
    assert first.body["execution"]["output_redaction"] == {"redacted": 4,
                                                           "detectors": {"api_key": 2, "email": 2}}
