"""The MCP door: `aarmor gateway` fronts MCP servers and mediates every `tools/call` (docs/mcp-gateway.md).

Needs the `mcp` extra (the official MCP SDK, used for the Streamable HTTP transports); imported lazily
so `import aarmor` stays fast.
"""

from __future__ import annotations

MISSING_EXTRA = "the MCP gateway needs the `mcp` extra: pip install 'aarmor[mcp]'"

__all__ = ["MISSING_EXTRA"]
