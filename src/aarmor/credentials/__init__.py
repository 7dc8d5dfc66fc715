"""Just-in-time credentials (AARM R9): per mediated action, a credential scoped to its operation.

Public API:
- `current_credential()`: inside a tool the mediator runs, the `Credential` minted for this action
  (`kind`, `credential_id`, `scope`, `expires_at`, and the secret: `.token` or `.dsn`).
- `verify_access_token(token, keys=..., audience=..., scope=..., parameters=...)`: the check a tool
  server runs on an access token; `AccessTokenClaims` is what it returns.
- `CredentialBroker`: built by `Guard` from the `credentials` configuration (`guard.credentials`).
- `CredentialError`: issuance or verification failed; `.code` says why.
See docs/credentials.md.
"""

from aarmor.credentials.access_token import TOKEN_ERRORS, AccessTokenClaims, verify_access_token
from aarmor.credentials.broker import CredentialBroker
from aarmor.credentials.model import Credential, CredentialError, current_credential

__all__ = [
    "TOKEN_ERRORS",
    "AccessTokenClaims",
    "Credential",
    "CredentialBroker",
    "CredentialError",
    "current_credential",
    "verify_access_token",
]
