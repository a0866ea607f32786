#!/usr/bin/env python
"""Build the small, synthetic Brazilian Portuguese speech corpus of the offline demo and tests (espeak-ng voices,
audiofolder layout, byte-identical across builds with the same espeak-ng and sox). What it holds and how it is made:
`distilxlsr_pt/demo_corpus.py`.

    python stand_ins/make_demo_corpus.py --output_dir demo_corpus --free_speech_dir demo_free_speech
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: distilxlsr_pt and the model files

from distilxlsr_pt.demo_corpus import SPLITS, build_corpus, build_free_speech_set, build_unlabelled_set


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Build a small synthetic (espeak-ng) Brazilian Portuguese ASR corpus in audiofolder layout, "
        "deterministically and offline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output_dir", required=True, help="folder to write train/, validation/, test/ and README.md")
    parser.add_argument("--num_train", type=int, default=1500, help="number of training clips")
    parser.add_argument("--num_validation", type=int, default=150, help="number of validation clips")
    parser.add_argument("--num_test", type=int, default=150, help="number of test clips (held-out speakers)")
    parser.add_argument("--num_workers", type=int, default=2, help="parallel synthesis processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sentence grammar and split")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if an identical corpus is present")
    parser.add_argument(
        "--lexicon_fraction", type=float, default=1 / 3, help="share of word-list sentences in train and validation"
    )
    parser.add_argument(
        "--num_train_voices", type=int, help="use only the first N training voices (9: corpus version 2's voices)"
    )
    parser.add_argument(
        "--free_speech_dir", help="also build the free-speech test set (sentences outside the grammar) here"
    )
    parser.add_argument(
        "--unlabelled_dir",
        help="also speak more sentences, with no transcripts, here (audio for the self-supervised teacher)",
    )
    parser.add_argument("--num_unlabelled", type=int, default=3000, help="number of untranscribed clips")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    info = build_corpus(
        args.output_dir,
        num_train=args.num_train,
        num_validation=args.num_validation,
        num_test=args.num_test,
        num_workers=args.num_workers,
        seed=args.seed,
        overwrite=args.overwrite,
        lexicon_fraction=args.lexicon_fraction,
        num_train_voices=args.num_train_voices,
    )
    if info["skipped"]:
        print(f"{args.output_dir} already holds this corpus; nothing to do (use --overwrite to rebuild).")
    else:
        print(f"Built {args.output_dir} in {time.perf_counter() - start:.1f} s.")
    for split in SPLITS:
        s = info["splits"][split]
        print(f"  {split:<10} {s['clips']:>5} clips  {s['hours']:.3f} h  speakers: {', '.join(s['speakers'])}")
    print(f"  {info['word_types']} word types; characters: {info['charset']}")
    if args.free_speech_dir:
        free = build_free_speech_set(args.free_speech_dir, num_workers=args.num_workers)
        print(f"  free-speech test set: {free['test']['clips']} clips in {args.free_speech_dir}")
    if args.unlabelled_dir:
        unlabelled = build_unlabelled_set(
            args.unlabelled_dir, args.output_dir, num_clips=args.num_unlabelled, num_workers=args.num_workers
        )
        print(
            f"  untranscribed: {unlabelled['train']['clips']} clips ({unlabelled['train']['hours']:.2f} h) in "
            f"{args.unlabelled_dir}"
        )


if __name__ == "__main__":
    main()
