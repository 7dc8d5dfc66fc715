"""`aarmor calibrate FILE`: intent thresholds from labelled benign and malicious sequences (AARM R7).

Runs the real scorer over the sequences (docs/intent.md, "Calibrating"; `aarmor.intent.calibrate`), prints
the ROC AUC of per-action alignment and of cumulative drift, the cuts maximising Youden's J and those within
a false-positive budget, and an `intent:` snippet (a profile with `--agent-type`).

Exit codes: 0 ok, 2 bad input (file, options, configuration, missing model).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from aarmor.cli._common import ConfigOption, JsonOption, fail

if TYPE_CHECKING:
    from aarmor.intent.calibrate import CalibrationReport, Detector

__all__ = ["calibrate"]


def calibrate(
    file: Annotated[str, typer.Argument(help="Labelled sequences, YAML or JSON (docs/intent.md), or "
                                             "builtin:sample.")],
    scorer: Annotated[str | None, typer.Option(
        "--scorer", help="embedding or lexical (default: the configured intent.scorer, else embedding).")] = None,
    agent_type: Annotated[str | None, typer.Option(
        "--agent-type", help="Only this agent type's sequences; the snippet is its profile.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the snippet to this file.")] = None,
    max_fpr: Annotated[float | None, typer.Option(
        "--max-fpr", min=0.0, max=1.0,
        help="False-positive budget: the snippet takes the cuts with the highest TPR within it "
             "(default: the cuts maximising Youden's J; FPR-bounded cuts then reported at 0.05).")] = None,
    tau: Annotated[float, typer.Option(
        "--tau", min=0.01, max=0.99,
        help="The policy's alignment cut (alignment_threshold, 0.7; builtin:agent-default's rule: 0.3).")] = 0.7,
    drift_alpha: Annotated[float | None, typer.Option(
        "--drift-alpha", min=0.0001, max=1.0,
        help="EMA weight of the newest action (default: the configured one for the agent type).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Derive intent thresholds from labelled sequences and report ROC AUC (AARM R7)."""
    from aarmor.config import load_config
    from aarmor.errors import AarmorError
    from aarmor.intent import build_scorer, resolve_profiles
    from aarmor.intent import calibrate as cal
    from aarmor.intent.scorer import SemanticScorer

    try:
        intent = load_config(config).intent
        name = scorer or (intent.scorer if intent.scorer != "neutral" else "embedding")
        if name not in ("embedding", "lexical"):
            raise fail(f"--scorer must be embedding or lexical, not `{name}`")
        kind: Literal["embedding", "lexical"] = "lexical" if name == "lexical" else "embedding"
        default, profiles = resolve_profiles(intent, name)
        profile = profiles.get(agent_type, default) if agent_type else default
        alpha = drift_alpha if drift_alpha is not None else profile.drift.alpha
        sequences = cal.load_sequences(file)
        # one profile while calibrating: the one whose thresholds are being derived
        built = build_scorer(dataclasses.replace(intent, scorer=kind, drift_alpha=alpha, profiles=(),
                                                 similarity_floor=profile.calibration.floor,
                                                 similarity_ceiling=profile.calibration.ceiling))
        assert isinstance(built, SemanticScorer)
        report = cal.calibrate(built, sequences, file=file, agent_type=agent_type, tau=tau, max_fpr=max_fpr,
                               default_width=profile.calibration.ceiling - profile.calibration.floor)
    except AarmorError as exc:
        raise fail(str(exc)) from exc
    if out is not None:
        try:
            out.write_text(report.snippet(), encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot write {out}: {exc.strerror or exc}") from exc
    if as_json:
        typer.echo(json.dumps(report.to_json()))
        return
    typer.echo(_text(report))


def _detector_lines(d: Detector, unit_fmt: str, max_fpr: float) -> list[str]:
    lines = [f"{d.what}: ROC AUC {d.auc:.4f} ({d.positives} malicious, {d.negatives} benign; {d.unit})"]
    for label, threshold, cut in (("Youden J", d.youden_threshold, d.youden),
                                  (f"FPR <= {max_fpr:g}", d.fpr_threshold, d.at_fpr)):
        c = cut.confusion
        lines.append(f"  {label:<14} {unit_fmt} {threshold:.4f}  TP {c.tp}  FP {c.fp}  TN {c.tn}  FN {c.fn}"
                     f"  TPR {c.tpr:.3f}  FPR {c.fpr:.3f}" + (f"  J {cut.youden:.3f}" if label == "Youden J" else ""))
    return lines


def _text(r: CalibrationReport) -> str:
    lines = [f"{r.file}: {r.sequences} sequences, {r.actions} actions; scorer {r.scorer}, drift_alpha "
             f"{r.drift_alpha:g}" + (f", agent type {r.agent_type}" if r.agent_type else "")]
    lines += _detector_lines(r.alignment, "similarity <", r.max_fpr)
    lines += _detector_lines(r.drift, "EMA >", r.max_fpr)
    a, d = r.snippet_alignment, r.snippet_drift
    lines.append(f"with the snippet: actions with alignment < {r.tau:g}: TP {a.tp} FP {a.fp} TN {a.tn} FN {a.fn}; "
                 f"sequences with drift_detected: TP {d.tp} FP {d.fp} TN {d.tn} FN {d.fn}")
    lines.append("")
    lines.append(r.snippet().rstrip("\n"))
    return "\n".join(lines)
