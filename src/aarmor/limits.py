"""Named limits on every untrusted input (DESIGN.md habit 10).

Every check that rejects oversized input raises `LimitExceeded` naming the field of `Limits` it hit,
so an operator knows which knob to turn and an attacker learns nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    #: bytes of the canonical JSON of one action's arguments
    max_argument_bytes: int = 1_048_576
    #: nesting depth of arguments (objects and arrays)
    max_argument_depth: int = 32
    #: characters of a tool or operation name
    max_name_length: int = 128
    #: characters of an original request text
    max_request_chars: int = 65_536
    #: bytes of a policy file
    max_policy_bytes: int = 4_194_304
    #: rules in one policy set
    max_rules: int = 100_000
    #: characters of one regular expression in a policy
    max_regex_length: int = 1_024
    #: characters of one CEL `when:` expression
    max_cel_length: int = 4_096
    #: bytes of a tool output scanned by the classifiers (the rest is counted, not scanned)
    max_scan_bytes: int = 1_048_576
    #: prior actions kept in memory per session (the full history stays in the store)
    max_window: int = 100


DEFAULT_LIMITS = Limits()
