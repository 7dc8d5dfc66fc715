"""Deriving the intent thresholds from labelled sequences (`aarmor calibrate`, AARM R7: thresholds set per
deployment, calibrated on known benign and malicious sequences).

The file (YAML or JSON; `docs/intent.md`, "Calibrating") holds sequences: an original request, an optional
agent type, a label (`benign` or `malicious`) and the actions the agent requested, each with an optional
label of its own (default: the sequence's). Each sequence is scored as a session by the real scorer
(`SemanticScorer.score`, the call the pipeline makes before every decision: same descriptor, same distance,
same drift EMA and maximum), each action seeing the earlier ones as the session's prior actions.

Two detectors are measured:

- per action, the similarity `s` of the action to the request: an action is flagged when `s` is below a
  cut `s*` (what the PDP does with `alignment < tau`). Positives: actions labelled malicious.
- per sequence, the cumulative drift: a sequence is flagged when its drift EMA (`semantic_drift`) exceeds
  `drift_threshold` at any step (what `drift_detected` does), so its score is the highest EMA over its
  actions. Positives: sequences labelled malicious.

For each: the ROC AUC (`roc_auc`, exact, ties counted one half), the cut maximising Youden's J = TPR - FPR,
and the cut with the highest TPR whose FPR is at most `max_fpr`, with the confusion counts at each. The
similarity cut becomes `similarity_floor`/`similarity_ceiling` for the policy's tau (`derive_floor_ceiling`).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import yaml

from aarmor.errors import InputError
from aarmor.model import ContextSnapshot, DecisionResult, FrozenMap, Identity, PriorAction

from .scorer import AGENT_TYPE_FIELD, Calibration, SemanticScorer, action_descriptor

__all__ = [
    "SAMPLE_SEQUENCES",
    "CalibrationFileError",
    "CalibrationReport",
    "Confusion",
    "Cut",
    "Detector",
    "LabelledAction",
    "LabelledSequence",
    "calibrate",
    "confusion_at",
    "derive_floor_ceiling",
    "fpr_cut",
    "load_sequences",
    "roc_auc",
    "youden_cut",
]

#: the labelled sample set shipped with aarmor (`aarmor calibrate builtin:sample`)
SAMPLE_SEQUENCES = Path(__file__).with_name("data") / "sample_sequences.yaml"
LABELS = ("benign", "malicious")
#: the FPR bound reported when `--max-fpr` is not given
DEFAULT_MAX_FPR = 0.05
Label = Literal["benign", "malicious"]


class CalibrationFileError(InputError):
    """A sequences file that cannot be read or does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class LabelledAction:
    tool: str
    operation: str | None
    arguments: Mapping[str, Any]
    label: Label


@dataclass(frozen=True, slots=True)
class LabelledSequence:
    index: int
    id: str
    request: str
    agent_type: str | None
    label: Label
    actions: tuple[LabelledAction, ...]


# --- reading the file ---------------------------------------------------------------------------------

def _err(file: str, where: str, message: str) -> CalibrationFileError:
    return CalibrationFileError(f"{file}: {where}: {message}")


def _label(file: str, where: str, value: Any) -> Label:
    if value not in LABELS:
        raise _err(file, where, f"must be `benign` or `malicious`, found {value!r}")
    return "benign" if value == "benign" else "malicious"


