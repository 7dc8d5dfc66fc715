"""`aarmor hook claude-code`: one Claude Code hook event in, one answer out (docs/claude-code.md).

The hook is a thin client of `aarmor serve`: it translates and hands over, and the server's pipeline
decides (the mediate protocol of docs/http-api.md). Per event:

- `UserPromptSubmit`: open the aarmor session with the prompt as its original request (AARM R2), or, when
  the session is open already, record the new prompt as `context.user_prompt` in its chained log.
- `PreToolUse`: start an action (`POST /v1/sessions/{sid}/actions`) and wait for its decision within the
  budget: `allowed` -> "allow" (MODIFY: with `updatedInput`, the full modified input); `denied` -> "deny"
  naming the rule and the receipt; an approval or deferral still pending when the budget ends -> "deny"
  saying what it waits for (the same call retried later picks that action up again).
- `PostToolUse` / `PostToolUseFailure`: report the outcome (the tool's response, or its error) to the
  action allowed for that `tool_use_id`, so the pipeline classifies and scans it and writes the receipt.

Rules:
- Fail closed: bad stdin, a missing token, an unreachable or slow server, an unknown event, any error on
  the way to a decision: exit 2 with the reason on stderr (Claude Code blocks the tool call, or the prompt,
  and shows the reason). "allow" is printed only for an action the server reported `allowed`.
- Nothing here decides: every verdict is the server's.
- The session id is `cc-` + Claude Code's session id, so every hook process finds the same session.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aarmor.adapters.claude_code.client import ApiAnswer, HookError, ServerClient
from aarmor.adapters.claude_code.state import SessionState, input_digest, safe_name

__all__ = ["EVENTS", "Answer", "HookConfig", "aarmor_session_id", "first_prompt", "handle"]

EVENTS = ("UserPromptSubmit", "PreToolUse", "PostToolUse", "PostToolUseFailure")
#: seconds kept back from the budget to write the state file and answer after the last server call
RESERVE = 1.0
#: seconds of the budget a long-poll leaves for the server's answer to arrive
POLL_MARGIN = 1.0
#: a long-poll shorter than this is not worth a request: the hook answers with what it has
MIN_POLL = 0.05
#: the server's longest long-poll (`wait`, docs/http-api.md)
MAX_POLL = 60.0
#: characters of a later prompt kept in `context.user_prompt`
MAX_PROMPT_CONTEXT = 8192
#: the original request is at most this long (the API's `original_request` bound)
MAX_ORIGINAL_REQUEST = 65536
#: bytes of a transcript read to find the first prompt
MAX_TRANSCRIPT_READ = 4 * 1024 * 1024
PENDING = ("pending_approval", "deferred", "evaluating")


@dataclass(frozen=True, slots=True)
class HookConfig:
    url: str
    token: str
    state_dir: Path
    timeout: float
    human: str | None = None
    agent: str = "claude-code"
    #: a tool response larger than this (as JSON) is reported as its first part only
    max_output_bytes: int = 512 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    """What the process writes and how it exits."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""


def aarmor_session_id(claude_session_id: str) -> str:
    """The aarmor session of a Claude Code session (a name the API accepts as `session_id`)."""
    return "cc-" + safe_name(claude_session_id)


def handle(raw: bytes, cfg: HookConfig, deadline: float) -> Answer:
    """Answer one hook event. Never raises: every failure is an exit-2 answer with its reason."""
    event = "unknown"
    try:
        ev = _load(raw)
        if isinstance(ev.get("hook_event_name"), str):
            event = ev["hook_event_name"]
        _check(ev)
        if not cfg.token:
            raise HookError("no API token: set AARMOR_TOKEN (an aarmor agent token) or pass --token")
        client = ServerClient(cfg.url, cfg.token, deadline - RESERVE)
        st = SessionState(cfg.state_dir, aarmor_session_id(ev["session_id"]))
        if event == "PreToolUse":
            return _pre_tool_use(ev, cfg, client, st)
        if event in ("PostToolUse", "PostToolUseFailure"):
            return _post_tool_use(ev, cfg, client, st)
        return _user_prompt(ev, cfg, client, st)
    except (HookError, ApiAnswer) as exc:
        return _failed(event, str(exc))
    except OSError as exc:  # the state directory: unwritable, full disk
        return _failed(event, f"the hook's state directory {cfg.state_dir} failed: {exc}")
    except Exception as exc:  # a bug must block too, never let the call through
        return _failed(event, f"internal error: {type(exc).__name__}: {exc}")


