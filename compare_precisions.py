#!/usr/bin/env python
"""Accuracy cost of cheap inference: the WER and CER of one CTC model on one split at each precision, PyTorch fp32
and bf16, ONNX Runtime fp32 and int8, with the time each took.

    python compare_precisions.py --model_name_or_path outputs/student-ctc --data_dir demo_corpus \\
        --onnx_dir outputs/student-ctc-onnx --json outputs/student-ctc-precisions.json

The ONNX models are written to `--onnx_dir` by export_onnx.py when they are not there yet. Transcripts are normalised
as finetune_ctc.py normalises them (text_normalization.py); decoding is greedy, or uses the model's n-gram LM when its
folder has `language_model/` (`--decoder`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from datasets import Audio
from tqdm.auto import tqdm

from audio_io import load_audio
from finetune_ctc import DataTrainingArguments, error_rates, load_split
from onnx_ctc import ONNX_FILE_NAMES, SAMPLING_RATE, load_ctc_model
from text_normalization import normalize_text

PRECISIONS = {
    "fp32": ("torch", "fp32"),
    "bf16": ("torch", "bf16"),
    "onnx_fp32": ("onnx", "fp32"),
    "onnx_int8": ("onnx", "int8"),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="The CTC model folder (finetune_ctc.py output).")
    parser.add_argument("--onnx_dir", required=True, help="export_onnx.py's folder for this model (made if missing).")
    parser.add_argument("--data_dir", default=None, help="A local audiofolder (DIR/{train,validation,test}).")
    parser.add_argument("--dataset_name", default=None, help="Or a dataset on the Hub.")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--split", default="test", help="The split to score.")
    parser.add_argument("--audio_column_name", default="audio")
    parser.add_argument("--text_column_name", default="transcription")
    parser.add_argument("--max_samples", type=int, default=None, help="Score only the first N clips.")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help=f"Comma-separated, of {list(PRECISIONS)}.")
    parser.add_argument("--decoder", choices=["auto", "greedy", "lm"], default="auto")
    parser.add_argument("--batch_size", type=int, default=1, help="Clips per forward (padded batches above 1).")
    parser.add_argument("--cache_dir", default=None)
    parser.add_argument("--json", default=None, help="Write the results to this JSON file.")
    args = parser.parse_args(argv)
    args.precisions = args.precisions.split(",")
    unknown = set(args.precisions) - set(PRECISIONS)
    if unknown:
        parser.error(f"unknown precision(s) {sorted(unknown)}; choose from {list(PRECISIONS)}")
    if not args.data_dir and not args.dataset_name:
        parser.error("give --data_dir or --dataset_name")
    return args


def load_clips(args: argparse.Namespace) -> tuple[list[np.ndarray], list[str]]:
    """The split's audio as 16 kHz mono arrays and its normalised transcripts."""
    data_args = DataTrainingArguments(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        data_dir=args.data_dir,
        audio_column_name=args.audio_column_name,
        text_column_name=args.text_column_name,
    )
    dataset = load_split(data_args, args.split, args.cache_dir)
    if dataset is None:
        raise ValueError(f"The dataset has no split {args.split!r}.")
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    dataset = dataset.cast_column(args.audio_column_name, Audio(decode=False))
    arrays = [load_audio(example) for example in tqdm(dataset[args.audio_column_name], desc="decoding audio")]
    references = [normalize_text(text, data_args.chars_to_ignore) for text in dataset[args.text_column_name]]
    return arrays, references


def score(args: argparse.Namespace, precision: str, arrays: list[np.ndarray], references: list[str]) -> dict:
    backend, dtype = PRECISIONS[precision]
    model_dir = args.onnx_dir if backend == "onnx" else args.model_name_or_path
    recognizer = load_ctc_model(model_dir, backend=backend, dtype=dtype, decoder=args.decoder)
    predictions, start = [], time.perf_counter()
    for begin in tqdm(range(0, len(arrays), args.batch_size), desc=precision):
        predictions += [out["text"] for out in recognizer(arrays[begin : begin + args.batch_size], args.batch_size)]
    seconds = time.perf_counter() - start
    return error_rates(references, predictions) | {"seconds": seconds, "example": predictions[0]}


def main(argv=None) -> dict[str, dict]:
    args = parse_args(argv)
    wanted_onnx = [ONNX_FILE_NAMES[PRECISIONS[p][1]] for p in args.precisions if PRECISIONS[p][0] == "onnx"]
    if any(not (Path(args.onnx_dir) / name).is_file() for name in wanted_onnx):
        from export_onnx import main as export_main

        export_main(
            ["--model_name_or_path", args.model_name_or_path, "--output_dir", args.onnx_dir, "--quantize", "int8"]
        )
    arrays, references = load_clips(args)
    results = {precision: score(args, precision, arrays, references) for precision in args.precisions}

    audio_seconds = sum(len(array) for array in arrays) / SAMPLING_RATE
    print(
        f"\n{len(arrays)} clips ({audio_seconds:.0f} s of audio) of split {args.split!r}; reference: {references[0]!r}"
    )
    print("| precision | WER | CER | CER vs fp32 | time |\n|---|---|---|---|---|")
    for precision, result in results.items():
        delta = f"{result['cer'] - results['fp32']['cer']:+.4f}" if "fp32" in results else "-"
        print(f"| {precision} | {result['wer']:.4f} | {result['cer']:.4f} | {delta} | {result['seconds']:.1f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps({"clips": len(arrays), "audio_s": audio_seconds} | results, indent=2))
    return results


if __name__ == "__main__":
    main()
