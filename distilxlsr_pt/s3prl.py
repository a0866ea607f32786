"""Conversion between s3prl distiller checkpoints (DistilHuBERT, arXiv 2110.01900) and DistilXLSR models, both ways.

An s3prl checkpoint is `{"Config": {"distiller": {...}}, "Distiller": state_dict}` (what s3prl's pre-training
writes and `s3prl.upstream.distiller.expert.UpstreamExpert(path)` reads). Both directions keep the numbers: the same
input gives the same hidden states and layer predictions (tests/test_s3prl.py checks it against s3prl itself). A
field that one side cannot represent is an error naming it, never a silently different model. The command line is
`convert_s3prl_checkpoint.py`.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import torch
from huggingface_hub import ModelCardData
from transformers import Wav2Vec2FeatureExtractor

from configuration_distilxlsr import DistilXLSRConfig
from modeling_distilxlsr import DistilXLSRModel

from .cards import write_card

logger = logging.getLogger(__name__)

# s3prl's DistillerConfig fields (s3prl/upstream/distiller/model.py, 0.4.18) that shape the model, with their defaults.
S3PRL_DEFAULTS = {
    "extractor_mode": "default",
    "extractor_conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "extractor_dropout": 0.0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "encoder_layers": 1,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "attention_type": "original",
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.1,
    "encoder_layerdrop": 0.0,
    "final_dim": 768,
    "out_layer_type": "expand-last",
    "out_layer_inter_dim": -1,
    "n_tasks": 12,
    "task_emb_type": "expand-last",
}
# DistillerConfig fields that only s3prl's pre-training reads (or that the expand-last layout ignores): they do not
# change the model's outputs, so they are carried in the model card, not in the model.
S3PRL_TRAINING_FIELDS = (
    "feature_grad_mult",
    "task_emb_size",
    "layer_emb_size",
    "loss_type",
    "feat_pen_loss",
    "cosine_loss",
    "init_teacher_conv_layers",
    "init_teacher_encoder_layers",
)
EXTRACTOR_MODES = {"default": "group", "layer_norm": "layer"}  # s3prl -> transformers' feat_extract_norm
ACTIVATIONS = ("gelu", "relu", "tanh")  # same name, same function in s3prl and transformers
S3PRL_LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, what s3prl's modules use

# Our encoder-layer submodule names -> s3prl's (everything else is renamed in `_key_pairs`).
LAYER_RENAMES = {
    "attention.": "self_attn.",
    "layer_norm.": "self_attn_layer_norm.",
    "feed_forward.intermediate_dense.": "fc1.",
    "feed_forward.output_dense.": "fc2.",
    "final_layer_norm.": "final_layer_norm.",
}


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """s3prl's conv layer string, e.g. "[(512,10,5)] + [(512,3,2)] * 4", read without `eval` (lists, tuples, ints,
    + and * only)."""

    def value(node: ast.AST):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"extractor_conv_feature_layers: cannot read {ast.unparse(node)!r}")

    layers = value(ast.parse(spec, mode="eval").body)
    if not isinstance(layers, list) or not all(isinstance(layer, tuple) and len(layer) == 3 for layer in layers):
        raise ValueError(f"extractor_conv_feature_layers must be a list of (dim, kernel, stride), got {spec!r}")
    return layers


def config_from_s3prl(distiller: dict) -> DistilXLSRConfig:
    """The DistilXLSRConfig of an s3prl `DistillerConfig` dict; `ValueError` naming any field it cannot represent."""
    unknown = sorted(set(distiller) - set(S3PRL_DEFAULTS) - set(S3PRL_TRAINING_FIELDS) - {"pred_layer_id"})
    if unknown:
        raise ValueError(f"Unknown s3prl distiller field(s) {unknown}: this converter knows s3prl 0.4.18's fields.")
    cfg = {**S3PRL_DEFAULTS, **distiller}
    required = {
        "task_emb_type": "expand-last",
        "out_layer_type": "expand-last",
        "attention_type": "original",
        "extractor_dropout": 0.0,
    }
    for field, supported in required.items():
        if cfg[field] != supported:
            raise ValueError(
                f"s3prl field `{field}` is {cfg[field]!r}; DistilXLSRModel represents only {supported!r} (its "
                "architecture has no equivalent)."
            )
    if cfg["extractor_mode"] not in EXTRACTOR_MODES:
        raise ValueError(
            f"s3prl field `extractor_mode` is {cfg['extractor_mode']!r}; supported: {list(EXTRACTOR_MODES)}"
        )
    if cfg["activation_fn"] not in ACTIVATIONS:
        raise ValueError(f"s3prl field `activation_fn` is {cfg['activation_fn']!r}; supported: {list(ACTIVATIONS)}")
    if int(cfg["encoder_layers"]) < 1:
        raise ValueError("s3prl field `encoder_layers` is 0 (a GELU instead of an encoder): not representable.")
    pred_layer_id = [int(layer) for layer in cfg.get("pred_layer_id", range(1, int(cfg["n_tasks"]) + 1))]
    if int(cfg["n_tasks"]) != len(pred_layer_id):
        raise ValueError(f"s3prl field `n_tasks` ({cfg['n_tasks']}) differs from len(pred_layer_id) {pred_layer_id}.")
    conv_layers = parse_conv_layers(str(cfg["extractor_conv_feature_layers"]))
    hidden_size = int(cfg["encoder_embed_dim"])
    if conv_layers[-1][0] == hidden_size:
        raise ValueError(
            "s3prl fields `extractor_conv_feature_layers` and `encoder_embed_dim`: equal widths mean s3prl has no "
            "`post_extract_proj`, which DistilXLSRModel always has."
        )
    inter_dim = int(cfg["out_layer_inter_dim"])
    return DistilXLSRConfig(
        feat_extract_norm=EXTRACTOR_MODES[cfg["extractor_mode"]],
        conv_dim=[layer[0] for layer in conv_layers],
        conv_kernel=[layer[1] for layer in conv_layers],
        conv_stride=[layer[2] for layer in conv_layers],
        conv_bias=False,  # s3prl's distiller front end has no conv biases
        feat_extract_activation="gelu",
        feat_proj_layer_norm=False,  # nor a LayerNorm before post_extract_proj
        feat_proj_dropout=0.0,
        num_conv_pos_embeddings=int(cfg["conv_pos"]),
        num_conv_pos_embedding_groups=int(cfg["conv_pos_groups"]),
        num_hidden_layers=int(cfg["encoder_layers"]),
        hidden_size=hidden_size,
        intermediate_size=int(cfg["encoder_ffn_embed_dim"]),
        num_attention_heads=int(cfg["encoder_attention_heads"]),
        hidden_act=cfg["activation_fn"],
        layer_norm_eps=S3PRL_LAYER_NORM_EPS,
        do_stable_layer_norm=bool(cfg["layer_norm_first"]),
        hidden_dropout=float(cfg["dropout"]),
        attention_dropout=float(cfg["attention_dropout"]),
        activation_dropout=float(cfg["activation_dropout"]),
        layerdrop=float(cfg["encoder_layerdrop"]),
        mask_time_prob=0.0,  # s3prl's distiller has no SpecAugment (and no learned mask vector)
        teacher_layers=pred_layer_id,
        teacher_hidden_size=int(cfg["final_dim"]),
        prediction_head_inter_dim=inter_dim if inter_dim > 0 else hidden_size,
        teacher_name_or_path=None,
    )


def config_to_s3prl(config: DistilXLSRConfig) -> dict:
    """The s3prl `DistillerConfig` dict of a DistilXLSRConfig; `ValueError` naming any field s3prl cannot represent."""
    s3prl_route = (
        "; export the backbone with `model.to_wav2vec2().save_pretrained(DIR)` and evaluate it with s3prl's "
        "`-u hf_wav2vec2_custom -k DIR` instead (hidden states only, no layer predictions)."
    )
    if config.student_layers is not None and set(config.student_layers) != {config.num_hidden_layers}:
        raise ValueError(
            f"`student_layers` is {config.student_layers} (layer-to-layer heads), but s3prl's distiller predicts "
            "every teacher layer from its last layer" + s3prl_route
        )
    if config.conv_bias:
        raise ValueError("`conv_bias` is True but s3prl's distiller conv front end has no biases" + s3prl_route)
    if config.feat_proj_layer_norm:
        raise ValueError(
            "`feat_proj_layer_norm` is True but s3prl's distiller has no LayerNorm before its projection" + s3prl_route
        )
    modes = {norm: mode for mode, norm in EXTRACTOR_MODES.items()}
    checks = {
        "feat_extract_norm": (config.feat_extract_norm in modes, list(modes)),
        "feat_extract_activation": (config.feat_extract_activation == "gelu", "gelu"),
        "hidden_act": (config.hidden_act in ACTIVATIONS, list(ACTIVATIONS)),
        "layer_norm_eps": (config.layer_norm_eps == S3PRL_LAYER_NORM_EPS, S3PRL_LAYER_NORM_EPS),
        "add_adapter": (not config.add_adapter, False),
        "conv_dim": (config.conv_dim[-1] != config.hidden_size, "a last width other than hidden_size"),
    }
    for field, (ok, supported) in checks.items():
        if not ok:
            raise ValueError(f"`{field}` is {getattr(config, field)!r}; s3prl's distiller supports {supported}.")
    conv_layers = list(zip(config.conv_dim, config.conv_kernel, config.conv_stride))
    return {
        "extractor_mode": modes[config.feat_extract_norm],
        "extractor_conv_feature_layers": repr([tuple(int(v) for v in layer) for layer in conv_layers]),
        "extractor_dropout": 0.0,
        "feature_grad_mult": 1.0,
        "conv_pos": config.num_conv_pos_embeddings,
        "conv_pos_groups": config.num_conv_pos_embedding_groups,
        "encoder_layers": config.num_hidden_layers,
        "encoder_embed_dim": config.hidden_size,
        "encoder_ffn_embed_dim": config.intermediate_size,
        "encoder_attention_heads": config.num_attention_heads,
        "activation_fn": config.hidden_act,
        "layer_norm_first": bool(config.do_stable_layer_norm),
        "attention_type": "original",
        "dropout": config.hidden_dropout,
        "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout,
        "encoder_layerdrop": config.layerdrop,
        "final_dim": config.teacher_hidden_size,
        "out_layer_type": "expand-last",
        "out_layer_inter_dim": config.prediction_head_inter_dim,
        "n_tasks": len(config.teacher_layers),
        "task_emb_type": "expand-last",
        "pred_layer_id": list(config.teacher_layers),
        "loss_type": "l1",
        "cosine_loss": 1.0,
    }


# --------------------------------------------------------------------------------------------------------------------
# Weights


def _key_pairs(config: DistilXLSRConfig) -> list[tuple[str, str]]:
    """(our key, s3prl key) for every backbone tensor; the prediction heads are sliced in `state_dict_*`."""
    pairs = []
    for i in range(len(config.conv_dim)):
        pairs.append((f"feature_extractor.conv_layers.{i}.conv.weight", f"feature_extractor.conv_layers.{i}.0.weight"))
        norm = {"layer": f"{i}.2.1", "group": "0.2" if i == 0 else None}[config.feat_extract_norm]
        if norm is not None:
            for name in ("weight", "bias"):
                pairs.append(
                    (
                        f"feature_extractor.conv_layers.{i}.layer_norm.{name}",
                        f"feature_extractor.conv_layers.{norm}.{name}",
                    )
                )
    for name in ("weight", "bias"):
        pairs.append((f"feature_projection.projection.{name}", f"post_extract_proj.{name}"))
        pairs.append((f"encoder.layer_norm.{name}", f"encoder.layer_norm.{name}"))
    pairs += [
        ("encoder.pos_conv_embed.conv.bias", "encoder.pos_conv.0.bias"),
        ("encoder.pos_conv_embed.conv.parametrizations.weight.original0", "encoder.pos_conv.0.weight_g"),
        ("encoder.pos_conv_embed.conv.parametrizations.weight.original1", "encoder.pos_conv.0.weight_v"),
    ]
    for i in range(config.num_hidden_layers):
        for ours, theirs in LAYER_RENAMES.items():
            for name in ("weight", "bias"):
                if ours == "attention.":
                    for proj in ("q_proj.", "k_proj.", "v_proj.", "out_proj."):
                        pairs.append(
                            (f"encoder.layers.{i}.{ours}{proj}{name}", f"encoder.layers.{i}.{theirs}{proj}{name}")
                        )
                else:
                    pairs.append((f"encoder.layers.{i}.{ours}{name}", f"encoder.layers.{i}.{theirs}{name}"))
    return pairs


def state_dict_from_s3prl(s3prl_state: dict, config: DistilXLSRConfig) -> dict[str, torch.Tensor]:
    """s3prl DistillerModel weights -> DistilXLSRModel weights (the expand-last head split into one head per layer)."""
    state = {ours: s3prl_state[theirs] for ours, theirs in _key_pairs(config)}
    heads, inter = len(config.teacher_layers), config.prediction_head_inter_dim
    dense_weight, dense_bias = s3prl_state["output_layer.0.weight"], s3prl_state["output_layer.0.bias"]
    for i in range(heads):
        state[f"prediction_heads.{i}.dense.weight"] = dense_weight[i * inter : (i + 1) * inter]
        state[f"prediction_heads.{i}.dense.bias"] = dense_bias[i * inter : (i + 1) * inter]
        if heads == 1:  # s3prl's SplitLinear is a plain Linear for a single split
            state["prediction_heads.0.output.weight"] = s3prl_state["output_layer.2.layer.weight"]
            state["prediction_heads.0.output.bias"] = s3prl_state["output_layer.2.layer.bias"]
        else:  # weight (N, inter, final_dim), bias (1, 1, N, final_dim)
            state[f"prediction_heads.{i}.output.weight"] = s3prl_state["output_layer.2.weight"][i].T
            state[f"prediction_heads.{i}.output.bias"] = s3prl_state["output_layer.2.bias"][0, 0, i]
    used = {theirs for _, theirs in _key_pairs(config)} | {k for k in s3prl_state if k.startswith("output_layer.")}
    unused = sorted(set(s3prl_state) - used)
    if unused:
        raise ValueError(f"s3prl weights with no place in DistilXLSRModel: {unused}")
    return {key: value.contiguous() for key, value in state.items()}


def state_dict_to_s3prl(state: dict, config: DistilXLSRConfig) -> dict[str, torch.Tensor]:
    """DistilXLSRModel weights -> s3prl DistillerModel weights (heads packed into the expand-last layout)."""
    if "prediction_heads.0.dense.weight" not in state:
        raise ValueError("The model has no prediction heads (a CTC model?): s3prl's distiller needs them.")
    s3prl_state = {theirs: state[ours] for ours, theirs in _key_pairs(config)}
    heads = range(len(config.teacher_layers))
    s3prl_state["output_layer.0.weight"] = torch.cat([state[f"prediction_heads.{i}.dense.weight"] for i in heads])
    s3prl_state["output_layer.0.bias"] = torch.cat([state[f"prediction_heads.{i}.dense.bias"] for i in heads])
    if len(heads) == 1:
        s3prl_state["output_layer.2.layer.weight"] = state["prediction_heads.0.output.weight"]
        s3prl_state["output_layer.2.layer.bias"] = state["prediction_heads.0.output.bias"]
    else:
        s3prl_state["output_layer.2.weight"] = torch.stack(
            [state[f"prediction_heads.{i}.output.weight"].T for i in heads]
        )
        s3prl_state["output_layer.2.bias"] = torch.stack([state[f"prediction_heads.{i}.output.bias"] for i in heads])[
            None, None
        ]
    return {key: value.detach().cpu().contiguous() for key, value in s3prl_state.items()}


# --------------------------------------------------------------------------------------------------------------------
# The two directions


def load_s3prl_checkpoint(path: str, allow_pickle: bool = False) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:  # torch's UnpicklingError lists the objects it refused
        raise ValueError(
            f"Could not load {path} as plain tensors ({error}). If it is an s3prl checkpoint you trust, pass "
            "--allow_pickle."
        ) from error
    if (
        not isinstance(checkpoint, dict)
        or "Distiller" not in checkpoint
        or "distiller" not in checkpoint.get("Config", {})
    ):
        raise ValueError(
            f"{path} is not an s3prl distiller checkpoint ({{'Config': {{'distiller': ...}}, 'Distiller': ...}})."
        )
    return checkpoint


def s3prl_to_hf(s3prl_checkpoint: str, output_dir: str, allow_pickle: bool = False) -> DistilXLSRModel:
    """Writes the DistilXLSRModel of an s3prl distiller checkpoint (weights, remote code, feature extractor, card)."""
    checkpoint = load_s3prl_checkpoint(s3prl_checkpoint, allow_pickle)
    distiller = dict(checkpoint["Config"]["distiller"])
    config = config_from_s3prl(distiller)
    model = DistilXLSRModel(config)
    model.load_state_dict(state_dict_from_s3prl(checkpoint["Distiller"], config), strict=True)
    model.eval()
    output = Path(output_dir)
    model.save_pretrained(output)
    # s3prl feeds its distiller raw (unnormalised) waveforms and masks padding in the encoder: the same here.
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True).save_pretrained(output)
    teacher = checkpoint["Config"].get("teacher", {}).get("model")
    write_model_card(output, s3prl_checkpoint, distiller, teacher)
    logger.info("Wrote %s (%s parameters)", output, f"{sum(p.numel() for p in model.parameters()):,}")
    return model


def hf_to_s3prl(model_name_or_path: str, output_s3prl_checkpoint: str) -> dict:
    """Writes an s3prl distiller checkpoint of a DistilXLSRModel that `distiller_local` loads."""
    model = DistilXLSRModel.from_pretrained(model_name_or_path)
    distiller = config_to_s3prl(model.config)  # before the weights: a config s3prl cannot represent fails first
    checkpoint = {
        "Config": {"distiller": distiller},
        "Distiller": state_dict_to_s3prl(model.state_dict(), model.config),
    }
    try:
        if Wav2Vec2FeatureExtractor.from_pretrained(model_name_or_path).do_normalize:
            logger.warning(
                "This model expects per-utterance normalised audio (its feature extractor has do_normalize=True); "
                "s3prl's distiller upstream feeds raw waveforms. Hidden states match for the same input values."
            )
    except OSError:
        pass  # no feature extractor saved with the model
    Path(output_s3prl_checkpoint).parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, output_s3prl_checkpoint)
    logger.info("Wrote %s", output_s3prl_checkpoint)
    return checkpoint


def write_model_card(output_dir: Path, source: str, distiller: dict, teacher: str | None) -> None:
    training_only = {field: distiller[field] for field in S3PRL_TRAINING_FIELDS if field in distiller}
    data = ModelCardData(library_name="transformers", tags=["audio", "distilhubert", "s3prl", "distillation"])
    body = f"""# DistilXLSRModel converted from the s3prl distiller checkpoint `{Path(source).name}`

A DistilHuBERT-style student (arXiv 2110.01900) trained with s3prl{f" from the teacher `{teacher}`" if teacher else ""},
converted by `convert_s3prl_checkpoint.py`: the same weights, and the same hidden states and layer predictions as
s3prl's `DistillerModel` on the same waveform. It predicts the teacher's layers {distiller.get("pred_layer_id")}.
Like s3prl, it reads raw 16 kHz waveforms (the feature extractor does not normalise them) and masks padding.

```python
from transformers import AutoModel, Wav2Vec2FeatureExtractor
model = AutoModel.from_pretrained("{output_dir}", trust_remote_code=True).eval()
inputs = Wav2Vec2FeatureExtractor.from_pretrained("{output_dir}")(waveforms, sampling_rate=16000, padding=True,
                                                                  return_tensors="pt")
outputs = model(**inputs, output_hidden_states=True)  # hidden_states, last_hidden_state, layer_predictions
```

s3prl's pre-training settings, which do not change the model's outputs and are not part of its config:
`{json.dumps(training_only)}`.

s3prl distiller config:

```json
{json.dumps(distiller, indent=2)}
```
"""
    write_card(output_dir, data, body)
