"""`/openapi.json` is accurate: every route is in it, every protected operation refuses anonymous calls with
401, and schemathesis (property-based, all checks, bounded) finds no 500 and no schema violation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from tests.server.conftest import Running, wait_for

BOB = Identity(human="carol@company.com", service="ops-svc", roles=["ops"])


def _routes(srv: Running) -> set[tuple[str, str]]:
    with srv.client() as c:
        doc = c.get("/openapi.json").json()
    return {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}


def test_every_api_route_is_documented_with_bearer_security(serve: Any) -> None:
    from starlette.routing import Route

    from aarmor.server import create_app

    srv = serve()
    app = create_app(srv.guard)
    # `{value:path}` is `{value}` in the document (the convertor only lets the value hold `/`)
    served = {(r.path.replace(":path}", "}"), m) for r in app.routes if isinstance(r, Route)
              and (r.path.startswith("/v1") or r.path in ("/healthz", "/readyz")) for m in (r.methods or ())
              if m != "HEAD"}
    assert served == _routes(srv)
    with srv.client() as c:
        doc = c.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.") and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, ops in doc["paths"].items():
        for op in ops.values():
            public = path in ("/healthz", "/readyz")
            assert (op["security"] == []) is public, path
            assert public or {"401", "403"} <= set(op["responses"]), path


def test_anonymous_calls_to_every_protected_operation_get_401(serve: Any) -> None:
    srv = serve()
    with srv.client() as c:
        doc = c.get("/openapi.json").json()
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if not op["security"]:
                    continue
                url = path.replace("{sid}", "sess_x").replace("{aid}", "act_x").replace("{id}", "x")
                r = c.request(method.upper(), url, json={})
                assert r.status_code == 401, (method, path, r.text)
                assert r.json()["error"]["code"] == "unauthorized"


def _blocked(srv: Running) -> list[threading.Thread]:
    """A pending approval and a pending deferral, so schemathesis reaches the desks with real ids."""

    def run(tool: str, args: dict[str, Any]) -> None:
        try:
            with srv.guard.session(identity=BOB, original_request="maintenance") as s:
                s.invoke(tool, args, lambda a: "ok")
        except (ActionDenied, Exception):  # released when the test ends (guard closed): fine
            pass

    threads = [threading.Thread(target=run, args=("payment.send", {"amount": 5000}), daemon=True),
               threading.Thread(target=run, args=("credentials.rotate", {"key": "k"}), daemon=True)]
    for t in threads:
        t.start()
    wait_for(lambda: srv.guard.approvals.list() and srv.guard.deferrals.list(), what="pending items")
    return threads


def test_schemathesis_finds_no_server_error_or_schema_violation(serve: Any, tmp_path: Path) -> None:
    srv = serve(outcome_timeout=1.0)
    admin = srv.token("admin@company.com", "admin")
    _blocked(srv)
    with srv.client(admin) as c:
        c.post("/v1/sessions", json={"identity": {"human": "dave@company.com"}})
    approval = srv.guard.approvals.list()[0]["id"]
    deferral = srv.guard.deferrals.list()[0]["id"]
    receipt = next(r.receipt_id for s in srv.guard.store.log_sessions() for r in srv.guard.store.read_receipts(s))
    (tmp_path / "schemathesis.toml").write_text(
        "[[operations]]\n"
        'include-path-regex = "^/v1/approvals/"\n'
        f'parameters = {{ id = "{approval}" }}\n'
        "[[operations]]\n"
        'include-path-regex = "^/v1/deferrals/"\n'
        f'parameters = {{ id = "{deferral}" }}\n'
        "[[operations]]\n"
        'include-path = "/v1/receipts/{id}"\n'
        f'parameters = {{ id = "{receipt}" }}\n')
    exe = Path(sys.executable).parent / "schemathesis"
    env = dict(os.environ, SCHEMATHESIS_HOOKS="", NO_COLOR="1")
    proc = subprocess.run(
        [str(exe), "--config-file", str(tmp_path / "schemathesis.toml"), "run", f"{srv.url}/openapi.json",
         "--checks", "all", "--max-examples", "5", "--no-shrink", "--request-timeout", "20",
         # one fixed seed in CI, as the hostile-input fuzzing (docs/hostile-input.md): a run is repeatable;
         # AARMOR_FUZZ_RANDOM=1 explores anew (that is how the U+001D reason below was found)
         *([] if os.environ.get("AARMOR_FUZZ_RANDOM") == "1" else ["--seed", "20261129"]),
         "-H", f"Authorization: Bearer {admin}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    # the run reached the real desks: the admin (not a finance approver) was refused and that was recorded
    refusals = srv.guard.approvals.get(approval)["refusals"]
    assert {r["code"] for r in refusals} <= {"not_an_approver", "not_pending", "expired"} and refusals


@pytest.mark.parametrize("reason", ["\u001d", "\u001c\u001f ", "\u0085", "\ufeff"])
def test_a_reason_of_only_separators_is_refused_by_the_schema_not_later(serve: Any, reason: str) -> None:
    """Found by schemathesis: "\u001d" matched the schema's "some non-space character" pattern (U+001D is
    not white space to pydantic's or ECMAScript's regex) and was then refused by the desk's own check
    (Python's `str.strip()` strips it) as an empty reason: a schema-valid request answered 422 late. The
    schema now says what the desk checks."""
    srv = serve()
    admin = srv.token("admin@company.com", "admin")
    _blocked(srv)
    approval = srv.guard.approvals.list()[0]["id"]
    with srv.client(admin) as c:
        r = c.post(f"/v1/approvals/{approval}/approve", json={"reason": reason})
    assert r.status_code == 422 and "reason" in r.text
    assert "should match pattern" in r.text  # refused by the schema, not later by the desk ("needs a reason")
