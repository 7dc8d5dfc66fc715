"""Outgoing notifications for approval requests (AARM 2.5 notifiers): generic JSON webhooks and Slack.

Rules this module enforces:
- `send()` never blocks and never raises on a delivery problem: it snapshots the view, enqueues one job
  per channel and returns. Each channel has its own bounded queue and daemon worker, so one slow or dead
  receiver never delays another. A full queue drops the job and reports the drop.
- Every (event, channel) delivery ends in exactly one `on_result` call: delivered, or finally failed.
- Retries only what may succeed later (connection errors, timeouts, HTTP 429 and 5xx), with capped
  exponential backoff and jitter; any other status is final at once. Redirects are never followed, so
  configured headers (tokens) never reach another host.
- INVARIANT: channel names, details and log lines never carry configured header values or URL secrets
  (the Slack webhook path, query strings, user info); every detail is scrubbed before it leaves.
- A link only opens the approver page, which requires a login; no link or button decides anything.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from aarmor.config import NotifierConfig

__all__ = ["EVENTS", "Notifications", "review_url", "slack_payload", "webhook_payload"]

logger = logging.getLogger("aarmor.notify")

EVENTS = ("approval_requested", "approval_escalated", "approval_decided")
OnResult = Callable[[str, str, str, bool, str], None]

QUEUE_SIZE = 1000  # jobs waiting per channel; more are dropped and reported
MAX_BACKOFF = 30.0  # seconds; also the cap on a receiver's Retry-After
PARAMS_CHARS = 500  # AARM 2.5: parameters JSON cut to 500 characters in Slack
_FIELD_CHARS = 300  # one Slack field value (Slack allows 2000)
_BODY_CHARS = 200  # response body kept in a failure detail
_REDACTED = "[redacted]"


def review_url(page_url: str, item_id: str) -> str:
    """The approver page for one item (login required there)."""
    return f"{page_url.rstrip('/')}/approvals/{quote(item_id, safe='')}"


def webhook_payload(event: str, view: dict[str, Any], *, page_url: str) -> dict[str, Any]:
    """The generic JSON body: the whole view, the review link and an idempotency key."""
    item_id = _s(_d(view).get("id"))
    return {"event": event, "item": view, "links": {"review": review_url(page_url, item_id)},
            "idempotency_key": f"{item_id}:{event}"}


def slack_payload(event: str, view: dict[str, Any], *, page_url: str,
                  channel_mapping: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """An Incoming-Webhook message with Block Kit (AARM 2.5). Missing keys never raise.

    Every piece of request data is escaped for Slack (`&`, `<`, `>`), so a parameter or reason cannot
    inject links or mentions such as `<!channel>`.
    """
    v = _d(view)
    req, ident = _d(v.get("request")), _d(_d(v.get("request")).get("identity"))
    item_id = _s(v.get("id"))
    link = review_url(page_url, item_id)
    title = "Escalated from DEFER" if v.get("source") == "defer_escalation" else "Approval Required"
    action = f"{_s(req.get('tool')) or '?'}.{_s(req.get('operation')) or '?'}"
    risk = _s(req.get("risk_level")) or "?"
    status = _status(event, v)

    chain = " → ".join(_s(ident.get(k)) for k in ("human", "service", "agent") if ident.get(k)) or "?"
    extra = "; ".join(f"{k}: {', '.join(_strs(ident.get(k)))}" for k in ("roles", "scope") if _strs(ident.get(k)))
    rule = f"`{_s(req.get('rule_id'))}`: " if req.get("rule_id") else ""
    policy = _d(req.get("policy"))
    if policy.get("policy_id"):
        rule += f"(policy {_s(policy.get('policy_id'))} v{_s(policy.get('version'))}) "
    confidence = _number(req.get("confidence"))
    fields = [("Action", f"`{action}`"),
              ("Risk", risk + (f" · confidence {confidence:.2f}" if confidence is not None else "")),
              ("Requested by", chain + (f"\n{extra}" if extra else "")),
              ("Rule", rule + (_s(req.get("reason")) or "?")),
              ("Session", _s(v.get("session_id")) or "?"),
              ("Deadline", _s(v.get("deadline")) or "?"),
              ("Approvers", ", ".join(_strs(v.get("approvers"))) or "?")]
    mapping = dict(channel_mapping)
    channel = next((mapping[a] for a in _strs(v.get("approvers")) if a in mapping), None)
    if channel:
        fields.append(("Slack channel", channel))
    if _strs(req.get("classifications")):
        fields.append(("Data", ", ".join(_strs(req.get("classifications")))))
    prior = [_d(p) for p in req.get("prior_actions") or () if isinstance(p, dict)]
    if prior:
        last = ", ".join(f"{_s(p.get('tool'))}.{_s(p.get('operation'))} ({_s(p.get('decision'))})" for p in prior[-3:])
        fields.append(("Prior actions", f"{len(prior)}; last: {last}"))

    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title}}]
    if status:
        blocks.append(_section(status))
    blocks.append({"type": "section", "fields": [
        {"type": "mrkdwn", "text": f"*{name}*\n{_esc(_cut(value, _FIELD_CHARS))}"} for name, value in fields[:10]]})
    if req.get("original_request"):
        blocks.append(_section(f"*Original request*\n{_esc(_cut(_s(req.get('original_request')), _FIELD_CHARS))}"))
    distance = _number(req.get("semantic_distance"))
    if distance is not None and distance > 0.5:
        blocks.append(_section(f":warning: *Intent drift*: semantic distance {distance:.2f} from the original "
                               "request (warning above 0.50)"))
    blocks.append(_section(_params_text(req.get("parameters"))))
    if event != "approval_decided":
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Approve"}, "style": "primary",
             "action_id": f"approve_{item_id}", "url": link},
            {"type": "button", "text": {"type": "plain_text", "text": "Deny"}, "style": "danger",
             "action_id": f"deny_{item_id}", "url": link}]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
        f"<{link}|Open {_esc(item_id) or 'approval'}> · the page asks you to log in; decisions are taken there")}]})
    text = f"{title}: {status + ' · ' if status else ''}{_esc(action)} (risk {_esc(risk)}) by {_esc(chain)}. {link}"
    return {"text": text, "blocks": blocks}


class Notifications:
    """Deliver approval events to the configured channels from background threads.

    `on_result(item_id, event, channel, ok, detail)` runs once per (event, channel) delivery when it
    finally succeeds or fails; it is called from a worker thread (or from `send()`'s caller for a full
    queue) and must be thread-safe. `channel` is e.g. `webhook https://host/path` or `slack`.
    `backoff_base` (first retry delay, doubled per retry) and `queue_size` (jobs waiting per channel) are
    tuning and test hooks.

    Raises:
        ValueError: a notifier has an unknown type, a URL that is not http(s), or a bad timeout/retries.
    """

    def __init__(self, configs: tuple[NotifierConfig, ...], *, page_url: str, on_result: OnResult | None = None,
                 backoff_base: float = 0.5, queue_size: int = QUEUE_SIZE) -> None:
        self._on_result = on_result
        self._lock = threading.Lock()
        self._closed = False
        self._abort = threading.Event()
        self._queue_size = queue_size
        labels: list[str] = []
        self._channels: list[_Channel] = []
        for n, cfg in enumerate(configs, 1):
            label = _label(n, cfg)
            label = label if label not in labels else f"{label} #{n}"
            labels.append(label)
            self._channels.append(_Channel(cfg, label, page_url.rstrip("/"), backoff_base, self._abort, self._report))
        for ch in self._channels:
            ch.thread.start()

    @property
    def enabled(self) -> bool:
        return bool(self._channels)

    def send(self, event: str, view: dict[str, Any]) -> None:
        """Enqueue `event` for every channel and return at once. A no-op when disabled or closed.

        Raises:
            ValueError: `event` is not one of `EVENTS` (caller misuse, not a delivery problem).
        """
        if event not in EVENTS:
            raise ValueError(f"notification event `{event}`: expected one of {', '.join(EVENTS)}")
        if not self._channels or self._closed:
            return
        item_id = _s(_d(view).get("id"))
        try:  # a snapshot: the caller may change its dict after we return
            snapshot: dict[str, Any] = _d(json.loads(json.dumps(view, default=str)))
        except (ValueError, TypeError, RecursionError) as exc:
            for ch in self._channels:
                self._report(item_id, event, ch.label, False, f"view is not JSON: {type(exc).__name__}")
            return
        dropped: list[str] = []
        with self._lock:
            if self._closed:
                return
            for ch in self._channels:
                if ch.queue.qsize() >= self._queue_size:
                    dropped.append(ch.label)
                else:
                    ch.queue.put_nowait(_Job(item_id, event, snapshot))
        for label in dropped:
            self._report(item_id, event, label, False, f"queue full ({self._queue_size} waiting), dropped")

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, deliver what is queued within `timeout`, then stop the workers. Idempotent.

        Jobs still queued when `timeout` runs out are reported as failed ("closed before delivery") as
        soon as the worker is free; a request already in flight finishes or times out on its own.
        """
        with self._lock:
            first, self._closed = not self._closed, True
            if first:
                for ch in self._channels:
                    ch.queue.put_nowait(None)
        deadline = time.monotonic() + max(timeout, 0.0)
        for ch in self._channels:
            ch.thread.join(max(deadline - time.monotonic(), 0.0))
        if any(ch.thread.is_alive() for ch in self._channels):
            self._abort.set()  # wakes backoff sleeps; the rest of each queue is reported, not sent

    def _report(self, item_id: str, event: str, channel: str, ok: bool, detail: str) -> None:
        if ok:
            logger.info("notification %s for %s via %s: %s", event, item_id, channel, detail)
        else:
            logger.warning("notification %s for %s via %s failed: %s", event, item_id, channel, detail)
        if self._on_result is not None:
            try:
                self._on_result(item_id, event, channel, ok, detail)
            except Exception:  # a broken callback must not kill a worker
                logger.error("notification on_result callback raised", exc_info=True)


