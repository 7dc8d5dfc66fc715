"""Parameter redaction for receipts and the context log (AARM threat 10: no side channel).

Rules:
- mode `clear`: values are kept, except under keys named in `fields` (at any depth, case-insensitive),
  which become `{"digest": "sha256:..."}`.
- mode `digest`: every leaf value becomes a digest, except under keys named in `allow`.
- In both modes a string that looks like a credential (PEM private key, JWT, AWS access key id,
  `sk-`/`ghp_`/`xox?-` tokens) is digested whatever its key.
Digests are domain-tagged sha256 (`TAG_PARAM`). They bind the receipt to the exact value without
showing it. They do not hide low-entropy values (a 9-digit SSN can be brute-forced), which is why such
fields should stay listed in `fields`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aarmor.canonical import TAG_PARAM, digest

__all__ = ["looks_like_credential", "parameters_digest", "redact_parameters", "value_digest"]

_CREDENTIAL = re.compile(
    r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bsk-[A-Za-z0-9_-]{16,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"
)


def looks_like_credential(text: str) -> bool:
    return _CREDENTIAL.search(text) is not None


def value_digest(value: Any) -> dict[str, str]:
    return {"digest": digest(TAG_PARAM, value)}


def parameters_digest(params: Mapping[str, Any]) -> str:
    """Digest of the whole argument object: binds a receipt to the exact parameters."""
    return digest(TAG_PARAM, params)


def redact_parameters(params: Mapping[str, Any], redaction: Any) -> dict[str, Any]:
    """The view of `params` that may be stored in receipts and the log (see module docstring)."""
    fields = frozenset(f.casefold() for f in redaction.fields)
    allow = frozenset(f.casefold() for f in redaction.allow)
    return _walk(params, redaction.mode == "digest", fields, allow)  # type: ignore[no-any-return]


def _walk(value: Any, digest_all: bool, fields: frozenset[str], allow: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = k.casefold()
            if key in fields or (digest_all and key not in allow and not isinstance(v, Mapping | list | tuple)):
                out[k] = value_digest(v)
            elif digest_all and key in allow:
                out[k] = _walk(v, False, fields, allow)
            else:
                out[k] = _walk(v, digest_all, fields, allow)
        return out
    if isinstance(value, list | tuple):
        return [value_digest(v) if digest_all and not isinstance(v, Mapping | list | tuple)
                else _walk(v, digest_all, fields, allow) for v in value]
    if isinstance(value, str) and looks_like_credential(value):
        return value_digest(value)
    return value
