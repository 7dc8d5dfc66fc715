"""The Python SDK door: `Session.invoke`, `Session.evaluate` and the `protect` decorator.

Rules: the door only translates (function call -> tool name + JSON arguments) and hands over to the
`Mediator`. `protect` binds positional arguments to parameter names so the policy sees every argument,
not only keyword ones (a gap in the AARM quickstart). The session bound to the current context
(`contextvars`) is the one `with guard.session(...)` entered, so threads and asyncio tasks each see
their own.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from aarmor.canonical import format_ts
from aarmor.identity.delegation import links_from_tokens
from aarmor.mediator import HANDLE_PREFIX
from aarmor.model import Decision
from aarmor.normalize import new_action_id

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.guard import Guard
    from aarmor.mediator import SessionState
    from aarmor.observed import Observation, ObservedRecord

__all__ = ["Session", "current_session", "protect"]

F = TypeVar("F", bound=Callable[..., Any])

_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar("aarmor_session", default=None)


def current_session() -> Session:
    """The session bound to the current context.

    Raises:
        RuntimeError: no `with guard.session(...)` block is active here.
    """
    session = _current.get()
    if session is None:
        raise RuntimeError("no aarmor session is active: call the protected function inside "
                           "`with guard.session(...):`")
    return session


class Session:
    """One agent session: a context log, a bound identity and a receipt chain. Not built directly."""

    def __init__(self, guard: Guard, state: SessionState) -> None:
        self._guard = guard
        self._state = state
        self._tokens: list[contextvars.Token[Session | None]] = []

    @property
    def session_id(self) -> str:
        return self._state.session_id

    @property
    def identity(self) -> Any:
        return self._state.identity

    def invoke(self, tool: str, arguments: dict[str, Any] | None, execute: Callable[[dict[str, Any]], Any], *,
               operation: str | None = None, depends_on: Sequence[str] = (), action_id: str | None = None) -> Any:
        """Mediate one call. `execute(arguments)` runs only if allowed (with modified arguments on MODIFY).

        STEP_UP blocks until an approver decides (or the timeout: DENY); DEFER blocks until the context it
        needs arrives and a re-evaluation decides (or the timeout: DENY). `depends_on` (action ids) and
        result handles in `arguments` (`session.handle(id)`) make this call wait for those actions: if one
        is deferred this one is deferred too; if one did not run, this one is denied. `action_id` lets
        the caller choose the id up front (see `new_action_id`) so others can depend on it.

        Returns what `execute` returned.

        Raises:
            ActionDenied: the action did not run (DENY, or STEP_UP/DEFER not resolved); carries `.decision`
                and `.receipt_id`.
            RuntimeError: the session is closed.
            Exception: whatever `execute` raised, after the failure was recorded.
        """
        return self._guard.mediator.invoke(self._state, tool, arguments, execute, operation,
                                           depends_on=depends_on, action_id=action_id)

    async def ainvoke(self, tool: str, arguments: dict[str, Any] | None,
                      execute: Callable[[dict[str, Any]], Any | Awaitable[Any]], *,
                      operation: str | None = None, depends_on: Sequence[str] = (),
                      action_id: str | None = None) -> Any:
        """Async `invoke`: STEP_UP and DEFER waits do not block the event loop; `execute` may be async."""
        return await self._guard.mediator.ainvoke(self._state, tool, arguments, execute, operation,
                                                  depends_on=depends_on, action_id=action_id)

    @staticmethod
    def new_action_id() -> str:
        """A fresh action id to pass as `action_id=`, so later calls can depend on this one."""
        return new_action_id()

    @staticmethod
    def handle(action_id: str) -> str:
        """A result handle: put it in another call's arguments to make that call depend on `action_id`."""
        return HANDLE_PREFIX + action_id

    def delegate(self, to: str, scope: Sequence[str], *, ttl: float = 300.0) -> tuple[str, ...]:
        """Delegate to sub-agent `to` the `scope` it may act with, for `ttl` seconds; returns the signed chain.

        The sub-agent opens its own session with `Identity(agent=to, delegation=links_from_tokens(chain))`:
        its actions then carry this session's human principal and original request, and its effective scope
        is at most `scope` (docs/identity.md "Delegation"). This session's identity is verified first, and
        the delegation is recorded in its context log (a `delegation` entry, without the token).

        Raises:
            IdentityError: this session's identity does not verify now. DelegationError (an IdentityError):
                the delegation may not be made (a scope this session does not hold, an empty scope, a ttl
                beyond `identity.delegation.max_ttl`, a chain at `max_depth`).
            RuntimeError: the session is closed.
        """
        guard, st = self._guard, self._state
        with st.lock:
            if st.closed:
                raise RuntimeError(f"session `{st.session_id}` already closed")
        delegator = guard.mediator.verify_identity(st.identity)
        now = guard._clock()
        chain = guard.delegation.delegate(delegator, to=to, scope=scope, ttl=ttl, now=now,
                                          original_request=st.ctx.original_request)
        link = links_from_tokens(chain[-1:])[0]
        st.ctx.record_event("delegation", {"delegator": link.delegator, "delegatee": link.delegatee,
                                           "scope": list(link.scope), "link_id": link.link_id,
                                           "depth": len(chain), "expires_at": format_ts(link.expires_at)
                                           if link.expires_at else None}, now=now)
        return chain

    def update_context(self, **fields: Any) -> None:
        """Supply context fields (AARM 2.6 progressive resolution): each is logged as `context.<name>`
        with source `session.update_context`, and this session's deferrals re-evaluate at once."""
        now = self._guard._clock()
        with self._state.ctx.atomic() as tx:  # all fields or none
            for name, value in fields.items():
                tx.value(name, value, source="session.update_context", now=now)
            tx.commit()
        self._guard.deferrals.wake_session(self._state.session_id)

    def observe(self, tool: str, arguments: dict[str, Any] | None, observation: Observation, *,
                operation: str | None = None, action_id: str | None = None) -> ObservedRecord:
        """Record an action that happened (or was refused) without aarmor, as a telemetry stream reported it
        (AARM 4.3, observe-only): the policy judges it, nothing is enforced, a receipt marked observed is
        signed, and a decision that would not have let it run raises an alert (aarmor.observed).

        Raises:
            InputError: `action_id` malformed or already used in this session. RuntimeError: session closed.
            StoreError, ChainError: it could not be recorded (nothing was).
        """
        return self._guard.mediator.observe(self._state, tool, arguments, operation, observation,
                                            action_id=action_id)

    def evaluate(self, tool: str, arguments: dict[str, Any] | None, *, operation: str | None = None) -> Decision:
        """Dry run: the decision the call would get now. Executes and records nothing."""
        return self._guard.mediator.evaluate(self._state, tool, arguments, operation)

    def set_context(self, name: str, value: Any, *, source: str) -> None:
        """Populate `context.<name>` for later decisions (environment state, ticket status...), logged
        with its source so a receipt's context hash covers it."""
        self._state.ctx.set_value(name, value, source=source, now=self._guard._clock())
        self._guard.deferrals.wake_session(self._state.session_id)

    def report_signal(self, name: str, value: Any, *, detail: Any = None) -> None:
        """Set `risk_signals.<name>` for later decisions (latest value wins; None clears it), logged as a
        `signal` entry so a receipt's context hash covers it; this session's deferrals re-evaluate at once.
        Doors use it for what only they can see, e.g. the MCP gateway's `tool_definition_changed`.

        Raises:
            InputError: `name` is not a lower-case identifier or is a derived signal (`injection_suspected`,
                `chain_length`, ...); `value` is not a JSON scalar or a list of strings; `detail` is not JSON.
            LimitExceeded: the signal exceeds `max_argument_bytes`.
            RuntimeError: the session is closed.
        """
        with self._state.lock:
            if self._state.closed:
                raise RuntimeError(f"session `{self._state.session_id}` already closed")
        self._state.ctx.record_signal(name, value, detail=detail, now=self._guard._clock())
        self._guard.deferrals.wake_session(self._state.session_id)

    def close(self) -> None:
        """End the session (logged). Later calls raise RuntimeError."""
        with self._state.lock:
            if self._state.closed:
                return
            self._state.closed = True
        self._guard.mediator.flush_unrecorded()  # outcomes the store refused earlier go before the end
        self._state.ctx.end(self._guard._clock())

    def __enter__(self) -> Session:
        self._tokens.append(_current.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())
        self.close()

    async def __aenter__(self) -> Session:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)


