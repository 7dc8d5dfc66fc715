"""`tools: {name: {operation: ...}}` in the configuration gives a call the operation its door did not name
(MCP tool calls have none), so policy can match on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.config import ToolConfig

POLICY = """
policy: {id: ops, version: "1", default: ALLOW}
rules:
  - id: no-writes
    match: {tool: write_file, operation: write}
    action: DENY
    reason: writes are off
"""


def test_the_configured_operation_applies_when_the_door_names_none(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(POLICY, tools={"write_file": ToolConfig(operation="write")})
    with guard.session(identity=Identity(human="alice@company.com")) as s:
        with pytest.raises(ActionDenied) as denied:
            s.invoke("write_file", {"path": "/tmp/x"}, lambda a: "written")
        assert denied.value.decision.rule_id == "no-writes"
        # an explicit operation from the door wins over the configured one
        assert s.invoke("write_file", {"path": "/tmp/x"}, lambda a: "written", operation="append") == "written"
        assert s.invoke("read_file", {"path": "/tmp/x"}, lambda a: "read") == "read"
