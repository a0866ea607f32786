"""Layer-wise distillation (DistilHuBERT, arXiv 2110.01900) of a wav2vec2 / XLSR-53 teacher into a DistilXLSRModel.

    accelerate launch train_distill.py --data_dir demo_corpus --output_dir outputs/student
    accelerate launch train_distill.py --dataset_name mozilla-foundation/common_voice_17_0 --dataset_config_name pt \\
        --streaming --max_train_steps 200000 --mixed_precision bf16 --output_dir distilxlsr-pt-4-12

The teacher (frozen, eval mode) runs only up to its deepest distilled layer. Each prediction head of the student learns
one teacher layer with L1 + cosine_weight * -log(sigmoid(cosine)), padded frames excluded. `--freeze_feature_encoder`
keeps the student's conv front end (a copy of the teacher's) frozen and computes it once per batch for both models.
The pieces (teacher, loss, data, checkpoints) are in `distilxlsr_pt/distillation.py`; this script is the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets.distributed import split_dataset_by_node
from huggingface_hub import ModelCardData
from tqdm.auto import tqdm
from transformers import AutoModel, get_scheduler

from configuration_distilxlsr import STUDENT_SHAPE_FIELDS, DistilXLSRConfig, check_teacher_layers
from distilxlsr_pt.audio import SAMPLING_RATE
from distilxlsr_pt.cards import STAND_IN_TEACHER_NOTES, is_synthetic, stand_in_kind, write_card
from distilxlsr_pt.checks import (
    BETA,
    MAX_NONFINITE_STEPS_IN_A_ROW,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    RUN_LOCK_PATTERN,
    SEED,
    NonFiniteStreak,
    check_data_dir,
    check_output_dir,
    numeric_option_errors,
    remove_previous_run,
)
from distilxlsr_pt.cli import add_trust_remote_code, parse_teacher_layers, run_script, split_list
from distilxlsr_pt.data import DatasetSplit
from distilxlsr_pt.distillation import (
    CHECKPOINT_PREFIX,
    AudioClips,
    DistillationCollator,
    DistillationState,
    EpochSampler,
    LossTerms,
    StreamingAudioClips,
    Teacher,
    check_resumed_state,
    distillation_forward,
    evaluate,
    list_checkpoints,
    load_audio_datasets,
    no_usable_audio_message,
    parameter_groups,
    save_checkpoint,
)
from distilxlsr_pt.memory import DEFAULT_PAD_TO_MULTIPLE_OF, keep_memory_flat, resident_memory_gb
from distilxlsr_pt.models import (
    LoadingError,
    explain_loading_errors,
    load_config,
    load_feature_extractor,
    save_model_folder,
)
from distilxlsr_pt.results import write_results
from modeling_distilxlsr import TEACHER_PARTS, DistilXLSRModel, min_samples_for_frames, teacher_parts_that_fit

logger = logging.getLogger("train_distill")

# What a run leaves in --output_dir; a new run into a folder holding any of these is refused (see check_output_dir).
# Regular expressions of exact names (`checks.find_run_files`); a staging `checkpoint-N.tmp` is not a checkpoint.
RUN_FILES = (r"model\.safetensors", r"distill_results\.json", rf"checkpoints/{CHECKPOINT_PREFIX}\d+")
# A new student's teacher and distilled layers unless the flags say otherwise (the seed model `distilxlsr_bp_4-12`).
DEFAULT_TEACHER = "facebook/wav2vec2-large-xlsr-53"
DEFAULT_TEACHER_LAYERS = "4,12"
DEFAULT_STUDENT_LAYERS = 2  # DistilHuBERT's depth
# A run stops with an error after this many batches in a row without a usable clip (all unreadable or too short).
MAX_BATCHES_WITHOUT_AUDIO_IN_A_ROW = 50


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("teacher and student")
    model.add_argument(
        "--teacher_name_or_path",
        default=None,
        help=f"Hub id or local directory of a transformers Wav2Vec2 / HuBERT model (default: {DEFAULT_TEACHER}; "
        "with --student_name_or_path, the teacher a DistilXLSR student records).",
    )
    model.add_argument(
        "--teacher_layers",
        default=None,
        help="Comma-separated teacher hidden-state indices the student predicts, 1-based (default: "
        f"{DEFAULT_TEACHER_LAYERS}; with --student_name_or_path, a DistilXLSR student's own).",
    )
    model.add_argument(
        "--student_num_hidden_layers",
        type=int,
        default=None,
        help="Transformer layers of the student, copied from the teacher's first ones where the width is the "
        f"teacher's (default: {DEFAULT_STUDENT_LAYERS}, or --student_config's).",
    )
    model.add_argument(
        "--student_hidden_size",
        type=int,
        default=None,
        help="The student's width (default: the teacher's). Another width keeps the teacher's feed-forward ratio and "
        "head width unless the next two flags say otherwise; its layers then start from random weights.",
    )
    model.add_argument("--student_intermediate_size", type=int, default=None, help="The student's feed-forward size.")
    model.add_argument("--student_num_attention_heads", type=int, default=None, help="The student's attention heads.")
    model.add_argument(
        "--student_conv_dim",
        default=None,
        help="Channels of the student's conv front end: one number for every conv layer (e.g. 128) or one per layer, "
        "comma-separated (default: the teacher's; a narrower one is trained, not copied). Kernels and strides stay "
        "the teacher's, so the frames align.",
    )
    model.add_argument(
        "--student_layers",
        default=None,
        help="Layer-to-layer distillation: comma-separated student layers (1-based), one per --teacher_layers entry, "
        "each predicting its paired teacher layer (e.g. --student_layers 2,4,6 --teacher_layers 4,8,12). Default: "
        "every head on the last student layer (DistilHuBERT).",
    )
    model.add_argument(
        "--student_config",
        default=None,
        help="A JSON file of DistilXLSRConfig fields for a new student (e.g. hidden_size, num_hidden_layers, "
        "conv_dim, student_layers); the --student_* flags override it.",
    )
    model.add_argument(
        "--student_name_or_path",
        default=None,
        help="Continue from a saved DistilXLSR student instead of initialising one from the teacher. A plain "
        "Wav2Vec2Model / HubertModel folder works too (its backbone; new prediction heads): then give "
        "--teacher_name_or_path and --teacher_layers.",
    )
    model.add_argument(
        "--freeze_feature_encoder",
        action="store_true",
        help="Fast path: keep the student's conv front end (the teacher's) frozen and compute it once per "
        "batch for teacher and student. Off by default, as in DistilHuBERT.",
    )
    model.add_argument("--gradient_checkpointing", action="store_true", help="Recompute activations in backward.")
    add_trust_remote_code(model)

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
    data.add_argument(
        "--pad_to_multiple_of",
        type=int,
        default=DEFAULT_PAD_TO_MULTIPLE_OF,
        help="Pad each batch's audio to a multiple of this many samples (default: %(default)s, 0.5 s), so that batch "
        "shapes repeat and memory stays flat at full speed; 0 pads to the longest clip only (README: Memory over long "
        "runs).",
    )
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
    "student_hidden_size": POSITIVE,
    "student_intermediate_size": POSITIVE,
    "student_num_attention_heads": POSITIVE,
    "validation_split_percentage": (lambda v: 0 < v < 100, "between 0 and 100 (exclusive)"),
    "max_eval_samples": POSITIVE,
    "max_duration_in_seconds": POSITIVE,
    "min_duration_in_seconds": NON_NEGATIVE,
    "pad_to_multiple_of": NON_NEGATIVE,
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
    if args.student_name_or_path is None:  # a new student: the recipe's teacher and layers unless told otherwise
        args.teacher_name_or_path = DEFAULT_TEACHER if args.teacher_name_or_path is None else args.teacher_name_or_path
        args.teacher_layers = DEFAULT_TEACHER_LAYERS if args.teacher_layers is None else args.teacher_layers
    shape_flags = [flag for flag in STUDENT_SHAPE_FLAGS if getattr(args, flag.removeprefix("--")) is not None]
    if args.student_name_or_path is not None and shape_flags:
        parser.error(f"{shape_flags[0]} shapes a new student: --student_name_or_path continues one of its own shape")
    try:
        args.student_overrides = student_overrides(args)
        if args.teacher_layers is not None:  # with --student_name_or_path, None until the student's config is read
            if "student_layers" in args.student_overrides:  # layer-to-layer: the pairs sorted by teacher layer
                args.teacher_layers, args.student_overrides["student_layers"] = sorted_layer_pairs(
                    args.teacher_layers, args.student_overrides["student_layers"]
                )
            else:
                args.teacher_layers = parse_teacher_layers(args.teacher_layers)
    except ValueError as error:  # "--teacher_layers: expects ...", "--student_config ...: ..."
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


STUDENT_SHAPE_FLAGS = (
    "--student_num_hidden_layers",
    "--student_hidden_size",
    "--student_intermediate_size",
    "--student_num_attention_heads",
    "--student_conv_dim",
    "--student_layers",
    "--student_config",
)


def student_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The new student's config fields that differ from the teacher's defaults: `--student_config`'s, then the
    `--student_*` flags'. `student_layers` comes back in the flag's order (paired with `--teacher_layers`)."""
    overrides: dict[str, Any] = {}
    if args.student_config is not None:
        overrides = read_student_config(args.student_config)
    overrides.setdefault("num_hidden_layers", DEFAULT_STUDENT_LAYERS)
    if args.student_num_hidden_layers is not None:
        overrides["num_hidden_layers"] = args.student_num_hidden_layers
    flags = {
        "hidden_size": args.student_hidden_size,
        "intermediate_size": args.student_intermediate_size,
        "num_attention_heads": args.student_num_attention_heads,
    }
    overrides |= {field: value for field, value in flags.items() if value is not None}
    if args.student_conv_dim is not None:
        try:
            channels = [int(value) for value in args.student_conv_dim.split(",")]
        except ValueError:
            raise ValueError(
                f"--student_conv_dim: expects channel counts such as 128, got {args.student_conv_dim!r}"
            ) from None
        overrides["conv_dim"] = channels[0] if len(channels) == 1 else channels
    if args.student_layers is not None:
        overrides["student_layers"] = check_teacher_layers(args.student_layers, name="--student_layers")
    return overrides


