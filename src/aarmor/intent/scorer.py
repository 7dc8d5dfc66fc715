"""Alignment (AARM R3 step 5) and cumulative drift (R7) between a session's request and each action.

For every action the scorer builds a short *action descriptor* (`action_descriptor`), measures the
similarity `s` of the descriptor to the session's original request (cosine of MiniLM embeddings, or word
overlap for the lexical fallback) and reports:

- `semantic_distance` = clip(1 - s, 0, 1): AARM's d(r0, a) = 1 - cos(embed(r0), embed(a)); negative cosines
  (unrelated texts) count as 1.
- `alignment` = clip((s - floor) / (ceiling - floor), 0, 1): a linear map of the similarity onto [0, 1]
  that the PDP compares with the policy's `alignment_threshold` (tau). The embedding model scores even a
  well-aligned tool call well below 1 against a natural-language request (`summarise my unread emails` vs
  `list emails: folder inbox` ~0.57; `delete file: path ...` ~0.08), so `alignment = 1 - d` would deny
  almost everything at tau 0.7; the floor and ceiling are the scorer's calibration
  (`intent.similarity_floor`, `intent.similarity_ceiling`).
- `confidence`: how sure the scorer is that it can evaluate the action (AARM 2.2), min(1, w / 3) for a
  request of w content words: a one-word request gives 0.33. It feeds R3 DEFER trigger (c) when the
  deployment sets `decision.confidence_threshold`.
- `risk_signals` (cumulative drift, R7), over every action the session has requested (allowed or not, in
  order) plus the one being scored:
  - `semantic_drift`: exponential moving average of the distances, `e_1 = d_1`,
    `e_n = alpha * d_n + (1 - alpha) * e_(n-1)` (alpha = `intent.drift_alpha`, 0.4). **The EMA drives
    `drift_detected`**: a sustained move away from the request, caught also when it is gradual.
  - `semantic_drift_max`: the running maximum distance, recorded for receipts and rules; it drives nothing.
  - `drift_detected`: `semantic_drift` > `intent.drift_threshold` (0.9 for the embedding scorer).
  - `semantic_drift_actions`: how many actions the two figures cover.

No original request: no signal at all (None); the PDP's alignment steps stay off. The scorer computes,
the PDP decides: nothing here denies anything.

Profiles per agent type (`intent.profiles`): the thresholds above (`similarity_floor`, `similarity_ceiling`,
`drift_alpha`, `drift_threshold`) can differ per agent type. The scorer picks the profile for each action
(`SemanticScorer.profile_for`): the agent type is the session's context field `agent_type` when set to a
non-empty string (`session.set_context("agent_type", ...)`), otherwise the identity's `agent`; the profile
of that name if one is configured, otherwise the default profile (the top-level values). The PDP never sees
profiles, only the numbers they produce.

Per-session drift state lives in the scorer's memory (at most `max_sessions`, least recently used
evicted). An action counts once it appears in the snapshot's `prior_actions`, so dry runs
(`Session.evaluate`) and re-evaluations of a deferred action never count twice. Actions this process did
not score (a session resumed after a restart) are folded in from their tool and operation alone.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aarmor.errors import ConfigError
from aarmor.model import Action, ContextSnapshot, FrozenMap, PriorAction

from . import AlignmentSignal
from .lexical import content_words

__all__ = [
    "DRIFT_SIGNAL_NAMES",
    "Calibration",
    "DriftSettings",
    "DriftState",
    "Profile",
    "SemanticScorer",
    "action_descriptor",
    "agent_type_of",
    "request_confidence",
]

#: the session context field naming the agent type explicitly (it wins over `Identity.agent`)
AGENT_TYPE_FIELD = "agent_type"

#: the risk signals the scorer adds (reserved names)
DRIFT_SIGNAL_NAMES = frozenset({"semantic_drift", "semantic_drift_max", "drift_detected", "semantic_drift_actions"})

#: descriptor limits: at most this many arguments, string values up to this length (longer strings are
#: free text, e.g. an e-mail body, and are left out), and this many characters in all
MAX_ARGS = 5
MAX_VALUE_CHARS = 64
MAX_DESCRIPTOR_CHARS = 240
_SECRET = re.compile(r"pass(word|wd)?|secret|token|api_?key|authori[sz]ation|cookie|private_?key|credential",
                     re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[_.\-/]+")


def humanize(name: str) -> str:
    """`send_email` -> `send email`, `getUnreadEmails` -> `get Unread Emails`, `email.send` -> `email send`."""
    return " ".join(_SEPARATORS.sub(" ", _CAMEL.sub(" ", name)).split())


def _value_text(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        v = " ".join(value.split())
        return v if 0 < len(v) <= MAX_VALUE_CHARS else None
    if isinstance(value, list | tuple):
        parts = [p for p in (_value_text(x) for x in value[:3] if not isinstance(x, list | tuple | Mapping)) if p]
        return ", ".join(parts) or None
    return None


def action_descriptor(action: Action) -> str:
    """The text the request is compared with: `<tool> <operation>: <key> <value>, ...`.

    Tool and operation names are split into words (`send_email` -> `send email`). Salient arguments: the
    first `MAX_ARGS` top-level arguments whose value is a number, a boolean, a string of at most
    `MAX_VALUE_CHARS` characters (recipients, paths, amounts, subjects) or a list of such (first three);
    long strings (bodies, documents), nested objects and arguments named like secrets are left out. The
    whole is cut at `MAX_DESCRIPTOR_CHARS`.
    """
    head = humanize(action.tool) + (f" {humanize(action.operation)}" if action.operation else "")
    args: list[str] = []
    for key, value in action.parameters.items():
        if len(args) >= MAX_ARGS:
            break
        if _SECRET.search(key):
            continue
        text = _value_text(value)
        if text:
            args.append(f"{humanize(key)} {text}")
    out = f"{head}: {', '.join(args)}" if args else head
    return out[:MAX_DESCRIPTOR_CHARS]


def prior_descriptor(prior: PriorAction) -> str:
    """Descriptor of an earlier action this scorer did not see: its tool and operation only."""
    return humanize(prior.tool) + (f" {humanize(prior.operation)}" if prior.operation else "")


def request_confidence(request: str) -> float:
    """min(1, content words / 3): too short a request says too little to judge an action by."""
    return min(1.0, len(content_words(request)) / 3.0)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Similarity -> alignment: 0 at or below `floor`, 1 at or above `ceiling`, linear between."""

    floor: float
    ceiling: float

    def __post_init__(self) -> None:
        if not (-1.0 <= self.floor < self.ceiling <= 1.0):
            raise ConfigError(f"intent: similarity_floor {self.floor:g} must be below similarity_ceiling "
                              f"{self.ceiling:g}, both in [-1, 1]")

    def alignment(self, similarity: float) -> float:
        return min(1.0, max(0.0, (similarity - self.floor) / (self.ceiling - self.floor)))


