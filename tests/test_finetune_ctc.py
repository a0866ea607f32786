"""Tests of finetune_ctc.py: text normalisation, vocabulary, collator and trainer details, a tiny end-to-end run with a
fresh-process pipeline, bad input, and an overfitting run that proves labels, blank and decoding line up."""

import csv
import errno
import json
import math
import shutil
import subprocess
import textwrap
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import last_json, run_fresh_python, start_claimant, tell
from huggingface_hub import ModelCardData
from transformers import TrainingArguments, Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2Processor

import finetune_ctc
from configuration_distilxlsr import DistilXLSRConfig
from distilxlsr_pt import ctc
from distilxlsr_pt.cards import write_card
from distilxlsr_pt.ctc import CTCTrainer, DataCollatorCTCWithPadding
from distilxlsr_pt.data import DatasetSplit
from distilxlsr_pt.decoding import greedy_decode
from distilxlsr_pt.models import LoadingError, default_feature_extractor
from distilxlsr_pt.stand_ins import stand_in_teacher_config
from distilxlsr_pt.text import DEFAULT_CHARS_TO_IGNORE, build_vocabulary, normalize_text
from finetune_ctc import main
from modeling_distilxlsr import DistilXLSRForCTC, DistilXLSRModel, min_samples_for_frames

needs_tts = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox"
)

SENTENCES = [
    "Você já viu a cidade? Não, ainda não!",
    "Ação, coração e pão.",
    "A avó de João comeu açúcar à tarde.",
    "Onde está o chapéu do pai?",
    "Inês vai à praia amanhã.",
    "O médico chegou cansado.",
    "Sebastião estudou as lições.",
    "A mãe comprou três maçãs.",
    "Antônio trabalhou na cozinha.",
    "Lúcia cantou na sala.",
    "O irmão voltou às sete.",
    "Cláudia viu o avião.",
    "Por que você chegou atrasado?",
    "Sim, o capitão disse que sim.",
    "Márcia bebeu o café quente.",
    "A família de Conceição leu o jornal.",
    "O menino perdeu a bola.",
    "Mônica abriu a janela.",
    "Flávio fechou a porta.",
    "O vizinho lavou a câmera.",
]


@pytest.fixture(autouse=True, scope="module")
def grad_enabled():
    """Training needs autograd, whatever another test module switched off globally (at import, say)."""
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(True)
    yield
    torch.set_grad_enabled(previous)


# ---------------------------------------------------------------------------------------------------------------------
# Helpers: a small audiofolder spoken by espeak-ng (pt-br), converted by sox.
# ---------------------------------------------------------------------------------------------------------------------
def synthesize(path: Path, text: str, rate: int = 16000, channels: int = 1, speed: int = 175, trim: bool = False):
    """Speak `text` into a 16-bit WAV at `rate` Hz with `channels` channels."""
    speech = subprocess.run(
        ["espeak-ng", "-v", "pt-br", "-s", str(speed), "--stdout", text], check=True, capture_output=True
    ).stdout
    effects = ["silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse"] if trim else []
    subprocess.run(
        ["sox", "-D", "-t", "wav", "-", "-r", str(rate), "-c", str(channels), "-b", "16", str(path), *effects],
        input=speech,
        check=True,
        capture_output=True,
    )


