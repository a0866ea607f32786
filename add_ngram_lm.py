#!/usr/bin/env python
"""Add a word n-gram language model to a CTC speech recogniser, the way Portuguese XLSR-53 models on the Hub ship one.

    python add_ngram_lm.py --model_name_or_path outputs/student-ctc --text_file lm_text.txt --order 4 \\
        --output_dir outputs/student-ctc-lm --tune_on data/demo_corpus --tune_split validation

The text (a file with one sentence per line, and/or a column of a dataset) is normalised like the transcripts
(`text_normalization.normalize_text`), a modified Kneser-Ney model is estimated (`ngram_lm.py`, what KenLM's `lmplz`
does) and written as ARPA, and a `Wav2Vec2ProcessorWithLM` (pyctcdecode decoder: `alphabet.json` and
`language_model/` with the ARPA file, its unigrams and alpha / beta / unk_score_offset) is saved next to a copy of the
model. Then `pipeline("automatic-speech-recognition", model=OUTPUT_DIR, trust_remote_code=True)` decodes with the LM,
and `evaluate_asr.py --model_name_or_path OUTPUT_DIR` scores greedy and LM decoding. `--tune_on` picks alpha and beta
by WER on an eval split (grid `--alpha_grid` x `--beta_grid`); never tune on the test split you report.

transformers deprecates LM decoding through the pipeline for v6: the project's evaluation calls pyctcdecode directly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from datasets import load_dataset
from transformers import Wav2Vec2ProcessorWithLM

from evaluate_asr import (
    BEAM_WIDTH,
    EvalSet,
    compute_logits,
    evaluate_model,
    lm_transcripts,
    load_ctc_model,
    load_eval_set,
    update_model_card,
)
from finetune_ctc import error_rates
from ngram_lm import BOS, EOS, UNK, write_kneser_ney_arpa
from text_normalization import normalize_text

logger = logging.getLogger("add_ngram_lm")

LM_CARD_SECTION = "## Language model (add_ngram_lm.py)"
# Files of a model directory that are not copied to the output: training state and any previous decoder.
NOT_COPIED = ("checkpoint-*", "runs", "language_model", "alphabet.json", "optimizer.pt", "scheduler.pt")


def read_texts(
    text_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    dataset_split: str = "train",
    text_column_name: str = "text",
) -> list[str]:
    """Normalised, non-empty sentences of a text file (one per line) and/or of a dataset's text column."""
    texts: list[str] = []
    if text_file:
        texts += Path(text_file).read_text(encoding="utf-8").splitlines()
    if dataset_name:
        dataset = load_dataset(dataset_name, dataset_config_name, split=dataset_split)
        if text_column_name not in dataset.column_names:
            raise ValueError(f"{dataset_name} has no column {text_column_name!r}: {dataset.column_names}")
        texts += dataset[text_column_name]
    sentences = [sentence for sentence in map(normalize_text, texts) if sentence]
    if not sentences:
        raise ValueError("No text for the language model: give --text_file or --dataset_name with sentences in it.")
    return sentences


def decoder_labels(processor) -> list[str]:
    """The tokenizer's tokens in id order: pyctcdecode's alphabet (it maps [PAD] to the blank, | to the space)."""
    vocab = processor.tokenizer.get_vocab()
    labels = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    if [index for _, index in sorted(vocab.items(), key=lambda item: item[1])] != list(range(len(labels))):
        raise ValueError("The tokenizer's ids are not 0..N-1: cannot map them to CTC outputs.")
    delimiter = getattr(processor.tokenizer, "word_delimiter_token", "|")
    return [" " if token == delimiter else token for token in labels]


