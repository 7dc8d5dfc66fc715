"""Every way the hook can fail ends in exit 2 with the reason on stderr and never an "allow" on stdout.

Claude Code treats exit 2 of a PreToolUse hook as "block the tool call" and feeds stderr to Claude
(docs/claude-code.md), so each case checks the exit code, that stdout says nothing, and what stderr names.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.adapters_claude_code.conftest import Env, Result
from tests.server.conftest import free_port


def _blocked(r: Result, *needles: str) -> None:
    assert r.code == 2, (r.code, r.stdout, r.stderr)
    assert r.stdout == ""
    assert "fail closed" in r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


MALFORMED = [
    ("", "stdin is not the hook's JSON"),
    ("tool_name=Bash", "stdin is not the hook's JSON"),
    ('{"hook_event_name": "PreToolUse", "session_id": "s", "tool_name": "Bash", "tool_input": {"x": NaN}, '
     '"tool_use_id": "t"}', "`NaN`, which is not JSON"),
    ("[1, 2]", "must be a JSON object, found list"),
    ('{"session_id": "s"}', "no `hook_event_name`"),
]


def test_malformed_stdin_blocks(hook_env: Env) -> None:
    for stdin, needle in MALFORMED:
        _blocked(hook_env.run(stdin), needle)


def test_missing_or_ill_typed_fields_are_named(hook_env: Env) -> None:
    env = hook_env
    event = env.event("pre_bash_ls")
    del event["tool_input"]
    _blocked(env.run(event), "(PreToolUse)", "`tool_input` must be an object, found missing")
    _blocked(env.run(env.event("pre_bash_ls", tool_input="ls -la")), "`tool_input` must be an object, found a str")
    _blocked(env.run(env.event("pre_bash_ls", session_id=7)), "`session_id` must be a non-empty string")
    _blocked(env.run(env.event("user_prompt_submit", prompt=None)), "the prompt is blocked")


def test_an_unknown_event_blocks(hook_env: Env) -> None:
    _blocked(hook_env.run(hook_env.event("user_prompt_submit", hook_event_name="Stop")),
             "event `Stop` is not handled")


def test_no_token_blocks(hook_env: Env) -> None:
    _blocked(hook_env.run(hook_env.event("pre_bash_ls"), env={"AARMOR_TOKEN": ""}), "no API token")


def test_a_revoked_or_wrong_token_blocks(hook_env: Env) -> None:
    _blocked(hook_env.run(hook_env.event("pre_bash_ls"), env={"AARMOR_TOKEN": "aat_not-a-real-token"}),
             "401 unauthorized")


def test_server_down_blocks(hook_env: Env) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    _blocked(hook_env.run(hook_env.event("pre_bash_ls"), env={"AARMOR_URL": url}), "unreachable")
    _blocked(hook_env.run(hook_env.event("pre_bash_ls"), env={"AARMOR_URL": "ftp://example.com"}),
             "must be http(s)://HOST:PORT")


def test_a_server_that_never_answers_blocks_within_the_budget(hook_env: Env) -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        r = hook_env.run(hook_env.event("pre_bash_ls"), "--timeout", "2", env={"AARMOR_URL": url})
    _blocked(r, "did not answer in time")


def test_the_watchdog_blocks_when_stdin_never_ends(hook_env: Env) -> None:
    proc = hook_env.popen("--timeout", "1.5")
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(json.dumps(hook_env.event("pre_bash_ls"))[:40])  # half an event, stdin left open
    proc.stdin.flush()
    code = proc.wait(timeout=60)
    with proc.stdin, proc.stdout, proc.stderr:
        _blocked(Result(code, proc.stdout.read(), proc.stderr.read()), "no answer within --timeout 1.5 s")


def test_another_principals_session_blocks(hook_env: Env) -> None:
    env = hook_env
    assert env.run(env.event("user_prompt_submit")).code == 0
    other = env.server.token("other-agent", "agent")
    r = env.run(env.event("pre_bash_ls"), env={"AARMOR_TOKEN": other, "AARMOR_HOOK_STATE": str(
        Path(env.vars["AARMOR_HOOK_STATE"]) / "other")})
    _blocked(r, "403 not_owner")


def test_an_unusable_state_directory_blocks(hook_env: Env, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    _blocked(hook_env.run(hook_env.event("pre_bash_ls"), env={"AARMOR_HOOK_STATE": str(not_a_dir)}),
             "state directory")


def test_a_tool_input_the_api_refuses_blocks(hook_env: Env) -> None:
    _blocked(hook_env.run(hook_env.event("pre_bash_ls", tool_input={"command": "ls", "inode": 2**60})),
             "422 invalid")


def test_post_tool_use_for_a_call_aarmor_never_allowed_is_an_error(hook_env: Env) -> None:
    _blocked(hook_env.run(hook_env.event("post_bash_ls")), "(PostToolUse)", "ran without an aarmor decision")


def test_outputs_the_api_refuses_or_too_large_are_still_reported(hook_env: Env) -> None:
    env = hook_env
    # an integer beyond +-(2**53-1) is refused as JSON by the API: reported as JSON text instead
    assert env.run(env.event("pre_bash_ls")).decision["permissionDecision"] == "allow"
    r = env.run(env.event("post_bash_ls", tool_response={"stdout": "big", "inode": 2**60}))
    assert r.code == 0, r.stderr
    # a response over --max-output-bytes (512 KiB): its first part is reported, marked as truncated
    pre = env.event("pre_bash_ls", tool_use_id="toolu_01BigOutput2Xx3Yy4Zz5Qq")
    assert env.run(pre).decision["permissionDecision"] == "allow"
    r = env.run(env.event("post_bash_ls", tool_use_id=pre["tool_use_id"], tool_response={"stdout": "x" * 700_000}))
    assert r.code == 0, r.stderr
    outcomes = [e.body for e in env.server.guard.store.read_log(env.sid) if e.kind == "action_outcome"]
    assert [o["success"] for o in outcomes] == [True, True]
    assert outcomes[1]["output_bytes"] < 600_000


def test_a_modify_without_the_modified_input_blocks_the_call() -> None:
    """The hook prints `allow` + `updatedInput` for a MODIFY; with no modified input from the server it
    would let the original input run, so it refuses before recording anything (exit 2 upstream)."""
    from aarmor.adapters.claude_code import hook
    from aarmor.adapters.claude_code.client import HookError

    view = {"action_id": "act_1", "status": "allowed", "modified": True, "decision": {"result": "MODIFY"}}
    with pytest.raises(HookError, match="modified but the server sent no modified input"):
        hook._allowed(view, None, None, None, "bash", "toolu_1")  # type: ignore[arg-type]
