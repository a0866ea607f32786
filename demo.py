"""The whole product on a laptop CPU, offline, and the proof that distillation transfers knowledge.

    python demo.py                      # about 15-30 minutes on 2 CPU cores
    python demo.py --quick              # a 2-minute smoke run (learns little)
    python demo.py --compare_students   # the default student against two slim ones (README: Student shapes)

Stages: the demo corpus and a free-speech test set -> a teacher that knows something -> a 2-layer student distilled
from it on all training audio (no transcripts) -> CTC fine-tuning with 10% of the transcripts, (a) of the distilled
student and (b) of the same architecture from random weights, identical recipe -> test WER/CER of both, on the
held-out speakers and on free sentences outside the corpus's grammar, and a learning-curve plot.

Everything here is a stand-in, and the summary says so: the teacher is a SUPERVISED STAND-IN of XLSR-53's
architecture family trained by this project (`stand_ins/train_teacher.py`; shipped in teachers/, the real XLSR-53 needs the Hub
and is self-supervised), and the corpus is SYNTHETIC Brazilian Portuguese speech (espeak-ng). The same scripts,
pointed at facebook/wav2vec2-large-xlsr-53 and real corpora, are the real recipe (see README.md).
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

from distilxlsr_pt.cards import set_card_section
from distilxlsr_pt.results import read_results, write_json
from distilxlsr_pt.stand_ins import SHIPPED_TEACHER_DIR

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
STAND_IN_NOTE = (
    "STAND-INS: a SUPERVISED stand-in teacher of XLSR-53's family (trained by stand_ins/train_teacher.py, not XLSR-53), "
    "a SYNTHETIC espeak-ng corpus"
)


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


def ensure_teacher(teacher_dir: Path, corpus_dir: Path, log: Path) -> float:
    """The shipped supervised stand-in teacher, or train it as it was made (first on 9 voices, then on all; about
    75 minutes on 2 CPU cores) when it is missing."""
    if (teacher_dir / "config.json").exists():
        print(f"\nTeacher: {teacher_dir} (shipped; remake it with the commands in its README.md)")
        return 0.0
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
    """The distilled student's architecture with random weights: what distillation is measured against."""
    import torch

    from modeling_distilxlsr import DistilXLSRModel

    torch.manual_seed(seed)
    scratch = DistilXLSRModel(DistilXLSRModel.config_class.from_pretrained(student_dir))
    scratch.config.teacher_name_or_path = None
    scratch.save_pretrained(scratch_dir)


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


def score_free_speech(asr_dir: Path, free_speech_dir: Path, output_dir: Path, log: Path) -> dict:
    """WER/CER of a fine-tuned recogniser on the free-speech set (sentences and voices outside the corpus)."""
    command = ["finetune_ctc.py", "--model_name_or_path", str(asr_dir), "--data_dir", str(free_speech_dir),
               "--output_dir", str(output_dir), "--overwrite_output_dir", "--do_predict", "--report_to", "none",
               "--num_examples_to_print", "3"]  # fmt: skip
    run([sys.executable, *command], log)
    return read_results(output_dir, "all")


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
    rows = [("distilled student", summary["asr"], summary["free_speech"]["distilled"]),
            ("same student from scratch", summary["scratch_asr"], summary["free_speech"]["scratch"])]  # fmt: skip
    lines = [
        f"| model ({summary['labelled_train_clips']} of {summary['train_clips']} training clips labelled) "
        "| test WER | test CER | free-speech WER | free-speech CER |",
        "|---|---|---|---|---|",
    ]
    for name, asr, free in rows:
        lines.append(
            f"| {name} | {asr['test_wer']:.3f} | {asr['test_cer']:.3f} | {free['test_wer']:.3f} | {free['test_cer']:.3f} |"
        )
    teacher = summary["teacher"]
    if "test_cer" in teacher:
        lines.append(
            f"| teacher ({teacher['teacher_kind']} stand-in, all {summary['train_clips']} clips labelled) "
            f"| {teacher['test_wer']:.3f} | {teacher['test_cer']:.3f} | | |"
        )
    return "\n".join(lines)


