"""Loading models the way every script does (a folder's own code runs only with `trust_remote_code=True`), and saving
them so that a failed save never leaves a folder that looks like a model (`save_model_folder`, `staging_folder`).

Importing this module imports `modeling_distilxlsr`, which registers `model_type: distilxlsr` with the Auto classes:
this project's DistilXLSR folders then load through the installed classes, with `trust_remote_code=False`, and never
through the copy of the model code saved beside their weights. Errors the user fixes (a folder that ships its own
code, a Hub id not cached while offline, weights that do not fit their config) are one-sentence `LoadingError`s
naming the flag.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Processor,
)

import modeling_distilxlsr  # noqa: F401  (registers DistilXLSR with the Auto classes)
from configuration_distilxlsr import check_architecture

from .audio import SAMPLING_RATE

logger = logging.getLogger(__name__)

# The one part of a CTC checkpoint that fine-tuning may replace by random weights: the head, sized by the vocabulary.
CTC_HEAD_PREFIX = "lm_head."

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


class LoadingError(Exception):
    """A model, tokenizer, feature extractor or dataset that cannot be loaded for a reason the user must fix (a flag,
    the folder): the message is one sentence saying what to do (`cli.run_script` prints it without a traceback)."""


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and the exceptions it was raised from or during."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def loading_error_message(error: BaseException, name_or_path: str, flag: str) -> str | None:
    """The one-sentence explanation of an error raised while loading `name_or_path` (given to `flag`), when the user
    can fix it: the folder ships its own model code (transformers wants `trust_remote_code=True`), or it is a Hub id
    that is neither a local folder nor cached while the Hub is offline or unreachable. None for any other error."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    causes = list(_causes(error))
    if any(isinstance(cause, ValueError) and "trust_remote_code=True" in str(cause) for cause in causes):
        return (
            f"{name_or_path} (given to {flag}) ships its own model code (an auto_map in its config), which runs only "
            "with --trust_remote_code: pass that flag only if you trust that code, or give a folder of a model type "
            "transformers or this project knows."
        )
    # huggingface_hub raises LocalEntryNotFoundError (transformers wraps it in an OSError), datasets a ConnectionError
    # (OfflineModeIsEnabled is one too), whether the Hub is offline or out of reach.
    offline_errors = (LocalEntryNotFoundError, ConnectionError)
    if not os.path.isdir(name_or_path) and any(isinstance(cause, offline_errors) for cause in causes):
        hub = "offline (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "unreachable"
        return (
            f"{name_or_path} (given to {flag}) is neither a local folder nor in the local Hugging Face cache, and the "
            f"Hub is {hub}: pass a local folder to {flag}, or run once with the Hub reachable to download it."
        )
    return None


@contextmanager
def explain_loading_errors(name_or_path: str | os.PathLike, flag: str) -> Iterator[None]:
    """Around the loading of `name_or_path` (given to `flag`): an error the user fixes with a flag
    (`loading_error_message`) is raised as a one-sentence `LoadingError`; any other error passes unchanged."""
    try:
        yield
    except LoadingError:
        raise
    except Exception as error:
        message = loading_error_message(error, str(name_or_path), flag)
        if message is None:
            raise
        raise LoadingError(message) from error


def default_feature_extractor() -> Wav2Vec2FeatureExtractor:
    """XLSR-53's feature extractor: 16 kHz mono, each utterance normalised to zero mean and unit variance, with an
    attention mask (for models saved without `preprocessor_config.json`, such as a bare distilled student)."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )


def load_config(
    model_name_or_path: str | os.PathLike,
    flag: str = "--model_name_or_path",
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
) -> PreTrainedConfig:
    """
    The model's config, read and checked before any weight or data is loaded. Each of these fails here in one sentence
    naming `flag` (`LoadingError`): a folder with its own code (without `trust_remote_code`), an uncached Hub id while
    offline, and a config that cannot build a model (`check_architecture`: zero attention heads, a negative size,
    mismatched conv lists, an absurd depth), which would otherwise end in a traceback or minutes of allocation.
    """
    try:
        with explain_loading_errors(model_name_or_path, flag):
            config = AutoConfig.from_pretrained(
                model_name_or_path, trust_remote_code=trust_remote_code, cache_dir=cache_dir
            )
        check_architecture(config)
    except (ValueError, StrictDataclassError) as error:
        # transformers' own checks raise huggingface_hub's wrapper of the ValueError that says what is wrong
        reason = error.__cause__ if isinstance(error, StrictDataclassError) and error.__cause__ else error
        raise LoadingError(f"{flag} {model_name_or_path}, config.json: {reason}") from error
    return config


def load_feature_extractor(
    model_name_or_path: str | os.PathLike,
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
    flag: str = "--model_name_or_path",
) -> Wav2Vec2FeatureExtractor:
    """The model's feature extractor, or `default_feature_extractor()` when it has none. A folder whose feature
    extractor is its own code is refused without `trust_remote_code` (`LoadingError`), never replaced by the default."""
    try:
        with explain_loading_errors(model_name_or_path, flag):
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
    with explain_loading_errors(model_name_or_path, "--model_name_or_path"):
        model = AutoModelForCTC.from_pretrained(
            model_name_or_path, trust_remote_code=trust_remote_code, dtype=DTYPES[dtype]
        )
    return model.to(device).eval()


def load_ctc_model(
    model_name_or_path: str | os.PathLike, dtype: str = "fp32", device: str = "cpu", trust_remote_code: bool = False
) -> tuple[PreTrainedModel, Wav2Vec2Processor]:
    """`load_ctc_weights` and the model's plain processor (feature extractor + tokenizer, no LM)."""
    with explain_loading_errors(model_name_or_path, "--model_name_or_path"):
        feature_extractor = AutoFeatureExtractor.from_pretrained(
            model_name_or_path, trust_remote_code=trust_remote_code
        )
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


def load_ctc_for_fine_tuning(
    model_name_or_path: str | os.PathLike, trust_remote_code: bool = False, **kwargs
) -> PreTrainedModel:
    """A checkpoint as a CTC model for fine-tuning with the vocabulary of `kwargs` (`vocab_size`, ...): a CTC head
    (`lm_head`) of another size is re-initialised, with a warning; any other weight whose shape does not fit the
    config is a `LoadingError` naming it, never silently replaced by random weights."""
    with explain_loading_errors(model_name_or_path, "--model_name_or_path"):
        model, info = AutoModelForCTC.from_pretrained(
            model_name_or_path,
            trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=True,  # checked below: the head alone may differ
            output_loading_info=True,
            **kwargs,
        )
    mismatched = sorted((key, tuple(saved), tuple(wanted)) for key, saved, wanted in info["mismatched_keys"])
    wrong = [entry for entry in mismatched if not entry[0].startswith(CTC_HEAD_PREFIX)]
    if wrong:
        listed = "; ".join(
            f"{key} is {list(saved)} in the checkpoint, {list(wanted)} by its config"
            for key, saved, wanted in wrong[:5]
        )
        more = f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""
        raise LoadingError(
            f"{model_name_or_path}: {len(wrong)} weight(s) do not fit the model's config: {listed}{more}. Only the CTC "
            "head (lm_head) may be re-initialised: fix the checkpoint or its config.json."
        )
    if mismatched:
        logger.warning(
            "%s: its CTC head (%s) has another vocabulary size; a new head for %s tokens starts from random weights.",
            model_name_or_path, ", ".join(f"{key} {list(saved)}" for key, saved, _ in mismatched), model.config.vocab_size,
        )  # fmt: skip
    return model