def _text(file: str, where: str, value: Any, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _err(file, where, "required, a non-empty string" if value is None else
                   f"must be a non-empty string, found {type(value).__name__}")
    return value


_SEQ_KEYS = frozenset({"id", "request", "agent_type", "label", "actions"})
_ACT_KEYS = frozenset({"tool", "operation", "arguments", "label"})


def _record(file: str, where: str, raw: Any, allowed: frozenset[str]) -> Mapping[str, Any]:
    """`raw` as a mapping with no field outside `allowed`."""
    if not isinstance(raw, Mapping):
        raise _err(file, where, f"must be a mapping, found {type(raw).__name__}")
    extra = sorted(str(k) for k in raw if k not in allowed)
    if extra:
        raise _err(file, f"{where}.{extra[0]}", f"unknown field (expected one of {', '.join(sorted(allowed))})")
    return raw


def _action(file: str, where: str, raw: Any, default: Label) -> LabelledAction:
    a = _record(file, where, raw, _ACT_KEYS)
    tool = _text(file, f"{where}.tool", a.get("tool"), required=True)
    operation = _text(file, f"{where}.operation", a.get("operation"), required=False)
    args = a.get("arguments") or {}
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise _err(file, f"{where}.arguments", "must be a mapping of argument names to values")
    label = _label(file, f"{where}.label", a["label"]) if "label" in a else default
    assert tool is not None
    return LabelledAction(tool, operation, dict(args), label)


def parse_sequences(data: Any, file: str) -> list[LabelledSequence]:
    """Validate the parsed document; errors name `file`, the sequence index and the field."""
    if isinstance(data, Mapping):
        data = _record(file, "(top level)", data, frozenset({"sequences", "version", "description"}))
        data = data.get("sequences")
    if not isinstance(data, list):
        raise _err(file, "sequences", "required: a list of sequences (or the whole file a list)")
    out: list[LabelledSequence] = []
    for i, item in enumerate(data):
        where = f"sequences[{i}]"
        raw = _record(file, where, item, _SEQ_KEYS)
        request = _text(file, f"{where}.request", raw.get("request"), required=True)
        agent_type = _text(file, f"{where}.agent_type", raw.get("agent_type"), required=False)
        label = _label(file, f"{where}.label", raw.get("label"))
        ident = raw.get("id", str(i))
        if not isinstance(ident, str | int):
            raise _err(file, f"{where}.id", f"must be a string, found {type(ident).__name__}")
        acts = raw.get("actions")
        if not isinstance(acts, list) or not acts:
            raise _err(file, f"{where}.actions", "required: a non-empty list of actions")
        actions = tuple(_action(file, f"{where}.actions[{j}]", a, label) for j, a in enumerate(acts))
        if label == "benign" and any(a.label == "malicious" for a in actions):
            raise _err(file, f"{where}.label", "a benign sequence cannot hold an action labelled malicious")
        assert request is not None
        out.append(LabelledSequence(i, str(ident), request, agent_type, label, actions))
    if not out:
        raise _err(file, "sequences", "no sequences")
    return out


def load_sequences(path: str | Path) -> list[LabelledSequence]:
    """Read a sequences file (`.json` as JSON, anything else as YAML); `builtin:sample` is the shipped set.

    Raises:
        CalibrationFileError: unreadable file, bad YAML/JSON, or a field of the wrong shape (the message
            names the file, the sequence index and the field).
    """
    p = SAMPLE_SEQUENCES if str(path) == "builtin:sample" else Path(path)
    name = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CalibrationFileError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CalibrationFileError(f"{name}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: "
                                   f"{exc}") from exc
    return parse_sequences(data, name)


# --- ROC ------------------------------------------------------------------------------------------------

def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative), ties count 1/2.

    Exact (Mann-Whitney U with mid-ranks for ties, in rational arithmetic), O(n log n).

    Raises:
        ValueError: lengths differ, or no positive or no negative.
    """
    if len(scores) != len(positive):
        raise ValueError("scores and labels differ in length")
    n_pos = sum(1 for p in positive if p)
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative")
    order = sorted(range(len(scores)), key=lambda k: scores[k])
    rank_sum = Fraction(0)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mid_rank = Fraction(i + 1 + j + 1, 2)  # ranks i+1 .. j+1 share their mean
        rank_sum += mid_rank * sum(1 for k in order[i:j + 1] if positive[k])
        i = j + 1
    u = rank_sum - Fraction(n_pos * (n_pos + 1), 2)
    return float(u / (n_pos * n_neg))


@dataclass(frozen=True, slots=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def tpr(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def fpr(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn,
                "tpr": round(self.tpr, 4), "fpr": round(self.fpr, 4)}


def confusion_at(scores: Sequence[float], positive: Sequence[bool], cut: float) -> Confusion:
    """Counts when `score > cut` is flagged."""
    tp = sum(1 for s, p in zip(scores, positive, strict=True) if p and s > cut)
    fp = sum(1 for s, p in zip(scores, positive, strict=True) if not p and s > cut)
    n_pos = sum(1 for p in positive if p)
    return Confusion(tp, fp, len(positive) - n_pos - fp, n_pos - tp)


def _cuts(scores: Sequence[float]) -> list[float]:
    """Candidate cuts: below every score, between each two neighbouring distinct scores, at the highest."""
    u = sorted(set(scores))
    return [u[0] - 1.0] + [(a + b) / 2 for a, b in itertools.pairwise(u)] + [u[-1]]


@dataclass(frozen=True, slots=True)
class Cut:
    """A threshold on the score (`score > value` flagged) and the counts it gives."""

    value: float
    confusion: Confusion

    @property
    def youden(self) -> float:
        return self.confusion.tpr - self.confusion.fpr


def youden_cut(scores: Sequence[float], positive: Sequence[bool]) -> Cut:
    """The cut maximising Youden's J; among equals, the lowest FPR, then the highest cut."""
    best = max((Cut(c, confusion_at(scores, positive, c)) for c in _cuts(scores)),
               key=lambda k: (round(k.youden, 12), -k.confusion.fpr, k.value))
    return best


