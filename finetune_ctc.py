#!/usr/bin/env python
"""Fine-tune a distilled DistilXLSR student (or any wav2vec2 / HuBERT checkpoint) into a Brazilian Portuguese speech
recogniser with CTC, and report WER and CER.

It follows transformers' `examples/pytorch/speech-recognition/run_speech_recognition_ctc.py` (same argument names,
`Trainer`, processor saved beside the model), updated for transformers v5. Every `TrainingArguments` flag works
(`--max_steps`, `--learning_rate`, `--eval_strategy`, `--bf16`, `--report_to`, `--push_to_hub`, ...); see `--help`.

    # a student distilled by this project, on a local audiofolder (DIR/{train,validation,test}/metadata.csv)
    python finetune_ctc.py --model_name_or_path outputs/student --data_dir data/demo_corpus \\
        --output_dir outputs/student-ctc --max_steps 2000 --learning_rate 3e-4 --warmup_steps 0.1 \\
        --per_device_train_batch_size 16 --eval_strategy steps --eval_steps 500 \\
        --train_sampling_strategy group_by_length

    # its teacher on a Hub dataset, for comparison (Common Voice calls the transcript column "sentence")
    python finetune_ctc.py --model_name_or_path facebook/wav2vec2-large-xlsr-53 \\
        --dataset_name <a Parquet copy of Common Voice> --dataset_config_name pt \\
        --text_column_name sentence --output_dir outputs/xlsr53-cv-pt ...

datasets >= 4 no longer runs dataset loading scripts, so the script-based `mozilla-foundation/common_voice_*` repos do
not load: use a Parquet copy on the Hub, or turn a downloaded release into an audiofolder (metadata.csv with
file_name and sentence columns, then `--data_dir DIR --text_column_name sentence`).

Without any of `--do_train`, `--do_eval`, `--do_predict` all three run: train, score the eval split during and after
training, and score the test split (skipped with a warning when the dataset has none). The output directory holds the
model, the `Wav2Vec2Processor` (vocab.json, ...), `all_results.json` (train loss, eval/test WER and CER as fractions,
and how many clips each filter dropped) and a model card `README.md`. The result loads with
`pipeline("automatic-speech-recognition", model=output_dir, trust_remote_code=True)`.
"""

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import jiwer
import numpy as np
import torch
import transformers
from datasets import Audio, DatasetDict, Features, List, Value, load_dataset
from huggingface_hub import DatasetCard, EvalResult, ModelCard, ModelCardData
from transformers import (
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoTokenizer,
    EvalPrediction,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Processor,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from audio_io import AudioDecodingError, load_audio
from modeling_distilxlsr import min_samples_for_frames  # importing it registers "distilxlsr" with the Auto classes
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
from text_normalization import DEFAULT_CHARS_TO_IGNORE, normalize_text

logger = logging.getLogger(__name__)

# Model config fields that `--<name>` overrides when given (SpecAugment, dropouts, LayerDrop); otherwise the
# checkpoint's own values apply.
CONFIG_OVERRIDES = (
    "attention_dropout",
    "activation_dropout",
    "feat_proj_dropout",
    "hidden_dropout",
    "final_dropout",
    "layerdrop",
    "mask_time_prob",
    "mask_time_length",
    "mask_feature_prob",
    "mask_feature_length",
)


def config_override(description: str) -> Any:
    """A model config setting: unset (None) keeps the checkpoint's value."""
    return field(default=None, metadata={"help": f"{description} Unset: the checkpoint's value."})


@dataclass
class ModelArguments:
    """Which model and tokenizer to fine-tune, the model config settings to override, and whether to replace a
    previous run in --output_dir."""

    model_name_or_path: str = field(
        metadata={
            "help": "A distilled DistilXLSR student (directory or hub id) or any transformers wav2vec2 / HuBERT "
            "checkpoint, e.g. facebook/wav2vec2-large-xlsr-53 or lgris/distilxlsr_bp_4-12."
        }
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Reuse this CTC tokenizer instead of building a vocabulary from the training transcripts."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store models and datasets from the Hub."})
    trust_remote_code: bool = field(
        default=True,
        metadata={"help": "Allow model code shipped with the checkpoint (a DistilXLSR student saved with auto_map)."},
    )
    freeze_feature_encoder: bool = field(
        default=True,
        metadata={"help": "Freeze the convolutional feature encoder (--no_freeze_feature_encoder: train it)."},
    )
    attention_dropout: float | None = config_override("Dropout of the attention probabilities.")
    activation_dropout: float | None = config_override("Dropout inside the feed-forward layers.")
    feat_proj_dropout: float | None = config_override("Dropout of the projected features.")
    hidden_dropout: float | None = config_override("Dropout of the encoder's hidden states.")
    final_dropout: float | None = config_override("Dropout before the CTC head.")
    layerdrop: float | None = config_override("LayerDrop probability.")
    mask_time_prob: float | None = config_override(
        "SpecAugment: probability of each frame starting a masked time span (0 disables it)."
    )
    mask_time_length: int | None = config_override("SpecAugment: frames per time mask.")
    mask_feature_prob: float | None = config_override(
        "SpecAugment: probability of each channel starting a masked feature span."
    )
    mask_feature_length: int | None = config_override("SpecAugment: channels per feature mask.")
    ctc_loss_reduction: str = field(
        default="mean", metadata={"help": "Reduction of the CTC loss.", "choices": ["mean", "sum"]}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Delete the trained model, results and checkpoints already in --output_dir and train afresh. "
            "Without it (or --resume_from_checkpoint), training into such a folder is refused."
        },
    )


