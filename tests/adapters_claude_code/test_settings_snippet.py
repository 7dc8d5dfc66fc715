"""docs/claude-code.md's settings.json block, and its README snippet, run as Claude Code would run them.

The test loads exactly the JSON of the page (the block after the `settings.json` marker, and the README
snippet's block, which must be the same), and for every event it configures runs each command it names
through `sh -c` (as Claude Code runs command hooks) with that event's recorded payload on stdin, the
installed `aarmor` first on PATH.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.adapters_claude_code.conftest import Env

DOC = Path(__file__).resolve().parents[2] / "docs" / "claude-code.md"
#: the recorded payload each configured event is exercised with, in the order Claude Code sends them
PAYLOAD_OF = {"UserPromptSubmit": "user_prompt_submit", "PreToolUse": "pre_bash_ls", "PostToolUse": "post_bash_ls",
              "PostToolUseFailure": "post_failure_bash"}


def _json_blocks(text: str) -> list[str]:
    return re.findall(r"```json\n(.*?)```", text, flags=re.S)


def settings_blocks() -> tuple[dict[str, Any], dict[str, Any]]:
    text = DOC.read_text()
    marker = text.index("<!-- settings.json:")
    readme = text.index("## README snippet")
    [settings, *_] = _json_blocks(text[marker:readme])
    [snippet] = _json_blocks(text[readme:])
    return json.loads(settings), json.loads(snippet)


def _sh(command: str, event: dict[str, Any], env: Env) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env.vars, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", command], input=json.dumps(event), capture_output=True, text=True,
                          env=full, timeout=120)


def test_the_readme_snippet_is_the_settings_block() -> None:
    settings, snippet = settings_blocks()
    assert snippet == settings


def test_every_configured_command_mediates_its_event(hook_env: Env) -> None:
    env = hook_env
    settings, _ = settings_blocks()
    hooks = settings["hooks"]
    assert list(hooks) == list(PAYLOAD_OF)  # every event the page configures has a recorded payload here
    ran: list[str] = []
    for event_name in ("UserPromptSubmit", "PreToolUse", "PostToolUse", "PreToolUse", "PostToolUseFailure"):
        name = PAYLOAD_OF[event_name]
        if event_name == "PreToolUse" and ran.count("PreToolUse") == 1:  # a second call, for the failure
            event = env.event(name, tool_use_id=env.event("post_failure_bash")["tool_use_id"] + "F")
        elif event_name == "PostToolUseFailure":
            event = env.event(name, tool_use_id=env.event("post_failure_bash")["tool_use_id"] + "F")
        else:
            event = env.event(name)
        for group in hooks[event_name]:
            matcher = group.get("matcher", "")
            if "tool_name" in event and matcher not in ("", "*"):
                assert re.fullmatch(matcher, event["tool_name"])
            for h in group["hooks"]:
                assert h["type"] == "command"
                assert h["timeout"] > 50  # above the hook's own default --timeout, so the hook answers first
                r = _sh(h["command"], event, env)
                assert r.returncode == 0, (event_name, r.stderr)
                if event_name == "PreToolUse":
                    assert json.loads(r.stdout)["hookSpecificOutput"]["permissionDecision"] == "allow"
                else:
                    assert r.stdout == ""
        ran.append(event_name)
    receipts = env.receipts()
    assert [r["execution"]["success"] for r in receipts] == [True, False]
    assert env.verify_receipts()["ok"] is True
