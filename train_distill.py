"""Layer-wise distillation (DistilHuBERT, arXiv 2110.01900) of a wav2vec2 / XLSR-53 teacher into a DistilXLSRModel.

    accelerate launch train_distill.py --data_dir demo_corpus --output_dir outputs/student
    accelerate launch train_distill.py --dataset_name mozilla-foundation/common_voice_17_0 --dataset_config_name pt \\
        --streaming --max_train_steps 200000 --mixed_precision bf16 --output_dir distilxlsr-pt-4-12

The teacher (frozen, eval mode) runs only up to its deepest distilled layer. Each prediction head of the student learns
one teacher layer with L1 + cosine_weight * -log(sigmoid(cosine)), padded frames excluded. `--freeze_feature_encoder`
keeps the student's conv front end (a copy of the teacher's) frozen and computes it once per batch for both models.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import Audio, concatenate_datasets, interleave_datasets, load_dataset
from datasets.distributed import split_dataset_by_node
from huggingface_hub import ModelCard, ModelCardData
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, Wav2Vec2FeatureExtractor, get_scheduler

from audio_io import SAMPLING_RATE, AudioDecodingError, load_audio
from modeling_distilxlsr import DistilXLSRFeatureEncoder, DistilXLSRModel, min_samples_for_frames
from run_checks import (
    BETA,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    SEED,
    check_data_dir,
    check_output_dir,
    numeric_option_errors,
    remove_previous_run,
)

logger = logging.getLogger("train_distill")

CHECKPOINT_PREFIX = "checkpoint-"
# What a run leaves in --output_dir; a new run into a folder holding any of these is refused (see check_output_dir).
RUN_FILES = ("model.safetensors", "distill_results.json", f"checkpoints/{CHECKPOINT_PREFIX}*[0-9]")  # not .tmp
# A run stops with an error after this many optimizer steps in a row with a non-finite loss or gradient (each one
# skipped), or this many batches in a row without a usable clip (all unreadable or too short).
MAX_NONFINITE_STEPS_IN_A_ROW = 25
MAX_BATCHES_WITHOUT_AUDIO_IN_A_ROW = 50


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("teacher and student")
    model.add_argument(
        "--teacher_name_or_path",
        default="facebook/wav2vec2-large-xlsr-53",
        help="Hub id or local directory of a transformers Wav2Vec2 / HuBERT model (default: %(default)s).",
    )
    model.add_argument(
        "--teacher_layers",
        default="4,12",
        help="Comma-separated teacher hidden-state indices the student predicts, 1-based (default: %(default)s).",
    )
    model.add_argument(
        "--student_num_hidden_layers",
        type=int,
        default=2,
        help="Transformer layers of the student, copied from the teacher's first ones (default: %(default)s).",
    )
    model.add_argument(
        "--student_name_or_path",
        default=None,
        help="Continue from a saved DistilXLSR student instead of initialising one from the teacher.",
    )
    model.add_argument(
        "--freeze_feature_encoder",
        action="store_true",
        help="Fast path: keep the student's conv front end (the teacher's) frozen and compute it once per "
        "batch for teacher and student. Off by default, as in DistilHuBERT.",
    )
    model.add_argument("--gradient_checkpointing", action="store_true", help="Recompute activations in backward.")
    model.add_argument("--trust_remote_code", action="store_true", help="Allow remote code for the teacher/student.")

    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name",
        default=None,
        help="Hub dataset(s), comma-separated to mix several corpora (e.g. common voice + MLS).",
    )
    data.add_argument("--dataset_config_name", default=None, help="Config(s), comma-separated, one per dataset.")
    data.add_argument("--train_split_name", default="train", help="Split(s) to distil on, one or one per dataset.")
    data.add_argument(
        "--eval_split_name",
        default=None,
        help="Held-out split (audiofolder: 'validation' if present). Otherwise --validation_split_percentage.",
    )
    data.add_argument("--data_dir", default=None, help="Local audiofolder (train/, validation/ with metadata.csv).")
    data.add_argument("--audio_column_name", default="audio", help="Audio column (default: %(default)s).")
    data.add_argument("--streaming", action="store_true", help="Stream the dataset(s) instead of downloading them.")
    data.add_argument(
        "--validation_split_percentage",
        type=float,
        default=2.0,
        help="Percent of training clips held out when there is no eval split (default: %(default)s).",
    )
    data.add_argument("--max_eval_samples", type=int, default=200, help="Held-out clips to evaluate on.")
    data.add_argument(
        "--max_duration_in_seconds",
        type=float,
        default=15.6,
        help="Random crops of at most this length (s3prl: 250,000 samples; default: %(default)s).",
    )
    data.add_argument("--min_duration_in_seconds", type=float, default=0.0, help="Drop shorter clips.")
    data.add_argument("--dataloader_num_workers", type=int, default=2, help="Decoding worker processes.")
    data.add_argument("--shuffle_buffer_size", type=int, default=2000, help="Shuffle buffer when streaming.")

    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", required=True, help="Where the student, card, results and checkpoints go.")
    train.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Delete the run already in --output_dir (its student, results and checkpoints) and start afresh. "
        "Without it (or --resume_from_checkpoint), such a folder is refused.",
    )
    train.add_argument("--max_train_steps", type=int, default=200_000, help="Optimizer steps (default: %(default)s).")
    train.add_argument("--per_device_train_batch_size", type=int, default=24, help="Clips per device and step.")
    train.add_argument("--per_device_eval_batch_size", type=int, default=8)
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--learning_rate", type=float, default=2e-4, help="AdamW peak lr (s3prl: %(default)s).")
    train.add_argument("--adam_beta1", type=float, default=0.9)
    train.add_argument("--adam_beta2", type=float, default=0.98)
    train.add_argument("--adam_epsilon", type=float, default=1e-6)
    train.add_argument(
        "--weight_decay",
        type=float,
        default=0.01,
        help="AdamW weight decay of all trained weights but biases and norms (s3prl: %(default)s, see README).",
    )
    train.add_argument("--warmup_ratio", type=float, default=0.07, help="Linear warm-up share of the steps.")
    train.add_argument(
        "--lr_scheduler_type", default="linear", help="transformers scheduler name (default: %(default)s)."
    )
    train.add_argument(
        "--max_grad_norm", type=float, default=5.0, help="Gradient norm clipping (s3prl's distiller: %(default)s)."
    )
    train.add_argument("--cosine_weight", type=float, default=1.0, help="Weight of the cosine term (lambda).")
    train.add_argument(
        "--mixed_precision",
        choices=["no", "fp16", "bf16"],
        default=None,
        help="Overrides accelerate's config. The teacher runs in bf16 under bf16, in fp32 under fp16.",
    )
    train.add_argument("--seed", type=int, default=42)

    monitor = parser.add_argument_group("logging, evaluation, checkpoints")
    monitor.add_argument("--logging_steps", type=int, default=50)
    monitor.add_argument("--eval_steps", type=int, default=2000, help="Evaluate on the held-out part every N steps.")
    monitor.add_argument(
        "--report_to",
        default="tensorboard",
        help="Accelerate trackers, comma-separated (tensorboard, wandb, ...), or 'none'.",
    )
    monitor.add_argument("--checkpointing_steps", type=int, default=5000, help="Save the training state every N steps.")
    monitor.add_argument("--save_total_limit", type=int, default=2, help="Checkpoints kept (oldest deleted; 0: all).")
    monitor.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint directory.")
    monitor.add_argument(
        "--max_steps_this_run",
        type=int,
        default=None,
        help="Stop (after checkpointing) once this many steps ran in this invocation, e.g. to fit a "
        "job's time limit; continue with --resume_from_checkpoint latest.",
    )

    hub = parser.add_argument_group("hub")
    hub.add_argument("--push_to_hub", action="store_true", help="Upload the output folder to the Hub at the end.")
    hub.add_argument("--hub_model_id", default=None, help="Repo id for --push_to_hub (default: output_dir's name).")
    hub.add_argument("--hub_token", default=None, help="Token for --push_to_hub (default: the logged-in one).")
    hub.add_argument("--hub_private_repo", action="store_true")
    return parser


# What each numeric flag must be (and finite); checked when parsed, so that a typo costs no run.
NUMERIC_FLAGS = {
    "student_num_hidden_layers": POSITIVE,
    "validation_split_percentage": (lambda v: 0 < v < 100, "between 0 and 100 (exclusive)"),
    "max_eval_samples": POSITIVE,
    "max_duration_in_seconds": POSITIVE,
    "min_duration_in_seconds": NON_NEGATIVE,
    "dataloader_num_workers": NON_NEGATIVE,
    "shuffle_buffer_size": POSITIVE,
    "max_train_steps": POSITIVE,
    "per_device_train_batch_size": POSITIVE,
    "per_device_eval_batch_size": POSITIVE,
    "gradient_accumulation_steps": POSITIVE,
    "learning_rate": POSITIVE,
    "adam_beta1": BETA,
    "adam_beta2": BETA,
    "adam_epsilon": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "warmup_ratio": PROBABILITY,
    "max_grad_norm": POSITIVE,
    "cosine_weight": NON_NEGATIVE,
    "seed": SEED,
    "logging_steps": POSITIVE,
    "eval_steps": POSITIVE,
    "checkpointing_steps": POSITIVE,
    "save_total_limit": NON_NEGATIVE,
    "max_steps_this_run": POSITIVE,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for error in numeric_option_errors(NUMERIC_FLAGS, args):
        parser.error(error)
    if args.min_duration_in_seconds > args.max_duration_in_seconds:
        parser.error("--min_duration_in_seconds is above --max_duration_in_seconds: every crop would be dropped")
    try:
        args.teacher_layers = parse_teacher_layers(args.teacher_layers)
    except ValueError as error:
        parser.error(str(error))
    if (args.dataset_name is None) == (args.data_dir is None):
        parser.error("give exactly one of --dataset_name and --data_dir")
    if args.overwrite_output_dir and args.resume_from_checkpoint:
        parser.error("--overwrite_output_dir deletes the run that --resume_from_checkpoint would continue: pass one")
    if args.resume_from_checkpoint not in (None, "latest") and not Path(args.resume_from_checkpoint).is_dir():
        parser.error(f"--resume_from_checkpoint {args.resume_from_checkpoint}: no such checkpoint folder")
    if args.push_to_hub and args.hub_model_id is None:
        args.hub_model_id = Path(args.output_dir).name
    return args


def parse_teacher_layers(text: str | Sequence[int]) -> list[int]:
    """'4,12' -> [4, 12]; layers are the teacher's 1-based transformer layers, 0 (the conv features) is refused."""
    try:
        layers = [int(x) for x in text.split(",")] if isinstance(text, str) else [int(x) for x in text]
    except ValueError:
        layers = []
    if not layers or any(layer < 1 for layer in layers):
        raise ValueError(
            f"argument --teacher_layers: expects comma-separated teacher layers numbered from 1 (e.g. 4,12), got {text!r}"
        )
    return sorted(set(layers))


