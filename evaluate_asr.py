#!/usr/bin/env python
"""Score a CTC speech recogniser on one or several corpora, with greedy and n-gram language-model decoding: WER and CER
per corpus and averaged, and the real-time factor, as a markdown table and a JSON file.

    # a model with a language model added by add_ngram_lm.py, on two local audiofolders and a Hub dataset
    python evaluate_asr.py --model_name_or_path outputs/student-ctc-lm \\
        --dataset_name data/demo_corpus,data/other_corpus,<a Parquet copy of Common Voice> \\
        --dataset_config_name ,,pt --split test --text_column_name transcription,transcription,sentence \\
        --output_dir outputs/eval --update_model_card

Works for any transformers CTC checkpoint with a character tokenizer (DistilXLSR students, wav2vec2, HuBERT, the
XLSR-53 fine-tunes on the Hub). Comma-separated options give one value per dataset, or one value for all. References
and hypotheses are normalised alike (`text_normalization.normalize_text`). LM decoding calls pyctcdecode directly (the
`language_model/` of the model directory, or `--lm_dir`), batched over a process pool; models without one are scored
greedily only. The real-time factor is decoding time over audio duration: `rtf` for the model plus greedy decoding,
`rtf_lm` for the model plus LM decoding.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Audio, load_dataset
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from tqdm.auto import tqdm
from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer, PreTrainedModel, Wav2Vec2Processor

from audio_io import load_audio
from finetune_ctc import error_rates, greedy_decode
from text_normalization import normalize_text
from train_distill import split_list

logger = logging.getLogger("evaluate_asr")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CARD_SECTION = "## Evaluation (evaluate_asr.py)"
UNK_CHARACTER = "⁇"  # pyctcdecode's unknown token


@dataclass
class EvalSet:
    """One corpus to score: a Hub dataset or a local folder, its config and split, and its column names."""

    name: str
    config: str | None = None
    split: str = "test"
    text_column: str = "transcription"
    audio_column: str = "audio"
    max_samples: int | None = None
    data_dir: str | None = None  # passed to load_dataset, as finetune_ctc.py's --data_dir

    @property
    def local(self) -> bool:
        return os.path.isdir(self.name) or self.name == "audiofolder"

    @property
    def short_name(self) -> str:
        return Path(self.data_dir or self.name).name if self.local else self.name

    @property
    def label(self) -> str:
        return f"{self.short_name}{'/' + self.config if self.config else ''} ({self.split})"


def load_ctc_model(
    model_name_or_path: str, dtype: str = "float32", device: str = "cpu"
) -> tuple[PreTrainedModel, Wav2Vec2Processor]:
    """The CTC model in eval mode and its plain processor (feature extractor + tokenizer, no LM). The one place that
    loads a model for inference, so other back ends (ONNX, ...) plug in here."""
    feature_extractor = AutoFeatureExtractor.from_pretrained(model_name_or_path, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=True)
    model = AutoModelForCTC.from_pretrained(model_name_or_path, trust_remote_code=True, dtype=DTYPES[dtype])
    return model.to(device).eval(), Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def load_eval_set(eval_set: EvalSet, sampling_rate: int) -> tuple[list[np.ndarray], list[str]]:
    """Decoded 16 kHz mono audio and normalised references of one corpus; clips with an empty reference are dropped
    (with a warning), unreadable audio is an error."""
    dataset = load_dataset(eval_set.name, eval_set.config, data_dir=eval_set.data_dir, split=eval_set.split)
    missing = {eval_set.audio_column, eval_set.text_column} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"{eval_set.label} has no column(s) {sorted(missing)}; its columns are {dataset.column_names}. "
            "Set --audio_column_name / --text_column_name."
        )
    if eval_set.max_samples is not None:
        dataset = dataset.select(range(min(eval_set.max_samples, len(dataset))))
    dataset = dataset.cast_column(eval_set.audio_column, Audio(decode=False))  # decoded by audio_io, as in training
    audio, references = [], []
    for example in tqdm(dataset, desc=f"reading {eval_set.label}"):
        reference = normalize_text(example[eval_set.text_column])
        if reference:
            audio.append(load_audio(example[eval_set.audio_column], sampling_rate))
            references.append(reference)
    if len(references) < len(dataset):
        logger.warning("%s: %d clip(s) with an empty transcript not scored.", eval_set.label, len(dataset) - len(audio))
    if not references:
        raise ValueError(f"{eval_set.label} has no clip with a non-empty transcript.")
    return audio, references


@torch.inference_mode()
def compute_logits(
    model: PreTrainedModel, processor: Wav2Vec2Processor, audio: list[np.ndarray], batch_size: int = 8
) -> list[np.ndarray]:
    """Float32 CTC logits (frames x vocabulary) of each clip, batched by similar length, padding frames removed."""
    order = sorted(range(len(audio)), key=lambda i: len(audio[i]))
    logits: list[np.ndarray | None] = [None] * len(audio)
    dtype = next(model.parameters()).dtype
    for start in tqdm(range(0, len(order), batch_size), desc="model", leave=False):
        indices = order[start : start + batch_size]
        inputs = processor.feature_extractor(
            [audio[i] for i in indices],
            sampling_rate=processor.feature_extractor.sampling_rate,
            padding=True,
            return_tensors="pt",
        )
        input_values = inputs.input_values.to(model.device, dtype)
        mask = inputs.get("attention_mask")
        output = model(input_values, attention_mask=None if mask is None else mask.to(model.device)).logits
        lengths = torch.tensor([len(audio[i]) for i in indices])
        frames = model._get_feat_extract_output_lengths(lengths).tolist()
        for row, (index, count) in enumerate(zip(indices, frames)):
            logits[index] = output[row, :count].float().cpu().numpy()
    return logits  # type: ignore[return-value]


def greedy_transcripts(processor: Wav2Vec2Processor, logits: list[np.ndarray]) -> list[str]:
    """Greedy CTC transcripts of per-clip logits; the unknown token is written "⁇", one character, as pyctcdecode
    writes it (normalisation would turn "[UNK]" into the word "unk")."""
    ids = np.full((len(logits), max(len(x) for x in logits)), -100, dtype=np.int64)
    for row, clip in enumerate(logits):
        ids[row, : len(clip)] = clip.argmax(-1)
    unk = processor.tokenizer.unk_token
    return [text.replace(unk, UNK_CHARACTER) if unk else text for text in greedy_decode(processor.tokenizer, ids)]


# pyctcdecode's default (-5) keeps, per frame, only the characters more likely than e^-5 (and the best one); a small
# recogniser often gives the right character less than that, and then no language model can restore it. Measured on
# the demo's validation split (alpha 0.5, beta 2): LM WER 0.282 at -5 (beam 100), 0.244 at -7 (beam 50), 0.274 at -10
# (beam 100, five times the decoding time of -7).
TOKEN_MIN_LOGP = -7.0
BEAM_WIDTH = 50  # as good as 100 on the demo's validation split at -7, in two thirds of the time


def load_lm_decoder(lm_dir: str | os.PathLike) -> Any | None:
    """The pyctcdecode decoder saved in `lm_dir` (alphabet.json + language_model/), or None if there is none."""
    if not (Path(lm_dir) / "language_model").is_dir():
        return None
    from pyctcdecode import BeamSearchDecoderCTC

    return BeamSearchDecoderCTC.load_from_dir(str(lm_dir))


def lm_transcripts(
    decoder: Any,
    logits: list[np.ndarray],
    beam_width: int = BEAM_WIDTH,
    num_workers: int = 1,
    token_min_logp: float = TOKEN_MIN_LOGP,
) -> list[str]:
    """Beam-search transcripts with the decoder's language model (and its current alpha, beta, unk_score_offset). A
    fork process pool splits the clips when `num_workers` > 1; it is made here, after any change of the decoder's
    parameters, since forked workers keep the parameters they were started with."""
    options = {"beam_width": beam_width, "token_min_logp": token_min_logp}
    if num_workers > 1 and len(logits) >= 2 * num_workers and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(num_workers) as pool:
            beams = decoder.decode_beams_batch(pool, logits, **options)
    else:
        beams = decoder.decode_beams_batch(None, logits, **options)
    return [" ".join(clip[0][0].split()) for clip in beams]


def score(
    references: list[str],
    predictions: list[str],
    predictions_lm: list[str] | None,
    seconds: float,
    audio_seconds: float,
    lm_seconds: float | None,
) -> dict[str, float | None]:
    """One corpus's results: WER and CER (fractions) of both decodings and the real-time factors."""
    predictions = [normalize_text(text) for text in predictions]
    result: dict[str, float | None] = dict(error_rates(references, predictions))
    result["wer_lm"] = result["cer_lm"] = result["rtf_lm"] = None
    if predictions_lm is not None:
        lm = error_rates(references, [normalize_text(text) for text in predictions_lm])
        result.update(wer_lm=lm["wer"], cer_lm=lm["cer"], rtf_lm=lm_seconds / audio_seconds)
    result.update(rtf=seconds / audio_seconds, clips=len(references), hours=audio_seconds / 3600)
    return result


