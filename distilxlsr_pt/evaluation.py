"""Scoring a CTC recogniser on corpora: greedy and LM WER/CER per corpus and averaged, real-time factors, the markdown
table and the model card's model-index entries (evaluate_asr.py, add_ngram_lm.py and finetune_ctc.py's LM step).

Decoding and the transcript convention are `decoding`'s; corpora are `data.DatasetSplit`s.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from huggingface_hub import EvalResult
from tqdm.auto import tqdm
from transformers import PreTrainedModel, Wav2Vec2Processor

from .cards import add_card_eval_results, set_card_section
from .data import DatasetSplit, load_clips
from .decoding import (
    BEAM_WIDTH,
    TOKEN_MIN_LOGP,
    error_rates,
    greedy_transcripts,
    lm_transcripts,
    load_lm_decoder,
)
from .inference import DEFAULT_CHUNK_LENGTH_S, CTCRecognizer, chunk_sizes
from .models import load_ctc_model

logger = logging.getLogger(__name__)

CARD_SECTION = "## Evaluation (evaluate_asr.py)"
RATE_KEYS = ("wer", "cer", "wer_lm", "cer_lm", "rtf", "rtf_lm")


def compute_logits(
    model: PreTrainedModel,
    processor: Wav2Vec2Processor,
    audio: list[np.ndarray],
    batch_size: int = 8,
    chunk_length_s: float = DEFAULT_CHUNK_LENGTH_S,
    stride_length_s: float | None = None,
) -> list[np.ndarray]:
    """Float32 CTC logits (frames x vocabulary) of each clip, batched by similar length, padding frames removed: the
    recogniser's own forward pass (`CTCRecognizer.logits`, long clips in overlapping windows), so that evaluation and
    inference see the same numbers."""
    recognizer = CTCRecognizer(model, processor, chunk_length_s, stride_length_s)
    order = sorted(range(len(audio)), key=lambda i: len(audio[i]))
    logits: list[np.ndarray | None] = [None] * len(audio)
    for start in tqdm(range(0, len(order), batch_size), desc="model", leave=False):
        indices = order[start : start + batch_size]
        for index, clip_logits in zip(indices, recognizer.logits([audio[i] for i in indices])):
            logits[index] = clip_logits
    return logits  # type: ignore[return-value]


def score(
    references: list[str],
    predictions: list[str],
    predictions_lm: list[str] | None,
    seconds: float,
    audio_seconds: float,
    lm_seconds: float | None,
) -> dict[str, float | None]:
    """One corpus's results: WER and CER (fractions) of both decodings and the real-time factors."""
    result: dict[str, float | None] = dict(error_rates(references, predictions))
    result["wer_lm"] = result["cer_lm"] = result["rtf_lm"] = None
    if predictions_lm is not None:
        lm = error_rates(references, predictions_lm)
        result.update(wer_lm=lm["wer"], cer_lm=lm["cer"], rtf_lm=lm_seconds / audio_seconds)
    result.update(rtf=seconds / audio_seconds, clips=len(references), hours=audio_seconds / 3600)
    return result


