"""Train a SELF-SUPERVISED stand-in teacher: XLSR-53's architecture family, taught by untranscribed audio alone.

XLSR-53 learnt from 56k hours of speech without transcripts. The supervised stand-in (`stand_ins/train_teacher.py`)
read every transcript of the demo corpus, so what its students inherit is partly those labels. This teacher hears the
demo's training audio and more untranscribed clips of the same voices (`make_demo_corpus.py --unlabelled_dir`) and
reads no transcript: HuBERT's masked prediction of k-means units (`distilxlsr_pt/ssl_teacher.py`), of MFCCs in the
first iteration, of a layer of the previous iteration's model in the next:

    python stand_ins/make_demo_corpus.py --output_dir demo_corpus --unlabelled_dir demo_unlabelled
    python stand_ins/train_ssl_teacher.py --output_dir teachers/ssl-1
    python stand_ins/train_ssl_teacher.py --output_dir teachers/ssl-2 --target_model_dir teachers/ssl-1 \
        --init_model_dir teachers/ssl-1 --num_units 500

The teacher is saved as transformers' own `Wav2Vec2Model` (float16 weights, loaded as float32) with its feature
extractor, `teacher_results.json` and a model card. Checkpoints and the k-means units stay in OUTPUT_DIR/training/;
`--resume_from_checkpoint latest` continues from the last one. `--objective contrastive` trains wav2vec 2.0's
objective instead (transformers' `Wav2Vec2ForPreTraining`, same audio, masks and starting weights), as a comparison:
it is known to collapse on small data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the checkout: distilxlsr_pt and the model files

import torch
from datasets import Dataset
from huggingface_hub import ModelCardData
from transformers import AutoConfig, Trainer, TrainingArguments, Wav2Vec2ForPreTraining, Wav2Vec2Model
from transformers.trainer_utils import get_last_checkpoint

from distilxlsr_pt.cards import STAND_IN_TAG, write_card
from distilxlsr_pt.checks import check_output_dir
from distilxlsr_pt.cli import HelpFormatter, precision_flags
from distilxlsr_pt.models import default_feature_extractor, explain_loading_errors
from distilxlsr_pt.results import write_results
from distilxlsr_pt.ssl_teacher import (
    MASK_LENGTH,
    MASK_PROB,
    ContrastivePredictionModel,
    GumbelTemperatureSchedule,
    MaskedUnitCollator,
    MaskedUnitPredictionModel,
    Units,
    clip_dataset,
    clip_features,
    load_clips,
    untranscribed_clips,
)
from distilxlsr_pt.stand_ins import SIZES, save_half_precision, stand_in_backbone, stand_in_teacher_config

TEACHER_KIND = "self-supervised"
RUN_FILES = [r"training(/.*)?", r"model\.safetensors", r"config\.json", r"teacher_results\.json"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", required=True, help="Where the teacher, its card and training/ go.")
    parser.add_argument(
        "--audio_dirs",
        nargs="+",
        default=["demo_corpus/train", "demo_unlabelled/train"],
        help="Audiofolder splits whose audio it learns from (their metadata.csv names the clips; no transcript is read).",
    )
    parser.add_argument(
        "--eval_dir", default="demo_corpus/validation", help="Audiofolder split for the masked-prediction eval loss."
    )
    parser.add_argument("--size", default="demo", choices=sorted(SIZES), help="Architecture (stand_ins.SIZES).")
    parser.add_argument(
        "--objective",
        default="hubert",
        choices=["hubert", "contrastive"],
        help="hubert: masked prediction of k-means units; contrastive: wav2vec 2.0's (a comparison only).",
    )
    parser.add_argument(
        "--num_negatives", type=int, default=100, help="--objective contrastive: distractors per masked frame."
    )
    parser.add_argument("--num_units", type=int, default=100, help="k-means clusters of the frames' features.")
    parser.add_argument(
        "--per_clip_cmvn",
        action="store_true",
        help="Standardise each clip's features by its own mean and deviation before k-means (cepstral mean and "
        "variance normalisation: the units then carry less of the voice).",
    )
    parser.add_argument(
        "--target_model_dir",
        help="HuBERT's next iteration: cluster --target_layer of this (self-supervised) Wav2Vec2Model instead of MFCCs.",
    )
    parser.add_argument(
        "--target_layer", type=int, default=6, help="Layer of --target_model_dir whose output is clustered."
    )
    parser.add_argument(
        "--init_model_dir",
        help="Start from this Wav2Vec2Model's weights (e.g. the previous iteration) instead of random.",
    )
    parser.add_argument("--max_steps", type=int, default=3500, help="Training steps (the shipped teacher: 3500).")
    parser.add_argument("--per_device_train_batch_size", type=int, default=8, help="Clips per step.")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Peak learning rate (AdamW).")
    parser.add_argument("--warmup_steps", type=int, default=350, help="Linear warm-up, then linear decay.")
    parser.add_argument("--save_steps", type=int, default=250, help="Save a checkpoint every N steps.")
    parser.add_argument("--eval_steps", type=int, default=500, help="Eval loss on --eval_dir every N steps.")
    parser.add_argument("--logging_steps", type=int, default=50, help="Log the training loss every N steps.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the initialisation, k-means and masks.")
    parser.add_argument(
        "--resume_from_checkpoint", help="'latest' (the last checkpoint in OUTPUT_DIR/training, if any) or a folder."
    )
    args = parser.parse_args(argv)
    if args.objective == "contrastive" and args.target_model_dir:
        parser.error("--target_model_dir names HuBERT's unit targets; --objective contrastive has none")
    if args.objective == "contrastive" and args.per_clip_cmvn:
        parser.error("--per_clip_cmvn shapes HuBERT's unit targets; --objective contrastive has none")
    return args


def build_data(args: argparse.Namespace, training_dir: Path) -> tuple[Dataset, Dataset, int | None]:
    """The training and eval clips with their frames' k-means units (fitted on the training audio once, then read
    from training/units.npz); returns both datasets and the number of units (None, and no units, for the contrastive
    objective)."""
    if args.objective == "contrastive":
        audio = load_clips(untranscribed_clips(args.audio_dirs))
        return clip_dataset(audio), clip_dataset(load_clips(untranscribed_clips([args.eval_dir]))), None
    target_model = None
    if args.target_model_dir:
        with explain_loading_errors(args.target_model_dir, "--target_model_dir"):
            target_model = Wav2Vec2Model.from_pretrained(args.target_model_dir)
        if not 1 <= args.target_layer <= target_model.config.num_hidden_layers:
            raise ValueError(f"--target_layer {args.target_layer}: the target model has layers 1 to "
                             f"{target_model.config.num_hidden_layers}")  # fmt: skip
    audio = load_clips(untranscribed_clips(args.audio_dirs))
    features = clip_features(audio, target_model, args.target_layer)
    path = training_dir / "units.npz"
    if path.exists():
        units = Units.load(path)
        if units.per_clip_cmvn != args.per_clip_cmvn:
            raise ValueError(f"{path} was fitted {'with' if units.per_clip_cmvn else 'without'} --per_clip_cmvn; "
                             "resume with the flags of the run that made it")  # fmt: skip
    else:
        started = time.time()
        units = Units.fit(features, num_units=args.num_units, seed=args.seed, per_clip_cmvn=args.per_clip_cmvn)
        print(f"k-means: {args.num_units} units of {sum(map(len, features)):,} frames in {time.time() - started:.0f} s")
        units.save(path)
    eval_audio = load_clips(untranscribed_clips([args.eval_dir]))
    eval_features = clip_features(eval_audio, target_model, args.target_layer)
    train_dataset = clip_dataset(audio, [units.assign(f) for f in features])
    eval_dataset = clip_dataset(eval_audio, [units.assign(f) for f in eval_features])
    return train_dataset, eval_dataset, len(units.centres)


NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0)
# wav2vec 2.0's quantizer and loss, its codes narrowed to the stand-in's width.
CONTRASTIVE = dict(
    num_codevector_groups=2,
    num_codevectors_per_group=320,
    codevector_dim=128,
    proj_codevector_dim=128,
    contrastive_logits_temperature=0.1,
    diversity_loss_weight=0.1,
    feat_quantizer_dropout=0.0,
)


def build_model(
    size: str,
    num_units: int | None,
    seed: int,
    init_model_dir: str | None = None,
    objective: str = "hubert",
    num_negatives: int = 100,
) -> MaskedUnitPredictionModel | ContrastivePredictionModel:
    """A 12-layer model of XLSR-53's family (DistilXLSR's classes: a CPU-fast front end), random or with the weights
    of `init_model_dir`, and a random unit head; no dropout or layerdrop (the data are small and clean, the run short).
    The contrastive objective gets transformers' `Wav2Vec2ForPreTraining` around the same starting weights."""
    backbone = stand_in_backbone(size, seed, layerdrop=0.0, **NO_DROPOUT)
    if init_model_dir:
        with explain_loading_errors(init_model_dir, "--init_model_dir"):
            initial = Wav2Vec2Model.from_pretrained(init_model_dir)
        try:
            backbone.load_state_dict(initial.state_dict())
        except RuntimeError as error:
            raise ValueError(f"--init_model_dir {init_model_dir} is not a --size {size} model: {error}") from None
    if objective == "hubert":
        return MaskedUnitPredictionModel(backbone, num_units)
    config = stand_in_teacher_config(size, layerdrop=0.0, num_negatives=num_negatives, **NO_DROPOUT, **CONTRASTIVE)
    pretraining_model = Wav2Vec2ForPreTraining(config)
    pretraining_model.wav2vec2.load_state_dict(backbone.to_wav2vec2().state_dict())
    return ContrastivePredictionModel(pretraining_model)


