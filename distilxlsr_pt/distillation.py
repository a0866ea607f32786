"""Layer-wise distillation (DistilHuBERT, arXiv 2110.01900): the pieces train_distill.py's loop is made of.

- `Teacher`: the frozen teacher, cut after its deepest distilled layer, returning the distilled hidden states.
- `distillation_loss` / `distillation_forward`: L1 + cosine_weight * -log(sigmoid(cosine)), padded frames excluded
  (also timed by benchmarks/bench.py).
- `parameter_groups`: AdamW groups (no weight decay on biases and norms).
- Data: decoded random crops of map-style or streamed corpora (`AudioClips`, `StreamingAudioClips`), a collator that
  drops and counts unreadable and too-short clips, a sampler whose order depends on (seed, epoch) only, and
  `load_audio_datasets`, which mixes several corpora.
- `evaluate`: held-out L1 and cosine per teacher layer.
- `DistillationState`, `save_checkpoint`, `list_checkpoints`, `check_resumed_state`: the loop's state and atomic
  checkpoints, so that a resumed run continues exactly (or is told why it cannot).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import RNG_STATE_NAME, load
from datasets import concatenate_datasets, interleave_datasets
from torch import nn
from torch.nn import functional as F

from configuration_distilxlsr import check_teacher_layers
from modeling_distilxlsr import DistilXLSRFeatureEncoder

from .audio import SAMPLING_RATE, AudioDecodingError, load_audio
from .checks import checkpoint_step
from .data import DatasetSplit
from .models import staging_folder
from .results import write_json

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"


# --------------------------------------------------------------------------------------------------------------------
# Teacher


class Teacher(nn.Module):
    """
    A frozen wav2vec2 / HuBERT teacher cut after its deepest distilled layer, returning the distilled hidden states.

    The conv front end is kept apart (`front_end`), so a batch's conv features can be computed once and shared with a
    student whose front end is a frozen copy (`--freeze_feature_encoder`).
    """

    def __init__(self, model: nn.Module, teacher_layers: Sequence[int], cut: bool = True):
        super().__init__()
        model = model.base_model  # unwraps *ForPreTraining / *ForCTC
        self.teacher_layers = check_teacher_layers(teacher_layers, model.config.num_hidden_layers, "--teacher_layers")
        # The last layer of a stable-layer-norm teacher (XLSR-53's 24) is distilled after the final LayerNorm, as s3prl
        # and transformers 4 give it (transformers 5's hidden_states hold it before): the state users see.
        self.normalised_layer = model.config.num_hidden_layers if model.config.do_stable_layer_norm else None
        # Layers past the deepest distilled one never influence the targets: drop them (half of XLSR-53 for 4,12).
        # (cut=False keeps them, only to measure what the cut saves.)
        if cut:
            model.encoder.layers = model.encoder.layers[: max(self.teacher_layers)]
        # The same front end and weights, computed channels-last (DistilXLSRFeatureEncoder): faster on CPUs.
        self.front_end = DistilXLSRFeatureEncoder(model.config).to(model.device, model.dtype)
        self.front_end.load_state_dict(model.feature_extractor.state_dict())
        model.feature_extractor = nn.Identity()  # the model now starts from conv features
        self.model = model
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> Teacher:  # the teacher stays in eval mode (layerdrop, dropout off)
        return super().train(False)

    @torch.no_grad()
    def conv_features(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.front_end(input_values.to(self.front_end.conv_layers[0].conv.weight.dtype))

    @torch.no_grad()
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        conv_features: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        if conv_features is None:
            conv_features = self.conv_features(input_values)
        outputs = self.model(conv_features, attention_mask=attention_mask, output_hidden_states=self.teacher_layers)
        targets = [
            outputs.last_hidden_state if layer == self.normalised_layer else outputs.hidden_states[layer]
            for layer in self.teacher_layers
        ]
        return [target.float() for target in targets]  # targets compared in fp32


# --------------------------------------------------------------------------------------------------------------------
# Loss


class LossTerms(NamedTuple):
    """A batch's distillation loss and, per teacher layer, the mean L1 and the mean cosine similarity (detached)."""

    loss: torch.Tensor
    l1: torch.Tensor
    cosine: torch.Tensor


