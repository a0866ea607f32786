"""HuBERT at stand-in scale: a teacher that learns from untranscribed audio alone, as XLSR-53 did.

1. Targets: frame features clustered by k-means (scikit-learn's `MiniBatchKMeans`) into "units"; every frame gets the
   id of its nearest cluster centre. The first iteration clusters MFCCs with deltas (librosa) at exactly the model's
   50 Hz frames into about 100 units; a later one clusters a middle layer of the previous iteration's model
   (`layer_features`) into about 500.
2. Masked prediction: spans of the projected conv features are replaced by the model's learned mask vector
   (`mask_time_indices`, drawn by transformers' `_compute_mask_indices`, HuBERT's span length 10 and probability
   0.8), and a linear head predicts the unit of each masked frame. Cross-entropy counts masked frames only.

The backbone is DistilXLSR's model class (the same modules and weight names as transformers' `Wav2Vec2Model`, with a
channels-last front end that trains faster on a CPU); `stand_ins/train_ssl_teacher.py` saves it as `Wav2Vec2Model`.

For comparison only, wav2vec 2.0's contrastive objective: transformers' `Wav2Vec2ForPreTraining` (Gumbel quantizer of
the conv features, masked frames told from sampled distractors) on the same masks (`ContrastivePredictionModel`).
No transcript is read anywhere here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from tqdm import tqdm
from transformers import TrainerCallback, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining
from transformers.modeling_outputs import MaskedLMOutput
from transformers.models.wav2vec2.modeling_wav2vec2 import (
    Wav2Vec2ForPreTrainingOutput,
    _compute_mask_indices,
    _sample_negative_indices,
)

from .audio import SAMPLING_RATE, load_audio
from .probe import layer_features

# 25 ms windows every 20 ms without centring: frame i covers samples [320 i, 320 i + 400), the receptive field and
# stride of XLSR-53's conv front end, so there are exactly as many MFCC frames as model frames.
WINDOW, HOP = 400, 320
NUM_MFCC = 13
# HuBERT's masking: spans of 10 frames, starts drawn for 80% of frames (spans overlap: about half the frames masked).
MASK_PROB, MASK_LENGTH = 0.8, 10


def untranscribed_clips(folders: Sequence[str | Path]) -> list[Path]:
    """The audio files of audiofolder splits (`folder/metadata.csv`'s `file_name` column; any transcript column is
    never read), in file order."""
    paths = []
    for folder in map(Path, folders):
        metadata = folder / "metadata.csv"
        if not metadata.is_file():
            raise FileNotFoundError(f"{metadata} is missing: give audiofolder splits (a folder with metadata.csv)")
        with open(metadata, encoding="utf-8", newline="") as file:
            paths.extend(folder / row["file_name"] for row in csv.DictReader(file))
    return paths


def mfcc_features(audio: np.ndarray) -> np.ndarray:
    """(frames, 39): 13 MFCCs with their deltas and delta-deltas, one row per model frame (`frame_count`)."""
    import librosa  # imported here: numba compiles on first import, a few seconds

    mfcc = librosa.feature.mfcc(
        y=audio, sr=SAMPLING_RATE, n_mfcc=NUM_MFCC, n_fft=WINDOW, hop_length=HOP, n_mels=40, center=False
    )
    width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))  # librosa needs an odd width no wider than the clip
    if width < 3:
        return np.concatenate([mfcc, np.zeros_like(mfcc), np.zeros_like(mfcc)]).T.astype(np.float32)
    deltas = [librosa.feature.delta(mfcc, width=width, order=order) for order in (1, 2)]
    return np.concatenate([mfcc, *deltas]).T.astype(np.float32)


def frame_count(num_samples: int) -> int:
    """Frames of a clip of `num_samples`: those of the conv front end (kernel 400, stride 320 overall)."""
    return max(0, (num_samples - WINDOW) // HOP + 1)


def cmvn(features: np.ndarray) -> np.ndarray:
    """A clip's features standardised by its own mean and deviation per dimension (cepstral mean and variance
    normalisation: what a speech front end does to take out the voice and channel, using no other clip)."""
    return (features - features.mean(0)) / (features.std(0) + 1e-5)


@dataclass
class Units:
    """The k-means units: standardisation of the features and cluster centres, in plain arrays (saved as .npz). With
    `per_clip_cmvn`, each clip's features are first standardised by themselves (`cmvn`), before and after fitting."""

    mean: np.ndarray
    std: np.ndarray
    centres: np.ndarray
    per_clip_cmvn: bool = False

    @classmethod
    def fit(cls, features: list[np.ndarray], num_units: int = 100, seed: int = 0, per_clip_cmvn: bool = False) -> Units:
        """Standardise the frames of all clips per dimension and cluster them with `MiniBatchKMeans`."""
        from sklearn.cluster import MiniBatchKMeans

        frames = np.concatenate([cmvn(f) for f in features] if per_clip_cmvn else features)
        mean, std = frames.mean(0), frames.std(0) + 1e-5
        kmeans = MiniBatchKMeans(n_clusters=num_units, batch_size=10_000, n_init=3, random_state=seed)
        kmeans.fit((frames - mean) / std)
        return cls(mean, std, kmeans.cluster_centers_.astype(np.float32), per_clip_cmvn)

    def assign(self, features: np.ndarray) -> np.ndarray:
        """The id of the nearest centre of every frame of one clip (int64, one per row of `features`)."""
        x = ((cmvn(features) if self.per_clip_cmvn else features) - self.mean) / self.std
        distances = (x**2).sum(1, keepdims=True) - 2 * x @ self.centres.T + (self.centres**2).sum(1)
        return distances.argmin(1).astype(np.int64)

    def save(self, path: str | Path) -> None:
        np.savez(path, mean=self.mean, std=self.std, centres=self.centres, per_clip_cmvn=self.per_clip_cmvn)

    @classmethod
    def load(cls, path: str | Path) -> Units:
        with np.load(path, allow_pickle=False) as saved:
            per_clip_cmvn = bool(saved["per_clip_cmvn"]) if "per_clip_cmvn" in saved else False  # older runs: none
            return cls(saved["mean"], saved["std"], saved["centres"], per_clip_cmvn)