def encoder_of(model: MaskedUnitPredictionModel | ContrastivePredictionModel) -> Wav2Vec2Model:
    """The trained encoder, as transformers' `Wav2Vec2Model` (what the teacher folder holds)."""
    if isinstance(model, ContrastivePredictionModel):
        return model.pretraining_model.wav2vec2
    return model.backbone.to_wav2vec2()


def train(
    args: argparse.Namespace,
    model: MaskedUnitPredictionModel | ContrastivePredictionModel,
    train_dataset: Dataset,
    eval_dataset: Dataset,
    training_dir: Path,
) -> dict:
    """Masked prediction with transformers' Trainer (checkpoints, resuming, schedule, logging)."""
    contrastive = args.objective == "contrastive"
    resume = args.resume_from_checkpoint
    if resume == "latest":
        resume = get_last_checkpoint(str(training_dir))  # none yet: start from the beginning
    training_args = TrainingArguments(
        output_dir=str(training_dir),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_train_batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type="linear",
        weight_decay=0.01,
        max_grad_norm=1.0,
        train_sampling_strategy="group_by_length",
        length_column_name="length",
        logging_steps=args.logging_steps,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_steps=args.save_steps,
        save_total_limit=1,
        report_to="none",
        seed=args.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        # what the loss needs besides the audio: Trainer then computes the eval loss
        label_names=["unit_labels"] if args.objective == "hubert" else ["sampled_negative_indices"],
        prediction_loss_only=True,
        bf16="--bf16" in precision_flags(),
        use_cpu="--use_cpu" in precision_flags(),
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=MaskedUnitCollator(
            default_feature_extractor(), num_negatives=args.num_negatives if contrastive else 0
        ),
        callbacks=[GumbelTemperatureSchedule(model)] if contrastive else None,
    )
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = {**output.metrics, **trainer.evaluate(), "resumed_from": Path(resume).name if resume else None}
    metrics.update(
        train_clips=len(train_dataset),
        train_hours=round(sum(train_dataset["length"]) / 16000 / 3600, 3),
        log_history=[entry for entry in trainer.state.log_history if "loss" in entry or "eval_loss" in entry],
    )
    if contrastive:
        metrics["codevector_perplexity"] = codebook_use(model, trainer.get_eval_dataloader())
    return metrics