def evaluate_model(
    model_name_or_path: str,
    eval_sets: list[EvalSet],
    lm_dir: str | None = None,
    use_lm: bool = True,
    batch_size: int = 8,
    beam_width: int = BEAM_WIDTH,
    num_workers: int = 1,
    dtype: str = "float32",
    token_min_logp: float = TOKEN_MIN_LOGP,
    decoder_params: dict[str, float] | None = None,
    num_examples: int = 0,
) -> dict[str, dict[str, float | None]]:
    """Score `model_name_or_path` on each of `eval_sets`: {label: {"wer", "cer", "wer_lm", "cer_lm", "rtf", "rtf_lm",
    "clips", "hours"}} (rates as fractions; `*_lm` None without a language model), plus an "average" entry (the
    unweighted mean over the corpora) when there are several. The LM is `lm_dir`'s, else the model directory's;
    `decoder_params` overrides its alpha, beta or unk_score_offset."""
    model, processor = load_ctc_model(model_name_or_path, dtype)
    decoder = load_lm_decoder(lm_dir or model_name_or_path) if use_lm else None
    if use_lm and decoder is None:
        logger.warning("No language model in %s: greedy decoding only.", lm_dir or model_name_or_path)
    if decoder is not None and decoder_params:
        decoder.reset_params(**{key: float(value) for key, value in decoder_params.items()})
    sampling_rate = processor.feature_extractor.sampling_rate
    results: dict[str, dict[str, float | None]] = {}
    for eval_set in eval_sets:
        audio, references = load_eval_set(eval_set, sampling_rate)
        start = time.perf_counter()
        logits = compute_logits(model, processor, audio, batch_size)
        model_seconds = time.perf_counter() - start
        predictions = greedy_transcripts(processor, logits)
        greedy_seconds = time.perf_counter() - start
        predictions_lm, lm_seconds = None, None
        if decoder is not None:
            start = time.perf_counter()
            predictions_lm = lm_transcripts(decoder, logits, beam_width, num_workers, token_min_logp)
            lm_seconds = model_seconds + time.perf_counter() - start
        audio_seconds = sum(len(clip) for clip in audio) / sampling_rate
        results[eval_set.label] = score(
            references, predictions, predictions_lm, greedy_seconds, audio_seconds, lm_seconds
        )
        for i in range(min(num_examples, len(references))):
            lm_line = f"\n  LM:        {predictions_lm[i]}" if predictions_lm is not None else ""
            print(f"{eval_set.label}\n  reference: {references[i]}\n  greedy:    {predictions[i]}{lm_line}")
    if len(results) > 1:
        results["average"] = {
            key: (
                None
                if any(result[key] is None for result in results.values())
                else float(np.mean([result[key] for result in results.values()]))
            )
            for key in ("wer", "cer", "wer_lm", "cer_lm", "rtf", "rtf_lm")
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


def update_model_card(
    model_dir: str | os.PathLike, results: dict, eval_sets: list[EvalSet], note: str = "", greedy: bool = True
) -> None:
    """Put the results into `model_dir/README.md`: model-index entries (WER and CER in percent, greedy unless
    `greedy` is False, and with the LM; entries of the same dataset, split and metric name are replaced) and a
    section with the table (and `note` before it)."""
    path = Path(model_dir) / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n")
    new = []
    for eval_set in eval_sets:
        result = results[eval_set.label]
        hub = not eval_set.local
        for metric in ("wer", "cer"):
            for suffix, title in (("", ""), ("_lm", " with LM")):
                if result[metric + suffix] is None or (suffix == "" and not greedy):
                    continue
                new.append(
                    EvalResult(
                        task_type="automatic-speech-recognition",
                        task_name="Automatic Speech Recognition",
                        dataset_type=eval_set.name if hub else "audiofolder",
                        dataset_name=eval_set.name if hub else f"{eval_set.short_name} (local audiofolder)",
                        # the Hub groups results by type, config and split: a local folder's name tells them apart
                        dataset_config=eval_set.config if hub else (eval_set.config or eval_set.short_name),
                        dataset_split=eval_set.split,
                        metric_type=metric,
                        metric_name=f"{eval_set.split.capitalize()} {metric.upper()}{title} (%)",
                        metric_value=round(100 * result[metric + suffix], 2),
                    )
                )

    def key(r: EvalResult) -> tuple:
        return r.dataset_type, r.dataset_name, r.dataset_config, r.dataset_split, r.metric_name

    replaced = {key(r) for r in new}
    card.data.eval_results = [r for r in (card.data.eval_results or []) if key(r) not in replaced] + new
    if card.data.model_name is None:
        card.data.model_name = Path(model_dir).resolve().name
    body = card.text.split(CARD_SECTION)[0].rstrip()
    section = f"{CARD_SECTION}\n\n{note}{markdown_table(results)}\n"
    card = ModelCard(f"---\n{card.data.to_yaml()}\n---\n{body}\n\n{section}")
    card.save(path)


def parse_eval_sets(args: argparse.Namespace) -> list[EvalSet]:
    names = [name.strip() for name in args.dataset_name.split(",")]
    count = len(names)
    columns = zip(
        split_list(args.dataset_config_name, count, "dataset_config_name"),
        split_list(args.split, count, "split"),
        split_list(args.text_column_name, count, "text_column_name"),
        split_list(args.audio_column_name, count, "audio_column_name"),
    )
    return [
        EvalSet(name, config, split or "test", text or "transcription", audio_column or "audio", args.max_samples)
        for name, (config, split, text, audio_column) in zip(names, columns)
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="A CTC model directory or Hub id.")
    parser.add_argument(
        "--dataset_name",
        required=True,
        help="Hub dataset(s) or local audiofolder(s) (a folder with split folders holding metadata.csv), "
        "comma-separated.",
    )
    parser.add_argument("--dataset_config_name", default=None, help="Config(s), one or one per dataset.")
    parser.add_argument("--split", default="test", help="Split(s) to score, one or one per dataset.")
    parser.add_argument("--text_column_name", default="transcription", help="Transcript column(s) ('sentence' in CV).")
    parser.add_argument("--audio_column_name", default="audio", help="Audio column(s).")
    parser.add_argument("--max_samples", type=int, default=None, help="Score only the first N clips of each dataset.")
    parser.add_argument("--output_dir", default=None, help="Where to write eval_results.json and eval_results.md.")
    parser.add_argument("--batch_size", type=int, default=8, help="Clips per forward pass.")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="Model weights' dtype.")
    parser.add_argument("--lm_dir", default=None, help="A directory with a pyctcdecode LM (default: the model's).")
    parser.add_argument("--no_lm", action="store_true", help="Greedy decoding only.")
    parser.add_argument("--alpha", type=float, default=None, help="LM weight (default: the saved decoder's).")
    parser.add_argument("--beta", type=float, default=None, help="Word insertion bonus (default: the saved one).")
    parser.add_argument("--unk_score_offset", type=float, default=None, help="Log score offset of unknown words.")
    parser.add_argument("--beam_width", type=int, default=BEAM_WIDTH, help="Beam width of the LM decoding.")
    parser.add_argument(
        "--token_min_logp",
        type=float,
        default=TOKEN_MIN_LOGP,
        help="LM decoding considers, per frame, the characters with a log probability above this (and the best one).",
    )
    parser.add_argument(
        "--num_workers", type=int, default=os.cpu_count() or 1, help="Processes for LM decoding (default: the CPUs)."
    )
    parser.add_argument("--num_examples", type=int, default=3, help="Transcripts printed per dataset.")
    parser.add_argument(
        "--update_model_card", action="store_true", help="Add the results to the model directory's README.md."
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, dict[str, float | None]]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    eval_sets = parse_eval_sets(args)
    decoder_params = {
        name: getattr(args, name) for name in ("alpha", "beta", "unk_score_offset") if getattr(args, name) is not None
    }
    results = evaluate_model(
        args.model_name_or_path,
        eval_sets,
        lm_dir=args.lm_dir,
        use_lm=not args.no_lm,
        batch_size=args.batch_size,
        beam_width=args.beam_width,
        num_workers=args.num_workers,
        dtype=args.dtype,
        token_min_logp=args.token_min_logp,
        decoder_params=decoder_params,
        num_examples=args.num_examples,
    )
    table = markdown_table(results)
    print(table)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "eval_results.json"), "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
        Path(args.output_dir, "eval_results.md").write_text(table + "\n", encoding="utf-8")
    if args.update_model_card:
        if not os.path.isdir(args.model_name_or_path):
            raise ValueError("--update_model_card needs a local model directory.")
        update_model_card(args.model_name_or_path, results, eval_sets)
    return results


if __name__ == "__main__":
    main()