def clip_dataset(audio: list[np.ndarray], units: list[np.ndarray] | None = None) -> Dataset:
    """A datasets `Dataset` of clips (16 kHz audio) and, for masked unit prediction, their frame units, with the
    `length` column that Trainer's `group_by_length` reads; NumPy-formatted. Refuses units that do not align with the
    clips' frames."""
    columns = {"input_values": audio, "length": [len(clip) for clip in audio]}
    if units is not None:
        for clip, clip_units in zip(audio, units, strict=True):
            if len(clip_units) != frame_count(len(clip)):
                raise ValueError(f"{len(clip_units)} units for a clip of {frame_count(len(clip))} frames")
        columns["unit_labels"] = units
    return Dataset.from_dict(columns).with_format("numpy")


def load_clips(paths: Sequence[Path]) -> list[np.ndarray]:
    """Decode the clips (16 kHz), those shorter than one frame left out."""
    audio = [load_audio(path) for path in tqdm(paths, desc="decoding", unit="clip", mininterval=5)]
    return [clip for clip in audio if frame_count(len(clip)) > 0]


def clip_features(
    audio: list[np.ndarray], target_model: nn.Module | None = None, target_layer: int | None = None
) -> list[np.ndarray]:
    """The features to cluster, one (frames, dim) array per clip: MFCCs with deltas (`mfcc_features`), or, with a
    `target_model`, its `hidden_states[target_layer]` (HuBERT's later iterations)."""
    if target_model is None:
        return [mfcc_features(clip) for clip in tqdm(audio, desc="MFCC features", unit="clip", mininterval=5)]
    return [features.numpy() for features in layer_features(target_model, audio, target_layer)]