def write_split(directory: Path, rows: list[tuple[str, str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "metadata.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["file_name", "transcription"])
        writer.writerows(rows)


def make_audiofolder(root: Path, splits: dict[str, list[str]], **synth_kwargs) -> Path:
    for split, texts in splits.items():
        rows = []
        for i, text in enumerate(texts):
            name = f"{split}_{i:03d}.wav"
            (root / split).mkdir(parents=True, exist_ok=True)
            synthesize(root / split / name, text, **synth_kwargs)
            rows.append((name, text))
        write_split(root / split, rows)
    return root


def tiny_student(path: Path, **shape) -> Path:
    """A tiny DistilXLSR student distilled (initialised) from a random stand-in teacher, saved like train_distill."""
    from transformers import Wav2Vec2Model

    torch.manual_seed(0)
    teacher = Wav2Vec2Model(stand_in_teacher_config("tiny")).eval()
    shape = {"num_hidden_layers": 2, **shape}
    config = DistilXLSRConfig.from_teacher_config(teacher.config, teacher_layers=(4, 12), **shape)
    DistilXLSRModel.from_teacher(teacher, config).save_pretrained(path)
    # Its card is tagged as train_distill.py tags a student of a stand-in teacher: the one way a stand-in is read.
    write_card(
        path, ModelCardData(tags=["distilxlsr", "stand-in"]), "# Tiny student of a stand-in teacher (random weights)"
    )
    return path


def common_args(output_dir: Path, cache_dir: Path) -> list[str]:
    return [
        "--output_dir", str(output_dir), "--cache_dir", str(cache_dir), "--report_to", "none",
        "--disable_tqdm", "True", "--log_level", "warning", "--save_strategy", "no", "--seed", "0",
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Text normalisation and vocabulary
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Você já viu a cidade? Não, ainda não!", "você já viu a cidade não ainda não"),
        ("Ação, coração e pão.", "ação coração e pão"),
        ("«Olá» — disse ela… (baixinho); “tchau”!", "olá disse ela baixinho tchau"),
        ("  ÁGUA   à   Vista\t e\u00a0PÊSSEGO ", "água à vista e pêssego"),
        ("guarda-chuva d'água 100%", "guarda chuva d água 100"),
        ("Sim?Não!", "sim não"),
        ("Pinguim, lingüiça: ÜBER", "pinguim lingüiça über"),
        ("?!…", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("bom\u200bdia", "bom dia"),  # a zero-width space separates words
        ("compu\u00adtador", "computador"),  # a soft hyphen joins
        ("\ufeffOlá", "olá"),  # a byte-order mark
        ("sim\u200f não\u200e", "sim não"),  # direction marks
        ("Legal 👍🏻! Te amo ❤️", "legal te amo"),  # emoji, their skin-tone modifiers and variation selectors
        ("família 👨\u200d👩\u200d👧 feliz", "família feliz"),  # an emoji sequence joined by zero-width joiners
        ("1️⃣ vez, 25°C, R$ 10 + 2", "1 vez 25 c r 10 2"),  # keycap, degree, currency and maths signs
        ("a\u200d\u0301gua", "água"),  # a joiner removed between a letter and its accent: NFC still composes
    ],
)
def test_normalize_text_removes_invisible_characters_and_symbols(text, expected):
    assert normalize_text(text) == expected


def test_only_letters_digits_and_kept_punctuation_reach_the_vocabulary():
    texts = ["Olá 👍 mundo ❤️!", "R$ 5 + 2 = 7 °C ™ ©", "bom\u200bdia\ufeff \u200f\x07\ue000"]
    for chars_to_ignore, categories in ((DEFAULT_CHARS_TO_IGNORE, {"L", "N"}), ([], {"L", "N", "P"})):
        vocab = build_vocabulary(normalize_text(text, chars_to_ignore) for text in texts)
        characters = set(vocab) - {"[PAD]", "[UNK]", "|"}
        assert {unicodedata.category(char)[0] for char in characters} <= categories, characters


def test_normalize_text_gives_nfc_for_nfd_input():
    nfd = unicodedata.normalize("NFD", "Coração, Ação e Pão")
    assert nfd != unicodedata.normalize("NFC", nfd)  # really decomposed
    normalized = normalize_text(nfd)
    assert normalized == "coração ação e pão"
    assert unicodedata.is_normalized("NFC", normalized)


def test_normalize_text_custom_chars_to_ignore():
    assert normalize_text("Olá, mundo-novo!", chars_to_ignore=[","]) == "olá mundo-novo!"
    assert normalize_text("Olá, mundo!", chars_to_ignore=[]) == "olá, mundo!"


def test_build_vocabulary_on_portuguese_sentences():
    texts = [normalize_text(s) for s in SENTENCES]
    vocab = build_vocabulary(texts)
    assert vocab["[PAD]"] == 0 and vocab["[UNK]"] == 1 and vocab["|"] == 2
    assert " " not in vocab
    assert {"ç", "ã", "õ", "á", "à", "â", "é", "ê", "í", "ó", "ô", "ú"} <= set(vocab)
    assert not set(vocab) & {",", "?", "!", ".", "A", "V"}
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert set(vocab) - {"[PAD]", "[UNK]", "|"} == set("".join(texts)) - {" "}


def test_tokenizer_from_vocabulary_maps_unseen_characters_to_unk(tmp_path):
    vocab = build_vocabulary([normalize_text(s) for s in SENTENCES])
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(
        str(tmp_path / "vocab.json"),
        unk_token="[UNK]",
        pad_token="[PAD]",
        word_delimiter_token="|",
        bos_token=None,
        eos_token=None,
    )
    ids = tokenizer(normalize_text("Ação, ñandu!")).input_ids
    assert ids == [vocab["a"], vocab["ç"], vocab["ã"], vocab["o"], vocab["|"], vocab["[UNK]"]] + [
        vocab[c] for c in "andu"
    ]
    # Greedy CTC decoding: repeats merged, blanks ([PAD]) and -100 padding dropped, delimiters become spaces.
    p, a, o, bar = vocab["[PAD]"], vocab["a"], vocab["o"], vocab["|"]
    assert greedy_decode(tokenizer, np.array([[a, a, p, a, bar, bar, p, o, -100, -100]])) == ["aa o"]


def test_min_samples_for_frames():
    assert min_samples_for_frames(Wav2Vec2Config()) == 400  # wav2vec2's receptive field, 25 ms at 16 kHz
    assert min_samples_for_frames(Wav2Vec2Config(), frames=10) == 400 + 9 * 320


def test_ctc_frames_needed_counts_a_blank_between_repeats():
    assert ctc.ctc_frames_needed([]) == 0
    assert ctc.ctc_frames_needed([3, 4, 5]) == 3
    assert ctc.ctc_frames_needed([3, 3, 4, 4, 4]) == 5 + 3


def test_prepare_split_drops_and_counts_training_transcripts_longer_than_their_frames(tmp_path):
    """A 0.1 s clip has 4 frames (XLSR-53's conv stack): "abc" and "aab" (3 + 1 repeat) fit, "abcde" and "aaaa" (4 + 3
    repeats) would be trained on with their CTC loss zeroed: dropped and counted. Without a model config (the scored
    splits) all are kept."""
    from datasets import Dataset

    (tmp_path / "vocab.json").write_text(json.dumps(build_vocabulary(["abcde"])), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), bos_token=None, eos_token=None)
    processor = Wav2Vec2Processor(feature_extractor=default_feature_extractor(), tokenizer=tokenizer)
    texts = ["abc", "aab", "abcde", "aaaa"]
    audio = np.random.default_rng(0).standard_normal(1600).astype(np.float32)
    dataset = Dataset.from_dict({"audio": [audio] * len(texts), "target_text": texts})
    config = Wav2Vec2Config()
    kept, stats = ctc.prepare_split(dataset, processor, "audio", "input_length", 400, 16000, None, "train", config)
    assert kept["target_text"] == ["abc", "aab"]
    assert stats["train_filtered_transcript_too_long"] == 2 and stats["train_samples"] == 2
    kept, stats = ctc.prepare_split(dataset, processor, "audio", "input_length", 400, 16000, None, "eval")
    assert len(kept) == 4 and "eval_filtered_transcript_too_long" not in stats


@pytest.mark.parametrize("content", [None, "", "\n  \n?! …\n"])
def test_a_missing_or_empty_lm_text_file_is_refused_before_any_data_is_read(tmp_path, monkeypatch, capsys, content):
    monkeypatch.setattr(DatasetSplit, "load", lambda *a, **k: pytest.fail("data was loaded"))
    text_file = tmp_path / "lm.txt"
    if content is not None:
        text_file.write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["--model_name_or_path", str(tmp_path / "model"), "--data_dir", str(tmp_path), "--lm_text_file",
              str(text_file), *common_args(tmp_path / "out", tmp_path / "cache")])  # fmt: skip
    error = capsys.readouterr().err
    assert (
        f"--lm_text_file {text_file}" in error and ("no such file" if content is None else "holds no sentence") in error
    )


# ---------------------------------------------------------------------------------------------------------------------
# Collator and trainer
# ---------------------------------------------------------------------------------------------------------------------
def small_ctc_model(vocab_size: int = 8, **overrides) -> DistilXLSRForCTC:
    torch.manual_seed(0)
    config = DistilXLSRConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=[16] * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, teacher_layers=[1], vocab_size=vocab_size,
        pad_token_id=0, mask_time_prob=0.0, **overrides,
    )  # fmt: skip
    return DistilXLSRForCTC(config).eval()


