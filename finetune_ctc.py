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

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from datasets import DatasetDict
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import (
    AutoTokenizer,
    HfArgumentParser,
    TrainingArguments,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2Processor,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from distilxlsr_pt.cards import is_synthetic, stand_in_kind, write_card
from distilxlsr_pt.checks import (
    BETA,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    SEED,
    check_data_dir,
    check_no_checkpoint_lookalikes,
    check_output_dir,
    numeric_option_errors,
    remove_previous_run,
)
from distilxlsr_pt.cli import HelpFormatter, run_script
from distilxlsr_pt.ctc import CTCTrainer, DataCollatorCTCWithPadding, Transcripts, metrics_function, prepare_split
from distilxlsr_pt.data import DatasetSplit
from distilxlsr_pt.lm import add_lm_and_score, check_text_file
from distilxlsr_pt.memory import DEFAULT_PAD_TO_MULTIPLE_OF, keep_memory_flat
from distilxlsr_pt.models import (
    explain_loading_errors,
    load_config,
    load_ctc_for_fine_tuning,
    load_feature_extractor,
    save_model_folder,
)
from distilxlsr_pt.results import read_results, write_results
from distilxlsr_pt.text import DEFAULT_CHARS_TO_IGNORE, build_vocabulary, normalize_text
from modeling_distilxlsr import min_samples_for_frames

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
        default=False,
        metadata={
            "help": "Run model code shipped in the checkpoint folder or Hub repo (its auto_map). Not needed for "
            "DistilXLSR models, which the installed classes load."
        },
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
            "columns (stand_ins/make_demo_corpus.py writes one). With --dataset_name, passed to load_dataset as data_dir."
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
    pad_to_multiple_of: int = field(
        default=DEFAULT_PAD_TO_MULTIPLE_OF,
        metadata={
            "help": "Pad each batch's audio to a multiple of this many samples (0.5 s), so that batch shapes repeat "
            "and memory stays flat at full speed; 0 pads to the longest clip only (README: Memory over long runs)."
        },
    )
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
            "help": "Text (one sentence per line) of an n-gram LM added at the end (as add_ngram_lm.py; alpha and beta "
            "tuned on the eval split); the test split is then scored greedily and with the LM. Checked (exists, UTF-8, "
            "holds a sentence) before any data loads."
        },
    )
    lm_order: int = field(default=4, metadata={"help": "Order of the --lm_text_file n-gram LM."})


# What a training run leaves in --output_dir (regular expressions of exact names: `checks.find_run_files`); training
# into a folder holding any of these is refused, and only these are deleted by --overwrite_output_dir.
RUN_FILES = (
    r"model\.safetensors",
    r"pytorch_model\.bin",
    r"(train|eval|test|lm|all)_results\.json",
    r"trainer_state\.json",
    r"checkpoint-\d+",
)
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
    "pad_to_multiple_of": NON_NEGATIVE,
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


# --------------------------------------------------------------------------------------------------------------------
# Stages


def parse_arguments(args: list[str] | None) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments]:
    """The three argument dataclasses from the command line (or one JSON file), checked: impossible values, flags
    that contradict each other and a missing checkpoint are usage errors, before anything is loaded."""
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
    if data_args.lm_text_file:  # read only after training: a bad file must fail now
        try:
            check_text_file(data_args.lm_text_file)
        except ValueError as error:
            parser.error(str(error))
    return model_args, data_args, training_args


def setup_logging(training_args: TrainingArguments) -> None:
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


def claim_output_dir(model_args: ModelArguments, training_args: TrainingArguments) -> None:
    """An unwritable `--output_dir`, training into one that holds another run, or one in use by a run (the main
    process locks it for the life of the run) ends the run here; with `--overwrite_output_dir` the previous run is
    deleted."""
    with training_args.main_process_first(desc="checking the output folder"):
        previous_run = check_output_dir(
            training_args.output_dir,
            RUN_FILES if training_args.do_train else (),
            model_args.overwrite_output_dir,
            bool(training_args.resume_from_checkpoint),
            lock=training_args.process_index == 0,
        )
        if training_args.do_train and training_args.save_total_limit:
            check_no_checkpoint_lookalikes(training_args.output_dir)
        if previous_run and model_args.overwrite_output_dir and training_args.process_index == 0:
            logger.warning("--overwrite_output_dir: deleting the previous run in %s", training_args.output_dir)
            remove_previous_run(previous_run)


def dataset_split(data_args: DataTrainingArguments, split: str, max_samples: int | None, cache_dir) -> DatasetSplit:
    return DatasetSplit(
        name=data_args.dataset_name, config=data_args.dataset_config_name, data_dir=data_args.data_dir, split=split,
        audio_column=data_args.audio_column_name, text_column=data_args.text_column_name, max_samples=max_samples,
        cache_dir=cache_dir,
    )  # fmt: skip


