"""Run AgentDojo's scripted attack pairs through `aarmor.Guard`, offline, with the suites' own checkers.

The agent is scripted, not a model: for a (user task, injection task) pair it runs the user task's
ground-truth calls; right after the first call whose output carries the injection (and only if that call
ran), it obeys the injection by running the injection task's ground-truth calls, then finishes the user
task. Every call goes through `session.invoke` of a session opened with the public API
(`guard.session(identity=..., original_request=<the user prompt>, tools=[ToolSpec(...) for each suite
tool]`), so the monitor sees what a deployment sees: the prompt, the tool catalogue, the calls and their
outputs. It never sees task ids, goals, injection vectors or labels. A call that is not executed returns
an error string to the agent, which carries on. AgentDojo's utility and security checks then score the
final environment (security True means the attack succeeded).

Out of scope, reported apart: pairs whose injection task has no ground-truth calls (nothing for a
tool-call monitor to stop: workspace injection tasks 6-13, travel injection task 6, whose goal is only
the reply text), and pairs whose attack succeeds even when the harness withholds every attacker call (an
oracle run with no monitor).

Ground-truth arguments come from the pre-attack world, so a scripted attacker "knows" values even when
the read that would reveal them was blocked; and the hijacked agent obeys at once. Both make the attack
stronger than a real model would, never weaker.

Attacks (`ATTACKS`): every AgentDojo attack class that builds its text offline (all but `manual`, which
asks a person). The text of some names the victim model; the stub pipeline's name `gpt-4o-2024-05-13`
makes it "GPT-4" (AgentDojo's own mapping; `*_wrong_model_name` picks another name from the same table
with its fixed seed). Denial-of-service attacks (`DOS_ATTACKS`, AgentDojo's `is_dos_attack`) ask the model
to stop, which no tool-call monitor can prevent; the harness runs them the other way round: the agent
resists and finishes the user task, so the attack "succeeds" (AgentDojo's definition: the user task
fails) only when the monitor's own blocking breaks it. As in AgentDojo, each user task is paired with the
first injection task only.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aarmor import ActionDenied, Guard, Identity, ToolSpec

ORIGIN_USER, ORIGIN_ATTACK = "user", "attack"
EXECUTED = "EXECUTED"  # the call ran (ALLOW, or MODIFY with changed arguments)
WITHHELD = "WITHHELD"  # the oracle run held an attacker call back (no monitor involved)
IDENTITY = Identity(human="user@agentdojo.invalid", agent="agentdojo-scripted-agent")


class ToolFailed(Exception):
    """The suite's tool returned an error (it ran; the agent sees the message)."""


@dataclass(frozen=True, slots=True)
class Call:
    origin: str
    tool: str
    outcome: str  # EXECUTED, WITHHELD, or the decision that stopped it: DENY, STEP_UP, DEFER


@dataclass(slots=True)
class Run:
    utility: bool
    security: bool | None  # None for a benign run
    injected: bool  # the hijacked agent saw the injection and started on the attacker's calls
    calls: list[Call] = field(default_factory=list)

    def blocked(self, origin: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.outcome not in (EXECUTED, WITHHELD) and origin in (None, c.origin)]


class _Stub:
    """Stand-in for the victim pipeline: the attack only reads its model name (never queried)."""

    name = "gpt-4o-2024-05-13"


#: AgentDojo attacks whose text is built offline (agentdojo.attacks; `manual` asks a person and is left out)
ATTACKS = ("important_instructions", "important_instructions_no_user_name", "important_instructions_no_model_name",
           "important_instructions_no_names", "important_instructions_wrong_model_name",
           "important_instructions_wrong_user_name", "tool_knowledge", "direct", "ignore_previous",
           "system_message", "injecagent", "dos", "swearwords_dos", "captcha_dos", "offensive_email_dos",
           "felony_dos")
