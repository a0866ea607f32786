"""Tests of the demo corpus builder (distilxlsr_pt/demo_corpus.py): a tiny synthetic corpus, built twice, must be identical, disjoint and loadable."""

import csv
import hashlib
import shutil
import sys
import wave
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distilxlsr_pt.demo_corpus import SPLITS, build_corpus, generate_sentences

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox"
)
SIZES = {"train": 20, "validation": 5, "test": 5}


def _build(directory: Path) -> dict:
    return build_corpus(
        directory,
        num_train=SIZES["train"],
        num_validation=SIZES["validation"],
        num_test=SIZES["test"],
        num_workers=2,
        seed=0,
    )


def _read_metadata(corpus: Path, split: str) -> list[dict]:
    with open(corpus / split / "metadata.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _hashes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("corpus_a")
    info = _build(directory)
    assert not info["skipped"]
    return directory


def test_build_is_deterministic(corpus, tmp_path):
    _build(tmp_path / "b")
    first, second = _hashes(corpus), _hashes(tmp_path / "b")
    assert len(first) == sum(SIZES.values()) + len(SPLITS) + 2  # wavs, metadata.csv per split, README, build_info
    assert first == second


def test_existing_build_is_skipped(corpus):
    before = _hashes(corpus)
    assert _build(corpus)["skipped"]
    assert _hashes(corpus) == before


def test_non_corpus_folder_is_not_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        _build(tmp_path)


def test_splits_sizes_sentences_and_speakers(corpus):
    rows = {split: _read_metadata(corpus, split) for split in SPLITS}
    assert {split: len(r) for split, r in rows.items()} == SIZES
    sentences = {split: {row["transcription"] for row in r} for split, r in rows.items()}
    assert not sentences["test"] & sentences["train"]
    assert not sentences["validation"] & sentences["train"]
    assert not sentences["test"] & sentences["validation"]
    speakers = {split: {row["speaker_id"] for row in r} for split, r in rows.items()}
    assert speakers["test"] and not speakers["test"] & (speakers["train"] | speakers["validation"])
    for r in rows.values():
        for row in r:
            assert 3 <= len(row["transcription"].split()) <= 15
            assert row["transcription"][-1] in ".?"


def test_audio_is_16khz_mono_pcm16(corpus):
    for split in SPLITS:
        for row in _read_metadata(corpus, split):
            with wave.open(str(corpus / split / row["file_name"]), "rb") as wav:
                assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
                assert 0.5 < wav.getnframes() / 16000 < 10


def test_grammar_has_accents_and_enough_distinct_sentences():
    sentences = generate_sentences(1800, seed=0)
    assert len(set(sentences)) == 1800
    assert set("ãçéôáíúõêâà") <= set("".join(sentences))
    words = {w.strip(",.?").lower() for s in sentences for w in s.split()}
    assert 150 < len(words) < 600


def test_loads_with_audiofolder(corpus, tmp_path):
    from datasets import load_dataset

    dataset = load_dataset("audiofolder", data_dir=str(corpus), cache_dir=str(tmp_path / "cache"))
    assert {split: dataset[split].num_rows for split in SPLITS} == SIZES
    assert {"audio", "transcription"} <= set(dataset["train"].column_names)
    sample = dataset["test"][0]
    assert sample["audio"]["sampling_rate"] == 16000
    assert len(sample["audio"]["array"]) > 16000 // 2
    assert sample["transcription"] in {row["transcription"] for row in _read_metadata(corpus, "test")}


def test_train_and_validation_mix_in_lexicon_sentences(corpus):
    from distilxlsr_pt.demo_corpus import FUNCTION_WORDS, generate_lexicon_sentences, load_word_list

    info = _build(corpus)
    assert info["lexicon_sentences"] == {"train": 7, "validation": 2}  # a third of 20 and of 5
    lexicon = generate_lexicon_sentences(9, load_word_list(), seed=0)
    train = [row["transcription"] for row in _read_metadata(corpus, "train")]
    validation = {row["transcription"] for row in _read_metadata(corpus, "validation")}
    test = {row["transcription"] for row in _read_metadata(corpus, "test")}
    assert set(lexicon[:7]) <= set(train) and set(lexicon[7:]) <= validation and not set(lexicon) & test
    assert set(lexicon[:7]) & set(train[:10])  # shuffled in: the first clips (a labelled subset) hold both kinds
    words = {w.strip(".").lower() for s in lexicon for w in s.split()}
    assert len(words) > 30 and words <= set(load_word_list()) | set(FUNCTION_WORDS)


def test_free_speech_set_has_new_sentences_and_voices(corpus, tmp_path):
    from datasets import load_dataset

    from distilxlsr_pt.demo_corpus import FREE_SENTENCES, SPEAKERS, build_free_speech_set

    info = build_free_speech_set(tmp_path / "free")
    assert not info["skipped"] and build_free_speech_set(tmp_path / "free")["skipped"]
    rows = _read_metadata(tmp_path / "free", "test")
    assert [row["transcription"] for row in rows] == list(FREE_SENTENCES) and len(rows) >= 50
    assert not {row["speaker_id"] for row in rows} & {s[0] for s in SPEAKERS}
    corpus_sentences = {row["transcription"] for split in SPLITS for row in _read_metadata(corpus, split)}
    assert not set(FREE_SENTENCES) & corpus_sentences
    dataset = load_dataset("audiofolder", data_dir=str(tmp_path / "free"), cache_dir=str(tmp_path / "cache"))
    assert list(dataset) == ["test"] and dataset["test"].num_rows == len(FREE_SENTENCES)


@pytest.mark.parametrize("users_file", ["test/mine.wav", "notes.txt"])
def test_free_speech_set_refuses_a_folder_holding_files_it_did_not_write(tmp_path, users_file):
    from distilxlsr_pt.demo_corpus import build_free_speech_set

    path = tmp_path / "free" / users_file
    path.parent.mkdir(parents=True)
    path.write_text("mine")
    with pytest.raises(FileExistsError, match="holds files that no free-speech build wrote"):
        build_free_speech_set(tmp_path / "free")
    assert path.read_text() == "mine"