def load_splits(
    data_args: DataTrainingArguments, training_args: TrainingArguments, cache_dir: str | None
) -> tuple[DatasetDict, dict[str, int]]:
    """The splits this run needs ("train", "eval", "test"), audio undecoded, transcripts normalised into
    `target_text`; clips whose transcript is empty once normalised are dropped and counted. A dataset without a test
    split is not scored on one (with a warning)."""
    wanted = {"train": (training_args.do_train, data_args.train_split_name, data_args.max_train_samples),
              "eval": (training_args.do_eval, data_args.eval_split_name, data_args.max_eval_samples),
              "test": (training_args.do_predict, data_args.test_split_name, data_args.max_test_samples)}  # fmt: skip
    raw = DatasetDict()
    for key, (needed, split, max_samples) in wanted.items():
        if not needed:
            continue
        source = dataset_split(data_args, split, max_samples, cache_dir)
        dataset = source.load(missing_ok=True)
        if dataset is None and key == "test":
            logger.warning("The test split is not scored: %s has no split %r.", source.path, split)
            training_args.do_predict = False
            continue
        if dataset is None:
            raise ValueError(
                f"{source.path} (data_dir={source.data_dir}) has no {key} split {split!r} (set --{key}_split_name)."
            )
        raw[key] = dataset
    raw = raw.map(
        lambda texts: {"target_text": [normalize_text(text, data_args.chars_to_ignore) for text in texts]},
        input_columns=[data_args.text_column_name],
        batched=True,
        num_proc=data_args.preprocessing_num_workers,
        desc="normalising transcripts",
    )
    stats = {}
    for key in raw:
        before = len(raw[key])
        raw[key] = raw[key].filter(lambda text: len(text) > 0, input_columns=["target_text"])
        stats[f"{key}_filtered_empty_transcript"] = before - len(raw[key])
    return raw, stats


def build_processor(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: TrainingArguments, raw: DatasetDict
) -> Wav2Vec2Processor:
    """The tokenizer (a character vocabulary of the training transcripts, or a given one) and the model's feature
    extractor, saved to `--output_dir`."""
    if model_args.tokenizer_name_or_path or not training_args.do_train:
        tokenizer_path = model_args.tokenizer_name_or_path or model_args.model_name_or_path
        flag = "--tokenizer_name_or_path" if model_args.tokenizer_name_or_path else "--model_name_or_path"
        try:
            with explain_loading_errors(tokenizer_path, flag):
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
    feature_extractor = load_feature_extractor(
        model_args.model_name_or_path, model_args.trust_remote_code, model_args.cache_dir
    )
    processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    if training_args.should_save:
        processor.save_pretrained(training_args.output_dir)
    return processor


def load_model(model_args: ModelArguments, processor: Wav2Vec2Processor) -> torch.nn.Module:
    """The checkpoint with a CTC head for this vocabulary (a CTC checkpoint with another vocabulary gets a new head;
    any other weight that does not fit is an error), with the config overrides given on the command line."""
    tokenizer = processor.tokenizer
    overrides = {name: getattr(model_args, name) for name in CONFIG_OVERRIDES if getattr(model_args, name) is not None}
    model = load_ctc_for_fine_tuning(
        model_args.model_name_or_path,
        trust_remote_code=model_args.trust_remote_code,
        cache_dir=model_args.cache_dir,
        dtype=torch.float32,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        ctc_loss_reduction=model_args.ctc_loss_reduction,
        ctc_zero_infinity=True,
        **overrides,
    )
    if model_args.freeze_feature_encoder:
        model.freeze_feature_encoder()
    return model


def prepare_data(
    raw: DatasetDict, processor: Wav2Vec2Processor, model_config, data_args: DataTrainingArguments, length_column: str,
    main_process_first,
) -> tuple[DatasetDict, Transcripts, dict[str, int]]:  # fmt: skip
    """Decode, extract features and tokenise every split (`ctc.prepare_split`); clips too short for the model (or for
    SpecAugment's masks, in training) or outside the duration bounds, and training clips whose transcript needs more
    frames than the clip has, are dropped and counted. Evaluated splits get their clips' ids into `Transcripts`, the
    references."""
    sampling_rate = processor.feature_extractor.sampling_rate
    min_samples = max(min_samples_for_frames(model_config), int(data_args.min_duration_in_seconds * sampling_rate))
    max_samples = int(data_args.max_duration_in_seconds * sampling_rate)
    # SpecAugment needs at least `mask_time_length` frames in a training batch.
    spec_augment = getattr(model_config, "apply_spec_augment", False) and model_config.mask_time_prob > 0
    vectorized, transcripts, stats = DatasetDict(), Transcripts(), {}
    with main_process_first(desc="dataset map pre-processing"):
        for key, dataset in raw.items():
            low = min_samples
            if key == "train" and spec_augment:
                low = max(low, min_samples_for_frames(model_config, model_config.mask_time_length))
            vectorized[key], split_stats = prepare_split(
                dataset, processor, data_args.audio_column_name, length_column, low, max_samples,
                data_args.preprocessing_num_workers, key, model_config if key == "train" else None,
            )  # fmt: skip
            stats.update(split_stats)
            if key != "train":
                vectorized[key] = transcripts.add(vectorized[key])
    dropped = sum(count for name, count in stats.items() if "_filtered_" in name)
    (logger.warning if dropped else logger.info)("Clips kept and dropped (with the reason): %s", stats)
    # Rows come out as NumPy arrays rather than Python lists: an order of magnitude faster to batch.
    return (
        vectorized.with_format("numpy", columns=["input_values", "labels"], output_all_columns=True),
        transcripts,
        stats,
    )