@dataclass(frozen=True, slots=True)
class DriftSettings:
    alpha: float = 0.4
    threshold: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"intent.drift_alpha must be in (0, 1], found {self.alpha:g}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"intent.drift_threshold must be in [0, 1], found {self.threshold:g}")


@dataclass(frozen=True, slots=True)
class DriftState:
    """Cumulative drift after `count` actions: EMA and running maximum of their distances."""

    ema: float = 0.0
    max: float = 0.0
    count: int = 0

    def step(self, distance: float, alpha: float) -> DriftState:
        ema = distance if self.count == 0 else alpha * distance + (1.0 - alpha) * self.ema
        return DriftState(ema, max(self.max, distance), self.count + 1)


@dataclass(frozen=True, slots=True)
class Profile:
    """The thresholds used for one agent type (`name`), or the default profile (`name` None)."""

    name: str | None
    calibration: Calibration
    drift: DriftSettings


def agent_type_of(action: Action, snapshot: ContextSnapshot) -> str | None:
    """The agent type that selects a profile: context `agent_type` (a non-empty string), else `Identity.agent`."""
    explicit = snapshot.values.get(AGENT_TYPE_FIELD)
    if isinstance(explicit, str) and explicit.strip():
        return explicit
    return action.identity.agent


@dataclass(slots=True)
class _Session:
    request: str
    folded: DriftState = field(default_factory=DriftState)
    #: ids of the actions folded into `folded` (the most recent `_MAX_IDS`: more than the context window)
    folded_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    #: distances of actions scored but not yet seen in `prior_actions` (bounded)
    pending: OrderedDict[str, float] = field(default_factory=OrderedDict)