def evaluate_model(
    model_name_or_path: str,
    splits: Sequence[DatasetSplit],
    lm_dir: str | None = None,
    use_lm: bool = True,
    batch_size: int = 8,
    beam_width: int = BEAM_WIDTH,
    num_workers: int = 1,
    dtype: str = "fp32",
    token_min_logp: float = TOKEN_MIN_LOGP,
    decoder_params: dict[str, float] | None = None,
    num_examples: int = 0,
    trust_remote_code: bool = False,
    chunk_length_s: float = DEFAULT_CHUNK_LENGTH_S,
    stride_length_s: float | None = None,
) -> dict[str, dict[str, float | None]]:
    """Score `model_name_or_path` on each of `splits`: {label: {"wer", "cer", "wer_lm", "cer_lm", "rtf", "rtf_lm",
    "clips", "hours"}} (rates as fractions; `*_lm` None without a language model), plus an "average" entry (the
    unweighted mean over the corpora) when there are several. The LM is `lm_dir`'s, else the model directory's;
    `decoder_params` overrides its alpha, beta or unk_score_offset. Clips longer than `chunk_length_s` run in
    overlapping windows (`inference.CTCRecognizer`); a clip too short for one frame counts as empty text."""
    model, processor = load_ctc_model(model_name_or_path, dtype, trust_remote_code=trust_remote_code)
    sampling_rate = processor.feature_extractor.sampling_rate
    chunk_sizes(model.config, sampling_rate, chunk_length_s, stride_length_s)  # impossible lengths fail before any data
    decoder = load_lm_decoder(lm_dir or model_name_or_path) if use_lm else None
    if use_lm and decoder is None:
        logger.warning("No language model in %s: greedy decoding only.", lm_dir or model_name_or_path)
    if decoder is not None and decoder_params:
        decoder.reset_params(**{key: float(value) for key, value in decoder_params.items()})
    results: dict[str, dict[str, float | None]] = {}
    for split in splits:
        audio, references = load_clips(split, sampling_rate)
        start = time.perf_counter()
        logits = compute_logits(model, processor, audio, batch_size, chunk_length_s, stride_length_s)
        model_seconds = time.perf_counter() - start
        predictions = greedy_transcripts(processor.tokenizer, logits)
        greedy_seconds = time.perf_counter() - start
        predictions_lm, lm_seconds = None, None
        if decoder is not None:
            start = time.perf_counter()
            predictions_lm = lm_transcripts(decoder, logits, beam_width, num_workers, token_min_logp)
            lm_seconds = model_seconds + time.perf_counter() - start
        audio_seconds = sum(len(clip) for clip in audio) / sampling_rate
        results[split.label] = score(references, predictions, predictions_lm, greedy_seconds, audio_seconds, lm_seconds)
        for i in range(min(num_examples, len(references))):
            lm_line = f"\n  LM:        {predictions_lm[i]}" if predictions_lm is not None else ""
            print(f"{split.label}\n  reference: {references[i]}\n  greedy:    {predictions[i]}{lm_line}")
    if len(results) > 1:
        results["average"] = {
            key: (
                None
                if any(result[key] is None for result in results.values())
                else float(np.mean([result[key] for result in results.values()]))
            )
            for key in RATE_KEYS
        }
    return results


def markdown_table(results: dict[str, dict[str, float | None]]) -> str:
    """The results as a markdown table, rates in percent."""

    def cell(value: float | None, percent: bool = True) -> str:
        return "-" if value is None else f"{100 * value:.2f}" if percent else f"{value:.3f}"

    lines = [
        "| dataset | clips | hours | WER (%) | CER (%) | WER with LM (%) | CER with LM (%) | RTF | RTF with LM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, result in results.items():
        clips = result.get("clips")
        hours = result.get("hours")
        lines.append(
            f"| {label} | {'' if clips is None else int(clips)} | {'' if hours is None else f'{hours:.3f}'} "
            f"| {cell(result['wer'])} | {cell(result['cer'])} | {cell(result['wer_lm'])} | {cell(result['cer_lm'])} "
            f"| {cell(result['rtf'], False)} | {cell(result['rtf_lm'], False)} |"
        )
    return "\n".join(lines)


def eval_results(split: DatasetSplit, result: dict[str, Any], greedy: bool = True) -> list[EvalResult]:
    """Model-index entries of one corpus's result: WER and CER in percent, greedy (unless `greedy` is False) and with
    the LM when there is one."""
    entries = []
    for metric in ("wer", "cer"):
        for suffix, title in (("", ""), ("_lm", " with LM")):
            if result[metric + suffix] is None or (suffix == "" and not greedy):
                continue
            entries.append(
                EvalResult(
                    task_type="automatic-speech-recognition",
                    task_name="Automatic Speech Recognition",
                    dataset_type="audiofolder" if split.local else split.name,
                    dataset_name=f"{split.short_name} (local audiofolder)" if split.local else split.name,
                    # the Hub groups results by type, config and split: a local folder's name tells them apart
                    dataset_config=(split.config or split.short_name) if split.local else split.config,
                    dataset_split=split.split,
                    metric_type=metric,
                    metric_name=f"{split.split.capitalize()} {metric.upper()}{title} (%)",
                    metric_value=round(100 * result[metric + suffix], 2),
                )
            )
    return entries


def update_model_card(
    model_dir: str | os.PathLike,
    results: dict,
    splits: Sequence[DatasetSplit],
    note: str = "",
    greedy: bool = True,
) -> None:
    """Put the results into `model_dir/README.md`: model-index entries (see `eval_results`; entries of the same
    dataset, split and metric name are replaced) and a section with the table (and `note` before it)."""
    add_card_eval_results(
        model_dir, [entry for split in splits for entry in eval_results(split, results[split.label], greedy)]
    )
    set_card_section(model_dir, CARD_SECTION, f"{note}{markdown_table(results)}")
