#!/usr/bin/env python
"""Accuracy cost of cheap inference: the WER and CER of one CTC model on one split at each precision, PyTorch fp32
and bf16, ONNX Runtime fp32 and int8, with the time each took.

    python benchmarks/compare_precisions.py --model_name_or_path outputs/student-ctc --data_dir demo_corpus \\
        --onnx_dir outputs/student-ctc-onnx --output_dir outputs/student-ctc-precisions

The ONNX models are written to `--onnx_dir` by export_onnx.py (run as its own process) when they are not there yet.
Transcripts follow the project's one convention (`distilxlsr_pt/decoding.py`); decoding is greedy, or uses the model's
n-gram LM when its folder has `language_model/` (`--decoder`). `--output_dir` receives `precision_results.json`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the checkout: distilxlsr_pt and the model files

import numpy as np
from tqdm.auto import tqdm

from distilxlsr_pt.audio import SAMPLING_RATE
from distilxlsr_pt.cli import (
    add_deprecated_alias,
    add_eval_dataset_flags,
    add_trust_remote_code,
    argument_parser,
    eval_dataset_splits,
    run_script,
    warn_deprecated,
)
from distilxlsr_pt.data import load_clips
from distilxlsr_pt.decoding import error_rates
from distilxlsr_pt.inference import ONNX_FILE_NAMES, load_recognizer
from distilxlsr_pt.results import write_json, write_results

PRECISIONS = {
    "fp32": ("torch", "fp32"),
    "bf16": ("torch", "bf16"),
    "onnx_fp32": ("onnx", "fp32"),
    "onnx_int8": ("onnx", "int8"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argument_parser(__doc__)
    parser.add_argument("--model_name_or_path", required=True, help="The CTC model folder (finetune_ctc.py output).")
    parser.add_argument("--onnx_dir", required=True, help="export_onnx.py's folder for this model (made if missing).")
    add_eval_dataset_flags(parser, split="test")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help=f"Comma-separated, of {list(PRECISIONS)}.")
    parser.add_argument("--decoder", choices=["auto", "greedy", "lm"], default="auto")
    parser.add_argument("--batch_size", type=int, default=1, help="Clips per forward (padded batches above 1).")
    parser.add_argument("--output_dir", default=None, help="Where to write precision_results.json.")
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)  # deprecated: --output_dir
    add_trust_remote_code(parser)
    add_deprecated_alias(parser, "--split", "--eval_split_name")
    add_deprecated_alias(parser, "--max_samples", "--max_eval_samples")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.precisions = args.precisions.split(",")
    unknown = set(args.precisions) - set(PRECISIONS)
    if unknown:
        parser.error(f"unknown precision(s) {sorted(unknown)}; choose from {list(PRECISIONS)}")
    if not args.data_dir and not args.dataset_name:
        parser.error("give --data_dir or --dataset_name")
    if args.dataset_name and "," in args.dataset_name:
        parser.error("--dataset_name: one dataset (evaluate_asr.py scores several)")
    return args


def score(args: argparse.Namespace, precision: str, arrays: list[np.ndarray], references: list[str]) -> dict:
    backend, dtype = PRECISIONS[precision]
    model_dir = args.onnx_dir if backend == "onnx" else args.model_name_or_path
    recognizer = load_recognizer(
        model_dir, backend=backend, dtype=dtype, decoder=args.decoder, trust_remote_code=args.trust_remote_code
    )
    predictions, start = [], time.perf_counter()
    for begin in tqdm(range(0, len(arrays), args.batch_size), desc=precision):
        predictions += [out["text"] for out in recognizer(arrays[begin : begin + args.batch_size], args.batch_size)]
    seconds = time.perf_counter() - start
    return error_rates(references, predictions) | {"seconds": seconds, "example": predictions[0]}


def main(argv=None) -> dict[str, dict]:
    args = parse_args(argv)
    wanted_onnx = [ONNX_FILE_NAMES[PRECISIONS[p][1]] for p in args.precisions if PRECISIONS[p][0] == "onnx"]
    if any(not (Path(args.onnx_dir) / name).is_file() for name in wanted_onnx):
        export = [sys.executable, str(REPO_ROOT / "export_onnx.py"), "--model_name_or_path", args.model_name_or_path,
                  "--output_dir", args.onnx_dir, "--quantize", "int8"]  # fmt: skip
        subprocess.run(export + (["--trust_remote_code"] if args.trust_remote_code else []), check=True)
    (split,) = eval_dataset_splits(args)
    arrays, references = load_clips(split)
    results = {precision: score(args, precision, arrays, references) for precision in args.precisions}

    audio_seconds = sum(len(array) for array in arrays) / SAMPLING_RATE
    print(f"\n{len(arrays)} clips ({audio_seconds:.0f} s of audio) of {split.label}; reference: {references[0]!r}")
    print("| precision | WER | CER | CER vs fp32 | time |\n|---|---|---|---|---|")
    for precision, result in results.items():
        delta = f"{result['cer'] - results['fp32']['cer']:+.4f}" if "fp32" in results else "-"
        print(f"| {precision} | {result['wer']:.4f} | {result['cer']:.4f} | {delta} | {result['seconds']:.1f} s |")
    record = {"clips": len(arrays), "audio_s": audio_seconds} | results
    if args.output_dir:
        write_results(args.output_dir, "precision", record)
    if args.json:
        warn_deprecated("--json", "--output_dir")
        write_json(args.json, record)
    return results


if __name__ == "__main__":
    run_script(main)
