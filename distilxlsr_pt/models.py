"""Loading models the way every script does: a folder's own code runs only with `trust_remote_code=True`.

Importing this module imports `modeling_distilxlsr`, which registers `model_type: distilxlsr` with the Auto classes:
this project's DistilXLSR folders then load through the installed classes, with `trust_remote_code=False`, and never
through the copy of the model code saved beside their weights.
"""

from __future__ import annotations

import logging
import os

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Processor,
)

import modeling_distilxlsr  # noqa: F401  (registers DistilXLSR with the Auto classes)
from configuration_distilxlsr import check_architecture

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


def load_checked_config(
    model_name_or_path: str | os.PathLike, trust_remote_code: bool = False, cache_dir: str | None = None
) -> PretrainedConfig:
    """A model's config with its architecture checked (`check_architecture`), read before any weight or data is: a
    `config.json` with zero attention heads, a negative size, mismatched conv lists or an absurd depth raises a
    `ValueError` naming the folder and the field, instead of a traceback (or minutes of allocation) while building."""
    try:
        config = AutoConfig.from_pretrained(
            model_name_or_path, trust_remote_code=trust_remote_code, cache_dir=cache_dir
        )
        check_architecture(config)
    except (ValueError, StrictDataclassError) as error:
        # transformers' own checks raise huggingface_hub's wrapper of the ValueError that says what is wrong
        reason = error.__cause__ if isinstance(error, StrictDataclassError) and error.__cause__ else error
        raise ValueError(f"Model {model_name_or_path}, config.json: {reason}") from error
    return config


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
