"""The tool risk model: which classes of effect a tool can have, with no per-deployment work.

Every tool an agent may call gets a set of classes (`ToolClass`), computed once per session from its
catalogue entry (`ToolSpec`: name, description, JSON-schema parameters, MCP annotations), or from its
name alone for a tool outside the catalogue, unless the configuration says otherwise
(`tools: {name: {classes: [...]}}`). Policies see the classes of the action being decided as
`risk_signals.tool_category` (`match: {category: financial}`). docs/tool-risk.md has the rationale and
the measured precision.

Rules this module enforces:
- Exactly one of `read_only` and `write` (the effect axis). `destructive`, `financial`,
  `external_communication` and `credential_or_permission_change` each imply `write`; `open_world`
  (reaches systems outside the deployment's control) combines with either.
- Evidence only ever adds risk. Name, description and schema are scanned for evidence of each class;
  the classes are the union of what was found. A tool is `read_only` only when there is evidence that it
  reads (a read verb, or `readOnlyHint: true`) and no evidence of any effect; with no evidence either way
  it is `write` (fail closed: an unknown tool is assumed to have effects).
- MCP annotations are untrusted claims made by the server (MCP spec: "hints", not guarantees). A claim
  of risk is believed (`readOnlyHint: false` adds `write`, `destructiveHint: true` adds `destructive`,
  `openWorldHint: true` adds `open_world`; a tool declared not read-only without a `destructiveHint`
  is `destructive`, the spec's default). A claim of safety only fills a gap: `readOnlyHint: true`
  makes a tool `read_only` only when name, description and schema show no effect, and
  `destructiveHint: false`/`openWorldHint: false` never remove a class found elsewhere. So a
  "read-only" tool whose name or schema says it sends money is `write` + `financial`. The reasons say
  which hint was overruled.
- Configuration overrides are trusted (the operator wrote them): they replace the computed classes
  entirely (implied `write` is added; `read_only` with an effect class is refused).
- Pure and deterministic: same spec, same classes. No I/O, no model, no network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aarmor.model import ToolSpec
from aarmor.normalize import normalize_name

__all__ = [
    "TOOL_CLASSES",
    "ToolClass",
    "ToolRisk",
    "ToolRiskIndex",
    "check_classes",
    "classify_name",
    "classify_tool",
]


class ToolClass(StrEnum):
    """What a tool can do. See docs/tool-risk.md for the definitions and examples."""

    #: returns information and changes nothing (no state, no message, no payment)
    READ_ONLY = "read_only"
    #: changes state somewhere: creates, updates, deletes, sends, books, pays, runs
    WRITE = "write"
    #: deletes or irreversibly overwrites data, or removes something (an event, a user, a commit)
    DESTRUCTIVE = "destructive"
    #: moves money or commits the user to a payment (transfers, payments, purchases, reservations)
    FINANCIAL = "financial"
    #: delivers caller-chosen content or access to another party (e-mail, chat, posts, invitations,
    #: shares, transfer memos): the channels exfiltration uses
    EXTERNAL_COMMUNICATION = "external_communication"
    #: changes credentials, permissions, roles or membership (passwords, grants, shares, invitations)
    CREDENTIAL_OR_PERMISSION_CHANGE = "credential_or_permission_change"
    #: reaches systems outside the deployment (the web, third-party APIs): MCP's openWorldHint
    OPEN_WORLD = "open_world"


TOOL_CLASSES: tuple[str, ...] = tuple(c.value for c in ToolClass)
_IMPLY_WRITE = frozenset({ToolClass.DESTRUCTIVE, ToolClass.FINANCIAL, ToolClass.EXTERNAL_COMMUNICATION,
                          ToolClass.CREDENTIAL_OR_PERMISSION_CHANGE})


@dataclass(frozen=True, slots=True)
class ToolRisk:
    """The classes of one tool and the evidence for them (for explanations and tests)."""

    name: str
    classes: frozenset[ToolClass]
    reasons: tuple[str, ...]
    #: "config" (an operator's override), "spec" (catalogue entry), "name" (a tool outside the catalogue)
    source: str

    @property
    def labels(self) -> tuple[str, ...]:
        """The class names, sorted: the value of `risk_signals.tool_category`."""
        return tuple(sorted(c.value for c in self.classes))


# --- lexicons -------------------------------------------------------------------------------------
# Verbs count anywhere in a tool name; the "ambiguous" ones (also common nouns: post, message, log) only
# in verb position: the first name token found in any lexicon. Description verbs: its first word.

_READ = frozenset("""get list read search find query check show view describe lookup look count inspect
status diff log retrieve browse echo return explain compare calculate compute convert summarize summarise
preview peek head tail stat info print display scan analyze analyse translate estimate is has can fetch
crawl scrape download provide obtain give tree""".split())
_OPEN_WORLD_READ = frozenset({"fetch", "browse", "crawl", "scrape", "download"})
_WRITE = frozenset("""create add update set put write edit modify append insert save move rename copy
reschedule schedule commit checkout switch init apply assign enable disable change patch replace merge push
pull clone mkdir make mark submit register start stop run execute exec install deploy restart toggle import
upsert archive approve reject accept decline upgrade downgrade configure sync restore rollback stage
unstage attach increment decrement reorder""".split())
_DESTRUCTIVE = frozenset("""delete remove drop truncate destroy erase purge wipe kill reset revoke cancel
terminate uninstall overwrite unlink rmdir rm shred discard ban evict deactivate flush""".split())
_COMM = frozenset("""send reply forward notify publish share invite tweet dm sms broadcast announce upload
respond""".split())
_FINANCIAL = frozenset("""pay transfer wire refund purchase buy withdraw deposit reserve subscribe donate
tip""".split())
_CREDENTIAL = frozenset("""grant revoke chmod chown authorize deauthorize promote demote elevate impersonate
rotate""".split())
#: verbs only in verb position (they are nouns elsewhere: `get_post`, `read_channel_messages`)
_AMBIGUOUS_WRITE = frozenset({"tag", "label", "record", "store", "lock", "unlock", "close", "link", "clear"})
_AMBIGUOUS_COMM = frozenset({"post", "email", "mail", "message", "text", "call", "ping", "alert", "page"})
_AMBIGUOUS_FINANCIAL = frozenset({"book", "order", "charge", "invoice", "bill"})

_FINANCIAL_NOUNS = frozenset("""money payment payments transaction transactions transfer transfers funds
invoice invoices reservation reservations booking bookings purchase purchases order orders subscription
wallet""".split())
_CREDENTIAL_NOUNS = frozenset("""password passwords passwd passphrase credential credentials secret secrets
apikey permission permissions role roles privilege privileges acl acls iam sudo mfa otp""".split())
_MEMBER_NOUNS = frozenset({"user", "users", "member", "members", "admin", "admins", "collaborator",
                           "collaborators"})
_MEMBER_VERBS = frozenset({"add", "remove", "invite", "kick", "ban"})

# Parameter names are compared with separators and case removed (`user_email` -> `useremail`).
#: where a message or access goes: a sender if the tool has an effect or carries content
_STRONG_DEST = frozenset("""recipient recipients to cc bcc email emails useremail emailaddress targetemail
phone phonenumber webhook webhookurl url uri endpoint participants attendees invitees guests""".split())
#: a destination only together with content (`read_inbox(user)` reads; `send(channel, body)` sends)
_WEAK_DEST = frozenset({"channel", "user", "room", "chat", "thread", "conversation", "username", "userid"})
_CONTENT = frozenset("""body content message text subject attachment attachments payload html markdown
description title note comment""".split())
_AMOUNT = frozenset({"amount", "price", "total", "amountcents"})
_ACCOUNT = frozenset({"iban", "account", "accountnumber", "bic", "swift", "routingnumber", "cardnumber",
                      "payee", "recipient", "merchant", "beneficiary"})
_CREDENTIAL_PARAMS = frozenset("""password newpassword passwd passphrase secret apikey accesstoken
credential credentials permission permissions role roles accesslevel privilege privileges""".split())
_URL_PARAMS = frozenset({"url", "uri", "endpoint", "webhook", "webhookurl", "link", "href"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")
_WORD = re.compile(r"[A-Za-z]+")
_ALL_VERBS = (_READ | _WRITE | _DESTRUCTIVE | _COMM | _FINANCIAL | _CREDENTIAL | _AMBIGUOUS_WRITE
              | _AMBIGUOUS_COMM | _AMBIGUOUS_FINANCIAL)


def _tokens(name: str) -> list[str]:
    return [t for t in _SPLIT.split(_CAMEL.sub("_", name).lower()) if t]


def _param_key(name: str) -> str:
    return "".join(_tokens(name))


def _stem(word: str) -> str:
    """A description's third-person verb to its lexicon form (`Sends` -> `send`, `Searches` -> `search`)."""
    w = word.lower()
    for cut in ("", "s", "es", "d", "ed", "ing"):
        if cut and not w.endswith(cut):
            continue
        base = w[: len(w) - len(cut)] if cut else w
        if base in _ALL_VERBS:
            return base
    return w


