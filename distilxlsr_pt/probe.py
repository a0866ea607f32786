"""A frozen-feature probe, the way self-supervised speech models are judged: how much of the transcript a linear CTC
head can read from one layer of a frozen encoder, trained on a few labelled clips.

The encoder runs once per clip (no padding, no gradient); its layer's features are kept, and only a
`hidden_size x vocabulary` linear layer (with bias) learns, by CTC on the labelled clips, full batch with Adam. The
test clips are decoded greedily and scored by character error rate. Same recipe, clips and seed for every encoder.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm
from transformers import Wav2Vec2CTCTokenizer

from .audio import SAMPLING_RATE
from .data import DatasetSplit, load_clips
from .decoding import error_rates, greedy_transcripts
from .models import default_feature_extractor
from .text import build_vocabulary

WORD_DELIMITER = "|"


def ctc_tokenizer(vocabulary: dict[str, int]) -> Wav2Vec2CTCTokenizer:
    """The character tokenizer of a `build_vocabulary` vocabulary, as finetune_ctc.py makes it (blank = pad = id 0,
    no sentence marks)."""
    with tempfile.TemporaryDirectory() as folder:
        vocab_file = Path(folder) / "vocab.json"
        vocab_file.write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
        return Wav2Vec2CTCTokenizer(
            str(vocab_file),
            unk_token="[UNK]",
            pad_token="[PAD]",
            word_delimiter_token=WORD_DELIMITER,
            bos_token=None,
            eos_token=None,
        )


def layer_features(model: nn.Module, audio: list[np.ndarray], layer: int) -> list[torch.Tensor]:
    """`hidden_states[layer]` (frames x hidden_size) of a frozen transformers speech encoder, clip by clip."""
    feature_extractor = default_feature_extractor()
    model.eval()
    features = []
    with torch.inference_mode():
        for clip in tqdm(audio, desc=f"layer {layer} features", unit="clip", mininterval=5):
            inputs = feature_extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")
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


def probe_transcripts(probe: nn.Linear, features: list[torch.Tensor], vocabulary: dict[str, int]) -> list[str]:
    """The probe's greedy transcripts, by the project's one greedy decoder (`decoding.greedy_transcripts`)."""
    with torch.inference_mode():
        logits = [probe(clip).numpy() for clip in features]
    return greedy_transcripts(ctc_tokenizer(vocabulary), logits)


def probe_encoder(
    model: nn.Module, train: DatasetSplit, test: DatasetSplit, layer: int, steps: int = 1500, seed: int = 0
) -> dict[str, float]:
    """Train the probe on `train`'s layer-`layer` features; the test CER and WER of its greedy transcripts."""
    return probe_features(lambda audio: layer_features(model, audio, layer), train, test, steps, seed)


def probe_features(
    features_of: Callable[[list[np.ndarray]], list[torch.Tensor]],
    train: DatasetSplit,
    test: DatasetSplit,
    steps: int = 1500,
    seed: int = 0,
) -> dict[str, float]:
    """The probe on any frame features (`features_of(audio)`: one (frames, dim) tensor per clip), such as a
    baseline that is not a model's layer."""
    train_audio, train_texts = load_clips(train)
    test_audio, test_texts = load_clips(test)
    vocabulary = build_vocabulary(train_texts, word_delimiter_token=WORD_DELIMITER)
    probe = train_linear_ctc_probe(features_of(train_audio), train_texts, vocabulary, steps, seed=seed)
    predictions = probe_transcripts(probe, features_of(test_audio), vocabulary)
    rates = error_rates(test_texts, predictions)
    return {"test_cer": rates["cer"], "test_wer": rates["wer"], "test_clips": len(test_texts)}