def distillation_loss(
    predictions: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    frame_mask: torch.Tensor,
    cosine_weight: float = 1.0,
) -> LossTerms:
    """
    DistilHuBERT's loss, averaged over heads and real (unpadded) frames: L1 + cosine_weight * -log(sigmoid(cosine)).

    Returns the loss and, per head, the mean L1 and the mean cosine similarity (detached). Teacher and student frame
    counts that differ by one (front ends that round differently) are cropped to the shorter.
    """
    l1_terms, cosine_terms, cosines = [], [], []
    for prediction, target in zip(predictions, targets):
        frames = min(prediction.shape[1], target.shape[1], frame_mask.shape[1])
        prediction, target = prediction[:, :frames].float(), target[:, :frames]
        mask = frame_mask[:, :frames].to(prediction.dtype)
        num_frames = mask.sum().clamp(min=1)
        l1 = (prediction - target).abs().mean(-1)
        cosine = F.cosine_similarity(prediction, target, dim=-1)
        l1_terms.append((l1 * mask).sum() / num_frames)
        cosine_terms.append((-F.logsigmoid(cosine) * mask).sum() / num_frames)
        cosines.append((cosine * mask).sum().detach() / num_frames)
    l1, cosine_loss = torch.stack(l1_terms), torch.stack(cosine_terms)
    loss = (l1 + cosine_weight * cosine_loss).mean()
    return LossTerms(loss, l1.detach(), torch.stack(cosines))


