"""Intent alignment (AARM R3 step 5, R7): a pluggable scorer the pipeline asks before the PDP.

The scorer runs in the pipeline, not in the PDP, so the PDP stays pure: its result goes into the
`ContextSnapshot` (`alignment`, `semantic_distance`, `confidence`, and drift in `risk_signals`).

Scorers (`intent.scorer` in the configuration, docs/intent.md):
- `neutral` (default): no signal; the PDP skips the alignment overrides.
- `embedding`: all-MiniLM-L6-v2 sentence embeddings (`aarmor[semantic]`, `aarmor.intent.embedding`).
- `lexical`: word overlap, no extra needed (`aarmor.intent.lexical`); much coarser.
Thresholds per agent type: `intent.profiles` (`resolve_profiles`); deriving them from labelled sequences:
`aarmor calibrate` (`aarmor.intent.calibrate`).
Configuring `embedding` without the extra installed is an error at start naming the extra, never a silent
fallback to `lexical` or `neutral`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aarmor.model import Action, ContextSnapshot, FrozenMap

if TYPE_CHECKING:
    from aarmor.config import IntentConfig

    from .scorer import Profile

__all__ = ["AlignmentScorer", "AlignmentSignal", "NeutralScorer", "build_scorer", "resolve_profiles"]


@dataclass(frozen=True, slots=True)
class AlignmentSignal:
    alignment: float | None = None
    semantic_distance: float | None = None
    confidence: float | None = None
    #: signals for `ContextSnapshot.risk_signals` (cumulative drift: `semantic_drift`, ...)
    risk_signals: FrozenMap = field(default_factory=FrozenMap)


class AlignmentScorer(Protocol):
    name: str

    def score(self, action: Action, snapshot: ContextSnapshot) -> AlignmentSignal | None:
        """Score `action` against the session's original request; None means no signal."""


class NeutralScorer:
    """Reports no signal: alignment overrides and the confidence trigger stay inactive."""

    name = "neutral"

    def score(self, action: Action, snapshot: ContextSnapshot) -> AlignmentSignal | None:
        return None


#: (similarity floor, similarity ceiling, drift threshold) per scorer, when the configuration leaves them out
DEFAULTS = {"embedding": (0.0, 0.3, 0.9), "lexical": (0.0, 0.5, 0.97)}


def build_scorer(cfg: IntentConfig) -> AlignmentScorer:
    """The scorer `intent.scorer` names.

    `embedding` checks at once that the extra is installed and that both model files have the pinned
    SHA-256 (about 20 ms; onnxruntime itself is imported and the model loaded on first use).

    Raises:
        SemanticUnavailable: `embedding` without the `aarmor[semantic]` pieces (the message says what to install).
        ModelIntegrityError: a model file is not the pinned one.
        ConfigError: bad thresholds.
    """
    if cfg.scorer == "neutral":
        return NeutralScorer()
    from .scorer import SemanticScorer

    default, profiles = resolve_profiles(cfg)
    if cfg.scorer == "lexical":
        from .lexical import lexical_similarity

        return SemanticScorer("lexical", lexical_similarity, calibration=default.calibration, drift=default.drift,
                              profiles=profiles)
    from .embedding import MiniLMEncoder, locate_model_files, verify_files

    files = locate_model_files(cfg.model_path, cfg.tokenizer_path)
    verify_files(files)
    encoder = MiniLMEncoder(files, threads=cfg.threads, cache_size=cfg.cache_size)
    return SemanticScorer("embedding", encoder.similarity, calibration=default.calibration, drift=default.drift,
                          profiles=profiles, encoder=encoder)


def resolve_profiles(cfg: IntentConfig, scorer: str | None = None) -> tuple[Profile, dict[str, Profile]]:
    """The default profile and the profiles per agent type, every threshold filled in.

    A value left out of a profile is the top-level one; a top-level value left out is the scorer's default
    (`DEFAULTS`). `scorer` overrides `cfg.scorer` (which must then not be `neutral`).

    Raises:
        ConfigError: bad thresholds (naming the profile).
    """
    from aarmor.errors import ConfigError

    from .scorer import Calibration, DriftSettings, Profile

    floor, ceiling, drift = DEFAULTS[scorer or cfg.scorer]
    top = (cfg.similarity_floor if cfg.similarity_floor is not None else floor,
           cfg.similarity_ceiling if cfg.similarity_ceiling is not None else ceiling,
           cfg.drift_alpha, cfg.drift_threshold if cfg.drift_threshold is not None else drift)
    default = Profile(None, Calibration(top[0], top[1]), DriftSettings(top[2], top[3]))
    profiles: dict[str, Profile] = {}
    for name, p in cfg.profiles:
        values = [v if v is not None else t for v, t in
                  zip((p.similarity_floor, p.similarity_ceiling, p.drift_alpha, p.drift_threshold), top, strict=True)]
        try:
            profiles[name] = Profile(name, Calibration(values[0], values[1]), DriftSettings(values[2], values[3]))
        except ConfigError as exc:
            raise ConfigError(f"intent.profiles.{name}: {exc}") from exc
    return default, profiles