class _Job:
    __slots__ = ("event", "item_id", "view")

    def __init__(self, item_id: str, event: str, view: dict[str, Any]) -> None:
        self.item_id, self.event, self.view = item_id, event, view


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # a redirect would resend the configured headers (tokens) to wherever the receiver points
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Channel:
    """One notifier: its queue, its worker thread and its retry loop."""

    def __init__(self, cfg: NotifierConfig, label: str, page_url: str, backoff_base: float,
                 abort: threading.Event, report: Callable[[str, str, str, bool, str], None]) -> None:
        self.cfg, self.label, self.page_url = cfg, label, page_url
        self.backoff_base, self.abort, self.report = backoff_base, abort, report
        self.queue: queue.Queue[_Job | None] = queue.Queue()
        self.secrets = _secrets(cfg)
        self.opener = urllib.request.build_opener(_NoRedirect())
        self.thread = threading.Thread(target=self._run, name=f"aarmor-notify {label}", daemon=True)

    def _run(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.abort.is_set():
                self._final(job, False, "not delivered: notifications closed before delivery")
                continue
            try:
                self._deliver(job)
            except Exception as exc:  # INVARIANT: the worker survives anything one job does
                self._final(job, False, f"internal error: {type(exc).__name__}")

    def _final(self, job: _Job, ok: bool, detail: str) -> None:
        self.report(job.item_id, job.event, self.label, ok, self._scrub(detail))

    def _deliver(self, job: _Job) -> None:
        headers = {"User-Agent": "aarmor-notify/1", **dict(self.cfg.headers), "Content-Type": "application/json"}
        if self.cfg.type == "slack":
            body = slack_payload(job.event, job.view, page_url=self.page_url, channel_mapping=self.cfg.channel_mapping)
        else:
            body = webhook_payload(job.event, job.view, page_url=self.page_url)
            headers["Idempotency-Key"] = body["idempotency_key"]
        data = json.dumps(body, ensure_ascii=False, default=str).encode()
        delay = self.backoff_base
        attempts = self.cfg.retries + 1
        for attempt in range(1, attempts + 1):
            ok, retry, detail, retry_after = self._attempt(data, headers)
            if ok or not retry or attempt == attempts:
                self._final(job, ok, f"{detail} ({_plural(attempt, 'attempt')})")
                return
            wait = retry_after if retry_after is not None else min(delay, MAX_BACKOFF) * random.uniform(1.0, 1.2)
            delay *= 2
            if self.abort.wait(wait):
                tried = _plural(attempt, "attempt")
                self._final(job, False, f"{detail}; notifications closed before a retry ({tried})")
                return

    def _attempt(self, data: bytes, headers: dict[str, str]) -> tuple[bool, bool, str, float | None]:
        """One POST: (ok, worth retrying, detail, Retry-After seconds)."""
        request = urllib.request.Request(self.cfg.url, data=data, headers=headers, method="POST")
        try:
            with self.opener.open(request, timeout=self.cfg.timeout) as response:
                response.read(65536)
                return True, False, f"delivered, HTTP {response.status}", None
        except urllib.error.HTTPError as exc:
            code, body = exc.code, _snippet(exc)
            text = f"HTTP {code}" + (f": {body}" if body else "")
            if code == 429:
                return False, True, text, _retry_after(exc.headers.get("Retry-After"))
            if 300 <= code < 400:
                return False, False, f"{text} (redirects are not followed)", None
            return False, code >= 500, text, None
        except urllib.error.URLError as exc:
            return False, True, f"connection failed: {_reason(exc.reason)}", None
        except (TimeoutError, OSError) as exc:  # read timeouts, resets, RemoteDisconnected (http.client)
            return False, True, f"connection failed: {_reason(exc)}", None
        except ValueError as exc:  # a malformed URL: retrying cannot help
            return False, False, f"bad request: {type(exc).__name__}", None

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, _REDACTED)
        return text