def read_student_config(path: str) -> dict[str, Any]:
    """`--student_config`: a JSON object of DistilXLSRConfig fields (read as data: no code runs)."""
    try:
        fields = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"--student_config {path}: cannot be read as JSON ({error})") from None
    if not isinstance(fields, dict):
        raise ValueError(
            f"--student_config {path}: expects a JSON object of config fields, got {type(fields).__name__}"
        )
    unknown = sorted(set(fields) - set(DistilXLSRConfig().to_dict()))
    if unknown:
        raise ValueError(f"--student_config {path}: unknown DistilXLSRConfig field(s) {unknown}")
    return fields


def sorted_layer_pairs(teacher_text: str, student_layers: list[int]) -> tuple[list[int], list[int]]:
    """`--teacher_layers` and `--student_layers`, paired in the order given, as two lists sorted by teacher layer."""
    teacher_layers = check_teacher_layers(teacher_text, name="--teacher_layers")
    if len(student_layers) != len(teacher_layers) or len(set(teacher_layers)) != len(teacher_layers):
        raise ValueError(
            f"--student_layers {student_layers}: one student layer per distinct --teacher_layers entry "
            f"({teacher_layers}) is needed"
        )
    pairs = sorted(zip(teacher_layers, student_layers))
    return [teacher for teacher, _ in pairs], [student for _, student in pairs]


