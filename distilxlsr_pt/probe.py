"""A frozen-feature probe, the way self-supervised speech models are judged: how much of the transcript a linear CTC
head can read from one layer of a frozen encoder, trained on a few labelled clips.

The encoder runs once per clip (no padding, no gradient); its layer's features are kept, and only a
`hidden_size x vocabulary` linear layer (with bias) learns, by CTC on the labelled clips, full batch with Adam. The
test clips are decoded greedily and scored by character error rate. Same recipe, clips and seed for every encoder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import jiwer
import torch
from torch import nn
from tqdm import tqdm

from .audio import SAMPLING_RATE, load_audio
from .models import default_feature_extractor
from .text import build_vocabulary, normalize_text

WORD_DELIMITER = "|"


@dataclass
class LabelledClips:
    """Audio paths and normalised transcripts of the first `limit` clips of an audiofolder split."""

    paths: list[Path]
    texts: list[str]

    @classmethod
    def read(cls, split_dir: str | Path, limit: int | None = None) -> LabelledClips:
        with open(Path(split_dir) / "metadata.csv", encoding="utf-8", newline="") as file:
            rows = list(csv.DictReader(file))[:limit]
        return cls(
            [Path(split_dir) / row["file_name"] for row in rows], [normalize_text(r["transcription"]) for r in rows]
        )


def layer_features(model: nn.Module, paths: list[Path], layer: int) -> list[torch.Tensor]:
    """`hidden_states[layer]` (frames x hidden_size) of a frozen transformers speech encoder, clip by clip."""
    feature_extractor = default_feature_extractor()
    model.eval()
    features = []
    with torch.inference_mode():
        for path in tqdm(paths, desc=f"layer {layer} features", unit="clip"):
            inputs = feature_extractor(load_audio(path), sampling_rate=SAMPLING_RATE, return_tensors="pt")
            hidden_states = model(inputs["input_values"], output_hidden_states=True).hidden_states
            features.append(hidden_states[layer][0].float())
    return features


def _padded(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(f) for f in features])
    return nn.utils.rnn.pad_sequence(features, batch_first=True), lengths


def train_linear_ctc_probe(
    features: list[torch.Tensor],
    texts: list[str],
    vocabulary: dict[str, int],
    steps: int = 1500,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> nn.Linear:
    """A linear layer trained by CTC (blank: id 0) to spell `texts` from `features`, full batch."""
    torch.manual_seed(seed)
    probe = nn.Linear(features[0].shape[1], len(vocabulary))
    optimizer = torch.optim.Adam(probe.parameters(), lr=learning_rate)
    inputs, input_lengths = _padded(features)
    targets = [torch.tensor([vocabulary[c] for c in text.replace(" ", WORD_DELIMITER)]) for text in texts]
    target_lengths = torch.tensor([len(t) for t in targets])
    for _ in tqdm(range(steps), desc="linear CTC probe", unit="step", mininterval=10):
        log_probs = probe(inputs).log_softmax(-1).transpose(0, 1)
        loss = nn.functional.ctc_loss(
            log_probs, torch.cat(targets), input_lengths, target_lengths, blank=0, zero_infinity=True
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return probe


def greedy_transcripts(probe: nn.Linear, features: list[torch.Tensor], vocabulary: dict[str, int]) -> list[str]:
    """Best path, repeats merged, blanks (id 0) dropped, the word delimiter read as a space."""
    tokens = {index: token for token, index in vocabulary.items()}
    transcripts = []
    with torch.inference_mode():
        for clip in features:
            ids = torch.unique_consecutive(probe(clip).argmax(-1)).tolist()
            text = "".join(tokens[i] for i in ids if i != 0).replace(WORD_DELIMITER, " ")
            transcripts.append(" ".join(text.split()))
    return transcripts


def probe_encoder(
    model: nn.Module, train: LabelledClips, test: LabelledClips, layer: int, steps: int = 1500, seed: int = 0
) -> dict[str, float]:
    """Train the probe on `train`'s layer-`layer` features; the test CER and WER of its greedy transcripts."""
    vocabulary = build_vocabulary(train.texts, word_delimiter_token=WORD_DELIMITER)
    probe = train_linear_ctc_probe(layer_features(model, train.paths, layer), train.texts, vocabulary, steps, seed=seed)
    predictions = greedy_transcripts(probe, layer_features(model, test.paths, layer), vocabulary)
    return {"test_cer": jiwer.cer(test.texts, predictions), "test_wer": jiwer.wer(test.texts, predictions)}