def save_with_lm(processor: Wav2Vec2ProcessorWithLM, output_dir: str | os.PathLike) -> None:
    """Save the processor and decoder, and declare `Wav2Vec2ProcessorWithLM` in the feature extractor's config:
    transformers' pipeline attaches the LM only when the feature extractor section says so (in transformers 5 the
    nested `feature_extractor` of processor_config.json), and `save_pretrained` leaves it out."""
    for stale in ("language_model", "alphabet.json"):  # pyctcdecode loads a directory with exactly its own files
        path = Path(output_dir) / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    processor.save_pretrained(output_dir)
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = Path(output_dir) / name
        if not path.is_file():
            continue
        config = json.loads(path.read_text(encoding="utf-8"))
        config["processor_class"] = "Wav2Vec2ProcessorWithLM"
        if isinstance(config.get("feature_extractor"), dict):
            config["feature_extractor"]["processor_class"] = "Wav2Vec2ProcessorWithLM"
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def tune_decoder(
    processor: Wav2Vec2ProcessorWithLM,
    logits: list,
    references: list[str],
    alphas: Iterable[float],
    betas: Iterable[float],
    unk_score_offsets: Iterable[float] = (-10.0,),
    num_workers: int = 1,
    beam_width: int = BEAM_WIDTH,
) -> list[dict[str, float]]:
    """Grid search of alpha, beta and unk_score_offset by WER (then CER) on `references`; sets the best point on the
    decoder and returns every point tried, best first."""
    trials = []
    for params in itertools.product(alphas, betas, unk_score_offsets):
        point = dict(zip(("alpha", "beta", "unk_score_offset"), map(float, params)))
        processor.decoder.reset_params(**point)
        transcripts = lm_transcripts(processor.decoder, logits, beam_width, num_workers)
        trials.append({**point, **error_rates(references, [normalize_text(text) for text in transcripts])})
        logger.info("%s: WER %.4f CER %.4f", point, trials[-1]["wer"], trials[-1]["cer"])
    trials.sort(key=lambda trial: (trial["wer"], trial["cer"]))
    processor.decoder.reset_params(**{key: trials[0][key] for key in ("alpha", "beta", "unk_score_offset")})
    return trials


def write_card_section(output_dir: str | os.PathLike, info: dict) -> None:
    """Say in the model card which text the LM saw and how it decodes (replacing an earlier such section)."""
    path = Path(output_dir) / "README.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    before, _, after = text.partition(LM_CARD_SECTION)
    rest = after.split("\n## ", 1)[1] if "\n## " in after else ""
    tuned = (
        f" chosen by WER on {info['tuned_on']} from a grid of {info['grid_points']} points"
        if info.get("tuned_on")
        else ""
    )
    section = f"""{LM_CARD_SECTION}

A {info["order"]}-gram word language model (interpolated modified Kneser-Ney, estimated by DistilXLSR-PT's
`ngram_lm.py`) in `language_model/`, decoded with pyctcdecode (beam search): alpha {info["alpha"]}, beta
{info["beta"]}{tuned}, unk_score_offset {info["unk_score_offset"]}.

- Text it saw: {info["source"]}: {info["sentences"]} sentences, {info["words"]} words, {info["unigrams"]} distinct
  words, normalised like the transcripts. Words outside this text can still be recognised, at a penalty.
- `pipeline("automatic-speech-recognition", model=..., trust_remote_code=True)` decodes with it (transformers
  deprecates that path for v6); `evaluate_asr.py` calls pyctcdecode directly and reports both decodings.
"""
    text = before.rstrip() + ("\n\n" if before.strip() else "") + section + (f"\n## {rest}" if rest else "")
    path.write_text(text, encoding="utf-8")


