"""Signed receipts (AARM 2.7, R5): build, sign, chain, verify offline, reconstruct timelines.

Public API:
- `Keyring.open(dir, *, create=True)`: Ed25519 keys (a development key is generated on first use with
  `DevelopmentKeyWarning`), `rotate()`, `export_public("pem"|"jwks")`, `public_keys()`;
  `load_public_keys(path)` reads a JWKS or PEM bundle for offline verification.
- `build_receipt(...)` the unsigned body; `ReceiptSigner(keyring).sign(body) -> ReceiptRecord`.
- `verify_receipts(receipts, public_keys) -> VerificationReport` (signatures + chain links);
  `verify_records(records, public_keys)` also checks the store's index columns.
- `build_timeline(receipts, public_keys) -> Timeline`: forensic rows, failed receipts flagged.
- `redact_parameters`, `parameters_digest`, `redact_text`: the parameter view receipts and logs store.
See docs/receipts.md.
"""

from aarmor.receipts.build import RECEIPT_KINDS, RECEIPT_VERSION, build_receipt
from aarmor.receipts.keys import DevelopmentKeyWarning, Keyring, load_public_keys
from aarmor.receipts.redact import (
    RedactionSettings,
    looks_like_credential,
    parameters_digest,
    redact_parameters,
    redact_text,
)
from aarmor.receipts.sign import ReceiptSigner, receipt_hash, signing_bytes
from aarmor.receipts.timeline import Timeline, TimelineEvent, build_timeline
from aarmor.receipts.verify import ReceiptFailure, VerificationReport, verify_receipts, verify_records

__all__ = [
    "RECEIPT_KINDS",
    "RECEIPT_VERSION",
    "DevelopmentKeyWarning",
    "Keyring",
    "ReceiptFailure",
    "ReceiptSigner",
    "RedactionSettings",
    "Timeline",
    "TimelineEvent",
    "VerificationReport",
    "build_receipt",
    "build_timeline",
    "load_public_keys",
    "looks_like_credential",
    "parameters_digest",
    "receipt_hash",
    "redact_parameters",
    "redact_text",
    "signing_bytes",
    "verify_receipts",
    "verify_records",
]
