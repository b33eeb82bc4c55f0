"""The decision layer over a trained network, fitted once the network is trained: the TF-IDF
intent model and its weight, the statistics of the in-scope score, and the calibration.

A step of the pipeline of its own, after ``trainer.fit``: it reads the trained network's outputs
on a few sets of utterances and changes nothing in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from voicenlu.calibration import ScopeModel, calibrate
from voicenlu.config import TrainConfig
from voicenlu.data.background import background_requests
from voicenlu.data.records import Utterance
from voicenlu.data.snips import stratified_slice
from voicenlu.data.training import TrainData
from voicenlu.features import featurize
from voicenlu.lexical import NO_DEV_WEIGHT, LexicalModel, choose_weight
from voicenlu.model import Collator

SCOPE_PER_INTENT = 300  # training utterances per intent that the in-scope statistics see


@dataclass
class Scoring:
    """What the bundle decides with, beside the network's weights."""

    calibration: dict
    scope: ScopeModel  # statistics of the in-scope score (calibration.py)
    lexical: LexicalModel | None  # the TF-IDF intent model, when it has a weight
    lexical_weight: float


def network_outputs(trained, utterances: list[Utterance]) -> tuple[np.ndarray, np.ndarray]:
    """The trained network's intent logits and utterance vectors, in the utterances' order."""
    intent_index = {name: i for i, name in enumerate(trained.intents)}
    tag_index = {tag: i for i, tag in enumerate(trained.tags)}
    rows, _ = featurize(utterances, trained.tokenizer, intent_index, tag_index)
    collate = Collator(trained.pad_id)
    model = trained.model.eval()
    device = next(model.parameters()).device
    logits, vectors = [], []
    with torch.no_grad():
        for i in range(0, len(rows), 128):
            batch = collate(rows[i : i + 128])
            out = model(
                batch["input_ids"].to(device),
                batch["attention_mask"].to(device),
                batch["token_type_ids"].to(device),
            )
            logits.append(out["intent_logits"].float().cpu().numpy())
            vectors.append(out["utterance_vector"].float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(vectors)


def fit_scoring(trained, data: TrainData, config: TrainConfig) -> Scoring:
    """Fit the decision layer of ``trained`` (a ``trainer.Fit``) on ``data``.

    The lexical weight and the calibration are chosen on dev or, without one, on the training
    utterances with the fixed ``NO_DEV_WEIGHT``; the in-scope statistics are fitted on a
    stratified sample of what the network learnt, and calibration also ranks general requests
    of other assistants (``data.background``) against the assistant's own.
    """
    intent_index = {name: i for i, name in enumerate(trained.intents)}
    checks = data.checks
    check_logits, check_vectors = network_outputs(trained, checks)
    check_labels = np.array([intent_index[u.intent] for u in checks])
    sample = stratified_slice(trained.learnt, SCOPE_PER_INTENT, config.seed)
    _, sample_vectors = network_outputs(trained, sample)
    scope = ScopeModel.fit(sample_vectors, np.array([intent_index[u.intent] for u in sample]))
    # Labelled with any intent: only their logits and vectors are read.
    others = [Utterance(text, trained.intents[0]) for text in background_requests()]
    others_logits, others_vectors = network_outputs(trained, others)
    lexical, weight = None, 0.0
    if config.lexical and len(trained.intents) > 1:  # one intent leaves nothing to tell apart
        lexical = LexicalModel.fit(trained.learnt, trained.intents)
        evidence = lexical.log_probs([u.text for u in checks])
        if data.dev:
            weight = choose_weight(check_logits, evidence, check_labels)
        else:  # the training utterances would choose whatever fits them best: a fixed weight
            weight = NO_DEV_WEIGHT
        check_logits = check_logits + weight * evidence
        others_logits = others_logits + weight * lexical.log_probs([u.text for u in others])
    return Scoring(
        calibration=calibrate(
            check_logits,
            check_labels,
            density=scope.density(check_vectors),
            background=(others_logits, scope.density(others_vectors)),
        ),
        scope=scope,
        lexical=lexical if weight else None,
        lexical_weight=weight,
    )
