"""The whole product on a laptop CPU, offline, and the test of whether distillation transfers knowledge.

    python demo.py                      # about 20 minutes on 2 CPU cores
    python demo.py --quick              # a 2-minute smoke run (learns little)
    python demo.py --compare_students   # the default student against two slim ones (README: Student shapes)
    python demo.py --equal_compute      # also (c'): the scratch baseline given the distillation's time as steps
    python demo.py --choose_scratch_learning_rate   # the scratch baseline's learning rate, on validation

Stages: the demo corpus and a free-speech test set -> a teacher that knows something -> a 2-layer student distilled
from it on all training audio (no transcripts) -> CTC fine-tuning with 10% of the transcripts, with the same labels,
steps and seed, of (a) the distilled student, (b) the same student initialised from the teacher and not distilled (what
initialisation alone gives) and (c) the same architecture from random weights with its conv front end trained and its
own learning rate (what the labels alone give) -> test WER/CER of each, on the held-out speakers and on free sentences
outside the corpus's grammar, and a learning-curve plot. `--quick` fine-tunes (a) and (c) only.

Everything here is a stand-in, and the summary says so: the teacher is the SUPERVISED STAND-IN of XLSR-53's
architecture family, CTC-trained by this project on every transcript of the corpus (`stand_ins/train_teacher.py`), or
with `--teacher self-supervised` the SELF-SUPERVISED STAND-IN trained on untranscribed audio only
(`stand_ins/train_ssl_teacher.py`, HuBERT's second iteration); both are shipped in teachers/ (the real XLSR-53 needs the
Hub), and the corpus is SYNTHETIC Brazilian Portuguese speech (espeak-ng). The same scripts, pointed at facebook/wav2vec2-large-xlsr-53 and real corpora,
are the real recipe (see README.md).
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from distilxlsr_pt.cards import set_card_section, stand_in_kind
from distilxlsr_pt.results import read_results, write_json
from distilxlsr_pt.stand_ins import SELF_SUPERVISED_TEACHER_DIR, SHIPPED_TEACHER_DIR

REPO_ROOT = Path(__file__).resolve().parent
LABELLED_FRACTION = 0.1  # of the training clips have transcripts for fine-tuning; all of them serve distillation

# One CTC recipe for both students: a high learning rate with a short warm-up, the conv front end frozen (as in
# transformers' fine-tuning recipe; for the scratch student it stays random), light SpecAugment, no dropout. Chosen on
# the validation split with 150 labelled clips (measured, validation CER after 300 steps): front end trained, no
# SpecAugment, 300 distillation steps: 0.153; with SpecAugment 0.05: 0.146; and 500 distillation steps: 0.147; and the
# front end frozen: 0.133 (held-out cosine 0.90 / 0.90 after 300 distillation steps, 0.94 / 0.93 after 500).
CTC_RECIPE = ["--per_device_train_batch_size", "8", "--learning_rate", "2e-3", "--warmup_steps", "60",
              "--freeze_feature_encoder", "--mask_time_prob", "0.05", "--hidden_dropout", "0", "--attention_dropout",
              "0", "--activation_dropout", "0", "--final_dropout", "0", "--feat_proj_dropout", "0",
              "--train_sampling_strategy", "group_by_length", "--seed", "42"]  # fmt: skip
SETTINGS = {
    "full": {
        "distill": ["--max_train_steps", "500", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
                    "--max_duration_in_seconds", "6", "--eval_steps", "500", "--logging_steps", "50"],
        "finetune": [*CTC_RECIPE, "--max_steps", "300", "--eval_steps", "50", "--logging_steps", "50"],
    },
    "quick": {
        "distill": ["--max_train_steps", "10", "--per_device_train_batch_size", "4", "--learning_rate", "5e-4",
                    "--max_duration_in_seconds", "4", "--eval_steps", "10", "--logging_steps", "5",
                    "--max_eval_samples", "20"],
        "finetune": [*CTC_RECIPE, "--max_steps", "40", "--eval_steps", "20", "--logging_steps", "10",
                     "--max_eval_samples", "40", "--max_test_samples", "40"],
    },
}  # fmt: skip
# The students `--compare_students` distils from the shipped teacher (12 layers x 192, 128 conv channels) with the same
# steps and audio, then fine-tunes with the same recipe and labels: the default (DistilHuBERT's shape: the teacher's
# width, 2 layers, heads on the last), a deep-narrow layer-to-layer student (FitHuBERT's shape: 6 layers at half the
# width, layer 2k predicting teacher layer 4k), and the same with a conv front end of half the channels (trained).
DEMO_STUDENTS = {
    "default": ["--teacher_layers", "4,12", "--student_num_hidden_layers", "2", "--freeze_feature_encoder"],
    "deep-narrow": ["--teacher_layers", "4,8,12", "--student_layers", "2,4,6", "--student_num_hidden_layers", "6",
                    "--student_hidden_size", "96", "--freeze_feature_encoder"],
    "deep-narrow-conv64": ["--teacher_layers", "4,8,12", "--student_layers", "2,4,6", "--student_num_hidden_layers",
                           "6", "--student_hidden_size", "96", "--student_conv_dim", "64"],
}  # fmt: skip
# The fair scratch baseline (c): random weights cannot learn through a random frozen front end, so (c) trains it, with
# the learning rate `python demo.py --choose_scratch_learning_rate` picked on the validation split (the lowest
# validation CER after the demo's steps, or where all are on the blank plateau the lowest validation loss;
# benchmarks/scratch_learning_rate_results.json, README: What the demo does).
SCRATCH_LEARNING_RATES = ("5e-4", "1e-3", "2e-3", "5e-3")
SCRATCH_LEARNING_RATE = "1e-3"
PLATEAU_CER = 0.99  # at or above: CTC's blank plateau (nothing or almost nothing output)


# The flag that sets each stage's steps (`SETTINGS`), and how often fine-tuning evaluates: six times a run.
STEP_FLAGS = {"distill": "--max_train_steps", "finetune": "--max_steps"}


def finetune_eval_steps(steps: int) -> int:
    return max(1, steps // 6)


def with_steps(settings: dict, distill_steps: int | None = None, finetune_steps: int | None = None) -> dict:
    """`settings` with other distillation or fine-tuning step counts, the same for every student, so the controls keep
    their equal budget. As in the defaults, fine-tuning evaluates six times a run and distillation at its end."""
    settings = {stage: list(flags) for stage, flags in settings.items()}
    for stage, steps in (("distill", distill_steps), ("finetune", finetune_steps)):
        if steps is None:
            continue
        if steps < 1:
            raise ValueError(f"--{stage}_steps must be at least 1, not {steps}")
        eval_steps = finetune_eval_steps(steps) if stage == "finetune" else steps
        for name, value in ((STEP_FLAGS[stage], steps), ("--eval_steps", eval_steps)):
            settings[stage][settings[stage].index(name) + 1] = str(value)
    return settings


def steps_of(settings: dict, stage: str) -> int:
    """The steps `settings` gives `stage` ("distill" or "finetune")."""
    flags = settings[stage]
    return int(flags[flags.index(STEP_FLAGS[stage]) + 1])


def scratch_flags(learning_rate: str) -> list[str]:
    """finetune_ctc.py flags that turn the demo's CTC recipe into (c)'s: front end trained, its own learning rate."""
    return ["--no_freeze_feature_encoder", "--learning_rate", learning_rate]


SCRATCH_FLAGS = scratch_flags(SCRATCH_LEARNING_RATE)
# What the fine-tuned students are (demo_summary.json keys and names), for the table, the plot and the cards.
ASR_KEYS = {
    "distilled": "asr",
    "teacher_init": "teacher_init_asr",
    "scratch": "scratch_asr",
    "scratch_equal_compute": "scratch_equal_compute_asr",
}  # demo_summary.json; fmt: skip
CONTROL_NAMES = {
    "distilled": "(a) distilled student",
    "teacher_init": "(b) teacher-initialised, not distilled",
    "scratch": "(c) from scratch, front end trained",
    "scratch_equal_compute": "(c') as (c), with the distillation's time as extra steps",
}
# The demo's teachers (`--teacher`), both shipped in teachers/ and trained here when missing.
TEACHER_DIRS = {"self-supervised": SELF_SUPERVISED_TEACHER_DIR, "supervised": SHIPPED_TEACHER_DIR}
# The supervised one stays the default: distilled from the self-supervised one, the student reached test CER 0.483
# against the supervised teacher's 0.130 (README: The self-supervised stand-in teacher; issue 21's targets not met).
DEFAULT_TEACHER = "supervised"
LABELS_NOTES = {
    "supervised": 'The supervised stand-in teacher was trained on all 1,500 training transcripts: "150 labelled '
    "clips\" describes the students' fine-tuning only, and what (a) and (b) inherit from the teacher includes those "
    "labels.",
    "self-supervised": "The self-supervised stand-in teacher read no transcript (it learnt from the training audio and "
    "3,000 untranscribed clips): the 150 labelled clips are the only transcripts any model here was trained on.",
}
STAND_IN_TEACHERS = {
    "supervised": "a SUPERVISED stand-in teacher of XLSR-53's family (trained by stand_ins/train_teacher.py, not "
    "XLSR-53)",
    "self-supervised": "a SELF-SUPERVISED stand-in teacher of XLSR-53's family (untranscribed audio only, "
    "stand_ins/train_ssl_teacher.py, not XLSR-53)",
}


def labels_note(kind: str) -> str:
    return LABELS_NOTES.get(kind, "The teacher is a stand-in: what it learnt from is on its card.")


def stand_in_note(kind: str) -> str:
    """The line that names every stand-in of a demo run with teacher kind `kind`."""
    return f"STAND-INS: {STAND_IN_TEACHERS.get(kind, 'a stand-in teacher (not XLSR-53)')}, a SYNTHETIC espeak-ng corpus"


def teacher_kind(teacher_dir: Path) -> str:
    """The stand-in kind its card names ("self-supervised", "supervised", ...)."""
    return stand_in_kind(teacher_dir) or "stand-in"


def run(command: list[str], log: Path) -> float:
    """Run a stage as its own process (what a user would type), echo it, and return the seconds it took."""
    print("\n$ " + " ".join(command), flush=True)
    started = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w", encoding="utf-8") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
        for chunk in iter(lambda: process.stdout.read1(65536), b""):  # not by line: progress bars end in \r
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            log_file.write(decoder.decode(chunk))
        if process.wait() != 0:
            raise SystemExit(f"Stage failed (exit {process.returncode}); its log is {log}")
    return time.time() - started


def build_data(corpus_dir: Path, free_speech_dir: Path) -> dict:
    """The demo corpus and the free-speech test set (seconds; skipped when already built)."""
    from distilxlsr_pt.demo_corpus import build_corpus, build_free_speech_set

    info = build_corpus(corpus_dir)
    build_free_speech_set(free_speech_dir)
    return info


def ensure_teacher(args: argparse.Namespace, log: Path) -> float:
    """The shipped stand-in teacher of `--teacher`, or train it as it was made when it is missing."""
    teacher_dir, corpus_dir = Path(args.teacher_dir), Path(args.corpus_dir)
    if (teacher_dir / "config.json").exists():
        print(f"\nTeacher: {teacher_dir} (shipped; remake it with the commands in its README.md)")
        return 0.0
    if args.teacher == "self-supervised":
        return train_self_supervised_teacher(teacher_dir, corpus_dir, Path(args.unlabelled_dir), log)
    return train_supervised_teacher(teacher_dir, corpus_dir, log)


def train_self_supervised_teacher(teacher_dir: Path, corpus_dir: Path, unlabelled_dir: Path, log: Path) -> float:
    """The self-supervised stand-in as it was made: untranscribed clips spoken, HuBERT's first iteration on them and
    the training audio (MFCC units; about 55 minutes on 2 CPU cores) unless it is there, then the second (units of the
    first one's layer 6, starting from its weights; about 50 minutes)."""
    from distilxlsr_pt.demo_corpus import build_unlabelled_set
    from distilxlsr_pt.stand_ins import (
        SELF_SUPERVISED_ARGS,
        SELF_SUPERVISED_ITERATION_1_DIR,
        SELF_SUPERVISED_ITERATION_2_ARGS,
        SELF_SUPERVISED_UNLABELLED_CLIPS,
    )

    iteration_1 = (SELF_SUPERVISED_ITERATION_1_DIR if teacher_dir.resolve() == SELF_SUPERVISED_TEACHER_DIR.resolve()
                   else teacher_dir.with_name(f"{teacher_dir.name}-iteration-1"))  # fmt: skip
    build_unlabelled_set(unlabelled_dir, corpus_dir, num_clips=SELF_SUPERVISED_UNLABELLED_CLIPS)
    common = ["--audio_dirs", str(corpus_dir / "train"), str(unlabelled_dir / "train"), "--eval_dir",
             str(corpus_dir / "validation"), "--resume_from_checkpoint", "latest"]  # fmt: skip
    seconds = 0.0
    if not (iteration_1 / "config.json").exists():
        seconds += run([sys.executable, "stand_ins/train_ssl_teacher.py", "--output_dir", str(iteration_1), *common,
                        *SELF_SUPERVISED_ARGS], log.with_suffix(".iteration-1.log"))  # fmt: skip
    return seconds + run([sys.executable, "stand_ins/train_ssl_teacher.py", "--output_dir", str(teacher_dir), *common,
                          "--target_model_dir", str(iteration_1), "--init_model_dir", str(iteration_1),
                          *SELF_SUPERVISED_ITERATION_2_ARGS], log)  # fmt: skip


def train_supervised_teacher(teacher_dir: Path, corpus_dir: Path, log: Path) -> float:
    """The supervised stand-in as it was made (first on 9 voices, then on all; about 75 minutes on 2 CPU cores)."""
    from distilxlsr_pt.demo_corpus import build_corpus
    from distilxlsr_pt.stand_ins import SHIPPED_STAGE_1_VOICES, SHIPPED_STAGE_2_ARGS

    few_voices_corpus = corpus_dir.with_name(f"{corpus_dir.name}_{SHIPPED_STAGE_1_VOICES}_voices")
    stage_1 = teacher_dir.with_name(f"{teacher_dir.name}-stage-1")
    build_corpus(few_voices_corpus, num_train_voices=SHIPPED_STAGE_1_VOICES)
    seconds = run([sys.executable, "stand_ins/train_teacher.py", "--data_dir", str(few_voices_corpus),
                   "--output_dir", str(stage_1)], log.with_suffix(".stage-1.log"))  # fmt: skip
    return seconds + run([sys.executable, "stand_ins/train_teacher.py", "--data_dir", str(corpus_dir), "--init_from",
                          str(stage_1), "--output_dir", str(teacher_dir), *SHIPPED_STAGE_2_ARGS], log)  # fmt: skip


def distill(
    teacher_dir: Path, corpus_dir: Path, student_dir: Path, settings: dict, log: Path, student: str = "default"
) -> float:
    """Distil a `DEMO_STUDENTS` student (by default 2 layers, teacher layers 4 and 12) on all training audio; no
    transcript is read."""
    command = ["train_distill.py", "--teacher_name_or_path", str(teacher_dir), "--data_dir", str(corpus_dir),
               "--output_dir", str(student_dir), "--overwrite_output_dir", *DEMO_STUDENTS[student],
               "--report_to", "none", "--checkpointing_steps", "1000000", "--dataloader_num_workers", "1",
               *settings["distill"]]  # fmt: skip
    return run([sys.executable, *command], log)


def make_scratch_student(student_dir: Path, scratch_dir: Path, seed: int = 42) -> None:
    """(c): the distilled student's architecture with random weights."""
    import torch

    from modeling_distilxlsr import DistilXLSRModel

    torch.manual_seed(seed)
    scratch = DistilXLSRModel(DistilXLSRModel.config_class.from_pretrained(student_dir))
    scratch.config.teacher_name_or_path = None
    scratch.save_pretrained(scratch_dir)


def make_teacher_init_student(teacher_dir: Path, student_dir: Path, control_dir: Path, seed: int = 42) -> None:
    """(b): the distilled student's architecture initialised from the teacher as train_distill.py initialises it
    (`DistilXLSRModel.from_teacher`: front end, projection, positional conv and first layers), without a single step of
    distillation. Its prediction heads are random, and fine-tuning drops them."""
    import torch
    from transformers import AutoModel

    from modeling_distilxlsr import DistilXLSRModel

    teacher = AutoModel.from_pretrained(teacher_dir)
    torch.manual_seed(seed)
    control = DistilXLSRModel.from_teacher(teacher, DistilXLSRModel.config_class.from_pretrained(student_dir))
    control.save_pretrained(control_dir)


def write_lm_text(corpus_dir: Path, path: Path) -> Path:
    """The n-gram LM's text: the transcripts of the training split only (no validation or test sentence)."""
    import csv

    with open(corpus_dir / "train" / "metadata.csv", encoding="utf-8", newline="") as file:
        path.write_text("\n".join(row["transcription"] for row in csv.DictReader(file)) + "\n", encoding="utf-8")
    return path


def finetune(
    model_dir: Path, corpus_dir: Path, asr_dir: Path, labelled: int, settings: dict, note: str, log: Path, *extra: str
) -> float:
    """CTC fine-tuning on the first `labelled` training clips (the rest of the corpus stays unlabelled)."""
    from distilxlsr_pt.cli import precision_flags

    command = ["finetune_ctc.py", "--model_name_or_path", str(model_dir), "--data_dir", str(corpus_dir),
               "--output_dir", str(asr_dir), "--overwrite_output_dir", "--max_train_samples", str(labelled),
               "--report_to", "none", "--eval_strategy", "steps", "--save_strategy", "no",
               "--dataloader_num_workers", "1", "--model_card_note", note, *precision_flags(),
               *settings["finetune"], *extra]  # fmt: skip
    return run([sys.executable, *command], log)


def score_free_speech(asr_dir: Path, free_speech_dir: Path) -> dict:
    """Greedy WER/CER of a fine-tuned recogniser on the free-speech set (sentences and voices outside the corpus),
    scored in this process (`distilxlsr_pt.evaluation.evaluate_model`, what `evaluate_asr.py` runs)."""
    from distilxlsr_pt.data import DatasetSplit
    from distilxlsr_pt.evaluation import evaluate_model

    split = DatasetSplit(data_dir=str(free_speech_dir), split="test")
    result = evaluate_model(str(asr_dir), [split], use_lm=False, num_examples=1)[split.label]
    return {"free_wer": result["wer"], "free_cer": result["cer"]}


def learning_curve(asr_dir: Path) -> list[tuple[int, float]]:
    """(step, validation CER) pairs of a fine-tuning run, from the Trainer's log history."""
    history = json.loads((asr_dir / "trainer_state.json").read_text())["log_history"]
    return [(entry["step"], entry["eval_cer"]) for entry in history if "eval_cer" in entry]


def plot_learning_curves(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path:
    """One line per model: validation CER against the fine-tuning step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, points in curves.items():
        axes.plot([s for s, _ in points], [c for _, c in points], marker="o", label=name)
    axes.set(xlabel="CTC fine-tuning step", ylabel="validation CER", title=title, ylim=(0, None))
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def comparison_table(summary: dict) -> str:
    """The side-by-side table, as markdown: the same text goes to the terminal, the card and the README."""
    lines = [
        f"| model ({summary['labelled_train_clips']} of {summary['train_clips']} training clips labelled) "
        "| held-out cosine before fine-tuning | test WER | test CER | free-speech WER | free-speech CER |",
        "|---|---|---|---|---|---|",
    ]
    for key, name in CONTROL_NAMES.items():
        if ASR_KEYS[key] not in summary:
            continue
        asr, cosine = summary[ASR_KEYS[key]], summary["held_out_cosine"].get(key)
        cosines = ", ".join(f"{value:.3f}" for value in cosine.values()) if cosine else ""
        lines.append(
            f"| {name} | {cosines} | {asr['test_wer']:.3f} | {asr['test_cer']:.3f} | {asr['free_wer']:.3f} "
            f"| {asr['free_cer']:.3f} |"
        )
    teacher = summary["teacher"]
    if "test_cer" in teacher:
        lines.append(
            f"| teacher ({teacher['teacher_kind']} stand-in, all {summary['train_clips']} clips labelled) | "
            f"| {teacher['test_wer']:.3f} | {teacher['test_cer']:.3f} | | |"
        )
    return "\n".join(lines)


def add_comparison_to_card(asr_dir: Path, table: str, plot: Path, kind: str) -> None:
    """Append the comparison with the controls, with the plot, to the fine-tuned model's card."""
    shutil.copy(plot, asr_dir / plot.name)
    set_card_section(
        asr_dir,
        f"## Distilled vs its controls ({stand_in_note(kind)})",
        f"{table}\n\n{labels_note(kind)}\n\n![learning curves]({plot.name})",
    )


def print_summary(summary: dict, table: str, paths: dict) -> None:
    distill, teacher = summary["distill"], summary["teacher"]
    print("\n" + "=" * 110)
    print(f"DistilXLSR-PT demo summary ({summary['stand_ins']})")
    print("=" * 110)
    print(
        f"teacher ({teacher['teacher_kind']} stand-in): {distill['teacher_parameters']:>12,} parameters  {paths['teacher']}"
    )
    print(
        f"student:                       {distill['student_parameters']:>12,} parameters  "
        f"({distill['student_backbone_parameters']:,} without prediction heads)"
    )
    for layer in distill["teacher_layers"]:
        before = distill["initial_eval"][f"eval/cosine_layer_{layer}"]
        after = distill["final_eval"][f"eval/cosine_layer_{layer}"]
        print(f"held-out cosine, teacher layer {layer:>2}: {before:.3f} before -> {after:.3f} after distillation")
    print("\n" + table + "\n")
    print("test = held-out synthetic speakers and sentences; free speech = sentences outside the grammar, new voices")
    print(summary["labels_note"])
    asr = summary["asr"]
    if "test_wer_lm" in asr:
        print(
            f"distilled student with a 4-gram LM of the training transcripts, test split: WER {asr['test_wer_greedy']:.3f}"
            f" -> {asr['test_wer_lm']:.3f}, CER {asr['test_cer_greedy']:.3f} -> {asr['test_cer_lm']:.3f} (greedy -> LM)"
        )
    for name, minutes in summary["minutes"].items():
        print(f"time, {name}: {minutes:.1f} min")
    print(f"time, total: {summary['total_minutes']:.1f} min")
    for name, path in paths.items():
        print(f"{name}: {path}")


def student_cost(student_dir: Path) -> dict:
    """A distilled student's size and its backbone's GFLOP per second of audio (FlopCounterMode on 10 s)."""
    import torch

    from distilxlsr_pt.inference import forward_gflop
    from modeling_distilxlsr import DistilXLSRModel

    student = DistilXLSRModel.from_pretrained(student_dir).eval()
    gflop = forward_gflop(student, torch.zeros(1, 160_000), return_layer_predictions=False) / 10
    backbone = sum(p.numel() for n, p in student.named_parameters() if not n.startswith("prediction_heads"))
    return {"gflop_per_audio_second": gflop, "backbone_parameters": backbone}


def prepare_run(args: argparse.Namespace) -> tuple[Path, Path, Path, int]:
    """The output folder, the demo corpus and free-speech set (built if absent) and the teacher (trained if absent) of
    a run that starts from them; returns the three folders and how many training clips are labelled."""
    output_dir, corpus_dir, free_dir = Path(args.output_dir), Path(args.corpus_dir), Path(args.free_speech_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    corpus = build_data(corpus_dir, free_dir)
    ensure_teacher(args, output_dir / "teacher.log")
    return output_dir, corpus_dir, free_dir, round(LABELLED_FRACTION * corpus["splits"]["train"]["clips"])


def compare_students(args: argparse.Namespace, settings: dict) -> dict:
    """`--compare_students`: each `DEMO_STUDENTS` student distilled with the same steps and audio, fine-tuned with
    the same recipe and labels, scored on the test split and the free-speech set; `compare_students.json` and a
    table."""
    output_dir, corpus_dir, free_dir, labelled = prepare_run(args)
    note = stand_in_note(teacher_kind(Path(args.teacher_dir)))
    rows = {}
    for name in DEMO_STUDENTS:
        student_dir, asr_dir = output_dir / name, output_dir / f"{name}-ctc-pt"
        distill_seconds = distill(Path(args.teacher_dir), corpus_dir, student_dir, settings,
                                  output_dir / f"distill-{name}.log", student=name)  # fmt: skip
        finetune_seconds = finetune(student_dir, corpus_dir, asr_dir, labelled, settings,
                                    f"Student shape {name!r} of the demo's comparison ({note}).",
                                    output_dir / f"finetune-{name}.log")  # fmt: skip
        free = score_free_speech(asr_dir, free_dir)
        distilled, asr = read_results(student_dir, "distill"), read_results(asr_dir, "all")
        rows[name] = {
            "flags": DEMO_STUDENTS[name],
            "student_shape": distilled["student_shape"],
            "parameters": distilled["student_parameters"],
            **student_cost(student_dir),
            "held_out_cosine": {
                layer: distilled["final_eval"][f"eval/cosine_layer_{layer}"] for layer in distilled["teacher_layers"]
            },
            "test_wer": asr["test_wer"], "test_cer": asr["test_cer"],
            "free_speech_wer": free["free_wer"], "free_speech_cer": free["free_cer"],
            "distill_minutes": distill_seconds / 60, "finetune_minutes": finetune_seconds / 60,
        }  # fmt: skip
    summary = {"stand_ins": note, "labelled_train_clips": labelled, "students": rows}
    write_json(output_dir / "compare_students.json", summary)
    print("\n" + students_table(summary))
    return summary


def students_table(summary: dict) -> str:
    """The `--compare_students` table, as markdown."""
    lines = [
        "| student | parameters | GFLOP / s of audio | held-out cosine (teacher layer) | test WER | test CER "
        "| free-speech CER | distillation | fine-tuning |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary["students"].items():
        cosines = ", ".join(f"{cosine:.3f} ({layer})" for layer, cosine in row["held_out_cosine"].items())
        lines.append(
            f"| {name} | {row['parameters']:,} | {row['gflop_per_audio_second']:.3f} | {cosines} | "
            f"{row['test_wer']:.3f} | {row['test_cer']:.3f} | {row['free_speech_cer']:.3f} | "
            f"{row['distill_minutes']:.1f} min | {row['finetune_minutes']:.1f} min |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A ~2-minute smoke run instead of the full demo.")
    parser.add_argument("--output_dir", default="outputs/demo", help="Where models, cards, plot and logs go.")
    parser.add_argument("--corpus_dir", default="demo_corpus", help="The demo corpus (built here if absent).")
    parser.add_argument("--free_speech_dir", default="demo_free_speech", help="The free-speech test set (built here).")
    parser.add_argument(
        "--teacher",
        default=DEFAULT_TEACHER,
        choices=sorted(TEACHER_DIRS),
        help="Which stand-in teacher to distil: supervised (CTC on every transcript of the corpus) or self-supervised "
        "(untranscribed audio only, as XLSR-53; its students are weaker here: README).",
    )
    parser.add_argument(
        "--teacher_dir", help="The teacher's folder (trained here if absent); default: --teacher's, in teachers/."
    )
    parser.add_argument(
        "--unlabelled_dir",
        default="demo_unlabelled",
        help="Untranscribed clips for training the self-supervised teacher.",
    )
    parser.add_argument(
        "--compare_students",
        action="store_true",
        help="Instead of the demo: distil, fine-tune and score each of DEMO_STUDENTS (the default and two slim "
        "shapes) with the same recipe (--output_dir defaults to outputs/compare-students; about 1 hour on 2 cores).",
    )
    parser.add_argument(
        "--choose_scratch_learning_rate",
        action="store_true",
        help="Instead of the demo: fine-tune the scratch student of an earlier run in --output_dir at each of "
        "SCRATCH_LEARNING_RATES (front end trained) and report their validation CER (about 15 minutes on 2 cores).",
    )
    parser.add_argument(
        "--equal_compute",
        action="store_true",
        help="Also fine-tune (c') the scratch baseline for as many extra steps as fit the distillation's time "
        "(equal compute; about 10 more minutes on 2 cores).",
    )
    parser.add_argument(
        "--finetune_teacher",
        action="store_true",
        help="Instead of the demo: fine-tune the teacher itself (every layer) with the students' recipe, labels and "
        "steps, the ceiling of what its students can inherit (--output_dir defaults to outputs/teacher-finetuned).",
    )
    parser.add_argument("--distill_steps", type=int, help="Distillation steps (default: 500; --quick: 10).")
    parser.add_argument(
        "--finetune_steps",
        type=int,
        help="CTC fine-tuning steps of every student, the controls included (default: 300; --quick: 40).",
    )
    args = parser.parse_args(argv)
    args.teacher_dir = args.teacher_dir or str(TEACHER_DIRS[args.teacher])
    try:
        settings = with_steps(SETTINGS["quick" if args.quick else "full"], args.distill_steps, args.finetune_steps)
    except ValueError as error:
        parser.error(str(error))
    if args.choose_scratch_learning_rate:
        return choose_scratch_learning_rate(args, settings)
    if args.finetune_teacher:
        if args.output_dir == parser.get_default("output_dir"):
            args.output_dir = "outputs/teacher-finetuned"
        return finetune_teacher(args, settings)
    if args.compare_students:
        if args.output_dir == parser.get_default("output_dir"):
            args.output_dir = "outputs/compare-students"
        return compare_students(args, settings)
    return run_demo(args, settings)


def finetune_controls(
    args: argparse.Namespace, settings: dict, dirs: dict, labelled: int, lm_text: Path, minutes: dict, kind: str
) -> dict[str, Path]:
    """CTC fine-tuning of (a), (b) and (c) (`--quick`: (a) and (c)) with the same labels, steps and seed; (c) trains its
    front end at its own learning rate; `--equal_compute` adds (c'). Returns each recogniser's folder."""
    notes = {
        "distilled": f"Fine-tuned from a student distilled from a {kind} stand-in teacher",
        "teacher_init": f"Control (b) of the distillation demo: the student initialised from a {kind} stand-in "
        "teacher and not distilled, fine-tuned",
        "scratch": "Control (c) of the distillation demo: the student's architecture from random weights (front end "
        f"trained, learning rate {SCRATCH_LEARNING_RATE}), trained",
    }
    extra = {
        "distilled": ["--lm_text_file", str(lm_text)] if not args.quick else [],
        "teacher_init": [],
        "scratch": SCRATCH_FLAGS,
    }
    keys = ["distilled", "scratch"] if args.quick else ["distilled", "teacher_init", "scratch"]
    if args.equal_compute:
        keys.append("scratch_equal_compute")
    asr_dirs = {}
    for key in keys:
        if key == "scratch_equal_compute":  # its steps come from (c)'s measured speed
            steps = equal_compute_steps(asr_dirs["scratch"], minutes["distillation"])
            notes[key] = (f"Control (c') of the distillation demo: (c) trained for {steps} steps, as many as fit the "
                          "time of the distillation and (c)'s own steps")  # fmt: skip
            extra[key] = [*SCRATCH_FLAGS, "--max_steps", str(steps), "--eval_steps", str(finetune_eval_steps(steps))]
        asr_dirs[key] = dirs["output"] / f"{key.replace('_', '-')}-ctc-pt"
        note = (f"{notes[key]} with {labelled} labelled clips of a SYNTHETIC espeak-ng corpus: a demo, not a usable "
                "Portuguese recogniser.")  # fmt: skip
        minutes[f"fine-tuning, {CONTROL_NAMES[key]}"] = (
            finetune(dirs[key], dirs["corpus"], asr_dirs[key], labelled, settings, note,
                     dirs["output"] / f"finetune-{key}.log", *extra[key]) / 60
        )  # fmt: skip
    return asr_dirs


def equal_compute_steps(scratch_asr_dir: Path, distillation_minutes: float) -> int:
    """(c)'s steps plus as many more as fit the distillation's time, at (c)'s measured seconds per step."""
    trained = read_results(scratch_asr_dir, "train")
    steps = json.loads((scratch_asr_dir / "trainer_state.json").read_text())["global_step"]
    return steps + round(distillation_minutes * 60 / (trained["train_runtime"] / steps))


def choose_scratch_learning_rate(args: argparse.Namespace, settings: dict) -> dict:
    """`--choose_scratch_learning_rate`: fine-tune the scratch student of an earlier demo run (`--output_dir`) at each
    of `SCRATCH_LEARNING_RATES`, front end trained, with the demo's labels and steps, and report the validation CER of
    each (the test split plays no part in the choice); `scratch_learning_rate.json`."""
    output_dir, corpus_dir = Path(args.output_dir), Path(args.corpus_dir)
    scratch_dir = output_dir / "scratch-student"
    if not (scratch_dir / "config.json").exists():
        raise SystemExit(f"No scratch student in {scratch_dir}: run `python demo.py --output_dir {output_dir}` first.")
    corpus = build_data(corpus_dir, Path(args.free_speech_dir))
    labelled = round(LABELLED_FRACTION * corpus["splits"]["train"]["clips"])
    rows = {}
    for learning_rate in SCRATCH_LEARNING_RATES:
        asr_dir = output_dir / f"scratch-lr-{learning_rate}"
        if (asr_dir / "all_results.json").exists():  # a trial an earlier call finished
            print(f"\nLearning rate {learning_rate}: read from {asr_dir}")
        else:
            finetune(scratch_dir, corpus_dir, asr_dir, labelled, settings, f"Learning-rate trial {learning_rate} of "
                     f"control (c) ({stand_in_note(teacher_kind(Path(args.teacher_dir)))}).", output_dir / f"scratch-lr-{learning_rate}.log",
                     *scratch_flags(learning_rate), "--do_train", "--do_eval")  # fmt: skip
        curve, evaluation = learning_curve(asr_dir), read_results(asr_dir, "eval")
        rows[learning_rate] = {
            "final_eval_cer": curve[-1][1],
            "final_eval_loss": evaluation["eval_loss"],
            "best_eval_cer": min(c for _, c in curve),
            "curve": curve,
        }
    # The lowest validation CER; on CTC's blank plateau (CER 0.99 or more, where 0.999 and 1.000 are noise) the lowest
    # validation loss, the nearest way off it.
    chosen = min(rows, key=lambda lr: (min(rows[lr]["final_eval_cer"], PLATEAU_CER), rows[lr]["final_eval_loss"]))
    note = stand_in_note(teacher_kind(Path(args.teacher_dir)))
    summary = {"stand_ins": note, "labelled_train_clips": labelled, "learning_rates": rows, "chosen": chosen}
    write_json(output_dir / "scratch_learning_rate.json", summary)
    for learning_rate, row in rows.items():
        print(f"learning rate {learning_rate}: validation CER {row['final_eval_cer']:.3f} at the last step "
              f"(best {row['best_eval_cer']:.3f}), validation loss {row['final_eval_loss']:.3f}")  # fmt: skip
    print(f"chosen (lowest final validation CER, or below {PLATEAU_CER} none: lowest validation loss): {chosen}")
    return summary


def finetune_teacher(args: argparse.Namespace, settings: dict) -> dict:
    """`--finetune_teacher`: the teacher itself (every layer, a new CTC head) fine-tuned with the students' recipe,
    labels and steps, scored on the test split and the free-speech set: about the most that a student distilled from
    it can inherit; `teacher_finetuned.json`."""
    output_dir, corpus_dir, free_dir, labelled = prepare_run(args)
    kind, asr_dir = teacher_kind(Path(args.teacher_dir)), output_dir / "teacher-ctc-pt"
    note = (f"The {kind} stand-in teacher itself (every layer) fine-tuned with the demo students' recipe and {labelled} "
            "labelled clips of a SYNTHETIC espeak-ng corpus: the ceiling of its students, not a usable recogniser.")  # fmt: skip
    seconds = finetune(Path(args.teacher_dir), corpus_dir, asr_dir, labelled, settings, note,
                       output_dir / "finetune-teacher.log")  # fmt: skip
    asr = {**read_results(asr_dir, "all"), **score_free_speech(asr_dir, free_dir)}
    summary = {
        "stand_ins": stand_in_note(kind),
        "teacher_dir": args.teacher_dir,
        "labelled_train_clips": labelled,
        "finetune_steps": steps_of(settings, "finetune"),
        "teacher_finetuned_asr": {key: asr[key] for key in ("test_wer", "test_cer", "free_wer", "free_cer")},
        "learning_curve": learning_curve(asr_dir),
        "minutes": seconds / 60,
    }
    write_json(output_dir / "teacher_finetuned.json", summary)
    print(f"\nThe {kind} stand-in teacher fine-tuned with {labelled} labelled clips, {summary['finetune_steps']} steps "
          f"(the students' recipe): test CER {asr['test_cer']:.3f}, WER {asr['test_wer']:.3f}; free-speech CER "
          f"{asr['free_cer']:.3f} ({summary['stand_ins']})")  # fmt: skip
    return summary


def run_demo(args: argparse.Namespace, settings: dict) -> dict:
    """The demo's stages (module docstring); returns demo_summary.json's content."""
    output_dir, corpus_dir, free_dir = Path(args.output_dir), Path(args.corpus_dir), Path(args.free_speech_dir)
    teacher_dir = Path(args.teacher_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dirs = {
        "output": output_dir,
        "corpus": corpus_dir,
        "distilled": output_dir / "student",
        "teacher_init": output_dir / "teacher-init-student",
        "scratch": output_dir / "scratch-student",
        "scratch_equal_compute": output_dir / "scratch-student",
    }  # (c') starts where (c) starts; fmt: skip
    minutes: dict[str, float] = {}
    started = time.time()

    # 1. Data: all training clips for distillation, the first 10% of them with transcripts for fine-tuning.
    stage = time.time()
    corpus = build_data(corpus_dir, free_dir)
    train_clips = corpus["splits"]["train"]["clips"]
    labelled = round(LABELLED_FRACTION * train_clips)
    minutes["corpus"] = (time.time() - stage) / 60

    # 2. Teacher, 3. distillation, 4. the controls (b) and (c), 5. fine-tuning of all three with the same labels (the
    # distilled one then gets a 4-gram LM of the training transcripts, scored on the test split greedily and with it).
    minutes["teacher"] = ensure_teacher(args, output_dir / "teacher.log") / 60
    kind = teacher_kind(teacher_dir)
    minutes["distillation"] = (
        distill(teacher_dir, corpus_dir, dirs["distilled"], settings, output_dir / "distill.log") / 60
    )
    make_teacher_init_student(teacher_dir, dirs["distilled"], dirs["teacher_init"])
    make_scratch_student(dirs["distilled"], dirs["scratch"])
    lm_text = write_lm_text(corpus_dir, output_dir / "lm_text.txt")
    asr_dirs = finetune_controls(args, settings, dirs, labelled, lm_text, minutes, kind)

    # 6. Free speech: sentences and voices the corpus never had.
    stage = time.time()
    asr = {key: {**read_results(path, "all"), **score_free_speech(path, free_dir)} for key, path in asr_dirs.items()}
    minutes["free-speech scoring"] = (time.time() - stage) / 60

    # 7. Summary, plot, card.
    teacher = read_results(teacher_dir, "teacher")
    distilled = {k: v for k, v in read_results(dirs["distilled"], "distill").items() if k != "log_history"}
    cosine = {when: {layer: distilled[when][f"eval/cosine_layer_{layer}"] for layer in distilled["teacher_layers"]}
              for when in ("initial_eval", "final_eval")}  # fmt: skip
    summary = {
        "teacher": {k: teacher[k] for k in ("teacher_kind", "test_wer", "test_cer", "eval_wer", "eval_cer") if k in teacher},
        "teacher_kind": teacher["teacher_kind"],
        "stand_ins": stand_in_note(kind),
        "labels_note": labels_note(kind),
        "train_clips": train_clips,
        "labelled_train_clips": labelled,
        "distill_steps": steps_of(settings, "distill"),
        "finetune_steps": steps_of(settings, "finetune"),
        "controls": {ASR_KEYS[key]: CONTROL_NAMES[key] for key in asr_dirs},
        "scratch_learning_rate": float(SCRATCH_LEARNING_RATE),
        "distill": distilled,
        **{ASR_KEYS[key]: results for key, results in asr.items()},
        # (b)'s backbone is the distillation run's at step 0 (its heads are random there and in (b)).
        "held_out_cosine": {"distilled": cosine["final_eval"], "teacher_init": cosine["initial_eval"]},
        "learning_curves": {key: learning_curve(path) for key, path in asr_dirs.items()},
        "minutes": minutes,
        "total_minutes": (time.time() - started) / 60,
    }  # fmt: skip
    table = comparison_table(summary)
    plot = plot_learning_curves(
        {CONTROL_NAMES[key]: curve for key, curve in summary["learning_curves"].items()},
        output_dir / "learning_curves.png",
        f"{labelled} labelled clips (stand-ins: {kind} teacher, synthetic speech)",
    )
    add_comparison_to_card(asr_dirs["distilled"], table, plot, kind)
    write_json(output_dir / "demo_summary.json", summary)
    paths = {"teacher": teacher_dir, "distilled student + card": dirs["distilled"],
             "speech recogniser + card": asr_dirs["distilled"],
             **{f"control {CONTROL_NAMES[key].split()[0]} recogniser": asr_dirs[key] for key in asr_dirs if key != "distilled"},
             "learning curves": plot, "summary": output_dir / "demo_summary.json"}  # fmt: skip
    print_summary(summary, table, paths)
    return summary


if __name__ == "__main__":
    main()