def distillation_forward(
    student: nn.Module,
    teacher: Teacher,
    input_values: torch.Tensor,
    attention_mask: torch.Tensor,
    share_front_end: bool,
    cosine_weight: float = 1.0,
) -> LossTerms:
    """Teacher targets and student predictions for one batch, and their loss (see `distillation_loss`)."""
    conv_features = teacher.conv_features(input_values) if share_front_end else None
    targets = teacher(input_values, attention_mask=attention_mask, conv_features=conv_features)
    if share_front_end:
        conv_features = conv_features.float()
        outputs = student(attention_mask=attention_mask, conv_features=conv_features)
    else:
        outputs = student(input_values, attention_mask=attention_mask)
    raw_student = student.module if hasattr(student, "module") else student
    frame_mask = raw_student._get_feature_vector_attention_mask(outputs.last_hidden_state.shape[1], attention_mask)
    return distillation_loss(outputs.layer_predictions, targets, frame_mask, cosine_weight)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: `weight_decay` on every trained weight, none on biases and norm layers' parameters.

    s3prl's `get_grouped_parameters` means the same (0.01, biases and norms exempt), though its name patterns
    (BERT's `LayerNorm.weight`) miss its distiller's `layer_norm` modules, so s3prl in fact decays LayerNorm gains.
    """
    norm_parameters = {
        id(parameter)
        for module in model.modules()
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm))
        for parameter in module.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            exempt = name.endswith("bias") or id(parameter) in norm_parameters
            (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------------------------------------------------
# Data


def crop(array: np.ndarray, max_samples: int, rng: random.Random | None) -> np.ndarray:
    """A random window of at most `max_samples` (the start of the clip when `rng` is None: evaluation)."""
    if len(array) <= max_samples:
        return array
    start = rng.randrange(len(array) - max_samples + 1) if rng is not None else 0
    return array[start : start + max_samples]


class ClipCropping:
    """Decoding and random cropping shared by the map-style and the streaming datasets below."""

    def __init__(self, dataset, audio_column: str, max_samples: int, seed: int, random_crop: bool = True):
        self.dataset, self.audio_column, self.max_samples = dataset, audio_column, max_samples
        self.seed, self.random_crop, self.epoch = seed, random_crop, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def clip(self, audio: dict, index: int) -> dict:
        # A crop depends on (seed, epoch, clip) only, not on worker processes: resumed runs see the same crops.
        rng = random.Random(f"{self.seed}-{self.epoch}-{index}") if self.random_crop else None
        return load_clip(audio, self.max_samples, rng)


class AudioClips(ClipCropping, torch.utils.data.Dataset):
    """Decoded, cropped clips of a map-style dataset; a corrupt clip becomes None (counted by the collator)."""

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.clip(self.dataset[index][self.audio_column], index)


class StreamingAudioClips(ClipCropping, torch.utils.data.IterableDataset):
    """The streaming counterpart of `AudioClips` over a datasets `IterableDataset`."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        for index, example in enumerate(self.dataset):
            yield self.clip(example[self.audio_column], index)


def load_clip(audio: dict, max_samples: int, rng: random.Random | None) -> dict:
    name = audio.get("path") or "<bytes>"
    try:
        return {"array": crop(load_audio(audio), max_samples, rng), "name": name}
    except AudioDecodingError as error:  # corrupt, unreadable or non-finite audio must not end a long run
        logger.warning("Skipping unreadable audio: %s", error)
        return {"array": None, "name": name}


class DistillationCollator:
    """Pads and normalises a batch; drops (and counts) unreadable and too-short clips."""

    def __init__(self, feature_extractor: Any, min_samples: int, pad_to_multiple_of: int | None = None):
        self.feature_extractor, self.min_samples = feature_extractor, min_samples
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, clips: list[dict]) -> dict:
        unreadable = sum(clip["array"] is None for clip in clips)
        readable = [clip["array"] for clip in clips if clip["array"] is not None]
        arrays = [array for array in readable if len(array) >= self.min_samples]
        too_short = len(readable) - len(arrays)
        # A batch with nothing left still runs (with zero weight), so all processes step together.
        empty = not arrays
        if empty:  # (at most a second: enough for any front end, however long --min_duration_in_seconds is)
            arrays = [np.zeros(min(self.min_samples, SAMPLING_RATE), dtype=np.float32)]
        batch = self.feature_extractor(
            arrays,
            sampling_rate=SAMPLING_RATE,
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return {
            "input_values": batch["input_values"],
            "attention_mask": batch["attention_mask"],
            "weight": torch.tensor(0.0 if empty else 1.0),
            "audio_seconds": torch.tensor(0.0 if empty else sum(len(a) for a in arrays) / SAMPLING_RATE),
            "unreadable": torch.tensor(unreadable),
            "too_short": torch.tensor(too_short),
        }


class EpochSampler(torch.utils.data.Sampler):
    """A fresh permutation each epoch, a function of (seed, epoch) alone, so a resumed run sees the same order."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


def load_audio_datasets(
    train_splits: Sequence[DatasetSplit],
    eval_split: DatasetSplit | None,
    eval_split_optional: bool,
    streaming: bool,
    seed: int,
    max_eval_samples: int,
    validation_split_percentage: float,
    shuffle_buffer_size: int,
) -> tuple[Any, Any]:
    """(train, eval) datasets with one undecoded `audio` column, mixing several corpora (concatenated, or interleaved
    when streaming). Without `eval_split` (or when an `eval_split_optional` one is missing), `max_eval_samples` clips
    (streaming) or `validation_split_percentage` percent of the training data are held out."""

    def audio_only(split: DatasetSplit, missing_ok: bool = False):
        dataset = split.load(streaming=streaming, missing_ok=missing_ok)
        if dataset is None:
            return None
        dataset = dataset.select_columns([split.audio_column])
        return dataset if split.audio_column == "audio" else dataset.rename_column(split.audio_column, "audio")

    train_parts = [audio_only(split) for split in train_splits]
    eval_dataset = audio_only(eval_split, missing_ok=eval_split_optional) if eval_split else None
    if streaming:
        train = train_parts[0] if len(train_parts) == 1 else interleave_datasets(train_parts, seed=seed)
        if eval_dataset is None:
            eval_dataset, train = train.take(max_eval_samples), train.skip(max_eval_samples)
        else:
            eval_dataset = eval_dataset.take(max_eval_samples)
        return train.shuffle(seed=seed, buffer_size=shuffle_buffer_size), eval_dataset
    train = train_parts[0] if len(train_parts) == 1 else concatenate_datasets(train_parts)
    if eval_dataset is None:
        split = train.train_test_split(test_size=validation_split_percentage / 100, seed=seed)
        train, eval_dataset = split["train"], split["test"]
    return train, eval_dataset.select(range(min(max_eval_samples, len(eval_dataset))))


# --------------------------------------------------------------------------------------------------------------------
# The loop's state, evaluation, checkpoints


@dataclass
class DistillationState:
    """What a distillation run has done so far: saved in every checkpoint, so that a resumed run continues exactly
    (same data order, crops and counters) and its results cover the whole run."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    audio_seconds: float = 0.0
    unreadable: int = 0
    too_short: int = 0
    nonfinite_steps: int = 0
    log_history: list[dict] = field(default_factory=list)
    initial_eval: dict | None = None
    last_eval: dict | None = None

    @classmethod
    def load(cls, checkpoint: str | os.PathLike) -> DistillationState:
        saved = json.loads((Path(checkpoint) / STATE_FILE).read_text())
        return cls(**{key: value for key, value in saved.items() if key in cls.__dataclass_fields__})


@torch.no_grad()
def evaluate(
    student: nn.Module, teacher: Teacher, eval_loader: Iterable[dict], accelerator: Accelerator, share_front_end: bool
) -> dict[str, float]:
    """Per teacher layer: mean L1 and mean cosine similarity of predictions and targets over held-out frames."""
    student.eval()
    layers = len(teacher.teacher_layers)
    l1_sum, cosine_sum, frames = torch.zeros(layers), torch.zeros(layers), torch.zeros(())
    l1_sum, cosine_sum, frames = (t.to(accelerator.device) for t in (l1_sum, cosine_sum, frames))
    for batch in eval_loader:
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        with accelerator.autocast():
            _, l1, cosine = distillation_forward(
                student, teacher, batch["input_values"], batch["attention_mask"], share_front_end
            )
        raw_student = accelerator.unwrap_model(student)
        lengths = raw_student._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1))
        batch_frames = lengths.sum().float() * batch["weight"]
        l1_sum += l1 * batch_frames
        cosine_sum += cosine * batch_frames
        frames += batch_frames
    l1_sum, cosine_sum, frames = (accelerator.reduce(t, "sum") for t in (l1_sum, cosine_sum, frames))
    student.train()
    frames = frames.clamp(min=1)
    metrics = {}
    for i, layer in enumerate(teacher.teacher_layers):
        metrics[f"eval/l1_layer_{layer}"] = (l1_sum[i] / frames).item()
        metrics[f"eval/cosine_layer_{layer}"] = (cosine_sum[i] / frames).item()
    return metrics


