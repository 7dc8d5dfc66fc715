"""Meta-tool resolution (AARM 2.1 and 4.3: meta-tools MUST be resolved to the real tool before policy).

A meta-tool is a generic wrapper whose arguments name the tool that really runs: `Skill` +
`{"skill": "superpowers:brainstorming"}`, `mcp_tool` + `{"mcp_server_name": "linear-server",
"mcp_tool_name": "list_issues"}`, or a deployment's own `execute_tool` + `{"tool": "shell", "arguments":
{...}}`. Judged by its wrapper name, `execute_tool {tool: shell}` would slip past a rule on `shell`.

Rules:
- Which tools are wrappers is declared, never guessed: the two AARM 4.3 examples are built in
  (`BUILTIN_META_TOOLS`), others come from configuration (`tools: {execute_tool: {meta: {tool: tool,
  arguments: arguments}}}`). Guessing from names like `run` would let an attacker rename a real tool by
  writing `tool: read_file` into its arguments: a bypass in the other direction.
- Policy sees the resolved tool (the naming arguments joined with `.`) and its own arguments (the
  `arguments` argument, or, when none is declared, the wrapper's arguments without the naming ones); the
  wrapper's name is kept as the action's `raw_tool` for audit. Wrappers nest (up to `MAX_META_DEPTH`).
- A wrapper call that does not name a real tool (missing, not a string, arguments not an object) is an
  `InputError`: the call is denied, never judged as the wrapper.
- The tool runs with the wrapper's shape: `rewrap` puts the (possibly modified) arguments back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aarmor.errors import InputError
from aarmor.normalize import normalize_name

__all__ = ["BUILTIN_META_TOOLS", "MAX_META_DEPTH", "MetaTool", "Unwrapped", "rewrap", "unwrap"]

#: wrappers inside wrappers resolved before the call is refused
MAX_META_DEPTH = 4


@dataclass(frozen=True, slots=True)
class MetaTool:
    """How one wrapper names its real tool."""

    #: the arguments whose values, joined with `.`, name the real tool
    tool: tuple[str, ...]
    #: the argument that holds the real tool's arguments; None: every other argument of the wrapper
    arguments: str | None = None


#: AARM 4.3's examples (names normalised)
BUILTIN_META_TOOLS: dict[str, MetaTool] = {
    "skill": MetaTool(("skill",)),
    "mcp_tool": MetaTool(("mcp_server_name", "mcp_tool_name")),
}


@dataclass(frozen=True, slots=True)
class Unwrapped:
    """A resolved wrapper call: the real tool and its arguments, and the layers to put back."""

    tool: str
    arguments: Any
    #: (wrapper spec, wrapper arguments), outermost first
    layers: tuple[tuple[MetaTool, Mapping[str, Any]], ...]


def unwrap(tool: Any, arguments: Any, metas: Mapping[str, MetaTool]) -> Unwrapped | None:
    """The real tool behind a wrapper call, or None when `tool` is not a declared wrapper.

    Raises:
        InputError: a wrapper call that does not name its real tool, or wrappers nested too deep.
    """
    layers: list[tuple[MetaTool, Mapping[str, Any]]] = []
    while metas and isinstance(tool, str):
        try:
            spec = metas.get(normalize_name(tool))
        except InputError:
            break  # the normaliser refuses the name with its precise message
        if spec is None:
            break
        if len(layers) >= MAX_META_DEPTH:
            raise InputError(f"meta-tools nested more than {MAX_META_DEPTH} deep")
        args = {} if arguments is None else arguments
        if not isinstance(args, Mapping):
            raise InputError(f"meta-tool `{tool}`: arguments must be a JSON object")
        parts = []
        for name in spec.tool:
            value = args.get(name)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"meta-tool `{tool}`: argument `{name}` must name the real tool (a string); "
                                 "meta-tools are resolved before policy (AARM 2.1)")
            parts.append(value)
        if spec.arguments is not None:
            inner = args.get(spec.arguments)
            if inner is not None and not isinstance(inner, Mapping):
                raise InputError(f"meta-tool `{tool}`: argument `{spec.arguments}` must be a JSON object")
        else:
            inner = {k: v for k, v in args.items() if k not in spec.tool}
        layers.append((spec, args))
        tool, arguments = ".".join(parts), inner
    return Unwrapped(tool, arguments, tuple(layers)) if layers else None


def rewrap(u: Unwrapped, inner: dict[str, Any]) -> dict[str, Any]:
    """The wrapper's arguments again, with `inner` (the arguments policy allowed, maybe modified)."""
    out = inner
    for spec, outer in reversed(u.layers):
        names = {k: outer[k] for k in spec.tool}
        if spec.arguments is not None:
            out = {**outer, spec.arguments: out}
        else:
            out = {**out, **names}  # the naming arguments last: a modification cannot rename the tool
    return dict(out)