def train_and_score(
    trainer: CTCTrainer, training_args: TrainingArguments, vectorized: DatasetDict, stats: dict
) -> dict:
    """Train (when asked), then score the eval and test splits; each stage's metrics go to `<split>_results.json`."""
    results: dict[str, float] = {"vocab_size": len(trainer.processing_class.tokenizer)}

    def record(split: str, metrics: dict) -> None:
        metrics = {**metrics, **{key: value for key, value in stats.items() if key.startswith(f"{split}_")}}
        trainer.log_metrics(split, metrics)
        if trainer.is_world_process_zero():
            write_results(training_args.output_dir, split, metrics)
        results.update(metrics)

    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        if not all(torch.isfinite(p).all() for p in trainer.model.parameters()):
            raise RuntimeError("The fine-tuned weights are not finite (NaN or inf): not saved.")
        # Into a staging folder first (a full disk leaves no config without weights); `_internal_call`: the upload
        # comes at the end, once the files are in place.
        save_model_folder(
            training_args.output_dir,
            lambda folder: trainer.save_model(str(folder), _internal_call=True),
            writer=training_args.should_save,
        )
        record("train", {**train_result.metrics, "train_skipped_nonfinite_steps": trainer.nonfinite_guard.skipped})
        trainer.save_state()
    if training_args.do_eval:
        record("eval", trainer.evaluate())
    if training_args.do_predict:
        record("test", trainer.predict(vectorized["test"], metric_key_prefix="test").metrics)
    return results


def add_language_model(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: TrainingArguments
) -> dict[str, float]:
    """`--lm_text_file`: an n-gram LM beside the model (alpha and beta tuned on the eval split), the test split
    scored greedily and with it."""

    def split(name: str, max_samples: int | None, wanted: bool) -> DatasetSplit | None:
        return dataset_split(data_args, name, max_samples, model_args.cache_dir) if wanted else None

    lm_results = add_lm_and_score(
        training_args.output_dir,
        data_args.lm_text_file,
        data_args.lm_order,
        split(data_args.test_split_name, data_args.max_test_samples, training_args.do_predict),
        split(data_args.eval_split_name, data_args.max_eval_samples, training_args.do_eval),
        trust_remote_code=model_args.trust_remote_code,
    )
    if training_args.push_to_hub:
        logger.warning("The LM in %s is not uploaded: push the folder again.", training_args.output_dir)
    return lm_results


def stand_in_origin(model_name_or_path: str) -> Path | None:
    """The local model folder, or the local teacher it was distilled from, whose card says it is a stand-in."""
    model_dir = Path(model_name_or_path)
    candidates = [model_dir]
    if (model_dir / "config.json").is_file():
        teacher = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("teacher_name_or_path")
        candidates += [Path(teacher)] if teacher else []
    return next((directory for directory in candidates if stand_in_kind(directory)), None)


def card_notes(model_args: ModelArguments, data_args: DataTrainingArguments, stand_in: Path | None) -> list[str]:
    """Warnings for the model card: the user's `--model_card_note`, a synthetic corpus, a stand-in base model (the
    folder whose card says so, `stand_in_origin`)."""
    notes = [data_args.model_card_note] if data_args.model_card_note else []
    if is_synthetic(data_args.data_dir):
        notes.append(
            f"Trained and evaluated on a **synthetic** corpus (`{data_args.data_dir}`, text-to-speech audio): its "
            "WER and CER say nothing about real Brazilian Portuguese speech."
        )
    if stand_in is not None:
        notes.append(
            f"The base model `{model_args.model_name_or_path}` is a **stand-in** (the card of `{stand_in}` says "
            "so), not derived from the real facebook/wav2vec2-large-xlsr-53: these results only show that the "
            "pipeline works."
        )
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
    stand_in = stand_in_origin(model_args.model_name_or_path)
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
        tags=["automatic-speech-recognition", "ctc", "distilxlsr", "wav2vec2", "portuguese", "brazilian-portuguese"]
        + (["stand-in"] if stand_in else [])
        + (["synthetic-data"] if is_synthetic(data_args.data_dir) else []),
        base_model=model_args.model_name_or_path,
        datasets=[hub_dataset] if hub_dataset else None,
        metrics=["wer", "cer"],
        model_name=model_name,
        eval_results=eval_results or None,
    )
    notes = "".join(f"> **Note:** {note}\n\n" for note in card_notes(model_args, data_args, stand_in))
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