def _failed(event: str, message: str) -> Answer:
    what = {"PreToolUse": "the tool call is blocked", "UserPromptSubmit": "the prompt is blocked",
            "PostToolUse": "the outcome was not recorded", "PostToolUseFailure": "the outcome was not recorded",
            }.get(event, "exit 2 blocks whatever this event was")
    return Answer(2, stderr=f"aarmor hook claude-code ({event}): {message}; {what} (fail closed).\n")


# --- input ----------------------------------------------------------------------------------------------
_FIELDS: dict[str, tuple[tuple[str, type], ...]] = {
    "UserPromptSubmit": (("prompt", str),),
    "PreToolUse": (("tool_name", str), ("tool_input", dict), ("tool_use_id", str)),
    "PostToolUse": (("tool_name", str), ("tool_input", dict), ("tool_use_id", str)),
    "PostToolUseFailure": (("tool_name", str), ("tool_input", dict), ("tool_use_id", str)),
}


def _reject_constant(name: str) -> Any:
    raise HookError(f"stdin holds `{name}`, which is not JSON")


def _load(raw: bytes) -> dict[str, Any]:
    """The hook event from stdin: a JSON object."""
    try:
        ev = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise HookError(f"stdin is not UTF-8: {exc}") from exc
    except ValueError as exc:
        raise HookError(f"stdin is not the hook's JSON: {exc}") from exc
    if not isinstance(ev, dict):
        raise HookError(f"stdin must be a JSON object, found {type(ev).__name__}")
    return ev


def _check(ev: dict[str, Any]) -> None:
    """The event's fields, checked one by one (the error names what is wrong)."""
    event = ev.get("hook_event_name")
    if not isinstance(event, str):
        raise HookError("stdin has no `hook_event_name`")
    if event not in _FIELDS:
        raise HookError(f"event `{event}` is not handled; configure this hook for {', '.join(EVENTS)} only")
    for name, kind in (("session_id", str), *_FIELDS[event]):
        value = ev.get(name)
        if not isinstance(value, kind) or (kind is str and not value):
            found = "missing" if value is None else f"a {type(value).__name__}"
            raise HookError(f"`{name}` must be {'a non-empty string' if kind is str else 'an object'}, "
                            f"found {found}")


def first_prompt(transcript_path: Any) -> str | None:
    """The first prompt the user typed, from the session's transcript (JSON lines), if it can be read."""
    if not isinstance(transcript_path, str) or not transcript_path:
        return None
    try:
        with open(transcript_path, encoding="utf-8", errors="replace") as f:
            text = f.read(MAX_TRANSCRIPT_READ)
    except OSError:
        return None
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        msg = entry.get("message") if isinstance(entry, dict) and entry.get("type") == "user" else None
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str) and content.strip():
            return content
        if isinstance(content, list):  # text blocks count; a tool_result block is not something typed
            texts = [b["text"] for b in content
                     if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)]
            if texts and "".join(texts).strip():
                return "\n".join(texts)
    return None


# --- the session ----------------------------------------------------------------------------------------
def _open_session(ev: dict[str, Any], cfg: HookConfig, client: ServerClient, st: SessionState,
                  prompt: str | None) -> bool:
    """Open the session unless this state directory knows it is open; True if this call created it."""
    if st.opened:
        return False
    sid = aarmor_session_id(ev["session_id"])
    identity: dict[str, Any] = {"agent": cfg.agent}
    if cfg.human:
        identity["human"] = cfg.human
    body: dict[str, Any] = {"session_id": sid, "identity": identity}
    original = prompt if prompt is not None else first_prompt(ev.get("transcript_path"))
    if original:
        body["original_request"] = original[:MAX_ORIGINAL_REQUEST]
    created = True
    try:
        client.call("POST", "/v1/sessions", body)
    except ApiAnswer as exc:
        # opened by a concurrent hook process (parallel tool calls) or with another state dir: use it
        if exc.code != "session_exists":
            raise
        created = False
    st.mark_opened()
    return created