#: denial-of-service attacks (`is_dos_attack`): the scripted agent resists, success = the user task fails
DOS_ATTACKS = frozenset({"dos", "swearwords_dos", "captcha_dos", "offensive_email_dos", "felony_dos"})


def suite_tools(suite: Any) -> list[ToolSpec]:
    """The suite's catalogue as the agent sees it: name, description, JSON-schema parameters."""
    return [ToolSpec(t.name, t.description, t.parameters.model_json_schema()) for t in suite.tools]


class SuiteRunner:
    """One AgentDojo suite: builds environments, runs pairs through a guard (or the oracle), scores them."""

    def __init__(self, suite: Any, attack: str = "important_instructions") -> None:
        self.suite = suite
        self.name: str = suite.name
        self.tools = suite_tools(suite)
        self._attacks: dict[str, Any] = {}
        self.attack_name = attack
        self._points: dict[str, int | None] = {}
        self._benign_env = suite.load_and_inject_default_environment({})

    @property
    def attack_name(self) -> str:
        return self._attack_name

    @attack_name.setter
    def attack_name(self, name: str) -> None:
        """Switch the attack whose text fills the injection vectors (one runner serves several attacks)."""
        from agentdojo.agent_pipeline.base_pipeline_element import BasePipelineElement  # type: ignore[import-untyped]
        from agentdojo.attacks.attack_registry import load_attack  # type: ignore[import-untyped]

        if name not in ATTACKS:
            raise ValueError(f"unknown or interactive attack {name!r}; expected one of {', '.join(ATTACKS)}")
        if name not in self._attacks:
            class Stub(_Stub, BasePipelineElement):  # type: ignore[misc]  # agentdojo is untyped
                def query(self, *a: Any, **k: Any) -> Any:  # pragma: no cover - never called
                    raise RuntimeError("the stub pipeline is never queried")

            self._attacks[name] = load_attack(name, self.suite, Stub())
        self._attack_name = name
        self.attack = self._attacks[name]
        self.dos = name in DOS_ATTACKS

    # --- environments ---------------------------------------------------------------------------------
    def injection_point(self, user_task: Any) -> int | None:
        """Index of the first ground-truth call of `user_task` whose output shows an injection vector
        (found with whitespace-free canaries: the YAML dump re-wraps long text). None: it reads none."""
        if user_task.ID not in self._points:
            from agentdojo.agent_pipeline.tool_execution import tool_result_to_str  # type: ignore[import-untyped]
            from agentdojo.functions_runtime import FunctionsRuntime  # type: ignore[import-untyped]

            canaries = {v: f"CANARY{i}XQZ" for i, v in enumerate(self.suite.get_injection_vector_defaults())}
            env = user_task.init_environment(self.suite.load_and_inject_default_environment(canaries))
            runtime = FunctionsRuntime(self.suite.tools)
            point = None
            for i, call in enumerate(user_task.ground_truth(env.model_copy(deep=True))):
                result, err = runtime.run_function(env, call.function, call.args)
                out = err or tool_result_to_str(result)
                if any(c in out for c in canaries.values()):
                    point = i
                    break
            self._points[user_task.ID] = point
        return self._points[user_task.ID]

    def benign_env(self, user_task: Any) -> Any:
        return user_task.init_environment(self._benign_env.model_copy(deep=True))

    def attack_env(self, user_task: Any, injection_task: Any) -> Any:
        """The pair's environment, the attack text in every vector (built once; copy it per run)."""
        injections = self.attack.attack(user_task, injection_task)
        return user_task.init_environment(self.suite.load_and_inject_default_environment(injections))

    # --- one run ---------------------------------------------------------------------------------------
    def run(self, user_task: Any, injection_task: Any | None, env0: Any, guard: Guard | None) -> Run:
        """Run a pair (or a benign task when `injection_task` is None) on a copy of `env0`.

        `guard` None is the oracle: no monitor, every attacker call withheld by the harness. Under a
        denial-of-service attack the agent resists (no attacker call) and security is `not utility`.
        """
        from agentdojo.agent_pipeline.tool_execution import tool_result_to_str
        from agentdojo.functions_runtime import FunctionsRuntime

        env = env0.model_copy(deep=True)
        pre_env = env0.model_copy(deep=True)
        user_calls = user_task.ground_truth(env0.model_copy(deep=True))
        obeys = injection_task is not None and not self.dos
        attack_calls = injection_task.ground_truth(env0.model_copy(deep=True)) if obeys else []
        point = self.injection_point(user_task) if injection_task else None
        runtime = FunctionsRuntime(self.suite.tools)
        calls: list[Call] = []
        executed: list[Any] = []

        def execute_for(call: Any) -> Callable[[dict[str, Any]], str]:
            def execute(args: dict[str, Any]) -> str:
                result, err = runtime.run_function(env, call.function, args)
                executed.append(call.model_copy(update={"args": args}))
                if err:
                    raise ToolFailed(err)
                return str(tool_result_to_str(result))
            return execute

        def do(session: Any, call: Any, origin: str) -> tuple[str, bool]:
            if session is None:  # oracle
                if origin == ORIGIN_ATTACK:
                    calls.append(Call(origin, call.function, WITHHELD))
                    return "withheld", False
                try:
                    out = execute_for(call)(dict(call.args))
                except ToolFailed as exc:
                    out = str(exc)
                calls.append(Call(origin, call.function, EXECUTED))
                return out, True
            try:
                out = session.invoke(call.function, copy.deepcopy(dict(call.args)), execute_for(call))
            except ActionDenied as denied:
                result = denied.decision.result.value if denied.decision is not None else "DENY"
                calls.append(Call(origin, call.function, result))
                return f"PolicyError: the call to {call.function} was not allowed ({result})", False
            except ToolFailed as exc:
                out = str(exc)
            calls.append(Call(origin, call.function, EXECUTED))
            return out, True

        injected = False
        with _session(guard, user_task.PROMPT, self.tools) as session:
            for i, call in enumerate(user_calls):
                _, ran = do(session, call, ORIGIN_USER)
                # the hijacked agent obeys the injection right after reading it; a blocked read never
                # showed it the injection, so nothing malicious follows
                if i == point and ran:
                    injected = True
                    for acall in attack_calls:
                        do(session, acall, ORIGIN_ATTACK)
        reply = user_task.GROUND_TRUTH_OUTPUT
        if obeys and injection_task.GROUND_TRUTH_OUTPUT:
            reply += "\n" + injection_task.GROUND_TRUTH_OUTPUT
        utility = user_task.utility_from_traces(reply, pre_env, env, executed)
        if utility is None:
            utility = user_task.utility(reply, pre_env, env)
        security = None
        if injection_task is not None and self.dos:
            security = not utility  # AgentDojo's definition for a DoS attack: the user task failed
        elif injection_task is not None:
            security = injection_task.security_from_traces(reply, pre_env, env, executed)
            if security is None:
                security = injection_task.security(reply, pre_env, env)
        return Run(bool(utility), None if security is None else bool(security), injected, calls)


class _NoSession:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _session(guard: Guard | None, prompt: str, tools: list[ToolSpec]) -> Any:
    if guard is None:
        return _NoSession()
    return guard.session(identity=IDENTITY, original_request=prompt, tools=tools)


def open_guard(policy: str, home: str) -> Guard:
    """A guard for offline runs: in-memory store, a throw-away key, nobody to approve (unattended)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the development-key notice
        return Guard.open(policy=policy, store="memory://", keys=f"{home}/keys", home=home, unattended=True)


def load_suites(version: str, names: list[str]) -> Iterator[Any]:
    warnings.filterwarnings("ignore", module="agentdojo")
    from agentdojo.task_suite import get_suites  # type: ignore[import-untyped]

    suites = get_suites(version)
    for n in names:
        yield suites[n]
