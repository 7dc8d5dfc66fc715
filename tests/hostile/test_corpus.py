"""The hostile-input corpus (tests/hostile/corpus/*.yaml) through the real pipeline.

Each case names a call (tool, operation, arguments) or a raw JSON-RPC message, and the decision aarmor
must enforce on it under `corpus/policy.yaml`. Calls go through `Session.invoke` on a real Guard (SQLite
store, signed receipts); raw messages first through the MCP gateway's parser (`jsonrpc.loads`), then,
when they parse, the same way the gateway's `tools/call` hands them on. See docs/hostile-input.md.

Expectations:
- `ALLOW`: the tool ran (with `runs_with` arguments when given); `DENY`: it did not, `ActionDenied` with a
  DENY decision and a receipt (with `rule`/`reason`/`raw_tool` checked when given);
- `REFUSED`: the message never became an action (a JSON-RPC parse or request error; `reason` in it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aarmor import ActionDenied, Guard, Identity
from aarmor.adapters.mcp.jsonrpc import RemoteError, loads
from aarmor.config import ToolConfig, load_config
from aarmor.metatools import MetaTool
from aarmor.model import DecisionResult as D

CORPUS = Path(__file__).parent / "corpus"
POLICY = CORPUS / "policy.yaml"
ALICE = Identity(human="alice@company.com", agent="assistant")
#: the deployment's own meta-tools (AARM 4.3's `Skill` and `mcp_tool` are built in)
META_TOOLS = {
    "execute_tool": ToolConfig(meta=MetaTool(("tool",), "arguments")),
    "call_tool": ToolConfig(meta=MetaTool(("name",), "args")),
}


def _cases() -> Iterator[Any]:
    for path in sorted(CORPUS.glob("*.yaml")):
        if path == POLICY:
            continue
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in doc["cases"]:
            yield pytest.param(case, id=f"{path.stem}:{case['id']}")


def expand(value: Any) -> Any:
    """`{$repeat: [text, n]}` -> text * n; `{$nest: n}` -> n nested lists; applied recursively."""
    if isinstance(value, dict):
        if set(value) == {"$repeat"}:
            text, n = value["$repeat"]
            return text * n
        if set(value) == {"$nest"}:
            out: Any = "bottom"
            for _ in range(value["$nest"]):
                out = [out]
            return out
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    return value


def raw_text(case: dict[str, Any]) -> str | bytes:
    if "raw_hex" in case:
        return bytes.fromhex(case["raw_hex"])
    if "raw_nest" in case:
        n = case["raw_nest"]
        return ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"email.send","arguments":{"x":'
                + "[" * n + "]" * n + "}}}")
    text = expand(case["raw"])
    assert isinstance(text, str)
    return text


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    home = tmp_path_factory.mktemp("hostile")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the development-key warning
        g = Guard(load_config(policy=str(POLICY), store=f"sqlite:///{home / 'aarmor.db'}", keys=str(home / "keys"),
                              tools=META_TOOLS, unattended=True))
    yield g
    g.close()


@pytest.mark.parametrize("case", list(_cases()))
def test_corpus_case(case: dict[str, Any], guard: Guard) -> None:
    expect = case["expect"]
    operation = case.get("operation")
    if "raw" in case or "raw_hex" in case or "raw_nest" in case:
        try:
            msg = loads(raw_text(case))
        except RemoteError as exc:
            assert expect == "REFUSED", f"refused by the parser ({exc.message}), expected {expect}"
            assert case.get("reason", "") in exc.message
            return
        assert expect != "REFUSED", f"the parser accepted {msg!r}"
        params = msg["params"]
        tool, arguments = params["name"], params.get("arguments", {})
    else:
        tool, arguments = expand(case["tool"]), expand(case.get("arguments", {}))

    ran: list[Any] = []
    with guard.session(identity=ALICE) as session:
        try:
            session.invoke(tool, arguments, lambda args: ran.append(args) or "done", operation=operation)
        except ActionDenied as denied:
            decision, receipt_id = denied.decision, denied.receipt_id
            assert expect == "DENY", f"denied ({decision.result.value}, {decision.rule_id}: {decision.reason}), " \
                                     f"expected {expect}"
            assert decision.result is D.DENY and ran == []
            if "rule" in case:
                assert decision.rule_id == case["rule"], decision.reason
            assert case.get("reason", "") in decision.reason
            assert receipt_id is not None
            receipt = guard.store.get_receipt(receipt_id)
            assert receipt is not None and receipt.body["decision"]["result"] == "DENY"
            if "raw_tool" in case:
                assert receipt.body["action"]["raw_tool"] == case["raw_tool"]
            return
    assert expect == "ALLOW", f"the tool ran, expected {expect}"
    assert len(ran) == 1
    if "runs_with" in case:
        assert ran[0] == case["runs_with"]