def test_collator_pads_inputs_and_labels(tmp_path):
    vocab = build_vocabulary(["ab"])
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    from transformers import Wav2Vec2FeatureExtractor

    processor = Wav2Vec2Processor(
        feature_extractor=Wav2Vec2FeatureExtractor(return_attention_mask=True),
        tokenizer=Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json")),
    )
    batch = DataCollatorCTCWithPadding(processor)(
        [{"input_values": [0.5] * 1000, "labels": [3, 4, 3]}, {"input_values": [0.1] * 600, "labels": [4]}]
    )
    assert batch["input_values"].shape == (2, 1000)
    assert batch["attention_mask"].tolist() == [[1] * 1000, [1] * 600 + [0] * 400]
    assert batch["labels"].tolist() == [[3, 4, 3], [4, -100, -100]]


def test_ctc_trainer_masks_padded_frames_and_scales_loss_for_accumulation(tmp_path):
    model = small_ctc_model()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", gradient_accumulation_steps=2)
    trainer = CTCTrainer(model=model, args=args)
    # The CTC loss ignores `num_items_in_batch`, so the Trainer must divide by the accumulation steps itself.
    assert trainer.model_accepts_loss_kwargs is False
    generator = torch.Generator().manual_seed(0)
    long, short = torch.randn(8000, generator=generator), torch.randn(3000, generator=generator)
    batch = {
        "input_values": torch.stack([long, torch.cat([short, torch.zeros(5000)])]),
        "attention_mask": torch.tensor([[1] * 8000, [1] * 3000 + [0] * 5000]),
        "labels": torch.tensor([[1, 2], [3, -100]]),
    }
    loss, ids, labels = trainer.prediction_step(model, batch, prediction_loss_only=False)
    short_frames = int(model._get_feat_extract_output_lengths(torch.tensor(3000)))
    assert (ids[1, short_frames:] == -100).all() and (ids[1, :short_frames] >= 0).all() and (ids[0] >= 0).all()
    with torch.no_grad():
        alone = model(short[None]).logits.argmax(-1)[0]
    assert torch.equal(ids[1, :short_frames], alone)
    assert torch.equal(labels, batch["labels"]) and loss.ndim == 0


def test_ctc_trainer_skips_steps_with_non_finite_gradients(tmp_path, monkeypatch):
    def rows(poisoned):
        generator = torch.Generator().manual_seed(0)
        data = [
            {"input_values": torch.randn(4000, generator=generator), "labels": torch.tensor([1, 2])} for _ in range(4)
        ]
        for index in poisoned:
            data[index]["input_values"][100] = float("nan")
        return data

    def collate(features):
        return {key: torch.stack([feature[key] for feature in features]) for key in ("input_values", "labels")}

    def trainer(model, data, max_steps):
        args = TrainingArguments(
            output_dir=str(tmp_path), report_to="none", max_steps=max_steps, per_device_train_batch_size=1,
            learning_rate=1e-3, save_strategy="no", disable_tqdm=True, logging_steps=1,
        )  # fmt: skip
        return CTCTrainer(model=model, args=args, train_dataset=data, data_collator=collate)

    model = small_ctc_model(ctc_zero_infinity=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    guarded = trainer(model, rows(poisoned=[2]), max_steps=4)
    guarded.train()
    assert guarded.nonfinite_guard.skipped == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(before["lm_head.weight"], model.lm_head.weight)  # the finite steps did train

    monkeypatch.setattr(ctc, "MAX_NONFINITE_STEPS_IN_A_ROW", 2)
    model = small_ctc_model(ctc_zero_infinity=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="2 steps in a row had a non-finite"):
        trainer(model, rows(poisoned=range(4)), max_steps=4).train()
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())  # never reached the weights


