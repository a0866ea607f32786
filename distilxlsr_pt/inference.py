"""Cheap CTC inference: one call that turns audio into text with a PyTorch model (fp32 or bf16) or with an ONNX model
written by export_onnx.py (fp32 or int8, run by ONNX Runtime).

    from distilxlsr_pt.inference import load_recognizer

    asr = load_recognizer("outputs/student-ctc-onnx", backend="onnx", dtype="int8")  # model_int8.onnx
    asr = load_recognizer("outputs/student-ctc", backend="torch", dtype="bf16")      # weights cast to bfloat16
    asr("clip.wav")                # {"text": "..."}; also a 16 kHz float array, or a list of either
    asr(["a.wav", "b.wav"], batch_size=2)

Decoding is greedy, or beam search with the n-gram LM when the model folder has `language_model/` (pyctcdecode,
through transformers' `Wav2Vec2ProcessorWithLM`; `decoder="greedy"` turns it off), by `decoding`'s decoders, with its
transcript convention. This module is the cheap entry point: neither it nor the project code it uses imports
accelerate, datasets or the Trainer (tests/test_layout.py checks; transformers' own modeling code still imports
accelerate when it is installed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, PretrainedConfig, Wav2Vec2Processor, Wav2Vec2ProcessorWithLM
from transformers.modeling_outputs import CausalLMOutput

from .audio import AudioSource, load_audio
from .decoding import greedy_transcripts, lm_transcripts, unpadded_logits

ONNX_FILE_NAMES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
TORCH_DTYPES = ("fp32", "bf16")


class ONNXModelForCTC:
    """
    A CTC model exported by export_onnx.py, run by ONNX Runtime and called like a transformers `*ForCTC` model:
    `model(input_values, attention_mask).logits` (a float32 tensor of shape `(batch_size, frames, vocab_size)`).
    """

    def __init__(self, model_path: str | os.PathLike, config: PretrainedConfig, num_threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.config = config
        self.input_names = {node.name for node in self.session.get_inputs()}
        self.dtype = torch.float32

    @classmethod
    def from_pretrained(
        cls, model_dir: str | os.PathLike, file_name: str = "model.onnx", num_threads: int | None = None
    ) -> ONNXModelForCTC:
        """Load `model_dir/file_name` and the `config.json` beside it."""
        model_path = Path(model_dir) / file_name
        if not model_path.is_file():
            raise FileNotFoundError(f"No {file_name} in {model_dir}: write it with export_onnx.py.")
        return cls(model_path, AutoConfig.from_pretrained(model_dir), num_threads)

    def __call__(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> CausalLMOutput:
        feeds = {"input_values": input_values.float().numpy()}
        if "attention_mask" in self.input_names:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_values, dtype=torch.long)
            feeds["attention_mask"] = attention_mask.long().numpy()
        return CausalLMOutput(logits=torch.from_numpy(self.session.run(["logits"], feeds)[0]))


class CTCRecognizer:
    """
    Audio in, text out, like `pipeline("automatic-speech-recognition")` for CTC models: `recognizer(audio)` returns
    `{"text": ...}` for a path or an array, and a list of those for a list. Works with any model called as
    `model(input_values, attention_mask).logits` (a transformers `*ForCTC` model, [`ONNXModelForCTC`]).
    """

    def __init__(self, model, processor: Wav2Vec2Processor | Wav2Vec2ProcessorWithLM):
        on_accelerator = isinstance(model, torch.nn.Module) and model.device.type != "cpu"
        self.model = _OnDevice(model) if on_accelerator else model
        self.processor = processor
        self.uses_lm = isinstance(processor, Wav2Vec2ProcessorWithLM)

    def __call__(self, audio: AudioSource | list[AudioSource], batch_size: int = 1) -> dict | list[dict]:
        sampling_rate = self.processor.feature_extractor.sampling_rate
        if isinstance(audio, (list, tuple)):
            arrays = [load_audio(item, sampling_rate) for item in audio]
            texts = []
            for start in range(0, len(arrays), batch_size):
                texts += self.decode(self.logits(arrays[start : start + batch_size]))
            return [{"text": text} for text in texts]
        return {"text": self.decode(self.logits([load_audio(audio, sampling_rate)]))[0]}

    @torch.inference_mode()
    def logits(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Float32 CTC logits `(frames, vocab_size)` of each utterance (mono arrays at the feature extractor's rate),
        each normalised over its own samples; padded frames are cut off."""
        feature_extractor = self.processor.feature_extractor
        inputs = feature_extractor(
            arrays,
            sampling_rate=feature_extractor.sampling_rate,
            return_tensors="pt",
            padding=True,
            return_attention_mask=True,
        )
        attention_mask = inputs["attention_mask"] if feature_extractor.return_attention_mask else None
        logits = self.model(inputs["input_values"].to(self.model.dtype), attention_mask=attention_mask).logits
        return unpadded_logits(logits, inputs["attention_mask"].sum(-1), self.model.config)

    def decode(self, logits: list[np.ndarray]) -> list[str]:
        if self.uses_lm:  # evaluate_asr.py's search: the same decoder, beam and token_min_logp
            return lm_transcripts(self.processor.decoder, logits)
        return greedy_transcripts(self.processor.tokenizer, logits)


