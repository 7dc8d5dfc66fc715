"""`aarmor calibrate`: the ROC routines on hand-computed cases, the file format's errors, and the command end to
end on the shipped sample set with the real embedding model, checked against an independent recomputation."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from aarmor.cli.calibrate import calibrate as calibrate_command
from aarmor.config import load_config
from aarmor.intent.calibrate import (
    SAMPLE_SEQUENCES,
    CalibrationFileError,
    confusion_at,
    derive_floor_ceiling,
    fpr_cut,
    load_sequences,
    roc_auc,
    youden_cut,
)
from aarmor.intent.embedding import MiniLMEncoder
from aarmor.intent.scorer import Calibration, action_descriptor
from aarmor.model import Identity
from aarmor.normalize import normalize_action

T, F = True, False
_NOW = datetime(2026, 1, 1, tzinfo=UTC)


# --- ROC AUC, by hand -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("scores", "positive", "expected"), [
    # the textbook case: of the 4 (positive, negative) pairs, 3 are ordered right
    ([0.1, 0.4, 0.35, 0.8], [F, F, T, T], Fraction(3, 4)),
    ([0.1, 0.2, 0.3, 0.4], [F, F, T, T], Fraction(1)),        # perfect
    ([0.1, 0.2, 0.3, 0.4], [T, T, F, F], Fraction(0)),        # inverted
    ([0.5, 0.5, 0.5], [T, F, F], Fraction(1, 2)),              # all tied: a coin
    # ties across the classes count one half: positives 0.5, 0.5; negatives 0.5, 0.2
    # pairs (0.5|0.5) 1/2, (0.5|0.2) 1, twice: 3 of 4
    ([0.5, 0.5, 0.5, 0.2], [T, T, F, F], Fraction(3, 4)),
    # positives 1, 2, 2, 3; negatives 2, 2, 0: 1 -> 1; 2 -> 1/2 + 1/2 + 1 (twice); 3 -> 3; 8 of 12
    ([1, 2, 2, 3, 2, 2, 0], [T, T, T, T, F, F, F], Fraction(2, 3)),
    # ties within a class only change nothing: positives 0.9, 0.9; negatives 0.1, 0.1
    ([0.9, 0.1, 0.9, 0.1], [T, F, T, F], Fraction(1)),
])
def test_roc_auc_hand_computed(scores: list[float], positive: list[bool], expected: Fraction) -> None:
    assert roc_auc(scores, positive) == float(expected)


def _pairwise(scores: list[float], positive: list[bool]) -> Fraction:
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    wins = sum((Fraction(1) if a > b else Fraction(1, 2) if a == b else Fraction(0)
               for a in pos for b in neg), Fraction(0))
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_the_pairwise_definition_with_many_ties() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(2, 30)
        scores = [rng.randint(0, 5) / 5 for _ in range(n)]  # few distinct values: ties everywhere
        positive = [rng.random() < 0.5 for _ in range(n)]
        if all(positive) or not any(positive):
            positive[0] = not positive[0]
        assert roc_auc(scores, positive) == float(_pairwise(scores, positive))


def test_roc_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        roc_auc([0.1, 0.2], [T, T])
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0.1], [T, F])


def test_cuts_and_confusion() -> None:
    scores, positive = [0.1, 0.5, 0.3, 0.6], [F, F, T, T]
    c = confusion_at(scores, positive, 0.3)  # strictly above is flagged: 0.3 is not
    assert (c.tp, c.fp, c.tn, c.fn) == (1, 1, 1, 1)
    # J = 1/2 at 0.2 (TP 2, FP 1) and at 0.55 (TP 1, FP 0): the lower FPR wins
    y = youden_cut(scores, positive)
    assert y.value == pytest.approx(0.55) and (y.confusion.tp, y.confusion.fp) == (1, 0)
    assert y.youden == pytest.approx(0.5)
    f = fpr_cut(scores, positive, 0.5)  # FPR 1/2 allowed: everything above 0.2
    assert f.value == pytest.approx(0.2) and (f.confusion.tp, f.confusion.fp) == (2, 1)
    none = fpr_cut([0.9, 0.1], [F, T], 0.0)  # only flagging nothing keeps FPR 0
    assert (none.confusion.tp, none.confusion.fp) == (0, 0)
    perfect = youden_cut([0.1, 0.2, 0.3, 0.4], [F, F, T, T])
    assert perfect.value == pytest.approx(0.25) and perfect.youden == 1.0


def test_floor_and_ceiling_put_tau_at_the_cut() -> None:
    floor, ceiling = derive_floor_ceiling(0.19, [0.3, 0.44, 0.6], 0.7, 0.3)
    assert ceiling == 0.44
    assert Calibration(floor, ceiling).alignment(0.19) == pytest.approx(0.7, abs=1e-3)
    # the benign median not above the cut: the default width around the cut
    floor, ceiling = derive_floor_ceiling(0.5, [0.2, 0.3], 0.7, 0.3)
    assert ceiling - floor == pytest.approx(0.3) and Calibration(floor, ceiling).alignment(0.5) == \
        pytest.approx(0.7, abs=1e-3)


# --- the file format ------------------------------------------------------------------------------------

GOOD = {"request": "pay my rent", "label": "malicious", "actions": [
    {"tool": "get_balance", "label": "benign"}, {"tool": "send_money", "arguments": {"amount": 5}}]}


@pytest.mark.parametrize(("doc", "message"), [
    ({"sequences": [{**GOOD, "request": ""}]}, r"sequences\[0\]\.request: must be a non-empty string"),
    ({"sequences": [{k: v for k, v in GOOD.items() if k != "request"}]}, r"sequences\[0\]\.request: required"),
    ({"sequences": [GOOD, {**GOOD, "label": "bad"}]},
     r"sequences\[1\]\.label: must be `benign` or `malicious`, found 'bad'"),
    ({"sequences": [{**GOOD, "actions": [{"tool": "x", "label": "evil"}]}]}, r"sequences\[0\]\.actions\[0\]\.label"),
    ({"sequences": [{**GOOD, "actions": [{"tool": "x", "arguments": [1]}]}]},
     r"sequences\[0\]\.actions\[0\]\.arguments: must be a mapping"),
    ({"sequences": [{**GOOD, "actions": [{"name": "x"}]}]}, r"sequences\[0\]\.actions\[0\]\.name: unknown field"),
    ({"sequences": [{**GOOD, "actions": [{"arguments": {}}]}]}, r"sequences\[0\]\.actions\[0\]\.tool: required"),
    ({"sequences": [{**GOOD, "actions": []}]}, r"sequences\[0\]\.actions: required: a non-empty list"),
    ({"sequences": [{**GOOD, "label": "benign", "actions": [{"tool": "x", "label": "malicious"}]}]},
     r"sequences\[0\]\.label: a benign sequence cannot hold an action labelled malicious"),
    ({"sequences": [{**GOOD, "agent_type": 3}]}, r"sequences\[0\]\.agent_type: must be a non-empty string"),
    ({"sequence": []}, r"\(top level\)\.sequence: unknown field"),
    ({"sequences": "x"}, r"sequences: required: a list"),
    ({"sequences": [3]}, r"sequences\[0\]: must be a mapping, found int"),
    ({"sequences": []}, r"sequences: no sequences"),
])
def test_bad_files_name_file_sequence_and_field(tmp_path: Path, doc: Any, message: str) -> None:
    p = tmp_path / "seq.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(CalibrationFileError, match=rf"^{p}: {message}"):
        load_sequences(p)


def test_files_yaml_json_and_a_bare_list(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([GOOD]))
    (tmp_path / "b.yaml").write_text("sequences:\n  - request: pay my rent\n    label: benign\n"
                                     "    actions: [{tool: get_balance}]\n")
    (tmp_path / "c.yaml").write_text("sequences: [\n")
    a = load_sequences(tmp_path / "a.json")[0]
    assert [x.label for x in a.actions] == ["benign", "malicious"]  # the action label defaults to the sequence's
    assert load_sequences(tmp_path / "b.yaml")[0].actions[0].arguments == {}
    with pytest.raises(CalibrationFileError, match=r"c\.yaml: not valid YAML"):
        load_sequences(tmp_path / "c.yaml")
    with pytest.raises(CalibrationFileError, match=r"missing\.yaml: cannot read"):
        load_sequences(tmp_path / "missing.yaml")


def test_the_sample_set_is_balanced_and_covers_agent_types() -> None:
    seqs = load_sequences("builtin:sample")
    assert seqs == load_sequences(SAMPLE_SEQUENCES)
    labels = [s.label for s in seqs]
    assert labels.count("benign") == labels.count("malicious") == 8
    kinds = {s.agent_type for s in seqs}
    assert {"mail-assistant", "banking-assistant", "dev-assistant", None} <= kinds
    for kind in kinds - {None}:
        assert {s.label for s in seqs if s.agent_type == kind} == {"benign", "malicious"}


# --- the command, end to end on the real model ------------------------------------------------------------

def _expected(encoder: MiniLMEncoder, alpha: float, agent_type: str | None = None) -> tuple[float, float]:
    """Per-action and drift AUC recomputed independently: similarities from the encoder, EMA by hand."""
    sims, bad, peaks, seq_bad = [], [], [], []
    for seq in load_sequences(SAMPLE_SEQUENCES):
        if agent_type is not None and seq.agent_type != agent_type:
            continue
        ema, peak = 0.0, 0.0
        for n, a in enumerate(seq.actions):
            action = normalize_action(a.tool, dict(a.arguments), operation=a.operation, identity=Identity(),
                                      session_id="x", now=_NOW)
            s = encoder.similarity(seq.request, action_descriptor(action))
            d = min(1.0, max(0.0, 1.0 - s))
            ema = d if n == 0 else alpha * d + (1 - alpha) * ema
            peak = max(peak, round(ema, 6))
            sims.append(-s)
            bad.append(a.label == "malicious")
        peaks.append(peak)
        seq_bad.append(seq.label == "malicious")
    return float(_pairwise(sims, bad)), float(_pairwise(peaks, seq_bad))


def test_the_command_end_to_end(encoder: MiniLMEncoder, tmp_path: Path) -> None:
    """The installed `aarmor` entry point, a fresh process, the real model."""
    out = tmp_path / "intent.yaml"
    proc = subprocess.run([sys.executable, "-c", "from aarmor.cli import main; main()", "calibrate",
                           "builtin:sample", "--scorer", "embedding", "--json", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    per_action, drift = _expected(encoder, 0.4)
    assert report["alignment"]["auc"] == pytest.approx(per_action, abs=1e-6)
    assert report["drift"]["auc"] == pytest.approx(drift, abs=1e-6)
    assert (report["sequences"], report["actions"]) == (16, 57)
    assert report["alignment"]["positives"] + report["alignment"]["negatives"] == 57
    # the sample set separates well on the model (measured: per action 0.97, drift 0.86)
    assert report["alignment"]["auc"] > 0.9 and report["drift"]["auc"] > 0.75
    youden = report["alignment"]["youden"]
    assert youden["tp"] + youden["fn"] == report["alignment"]["positives"]
    assert youden["j"] == pytest.approx(youden["tpr"] - youden["fpr"], abs=1e-3)
    # the snippet is valid configuration and holds the reported values
    cfg = load_config(out).intent
    assert cfg.scorer == "embedding"
    assert (cfg.similarity_floor, cfg.similarity_ceiling, cfg.drift_threshold) == (
        report["intent"]["similarity_floor"], report["intent"]["similarity_ceiling"],
        report["intent"]["drift_threshold"])
    assert report["intent"]["drift_threshold"] == report["drift"]["youden"]["threshold"]
    # at the snippet's floor and ceiling, alignment < 0.7 flags what the similarity cut flags
    assert report["snippet_counts"]["alignment"]["tp"] == youden["tp"]
    assert report["snippet_counts"]["alignment"]["fp"] == youden["fp"]


def _runner_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(calibrate_command)
    return app


def test_a_profile_for_an_agent_type(encoder: MiniLMEncoder, tmp_path: Path) -> None:
    out = tmp_path / "profile.yaml"
    res = CliRunner().invoke(_runner_app(), ["builtin:sample", "--agent-type", "mail-assistant", "--max-fpr", "0",
                                             "--drift-alpha", "0.3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "6 sequences" in res.output and "agent type mail-assistant" in res.output
    assert "thresholds from FPR <= 0" in res.output
    cfg = load_config(out).intent
    ((name, profile),) = cfg.profiles
    assert name == "mail-assistant" and profile.drift_alpha == 0.3
    res = CliRunner().invoke(_runner_app(), ["builtin:sample", "--agent-type", "mail-assistant", "--max-fpr", "0",
                                             "--drift-alpha", "0.3", "--json"])
    report = json.loads(res.output)
    assert report["alignment"]["max_fpr"]["fp"] == 0 and report["drift"]["max_fpr"]["fp"] == 0
    assert report["intent"]["drift_threshold"] == report["drift"]["max_fpr"]["threshold"]
    per_action, drift = _expected(encoder, 0.3, "mail-assistant")
    assert report["alignment"]["auc"] == pytest.approx(per_action, abs=1e-6)
    assert report["drift"]["auc"] == pytest.approx(drift, abs=1e-6)


def test_the_lexical_scorer_and_errors(tmp_path: Path) -> None:
    res = CliRunner().invoke(_runner_app(), ["builtin:sample", "--scorer", "lexical", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["scorer"] == "lexical"
    bad = tmp_path / "bad.yaml"
    bad.write_text("sequences: [{request: x, label: benign, actions: [{tool: a, label: nope}]}]\n")
    for args, message in (
        ([str(bad)], f"{bad}: sequences[0].actions[0].label: must be `benign` or `malicious`"),
        (["builtin:sample", "--scorer", "word2vec"], "--scorer must be embedding or lexical"),
        (["builtin:sample", "--agent-type", "nobody", "--scorer", "lexical"], "no sequence has agent_type `nobody`"),
    ):
        res = CliRunner().invoke(_runner_app(), args)
        assert res.exit_code == 2 and message in res.output, res.output
    only = tmp_path / "only.yaml"
    only.write_text("[{request: x, label: benign, actions: [{tool: a}]}]\n")
    res = CliRunner().invoke(_runner_app(), [str(only), "--scorer", "lexical"])
    assert res.exit_code == 2 and "needs benign and malicious sequences; found only benign" in res.output
