"""From CTC logits to scored text, one way for every script: frames without padding, greedy and n-gram LM decoding,
WER and CER.

The transcript convention (README, "Transcripts"): a decoded transcript is normalised exactly like the references
(`text.normalize_text`: NFC, lower case, punctuation to spaces, spaces collapsed), and a character the vocabulary lacks
is written "⁇", one character, as pyctcdecode writes it (normalising the tokenizer's "[UNK]" would turn it into the
word "unk"). Greedy and LM transcripts, during fine-tuning, evaluation and inference, all follow it, so the same model
gets the same WER from every script.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jiwer
import numpy as np
import torch
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2PreTrainedModel

from .text import DEFAULT_CHARS_TO_IGNORE, normalize_text

UNK_CHARACTER = "⁇"  # pyctcdecode's unknown token
# pyctcdecode's default (-5) keeps, per frame, only the characters more likely than e^-5 (and the best one); a small
# recogniser often gives the right character less than that, and then no language model can restore it. Measured on
# the demo's validation split (alpha 0.5, beta 2): LM WER 0.282 at -5 (beam 100), 0.244 at -7 (beam 50), 0.274 at -10
# (beam 100, five times the decoding time of -7).
TOKEN_MIN_LOGP = -7.0
BEAM_WIDTH = 50  # as good as 100 on the demo's validation split at -7, in two thirds of the time


# --------------------------------------------------------------------------------------------------------------------
# Frames


def output_frames(config: Any, num_samples: torch.Tensor) -> torch.Tensor:
    """Frames a wav2vec2-family model with `config` emits for inputs of `num_samples` samples: transformers' own
    `_get_feat_extract_output_lengths` (conv front end, and adapter if any), for any model with that config, also
    those that lack the method (ONNX ones)."""
    holder = SimpleNamespace(config=config)
    add_adapter = getattr(config, "add_adapter", False)  # (HuBERT's config has no adapter field)
    return Wav2Vec2PreTrainedModel._get_feat_extract_output_lengths(holder, torch.as_tensor(num_samples), add_adapter)


def samples_per_frame(config: Any) -> int:
    """Input samples per output frame (the hop between frames): the product of the conv strides, and of the
    adapter's if any (320 for wav2vec2 / XLSR-53: 20 ms at 16 kHz)."""
    hop = math.prod(config.conv_stride)
    if getattr(config, "add_adapter", False):
        hop *= config.adapter_stride**config.num_adapter_layers
    return hop


def frame_mask(config: Any, num_samples: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`(batch, num_frames)` booleans, True on the frames of real audio, False on those that exist only because the
    clip was padded to the batch's longest."""
    frames = output_frames(config, num_samples)
    return torch.arange(num_frames, device=frames.device)[None, :] < frames[:, None]


def unpadded_logits(logits: torch.Tensor, num_samples: torch.Tensor, config: Any) -> list[np.ndarray]:
    """Float32 `(frames, vocab_size)` logits of each clip of a padded batch, its padding frames removed."""
    frames = output_frames(config, num_samples.cpu()).tolist()
    return [row[:count].float().cpu().numpy() for row, count in zip(logits, frames)]


# --------------------------------------------------------------------------------------------------------------------
# Greedy and LM decoding


def greedy_decode(
    tokenizer: Any, ids: np.ndarray, chars_to_ignore: Iterable[str] = DEFAULT_CHARS_TO_IGNORE
) -> list[str]:
    """Greedy CTC transcripts of `(batch, frames)` ids: repeats merged, blanks dropped (ids of -100 count as blanks),
    the unknown token written "⁇", normalised like the references."""
    ids = np.where(np.asarray(ids) == -100, tokenizer.pad_token_id, ids)
    unk = tokenizer.unk_token
    texts = tokenizer.batch_decode(ids)
    return [normalize_text(text.replace(unk, UNK_CHARACTER) if unk else text, chars_to_ignore) for text in texts]


def greedy_transcripts(tokenizer: Any, logits: Sequence[np.ndarray], **kwargs: Any) -> list[str]:
    """`greedy_decode` of per-clip logits (`unpadded_logits`)."""
    ids = np.full((len(logits), max(len(x) for x in logits)), -100, dtype=np.int64)
    for row, clip in enumerate(logits):
        ids[row, : len(clip)] = clip.argmax(-1)
    return greedy_decode(tokenizer, ids, **kwargs)


def load_lm_decoder(model_dir: str | os.PathLike) -> Any | None:
    """The pyctcdecode decoder saved in `model_dir` (alphabet.json + language_model/), or None if there is none."""
    if not (Path(model_dir) / "language_model").is_dir():
        return None
    from pyctcdecode import BeamSearchDecoderCTC

    return BeamSearchDecoderCTC.load_from_dir(str(model_dir))


def lm_transcripts(
    decoder: Any,
    logits: Sequence[np.ndarray],
    beam_width: int = BEAM_WIDTH,
    num_workers: int = 1,
    token_min_logp: float = TOKEN_MIN_LOGP,
    chars_to_ignore: Iterable[str] = DEFAULT_CHARS_TO_IGNORE,
) -> list[str]:
    """Beam-search transcripts with the decoder's language model (and its current alpha, beta, unk_score_offset),
    normalised like the references. A fork process pool splits the clips when `num_workers` > 1; it is made here,
    after any change of the decoder's parameters, since forked workers keep the parameters they were started with."""
    options = {"beam_width": beam_width, "token_min_logp": token_min_logp}
    framed = [clip for clip in logits if len(clip)]  # a clip without frames (too short for the model) has no text
    if num_workers > 1 and len(framed) >= 2 * num_workers and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(num_workers) as pool:
            beams = iter(decoder.decode_beams_batch(pool, framed, **options))
    else:
        beams = iter(decoder.decode_beams_batch(None, framed, **options))
    return [normalize_text(next(beams)[0][0], chars_to_ignore) if len(clip) else "" for clip in logits]


def decoder_labels(tokenizer: Any) -> list[str]:
    """The tokenizer's tokens in id order: pyctcdecode's alphabet (it maps [PAD] to the blank, | to the space)."""
    vocab = tokenizer.get_vocab()
    ordered = sorted(vocab.items(), key=lambda item: item[1])
    if [index for _, index in ordered] != list(range(len(ordered))):
        raise ValueError("The tokenizer's ids are not 0..N-1: cannot map them to CTC outputs.")
    delimiter = getattr(tokenizer, "word_delimiter_token", "|")
    return [" " if token == delimiter else token for token, _ in ordered]


# --------------------------------------------------------------------------------------------------------------------
# Scoring


def error_rates(references: list[str], predictions: list[str]) -> dict[str, float]:
    """Word and character error rates (jiwer) over a corpus, as fractions, of transcripts that follow the convention
    above."""
    return {"wer": jiwer.wer(references, predictions), "cer": jiwer.cer(references, predictions)}
