"""Contrastive warm start: pull the encoder's sentence vectors of one intent together, and
those of different intents apart, before the joint training (the idea of SetFit, Tunstall
et al. 2022).

With ten examples per intent the intent head has few utterances to learn from, but
pairs of them are many: ``n`` utterances make about ``n**2 / 2`` pairs. The encoder is
trained on a budget of such pairs, half of one intent and half of two, to give their
mean-pooled vectors a cosine similarity of 1 and 0 (SetFit's cosine-similarity loss).
"""

from __future__ import annotations

import random

import torch
from torch import nn

from voicenlu.data.records import Utterance
from voicenlu.model import mean_pool

LEARNING_RATE = 2e-5  # SetFit's body learning rate
BATCH_SIZE = 16  # pairs per step


def contrastive_pairs(
    utterances: list[Utterance], total: int, seed: int
) -> list[tuple[str, str, float]]:
    """``total`` pairs (text, text, 1.0 if same intent else 0.0), positives and negatives in
    turn, each utterance in turn as the first of a pair. Intents with one utterance give
    negatives only; with one intent there are no negatives, so no pairs at all."""
    rng = random.Random(seed)
    by_intent: dict[str, list[str]] = {}
    for u in utterances:
        by_intent.setdefault(u.intent, []).append(u.text)
    if len(by_intent) < 2:
        return []
    texts = [(u.text, u.intent) for u in utterances]
    pairs: list[tuple[str, str, float]] = []
    while len(pairs) < total:
        rng.shuffle(texts)
        for text, intent in texts:
            same = [t for t in by_intent[intent] if t != text]
            if same and len(pairs) % 2 == 0:
                pairs.append((text, rng.choice(same), 1.0))
            else:
                other = rng.choice([i for i in by_intent if i != intent])
                pairs.append((text, rng.choice(by_intent[other]), 0.0))
            if len(pairs) == total:
                break
    return pairs


def _embed(encoder: nn.Module, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    mask = batch["attention_mask"]
    return mean_pool(
        encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state, mask
    )


def warm_start(
    encoder: nn.Module,
    tokenizer,
    utterances: list[Utterance],
    total: int,
    seed: int,
    max_length: int,
) -> None:
    """Train ``encoder`` in place on ``total`` pairs, one pass."""
    pairs = contrastive_pairs(utterances, total, seed)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=LEARNING_RATE)
    encoder.train()
    for i in range(0, len(pairs), BATCH_SIZE):
        chunk = pairs[i : i + BATCH_SIZE]
        left = _embed(encoder, tokenizer, [a for a, _, _ in chunk], max_length)
        right = _embed(encoder, tokenizer, [b for _, b, _ in chunk], max_length)
        target = torch.tensor([label for _, _, label in chunk])
        loss = nn.functional.mse_loss(nn.functional.cosine_similarity(left, right), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
