#!/usr/bin/env python
"""Add a word n-gram language model to a CTC speech recogniser, the way Portuguese XLSR-53 models on the Hub ship one.

    python add_ngram_lm.py --model_name_or_path outputs/student-ctc --text_file lm_text.txt --lm_order 4 \\
        --output_dir outputs/student-ctc-lm --eval_dataset_name data/demo_corpus --eval_split_name validation

The text (a file with one sentence per line, and/or a column of a dataset) is normalised like the transcripts
(`distilxlsr_pt.text.normalize_text`), a modified Kneser-Ney model is estimated (`distilxlsr_pt/ngram.py`, what KenLM's
`lmplz` does) and written as ARPA, and a `Wav2Vec2ProcessorWithLM` (pyctcdecode decoder: `alphabet.json` and
`language_model/` with the ARPA file, its unigrams and alpha / beta / unk_score_offset) is saved next to a copy of the
model. Then `pipeline("automatic-speech-recognition", model=OUTPUT_DIR, trust_remote_code=True)` decodes with the LM,
and `evaluate_asr.py --model_name_or_path OUTPUT_DIR` scores greedy and LM decoding. `--eval_dataset_name` picks alpha
and beta by WER on an eval split (grid `--alpha_grid` x `--beta_grid`); never tune on the test split you report.
`lm_results.json` records the LM and the tuning.

transformers deprecates LM decoding through the pipeline for v6: the project's evaluation calls pyctcdecode directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from distilxlsr_pt.cli import add_deprecated_alias, add_trust_remote_code, argument_parser, run_script
from distilxlsr_pt.data import DatasetSplit
from distilxlsr_pt.decoding import BEAM_WIDTH
from distilxlsr_pt.lm import build_lm_processor, read_texts

logger = logging.getLogger("add_ngram_lm")


def floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = argument_parser(__doc__)
    parser.add_argument("--model_name_or_path", required=True, help="A fine-tuned CTC model directory.")
    parser.add_argument("--output_dir", required=True, help="Where the model with its LM goes (may be the model's).")
    text = parser.add_argument_group("the LM's text")
    text.add_argument("--text_file", default=None, help="LM text, one sentence per line.")
    text.add_argument("--dataset_name", default=None, help="A Hub dataset (or local folder) with LM text.")
    text.add_argument("--dataset_config_name", default=None, help="Its config.")
    text.add_argument("--train_split_name", default="train", help="Its split with the text.")
    text.add_argument("--text_column_name", default="text", help="Its text column.")
    decoder = parser.add_argument_group("the LM and its decoder")
    decoder.add_argument("--lm_order", type=int, default=4, help="N-gram order.")
    decoder.add_argument("--alpha", type=float, default=0.5, help="LM weight.")
    decoder.add_argument("--beta", type=float, default=1.0, help="Word insertion bonus.")
    decoder.add_argument(
        "--unk_score_offset",
        type=float,
        default=-10.0,
        help="Log score added for words the LM text lacks; less negative lets more through.",
    )
    tune = parser.add_argument_group("tuning alpha, beta and unk_score_offset on an eval split")
    tune.add_argument(
        "--eval_dataset_name", default=None, help="Choose them on this eval set: a local audiofolder or Hub dataset."
    )
    tune.add_argument("--eval_dataset_config_name", default=None, help="Config of the --eval_dataset_name dataset.")
    tune.add_argument("--eval_split_name", default="validation", help="Split of --eval_dataset_name.")
    tune.add_argument("--eval_text_column_name", default="transcription", help="Its transcript column.")
    tune.add_argument("--max_eval_samples", type=int, default=None, help="Tune on the first N clips only.")
    tune.add_argument("--alpha_grid", type=floats, default="0.3,0.5,0.8,1.2", help="Alphas tried.")
    tune.add_argument("--beta_grid", type=floats, default="1,2,3,4", help="Betas tried.")
    tune.add_argument("--unk_score_offset_grid", type=floats, default="-10,-20", help="unk_score_offsets tried.")
    tune.add_argument("--beam_width", type=int, default=BEAM_WIDTH, help="Beam width while tuning.")
    tune.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="Processes for LM decoding.")
    add_trust_remote_code(parser)
    for old, new in (("--order", "--lm_order"), ("--dataset_split", "--train_split_name"),
                     ("--tune_on", "--eval_dataset_name"), ("--tune_config_name", "--eval_dataset_config_name"),
                     ("--tune_split", "--eval_split_name"), ("--tune_text_column_name", "--eval_text_column_name"),
                     ("--max_tune_samples", "--max_eval_samples")):  # fmt: skip
        add_deprecated_alias(parser, old, new)
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if not (args.text_file or args.dataset_name):
        parser.error("give --text_file and/or --dataset_name for the LM text")
    text_split = None
    if args.dataset_name:
        text_split = DatasetSplit(args.dataset_name, args.dataset_config_name, split=args.train_split_name,
                                  audio_column=None, text_column=args.text_column_name)  # fmt: skip
    texts = read_texts(args.text_file, text_split)
    source = " + ".join(filter(None, [args.text_file, text_split and f"{args.dataset_name} ({args.train_split_name})"]))
    tune_on = None
    if args.eval_dataset_name:
        tune_on = DatasetSplit(args.eval_dataset_name, args.eval_dataset_config_name, split=args.eval_split_name,
                               text_column=args.eval_text_column_name, max_samples=args.max_eval_samples)  # fmt: skip
    info = build_lm_processor(
        args.model_name_or_path,
        texts,
        args.output_dir,
        order=args.lm_order,
        alpha=args.alpha,
        beta=args.beta,
        unk_score_offset=args.unk_score_offset,
        tune_on=tune_on,
        alpha_grid=args.alpha_grid,
        beta_grid=args.beta_grid,
        unk_score_offset_grid=args.unk_score_offset_grid,
        num_workers=args.num_workers,
        beam_width=args.beam_width,
        source=source,
        trust_remote_code=args.trust_remote_code,
    )
    print(json.dumps({key: value for key, value in info.items() if key != "trials"}, indent=1, ensure_ascii=False))
    return info


if __name__ == "__main__":
    run_script(main)