def build_lm_processor(
    model_dir: str | os.PathLike,
    texts: list[str],
    output_dir: str | os.PathLike,
    order: int = 4,
    alpha: float = 0.5,
    beta: float = 1.0,
    unk_score_offset: float = -10.0,
    tune_on: EvalSet | None = None,
    alpha_grid: Iterable[float] = (0.3, 0.5, 0.8, 1.2),
    beta_grid: Iterable[float] = (1.0, 2.0, 3.0, 4.0),
    unk_score_offset_grid: Iterable[float] = (-10.0, -20.0),
    num_workers: int = 1,
    beam_width: int = BEAM_WIDTH,
    source: str = "given text",
) -> dict:
    """Estimate an `order`-gram LM on `texts` (normalised here), save the model of `model_dir` with a
    `Wav2Vec2ProcessorWithLM` to `output_dir` (may be `model_dir` itself) and note the LM in its model card. With
    `tune_on`, alpha and beta are chosen on that eval set. Returns what was done: order, alpha, beta, counts, the
    tuning trials."""
    texts = [sentence for sentence in map(normalize_text, texts) if sentence]
    if not texts:
        raise ValueError("No text for the language model.")
    output_dir = Path(output_dir)
    if Path(model_dir).resolve() != output_dir.resolve():
        shutil.copytree(model_dir, output_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*NOT_COPIED))
    model, processor = load_ctc_model(str(model_dir))
    labels = decoder_labels(processor)
    if len(labels) != model.config.vocab_size:
        raise ValueError(f"The tokenizer has {len(labels)} tokens but the model {model.config.vocab_size} outputs.")

    from pyctcdecode import build_ctcdecoder

    with tempfile.TemporaryDirectory() as tmp:
        arpa = Path(tmp) / f"{order}gram.arpa"
        lm = write_kneser_ney_arpa(texts, arpa, order)
        unigrams = sorted(word for (word,) in lm.log_probs[0] if word not in (BOS, EOS, UNK))
        decoder = build_ctcdecoder(
            labels, str(arpa), unigrams, alpha=alpha, beta=beta, unk_score_offset=unk_score_offset
        )
        processor_lm = Wav2Vec2ProcessorWithLM(processor.feature_extractor, processor.tokenizer, decoder)
        info = {
            "order": order,
            "source": source,
            "sentences": len(texts),
            "words": sum(len(text.split()) for text in texts),
            "unigrams": len(unigrams),
            "discounts": lm.discounts,
            "alpha": alpha,
            "beta": beta,
            "unk_score_offset": unk_score_offset,
        }
        if tune_on is not None:
            audio, references = load_eval_set(tune_on, processor.feature_extractor.sampling_rate)
            logits = compute_logits(model, processor, audio)
            trials = tune_decoder(
                processor_lm, logits, references, alpha_grid, beta_grid, unk_score_offset_grid, num_workers, beam_width
            )
            info.update(
                alpha=trials[0]["alpha"],
                beta=trials[0]["beta"],
                unk_score_offset=trials[0]["unk_score_offset"],
                tuned_on=tune_on.label,
                grid_points=len(trials),
                trials=trials,
            )
        save_with_lm(processor_lm, output_dir)
    write_card_section(output_dir, info)
    (output_dir / "lm_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return info


def add_lm_and_score(
    model_dir: str | os.PathLike,
    text_file: str,
    order: int = 4,
    test_set: EvalSet | None = None,
    tune_on: EvalSet | None = None,
    num_workers: int = os.cpu_count() or 1,
) -> dict[str, float]:
    """`finetune_ctc.py --lm_text_file`: add an LM of `text_file` to the model in `model_dir` (alpha and beta tuned on
    `tune_on` when given), score `test_set` greedily and with the LM, put that into the model card, and return
    {"test_wer_greedy", "test_cer_greedy", "test_wer_lm", "test_cer_lm", "lm_alpha", "lm_beta"}."""
    info = build_lm_processor(
        model_dir, read_texts(text_file), model_dir, order, tune_on=tune_on, num_workers=num_workers, source=text_file
    )
    results = {"lm_alpha": info["alpha"], "lm_beta": info["beta"]}
    if test_set is not None:
        scores = evaluate_model(str(model_dir), [test_set], num_workers=num_workers)
        update_model_card(model_dir, scores, [test_set], greedy=False)
        result = scores[test_set.label]
        results.update(
            test_wer_greedy=result["wer"], test_cer_greedy=result["cer"], test_wer_lm=result["wer_lm"],
            test_cer_lm=result["cer_lm"],
        )  # fmt: skip
    return results


def floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="A fine-tuned CTC model directory.")
    parser.add_argument("--output_dir", required=True, help="Where the model with its LM goes (may be the model's).")
    parser.add_argument("--text_file", default=None, help="LM text, one sentence per line.")
    parser.add_argument("--dataset_name", default=None, help="A Hub dataset (or local folder) with LM text.")
    parser.add_argument("--dataset_config_name", default=None, help="Its config.")
    parser.add_argument("--dataset_split", default="train", help="Its split with the text (default: %(default)s).")
    parser.add_argument("--text_column_name", default="text", help="Its text column (default: %(default)s).")
    parser.add_argument("--order", type=int, default=4, help="N-gram order (default: %(default)s).")
    parser.add_argument("--alpha", type=float, default=0.5, help="LM weight (default: %(default)s).")
    parser.add_argument("--beta", type=float, default=1.0, help="Word insertion bonus (default: %(default)s).")
    parser.add_argument(
        "--unk_score_offset",
        type=float,
        default=-10.0,
        help="Log score added for words the LM text lacks (default: %(default)s); less negative lets more through.",
    )
    parser.add_argument(
        "--tune_on", default=None, help="Choose alpha and beta on this eval set: a local audiofolder or Hub dataset."
    )
    parser.add_argument("--tune_config_name", default=None, help="Config of the --tune_on dataset.")
    parser.add_argument("--tune_split", default="validation", help="Split of --tune_on (default: %(default)s).")
    parser.add_argument(
        "--tune_text_column_name",
        default="transcription",
        help="Transcript column of --tune_on (default: %(default)s).",
    )
    parser.add_argument("--max_tune_samples", type=int, default=None, help="Tune on the first N clips only.")
    parser.add_argument("--alpha_grid", type=floats, default="0.3,0.5,0.8,1.2", help="Alphas tried by --tune_on.")
    parser.add_argument("--beta_grid", type=floats, default="1,2,3,4", help="Betas tried by --tune_on.")
    parser.add_argument(
        "--unk_score_offset_grid", type=floats, default="-10,-20", help="unk_score_offsets tried by --tune_on."
    )
    parser.add_argument(
        "--beam_width", type=int, default=BEAM_WIDTH, help="Beam width while tuning (default: %(default)s)."
    )
    parser.add_argument(
        "--num_workers", type=int, default=os.cpu_count() or 1, help="Processes for LM decoding while tuning."
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if not (args.text_file or args.dataset_name):
        build_parser().error("give --text_file and/or --dataset_name for the LM text")
    texts = read_texts(
        args.text_file, args.dataset_name, args.dataset_config_name, args.dataset_split, args.text_column_name
    )
    source = " + ".join(
        filter(None, [args.text_file, args.dataset_name and f"{args.dataset_name} ({args.dataset_split})"])
    )
    tune_on = None
    if args.tune_on:
        tune_on = EvalSet(
            args.tune_on,
            args.tune_config_name,
            args.tune_split,
            args.tune_text_column_name,
            max_samples=args.max_tune_samples,
        )
    info = build_lm_processor(
        args.model_name_or_path,
        texts,
        args.output_dir,
        order=args.order,
        alpha=args.alpha,
        beta=args.beta,
        unk_score_offset=args.unk_score_offset,
        tune_on=tune_on,
        alpha_grid=args.alpha_grid,
        beta_grid=args.beta_grid,
        unk_score_offset_grid=args.unk_score_offset_grid,
        num_workers=args.num_workers,
        beam_width=args.beam_width,
        source=source,
    )
    print(json.dumps({key: value for key, value in info.items() if key != "trials"}, indent=1, ensure_ascii=False))
    return info


if __name__ == "__main__":
    main()
