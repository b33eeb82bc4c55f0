"""The training recipe's ingredients, each by its mechanics: lexical evidence, slot swaps,
the step budget, mean pooling and the optimizer's parameter groups."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest

from voicenlu.config import EVALUATIONS, TrainConfig, schedule
from voicenlu.data.augment import slot_values, swap_values, with_swapped_values
from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.lexical import WEIGHTS, LexicalModel, choose_weight

TEXTS = [
    "Add Diamonds to my roadtrip  playlist",
    "will it rain in Boston tomorrow?",
    "book a table for 4 at a pizzeria",
    "play the latest album by Daft Punk",
    "rate this book 5 of 6 stars",
    "what's the weather like in Paris",
    "I x",
]
INTENTS = ["Add", "Weather", "Book", "Play", "Rate", "Weather", "Play"]


def test_lexical_features_are_scikit_learns_tfidf():
    """The runtime's own TF-IDF equals TfidfVectorizer's, term for term, on seen and unseen
    text: the model fitted on scikit-learn's view is scored on the same numbers."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfVectorizer

    model = LexicalModel.fit([Utterance(t, i) for t, i in zip(TEXTS, INTENTS, strict=True)])
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True).fit(TEXTS)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True).fit(TEXTS)
    assert model.tables[0].terms == sorted(word.vocabulary_)
    assert model.tables[1].terms == sorted(char.vocabulary_)
    probe = [*TEXTS, "an unseen request about Zanzibar", "a", "", "ZANZIBAR zanzibar"]
    expected = np.hstack([word.transform(probe).toarray(), char.transform(probe).toarray()])
    assert np.allclose(model.matrix(probe, csr_matrix).toarray(), expected)
    # Again, with each word's character n-gram columns now cached by the model.
    assert np.allclose(model.matrix(probe, csr_matrix).toarray(), expected)


def test_lexical_model_saves_loads_and_scores_what_it_learned(tmp_path):
    model = LexicalModel.fit(
        [Utterance(t, i) for t, i in zip(TEXTS, INTENTS, strict=True)],
        intents=["Add", "Book", "Play", "Rate", "Weather", "Unused"],
    )
    model.save(tmp_path / "lexical.npz")
    again = LexicalModel.load(tmp_path / "lexical.npz")
    probe = ["book a table at a pizzeria", "will it rain in Paris"]
    assert np.allclose(again.log_probs(probe), model.log_probs(probe), atol=1e-5)
    assert again.predict(probe) == ["Book", "Weather"]
    # An intent absent from the data is never chosen; log probabilities are normalised.
    assert np.allclose(np.exp(again.log_probs(probe)).sum(axis=1), 1.0)
    assert (again.log_probs(probe)[:, -1] < -20).all()


def test_choose_weight_follows_dev():
    labels = np.array([0, 1, 0, 1])
    wrong_network = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    right_lexical = np.log(np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]]))
    assert choose_weight(wrong_network, right_lexical, labels) > 0
    right_network = np.array([[3.0, 0.0], [0.0, 3.0], [1.0, 0.0], [0.0, 3.0]])
    wrong_lexical = np.log(np.array([[0.5, 0.5], [0.5, 0.5], [0.01, 0.99], [0.5, 0.5]]))
    assert choose_weight(right_network, wrong_lexical, labels) == 0.0
    # Ties (a dev set the network already gets right) go to the largest weight tried.
    useless = np.log(np.full((4, 2), 0.5))
    assert choose_weight(right_network, useless, labels) == max(WEIGHTS)


def test_swapped_values_keep_offsets_exact():
    utterance = Utterance(
        "play Diamonds by Rihanna now",
        "Play",
        (SlotSpan("track", 5, 13), SlotSpan("artist", 17, 24)),
    )
    values = {"track": ["Bohemian Rhapsody"], "artist": ["Queen"]}
    new = swap_values(utterance, values, random.Random(0))
    assert new.text == "play Bohemian Rhapsody by Queen now"
    assert new.slot_values() == [("track", "Bohemian Rhapsody"), ("artist", "Queen")]
    assert new.intent == "Play"


