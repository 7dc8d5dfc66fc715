"""Parameter redaction for receipts and the context log (AARM threat 10: no side channel).

Rules:
- mode `clear`: values are kept, except under keys named in `fields` (at any depth; matched
  case-insensitively and with `-` read as `_`, so `API-Key` matches `api_key`), which become
  `{"digest": "sha256:..."}` whatever their type (a whole object or list included).
- mode `digest`: every leaf value becomes a digest, except under keys named in `allow` (whose values are
  kept, still subject to the two other rules); keys named in `fields` are digested even when allowed.
- In both modes a string that looks like a credential (PEM private key, JWT, AWS access key id,
  `sk-`/`ghp_`/`github_pat_`/`xox?-` tokens) is digested whatever its key.
- An unknown mode is an error (`ValueError`), never "keep everything".
- `redact_text` replaces credential-looking substrings of free text (error messages) with their digest.
Object keys are kept (structure is not secret; values are). Digests are domain-tagged sha256:
`TAG_PARAM_VALUE` for one value, `TAG_PARAM` for the whole argument object (`parameters_digest`). They
bind the receipt to the exact value without showing it; they do not hide low-entropy values (a 9-digit
SSN can be brute-forced from its digest), which is why such fields belong in `fields` only as a
minimum: digest mode is the setting for deployments whose arguments are themselves sensitive.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Protocol

from aarmor.canonical import TAG_PARAM, digest

__all__ = [
    "TAG_PARAM_VALUE",
    "RedactionSettings",
    "looks_like_credential",
    "parameters_digest",
    "redact_parameters",
    "redact_text",
    "value_digest",
]

#: domain tag of the digest of ONE redacted value (distinct from `TAG_PARAM`, the whole argument object)
TAG_PARAM_VALUE = "aarmor.param.value.v1"

_CREDENTIAL = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----)?"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bsk-[A-Za-z0-9_-]{16,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{30,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}",
    re.S,
)
_MODES = ("clear", "digest")


class RedactionSettings(Protocol):
    """What redaction needs: `aarmor.config.RedactionConfig` satisfies it."""

    @property
    def mode(self) -> str: ...
    @property
    def fields(self) -> tuple[str, ...]: ...
    @property
    def allow(self) -> tuple[str, ...]: ...


def looks_like_credential(text: str) -> bool:
    """True if `text` contains a credential-shaped substring (see module docstring)."""
    return _CREDENTIAL.search(text) is not None


def value_digest(value: Any) -> dict[str, str]:
    """`{"digest": "sha256:..."}`: what a redacted value becomes.

    Raises:
        InputError: `value` is not JSON.
    """
    return {"digest": digest(TAG_PARAM_VALUE, value)}


def parameters_digest(params: Mapping[str, Any]) -> str:
    """Digest (`TAG_PARAM`) of the whole argument object: binds a receipt to the exact parameters.

    Equal to `Action.parameters_digest` computed at normalisation.

    Raises:
        InputError: `params` is not JSON.
    """
    return digest(TAG_PARAM, params)


def redact_text(text: str) -> str:
    """`text` with every credential-shaped substring replaced by `[redacted sha256:...]`."""
    if not looks_like_credential(text):
        return text
    return _CREDENTIAL.sub(lambda m: f"[redacted {digest(TAG_PARAM_VALUE, m.group(0))}]", text)


def _key(name: str) -> str:
    return name.casefold().replace("-", "_")


@lru_cache(maxsize=64)
def _keyset(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_key(n) for n in names)  # hot path: once per configuration, not per call


def redact_parameters(params: Mapping[str, Any], redaction: RedactionSettings) -> dict[str, Any]:
    """The view of `params` that may be stored in receipts and the log (see module docstring).

    Raises:
        ValueError: unknown redaction mode.
        InputError: a value is not JSON.
    """
    if redaction.mode not in _MODES:
        raise ValueError(f"redaction mode `{redaction.mode}` is not one of {', '.join(_MODES)}")
    fields, allow = _keyset(tuple(redaction.fields)), _keyset(tuple(redaction.allow))
    return _walk(params, redaction.mode == "digest", fields, allow)  # type: ignore[no-any-return]


def _walk(value: Any, digest_all: bool, fields: frozenset[str], allow: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = _key(k)
            if key in fields:  # AARM threat 10: a named secret never appears, at any depth
                out[k] = value_digest(v)
            elif digest_all and key in allow:
                out[k] = _walk(v, False, fields, allow)
            else:
                out[k] = _walk(v, digest_all, fields, allow)
        return out
    if isinstance(value, list | tuple):
        return [_walk(v, digest_all, fields, allow) for v in value]
    if digest_all or (isinstance(value, str) and looks_like_credential(value)):
        return value_digest(value)
    return value
