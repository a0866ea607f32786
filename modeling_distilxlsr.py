"""DistilXLSR: a DistilHuBERT-style student of XLSR-53, built from transformers' own wav2vec2 blocks.

Read top to bottom:
1. `DistilXLSRFeatureEncoder`: wav2vec2's conv front end with the same weights, computed channels-last (faster).
2. `DistilXLSRPredictionHead`: the small MLP that maps the student's last hidden state to one teacher layer.
3. `DistilXLSRModel`: wav2vec2's conv front end, feature projection and a small transformer encoder (the exact
   transformers modules, so weights and numerics are wav2vec2's), plus one prediction head per distilled teacher layer,
   on the last student layer (DistilHuBERT) or each on a chosen one (layer-to-layer). The student's width, depth and
   conv channels are its own; `from_teacher` copies the teacher's weights where the shapes fit; `to_wav2vec2` exports
   it to a plain `Wav2Vec2Model`.
4. `DistilXLSRForCTC`: the student with a linear CTC head for speech recognition.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCTC,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    Wav2Vec2Model,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutput
from transformers.models.wav2vec2.modeling_wav2vec2 import (
    Wav2Vec2Encoder,
    Wav2Vec2EncoderStableLayerNorm,
    Wav2Vec2FeatureEncoder,
    Wav2Vec2FeatureProjection,
    Wav2Vec2LayerNormConvLayer,
    Wav2Vec2PreTrainedModel,
)
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

try:  # imported as part of a package: remote code (`trust_remote_code=True`) copies both files side by side
    from .configuration_distilxlsr import (
        DISTILLATION_FIELDS,
        DistilXLSRConfig,
        check_architecture,
    )
except ImportError:  # imported as a top-level module from a checkout of this project
    from configuration_distilxlsr import (
        DISTILLATION_FIELDS,
        DistilXLSRConfig,
        check_architecture,
    )

logger = logging.get_logger(__name__)


@dataclass
class DistilXLSROutput(ModelOutput):
    """
    Output of [`DistilXLSRModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, frames, hidden_size)`):
            The student encoder's output (after the final LayerNorm for stable-layer-norm architectures).
        layer_predictions (`tuple(torch.FloatTensor)`, one per `config.teacher_layers` entry):
            Each of shape `(batch_size, frames, teacher_hidden_size)`: the prediction of that teacher layer's hidden
            states. `None` when the model was built without prediction heads or called with
            `return_layer_predictions=False`.
        extract_features (`torch.FloatTensor` of shape `(batch_size, frames, conv_dim[-1])`):
            The normalised conv features that enter the feature projection.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Returned with `output_hidden_states=True`: the input of the first transformer layer, then each layer's
            output, as in transformers' `Wav2Vec2Model`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Returned with `output_attentions=True` (needs `attn_implementation="eager"`).
    """

    last_hidden_state: torch.FloatTensor | None = None
    layer_predictions: tuple[torch.FloatTensor, ...] | None = None
    extract_features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class DistilXLSRConvLayer(Wav2Vec2LayerNormConvLayer):
    """
    wav2vec2's conv -> LayerNorm -> GELU block with the same weights. With `channels_last=True` it is computed on
    `[batch, time, channels]` tensors; without, it is transformers' own channels-first code (cuDNN's `Conv1d` on a GPU).

    transformers' block works channels-first and transposes around its LayerNorm; on a CPU those transposing copies
    cost as much as the convolutions. Channels-last, the strided windows of one utterance are a view of its memory
    (`as_strided`, no im2col copy), the convolution is a single matrix product, and the LayerNorm needs no transpose:
    the same numbers, about 1.8x faster on 2 CPU cores (bench.py).
    """

    def forward(self, hidden_states: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        if not channels_last:
            return super().forward(hidden_states)
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        weight = self.conv.weight.permute(2, 1, 0).reshape(kernel * self.conv.in_channels, -1)  # rows (tap, channel)
        if torch.jit.is_tracing() or torch.compiler.is_exporting():  # as slices: `as_strided` does not export
            frames = (hidden_states.shape[1] - kernel) // stride + 1
            taps = [hidden_states[:, tap::stride].narrow(1, 0, frames) for tap in range(kernel)]
            hidden_states = torch.cat(taps, dim=-1) @ weight
            if self.conv.bias is not None:
                hidden_states = hidden_states + self.conv.bias
            return self.activation(self.layer_norm(hidden_states))
        hidden_states = hidden_states.contiguous()
        batch_size, length, channels = hidden_states.shape
        frames = (length - kernel) // stride + 1
        outputs = []
        for utterance in hidden_states:
            windows = utterance.as_strided(
                (frames, kernel * channels), (stride * channels, 1), utterance.storage_offset()
            )
            outputs.append(windows @ weight if self.conv.bias is None else torch.addmm(self.conv.bias, windows, weight))
        hidden_states = outputs[0][None] if batch_size == 1 else torch.stack(outputs)
        return self.activation(self.layer_norm(hidden_states))


class DistilXLSRFeatureEncoder(Wav2Vec2FeatureEncoder):
    """
    transformers' `Wav2Vec2FeatureEncoder` (same submodules and weights, same `[batch, channels, frames]` output) whose
    layer-norm conv blocks run channels-last on a CPU ([`DistilXLSRConvLayer`]). On other devices (a GPU: cuDNN's
    `Conv1d`) and for group-norm front ends (wav2vec2-base, HuBERT) it runs transformers' code unchanged.
    """

    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        self.channels_last = config.feat_extract_norm == "layer"
        if self.channels_last:
            self.conv_layers = nn.ModuleList(
                DistilXLSRConvLayer(config, layer_id=i) for i in range(config.num_feat_extract_layers)
            )

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if not self.channels_last or input_values.device.type != "cpu":
            return super().forward(input_values)
        hidden_states = input_values[:, :, None]
        if self._requires_grad and self.training:  # as transformers does, for activation checkpointing
            hidden_states.requires_grad = True
        for conv_layer in self.conv_layers:
            hidden_states = conv_layer(hidden_states, channels_last=True)
        return hidden_states.transpose(1, 2)  # a view: the caller's transpose back to channels-last is free


class DistilXLSRFeatureProjection(Wav2Vec2FeatureProjection):
    """wav2vec2's feature projection; without its LayerNorm when `config.feat_proj_layer_norm` is False (s3prl's
    distiller, transformers' HuBERT switch)."""

    def __init__(self, config: DistilXLSRConfig):
        super().__init__(config)
        if not config.feat_proj_layer_norm:
            self.layer_norm = nn.Identity()