def run_main_expecting_usage_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be > 0, got 0"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be > 0"),
        (["--eval_strategy", "steps", "--eval_steps", "-2"], "--eval_steps must be > 0"),  # (0: --logging_steps)
        (["--save_steps", "0"], "--save_steps must be > 0"),
        (["--max_steps", "0"], "--max_steps must be > 0 (or -1"),
        (["--learning_rate", "-1"], "--learning_rate must be > 0"),
        (["--learning_rate", "nan"], "--learning_rate must be > 0, got nan"),
        (["--mask_time_prob", "1.5"], "--mask_time_prob must be in [0, 1]"),
        (["--hidden_dropout", "-0.1"], "--hidden_dropout must be in [0, 1]"),
        (["--mask_time_length", "0"], "--mask_time_length must be > 0"),
        (["--max_train_samples", "0"], "--max_train_samples must be > 0"),
        (["--max_duration_in_seconds", "0"], "--max_duration_in_seconds must be > 0"),
        (["--min_duration_in_seconds", "30"], "--min_duration_in_seconds is above --max_duration_in_seconds"),
        (["--seed", "-1"], "--seed must be in [0, 2**32)"),
        (["--adam_beta1", "2"], "--adam_beta1 must be in [0, 1)"),
        (["--overwrite_output_dir", "--resume_from_checkpoint", "x"], "pass one"),
        (["--resume_from_checkpoint", "no/such/checkpoint"], "no such checkpoint folder"),
    ],
)
def test_impossible_option_values_are_usage_errors_naming_the_option(tmp_path, flags, message, capsys, monkeypatch):
    monkeypatch.setattr(DatasetSplit, "load", lambda *a, **k: pytest.fail("data was loaded"))
    args = ["--model_name_or_path", "m", "--data_dir", "d", *common_args(tmp_path / "out", tmp_path / "cache"), *flags]
    assert message in run_main_expecting_usage_error(args, capsys)
    assert not (tmp_path / "out").exists()


def test_every_numeric_option_of_the_scripts_dataclasses_has_a_rule():
    import dataclasses

    numeric = {
        field.name
        for arguments in (finetune_ctc.ModelArguments, finetune_ctc.DataTrainingArguments)
        for field in dataclasses.fields(arguments)
        if field.type in (int, float, "int", "float", int | None, float | None, "int | None", "float | None")
    }
    assert numeric and numeric <= set(finetune_ctc.NUMERIC_OPTIONS), numeric - set(finetune_ctc.NUMERIC_OPTIONS)


@pytest.mark.parametrize("report_to", ["none", "tensorboard"])
def test_an_unwritable_output_dir_fails_before_any_data_is_read(tmp_path, report_to, monkeypatch):
    monkeypatch.setattr(DatasetSplit, "load", lambda *a, **k: pytest.fail("data was loaded"))
    (tmp_path / "a-file").write_text("not a folder")
    # (The tests run as root, whom permission bits do not stop: a file in the way and /sys stand in for them.)
    for output_dir, message in (
        (tmp_path / "a-file", "is a file, not a folder"),
        (tmp_path / "a-file" / "out", "cannot be written"),
        (Path("/sys/distilxlsr-test-out"), "cannot be written"),
    ):
        args = ["--model_name_or_path", "m", "--data_dir", "d", *common_args(output_dir, tmp_path / "cache")]
        args[args.index("--report_to") + 1] = report_to
        with pytest.raises(ValueError, match=f"--output_dir {output_dir} {message}"):
            main(args)


def test_a_missing_or_empty_data_dir_fails_before_any_data_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(DatasetSplit, "load", lambda *a, **k: pytest.fail("data was loaded"))
    args = ["--model_name_or_path", "m", *common_args(tmp_path / "out", tmp_path / "cache")]
    with pytest.raises(ValueError, match="--data_dir .*no-corpus: no such folder"):
        main([*args, "--data_dir", str(tmp_path / "no-corpus")])
    write_split(tmp_path / "corpus" / "train", [])  # a header alone: datasets fails with an IndexError
    with pytest.raises(ValueError, match="train/metadata.csv lists no clip"):
        main([*args, "--data_dir", str(tmp_path / "corpus")])


@pytest.mark.parametrize(
    "model, fields, message",
    [
        ("student", {"num_attention_heads": 0}, "num_attention_heads is 0: it must be a positive integer"),
        ("student", {"num_conv_pos_embedding_groups": 3}, "num_conv_pos_embedding_groups is 3: it must divide"),
        ("student", {"num_hidden_layers": 100000}, "num_hidden_layers is 100000: at most 64 layers"),
        ("wav2vec2", {"hidden_size": -768}, "hidden_size is -768: it must be a positive integer"),
        ("wav2vec2", {"conv_stride": [5, 2]}, "Configuration for convolutional layers is incorrect"),
    ],
)
def test_a_bad_model_config_fails_before_any_data_is_read(tmp_path, monkeypatch, model, fields, message):
    monkeypatch.setattr(DatasetSplit, "load", lambda *a, **k: pytest.fail("data was loaded"))
    model_dir = tmp_path / "model"
    if model == "student":
        tiny_student(model_dir)
    else:  # a plain transformers CTC model: its config is checked the same way
        stand_in_teacher_config("tiny", vocab_size=8).save_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, **fields}))
    write_split(tmp_path / "corpus" / "train", [("a.wav", "oi")])
    args = ["--model_name_or_path", str(model_dir), "--data_dir", str(tmp_path / "corpus")]
    with pytest.raises(LoadingError, match=f"--model_name_or_path {model_dir}, config.json: {message}"):
        main([*args, *common_args(tmp_path / "out", tmp_path / "cache")])


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in (
        "--model_name_or_path", "--dataset_name", "--data_dir", "--text_column_name", "--chars_to_ignore",
        "--freeze_feature_encoder", "--no_freeze_feature_encoder", "--mask_time_prob", "--max_duration_in_seconds",
        "--model_card_note", "--max_steps", "--eval_strategy", "--train_sampling_strategy", "--push_to_hub",
        "--overwrite_output_dir",
    ):  # fmt: skip
        assert flag in help_text, flag
    assert "sentence" in help_text  # Common Voice's transcript column is documented