def load_processor(model_dir: str | os.PathLike, decoder: str = "auto") -> Wav2Vec2Processor:
    """The model's processor: with its n-gram LM (`Wav2Vec2ProcessorWithLM`) when `decoder` is "lm", or "auto" and the
    folder has `language_model/`; otherwise a plain `Wav2Vec2Processor` (greedy decoding)."""
    if decoder not in ("auto", "greedy", "lm"):
        raise ValueError(f"decoder must be 'auto', 'greedy' or 'lm', got {decoder!r}.")
    if decoder == "lm" or (decoder == "auto" and (Path(model_dir) / "language_model").is_dir()):
        return Wav2Vec2ProcessorWithLM.from_pretrained(model_dir)
    return Wav2Vec2Processor.from_pretrained(model_dir)


def load_recognizer(
    model_dir: str | os.PathLike,
    backend: str = "torch",
    dtype: str = "fp32",
    decoder: str = "auto",
    device: str = "cpu",
    num_threads: int | None = None,
    trust_remote_code: bool = False,
) -> CTCRecognizer:
    """
    A [`CTCRecognizer`] for the CTC model in `model_dir`.

    Args:
        backend: "torch" (a transformers or DistilXLSR checkpoint, loaded with `AutoModelForCTC`) or "onnx" (a folder
            written by export_onnx.py).
        dtype: "fp32" or "bf16" for torch (bf16: the weights are loaded as bfloat16, no autocast); "fp32" or "int8"
            for onnx (`model.onnx` or `model_int8.onnx`).
        decoder: "auto" (the n-gram LM when the folder has `language_model/`), "greedy" or "lm".
        device: torch only, e.g. "cuda".
        num_threads: onnx only: ONNX Runtime's intra-op threads (default: torch's thread count).
        trust_remote_code: torch only: run model code shipped in the folder (not needed for DistilXLSR models).
    """
    if backend == "onnx":
        if dtype not in ONNX_FILE_NAMES:
            raise ValueError(f"The onnx backend runs dtype {sorted(ONNX_FILE_NAMES)}, got {dtype!r}.")
        model = ONNXModelForCTC.from_pretrained(model_dir, ONNX_FILE_NAMES[dtype], num_threads)
    elif backend == "torch":
        from .models import load_ctc_weights

        if dtype not in TORCH_DTYPES:
            raise ValueError(f"The torch backend runs dtype {sorted(TORCH_DTYPES)}, got {dtype!r}.")
        model = load_ctc_weights(model_dir, dtype, device, trust_remote_code)
    else:
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}.")
    return CTCRecognizer(model, load_processor(model_dir, decoder))


class _OnDevice:
    """A torch model on an accelerator, called with CPU tensors like one on the CPU."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.config, self.dtype = model, model.config, model.dtype

    def __call__(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> CausalLMOutput:
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.model.device)
        logits = self.model(input_values.to(self.model.device), attention_mask=attention_mask).logits
        return CausalLMOutput(logits=logits.cpu())