@dataclass
class DataTrainingArguments:
    """Which data to train and evaluate on, how to clean it, and what to write into the model card."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A dataset on the Hub (Parquet or audio files; datasets >= 4 runs no loading scripts) or a local folder."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's config, e.g. 'pt'."})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "A local audiofolder: DIR/{train,validation,test}/metadata.csv with file_name and transcription "
            "columns (make_demo_corpus.py writes one). With --dataset_name, passed to load_dataset as data_dir."
        },
    )
    train_split_name: str = field(default="train", metadata={"help": "Training split ('train+validation' works)."})
    eval_split_name: str = field(default="validation", metadata={"help": "Split scored during and after training."})
    test_split_name: str = field(
        default="test", metadata={"help": "Split scored at the end (skipped with a warning if the dataset lacks it)."}
    )
    audio_column_name: str = field(default="audio", metadata={"help": "Column with the audio."})
    text_column_name: str = field(
        default="transcription",
        metadata={"help": "Column with the transcript ('sentence' in Common Voice, 'text' in MLS)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training clips."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N eval clips."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Use only the first N test clips."})
    min_duration_in_seconds: float = field(
        default=0.0,
        metadata={"help": "Drop clips shorter than this (clips shorter than the model's conv receptive field always)."},
    )
    max_duration_in_seconds: float = field(default=20.0, metadata={"help": "Drop clips longer than this."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for preprocessing."})
    chars_to_ignore: list[str] = field(
        default_factory=lambda: list(DEFAULT_CHARS_TO_IGNORE),
        metadata={"help": "Characters replaced by a space in transcripts before training and scoring."},
    )
    unk_token: str = field(default="[UNK]", metadata={"help": "Token for characters outside the vocabulary."})
    pad_token: str = field(default="[PAD]", metadata={"help": "Padding token, also the CTC blank."})
    word_delimiter_token: str = field(default="|", metadata={"help": "Token that stands for a space."})
    num_examples_to_print: int = field(
        default=5, metadata={"help": "Reference/prediction pairs printed after scoring the test (or eval) split."}
    )
    model_card_note: str | None = field(
        default=None, metadata={"help": "A note put at the top of the model card (e.g. 'trained on synthetic data')."}
    )
    lm_text_file: str | None = field(
        default=None,
        metadata={
            "help": "Text (one sentence per line) of an n-gram LM added at the end (add_ngram_lm.py; alpha and beta "
            "tuned on the eval split); the test split is then scored greedily and with the LM."
        },
    )
    lm_order: int = field(default=4, metadata={"help": "Order of the --lm_text_file n-gram LM."})


# What a training run leaves in --output_dir; training into a folder holding any of these is refused.
RUN_FILES = ("model.safetensors", "pytorch_model.bin", "*_results.json", "trainer_state.json", "checkpoint-*")
# What each numeric option (of the three argument dataclasses) must be, and finite; checked before anything loads.
NUMERIC_OPTIONS = {
    **dict.fromkeys(
        ("attention_dropout", "activation_dropout", "feat_proj_dropout", "hidden_dropout", "final_dropout"),
        PROBABILITY,
    ),
    **dict.fromkeys(("layerdrop", "mask_time_prob", "mask_feature_prob"), PROBABILITY),
    **dict.fromkeys(("mask_time_length", "mask_feature_length"), POSITIVE),
    **dict.fromkeys(("max_train_samples", "max_eval_samples", "max_test_samples"), POSITIVE),
    "min_duration_in_seconds": NON_NEGATIVE,
    "max_duration_in_seconds": POSITIVE,
    "preprocessing_num_workers": POSITIVE,
    "num_examples_to_print": NON_NEGATIVE,
    "lm_order": POSITIVE,
    **dict.fromkeys(("per_device_train_batch_size", "per_device_eval_batch_size"), POSITIVE),
    **dict.fromkeys(("gradient_accumulation_steps", "learning_rate", "num_train_epochs", "adam_epsilon"), POSITIVE),
    "max_steps": (lambda v: v == -1 or v > 0, "> 0 (or -1: --num_train_epochs decides)"),
    **dict.fromkeys(("logging_steps", "eval_steps", "save_steps"), POSITIVE),
    **dict.fromkeys(("weight_decay", "max_grad_norm", "dataloader_num_workers"), NON_NEGATIVE),
    **dict.fromkeys(("adam_beta1", "adam_beta2"), BETA),
    **dict.fromkeys(("seed", "data_seed"), SEED),
}
# Training stops with an error after this many optimizer steps in a row with a non-finite gradient (each skipped).
MAX_NONFINITE_STEPS_IN_A_ROW = 25


def build_vocabulary(
    texts: Iterable[str], word_delimiter_token: str = "|", unk_token: str = "[UNK]", pad_token: str = "[PAD]"
) -> dict[str, int]:
    """Character vocabulary of (normalised) transcripts for a `Wav2Vec2CTCTokenizer`.

    `pad_token` gets id 0 (it doubles as the CTC blank), `unk_token` 1, `word_delimiter_token` (standing for the space)
    2, then every other character of `texts` in sorted order.
    """
    characters = set()
    for text in texts:
        characters.update(text)
    characters -= {" ", word_delimiter_token, unk_token, pad_token}
    tokens = [pad_token, unk_token, word_delimiter_token, *sorted(characters)]
    return {token: index for index, token in enumerate(tokens)}


@dataclass
class DataCollatorCTCWithPadding:
    """Pads `input_values` with the feature extractor (adding `attention_mask` when it returns one) and `labels` with
    -100, which the CTC loss ignores."""

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
        return batch


class CTCTrainer(Trainer):
    """`Trainer` with two CTC-specific changes, and `SkipNonFiniteSteps` (`.nonfinite_guard`) among its callbacks.

    - Evaluation returns greedy CTC ids instead of logits (far less memory), with frames that only exist because of
      batch padding set to -100, so WER/CER do not depend on how the clips were batched.
    - The loss is averaged over gradient accumulation steps. transformers v5 passes `num_items_in_batch` to any model
      whose `forward` takes `**kwargs` (wav2vec2's and DistilXLSR's CTC heads do) and then assumes the loss was divided
      by it, but the CTC loss ignores it; without this, `--gradient_accumulation_steps N` would scale the loss by N.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.nonfinite_guard = SkipNonFiniteSteps()
        self.add_callback(self.nonfinite_guard)

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        attention_mask = inputs.get("attention_mask")
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if logits is None:
            return loss, None, labels
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        predicted_ids = logits.argmax(dim=-1)
        if attention_mask is not None:
            frames = self.accelerator.unwrap_model(model)._get_feat_extract_output_lengths(attention_mask.sum(-1))
            positions = torch.arange(predicted_ids.shape[1], device=predicted_ids.device)
            padded = positions[None, :] >= frames.to(predicted_ids.device)[:, None]
            predicted_ids = predicted_ids.masked_fill(padded, -100)
        return loss, predicted_ids, labels


