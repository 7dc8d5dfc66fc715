"""Stage 1: YAML text -> located plain data, with the AARM dialect spellings normalised.

Rules this module enforces:
- Only safe YAML (no tags beyond the core schema); duplicate keys are an error, not "last one wins".
- Every mapping and list remembers the line it starts on and the line of each key (from
  `yaml.compose` node marks), so later stages can name `file:line` in their messages.
- Dialect spellings (AARM 9.1) are folded into one form here: `decision:` -> `action:`,
  `condition:` stays a separate block (merged by validation), `modification:` -> `modifications:`,
  `params:` -> `parameters:` inside modifications, top-level `policies:` -> `rules:`.
  Folding both spellings of one key in one mapping is an error ("`action` and `decision` both given").
- The policy size limit is checked before parsing.
"""

from __future__ import annotations

from typing import Any

import yaml

from aarmor.errors import PolicyError
from aarmor.limits import DEFAULT_LIMITS, Limits

__all__ = ["LList", "LMap", "line_of", "parse_policy_text", "parse_yaml"]


class LMap(dict[str, Any]):
    """A dict that remembers its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    def key_line(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LList(list[Any]):
    """A list that remembers the line it starts on (1-based)."""

    line: int = 0


def line_of(value: Any, default: int = 0) -> int:
    """The line a located value starts on, or `default` for scalars."""
    return getattr(value, "line", default) or default


# libyaml's parser when PyYAML was built with it (the wheels are): ~10x faster on large policies, with
# the same nodes, marks and safe constructors as the pure-Python one.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]  # PyYAML has no type information
    pass


def _convert(loader: _Loader, node: yaml.Node, source: str) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = LMap()
        out.line = line
        out.key_lines = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise PolicyError(
                    "mapping keys must be plain strings", file=source, line=knode.start_mark.line + 1
                )
            if knode.tag == "tag:yaml.org,2002:merge":
                raise PolicyError(
                    "YAML merge keys (`<<`) are not supported in policies",
                    file=source,
                    line=knode.start_mark.line + 1,
                )
            key = loader.construct_object(knode)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise PolicyError(
                    f"duplicate key `{key}` (first at line {out.key_lines[key]})",
                    file=source,
                    line=knode.start_mark.line + 1,
                )
            out.key_lines[key] = knode.start_mark.line + 1
            out[key] = _convert(loader, vnode, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        lst = LList(_convert(loader, v, source) for v in node.value)
        lst.line = line
        return lst
    return loader.construct_object(node)


def parse_yaml(text: str, *, source: str) -> Any:
    """Parse one YAML document into `LMap`/`LList`/scalars.

    Raises:
        PolicyError: on a YAML syntax error, a duplicate key or a merge key, naming `source:line`.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _convert(loader, node, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise PolicyError(f"invalid YAML: {exc.problem or exc}", file=source, line=line) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"invalid YAML: {exc}", file=source) from exc
    finally:
        loader.dispose()


# (canonical, alias) pairs folded at each level.
_RULE_ALIASES = (("action", "decision"), ("modifications", "modification"))
_TOP_ALIASES = (("rules", "policies"),)
_MOD_ALIASES = (("parameters", "params"),)


def fold_aliases(m: LMap, pairs: tuple[tuple[str, str], ...], *, source: str, rule_id: str | None) -> None:
    """Rename dialect spellings to the canonical key in place.

    Raises:
        PolicyError: when both spellings of one key are present.
    """
    for canon, alias in pairs:
        if alias in m:
            if canon in m:
                raise PolicyError(
                    f"`{canon}` and `{alias}` both given; they are the same key",
                    file=source,
                    rule_id=rule_id,
                    line=m.key_line(alias),
                )
            line = m.key_line(alias)
            m[canon] = m.pop(alias)
            m.key_lines[canon] = line


def parse_policy_text(text: str, *, source: str, limits: Limits = DEFAULT_LIMITS) -> LMap:
    """Parse a policy document and fold its dialect spellings.

    Raises:
        PolicyError: oversized text, YAML errors, a document that is not a mapping, or both spellings
            of one key.
    """
    size = len(text.encode("utf-8"))
    if size > limits.max_policy_bytes:
        raise PolicyError(
            f"policy is {size} bytes, exceeds limit `max_policy_bytes` ({limits.max_policy_bytes})",
            file=source,
        )
    doc = parse_yaml(text, source=source)
    if not isinstance(doc, LMap):
        raise PolicyError(
            "a policy file must be a mapping with `policy:` and `rules:`", file=source, line=line_of(doc, 1)
        )
    fold_aliases(doc, _TOP_ALIASES, source=source, rule_id=None)
    rules = doc.get("rules")
    if isinstance(rules, list):
        for r in rules:
            if isinstance(r, LMap):
                rid = r.get("id") if isinstance(r.get("id"), str) else None
                fold_aliases(r, _RULE_ALIASES, source=source, rule_id=rid)
                mods = r.get("modifications")
                if isinstance(mods, LMap):
                    fold_aliases(mods, _MOD_ALIASES, source=source, rule_id=rid)
    return doc
