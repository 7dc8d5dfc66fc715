"""`tools/call` and `tools/list` at the gateway: the MCP door of the one mediation pipeline.

Rules:
- A `tools/call` becomes one action: tool = the name the client used, operation = the configured one
  (`tools: {name: {operation: ...}}`), parameters = the arguments. The upstream is called only from the
  pipeline's `execute`, so only after ALLOW, or MODIFY with the modified arguments, or STEP_UP/DEFER
  resolved. Unknown tools are mediated too (every call leaves a receipt); a sole upstream then answers
  them itself (as it would without the gateway), with several upstreams they fail with -32602.
- A DENY (timeouts included) answers with a tool result the model can read: `isError`, the reason, the
  rule and the receipt id. STEP_UP and DEFER hold the call; if the client gave a progress token it gets
  a progress notification every `progress_interval` seconds while held.
- A result with `isError: true` is recorded as a failed execution and passed to the client as it is.
- A decision's `redact_output` is applied to the result (error results too) before the client sees it.
- Rug pulls: the first definition (description, schemas, annotations, title) of each tool a session sees
  is its reference; a later `tools/list` that shows another definition is recorded and raised as the
  risk signals `tool_definition_changed` (true) and `changed_tools` (their names) for policy.
- With `hide_denied_tools`, tools an unconditional FORBIDDEN rule covers are left out of `tools/list`.
- AARM R9: a tool configured for access tokens (`credentials.tools`) gets its per-call token in the
  forwarded request's `params._meta["aarmor/credential"]`, for the server to check with
  `aarmor.credentials.verify_access_token` (docs/credentials.md). Other credential kinds are not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from aarmor.errors import ActionDenied, OutputWithheld, ToolFailed
from aarmor.normalize import normalize_name, split_tool

from .jsonrpc import INVALID_PARAMS, RemoteError

if TYPE_CHECKING:  # pragma: no cover
    from .router import Catalog, ClientSession, InFlight

__all__ = ["ToolHandler", "denied_result", "tool_fingerprint", "withheld_result"]

log = logging.getLogger("aarmor.gateway")


class ToolReportedError(ToolFailed):
    """The upstream answered with `isError: true`: executed, failed, and the client gets the result
    (`output`, after any `redact_output`)."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(_result_text(result) or "the tool reported an error", result)


def _result_text(result: dict[str, Any]) -> str:
    parts = [c.get("text", "") for c in result.get("content") or () if isinstance(c, dict) and c.get("type") == "text"]
    return " ".join(p for p in parts if isinstance(p, str))[:500]


def _with_credential(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with the call's access token (if its tool has one) in `_meta["aarmor/credential"]`."""
    from aarmor.credentials.model import current

    cred = current()
    if cred is None or cred.kind != "access_token":
        return params
    meta = params.get("_meta")
    return {**params, "_meta": {**(meta if isinstance(meta, dict) else {}), "aarmor/credential": cred.token}}


def tool_fingerprint(tool: dict[str, Any]) -> str:
    """A digest of everything about a tool a model reads or relies on, except its name."""
    body = {k: tool.get(k) for k in ("title", "description", "inputSchema", "outputSchema", "annotations")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False, default=str).encode()).hexdigest()


def denied_result(exc: ActionDenied) -> dict[str, Any]:
    """The tool result a denied call answers with: readable by the model, with the receipt id."""
    d = exc.decision
    text = f"aarmor denied this call: {d.reason}"
    if d.rule_id:
        text += f" (rule {d.rule_id})"
    text += f". Receipt: {exc.receipt_id}." if exc.receipt_id else ". No receipt could be written."
    return {"content": [{"type": "text", "text": text}], "isError": True,
            "_meta": {"aarmor/decision": d.result.value, "aarmor/receipt_id": exc.receipt_id,
                      "aarmor/rule_id": d.rule_id}}


