"""Turning a CTC speech recogniser into ONNX graphs for ONNX Runtime: fp32, and int8 (dynamic quantisation).

How: a DistilXLSR student is first turned into transformers' `Wav2Vec2ForCTC` (`to_wav2vec2()`); the weight norm of the
positional conv is folded into a plain weight (ONNX Runtime's quantiser refuses it otherwise); a layer-norm conv front
end is exported channels-last, as strided slices and one matrix product per layer (the `as_strided` windows of the
eager model do not export), so that int8 quantisation turns it into int8 GEMMs. Quantisation is ONNX Runtime's
dynamic quantisation of the matrix products (weights int8 per channel, activations quantised on the fly); the
convolutions left (the positional conv, a group-norm front end) stay fp32, since ONNX Runtime's int8 `ConvInteger`
measured slower than its fp32 `Conv` here.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import parametrize
from transformers import PreTrainedModel, Wav2Vec2Processor

from modeling_distilxlsr import DistilXLSRFeatureEncoder

from .decoding import frame_mask
from .inference import ONNXModelForCTC

# Files of a model folder that are not the processor's (beside weights, code and every `*_results.json`).
NOT_PROCESSOR_FILES = ("config.json", "trainer_state.json", "lm_info.json")


def exportable_model(model: PreTrainedModel) -> PreTrainedModel:
    """The CTC `model` as plain transformers modules in eval mode, fp32, ready for `torch.onnx.export`: a DistilXLSR
    student as `Wav2Vec2ForCTC`, the positional conv's weight norm folded, a layer-norm conv front end channels-last."""
    if hasattr(model, "to_wav2vec2"):  # a DistilXLSR student (also when loaded as remote code)
        model = model.to_wav2vec2()
    model = model.float().eval()
    backbone = model.base_model
    positional_conv = backbone.encoder.pos_conv_embed.conv
    if parametrize.is_parametrized(positional_conv, "weight"):
        parametrize.remove_parametrizations(positional_conv, "weight", leave_parametrized=True)
    elif hasattr(positional_conv, "weight_g"):  # the old `torch.nn.utils.weight_norm`
        torch.nn.utils.remove_weight_norm(positional_conv)
    if backbone.config.feat_extract_norm == "layer":
        front_end = DistilXLSRFeatureEncoder(backbone.config)
        front_end.load_state_dict(backbone.feature_extractor.state_dict())
        backbone.feature_extractor = front_end.eval()
    return model


def export(model: PreTrainedModel, path: Path, opset: int, with_attention_mask: bool) -> None:
    """Write `model` to `path` as ONNX with a dynamic batch size and length.

    torch's TorchScript-based exporter (`dynamo=False`): checked here on lengths from 401 to 60,000 samples. The
    `torch.export`-based one gave a graph whose channels-last front end emits one frame too few at some lengths
    (20,000 samples), with torch 2.13.
    """
    generator = torch.Generator().manual_seed(0)
    input_values = torch.randn(2, 16_000, generator=generator)
    attention_mask = torch.ones(2, 16_000, dtype=torch.long)
    attention_mask[1, 12_000:] = 0
    args, names = (input_values,), ["input_values"]
    if with_attention_mask:
        args, names = (input_values, attention_mask), names + ["attention_mask"]
    dynamic_axes = {name: {0: "batch", 1: "samples"} for name in names} | {"logits": {0: "batch", 1: "frames"}}
    with warnings.catch_warnings():  # the tracer's warnings about Python values in transformers' code
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """ONNX Runtime's dynamic int8 quantisation of the matrix products (weights per output channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fp32_path, int8_path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"], per_channel=True
    )


def save_processor_files(model_name_or_path: str, output_dir: Path) -> None:
    """The processor beside the ONNX model: a local folder's processor files and `language_model/` are copied as they
    are (so a `Wav2Vec2ProcessorWithLM` stays one); a Hub model's `Wav2Vec2Processor` is saved."""
    source = Path(model_name_or_path)
    if not source.is_dir():
        Wav2Vec2Processor.from_pretrained(model_name_or_path).save_pretrained(output_dir)
        return
    for file in source.iterdir():
        record = file.name in NOT_PROCESSOR_FILES or file.name.endswith("_results.json")
        if file.is_file() and file.suffix in (".json", ".txt") and not record:
            shutil.copy2(file, output_dir / file.name)
    if (source / "language_model").is_dir():
        shutil.copytree(source / "language_model", output_dir / "language_model", dirs_exist_ok=True)
    Wav2Vec2Processor.from_pretrained(output_dir)  # fails here, not at inference, if the processor is incomplete


def max_logit_difference(model: PreTrainedModel, output_dir: Path, file_name: str) -> float:
    """Largest |ONNX - PyTorch| logit over a padded batch of two lengths of noise."""
    generator = torch.Generator().manual_seed(1)
    input_values = torch.randn(2, 24_000, generator=generator)
    attention_mask = torch.ones(2, 24_000, dtype=torch.long)
    attention_mask[1, 17_000:] = 0
    input_values[1, 17_000:] = 0
    onnx_model = ONNXModelForCTC.from_pretrained(output_dir, file_name)
    with_mask = "attention_mask" in onnx_model.input_names
    with torch.inference_mode():
        reference = model(input_values, attention_mask=attention_mask if with_mask else None).logits
    logits = onnx_model(input_values, attention_mask).logits
    valid = frame_mask(model.config, attention_mask.sum(-1), logits.shape[1])
    return float(np.abs((logits - reference).numpy())[valid.numpy()].max())