class SkipNonFiniteSteps(TrainerCallback):
    """A non-finite (NaN or inf) gradient never reaches the weights: its step is skipped (the gradients dropped, so the
    optimizer has nothing to apply) and counted in `skipped`; `MAX_NONFINITE_STEPS_IN_A_ROW` in a row stop training.
    (Under fp16 the GradScaler skips such steps itself; they are counted here too.)"""

    def __init__(self) -> None:
        self.skipped = self.in_a_row = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads or torch.stack([g.isfinite().all() for g in grads]).all():  # one device sync
            self.in_a_row = 0
            return
        model.zero_grad(set_to_none=True)
        self.skipped += 1
        self.in_a_row += 1
        logger.warning("Step %d skipped: non-finite gradient", state.global_step + 1)
        if self.in_a_row >= MAX_NONFINITE_STEPS_IN_A_ROW:
            raise RuntimeError(
                f"{self.in_a_row} steps in a row had a non-finite (NaN or inf) gradient; each was skipped, so the "
                "weights are unharmed. Lower --learning_rate or --max_grad_norm, or use --bf16 instead of --fp16."
            )


def load_split(data_args: DataTrainingArguments, split: str, cache_dir: str | None) -> datasets.Dataset | None:
    """One split of the Hub dataset `--dataset_name` or of the local audiofolder `--data_dir` (`None` if missing)."""
    name = data_args.dataset_name or "audiofolder"
    try:
        dataset = load_dataset(
            name, data_args.dataset_config_name, data_dir=data_args.data_dir, split=split, cache_dir=cache_dir
        )
    except ValueError as err:
        if "split" not in str(err).lower():
            raise
        logger.warning("%s has no split %r: %s", name, split, err)
        return None
    missing = {data_args.audio_column_name, data_args.text_column_name} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"Split {split!r} of {name} has no column(s) {sorted(missing)}; its columns are {dataset.column_names}. "
            "Set --audio_column_name / --text_column_name (Common Voice: --text_column_name sentence)."
        )
    return dataset