# --------------------------------------------------------------------------------------------------------------------
# Stages of a run


def check_before_loading(args: argparse.Namespace, output_dir: Path, main_process: bool) -> list[Path]:
    """Fail in the first second, before any data or weights are loaded: an unwritable folder, one holding another
    run or in use by one (the main process locks it for the run), a teacher that cannot be loaded, a teacher layer
    beyond the teacher's depth, a missing `--data_dir`. Returns the previous run's files."""
    resuming = args.resume_from_checkpoint is not None and (
        args.resume_from_checkpoint != "latest" or bool(list_checkpoints(output_dir))
    )
    previous_run = check_output_dir(output_dir, RUN_FILES, args.overwrite_output_dir, resuming, lock=main_process)
    if args.student_name_or_path is not None:
        take_teacher_from_student(args)
    teacher_config = load_config(args.teacher_name_or_path, "--teacher_name_or_path", args.trust_remote_code)
    check_teacher_layers(args.teacher_layers, teacher_config.num_hidden_layers, "--teacher_layers")
    if args.student_name_or_path is None:  # the new student's config, checked before any weight exists
        new_student_config(args, teacher_config)
    if args.data_dir is not None:
        check_data_dir(args.data_dir)
    return previous_run


def take_teacher_from_student(args: argparse.Namespace) -> None:
    """`--student_name_or_path`: the teacher and teacher layers not given as flags are the ones a DistilXLSR student
    records. A plain Wav2Vec2Model / HubertModel folder records neither (its prediction heads will be new): both flags
    are then required, never guessed."""
    config = load_config(args.student_name_or_path, "--student_name_or_path")
    args.student_is_plain = config.model_type != "distilxlsr"
    if args.student_is_plain:
        missing = [flag for flag, value in (("--teacher_name_or_path", args.teacher_name_or_path),
                                            ("--teacher_layers", args.teacher_layers)) if value is None]  # fmt: skip
        if missing:
            raise LoadingError(
                f"--student_name_or_path {args.student_name_or_path} is a plain {type(config).__name__} folder (no "
                "prediction heads, no record of a teacher): give the teacher and the layers its new heads are to "
                f"predict with {' and '.join(missing)}."
            )
        return
    if args.teacher_layers is None:
        args.teacher_layers = list(config.teacher_layers)
        logger.info("Teacher layers %s, from the student's config.", args.teacher_layers)
    if args.teacher_name_or_path is None:
        if not config.teacher_name_or_path:
            raise LoadingError(
                f"--student_name_or_path {args.student_name_or_path} does not record its teacher: give "
                "--teacher_name_or_path."
            )
        args.teacher_name_or_path = config.teacher_name_or_path
        logger.info("Teacher %s, from the student's config.", args.teacher_name_or_path)


def build_accelerator(args: argparse.Namespace, output_dir: Path) -> Accelerator:
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=report_to(args) or None,
        project_dir=str(output_dir),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logger.setLevel(logging.ERROR)
    return accelerator


def report_to(args: argparse.Namespace) -> list[str]:
    return [] if args.report_to in ("none", "") else args.report_to.split(",")


@dataclass
class DistillationModels:
    """The student, the cut teacher, the teacher's size before the cut, the student's SpecAugment setting (off
    while distilling, restored before saving), and the teacher's parts a new student started from (None for
    `--student_name_or_path`)."""

    student: DistilXLSRModel
    teacher: Teacher
    teacher_parameters: int
    apply_spec_augment: bool
    initialised_from_teacher: list[str] | None


