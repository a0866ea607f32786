"""The command-line vocabulary the scripts share: one name per idea, as in transformers' example scripts.

Each script builds its own parser; the flags that several scripts take are added here, so that they are spelt, typed
and documented alike (`--model_name_or_path`, `--dataset_name`, `--data_dir`, `--eval_split_name`,
`--text_column_name`, `--trust_remote_code`, `--output_dir`, ...). Flags renamed in 0.3 keep working for one release
(`add_deprecated_alias`): they warn and set the new flag.

A `LoadingError` (`models.explain_loading_errors`: a folder that ships its own code, a Hub id not cached while the Hub
is offline) ends a script run by `run_script` with its one-sentence message, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configuration_distilxlsr import check_teacher_layers

if TYPE_CHECKING:  # (datasets takes seconds to import; export_onnx.py, say, needs none of it)
    from .data import DatasetSplit


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` keeps the module docstring's layout and shows every default."""


def argument_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser whose `--help` shows the script's docstring as written and every default."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


def add_trust_remote_code(parser: argparse.ArgumentParser) -> None:
    """`--trust_remote_code`, off by default as in transformers: a model folder's own `.py` files run only when the
    user says so. This project's DistilXLSR folders load without it (the installed classes serve them)."""
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="Run model code shipped in a model folder or Hub repo (its auto_map). Not needed for DistilXLSR models.",
    )


def run_script(main: Callable[[], Any]) -> None:
    """A script's entry point: run `main()`; a `LoadingError` ends the command with its one-line message (the last
    line of stderr) and exit status 1, without a traceback."""
    from .models import LoadingError  # (models imports torch: only when a script runs)

    try:
        main()
    except LoadingError as error:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {error}")


def add_eval_dataset_flags(parser: argparse.ArgumentParser, split: str = "test", several: bool = False) -> None:
    """The flags of one evaluation split (`DatasetSplit`): a Hub dataset or local folder (`--dataset_name`) or a local
    audiofolder (`--data_dir`), its config, split, columns and size. With `several`, comma-separated values give one
    per dataset (or one for all)."""
    per = " (comma-separated: one, or one per dataset)" if several else ""
    parser.add_argument(
        "--dataset_name",
        default=None,
        help="A Hub dataset or a local folder (an audiofolder: split folders holding metadata.csv)" + per + ".",
    )
    parser.add_argument("--dataset_config_name", default=None, help="The dataset's config" + per + ".")
    parser.add_argument(
        "--data_dir", default=None, help="A local audiofolder (DIR/{train,validation,test}/metadata.csv)."
    )
    parser.add_argument("--eval_split_name", default=split, help="The split to score" + per + ".")
    parser.add_argument("--audio_column_name", default="audio", help="The audio column" + per + ".")
    parser.add_argument(
        "--text_column_name", default="transcription", help="The transcript column ('sentence' in Common Voice)" + per
    )
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Score only the first N clips.")
    parser.add_argument("--cache_dir", default=None, help="Where to store datasets from the Hub.")


def split_list(value: str | None, count: int, name: str) -> list:
    """A comma-separated option as one value per dataset: one value serves all, otherwise one each."""
    values = [None] if value is None else [v.strip() or None for v in value.split(",")]
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise ValueError(f"--{name} has {len(values)} entries for {count} datasets.")
    return values


def eval_dataset_splits(args: argparse.Namespace) -> list[DatasetSplit]:
    """The `DatasetSplit`s named by `add_eval_dataset_flags`' flags (several when `--dataset_name` is comma-separated)."""
    from .data import DatasetSplit

    names = [name.strip() for name in args.dataset_name.split(",")] if args.dataset_name else [None]
    count = len(names)
    columns = zip(
        split_list(args.dataset_config_name, count, "dataset_config_name"),
        split_list(args.eval_split_name, count, "eval_split_name"),
        split_list(args.text_column_name, count, "text_column_name"),
        split_list(args.audio_column_name, count, "audio_column_name"),
    )
    return [
        DatasetSplit(
            name=name,
            config=config,
            data_dir=args.data_dir,
            split=split or "test",
            text_column=text or "transcription",
            audio_column=audio or "audio",
            max_samples=args.max_eval_samples,
            cache_dir=args.cache_dir,
        )
        for name, (config, split, text, audio) in zip(names, columns)
    ]


def parse_teacher_layers(text: str | Sequence[int]) -> list[int]:
    """'4,12' -> [4, 12] (sorted, duplicates dropped), through the config's one check of teacher layers."""
    return sorted(set(check_teacher_layers(text, name="--teacher_layers")))


def warn_deprecated(old: str, new: str) -> None:
    """The one deprecation warning of a renamed flag (FutureWarning, shown by default)."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release: use {new}.", FutureWarning, stacklevel=3
    )


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, new_option: str, **kwargs: Any) -> None:
        self.new_option = new_option
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warn_deprecated(option_string, self.new_option)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Let the old flag `old` set `new` (same type and choices), with a warning; hidden from `--help`."""
    action = parser._option_string_actions[new]
    parser.add_argument(
        old,
        dest=action.dest,
        action=_DeprecatedAlias,
        new_option=new,
        nargs=action.nargs,
        const=action.const,
        type=action.type,
        choices=action.choices,
        help=argparse.SUPPRESS,
    )


def precision_flags() -> list[str]:
    """finetune_ctc.py's precision flags for this machine: bf16 autocast where the hardware runs it fast (CUDA, or a
    CPU with native bf16 matrix units), else fp32 (none). Measured: a training step in 0.6x the fp32 time on an
    AVX-512 BF16 CPU; CTC's loss itself is computed in fp32."""
    import torch

    if torch.cuda.is_available():
        return ["--bf16"] if torch.cuda.is_bf16_supported() else []
    return ["--bf16", "--use_cpu"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else []