def _user_prompt(ev: dict[str, Any], cfg: HookConfig, client: ServerClient, st: SessionState) -> Answer:
    prompt: str = ev["prompt"]
    if not _open_session(ev, cfg, client, st, prompt):  # open already: this is a later prompt
        sid = aarmor_session_id(ev["session_id"])
        client.call("POST", f"/v1/sessions/{sid}/context",
                    {"fields": {"user_prompt": prompt[:MAX_PROMPT_CONTEXT]}})
    return Answer(0)  # stdout would be added to Claude's context: say nothing


# --- PreToolUse -----------------------------------------------------------------------------------------
def _pre_tool_use(ev: dict[str, Any], cfg: HookConfig, client: ServerClient, st: SessionState) -> Answer:
    tool, tool_input, tool_use_id = ev["tool_name"], ev["tool_input"], ev["tool_use_id"]
    _open_session(ev, cfg, client, st, None)
    sid = aarmor_session_id(ev["session_id"])
    digest = input_digest(tool, tool_input)
    view = _resume_waiting(client, st, digest)
    if view is None:
        view = client.call("POST", f"/v1/sessions/{sid}/actions",
                           {"tool": tool, "arguments": tool_input, "wait": _poll(client)})
    aid = str(view.get("action_id"))
    while view.get("status") in PENDING and _poll(client) >= MIN_POLL:
        view = client.call("GET", f"/v1/actions/{aid}?wait={_poll(client):.3f}")
    status = view.get("status")
    if status == "allowed":
        return _allowed(view, cfg, client, st, tool, tool_use_id)
    if status == "denied":
        return _decision("deny", _denied_reason(view))
    if status in PENDING:
        st.put_waiting(digest, {"action_id": aid, "tool": tool, "status": status,
                                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return _decision("deny", _pending_reason(view, cfg))
    return _decision("deny", f"aarmor: action {aid} is `{status}`, not allowed: "
                             f"{view.get('error') or 'it must not run'}")


def _poll(client: ServerClient) -> float:
    """How long the next long-poll may wait: what is left of the budget less the time the answer takes to
    come back (so the server answers before the socket times out), at most the server's maximum."""
    return max(0.0, min(MAX_POLL, client.left() - POLL_MARGIN))


def _resume_waiting(client: ServerClient, st: SessionState, digest: str) -> dict[str, Any] | None:
    """The action an earlier, identical call left waiting, if it can still be used."""
    prior = st.take_waiting(digest)
    if prior is None:
        return None
    try:
        view = client.call("GET", f"/v1/actions/{prior.get('action_id')}")
    except ApiAnswer as exc:
        if exc.status == 404:  # forgotten by the server (restart, an hour later): ask anew
            return None
        st.put_waiting(digest, prior)  # keep it for the next retry
        raise
    except HookError:
        st.put_waiting(digest, prior)
        raise
    # allowed (an approver said yes meanwhile), denied, or still waiting: this call continues with it
    return view if view.get("status") in (*PENDING, "allowed", "denied") else None


def _allowed(view: dict[str, Any], cfg: HookConfig, client: ServerClient, st: SessionState, tool: str,
             tool_use_id: str) -> Answer:
    aid = str(view["action_id"])
    if view.get("modified") and not isinstance(view.get("parameters"), dict):
        # never let the original input run for a MODIFY (the hook exits 2: the call is blocked)
        raise HookError(f"aarmor: action {aid} was modified but the server sent no modified input")
    try:
        st.put_running(tool_use_id, {"action_id": aid, "tool": tool})
    except OSError as exc:
        # PostToolUse could not find the action: do not run the tool, and tell aarmor it did not run
        try:
            client.call("POST", f"/v1/actions/{aid}/outcome", {
                "success": False, "error": "not run: the Claude Code hook could not record the action "
                                           f"for its PostToolUse ({type(exc).__name__})"})
        except (HookError, ApiAnswer):
            pass  # the receipt then says the outcome is unknown, which is still true as far as aarmor knows
        raise
    decision = view.get("decision") or {}
    out: dict[str, Any] = {"hookEventName": "PreToolUse", "permissionDecision": "allow"}
    rule = decision.get("rule_id") or "the policy default"
    if view.get("modified"):
        out["updatedInput"] = view["parameters"]
        out["permissionDecisionReason"] = (f"aarmor: MODIFY by rule `{rule}`: {decision.get('reason', '')}; "
                                           f"the tool runs with the modified input (action {aid})")
    else:
        out["permissionDecisionReason"] = f"aarmor: {decision.get('result', 'ALLOW')} by {_rule(rule)} (action {aid})"
    return Answer(0, stdout=json.dumps({"hookSpecificOutput": out}, ensure_ascii=False) + "\n")


def _rule(rule: str) -> str:
    return rule if rule == "the policy default" else f"rule `{rule}`"


def _decision(kind: str, reason: str) -> Answer:
    out = {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": kind,
                                  "permissionDecisionReason": reason}}
    return Answer(0, stdout=json.dumps(out, ensure_ascii=False) + "\n")


def _denied_reason(view: dict[str, Any]) -> str:
    d = view.get("decision") or {}
    rule = d.get("rule_id") or "the policy default"
    return (f"aarmor: DENY by {_rule(rule)}: {d.get('reason') or 'denied'} "
            f"(policy {d.get('policy_id')} {d.get('policy_version')}; receipt {view.get('receipt_id')}, "
            f"action {view.get('action_id')})")


def _pending_reason(view: dict[str, Any], cfg: HookConfig) -> str:
    d = view.get("decision") or {}
    rule = d.get("rule_id") or "the policy default"
    head = f"aarmor: {d.get('result', 'a decision')} by {_rule(rule)}: {d.get('reason') or ''}".rstrip(": ")
    status = view.get("status")
    if status == "pending_approval":
        wait = (f"approval {view.get('approval_id')} waits for an approver "
                f"({', '.join(view.get('approvers') or []) or 'any approver'}) until {view.get('deadline')}")
        todo = f"an approver can decide it (`aarmor approvals approve {view.get('approval_id')}` or the approver page)"
    elif status == "deferred":
        needed = ", ".join(view.get("context_needed") or []) or "the actions it depends on"
        wait = f"deferral {view.get('deferral_id')} waits for {needed} until {view.get('deadline')}"
        todo = f"the missing context can be supplied (`aarmor deferrals resolve {view.get('deferral_id')}`)"
    else:
        wait, todo = "the policy decision point has not decided yet", "it may be decided shortly"
    return (f"{head}. Not decided within this hook's {cfg.timeout:g} s budget: {wait}, so the call is denied "
            f"for now (action {view.get('action_id')}); {todo}, and the same call retried afterwards uses "
            "that decision.")


# --- PostToolUse ----------------------------------------------------------------------------------------
def _post_tool_use(ev: dict[str, Any], cfg: HookConfig, client: ServerClient, st: SessionState) -> Answer:
    tool_use_id = ev["tool_use_id"]
    entry = st.running(tool_use_id)
    if entry is None:
        raise HookError(f"no action allowed by aarmor is known for tool call `{tool_use_id}` "
                        f"({ev['tool_name']}): it ran without an aarmor decision (is the PreToolUse hook "
                        "configured for the same tools?)")
    aid = str(entry.get("action_id"))
    if ev["hook_event_name"] == "PostToolUseFailure":
        error = ev.get("error")
        body: dict[str, Any] = {"success": False, "error": (str(error) if error is not None
                                                            else "the tool failed")[:4096]}
    else:
        body = {"success": True, "output": _output(ev.get("tool_response"), cfg.max_output_bytes)}
    try:
        try:
            client.call("POST", f"/v1/actions/{aid}/outcome", body)
        except ApiAnswer as exc:
            if exc.status != 422 or not body["success"]:
                raise
            # a value the API refuses (an integer beyond +-(2**53-1), say): report the response as JSON text
            client.call("POST", f"/v1/actions/{aid}/outcome", {"success": True, "output": json.dumps(
                body["output"], ensure_ascii=False)[:cfg.max_output_bytes]})
    except ApiAnswer as exc:
        if exc.status in (404, 409):  # past its outcome deadline (recorded as unknown) or forgotten
            st.drop_running(tool_use_id)
        raise
    st.drop_running(tool_use_id)
    return Answer(0)


def _output(response: Any, limit: int) -> Any:
    """The tool response as reported: as is, or (too large for one request) its first `limit` bytes as text."""
    text = json.dumps(response, ensure_ascii=False)
    if len(text.encode("utf-8", "surrogatepass")) <= limit:
        return response
    head = text.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")
    return {"aarmor_truncated": True, "original_bytes": len(text.encode("utf-8", "surrogatepass")),
            "head": head}