def test_swapped_copies_come_from_the_same_slot_and_entity_lists():
    data = [
        Utterance("play Diamonds", "Play", (SlotSpan("track", 5, 13),)),
        Utterance("play Umbrella", "Play", (SlotSpan("track", 5, 13),)),
        Utterance("what time is it", "Time"),
    ]
    extra = {"track": ["Yesterday"], "city": ["Paris"]}  # city: no slot the model tags
    assert slot_values(data, extra) == {"track": ["Diamonds", "Umbrella", "Yesterday"]}
    out = with_swapped_values(data, copies=5, seed=1, extra=extra)
    assert out[:3] == data
    new = out[3:]
    assert new and len({u.text for u in out}) == len(out)  # no repeats
    for u in new:
        assert u.intent == "Play" and u.text.startswith("play ")
        assert [v for _, v in u.slot_values()][0] in {"Diamonds", "Umbrella", "Yesterday"}
    # A cap stops the copies at a total.
    many = {"track": ["Yesterday", "Help", "Angie", "Creep", "Hurt"]}
    capped = with_swapped_values(data, copies=5, seed=1, extra=many, total=5)
    assert len(capped) == 5 and capped[:3] == data


def test_step_budget():
    config = TrainConfig(epochs=6, batch_size=32, min_steps=400, patience=3)
    small = schedule(config, 70)  # 3 steps an epoch
    assert small.epochs == 134 and small.steps == 402 >= config.min_steps
    assert small.eval_steps == 21 and small.steps // small.eval_steps <= EVALUATIONS
    assert small.patience == EVALUATIONS // 3
    full = schedule(config, 13_084)  # 409 steps an epoch: the epochs decide
    assert (full.epochs, full.eval_steps, full.patience) == (6, None, 3)
    assert schedule(TrainConfig(min_steps=0), 70).epochs == TrainConfig.epochs


@pytest.fixture(scope="module")
def tiny_encoder():
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    return BertModel(config)


def test_mean_pooling_ignores_padding(tiny_encoder):
    import torch

    from voicenlu.model import JointModel

    model = JointModel(tiny_encoder, n_intents=3, n_tags=5, mean_pooling=True).eval()
    ids = torch.tensor([[2, 7, 9, 3]])
    padded = torch.tensor([[2, 7, 9, 3, 0, 0]])
    with torch.no_grad():
        alone = model(ids, torch.ones_like(ids))["intent_logits"]
        mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
        with_pad = model(padded, mask)["intent_logits"]
    assert torch.allclose(alone, with_pad, atol=1e-5)


def test_no_weight_decay_on_biases_and_layer_norms(tiny_encoder):
    from voicenlu.model import JointModel
    from voicenlu.trainer import _parameter_groups

    model = JointModel(tiny_encoder, n_intents=3, n_tags=5)
    config = TrainConfig(weight_decay=0.01, encoder_lr=1e-4, head_lr=1e-3)
    groups = _parameter_groups(model, config)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        for p in group["params"]:
            name = names[id(p)]
            no_decay = name.endswith("bias") or "LayerNorm" in name
            assert group["weight_decay"] == (0.0 if no_decay else 0.01), name
            assert group["lr"] == (1e-4 if name.startswith("encoder.") else 1e-3), name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_the_runtime_adds_weighted_lexical_evidence(tiny_bundle, tiny_data, tmp_path):
    """A bundle's intent logits are the network's plus weight x the lexical log probs."""
    from voicenlu import bundle as bundles
    from voicenlu.lexical import LEXICAL_FILE
    from voicenlu.runtime import Parser

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    intents = Parser.load(bundle, precision="fp32").intents
    lexical = LexicalModel.fit(tiny_data.train, intents)
    bundles.put_file(bundle, LEXICAL_FILE, lexical.save)
    bundles.update_manifest(bundle, lexical={"weight": 2.0})
    parser = Parser.load(bundle, precision="fp32")
    texts = [u.text for u in tiny_data.dev[:8]]
    _, both, _, _ = parser.logits(texts)
    parser.lexical = None  # the network alone
    _, network, _, _ = parser.logits(texts)
    assert np.allclose(both, network + 2.0 * lexical.log_probs(texts), atol=1e-4)