class _Evidence:
    __slots__ = ("classes", "read", "reasons")

    def __init__(self) -> None:
        self.classes: set[ToolClass] = set()
        self.read: list[str] = []
        self.reasons: list[str] = []

    def add(self, cls: ToolClass, why: str) -> None:
        if cls is ToolClass.READ_ONLY:
            self.read.append(why)
            return
        self.classes.add(cls)
        self.reasons.append(f"{cls.value}: {why}")

    def verb(self, verb: str, where: str, *, position: bool) -> None:
        """Classes a verb is evidence for (`position`: it is in verb position)."""
        what = f"{where} verb `{verb}`"
        if position and verb in _READ:  # a read verb tells what the tool does only as its main verb
            self.add(ToolClass.READ_ONLY, what)
            if verb in _OPEN_WORLD_READ:
                self.add(ToolClass.OPEN_WORLD, what)
        if verb in _WRITE or (position and verb in _AMBIGUOUS_WRITE):
            self.add(ToolClass.WRITE, what)
        if verb in _DESTRUCTIVE:
            self.add(ToolClass.DESTRUCTIVE, what)
        if verb in _COMM or (position and verb in _AMBIGUOUS_COMM):
            self.add(ToolClass.EXTERNAL_COMMUNICATION, what)
        if verb in _FINANCIAL or (position and verb in _AMBIGUOUS_FINANCIAL):
            self.add(ToolClass.FINANCIAL, what)
        if verb in _CREDENTIAL:
            self.add(ToolClass.CREDENTIAL_OR_PERMISSION_CHANGE, what)

    @property
    def effect(self) -> bool:
        return bool(self.classes - {ToolClass.OPEN_WORLD})


