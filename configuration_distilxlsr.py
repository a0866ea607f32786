"""Configuration of DistilXLSR, a DistilHuBERT-style student of a wav2vec2 / XLSR-53 teacher."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, Wav2Vec2Config

# The wav2vec2 fields that fix the shape of the teacher's front end and transformer blocks. A student built from a
# teacher copies them, so the teacher's weights fit the student's modules one-to-one.
TEACHER_ARCHITECTURE_FIELDS = (
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "conv_dim",
    "conv_kernel",
    "conv_stride",
    "conv_bias",
    "feat_extract_norm",
    "feat_proj_layer_norm",
    "feat_extract_activation",
    "do_stable_layer_norm",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
)

# The fields that describe the distillation (the teacher and its layers, the heads' sizes), not the backbone.
DISTILLATION_FIELDS = (
    "teacher_layers",
    "student_layers",
    "teacher_hidden_size",
    "teacher_name_or_path",
    "prediction_head_inter_dim",
)

# The teacher's fields that a student of another width, depth or front end may set for itself (`from_teacher_config`
# overrides). The rest of TEACHER_ARCHITECTURE_FIELDS (activation, norms, kernels and strides: the frame rate) stay the
# teacher's, so that the student's frames align with the teacher's.
STUDENT_SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "conv_dim")


# The deepest encoder a config may ask for. The deepest published wav2vec2 / HuBERT models (XLS-R 1B and 2B, MMS-1B)
# have 48 layers; a config beyond this is a typo (100000 layers would allocate for minutes before failing).
MAX_HIDDEN_LAYERS = 64

# Size fields that must be positive integers, each read when the config has it (HuBERT's lacks the adapter's, say).
POSITIVE_SIZE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "mask_time_length",
    "mask_feature_length",
    "vocab_size",
    "teacher_hidden_size",
    "prediction_head_inter_dim",
)
CONV_FIELDS = ("conv_dim", "conv_kernel", "conv_stride")
PROBABILITY_FIELDS = (
    "hidden_dropout",
    "activation_dropout",
    "attention_dropout",
    "feat_proj_dropout",
    "final_dropout",
    "layerdrop",
    "mask_time_prob",
    "mask_feature_prob",
)


def check_architecture(config: Any) -> None:
    """
    The one check of a wav2vec2-family config (`DistilXLSRConfig`, transformers' `Wav2Vec2Config` or `HubertConfig`)
    before a model is built from it: positive sizes, a hidden size that the attention heads and the positional conv's
    groups divide, conv layer lists of one length, probabilities in [0, 1], at most `MAX_HIDDEN_LAYERS` layers.

    Raises `ValueError` whose message starts with the offending field, before any weight is allocated (a bad config
    otherwise ends in a `ZeroDivisionError`, `negative dimension`, `in_channels must be divisible by groups`, or an
    allocation of gigabytes).
    """

    def is_positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    for field in POSITIVE_SIZE_FIELDS:
        value = getattr(config, field, None)
        if value is not None and not is_positive_int(value):
            raise ValueError(f"{field} is {value!r}: it must be a positive integer.")
    if config.num_hidden_layers > MAX_HIDDEN_LAYERS:
        raise ValueError(
            f"num_hidden_layers is {config.num_hidden_layers}: at most {MAX_HIDDEN_LAYERS} layers are supported (the "
            "deepest published wav2vec2 / HuBERT models have 48)."
        )
    for divisor in ("num_attention_heads", "num_conv_pos_embedding_groups"):
        if config.hidden_size % getattr(config, divisor):
            raise ValueError(
                f"{divisor} is {getattr(config, divisor)}: it must divide hidden_size ({config.hidden_size})."
            )
    conv = {field: list(getattr(config, field)) for field in CONV_FIELDS}
    if not conv["conv_dim"] or len({len(values) for values in conv.values()}) != 1:
        lengths = ", ".join(f"{field} has {len(values)}" for field, values in conv.items())
        raise ValueError(f"conv_dim, conv_kernel and conv_stride need one entry per conv layer each ({lengths}).")
    for field, values in conv.items():
        if not all(is_positive_int(value) for value in values):
            raise ValueError(f"{field} is {values}: every entry must be a positive integer.")
    for field in PROBABILITY_FIELDS:
        value = getattr(config, field, None)
        if value is not None and not 0 <= value <= 1:
            raise ValueError(f"{field} is {value!r}: it must be in [0, 1].")


def check_student_layers(config: Any) -> None:
    """`student_layers`, when set, pairs one student layer (numbered from 1, at most `num_hidden_layers`) with each
    entry of `teacher_layers`. Raises `ValueError` naming the field."""
    if config.student_layers is None:
        return
    layers = check_teacher_layers(config.student_layers, config.num_hidden_layers, name="student_layers")
    if len(layers) != len(config.teacher_layers):
        raise ValueError(
            f"student_layers {layers}: one student layer per teacher layer is needed (teacher_layers "
            f"{list(config.teacher_layers)}), {len(config.teacher_layers)} in all."
        )
    config.student_layers = layers


def check_teacher_layers(
    teacher_layers: Any, teacher_depth: int | None = None, name: str = "teacher_layers"
) -> list[int]:
    """
    The one check of distilled layers: `teacher_layers` (a sequence, or comma-separated text such as "4,12") as a list
    of ints in the given order, each a transformer layer numbered from 1 (0 would be the conv features) and, with
    `teacher_depth`, at most that depth. A `name` holding "student" checks a student's layers (`student_layers`).

    Raises `ValueError` whose message starts with `name` (the config field, or a command-line flag).
    """
    try:
        items = teacher_layers.split(",") if isinstance(teacher_layers, str) else teacher_layers
        layers = [int(layer) for layer in items]
    except (TypeError, ValueError):
        layers = []
    kind = "student" if "student" in name else "teacher"
    if not layers or min(layers) < 1:
        raise ValueError(
            f"{name}: expects comma-separated {kind} layers numbered from 1 (e.g. 4,12), got {teacher_layers!r}"
        )
    too_deep = [layer for layer in layers if teacher_depth is not None and layer > teacher_depth]
    if too_deep:
        raise ValueError(
            f"{name} {layers}: layer(s) {too_deep} do not exist: the {kind} has only {teacher_depth} layers, numbered 1..{teacher_depth} (0 would be the convolutional features)."
        )
    return layers


@strict
class DistilXLSRConfig(Wav2Vec2Config):
    r"""
    Configuration of a [`DistilXLSRModel`]: a shallow wav2vec2 encoder with one prediction head per distilled teacher
    layer (DistilHuBERT, arXiv 2110.01900). Every architecture field of [`~transformers.Wav2Vec2Config`] keeps its name
    and meaning; the defaults describe the default student of `facebook/wav2vec2-large-xlsr-53`: its conv front end and
    transformer block shape with 2 layers, predicting teacher layers 4 and 12 (the seed model `distilxlsr_bp_4-12`).

    Args:
        teacher_layers (`list[int]`, *optional*, defaults to `[4, 12]`):
            Indices into the teacher's `hidden_states` (0 is the input of its first transformer layer, `i` the output
            of layer `i`) that the prediction heads learn to predict, one head per entry.
        student_layers (`list[int]`, *optional*):
            Layer-to-layer distillation (FitHuBERT, arXiv 2207.00555): the student layer (numbered from 1) whose output
            each prediction head reads, one per `teacher_layers` entry. `None` (the default) puts every head on the
            last layer, as DistilHuBERT does. A head on the last layer reads `last_hidden_state` (after the final
            LayerNorm of stable-layer-norm encoders); one on an earlier layer reads that layer's output.
        teacher_hidden_size (`int`, *optional*):
            Width of the teacher's hidden states, the output size of each prediction head. Defaults to `hidden_size`.
        teacher_name_or_path (`str`, *optional*, defaults to `"facebook/wav2vec2-large-xlsr-53"`):
            The teacher this student is distilled from; recorded for model cards and for `train_distill.py`.
        prediction_head_inter_dim (`int`, *optional*):
            Width of the hidden layer inside each prediction head. Defaults to `hidden_size`.
        feat_proj_layer_norm (`bool`, *optional*, defaults to `True`):
            Whether the conv features pass through a LayerNorm before the feature projection, as in wav2vec2 and
            HuBERT. `False` is s3prl's distiller (DistilHuBERT), the same switch as transformers' `HubertConfig`.
        kwargs:
            Any [`~transformers.Wav2Vec2Config`] field (`hidden_size`, `num_hidden_layers`, `conv_dim`, the dropouts,
            SpecAugment masking, `vocab_size`, `pad_token_id`, `ctc_loss_reduction`, `ctc_zero_infinity`, ...).

    Example:

    ```python
    >>> from transformers import AutoConfig
    >>> from configuration_distilxlsr import DistilXLSRConfig
    >>> teacher_config = AutoConfig.from_pretrained("facebook/wav2vec2-large-xlsr-53")
    >>> config = DistilXLSRConfig.from_teacher_config(teacher_config, num_hidden_layers=2, teacher_layers=(4, 12))
    ```
    """

    model_type = "distilxlsr"

    # Student defaults: XLSR-53's block shape (BRIEF §2) with 2 layers, and s3prl's distiller settings (layerdrop 0).
    hidden_size: int = 1024
    num_hidden_layers: int = 2
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    layerdrop: float | int = 0.0
    feat_extract_norm: str = "layer"
    conv_bias: bool = True
    do_stable_layer_norm: bool = True
    mask_time_prob: float | int = 0.075
    ctc_loss_reduction: str = "mean"

    teacher_layers: list[int] | tuple[int, ...] = (4, 12)
    student_layers: list[int] | tuple[int, ...] | None = None
    teacher_hidden_size: int | None = None
    teacher_name_or_path: str | None = "facebook/wav2vec2-large-xlsr-53"
    prediction_head_inter_dim: int | None = None
    feat_proj_layer_norm: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        self.teacher_layers = check_teacher_layers(self.teacher_layers)
        self.teacher_hidden_size = self.teacher_hidden_size or self.hidden_size
        self.prediction_head_inter_dim = self.prediction_head_inter_dim or self.hidden_size
        # A plain `ValueError` naming the field, as for `teacher_layers` (`validate()`, which `@strict` runs next, wraps
        # its errors in huggingface_hub's `StrictDataclassClassValidationError`).
        check_architecture(self)
        check_student_layers(self)
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Part of `@strict`-powered validation (`validate()`, also run by `save_pretrained`): wav2vec2's own check
        and `check_architecture`, so that a config edited after construction is checked too."""
        super().validate_architecture()
        check_architecture(self)
        check_student_layers(self)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> DistilXLSRConfig:
        """transformers' `from_dict`; the config of a plain wav2vec2 / HuBERT backbone (another `model_type`, such as
        `lgris/distilxlsr_bp_4-12` or `ntu-spml/distilhubert`) records no distillation, so its teacher layers must be
        given (`teacher_layers=...`, also `teacher_name_or_path`, `teacher_hidden_size`): never the defaults."""
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            if kwargs.get("teacher_layers") is None:
                raise ValueError(
                    f"A `{model_type}` config (a plain backbone, no prediction heads) does not say which teacher "
                    "layers a DistilXLSR student predicts: pass teacher_layers=[...] (and teacher_name_or_path, "
                    "teacher_hidden_size) to load it as one."
                )
            recipe = {name: kwargs.pop(name, None) for name in DISTILLATION_FIELDS}
            config_dict = {**config_dict, **recipe}  # teacher_name_or_path: the given one or None, never XLSR-53
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_teacher_config(
        cls,
        teacher_config: Wav2Vec2Config | Any,
        num_hidden_layers: int = 2,
        teacher_layers: list[int] | tuple[int, ...] = (4, 12),
        **overrides: Any,
    ) -> DistilXLSRConfig:
        """
        Student config with a wav2vec2 / HuBERT teacher's design (front end, norms, kernels and strides, so the
        frames align) and, by default, its width: DistilHuBERT's student, the teacher with `num_hidden_layers` layers.

        `overrides` may set any config field, among them the student's own shape (`STUDENT_SHAPE_FIELDS`): a
        `hidden_size` given without `intermediate_size` or `num_attention_heads` keeps the teacher's feed-forward
        ratio and head width (XLSR-53: 4x and 64), and `conv_dim` may be one int, that many channels in every conv
        layer. The prediction heads always map to the teacher's width.

        Raises `ValueError` when a teacher layer lies beyond the teacher's depth, when the conv kernels or strides
        differ from the teacher's (the frames would not align), or when a student of the teacher's block shape is
        deeper than the teacher (its layers are copied from the teacher's first ones).
        """
        teacher_depth = teacher_config.num_hidden_layers
        teacher_layers = check_teacher_layers(teacher_layers, teacher_depth)
        # HuBERT's front end has no `feat_extract_activation` field in older configs; wav2vec2's default is gelu.
        architecture = {
            name: getattr(teacher_config, name) for name in TEACHER_ARCHITECTURE_FIELDS if hasattr(teacher_config, name)
        }
        hidden_size = overrides.get("hidden_size", teacher_config.hidden_size)
        if hidden_size != teacher_config.hidden_size:
            architecture["intermediate_size"] = (
                hidden_size * teacher_config.intermediate_size // teacher_config.hidden_size
            )
            head_width = teacher_config.hidden_size // teacher_config.num_attention_heads
            architecture["num_attention_heads"] = max(hidden_size // head_width, 1)
        if isinstance(overrides.get("conv_dim"), int):
            overrides["conv_dim"] = [overrides["conv_dim"]] * len(teacher_config.conv_dim)
        kwargs = {
            **architecture,
            "num_hidden_layers": num_hidden_layers,
            "teacher_layers": list(teacher_layers),
            "teacher_hidden_size": teacher_config.hidden_size,
            "teacher_name_or_path": getattr(teacher_config, "_name_or_path", None) or None,
            **overrides,
        }
        for field in ("conv_kernel", "conv_stride"):
            if list(kwargs[field]) != list(getattr(teacher_config, field)):
                raise ValueError(
                    f"{field} is {kwargs[field]}: a student keeps the teacher's conv kernels and strides "
                    f"({list(getattr(teacher_config, field))}), so that its frames align with the teacher's."
                )
        block_shape = ("hidden_size", "intermediate_size", "num_attention_heads")
        if kwargs["num_hidden_layers"] > teacher_depth and all(
            kwargs[field] == getattr(teacher_config, field) for field in block_shape
        ):
            raise ValueError(
                f"num_hidden_layers={kwargs['num_hidden_layers']} exceeds the teacher's {teacher_depth} layers; a "
                "student of the teacher's width has its layers initialised from the teacher's first layers."
            )
        return cls(**kwargs)


# Remote code: `save_pretrained` writes this class into the config's `auto_map`; locally, AutoConfig knows the type.
DistilXLSRConfig.register_for_auto_class()
AutoConfig.register("distilxlsr", DistilXLSRConfig, exist_ok=True)

__all__ = [
    "DISTILLATION_FIELDS",
    "MAX_HIDDEN_LAYERS",
    "STUDENT_SHAPE_FIELDS",
    "DistilXLSRConfig",
    "check_architecture",
    "check_student_layers",
    "check_teacher_layers",
]
