#!/usr/bin/env python
"""Does a long run's memory stay flat? Runs train_distill.py, then finetune_ctc.py on its student, each as a user
starts it (its own process) on the demo corpus with clips of varying length, and reads the resident memory that
their log lines record (`rss_gb`: the main process; `workers_rss_gb`: its data-loader workers).

    python benchmarks/memory_growth.py --output_dir outputs/memory-growth

The figure is the growth between step `--from_step` and the last step (`--max_steps`): the target is at most 5%.
`--allocators` chooses how memory is kept flat, comma-separated: `padded` (the scripts' defaults: batches padded to a
multiple of 0.5 s, glibc's own malloc settings), `mmap` (`--pad_to_multiple_of 0`: `keep_memory_flat` sets a fixed mmap
threshold) and `default` (`--pad_to_multiple_of 0` and DISTILXLSR_KEEP_MEMORY_FLAT=0: neither, the growth of issue 18),
to compare what each saves and costs in time per step (`step_s`).
`--output_dir` receives `memory_results.json`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the checkout: distilxlsr_pt and the model files

from distilxlsr_pt.cli import argument_parser
from distilxlsr_pt.results import write_results
from distilxlsr_pt.stand_ins import SHIPPED_TEACHER_DIR

MEMORY_KEYS = ("rss_gb", "workers_rss_gb")


def build_parser() -> argparse.ArgumentParser:
    parser = argument_parser(__doc__)
    parser.add_argument("--data_dir", default="demo_corpus", help="The audiofolder corpus (default: %(default)s).")
    parser.add_argument("--teacher_name_or_path", default=str(SHIPPED_TEACHER_DIR), help="Teacher to distil.")
    parser.add_argument("--output_dir", required=True, help="Where the runs and memory_results.json go.")
    parser.add_argument("--max_steps", type=int, default=2000, help="Optimizer steps of each run.")
    parser.add_argument("--from_step", type=int, default=200, help="The step growth is measured from.")
    parser.add_argument("--logging_steps", type=int, default=100, help="Steps between memory readings.")
    parser.add_argument("--per_device_train_batch_size", type=int, default=4)
    parser.add_argument("--jobs", default="distill,finetune", help="Comma-separated, of distill and finetune.")
    parser.add_argument("--allocators", default="padded", help="Comma-separated, of padded, mmap, default (see above).")
    return parser


# Per --allocators value: the environment and the extra flags of both scripts.
ALLOCATORS = {
    "padded": ({}, []),
    "mmap": ({}, ["--pad_to_multiple_of", "0"]),
    "default": ({"DISTILXLSR_KEEP_MEMORY_FLAT": "0"}, ["--pad_to_multiple_of", "0"]),
}


def run(command: list[str], log: Path, allocator: str) -> float:
    environment, flags = ALLOCATORS[allocator]
    env = {key: value for key, value in os.environ.items() if key != "DISTILXLSR_KEEP_MEMORY_FLAT"}
    env.update(environment)
    command = [*command, *flags]
    started = time.time()
    with log.open("w") as stream:
        subprocess.run([sys.executable, *command], cwd=REPO_ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT,
                       check=True)  # fmt: skip
    return time.time() - started


def distill(args: argparse.Namespace, output_dir: Path, allocator: str) -> tuple[list[dict], float]:
    command = ["train_distill.py", "--teacher_name_or_path", args.teacher_name_or_path, "--data_dir", args.data_dir,
               "--output_dir", str(output_dir), "--overwrite_output_dir", "--teacher_layers", "4,12",
               "--student_num_hidden_layers", "2", "--freeze_feature_encoder", "--report_to", "none",
               "--dataloader_num_workers", "1", "--max_train_steps", str(args.max_steps),
               "--per_device_train_batch_size", str(args.per_device_train_batch_size), "--learning_rate", "1e-3",
               "--max_duration_in_seconds", "6", "--logging_steps", str(args.logging_steps),
               "--eval_steps", "1000000", "--checkpointing_steps", "1000000", "--max_eval_samples", "8"]  # fmt: skip
    seconds = run(command, output_dir.with_suffix(".log"), allocator)
    return json.loads((output_dir / "distill_results.json").read_text())["log_history"], seconds


def finetune(args: argparse.Namespace, model_dir: Path, output_dir: Path, allocator: str) -> tuple[list[dict], float]:
    command = ["finetune_ctc.py", "--model_name_or_path", str(model_dir), "--data_dir", args.data_dir,
               "--output_dir", str(output_dir), "--overwrite_output_dir", "--report_to", "none",
               "--max_steps", str(args.max_steps), "--per_device_train_batch_size", str(args.per_device_train_batch_size),
               "--learning_rate", "1e-3", "--warmup_steps", "60", "--freeze_feature_encoder",
               "--logging_steps", str(args.logging_steps), "--eval_strategy", "no", "--save_strategy", "no",
               "--max_eval_samples", "8", "--max_test_samples", "8", "--dataloader_num_workers", "1",
               "--seed", "42"]  # fmt: skip
    seconds = run(command, output_dir.with_suffix(".log"), allocator)
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"], seconds


def growth(log_history: list[dict], from_step: int) -> dict:
    """Memory at `from_step` and at the last logged step, and the growth between them."""
    readings = [entry for entry in log_history if "rss_gb" in entry]
    first = next((entry for entry in readings if entry["step"] >= from_step), None)
    if first is None or first is readings[-1]:
        raise SystemExit(f"No memory readings after step {from_step}: raise --max_steps or lower --logging_steps.")
    last = readings[-1]
    result = {"from_step": first["step"], "to_step": last["step"]}
    for key in (*MEMORY_KEYS, "total_gb"):
        start, end = (entry.get(key, entry["rss_gb"] + entry["workers_rss_gb"]) for entry in (first, last))
        result[key] = {"from": start, "to": end, "growth": round(end / start - 1, 4)}
    result["readings"] = [{"step": entry["step"], **{key: entry[key] for key in MEMORY_KEYS}} for entry in readings]
    return result


def measure(args: argparse.Namespace, output_dir: Path, allocator: str) -> dict:
    """Both jobs with one allocator setting: the student is distilled, then fine-tuned."""
    record, student_dir = {}, output_dir / "student"
    output_dir.mkdir(parents=True, exist_ok=True)
    if "distill" in args.jobs:
        history, seconds = distill(args, student_dir, allocator)
        record["distill"] = {"step_s": round(seconds / args.max_steps, 3), **growth(history, args.from_step)}
    if "finetune" in args.jobs:
        history, seconds = finetune(args, student_dir, output_dir / "student-ctc", allocator)
        record["finetune"] = {"step_s": round(seconds / args.max_steps, 3), **growth(history, args.from_step)}
    return record


def table(record: dict) -> str:
    lines = ["| job | allocator | steps | main process GB | workers GB | growth: main, workers, total | s/step |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for allocator in record["allocators"]:
        for job, result in record["allocators"][allocator].items():
            main_gb, workers_gb, total = result["rss_gb"], result["workers_rss_gb"], result["total_gb"]
            lines.append(
                f"| {job} | {allocator} | {result['from_step']} -> {result['to_step']} "
                f"| {main_gb['from']:.2f} -> {main_gb['to']:.2f} | {workers_gb['from']:.2f} -> {workers_gb['to']:.2f} "
                f"| {main_gb['growth']:+.1%}, {workers_gb['growth']:+.1%}, {total['growth']:+.1%} "
                f"| {result['step_s']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    args.jobs = args.jobs.split(",")
    unknown = set(args.allocators.split(",")) - set(ALLOCATORS)
    if unknown:
        raise SystemExit(f"--allocators: unknown {sorted(unknown)}; choose from {sorted(ALLOCATORS)}")
    output_dir = Path(args.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "settings": {key: getattr(args, key) for key in ("max_steps", "from_step", "per_device_train_batch_size")},
        "allocators": {},
    }
    for allocator in args.allocators.split(","):
        record["allocators"][allocator] = measure(args, output_dir / allocator, allocator)
    print(table(record))
    write_results(output_dir, "memory", record)
    return record


if __name__ == "__main__":
    main()
