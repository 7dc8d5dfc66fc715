"""The LangChain 1.x / LangGraph door: an agent middleware that mediates every tool call (docs/frameworks-langchain.md).

Needs the `langchain` extra (`pip install 'aarmor[langchain]'`); core aarmor never imports this package.
"""

from __future__ import annotations

from aarmor.adapters.langchain.middleware import AarmorMiddleware

__all__ = ["AarmorMiddleware"]