def test_an_assistant_of_one_intent_trains_without_the_lexical_model(tmp_path):
    """A single intent leaves nothing for TF-IDF to tell apart (and nothing to fit it on)."""
    from voicenlu.data.training import TrainData
    from voicenlu.scoring import fit_scoring
    from voicenlu.trainer import fit

    orders = [("a small latte", "latte"), ("one large mocha please", "mocha"), ("a mocha", "mocha")]
    utterances = [
        Utterance(t, "orderDrink", (SlotSpan("drink", t.index(v), t.index(v) + len(v)),))
        for t, v in orders
    ]
    config = TrainConfig(epochs=1, batch_size=4, min_steps=0, max_length=16)
    data = TrainData(train=utterances, dev=utterances[:2])
    trained = fit(data, config, tmp_path)
    assert trained.intents == ["orderDrink"]
    scoring = fit_scoring(trained, data, config)
    assert scoring.lexical is None and scoring.lexical_weight == 0.0
    assert scoring.calibration["background"]["requests"] > 0 and len(scoring.scope.means) == 1


def test_training_batches_pad_to_utterances_of_like_length(snips, tmp_path):
    """The trainer draws batches of like length: on SNIPS they hold well under the padding
    of batches drawn in random order, and every utterance is still seen once an epoch."""
    import torch
    from transformers import AutoTokenizer, Trainer

    from voicenlu.config import DEFAULT_BACKBONE
    from voicenlu.features import featurize, prepare_tokenizer, slot_tags
    from voicenlu.model import Collator, resolve_backbone
    from voicenlu.trainer import training_arguments

    utterances = snips.train[:2000]
    tokenizer = prepare_tokenizer(
        AutoTokenizer.from_pretrained(resolve_backbone(DEFAULT_BACKBONE)).backend_tokenizer, 64
    )
    intents = sorted({u.intent for u in utterances})
    tags = slot_tags(sorted({s.slot for u in utterances for s in u.slots}))
    index = {n: i for i, n in enumerate(intents)}
    rows, _ = featurize(utterances, tokenizer, index, {t: i for i, t in enumerate(tags)})
    config = TrainConfig()
    args = training_arguments(config, schedule(config, len(rows)), tmp_path)
    args.remove_unused_columns = False  # the stand-in model names no columns
    trainer = Trainer(
        model=torch.nn.Linear(1, 1),
        args=args,
        train_dataset=rows,
        eval_dataset=rows,
        data_collator=Collator(0),
    )
    grouped = list(trainer.get_train_dataloader())
    shuffled = torch.utils.data.DataLoader(
        rows, batch_size=config.batch_size, shuffle=True, collate_fn=Collator(0)
    )
    padded = sum(b["input_ids"].numel() for b in grouped)
    assert padded < 0.7 * sum(b["input_ids"].numel() for b in shuffled)
    seen = sorted(i for b in grouped for i in b["example_ids"].tolist())
    assert seen == list(range(len(rows)))


def test_contrastive_pairs_are_labelled_by_intent():
    from voicenlu.contrastive import contrastive_pairs

    data = [Utterance(f"{intent} {k}", intent, ()) for intent in "abc" for k in range(4)]
    data.append(Utterance("lonely", "d", ()))  # one utterance: negatives only
    intent_of = {u.text: u.intent for u in data}
    pairs = contrastive_pairs(data, total=300, seed=0)
    assert len(pairs) == 300
    for left, right, label in pairs:
        assert left != right and label == float(intent_of[left] == intent_of[right])
    positives = sum(label for _, _, label in pairs)
    assert 120 <= positives <= 150  # half, less the turns of the lonely utterance
    assert contrastive_pairs(data[:4], total=10, seed=0) == []  # one intent: no negatives