def fpr_cut(scores: Sequence[float], positive: Sequence[bool], max_fpr: float) -> Cut:
    """The cut with the highest TPR whose FPR is at most `max_fpr` (flagging nothing always qualifies)."""
    ok = [Cut(c, confusion_at(scores, positive, c)) for c in _cuts(scores)]
    ok = [k for k in ok if k.confusion.fpr <= max_fpr + 1e-12]
    return max(ok, key=lambda k: (k.confusion.tpr, -k.confusion.fpr, k.value))


# --- scoring and the report -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ScoredAction:
    sequence: int
    descriptor: str
    similarity: float
    distance: float
    drift: float
    malicious: bool


@dataclass(frozen=True, slots=True)
class ScoredSequence:
    sequence: LabelledSequence
    actions: tuple[ScoredAction, ...]

    @property
    def peak_drift(self) -> float:
        return max(a.drift for a in self.actions)


_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def score_sequences(scorer: SemanticScorer, sequences: Sequence[LabelledSequence], *,
                    file: str = "sequences") -> list[ScoredSequence]:
    """Run every sequence through `scorer.score` as its own session, in order."""
    from aarmor.normalize import normalize_action

    out: list[ScoredSequence] = []
    for seq in sequences:
        sid = f"calibrate-{seq.index}"
        identity = Identity(agent=seq.agent_type, session=sid)
        values = FrozenMap({AGENT_TYPE_FIELD: seq.agent_type} if seq.agent_type else {})
        priors: list[PriorAction] = []
        scored: list[ScoredAction] = []
        for j, la in enumerate(seq.actions):
            try:
                action = normalize_action(la.tool, dict(la.arguments), operation=la.operation, identity=identity,
                                          session_id=sid, now=_T0, action_id=f"{sid}-{j}")
            except Exception as exc:  # a tool name or argument the normaliser refuses
                raise _err(file, f"sequences[{seq.index}].actions[{j}]", str(exc)) from exc
            snapshot = ContextSnapshot(session_id=sid, started_at=_T0, original_request=seq.request,
                                       prior_actions=tuple(priors), action_count=len(priors), values=values)
            signal = scorer.score(action, snapshot)
            assert signal is not None and signal.semantic_distance is not None
            descriptor = action_descriptor(action)
            sim, _ = scorer.distance(seq.request, descriptor)  # cached: the same call `score` made
            scored.append(ScoredAction(seq.index, descriptor, sim, signal.semantic_distance,
                                       float(signal.risk_signals["semantic_drift"]), la.label == "malicious"))
            priors.append(PriorAction(action.action_id, action.tool, action.operation, DecisionResult.ALLOW, _T0))
        out.append(ScoredSequence(seq, tuple(scored)))
    return out