def withheld_result(exc: OutputWithheld) -> dict[str, Any]:
    """The tool result when the call ran but its output could not be redacted as policy requires."""
    text = (f"aarmor withheld this tool's output: it had to be redacted and could not be ({exc.reason}). "
            f"The call did run. Receipt: {exc.receipt_id}.")
    return {"content": [{"type": "text", "text": text}], "isError": True,
            "_meta": {"aarmor/decision": "MODIFY", "aarmor/receipt_id": exc.receipt_id, "aarmor/withheld": True}}


class ToolHandler:
    """The tools of one client session."""

    def __init__(self, cs: ClientSession, *, hide_denied: bool, progress_interval: float,
                 policy: Any) -> None:
        self.cs = cs
        self._hide = hide_denied
        self._interval = progress_interval
        self._policy = policy  # () -> PolicySet
        self._seen: dict[tuple[str, str], str] = {}
        self.changed: set[str] = set()

    def start(self) -> None:
        """Populate the rug-pull signals at session start, so rules on them decide instead of deferring."""
        self.cs.session.report_signal("tool_definition_changed", False)
        self.cs.session.report_signal("changed_tools", [])

    def inspect(self, cat: Catalog) -> None:
        """Compare each tool with the definition this session first saw; record and signal changes."""
        new: list[tuple[str, str, str]] = []
        for item in cat.items:
            exposed = str(item.get("name"))
            up, original = cat.owner[exposed]
            fp = tool_fingerprint(item)
            first = self._seen.setdefault((up.name, original), fp)
            if first != fp and exposed not in self.changed:
                new.append((exposed, first, fp))
        if not new:
            return
        self.changed.update(name for name, _, _ in new)
        for name, first, fp in new:
            log.warning("gateway: tool `%s` changed its definition after the session first saw it "
                        "(%s... -> %s...): possible rug pull", name, first[:12], fp[:12])
        detail = {"tools": {name: {"first": first, "now": fp} for name, first, fp in new}}
        session = self.cs.session
        session.report_signal("tool_definition_changed", True, detail=detail)
        session.report_signal("changed_tools", sorted(self.changed))

    async def visible(self, cat: Catalog) -> list[dict[str, Any]]:
        if not self._hide:
            return cat.items
        policy = self._policy()
        out = []
        for item in cat.items:
            try:
                tool, op = split_tool(normalize_name(str(item.get("name"))), None)
                if policy.forbids_outright(tool, op):
                    continue
            except Exception:  # a name the pipeline cannot normalise: listed; calling it is a DENY
                pass
            out.append(item)
        return out

    async def call(self, params: dict[str, Any], fl: InFlight) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise RemoteError(INVALID_PARAMS, "tools/call: `name` must be a string")
        arguments = params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RemoteError(INVALID_PARAMS, "tools/call: `arguments` must be an object")
        try:
            owner: tuple[Any, str] | None = await self.cs.owner_of_tool(name)
        except RemoteError:
            # a name no upstream lists: with one upstream it gets the call (after mediation) and answers as
            # it would without the gateway; with several there is nobody to ask
            live = self.cs.live()
            owner = (live[0], name) if len(live) == 1 else None
        started = asyncio.Event()

        async def execute(run_args: dict[str, Any]) -> dict[str, Any]:
            started.set()
            if owner is None:
                raise RemoteError(INVALID_PARAMS, f"unknown tool: `{name}`")
            up, original = owner
            res = await self.cs.forward(up, "tools/call", _with_credential(
                {**params, "name": original, "arguments": run_args}), fl)
            if res.get("isError") is True:
                raise ToolReportedError(res)
            return res

        ticker = asyncio.ensure_future(self._tick(fl, started)) if fl.progress_token is not None else None
        try:
            out: dict[str, Any] = await self.cs.session.ainvoke(name, arguments, execute)
            return out
        except ActionDenied as exc:
            return denied_result(exc)
        except ToolReportedError as exc:
            result: dict[str, Any] = exc.output
            return result
        except OutputWithheld as exc:
            return withheld_result(exc)
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(BaseException):
                    await ticker

    async def _tick(self, fl: InFlight, started: asyncio.Event) -> None:
        step = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(started.wait(), self._interval)
            if started.is_set():
                return
            step += 1
            await self.cs.progress(fl, step, "held by aarmor: waiting for an approval or for missing context")