def test_crf_likelihood_is_the_share_of_the_gold_path_among_all_paths():
    """The CRF's loss, by its forward algorithm, against every path enumerated; ignored
    tokens (special ones, later sub-tokens of a word) are left out of the chain."""
    import itertools

    import torch

    from voicenlu.model import CRF

    torch.manual_seed(0)
    n_tags = 3
    crf = CRF(n_tags)
    for p in crf.parameters():
        torch.nn.init.normal_(p)
    emissions = torch.randn(2, 6, n_tags)
    labels = torch.tensor([[-100, 1, 2, -100, 0, -100], [-100, 2, -100, -100, -100, -100]])

    def path_score(row, path):
        em = emissions[row][labels[row] != -100]
        score = crf.start[path[0]] + crf.end[path[-1]] + em[range(len(path)), list(path)].sum()
        return score + sum(crf.transitions[a, b] for a, b in itertools.pairwise(path))

    expected = 0.0
    for row in range(2):
        gold = [int(t) for t in labels[row] if t != -100]
        paths = itertools.product(range(n_tags), repeat=len(gold))
        log_z = torch.logsumexp(torch.stack([path_score(row, p) for p in paths]), 0)
        expected += log_z - path_score(row, gold)
    with torch.no_grad():
        assert float(crf.negative_log_likelihood(emissions, labels)) == pytest.approx(
            float(expected), rel=1e-5
        )


def test_decoding_follows_the_crf_scores():
    """Viterbi with a CRF's learned scores finds the best path of all, BIO constraints kept."""
    import itertools

    from voicenlu.features import decoding_scores, slot_tags, viterbi

    def total(path, emissions, start, trans, end):
        steps = sum(trans[a, b] for a, b in itertools.pairwise(path))
        return (
            start[path[0]] + emissions[range(len(path)), list(path)].sum() + steps + end[path[-1]]
        )

    tags = slot_tags(["city"])  # O, B-city, I-city
    rng = np.random.default_rng(1)
    for _ in range(20):
        crf = {
            "start": rng.normal(size=3),
            "transitions": rng.normal(size=(3, 3)),
            "end": rng.normal(size=3),
        }
        emissions = rng.normal(size=(4, 3))
        scores = decoding_scores(tags, crf)
        paths = itertools.product(range(3), repeat=4)
        best = max(paths, key=lambda p: total(p, emissions, *scores))
        assert viterbi(emissions, *scores) == list(best)
        assert np.isfinite(total(best, emissions, *scores))  # no I-city without a B-city before


def test_contrastive_warm_start_pulls_an_intent_together():
    """After the warm start, pairs of one intent are closer than before and pairs of two
    intents farther apart (the pairs' cosine-similarity loss falls), on the real tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from voicenlu.contrastive import _embed, contrastive_pairs, warm_start
    from voicenlu.model import DEFAULT_BACKBONE, resolve_backbone

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(DEFAULT_BACKBONE))
    torch.manual_seed(0)
    encoder = BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    data = [
        Utterance(text, intent, ())
        for intent, texts in {
            "weather": ["will it rain tomorrow", "weather in paris", "is it sunny today"],
            "music": ["play some jazz", "put on diamonds by rihanna", "play my roadtrip list"],
        }.items()
        for text in texts
    ]
    pairs = contrastive_pairs(data, total=64, seed=0)

    def loss():
        encoder.eval()
        with torch.no_grad():
            left = _embed(encoder, tokenizer, [a for a, _, _ in pairs], 32)
            right = _embed(encoder, tokenizer, [b for _, b, _ in pairs], 32)
        target = torch.tensor([label for _, _, label in pairs])
        similarity = torch.nn.functional.cosine_similarity(left, right)
        return float(torch.nn.functional.mse_loss(similarity, target))

    before = loss()
    for _ in range(5):
        warm_start(encoder, tokenizer, data, total=64, seed=0, max_length=32)
    assert loss() < 0.98 * before  # a small step: the learning rate is SetFit's 2e-5