def check_teacher_layers(teacher_config, teacher_layers: Sequence[int]) -> None:
    """Fail before any data or weights are loaded when a layer lies beyond the teacher's depth."""
    depth = teacher_config.num_hidden_layers
    too_deep = [layer for layer in teacher_layers if layer > depth]
    if too_deep:
        raise ValueError(f"--teacher_layers {list(teacher_layers)}: the teacher has only {depth} layers ({too_deep}).")


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
        self.teacher_layers = list(teacher_layers)
        check_teacher_layers(model.config, self.teacher_layers)
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
# Loss and one training step (also timed by bench.py)


def distillation_loss(
    predictions: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    frame_mask: torch.Tensor,
    cosine_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    return loss, l1.detach(), torch.stack(cosines)


def distillation_forward(
    student: nn.Module,
    teacher: Teacher,
    input_values: torch.Tensor,
    attention_mask: torch.Tensor,
    share_front_end: bool,
    cosine_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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

    def __init__(self, feature_extractor: Wav2Vec2FeatureExtractor, min_samples: int):
        self.feature_extractor, self.min_samples = feature_extractor, min_samples

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
            arrays, sampling_rate=SAMPLING_RATE, padding=True, return_attention_mask=True, return_tensors="pt"
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


def split_list(value: str | None, count: int, name: str) -> list:
    values = [None] if value is None else [v.strip() or None for v in value.split(",")]
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise ValueError(f"--{name} has {len(values)} entries for {count} datasets.")
    return values


def load_audio_datasets(args: argparse.Namespace, accelerator: Accelerator):
    """(train, eval) datasets with one `audio` column, undecoded; mixing several corpora when asked to."""
    if args.data_dir is not None:
        sources = [dict(path="audiofolder", name=None, data_dir=args.data_dir, split=args.train_split_name)]
        eval_split = args.eval_split_name or "validation"
    else:
        names = args.dataset_name.split(",")
        configs = split_list(args.dataset_config_name, len(names), "dataset_config_name")
        splits = split_list(args.train_split_name, len(names), "train_split_name")
        sources = [dict(path=n.strip(), name=c, split=s) for n, c, s in zip(names, configs, splits)]
        eval_split = args.eval_split_name
    audio_columns = split_list(args.audio_column_name, len(sources), "audio_column_name")

    def load(source: dict, split: str, audio_column: str):
        kwargs = {k: v for k, v in source.items() if k != "split" and v is not None}
        dataset = load_dataset(**kwargs, split=split, streaming=args.streaming)
        if audio_column not in dataset.column_names:
            raise ValueError(f"No audio column {audio_column!r} in {source['path']}: {dataset.column_names}.")
        dataset = dataset.select_columns([audio_column])
        if audio_column != "audio":
            dataset = dataset.rename_column(audio_column, "audio")
        return dataset.cast_column("audio", Audio(decode=False))

    with accelerator.main_process_first():  # one process downloads / prepares, the others read the cache
        train_parts = [load(source, source["split"], column) for source, column in zip(sources, audio_columns)]
        eval_dataset = None
        if eval_split is not None:
            try:
                eval_dataset = load(sources[0], eval_split, audio_columns[0])
            except ValueError as error:
                if args.eval_split_name is not None or "split" not in str(error).lower():
                    raise
    if args.streaming:
        train = train_parts[0] if len(train_parts) == 1 else interleave_datasets(train_parts, seed=args.seed)
        if eval_dataset is None:
            eval_dataset, train = train.take(args.max_eval_samples), train.skip(args.max_eval_samples)
        else:
            eval_dataset = eval_dataset.take(args.max_eval_samples)
        train = train.shuffle(seed=args.seed, buffer_size=args.shuffle_buffer_size)
        return train, eval_dataset
    train = train_parts[0] if len(train_parts) == 1 else concatenate_datasets(train_parts)
    if eval_dataset is None:
        split = train.train_test_split(test_size=args.validation_split_percentage / 100, seed=args.seed)
        train, eval_dataset = split["train"], split["test"]
    eval_dataset = eval_dataset.select(range(min(args.max_eval_samples, len(eval_dataset))))
    return train, eval_dataset


# --------------------------------------------------------------------------------------------------------------------
# Evaluation, checkpoints, outputs


@torch.no_grad()
def evaluate(student, teacher, eval_loader, accelerator, args) -> dict:
    """Per teacher layer: mean L1 and mean cosine similarity of predictions and targets over held-out frames."""
    student.eval()
    layers = len(args.teacher_layers)
    l1_sum, cosine_sum, frames = torch.zeros(layers), torch.zeros(layers), torch.zeros(())
    l1_sum, cosine_sum, frames = (t.to(accelerator.device) for t in (l1_sum, cosine_sum, frames))
    for batch in eval_loader:
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        with accelerator.autocast():
            _, l1, cosine = distillation_forward(
                student, teacher, batch["input_values"], batch["attention_mask"], args.freeze_feature_encoder
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
    for i, layer in enumerate(args.teacher_layers):
        metrics[f"eval/l1_layer_{layer}"] = (l1_sum[i] / frames).item()
        metrics[f"eval/cosine_layer_{layer}"] = (cosine_sum[i] / frames).item()
    return metrics


def no_usable_audio_message(state: dict, where: str) -> str:
    return (
        f"No usable training audio in {where}: {state['unreadable']} clips unreadable (missing, corrupt or non-finite"
        f" audio), {state['too_short']} too short so far. Check --data_dir / --dataset_name, --audio_column_name and"
        " --min_duration_in_seconds; the log names each unreadable file."
    )


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (an interrupted save leaves only a `.tmp` folder, never listed)."""
    checkpoints = [p for p in (output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*") if p.suffix != ".tmp"]
    return sorted(checkpoints, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: dict, save_total_limit: int) -> Path:
    """Save atomically: write into `checkpoint-N.tmp`, then rename; only then delete the oldest checkpoints."""
    final = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{state['step']}"
    staging = final.with_suffix(".tmp")
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        (staging / "trainer_state.json").write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in list_checkpoints(output_dir)[:-save_total_limit] if save_total_limit > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def is_stand_in(path: str | None, marker: str) -> bool:
    """True for a local teacher or corpus whose card says it is a stand-in / synthetic."""
    card = Path(path) / "README.md" if path else None
    return bool(card and card.is_file() and marker in card.read_text(encoding="utf-8").lower())


def write_model_card(output_dir: Path, args: argparse.Namespace, results: dict) -> None:
    datasets = [args.dataset_name] if args.dataset_name else []
    data = ModelCardData(
        language="pt",
        license="apache-2.0",
        library_name="transformers",
        tags=["audio", "speech", "distilxlsr", "distilhubert", "knowledge-distillation", "wav2vec2", "portuguese"],
        base_model=args.teacher_name_or_path,
        datasets=[d for name in datasets for d in name.split(",")] or None,
        pipeline_tag="feature-extraction",
    )
    cosines = ", ".join(
        f"layer {layer}: {results['final_eval'][f'eval/cosine_layer_{layer}']:.3f}" for layer in args.teacher_layers
    )
    warnings = []
    if results["teacher_is_stand_in"] and is_stand_in(args.teacher_name_or_path, "supervised stand-in"):
        warnings.append(
            "The teacher is a **supervised stand-in** of XLSR-53's architecture family, CTC-trained on synthetic "
            "speech by this project's `train_teacher.py`, not facebook/wav2vec2-large-xlsr-53."
        )
    elif results["teacher_is_stand_in"]:
        warnings.append(
            "The teacher is a **randomly initialised stand-in** of XLSR-53's architecture family, not "
            "facebook/wav2vec2-large-xlsr-53: this model only demonstrates the pipeline."
        )
    if results["data_is_synthetic"]:
        warnings.append("The audio is a **synthetic** (espeak-ng) demo corpus, a stand-in for real speech.")
    content = f"""---
{data.to_yaml()}
---

# DistilXLSR student of `{args.teacher_name_or_path}`

{" ".join(warnings)}

A DistilHuBERT-style student (arXiv 2110.01900): the teacher's conv front end and its first
{results["student_num_hidden_layers"]} transformer layers, with one prediction head per distilled teacher layer
({", ".join(map(str, args.teacher_layers))}), trained to predict those layers with L1 + {args.cosine_weight} x
-log(sigmoid(cosine)).

| | value |
|---|---|
| teacher | `{args.teacher_name_or_path}` ({results["teacher_parameters"]:,} parameters) |
| student | {results["student_parameters"]:,} parameters ({results["student_backbone_parameters"]:,} without prediction heads) |
| teacher layers | {", ".join(map(str, args.teacher_layers))} |
| data | `{args.dataset_name or args.data_dir}` |
| steps | {results["steps"]} x {args.per_device_train_batch_size} clips x {results["num_processes"]} processes x {args.gradient_accumulation_steps} accumulation |
| audio seen | {results["audio_hours_seen"]:.2f} h (crops of at most {args.max_duration_in_seconds} s) |
| final held-out cosine similarity | {cosines} |
| front end | {"frozen, shared with the teacher" if args.freeze_feature_encoder else "trained"} |

## Use

```python
from transformers import AutoModel
model = AutoModel.from_pretrained("{args.hub_model_id or output_dir}", trust_remote_code=True)
outputs = model(input_values)  # outputs.last_hidden_state, outputs.layer_predictions
```

Fine-tune for speech recognition with `finetune_ctc.py --model_name_or_path {args.hub_model_id or output_dir}`.
`model.to_wav2vec2()` exports the backbone as a plain `Wav2Vec2Model` (no remote code).
"""
    ModelCard(content).save(output_dir / "README.md")


# --------------------------------------------------------------------------------------------------------------------
# Main


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    # Before anything is loaded: an unwritable folder, or one holding another run, ends the run here.
    resuming = args.resume_from_checkpoint is not None and (
        args.resume_from_checkpoint != "latest" or bool(list_checkpoints(output_dir))
    )
    previous_run = check_output_dir(output_dir, RUN_FILES, args.overwrite_output_dir, resuming)
    # Fail on a bad --teacher_layers before any weights or data are loaded.
    teacher_config = AutoConfig.from_pretrained(args.teacher_name_or_path, trust_remote_code=args.trust_remote_code)
    check_teacher_layers(teacher_config, args.teacher_layers)
    if args.data_dir is not None:
        check_data_dir(args.data_dir)

    report_to = [] if args.report_to in ("none", "") else args.report_to.split(",")
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=report_to or None,
        project_dir=str(output_dir),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logger.setLevel(logging.ERROR)
    if previous_run and args.overwrite_output_dir and accelerator.is_main_process:
        logger.warning("--overwrite_output_dir: deleting the previous run in %s", output_dir)
        remove_previous_run(previous_run)
    accelerator.wait_for_everyone()
    set_seed(args.seed)

    # Teacher and student
    teacher_model = AutoModel.from_pretrained(args.teacher_name_or_path, trust_remote_code=args.trust_remote_code)
    if args.student_name_or_path:
        student = DistilXLSRModel.from_pretrained(args.student_name_or_path)
        if student.config.teacher_layers != args.teacher_layers:
            raise ValueError(f"The student predicts layers {student.config.teacher_layers}, not {args.teacher_layers}.")
    else:
        student = DistilXLSRModel.from_teacher(
            teacher_model, num_hidden_layers=args.student_num_hidden_layers, teacher_layers=args.teacher_layers
        )
        student.config.teacher_name_or_path = args.teacher_name_or_path
    teacher_parameters = sum(p.numel() for p in teacher_model.base_model.parameters())  # before the cut
    teacher = Teacher(teacher_model, args.teacher_layers)
    if args.freeze_feature_encoder:
        same = all(
            torch.equal(a, b)
            for a, b in zip(student.feature_extractor.state_dict().values(), teacher.front_end.state_dict().values())
        )
        if not same:
            raise ValueError("--freeze_feature_encoder shares the teacher's conv front end, but the student's differs.")
        student.freeze_feature_encoder()
    if args.gradient_checkpointing:
        student.activation_checkpointing_enable()
    # SpecAugment is for CTC fine-tuning; DistilHuBERT distils from unmasked features.
    spec_augment = student.config.apply_spec_augment
    student.config.apply_spec_augment = False
    if student.masked_spec_embed is not None:  # unused without SpecAugment; DDP insists every trained weight is used
        student.masked_spec_embed.requires_grad_(False)
    teacher_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    teacher.to(accelerator.device, dtype=teacher_dtype)

    # Data
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(args.teacher_name_or_path)
    except OSError:
        feature_extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True)
    min_samples = max(min_samples_for_frames(student.config), int(args.min_duration_in_seconds * SAMPLING_RATE))
    max_samples = int(args.max_duration_in_seconds * SAMPLING_RATE)
    train_data, eval_data = load_audio_datasets(args, accelerator)
    collator = DistillationCollator(feature_extractor, min_samples)
    loader_kwargs = dict(
        collate_fn=collator, num_workers=args.dataloader_num_workers, generator=torch.Generator().manual_seed(args.seed)
    )
    if args.streaming:
        # Each process reads its own shard of the stream; these loaders are not prepare()d (accelerate would shard the
        # stream again, or dispatch batches that must all have one size), so batches are moved to the device here.
        train_data = split_dataset_by_node(train_data, accelerator.process_index, accelerator.num_processes)
        eval_data = split_dataset_by_node(eval_data, accelerator.process_index, accelerator.num_processes)
        train_clips = StreamingAudioClips(train_data, "audio", max_samples, args.seed)
        eval_clips = StreamingAudioClips(eval_data, "audio", max_samples, args.seed, random_crop=False)
        train_loader = torch.utils.data.DataLoader(
            train_clips, batch_size=args.per_device_train_batch_size, **loader_kwargs
        )
        eval_loader = torch.utils.data.DataLoader(
            eval_clips, batch_size=args.per_device_eval_batch_size, **loader_kwargs
        )
        sampler = None
    else:
        train_clips = AudioClips(train_data, "audio", max_samples, args.seed)
        eval_clips = AudioClips(eval_data, "audio", max_samples, args.seed, random_crop=False)
        sampler = EpochSampler(len(train_clips), args.seed)
        train_loader = torch.utils.data.DataLoader(
            train_clips, batch_size=args.per_device_train_batch_size, sampler=sampler, drop_last=True, **loader_kwargs
        )
        eval_loader = torch.utils.data.DataLoader(
            eval_clips, batch_size=args.per_device_eval_batch_size, **loader_kwargs
        )
    logger.info(
        "Distilling on %s training clips, evaluating on %s held-out clips",
        len(train_data) if not args.streaming else "streamed",
        len(eval_data) if not args.streaming else args.max_eval_samples,
    )

    # Optimisation: s3prl's AdamW, linear warm-up then decay
    optimizer = torch.optim.AdamW(
        parameter_groups(student, args.weight_decay),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * args.max_train_steps) * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    if args.streaming:
        student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    else:
        student, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
            student, optimizer, train_loader, eval_loader, scheduler
        )
    raw_student = accelerator.unwrap_model(student)

    state = dict(step=0, epoch=0, batches_in_epoch=0, audio_seconds=0.0, unreadable=0, too_short=0, nonfinite_steps=0)
    state["log_history"] = []
    if args.resume_from_checkpoint:
        checkpoint = args.resume_from_checkpoint
        if checkpoint == "latest":
            checkpoints = list_checkpoints(output_dir)
            checkpoint = checkpoints[-1] if checkpoints else None
        if checkpoint is None:
            logger.info("No checkpoint in %s: starting from scratch", output_dir / "checkpoints")
        else:
            accelerator.load_state(str(checkpoint))
            state = {"nonfinite_steps": 0, **json.loads((Path(checkpoint) / "trainer_state.json").read_text())}
            logger.info("Resumed from %s at step %d", checkpoint, state["step"])
    if report_to:
        accelerator.init_trackers("distilxlsr", config={k: str(v) for k, v in vars(args).items()})

    def train_batches() -> Iterator[dict]:
        """Batches forever, epoch after epoch, continuing a resumed epoch where its checkpoint left it."""
        while True:
            if hasattr(train_loader, "set_epoch"):  # a prepared loader passes it on to the sampler
                train_loader.set_epoch(state["epoch"])
            train_clips.set_epoch(state["epoch"])
            loader = train_loader
            if state["batches_in_epoch"]:
                loader = accelerator.skip_first_batches(train_loader, state["batches_in_epoch"])
            yielded = False
            for batch in loader:
                yielded = True
                state["batches_in_epoch"] += 1
                yield batch
            if not yielded and state["batches_in_epoch"] == 0:
                raise ValueError("The training data yielded no batch: too few clips for the batch size?")
            state["epoch"], state["batches_in_epoch"] = state["epoch"] + 1, 0

    first_eval = None
    if state["step"] == 0:
        first_eval = evaluate(student, teacher, eval_loader, accelerator, args)
        logger.info("Before distillation: %s", first_eval)
        state["initial_eval"] = first_eval
        accelerator.log(first_eval, step=0)

    student.train()
    progress = tqdm(
        total=args.max_train_steps,
        initial=state["step"],
        disable=not accelerator.is_local_main_process,
        desc="distilling",
        dynamic_ncols=True,
    )
    started, steps_this_run = time.time(), 0
    running = torch.zeros(1 + 2 * len(args.teacher_layers), device=accelerator.device)
    running_batches = 0
    nonfinite_in_a_row = batches_without_audio = 0
    batches = train_batches()
    while state["step"] < args.max_train_steps:
        batch = {key: value.to(accelerator.device) for key, value in next(batches).items()}
        with accelerator.accumulate(student):
            loss, l1, cosine = distillation_forward(
                student,
                teacher,
                batch["input_values"],
                batch["attention_mask"],
                args.freeze_feature_encoder,
                args.cosine_weight,
            )
            accelerator.backward(loss * batch["weight"])
            finite = True
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(student.parameters(), args.max_grad_norm)
                # The norm of the reduced gradients: every process makes the same choice.
                finite = grad_norm is None or bool(torch.isfinite(grad_norm))
            if finite or accelerator.scaler is not None:  # (fp16's GradScaler skips such a step itself)
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        counters = accelerator.reduce(
            torch.stack([batch["audio_seconds"], batch["unreadable"].float(), batch["too_short"].float()]).to(
                accelerator.device
            ),
            "sum",
        )
        state["audio_seconds"] += counters[0].item()
        state["unreadable"] += int(counters[1].item())
        state["too_short"] += int(counters[2].item())
        batches_without_audio = batches_without_audio + 1 if counters[0].item() == 0 else 0
        if batches_without_audio >= MAX_BATCHES_WITHOUT_AUDIO_IN_A_ROW:
            raise ValueError(no_usable_audio_message(state, f"the last {batches_without_audio} batches"))
        if torch.isfinite(loss):
            running += torch.cat([loss.detach()[None], l1, cosine]) * batch["weight"].to(accelerator.device)
            running_batches += batch["weight"].item()
        if not accelerator.sync_gradients:
            continue
        nonfinite_in_a_row = 0 if finite else nonfinite_in_a_row + 1
        if not finite:
            state["nonfinite_steps"] += 1
            logger.warning("Step %d skipped: non-finite loss or gradient", state["step"] + 1)
        if nonfinite_in_a_row >= MAX_NONFINITE_STEPS_IN_A_ROW:
            raise RuntimeError(
                f"{nonfinite_in_a_row} steps in a row had a non-finite (NaN or inf) loss or gradient; each was skipped, "
                "so the weights are unharmed. Lower --learning_rate or --max_grad_norm, or try --mixed_precision bf16 "
                "instead of fp16."
            )

        state["step"] += 1
        steps_this_run += 1
        progress.update(1)
        if state["step"] % args.logging_steps == 0 or state["step"] == args.max_train_steps:
            averaged = accelerator.reduce(running, "mean") / max(running_batches, 1)
            layers = args.teacher_layers
            entry = {
                "step": state["step"],
                "loss": round(averaged[0].item(), 6),
                "lr": scheduler.get_last_lr()[0],
                "audio_hours": state["audio_seconds"] / 3600,
            }
            entry.update({f"l1_layer_{layer}": averaged[1 + i].item() for i, layer in enumerate(layers)})
            entry.update(
                {f"cosine_layer_{layer}": averaged[1 + len(layers) + i].item() for i, layer in enumerate(layers)}
            )
            state["log_history"].append(entry)
            accelerator.log({f"train/{k}": v for k, v in entry.items() if k != "step"}, step=state["step"])
            progress.set_postfix(
                loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}", hours=f"{entry['audio_hours']:.2f}"
            )
            running.zero_()
            running_batches = 0
        if state["step"] % args.eval_steps == 0 or state["step"] == args.max_train_steps:
            metrics = evaluate(student, teacher, eval_loader, accelerator, args)
            state["last_eval"] = metrics
            state["log_history"].append({"step": state["step"], **metrics})
            accelerator.log(metrics, step=state["step"])
            logger.info("step %d: %s", state["step"], metrics)
        stop_now = args.max_steps_this_run is not None and steps_this_run >= args.max_steps_this_run
        if state["step"] % args.checkpointing_steps == 0 or (stop_now and state["step"] < args.max_train_steps):
            save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
        if stop_now and state["step"] < args.max_train_steps:
            logger.info(
                "Stopping after %d steps in this run (--max_steps_this_run); resume with "
                "--resume_from_checkpoint latest",
                steps_this_run,
            )
            accelerator.end_training()
            return state
    progress.close()

    # Outputs: the student (remote code), its feature extractor, results and a model card
    elapsed = time.time() - started
    accelerator.wait_for_everyone()
    if state["audio_seconds"] == 0:
        raise ValueError(no_usable_audio_message(state, "the whole run") + " No student was saved.")
    if not all(torch.isfinite(p).all() for p in raw_student.parameters()):
        raise RuntimeError("The student's weights are not finite (NaN or inf): not saved.")
    raw_student.config.apply_spec_augment = spec_augment
    results = {
        "teacher": args.teacher_name_or_path,
        "teacher_is_stand_in": is_stand_in(args.teacher_name_or_path, "stand-in"),
        "data": args.dataset_name or args.data_dir,
        "data_is_synthetic": is_stand_in(args.data_dir, "synthetic"),
        "teacher_layers": args.teacher_layers,
        "student_num_hidden_layers": raw_student.config.num_hidden_layers,
        "teacher_parameters": teacher_parameters,
        "student_parameters": sum(p.numel() for p in raw_student.parameters()),
        "student_backbone_parameters": sum(
            p.numel() for n, p in raw_student.named_parameters() if not n.startswith("prediction_heads")
        ),
        "steps": state["step"],
        "num_processes": accelerator.num_processes,
        "audio_hours_seen": state["audio_seconds"] / 3600,
        "skipped_unreadable_clips": state["unreadable"],
        "dropped_too_short_clips": state["too_short"],
        "skipped_nonfinite_steps": state["nonfinite_steps"],
        "initial_eval": state.get("initial_eval"),
        "final_eval": state["last_eval"],
        "train_seconds_this_run": elapsed,
        "log_history": state["log_history"],
    }
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        raw_student.save_pretrained(output_dir)
        feature_extractor.save_pretrained(output_dir)
        (output_dir / "distill_results.json").write_text(json.dumps(results, indent=2))
        write_model_card(output_dir, args, results)
        logger.info("Saved the student, feature extractor, model card and distill_results.json to %s", output_dir)
        if args.push_to_hub:
            from huggingface_hub import HfApi

            api = HfApi(token=args.hub_token)
            repo = api.create_repo(args.hub_model_id, private=args.hub_private_repo, exist_ok=True).repo_id
            api.upload_folder(repo_id=repo, folder_path=output_dir, ignore_patterns=["checkpoints/*", "runs/*"])
            logger.info("Pushed to https://huggingface.co/%s", repo)
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main()
