"""The README snippet of docs/frameworks-langchain.md, executed as written.

The block is taken from the doc and run with `exec`; the only names it does not define itself are the ones it
says the host already has: `model` (here the scripted chat model that stands in for an LLM, support.py) and
`tools`. `Guard.open()` finds ./aarmor.yaml in the working directory, as documented.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.adapters_langchain.support import POLICY, ScriptedChatModel, Tools, by_call, call, done, script, verify

DOC = Path(__file__).parents[2] / "docs" / "frameworks-langchain.md"


def snippet() -> str:
    text = DOC.read_text()
    section = text.split("## README snippet", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_the_readme_snippet_protects_an_existing_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "aarmor.yaml").write_text("policy: policy.yaml\nstore: sqlite:///" + str(tmp_path / "a.db")
                                          + "\nkeys: keys\n")
    monkeypatch.chdir(tmp_path)
    tools = Tools()
    model = ScriptedChatModel(messages=script(call("shell", {"command": "rm -rf /kb"}, "c1"),
                                              call("search", {"query": "stale", "limit": 50}, "c2"), done()))
    ns: dict[str, Any] = {"model": model, "tools": tools.all}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one-time development-key notice
        exec(compile(snippet(), str(DOC), "exec"), ns)
    guard = ns["guard"]
    try:
        msgs = by_call(ns["result"])
        assert "aarmor DENY" in msgs["c1"].content and msgs["c1"].status == "error"
        assert tools.ran == [("search", {"query": "stale", "limit": 10})]  # MODIFY capped it
        [sid] = {r.session_id for r in guard.store.read_receipts()}
        assert [b["enforcement"]["result"] for b in verify(guard, sid)] == ["DENY", "MODIFY"]
    finally:
        guard.close()