def _bind(fn: Callable[..., Any], sig: inspect.Signature, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = sig.bind(*args, **kwargs)
    out: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            out[name] = list(value)
        else:
            out[name] = value
    return out


def _call(fn: Callable[..., Any], sig: inspect.Signature, arguments: dict[str, Any]) -> Any:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, p in sig.parameters.items():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            args.extend(arguments.pop(name, []))
        elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
            if name in arguments:
                args.append(arguments.pop(name))
        elif p.kind is not inspect.Parameter.VAR_KEYWORD and name in arguments:
            kwargs[name] = arguments.pop(name)
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    if arguments and not has_var_kw:
        # MODIFY added a key the function does not take (e.g. `_aarm_filter`): refuse rather than drop it
        raise TypeError(f"modified arguments {sorted(arguments)} are not parameters of {fn.__qualname__}")
    kwargs.update(arguments)
    return fn(*args, **kwargs)


def protect(tool: str, *, operation: str | None = None) -> Callable[[F], F]:
    """Decorator: every call of the function is mediated in the session bound to the current context."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                session = current_session()
                return await session.ainvoke(tool, _bind(fn, sig, args, kwargs),
                                             lambda a: _call(fn, sig, a), operation=operation)

            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            session = current_session()
            return session.invoke(tool, _bind(fn, sig, args, kwargs), lambda a: _call(fn, sig, a),
                                  operation=operation)

        return wrapper  # type: ignore[return-value]

    return decorate


