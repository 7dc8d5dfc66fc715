"""Error families (DESIGN.md habit 6).

Bad input, tampering and unavailable components raise subclasses of `AarmorError`; caller misuse
raises the built-in `RuntimeError`/`TypeError`/`ValueError`. Messages name what was expected, what
was found, and where (file, rule, line), with user input in backticks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.model import Decision

__all__ = [
    "AarmorError",
    "ActionDenied",
    "AuthError",
    "ChainError",
    "ConfigError",
    "InputError",
    "LimitExceeded",
    "NotFound",
    "OutputWithheld",
    "PolicyError",
    "ReceiptError",
    "Refused",
    "SigningKeyError",
    "StoreError",
    "ToolFailed",
]


class AarmorError(Exception):
    """Base of every error aarmor raises for bad input, tampering or unavailable components."""


class ConfigError(AarmorError):
    """The configuration file or a keyword override is invalid."""


class PolicyError(AarmorError):
    """A policy failed to parse, validate or compile. The message names file, rule and line."""

    def __init__(self, message: str, *, file: str | None = None, rule_id: str | None = None,
                 line: int | None = None) -> None:
        self.file = file
        self.rule_id = rule_id
        self.line = line
        where = []
        if rule_id is not None:
            where.append(f"rule `{rule_id}`")
        if file is not None:
            where.append(f"({file}:{line})" if line is not None else f"({file})")
        prefix = " ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.detail = message


class InputError(AarmorError):
    """An action's tool name, operation or arguments cannot be normalised."""


class LimitExceeded(InputError):
    """An untrusted input is larger than a named limit in `Limits`."""

    def __init__(self, limit: str, allowed: int, found: int, what: str) -> None:
        self.limit = limit
        self.allowed = allowed
        self.found = found
        super().__init__(f"{what} exceeds limit `{limit}`: allowed {allowed}, found {found}")


class NotFound(InputError):
    """No approval, deferral, receipt or token with the id given."""


class Refused(InputError):
    """A well-formed request the rules forbid: approving your own action, an approval that is no
    longer pending, a second use of an approval. `code` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class AuthError(AarmorError):
    """A credential is missing, unknown, revoked, or its role may not do what was asked."""


class ChainError(AarmorError):
    """A hash chain (context log or receipt chain) does not verify."""

    def __init__(self, message: str, *, session_id: str | None = None, seq: int | None = None) -> None:
        self.session_id = session_id
        self.seq = seq
        super().__init__(message)


class ReceiptError(AarmorError):
    """A receipt is malformed, or its signature or chain link does not verify."""


class SigningKeyError(AarmorError):
    """A signing key is missing, unreadable, of the wrong type or has unsafe permissions."""


class StoreError(AarmorError):
    """The store could not read or write durably. Mediation fails closed on it."""


class OutcomeUnknown(AarmorError):
    """Whether an allowed tool ran is not known: its executor never reported (a remote client past its
    outcome deadline, a process that ended). The receipt says `executed: "unknown"`, `success: null`:
    neither "ran" nor "did not run" would be the truth."""


class ProcessEnded(OutcomeUnknown):
    """The process that mediated an action ended between its `action_requested` entry and its outcome.

    Crash recovery records it as the action's error: whether the tool ran is unknown (docs/durability.md).
    """


class ActionDenied(AarmorError):
    """Raised by `Session.invoke` when an action did not run.

    Carries the final `decision` (DENY, or the DENY that a STEP_UP/DEFER timeout became) and the id of
    the signed receipt that records it (None only if even the receipt could not be written).
    """

    def __init__(self, decision: Decision, receipt_id: str | None) -> None:
        self.decision = decision
        self.receipt_id = receipt_id
        super().__init__(f"action denied: {decision.reason} (receipt {receipt_id})")


class ToolFailed(Exception):
    """Raised by a door's `execute` when the tool ran and failed but still has an `output` for the caller
    (an MCP result with `isError`). The pipeline records a failed execution, applies `redact_output` to
    `output` like to any output, and re-raises it."""

    def __init__(self, message: str, output: Any) -> None:
        super().__init__(message)
        self.output = output


class OutputWithheld(AarmorError):
    """The action ran, but its output had to be redacted (`redact_output`) and could not be: it is not
    handed over. `receipt_id` names the receipt that records the execution and why the output was withheld."""

    def __init__(self, reason: str, receipt_id: str | None) -> None:
        self.reason = reason
        self.receipt_id = receipt_id
        super().__init__(f"output withheld: {reason} (receipt {receipt_id})")

