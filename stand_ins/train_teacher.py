"""Train a stand-in teacher that knows something: XLSR-53's architecture family, CTC-trained on the demo corpus.

The real teacher, facebook/wav2vec2-large-xlsr-53, needs the Hub. A randomly initialised stand-in only shows that the
distillation machinery runs; to show that a distilled student *inherits* what its teacher knows, the demo needs a
teacher that knows something. This script makes one on a CPU: a 12-layer `Wav2Vec2ForCTC` of XLSR-53's design
(layer-norm conv front end, stable-layer-norm encoder), trained from random weights with CTC on the training split
of the demo corpus. It saw the transcripts of every training clip, so it is a **supervised stand-in teacher**: not
self-supervised like XLSR-53, and named so wherever it is used.

    python stand_ins/train_teacher.py --data_dir demo_corpus --output_dir teachers/supervised-stand-in

The result loads with `AutoModel.from_pretrained` (the encoder, for `train_distill.py --teacher_name_or_path`) and
`AutoModelForCTC.from_pretrained` (the recogniser). Its weights are stored in float16 (half the size; the loaded
model is float32) with a model card that says how it was made and the command that remakes it. The CTC training is
finetune_ctc.py, run as its own process.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the checkout: distilxlsr_pt and the model files

import torch
from huggingface_hub import ModelCardData
from transformers import AutoConfig, AutoModelForCTC

from distilxlsr_pt.cards import STAND_IN_TAG, write_card
from distilxlsr_pt.cli import HelpFormatter, precision_flags
from distilxlsr_pt.results import read_results, write_results
from distilxlsr_pt.stand_ins import SIZES, save_half_precision, stand_in_backbone
from modeling_distilxlsr import DistilXLSRForCTC

TEACHER_KIND = "supervised"
# Chosen for the demo corpus on 2 CPU cores: a high learning rate with a warm-up (a deep pre-LayerNorm model takes
# it), no dropout or SpecAugment (the corpus is small and clean, the run short), and bf16 autocast where the CPU runs it
# fast (`precision_flags`).
RECIPE = ["--learning_rate", "2e-3", "--warmup_steps", "250", "--per_device_train_batch_size", "8",
          "--no_freeze_feature_encoder", "--mask_time_prob", "0", "--hidden_dropout", "0", "--attention_dropout", "0",
          "--activation_dropout", "0", "--feat_proj_dropout", "0", "--final_dropout", "0", "--layerdrop", "0",
          "--train_sampling_strategy", "group_by_length", "--lr_scheduler_type", "linear"]  # fmt: skip
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json", "vocab.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--data_dir", required=True, help="Local audiofolder with train/ (and validation/, test/).")
    parser.add_argument("--output_dir", required=True, help="Where the teacher, its processor and card go.")
    parser.add_argument("--size", default="demo", choices=sorted(SIZES), help="Architecture (make_stand_in_teacher).")
    parser.add_argument("--max_steps", type=int, default=2500, help="CTC training steps (the shipped teacher: 2500).")
    parser.add_argument("--eval_steps", type=int, default=500, help="Score the validation split every N steps.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the initialisation and of training.")
    parser.add_argument(
        "--init_from",
        help="Continue from this CTC teacher (e.g. one trained on fewer voices) instead of random weights; its "
        "vocabulary is kept.",
    )
    parser.add_argument(
        "--finetune_args", default="", help="Extra finetune_ctc.py arguments, e.g. '--max_train_samples 40'."
    )
    return parser.parse_args(argv)


def random_init(size: str, seed: int, output_dir: Path) -> Path:
    """A random-weight model of XLSR-53's family in DistilXLSR's classes, which train faster on a CPU.

    Same modules and parameter names as transformers' `Wav2Vec2Model`, but the conv front end runs channels-last
    (`DistilXLSRFeatureEncoder`); `DistilXLSRForCTC.to_wav2vec2()` gives back transformers' own class with the same
    weights when training ends.
    """
    stand_in_backbone(size, seed).save_pretrained(output_dir)
    return output_dir


def warm_start(init_from: str, output_dir: Path) -> Path:
    """A CTC teacher (transformers' `Wav2Vec2ForCTC` or ours) in DistilXLSR's classes, with its head and processor.

    From random weights, CTC on the 48-voice corpus sat on the all-blank plateau for 1,500 steps (loss 2.95), where
    the 9-voice corpus had left it within a few hundred: the shipped teacher learns the 9 voices first, then all.
    """
    source = AutoModelForCTC.from_pretrained(init_from, dtype=torch.float32)
    model = source if isinstance(source, DistilXLSRForCTC) else DistilXLSRForCTC.from_wav2vec2(source)
    model.save_pretrained(output_dir)
    for name in PROCESSOR_FILES:
        if (Path(init_from) / name).exists():
            shutil.copy(Path(init_from) / name, output_dir / name)
    return output_dir


def train_ctc(args: argparse.Namespace, work_dir: Path) -> dict:
    """Random init of XLSR-53's family (or `--init_from`), then CTC on the training split with finetune_ctc.py (its
    own process, its output shown as it comes); returns its results."""
    if args.init_from:
        initial = warm_start(args.init_from, work_dir / "init")
        init_args = ["--tokenizer_name_or_path", str(initial)]
    else:
        initial, init_args = random_init(args.size, args.seed, work_dir / "random-init"), []
    command = [
            sys.executable, str(REPO_ROOT / "finetune_ctc.py"), "--model_name_or_path", str(initial), "--data_dir", args.data_dir, "--output_dir", str(work_dir / "ctc"),
            "--max_steps", str(args.max_steps), "--eval_strategy", "steps", "--eval_steps", str(args.eval_steps),
            "--logging_steps", "50", "--save_strategy", "steps", "--save_steps", str(args.eval_steps),
            "--save_total_limit", "1", "--report_to", "none", "--seed", str(args.seed),
            "--dataloader_num_workers", "1", *RECIPE, *init_args, *precision_flags(), *args.finetune_args.split(),
            "--model_card_note", "A SUPERVISED STAND-IN TEACHER trained by stand_ins/train_teacher.py (not XLSR-53).",
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return read_results(work_dir / "ctc", "all")


def save_teacher(ctc_dir: Path, output_dir: Path, results: dict, command: str) -> None:
    """Save the CTC model as transformers' `Wav2Vec2ForCTC` with float16 weights (loaded back as float32)."""
    save_half_precision(DistilXLSRForCTC.from_pretrained(ctc_dir, dtype=torch.float32).to_wav2vec2(), output_dir)
    for name in PROCESSOR_FILES:
        if (ctc_dir / name).exists():
            shutil.copy(ctc_dir / name, output_dir / name)
    write_results(output_dir, "teacher", {"teacher_kind": TEACHER_KIND, "command": command, **results})
    write_teacher_card(output_dir)