def _label(n: int, cfg: NotifierConfig) -> str:
    if cfg.type not in ("webhook", "slack"):
        raise ValueError(f"notifier {n}: unknown type `{cfg.type}`, expected webhook or slack")
    parts = urlsplit(cfg.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"notifier {n} ({cfg.type}): url must be an http:// or https:// address")
    if cfg.timeout <= 0 or cfg.retries < 0:
        raise ValueError(f"notifier {n} ({cfg.type}): expected timeout > 0 and retries >= 0")
    if cfg.type == "slack":
        return "slack"  # the webhook path is the secret
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return f"webhook {parts.scheme}://{host}{parts.path}"


def _secrets(cfg: NotifierConfig) -> list[str]:
    parts = urlsplit(cfg.url)
    found = [value for _, value in cfg.headers] + [parts.query, parts.password or "", parts.username or ""]
    if cfg.type == "slack":
        found += [cfg.url, parts.path]
    # values shorter than 4 characters are no secret, and replacing them would garble every detail
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_BACKOFF)


def _snippet(exc: urllib.error.HTTPError) -> str:
    """The start of an error response, on one line (Slack answers e.g. `invalid_payload`); closes it."""
    try:
        raw = exc.read(_BODY_CHARS * 4)
    except Exception:
        raw = b""
    finally:
        exc.close()
    return " ".join(raw.decode("utf-8", "replace").split())[:_BODY_CHARS]