_MAX_IDS = 4096
_MAX_PENDING = 256


class SemanticScorer:
    """The distance/alignment/drift scorer over a similarity function (embedding or lexical)."""

    def __init__(self, name: str, similarity: Callable[[str, str], float], *, calibration: Calibration,
                 drift: DriftSettings | None = None, profiles: Mapping[str, Profile] | None = None,
                 max_sessions: int = 10_000, encoder: object | None = None) -> None:
        self.name = name
        #: the `MiniLMEncoder` behind an embedding scorer (None for lexical), e.g. to `load()` it early
        self.encoder = encoder
        self._similarity = similarity
        self.calibration = calibration
        self.drift = drift or DriftSettings()
        #: the default profile (the top-level values) and the profiles per agent type
        self.default_profile = Profile(None, calibration, self.drift)
        self.profiles: Mapping[str, Profile] = dict(profiles or {})
        self._max_sessions = max_sessions
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def distance(self, request: str, descriptor: str) -> tuple[float, float]:
        """(similarity, distance) of a descriptor to the request."""
        s = self._similarity(request, descriptor)
        if math.isnan(s):
            raise ValueError("similarity is NaN")
        return s, min(1.0, max(0.0, 1.0 - s))

    def score(self, action: Action, snapshot: ContextSnapshot) -> AlignmentSignal | None:
        request = snapshot.original_request
        if not request or not request.strip():
            return None
        profile = self.profile_for(action, snapshot)
        sim, dist = self.distance(request, action_descriptor(action))
        state = self._fold(snapshot, request, profile.drift.alpha)
        now = state.step(dist, profile.drift.alpha)
        with self._lock:
            sess = self._sessions.get(snapshot.session_id)
            if sess is not None:
                sess.pending[action.action_id] = dist
                sess.pending.move_to_end(action.action_id)
                while len(sess.pending) > _MAX_PENDING:
                    sess.pending.popitem(last=False)
        signals = {
            "semantic_drift": round(now.ema, 6),
            "semantic_drift_max": round(now.max, 6),
            "drift_detected": now.ema > profile.drift.threshold,
            "semantic_drift_actions": now.count,
            "intent_profile": profile.name or "default",
        }
        return AlignmentSignal(
            alignment=round(profile.calibration.alignment(sim), 6),
            semantic_distance=round(dist, 6),
            confidence=round(request_confidence(request), 6),
            risk_signals=FrozenMap(signals),
        )

    def profile_for(self, action: Action, snapshot: ContextSnapshot) -> Profile:
        """The profile of the action's agent type (`agent_type_of`), else the default profile."""
        kind = agent_type_of(action, snapshot)
        return self.profiles.get(kind, self.default_profile) if kind else self.default_profile

    def _fold(self, snapshot: ContextSnapshot, request: str, alpha: float) -> DriftState:
        """The session's drift over its requested actions, folding in those not folded yet."""
        with self._lock:
            sess = self._sessions.get(snapshot.session_id)
            if sess is None or sess.request != request:
                sess = _Session(request)
                self._sessions[snapshot.session_id] = sess
            self._sessions.move_to_end(snapshot.session_id)
            while len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)
            base = sess.folded
            new = [(p, sess.pending.get(p.action_id)) for p in snapshot.prior_actions
                   if p.action_id not in sess.folded_ids]
        if not new:
            return base
        # distances of actions this process never scored are computed outside the lock
        state = base
        for p, d in new:
            state = state.step(d if d is not None else self.distance(request, prior_descriptor(p))[1], alpha)
        with self._lock:
            if sess.folded is base:  # nobody folded meanwhile: commit
                sess.folded = state
                for p, _ in new:
                    sess.folded_ids[p.action_id] = None
                    sess.pending.pop(p.action_id, None)
                while len(sess.folded_ids) > _MAX_IDS:
                    sess.folded_ids.popitem(last=False)
        return state
