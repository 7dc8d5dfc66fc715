"""Data classification of tool outputs (AARM R2: labels, patterns or rules; default to highest).

Rules this module enforces:
- Labels are upper-case identifiers (`[A-Z][A-Z0-9_]*`). Levels form an ordered ladder (default
  PUBLIC < INTERNAL < CONFIDENTIAL < RESTRICTED); every other label is a category (PII, PHI, FINANCIAL,
  CREDENTIALS, ...). A category implies a level (`category_levels`); a category with no mapping counts at
  the `unclassified` level unless an explicit level label accompanies it.
- Three mechanisms classify an executed action's output: labels declared for the tool in config
  (`tools: {crm.query: {returns: [PII]}}`; a `tool` key covers all its operations), the pattern
  detectors (`aarmor.context.detectors`), and the deciding rule's effects
  (`effects.data_classification`). The result is their union; the level is the highest implied.
- AARM R2 default-to-highest: the output of a tool not declared in config counts at the `unclassified`
  level (RESTRICTED by default). A detector hit on such output adds its categories but never lowers the
  level: a detector proves that something is present, never that nothing else is (otherwise an
  attacker could plant an e-mail address in a web page to downgrade it from RESTRICTED to CONFIDENTIAL).
- A declared tool with `returns: []` or `[PUBLIC]` is PUBLIC when no detector fires.
- No output (None) or an action that did not execute: no classification, except rule effects when
  the action executed.
- Detectors scan at most `limits.max_scan_bytes` bytes of the output's text (a str as is, bytes as
  UTF-8, structured output as its RFC 8785 canonical JSON, other objects as their repr); the rest is
  counted, not scanned. Output that cannot be turned into text at all counts at the `unclassified`
  level whatever the tool.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aarmor.canonical import TAG_OUTPUT, digest
from aarmor.errors import ConfigError, InputError
from aarmor.limits import DEFAULT_LIMITS, Limits
from aarmor.model import Action
from aarmor.normalize import normalize_name

from ._canon import plain_and_bytes
from .detectors import DEFAULT_DETECTORS, Detector, run_detectors

__all__ = [
    "DEFAULT_CATEGORY_LEVELS",
    "DEFAULT_LEVELS",
    "Classifier",
    "OutputClass",
    "OutputText",
    "check_labels",
    "output_text",
]

DEFAULT_LEVELS: tuple[str, ...] = ("PUBLIC", "INTERNAL", "CONFIDENTIAL", "RESTRICTED")
DEFAULT_CATEGORY_LEVELS: Mapping[str, str] = {
    "PII": "CONFIDENTIAL",
    "FINANCIAL": "CONFIDENTIAL",
    "PHI": "RESTRICTED",
    "CREDENTIALS": "RESTRICTED",
}
_LABEL = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def check_labels(labels: Iterable[str] | str, *, what: str) -> frozenset[str]:
    """Normalise labels to upper case and check their shape.

    Raises:
        InputError: a label is not a string or not an identifier (names `what` and the label).
    """
    if isinstance(labels, str):
        labels = (labels,)
    return frozenset(_label(lab, what=what) for lab in labels)


def _label(lab: Any, *, what: str) -> str:
    if not isinstance(lab, str) or not _LABEL.fullmatch(lab.strip().upper()):
        raise InputError(f"{what}: label `{lab}` is not an identifier like `PII` or `CONFIDENTIAL`")
    return lab.strip().upper()


@dataclass(frozen=True, slots=True)
class OutputText:
    """An output reduced to what the detectors scan, plus its digest and size."""

    text: str
    total_bytes: int
    scanned_bytes: int
    digest: str
    #: "text" (str), "bytes", "json" (structured, canonical JSON), "repr" (repr() of an object), "opaque"
    form: str


def output_text(output: Any, *, max_scan_bytes: int) -> OutputText:
    """Text, size and `TAG_OUTPUT` digest of a tool output, truncated to `max_scan_bytes` for scanning.

    The digest of a str or structured output is `digest(TAG_OUTPUT, output)`; of bytes, over the raw
    bytes; of anything else, over the UTF-8 of `repr(output)`.
    """
    form = "text"
    if isinstance(output, str):
        try:
            raw = output.encode("utf-8")
        except UnicodeEncodeError:
            raw = output.encode("utf-8", "surrogatepass")
        try:
            d = digest(TAG_OUTPUT, output)
        except InputError:
            d, form = digest(TAG_OUTPUT, raw=raw), "bytes"
    elif isinstance(output, bytes | bytearray | memoryview):
        raw, form = bytes(output), "bytes"
        d = digest(TAG_OUTPUT, raw=raw)
    else:
        try:
            raw, form = plain_and_bytes(output)[1], "json"  # == canonical_bytes(output), faster
        except (InputError, RecursionError):
            try:
                raw, form = repr(output).encode("utf-8", "surrogatepass"), "repr"
            except Exception:
                raw, form = b"", "opaque"
                return OutputText("", 0, 0, digest(TAG_OUTPUT, raw=type(output).__qualname__.encode()), form)
        d = digest(TAG_OUTPUT, raw=raw)
    scanned = min(len(raw), max_scan_bytes)
    if form == "text" and scanned == len(raw):
        text = output  # no copy: the whole str fits
    else:
        text = raw[:scanned].decode("utf-8", "ignore")
    return OutputText(text, len(raw), scanned, d, form)


@dataclass(frozen=True, slots=True)
class OutputClass:
    """The classification of one output. `labels` holds categories and the level (if any)."""

    labels: frozenset[str]
    level: str | None
    detectors: tuple[str, ...] = ()
    declared: bool = False
    #: True when the AARM R2 default (highest sensitivity) decided the level
    unclassified: bool = False
    output: OutputText | None = None


class Classifier:
    """Classifies tool outputs from declarations, pattern detectors and rule effects.

    `declared` maps tool names (`crm.query`, or `crm` for every operation) to the labels they return;
    `trusted` names further tools that count as declared with no labels. `levels` is the ordered ladder,
    `unclassified` the level of output that nothing classifies (AARM R2: the highest by default).
    """

    __slots__ = ("_cat", "_declared", "_detectors", "_rank", "_trusted", "levels", "limits", "unclassified")

    def __init__(self, *, declared: Mapping[str, Iterable[str]] | None = None, trusted: Iterable[str] = (),
                 levels: Iterable[str] = DEFAULT_LEVELS, unclassified: str | None = None,
                 category_levels: Mapping[str, str] | None = None,
                 detectors: tuple[Detector, ...] = DEFAULT_DETECTORS,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        """Raises:
            ConfigError: empty or duplicate levels, an unknown `unclassified` level, a bad tool name or
                label, or a category mapped to a level outside the ladder.
        """
        if isinstance(levels, str):
            raise ConfigError(f"classification levels must be a list, found the string `{levels}`")
        try:
            lv = tuple(_label(x, what="classification levels") for x in levels)
        except InputError as exc:
            raise ConfigError(str(exc)) from exc
        if not lv or len(set(lv)) != len(lv):
            raise ConfigError(f"classification levels `{list(lv)}` must be a non-empty list of distinct "
                              "labels")
        self.levels = lv
        self._rank = {name: i for i, name in enumerate(lv)}
        unc = (unclassified or lv[-1]).upper()
        if unc not in self._rank:
            raise ConfigError(f"unclassified level `{unclassified}` is not one of {', '.join(lv)}")
        self.unclassified = unc
        cat: dict[str, str] = {}
        for c, level in (category_levels if category_levels is not None else DEFAULT_CATEGORY_LEVELS).items():
            level = level.upper()
            if level not in self._rank:
                if category_levels is not None:
                    raise ConfigError(f"category `{c}` maps to level `{level}`, expected one of "
                                      f"{', '.join(lv)}")
                level = lv[-1]  # a custom ladder without the default level: be conservative
            cat[c.upper()] = level
        self._cat = cat
        decl: dict[str, frozenset[str]] = {}
        self._trusted: frozenset[str] = frozenset()
        try:
            self._trusted = frozenset(normalize_name(name, what="trusted tool name") for name in trusted)
            for name in self._trusted:
                decl[name] = frozenset()
            for name, labels in (declared or {}).items():
                decl[normalize_name(name, what="declared tool name")] = check_labels(
                    labels, what=f"tool `{name}` returns")
        except InputError as exc:
            raise ConfigError(str(exc)) from exc
        self._declared = decl
        self._detectors = detectors
        self.limits = limits

    @classmethod
    def from_config(cls, cfg: Any, *, limits: Limits = DEFAULT_LIMITS) -> Classifier:
        """Build from `aarmor.config.Config`: `cfg.tools[name].returns` (None = not declared) and
        `.trusted`, `cfg.classification.levels` and `.unclassified`.

        Raises:
            ConfigError: as for the constructor.
        """
        declared: dict[str, tuple[str, ...]] = {}
        trusted: list[str] = []
        for name, tc in (getattr(cfg, "tools", None) or {}).items():
            returns = getattr(tc, "returns", None)
            if returns is not None:
                declared[name] = tuple(returns)
            elif getattr(tc, "trusted", False):
                trusted.append(name)
        cc = getattr(cfg, "classification", None)
        return cls(declared=declared, trusted=trusted, levels=getattr(cc, "levels", DEFAULT_LEVELS),
                   unclassified=getattr(cc, "unclassified", None),
                   category_levels=getattr(cc, "category_levels", None), limits=limits)

    # --- the ladder ----------------------------------------------------------------------------
    def rank(self, level: str | None) -> int:
        """Index of `level` in the ladder; -1 for None; an unknown level counts as the highest."""
        if level is None:
            return -1
        return self._rank.get(level, len(self.levels) - 1)

    def level_of(self, labels: Iterable[str]) -> str | None:
        """The highest level the labels name or imply (None for no labels)."""
        best, explicit, unmapped = -1, False, False
        for lab in labels:
            if lab in self._rank:
                best, explicit = max(best, self._rank[lab]), True
            elif lab in self._cat:
                best = max(best, self._rank[self._cat[lab]])
            else:
                unmapped = True
        if unmapped and not explicit:
            best = max(best, self._rank[self.unclassified])
        return self.levels[best] if best >= 0 else None

    def is_declared(self, action: Action) -> bool:
        return action.name in self._declared or action.tool in self._declared

    def is_trusted(self, action: Action) -> bool:
        """The tool is declared trusted (`tools: {name: {trusted: true}}`): its outputs are not a source
        of untrusted values for provenance."""
        return action.name in self._trusted or action.tool in self._trusted

    # --- classification ------------------------------------------------------------------------
    def classify(self, action: Action, output: Any, *, executed: bool = True,
                 effects: Any = None) -> OutputClass:
        """Classify the output of one action (see the module docstring for the rules).

        Raises:
            InputError: `effects.data_classification` holds a malformed label.
        """
        effect_labels = _effect_labels(effects)
        if not executed:
            return OutputClass(frozenset(), None)
        declared = self._declared.get(action.name)
        if declared is None:
            declared = self._declared.get(action.tool)
        is_declared = declared is not None
        if output is None:
            # nothing returned: only what the rule says the action touched
            return OutputClass(self._with_level(effect_labels), self.level_of(effect_labels),
                               declared=is_declared)
        view = output_text(output, max_scan_bytes=self.limits.max_scan_bytes)
        hits = run_detectors(view.text, self._detectors) if view.text else ()
        labels: set[str] = set(effect_labels)
        if declared:
            labels |= declared
        for det in hits:
            labels |= det.categories
            labels.add(det.level if det.level in self._rank else self.levels[-1])
        unclassified = False
        if not is_declared or view.form == "opaque":
            # AARM R2: nothing vouches for this output, so it counts at the highest configured level.
            labels.add(self.unclassified)
            unclassified = True
        elif not labels:
            labels.add(self.levels[0])
        level = self.level_of(labels)
        return OutputClass(self._with_level(labels), level, tuple(d.name for d in hits), is_declared,
                           unclassified, view)

    def _with_level(self, labels: Iterable[str]) -> frozenset[str]:
        labels = frozenset(labels)
        level = self.level_of(labels)
        return labels | {level} if level is not None else labels


def _effect_labels(effects: Any) -> frozenset[str]:
    if not effects:
        return frozenset()
    if not isinstance(effects, Mapping):
        raise InputError(f"rule effects must be a mapping, found {type(effects).__name__}")
    value = effects.get("data_classification")
    if value is None:
        return frozenset()
    if not isinstance(value, str | list | tuple | frozenset | set):
        raise InputError(f"effect data_classification must be a label or a list, found `{value!r}`")
    return check_labels(value, what="effect data_classification")