def new_student_config(args: argparse.Namespace, teacher_config) -> DistilXLSRConfig:
    """A new student's config: the teacher's design with the flags' shape (`DistilXLSRConfig.from_teacher_config`).
    Raises `ValueError` naming the flag or field that cannot be."""
    overrides = dict(args.student_overrides)
    try:
        return DistilXLSRConfig.from_teacher_config(teacher_config, teacher_layers=args.teacher_layers, **overrides)
    except ValueError as error:
        raise ValueError(f"The student's shape ({', '.join(STUDENT_SHAPE_FLAGS)}): {error}") from None


def build_models(args: argparse.Namespace, accelerator: Accelerator) -> DistillationModels:
    """The student (from the teacher, or `--student_name_or_path`) and the cut teacher on the device (bf16 under
    bf16)."""
    with explain_loading_errors(args.teacher_name_or_path, "--teacher_name_or_path"):
        teacher_model = AutoModel.from_pretrained(args.teacher_name_or_path, trust_remote_code=args.trust_remote_code)
    initialised_from_teacher = None
    if args.student_name_or_path:
        # A plain backbone folder gets new heads for the user's teacher and layers (with a warning); a DistilXLSR
        # student keeps its own, which must be the ones asked for.
        recipe = {}
        if args.student_is_plain:
            recipe = dict(
                teacher_layers=args.teacher_layers,
                teacher_name_or_path=args.teacher_name_or_path,
                teacher_hidden_size=teacher_model.config.hidden_size,
            )
        with explain_loading_errors(args.student_name_or_path, "--student_name_or_path"):
            student = DistilXLSRModel.from_pretrained(args.student_name_or_path, **recipe)
        if student.config.teacher_layers != args.teacher_layers:
            raise ValueError(f"The student predicts layers {student.config.teacher_layers}, not {args.teacher_layers}.")
    else:
        student = DistilXLSRModel.from_teacher(teacher_model, new_student_config(args, teacher_model.config))
        student.config.teacher_name_or_path = args.teacher_name_or_path
        initialised_from_teacher = teacher_parts_that_fit(student.config, teacher_model.config)
    teacher_parameters = sum(p.numel() for p in teacher_model.base_model.parameters())  # before the cut
    teacher = Teacher(teacher_model, args.teacher_layers)
    if args.freeze_feature_encoder:
        same = all(
            torch.equal(a, b)
            for a, b in zip(student.feature_extractor.state_dict().values(), teacher.front_end.state_dict().values())
        )
        if not same:
            raise ValueError(
                "--freeze_feature_encoder shares the teacher's conv front end, but the student's differs (its "
                "--student_conv_dim, or trained weights): leave the flag out to train the student's own."
            )
        student.freeze_feature_encoder()
    if args.gradient_checkpointing:
        student.activation_checkpointing_enable()
    # SpecAugment is for CTC fine-tuning; DistilHuBERT distils from unmasked features.
    apply_spec_augment = student.config.apply_spec_augment
    student.config.apply_spec_augment = False
    if student.masked_spec_embed is not None:  # unused without SpecAugment; DDP insists every trained weight is used
        student.masked_spec_embed.requires_grad_(False)
    teacher.to(accelerator.device, dtype=torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32)
    return DistillationModels(student, teacher, teacher_parameters, apply_spec_augment, initialised_from_teacher)


@dataclass
class DistillationData:
    """The loaders of a run, and the training clips (whose crops depend on the epoch)."""

    train_loader: torch.utils.data.DataLoader
    eval_loader: torch.utils.data.DataLoader
    train_clips: AudioClips | StreamingAudioClips
    train_size: int | None  # None when streaming


def data_splits(args: argparse.Namespace) -> tuple[list[DatasetSplit], DatasetSplit | None, bool]:
    """The training corpora (several when --dataset_name is comma-separated), the held-out split (an audiofolder's
    'validation' if it has one) and whether that split may be missing."""
    if args.data_dir is not None:
        train = [DatasetSplit(data_dir=args.data_dir, split=args.train_split_name, text_column=None)]
        eval_name = args.eval_split_name or "validation"
    else:
        names = [name.strip() for name in args.dataset_name.split(",")]
        configs = split_list(args.dataset_config_name, len(names), "dataset_config_name")
        splits = split_list(args.train_split_name, len(names), "train_split_name")
        train = [DatasetSplit(name=n, config=c, split=s, text_column=None) for n, c, s in zip(names, configs, splits)]
        eval_name = args.eval_split_name
    columns = split_list(args.audio_column_name, len(train), "audio_column_name")
    for split, column in zip(train, columns):
        split.audio_column = column
    held_out = None
    if eval_name is not None:
        held_out = DatasetSplit(**{**asdict(train[0]), "split": eval_name})
    return train, held_out, args.eval_split_name is None


