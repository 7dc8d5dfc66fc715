"""The Claude Code door: `aarmor hook claude-code`, a vendor hook (AARM 4.1) that hands every tool call to
a running `aarmor serve` before it runs and reports its outcome after (docs/claude-code.md).

Standard library only, so each hook process starts fast and the core needs no extra.
"""

from aarmor.adapters.claude_code.hook import EVENTS, Answer, HookConfig, aarmor_session_id, handle

__all__ = ["EVENTS", "Answer", "HookConfig", "aarmor_session_id", "handle"]