def codebook_use(model: ContrastivePredictionModel, batches) -> float:
    """The quantizer's perplexity on the first eval batch, summed over its code groups: about how many codes the
    masked frames use. One code per group is the known collapse: every distractor then equals its target, the
    contrastive loss is 0 and nothing is learnt."""
    model.eval()
    with torch.inference_mode():
        batch = next(iter(batches))
        batch.pop("sampled_negative_indices")
        perplexity = float(model.pretraining_model(**batch).codevector_perplexity)
    groups = model.pretraining_model.config.num_codevector_groups
    if perplexity < 2 * groups:
        print(f"WARNING: the contrastive objective collapsed: codebook perplexity {perplexity:.2f} ({groups} = one "
              "code per group for every frame); try a lower --learning_rate or a longer --warmup_steps")  # fmt: skip
    return perplexity


def save_teacher(
    model: MaskedUnitPredictionModel | ContrastivePredictionModel, output_dir: Path, results: dict
) -> None:
    """The encoder as transformers' `Wav2Vec2Model` (float16 weights), its feature extractor, results and card."""
    save_half_precision(encoder_of(model), output_dir)
    default_feature_extractor().save_pretrained(output_dir)
    write_results(output_dir, "teacher", results)
    write_teacher_card(output_dir, results)


def previous_iteration(target_model_dir: str | None) -> dict:
    """The teacher_results.json of the model whose features are clustered ({} for MFCC targets)."""
    if not target_model_dir:
        return {}
    path = Path(target_model_dir) / "teacher_results.json"
    if not path.is_file():
        raise FileNotFoundError(f"--target_model_dir: {path} is missing; give a teacher this script trained")
    return json.loads(path.read_text(encoding="utf-8"))


