"""The "README snippet" of docs/frameworks-openai-agents.md, executed exactly as written.

The snippet starts from "an existing `agent`": the test supplies that agent (real function tools) and an
`aarmor.yaml` in the working directory; the agent's model is `agents.testing.ScriptedModel`, standing in for
an LLM. Nothing in the snippet's text is changed; it runs with top-level `await` as in a notebook/asyncio REPL.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from agents import Agent, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

from aarmor.receipts import Keyring, verify_receipts

from .conftest import tool_outputs

DOC = Path(__file__).resolve().parents[2] / "docs" / "frameworks-openai-agents.md"

POLICY = """
policy: {id: readme, version: "1", default: ALLOW}
rules:
  - id: no-refunds-over-100
    match: {tool: refund, parameters: {amount: {gt: 100}}}
    action: DENY
    reason: refunds over 100 need a person
"""


def snippet() -> str:
    text = DOC.read_text()
    section = text.split("## README snippet", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README snippet section must hold exactly one python block"
    return blocks[0]


def test_readme_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "aarmor.yaml").write_text(yaml.safe_dump({
        "store": f"sqlite:///{tmp_path / 'aarmor.db'}", "keys": str(tmp_path / "keys"), "policy": "policy.yaml"}))
    monkeypatch.chdir(tmp_path)
    ran: list[tuple[str, float]] = []

    @function_tool
    def refund(order: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order, amount))
        return f"refunded {amount}"

    @function_tool
    def notify(text: str) -> str:
        """Message the customer."""
        return "sent"

    model = ScriptedModel([  # stands in for the LLM
        [function_call("refund", {"order": "1234", "amount": 500.0}, call_id="c1")],
        [function_call("refund", {"order": "1234", "amount": 50.0}, call_id="c2"),
         function_call("notify", {"text": "refunded 50"}, call_id="c3")],
        [assistant_message("Refunded 50; a person will review the rest.")],
    ])
    agent = Agent(name="support-bot", instructions="Help customers.", model=model, tools=[refund, notify])

    code = compile(snippet(), str(DOC), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"agent": agent}
    printed = io.StringIO()

    async def main() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the one-time development-key notice of Guard.open
            result = eval(code, namespace)  # a coroutine: the snippet awaits at top level
            with contextlib.redirect_stdout(printed):
                await result

    try:
        asyncio.run(main())
    finally:
        namespace["guard"].close()
    assert printed.getvalue().strip() == "Refunded 50; a person will review the rest."
    assert ran == [("1234", 50.0)]  # the 500 refund was denied before it ran
    assert "decision DENY (rule no-refunds-over-100)" in tool_outputs(model.calls[1])["c1"]
    from aarmor.config import load_config
    from aarmor.store import open_store

    store = open_store(load_config(tmp_path / "aarmor.yaml").store)
    try:
        bodies = [r.body for r in store.read_receipts()]
        assert [b["decision"]["result"] for b in bodies] == ["DENY", "ALLOW", "ALLOW"]
        assert verify_receipts(bodies, Keyring.open(tmp_path / "keys", create=False).public_keys()).ok
    finally:
        store.close()