def greedy_decode(tokenizer: Wav2Vec2CTCTokenizer, ids: np.ndarray) -> list[str]:
    """Greedy CTC transcripts: repeats merged, blanks dropped (ids of -100 count as blanks), spaces collapsed."""
    ids = np.where(ids == -100, tokenizer.pad_token_id, ids)
    return [" ".join(text.split()) for text in tokenizer.batch_decode(ids)]


def error_rates(references: list[str], predictions: list[str]) -> dict[str, float]:
    """Word and character error rates (jiwer) over a corpus, as fractions."""
    return {"wer": jiwer.wer(references, predictions), "cer": jiwer.cer(references, predictions)}


def card_notes(model_args: ModelArguments, data_args: DataTrainingArguments) -> list[str]:
    """Warnings for the model card: the user's `--model_card_note`, a synthetic corpus, a stand-in base model."""
    notes = [data_args.model_card_note] if data_args.model_card_note else []
    if data_args.data_dir and (Path(data_args.data_dir) / "README.md").is_file():
        try:
            tags = DatasetCard.load(Path(data_args.data_dir) / "README.md").data.tags or []
        except Exception:  # a README without Hub metadata
            tags = []
        if "synthetic" in tags:
            notes.append(
                f"Trained and evaluated on a **synthetic** corpus (`{data_args.data_dir}`, text-to-speech audio): its "
                "WER and CER say nothing about real Brazilian Portuguese speech."
            )
    # A local model, or the local teacher it was distilled from, whose card says it is a stand-in.
    model_dir = Path(model_args.model_name_or_path)
    candidates = [model_dir]
    if (model_dir / "config.json").is_file():
        teacher = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("teacher_name_or_path")
        candidates += [Path(teacher)] if teacher else []
    for directory in candidates:
        readme = directory / "README.md"
        if readme.is_file() and "stand-in" in readme.read_text(encoding="utf-8", errors="replace").lower():
            notes.append(
                f"The base model `{model_args.model_name_or_path}` is a **stand-in** (the card of `{directory}` says "
                "so), not derived from the real facebook/wav2vec2-large-xlsr-53: these results only show that the "
                "pipeline works."
            )
            break
    return notes


