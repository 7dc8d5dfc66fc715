"""Signed receipts (AARM 2.7, R5): build, sign, chain and verify offline.

Public API:
- `Keyring.open(dir)`: Ed25519 keys (generated on first use with `DevelopmentKeyWarning`), `rotate()`,
  `export_public("pem"|"jwks")`; `load_public_keys(path)` for offline verification.
- `build_receipt(...)` the unsigned body; `ReceiptSigner(keyring).sign(body) -> ReceiptRecord`.
- `verify_receipts(receipts, public_keys) -> VerificationReport` (signatures + chain links).
- `redact_parameters`, `parameters_digest`: the parameter view receipts and logs store.
See docs/receipts.md.
"""

from aarmor.receipts.build import RECEIPT_KINDS, RECEIPT_VERSION, build_receipt
from aarmor.receipts.keys import DevelopmentKeyWarning, Keyring, load_public_keys
from aarmor.receipts.redact import looks_like_credential, parameters_digest, redact_parameters
from aarmor.receipts.sign import ReceiptSigner, receipt_hash, signing_bytes
from aarmor.receipts.verify import ReceiptFailure, VerificationReport, verify_receipts

__all__ = [
    "RECEIPT_KINDS",
    "RECEIPT_VERSION",
    "DevelopmentKeyWarning",
    "Keyring",
    "ReceiptFailure",
    "ReceiptSigner",
    "VerificationReport",
    "build_receipt",
    "load_public_keys",
    "looks_like_credential",
    "parameters_digest",
    "receipt_hash",
    "redact_parameters",
    "signing_bytes",
    "verify_receipts",
]
