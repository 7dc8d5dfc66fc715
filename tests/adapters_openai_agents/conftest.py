"""Fixtures for the OpenAI Agents SDK door: the real `openai-agents` package and a real aarmor Guard.

No LLM can run here, so the agent's model is the SDK's own test double, `agents.testing.ScriptedModel`: it
stands in for the LLM, emitting the scripted function calls turn by turn, while `Runner.run` runs the real
agent loop (tool lookup, guardrails, tool execution, feeding outputs back) and records every input it gets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import set_tracing_disabled

from aarmor.receipts import Keyring, verify_receipts


@pytest.fixture(autouse=True)
def _no_trace_export() -> Iterator[None]:
    # the SDK would otherwise try to export traces to OpenAI (there is no key here, and no network)
    set_tracing_disabled(True)
    yield


def receipts(guard: Any, tmp_path: Path, session_id: str | None = None) -> list[dict[str, Any]]:
    """Every receipt of the guard's store (or one session) in chain order, after verifying them offline."""
    bodies = [r.body for r in guard.store.read_receipts(session_id)]
    report = verify_receipts(bodies, Keyring.open(tmp_path / "keys", create=False).public_keys())
    assert report.ok, report
    return bodies


def tool_outputs(call: Any) -> dict[str, str]:
    """call_id -> the tool output (its text) the scripted model received as input on that turn."""
    out: dict[str, str] = {}
    for item in call.input:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            value = item["output"]
            if isinstance(value, list):  # MCP results arrive as content parts: [{"type": "input_text", ...}]
                value = "\n".join(part.get("text", "") for part in value)
            out[item["call_id"]] = value
    return out


async def wait_for(pred: Callable[[], Any], what: str) -> Any:
    """Poll `pred` (e.g. "an approval is pending") without blocking the event loop the agent runs on."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
