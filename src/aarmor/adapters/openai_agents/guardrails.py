"""The tool guardrail pair: aarmor as an Agents SDK `ToolInputGuardrail` + `ToolOutputGuardrail`.

A guardrail cannot run the tool, yet the receipt must say what ran and what came back. So the input
guardrail starts the mediated action (`Session.ainvoke`) and answers as soon as it is known:

- not allowed (DENY, STEP_UP refused or timed out, DEFER timed out, fail closed): `reject_content` with the
  denial text; the SDK does not call the tool; the receipt records the decision, nothing executed.
- allowed with the arguments as the model sent them: `allow`. The action stays open, its `execute` step
  waiting for the output guardrail, which hands over the tool's output; then the outcome and the receipt
  are committed with that output's digest, and the output guardrail returns `allow` (or the redacted text
  through `reject_content` when the policy redacts output, or a withheld notice).
- MODIFY with changed arguments: a guardrail can only allow or reject, not change what the tool receives,
  so it rejects; the receipt shows the execution step failing with `ModifyNotEnforceable` (the tool body
  was not called). Protect such tools with `door.tool` / `door.protect` instead.

Limits (docs/frameworks-openai-agents.md): the pair must be on the same tool; an exception the SDK turns
into a message for the model reaches the output guardrail as that message, indistinguishable from an
output, and is recorded as a successful execution with that output; if the output guardrail never runs
(the run aborted) the action is recorded as failed after `guardrail_output_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents import (
    ToolGuardrailFunctionOutput,
    ToolInputGuardrailData,
    ToolOutputGuardrailData,
    tool_input_guardrail,
    tool_output_guardrail,
)

from aarmor.adapters.openai_agents.door import ModifyNotEnforceable, parse_arguments
from aarmor.adapters.openai_agents.messages import denial_message, failure_message, withheld_message
from aarmor.errors import ActionDenied, OutputWithheld

if TYPE_CHECKING:  # pragma: no cover
    from agents import ToolInputGuardrail, ToolOutputGuardrail

    from aarmor.adapters.openai_agents.door import AgentsDoor

__all__ = ["make_guardrails"]

@dataclass(eq=False)
class _Open:
    """A mediated action the input guardrail let through, waiting for its output."""

    output: asyncio.Future[Any]
    action: asyncio.Task[Any]


def make_guardrails(door: AgentsDoor) -> tuple[ToolInputGuardrail[Any], ToolOutputGuardrail[Any]]:
    # id(ToolContext) -> the open action; the SDK passes the same ToolContext to the input guardrail, the
    # tool and the output guardrail of one call, and the entry holds the context so the id is not reused
    opened: dict[int, tuple[Any, _Open]] = {}

    def _forget(ctx: Any) -> None:
        entry = opened.get(id(ctx))
        if entry is not None and entry[0] is ctx:
            del opened[id(ctx)]

    @tool_input_guardrail(name="aarmor_input")
    async def aarmor_input(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        name = ctx.qualified_tool_name
        try:
            session = door.session_for(ctx)
        except Exception as exc:  # AARM R1: no session, no decision, no execution
            return ToolGuardrailFunctionOutput.reject_content(failure_message(name, exc))
        arguments = parse_arguments(ctx.tool_arguments)
        loop = asyncio.get_running_loop()
        released: asyncio.Future[None] = loop.create_future()
        output: asyncio.Future[Any] = loop.create_future()

        async def execute(run_args: dict[str, Any]) -> Any:
            if run_args != arguments:
                raise ModifyNotEnforceable(
                    "aarmor decided MODIFY, but an Agents SDK guardrail cannot change a tool's arguments: the "
                    "tool body was not called (protect the tool with AgentsDoor.tool to apply MODIFY)")
            released.set_result(None)
            return await asyncio.wait_for(output, timeout=door.guardrail_output_timeout)

        action = asyncio.ensure_future(session.ainvoke(name, arguments, execute))
        await asyncio.wait({action, released}, return_when=asyncio.FIRST_COMPLETED)
        if released.done():
            opened[id(ctx)] = (ctx, _Open(output, action))
            # an action whose output never came (timed out, cancelled) must not keep its entry for ever
            action.add_done_callback(lambda _: _forget(ctx))
            return ToolGuardrailFunctionOutput.allow({"aarmor": "allowed; the outcome is recorded after the tool"})
        try:
            action.result()
        except ActionDenied as exc:
            return ToolGuardrailFunctionOutput.reject_content(denial_message(name, exc), {"aarmor": "denied"})
        except ModifyNotEnforceable as exc:
            return ToolGuardrailFunctionOutput.reject_content(
                f"aarmor blocked the call to `{name}`: {exc}. The tool did not run.", {"aarmor": "modify"})
        except Exception as exc:  # anything else on the way: fail closed
            return ToolGuardrailFunctionOutput.reject_content(failure_message(name, exc), {"aarmor": "error"})
        # `execute` returned without releasing: cannot happen, but a guardrail must never fail open
        return ToolGuardrailFunctionOutput.reject_content(
            failure_message(name, RuntimeError("the action ended without a decision to run")))

    @tool_output_guardrail(name="aarmor_output")
    async def aarmor_output(data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        name = ctx.qualified_tool_name
        entry = opened.pop(id(ctx), None)
        if entry is None or entry[0] is not ctx:  # no allowed action for this call: do not pass output on
            return ToolGuardrailFunctionOutput.reject_content(
                f"aarmor withheld the output of `{name}`: no aarmor input-guardrail decision let this call "
                "run (add both aarmor guardrails to the tool).")
        pending = entry[1]
        pending.output.set_result(data.output)
        try:
            delivered = await pending.action
        except OutputWithheld as exc:
            return ToolGuardrailFunctionOutput.reject_content(withheld_message(name, exc))
        except Exception as exc:  # the record could not be committed: do not hand over unrecorded output
            with contextlib.suppress(Exception):
                pending.action.cancel()
            return ToolGuardrailFunctionOutput.reject_content(
                f"aarmor withheld the output of `{name}`: its outcome could not be recorded "
                f"({type(exc).__name__}: {exc}).")
        if delivered is not data.output:  # the policy redacted the output: the model reads the redacted one
            return ToolGuardrailFunctionOutput.reject_content(str(delivered), {"aarmor": "redacted"})
        return ToolGuardrailFunctionOutput.allow({"aarmor": "recorded"})

    return aarmor_input, aarmor_output
