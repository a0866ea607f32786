"""CTC fine-tuning with transformers' `Trainer`: the data preparation, collator, trainer and guard finetune_ctc.py
uses (and stand_ins/train_teacher.py through it).

- `prepare_split`: decode (the one audio decoder), extract features, tokenise; drop, and count, unreadable clips,
  clips outside the duration bounds and transcripts longer than their clip has frames for.
- `DataCollatorCTCWithPadding`: pads audio with the feature extractor and labels with -100.
- `CTCTrainer`: greedy ids without padding frames instead of logits in evaluation, each paired with its clip's id (so
  every reference is the clip's own normalised transcript, whatever order evaluation batches them in), and the loss
  averaged over gradient accumulation; an unreadable RNG state in a resumed checkpoint is a warning that the resume is
  not exact.
- `SkipNonFiniteSteps`: a non-finite gradient never reaches the weights, nor does training start from non-finite
  weights (a damaged checkpoint, say).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Features, List, Value
from transformers import Trainer, TrainerCallback, Wav2Vec2Processor

from .audio import AudioDecodingError, load_audio
from .checks import MAX_NONFINITE_STEPS_IN_A_ROW, NonFiniteStreak
from .decoding import error_rates, frame_mask, greedy_decode, output_frames
from .memory import resident_memory_gb

logger = logging.getLogger(__name__)

CLIP_ID = "clip_id"  # a column of evaluated splits: the clip's row in `Transcripts`


def ctc_frames_needed(labels: Sequence[int]) -> int:
    """The fewest frames a CTC alignment of `labels` takes: one per label, plus a blank between two equal labels in a
    row. With fewer frames the CTC loss is infinite (zeroed by `ctc_zero_infinity`: the clip would teach nothing)."""
    return len(labels) + sum(1 for previous, label in zip(labels, labels[1:]) if previous == label)


def prepare_split(
    dataset: Dataset,
    processor: Wav2Vec2Processor,
    audio_column: str,
    length_column: str,
    min_samples: int,
    max_samples: int,
    num_proc: int | None,
    name: str,
    model_config: Any | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Decode, extract features and tokenise `target_text`; then keep the readable clips of `min_samples` to
    `max_samples` samples and, with `model_config` (for training), only those whose transcript fits in the frames the
    model gives them (`ctc_frames_needed`; scored splits keep theirs, so that their WER counts what the model cannot
    say, as evaluate_asr.py does). Returns the dataset and, by reason, how many clips were dropped and kept
    (`<name>_filtered_unreadable_audio`, `_too_short`, `_too_long`, `_transcript_too_long`, `<name>_samples`)."""
    feature_extractor, tokenizer = processor.feature_extractor, processor.tokenizer
    sampling_rate = feature_extractor.sampling_rate

    def decode(example: dict[str, Any]) -> dict[str, Any]:
        try:
            array = load_audio(example[audio_column], sampling_rate)
        except AudioDecodingError as error:  # missing, corrupt, unsupported or non-finite audio
            logger.warning("Skipping unreadable audio: %s", error)
            return {"input_values": np.zeros(0, np.float32), "labels": [], length_column: 0, "readable": False}
        return {
            "input_values": feature_extractor(array, sampling_rate=sampling_rate).input_values[0],
            "labels": tokenizer(example["target_text"]).input_ids,
            length_column: len(array),
            "readable": True,
        }

    features = Features(
        {
            "input_values": List(Value("float32")),
            "labels": List(Value("int64")),
            length_column: Value("int64"),
            "readable": Value("bool"),
            "target_text": Value("string"),
        }
    )
    columns = [column for column in dataset.column_names if column != "target_text"]
    dataset = dataset.map(
        decode, remove_columns=columns, features=features, num_proc=num_proc, desc=f"decoding {name} audio"
    )

    def transcript_fits(lengths: list[int], labels: list[list[int]]) -> list[bool]:
        frames = output_frames(model_config, torch.tensor(lengths, dtype=torch.long)).tolist()
        return [ctc_frames_needed(ids) <= count for ids, count in zip(labels, frames)]

    filters = [  # batched: each gets lists of its columns' values
        ("unreadable_audio", ["readable"], lambda readable: readable),
        ("too_short", [length_column], lambda lengths: [length >= min_samples for length in lengths]),
        ("too_long", [length_column], lambda lengths: [length <= max_samples for length in lengths]),
    ]
    if model_config is not None:
        filters.append(("transcript_too_long", [length_column, "labels"], transcript_fits))
    stats = {}
    for reason, columns, keep in filters:
        before = len(dataset)
        dataset = dataset.filter(keep, input_columns=columns, batched=True)
        stats[f"{name}_filtered_{reason}"] = before - len(dataset)
    stats[f"{name}_samples"] = len(dataset)
    if len(dataset) == 0:
        raise ValueError(f"No {name} clips left after filtering: {stats}")
    return dataset.remove_columns("readable"), stats


