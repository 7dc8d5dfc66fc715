"""aarmor: runtime security for AI agent actions (CSA AARM).

Public API (everything else is internal):

    guard = aarmor.Guard.open(policy="policy.yaml")
    with guard.session(identity=aarmor.Identity(human="alice@example.com"),
                       original_request="prepare my meeting") as session:
        session.invoke("email.send", {"to": "bob@example.com"}, send)

Imports are lazy so that `import aarmor` and `aarmor --help` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AarmorError",
    "Action",
    "ActionDenied",
    "Decision",
    "DecisionResult",
    "DelegationLink",
    "Guard",
    "Identity",
    "PolicyError",
    "Session",
    "ToolSpec",
    "__version__",
]

_LAZY = {
    "Guard": "aarmor.guard",
    "Session": "aarmor.adapters.sdk",
    "Action": "aarmor.model",
    "Decision": "aarmor.model",
    "DecisionResult": "aarmor.model",
    "DelegationLink": "aarmor.model",
    "Identity": "aarmor.model",
    "ToolSpec": "aarmor.model",
    "AarmorError": "aarmor.errors",
    "ActionDenied": "aarmor.errors",
    "PolicyError": "aarmor.errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.adapters.sdk import Session
    from aarmor.errors import AarmorError, ActionDenied, PolicyError
    from aarmor.guard import Guard
    from aarmor.model import Action, Decision, DecisionResult, DelegationLink, Identity, ToolSpec


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aarmor' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
