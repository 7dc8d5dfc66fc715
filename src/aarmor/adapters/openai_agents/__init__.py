"""The OpenAI Agents SDK door (`pip install aarmor[openai-agents]`, docs/frameworks-openai-agents.md).

`AgentsDoor(guard, identity=...)` puts an agent's function tools behind aarmor's one pipeline
(`aarmor.adapters.sdk.Session.ainvoke`): `door.protect(agent)` wraps every function tool (all five
decisions, the outcome recorded), `door.guardrails()` gives the SDK-idiomatic tool input/output guardrail
pair (ALLOW, DENY, STEP_UP, DEFER; MODIFY cannot be applied by a guardrail), `door.run(agent, input)`
runs `Runner.run` in one aarmor session whose original request is the run's first user message.
MCP servers (`agents.mcp.MCPServerStdio` / `MCPServerStreamableHttp`) are mediated by pointing them at
`aarmor gateway`, not here. The door translates; it never decides.

Importing this package needs the `openai-agents` distribution (module `agents`); core aarmor does not.
"""

from __future__ import annotations

try:
    import agents as _agents  # noqa: F401  (the SDK this door speaks to)
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("aarmor.adapters.openai_agents needs the OpenAI Agents SDK: "
                      "pip install 'aarmor[openai-agents]'") from exc

from aarmor.adapters.openai_agents.door import AgentsDoor, ModifyNotEnforceable
from aarmor.adapters.openai_agents.messages import denial_message, first_user_message

__all__ = ["AgentsDoor", "ModifyNotEnforceable", "denial_message", "first_user_message"]
