"""What the model reads when aarmor stops a call, and the run's original request.

A denial is returned to the model as the tool's output (not raised): the agent loop goes on and the model
can explain or choose another way. It names the decision, the reason and the receipt id, so a person
reading the transcript can find the signed record (`aarmor receipts show <id>`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aarmor.errors import ActionDenied, OutputWithheld

__all__ = ["denial_message", "failure_message", "first_user_message", "withheld_message"]


def denial_message(tool: str, exc: ActionDenied) -> str:
    """`ActionDenied` as text for the model: decision, reason, receipt id, and that nothing ran."""
    d = exc.decision
    rule = f" (rule {d.rule_id})" if d.rule_id else ""
    return (f"aarmor blocked the call to `{tool}`: decision {d.result.value}{rule}. Reason: {d.reason}. "
            f"Receipt: {exc.receipt_id or 'none (the receipt could not be written)'}. The tool did not run.")


def withheld_message(tool: str, exc: OutputWithheld) -> str:
    """The tool ran but its output could not be redacted as the policy requires: it is not shown."""
    return (f"aarmor withheld the output of `{tool}`: {exc.reason}. Receipt: {exc.receipt_id}. "
            "The tool ran; its output is not shown.")


def failure_message(tool: str, exc: BaseException) -> str:
    """An error on the way to a decision that aarmor itself could not record (no session could open)."""
    return (f"aarmor blocked the call to `{tool}`: decision DENY. Reason: fail closed: "
            f"{type(exc).__name__}: {exc}. Receipt: none. The tool did not run.")


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # a list of parts: [{"type": "input_text", "text": ...}, ...]
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") in ("input_text", "text")]
        joined = "\n".join(t for t in texts if isinstance(t, str))
        return joined or None
    return None


def first_user_message(run_input: Any) -> str | None:
    """The first user message of a run's input (a string, or a list of Responses input items)."""
    if isinstance(run_input, str):
        return run_input
    if not isinstance(run_input, Sequence):
        return None
    for item in run_input:
        role = item.get("role") if isinstance(item, dict) else getattr(item, "role", None)
        if role != "user":
            continue
        content = item.get("content") if isinstance(item, dict) else getattr(item, "content", None)
        text = _text_of(content)
        if text:
            return text
    return None
