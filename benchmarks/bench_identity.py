"""Cost of identity verification per decision (AARM R6), beside the claimed identity in the same run.

A token's (and a delegation link's) signature is verified on its first use; a session presents the same
ones at every decision, and those are then checked for time, issuer, audience and chain without repeating
the signature check. Rows: a token's first use, then the identity verifier alone on a token already seen,
then `session.evaluate` (a whole decision without the commits) for
- a claimed identity (mode `enforce`: nothing to verify): the baseline;
- a bearer token (mode `jwt`) signed RS256, ES256 or EdDSA, checked against a JWKS file;
- an EdDSA token plus a signed delegation chain of 1 and 3 links.

    .venv/bin/python benchmarks/bench_identity.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from _timing import HEADER, Result, measure
from tests.identity.conftest import AUDIENCE, ISSUER

from aarmor import Guard, Identity
from aarmor.config import load_config
from aarmor.identity.delegation import links_from_tokens

ARGS = {"to": "bob@company.com", "subject": "Q3", "body": "The summary you asked for."}


def _signers() -> dict[str, Any]:
    from tests.identity.conftest import Signer  # real keys and PyJWT tokens, shared with the tests

    return {alg: Signer(alg, f"k-{alg}") for alg in ("RS256", "ES256", "EdDSA")}


def _guard(tmp: Path, mode: str, jwks: Path | None) -> Guard:
    over: dict[str, Any] = {"policy": "builtin:default", "store": f"sqlite:///{tmp / f'{mode}.db'}",
                            "keys": str(tmp / "keys"), "identity_mode": mode}
    if jwks is not None:
        over["identity_jwt"] = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(jwks)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Guard(load_config(**over))


def _chain(guard: Guard, token: str, depth: int) -> tuple[str, ...]:
    identity = Identity(agent="a0", token=token)
    chain: tuple[str, ...] = ()
    for i in range(depth):
        with guard.session(identity=identity, original_request="Email Bob the Q3 summary") as s:
            chain = s.delegate(f"a{i + 1}", ["email:send"], ttl=3600)
        identity = Identity(agent=f"a{i + 1}", token=token, delegation=links_from_tokens(chain))
    return chain


def rows(n: int = 3000) -> list[Result]:
    out: list[Result] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        signers = _signers()
        jwks = tmp / "jwks.json"
        jwks.write_text(json.dumps({"keys": [s.jwk for s in signers.values()]}))
        claimed_guard, jwt_guard = _guard(tmp, "enforce", None), _guard(tmp, "jwt", jwks)
        now = datetime.now(UTC)
        exp = int(time.time()) + 7200
        tokens = {alg: s.token(scope="email:send db:read", exp=exp) for alg, s in signers.items()}
        cases: list[tuple[str, Guard, Identity]] = [
            ("claimed identity (mode enforce)", claimed_guard, Identity(human="alice@company.com", agent="a0"))]
        for alg in ("RS256", "ES256", "EdDSA"):
            cases.append((f"JWT {alg}", jwt_guard, Identity(agent="a0", token=tokens[alg])))
        for depth in (1, 3):
            chain = _chain(jwt_guard, tokens["EdDSA"], depth)
            cases.append((f"JWT EdDSA + {depth}-link delegation chain", jwt_guard,
                          Identity(agent=f"a{depth}", token=tokens["EdDSA"], delegation=links_from_tokens(chain))))
        for alg in ("RS256", "ES256", "EdDSA"):  # a token's first use: its signature is verified
            fresh = iter([Identity(agent="a0", token=signers[alg].token(exp=exp, jti=str(i)))
                          for i in range(n + 200)])
            verifier = jwt_guard.mediator._verifier
            out.append(measure(f"verify: JWT {alg}, first use of each token", lambda v=verifier, f=fresh:
                               v.verify(next(f), now=now), n=n))
        for name, guard, identity in cases:  # later uses (every decision of a session): checked, not re-verified
            verifier = guard.mediator._verifier
            out.append(measure(f"verify: {name}", lambda v=verifier, i=identity: v.verify(i, now=now), n=n))
        for name, guard, identity in cases:
            with guard.session(identity=identity) as s:
                out.append(measure(f"evaluate: {name}", lambda s=s: s.evaluate("email.send", ARGS,
                                                                              operation="send"), n=n))
        claimed_guard.close()
        jwt_guard.close()
    return out


def run() -> list[Result]:
    return rows()


def main() -> None:
    print(HEADER)
    for r in run():
        print(r.row())


if __name__ == "__main__":
    main()
