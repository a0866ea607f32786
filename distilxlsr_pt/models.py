"""Loading models the way every script does (a folder's own code runs only with `trust_remote_code=True`), and saving
them so that a failed save never leaves a folder that looks like a model (`save_model_folder`, `staging_folder`).

Importing this module imports `modeling_distilxlsr`, which registers `model_type: distilxlsr` with the Auto classes:
this project's DistilXLSR folders then load through the installed classes, with `trust_remote_code=False`, and never
through the copy of the model code saved beside their weights.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoTokenizer,
    PreTrainedModel,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Processor,
)

import modeling_distilxlsr  # noqa: F401  (registers DistilXLSR with the Auto classes)

from .audio import SAMPLING_RATE

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def default_feature_extractor() -> Wav2Vec2FeatureExtractor:
    """XLSR-53's feature extractor: 16 kHz mono, each utterance normalised to zero mean and unit variance, with an
    attention mask (for models saved without `preprocessor_config.json`, such as a bare distilled student)."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )


def load_feature_extractor(
    model_name_or_path: str | os.PathLike, trust_remote_code: bool = False, cache_dir: str | None = None
) -> Wav2Vec2FeatureExtractor:
    """The model's feature extractor, or `default_feature_extractor()` when it has none."""
    try:
        return AutoFeatureExtractor.from_pretrained(
            model_name_or_path, trust_remote_code=trust_remote_code, cache_dir=cache_dir
        )
    except (OSError, ValueError):
        logger.info(
            "No feature extractor with %s: using a default 16 kHz Wav2Vec2FeatureExtractor.", model_name_or_path
        )
        return default_feature_extractor()


def load_ctc_weights(
    model_name_or_path: str | os.PathLike, dtype: str = "fp32", device: str = "cpu", trust_remote_code: bool = False
) -> PreTrainedModel:
    """A CTC model in eval mode, its weights in `dtype` ("fp32" or "bf16"): the one place that loads a recogniser
    for inference and evaluation."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    model = AutoModelForCTC.from_pretrained(
        model_name_or_path, trust_remote_code=trust_remote_code, dtype=DTYPES[dtype]
    )
    return model.to(device).eval()


def load_ctc_model(
    model_name_or_path: str | os.PathLike, dtype: str = "fp32", device: str = "cpu", trust_remote_code: bool = False
) -> tuple[PreTrainedModel, Wav2Vec2Processor]:
    """`load_ctc_weights` and the model's plain processor (feature extractor + tokenizer, no LM)."""
    feature_extractor = AutoFeatureExtractor.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    model = load_ctc_weights(model_name_or_path, dtype, device, trust_remote_code)
    return model, Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)


@contextmanager
def staging_folder(final: str | os.PathLike, writer: bool = True) -> Iterator[Path]:
    """A fresh `<final>.tmp` folder to save into before it (or its files) is moved into place. If the save fails, the
    staging folder, all of it this save's writing, is removed and the error goes on. Only the `writer` process of a
    multi-process save makes and removes it."""
    staging = Path(final).with_name(Path(final).name + ".tmp")
    if writer:
        if staging.exists():  # left by a save that was killed
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        if writer:
            shutil.rmtree(staging, ignore_errors=True)
        raise


# Moved into place last: a folder with a config is a model, so an interrupted move must leave none without weights.
CONFIG_NAME = "config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def save_model_folder(output_dir: str | os.PathLike, save: Callable[[Path], None], writer: bool = True) -> None:
    """
    Save a model into `output_dir` as checkpoints are saved: `save(folder)` writes into a staging folder
    (`<output_dir>/_model.tmp`), whose files then move into place (renames, on the same disk): the weights first,
    `config.json` last, after removing the old one, so that neither a full disk nor a kill leaves `output_dir` with a
    config and no (or other) weights. A failed save removes the staging folder and raises.

    Every process calls this (a sharded model gathers its weights in `save`); only the `writer` writes and moves.
    """
    output_dir = Path(output_dir)
    with staging_folder(output_dir / "_model", writer) as staging:
        save(staging)
        if writer:
            names = sorted(entry.name for entry in staging.iterdir())
            weights = [name for name in names if name.endswith(WEIGHT_SUFFIXES)]
            others = [name for name in names if name not in weights and name != CONFIG_NAME]
            (output_dir / CONFIG_NAME).unlink(missing_ok=True)
            for name in [*weights, *others, *([CONFIG_NAME] if CONFIG_NAME in names else [])]:
                os.replace(staging / name, output_dir / name)
            staging.rmdir()
