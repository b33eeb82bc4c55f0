"""The closed-domain fast path: decode speech against the assistant's own grammar.

A bundle whose every slot takes its values from a closed list (a custom entity that is not
extensible) gets a grammar in its ``speech.json`` at training time (``grammar_settings``): the
training utterances with each slot's text replaced by the slot (``"make me a <size> latte"``),
and every spelling of each slot's values. Loading turns it into one small word graph, the
patterns' minimal automaton with each slot edge expanded into the slot values' own minimal
automaton, so "a <size> <coffeeDrink>" costs one copy of each value list per place it occurs,
not one per pattern. pocketsphinx (its bundled en-us acoustic model and dictionary) decodes the
audio against that graph as Rhino decodes against its context.

A grammar decoder answers with a sentence of the grammar whenever one can be aligned with the
audio at all, so it reports how well that sentence fits (``Fit.score``), and the recogniser
trusts it only when it fits well (``speech.GRAMMAR_MIN_SCORE``); otherwise the open path
(Whisper) hears the audio.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from voicenlu.data.records import Utterance

SLOT = "<{}>"


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def grammar_settings(
    utterances: Iterable[Utterance], slot_values: dict[str, list[str]], closed: set[str]
) -> dict | None:
    """``speech.json``'s ``grammar``, or None when some slot of the data is not in ``closed``
    (an open slot, such as a song name, cannot be listed).

    Each training utterance becomes a pattern, its slots' text replaced by the slot. A
    pattern with slots is split before its first slot into a head ("can i get a") and a tail
    ("<size> <coffeeDrink> with <milkAmount>"); the grammar takes any head of an intent with
    any tail of the same intent, so a sample of a template expansion still covers the
    phrasings it combines. ``slots`` holds every spelling of each slot's values: the ones in
    the data and those of its entity (``slot_values``).
    """
    heads: dict[str, set[str]] = {}
    tails: dict[str, set[str]] = {}
    whole: set[str] = set()
    values: dict[str, set[str]] = {}
    for utt in utterances:
        tokens, pos, first = [], 0, None
        for span in utt.slots:
            if span.slot not in closed:
                return None
            tokens += _words(utt.text[pos : span.start])
            first = len(tokens) if first is None else first
            tokens.append(SLOT.format(span.slot))
            value = " ".join(_words(utt.text[span.start : span.end]))
            values.setdefault(span.slot, set()).add(value)
            pos = span.end
        tokens += _words(utt.text[pos:])
        if first is None:
            whole.add(" ".join(tokens))
        else:
            heads.setdefault(utt.intent or "", set()).add(" ".join(tokens[:first]))
            tails.setdefault(utt.intent or "", set()).add(" ".join(tokens[first:]))
    for slot in values:
        values[slot].update(" ".join(_words(v)) for v in slot_values.get(slot, ()))
    phrases = [{"heads": sorted(heads[i]), "tails": sorted(tails[i])} for i in sorted(heads)]
    whole.discard("")
    if whole:
        phrases.append({"heads": sorted(whole), "tails": [""]})
    if not phrases:
        return None
    return {
        "phrases": phrases,
        "slots": {slot: sorted(v - {""}) for slot, v in sorted(values.items())},
    }


# --- word graphs ---


class _Automaton:
    """A minimal acyclic automaton over word sequences: ``edges[state]`` is [(word, next)]."""

    def __init__(self, sequences: Iterable[Sequence[str]]):
        trie: list[dict[str, int]] = [{}]
        final = [False]
        for seq in sequences:
            node = 0
            for word in seq:
                if word not in trie[node]:
                    trie.append({})
                    final.append(False)
                    trie[node][word] = len(trie) - 1
                node = trie[node][word]
            final[node] = True
        # Merge states with the same future (same finality, same edges to merged states).
        canon: dict[tuple, int] = {}
        ids: dict[int, int] = {}
        self.edges: list[list[tuple[str, int]]] = []
        self.final: list[bool] = []

        def visit(node: int) -> int:
            if node in ids:
                return ids[node]
            out = tuple(sorted((w, visit(child)) for w, child in trie[node].items()))
            key = (final[node], out)
            if key not in canon:
                canon[key] = len(self.edges)
                self.edges.append(list(out))
                self.final.append(final[node])
            ids[node] = canon[key]
            return ids[node]

        self.start = visit(0)


def word_graph(grammar: dict, known: set[str] | None = None):
    """(start, final, transitions) of the grammar's word graph for ``Decoder.create_fsg``.

    Transitions are (from, to, probability, word). Heads, tails and values with a word outside
    ``known`` (the recogniser's dictionary) are left out.
    """

    def automaton(texts: Iterable[str]) -> _Automaton:
        seqs = (t.split() for t in texts)
        return _Automaton(
            s for s in seqs if known is None or all(w in known or w[0] == "<" for w in s)
        )

    slots = {slot: automaton(values) for slot, values in grammar["slots"].items()}
    moves: list[tuple] = []  # (from, to, probability[, word]); word-less moves are epsilons
    count = 2  # 0 is the start, 1 the final state

    def place(graph: _Automaton, entry: int, exit_to: int) -> None:
        """A fresh copy of ``graph`` between ``entry`` and ``exit_to``, slots expanded."""
        nonlocal count
        offset = count
        count += len(graph.edges)
        moves.append((entry, offset + graph.start, 1.0))
        for state, edges in enumerate(graph.edges):
            share = 1.0 / (len(edges) + graph.final[state])
            for word, nxt in edges:
                if word[0] == "<" and word[1:-1] in slots:
                    middle = count
                    count += 1
                    moves.append((offset + state, middle, share))
                    place(slots[word[1:-1]], middle, offset + nxt)
                else:
                    moves.append((offset + state, offset + nxt, share, word))
            if graph.final[state]:
                moves.append((offset + state, exit_to, share))

    share = 1.0 / len(grammar["phrases"])
    for phrase in grammar["phrases"]:
        head, joint = count, count + 1
        count += 2
        moves.append((0, head, share))
        place(automaton(phrase["heads"]), head, joint)
        place(automaton(phrase["tails"]), joint, 1)
    return 0, 1, _without_epsilons(moves, 1)


def _without_epsilons(transitions: list[tuple], final: int) -> list[tuple]:
    """The same language with word moves only: pocketsphinx follows one epsilon move at most.

    Each state takes on the word moves of the states its epsilon moves reach (their
    probabilities multiplied), and a word move into a state that reaches ``final`` by epsilons
    also gets a copy that ends in ``final``.
    """
    epsilon: dict[int, list[tuple[int, float]]] = {}
    words: dict[int, list[tuple[int, float, str]]] = {}
    for move in transitions:
        if len(move) == 3:
            epsilon.setdefault(move[0], []).append((move[1], move[2]))
        else:
            words.setdefault(move[0], []).append((move[1], move[2], move[3]))

    def closure(state: int) -> dict[int, float]:
        reached, todo = {state: 1.0}, [state]
        while todo:
            here = todo.pop()
            for there, p in epsilon.get(here, ()):
                if there not in reached:  # the graph is acyclic: one path to each state
                    reached[there] = reached[here] * p
                    todo.append(there)
        return reached

    out: list[tuple] = []
    closures = {state: closure(state) for state in {*epsilon, *words}}
    ends = {state for state, reached in closures.items() if final in reached}
    for state, reached in closures.items():
        for there, p in reached.items():
            for target, q, word in words.get(there, ()):
                out.append((state, target, p * q, word))
                if target in ends:
                    out.append((state, final, p * q, word))
    return out


# --- decoding ---


class Fit(NamedTuple):
    """The grammar's sentence that best fits an utterance, and pocketsphinx's path score of it
    (the exponential of its log score, in (0, 1]: higher fits better)."""

    text: str
    score: float


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as 16-bit little-endian PCM bytes."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


class GrammarDecoder:
    """pocketsphinx (en-us acoustic model and dictionary from its wheel) on a grammar.

    pocketsphinx decoders are not shared between threads: each decode or stream borrows an
    idle one, or builds another (about 0.1 s) when all are busy.
    """

    def __init__(self, grammar: dict):
        from pocketsphinx import Config, Decoder  # the speech extra (speech.py says so)

        self._make = lambda: Decoder(Config(lm=None, bestpath=False, loglevel="FATAL"))
        self.grammar = grammar
        first = self._make()
        words = {w for p in grammar["phrases"] for t in p["heads"] + p["tails"] for w in t.split()}
        words |= {w for values in grammar["slots"].values() for v in values for w in v.split()}
        self.known = {w for w in words if first.lookup_word(w) is not None}
        self.unknown = sorted(w for w in words - self.known if not w.startswith("<"))
        self._graph = word_graph(grammar, self.known)
        self._idle = [self._ready(first)]
        self._lock = threading.Lock()

    def _ready(self, decoder):
        start, final, moves = self._graph
        decoder.add_fsg("grammar", decoder.create_fsg("grammar", start, final, moves))
        decoder.activate_search("grammar")
        return decoder

    def _borrow(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._ready(self._make())

    def _give_back(self, decoder) -> None:
        with self._lock:
            self._idle.append(decoder)

    def decode(self, samples: np.ndarray) -> Fit | None:
        """The grammar's sentence that best fits 16 kHz float samples, or None when none does."""
        stream = self.stream()
        # The whole utterance at once: cepstral means from all of it, not a running estimate.
        stream.decoder.process_raw(pcm16(samples), no_search=False, full_utt=True)
        return stream.finish()

    def stream(self) -> GrammarStream:
        return GrammarStream(self)


class GrammarStream:
    """One utterance decoded as its audio arrives: ``feed`` PCM bytes, then ``finish``."""

    def __init__(self, owner: GrammarDecoder):
        self.owner = owner
        self.decoder = owner._borrow()
        self.decoder.start_utt()

    def feed(self, pcm: bytes) -> None:
        if pcm:
            self.decoder.process_raw(pcm, no_search=False, full_utt=False)

    def finish(self) -> Fit | None:
        try:
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            return Fit(hyp.hypstr, hyp.score) if hyp is not None and hyp.hypstr else None
        finally:
            self.owner._give_back(self.decoder)

    def cancel(self) -> None:
        self.decoder.end_utt()
        self.owner._give_back(self.decoder)