def no_usable_audio_message(state: DistillationState, where: str) -> str:
    return (
        f"No usable training audio in {where}: {state.unreadable} clips unreadable (missing, corrupt or non-finite"
        f" audio), {state.too_short} too short so far. Check --data_dir / --dataset_name, --audio_column_name and"
        " --min_duration_in_seconds; the log names each unreadable file."
    )


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first: the folders named `checkpoint-<step>` exactly (an interrupted save's
    `.tmp` folder, or a user's `checkpoint-2-backup`, is not one, and is never resumed or deleted)."""
    steps = {path: checkpoint_step(path) for path in (output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*")}
    return sorted((path for path, step in steps.items() if step is not None), key=steps.get)


def save_checkpoint(
    accelerator: Accelerator, output_dir: Path, state: DistillationState, save_total_limit: int
) -> Path:
    """Save atomically: write into `checkpoint-N.tmp`, then rename; only then delete the oldest checkpoints. A failed
    save (a full disk, say) removes its `.tmp` folder."""
    final = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{state.step}"
    with staging_folder(final, writer=accelerator.is_main_process) as staging:
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        if accelerator.is_main_process:
            write_json(staging / STATE_FILE, asdict(state))
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
    if accelerator.is_main_process:
        for old in list_checkpoints(output_dir)[:-save_total_limit] if save_total_limit > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def check_resumed_state(accelerator: Accelerator, student: nn.Module, checkpoint: Path) -> None:
    """After `accelerator.load_state(checkpoint)`: refuse weights that are not finite (such a run would train for
    nothing until its final save refused them), and warn when a random state could not be read, since accelerate
    then goes on without one and the run no longer continues exactly as it would have."""
    if not all(torch.isfinite(p).all() for p in accelerator.unwrap_model(student).parameters()):
        raise ValueError(
            f"--resume_from_checkpoint: {checkpoint} holds non-finite (NaN or inf) weights; resume from an earlier "
            "checkpoint (pass its folder) or start afresh."
        )
    rng_file = checkpoint / f"{RNG_STATE_NAME}_{accelerator.process_index}.pkl"
    try:
        load(rng_file)
    except Exception as error:  # (what accelerate's load_state catches too)
        logger.warning(
            "%s could not be read (%s): the random state (crops, dropout) is not restored, so this resumed run does "
            "not continue exactly as the interrupted one would have.", rng_file, error or type(error).__name__,
        )  # fmt: skip