Greedy CTC decoding, no language model; transcripts (references and predictions) normalised as described below,
characters outside the vocabulary written "⁇".

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
  `` {"".join(data_args.chars_to_ignore)} `` and symbols (emoji, ...) replaced by spaces, invisible format characters
  removed, spaces collapsed (`distilxlsr_pt.text.normalize_text`).
- Vocabulary: {results.get("vocab_size", "?")} tokens, characters plus `[PAD]` (the CTC blank), `[UNK]` (unseen
  characters) and `|` (word delimiter).
- Clips kept: {data_args.min_duration_in_seconds}-{data_args.max_duration_in_seconds} s and no shorter than the model's
  receptive field; in training, only transcripts that fit in their clip's frames. Dropped:
  {json.dumps(dropped) if dropped else "none"}.

## Training

Learning rate {training_args.learning_rate} ({training_args.lr_scheduler_type.value} schedule, warmup
{training_args.warmup_steps}), batch size {training_args.per_device_train_batch_size} per device x
{training_args.gradient_accumulation_steps} accumulation steps, {global_step} steps, feature encoder {encoder}, seed
{training_args.seed}; transformers {transformers.__version__}, datasets {datasets.__version__}, torch {torch.__version__}.
"""
    return write_card(output_dir, data, body)


# --------------------------------------------------------------------------------------------------------------------
# Main


def main(args: list[str] | None = None) -> dict[str, float]:
    """Run the fine-tuning from command-line arguments (`sys.argv[1:]` when `args` is None); returns all results."""
    model_args, data_args, training_args = parse_arguments(args)
    setup_logging(training_args)
    keep_memory_flat(batch_shapes_repeat=data_args.pad_to_multiple_of > 0)
    set_seed(training_args.seed)
    claim_output_dir(model_args, training_args)
    if data_args.dataset_name is None:
        check_data_dir(data_args.data_dir)
    # A model that cannot be loaded (its own code without --trust_remote_code, an uncached Hub id offline) or whose
    # config cannot build a model fails here, before any data is read.
    load_config(
        model_args.model_name_or_path, "--model_name_or_path", model_args.trust_remote_code, model_args.cache_dir
    )
    print(
        f"Data: {data_args.dataset_name or 'audiofolder'} (data_dir={data_args.data_dir}); "
        f"model: {model_args.model_name_or_path}; output: {training_args.output_dir}"
    )

    # 1. Data and model: splits with normalised transcripts, the processor, the model with its CTC head.
    raw, stats = load_splits(data_args, training_args, model_args.cache_dir)
    processor = build_processor(model_args, data_args, training_args, raw)
    model = load_model(model_args, processor)
    vectorized, transcripts, prepared_stats = prepare_data(
        raw, processor, model.config, data_args, training_args.length_column_name, training_args.main_process_first
    )
    stats.update(prepared_stats)

    # 2. Train and score.
    training_args.remove_unused_columns = False  # keep the length and clip-id columns
    latest: dict[str, list[str]] = {}  # the last scored transcripts, to print a few
    trainer = CTCTrainer(
        model=model,
        args=training_args,
        data_collator=DataCollatorCTCWithPadding(processor, data_args.pad_to_multiple_of or None),
        train_dataset=vectorized.get("train"),
        eval_dataset=vectorized.get("eval"),
        processing_class=processor,
        compute_metrics=metrics_function(processor.tokenizer, transcripts, data_args.chars_to_ignore, latest),
    )
    results = train_and_score(trainer, training_args, vectorized, stats)
    if latest and training_args.should_log:  # from the test split, else the eval split
        for reference, prediction in list(zip(latest["references"], latest["predictions"]))[
            : data_args.num_examples_to_print
        ]:
            print(f"reference:  {reference}\nprediction: {prediction}\n")

    # 3. Model card (and upload: the Trainer's push writes its own card, which ours then replaces).
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

    # 4. An n-gram LM beside the model, the test split scored both ways.
    if data_args.lm_text_file and training_args.should_save:
        lm_results = add_language_model(model_args, data_args, training_args)
        results.update(lm_results)
        if training_args.do_predict:
            write_results(
                training_args.output_dir, "test", {**read_results(training_args.output_dir, "test"), **lm_results}
            )
    if training_args.should_save:
        write_results(training_args.output_dir, "all", results)
    return results


if __name__ == "__main__":
    run_script(main)