class DistilXLSRPredictionLinear(nn.Linear):
    """A prediction head's Linear: PyTorch's default init (as s3prl's distiller), not wav2vec2's normal(0, 0.02)."""


class DistilXLSRPredictionHead(nn.Module):
    """
    Predicts one teacher layer from the student's last hidden state: Linear -> GELU -> Linear. s3prl's distiller packs
    the heads of all its teacher layers into one `Linear(D, inter * N) -> GELU -> SplitLinear(inter, N, final_dim)`;
    head `i` here is exactly slice `i` of it (convert_s3prl_checkpoint.py).
    """

    def __init__(self, config: DistilXLSRConfig):
        super().__init__()
        self.dense = DistilXLSRPredictionLinear(config.hidden_size, config.prediction_head_inter_dim)
        self.activation = ACT2FN["gelu"]
        self.output = DistilXLSRPredictionLinear(config.prediction_head_inter_dim, config.teacher_hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output(self.activation(self.dense(hidden_states)))


@contextmanager
def recorded_layer_outputs(layers: dict[int, nn.Module]) -> Iterator[dict[int, torch.Tensor]]:
    """The outputs of the given encoder layers (by number) during the `with` block, through forward hooks, the way
    transformers' own output capture records `hidden_states`."""
    outputs: dict[int, torch.Tensor] = {}

    def keep(number: int, output: torch.Tensor | tuple) -> None:
        outputs[number] = output[0] if isinstance(output, tuple) else output

    handles = [
        layer.register_forward_hook(lambda _module, _args, output, number=number: keep(number, output))
        for number, layer in layers.items()
    ]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class DistilXLSRPreTrainedModel(Wav2Vec2PreTrainedModel):
    """Weight init, conv length arithmetic, SDPA and activation checkpointing support, all inherited from wav2vec2."""

    config: DistilXLSRConfig
    config_class = DistilXLSRConfig
    base_model_prefix = "distilxlsr"

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DistilXLSRModel) and module.masked_spec_embed is not None:
            init.uniform_(module.masked_spec_embed)
        elif isinstance(module, DistilXLSRPredictionLinear):
            # PyTorch's default Linear init, as s3prl's heads: they start with the output scale of what they read.
            # (On the Linear itself: transformers 5 skips `_init_weights` for modules without parameters of their own.)
            bound = 1 / math.sqrt(module.in_features)
            init.uniform_(module.weight, -bound, bound)
            init.uniform_(module.bias, -bound, bound)


