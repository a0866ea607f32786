"""Save a randomly initialised teacher of XLSR-53's architecture family: a stand-in for facebook/wav2vec2-large-xlsr-53.

The Hub is out of reach on machines without internet, so tests, the demo and the benchmark distil from a stand-in:
the same transformers class and block design as XLSR-53 (layer-norm conv front end, stable-layer-norm encoder), random
weights, at a size you choose. Everything trained from it is named a stand-in result.

    python make_stand_in_teacher.py --output_dir teachers/tiny --size tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

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


def make_stand_in_teacher(output_dir: str | Path, size: str = "tiny", seed: int = 0, **overrides) -> Path:
    """Save a random-init `Wav2Vec2Model` of XLSR-53's family, its feature extractor and a card saying it is a stand-in."""
    output_dir = Path(output_dir)
    torch.manual_seed(seed)
    model = Wav2Vec2Model(stand_in_teacher_config(size, **overrides))
    model.save_pretrained(output_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(output_dir)
    parameters = sum(p.numel() for p in model.parameters())
    (output_dir / "README.md").write_text(
        f"# Stand-in teacher ({size}), random weights\n\n"
        "NOT facebook/wav2vec2-large-xlsr-53: a randomly initialised `Wav2Vec2Model` of XLSR-53's architecture family "
        f"(layer-norm conv front end, stable-layer-norm encoder), size `{size}`, {parameters:,} parameters, seed {seed}. "
        "Made by `make_stand_in_teacher.py` so that DistilXLSR-PT's tests and demo run without the Hub. Anything "
        "distilled from it is a stand-in result.\n"
    )
    return output_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="Where to save the stand-in teacher.")
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES), help="Teacher size (xlsr53 = exact arch).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random initialisation.")
    args = parser.parse_args()
    path = make_stand_in_teacher(args.output_dir, size=args.size, seed=args.seed)
    print(f"Saved a stand-in teacher ({args.size}, random weights) to {path}")


if __name__ == "__main__":
    main()
