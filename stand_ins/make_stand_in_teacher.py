#!/usr/bin/env python
"""Save a randomly initialised teacher of XLSR-53's architecture family: a stand-in for facebook/wav2vec2-large-xlsr-53
(`distilxlsr_pt/stand_ins.py`). Everything distilled from it is a stand-in result; its card says so.

    python stand_ins/make_stand_in_teacher.py --output_dir teachers/tiny --size tiny
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: distilxlsr_pt and the model files

from distilxlsr_pt.stand_ins import SIZES, make_stand_in_teacher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="Where to save the stand-in teacher.")
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES), help="Teacher size (xlsr53 = exact arch).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random initialisation.")
    args = parser.parse_args(argv)
    path = make_stand_in_teacher(args.output_dir, size=args.size, seed=args.seed)
    print(f"Saved a stand-in teacher ({args.size}, random weights) to {path}")


if __name__ == "__main__":
    main()
