"""
Convert between s3prl distiller checkpoints (DistilHuBERT, arXiv 2110.01900) and DistilXLSR model folders.

    # s3prl -> Hugging Face: a DistilXLSRModel folder (remote code, feature extractor, model card)
    python convert_s3prl_checkpoint.py --s3prl_checkpoint states-200000.ckpt --output_dir distilhubert-hf

    # Hugging Face -> s3prl: a checkpoint that s3prl's `distiller_local` upstream loads (SUPERB's run_downstream.py)
    python convert_s3prl_checkpoint.py --model_name_or_path distilhubert-hf --output_s3prl_checkpoint student.ckpt

An s3prl checkpoint is `{"Config": {"distiller": {...}}, "Distiller": state_dict}` (what s3prl's pre-training
writes and `s3prl.upstream.distiller.expert.UpstreamExpert(path)` reads). Both directions keep the numbers: the same
input gives the same hidden states and layer predictions (tests/test_s3prl.py checks it against s3prl itself). A
field that one side cannot represent is an error naming it, never a silently different model.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from distilxlsr_pt.s3prl import hf_to_s3prl, s3prl_to_hf


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].strip(), formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    to_hf = parser.add_argument_group("s3prl -> Hugging Face")
    to_hf.add_argument("--s3prl_checkpoint", help="An s3prl distiller checkpoint (.ckpt) to convert.")
    to_hf.add_argument("--output_dir", help="Folder to write the DistilXLSRModel into.")
    to_hf.add_argument(
        "--allow_pickle",
        action="store_true",
        help="Load a checkpoint that holds pickled Python objects (old s3prl checkpoints with a scheduler). Runs "
        "code from the file: only for checkpoints you trust.",
    )
    to_s3prl = parser.add_argument_group("Hugging Face -> s3prl")
    to_s3prl.add_argument("--model_name_or_path", help="A DistilXLSRModel folder (or Hub id) to convert.")
    to_s3prl.add_argument("--output_s3prl_checkpoint", help="Path of the s3prl checkpoint to write.")
    args = parser.parse_args(argv)
    if bool(args.s3prl_checkpoint) == bool(args.model_name_or_path):
        parser.error("Give either --s3prl_checkpoint (with --output_dir) or --model_name_or_path.")
    if args.s3prl_checkpoint and not args.output_dir:
        parser.error("--s3prl_checkpoint needs --output_dir.")
    if args.model_name_or_path and not args.output_s3prl_checkpoint:
        parser.error("--model_name_or_path needs --output_s3prl_checkpoint.")
    return args


# --------------------------------------------------------------------------------------------------------------------
# Configs


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    if args.s3prl_checkpoint:
        s3prl_to_hf(args.s3prl_checkpoint, args.output_dir, args.allow_pickle)
    else:
        hf_to_s3prl(args.model_name_or_path, args.output_s3prl_checkpoint)


if __name__ == "__main__":
    main()
