"""train_distill.py: teacher cut, loss, fast path, end-to-end runs (1 and 2 processes), resume, bad input."""

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import Wav2Vec2Model

import train_distill
from make_demo_corpus import build_corpus
from make_stand_in_teacher import make_stand_in_teacher
from modeling_distilxlsr import DistilXLSRModel
from train_distill import Teacher, distillation_forward, distillation_loss, list_checkpoints, main

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return make_stand_in_teacher(tmp_path_factory.mktemp("teacher"), size="tiny")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("corpus") / "corpus"
    build_corpus(directory, num_train=16, num_validation=4, num_test=2, num_workers=2)
    return directory


def run_args(teacher_dir, corpus_dir, output_dir, *extra):
    return [
        "--teacher_name_or_path",
        str(teacher_dir),
        "--data_dir",
        str(corpus_dir),
        "--output_dir",
        str(output_dir),
        "--per_device_train_batch_size",
        "4",
        "--max_duration_in_seconds",
        "2",
        "--dataloader_num_workers",
        "0",
        "--report_to",
        "none",
        "--logging_steps",
        "1",
        "--eval_steps",
        "1000",
        "--learning_rate",
        "1e-3",
        *extra,
    ]


def test_cut_teacher_gives_the_full_teachers_targets(tiny_teacher, audio):
    full = tiny_teacher(audio[2], attention_mask=audio[3], output_hidden_states=True).hidden_states
    cut_model = Wav2Vec2Model(tiny_teacher.config)
    cut_model.load_state_dict(tiny_teacher.state_dict())
    teacher = Teacher(cut_model, [4, 7])
    assert len(teacher.model.encoder.layers) == 7  # layers 8..12 are gone
    targets = teacher(audio[2], attention_mask=audio[3])
    for target, layer in zip(targets, [4, 7]):
        assert target.dtype == torch.float32
        torch.testing.assert_close(target, full[layer], atol=2e-5, rtol=1e-4)  # channels-last front end: rounding
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_teacher_in_bf16_gives_fp32_targets_close_to_fp32(tiny_teacher, audio):
    # --mixed_precision bf16 runs the teacher in pure bf16: its targets drift ~1.5% from fp32 ones (README, measured on
    # an XLSR-53-shaped stand-in), far less than the student's distance to them. A larger drift fails here.
    frames = tiny_teacher._get_feature_vector_attention_mask(49, audio[3])
    exact = Teacher(copy.deepcopy(tiny_teacher), [4, 12])(audio[2], attention_mask=audio[3])
    targets = Teacher(tiny_teacher, [4, 12]).to(torch.bfloat16)(audio[2], attention_mask=audio[3])
    for target, reference in zip(targets, exact):
        assert target.dtype == torch.float32
        target, reference = target[frames], reference[frames]
        assert ((target - reference).abs().mean() / reference.abs().mean()).item() < 0.03
        cosine = torch.nn.functional.cosine_similarity(target, reference, dim=-1)
        assert cosine.mean() > 0.999 and cosine.min() > 0.99  # 32-wide vectors: noisier than XLSR-53's 1024


def test_distillation_loss_matches_the_formula_and_ignores_padding():
    torch.manual_seed(0)
    prediction, target = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    loss, l1, cosine = distillation_loss([prediction], [target], mask, cosine_weight=0.5)
    real_p, real_t = prediction[mask], target[mask]
    cos = torch.nn.functional.cosine_similarity(real_p, real_t, dim=-1)
    expected = (real_p - real_t).abs().mean() + 0.5 * (-torch.nn.functional.logsigmoid(cos)).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(cosine[0], cos.mean())
    # Padded frames do not count: changing them changes nothing.
    prediction[1, 3:] = 100.0
    torch.testing.assert_close(distillation_loss([prediction], [target], mask, 0.5)[0], loss)
    # A teacher one frame longer than the student is cropped, not crashed on.
    longer = torch.cat([target, torch.randn(2, 1, 8)], dim=1)
    torch.testing.assert_close(distillation_loss([prediction], [longer], mask, 0.5)[0], loss)
    assert l1.shape == (1,)