def build_data(
    args: argparse.Namespace, accelerator: Accelerator, student_config, feature_extractor
) -> DistillationData:
    """Decoded random crops of the training corpora, and the held-out clips, in loaders."""
    min_samples = max(min_samples_for_frames(student_config), int(args.min_duration_in_seconds * SAMPLING_RATE))
    max_samples = int(args.max_duration_in_seconds * SAMPLING_RATE)
    train_splits, eval_split, eval_optional = data_splits(args)
    with accelerator.main_process_first():  # one process downloads / prepares, the others read the cache
        train_data, eval_data = load_audio_datasets(
            train_splits, eval_split, eval_optional, args.streaming, args.seed, args.max_eval_samples,
            args.validation_split_percentage, args.shuffle_buffer_size,
        )  # fmt: skip
    loader_kwargs = dict(
        collate_fn=DistillationCollator(feature_extractor, min_samples, args.pad_to_multiple_of or None),
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    if args.streaming:
        # Each process reads its own shard of the stream; these loaders are not prepare()d (accelerate would shard the
        # stream again, or dispatch batches that must all have one size), so batches are moved to the device later.
        train_data = split_dataset_by_node(train_data, accelerator.process_index, accelerator.num_processes)
        eval_data = split_dataset_by_node(eval_data, accelerator.process_index, accelerator.num_processes)
        train_clips = StreamingAudioClips(train_data, "audio", max_samples, args.seed)
        eval_clips = StreamingAudioClips(eval_data, "audio", max_samples, args.seed, random_crop=False)
        train_loader = torch.utils.data.DataLoader(
            train_clips, batch_size=args.per_device_train_batch_size, **loader_kwargs
        )
    else:
        train_clips = AudioClips(train_data, "audio", max_samples, args.seed)
        eval_clips = AudioClips(eval_data, "audio", max_samples, args.seed, random_crop=False)
        train_loader = torch.utils.data.DataLoader(
            train_clips, batch_size=args.per_device_train_batch_size, sampler=EpochSampler(len(train_clips), args.seed),
            drop_last=True, **loader_kwargs,
        )  # fmt: skip
    eval_loader = torch.utils.data.DataLoader(eval_clips, batch_size=args.per_device_eval_batch_size, **loader_kwargs)
    logger.info(
        "Distilling on %s training clips, evaluating on %s held-out clips",
        "streamed" if args.streaming else len(train_data),
        args.max_eval_samples if args.streaming else len(eval_data),
    )
    return DistillationData(train_loader, eval_loader, train_clips, None if args.streaming else len(train_data))


def build_optimizer(args: argparse.Namespace, student: DistilXLSRModel, num_processes: int):
    """s3prl's AdamW (no decay on biases and norms), linear warm-up then decay."""
    optimizer = torch.optim.AdamW(
        parameter_groups(student, args.weight_decay),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * args.max_train_steps) * num_processes,
        num_training_steps=args.max_train_steps * num_processes,
    )
    return optimizer, scheduler


def prepare(accelerator: Accelerator, student, optimizer, scheduler, data: DistillationData, streaming: bool):
    """accelerate's wrapping: DDP student, sharded map-style loaders (a stream is sharded by `build_data`)."""
    if streaming:
        student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    else:
        student, optimizer, data.train_loader, data.eval_loader, scheduler = accelerator.prepare(
            student, optimizer, data.train_loader, data.eval_loader, scheduler
        )
    return student, optimizer, scheduler


def start_or_resume(args: argparse.Namespace, accelerator: Accelerator, student, output_dir: Path) -> DistillationState:
    """A fresh state, or the saved one of `--resume_from_checkpoint` (with the weights, optimizer and RNG states),
    checked: non-finite weights are refused, an unreadable RNG state is a warning that the resume is not exact."""
    checkpoint = args.resume_from_checkpoint
    if checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        checkpoint = checkpoints[-1] if checkpoints else None
        if checkpoint is None:
            logger.info("No checkpoint in %s: starting from scratch", output_dir / "checkpoints")
    if checkpoint is None:
        return DistillationState()
    accelerator.load_state(str(checkpoint))
    check_resumed_state(accelerator, student, Path(checkpoint))
    state = DistillationState.load(checkpoint)
    logger.info("Resumed from %s at step %d", checkpoint, state.step)
    return state


# --------------------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class RunningMeans:
    """Sums of the logged losses since the last log line, each batch weighted (an empty batch weighs 0)."""

    loss: torch.Tensor
    l1: torch.Tensor
    cosine: torch.Tensor
    batches: float = 0.0

    @classmethod
    def zeros(cls, layers: int, device: torch.device) -> RunningMeans:
        return cls(
            torch.zeros(1, device=device), torch.zeros(layers, device=device), torch.zeros(layers, device=device)
        )

    def add(self, terms: LossTerms, weight: torch.Tensor) -> None:
        self.loss += terms.loss.detach() * weight
        self.l1 += terms.l1 * weight
        self.cosine += terms.cosine * weight
        self.batches += weight.item()

    def log_entry(self, accelerator: Accelerator, teacher_layers: Sequence[int]) -> dict:
        """The means over all processes (loss, then L1 and cosine per teacher layer); then zeroed."""
        loss, l1, cosine = (
            accelerator.reduce(t, "mean") / max(self.batches, 1) for t in (self.loss, self.l1, self.cosine)
        )
        entry = {"loss": round(loss.item(), 6)}
        entry.update({f"l1_layer_{layer}": l1[i].item() for i, layer in enumerate(teacher_layers)})
        entry.update({f"cosine_layer_{layer}": cosine[i].item() for i, layer in enumerate(teacher_layers)})
        for tensor in (self.loss, self.l1, self.cosine):
            tensor.zero_()
        self.batches = 0.0
        return entry


