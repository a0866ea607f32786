"""Giving a CTC recogniser an n-gram language model, the way Portuguese XLSR-53 models on the Hub ship one.

The text is normalised like the transcripts (`text.normalize_text`), a modified Kneser-Ney model is estimated
(`ngram`, what KenLM's `lmplz` does) and written as ARPA, and a `Wav2Vec2ProcessorWithLM` (pyctcdecode decoder:
`alphabet.json` and `language_model/` with the ARPA file, its unigrams and alpha / beta / unk_score_offset) is saved
next to a copy of the model. Used by add_ngram_lm.py and by finetune_ctc.py's `--lm_text_file`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from transformers import Wav2Vec2ProcessorWithLM

from .cards import set_card_section
from .data import DatasetSplit, load_clips
from .decoding import BEAM_WIDTH, decoder_labels, error_rates, lm_transcripts
from .evaluation import compute_logits, evaluate_model, update_model_card
from .models import load_ctc_model
from .ngram import BOS, EOS, UNK, write_kneser_ney_arpa
from .results import write_results
from .text import normalize_text

logger = logging.getLogger(__name__)

LM_CARD_SECTION = "## Language model (add_ngram_lm.py)"
# Files of a model directory that are not copied to the output: training state and any previous decoder.
NOT_COPIED = ("checkpoint-*", "runs", "language_model", "alphabet.json", "optimizer.pt", "scheduler.pt")


def read_texts(text_file: str | None = None, dataset: DatasetSplit | None = None) -> list[str]:
    """Normalised, non-empty sentences of a text file (one per line) and/or of a dataset split's text column (a
    `DatasetSplit` with `audio_column=None`)."""
    texts: list[str] = []
    if text_file:
        texts += Path(text_file).read_text(encoding="utf-8").splitlines()
    if dataset is not None:
        texts += dataset.load()[dataset.text_column]
    sentences = [sentence for sentence in map(normalize_text, texts) if sentence]
    if not sentences:
        raise ValueError("No text for the language model: give --text_file or --dataset_name with sentences in it.")
    return sentences


def check_text_file(text_file: str | os.PathLike, flag: str = "--lm_text_file") -> None:
    """Fail at the start of a run, not after hours of training, on an LM text file (given as `flag`) that is missing,
    not UTF-8, or holds no sentence once normalised. Reads only up to the first sentence."""
    path = Path(text_file)
    if not path.is_file():
        raise ValueError(f"{flag} {path}: no such file.")
    try:
        with open(path, encoding="utf-8") as file:
            has_sentence = any(normalize_text(line) for line in file)
    except UnicodeDecodeError as error:
        raise ValueError(f"{flag} {path} is not UTF-8 text ({error}).") from error
    if not has_sentence:
        raise ValueError(f"{flag} {path} holds no sentence: give a UTF-8 text file with one sentence per line.")


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
        trials.append({**point, **error_rates(references, transcripts)})
        logger.info("%s: WER %.4f CER %.4f", point, trials[-1]["wer"], trials[-1]["cer"])
    trials.sort(key=lambda trial: (trial["wer"], trial["cer"]))
    processor.decoder.reset_params(**{key: trials[0][key] for key in ("alpha", "beta", "unk_score_offset")})
    return trials


def write_card_section(output_dir: str | os.PathLike, info: dict) -> None:
    """Say in the model card which text the LM saw and how it decodes (replacing an earlier such section)."""
    tuned = (
        f" chosen by WER on {info['tuned_on']} from a grid of {info['grid_points']} points"
        if info.get("tuned_on")
        else ""
    )
    section = f"""A {info["order"]}-gram word language model (interpolated modified Kneser-Ney, estimated by DistilXLSR-PT's
`distilxlsr_pt/ngram.py`) in `language_model/`, decoded with pyctcdecode (beam search): alpha {info["alpha"]}, beta
{info["beta"]}{tuned}, unk_score_offset {info["unk_score_offset"]}.

- Text it saw: {info["source"]}: {info["sentences"]} sentences, {info["words"]} words, {info["unigrams"]} distinct
  words, normalised like the transcripts. Words outside this text can still be recognised, at a penalty.
- `pipeline("automatic-speech-recognition", model=..., trust_remote_code=True)` decodes with it (transformers
  deprecates that path for v6); `evaluate_asr.py` calls pyctcdecode directly and reports both decodings.
"""
    set_card_section(output_dir, LM_CARD_SECTION, section)


def build_lm_processor(
    model_dir: str | os.PathLike,
    texts: list[str],
    output_dir: str | os.PathLike,
    order: int = 4,
    alpha: float = 0.5,
    beta: float = 1.0,
    unk_score_offset: float = -10.0,
    tune_on: DatasetSplit | None = None,
    alpha_grid: Iterable[float] = (0.3, 0.5, 0.8, 1.2),
    beta_grid: Iterable[float] = (1.0, 2.0, 3.0, 4.0),
    unk_score_offset_grid: Iterable[float] = (-10.0, -20.0),
    num_workers: int = 1,
    beam_width: int = BEAM_WIDTH,
    source: str = "given text",
    trust_remote_code: bool = False,
) -> dict:
    """Estimate an `order`-gram LM on `texts` (normalised here), save the model of `model_dir` with a
    `Wav2Vec2ProcessorWithLM` to `output_dir` (may be `model_dir` itself) and note the LM in its model card. With
    `tune_on`, alpha and beta are chosen on that eval set. Returns what was done: order, alpha, beta, counts, the
    tuning trials."""
    texts = [sentence for sentence in map(normalize_text, texts) if sentence]
    if not texts:
        raise ValueError("No text for the language model.")
    output_dir = Path(output_dir)
    model, processor = load_ctc_model(str(model_dir), trust_remote_code=trust_remote_code)  # before any copy
    if Path(model_dir).resolve() != output_dir.resolve():
        shutil.copytree(model_dir, output_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*NOT_COPIED))
    labels = decoder_labels(processor.tokenizer)
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
            audio, references = load_clips(tune_on, processor.feature_extractor.sampling_rate)
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
    write_results(output_dir, "lm", info)
    return info


def add_lm_and_score(
    model_dir: str | os.PathLike,
    text_file: str,
    order: int = 4,
    test_set: DatasetSplit | None = None,
    tune_on: DatasetSplit | None = None,
    num_workers: int = os.cpu_count() or 1,
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """`finetune_ctc.py --lm_text_file`: add an LM of `text_file` to the model in `model_dir` (alpha and beta tuned on
    `tune_on` when given), score `test_set` greedily and with the LM, put that into the model card, and return
    {"test_wer_greedy", "test_cer_greedy", "test_wer_lm", "test_cer_lm", "lm_alpha", "lm_beta"}."""
    info = build_lm_processor(
        model_dir, read_texts(text_file), model_dir, order, tune_on=tune_on, num_workers=num_workers, source=text_file,
        trust_remote_code=trust_remote_code,
    )  # fmt: skip
    results = {"lm_alpha": info["alpha"], "lm_beta": info["beta"]}
    if test_set is not None:
        scores = evaluate_model(
            str(model_dir), [test_set], num_workers=num_workers, trust_remote_code=trust_remote_code
        )
        update_model_card(model_dir, scores, [test_set], greedy=False)
        result = scores[test_set.label]
        results.update(
            test_wer_greedy=result["wer"], test_cer_greedy=result["cer"], test_wer_lm=result["wer_lm"],
            test_cer_lm=result["cer_lm"],
        )  # fmt: skip
    return results