def target_description(results: dict) -> str:
    cmvn = ", each clip standardised by its own mean and deviation" if results.get("per_clip_cmvn") else ""
    if not results.get("target_model_dir"):
        return f"13 MFCCs with deltas and delta-deltas (librosa) at the model's 50 Hz frames{cmvn}"
    start = "starting from its weights" if results.get("init_model_dir") else "starting from random weights"
    return (
        f"layer {results['target_layer']} of iteration {results['iteration'] - 1} (`{results['target_model_dir']}`, "
        f"itself a teacher this script trained){cmvn}, {start}"
    )


def recipe_description(results: dict) -> str:
    masking = (
        f"spans of {MASK_LENGTH} frames (start probability {MASK_PROB}) of the projected features are replaced by the "
        "learned mask vector"
    )
    if results["objective"] == "contrastive":
        return (
            "Recipe: wav2vec 2.0's contrastive objective (transformers' `Wav2Vec2ForPreTraining`), a comparison: "
            f"{masking}, and the model tells each masked frame's Gumbel-quantized conv features from "
            f"{results['num_negatives']} distractors of the same clip (plus the codebook-diversity loss); the "
            "quantizer and projections are not saved. Codebook perplexity on validation audio at the end: "
            f"{results.get('codevector_perplexity', float('nan')):.2f} (2 = collapsed, one code per group)."
        )
    return (
        f"Recipe: HuBERT, iteration {results['iteration']}. Targets are {results['num_units']} k-means units "
        f"(scikit-learn `MiniBatchKMeans`) of {target_description(results)}; {masking}, and a linear head (not saved) "
        "predicts the unit of each masked frame (cross-entropy on masked frames only)."
    )


def chance_description(results: dict) -> str:
    if results["objective"] == "contrastive":
        return f"ln {results['num_negatives'] + 1} = {math.log(results['num_negatives'] + 1):.2f} is chance for the contrastive part"
    return f"ln {results['num_units']} = {math.log(results['num_units']):.2f} is chance"