@dataclass
class FailureCounters:
    """Steps and batches in a row that went wrong: too many end the run with an error."""

    nonfinite: NonFiniteStreak
    batches_without_audio: int = 0

    @classmethod
    def start(cls) -> FailureCounters:
        advice = "Lower --learning_rate or --max_grad_norm, or try --mixed_precision bf16 instead of fp16."
        return cls(NonFiniteStreak(MAX_NONFINITE_STEPS_IN_A_ROW, "loss or gradient", advice))


def train_batches(data: DistillationData, accelerator: Accelerator, state: DistillationState) -> Iterator[dict]:
    """Batches forever, epoch after epoch, continuing a resumed epoch where its checkpoint left it; the position is
    kept in `state` (epoch, batches_in_epoch), which checkpoints save."""
    while True:
        if hasattr(data.train_loader, "set_epoch"):  # a prepared loader passes it on to the sampler
            data.train_loader.set_epoch(state.epoch)
        data.train_clips.set_epoch(state.epoch)
        loader = data.train_loader
        if state.batches_in_epoch:
            loader = accelerator.skip_first_batches(data.train_loader, state.batches_in_epoch)
        yielded = False
        for batch in loader:
            yielded = True
            state.batches_in_epoch += 1
            yield batch
        if not yielded and state.batches_in_epoch == 0:
            raise ValueError("The training data yielded no batch: too few clips for the batch size?")
        state.epoch, state.batches_in_epoch = state.epoch + 1, 0


def train_step(args, accelerator: Accelerator, student, teacher: Teacher, optimizer, scheduler, batch: dict):
    """Forward, backward and (when gradients sync) an optimizer step that a non-finite gradient skips. Returns the
    loss terms and whether the step's gradient was finite."""
    with accelerator.accumulate(student):
        terms = LossTerms(*distillation_forward(
            student, teacher, batch["input_values"], batch["attention_mask"], args.freeze_feature_encoder,
            args.cosine_weight,
        ))  # fmt: skip
        accelerator.backward(terms.loss * batch["weight"])
        finite = True
        if accelerator.sync_gradients:
            grad_norm = accelerator.clip_grad_norm_(student.parameters(), args.max_grad_norm)
            # The norm of the reduced gradients: every process makes the same choice.
            finite = grad_norm is None or bool(torch.isfinite(grad_norm))
        if finite or accelerator.scaler is not None:  # (fp16's GradScaler skips such a step itself)
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return terms, finite


def count_audio(accelerator: Accelerator, batch: dict, state: DistillationState, failures: FailureCounters) -> None:
    """Add the batch's audio and dropped clips (over all processes) to `state`; too many empty batches in a row end the
    run."""
    counters = accelerator.reduce(
        torch.stack([batch["audio_seconds"], batch["unreadable"].float(), batch["too_short"].float()]).to(
            accelerator.device
        ),
        "sum",
    )
    state.audio_seconds += counters[0].item()
    state.unreadable += int(counters[1].item())
    state.too_short += int(counters[2].item())
    failures.batches_without_audio = failures.batches_without_audio + 1 if counters[0].item() == 0 else 0
    if failures.batches_without_audio >= MAX_BATCHES_WITHOUT_AUDIO_IN_A_ROW:
        raise ValueError(no_usable_audio_message(state, f"the last {failures.batches_without_audio} batches"))