def _name_evidence(ev: _Evidence, name: str) -> None:
    tokens = _tokens(name)
    position = next((i for i, t in enumerate(tokens) if t in _ALL_VERBS), None)
    for i, tok in enumerate(tokens):
        ev.verb(tok, "name", position=i == position)
    if not ev.effect:
        return
    nouns = set(tokens)
    if nouns & _FINANCIAL_NOUNS:
        ev.add(ToolClass.FINANCIAL, f"name noun `{sorted(nouns & _FINANCIAL_NOUNS)[0]}` with an effect")
    if nouns & _CREDENTIAL_NOUNS:
        ev.add(ToolClass.CREDENTIAL_OR_PERMISSION_CHANGE,
               f"name noun `{sorted(nouns & _CREDENTIAL_NOUNS)[0]}` with an effect")
    if nouns & _MEMBER_NOUNS and nouns & _MEMBER_VERBS:
        ev.add(ToolClass.CREDENTIAL_OR_PERMISSION_CHANGE,
               f"membership change `{sorted(nouns & _MEMBER_VERBS)[0]} {sorted(nouns & _MEMBER_NOUNS)[0]}`")


def _description_evidence(ev: _Evidence, description: str) -> None:
    words = _WORD.findall(description[:200])
    first = next((w for w in words if not w.lower().endswith("ly")), None)
    if first is not None:
        verb = _stem(first)
        if verb in _ALL_VERBS:
            ev.verb(verb, "description", position=True)


