#!/usr/bin/env python
"""Score a CTC speech recogniser on one or several corpora, with greedy and n-gram language-model decoding: WER and CER
per corpus and averaged, and the real-time factor, as a markdown table and a JSON file.

    # a model with a language model added by add_ngram_lm.py, on two local audiofolders and a Hub dataset
    python evaluate_asr.py --model_name_or_path outputs/student-ctc-lm \\
        --dataset_name data/demo_corpus,data/other_corpus,<a Parquet copy of Common Voice> \\
        --dataset_config_name ,,pt --eval_split_name test --text_column_name transcription,transcription,sentence \\
        --output_dir outputs/eval --update_model_card

Works for any transformers CTC checkpoint with a character tokenizer (DistilXLSR students, wav2vec2, HuBERT, the
XLSR-53 fine-tunes on the Hub). Comma-separated options give one value per dataset, or one value for all. References
and hypotheses are normalised alike (`distilxlsr_pt.text.normalize_text`; unknown characters written "⁇"). LM decoding
calls pyctcdecode directly (the `language_model/` of the model directory, or `--lm_dir`), batched over a process pool;
models without one are scored greedily only. `--output_dir` receives `evaluation_results.json` and
`evaluation_results.md`. The real-time factor is decoding time over audio duration: `rtf` for the model plus greedy decoding,
`rtf_lm` for the model plus LM decoding.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from distilxlsr_pt.cli import (
    add_deprecated_alias,
    add_eval_dataset_flags,
    add_trust_remote_code,
    argument_parser,
    eval_dataset_splits,
    run_script,
)
from distilxlsr_pt.decoding import BEAM_WIDTH, TOKEN_MIN_LOGP
from distilxlsr_pt.evaluation import evaluate_model, markdown_table, update_model_card
from distilxlsr_pt.inference import DEFAULT_CHUNK_LENGTH_S
from distilxlsr_pt.models import DTYPES
from distilxlsr_pt.results import write_results

logger = logging.getLogger("evaluate_asr")


def build_parser() -> argparse.ArgumentParser:
    parser = argument_parser(__doc__)
    parser.add_argument("--model_name_or_path", required=True, help="A CTC model directory or Hub id.")
    add_eval_dataset_flags(parser, split="test", several=True)
    parser.add_argument("--output_dir", default=None, help="Where to write evaluation_results.json and .md.")
    parser.add_argument("--batch_size", type=int, default=8, help="Clips per forward pass.")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="Model weights' dtype.")
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
        "--chunk_length_s",
        type=float,
        default=DEFAULT_CHUNK_LENGTH_S,
        help="Clips longer than this many seconds run in overlapping windows of this length (memory stays flat); "
        "0 runs every clip in one pass.",
    )
    parser.add_argument(
        "--stride_length_s",
        type=float,
        default=None,
        help="Context on each side of a window whose logits are dropped (default: chunk_length_s / 6).",
    )
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="Processes for LM decoding.")
    parser.add_argument("--num_examples", type=int, default=3, help="Transcripts printed per dataset.")
    parser.add_argument(
        "--update_model_card", action="store_true", help="Add the results to the model directory's README.md."
    )
    add_trust_remote_code(parser)
    add_deprecated_alias(parser, "--split", "--eval_split_name")
    add_deprecated_alias(parser, "--max_samples", "--max_eval_samples")
    return parser


def main(argv: list[str] | None = None) -> dict[str, dict[str, float | None]]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.dataset_name or args.data_dir):
        parser.error("give --dataset_name (Hub datasets or local folders) or --data_dir (a local audiofolder)")
    logging.basicConfig(format="%(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    splits = eval_dataset_splits(args)
    decoder_params = {
        name: getattr(args, name) for name in ("alpha", "beta", "unk_score_offset") if getattr(args, name) is not None
    }
    results = evaluate_model(
        args.model_name_or_path,
        splits,
        lm_dir=args.lm_dir,
        use_lm=not args.no_lm,
        batch_size=args.batch_size,
        beam_width=args.beam_width,
        num_workers=args.num_workers,
        dtype=args.dtype,
        token_min_logp=args.token_min_logp,
        decoder_params=decoder_params,
        num_examples=args.num_examples,
        trust_remote_code=args.trust_remote_code,
        chunk_length_s=args.chunk_length_s,
        stride_length_s=args.stride_length_s,
    )
    table = markdown_table(results)
    print(table)
    if args.output_dir:
        write_results(args.output_dir, "evaluation", results)
        Path(args.output_dir, "evaluation_results.md").write_text(table + "\n", encoding="utf-8")
    if args.update_model_card:
        if not os.path.isdir(args.model_name_or_path):
            raise ValueError("--update_model_card needs a local model directory.")
        update_model_card(args.model_name_or_path, results, splits)
    return results


if __name__ == "__main__":
    run_script(main)
