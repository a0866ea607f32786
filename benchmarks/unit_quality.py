#!/usr/bin/env python
"""What do the self-supervised teacher's targets carry? Each kind of k-means unit (HuBERT's targets) is fitted on the
demo corpus's training audio and judged by its normalised mutual information (NMI, scikit-learn's) with

- the speaker of the clip: lower means less of the voice (the synthetic voices differ in pitch, speed and formants);
- the character that a CTC recogniser emits at that frame: higher means more of the text. This is HuBERT's phone
  purity with the supervised stand-in teacher's CTC spikes (its non-blank frames; test CER 0.067) standing in for a
  forced alignment. The supervised teacher is only read here, to judge units, never to make them.

    python benchmarks/unit_quality.py --output_dir benchmarks     # benchmarks/unit_quality_results.json

No transcript is read (the speaker comes from metadata.csv's speaker_id column).
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the checkout: distilxlsr_pt and the model files

import numpy as np
from sklearn.metrics import normalized_mutual_info_score
from transformers import Wav2Vec2Model

from distilxlsr_pt.cli import argument_parser
from distilxlsr_pt.evaluation import compute_logits
from distilxlsr_pt.models import load_ctc_model
from distilxlsr_pt.results import write_json
from distilxlsr_pt.ssl_teacher import Units, clip_features, load_clips, untranscribed_clips
from distilxlsr_pt.stand_ins import SELF_SUPERVISED_ITERATION_1_DIR, SELF_SUPERVISED_TEACHER_DIR, SHIPPED_TEACHER_DIR

# name: (model folder whose layer is clustered, or None for MFCCs; layer; units; per-clip CMVN)
UNIT_KINDS = {
    "MFCCs, standardised over all clips (iteration 1's targets)": (None, None, 100, False),
    "MFCCs, each clip standardised by itself (--per_clip_cmvn)": (None, None, 100, True),
    "MFCCs, 500 units": (None, None, 500, False),
    "MFCCs, 500 units, each clip standardised by itself": (None, None, 500, True),
    "iteration 1, layer 6, 100 units": (SELF_SUPERVISED_ITERATION_1_DIR, 6, 100, False),
    "iteration 1, layer 6 (iteration 2's targets)": (SELF_SUPERVISED_ITERATION_1_DIR, 6, 500, False),
    "iteration 1, layer 6, each clip standardised by itself": (SELF_SUPERVISED_ITERATION_1_DIR, 6, 500, True),
    "iteration 2, layer 8 (iteration 3's targets)": (SELF_SUPERVISED_TEACHER_DIR, 8, 500, False),
}


def speakers_of(split_dir: Path) -> list[str]:
    with open(split_dir / "metadata.csv", encoding="utf-8", newline="") as file:
        return [row["speaker_id"] for row in csv.DictReader(file)]


def ctc_spikes(model_dir: Path, audio: list[np.ndarray]) -> list[np.ndarray]:
    """Per clip, the token the recogniser in `model_dir` emits at each frame (the greedy argmax of the project's one
    logits path, `evaluation.compute_logits`), -1 where it emits a blank."""
    model, processor = load_ctc_model(model_dir)
    blank = model.config.pad_token_id
    tokens = [logits.argmax(-1) for logits in compute_logits(model, processor, audio)]
    return [np.where(clip == blank, -1, clip) for clip in tokens]


def unit_quality(units: list[np.ndarray], speakers: list[str], spikes: list[np.ndarray]) -> dict[str, float]:
    frame_units = np.concatenate(units)
    frame_speakers = np.concatenate([[speaker] * len(clip) for speaker, clip in zip(speakers, units, strict=True)])
    characters = np.concatenate(spikes)
    spoken = characters >= 0
    return {
        "nmi_speaker": float(normalized_mutual_info_score(frame_speakers, frame_units)),
        "nmi_character": float(normalized_mutual_info_score(characters[spoken], frame_units[spoken])),
        "frames": int(len(frame_units)),
        "character_frames": int(spoken.sum()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser(__doc__)
    parser.add_argument("--split_dir", default="demo_corpus/train", help="Audiofolder split whose audio is clustered.")
    parser.add_argument("--output_dir", default="benchmarks", help="Where unit_quality_results.json goes.")
    args = parser.parse_args(argv)
    split_dir = Path(args.split_dir)
    audio = load_clips(untranscribed_clips([split_dir]))
    speakers = speakers_of(split_dir)
    if len(audio) != len(speakers):
        raise SystemExit(f"{split_dir}: {len(speakers) - len(audio)} clip(s) shorter than one frame; use another split")
    spikes = ctc_spikes(SHIPPED_TEACHER_DIR, audio)
    rows, features = {}, {}
    for name, (model_dir, layer, num_units, per_clip_cmvn) in UNIT_KINDS.items():
        started = time.time()
        key = (model_dir, layer)
        if key not in features:
            model = Wav2Vec2Model.from_pretrained(model_dir) if model_dir else None
            features[key] = clip_features(audio, model, layer)
        units = Units.fit(features[key], num_units=num_units, seed=0, per_clip_cmvn=per_clip_cmvn)
        rows[name] = {
            "num_units": num_units,
            **unit_quality([units.assign(f) for f in features[key]], speakers, spikes),
        }
        rows[name]["seconds"] = time.time() - started
        print(f"{name}: NMI with the speaker {rows[name]['nmi_speaker']:.3f}, with the character "
              f"{rows[name]['nmi_character']:.3f}")  # fmt: skip
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "split_dir": str(split_dir),
        "clips": len(audio),
        "character_labels": f"CTC spikes of {SHIPPED_TEACHER_DIR.relative_to(REPO_ROOT)} (judging only)",
        "units": rows,
    }
    write_json(Path(args.output_dir) / "unit_quality_results.json", results)
    return results


if __name__ == "__main__":
    main()