def _schema_params(parameters: Mapping[str, Any] | None) -> dict[str, str]:
    """Parameter keys (separators removed) to their spelling, top level and one level down."""
    out: dict[str, str] = {}
    props = parameters.get("properties") if isinstance(parameters, Mapping) else None
    if not isinstance(props, Mapping):
        return out
    for name, sub in props.items():
        if isinstance(name, str):
            out.setdefault(_param_key(name), name)
        inner = sub.get("properties") if isinstance(sub, Mapping) else None
        if isinstance(inner, Mapping):
            for n in inner:
                if isinstance(n, str):
                    out.setdefault(_param_key(n), f"{name}.{n}")
    return out


def _schema_evidence(ev: _Evidence, parameters: Mapping[str, Any] | None) -> None:
    params = _schema_params(parameters)
    keys = set(params)
    strong, weak, content = keys & _STRONG_DEST, keys & _WEAK_DEST, keys & _CONTENT
    if strong and (content or ev.effect):
        # INVARIANT: a recipient plus a message is a sender, whatever the tool is called (`get_weather`
        # with `recipient` and `body` sends mail).
        why = f"parameters `{params[sorted(strong)[0]]}`" + (f" + `{params[sorted(content)[0]]}`" if content
                                                             else " with an effect")
        ev.add(ToolClass.EXTERNAL_COMMUNICATION, why)
    elif weak and content:
        ev.add(ToolClass.EXTERNAL_COMMUNICATION,
               f"parameters `{params[sorted(weak)[0]]}` + `{params[sorted(content)[0]]}`")
    if keys & _AMOUNT and keys & _ACCOUNT:
        ev.add(ToolClass.FINANCIAL,
               f"parameters `{params[sorted(keys & _AMOUNT)[0]]}` + `{params[sorted(keys & _ACCOUNT)[0]]}`")
    if keys & _CREDENTIAL_PARAMS and ev.effect:
        ev.add(ToolClass.CREDENTIAL_OR_PERMISSION_CHANGE,
               f"parameter `{params[sorted(keys & _CREDENTIAL_PARAMS)[0]]}` with an effect")
    if keys & _URL_PARAMS and not ev.effect:
        ev.add(ToolClass.OPEN_WORLD, f"parameter `{params[sorted(keys & _URL_PARAMS)[0]]}`")


def _annotation_evidence(ev: _Evidence, annotations: Mapping[str, Any]) -> list[str]:
    """Apply the MCP hints with the trust rules of the module docstring; returns notes on overruled hints."""
    notes: list[str] = []
    read_only = annotations.get("readOnlyHint")
    destructive = annotations.get("destructiveHint")
    if read_only is False:
        ev.add(ToolClass.WRITE, "readOnlyHint=false")
        if destructive is None:
            ev.add(ToolClass.DESTRUCTIVE, "readOnlyHint=false without destructiveHint (MCP default: destructive)")
    if destructive is True:
        ev.add(ToolClass.DESTRUCTIVE, "destructiveHint=true")
    elif destructive is False and ToolClass.DESTRUCTIVE in ev.classes:
        notes.append("destructiveHint=false ignored: other evidence says destructive")
    if annotations.get("openWorldHint") is True:
        ev.add(ToolClass.OPEN_WORLD, "openWorldHint=true")
    if read_only is True:
        if ev.effect:
            notes.append("readOnlyHint=true ignored: " + "; ".join(ev.reasons))
        else:
            ev.add(ToolClass.READ_ONLY, "readOnlyHint=true")
    return notes


def _finish(name: str, ev: _Evidence, notes: list[str], source: str) -> ToolRisk:
    classes = set(ev.classes)
    reasons = list(ev.reasons)
    if classes & _IMPLY_WRITE and ToolClass.WRITE not in classes:
        classes.add(ToolClass.WRITE)
        reasons.append("write: implied by " + ", ".join(sorted(c.value for c in classes & _IMPLY_WRITE)))
    if ToolClass.WRITE not in classes:
        if ev.read:
            classes.add(ToolClass.READ_ONLY)
            reasons.append("read_only: " + ", ".join(ev.read))
        else:
            # INVARIANT (fail closed): no evidence that a tool only reads means it may write.
            classes.add(ToolClass.WRITE)
            reasons.append("write: no evidence that it only reads")
    return ToolRisk(name, frozenset(classes), tuple(reasons + notes), source)


