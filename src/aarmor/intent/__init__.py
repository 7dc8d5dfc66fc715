"""Intent alignment (AARM R3 step 5, R7): a pluggable scorer the pipeline asks before the PDP.

The scorer runs in the pipeline, not in the PDP, so the PDP stays pure: its result goes into the
`ContextSnapshot` (`alignment`, `semantic_distance`, `confidence`, and drift in `risk_signals`).

Scorers (`intent.scorer` in the configuration, docs/intent.md):
- `neutral` (default): no signal; the PDP skips the alignment overrides.
- `embedding`: all-MiniLM-L6-v2 sentence embeddings (`aarmor[semantic]`, `aarmor.intent.embedding`).
- `lexical`: word overlap, no extra needed (`aarmor.intent.lexical`); much coarser.
Configuring `embedding` without the extra installed is an error at start naming the extra, never a silent
fallback to `lexical` or `neutral`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aarmor.model import Action, ContextSnapshot, FrozenMap

if TYPE_CHECKING:
    from aarmor.config import IntentConfig

__all__ = ["AlignmentScorer", "AlignmentSignal", "NeutralScorer", "build_scorer"]


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
    from .scorer import Calibration, DriftSettings, SemanticScorer

    floor, ceiling, drift = DEFAULTS[cfg.scorer]
    calibration = Calibration(cfg.similarity_floor if cfg.similarity_floor is not None else floor,
                              cfg.similarity_ceiling if cfg.similarity_ceiling is not None else ceiling)
    settings = DriftSettings(cfg.drift_alpha, cfg.drift_threshold if cfg.drift_threshold is not None else drift)
    if cfg.scorer == "lexical":
        from .lexical import lexical_similarity

        return SemanticScorer("lexical", lexical_similarity, calibration=calibration, drift=settings)
    from .embedding import MiniLMEncoder, locate_model_files, verify_files

    files = locate_model_files(cfg.model_path, cfg.tokenizer_path)
    verify_files(files)
    encoder = MiniLMEncoder(files, threads=cfg.threads, cache_size=cfg.cache_size)
    return SemanticScorer("embedding", encoder.similarity, calibration=calibration, drift=settings,
                          encoder=encoder)