class DistilXLSRModel(DistilXLSRPreTrainedModel):
    """
    The DistilXLSR student: wav2vec2's conv feature encoder (run channels-last, [`DistilXLSRFeatureEncoder`]) and
    feature projection, a `num_hidden_layers`-deep wav2vec2 transformer encoder, and one [`DistilXLSRPredictionHead`]
    per entry of `config.teacher_layers`, reading the last layer or, with `config.student_layers`, its own layer.

    Submodule names match transformers' `Wav2Vec2Model`, so the backbone's state dict is a `Wav2Vec2Model`'s
    ([`~DistilXLSRModel.to_wav2vec2`]). Inside a padded batch with `attention_mask`, an utterance's outputs equal its
    outputs alone for `feat_extract_norm="layer"` front ends (XLSR-53's); a `"group"` front end normalises over the
    padding, as in transformers.
    """

    def __init__(self, config: DistilXLSRConfig, add_prediction_heads: bool = True):
        check_architecture(config)  # again: a config edited after construction, before any weight is allocated
        super().__init__(config)
        self.feature_extractor = DistilXLSRFeatureEncoder(config)
        self.feature_projection = DistilXLSRFeatureProjection(config)
        # SpecAugment's learned mask vector, as in Wav2Vec2Model (only when masking is configured)
        self.masked_spec_embed = None
        if config.mask_time_prob > 0.0 or config.mask_feature_prob > 0.0:
            self.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size).uniform_())
        encoder_class = Wav2Vec2EncoderStableLayerNorm if config.do_stable_layer_norm else Wav2Vec2Encoder
        self.encoder = encoder_class(config)
        self.prediction_heads = None
        if add_prediction_heads:
            self.prediction_heads = nn.ModuleList(DistilXLSRPredictionHead(config) for _ in config.teacher_layers)
            if config.student_layers is not None and config.layerdrop > 0:
                raise ValueError(
                    f"layerdrop is {config.layerdrop}: with student_layers, every layer a prediction head reads must "
                    "run (set layerdrop to 0 for distillation)."
                )
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' `from_pretrained`, which also says plainly (a warning) when the folder has no prediction heads
        (a plain `Wav2Vec2Model` / `HubertModel`, such as `lgris/distilxlsr_bp_4-12`): its backbone is loaded and the
        heads start from random weights. Such a folder needs `teacher_layers=...` (`DistilXLSRConfig.from_dict`)."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        new_heads = sorted(key for key in info["missing_keys"] if key.startswith("prediction_heads."))
        if new_heads:
            logger.warning(
                "%s has no prediction heads (%d weights missing, e.g. %s): its backbone is loaded, and the heads "
                "for teacher layers %s are NEW, randomly initialised; distil them before using layer_predictions.",
                pretrained_model_name_or_path, len(new_heads), new_heads[0], model.config.teacher_layers,
            )  # fmt: skip
        return (model, info) if output_loading_info else model

    # SpecAugment exactly as transformers' Wav2Vec2Model applies it.
    _mask_hidden_states = Wav2Vec2Model._mask_hidden_states

    def freeze_feature_encoder(self) -> None:
        """Stop gradient updates of the conv feature encoder (train_distill's fast path, CTC fine-tuning)."""
        self.feature_extractor._freeze_parameters()

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        conv_features: torch.Tensor | None = None,
        return_layer_predictions: bool = True,
        **kwargs: Unpack[TransformersKwargs],
    ) -> DistilXLSROutput:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, samples)`):
                16 kHz mono audio, normalised per utterance (`Wav2Vec2FeatureExtractor` does this).
            attention_mask (`torch.LongTensor` of shape `(batch_size, samples)`, *optional*):
                1 for real samples, 0 for padding.
            mask_time_indices (`torch.BoolTensor` of shape `(batch_size, frames)`, *optional*):
                Frames to replace by the learned mask vector (SpecAugment), as in `Wav2Vec2Model`.
            conv_features (`torch.FloatTensor` of shape `(batch_size, conv_dim[-1], frames)`, *optional*):
                Output of a conv feature encoder identical to this one (a frozen copy shared with the teacher), given
                instead of running `self.feature_extractor`; `input_values` is then only needed for nothing.
            return_layer_predictions (`bool`, defaults to `True`):
                Run the prediction heads. Off, the forward costs exactly a `Wav2Vec2Model`'s.
        """
        if conv_features is None and self._get_feat_extract_output_lengths(input_values.shape[-1]) < 1:
            return self._no_frames_output(input_values, return_layer_predictions)
        if conv_features is None:
            conv_features = self.feature_extractor(input_values)
        extract_features = conv_features.transpose(1, 2)
        if attention_mask is not None:
            attention_mask = self._get_feature_vector_attention_mask(
                extract_features.shape[1], attention_mask, add_adapter=False
            )
        hidden_states, extract_features = self.feature_projection(extract_features)
        hidden_states = self._mask_hidden_states(
            hidden_states, mask_time_indices=mask_time_indices, attention_mask=attention_mask
        )
        predict = return_layer_predictions and self.prediction_heads is not None
        with recorded_layer_outputs(self.read_layers() if predict else {}) as layer_outputs:
            hidden_states = self.encoder(hidden_states, attention_mask=attention_mask, **kwargs).last_hidden_state

        layer_predictions = None
        if predict:
            layer_outputs[self.config.num_hidden_layers] = hidden_states  # the last layer: after any final LayerNorm
            head_inputs = self.config.student_layers or [self.config.num_hidden_layers] * len(self.prediction_heads)
            layer_predictions = tuple(
                head(layer_outputs[layer]) for head, layer in zip(self.prediction_heads, head_inputs)
            )
        return DistilXLSROutput(
            last_hidden_state=hidden_states, layer_predictions=layer_predictions, extract_features=extract_features
        )

    def read_layers(self) -> dict[int, nn.Module]:
        """The encoder layers, by number, whose outputs prediction heads read before the last (layer-to-layer)."""
        layers = set(self.config.student_layers or []) - {self.config.num_hidden_layers}
        return {number: self.encoder.layers[number - 1] for number in sorted(layers)}

    def _no_frames_output(self, input_values: torch.Tensor, return_layer_predictions: bool) -> DistilXLSROutput:
        """The output for inputs shorter than the receptive field: zero frames (so a pipeline's text is empty), and a
        warning; the conv front end cannot run on them (wav2vec2 raises an IndexError)."""
        logger.warning(
            "An input of %d samples is shorter than the model's receptive field (%d samples): no frames, no text.",
            input_values.shape[-1],
            min_samples_for_frames(self.config),
        )
        hidden_states = input_values.new_zeros(input_values.shape[0], 0, self.config.hidden_size)
        layer_predictions = None
        if return_layer_predictions and self.prediction_heads is not None:
            layer_predictions = tuple(head(hidden_states) for head in self.prediction_heads)
        return DistilXLSROutput(
            last_hidden_state=hidden_states,
            layer_predictions=layer_predictions,
            extract_features=input_values.new_zeros(input_values.shape[0], 0, self.config.conv_dim[-1]),
        )

    @classmethod
    def from_teacher(
        cls, teacher: PreTrainedModel, config: DistilXLSRConfig | None = None, **config_overrides
    ) -> "DistilXLSRModel":
        """
        A student initialised from a transformers `Wav2Vec2Model` / `HubertModel` teacher (or a `*ForPreTraining` /
        `*ForCTC` wrapping one), as s3prl's `init_teacher_conv_layers` and `init_teacher_encoder_layers` do, wherever
        the shapes fit ([`teacher_parts_that_fit`]): the conv feature encoder, the feature projection, the positional
        conv embedding, the encoder LayerNorm and the first `num_hidden_layers` transformer layers. A student of the
        teacher's shape (the default) gets them all, and right after, its `hidden_states[0..N]` equal the teacher's on
        the same input. A part of another shape (a narrower or thinner student) starts from random weights, as
        FitHuBERT's students do, and the log says which. The prediction heads start random.

        Without `config`, one is built by `DistilXLSRConfig.from_teacher_config(teacher.config, **config_overrides)`.
        Raises `ValueError` when the student's frames would not align with the teacher's (other conv kernels or
        strides), or when its heads' width is not the teacher's.
        """
        teacher = teacher.base_model  # unwraps *ForPreTraining / *ForCTC
        if config is None:
            config = DistilXLSRConfig.from_teacher_config(teacher.config, **config_overrides)
        for field in ("conv_kernel", "conv_stride"):
            if _as_list(getattr(config, field)) != _as_list(getattr(teacher.config, field)):
                raise ValueError(
                    f"Cannot distil this student from the teacher: `{field}` is {getattr(config, field)} in the student "
                    f"config but {getattr(teacher.config, field)} in the teacher's, so their frames would not align."
                )
        if config.teacher_hidden_size != teacher.config.hidden_size:
            raise ValueError(
                f"`teacher_hidden_size` is {config.teacher_hidden_size} but the teacher's `hidden_size` is "
                f"{teacher.config.hidden_size}."
            )
        parts = teacher_parts_that_fit(config, teacher.config)
        if "encoder.layers" in parts and config.num_hidden_layers > len(teacher.encoder.layers):
            raise ValueError(
                f"Cannot initialise the student from the teacher: `num_hidden_layers` is {config.num_hidden_layers} "
                f"but the teacher has only {len(teacher.encoder.layers)} layers."
            )

        student = cls(config).to(device=teacher.device, dtype=teacher.dtype)
        for part in parts:
            if part == "encoder.layers":
                for student_layer, teacher_layer in zip(student.encoder.layers, teacher.encoder.layers):
                    student_layer.load_state_dict(teacher_layer.state_dict())
            else:
                student.get_submodule(part).load_state_dict(teacher.get_submodule(part).state_dict())
        if student.masked_spec_embed is not None and getattr(teacher, "masked_spec_embed", None) is not None:
            if student.masked_spec_embed.shape == teacher.masked_spec_embed.shape:
                student.masked_spec_embed.data.copy_(teacher.masked_spec_embed.data)
        random_parts = [part for part in TEACHER_PARTS if part not in parts]
        if random_parts:
            logger.warning(
                "The student's shape differs from the teacher's: copied from the teacher: %s; random weights (learnt "
                "in distillation): %s.", ", ".join(parts) or "nothing", ", ".join(random_parts),
            )  # fmt: skip
        return student

    def to_wav2vec2(self) -> Wav2Vec2Model:
        """This student's backbone as a plain transformers `Wav2Vec2Model` (no remote code needed to load it)."""
        wav2vec2 = Wav2Vec2Model(wav2vec2_config(self.config)).to(device=self.device, dtype=self.dtype)
        backbone = {k: v for k, v in self.state_dict().items() if not k.startswith("prediction_heads.")}
        wav2vec2.load_state_dict(backbone, strict=True)
        return wav2vec2.eval() if not self.training else wav2vec2


class DistilXLSRForCTC(DistilXLSRPreTrainedModel):
    """
    The DistilXLSR student with dropout and a linear CTC head (`vocab_size` outputs, blank = `pad_token_id`), the
    counterpart of transformers' `Wav2Vec2ForCTC`. Loading it from a distilled student keeps the backbone and drops the
    prediction heads, which CTC fine-tuning does not use.
    """

    def __init__(self, config: DistilXLSRConfig):
        super().__init__(config)
        self.distilxlsr = DistilXLSRModel(config, add_prediction_heads=False)
        self.dropout = nn.Dropout(config.final_dropout)
        if config.vocab_size is None:
            raise ValueError("DistilXLSRForCTC needs `config.vocab_size` (the tokenizer's vocabulary size).")
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def freeze_feature_encoder(self) -> None:
        """Stop gradient updates of the conv feature encoder (the usual setting for CTC fine-tuning)."""
        self.distilxlsr.freeze_feature_encoder()

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutput:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(batch_size, target_length)`, *optional*):
                Character ids of the transcription, padded with -100. With labels the CTC loss is returned.
        """
        if labels is not None and labels.max() >= self.config.vocab_size:
            raise ValueError(f"Label values must be < vocab_size ({self.config.vocab_size}), got {labels.max()}.")
        outputs = self.distilxlsr(input_values, attention_mask=attention_mask, **kwargs)
        logits = self.lm_head(self.dropout(outputs.last_hidden_state))

        loss = None
        if labels is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_values, dtype=torch.long)
            logit_lengths = self._get_feat_extract_output_lengths(attention_mask.sum(-1)).to(torch.long)
            loss = self.loss_function(
                logits=logits,
                labels=labels,
                logit_lengths=logit_lengths,
                blank_token_id=self.config.pad_token_id,
                reduction=self.config.ctc_loss_reduction,
                zero_infinity=self.config.ctc_zero_infinity,
            )
        return CausalLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def to_wav2vec2(self) -> Wav2Vec2ForCTC:
        """This model as a plain transformers `Wav2Vec2ForCTC` (no remote code needed to load it)."""
        wav2vec2 = Wav2Vec2ForCTC(wav2vec2_config(self.config)).to(device=self.device, dtype=self.dtype)
        state_dict = {k.replace("distilxlsr.", "wav2vec2.", 1): v for k, v in self.state_dict().items()}
        wav2vec2.load_state_dict(state_dict, strict=True)
        return wav2vec2.eval() if not self.training else wav2vec2

    @classmethod
    def from_wav2vec2(cls, wav2vec2: Wav2Vec2ForCTC) -> "DistilXLSRForCTC":
        """A transformers `Wav2Vec2ForCTC` in this class, with its config fields and weights (the inverse of
        `to_wav2vec2`); its conv front end then runs channels-last, which trains faster on a CPU."""
        fields = {k: v for k, v in wav2vec2.config.to_dict().items() if k not in ("model_type", "architectures")}
        config = DistilXLSRConfig(**fields, teacher_name_or_path=None)
        model = cls(config).to(device=wav2vec2.device, dtype=wav2vec2.dtype)
        state_dict = {k.replace("wav2vec2.", "distilxlsr.", 1): v for k, v in wav2vec2.state_dict().items()}
        model.load_state_dict(state_dict, strict=True)
        return model.eval() if not wav2vec2.training else model


# The teacher's parts a student can start from, and the config fields that must be equal for each to fit.
_CONV_FIELDS = ("conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "feat_extract_activation")
TEACHER_PARTS = {
    "feature_extractor": _CONV_FIELDS,
    "feature_projection": (*_CONV_FIELDS, "hidden_size", "feat_proj_layer_norm"),
    "encoder.pos_conv_embed": ("hidden_size", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups"),
    "encoder.layer_norm": ("hidden_size", "do_stable_layer_norm"),
    "encoder.layers": ("hidden_size", "intermediate_size", "num_attention_heads", "hidden_act", "do_stable_layer_norm"),
}


def teacher_parts_that_fit(config: Wav2Vec2Config, teacher_config: Wav2Vec2Config) -> list[str]:
    """The `TEACHER_PARTS` whose weights a student of `config` can copy from a teacher of `teacher_config`: those
    whose fields are equal in both (a field the teacher's config lacks, such as an old HuBERT's activation, counts
    as equal)."""
    missing = object()

    def equal(field: str) -> bool:
        teacher_value = getattr(teacher_config, field, missing)
        return teacher_value is missing or _as_list(getattr(config, field)) == _as_list(teacher_value)

    return [part for part, fields in TEACHER_PARTS.items() if all(equal(field) for field in fields)]


def min_samples_for_frames(config: Wav2Vec2Config, frames: int = 1) -> int:
    """Fewest input samples for which the conv feature encoder of `config` emits `frames` frames.

    `frames=1` gives the receptive field: 400 samples (25 ms at 16 kHz) for wav2vec2 / XLSR-53.
    """
    receptive_field, hop = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        receptive_field += (kernel - 1) * hop
        hop *= stride
    return receptive_field + (max(frames, 1) - 1) * hop


def wav2vec2_config(config: DistilXLSRConfig) -> Wav2Vec2Config:
    """The plain `Wav2Vec2Config` of a student's backbone: every field but the distillation ones."""
    if not config.feat_proj_layer_norm:
        raise ValueError(
            "This student has no LayerNorm before its feature projection (feat_proj_layer_norm=False, s3prl's "
            "layout), which transformers' Wav2Vec2Model always has: it cannot be exported as one."
        )
    fields = {k: v for k, v in config.to_dict().items() if k not in DISTILLATION_FIELDS}
    fields.pop("feat_proj_layer_norm", None)
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        fields.pop(key, None)
    wav2vec2 = Wav2Vec2Config(**fields)
    wav2vec2._attn_implementation = config._attn_implementation
    return wav2vec2


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


# Remote code: `save_pretrained` writes an `auto_map` and copies this file and the config's next to the weights.
DistilXLSRModel.register_for_auto_class("AutoModel")
DistilXLSRForCTC.register_for_auto_class("AutoModelForCTC")
# Local use (this checkout on sys.path): the Auto classes know the model type without remote code.
AutoModel.register(DistilXLSRConfig, DistilXLSRModel, exist_ok=True)
AutoModelForCTC.register(DistilXLSRConfig, DistilXLSRForCTC, exist_ok=True)

__all__ = [
    "DistilXLSRFeatureEncoder",
    "DistilXLSRForCTC",
    "DistilXLSRModel",
    "DistilXLSROutput",
    "DistilXLSRPreTrainedModel",
    "teacher_parts_that_fit",
]
