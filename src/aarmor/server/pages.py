"""The approver page: log in with an approver token, see pending approvals and deferrals live, decide.

Rules:
- Login takes an approver (or admin) token once and keeps only its id in the signed session cookie; every
  request re-reads the token record, so a revoked token ends the web session at the next request.
- Every POST form carries the session's CSRF token (`csrf_token`), compared in constant time; a POST
  without it, or with another session's, is 403 and changes nothing. The cookie is SameSite=Strict too.
- Forms are `application/x-www-form-urlencoded`, read under a byte and field limit.
- Templates autoescape everything; values shown as JSON are escaped text inside `<pre>`.
- Approvals and deferrals decided here are recorded under the token's name, channel "web"; refusals
  (self-approval, not an approver, already decided, expired) are shown as readable messages.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from aarmor.errors import AuthError, InputError, NotFound, Refused
from aarmor.server.desks import approvals, deferrals, receipts_of_action
from aarmor.server.http import ApiError, read_body, status_for
from aarmor.store import ApiToken
from aarmor.tokens import authenticate

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.guard import Guard
    from aarmor.server.app import ServerState

__all__ = ["Pages", "routes"]

_HERE = Path(__file__).parent
_CONTEXT_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
FORM_LIMIT = 256 * 1024
HISTORY_ITEMS = 100
_REFUSAL_TITLES = {
    "self_approval": "You cannot decide on your own action",
    "not_an_approver": "You are not an approver of this request",
    "not_pending": "This request is no longer pending",
    "expired": "This request has expired",
    "bad_field": "That context is not what this deferral needs",
    "busy": "The request changed while you were deciding; try again",
}


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _remaining(deadline: Any) -> str:
    try:
        left = (datetime.fromisoformat(str(deadline)) - datetime.now(UTC)).total_seconds()
    except ValueError:
        return ""
    if left <= 0:
        return "past its deadline"
    if left < 120:
        return f"{int(left)} s left"
    if left < 7200:
        return f"{int(left // 60)} min left"
    return f"{left / 3600:.1f} h left"


class Pages:
    """Template rendering and the web session of the approver page."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.env = Environment(loader=FileSystemLoader(_HERE / "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True))
        self.env.filters["pretty"] = _pretty
        self.env.filters["remaining"] = _remaining

    def render(self, request: Request, name: str, *, code: int = 200, headers: Mapping[str, str] | None = None,
               **context: Any) -> HTMLResponse:
        session = request.scope.get("session")
        flash = session.pop("flash", None) if session is not None else None
        html = self.env.get_template(name).render(csrf=_csrf(request) if session is not None else "",
                                                  flash=flash, **context)
        return HTMLResponse(html, status_code=code, headers=dict(headers or {}))

    def error_page(self, request: Request, status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> HTMLResponse:
        user = request.scope.get("aarmor_user")
        return self.render(request, "error.html", code=status, headers=headers, status=status, message=message,
                           user=user)

    def user(self, request: Request) -> ApiToken | None:
        """The approver logged in on this cookie session, if the token still exists and is not revoked."""
        tid = request.session.get("tid")
        if not isinstance(tid, str):
            return None
        tok = next((t for t in self.guard.store.token_list() if t.token_id == tid), None)
        if tok is None or tok.revoked_at is not None or tok.role not in ("approver", "admin"):
            request.session.clear()
            return None
        request.scope["aarmor_user"] = tok
        return tok


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form, after the CSRF check (403 when its token is missing or not this session's)."""
    raw = await read_body(request, FORM_LIMIT)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "bad_form", f"unreadable form: {exc}") from exc
    form = dict(pairs)
    expected = request.session.get("csrf")
    given = form.get("csrf_token", "")
    if not isinstance(expected, str) or not given or not hmac.compare_digest(expected.encode(), given.encode()):
        raise ApiError(403, "csrf", "the form's CSRF token is missing or does not match this session; "
                       "reload the page and try again")
    return form


def _pages(request: Request) -> Pages:
    st: ServerState = request.app.state.aarmor
    return st.pages


async def _login_required(request: Request) -> ApiToken:
    user = await run_in_threadpool(_pages(request).user, request)
    if user is None:
        raise _Redirect("/login")
    return user


class _Redirect(Exception):
    def __init__(self, to: str) -> None:
        self.to = to


def _redirect(to: str) -> Response:
    return RedirectResponse(to, status_code=303)


def _guarded(handler: Any) -> Any:
    """Turn `_Redirect` into a 303 (a page that needs a login sends you to it)."""

    async def endpoint(request: Request) -> Response:
        try:
            response: Response = await handler(request)
            return response
        except _Redirect as r:
            return _redirect(r.to)

    endpoint.__name__ = handler.__name__
    return endpoint


# --- login / logout ---------------------------------------------------------------------------------
async def login_form(request: Request) -> Response:
    return _pages(request).render(request, "login.html", user=None, error=None)


async def login(request: Request) -> Response:
    form = await _form(request)
    pages = _pages(request)
    try:
        tok = await run_in_threadpool(authenticate, pages.guard.store, form.get("token", "").strip(),
                                      roles=("approver",))
    except AuthError as exc:
        return pages.render(request, "login.html", code=401, user=None, error=str(exc))
    request.session.clear()
    request.session.update({"tid": tok.token_id, "csrf": secrets.token_urlsafe(32)})
    return _redirect("/")


async def logout_form(request: Request) -> Response:
    user = await run_in_threadpool(_pages(request).user, request)
    if user is None:
        return _redirect("/login")
    return _pages(request).render(request, "logout.html", user=user)


async def logout(request: Request) -> Response:
    await _form(request)
    request.session.clear()
    return _redirect("/login")


# --- inbox and history ------------------------------------------------------------------------------
def _pending(guard: Guard) -> dict[str, Any]:
    apr = sorted(approvals(guard).list(status="pending"), key=lambda i: str(i.get("deadline")))
    dfr = sorted(deferrals(guard).list(status="pending"), key=lambda i: str(i.get("deadline")))
    return {"approvals": apr, "deferrals": dfr, "now": datetime.now(UTC).strftime("%H:%M:%S UTC")}


async def inbox(request: Request) -> Response:
    user = await _login_required(request)
    pages = _pages(request)
    data = await run_in_threadpool(_pending, pages.guard)
    return pages.render(request, "inbox.html", user=user, **data)


async def inbox_items(request: Request) -> Response:
    pages = _pages(request)
    user = await run_in_threadpool(pages.user, request)
    if user is None:
        return HTMLResponse("", status_code=401)
    data = await run_in_threadpool(_pending, pages.guard)
    return pages.render(request, "_items.html", user=user, **data)


def _history(guard: Guard) -> list[dict[str, Any]]:
    items = [i for i in approvals(guard).list(status=None) if i.get("status") != "pending"]
    items += [i for i in deferrals(guard).list(status=None) if i.get("status") != "pending"]
    items.sort(key=lambda i: str(i.get("created_at")), reverse=True)
    items = items[:HISTORY_ITEMS]
    for item in items:
        found = receipts_of_action(guard.store, str(item.get("session_id")), str(item.get("action_id")))
        item["receipt_ids"] = [r.receipt_id for r in found]
    return items


async def history(request: Request) -> Response:
    user = await _login_required(request)
    pages = _pages(request)
    items = await run_in_threadpool(_history, pages.guard)
    return pages.render(request, "history.html", user=user, items=items)


# --- one approval -----------------------------------------------------------------------------------
async def approval_page(request: Request, *, status: int = 200, error: tuple[str, str] | None = None) -> Response:
    user = await _login_required(request)
    pages = _pages(request)
    item = await run_in_threadpool(approvals(pages.guard).get, str(request.path_params["id"]))
    receipts = await run_in_threadpool(lambda: [r.receipt_id for r in receipts_of_action(
        pages.guard.store, str(item.get("session_id")), str(item.get("action_id")))])
    return pages.render(request, "approval.html", code=status, user=user, item=item, error=error, receipts=receipts)


async def approval_decide(request: Request) -> Response:
    user = await _login_required(request)
    form = await _form(request)
    choice = form.get("decision")
    if choice not in ("approve", "deny"):
        return await approval_page(request, status=422, error=("Choose Approve or Deny", ""))
    reason = form.get("reason", "").strip()
    if not reason:
        return await approval_page(request, status=422, error=("A decision needs a reason", ""))
    desk = approvals(_pages(request).guard)
    rid = str(request.path_params["id"])
    try:
        await run_in_threadpool(lambda: desk.decide(rid, approver=user.name, granted=choice == "approve",
                                                    reason=reason, channel="web"))
    except Refused as exc:
        return await approval_page(request, status=status_for(exc)[0],
                                   error=(_REFUSAL_TITLES.get(exc.code, "Refused"), str(exc)))
    except NotFound:
        raise
    except InputError as exc:
        return await approval_page(request, status=422, error=("The decision was not accepted", str(exc)))
    request.session["flash"] = f"{'Approved' if choice == 'approve' else 'Denied'} {rid}."
    return _redirect(f"/approvals/{rid}")


# --- one deferral -----------------------------------------------------------------------------------
def _fields(item: dict[str, Any]) -> list[str]:
    """The suppliable context names (`context.x` -> `x`) a deferral waits for."""
    out = []
    for path in item.get("context_needed") or []:
        name = str(path).removeprefix("context.")
        if _CONTEXT_NAME.fullmatch(name) and name not in out:
            out.append(name)
    return out


async def deferral_page(request: Request, *, status: int = 200, error: tuple[str, str] | None = None) -> Response:
    user = await _login_required(request)
    pages = _pages(request)
    item = await run_in_threadpool(deferrals(pages.guard).get, str(request.path_params["id"]))
    receipts = await run_in_threadpool(lambda: [r.receipt_id for r in receipts_of_action(
        pages.guard.store, str(item.get("session_id")), str(item.get("action_id")))])
    return pages.render(request, "deferral.html", code=status, user=user, item=item, error=error, receipts=receipts,
                        fields=_fields(item))


def _value(text: str) -> Any:
    """A form value: JSON when it parses as JSON (true, 42, "x", [..]), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


async def deferral_supply(request: Request) -> Response:
    user = await _login_required(request)
    form = await _form(request)
    fields = {k.removeprefix("field:"): _value(v) for k, v in form.items() if k.startswith("field:") and v.strip()}
    if not fields:
        return await deferral_page(request, status=422, error=("Fill in at least one field", ""))
    desk = deferrals(_pages(request).guard)
    did = str(request.path_params["id"])
    try:
        await run_in_threadpool(lambda: desk.supply(did, fields, by=user.name, channel="web"))
    except Refused as exc:
        return await deferral_page(request, status=status_for(exc)[0],
                                   error=(_REFUSAL_TITLES.get(exc.code, "Refused"), str(exc)))
    except NotFound:
        raise
    except InputError as exc:
        return await deferral_page(request, status=422, error=("The context was not accepted", str(exc)))
    request.session["flash"] = f"Context supplied to {did}: {', '.join(sorted(fields))}."
    return _redirect(f"/deferrals/{did}")


def routes() -> list[Route]:
    return [
        Route("/login", _guarded(login_form), methods=["GET"]),
        Route("/login", _guarded(login), methods=["POST"]),
        Route("/logout", _guarded(logout_form), methods=["GET"]),
        Route("/logout", _guarded(logout), methods=["POST"]),
        Route("/", _guarded(inbox), methods=["GET"]),
        Route("/inbox/items", _guarded(inbox_items), methods=["GET"]),
        Route("/history", _guarded(history), methods=["GET"]),
        Route("/approvals/{id}", _guarded(approval_page), methods=["GET"]),
        Route("/approvals/{id}", _guarded(approval_decide), methods=["POST"]),
        Route("/deferrals/{id}", _guarded(deferral_page), methods=["GET"]),
        Route("/deferrals/{id}", _guarded(deferral_supply), methods=["POST"]),
    ]