# ---------------------------------------------------------------------------------------------------------------------
# End to end: a tiny distilled student on a tiny corpus
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory):
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("needs espeak-ng and sox")
    root = tmp_path_factory.mktemp("e2e")
    data_dir = root / "corpus"
    try:  # the project's synthetic demo corpus, when that script is there and works
        from distilxlsr_pt.demo_corpus import build_corpus

        build_corpus(data_dir, num_train=12, num_validation=4, num_test=4, num_workers=2)
    except Exception:
        shutil.rmtree(data_dir, ignore_errors=True)
        make_audiofolder(data_dir, {"train": SENTENCES[:12], "validation": SENTENCES[12:16], "test": SENTENCES[16:]})
    student = tiny_student(root / "student")
    output_dir = root / "out"
    results = main(
        [
            "--model_name_or_path", str(student), "--data_dir", str(data_dir), "--max_steps", "5",
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--learning_rate", "1e-3",
            "--eval_strategy", "steps", "--eval_steps", "5", "--logging_steps", "1",
            "--train_sampling_strategy", "group_by_length", "--model_card_note", "Tiny test run, not a real model.",
            *common_args(output_dir, root / "cache"),
        ]
    )  # fmt: skip
    return {"root": root, "data_dir": data_dir, "student": student, "output_dir": output_dir, "results": results}