def write_teacher_card(output_dir: Path, results: dict) -> None:
    config = AutoConfig.from_pretrained(output_dir)
    start = f"the weights of `{results['init_model_dir']}`" if results.get("init_model_dir") else "random weights"
    timing = (
        f"training took {results['minutes']:.0f} minutes on {os.cpu_count()} CPU cores"
        + (
            f" ({results['minutes_all_iterations']:.0f} with the previous iterations)"
            if results["iteration"] > 1
            else ""
        )
        + (f", in the run that resumed from {results['resumed_from']}" if results.get("resumed_from") else "")
    )
    data = ModelCardData(
        language="pt",
        license="apache-2.0",
        library_name="transformers",
        tags=[
            "feature-extraction",
            STAND_IN_TAG,
            TEACHER_KIND,
            f"hubert-iteration-{results['iteration']}" if results["objective"] == "hubert" else "wav2vec2-contrastive",
            "synthetic-data",
        ],
    )
    body = f"""# Self-supervised stand-in teacher (NOT facebook/wav2vec2-large-xlsr-53)

A {results["parameters"]:,}-parameter `Wav2Vec2Model` of XLSR-53's architecture family (layer-norm conv front end,
stable-layer-norm encoder; {config.num_hidden_layers} layers, {config.hidden_size} wide, {config.conv_dim[0]}-channel front end), trained from {start} by DistilXLSR-PT's
`stand_ins/train_ssl_teacher.py` on **untranscribed** audio only: {results["train_clips"]:,} clips
({results["train_hours"]} h) of the project's **synthetic** espeak-ng Brazilian Portuguese demo corpus (the training
split's audio and the untranscribed clips of `make_demo_corpus.py --unlabelled_dir`, spoken by the training voices). No
transcript was read; no validation, test or free-speech sentence was heard in training.

{recipe_description(results)} {results["max_steps"]:,} steps of {results["batch_size"]} clips, AdamW at
{results["learning_rate"]} with a linear schedule; final eval loss {results.get("eval_loss", float("nan")):.3f} per masked
frame (validation audio; {chance_description(results)}).

It is a stand-in: XLSR-53 learnt from 56k hours of real speech in 53 languages. It exists so that the demo can show a
student inheriting knowledge that no label gave, offline, on a CPU. Weights are stored in float16; `from_pretrained`
loads them as float32. Remake it with ({timing}):

```bash
python stand_ins/make_demo_corpus.py --output_dir demo_corpus --unlabelled_dir demo_unlabelled
{chr(10).join(results["commands"])}
```
"""
    write_card(output_dir, data, body)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    command = "python stand_ins/train_ssl_teacher.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.time()
    previous = previous_iteration(args.target_model_dir)
    output_dir = Path(args.output_dir)
    check_output_dir(output_dir, RUN_FILES, overwrite=False, resuming=bool(args.resume_from_checkpoint), lock=True)
    training_dir = output_dir / "training"
    training_dir.mkdir(exist_ok=True)
    train_dataset, eval_dataset, num_units = build_data(args, training_dir)
    model = build_model(args.size, num_units, args.seed, args.init_model_dir, args.objective, args.num_negatives)
    metrics = train(args, model, train_dataset, eval_dataset, training_dir)
    results = {
        "teacher_kind": TEACHER_KIND,
        "objective": args.objective,
        "command": command,
        # every command that remakes this teacher, the previous iterations' first
        "commands": [*previous.get("commands", [previous["command"]] if previous else []), command],
        "iteration": previous.get("iteration", 1) + 1 if previous else 1,
        "target_model_dir": args.target_model_dir,
        "target_layer": args.target_layer if args.target_model_dir else None,
        "init_model_dir": args.init_model_dir,
        "num_units": num_units,
        "per_clip_cmvn": args.per_clip_cmvn if args.objective == "hubert" else None,
        "num_negatives": args.num_negatives if args.objective == "contrastive" else None,
        "max_steps": args.max_steps,
        "batch_size": args.per_device_train_batch_size,
        "learning_rate": args.learning_rate,
        "parameters": sum(p.numel() for p in encoder_of(model).parameters()),
        "minutes": (time.time() - started) / 60,
        "minutes_all_iterations": previous.get("minutes_all_iterations", previous.get("minutes", 0))
        + (time.time() - started) / 60,
        **metrics,
    }
    save_teacher(model, output_dir, results)
    print(f"Saved the self-supervised stand-in teacher to {output_dir}: eval loss {results.get('eval_loss'):.3f}")
    return results


if __name__ == "__main__":
    main()
