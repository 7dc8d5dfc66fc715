"""The approver page in a real browser (Debian chromium driven by Playwright), plus CSRF and cookie checks.

The agent here is the Python SDK in the test process: `session.invoke` blocks in a thread while a human
decides in the browser; the test then checks what the blocked call did and what the receipt recorded.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aarmor import ActionDenied, Identity
from tests.server.conftest import Running, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ALICE = Identity(human="alice@company.com", service="billing-svc", agent="billing-agent", roles=["analyst"],
                 scopes=["payments"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(10_000)
    pg = context.new_page()
    yield pg
    context.close()


class Agent:
    """An agent session in a thread: one prior action, then the action under test (which may block)."""

    def __init__(self, srv: Running, tool: str, arguments: dict[str, Any], request: str) -> None:
        self.result: dict[str, Any] = {}
        self.ran: list[dict[str, Any]] = []

        def run() -> None:
            try:
                with srv.guard.session(identity=ALICE, original_request=request) as s:
                    s.invoke("db.query", {"sql": "SELECT * FROM invoices", "limit": 5}, lambda a: [{"id": 42}])
                    try:
                        self.result["value"] = s.invoke(tool, arguments, self._execute)
                    except ActionDenied as exc:
                        self.result["denied"] = exc
            except Exception as exc:  # a failed test closed the guard under the call: reported, not raised
                self.result["error"] = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def _execute(self, arguments: dict[str, Any]) -> str:
        self.ran.append(arguments)
        return "done"

    def join(self) -> dict[str, Any]:
        self.thread.join(20)
        assert not self.thread.is_alive(), "the agent's call is still blocked"
        return self.result


def _login(page: Any, srv: Running, secret: str) -> None:
    page.goto(srv.url + "/login")
    page.fill("#token", secret)
    page.click("button[type=submit]")
    page.wait_for_url(srv.url + "/")
    assert page.inner_text("h1") == "Waiting for a decision"


def _receipt_of(srv: Running, action_id: str) -> dict[str, Any]:
    for sid in srv.guard.store.log_sessions():
        for r in srv.guard.store.read_receipts(sid):
            if r.action_id == action_id:
                body: dict[str, Any] = r.body
                return body
    raise AssertionError(f"no receipt for {action_id}")


def test_approver_sees_the_request_arrive_live_and_approves_it(serve: Any, page: Any) -> None:
    srv = serve()
    bob = srv.token("bob@company.com", "approver")
    _login(page, srv, bob)
    assert "No approval is waiting" in page.inner_text("#inbox")
    page.evaluate("window.__not_reloaded = true")

    agent = Agent(srv, "payment.send", {"to": "acme <b>corp</b>", "amount": 5000}, "pay <script>x()</script> acme")
    row = page.wait_for_selector("tr.approval")  # appears by itself: no reload, no click
    assert page.evaluate("window.__not_reloaded") is True
    assert "STEP_UP" in row.inner_text() and "payment.send" in row.inner_text()

    row.query_selector("a").click()
    page.wait_for_selector("form.decide")
    text = page.inner_text("main")
    # the full context AARM 2.5 requires, escaped as text
    for expected in ("pay <script>x()</script> acme", '"to": "acme <b>corp</b>"', '"amount": 5000',
                     "alice@company.com", "billing-svc", "billing-agent", "analyst", "payments", "HIGH",
                     "big-payment", "http-test", "payments over 1000 need finance", "db", "query", "ALLOW",
                     "Approvers: finance"):
        assert expected in text, expected
    assert page.query_selector("main script") is None and page.query_selector("main b") is None

    page.fill("#reason", "invoice 42 matches the PO")
    page.click("button.approve")
    page.wait_for_selector(".flash")
    assert page.inner_text("#status") in ("approved", "consumed")  # consumed once the waiting call used it
    assert "Approved by bob@company.com" in page.inner_text("section.decided")

    result = agent.join()
    assert result == {"value": "done"} and agent.ran == [{"to": "acme <b>corp</b>", "amount": 5000}]
    [item] = srv.guard.approvals.list(status=None)
    receipt = _receipt_of(srv, item["action_id"])
    assert receipt["approval"]["approver"] == "bob@company.com" and receipt["approval"]["granted"] is True
    assert receipt["approval"]["reason"] == "invoice 42 matches the PO"

    page.click("text=History")
    assert receipt["receipt_id"] in page.inner_text("table.items")


def test_approver_denies_in_the_browser_and_the_call_is_denied(serve: Any, page: Any) -> None:
    srv = serve()
    _login(page, srv, srv.token("bob@company.com", "approver"))
    agent = Agent(srv, "payment.send", {"to": "unknown", "amount": 9000}, "pay someone")
    page.wait_for_selector("tr.approval a").click()
    page.fill("#reason", "payee unknown")
    page.click("button.deny")
    page.wait_for_selector(".flash")
    assert page.inner_text("#status") == "denied"
    result = agent.join()
    assert isinstance(result.get("denied"), ActionDenied) and agent.ran == []
    assert "payee unknown" in result["denied"].decision.reason
    receipt = srv.guard.store.get_receipt(result["denied"].receipt_id).body
    assert receipt["approval"]["granted"] is False and receipt["approval"]["approver"] == "bob@company.com"


def test_deferral_page_supplies_context_and_the_action_runs(serve: Any, page: Any) -> None:
    srv = serve()
    _login(page, srv, srv.token("ops@company.com", "approver"))
    agent = Agent(srv, "credentials.rotate", {"key": "billing"}, "rotate the billing key")
    page.wait_for_selector("tr.deferral a").click()
    page.fill("#field-maintenance_window", "open")
    page.click("form.supply button")
    page.wait_for_selector(".flash")
    assert agent.join() == {"value": "done"}


# --- without a browser: CSRF, cookies, refusals --------------------------------------------------------------
def _csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the form"
    return m.group(1)


@contextlib.contextmanager
def _web(srv: Running, secret: str) -> Iterator[httpx.Client]:
    """A logged-in web session (cookie) as a plain HTTP client."""
    with httpx.Client(base_url=srv.url, follow_redirects=False, timeout=20) as c:
        r = c.post("/login", data={"csrf_token": _csrf(c.get("/login").text), "token": secret})
        assert r.status_code == 303 and r.headers["location"] == "/"
        yield c


def _pending_approval(srv: Running) -> tuple[Agent, str]:
    agent = Agent(srv, "payment.send", {"to": "acme", "amount": 2000}, "pay acme")
    item = wait_for(lambda: srv.guard.approvals.list(), what="a pending approval")[0]
    return agent, str(item["id"])


def test_posts_without_the_sessions_csrf_token_are_refused(serve: Any) -> None:
    srv = serve()
    bob = srv.token("bob@company.com", "approver")
    with httpx.Client(base_url=srv.url, follow_redirects=False) as anon:
        anon.get("/login")
        r = anon.post("/login", data={"token": bob})
        assert r.status_code == 403 and "CSRF" in r.text
    agent, rid = _pending_approval(srv)
    with _web(srv, bob) as c, _web(srv, srv.token("carol@company.com", "approver")) as other:
        for data in ({"decision": "approve", "reason": "ok"},
                     {"decision": "approve", "reason": "ok", "csrf_token": ""},
                     {"decision": "approve", "reason": "ok", "csrf_token": _csrf(other.get("/").text)}):
            r = c.post(f"/approvals/{rid}", data=data)
            assert r.status_code == 403 and "CSRF" in r.text, data
        assert srv.guard.approvals.get(rid)["status"] == "pending"  # nothing changed
        ok = c.post(f"/approvals/{rid}", data={"decision": "deny", "reason": "test over",
                                               "csrf_token": _csrf(c.get(f"/approvals/{rid}").text)})
        assert ok.status_code == 303
    assert "denied" in agent.join()


def test_session_cookie_is_httponly_samesite_strict_and_ends_with_the_token(serve: Any) -> None:
    srv = serve()
    bob = srv.token("bob@company.com", "approver")
    with httpx.Client(base_url=srv.url, follow_redirects=False) as c:
        page = c.get("/login")
        r = c.post("/login", data={"csrf_token": _csrf(page.text), "token": bob})
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and bob.lower() not in cookie
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert c.get("/").status_code == 200
        [tok] = [t for t in srv.guard.store.token_list() if t.name == "bob@company.com"]
        srv.guard.store.token_revoke(tok.token_id, "2030-01-01T00:00:00Z")
        gone = c.get("/")
        assert gone.status_code == 303 and gone.headers["location"] == "/login"
        assert c.get("/inbox/items").status_code == 401
    with httpx.Client(base_url=srv.url, follow_redirects=False) as c:
        page = c.get("/login")
        agent_token = srv.token("agent-x", "agent")
        r = c.post("/login", data={"csrf_token": _csrf(page.text), "token": agent_token})
        assert r.status_code == 401 and "role" in r.text  # agents cannot use the page
        assert c.get("/").status_code == 303


def test_refusals_are_shown_as_readable_messages(serve: Any) -> None:
    srv = serve()
    agent, rid = _pending_approval(srv)
    with _web(srv, srv.token("alice@company.com", "approver")) as alice:
        r = alice.post(f"/approvals/{rid}", data={"decision": "approve", "reason": "mine",
                                                  "csrf_token": _csrf(alice.get(f"/approvals/{rid}").text)})
        assert r.status_code == 403 and "You cannot decide on your own action" in r.text
    with _web(srv, srv.token("mallory@company.com", "approver")) as mallory:
        r = mallory.post(f"/approvals/{rid}", data={"decision": "approve", "reason": "sure",
                                                    "csrf_token": _csrf(mallory.get("/").text)})
        assert r.status_code == 403 and "You are not an approver of this request" in r.text
    with _web(srv, srv.token("bob@company.com", "approver")) as bob:
        csrf = _csrf(bob.get("/").text)
        assert bob.post(f"/approvals/{rid}", data={"decision": "deny", "reason": "no", "csrf_token": csrf}
                        ).status_code == 303
        r = bob.post(f"/approvals/{rid}", data={"decision": "approve", "reason": "yes", "csrf_token": csrf})
        assert r.status_code == 409 and "This request is no longer pending" in r.text
        assert bob.get("/approvals/apr_missing").status_code == 404
    assert "denied" in agent.join()
