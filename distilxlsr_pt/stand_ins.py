"""Stand-in teachers of XLSR-53's architecture family, for machines that cannot reach facebook/wav2vec2-large-xlsr-53.

The Hub is out of reach on machines without internet, so tests, the demo and the benchmark distil from a stand-in:
the same transformers class and block design as XLSR-53 (layer-norm conv front end, stable-layer-norm encoder), at a
size you choose: random weights (`make_stand_in_teacher`, `stand_ins/make_stand_in_teacher.py`), or trained by
`stand_ins/train_teacher.py` (the demo's supervised stand-in, shipped in teachers/). Everything trained from one is
named a stand-in result, and its card is tagged `stand-in`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import ModelCardData
from transformers import PreTrainedModel, Wav2Vec2Config, Wav2Vec2Model

from .cards import STAND_IN_TAG, write_card
from .models import default_feature_extractor

# facebook/wav2vec2-large-xlsr-53's architecture (BRIEF §2).
XLSR53_ARCHITECTURE = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    conv_dim=[512] * 7,
    conv_kernel=[10, 3, 3, 3, 3, 2, 2],
    conv_stride=[5, 2, 2, 2, 2, 2, 2],
    conv_bias=True,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    hidden_act="gelu",
    layerdrop=0.1,
    mask_time_prob=0.075,
    feat_proj_dropout=0.1,
    attention_dropout=0.1,
    hidden_dropout=0.1,
    activation_dropout=0.0,
)

# Smaller members of the family: same design, narrower and shallower. "tiny" serves unit tests (seconds on a CPU),
# "demo" the end-to-end demo (deep enough for teacher layers 4 and 12).
SIZES = {
    "xlsr53": {},
    "demo": dict(
        hidden_size=192, num_hidden_layers=12, num_attention_heads=4, intermediate_size=768, conv_dim=[128] * 7
    ),
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=12,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[16] * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    ),
}


def stand_in_teacher_config(size: str = "tiny", **overrides) -> Wav2Vec2Config:
    """Config of a teacher of XLSR-53's family; `size` is one of `SIZES` ("xlsr53" is the exact architecture)."""
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r}; choose one of {sorted(SIZES)}.")
    return Wav2Vec2Config(**{**XLSR53_ARCHITECTURE, **SIZES[size], **overrides})


def stand_in_backbone(size: str = "tiny", seed: int = 0, **overrides):
    """A random-weight `DistilXLSRModel` (no prediction heads) of XLSR-53's family: the teachers' starting point.

    Same modules and weight names as transformers' `Wav2Vec2Model`, but the conv front end runs channels-last and
    trains faster on a CPU; `to_wav2vec2()` gives back transformers' own class with the same weights."""
    from configuration_distilxlsr import DistilXLSRConfig
    from modeling_distilxlsr import DistilXLSRModel

    torch.manual_seed(seed)
    teacher_config = stand_in_teacher_config(size, **overrides)
    config = DistilXLSRConfig.from_teacher_config(
        teacher_config, num_hidden_layers=teacher_config.num_hidden_layers, teacher_layers=[1]
    )
    return DistilXLSRModel(config, add_prediction_heads=False)


def make_stand_in_teacher(output_dir: str | Path, size: str = "tiny", seed: int = 0, **overrides) -> Path:
    """Save a random-init `Wav2Vec2Model` of XLSR-53's family, its feature extractor and a card saying it is a stand-in."""
    output_dir = Path(output_dir)
    torch.manual_seed(seed)
    model = Wav2Vec2Model(stand_in_teacher_config(size, **overrides))
    model.save_pretrained(output_dir)
    default_feature_extractor().save_pretrained(output_dir)
    parameters = sum(p.numel() for p in model.parameters())
    write_card(
        output_dir,
        ModelCardData(library_name="transformers", tags=[STAND_IN_TAG, "random-weights"]),
        f"# Stand-in teacher ({size}), random weights\n\n"
        "NOT facebook/wav2vec2-large-xlsr-53: a randomly initialised `Wav2Vec2Model` of XLSR-53's architecture family "
        f"(layer-norm conv front end, stable-layer-norm encoder), size `{size}`, {parameters:,} parameters, seed {seed}. "
        "Made by `stand_ins/make_stand_in_teacher.py` so that DistilXLSR-PT's tests and demo run without the Hub. "
        "Anything distilled from it is a stand-in result.",
    )
    return output_dir


def save_half_precision(model: PreTrainedModel, output_dir: str | Path) -> None:
    """Save `model` with float16 weights (half the file) and a config that loads them as float32 (fp32 compute)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(output_dir)
    config = json.loads((output_dir / "config.json").read_text())
    config["dtype"] = "float32"  # what from_pretrained(dtype="auto") gives: fp16 storage, fp32 compute
    (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


SHIPPED_TEACHER_DIR = Path(__file__).resolve().parents[1] / "teachers" / "supervised-stand-in"
# The shipped self-supervised stand-in is HuBERT's second iteration (SELF_SUPERVISED_TEACHER_DIR), trained by
# stand_ins/train_ssl_teacher.py with SELF_SUPERVISED_ITERATION_2_ARGS from the first (SELF_SUPERVISED_ITERATION_1_DIR,
# itself trained with SELF_SUPERVISED_ARGS: MFCC units), on the demo corpus's training audio and
# SELF_SUPERVISED_UNLABELLED_CLIPS untranscribed clips. The first is shipped too: the second's targets are its features.
SELF_SUPERVISED_ITERATION_1_DIR = SHIPPED_TEACHER_DIR.with_name("self-supervised-stand-in")
SELF_SUPERVISED_TEACHER_DIR = SHIPPED_TEACHER_DIR.with_name("self-supervised-iteration-2")
SELF_SUPERVISED_ARGS = ["--max_steps", "3500", "--warmup_steps", "350"]
SELF_SUPERVISED_ITERATION_2_ARGS = [
    "--target_layer",
    "6",
    "--num_units",
    "500",
    "--max_steps",
    "3000",
    "--warmup_steps",
    "300",
]
SELF_SUPERVISED_UNLABELLED_CLIPS = 3000

# The demo's supervised stand-in teacher (SHIPPED_TEACHER_DIR) was trained in two stages by
# stand_ins/train_teacher.py: its default recipe on the first 9 training voices (stand_ins/make_demo_corpus.py
# --num_train_voices 9), then these arguments with --init_from that teacher on the full corpus.
SHIPPED_STAGE_1_VOICES = 9
SHIPPED_STAGE_2_ARGS = ["--max_steps", "1200", "--eval_steps", "300",
                        "--finetune_args", "--learning_rate 1e-3 --warmup_steps 100"]  # fmt: skip
