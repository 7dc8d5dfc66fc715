"""Intent alignment (AARM R3 step 5, R7): a pluggable scorer the pipeline asks before the PDP.

The scorer runs in the pipeline, not in the PDP, so the PDP stays pure: its result goes into the
`ContextSnapshot` (`alignment`, `semantic_distance`, `confidence`). This issue ships `NeutralScorer`, which
reports "no signal"; the PDP then skips the alignment overrides. The embedding scorer is a later issue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aarmor.model import Action, ContextSnapshot

__all__ = ["AlignmentScorer", "AlignmentSignal", "NeutralScorer"]


@dataclass(frozen=True, slots=True)
class AlignmentSignal:
    alignment: float | None = None
    semantic_distance: float | None = None
    confidence: float | None = None


class AlignmentScorer(Protocol):
    name: str

    def score(self, action: Action, snapshot: ContextSnapshot) -> AlignmentSignal | None:
        """Score `action` against the session's original request; None means no signal."""


class NeutralScorer:
    """Reports no signal: alignment overrides and the confidence trigger stay inactive."""

    name = "neutral"

    def score(self, action: Action, snapshot: ContextSnapshot) -> AlignmentSignal | None:
        return None
