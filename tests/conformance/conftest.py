"""Fixtures for the AARM R1-R6 verification table (AARM.md section 3)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

POLICY = Path(__file__).with_name("policy.yaml")


@pytest.fixture
def guard(make_guard: Callable[..., Any]) -> Any:
    return make_guard(policy=str(POLICY))


@pytest.fixture
def alice() -> Any:
    from aarmor import DelegationLink, Identity

    return Identity(human="alice@company.com", service="agent-svc", agent="mail-agent", roles=["analyst"],
                    scopes=["db:read", "email:send"],
                    delegation=[DelegationLink("orchestrator", "mail-agent", ("email:send",))])


class Tool:
    """A real side effect we can observe: every call is appended to `calls`."""

    def __init__(self, result: Any = "ok") -> None:
        self.calls: list[dict[str, Any]] = []
        self.result = result

    def __call__(self, arguments: dict[str, Any]) -> Any:
        self.calls.append(arguments)
        return self.result


@pytest.fixture
def tool() -> Tool:
    return Tool()


def receipts(guard: Any, session_id: str) -> list[dict[str, Any]]:
    return [r.body for r in guard.store.read_receipts(session_id)]