def distill(args, accelerator, student, teacher, data, optimizer, scheduler, state, output_dir) -> float | None:
    """The training loop, from `state` to `--max_train_steps`: logging, evaluation and checkpoints on their schedules.
    Returns the seconds it trained, or None when `--max_steps_this_run` stopped it first (after a checkpoint)."""
    if state.step == 0:
        state.initial_eval = evaluate(student, teacher, data.eval_loader, accelerator, args.freeze_feature_encoder)
        logger.info("Before distillation: %s", state.initial_eval)
        accelerator.log(state.initial_eval, step=0)
    student.train()
    progress = tqdm(
        total=args.max_train_steps, initial=state.step, disable=not accelerator.is_local_main_process,
        desc="distilling", dynamic_ncols=True,
    )  # fmt: skip
    started, steps_this_run = time.time(), 0
    running, failures = RunningMeans.zeros(len(args.teacher_layers), accelerator.device), FailureCounters.start()
    batches = train_batches(data, accelerator, state)
    while state.step < args.max_train_steps:
        batch = {key: value.to(accelerator.device) for key, value in next(batches).items()}
        terms, finite = train_step(args, accelerator, student, teacher, optimizer, scheduler, batch)
        count_audio(accelerator, batch, state, failures)
        if torch.isfinite(terms.loss):
            running.add(terms, batch["weight"].to(accelerator.device))
        if not accelerator.sync_gradients:
            continue
        failures.nonfinite.record(finite, state.step + 1)
        state.nonfinite_steps += not finite
        state.step += 1
        steps_this_run += 1
        progress.update(1)
        last_step = state.step == args.max_train_steps
        if state.step % args.logging_steps == 0 or last_step:
            means = running.log_entry(accelerator, args.teacher_layers)
            entry = {"step": state.step, "loss": means.pop("loss"), "lr": scheduler.get_last_lr()[0],
                     "audio_hours": state.audio_seconds / 3600, **means, **resident_memory_gb(),
                     "run_seconds": round(time.time() - started, 2)}  # fmt: skip
            state.log_history.append(entry)
            accelerator.log({f"train/{k}": v for k, v in entry.items() if k != "step"}, step=state.step)
            progress.set_postfix(
                loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}", hours=f"{entry['audio_hours']:.2f}"
            )
        if state.step % args.eval_steps == 0 or last_step:
            state.last_eval = evaluate(student, teacher, data.eval_loader, accelerator, args.freeze_feature_encoder)
            state.log_history.append({"step": state.step, **state.last_eval})
            accelerator.log(state.last_eval, step=state.step)
            logger.info("step %d: %s", state.step, state.last_eval)
        stop_now = args.max_steps_this_run is not None and steps_this_run >= args.max_steps_this_run and not last_step
        if state.step % args.checkpointing_steps == 0 or stop_now:
            save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
        if stop_now:
            logger.info("Stopping after %d steps in this run (--max_steps_this_run); resume with "
                        "--resume_from_checkpoint latest", steps_this_run)  # fmt: skip
            return None
    progress.close()
    return time.time() - started


# --------------------------------------------------------------------------------------------------------------------
# Outputs


def run_results(args, accelerator, student: DistilXLSRModel, state: DistillationState, models: DistillationModels,
                seconds: float) -> dict:  # fmt: skip
    """What `distill_results.json` holds: the run's recipe, sizes, counters, evaluations and log."""
    teacher_kind = stand_in_kind(args.teacher_name_or_path)
    return {
        "teacher": args.teacher_name_or_path,
        "teacher_is_stand_in": teacher_kind is not None,
        "teacher_stand_in_kind": teacher_kind,
        "data": args.dataset_name or args.data_dir,
        "data_is_synthetic": is_synthetic(args.data_dir),
        "teacher_layers": args.teacher_layers,
        "student_num_hidden_layers": student.config.num_hidden_layers,
        "student_shape": {field: getattr(student.config, field) for field in (*STUDENT_SHAPE_FIELDS, "student_layers")},
        "student_initialised_from_teacher": models.initialised_from_teacher,
        "teacher_parameters": models.teacher_parameters,
        "student_parameters": sum(p.numel() for p in student.parameters()),
        "student_backbone_parameters": sum(
            p.numel() for n, p in student.named_parameters() if not n.startswith("prediction_heads")
        ),
        "steps": state.step,
        "num_processes": accelerator.num_processes,
        "audio_hours_seen": state.audio_seconds / 3600,
        "skipped_unreadable_clips": state.unreadable,
        "dropped_too_short_clips": state.too_short,
        "skipped_nonfinite_steps": state.nonfinite_steps,
        "initial_eval": state.initial_eval,
        "final_eval": state.last_eval,
        "train_seconds_this_run": seconds,
        "log_history": state.log_history,
    }


def save_outputs(
    args, accelerator, models: DistillationModels, feature_extractor, state: DistillationState, seconds: float,
    output_dir: Path,
) -> dict:  # fmt: skip
    """The student with remote code, its feature extractor, `distill_results.json` and the card; then the upload.
    Returns the results."""
    if state.audio_seconds == 0:
        raise ValueError(no_usable_audio_message(state, "the whole run") + " No student was saved.")
    student = accelerator.unwrap_model(models.student)
    if not all(torch.isfinite(p).all() for p in student.parameters()):
        raise RuntimeError("The student's weights are not finite (NaN or inf): not saved.")
    student.config.apply_spec_augment = models.apply_spec_augment
    results = run_results(args, accelerator, student, state, models, seconds)
    if not accelerator.is_main_process:
        return results

    def save_student(folder: Path) -> None:
        student.save_pretrained(folder)
        feature_extractor.save_pretrained(folder)

    save_model_folder(output_dir, save_student)  # (a full disk leaves no config without weights)
    write_results(output_dir, "distill", results)
    write_model_card(output_dir, args, results)
    logger.info("Saved the student, feature extractor, model card and distill_results.json to %s", output_dir)
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi(token=args.hub_token)
        repo = api.create_repo(args.hub_model_id, private=args.hub_private_repo, exist_ok=True).repo_id
        api.upload_folder(
            repo_id=repo, folder_path=output_dir, ignore_patterns=["checkpoints/*", "runs/*", RUN_LOCK_PATTERN]
        )
        logger.info("Pushed to https://huggingface.co/%s", repo)
    return results


