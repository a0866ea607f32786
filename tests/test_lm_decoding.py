"""add_ngram_lm.py and evaluate_asr.py on a tiny random CTC model: the saved LM is used by the pipeline in a fresh
process, alpha/beta tuning picks the best grid point, and evaluate_asr writes its table, JSON and model card."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import last_json, run_fresh_python
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

from configuration_distilxlsr import DistilXLSRConfig
from distilxlsr_pt.decoding import error_rates
from distilxlsr_pt.text import build_vocabulary
from modeling_distilxlsr import DistilXLSRForCTC

pytest.importorskip("kenlm")
pytest.importorskip("pyctcdecode")

import add_ngram_lm  # noqa: E402
import evaluate_asr  # noqa: E402
from distilxlsr_pt import decoding, evaluation, lm  # noqa: E402
from distilxlsr_pt.cli import eval_dataset_splits  # noqa: E402
from distilxlsr_pt.data import DatasetSplit  # noqa: E402
from distilxlsr_pt.models import load_ctc_model  # noqa: E402

SENTENCES = ["o gato come peixe", "a menina bebe água", "o cão dorme muito", "a vó come pão", "o menino bebe leite"]


def tiny_ctc_model(path: Path) -> Path:
    """A random DistilXLSR CTC model with a character tokenizer; its head is scaled up so that the per-frame argmax
    jumps between characters (greedy decoding spells nonsense, which an LM must change)."""
    vocab = build_vocabulary(SENTENCES)
    path.mkdir(parents=True)
    (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    Wav2Vec2CTCTokenizer(
        str(path / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|", bos_token=None,
        eos_token=None,
    ).save_pretrained(path)  # fmt: skip
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(path)
    torch.manual_seed(0)
    config = DistilXLSRConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=[16] * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, teacher_layers=[1], vocab_size=len(vocab),
        pad_token_id=0, mask_time_prob=0.0,
    )  # fmt: skip
    model = DistilXLSRForCTC(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    model.save_pretrained(path)
    return path


def noise_audiofolder(root: Path, sentences: list[str], seed: int, split: str = "test") -> Path:
    """An audiofolder of noise clips (0.5-1.5 s) labelled with `sentences`."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True)
    rows = ["file_name,transcription"]
    for i, sentence in enumerate(sentences):
        soundfile.write(root / split / f"{i}.wav", rng.standard_normal(rng.integers(8000, 24000)) * 0.1, 16000)
        rows.append(f"{i}.wav,{sentence}")
    (root / split / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def lm_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    model_dir = tiny_ctc_model(root / "ctc")
    text_file = root / "text.txt"
    text_file.write_text("\n".join(s.upper() + "!" for s in SENTENCES) + "\n", encoding="utf-8")  # normalised on use
    output_dir = root / "ctc-lm"
    info = add_ngram_lm.main(
        ["--model_name_or_path", str(model_dir), "--text_file", str(text_file), "--lm_order", "3",
         "--output_dir", str(output_dir), "--alpha", "2.0", "--beta", "0.5"]
    )  # fmt: skip
    return {"root": root, "model_dir": model_dir, "output_dir": output_dir, "info": info}


def test_lm_is_saved_in_transformers_layout(lm_model):
    output_dir = lm_model["output_dir"]
    for name in ("alphabet.json", "language_model/3gram.arpa", "language_model/unigrams.txt", "model.safetensors"):
        assert (output_dir / name).is_file(), name
    assert (output_dir / "language_model" / "unigrams.txt").read_text(encoding="utf-8").split() == sorted(
        {w for s in SENTENCES for w in s.split()}
    )  # the normalised text's words (no upper case, no "!")
    attrs = json.loads((output_dir / "language_model" / "attrs.json").read_text())
    assert attrs["alpha"] == 2.0 and attrs["beta"] == 0.5 and attrs["unk_score_offset"] == -10.0
    processor_config = json.loads((output_dir / "processor_config.json").read_text())
    assert processor_config["feature_extractor"]["processor_class"] == "Wav2Vec2ProcessorWithLM"
    card = (output_dir / "README.md").read_text(encoding="utf-8")
    assert "3-gram" in card and "5 sentences" in card and "text.txt" in card
    assert lm_model["info"]["unigrams"] == len({w for s in SENTENCES for w in s.split()}) == 15


def test_pipeline_decodes_with_the_lm_in_a_fresh_process(lm_model, tmp_path):
    """The pipeline loaded from the output directory alone transcribes with the LM: its text equals pyctcdecode's beam
    search on the model's logits, and differs from greedy decoding of the same logits."""
    output_dir = lm_model["output_dir"]
    audio = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    np.save(tmp_path / "audio.npy", audio)
    code = f"""
        import json
        import numpy as np
        from transformers import pipeline
        asr = pipeline("automatic-speech-recognition", model={str(output_dir)!r}, trust_remote_code=True)
        # evaluate_asr's beam settings (the pipeline's own default is pyctcdecode's: beam 100, token_min_logp -5)
        options = {{"beam_width": {decoding.BEAM_WIDTH}, "token_min_logp": {decoding.TOKEN_MIN_LOGP}}}
        text = asr(np.load({str(tmp_path / "audio.npy")!r}), decoder_kwargs=options)["text"]
        print(json.dumps({{"text": text, "type": asr.type}}))
        """
    output = last_json(run_fresh_python(code, cwd=tmp_path))
    assert output["type"] == "ctc_with_lm"

    model, processor = load_ctc_model(str(output_dir))
    logits = evaluation.compute_logits(model, processor, [audio])
    greedy = decoding.greedy_transcripts(processor.tokenizer, logits)[0]
    decoder = decoding.load_lm_decoder(output_dir)
    with_lm = decoding.lm_transcripts(decoder, logits)[0]
    assert output["text"] == with_lm
    assert with_lm != greedy


def test_alpha_beta_tuning_picks_the_best_grid_point(lm_model, tmp_path):
    tune_dir = noise_audiofolder(tmp_path / "tune", SENTENCES[:4], seed=1, split="validation")
    info = lm.build_lm_processor(
        lm_model["model_dir"], SENTENCES, tmp_path / "tuned", order=2,
        tune_on=DatasetSplit(str(tune_dir), split="validation"), alpha_grid=(0.1, 3.0), beta_grid=(0.0, 4.0),
        unk_score_offset_grid=(-10.0, -25.0),
    )  # fmt: skip
    trials = info["trials"]
    assert len(trials) == 8
    assert [(t["wer"], t["cer"]) for t in trials] == sorted((t["wer"], t["cer"]) for t in trials)
    best = tuple(trials[0][key] for key in ("alpha", "beta", "unk_score_offset"))
    assert (info["alpha"], info["beta"], info["unk_score_offset"]) == best
    attrs = json.loads((tmp_path / "tuned" / "language_model" / "attrs.json").read_text())
    assert (attrs["alpha"], attrs["beta"], attrs["unk_score_offset"]) == best
    assert "chosen by WER on tune (validation)" in (tmp_path / "tuned" / "README.md").read_text(encoding="utf-8")


def test_evaluate_asr_on_two_audiofolders(lm_model, tmp_path):
    first = noise_audiofolder(tmp_path / "first", SENTENCES[:3], seed=2)
    second = noise_audiofolder(tmp_path / "second", SENTENCES[3:], seed=3)
    output_dir = lm_model["output_dir"]
    out = tmp_path / "eval"
    results = evaluate_asr.main(
        ["--model_name_or_path", str(output_dir), "--dataset_name", f"{first},{second}", "--output_dir", str(out),
         "--batch_size", "2", "--num_workers", "1", "--update_model_card"]
    )  # fmt: skip
    saved = json.loads((out / "evaluation_results.json").read_text())
    assert set(saved) == {"first (test)", "second (test)", "average"}
    for label in ("first (test)", "second (test)"):
        assert set(saved[label]) >= {"wer", "cer", "wer_lm", "cer_lm", "rtf", "rtf_lm"}
        assert saved[label]["rtf"] > 0 and saved[label]["rtf_lm"] > 0
    assert saved["second (test)"]["clips"] == 2
    assert saved["average"]["wer_lm"] == pytest.approx(
        (saved["first (test)"]["wer_lm"] + saved["second (test)"]["wer_lm"]) / 2
    )

    # the greedy WER equals one computed clip by clip, unbatched, from the model directly
    model, processor = load_ctc_model(str(output_dir))
    references, predictions = [], []
    for row in (first / "test" / "metadata.csv").read_text().splitlines()[1:]:
        name, text = row.split(",")
        audio, _ = soundfile.read(first / "test" / name, dtype="float32")
        inputs = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            ids = model(inputs.input_values).logits.argmax(-1)
        references.append(text)
        predictions.append(" ".join(processor.tokenizer.batch_decode(ids)[0].replace("[UNK]", "⁇").split()))
    assert saved["first (test)"]["wer"] == pytest.approx(error_rates(references, predictions)["wer"])
    assert results == saved

    table = (out / "evaluation_results.md").read_text()
    assert table.count("\n") == 5 and "| average |" in table and "WER with LM (%)" in table
    card = (output_dir / "README.md").read_text(encoding="utf-8")
    assert "## Evaluation (evaluate_asr.py)" in card and "## Language model (add_ngram_lm.py)" in card
    from huggingface_hub import ModelCard

    names = {(r.dataset_name, r.metric_name) for r in ModelCard.load(output_dir / "README.md").data.eval_results}
    assert ("first (local audiofolder)", "Test WER with LM (%)") in names and (
        "second (local audiofolder)",
        "Test CER (%)",
    ) in names
    evaluation.update_model_card(
        output_dir,
        results,
        eval_dataset_splits(
            evaluate_asr.build_parser().parse_args(
                ["--model_name_or_path", str(output_dir), "--dataset_name", f"{first},{second}"]
            )
        ),
    )
    again = ModelCard.load(output_dir / "README.md")
    assert (
        len(again.data.eval_results) == len(names) == 8 and again.text.count("## Evaluation (evaluate_asr.py)") == 1
    )  # replaced


def test_finetune_ctc_lm_text_file_adds_the_lm_and_scores_the_test_split_both_ways(lm_model, tmp_path):
    from finetune_ctc import main as finetune

    data_dir = tmp_path / "corpus"
    for split, seed in (("train", 4), ("validation", 5), ("test", 6)):
        noise_audiofolder(data_dir, SENTENCES, seed=seed, split=split)
    text_file = tmp_path / "lm.txt"
    text_file.write_text("\n".join(SENTENCES), encoding="utf-8")
    output_dir = tmp_path / "out"
    results = finetune(
        ["--model_name_or_path", str(lm_model["model_dir"]), "--data_dir", str(data_dir), "--output_dir",
         str(output_dir), "--max_steps", "2", "--per_device_train_batch_size", "5", "--report_to", "none",
         "--save_strategy", "no", "--disable_tqdm", "True", "--log_level", "warning", "--lm_text_file",
         str(text_file), "--lm_order", "2"]
    )  # fmt: skip
    assert (output_dir / "language_model" / "2gram.arpa").is_file()
    saved = json.loads((output_dir / "all_results.json").read_text())
    for key in ("test_wer_lm", "test_cer_lm", "test_wer_greedy", "lm_alpha", "lm_beta"):
        assert saved[key] == results[key], key
    assert saved["test_wer_greedy"] == pytest.approx(saved["test_wer"])  # the same greedy score by both paths
    info = json.loads((output_dir / "lm_results.json").read_text())
    assert info["tuned_on"] == "corpus (validation)" and info["alpha"] == saved["lm_alpha"]
    card = (output_dir / "README.md").read_text(encoding="utf-8")
    assert "## Language model (add_ngram_lm.py)" in card and "Test WER with LM (%)" in card


def test_evaluate_asr_gives_a_too_short_clip_empty_text_and_chunks_long_ones(lm_model, tmp_path, caplog, capsys):
    """A 200-sample clip (shorter than the 400-sample receptive field) in the eval set: scored as empty text, greedy
    and with the LM, with a warning, instead of an IndexError. `--chunk_length_s` reaches the recogniser: impossible
    lengths are refused before any data is read, and 0.5 s windows score the 0.5-1.5 s clips."""
    corpus = noise_audiofolder(tmp_path / "corpus", SENTENCES[:3], seed=7)
    soundfile.write(corpus / "test" / "short.wav", np.random.default_rng(0).standard_normal(200) * 0.1, 16000)
    metadata = corpus / "test" / "metadata.csv"
    lines = metadata.read_text(encoding="utf-8").splitlines()
    metadata.write_text("\n".join([lines[0], "short.wav,o gato", *lines[1:]]) + "\n", encoding="utf-8")
    # one clip per batch: the short one alone, as it crashed before
    args = ["--model_name_or_path", str(lm_model["output_dir"]), "--dataset_name", str(corpus), "--num_workers", "1",
            "--batch_size", "1", "--num_examples", "1"]  # fmt: skip
    results = evaluate_asr.main(args)
    assert results["corpus (test)"]["clips"] == 4
    assert "shorter than the model's receptive field" in caplog.text
    printed = capsys.readouterr().out
    assert "reference: o gato\n  greedy:    \n  LM:        \n" in printed  # the short clip, printed first

    with pytest.raises(ValueError, match="more than twice stride_length_s"):
        evaluate_asr.main([*args, "--chunk_length_s", "0.2", "--stride_length_s", "0.1"])
    chunked = evaluate_asr.main([*args, "--chunk_length_s", "0.5", "--stride_length_s", "0.1"])
    assert chunked["corpus (test)"]["clips"] == 4 and chunked["corpus (test)"]["wer"] > 0
