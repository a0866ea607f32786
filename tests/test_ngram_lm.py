"""The modified Kneser-Ney estimator: its ARPA files load in kenlm, are normalised, and give the probabilities of an
independent, brute-force evaluation of the interpolated modified Kneser-Ney formulas."""

import math
import random
from collections import Counter

import pytest

from distilxlsr_pt.ngram import BOS, EOS, UNK, estimate_kneser_ney, write_kneser_ney_arpa

kenlm = pytest.importorskip("kenlm")

WORDS = [f"w{i}" for i in range(60)]


def markov_corpus(count: int, seed: int) -> list[str]:
    """Sentences from a random Markov chain over WORDS with Zipf-like word frequencies: at 100 sentences the counts
    of counts 1-4 are non-zero at every order up to 4, so the real modified discounts are used."""
    rng = random.Random(seed)
    successors = {word: rng.sample(WORDS, 6) for word in WORDS}
    zipf = [1 / (rank + 1) for rank in range(len(WORDS))]
    sentences = []
    for _ in range(count):
        word, words = rng.choices(WORDS, weights=zipf)[0], []
        for _ in range(rng.randint(2, 7)):
            words.append(word)
            if rng.random() < 0.8:
                word = rng.choices(successors[word], weights=[16, 8, 4, 2, 1, 1])[0]
            else:
                word = rng.choices(WORDS, weights=zipf)[0]
        sentences.append(" ".join(words))
    return sentences


class BruteForceKneserNey:
    """Interpolated modified Kneser-Ney evaluated from its definition, by scanning the corpus for every quantity."""

    def __init__(self, sentences: list[str], order: int):
        self.order = order
        self.cache = {}
        self.sentences = [(BOS, *s.split(), EOS) for s in sentences]
        self.vocabulary = sorted({w for s in self.sentences for w in s if w != BOS} | {UNK})
        self.discounts = {n: self.order_discounts(n) for n in range(1, order + 1)}

    def occurrences(self, ngram: tuple) -> list[tuple[tuple, int]]:
        n = len(ngram)
        return [(s, i) for s in self.sentences for i in range(len(s) - n + 1) if s[i : i + n] == ngram]

    def adjusted(self, ngram: tuple) -> int:
        if ngram not in self.cache:
            self.cache[ngram] = self.adjusted_uncached(ngram)
        return self.cache[ngram]

    def adjusted_uncached(self, ngram: tuple) -> int:
        found = self.occurrences(ngram)
        if len(ngram) == self.order or ngram[0] == BOS:
            return len(found)
        return len({s[i - 1] for s, i in found})

    def order_discounts(self, n: int) -> tuple[float, ...]:
        ngrams = {s[i : i + n] for s in self.sentences for i in range(len(s) - n + 1)} - {(BOS,)}
        t = Counter(self.adjusted(g) for g in ngrams)
        if not all(t[k] for k in (1, 2, 3, 4)):
            return (0.5, 1.0, 1.5)
        y = t[1] / (t[1] + 2 * t[2])
        d = tuple(k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3))
        return d if all(0 < dk < k for dk, k in zip(d, (1, 2, 3))) else (0.5, 1.0, 1.5)

    def prob(self, history: tuple, word: str) -> float:
        history = history[max(0, len(history) - self.order + 1) :]
        continuations = {w: self.adjusted((*history, w)) for w in self.vocabulary if w != UNK}
        continuations = {w: a for w, a in continuations.items() if a > 0}
        total = sum(continuations.values())
        if total == 0:  # never a context: nothing to interpolate at this order
            return self.prob(history[1:], word)
        d = self.discounts[len(history) + 1]
        discount = {w: d[min(a, 3) - 1] for w, a in continuations.items()}
        weight = sum(discount.values()) / total
        lower = 1 / len(self.vocabulary) if not history else self.prob(history[1:], word)
        seen = (continuations[word] - discount[word]) / total if word in continuations else 0.0
        return seen + weight * lower

    def sentence_log10(self, sentence: str) -> float:
        tokens = [w if w in self.vocabulary else UNK for w in sentence.split()] + [EOS]
        history, total = (BOS,), 0.0
        for token in tokens:
            total += math.log10(self.prob(history, token))
            history = (*history, token)
        return total


@pytest.fixture(scope="module")
def corpus():
    return markov_corpus(100, seed=0), markov_corpus(15, seed=1) + ["w0 w1 pizza", "w59"]


@pytest.mark.parametrize("order", [2, 4])
def test_arpa_matches_brute_force_kneser_ney(tmp_path, corpus, order):
    train, held_out = corpus
    model = write_kneser_ney_arpa(train, tmp_path / "lm.arpa", order=order)
    assert model.fallback_orders == []  # the corpus exercises the real modified discounts, not the fallback
    reference = BruteForceKneserNey(train, order)
    for n in range(1, order + 1):
        assert model.discounts[n - 1] == pytest.approx(reference.discounts[n], abs=1e-9)

    lm = kenlm.Model(str(tmp_path / "lm.arpa"))
    assert lm.order == order
    words, expected = 0, 0.0
    for sentence in held_out:
        assert lm.score(sentence, bos=True, eos=True) == pytest.approx(reference.sentence_log10(sentence), abs=2e-5)
        words += len(sentence.split()) + 1
        expected += reference.sentence_log10(sentence)
    assert lm.perplexity(" ".join(held_out)) > 1  # kenlm's own perplexity is of one sentence; ours is corpus-wide
    corpus_perplexity = 10 ** (-sum(lm.score(s) for s in held_out) / words)
    assert corpus_perplexity == pytest.approx(10 ** (-expected / words), rel=1e-4)


@pytest.mark.parametrize(("order", "size"), [(4, 100), (3, 4)])  # real discounts, and the fallback on tiny text
def test_conditional_probabilities_sum_to_one(tmp_path, order, size):
    train = markov_corpus(size, seed=0)
    model = write_kneser_ney_arpa(train, tmp_path / "lm.arpa", order=order)
    assert bool(model.fallback_orders) == (size < 10)
    lm = kenlm.Model(str(tmp_path / "lm.arpa"))
    vocabulary = sorted({w for s in train for w in s.split()} | {EOS, UNK})
    rng = random.Random(0)
    contexts = [[], *(rng.choices(WORDS[:20] + ["pizza"], k=rng.randint(1, order)) for _ in range(20))]
    contexts += [s.split()[: order - 1] for s in train[:5]]  # seen contexts, with their backoff weights
    for context in contexts:
        for from_start in (True, False):
            state, next_state = kenlm.State(), kenlm.State()
            (lm.BeginSentenceWrite if from_start else lm.NullContextWrite)(state)
            for word in context:
                lm.BaseScore(state, word, next_state)
                state, next_state = next_state, state
            total = sum(10 ** lm.BaseScore(state, word, kenlm.State()) for word in vocabulary)
            assert total == pytest.approx(1.0, abs=1e-3), (context, from_start)


def test_estimator_rejects_reserved_tokens_and_empty_text():
    with pytest.raises(ValueError, match="reserved"):
        estimate_kneser_ney(["o gato </s> come"], order=2)
    with pytest.raises(ValueError, match="empty"):
        estimate_kneser_ney(["", "   "], order=2)
