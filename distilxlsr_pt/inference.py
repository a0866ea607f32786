"""Cheap CTC inference: one call that turns audio into text with a PyTorch model (fp32 or bf16) or with an ONNX model
written by export_onnx.py (fp32 or int8, run by ONNX Runtime).

    from distilxlsr_pt.inference import load_recognizer

    asr = load_recognizer("outputs/student-ctc-onnx", backend="onnx", dtype="int8")  # model_int8.onnx
    asr = load_recognizer("outputs/student-ctc", backend="torch", dtype="bf16")      # weights cast to bfloat16
    asr("clip.wav")                # {"text": "..."}; also a 16 kHz float array, or a list of either
    asr(["a.wav", "b.wav"], batch_size=2)

Clips longer than `chunk_length_s` (30 s by default) are run in overlapping windows, as transformers' ASR pipeline
does with `chunk_length_s` and `stride_length_s`, so that memory stays flat whatever the recording's length (see
[`chunk_windows`]); a clip too short for the model to emit one frame gives empty text, with a warning.

Decoding is greedy, or beam search with the n-gram LM when the model folder has `language_model/` (pyctcdecode,
through transformers' `Wav2Vec2ProcessorWithLM`; `decoder="greedy"` turns it off), by `decoding`'s decoders, with its
transcript convention. This module is the cheap entry point: neither it nor the project code it uses imports
accelerate, datasets or the Trainer (tests/test_layout.py checks; transformers' own modeling code still imports
accelerate when it is installed).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from transformers import AutoConfig, PretrainedConfig, Wav2Vec2Processor, Wav2Vec2ProcessorWithLM
from transformers.modeling_outputs import CausalLMOutput

from modeling_distilxlsr import min_samples_for_frames

from .audio import AudioSource, load_audio
from .decoding import greedy_transcripts, lm_transcripts, output_frames, samples_per_frame, unpadded_logits

logger = logging.getLogger(__name__)

ONNX_FILE_NAMES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
TORCH_DTYPES = ("fp32", "bf16")
# Longer clips are run in windows of this length. Memory then stays flat whatever the recording's length, while
# shorter clips (Common Voice's, the demo's: seconds) still run in one pass and keep their exact logits.
DEFAULT_CHUNK_LENGTH_S = 30.0


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


class Window(NamedTuple):
    """One window of a clip: samples `start:end`; of its logits, frames `keep_from:keep_to` are kept."""

    start: int
    end: int
    keep_from: int
    keep_to: int | None  # None: to the window's last frame


def chunk_windows(num_samples: int, chunk_samples: int, stride_samples: int, hop: int) -> list[Window]:
    """
    The windows a clip of `num_samples` samples is run in. A clip of at most `chunk_samples` (or any clip when
    `chunk_samples` is 0) is one window. A longer one is cut as transformers' ASR pipeline cuts it (`chunk_iter`):
    windows of `chunk_samples` starting every `chunk_samples - 2 * stride_samples` samples, the last one ending with
    the clip; each window drops the logits of its first and last `stride_samples / hop` frames (context only), except
    at the clip's two ends. With window starts on multiples of `hop` (the samples per frame), a window's frame `j` is
    the clip's frame `start / hop + j`, and the kept frames tile the clip's frames exactly once each: the chunked
    logits have exactly the unchunked frame count.
    """
    if not chunk_samples or num_samples <= chunk_samples:
        return [Window(0, num_samples, 0, None)]
    step, margin = chunk_samples - 2 * stride_samples, stride_samples // hop
    windows = []
    for start in range(0, num_samples, step):
        last = start + chunk_samples >= num_samples
        # the next window's kept frames start `margin` frames after its own start, which is `step` samples later
        keep_to = None if last else step // hop + margin
        windows.append(Window(start, min(start + chunk_samples, num_samples), margin if start else 0, keep_to))
        if last:
            break
    return windows


def chunk_sizes(
    config: PretrainedConfig, sampling_rate: int, chunk_length_s: float, stride_length_s: float | None = None
) -> tuple[int, int]:
    """`(chunk_samples, stride_samples)` for [`chunk_windows`]: the lengths in seconds rounded to whole frames, as the
    pipeline does; `stride_length_s` defaults to `chunk_length_s / 6` (the pipeline's default); (0, 0) when
    `chunk_length_s` is 0 (no chunking). Raises `ValueError` for lengths that cannot tile a clip."""
    if not chunk_length_s:
        return 0, 0
    if stride_length_s is None:
        stride_length_s = chunk_length_s / 6
    if chunk_length_s < 0 or stride_length_s < 0:
        raise ValueError(
            f"chunk_length_s and stride_length_s must be >= 0, got {chunk_length_s} and {stride_length_s}."
        )
    hop = samples_per_frame(config)
    chunk = round(chunk_length_s * sampling_rate / hop) * hop
    stride = round(stride_length_s * sampling_rate / hop) * hop
    if chunk <= 2 * stride:
        raise ValueError(
            f"chunk_length_s ({chunk_length_s} s) must be more than twice stride_length_s ({stride_length_s} s): "
            "each window keeps what lies between its two strides."
        )
    # A kept frame must lie inside its window: the last frames of a window need this much audio after their start.
    min_stride = chunk - hop * int(output_frames(config, chunk))
    if stride < min_stride:
        raise ValueError(
            f"stride_length_s must be at least {min_stride / sampling_rate} s for this model (the reach of its "
            f"receptive field past a frame), got {stride_length_s} s."
        )
    return chunk, stride


class CTCRecognizer:
    """
    Audio in, text out, like `pipeline("automatic-speech-recognition")` for CTC models: `recognizer(audio)` returns
    `{"text": ...}` for a path or an array, and a list of those for a list. Works with any model called as
    `model(input_values, attention_mask).logits` (a transformers `*ForCTC` model, [`ONNXModelForCTC`]).

    Clips longer than `chunk_length_s` seconds run in windows of that length that overlap by `2 * stride_length_s`
    (default `chunk_length_s / 6`), the overlapped frames' logits dropped ([`chunk_windows`]); `chunk_length_s=0` runs
    every clip in one pass. A clip shorter than the model's receptive field has no frames: empty text, and a warning.
    """

    def __init__(
        self,
        model,
        processor: Wav2Vec2Processor | Wav2Vec2ProcessorWithLM,
        chunk_length_s: float = DEFAULT_CHUNK_LENGTH_S,
        stride_length_s: float | None = None,
    ):
        on_accelerator = isinstance(model, torch.nn.Module) and model.device.type != "cpu"
        self.model = _OnDevice(model) if on_accelerator else model
        self.processor = processor
        self.uses_lm = isinstance(processor, Wav2Vec2ProcessorWithLM)
        sampling_rate = processor.feature_extractor.sampling_rate
        self.chunk_samples, self.stride_samples = chunk_sizes(
            model.config, sampling_rate, chunk_length_s, stride_length_s
        )

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
        each normalised over its own samples; padded frames are cut off. Long clips run in windows, at most
        `len(arrays)` windows per forward pass; a clip with no frames gets `(0, vocab_size)` logits."""
        feature_extractor, config = self.processor.feature_extractor, self.model.config
        hop = samples_per_frame(config)
        frames = output_frames(config, torch.tensor([len(array) for array in arrays])).tolist()
        windows = []  # (clip index, normalised samples, frames kept)
        for index, (array, count) in enumerate(zip(arrays, frames)):
            if count < 1:
                logger.warning(
                    "A clip of %d samples is shorter than the model's receptive field (%d samples): no frames, empty "
                    "text.", len(array), min_samples_for_frames(config),
                )  # fmt: skip
                continue
            # normalised once over the whole clip, so that every window sees the clip's own scale
            values = feature_extractor(array, sampling_rate=feature_extractor.sampling_rate).input_values[0]
            for window in chunk_windows(len(values), self.chunk_samples, self.stride_samples, hop):
                windows.append((index, values[window.start : window.end], slice(window.keep_from, window.keep_to)))
        pieces: list[list[np.ndarray]] = [[] for _ in arrays]
        group_size = max(len(arrays), 1)
        for start in range(0, len(windows), group_size):
            group = windows[start : start + group_size]
            for (index, _, kept), window_logits in zip(group, self._forward([values for _, values, _ in group])):
                pieces[index].append(window_logits[kept])
        empty = np.zeros((0, config.vocab_size), np.float32)
        return [np.concatenate(clip_pieces) if clip_pieces else empty for clip_pieces in pieces]

    def _forward(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Unpadded logits of normalised arrays, padded into one batch."""
        feature_extractor = self.processor.feature_extractor
        inputs = feature_extractor.pad(
            [{"input_values": values} for values in arrays],
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
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
    chunk_length_s: float = DEFAULT_CHUNK_LENGTH_S,
    stride_length_s: float | None = None,
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
        chunk_length_s, stride_length_s: clips longer than `chunk_length_s` seconds run in windows that overlap by
            `2 * stride_length_s` (default `chunk_length_s / 6`); 0 runs every clip in one pass. See [`CTCRecognizer`].
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
    return CTCRecognizer(model, load_processor(model_dir, decoder), chunk_length_s, stride_length_s)


class _OnDevice:
    """A torch model on an accelerator, called with CPU tensors like one on the CPU."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.config, self.dtype = model, model.config, model.dtype

    def __call__(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> CausalLMOutput:
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.model.device)
        logits = self.model(input_values.to(self.model.device), attention_mask=attention_mask).logits
        return CausalLMOutput(logits=logits.cpu())


def forward_gflop(model: torch.nn.Module, audio: torch.Tensor, **kwargs) -> float:
    """GFLOP of one forward of `model` on `audio` (torch's FlopCounterMode): the cost that bench.py and the demo's
    student comparison report."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():  # inference_mode breaks on weight norm here
        model(audio, **kwargs)
    return counter.get_total_flops() / 1e9
