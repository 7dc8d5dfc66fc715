"""A minimal MCP tool server (stdio, newline-delimited JSON-RPC) that checks the aarmor access token each
`tools/call` carries in `params._meta["aarmor/credential"]`, as a real tool server would.

Usage: python token_checking_server.py <credential key directory> <audience>
The tool `charge` answers with what the check found: the verified claims, or the refusal code.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from aarmor.credentials import CredentialError, verify_access_token
from aarmor.receipts import Keyring


def answer(req: dict[str, Any], keys_dir: str, audience: str) -> dict[str, Any] | None:
    method, params = req.get("method"), req.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}},
                "serverInfo": {"name": "token-checker", "version": "1"}}
    if method == "tools/list":
        return {"tools": [{"name": "charge", "description": "charge a card",
                           "inputSchema": {"type": "object", "properties": {"amount": {"type": "number"}}}}]}
    if method == "tools/call":
        token = (params.get("_meta") or {}).get("aarmor/credential")
        try:
            keys = Keyring.open(keys_dir, create=False).public_keys()
            claims = verify_access_token(token, keys=keys, audience=audience, scope="write",
                                         parameters=params.get("arguments") or {})
            found: dict[str, Any] = {"verified": True, "jti": claims.credential_id, "sub": claims.subject,
                                     "scope": list(claims.scope)}
        except CredentialError as exc:
            found = {"verified": False, "code": exc.code}
        return {"content": [{"type": "text", "text": json.dumps(found)}], "isError": False}
    if method == "ping":
        return {}
    return None


def main() -> None:
    keys_dir, audience = sys.argv[1], sys.argv[2]
    for line in sys.stdin:
        req = json.loads(line)
        if "id" not in req:
            continue  # a notification
        result = answer(req, keys_dir, audience)
        reply = {"jsonrpc": "2.0", "id": req["id"]}
        reply |= {"result": result} if result is not None else {"error": {"code": -32601, "message": "no method"}}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