def test_e2e_writes_model_processor_and_results(e2e_run):
    output_dir = e2e_run["output_dir"]
    for name in ("config.json", "model.safetensors", "vocab.json", "tokenizer_config.json", "modeling_distilxlsr.py"):
        assert (output_dir / name).is_file(), name
    assert (output_dir / "processor_config.json").is_file() or (output_dir / "preprocessor_config.json").is_file()
    config = json.loads((output_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCTC"] == "modeling_distilxlsr.DistilXLSRForCTC"
    assert config["ctc_zero_infinity"] is True and config["pad_token_id"] == 0
    vocab = json.loads((output_dir / "vocab.json").read_text())
    assert config["vocab_size"] == len(vocab)  # no extra <s>/</s> outputs in the CTC head

    results = json.loads((output_dir / "all_results.json").read_text())
    for key in ("train_loss", "eval_wer", "eval_cer", "test_wer", "test_cer", "train_samples", "test_samples"):
        assert key in results, key
    assert results["train_samples"] == 12 and results["eval_samples"] == 4 and results["test_samples"] == 4
    assert results["train_filtered_too_short"] == 0 and results["train_filtered_empty_transcript"] == 0
    assert 0 <= results["test_wer"] and 0 <= results["test_cer"]

    processor = Wav2Vec2Processor.from_pretrained(output_dir)
    assert processor.tokenizer.pad_token_id == 0
    ids = processor.tokenizer(normalize_text("Ñandu")).input_ids
    assert ids[0] == processor.tokenizer.unk_token_id  # an unseen character is [UNK], not an error


def test_e2e_model_card(e2e_run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(e2e_run["output_dir"] / "README.md")
    data = card.data
    assert data.language == "pt" and data.license == "apache-2.0"
    assert {"automatic-speech-recognition", "ctc", "distilxlsr", "portuguese"} <= set(data.tags)
    assert data.base_model == str(e2e_run["student"])
    assert data.metrics == ["wer", "cer"]
    metrics = {result.metric_type: result for result in data.eval_results}
    assert set(metrics) == {"wer", "cer"}
    results = e2e_run["results"]
    assert metrics["wer"].dataset_split == "test"
    assert metrics["wer"].metric_value == pytest.approx(100 * results["test_wer"], abs=0.01)
    assert metrics["cer"].metric_value == pytest.approx(100 * results["test_cer"], abs=0.01)
    assert "Tiny test run, not a real model." in card.text
    assert "stand-in" in card.text  # the student's card says it comes from a stand-in teacher
    if (e2e_run["data_dir"] / "build_info.json").exists():  # the synthetic demo corpus
        assert "synthetic" in card.text


def test_a_folder_holding_a_trained_model_is_refused_before_any_data_is_read(e2e_run, monkeypatch):
    monkeypatch.setattr(DatasetSplit, "load", lambda *a, **k: pytest.fail("data was loaded"))
    output_dir = e2e_run["output_dir"]
    model = (output_dir / "model.safetensors").read_bytes()
    args = ["--model_name_or_path", str(e2e_run["student"]), "--data_dir", str(e2e_run["data_dir"]), "--max_steps", "1",
            *common_args(output_dir, e2e_run["root"] / "cache")]  # fmt: skip
    for extra in ([], ["--resume_from_checkpoint", "latest"]):  # 'latest' without a checkpoint would start afresh
        with pytest.raises(ValueError, match="already holds a run .*--resume_from_checkpoint.*--overwrite_output_dir"):
            main([*args, *extra])
    assert (output_dir / "model.safetensors").read_bytes() == model


def test_e2e_pipeline_in_a_fresh_process(e2e_run, tmp_path):
    """The output directory alone (remote code, no project on sys.path) transcribes a wav path and an array."""
    wav = next((e2e_run["data_dir"] / "test").glob("*.wav"))
    code = f"""
        import json, sys
        import numpy as np
        from transformers import pipeline
        assert not any("modeling_distilxlsr" in name for name in sys.modules)
        asr = pipeline("automatic-speech-recognition", model={str(e2e_run["output_dir"])!r}, trust_remote_code=True)
        from_path = asr({str(wav)!r})
        from_array = asr(np.random.default_rng(0).standard_normal(16000).astype(np.float32))
        model = type(asr.model)
        print(json.dumps({{"path": from_path, "array": from_array, "model": model.__name__, "module": model.__module__}}))
        """
    outputs = last_json(run_fresh_python(code, cwd=tmp_path, timeout=120))
    assert outputs["model"] == "DistilXLSRForCTC"
    assert outputs["module"].startswith("transformers_modules.")  # the code saved beside the weights
    assert isinstance(outputs["path"]["text"], str) and isinstance(outputs["array"]["text"], str)


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------
@needs_tts
def test_bad_input_is_filtered_counted_or_converted(tmp_path, capsys):
    data_dir = tmp_path / "corpus"
    make_audiofolder(data_dir, {"train": SENTENCES[:6], "validation": SENTENCES[6:8]})
    train, validation = data_dir / "train", data_dir / "validation"
    rows = list(csv.reader(open(train / "metadata.csv", encoding="utf-8")))[1:]
    # an empty transcript, one that normalisation empties, a 10 ms clip, a corrupt file, a stereo 8 kHz clip
    shutil.copy(train / "train_000.wav", train / "empty.wav")
    shutil.copy(train / "train_001.wav", train / "punctuation.wav")
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(train / "short.wav"), "synth", "0.01",
                    "sine", "440"], check=True)  # fmt: skip
    (train / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    synthesize(train / "stereo8k.wav", "A estrela brilhou.", rate=8000, channels=2)
    # a float WAV holding one NaN sample: it used to turn the weights into NaN
    import soundfile

    speech, rate = soundfile.read(train / "train_002.wav", dtype="float32")
    speech[len(speech) // 2] = np.nan
    soundfile.write(train / "nan.wav", speech, rate, subtype="FLOAT")
    rows += [("empty.wav", ""), ("punctuation.wav", "?! …"), ("short.wav", "sim"), ("corrupt.wav", "não"),
             ("stereo8k.wav", "A estrela brilhou."), ("nan.wav", "Onde está o chapéu do pai?")]  # fmt: skip
    write_split(train, rows)
    # validation: a stereo 8 kHz clip, and a transcript with characters never seen in training
    synthesize(validation / "stereo8k.wav", "Quem brilhou?", rate=8000, channels=2)
    synthesize(validation / "unseen.wav", "El niño y la señora.")
    val_rows = list(csv.reader(open(validation / "metadata.csv", encoding="utf-8")))[1:]
    write_split(validation, val_rows + [("stereo8k.wav", "Quem brilhou?"), ("unseen.wav", "El niño y la señora.")])

    output_dir = tmp_path / "out"
    results = main(
        ["--model_name_or_path", str(tiny_student(tmp_path / "student")), "--data_dir", str(data_dir),
         "--max_steps", "2", "--per_device_train_batch_size", "4", "--num_examples_to_print", "10",
         *common_args(output_dir, tmp_path / "cache")]
    )  # fmt: skip
    saved = json.loads((output_dir / "all_results.json").read_text())
    assert saved["train_filtered_empty_transcript"] == 2
    assert saved["train_filtered_too_short"] == 1
    assert saved["train_filtered_unreadable_audio"] == 2  # the corrupt and the NaN clip
    assert saved["train_skipped_nonfinite_steps"] == 0
    from safetensors.torch import load_file

    assert all(torch.isfinite(tensor).all() for tensor in load_file(output_dir / "model.safetensors").values())
    assert saved["train_samples"] == 6 + 1  # the stereo 8 kHz clip is converted and kept
    assert saved["eval_samples"] == 2 + 2 and saved["eval_filtered_too_short"] == 0
    assert "eval_wer" in saved and "test_wer" not in saved  # no test split: not scored, no crash
    assert results["eval_cer"] >= 0
    assert "ñ" not in json.loads((output_dir / "vocab.json").read_text())
    # the reference keeps the characters the model cannot output (its labels hold [UNK])
    printed = capsys.readouterr().out
    assert "reference:  el niño y la señora" in printed and "reference:  quem brilhou" in printed


# ---------------------------------------------------------------------------------------------------------------------
# Overfitting: labels, blank and greedy decoding line up
# ---------------------------------------------------------------------------------------------------------------------
@needs_tts
def test_overfits_a_handful_of_clips(tmp_path):
    """A small random-init model trained on 6 short clips (no SpecAugment, no dropout, conv encoder trained) must
    transcribe them: greedy CER on those clips falls from ~1 before training to below 0.3."""
    data_dir = tmp_path / "corpus"
    make_audiofolder(
        data_dir,
        {"train": ["bom dia", "obrigado", "sim", "não sei", "até logo", "boa noite"]},
        speed=200,
        trim=True,
    )
    torch.manual_seed(0)
    config = DistilXLSRConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=[32] * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, teacher_layers=[1],
    )  # fmt: skip
    DistilXLSRModel(config).save_pretrained(tmp_path / "model")
    output_dir = tmp_path / "out"
    steps = 200
    main(
        [
            "--model_name_or_path", str(tmp_path / "model"), "--data_dir", str(data_dir),
            "--eval_split_name", "train", "--do_train", "--do_eval", "--no_freeze_feature_encoder",
            "--mask_time_prob", "0", "--layerdrop", "0", "--hidden_dropout", "0", "--attention_dropout", "0",
            "--activation_dropout", "0", "--feat_proj_dropout", "0", "--final_dropout", "0",
            "--max_steps", str(steps), "--learning_rate", "3e-3", "--warmup_steps", "0.1",
            "--per_device_train_batch_size", "6", "--per_device_eval_batch_size", "6",
            "--eval_strategy", "steps", "--eval_steps", str(steps), "--eval_on_start", "True", "--logging_steps", "50",
            *common_args(output_dir, tmp_path / "cache"),
        ]
    )  # fmt: skip
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    cers = [entry["eval_cer"] for entry in history if "eval_cer" in entry]
    assert cers[0] >= 0.9, cers  # untrained: nothing right
    logged = [entry for entry in history if "loss" in entry]
    assert len(logged) == 4 and all(entry["rss_gb"] > 0.05 for entry in logged)  # memory on each training log line
    final_cer = json.loads((output_dir / "all_results.json").read_text())["eval_cer"]
    assert final_cer < 0.3, cers


# ---------------------------------------------------------------------------------------------------------------------
# Other checkpoints and the Hub upload
# ---------------------------------------------------------------------------------------------------------------------
def test_teacher_checkpoint_fine_tunes_too(e2e_run, tmp_path):
    """A plain wav2vec2 checkpoint (the stand-in teacher, with its own feature extractor) fine-tunes the same way."""
    from distilxlsr_pt.stand_ins import make_stand_in_teacher

    teacher = make_stand_in_teacher(tmp_path / "teacher", size="tiny")
    output_dir = tmp_path / "out"
    # ...into a folder holding an older run: --overwrite_output_dir deletes it first, so its checkpoint can neither
    # be resumed as this run's nor make the Trainer's --save_total_limit delete this run's own.
    shutil.copytree(e2e_run["output_dir"], output_dir)
    (output_dir / "checkpoint-500").mkdir()
    results = main(
        ["--model_name_or_path", str(teacher), "--data_dir", str(e2e_run["data_dir"]), "--do_train", "--do_eval",
         "--max_steps", "1", "--per_device_train_batch_size", "2", "--max_train_samples", "4",
         "--overwrite_output_dir", *common_args(output_dir, tmp_path / "cache")]
    )  # fmt: skip
    assert not (output_dir / "checkpoint-500").exists() and not (output_dir / "test_results.json").exists()
    assert "eval_wer" in results and "test_wer" not in results
    config = json.loads((output_dir / "config.json").read_text())
    assert config["architectures"] == ["Wav2Vec2ForCTC"] and "auto_map" not in config
    assert json.loads((output_dir / "all_results.json").read_text())["train_samples"] == 4
    assert "stand-in" in (output_dir / "README.md").read_text()  # the teacher's card says it is a stand-in


def test_a_slim_layer_to_layer_student_fine_tunes_and_reloads(e2e_run, tmp_path):
    student = tiny_student(tmp_path / "slim", num_hidden_layers=3, hidden_size=16, conv_dim=8, student_layers=[1, 3])
    output_dir = tmp_path / "out"
    results = main(
        ["--model_name_or_path", str(student), "--data_dir", str(e2e_run["data_dir"]), "--max_steps", "2",
         "--per_device_train_batch_size", "2", "--max_train_samples", "4", *common_args(output_dir, tmp_path / "cache")]
    )  # fmt: skip
    assert math.isfinite(results["eval_loss"]) and "eval_wer" in results
    code = textwrap.dedent(
        """
        import json, sys, torch
        from transformers import AutoModelForCTC
        model = AutoModelForCTC.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
        c = model.config
        print(json.dumps({"class": type(model).__name__, "shape": [c.num_hidden_layers, c.hidden_size, c.conv_dim[0]],
                          "frames": model(torch.randn(1, 16000)).logits.shape[1]}))
        """
    )
    loaded = last_json(run_fresh_python(code, output_dir, cwd=tmp_path))
    assert loaded == {"class": "DistilXLSRForCTC", "shape": [3, 16, 8], "frames": 49}


def test_push_to_hub_uploads_the_model_then_our_card(e2e_run, tmp_path, monkeypatch):
    """Offline check of the upload order: the Trainer's push (which writes its own card) first, then our card."""
    from huggingface_hub import ModelCard
    from transformers import Trainer

    calls = []

    def fake_init_hf_repo(self, token=None, private=None):
        self.hub_model_id, self.push_in_progress = self.args.hub_model_id, None

    def fake_trainer_push(self, *args, **kwargs):
        calls.append(("trainer", kwargs.get("commit_message")))
        Path(self.args.output_dir, "README.md").write_text("---\nlicense: other\n---\nTrainer draft\n")

    def fake_card_push(self, repo_id, **kwargs):
        calls.append(("card", repo_id))

    monkeypatch.setattr(Trainer, "init_hf_repo", fake_init_hf_repo)
    monkeypatch.setattr(Trainer, "push_to_hub", fake_trainer_push)
    monkeypatch.setattr(ModelCard, "push_to_hub", fake_card_push)
    output_dir = tmp_path / "out"
    main(
        ["--model_name_or_path", str(e2e_run["student"]), "--data_dir", str(e2e_run["data_dir"]), "--do_train",
         "--do_eval", "--max_steps", "1", "--max_train_samples", "4", "--push_to_hub", "--hub_model_id",
         "someone/distilxlsr-pt-test", *common_args(output_dir, tmp_path / "cache")]
    )  # fmt: skip
    assert calls[-2][0] == "trainer" and calls[-1] == ("card", "someone/distilxlsr-pt-test")
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.license == "apache-2.0" and "someone/distilxlsr-pt-test" in card.text


# ---------------------------------------------------------------------------------------------------------------------
# Output folders, saves and checkpoints
# ---------------------------------------------------------------------------------------------------------------------
def test_a_folder_in_use_by_another_run_is_refused_naming_that_process(tmp_path, monkeypatch):
    monkeypatch.setattr(DatasetSplit, "load", lambda *a, **k: pytest.fail("data was loaded"))
    output_dir = tmp_path / "out"
    holder = start_claimant(output_dir)
    tell(holder)
    assert holder.stdout.readline() == "won\n"
    args = ["--model_name_or_path", "m", "--data_dir", "d", *common_args(output_dir, tmp_path / "cache")]
    with pytest.raises(ValueError, match=f"--output_dir {output_dir} is in use by another run \\(pid {holder.pid} on"):
        main(args)
    tell(holder)
    assert holder.wait() == 0
    with pytest.raises(ValueError, match="--data_dir d: no such folder"):  # the folder is free: the next check fails
        main(args)


def short_run_args(e2e_run, output_dir: Path, *extra: str) -> list[str]:
    """Training only, on 4 clips, a checkpoint every step."""
    return [
        "--model_name_or_path", str(e2e_run["student"]), "--data_dir", str(e2e_run["data_dir"]), "--do_train",
        "--max_train_samples", "4", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3",
        *common_args(output_dir, e2e_run["root"] / "cache"), "--save_strategy", "steps", "--save_steps", "1", *extra,
    ]  # fmt: skip


def test_a_full_disk_during_the_final_save_leaves_no_model_folder(e2e_run, tmp_path, monkeypatch):
    def save_config_then_fill_the_disk(self, save_directory, **kwargs):
        self.config.save_pretrained(save_directory)
        raise OSError(errno.ENOSPC, "No space left on device")

    output_dir = tmp_path / "out"
    monkeypatch.setattr(DistilXLSRForCTC, "save_pretrained", save_config_then_fill_the_disk)
    with pytest.raises(OSError, match="No space left on device"):
        main(short_run_args(e2e_run, output_dir, "--max_steps", "1", "--save_strategy", "no"))
    names = {p.name for p in output_dir.iterdir()}
    assert "vocab.json" in names  # (the processor, saved before training)
    assert not names & {"config.json", "model.safetensors", "pytorch_model.bin"}
    assert not [name for name in names if name.endswith(".tmp")]


@pytest.fixture(scope="module")
def ctc_checkpoint(e2e_run):
    """The checkpoint of a one-step training run (copy it before changing it)."""
    output_dir = e2e_run["root"] / "checkpointed"
    main(short_run_args(e2e_run, output_dir, "--max_steps", "1"))
    return output_dir / "checkpoint-1"


def copied_checkpoint(ctc_checkpoint: Path, tmp_path: Path) -> Path:
    checkpoint = tmp_path / "out" / "checkpoint-1"
    shutil.copytree(ctc_checkpoint, checkpoint)
    return checkpoint


def test_a_checkpoint_with_non_finite_weights_is_refused_when_resumed(e2e_run, ctc_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    checkpoint = copied_checkpoint(ctc_checkpoint, tmp_path)
    weights = load_file(checkpoint / "model.safetensors")
    next(iter(weights.values()))[0] = float("nan")
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    resume = short_run_args(e2e_run, checkpoint.parent, "--max_steps", "3", "--resume_from_checkpoint", "latest")
    with pytest.raises(ValueError, match="checkpoint-1 holds non-finite \\(NaN or inf\\) weights; resume from an"):
        main(resume)
    assert sorted(p.name for p in checkpoint.parent.glob("checkpoint-*")) == ["checkpoint-1"]  # not trained on


def test_an_unreadable_rng_state_resumes_with_a_warning_that_it_is_not_exact(e2e_run, ctc_checkpoint, tmp_path, caplog):
    checkpoint = copied_checkpoint(ctc_checkpoint, tmp_path)
    rng_file = checkpoint / "rng_state.pth"
    rng_file.write_bytes(rng_file.read_bytes()[:100])  # truncated
    (checkpoint.parent / "checkpoint-1-backup").mkdir()  # not a checkpoint: never resumed
    resume = short_run_args(e2e_run, checkpoint.parent, "--max_steps", "2", "--resume_from_checkpoint", "latest")
    with caplog.at_level("WARNING"):
        results = main(resume)
    assert results["train_samples"] == 4
    assert f"RNG state in {checkpoint} could not be read" in caplog.text
    assert "does not continue exactly" in caplog.text


def test_a_folder_the_trainer_would_take_for_a_checkpoint_is_not_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(DatasetSplit, "load", lambda *a, **k: pytest.fail("data was loaded"))
    output_dir = tmp_path / "out"
    (output_dir / "checkpoint-1").mkdir(parents=True)
    (output_dir / "checkpoint-1-backup").mkdir()  # transformers' rotation would delete it, as the oldest checkpoint
    args = ["--model_name_or_path", "m", "--data_dir", "d", "--do_train", "--resume_from_checkpoint", "latest",
            *common_args(output_dir, tmp_path / "cache")]  # fmt: skip
    with pytest.raises(ValueError, match="holds checkpoint-1-backup, which is not a checkpoint.*--save_total_limit"):
        main([*args, "--save_total_limit", "1"])
    assert (output_dir / "checkpoint-1-backup").is_dir()
    with pytest.raises(ValueError, match="--data_dir d: no such folder"):  # without a limit, nothing is deleted
        main(args)
