"""Word n-gram language models with interpolated modified Kneser-Ney smoothing, written as ARPA files.

This is the estimate KenLM's `lmplz` makes (Heafield et al. 2013, "Scalable Modified Kneser-Ney Language Model
Estimation"; Chen & Goodman 1998), for corpora that fit in memory: `lmplz` itself is not installable from PyPI
(the `kenlm` package only reads models) and no maintained PyPI package writes modified Kneser-Ney ARPA files.

- Sentences are `<s> w1 ... wk </s>`; n-grams of every order up to `order` are counted.
- Adjusted counts: the highest order and n-grams starting with `<s>` keep their counts; every other n-gram counts
  the distinct words seen to its left (its continuation count).
- Discounts per order from the counts-of-counts t_k of the adjusted counts: Y = t1 / (t1 + 2 t2),
  D_k = k - (k + 1) Y t_(k+1) / t_k for k = 1, 2 and D_3+ for counts of 3 and more. When a corpus is too small for
  these (some t_k is 0 or a discount falls outside (0, k)), `lmplz --discount_fallback`'s 0.5, 1, 1.5 are used.
- u(w | h) = (a(h w) - D(a(h w))) / sum_x a(h x) and b(h) = (D_1 N_1(h) + D_2 N_2(h) + D_3+ N_3+(h)) / sum_x a(h x),
  interpolated as p(w | h) = u(w | h) + b(h) p(w | h minus its first word), unigrams with the uniform distribution
  over the vocabulary (with `</s>` and `<unk>`, which thus gets b() / |V|).
- The ARPA file stores p(h w) for every seen n-gram and log10 b(h) as the backoff weight of every context: for an
  interpolated model these backoffs are exact, so the file needs no renormalisation.

    >>> model = estimate_kneser_ney(["o gato come", "o cão come", "o gato dorme"], order=3)
    >>> model.write_arpa("lm.arpa")  # loads with kenlm.Model("lm.arpa")
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz --discount_fallback
LOG10_ZERO = -99.0  # ARPA's "never" (for <s>, which is only ever a context)

NGram = tuple[str, ...]


@dataclass
class KneserNeyModel:
    """An estimated n-gram model: log10 probabilities of every seen n-gram and log10 backoff weights of every
    context, per order (index 0 holds the unigrams), plus the discounts (D1, D2, D3+) used at each order."""

    order: int
    log_probs: list[dict[NGram, float]]
    log_backoffs: list[dict[NGram, float]]
    discounts: list[tuple[float, float, float]]
    fallback_orders: list[int] = field(default_factory=list)

    def write_arpa(self, path: str | Path) -> None:
        """Write the model in ARPA format (what `kenlm.Model` and pyctcdecode load)."""
        with open(path, "w", encoding="utf-8") as file:
            file.write("\n\\data\\\n")
            for n, probs in enumerate(self.log_probs, start=1):
                file.write(f"ngram {n}={len(probs)}\n")
            for n, (probs, backoffs) in enumerate(zip(self.log_probs, self.log_backoffs), start=1):
                file.write(f"\n\\{n}-grams:\n")
                for ngram in sorted(probs):
                    line = f"{probs[ngram]:.7g}\t{' '.join(ngram)}"
                    if n < self.order:
                        line += f"\t{backoffs.get(ngram, 0.0):.7g}"
                    file.write(line + "\n")
            file.write("\n\\end\\\n")


def count_ngrams(sentences: Iterable[str], order: int) -> list[Counter[NGram]]:
    """Counts of all n-grams of orders 1..`order` in `<s> w1 ... wk </s>` (whitespace-separated words)."""
    counts: list[Counter[NGram]] = [Counter() for _ in range(order)]
    for sentence in sentences:
        words = sentence.split()
        if not words:
            continue
        reserved = {BOS, EOS, UNK} & set(words)
        if reserved:
            raise ValueError(f"The text contains reserved token(s) {sorted(reserved)}: {sentence!r}")
        tokens = (BOS, *words, EOS)
        for n in range(1, order + 1):
            counter = counts[n - 1]
            for start in range(len(tokens) - n + 1):
                counter[tokens[start : start + n]] += 1
    return counts


def adjusted_counts(counts: list[Counter[NGram]]) -> list[dict[NGram, int]]:
    """Kneser-Ney's counts: raw counts at the highest order and for n-grams starting with `<s>` (nothing can precede
    them), otherwise the number of distinct words seen before the n-gram."""
    order = len(counts)
    adjusted: list[dict[NGram, int]] = [dict() for _ in range(order)]
    adjusted[-1] = dict(counts[-1])
    for n in range(order - 1):
        left_extensions: Counter[NGram] = Counter(ngram[1:] for ngram in counts[n + 1])
        adjusted[n] = {
            ngram: count if ngram[0] == BOS else left_extensions[ngram] for ngram, count in counts[n].items()
        }
    adjusted[0].pop((BOS,), None)  # <s> is never predicted
    return adjusted


def modified_discounts(adjusted: Iterable[int]) -> tuple[tuple[float, float, float], bool]:
    """(D1, D2, D3+) from the counts-of-counts of one order's adjusted counts, and whether the fallback was used."""
    count_of_counts = Counter(count for count in adjusted if count <= 4)
    t = [count_of_counts[k] for k in range(1, 5)]
    if all(t):
        y = t[0] / (t[0] + 2 * t[1])
        discounts = tuple(k - (k + 1) * y * t[k] / t[k - 1] for k in (1, 2, 3))
        if all(0 < d < k for d, k in zip(discounts, (1, 2, 3))):
            return discounts, False  # type: ignore[return-value]
    return FALLBACK_DISCOUNTS, True