def classify_tool(spec: ToolSpec) -> ToolRisk:
    """Classes of a catalogue tool from its annotations, name, description and parameter schema."""
    ev = _Evidence()
    _name_evidence(ev, spec.name)
    _description_evidence(ev, spec.description or "")
    _schema_evidence(ev, spec.parameters)
    notes = _annotation_evidence(ev, spec.annotations) if spec.annotations else []
    return _finish(spec.name, ev, notes, "spec")


def classify_name(name: str) -> ToolRisk:
    """Classes of a tool known only by name (called outside the session's catalogue)."""
    ev = _Evidence()
    _name_evidence(ev, name)
    return _finish(name, ev, [], "name")


def check_classes(values: Iterable[str], *, what: str = "tool classes") -> frozenset[ToolClass]:
    """Validate an operator's class list; adds the implied `write`.

    Raises:
        ValueError: an unknown class name, an empty list, or `read_only` with an effect class.
    """
    if isinstance(values, str):
        values = [values]
    out: set[ToolClass] = set()
    for v in values:
        try:
            out.add(ToolClass(str(v).strip().lower()))
        except ValueError:
            raise ValueError(f"{what}: unknown class `{v}`, expected one of {', '.join(TOOL_CLASSES)}") from None
    if not out:
        raise ValueError(f"{what}: an empty class list (name at least `read_only` or `write`)")
    if ToolClass.READ_ONLY in out and (out & _IMPLY_WRITE or ToolClass.WRITE in out):
        bad = sorted(c.value for c in out if c in _IMPLY_WRITE or c is ToolClass.WRITE)
        raise ValueError(f"{what}: `read_only` contradicts `{bad[0]}`")
    if out & _IMPLY_WRITE:
        out.add(ToolClass.WRITE)
    if not out & {ToolClass.READ_ONLY, ToolClass.WRITE}:
        out.add(ToolClass.WRITE)  # `[open_world]` alone: effect unknown, so fail closed
    return frozenset(out)


class ToolRiskIndex:
    """The classes of a session's tools: catalogue specs plus configuration overrides, memoised.

    Lookups use normalised names and try `tool.operation`, then `tool` (like the rest of the context).
    Deterministic in (overrides, catalogue), so a resumed session classifies exactly as the live one.
    """

    __slots__ = ("_cache", "_overrides", "_specs")

    def __init__(self, overrides: Mapping[str, Iterable[str]] | None = None) -> None:
        """Raises:
        ValueError: an override names an unknown class or contradicts itself.
        """
        self._overrides = {normalize_name(k): check_classes(v, what=f"tool `{k}` classes")
                           for k, v in (overrides or {}).items()}
        self._specs: dict[str, ToolSpec] = {}
        self._cache: dict[str, tuple[str, ...]] = {}

    def add_catalogue(self, specs: Iterable[ToolSpec | Mapping[str, Any]]) -> None:
        """Register catalogue entries (`ToolSpec` or its JSON, as recorded in `session_start`)."""
        for s in specs:
            spec = s if isinstance(s, ToolSpec) else ToolSpec(str(s["name"]), str(s.get("description") or ""),
                                                              s.get("parameters"), s.get("annotations"))
            self._specs[normalize_name(spec.name, what="catalogue tool name")] = spec
        self._cache.clear()

    def risk(self, tool: str, name: str | None = None) -> ToolRisk:
        """The full `ToolRisk` of an action's tool (normalised `tool`, and `tool.operation` as `name`)."""
        for key in (name, tool):
            if key and key in self._overrides:
                return ToolRisk(key, self._overrides[key], ("configured",), "config")
        for key in (name, tool):
            if key and key in self._specs:
                return classify_tool(self._specs[key])
        return classify_name(name or tool)

    def classes_for(self, tool: str, name: str | None = None) -> tuple[str, ...]:
        """Sorted class names for `risk_signals.tool_category` (memoised per name)."""
        key = name or tool
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self.risk(tool, name).labels
        return hit