class Transcripts:
    """The normalised references of the evaluated splits, one row per clip: each split gets a `clip_id` column into
    them, which `CTCTrainer` hands back beside the clip's predicted ids."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, dataset: Dataset) -> Dataset:
        start = len(self.texts)
        self.texts += dataset["target_text"]
        return dataset.add_column(CLIP_ID, list(range(start, len(self.texts))))

    def of(self, clip_ids: np.ndarray) -> list[str]:
        return [self.texts[int(i)] for i in np.asarray(clip_ids).reshape(len(clip_ids), -1)[:, 0]]


@dataclass
class DataCollatorCTCWithPadding:
    """Pads `input_values` with the feature extractor (adding `attention_mask` when it returns one) and `labels` with
    -100, which the CTC loss ignores; passes `clip_id` on when the rows have one."""

    processor: Wav2Vec2Processor
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.processor.feature_extractor.pad(
            [{"input_values": feature["input_values"]} for feature in features],
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        labels = torch.full((len(features), max(len(f["labels"]) for f in features)), -100, dtype=torch.long)
        for row, feature in enumerate(features):
            labels[row, : len(feature["labels"])] = torch.tensor(feature["labels"], dtype=torch.long)
        batch["labels"] = labels
        if CLIP_ID in features[0]:
            batch[CLIP_ID] = torch.tensor([[int(feature[CLIP_ID])] for feature in features])
        return batch


class CTCTrainer(Trainer):
    """`Trainer` with these changes, a resume that says when it is not exact, and `SkipNonFiniteSteps`
    (`.nonfinite_guard`) among its callbacks.

    - Training log lines carry the resident memory (`rss_gb`, `workers_rss_gb`).
    - Evaluation returns greedy CTC ids instead of logits (far less memory), with frames that only exist because of
      batch padding set to -100, so WER/CER do not depend on how the clips were batched; and, as its "labels", each
      clip's `clip_id` when the batch has one (the labels themselves still give the eval loss).
    - The loss is averaged over gradient accumulation steps. transformers v5 passes `num_items_in_batch` to any model
      whose `forward` takes `**kwargs` (wav2vec2's and DistilXLSR's CTC heads do) and then assumes the loss was divided
      by it, but the CTC loss ignores it; without this, `--gradient_accumulation_steps N` would scale the loss by N.
    - A resumed checkpoint's RNG state that cannot be read is a warning that the resume is not exact (the Trainer
      would fail in the middle of its first epoch).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.nonfinite_guard = SkipNonFiniteSteps()
        self.add_callback(self.nonfinite_guard)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training log lines also give the resident memory of this process and its data-loader workers."""
        if "loss" in logs:
            logs.update(resident_memory_gb())
        super().log(logs, start_time)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        # The Trainer fails deep in training on an unreadable (truncated, say) RNG state; as accelerate does when it
        # loads a state, go on without it, but say that the resume is then not exact.
        try:
            super()._load_rng_state(checkpoint)
        except Exception as error:
            logger.warning(
                "The RNG state in %s could not be read (%s): it is not restored, so this resumed run does not "
                "continue exactly as the interrupted one would have.", checkpoint, error,
            )  # fmt: skip

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        inputs = dict(inputs)
        clip_ids = inputs.pop(CLIP_ID, None)
        attention_mask = inputs.get("attention_mask")
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if clip_ids is not None:
            labels = clip_ids
        if logits is None:
            return loss, None, labels
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        predicted_ids = logits.argmax(dim=-1)
        if attention_mask is not None:
            config = self.accelerator.unwrap_model(model).config
            real = frame_mask(config, attention_mask.sum(-1), predicted_ids.shape[1]).to(predicted_ids.device)
            predicted_ids = predicted_ids.masked_fill(~real, -100)
        return loss, predicted_ids, labels


class SkipNonFiniteSteps(TrainerCallback):
    """A non-finite (NaN or inf) gradient never reaches the weights: its step is skipped (the gradients dropped, so the
    optimizer has nothing to apply) and counted in `skipped`; `MAX_NONFINITE_STEPS_IN_A_ROW` in a row stop training.
    (Under fp16 the GradScaler skips such steps itself; they are counted here too.)"""

    def __init__(self) -> None:
        self.streak = NonFiniteStreak(
            MAX_NONFINITE_STEPS_IN_A_ROW,
            "gradient",
            "Lower --learning_rate or --max_grad_norm, or use --bf16 instead of --fp16.",
        )

    @property
    def skipped(self) -> int:
        return self.streak.skipped

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # After the Trainer loaded `--resume_from_checkpoint`: non-finite weights would train for nothing.
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            where = f"--resume_from_checkpoint: {args.resume_from_checkpoint}" if state.global_step else "the model"
            raise ValueError(
                f"{where} holds non-finite (NaN or inf) weights; resume from an earlier checkpoint (pass its folder) "
                "or start afresh."
            )

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = not grads or bool(torch.stack([g.isfinite().all() for g in grads]).all())  # one device sync
        if not finite:
            model.zero_grad(set_to_none=True)
        self.streak.record(finite, state.global_step + 1)


def metrics_function(tokenizer: Any, transcripts: Transcripts, chars_to_ignore, latest: dict) -> Callable:
    """The Trainer's `compute_metrics`: greedy WER/CER of the predicted ids against each clip's reference; the
    scored transcripts are kept in `latest` (to print a few)."""

    def compute_metrics(prediction) -> dict[str, float]:
        predictions = greedy_decode(tokenizer, prediction.predictions, chars_to_ignore)
        references = transcripts.of(prediction.label_ids)
        latest.update(references=references, predictions=predictions)
        return error_rates(references, predictions)

    return compute_metrics
