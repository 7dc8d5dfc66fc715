"""Tests of signed receipts (AARM 2.7, R5): keys, signing, chaining, offline verification, redaction, CLI.

Shared helpers: a small policy with one rule per interesting decision, a session that produces ALLOW,
MODIFY and DENY receipts through the real pipeline, and a config file pointing the CLI at a test's store.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

POLICY = """\
policy:
  id: receipts-tests
  version: "2026-02-10"
  default: ALLOW
  internal_domains: [company.com]
rules:
  - id: deny-shell
    match: {tool: shell}
    action: DENY
    reason: agents may not run shell commands
  - id: cap-bulk-query
    match: {tool: database, operation: query, parameters: {limit: {gt: 100}}}
    action: MODIFY
    modifications: {parameters: {limit: 100}}
    reason: bulk reads are capped at 100 rows
"""


class Tool:
    """A real side effect we can observe: every call is appended to `calls`."""

    def __init__(self, result: Any = "ok") -> None:
        self.calls: list[dict[str, Any]] = []
        self.result = result

    def __call__(self, arguments: dict[str, Any]) -> Any:
        self.calls.append(arguments)
        return self.result


def alice() -> Any:
    from aarmor import DelegationLink, Identity

    return Identity(human="alice@company.com", service="agent-svc", agent="mail-agent", roles=["analyst"],
                    scopes=["db:read", "email:send"],
                    delegation=[DelegationLink("orchestrator", "mail-agent", ("email:send", "db:read"))])


def run_session(guard: Any, *, identity: Any = None, extra: dict[str, Any] | None = None) -> str:
    """ALLOW, MODIFY, DENY, ALLOW through the real pipeline; returns the session id (4 receipts)."""
    from aarmor import ActionDenied

    tool = Tool([{"id": 1}])
    with guard.session(identity=identity or alice(), original_request="weekly finance report") as s:
        s.invoke("email.send", {"to": "bob@company.com", "subject": "report", **(extra or {})}, tool)
        s.invoke("database.query", {"sql": "SELECT * FROM invoices", "limit": 500}, tool)
        with pytest.raises(ActionDenied):
            s.invoke("shell.run", {"cmd": "cat /etc/passwd"}, tool)
        s.invoke("files.read", {"path": "/srv/report.csv", "lines": [1, 2, 3]}, tool)
    assert len(tool.calls) == 3 and tool.calls[1]["limit"] == 100  # the DENY did not run; MODIFY capped
    return str(s.session_id)


def receipts(guard: Any, session_id: str | None = None) -> list[dict[str, Any]]:
    """Deep copies of the stored receipt bodies, in chain order."""
    return [copy.deepcopy(r.body) for r in guard.store.read_receipts(session_id)]


def write_config(tmp_path: Path, guard: Any) -> Path:
    """An aarmor.yaml with the guard's `store:` and `keys:`, so a CLI subprocess sees the test's data."""
    path = tmp_path / "aarmor-cli.yaml"
    path.write_text(f"store: {guard.config.store}\nkeys: {guard.config.keys}\n")
    return path


def set_path(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value