def _reason(reason: object) -> str:
    if isinstance(reason, BaseException):
        text = str(reason) or type(reason).__name__
        return text if type(reason).__name__ in text else f"{type(reason).__name__}: {text}"
    return str(reason)


def _status(event: str, v: dict[str, Any]) -> str:
    if event == "approval_escalated":
        return "*Approval escalated*: no decision yet; sent to the escalation approvers"
    if event != "approval_decided":
        return ""
    decision = _d(v.get("decision"))
    if not decision:
        return f"*Approval {_esc(_s(v.get('status')) or 'decided')}*"
    verb = "granted" if decision.get("granted") is True else "denied"
    line = f"*Approval {verb} by {_esc(_s(decision.get('approver')) or '?')}*"
    if decision.get("reason"):
        line += f": {_esc(_cut(_s(decision.get('reason')), _FIELD_CHARS))}"
    return line


def _params_text(params: object) -> str:
    text = json.dumps(params if params is not None else {}, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    shown = _esc(text[:PARAMS_CHARS]).replace("```", "`\u200b``")  # keep the code block closed
    cut = len(text) > PARAMS_CHARS
    note = f"\n_cut to {PARAMS_CHARS} of {len(text)} characters; the page shows all_" if cut else ""
    return f"*Parameters*\n```{shown}```{note}"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _d(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _s(value: object) -> str:
    return "" if value is None else str(value)


def _strs(value: object) -> list[str]:
    return [str(x) for x in value] if isinstance(value, list | tuple) else []


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