def student_description(results: dict, teacher_layers: list[int]) -> str:
    """The card's sentence on what the student is: where its heads read, what it started from."""
    shape, parts = results["student_shape"], results["student_initialised_from_teacher"]
    if shape["student_layers"] is None:
        heads = (
            f"one prediction head per distilled teacher layer ({', '.join(map(str, teacher_layers))}) on its last layer"
        )
        kind = "A DistilHuBERT-style student (arXiv 2110.01900)"
    else:
        pairs = ", ".join(f"{s} -> {t}" for s, t in zip(shape["student_layers"], teacher_layers))
        heads = f"layer-to-layer prediction heads (student layer -> teacher layer: {pairs})"
        kind = "A layer-to-layer student (FitHuBERT-style, arXiv 2207.00555)"
    if parts is None:
        start = "continued from a saved student"
    elif len(parts) == len(TEACHER_PARTS):
        start = f"initialised from the teacher's conv front end and first {shape['num_hidden_layers']} layers"
    else:
        start = f"initialised from the teacher's {', '.join(parts) or 'nothing'}, the rest from random weights"
    return f"{kind} with {heads}, {start}."


def write_model_card(output_dir: Path, args: argparse.Namespace, results: dict) -> None:
    """The student's card: Hub metadata, what the student is, how it was distilled, how to use it."""
    shape = results["student_shape"]
    datasets = [args.dataset_name] if args.dataset_name else []
    data = ModelCardData(
        language="pt",
        license="apache-2.0",
        library_name="transformers",
        tags=["audio", "speech", "distilxlsr", "distilhubert", "knowledge-distillation", "wav2vec2", "portuguese"]
        + (["stand-in"] if results["teacher_stand_in_kind"] else [])
        + (["synthetic-data"] if results["data_is_synthetic"] else []),
        base_model=args.teacher_name_or_path,
        datasets=[d for name in datasets for d in name.split(",")] or None,
        pipeline_tag="feature-extraction",
    )
    cosines = ", ".join(
        f"layer {layer}: {results['final_eval'][f'eval/cosine_layer_{layer}']:.3f}" for layer in args.teacher_layers
    )
    warnings = []
    if results["teacher_stand_in_kind"]:
        warnings.append(STAND_IN_TEACHER_NOTES[results["teacher_stand_in_kind"]])
    if results["data_is_synthetic"]:
        warnings.append("The audio is a **synthetic** (espeak-ng) demo corpus, a stand-in for real speech.")
    body = f"""# DistilXLSR student of `{args.teacher_name_or_path}`

{" ".join(warnings)}

{student_description(results, args.teacher_layers)} Trained to predict those teacher layers with L1 +
{args.cosine_weight} x -log(sigmoid(cosine)).

| | value |
|---|---|
| teacher | `{args.teacher_name_or_path}` ({results["teacher_parameters"]:,} parameters) |
| student | {results["student_parameters"]:,} parameters ({results["student_backbone_parameters"]:,} without prediction heads) |
| teacher layers | {", ".join(map(str, args.teacher_layers))} |
| student shape | {shape["num_hidden_layers"]} layers x {shape["hidden_size"]} wide (feed-forward {shape["intermediate_size"]}, {shape["num_attention_heads"]} heads), conv front end {shape["conv_dim"][0] if len(set(shape["conv_dim"])) == 1 else shape["conv_dim"]} channels |
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
    write_card(output_dir, data, body)


# --------------------------------------------------------------------------------------------------------------------
# Main


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    accelerator = build_accelerator(args, output_dir)
    keep_memory_flat(batch_shapes_repeat=args.pad_to_multiple_of > 0)
    previous_run = check_before_loading(args, output_dir, accelerator.is_main_process)
    if previous_run and args.overwrite_output_dir and accelerator.is_main_process:
        logger.warning("--overwrite_output_dir: deleting the previous run in %s", output_dir)
        remove_previous_run(previous_run)
    accelerator.wait_for_everyone()
    set_seed(args.seed)

    models = build_models(args, accelerator)
    feature_extractor = load_feature_extractor(
        args.teacher_name_or_path, args.trust_remote_code, flag="--teacher_name_or_path"
    )
    data = build_data(args, accelerator, models.student.config, feature_extractor)
    optimizer, scheduler = build_optimizer(args, models.student, accelerator.num_processes)
    models.student, optimizer, scheduler = prepare(
        accelerator, models.student, optimizer, scheduler, data, args.streaming
    )
    state = start_or_resume(args, accelerator, models.student, output_dir)
    if report_to(args):
        accelerator.init_trackers("distilxlsr", config={k: str(v) for k, v in vars(args).items()})

    seconds = distill(args, accelerator, models.student, models.teacher, data, optimizer, scheduler, state, output_dir)
    if seconds is None:  # stopped by --max_steps_this_run, after a checkpoint
        accelerator.end_training()
        return asdict(state)
    accelerator.wait_for_everyone()
    results = save_outputs(args, accelerator, models, feature_extractor, state, seconds, output_dir)
    accelerator.end_training()
    return results


if __name__ == "__main__":
    run_script(main)