def write_model_card(
    output_dir: str,
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    training_args: TrainingArguments,
    results: dict[str, float],
    global_step: int,
) -> ModelCard:
    """Write `output_dir/README.md`: Hub metadata (language, license, tags, base model, model-index with WER and CER
    in percent) and a body with the results, usage, data and training settings."""
    hub_dataset = (
        data_args.dataset_name if data_args.dataset_name and not os.path.isdir(data_args.dataset_name) else None
    )
    dataset_label = hub_dataset or data_args.dataset_name or data_args.data_dir
    if data_args.dataset_config_name:
        dataset_label += f" ({data_args.dataset_config_name})"
    splits = (("test", data_args.test_split_name), ("eval", data_args.eval_split_name))
    scored = [(prefix, split) for prefix, split in splits if f"{prefix}_wer" in results]
    model_name = Path(training_args.hub_model_id or output_dir).name
    eval_results = [
        EvalResult(
            task_type="automatic-speech-recognition",
            task_name="Automatic Speech Recognition",
            dataset_type=hub_dataset or "audiofolder",
            dataset_name=hub_dataset or f"{Path(data_args.data_dir or dataset_label).name} (local audiofolder)",
            dataset_config=data_args.dataset_config_name,
            dataset_split=split,
            metric_type=metric,
            metric_name=f"{prefix.capitalize()} {metric.upper()} (%)",
            metric_value=round(100 * results[f"{prefix}_{metric}"], 2),
        )
        for prefix, split in scored[:1]  # the model-index reports the test split, else the eval split
        for metric in ("wer", "cer")
    ]
    data = ModelCardData(
        language="pt",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="automatic-speech-recognition",
        tags=["automatic-speech-recognition", "ctc", "distilxlsr", "wav2vec2", "portuguese", "brazilian-portuguese"],
        base_model=model_args.model_name_or_path,
        datasets=[hub_dataset] if hub_dataset else None,
        metrics=["wer", "cer"],
        model_name=model_name,
        eval_results=eval_results or None,
    )
    notes = "".join(f"> **Note:** {note}\n\n" for note in card_notes(model_args, data_args))
    rows = "\n".join(
        f"| {split} | {100 * results[f'{prefix}_wer']:.2f} | {100 * results[f'{prefix}_cer']:.2f} "
        f"| {results.get(f'{prefix}_samples', '')} |"
        for prefix, split in scored
    )
    dropped = {key: value for key, value in results.items() if "_filtered_" in key and value}
    encoder = "frozen" if model_args.freeze_feature_encoder else "trained"
    what = f"fine-tuned with CTC ({global_step} optimisation steps)" if global_step else "evaluated"
    body = f"""
# {model_name}

{notes}A Brazilian Portuguese speech recogniser: `{model_args.model_name_or_path}` {what} on {dataset_label} by
DistilXLSR-PT's `finetune_ctc.py`.

## Results

Greedy CTC decoding, no language model, transcripts normalised as described below.

| split | WER (%) | CER (%) | clips |
|---|---|---|---|
{rows}

## Usage

```python
from transformers import pipeline

asr = pipeline("automatic-speech-recognition", model="{training_args.hub_model_id or output_dir}", trust_remote_code=True)
print(asr("audio.wav")["text"])  # files of any sampling rate and channel count are decoded to 16 kHz mono
```

NumPy arrays must hold 16 kHz mono float audio.

## Data and text normalisation

- Data: {dataset_label}; audio column `{data_args.audio_column_name}`, transcript column `{data_args.text_column_name}`;
  splits `{data_args.train_split_name}` (train), `{data_args.eval_split_name}` (eval), `{data_args.test_split_name}` (test).
- Transcripts: Unicode NFC, lower case, accented letters kept, the characters
  `` {"".join(data_args.chars_to_ignore)} `` replaced by spaces, spaces collapsed (`text_normalization.normalize_text`).
- Vocabulary: {results.get("vocab_size", "?")} tokens, characters plus `[PAD]` (the CTC blank), `[UNK]` (unseen
  characters) and `|` (word delimiter).
- Clips kept: {data_args.min_duration_in_seconds}-{data_args.max_duration_in_seconds} s and no shorter than the model's
  receptive field. Dropped: {json.dumps(dropped) if dropped else "none"}.

## Training

Learning rate {training_args.learning_rate} ({training_args.lr_scheduler_type.value} schedule, warmup
{training_args.warmup_steps}), batch size {training_args.per_device_train_batch_size} per device x
{training_args.gradient_accumulation_steps} accumulation steps, {global_step} steps, feature encoder {encoder}, seed
{training_args.seed}; transformers {transformers.__version__}, datasets {datasets.__version__}, torch {torch.__version__}.
"""
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    card.save(os.path.join(output_dir, "README.md"))
    return card


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` keeps the module docstring's layout and shows every default."""


def main(args: list[str] | None = None) -> dict[str, float]:
    """Run the fine-tuning from command-line arguments (`sys.argv[1:]` when `args` is None); returns all results."""
    parser = HfArgumentParser(
        (ModelArguments, DataTrainingArguments, TrainingArguments), description=__doc__, formatter_class=HelpFormatter
    )
    args = sys.argv[1:] if args is None else args
    if len(args) == 1 and args[0].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(args[0]))
        given = set(json.loads(Path(args[0]).read_text(encoding="utf-8")))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=args)
        given = {arg.split("=")[0].lstrip("-") for arg in args if arg.startswith("--")}
    if data_args.dataset_name is None and data_args.data_dir is None:
        parser.error("give --dataset_name (a Hub dataset) or --data_dir (a local audiofolder)")
    if not given & {"do_train", "do_eval", "do_predict"}:  # (--eval_strategy alone sets do_eval)
        training_args.do_train = training_args.do_eval = training_args.do_predict = True
    for error in numeric_option_errors(NUMERIC_OPTIONS, model_args, data_args, training_args):
        parser.error(error)
    if data_args.min_duration_in_seconds > data_args.max_duration_in_seconds:
        parser.error("--min_duration_in_seconds is above --max_duration_in_seconds: every clip would be dropped")
    resume = training_args.resume_from_checkpoint
    if resume == "latest":  # as in train_distill.py; no checkpoint yet: start from scratch
        output_dir = training_args.output_dir
        resume = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        training_args.resume_from_checkpoint = resume
    if resume and model_args.overwrite_output_dir:
        parser.error("--overwrite_output_dir deletes the run that --resume_from_checkpoint would continue: pass one")
    if resume and not os.path.isdir(resume):
        parser.error(f"--resume_from_checkpoint {resume}: no such checkpoint folder")

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:  # info on the main process unless --log_level says otherwise
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    set_seed(training_args.seed)
    # Before any data is read: an unwritable --output_dir, or training into one that holds another run, ends here.
    with training_args.main_process_first(desc="checking the output folder"):
        previous_run = check_output_dir(
            training_args.output_dir,
            RUN_FILES if training_args.do_train else (),
            model_args.overwrite_output_dir,
            bool(resume),
        )
        if previous_run and model_args.overwrite_output_dir and training_args.process_index == 0:
            logger.warning("--overwrite_output_dir: deleting the previous run in %s", training_args.output_dir)
            remove_previous_run(previous_run)
    if data_args.dataset_name is None:
        check_data_dir(data_args.data_dir)
    source = f"{data_args.dataset_name or 'audiofolder'} (data_dir={data_args.data_dir})"
    print(f"Data: {source}; model: {model_args.model_name_or_path}; output: {training_args.output_dir}")

    # 1. Load the splits, decoding nothing yet: audio is decoded once, guarded, in step 4.
    splits = {}
    if training_args.do_train:
        splits["train"] = (data_args.train_split_name, data_args.max_train_samples)
    if training_args.do_eval:
        splits["eval"] = (data_args.eval_split_name, data_args.max_eval_samples)
    if training_args.do_predict:
        splits["test"] = (data_args.test_split_name, data_args.max_test_samples)
    raw = DatasetDict()
    for key, (split, max_samples) in splits.items():
        dataset = load_split(data_args, split, model_args.cache_dir)
        if dataset is None and key == "test":
            logger.warning("The test split is not scored: %s has no split %r.", source, split)
            training_args.do_predict = False
            continue
        if dataset is None:
            raise ValueError(f"{source} has no {key} split {split!r} (set --{key}_split_name).")
        if max_samples is not None:
            dataset = dataset.select(range(min(max_samples, len(dataset))))
        raw[key] = dataset.cast_column(data_args.audio_column_name, Audio(decode=False))

    # 2. Normalise the transcripts; drop those left empty.
    stats: dict[str, int] = {}
    raw = raw.map(
        lambda texts: {"target_text": [normalize_text(text, data_args.chars_to_ignore) for text in texts]},
        input_columns=[data_args.text_column_name],
        batched=True,
        num_proc=data_args.preprocessing_num_workers,
        desc="normalising transcripts",
    )
    for key in raw:
        before = len(raw[key])
        raw[key] = raw[key].filter(lambda text: len(text) > 0, input_columns=["target_text"])
        stats[f"{key}_filtered_empty_transcript"] = before - len(raw[key])

    # 3. Tokenizer (a vocabulary of the training transcripts, or a given one), feature extractor, processor, model.
    if model_args.tokenizer_name_or_path or not training_args.do_train:
        tokenizer_path = model_args.tokenizer_name_or_path or model_args.model_name_or_path
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                tokenizer_path, cache_dir=model_args.cache_dir, trust_remote_code=model_args.trust_remote_code
            )
        except (OSError, ValueError) as err:
            raise ValueError(
                f"Could not load a CTC tokenizer from {tokenizer_path}: without --do_train, give a fine-tuned CTC "
                "checkpoint or --tokenizer_name_or_path."
            ) from err
    else:
        vocab = build_vocabulary(
            raw["train"]["target_text"], data_args.word_delimiter_token, data_args.unk_token, data_args.pad_token
        )
        vocab_file = os.path.join(training_args.output_dir, "vocab.json")
        with training_args.main_process_first(desc="writing the vocabulary"):
            if training_args.process_index == 0:
                with open(vocab_file, "w", encoding="utf-8") as file:
                    json.dump(vocab, file, ensure_ascii=False, indent=1)
            tokenizer = Wav2Vec2CTCTokenizer(
                vocab_file,
                unk_token=data_args.unk_token,
                pad_token=data_args.pad_token,
                word_delimiter_token=data_args.word_delimiter_token,
                bos_token=None,  # CTC needs no sentence markers: they would only be extra outputs of the head
                eos_token=None,
            )
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(
            model_args.model_name_or_path,
            cache_dir=model_args.cache_dir,
            trust_remote_code=model_args.trust_remote_code,
        )
    except (OSError, ValueError):  # a distilled student or a bare encoder saved without preprocessor_config.json
        logger.info(
            "No feature extractor with %s: using a default 16 kHz Wav2Vec2FeatureExtractor.",
            model_args.model_name_or_path,
        )
        feature_extractor = Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
        )
    processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    if training_args.should_save:
        processor.save_pretrained(training_args.output_dir)

    overrides = {name: getattr(model_args, name) for name in CONFIG_OVERRIDES if getattr(model_args, name) is not None}
    model = AutoModelForCTC.from_pretrained(
        model_args.model_name_or_path,
        cache_dir=model_args.cache_dir,
        trust_remote_code=model_args.trust_remote_code,
        dtype=torch.float32,
        ignore_mismatched_sizes=True,  # a CTC checkpoint with another vocabulary gets a new head
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        ctc_loss_reduction=model_args.ctc_loss_reduction,
        ctc_zero_infinity=True,
        **overrides,
    )
    if model_args.freeze_feature_encoder:
        model.freeze_feature_encoder()

    # 4. Decode the audio (audio_io: 16 kHz mono, other rates resampled, channels mixed), extract features, tokenise.
    # Unreadable files are logged and dropped, then clips too short for the model or outside the duration bounds.
    sampling_rate = feature_extractor.sampling_rate
    length_column = training_args.length_column_name

    def prepare(example: dict[str, Any]) -> dict[str, Any]:
        try:
            array = load_audio(example[data_args.audio_column_name], sampling_rate)
        except AudioDecodingError as err:  # missing, corrupt, unsupported or non-finite audio
            logger.warning("Skipping unreadable audio: %s", err)
            empty = np.zeros(0, dtype=np.float32)
            return {"input_values": empty, "labels": [], length_column: -1, "target_text": example["target_text"]}
        return {
            "input_values": feature_extractor(array, sampling_rate=sampling_rate).input_values[0],
            "labels": tokenizer(example["target_text"]).input_ids,
            length_column: len(array),
            "target_text": example["target_text"],
        }

    features = Features(
        {
            "input_values": List(Value("float32")),
            "labels": List(Value("int64")),
            length_column: Value("int64"),
            "target_text": Value("string"),
        }
    )
    with training_args.main_process_first(desc="dataset map pre-processing"):
        vectorized = DatasetDict(
            {
                key: dataset.map(
                    prepare,
                    remove_columns=dataset.column_names,
                    features=features,
                    num_proc=data_args.preprocessing_num_workers,
                    desc=f"decoding {key} audio",
                )
                for key, dataset in raw.items()
            }
        )
    min_samples = max(min_samples_for_frames(model.config), int(data_args.min_duration_in_seconds * sampling_rate))
    # SpecAugment needs at least `mask_time_length` frames in a training batch.
    spec_augment = getattr(model.config, "apply_spec_augment", False) and model.config.mask_time_prob > 0
    max_samples = int(data_args.max_duration_in_seconds * sampling_rate)
    for key in vectorized:
        low = min_samples
        if key == "train" and spec_augment:
            low = max(low, min_samples_for_frames(model.config, model.config.mask_time_length))
        for reason, keep in (
            ("unreadable_audio", lambda n: n >= 0),
            ("too_short", lambda n, low=low: n >= low),
            ("too_long", lambda n: n <= max_samples),
        ):
            before = len(vectorized[key])
            vectorized[key] = vectorized[key].filter(keep, input_columns=[length_column])
            stats[f"{key}_filtered_{reason}"] = before - len(vectorized[key])
        stats[f"{key}_samples"] = len(vectorized[key])
        if len(vectorized[key]) == 0:
            raise ValueError(f"No {key} clips left after filtering: {stats}")
    dropped = sum(count for name, count in stats.items() if "_filtered_" in name)
    (logger.warning if dropped else logger.info)("Clips kept and dropped (with the reason): %s", stats)

    # 5. Metrics. References are the normalised transcripts (with characters unseen in training, which the labels
    # hold as [UNK]), found through the labels since length-grouped evaluation may reorder the clips.
    references_by_labels = {
        tuple(labels): text
        for key in ("eval", "test")
        if key in vectorized
        for labels, text in zip(vectorized[key]["labels"], vectorized[key]["target_text"])
    }

    latest: dict[str, list[str]] = {}  # the last scored transcripts, to print a few

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        predictions = greedy_decode(tokenizer, prediction.predictions)
        references = []
        for labels in prediction.label_ids:
            ids = [int(i) for i in labels if i != -100]
            references.append(references_by_labels.get(tuple(ids)) or tokenizer.decode(ids, group_tokens=False))
        latest.update(references=references, predictions=predictions)
        return error_rates(references, predictions)

    # Rows come out as NumPy arrays rather than Python lists: an order of magnitude faster to batch.
    vectorized = vectorized.with_format("numpy", columns=["input_values", "labels"], output_all_columns=True)

    # 6. Train and score.
    training_args.remove_unused_columns = False  # keep the length column for length-grouped sampling
    trainer = CTCTrainer(
        model=model,
        args=training_args,
        data_collator=DataCollatorCTCWithPadding(processor=processor),
        train_dataset=vectorized.get("train"),
        eval_dataset=vectorized.get("eval"),
        processing_class=processor,
        compute_metrics=compute_metrics,
    )
    results: dict[str, float] = {"vocab_size": len(tokenizer)}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise RuntimeError("The fine-tuned weights are not finite (NaN or inf): not saved.")
        trainer.save_model()
        metrics = {**train_result.metrics, **{k: v for k, v in stats.items() if k.startswith("train_")}}
        metrics["train_skipped_nonfinite_steps"] = trainer.nonfinite_guard.skipped
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    if training_args.do_eval:
        metrics = {**trainer.evaluate(), **{k: v for k, v in stats.items() if k.startswith("eval_")}}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if training_args.do_predict:
        output = trainer.predict(vectorized["test"], metric_key_prefix="test")
        metrics = {**output.metrics, **{k: v for k, v in stats.items() if k.startswith("test_")}}
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
        results.update(metrics)
    if latest and training_args.should_log:  # from the test split, else the eval split
        pairs = list(zip(latest["references"], latest["predictions"]))
        for reference, prediction in pairs[: data_args.num_examples_to_print]:
            print(f"reference:  {reference}\nprediction: {prediction}\n")

    # 7. Model card (and upload: the Trainer's push writes its own card, which ours then replaces).
    if training_args.should_save:
        if training_args.push_to_hub:
            trainer.push_to_hub(
                language="pt", finetuned_from=model_args.model_name_or_path, tasks="automatic-speech-recognition"
            )
        card = write_model_card(
            training_args.output_dir, model_args, data_args, training_args, results, trainer.state.global_step
        )
        if training_args.push_to_hub:
            card.push_to_hub(trainer.hub_model_id, token=training_args.hub_token)

    # 8. An n-gram LM beside the model; the test split scored both ways (imported here: it imports this module).
    if data_args.lm_text_file and training_args.should_save:
        from add_ngram_lm import EvalSet, add_lm_and_score

        def eval_set(split: str, max_samples: int | None) -> EvalSet:
            return EvalSet(
                data_args.dataset_name or "audiofolder", data_args.dataset_config_name, split,
                data_args.text_column_name, data_args.audio_column_name, max_samples, data_args.data_dir,
            )  # fmt: skip

        lm_results = add_lm_and_score(
            training_args.output_dir,
            data_args.lm_text_file,
            data_args.lm_order,
            eval_set(data_args.test_split_name, data_args.max_test_samples) if training_args.do_predict else None,
            eval_set(data_args.eval_split_name, data_args.max_eval_samples) if training_args.do_eval else None,
        )
        trainer.save_metrics("lm", lm_results)
        results.update(lm_results)
        if training_args.push_to_hub:
            logger.warning("The LM in %s is not uploaded: push the folder again.", training_args.output_dir)
    return results


if __name__ == "__main__":
    main()