def add_comparison_to_card(asr_dir: Path, table: str, plot: Path) -> None:
    """Append the distilled-vs-scratch comparison, with the plot, to the fine-tuned model's card."""
    shutil.copy(plot, asr_dir / plot.name)
    set_card_section(
        asr_dir, f"## Distilled vs from scratch ({STAND_IN_NOTE})", f"{table}\n\n![learning curves]({plot.name})"
    )


def print_summary(summary: dict, table: str, paths: dict) -> None:
    distill, teacher = summary["distill"], summary["teacher"]
    print("\n" + "=" * 110)
    print(f"DistilXLSR-PT demo summary ({STAND_IN_NOTE})")
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


def compare_students(args: argparse.Namespace, settings: dict) -> dict:
    """`--compare_students`: each `DEMO_STUDENTS` student distilled with the same steps and audio, fine-tuned with
    the same recipe and labels, scored on the test split and the free-speech set; `compare_students.json` and a
    table."""
    output_dir, corpus_dir, free_dir = Path(args.output_dir), Path(args.corpus_dir), Path(args.free_speech_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    corpus = build_data(corpus_dir, free_dir)
    labelled = round(LABELLED_FRACTION * corpus["splits"]["train"]["clips"])
    ensure_teacher(Path(args.teacher_dir), corpus_dir, output_dir / "teacher.log")
    rows = {}
    for name in DEMO_STUDENTS:
        student_dir, asr_dir = output_dir / name, output_dir / f"{name}-ctc-pt"
        distill_seconds = distill(Path(args.teacher_dir), corpus_dir, student_dir, settings,
                                  output_dir / f"distill-{name}.log", student=name)  # fmt: skip
        finetune_seconds = finetune(student_dir, corpus_dir, asr_dir, labelled, settings,
                                    f"Student shape {name!r} of the demo's comparison ({STAND_IN_NOTE}).",
                                    output_dir / f"finetune-{name}.log")  # fmt: skip
        free = score_free_speech(asr_dir, free_dir, output_dir / f"free-speech-{name}", output_dir / f"free-{name}.log")
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
            "free_speech_wer": free["test_wer"], "free_speech_cer": free["test_cer"],
            "distill_minutes": distill_seconds / 60, "finetune_minutes": finetune_seconds / 60,
        }  # fmt: skip
    summary = {"stand_ins": STAND_IN_NOTE, "labelled_train_clips": labelled, "students": rows}
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
    parser.add_argument("--teacher_dir", default=str(SHIPPED_TEACHER_DIR), help="The teacher (trained here if absent).")
    parser.add_argument(
        "--compare_students",
        action="store_true",
        help="Instead of the demo: distil, fine-tune and score each of DEMO_STUDENTS (the default and two slim "
        "shapes) with the same recipe (--output_dir defaults to outputs/compare-students; about 1 hour on 2 cores).",
    )
    args = parser.parse_args(argv)
    settings = SETTINGS["quick" if args.quick else "full"]
    if args.compare_students:
        if args.output_dir == parser.get_default("output_dir"):
            args.output_dir = "outputs/compare-students"
        return compare_students(args, settings)
    output_dir, corpus_dir, free_dir = Path(args.output_dir), Path(args.corpus_dir), Path(args.free_speech_dir)
    teacher_dir = Path(args.teacher_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    student_dir, scratch_dir = output_dir / "student", output_dir / "scratch-student"
    asr_dir, scratch_asr_dir = output_dir / "student-ctc-pt", output_dir / "scratch-student-ctc-pt"
    minutes: dict[str, float] = {}
    started = time.time()

    # 1. Data: all training clips for distillation, the first 10% of them with transcripts for fine-tuning.
    stage = time.time()
    corpus = build_data(corpus_dir, free_dir)
    train_clips = corpus["splits"]["train"]["clips"]
    labelled = round(LABELLED_FRACTION * train_clips)
    minutes["corpus"] = (time.time() - stage) / 60

    # 2. Teacher, 3. distillation, 4. fine-tuning of both students with the same labels and recipe (the distilled one
    # then gets a 4-gram LM of the training transcripts, scored on the test split greedily and with the LM).
    minutes["teacher"] = ensure_teacher(teacher_dir, corpus_dir, output_dir / "teacher.log") / 60
    minutes["distillation"] = distill(teacher_dir, corpus_dir, student_dir, settings, output_dir / "distill.log") / 60
    make_scratch_student(student_dir, scratch_dir)
    lm_text = write_lm_text(corpus_dir, output_dir / "lm_text.txt")
    minutes["fine-tuning, distilled student"] = (
        finetune(student_dir, corpus_dir, asr_dir, labelled, settings,
                 f"Fine-tuned from a student distilled from a supervised stand-in teacher, with {labelled} labelled "
                 "clips of a SYNTHETIC espeak-ng corpus: a demo, not a usable Portuguese recogniser.",
                 output_dir / "finetune.log", *(["--lm_text_file", str(lm_text)] if not args.quick else [])) / 60
    )  # fmt: skip
    minutes["fine-tuning, scratch student"] = (
        finetune(scratch_dir, corpus_dir, scratch_asr_dir, labelled, settings,
                 f"The same architecture trained from random weights with {labelled} labelled clips of a SYNTHETIC "
                 "espeak-ng corpus: the baseline of the distillation demo.",
                 output_dir / "finetune_scratch.log") / 60
    )  # fmt: skip

    # 5. Free speech: sentences and voices the corpus never had.
    stage = time.time()
    free_speech = {
        name: score_free_speech(path, free_dir, output_dir / f"free-speech-{name}", output_dir / f"free_{name}.log")
        for name, path in (("distilled", asr_dir), ("scratch", scratch_asr_dir))
    }
    minutes["free-speech scoring"] = (time.time() - stage) / 60

    # 6. Summary, plot, card.
    teacher = read_results(teacher_dir, "teacher")
    summary = {
        "teacher": {k: teacher[k] for k in ("teacher_kind", "test_wer", "test_cer", "eval_wer", "eval_cer") if k in teacher},
        "teacher_kind": teacher["teacher_kind"],
        "stand_ins": STAND_IN_NOTE,
        "train_clips": train_clips,
        "labelled_train_clips": labelled,
        "distill": {k: v for k, v in read_results(student_dir, "distill").items() if k != "log_history"},
        "asr": read_results(asr_dir, "all"),
        "scratch_asr": read_results(scratch_asr_dir, "all"),
        "free_speech": free_speech,
        "learning_curves": {"distilled": learning_curve(asr_dir), "scratch": learning_curve(scratch_asr_dir)},
        "minutes": minutes,
        "total_minutes": (time.time() - started) / 60,
    }  # fmt: skip
    table = comparison_table(summary)
    plot = plot_learning_curves(
        {"distilled student": summary["learning_curves"]["distilled"],
         "same student from scratch": summary["learning_curves"]["scratch"]},
        output_dir / "learning_curves.png",
        f"{labelled} labelled clips (stand-ins: supervised teacher, synthetic speech)",
    )  # fmt: skip
    add_comparison_to_card(asr_dir, table, plot)
    write_json(output_dir / "demo_summary.json", summary)
    paths = {"teacher": teacher_dir, "distilled student + card": student_dir, "speech recogniser + card": asr_dir,
             "scratch recogniser": scratch_asr_dir, "learning curves": plot, "summary": output_dir / "demo_summary.json"}  # fmt: skip
    print_summary(summary, table, paths)
    return summary


if __name__ == "__main__":
    main()
