"""train_ssl_teacher.py and distilxlsr_pt.ssl_teacher: k-means units align with the model's frames, only masked
frames count, a tiny self-supervised teacher's loss falls on a tiny corpus, it saves as transformers' Wav2Vec2Model
with a card naming it a self-supervised stand-in, resumes, and train_distill.py distils from it."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import train_ssl_teacher
from safetensors import safe_open
from transformers import AutoModel, Wav2Vec2Model

import train_distill
from distilxlsr_pt.cards import stand_in_kind
from distilxlsr_pt.checks import OutputDirError
from distilxlsr_pt.demo_corpus import build_unlabelled_set
from distilxlsr_pt.models import default_feature_extractor
from distilxlsr_pt.ssl_teacher import (
    MaskedUnitCollator,
    Units,
    clip_dataset,
    frame_count,
    masked_unit_loss,
    mfcc_features,
)
from distilxlsr_pt.stand_ins import stand_in_teacher_config


@pytest.fixture(scope="module")
def unlabelled_dir(corpus_dir):
    directory = corpus_dir.parent / "unlabelled"
    build_unlabelled_set(directory, corpus_dir, num_clips=12, num_workers=2)
    return directory


def ssl_args(corpus_dir, unlabelled_dir, output_dir, *extra):
    return ["--output_dir", str(output_dir), "--audio_dirs", str(corpus_dir / "train"), str(unlabelled_dir / "train"),
            "--eval_dir", str(corpus_dir / "validation"), "--size", "tiny", "--num_units", "8", "--max_steps", "24",
            "--per_device_train_batch_size", "4", "--learning_rate", "2e-3", "--warmup_steps", "2", "--save_steps", "12",
            "--eval_steps", "12", "--logging_steps", "4", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def teacher(corpus_dir, unlabelled_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ssl") / "teacher"
    return output_dir, train_ssl_teacher.main(ssl_args(corpus_dir, unlabelled_dir, output_dir))


def test_the_unlabelled_set_has_no_transcripts_and_no_evaluation_sentence(corpus_dir, unlabelled_dir):
    with open(unlabelled_dir / "train" / "metadata.csv", encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 12 and set(rows[0]) == {"file_name", "speaker_id"}
    assert all((unlabelled_dir / "train" / row["file_name"]).is_file() for row in rows)
    assert build_unlabelled_set(unlabelled_dir, corpus_dir, num_clips=12)["skipped"]
    # The builder drops any sentence of the validation or test split: with all of them held out, a seed whose draw
    # contains them still yields only other sentences (the spoken text is not stored, so check the drawing itself).
    from distilxlsr_pt import demo_corpus

    held_out = set()
    for split in ("validation", "test"):
        with open(corpus_dir / split / "metadata.csv", encoding="utf-8", newline="") as file:
            held_out.update(row["transcription"] for row in csv.DictReader(file))
    spoken = []
    original = demo_corpus._synthesize_all
    demo_corpus._synthesize_all = lambda jobs, workers: spoken.extend(j[4] for j in jobs) or [16000] * len(jobs)
    try:
        build_unlabelled_set(corpus_dir.parent / "unlabelled-2", corpus_dir, num_clips=40, seed=0)
    finally:
        demo_corpus._synthesize_all = original
    assert len(spoken) == len(set(spoken)) == 40 and not set(spoken) & held_out


@pytest.mark.parametrize("samples", [400, 719, 720, 16_000, 16_123, 95_999])
def test_mfcc_frames_align_with_the_model_frames(samples):
    model = Wav2Vec2Model(stand_in_teacher_config("tiny"))
    frames = int(model._get_feat_extract_output_lengths(samples))
    assert frame_count(samples) == frames
    audio = np.random.default_rng(0).standard_normal(samples).astype(np.float32) * 0.1
    assert mfcc_features(audio).shape == (frames, 39)


def test_units_are_the_nearest_centres_and_survive_a_save(tmp_path):
    rng = np.random.default_rng(0)
    blobs = [rng.standard_normal((200, 39)).astype(np.float32) + 6 * i for i in range(3)]
    units = Units.fit(blobs, num_units=3, seed=0)
    labels = units.assign(np.concatenate(blobs))
    assert len(set(labels[:200])) == len(set(labels[200:400])) == 1 and len(set(labels)) == 3
    x = (np.concatenate(blobs) - units.mean) / units.std
    nearest = ((x[:, None] - units.centres[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(labels, nearest)
    units.save(tmp_path / "units.npz")
    np.testing.assert_array_equal(Units.load(tmp_path / "units.npz").assign(blobs[1]), units.assign(blobs[1]))


def test_per_clip_cmvn_units_ignore_a_clips_own_offset_and_scale(tmp_path):
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal((120, 39)).astype(np.float32) for _ in range(6)]
    units = Units.fit(clips, num_units=4, seed=0, per_clip_cmvn=True)
    voiced = clips[0] * 3 + 5  # the same clip in another "voice": every dimension offset and scaled
    np.testing.assert_array_equal(units.assign(voiced), units.assign(clips[0]))
    plain = Units.fit(clips, num_units=4, seed=0)
    assert (plain.assign(voiced) != plain.assign(clips[0])).any()
    units.save(tmp_path / "units.npz")
    loaded = Units.load(tmp_path / "units.npz")
    assert loaded.per_clip_cmvn and not Units.load(_saved_without_flag(plain, tmp_path)).per_clip_cmvn
    np.testing.assert_array_equal(loaded.assign(voiced), units.assign(clips[0]))


def _saved_without_flag(units: Units, folder: Path) -> Path:
    """units.npz as runs before --per_clip_cmvn saved it (no flag in the file)."""
    path = folder / "old_units.npz"
    np.savez(path, mean=units.mean, std=units.std, centres=units.centres)
    return path


def test_only_masked_frames_count_in_the_loss():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 30, 8), torch.randint(0, 8, (2, 30))
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[0, 3:13], mask[1, 10:20] = True, True
    loss = masked_unit_loss(logits, labels, mask)
    changed = labels.clone()
    changed[~mask] = (changed[~mask] + 1) % 8
    assert masked_unit_loss(logits, changed, mask) == loss
    changed[0, 5] = (changed[0, 5] + 1) % 8
    assert masked_unit_loss(logits, changed, mask) != loss
    expected = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    torch.testing.assert_close(loss, expected)


def test_the_collator_masks_real_frames_only_and_pads_units():
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (16_000, 9_000)]
    units = [rng.integers(0, 8, frame_count(len(c))) for c in clips]
    batch = MaskedUnitCollator(default_feature_extractor())([
        clip_dataset(clips, units)[i] for i in range(2)
    ])  # fmt: skip
    assert batch["input_values"].shape == (2, 16_000)
    assert batch["unit_labels"].shape == batch["mask_time_indices"].shape == (2, frame_count(16_000))
    short = frame_count(9_000)
    assert (batch["unit_labels"][1, short:] == -100).all() and not batch["mask_time_indices"][1, short:].any()
    assert batch["unit_labels"][1, :short].tolist() == units[1].tolist()
    assert batch["mask_time_indices"].any(1).all()
    with pytest.raises(ValueError, match="units for a clip"):
        clip_dataset(clips, [units[0], units[0]])


def test_a_tiny_teacher_learns_and_saves_as_transformers_wav2vec2_model(teacher):
    output_dir, results = teacher
    losses = [entry["loss"] for entry in results["log_history"] if "loss" in entry]
    assert len(losses) == 6 and np.mean(losses[-2:]) < np.mean(losses[:2])
    assert results["eval_loss"] < np.log(8)  # below chance for 8 units
    config = json.loads((output_dir / "config.json").read_text())
    assert config["architectures"] == ["Wav2Vec2Model"] and config["num_hidden_layers"] == 12
    assert config["do_stable_layer_norm"] and config["feat_extract_norm"] == "layer"
    with safe_open(output_dir / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float16}
        assert not [k for k in weights.keys() if "unit_head" in k]
    model = AutoModel.from_pretrained(output_dir)
    assert isinstance(model, Wav2Vec2Model) and model.dtype == torch.float32
    assert stand_in_kind(output_dir) == "self-supervised"
    card = (output_dir / "README.md").read_text()
    assert "Self-supervised stand-in teacher" in card and results["command"] in card
    saved = json.loads((output_dir / "teacher_results.json").read_text())
    assert saved["teacher_kind"] == "self-supervised" and saved["train_clips"] == 28


def test_a_second_run_is_refused_and_latest_resumes(teacher, corpus_dir, unlabelled_dir):
    output_dir, _ = teacher
    with pytest.raises(OutputDirError, match="resume_from_checkpoint"):
        train_ssl_teacher.main(ssl_args(corpus_dir, unlabelled_dir, output_dir))
    units_before = (output_dir / "training" / "units.npz").read_bytes()
    with pytest.raises(ValueError, match="without --per_clip_cmvn"):  # units fitted one way are never reused another
        train_ssl_teacher.main(ssl_args(corpus_dir, unlabelled_dir, output_dir, "--resume_from_checkpoint", "latest",
                                        "--per_clip_cmvn"))  # fmt: skip
    resumed = train_ssl_teacher.main(
        ssl_args(corpus_dir, unlabelled_dir, output_dir, "--resume_from_checkpoint", "latest", "--max_steps", "28")
    )
    steps = [entry["step"] for entry in resumed["log_history"] if "loss" in entry]
    assert steps[-1] == 28 and 4 in steps  # the history of the first 24 steps is carried on, not redone
    assert (output_dir / "training" / "units.npz").read_bytes() == units_before
    assert sorted(p.name for p in (output_dir / "training").glob("checkpoint-*")) == ["checkpoint-28"]


def test_train_distill_accepts_the_self_supervised_teacher(teacher, corpus_dir, tmp_path):
    output_dir, _ = teacher
    results = train_distill.main(
        ["--teacher_name_or_path", str(output_dir), "--data_dir", str(corpus_dir), "--output_dir", str(tmp_path / "s"),
         "--teacher_layers", "4,12", "--student_num_hidden_layers", "2", "--max_train_steps", "2",
         "--per_device_train_batch_size", "4", "--max_duration_in_seconds", "2", "--dataloader_num_workers", "0",
         "--report_to", "none", "--eval_steps", "1000"]
    )  # fmt: skip
    assert results["teacher_stand_in_kind"] == "self-supervised"
    assert "self-supervised stand-in" in (tmp_path / "s" / "README.md").read_text()
    assert Path(tmp_path / "s" / "model.safetensors").is_file()


def test_a_second_iteration_clusters_the_first_ones_layer_and_starts_from_its_weights(
    teacher, corpus_dir, unlabelled_dir, tmp_path
):
    first_dir, _ = teacher
    first = json.loads((first_dir / "teacher_results.json").read_text())  # (as saved: another test may resume it)
    output_dir = tmp_path / "iteration-2"
    extra = ["--target_model_dir", str(first_dir), "--target_layer", "6", "--init_model_dir", str(first_dir),
             "--max_steps", "12"]  # fmt: skip
    results = train_ssl_teacher.main(ssl_args(corpus_dir, unlabelled_dir, output_dir, *extra))
    units = Units.load(output_dir / "training" / "units.npz")
    assert units.centres.shape == (8, stand_in_teacher_config("tiny").hidden_size)  # layer features, not 39 MFCCs
    assert results["iteration"] == 2 and results["commands"] == [first["command"], results["command"]]
    card = (output_dir / "README.md").read_text()
    assert "iteration 2" in card and "hubert-iteration-2" in card and first["command"] in card
    assert f"trained from the weights of `{first_dir}`" in card
    first_weights = AutoModel.from_pretrained(first_dir).state_dict()
    started_from = train_ssl_teacher.build_model("tiny", 8, seed=1, init_model_dir=str(first_dir)).backbone
    assert all(torch.equal(value, first_weights[name]) for name, value in started_from.state_dict().items())
    random_start = train_ssl_teacher.build_model("tiny", 8, seed=1).backbone.state_dict()
    assert not torch.equal(random_start["encoder.layers.0.attention.q_proj.weight"],
                           first_weights["encoder.layers.0.attention.q_proj.weight"])  # fmt: skip
    with pytest.raises(ValueError, match="--target_layer 13"):
        train_ssl_teacher.main(ssl_args(corpus_dir, unlabelled_dir, tmp_path / "x", "--target_model_dir",
                                        str(first_dir), "--target_layer", "13"))  # fmt: skip


def test_contrastive_distractors_are_other_masked_frames_of_the_same_clip():
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (16_000, 9_000)]
    batch = MaskedUnitCollator(default_feature_extractor(), num_negatives=5)([
        clip_dataset(clips)[i] for i in range(2)
    ])  # fmt: skip
    assert "unit_labels" not in batch
    mask, negatives = batch["mask_time_indices"], batch["sampled_negative_indices"]
    frames = mask.shape[1]
    assert negatives.shape == (2, frames, 5)
    for row, frame in mask.nonzero().tolist():
        drawn = negatives[row, frame]
        assert (drawn // frames == row).all() and mask.flatten()[drawn].all()  # masked frames of the same clip
        assert (drawn != row * frames + frame).all()  # never the frame itself


def test_the_contrastive_comparison_trains_transformers_wav2vec2_for_pretraining(corpus_dir, unlabelled_dir, tmp_path):
    output_dir = tmp_path / "contrastive"
    args = ssl_args(corpus_dir, unlabelled_dir, output_dir, "--objective", "contrastive", "--num_negatives", "10")
    results = train_ssl_teacher.main(args)
    losses = [entry["loss"] for entry in results["log_history"] if "loss" in entry]
    assert len(losses) == 6 and np.mean(losses[-2:]) < np.mean(losses[:2])
    assert results["objective"] == "contrastive" and results["num_units"] is None and np.isfinite(results["eval_loss"])
    assert 2 <= results["codevector_perplexity"] <= 2 * 320  # summed over the 2 groups of 320 codes
    assert not (output_dir / "training" / "units.npz").exists()  # no k-means for this objective
    with safe_open(output_dir / "model.safetensors", "pt") as weights:
        assert not [k for k in weights.keys() if "quantizer" in k or "project_" in k]
    assert isinstance(AutoModel.from_pretrained(output_dir), Wav2Vec2Model)
    card = (output_dir / "README.md").read_text()
    assert "wav2vec2-contrastive" in card and "Wav2Vec2ForPreTraining" in card and "hubert-iteration" not in card
    with pytest.raises(SystemExit):
        train_ssl_teacher.main([*args[:2], "--objective", "contrastive", "--target_model_dir", str(output_dir)])