def test_shared_front_end_gives_the_same_loss_as_separate_front_ends(tiny_teacher, audio):
    student = DistilXLSRModel.from_teacher(tiny_teacher, num_hidden_layers=2, teacher_layers=(4, 12)).eval()
    teacher = Teacher(tiny_teacher, [4, 12])
    separate = distillation_forward(student, teacher, audio[2], audio[3], share_front_end=False)
    shared = distillation_forward(student, teacher, audio[2], audio[3], share_front_end=True)
    for a, b in zip(separate, shared):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("share_front_end", [False, True])
def test_loss_falls_on_a_fixed_batch(tiny_teacher, audio, share_front_end):
    torch.manual_seed(0)
    student = DistilXLSRModel.from_teacher(tiny_teacher, num_hidden_layers=2, teacher_layers=(4, 12))
    if share_front_end:
        student.freeze_feature_encoder()
    teacher = Teacher(tiny_teacher, [4, 12])
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=2e-3)
    losses, cosines = [], []
    with torch.enable_grad():
        for _ in range(30):
            loss, _, cosine = distillation_forward(student, teacher, audio[2], audio[3], share_front_end)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            cosines.append(cosine.mean().item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert cosines[-1] > cosines[0] + 0.2, cosines


@pytest.mark.parametrize("layers", ["0,12", "4,13"])
def test_bad_teacher_layer_fails_before_loading_data_or_weights(teacher_dir, tmp_path, layers, monkeypatch):
    monkeypatch.setattr(train_distill, "load_audio_datasets", lambda *a: pytest.fail("data was loaded"))
    monkeypatch.setattr(train_distill.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(ValueError, match="teacher"):
        main(run_args(teacher_dir, tmp_path / "missing-corpus", tmp_path / "out", "--teacher_layers", layers))


def load_in_fresh_process(model_dir, cwd):
    script = textwrap.dedent(
        """
        import json, sys, torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
        out = model(torch.randn(1, 16000))
        print(json.dumps({"class": type(model).__name__, "heads": [p.shape[-1] for p in out.layer_predictions],
                          "layers": model.config.teacher_layers}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    completed = subprocess.run(
        [sys.executable, "-I", "-c", script, str(model_dir)], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_end_to_end_run_writes_a_student_card_and_results(teacher_dir, corpus_dir, tmp_path):
    output_dir = tmp_path / "student"
    results = main(
        run_args(
            teacher_dir,
            corpus_dir,
            output_dir,
            "--max_train_steps",
            "4",
            "--eval_steps",
            "2",
            "--checkpointing_steps",
            "2",
            "--save_total_limit",
            "1",
        )
    )
    assert {
        "config.json",
        "model.safetensors",
        "modeling_distilxlsr.py",
        "configuration_distilxlsr.py",
        "preprocessor_config.json",
        "README.md",
        "distill_results.json",
    } <= {p.name for p in output_dir.iterdir()}
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-4"]  # save_total_limit 1
    saved = json.loads((output_dir / "distill_results.json").read_text())
    assert saved["steps"] == 4 and saved["teacher_is_stand_in"] and saved["data_is_synthetic"]
    assert saved["teacher_parameters"] > saved["student_parameters"] > 0
    assert set(saved["final_eval"]) == {
        "eval/l1_layer_4",
        "eval/cosine_layer_4",
        "eval/l1_layer_12",
        "eval/cosine_layer_12",
    }
    assert results["audio_hours_seen"] > 0
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.language == "pt" and card.data.license == "apache-2.0"
    assert card.data.base_model == str(teacher_dir) and "distilxlsr" in card.data.tags
    assert "stand-in" in card.text and "synthetic" in card.text and "layer 12" in card.text
    loaded = load_in_fresh_process(output_dir, tmp_path)
    assert loaded == {"class": "DistilXLSRModel", "heads": [32, 32], "layers": [4, 12]}


def losses(output_dir):
    history = json.loads((output_dir / "distill_results.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def test_interrupted_and_resumed_run_logs_the_same_losses(teacher_dir, corpus_dir, tmp_path):
    # 16 clips / batch 4 = 4 batches an epoch: the interruption at step 5 falls inside the second epoch.
    common = ["--max_train_steps", "8", "--checkpointing_steps", "100"]
    main(run_args(teacher_dir, corpus_dir, tmp_path / "straight", *common))
    interrupted = tmp_path / "interrupted"
    state = main(run_args(teacher_dir, corpus_dir, interrupted, *common, "--max_steps_this_run", "5"))
    assert state["step"] == 5 and [p.name for p in list_checkpoints(interrupted)] == ["checkpoint-5"]
    assert not (interrupted / "model.safetensors").exists()
    main(run_args(teacher_dir, corpus_dir, interrupted, *common, "--resume_from_checkpoint", "latest"))
    straight, resumed = losses(tmp_path / "straight"), losses(interrupted)
    assert sorted(straight) == sorted(resumed) == list(range(1, 9))
    assert straight == resumed


def test_a_crash_during_a_save_keeps_the_previous_checkpoint(teacher_dir, corpus_dir, tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    schedule = ["--max_train_steps", "4", "--checkpointing_steps", "2"]
    main(run_args(teacher_dir, corpus_dir, output_dir, *schedule, "--max_steps_this_run", "2"))
    resume = run_args(teacher_dir, corpus_dir, output_dir, *schedule, "--resume_from_checkpoint", "latest")
    original_save = train_distill.Accelerator.save_state

    def crashing_save(self, output_dir=None, **kwargs):
        original_save(self, output_dir, **kwargs)
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(train_distill.Accelerator, "save_state", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        main(resume)
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-2"]
    assert (output_dir / "checkpoints" / "checkpoint-4.tmp").exists()  # the half-written one is never "latest"
    monkeypatch.undo()
    results = main(resume)
    assert results["steps"] == 4 and [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-2", "checkpoint-4"]


def test_corrupt_and_too_short_audio_are_skipped_and_counted(teacher_dir, corpus_dir, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    train = corpus / "train"
    (train / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    import numpy as np
    import soundfile

    soundfile.write(train / "tiny.wav", np.zeros(200, dtype=np.float32), 16000)  # shorter than the receptive field
    with open(train / "metadata.csv", "a", encoding="utf-8") as metadata:
        metadata.write("corrupt.wav,corrompido,spk99\ntiny.wav,curto,spk99\n")
    # Batch 6 over 18 clips, 2 epochs: every clip is drawn twice.
    results = main(
        run_args(teacher_dir, corpus, tmp_path / "out", "--max_train_steps", "6", "--per_device_train_batch_size", "6")
    )
    assert results["steps"] == 6
    assert results["skipped_unreadable_clips"] == 2 and results["dropped_too_short_clips"] == 2


def run_accelerate(num_processes, *args, cwd):
    # accelerate's --cpu launcher starts one process unless MPI is installed; torchrun (--multi_gpu) with
    # ACCELERATE_USE_CPU=1 starts real CPU processes talking over gloo.
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO_ROOT / "train_distill.py"),
        *args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    if num_processes == 1:
        command[command.index("--multi_gpu")] = "--cpu"
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]


@pytest.mark.parametrize("num_processes", [1, 2])
def test_accelerate_launch_saves_a_student_that_reloads(teacher_dir, corpus_dir, tmp_path, num_processes):
    output_dir = tmp_path / "student"
    run_accelerate(
        num_processes,
        *run_args(
            teacher_dir,
            corpus_dir,
            output_dir,
            "--max_train_steps",
            "3",
            "--per_device_train_batch_size",
            "2",
            "--freeze_feature_encoder",
        ),
        cwd=tmp_path,
    )
    results = json.loads((output_dir / "distill_results.json").read_text())
    assert results["num_processes"] == num_processes and results["steps"] == 3
    # Each step consumed 2 clips on every process.
    assert len([e for e in results["log_history"] if "loss" in e]) == 3
    assert load_in_fresh_process(output_dir, tmp_path)["class"] == "DistilXLSRModel"


def test_streaming_run_distils_from_a_streamed_dataset(teacher_dir, corpus_dir, tmp_path):
    results = main(
        run_args(
            teacher_dir,
            corpus_dir,
            tmp_path / "out",
            "--streaming",
            "--max_train_steps",
            "3",
            "--shuffle_buffer_size",
            "8",
            "--max_eval_samples",
            "4",
        )
    )
    assert results["steps"] == 3 and results["audio_hours_seen"] > 0
    assert set(results["final_eval"]) == {
        "eval/l1_layer_4",
        "eval/cosine_layer_4",
        "eval/l1_layer_12",
        "eval/cosine_layer_12",
    }
