"""The one card writer, on huggingface_hub's `ModelCard` / `DatasetCard`, and the one reading of what a card says.

Every `README.md` the project writes (students, recognisers, teachers, the demo corpus) goes through `write_card`
(metadata + body) and `set_card_section` / `add_card_eval_results` (a section or model-index entries replaced,
everything else kept). Whether a model or corpus is a stand-in is read from its card's tags, and only from them:
`stand-in` (with `random-weights`, `supervised` or `self-supervised` saying which kind) for models, `synthetic` for
corpora.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

CARD_FILE = "README.md"
STAND_IN_TAG = "stand-in"
STAND_IN_KINDS = ("random-weights", "supervised", "self-supervised")  # tags that say which kind of stand-in
SYNTHETIC_TAG = "synthetic"


def write_card(directory: str | os.PathLike, data: ModelCardData | DatasetCardData, body: str) -> ModelCard:
    """Write `directory/README.md`: `data` as the YAML metadata block, then `body` (markdown)."""
    card_class = DatasetCard if isinstance(data, DatasetCardData) else ModelCard
    card = card_class(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")
    card.save(Path(directory) / CARD_FILE)
    return card


def load_card(directory: str | os.PathLike) -> ModelCard:
    """The card in `directory`, or an empty one with no metadata when there is none."""
    path = Path(directory) / CARD_FILE
    return ModelCard.load(path) if path.is_file() else ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n")


def set_card_section(directory: str | os.PathLike, heading: str, text: str) -> None:
    """Put `text` under the `## ...` `heading` of the card in `directory` (replacing that section if there is one,
    else appending it); the metadata and every other section stay as they were."""
    card = load_card(directory)
    body = card.text
    before, found, after = body.partition(heading)
    rest = after.split("\n## ", 1)[1] if found and "\n## " in after else ""
    section = f"{heading}\n\n{text.strip()}\n"
    body = before.rstrip() + ("\n\n" if before.strip() else "") + section + (f"\n## {rest}" if rest else "")
    ModelCard(f"---\n{card.data.to_yaml()}\n---\n{body}").save(Path(directory) / CARD_FILE)


def add_card_eval_results(directory: str | os.PathLike, results: list[EvalResult]) -> None:
    """Add model-index entries to the card in `directory`, replacing those of the same dataset, config, split and
    metric name."""

    def key(result: EvalResult) -> tuple:
        return (result.dataset_type, result.dataset_name, result.dataset_config, result.dataset_split,
                result.metric_name)  # fmt: skip

    card = load_card(directory)
    replaced = {key(result) for result in results}
    card.data.eval_results = [r for r in (card.data.eval_results or []) if key(r) not in replaced] + results
    if card.data.model_name is None:
        card.data.model_name = Path(directory).resolve().name
    card.save(Path(directory) / CARD_FILE)


def card_tags(path: str | os.PathLike | None) -> set[str]:
    """The tags of a local folder's card (none for a Hub id, a folder without a card, or a card without metadata)."""
    card = Path(path) / CARD_FILE if path else None
    if card is None or not card.is_file():
        return set()
    try:
        return set(ModelCard.load(card).data.tags or [])
    except Exception:  # a README that is not a card (no YAML block, or broken YAML): it says nothing
        return set()


def stand_in_kind(path: str | os.PathLike | None) -> str | None:
    """For a local model folder whose card is tagged `stand-in`: which kind ("random-weights", "supervised",
    "self-supervised", or "stand-in" when the card does not say); None for any other model."""
    tags = card_tags(path)
    if STAND_IN_TAG not in tags:
        return None
    return next((kind for kind in STAND_IN_KINDS if kind in tags), STAND_IN_TAG)


def is_synthetic(path: str | os.PathLike | None) -> bool:
    """Whether a local corpus folder's card is tagged `synthetic`."""
    return SYNTHETIC_TAG in card_tags(path)


STAND_IN_TEACHER_NOTES = {
    "supervised": "The teacher is a **supervised stand-in** of XLSR-53's architecture family, CTC-trained on synthetic "
    "speech by this project's `stand_ins/train_teacher.py`, not facebook/wav2vec2-large-xlsr-53.",
    "self-supervised": "The teacher is a **self-supervised stand-in** of XLSR-53's architecture family, trained on "
    "untranscribed synthetic speech (HuBERT's masked unit prediction) by this project's `stand_ins/train_ssl_teacher.py`, not "
    "facebook/wav2vec2-large-xlsr-53.",
    "random-weights": "The teacher is a **randomly initialised stand-in** of XLSR-53's architecture family, not "
    "facebook/wav2vec2-large-xlsr-53: this model only demonstrates the pipeline.",
    "stand-in": "The teacher is a **stand-in** (its card says so), not facebook/wav2vec2-large-xlsr-53.",
}