def remake_commands(results: dict) -> str:
    """The commands that remake a teacher: for a warm start, first those of the teacher it continued."""
    commands = [results["command"]]
    if results.get("init_from_commands"):
        commands.insert(0, results["init_from_commands"])
    return "\n".join(commands)


def write_teacher_card(output_dir: Path) -> None:
    """The teacher's model card, from its saved config and `teacher_results.json`."""
    model_config = AutoConfig.from_pretrained(output_dir)
    results = read_results(output_dir, "teacher")
    with torch.device("meta"):
        parameters = sum(p.numel() for p in AutoModelForCTC.from_config(model_config).wav2vec2.parameters())
    origin = (
        f"continuing a teacher first trained on fewer of its voices (`{results['init_from']}`; from random weights,"
        " CTC on all the voices at once stayed on the all-blank plateau for 1,500 steps)"
        if results.get("init_from")
        else "from random weights"
    )
    minutes = " + ".join(
        f"{m:.0f}" for m in (results.get("init_from_minutes"), results.get("train_runtime", 0) / 60) if m is not None
    )
    data = ModelCardData(
        language="pt",
        license="apache-2.0",
        library_name="transformers",
        tags=["automatic-speech-recognition", STAND_IN_TAG, TEACHER_KIND, "synthetic-data"],
        pipeline_tag="automatic-speech-recognition",
    )
    body = f"""# Supervised stand-in teacher (NOT facebook/wav2vec2-large-xlsr-53)

A {parameters:,}-parameter `Wav2Vec2ForCTC` of XLSR-53's architecture family (layer-norm conv front end,
stable-layer-norm encoder; {model_config.num_hidden_layers} layers, {model_config.hidden_size} wide,
{model_config.conv_dim[0]}-channel front end), trained by DistilXLSR-PT's `stand_ins/train_teacher.py` with CTC on the
training split of the project's **synthetic** espeak-ng Brazilian Portuguese demo corpus
({results.get("train_samples", "?")} clips, all transcripts seen), {origin}. It is a **supervised** stand-in: XLSR-53 is
self-supervised and was trained on 56k hours of real speech in 53 languages. It exists so that the demo can show a
distilled student inheriting what a teacher knows, offline, on a CPU.

| split | WER | CER |
|---|---|---|
| validation | {results.get("eval_wer", float("nan")):.3f} | {results.get("eval_cer", float("nan")):.3f} |
| test (held-out synthetic speakers) | {results.get("test_wer", float("nan")):.3f} | {results.get("test_cer", float("nan")):.3f} |

Weights are stored in float16 to keep the file small; `from_pretrained` loads them as float32. Remake it with:

```bash
{remake_commands(results)}
```

(training took {minutes} minutes on 2 CPU cores; the result differs in the last digits from machine to machine, since
float summation order differs).
"""
    write_card(output_dir, data, body)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    command = "python stand_ins/train_teacher.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.time()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    # The random init and the CTC run's checkpoints go to a folder of this run's own, removed at the end: never a
    # folder of the user's that happens to have the same name.
    with tempfile.TemporaryDirectory(prefix=".train_teacher-", dir=args.output_dir) as work_dir:
        results = train_ctc(args, Path(work_dir))
        results["minutes"] = (time.time() - started) / 60
        if args.init_from:
            results["init_from"] = args.init_from
            if (Path(args.init_from) / "teacher_results.json").exists():
                results["init_from_commands"] = remake_commands(read_results(args.init_from, "teacher"))
        save_teacher(Path(work_dir) / "ctc", Path(args.output_dir), results, command)
    print(f"Saved the supervised stand-in teacher to {args.output_dir}: test CER {results.get('test_cer', '?')}")
    return results


if __name__ == "__main__":
    main()
