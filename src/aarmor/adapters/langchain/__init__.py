"""The LangChain 1.x / LangGraph door: an agent middleware that mediates every tool call (docs/frameworks-langchain.md).

Needs the `langchain` extra (`pip install 'aarmor[langchain]'`); core aarmor never imports this package.
"""

from __future__ import annotations

MISSING_EXTRA = "the LangChain door needs the `langchain` extra: pip install 'aarmor[langchain]'"

try:
    from aarmor.adapters.langchain.middleware import AarmorMiddleware
except ImportError as exc:  # langchain or langgraph not installed: say which extra brings them
    if exc.name is not None and exc.name.split(".")[0] in ("langchain", "langchain_core", "langgraph"):
        raise ImportError(f"{MISSING_EXTRA} ({exc})", name=exc.name) from exc
    raise

__all__ = ["MISSING_EXTRA", "AarmorMiddleware"]