def estimate_kneser_ney(sentences: Iterable[str], order: int = 4) -> KneserNeyModel:
    """Estimate an interpolated modified Kneser-Ney model of `order` from normalised, whitespace-tokenised sentences
    (one per item). Keeps every n-gram (no pruning), so the corpus must fit in memory."""
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    counts = count_ngrams(sentences, order)
    if not counts[0]:
        raise ValueError("No words to estimate a language model from: the text is empty.")
    adjusted = adjusted_counts(counts)

    discounts, fallback_orders = [], []
    for n in range(order):
        order_discounts, fallback = modified_discounts(adjusted[n].values())
        discounts.append(order_discounts)
        if fallback:
            fallback_orders.append(n + 1)
    if fallback_orders:
        logger.warning(
            "Modified Kneser-Ney discounts out of range at order(s) %s (too little text, or counts-of-counts of an "
            "unusual shape): using lmplz's --discount_fallback values %s.",
            fallback_orders,
            FALLBACK_DISCOUNTS,
        )

    def discount(n: int, count: int) -> float:
        return discounts[n][min(count, 3) - 1]

    probs: list[dict[NGram, float]] = [dict() for _ in range(order)]
    backoffs: list[dict[NGram, float]] = [dict() for _ in range(order)]
    for n in range(order):
        totals: defaultdict[NGram, int] = defaultdict(int)
        discounted: defaultdict[NGram, float] = defaultdict(float)
        for ngram, count in adjusted[n].items():
            totals[ngram[:-1]] += count
            discounted[ngram[:-1]] += discount(n, count)
        context_weight = {context: discounted[context] / total for context, total in totals.items()}
        if n == 0:
            vocabulary_size = len(adjusted[0]) + (0 if (UNK,) in adjusted[0] else 1)
            uniform = context_weight[()] / vocabulary_size
            probs[0] = {
                ngram: (count - discount(0, count)) / totals[()] + uniform for ngram, count in adjusted[0].items()
            }
            probs[0].setdefault((UNK,), uniform)
        else:
            probs[n] = {
                ngram: (count - discount(n, count)) / totals[ngram[:-1]]
                + context_weight[ngram[:-1]] * probs[n - 1][ngram[1:]]
                for ngram, count in adjusted[n].items()
            }
            backoffs[n - 1] = context_weight
    log_probs = [{ngram: math.log10(p) for ngram, p in order_probs.items()} for order_probs in probs]
    log_probs[0][(BOS,)] = LOG10_ZERO
    log_backoffs = [{ngram: math.log10(b) for ngram, b in order_backoffs.items()} for order_backoffs in backoffs]
    return KneserNeyModel(order, log_probs, log_backoffs, discounts, fallback_orders)


def write_kneser_ney_arpa(sentences: Iterable[str], path: str | Path, order: int = 4) -> KneserNeyModel:
    """Estimate a modified Kneser-Ney model of `sentences` and write it to `path` as ARPA; returns the model."""
    model = estimate_kneser_ney(sentences, order)
    model.write_arpa(path)
    return model


__all__ = ["KneserNeyModel", "count_ngrams", "adjusted_counts", "estimate_kneser_ney", "write_kneser_ney_arpa"]