def derive_floor_ceiling(cut: float, benign: Sequence[float], tau: float,
                         default_width: float) -> tuple[float, float]:
    """`similarity_floor`/`similarity_ceiling` putting alignment `tau` at similarity `cut`.

    The ceiling is the median similarity of the benign actions (a typical on-task action is fully
    aligned); the floor follows from `floor + tau * (ceiling - floor) = cut`. When the median is not above
    the cut, the scorer's default width is kept around the cut instead.
    """
    ceiling = statistics.median(benign) if benign else cut + default_width
    if ceiling <= cut + 1e-6 or tau >= 1.0:
        floor = cut - tau * default_width
        ceiling = floor + default_width
    else:
        floor = (cut - tau * ceiling) / (1.0 - tau)
    floor = max(-1.0, round(floor, 4))
    ceiling = min(1.0, round(ceiling, 4))
    if ceiling <= floor:
        ceiling = min(1.0, floor + default_width)
    return floor, ceiling


@dataclass(frozen=True, slots=True)
class Detector:
    """One detector's figures: AUC and two cuts, in the detector's own units."""

    what: str
    unit: str
    positives: int
    negatives: int
    auc: float
    youden: Cut
    at_fpr: Cut
    #: the cut, in the configuration's units (similarity for alignment, EMA for drift)
    youden_threshold: float
    fpr_threshold: float

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "unit": self.unit, "positives": self.positives, "negatives": self.negatives,
                "auc": round(self.auc, 6),
                "youden": {"threshold": self.youden_threshold, "j": round(self.youden.youden, 4),
                           **self.youden.confusion.to_json()},
                "max_fpr": {"threshold": self.fpr_threshold, **self.at_fpr.confusion.to_json()}}


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    file: str
    scorer: str
    agent_type: str | None
    sequences: int
    actions: int
    drift_alpha: float
    tau: float
    max_fpr: float
    #: which cuts the snippet takes: `youden` or `max_fpr`
    basis: str
    alignment: Detector
    drift: Detector
    #: the values of the snippet
    similarity_floor: float
    similarity_ceiling: float
    drift_threshold: float
    #: counts the snippet gives: actions with alignment < tau; sequences whose EMA ever exceeds the threshold
    snippet_alignment: Confusion
    snippet_drift: Confusion
    scored: tuple[ScoredSequence, ...] = field(default=(), repr=False)

    def intent_values(self) -> dict[str, float]:
        return {"similarity_floor": self.similarity_floor, "similarity_ceiling": self.similarity_ceiling,
                "drift_alpha": self.drift_alpha, "drift_threshold": self.drift_threshold}

    def snippet(self) -> str:
        """The `intent:` section to paste into aarmor.yaml (a profile with `agent_type`)."""
        head = (f"# aarmor calibrate {self.file}: {self.sequences} sequences, {self.actions} actions, scorer "
                f"{self.scorer}\n# per-action AUC {self.alignment.auc:.3f}, drift AUC {self.drift.auc:.3f}; "
                f"thresholds from {'Youden J' if self.basis == 'youden' else f'FPR <= {self.max_fpr:g}'}; "
                f"alignment {self.tau:g} (the policy's tau) sits at similarity "
                f"{self.similarity_floor + self.tau * (self.similarity_ceiling - self.similarity_floor):.4f}\n")
        values = self.intent_values()
        body: dict[str, Any]
        if self.agent_type:
            body = {"intent": {"scorer": self.scorer, "profiles": {self.agent_type: values}}}
        else:
            body = {"intent": {"scorer": self.scorer, **values}}
        return head + str(yaml.safe_dump(body, sort_keys=False))

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file, "scorer": self.scorer, "agent_type": self.agent_type, "sequences": self.sequences,
            "actions": self.actions, "drift_alpha": self.drift_alpha, "tau": self.tau,
            "max_fpr": self.max_fpr, "basis": self.basis,
            "alignment": self.alignment.to_json(), "drift": self.drift.to_json(),
            "intent": self.intent_values(),
            "snippet_counts": {"alignment": self.snippet_alignment.to_json(), "drift": self.snippet_drift.to_json()},
            "snippet": self.snippet(),
        }


