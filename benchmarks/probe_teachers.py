#!/usr/bin/env python
"""How much does each stand-in teacher know? A frozen-feature probe (`distilxlsr_pt/probe.py`): a linear CTC head on
the teacher's layer-12 features, trained on the first 150 labelled clips of the demo corpus's training split (the
demo's fine-tuning labels), scored on the test split (held-out speakers). Compared: a random-weight teacher of the
same architecture, the supervised stand-in and the self-supervised stand-in (HuBERT's second iteration) with its
first iteration, and, as the floor a model must beat, the probe on MFCCs with deltas (iteration 1's k-means input,
standardised per clip; no model, no context beyond the deltas' 9 frames).

    python benchmarks/probe_teachers.py --output_dir benchmarks     # benchmarks/teacher_probe_results.json
    python benchmarks/probe_teachers.py --teachers self-supervised --layer 6 --output_dir outputs/probe-layer-6
    python benchmarks/probe_teachers.py --teachers self-supervised --model_dirs outputs/my-teacher --output_dir outputs/p

The self-supervised teacher's card gets the table (section "Frozen-feature probe").
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the checkout: distilxlsr_pt and the model files

import numpy as np
import torch
from transformers import AutoModel

from distilxlsr_pt.cards import set_card_section
from distilxlsr_pt.cli import argument_parser
from distilxlsr_pt.data import DatasetSplit
from distilxlsr_pt.probe import probe_encoder, probe_features
from distilxlsr_pt.results import write_json
from distilxlsr_pt.ssl_teacher import clip_features, cmvn
from distilxlsr_pt.stand_ins import (
    SELF_SUPERVISED_ITERATION_1_DIR,
    SELF_SUPERVISED_TEACHER_DIR,
    SHIPPED_TEACHER_DIR,
    make_stand_in_teacher,
)

MFCC_BASELINE = "MFCCs with deltas (no model)"

TEACHERS = {
    "random weights": None,
    "supervised": SHIPPED_TEACHER_DIR,
    "self-supervised iteration 1": SELF_SUPERVISED_ITERATION_1_DIR,
    "self-supervised": SELF_SUPERVISED_TEACHER_DIR,
    MFCC_BASELINE: None,
}


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser(__doc__)
    parser.add_argument("--data_dir", default="demo_corpus", help="The demo corpus (default: %(default)s).")
    parser.add_argument("--output_dir", default="benchmarks", help="Where teacher_probe_results.json goes.")
    parser.add_argument("--labelled", type=int, default=150, help="Labelled training clips of the probe.")
    parser.add_argument("--layer", type=int, default=12, help="The teacher layer probed.")
    parser.add_argument("--steps", type=int, default=1500, help="Full-batch Adam steps of the probe.")
    parser.add_argument(
        "--teachers", default=",".join(TEACHERS), help=f"Comma-separated, of: {', '.join(TEACHERS)} (default: all)."
    )
    parser.add_argument(
        "--model_dirs", default="", help="Comma-separated saved encoders to probe as well, each named by its folder."
    )
    args = parser.parse_args(argv)
    names = args.teachers.split(",")
    if unknown := set(names) - set(TEACHERS):
        parser.error(f"--teachers: unknown {sorted(unknown)}; choose from {list(TEACHERS)}")
    model_dirs = {folder: Path(folder) for folder in filter(None, args.model_dirs.split(","))}
    if missing := [folder for folder, path in model_dirs.items() if not (path / "config.json").is_file()]:
        parser.error(f"--model_dirs: no saved model (config.json) in {missing}")
    train = DatasetSplit(data_dir=args.data_dir, split="train", max_samples=args.labelled)
    test = DatasetSplit(data_dir=args.data_dir, split="test")
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in names + list(model_dirs):
            started = time.time()
            if name == MFCC_BASELINE:
                rows[name] = probe_features(standardised_mfccs, train, test, steps=args.steps)
            else:
                path = model_dirs.get(name) or TEACHERS[name]
                path = path or make_stand_in_teacher(Path(scratch) / "random", size="demo", seed=0)
                rows[name] = probe_encoder(AutoModel.from_pretrained(path), train, test, args.layer, steps=args.steps)
            rows[name]["minutes"] = (time.time() - started) / 60
            print(f"{name}: test CER {rows[name]['test_cer']:.3f}, WER {rows[name]['test_wer']:.3f}")
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "layer": args.layer,
        "labelled_train_clips": args.labelled,
        "test_clips": rows[names[0]]["test_clips"],
        "probe_steps": args.steps,
        "teachers": rows,
    }
    write_json(Path(args.output_dir) / "teacher_probe_results.json", results)
    # The card shows the published comparison only: all the teachers at layer 12.
    published = names == list(TEACHERS) and not model_dirs and args.layer == 12
    if published and (SELF_SUPERVISED_TEACHER_DIR / "README.md").exists():
        set_card_section(SELF_SUPERVISED_TEACHER_DIR, "## Frozen-feature probe", probe_table(results))
    print(probe_table(results))
    return results


def standardised_mfccs(audio: list[np.ndarray]) -> list[torch.Tensor]:
    """Iteration 1's MFCCs with deltas, each clip standardised by its own mean and deviation (`cmvn`)."""
    return [torch.from_numpy(cmvn(f)) for f in clip_features(audio)]


def probe_table(results: dict) -> str:
    lines = [
        f"A linear CTC head on frozen layer-{results['layer']} features, trained on {results['labelled_train_clips']} "
        f"labelled clips of the demo corpus, scored on its {results['test_clips']} test clips (held-out speakers), "
        f"greedy decoding; measured {results['date']} (`benchmarks/probe_teachers.py`).",
        "",
        "| teacher (stand-ins, synthetic speech) | test CER | test WER |",
        "|---|---|---|",
    ]
    for name, row in results["teachers"].items():
        lines.append(f"| {name} | {row['test_cer']:.3f} | {row['test_wer']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
