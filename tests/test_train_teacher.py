"""train_teacher.py: a tiny teacher trains on a tiny corpus, saves as transformers' Wav2Vec2ForCTC in float16, loads
back as float32 in a fresh process, and train_distill.py distils a student from it."""

import json
from pathlib import Path

import pytest
import torch
import train_teacher
from conftest import run_fresh_python
from safetensors import safe_open

import train_distill

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def teacher(corpus_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("teacher") / "teacher"
    (output_dir / "training").mkdir(parents=True)  # a user's folder, named as the script's work folder once was
    (output_dir / "training" / "notes.txt").write_text("mine")
    extra = "--per_device_train_batch_size 4 --logging_steps 1 --bf16 false --use_cpu"
    results = train_teacher.main(
        ["--data_dir", str(corpus_dir), "--output_dir", str(output_dir), "--size", "tiny", "--max_steps", "4",
         "--eval_steps", "2", "--finetune_args", extra]
    )  # fmt: skip
    return output_dir, results


def test_teacher_is_saved_as_transformers_ctc_model_in_float16(teacher):
    output_dir, results = teacher
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "wav2vec2" and config["architectures"] == ["Wav2Vec2ForCTC"]
    assert (
        config["num_hidden_layers"] == 12 and config["do_stable_layer_norm"] and config["feat_extract_norm"] == "layer"
    )
    with safe_open(output_dir / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float16}
    assert not list(output_dir.glob(".train_teacher-*"))  # the work folder is removed
    assert (output_dir / "training" / "notes.txt").read_text() == "mine"  # and nothing that the script did not write
    saved = json.loads((output_dir / "teacher_results.json").read_text())
    assert saved["teacher_kind"] == "supervised" and saved["test_cer"] == results["test_cer"]
    assert saved["train_samples"] == 16 and "train_teacher.py" in saved["command"]
    card = (output_dir / "README.md").read_text()
    assert "Supervised stand-in teacher" in card and "NOT facebook/wav2vec2-large-xlsr-53" in card
    assert saved["command"] in card


def test_teacher_loads_as_float32_in_a_fresh_process(teacher, tmp_path):
    output_dir, _ = teacher
    script = f"""
import torch
from transformers import AutoModel, AutoModelForCTC, AutoProcessor
ctc = AutoModelForCTC.from_pretrained({str(output_dir)!r})
encoder = AutoModel.from_pretrained({str(output_dir)!r})
processor = AutoProcessor.from_pretrained({str(output_dir)!r})
assert type(ctc).__name__ == "Wav2Vec2ForCTC" and type(encoder).__name__ == "Wav2Vec2Model"
assert ctc.dtype == encoder.dtype == torch.float32
assert ctc.lm_head.out_features == len(processor.tokenizer)
torch.testing.assert_close(encoder.state_dict()["encoder.layers.0.attention.k_proj.weight"],
                           ctc.wav2vec2.state_dict()["encoder.layers.0.attention.k_proj.weight"])
print("ok")
"""
    assert run_fresh_python(script, cwd=tmp_path).stdout.strip().endswith("ok")


def test_train_distill_accepts_the_teacher(teacher, corpus_dir, tmp_path):
    output_dir, _ = teacher
    student_dir = tmp_path / "student"
    results = train_distill.main(
        ["--teacher_name_or_path", str(output_dir), "--data_dir", str(corpus_dir), "--output_dir", str(student_dir),
         "--per_device_train_batch_size", "4", "--max_duration_in_seconds", "2", "--dataloader_num_workers", "0",
         "--report_to", "none", "--max_train_steps", "2", "--eval_steps", "1000", "--teacher_layers", "4,12"]
    )  # fmt: skip
    assert results["steps"] == 2
    from transformers import AutoModel

    teacher_model = AutoModel.from_pretrained(output_dir)
    student = AutoModel.from_pretrained(student_dir, trust_remote_code=True)
    conv = "feature_extractor.conv_layers.0.conv.weight"
    # Initialised from the trained teacher (then distilled for 2 steps): close to it, far from a random init.
    assert torch.allclose(student.state_dict()[conv], teacher_model.state_dict()[conv], atol=5e-3)
    assert "supervised stand-in" in (student_dir / "README.md").read_text()


def test_warm_start_keeps_the_teachers_outputs(teacher, tmp_path):
    output_dir, _ = teacher
    from transformers import AutoModelForCTC

    from modeling_distilxlsr import DistilXLSRForCTC

    start = train_teacher.warm_start(str(output_dir), tmp_path / "init")
    source = AutoModelForCTC.from_pretrained(output_dir).eval()
    continued = DistilXLSRForCTC.from_pretrained(start).eval()
    audio = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(continued(audio).logits, source(audio).logits, atol=1e-4, rtol=1e-4)
    assert json.loads((start / "vocab.json").read_text()) == json.loads((output_dir / "vocab.json").read_text())


def test_init_from_records_both_stages(teacher, corpus_dir, tmp_path):
    output_dir, _ = teacher
    second = tmp_path / "second"
    extra = "--per_device_train_batch_size 4 --bf16 false --use_cpu"
    results = train_teacher.main(
        ["--data_dir", str(corpus_dir), "--output_dir", str(second), "--init_from", str(output_dir),
         "--max_steps", "2", "--eval_steps", "2", "--finetune_args", extra]
    )  # fmt: skip
    first_command = json.loads((output_dir / "teacher_results.json").read_text())["command"]
    assert results["init_from"] == str(output_dir) and results["init_from_commands"] == first_command
    card = (second / "README.md").read_text()
    assert card.index(first_command) < card.index("--init_from")  # the remake recipe: first stage, then second