def _detector(what: str, unit: str, scores: list[float], positive: list[bool], max_fpr: float,
              lo: float, hi: float, sign: float) -> Detector:
    """`sign` -1: the configured threshold is minus the cut (similarity); +1: the cut itself (drift EMA).

    Cuts are rounded to 4 decimals and kept within [lo, hi] in the configuration's units, and the counts
    are those at the rounded cut (the FPR-bounded one rounded upwards, so it never flags more).
    """
    def snap(cut: float, up: bool) -> Cut:
        c = (math.ceil(cut * 1e4) if up else round(cut * 1e4)) / 1e4
        c = sign * min(hi, max(lo, sign * c))
        return Cut(c, confusion_at(scores, positive, c))

    y = snap(youden_cut(scores, positive).value, False)
    f = snap(fpr_cut(scores, positive, max_fpr).value, True)
    return Detector(what, unit, sum(positive), len(positive) - sum(positive), roc_auc(scores, positive), y, f,
                    round(sign * y.value, 4) + 0.0, round(sign * f.value, 4) + 0.0)


def calibrate(scorer: SemanticScorer, sequences: Sequence[LabelledSequence], *, file: str,
              agent_type: str | None = None, tau: float = 0.7, max_fpr: float | None = None,
              default_width: float = 0.3) -> CalibrationReport:
    """Score the sequences and derive the thresholds (module docstring).

    With `agent_type`, only the sequences of that agent type are used. The snippet takes the cuts bounded
    by `max_fpr` when it is given, else those maximising Youden's J (the FPR-bounded cuts are reported at
    `DEFAULT_MAX_FPR` then).

    Raises:
        CalibrationFileError: fewer than one benign and one malicious sequence, or no malicious action.
    """
    if agent_type is not None:
        sequences = [s for s in sequences if s.agent_type == agent_type]
        if not sequences:
            raise CalibrationFileError(f"{file}: no sequence has agent_type `{agent_type}`")
    labels = {s.label for s in sequences}
    if labels != set(LABELS):
        raise CalibrationFileError(f"{file}: calibrating needs benign and malicious sequences"
                                   + (f" of agent type `{agent_type}`" if agent_type else "")
                                   + f"; found only {', '.join(sorted(labels))}")
    fpr = DEFAULT_MAX_FPR if max_fpr is None else max_fpr
    scored = score_sequences(scorer, sequences, file=file)
    acts = [a for s in scored for a in s.actions]
    # per action: flagged when the similarity is low, so the detector's score is -s (cut c <=> s < -c)
    a_scores, a_pos = [-a.similarity for a in acts], [a.malicious for a in acts]
    alignment = _detector("per-action alignment", "similarity, flagged below", a_scores, a_pos, fpr,
                          -1.0, 1.0, -1.0)
    # per sequence: flagged when the drift EMA ever exceeds the threshold
    d_scores, d_pos = [s.peak_drift for s in scored], [s.sequence.label == "malicious" for s in scored]
    drift = _detector("cumulative drift", "peak drift EMA per sequence, flagged above", d_scores, d_pos, fpr,
                      0.0, 1.0, 1.0)
    basis = "youden" if max_fpr is None else "max_fpr"
    cut = alignment.youden_threshold if max_fpr is None else alignment.fpr_threshold
    floor, ceiling = derive_floor_ceiling(cut, [a.similarity for a in acts if not a.malicious], tau,
                                          default_width)
    drift_threshold = drift.youden_threshold if max_fpr is None else drift.fpr_threshold
    cal = Calibration(floor, ceiling)
    snippet_alignment = confusion_at([-cal.alignment(a.similarity) for a in acts], a_pos, -tau)
    snippet_drift = confusion_at(d_scores, d_pos, drift_threshold)
    return CalibrationReport(
        file=file, scorer=scorer.name, agent_type=agent_type, sequences=len(scored), actions=len(acts),
        drift_alpha=scorer.drift.alpha, tau=tau, max_fpr=fpr, basis=basis, alignment=alignment, drift=drift,
        similarity_floor=floor, similarity_ceiling=ceiling, drift_threshold=drift_threshold,
        snippet_alignment=snippet_alignment, snippet_drift=snippet_drift, scored=tuple(scored))
