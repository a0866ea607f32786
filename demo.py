"""The whole product on a laptop CPU, offline: demo corpus -> stand-in teacher -> distillation -> CTC fine-tuning -> WER.

    python demo.py            # about 18 minutes on 2 CPU cores
    python demo.py --quick    # a 2-minute smoke run (learns little)

Everything here is a stand-in, and the summary says so: the teacher is a RANDOMLY INITIALISED model of XLSR-53's
architecture family (the real one needs the Hub), and the corpus is SYNTHETIC Brazilian Portuguese speech (espeak-ng).
The same scripts, pointed at facebook/wav2vec2-large-xlsr-53 and real corpora, are the real recipe (see README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent

# Sizes and schedules chosen so that, on 2 CPU cores, the full demo ends in about 18 minutes with test CER below 0.5.
# CTC from scratch on a small corpus: a high learning rate, no dropout or SpecAugment, the conv front end trained
# (the student's comes from a random teacher); measured before choosing: CER 0.23 after 1,200 steps.
# The distillation is short on purpose: the teacher is random, so there is nothing worth inheriting, and a longer
# distillation from it made a worse start for CTC (measured: CTC loss 2.57 vs 1.46 at step 650 after 100 vs 10
# distillation steps): the demo shows the machinery, the held-out cosine rising, and then the recogniser learning.
CTC_RECIPE = ["--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--warmup_steps", "50",
              "--no_freeze_feature_encoder", "--mask_time_prob", "0", "--hidden_dropout", "0", "--attention_dropout",
              "0", "--activation_dropout", "0", "--final_dropout", "0", "--train_sampling_strategy", "group_by_length"]  # fmt: skip
SETTINGS = {
    "full": {
        "distill": ["--max_train_steps", "10", "--per_device_train_batch_size", "4", "--learning_rate", "5e-4",
                    "--max_duration_in_seconds", "4", "--eval_steps", "10", "--logging_steps", "5"],
        "finetune": [*CTC_RECIPE, "--max_steps", "1200", "--eval_steps", "400", "--logging_steps", "50"],
    },
    "quick": {
        "distill": ["--max_train_steps", "10", "--per_device_train_batch_size", "4", "--learning_rate", "5e-4",
                    "--max_duration_in_seconds", "4", "--eval_steps", "10", "--logging_steps", "5"],
        "finetune": [*CTC_RECIPE, "--max_steps", "40", "--eval_steps", "40", "--logging_steps", "10",
                     "--max_eval_samples", "40", "--max_test_samples", "40"],
    },
}  # fmt: skip


def run(command: list[str], log: Path) -> float:
    """Run a stage as its own process (what a user would type), echo it, and return the seconds it took."""
    print("\n$ " + " ".join(command), flush=True)
    started = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in iter(process.stdout.readline, b""):
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            log_file.write(line.decode(errors="replace"))
        if process.wait() != 0:
            raise SystemExit(f"Stage failed (exit {process.returncode}); its log is {log}")
    return time.time() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A ~1.5-minute smoke run instead of the ~18-minute demo.")
    parser.add_argument("--output_dir", default="outputs/demo", help="Where models, cards and logs go.")
    parser.add_argument("--corpus_dir", default="demo_corpus", help="The demo corpus (built here if absent).")
    args = parser.parse_args(argv)
    settings = SETTINGS["quick" if args.quick else "full"]
    output_dir, corpus_dir = Path(args.output_dir), Path(args.corpus_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    timings = {}
    started = time.time()

    from make_demo_corpus import build_corpus
    from make_stand_in_teacher import make_stand_in_teacher

    stage = time.time()
    build_corpus(corpus_dir)
    teacher_dir = output_dir / "stand-in-teacher"
    if not (teacher_dir / "config.json").exists():
        make_stand_in_teacher(teacher_dir, size="demo")
    timings["corpus and stand-in teacher"] = time.time() - stage

    student_dir, asr_dir = output_dir / "student", output_dir / "student-ctc-pt"
    timings["distillation"] = run(
        [
            python,
            "train_distill.py",
            "--teacher_name_or_path",
            str(teacher_dir),
            "--data_dir",
            str(corpus_dir),
            "--output_dir",
            str(student_dir),
            "--overwrite_output_dir",  # a re-run of the demo replaces the previous one
            "--report_to",
            "none",
            "--checkpointing_steps",
            "1000000",
            "--dataloader_num_workers",
            "1",
            *settings["distill"],
        ],
        output_dir / "distill.log",
    )
    timings["CTC fine-tuning and evaluation"] = run(
        [
            python,
            "finetune_ctc.py",
            "--model_name_or_path",
            str(student_dir),
            "--data_dir",
            str(corpus_dir),
            "--output_dir",
            str(asr_dir),
            "--overwrite_output_dir",
            "--report_to",
            "none",
            "--eval_strategy",
            "steps",
            "--save_strategy",
            "no",
            "--dataloader_num_workers",
            "1",
            "--model_card_note",
            "Fine-tuned from a student distilled from a RANDOMLY INITIALISED stand-in teacher, on "
            "a SYNTHETIC espeak-ng corpus: a pipeline demo, not a usable Portuguese recogniser.",
            *settings["finetune"],
        ],
        output_dir / "finetune.log",
    )
    total = time.time() - started

    distill = json.loads((student_dir / "distill_results.json").read_text())
    asr = json.loads((asr_dir / "all_results.json").read_text())
    layers = distill["teacher_layers"]
    print("\n" + "=" * 100)
    print(
        "DistilXLSR-PT demo summary (STAND-INS: random-weight teacher of XLSR-53's family, synthetic espeak-ng corpus)"
    )
    print("=" * 100)
    print(f"teacher (stand-in, random weights): {distill['teacher_parameters']:>12,} parameters  {teacher_dir}")
    print(
        f"student:                            {distill['student_parameters']:>12,} parameters  "
        f"({distill['student_backbone_parameters']:,} without prediction heads)"
    )
    for layer in layers:
        before = distill["initial_eval"][f"eval/cosine_layer_{layer}"]
        after = distill["final_eval"][f"eval/cosine_layer_{layer}"]
        print(f"held-out cosine, teacher layer {layer:>2}: {before:.3f} before -> {after:.3f} after distillation")
    print(f"test WER {asr['test_wer']:.3f}, test CER {asr['test_cer']:.3f} (synthetic speakers held out of training)")
    print(f"validation WER {asr['eval_wer']:.3f}, validation CER {asr['eval_cer']:.3f}")
    for name, seconds in timings.items():
        print(f"time, {name}: {seconds / 60:.1f} min")
    print(f"time, total: {total / 60:.1f} min")
    print(f"distilled student + card: {student_dir}")
    print(f"speech recogniser + processor + card: {asr_dir}")
    print(f"logs: {output_dir / 'distill.log'}, {output_dir / 'finetune.log'}")
    summary = {
        "distill": {k: v for k, v in distill.items() if k != "log_history"},
        "asr": asr,
        "minutes": {k: v / 60 for k, v in timings.items()},
        "total_minutes": total / 60,
    }
    (output_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