class MaskedUnitCollator:
    """Normalise and pad a batch (to a multiple of `pad_to_multiple_of` samples, so shapes repeat), pad the units with
    -100, and draw the masked spans within each clip's real frames. With `num_negatives` (the contrastive objective,
    clips without units), it draws that many distractor frames for every masked frame, from masked frames of the same
    clip (`sampled_negative_indices`)."""

    def __init__(
        self,
        feature_extractor: Wav2Vec2FeatureExtractor,
        pad_to_multiple_of: int | None = 8000,
        mask_prob: float = MASK_PROB,
        mask_length: int = MASK_LENGTH,
        num_negatives: int = 0,
    ):
        self.feature_extractor, self.pad_to_multiple_of = feature_extractor, pad_to_multiple_of
        self.mask_prob, self.mask_length, self.num_negatives = mask_prob, mask_length, num_negatives

    def __call__(self, features: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        batch = self.feature_extractor(
            [f["input_values"] for f in features],
            sampling_rate=SAMPLING_RATE,
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_attention_mask=True,
            return_tensors="pt",
        )
        frames = frame_count(batch["input_values"].shape[1])
        frame_mask = torch.zeros((len(features), frames), dtype=torch.long)
        for row, feature in enumerate(features):
            frame_mask[row, : frame_count(len(feature["input_values"]))] = 1
        mask = _compute_mask_indices(
            (len(features), frames), self.mask_prob, self.mask_length, attention_mask=frame_mask, min_masks=2
        )
        mask &= frame_mask.bool().numpy()
        batch["mask_time_indices"] = torch.from_numpy(mask)
        if "unit_labels" in features[0]:
            labels = torch.full((len(features), frames), -100, dtype=torch.long)
            for row, feature in enumerate(features):
                labels[row, : len(feature["unit_labels"])] = torch.tensor(feature["unit_labels"])
            batch["unit_labels"] = labels
        if self.num_negatives:
            negatives = _sample_negative_indices((len(features), frames), self.num_negatives, mask)
            batch["sampled_negative_indices"] = torch.from_numpy(negatives)
        return batch


class MaskedUnitPredictionModel(nn.Module):
    """A backbone (`DistilXLSRModel` without heads) and a linear head predicting the unit of every masked frame."""

    main_input_name = "input_values"

    def __init__(self, backbone: nn.Module, num_units: int):
        super().__init__()
        self.backbone = backbone
        self.unit_head = nn.Linear(backbone.config.hidden_size, num_units)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        unit_labels: torch.Tensor | None = None,
    ) -> MaskedLMOutput:
        hidden_states = self.backbone(
            input_values,
            attention_mask=attention_mask,
            mask_time_indices=mask_time_indices,
            return_layer_predictions=False,
        ).last_hidden_state
        logits = self.unit_head(hidden_states)
        loss = None
        if unit_labels is not None:
            loss = masked_unit_loss(logits, unit_labels, mask_time_indices)
        return MaskedLMOutput(loss=loss, logits=logits)


def masked_unit_loss(logits: torch.Tensor, unit_labels: torch.Tensor, mask_time_indices: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked frames (HuBERT's loss with weight 0 on unmasked frames)."""
    counted = mask_time_indices & (unit_labels != -100)
    return nn.functional.cross_entropy(logits[counted].float(), unit_labels[counted])


class ContrastivePredictionModel(nn.Module):
    """transformers' `Wav2Vec2ForPreTraining` (wav2vec 2.0: contrastive loss against a Gumbel quantizer's codes, plus
    its codebook-diversity loss), with the loss divided by the number of masked frames, so that its logs and eval loss
    read per frame (ln(1 + num_negatives) is chance) and do not grow with the batch."""

    main_input_name = "input_values"

    def __init__(self, pretraining_model: Wav2Vec2ForPreTraining):
        super().__init__()
        self.pretraining_model = pretraining_model

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        sampled_negative_indices: torch.Tensor | None = None,
    ) -> Wav2Vec2ForPreTrainingOutput:
        output = self.pretraining_model(
            input_values,
            attention_mask=attention_mask,
            mask_time_indices=mask_time_indices,
            sampled_negative_indices=sampled_negative_indices,
        )
        if output.loss is not None:
            output.loss = output.loss / mask_time_indices.sum().clamp(min=1)
        return output


class GumbelTemperatureSchedule(TrainerCallback):
    """wav2vec 2.0's Gumbel temperature annealing (2.0 down to 0.5), compressed into a short run: it reaches 0.5 at
    70% of the steps (the paper's factor 0.999995 per step reaches it at 70% of its 400k steps)."""

    def __init__(self, model: ContrastivePredictionModel, start: float = 2.0, end: float = 0.5):
        self.model, self.start, self.end = model, start, end

    def on_step_begin(self, args, state, control, **kwargs):
        progress = min(1.0, state.global_step / (0.7 * max(state.max_steps, 1)))
        self.model.pretraining_model.set_gumbel_temperature(self.start * (self.end / self.start) ** progress)
