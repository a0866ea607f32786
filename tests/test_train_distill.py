"""train_distill.py: teacher cut, loss, fast path, end-to-end runs (1 and 2 processes), resume, bad input."""

import copy
import errno
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
from conftest import last_json, run_fresh_python, start_claimant, tell
from huggingface_hub import ModelCard
from transformers import Wav2Vec2Model

import train_distill
from distilxlsr_pt.checks import RUN_LOCK_PATTERN
from distilxlsr_pt.demo_corpus import build_corpus
from distilxlsr_pt.distillation import (
    DistillationCollator,
    Teacher,
    distillation_forward,
    distillation_loss,
    list_checkpoints,
)
from distilxlsr_pt.models import LoadingError
from distilxlsr_pt.stand_ins import make_stand_in_teacher
from modeling_distilxlsr import DistilXLSRModel
from train_distill import main

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


def test_batches_padded_to_a_multiple_give_the_loss_of_batches_padded_to_the_longest_clip(tiny_teacher):
    # --pad_to_multiple_of (0.5 s by default) makes batch shapes repeat, so that memory stays flat; what is learnt must
    # not change: the padding is masked in the student, the teacher and the loss.
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    generator = torch.Generator().manual_seed(1)
    clips = [{"array": torch.randn(n, generator=generator).numpy()} for n in (17_600, 9_600)]
    padded = DistillationCollator(extractor, 400, pad_to_multiple_of=8000)(clips)
    longest = DistillationCollator(extractor, 400)(clips)
    assert padded["input_values"].shape == (2, 24_000) and longest["input_values"].shape == (2, 17_600)
    assert padded["audio_seconds"] == longest["audio_seconds"]
    student = DistilXLSRModel.from_teacher(tiny_teacher, num_hidden_layers=2, teacher_layers=(4, 12)).eval()
    teacher = Teacher(tiny_teacher, [4, 12])
    for share_front_end in (False, True):
        terms = [
            distillation_forward(student, teacher, b["input_values"], b["attention_mask"], share_front_end)
            for b in (padded, longest)
        ]
        for a, b in zip(*terms):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_slim_layer_to_layer_student_with_a_narrow_front_end_gets_the_loss_computed_by_hand(tiny_teacher, audio):
    """Issue 19's shapes: 3 layers x 16 wide (the teacher is 12 x 32), 8 conv channels (the teacher's 16), head 1 on
    student layer 1 -> teacher layer 4, head 2 on layer 3 -> teacher layer 12."""
    torch.manual_seed(0)
    student = DistilXLSRModel.from_teacher(
        tiny_teacher, num_hidden_layers=3, hidden_size=16, conv_dim=8, teacher_layers=(4, 12), student_layers=[1, 3]
    ).eval()
    full = tiny_teacher(audio[2], attention_mask=audio[3], output_hidden_states=True)
    out = student(audio[2], attention_mask=audio[3], output_hidden_states=True)
    # Frames align: the narrow front end keeps the teacher's kernels and strides.
    assert out.last_hidden_state.shape[1] == full.last_hidden_state.shape[1] == 49
    mask = student._get_feature_vector_attention_mask(49, audio[3]).bool()
    by_hand = []
    for head, student_state, target in (
        (student.prediction_heads[0], out.hidden_states[1], full.hidden_states[4]),
        (student.prediction_heads[1], out.last_hidden_state, full.last_hidden_state),  # teacher's last: normalised
    ):
        prediction, target = head(student_state)[mask], target[mask]
        cosine = torch.nn.functional.cosine_similarity(prediction, target, dim=-1)
        by_hand.append((prediction - target).abs().mean() + (-torch.nn.functional.logsigmoid(cosine)).mean())
    loss, l1, cosine = distillation_forward(student, Teacher(tiny_teacher, [4, 12]), audio[2], audio[3], False)
    torch.testing.assert_close(loss, torch.stack(by_hand).mean(), atol=2e-5, rtol=1e-4)  # channels-last rounding


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


@pytest.mark.parametrize("layers", ["0,12", "4,twelve", "", "4,13"])
def test_bad_teacher_layer_fails_before_loading_data_or_weights(teacher_dir, tmp_path, layers, monkeypatch, capsys):
    monkeypatch.setattr(train_distill, "load_audio_datasets", lambda *a: pytest.fail("data was loaded"))
    monkeypatch.setattr(train_distill.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    args = run_args(teacher_dir, tmp_path / "missing-corpus", tmp_path / "out", "--teacher_layers", layers)
    if layers == "4,13":  # beyond the teacher's depth: known once its config is read
        with pytest.raises(ValueError, match="teacher has only 12 layers"):
            main(args)
        return
    with pytest.raises(SystemExit) as exit_info:  # an argparse error naming the flag and what it expects
        main(args)
    assert exit_info.value.code == 2
    assert "--teacher_layers: expects comma-separated teacher layers numbered from 1" in capsys.readouterr().err


def edited_copy(model_dir: Path, destination: Path, **fields) -> Path:
    """A copy of a saved model whose config.json has `fields` changed."""
    shutil.copytree(model_dir, destination)
    config = json.loads((destination / "config.json").read_text())
    (destination / "config.json").write_text(json.dumps({**config, **fields}))
    return destination


@pytest.mark.parametrize(
    "which, fields, message",
    [
        ("teacher", {"num_attention_heads": 0}, "num_attention_heads is 0: it must be a positive integer"),
        ("teacher", {"num_conv_pos_embedding_groups": 3}, "num_conv_pos_embedding_groups is 3: it must divide"),
        ("teacher", {"intermediate_size": -768}, "intermediate_size is -768"),
        ("teacher", {"num_hidden_layers": 100000}, "num_hidden_layers is 100000: at most 64 layers"),
        ("teacher", {"conv_kernel": [10, 3]}, "conv_dim"),  # transformers' own check, as a ValueError
        ("student", {"num_hidden_layers": 100000}, "num_hidden_layers is 100000: at most 64 layers"),
    ],
)
def test_a_bad_model_config_fails_before_loading_data_or_weights(
    teacher_dir, corpus_dir, tmp_path, monkeypatch, which, fields, message
):
    monkeypatch.setattr(train_distill, "load_audio_datasets", lambda *a: pytest.fail("data was loaded"))
    monkeypatch.setattr(train_distill.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    args = run_args(teacher_dir, corpus_dir, tmp_path / "out")
    if which == "teacher":
        args[1] = str(edited_copy(teacher_dir, tmp_path / "teacher", **fields))
    else:
        torch.manual_seed(0)
        DistilXLSRModel.from_teacher(Wav2Vec2Model.from_pretrained(teacher_dir), num_hidden_layers=2).save_pretrained(
            tmp_path / "student"
        )
        args += ["--student_name_or_path", str(edited_copy(tmp_path / "student", tmp_path / "bad-student", **fields))]
    flag = "--teacher_name_or_path" if which == "teacher" else "--student_name_or_path"
    with pytest.raises(LoadingError, match=f"{flag} {tmp_path}.*, config.json: .*{message}"):
        main(args)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--eval_steps", "0"], "--eval_steps must be > 0, got 0"),
        (["--logging_steps", "0"], "--logging_steps must be > 0"),
        (["--checkpointing_steps", "-5"], "--checkpointing_steps must be > 0"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be > 0"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be > 0"),
        (["--max_train_steps", "0"], "--max_train_steps must be > 0"),
        (["--learning_rate", "nan"], "--learning_rate must be > 0, got nan"),
        (["--max_grad_norm", "inf"], "--max_grad_norm must be > 0, got inf"),
        (["--warmup_ratio", "7"], "--warmup_ratio must be in [0, 1]"),
        (["--adam_beta2", "1"], "--adam_beta2 must be in [0, 1)"),
        (["--validation_split_percentage", "0"], "--validation_split_percentage must be between 0 and 100"),
        (["--seed", "-1"], "--seed must be in [0, 2**32)"),
        (["--dataloader_num_workers", "-1"], "--dataloader_num_workers must be >= 0"),
        (["--max_duration_in_seconds", "0"], "--max_duration_in_seconds must be > 0"),
        (["--min_duration_in_seconds", "3"], "--min_duration_in_seconds is above --max_duration_in_seconds"),
        (["--overwrite_output_dir", "--resume_from_checkpoint", "latest"], "pass one"),
        (["--resume_from_checkpoint", "no/such/checkpoint"], "no such checkpoint folder"),
        (["--student_hidden_size", "0"], "--student_hidden_size must be > 0"),
        (["--student_layers", "1,2,3"], "--student_layers [1, 2, 3]: one student layer per distinct --teacher_layers"),
        (["--student_layers", "0,2"], "--student_layers: expects comma-separated student layers numbered from 1"),
        (["--student_conv_dim", "wide"], "--student_conv_dim: expects channel counts such as 128, got 'wide'"),
        (["--student_name_or_path", "s", "--student_hidden_size", "96"], "--student_hidden_size shapes a new student"),
        (["--student_config", "no/such.json"], "--student_config no/such.json: cannot be read as JSON"),
    ],
)
def test_impossible_flag_values_are_argparse_errors_naming_the_flag(tmp_path, flags, message, capsys):
    base = ["--data_dir", "d", "--output_dir", str(tmp_path), "--max_duration_in_seconds", "2"]
    assert train_distill.parse_args(base).max_duration_in_seconds == 2  # valid on their own
    with pytest.raises(SystemExit) as exit_info:
        train_distill.parse_args([*base, *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_every_numeric_flag_has_a_rule():
    numeric = {action.dest for action in train_distill.build_parser()._actions if action.type in (int, float)}
    assert numeric == set(train_distill.NUMERIC_FLAGS)


@pytest.mark.parametrize("report_to", ["none", "tensorboard"])
def test_an_unwritable_output_dir_fails_before_anything_is_loaded(teacher_dir, tmp_path, report_to, monkeypatch):
    monkeypatch.setattr(train_distill, "load_audio_datasets", lambda *a: pytest.fail("data was loaded"))
    monkeypatch.setattr(train_distill, "load_config", lambda *a, **k: pytest.fail("config loaded"))
    (tmp_path / "a-file").write_text("not a folder")
    # (The tests run as root, whom permission bits do not stop: a file in the way and /sys stand in for them.)
    for output_dir, message in (
        (tmp_path / "a-file", "is a file, not a folder"),
        (tmp_path / "a-file" / "out", "cannot be written"),
        (Path("/sys/distilxlsr-test-out"), "cannot be written"),
    ):
        args = run_args(teacher_dir, tmp_path / "corpus", output_dir, "--report_to", report_to)
        with pytest.raises(ValueError, match=f"--output_dir {output_dir} {message}"):
            main(args)


def test_a_missing_or_empty_data_dir_fails_before_the_teacher_loads(teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(train_distill.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(ValueError, match="--data_dir .*no-corpus: no such folder"):
        main(run_args(teacher_dir, tmp_path / "no-corpus", tmp_path / "out"))
    (tmp_path / "corpus" / "train").mkdir(parents=True)
    (tmp_path / "corpus" / "train" / "metadata.csv").write_text("file_name,transcription\n")  # datasets: IndexError
    with pytest.raises(ValueError, match="train/metadata.csv lists no clip"):
        main(run_args(teacher_dir, tmp_path / "corpus", tmp_path / "out"))


def test_a_half_written_checkpoint_alone_is_not_a_run(tmp_path):
    from distilxlsr_pt.checks import check_output_dir

    (tmp_path / "checkpoints" / "checkpoint-3.tmp").mkdir(parents=True)  # a save killed before its rename
    assert check_output_dir(tmp_path, train_distill.RUN_FILES, overwrite=False, resuming=False) == []
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir()
    with pytest.raises(ValueError, match="already holds a run \\(checkpoints/checkpoint-2\\)"):
        check_output_dir(tmp_path, train_distill.RUN_FILES, overwrite=False, resuming=False)


def test_a_folder_in_use_by_another_run_is_refused_naming_that_process(teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(train_distill, "load_config", lambda *a, **k: pytest.fail("config loaded"))
    output_dir = tmp_path / "out"
    holder = start_claimant(output_dir)
    tell(holder)
    assert holder.stdout.readline() == "won\n"
    with pytest.raises(ValueError, match=f"--output_dir {output_dir} is in use by another run \\(pid {holder.pid} on"):
        main(run_args(teacher_dir, tmp_path / "corpus", output_dir))
    tell(holder)
    assert holder.wait() == 0
    assert not list(output_dir.iterdir())  # the holder removed its lock files, and only those
    from distilxlsr_pt.checks import check_output_dir

    assert check_output_dir(output_dir, train_distill.RUN_FILES, overwrite=False, resuming=False, lock=True) == []


def test_two_runs_claiming_one_new_folder_at_the_same_moment_one_wins(tmp_path):
    output_dir = tmp_path / "new"
    claimants = [start_claimant(output_dir) for _ in range(2)]
    for claimant in claimants:  # both are ready: told one after the other, they claim at (nearly) the same moment
        tell(claimant)
    answers = [claimant.stdout.readline() for claimant in claimants]
    assert sorted(answer.split(":")[0].strip() for answer in answers) == ["lost", "won"], answers
    winner = claimants[answers.index("won\n")]
    assert any(f"is in use by another run (pid {winner.pid} on" in answer for answer in answers)
    for claimant in claimants:
        tell(claimant)
        assert claimant.wait() == 0


def test_a_run_that_loses_by_a_moment_waits_for_the_winners_note(tmp_path):
    import threading

    from distilxlsr_pt.checks import OutputDirLock

    winner, loser = OutputDirLock(tmp_path), OutputDirLock(tmp_path)
    winner.holder.update(pid=4242, host="h", command="train_distill.py", started="now")
    write_late = threading.Timer(0.3, lambda: winner.holder_path.write_text(json.dumps(winner.holder)))
    write_late.start()  # the lock is taken, the note comes a moment later
    assert loser.describe_holder().startswith("pid 4242 on host h")
    write_late.join()
    winner.holder_path.unlink()
    assert loser.describe_holder(wait_s=0.1).startswith("a process that has not said which")


# What each script's run writes, and a user's files beside it (a backup, notes, a results file of their own).
RUN_WRITES = {
    "train_distill": ["model.safetensors", "distill_results.json", "checkpoints/checkpoint-4/"],
    "finetune_ctc": ["model.safetensors", "all_results.json", "eval_results.json", "checkpoint-4/"],
}
USER_FILES = [
    "notes.txt",
    "my_results.json",
    "checkpoint-4-backup/",
    "checkpoints/checkpoint-2-backup/",
    "checkpoints/checkpoint-3-copy2/",
    "old/model.safetensors",
]


@pytest.mark.parametrize("script", sorted(RUN_WRITES))
def test_overwrite_output_dir_deletes_only_what_a_run_wrote(tmp_path, script):
    from distilxlsr_pt.checks import check_output_dir, remove_previous_run

    for name in RUN_WRITES[script] + USER_FILES:  # a trailing "/" makes a folder
        path = tmp_path / name
        if name.endswith("/"):
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text("x")
    run_files = importlib.import_module(script).RUN_FILES
    previous = check_output_dir(tmp_path, run_files, overwrite=True, resuming=False)
    assert sorted(p.relative_to(tmp_path).as_posix() + "/" * p.is_dir() for p in previous) == sorted(RUN_WRITES[script])
    remove_previous_run(previous)
    assert all((tmp_path / name).exists() for name in USER_FILES)
    assert not any((tmp_path / name).exists() for name in RUN_WRITES[script])


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
    return last_json(run_fresh_python(script, model_dir, cwd=cwd))


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
    logged = [entry for entry in results["log_history"] if "loss" in entry]
    assert logged and all(entry["rss_gb"] > 0.05 and entry["workers_rss_gb"] >= 0 for entry in logged)


def test_a_slim_layer_to_layer_student_distils_saves_and_reloads(teacher_dir, corpus_dir, tmp_path):
    """--student_config and the --student_* flags (which override it) shape a new student: 3 layers x 16 wide, 8 conv
    channels, heads on layers 1 and 3; teacher layers given as 12,4 pair in that order."""
    student_config = tmp_path / "shape.json"
    student_config.write_text(json.dumps({"num_hidden_layers": 3, "hidden_size": 24, "conv_dim": [8] * 7}))
    output_dir = tmp_path / "slim"
    shape = ["--student_config", str(student_config), "--student_hidden_size", "16", "--student_layers", "3,1"]
    results = main(
        run_args(teacher_dir, corpus_dir, output_dir, *shape, "--teacher_layers", "12,4", "--max_train_steps", "2")
    )
    assert results["teacher_layers"] == [4, 12]
    assert results["student_shape"] == {
        "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 1, "num_hidden_layers": 3,
        "conv_dim": [8] * 7, "student_layers": [1, 3],
    }  # fmt: skip
    assert results["student_initialised_from_teacher"] == []  # nothing fits: all random, and the card says so
    card = (output_dir / "README.md").read_text()
    assert "student layer -> teacher layer: 1 -> 4, 3 -> 12" in card and "the rest from random weights" in card
    assert "3 layers x 16 wide" in card
    assert load_in_fresh_process(output_dir, tmp_path) == {
        "class": "DistilXLSRModel",
        "heads": [32, 32],
        "layers": [4, 12],
    }
    assert json.loads((output_dir / "config.json").read_text())["student_layers"] == [1, 3]
    # The teacher's front end cannot be shared with a narrower one, nor can the frames be left unaligned.
    with pytest.raises(ValueError, match="--freeze_feature_encoder shares the teacher's conv front end"):
        main(
            run_args(
                teacher_dir,
                corpus_dir,
                tmp_path / "frozen",
                "--student_conv_dim",
                "8",
                "--freeze_feature_encoder",
                "--max_train_steps",
                "1",
            )
        )
    student_config.write_text(json.dumps({"conv_stride": [5, 2, 2, 2, 2, 2, 4]}))
    with pytest.raises(ValueError, match="conv_stride is .* so that its frames align"):
        main(run_args(teacher_dir, corpus_dir, tmp_path / "strided", "--student_config", str(student_config)))
    assert not (tmp_path / "strided" / "model.safetensors").exists()


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


@pytest.mark.parametrize("crash", [KeyboardInterrupt("killed while saving"), OSError(errno.ENOSPC, "disk full")])
def test_a_crash_during_a_save_keeps_the_previous_checkpoint(teacher_dir, corpus_dir, tmp_path, monkeypatch, crash):
    output_dir = tmp_path / "out"
    schedule = ["--max_train_steps", "4", "--checkpointing_steps", "2"]
    main(run_args(teacher_dir, corpus_dir, output_dir, *schedule, "--max_steps_this_run", "2"))
    resume = run_args(teacher_dir, corpus_dir, output_dir, *schedule, "--resume_from_checkpoint", "latest")
    original_save = train_distill.Accelerator.save_state

    def crashing_save(self, output_dir=None, **kwargs):
        original_save(self, output_dir, **kwargs)
        raise crash

    monkeypatch.setattr(train_distill.Accelerator, "save_state", crashing_save)
    with pytest.raises(type(crash)):
        main(resume)
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-2"]
    assert [p.name for p in (output_dir / "checkpoints").iterdir()] == ["checkpoint-2"]  # the failed save's .tmp: gone
    monkeypatch.undo()
    results = main(resume)
    assert results["steps"] == 4 and [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-2", "checkpoint-4"]


def test_a_full_disk_during_the_final_save_leaves_no_model_folder(teacher_dir, corpus_dir, tmp_path, monkeypatch):
    def save_config_then_fill_the_disk(self, save_directory, **kwargs):
        self.config.save_pretrained(save_directory)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DistilXLSRModel, "save_pretrained", save_config_then_fill_the_disk)
    output_dir = tmp_path / "out"
    with pytest.raises(OSError, match="No space left on device"):
        main(run_args(teacher_dir, corpus_dir, output_dir, "--max_train_steps", "1", "--checkpointing_steps", "5"))
    assert [p.name for p in output_dir.iterdir() if not fnmatch(p.name, RUN_LOCK_PATTERN)] == []  # (the lock: held)


RESUMABLE = ["--max_train_steps", "4", "--checkpointing_steps", "2", "--save_total_limit", "1"]


@pytest.fixture(scope="module")
def interrupted_run(teacher_dir, corpus_dir, tmp_path_factory):
    """A run stopped after its checkpoint at step 2 of 4 (copy it before changing it)."""
    output_dir = tmp_path_factory.mktemp("interrupted") / "out"
    main(run_args(teacher_dir, corpus_dir, output_dir, *RESUMABLE, "--max_steps_this_run", "2"))
    return output_dir


def resume_copy(interrupted_run, teacher_dir, corpus_dir, tmp_path):
    """A copy of `interrupted_run` to damage, and the arguments that resume it."""
    output_dir = tmp_path / "out"
    shutil.copytree(interrupted_run, output_dir, ignore=shutil.ignore_patterns(RUN_LOCK_PATTERN))
    return output_dir, run_args(teacher_dir, corpus_dir, output_dir, *RESUMABLE, "--resume_from_checkpoint", "latest")


def test_folders_that_are_not_checkpoints_are_neither_resumed_nor_deleted(
    interrupted_run, teacher_dir, corpus_dir, tmp_path
):
    output_dir, resume = resume_copy(interrupted_run, teacher_dir, corpus_dir, tmp_path)
    checkpoints = output_dir / "checkpoints"
    shutil.copytree(checkpoints / "checkpoint-2", checkpoints / "checkpoint-2-backup")
    (checkpoints / "checkpoint-9.old").mkdir()
    (checkpoints / "checkpoint-7").write_text("a file, not a checkpoint folder")
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-2"]
    assert main(resume)["steps"] == 4
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "checkpoint-2-backup", "checkpoint-4", "checkpoint-7", "checkpoint-9.old"  # --save_total_limit 1
    ]  # fmt: skip


def test_a_checkpoint_with_non_finite_weights_is_refused_when_resumed(
    interrupted_run, teacher_dir, corpus_dir, tmp_path
):
    from safetensors.torch import load_file, save_file

    output_dir, resume = resume_copy(interrupted_run, teacher_dir, corpus_dir, tmp_path)
    weights_file = output_dir / "checkpoints" / "checkpoint-2" / "model.safetensors"
    weights = load_file(weights_file)
    next(iter(weights.values()))[0] = float("nan")
    save_file(weights, weights_file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="checkpoint-2 holds non-finite \\(NaN or inf\\) weights; resume from an"):
        main(resume)
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-2"]  # not trained on


def test_an_unreadable_rng_state_resumes_with_a_warning_that_it_is_not_exact(
    interrupted_run, teacher_dir, corpus_dir, tmp_path, caplog
):
    output_dir, resume = resume_copy(interrupted_run, teacher_dir, corpus_dir, tmp_path)
    rng_file = output_dir / "checkpoints" / "checkpoint-2" / "random_states_0.pkl"
    rng_file.write_bytes(rng_file.read_bytes()[:100])  # truncated
    with caplog.at_level("WARNING"):
        assert main(resume)["steps"] == 4
    assert f"{rng_file} could not be read" in caplog.text and "does not continue exactly" in caplog.text


def saved_weights_are_finite(output_dir: Path) -> bool:
    from safetensors.torch import load_file

    return all(torch.isfinite(tensor).all() for tensor in load_file(output_dir / "model.safetensors").values())


def test_corrupt_non_finite_and_too_short_audio_are_skipped_and_counted(teacher_dir, corpus_dir, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    train = corpus / "train"
    (train / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    import numpy as np
    import soundfile

    soundfile.write(train / "tiny.wav", np.zeros(200, dtype=np.float32), 16000)  # shorter than the receptive field
    # Float WAVs holding a NaN and an infinite sample: one such clip used to turn the student's weights into NaN.
    noise = (0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32)
    for name, bad in (("nan.wav", np.nan), ("inf.wav", -np.inf)):
        noise[5000] = bad
        soundfile.write(train / name, noise, 16000, subtype="FLOAT")
    with open(train / "metadata.csv", "a", encoding="utf-8") as metadata:
        metadata.write("corrupt.wav,corrompido,spk99\ntiny.wav,curto,spk99\nnan.wav,nan,spk99\ninf.wav,inf,spk99\n")
    # Batch 5 over 20 clips, 2 epochs: every clip is drawn twice.
    output_dir = tmp_path / "out"
    results = main(
        run_args(teacher_dir, corpus, output_dir, "--max_train_steps", "8", "--per_device_train_batch_size", "5")
    )
    assert results["steps"] == 8 and results["skipped_nonfinite_steps"] == 0
    assert results["skipped_unreadable_clips"] == 6 and results["dropped_too_short_clips"] == 2
    assert saved_weights_are_finite(output_dir)
    assert all(np.isfinite(entry["loss"]) for entry in results["log_history"] if "loss" in entry)


def test_a_non_finite_loss_never_reaches_the_weights(teacher_dir, corpus_dir, tmp_path, monkeypatch):
    original_forward = train_distill.distillation_forward
    poisoned_calls = set()
    training_calls = []

    def poisoned_forward(*args, **kwargs):
        loss, l1, cosine = original_forward(*args, **kwargs)
        if torch.is_grad_enabled():  # a training step, not an evaluation
            training_calls.append(1)
            if len(training_calls) in poisoned_calls:
                loss = loss * float("nan")
        return loss, l1, cosine

    monkeypatch.setattr(train_distill, "distillation_forward", poisoned_forward)
    poisoned_calls.update({2, 3})
    output_dir = tmp_path / "out"
    results = main(run_args(teacher_dir, corpus_dir, output_dir, "--max_train_steps", "4"))
    assert results["steps"] == 4 and results["skipped_nonfinite_steps"] == 2
    assert saved_weights_are_finite(output_dir)
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in results["log_history"] if "loss" in e)

    # Every step non-finite: a clear error after MAX_NONFINITE_STEPS_IN_A_ROW, and no student saved.
    monkeypatch.setattr(train_distill, "MAX_NONFINITE_STEPS_IN_A_ROW", 3)
    training_calls.clear()
    poisoned_calls.update(range(1, 100))
    with pytest.raises(RuntimeError, match="3 steps in a row had a non-finite"):
        main(run_args(teacher_dir, corpus_dir, tmp_path / "nan", "--max_train_steps", "50"))
    assert len(training_calls) == 3 and not (tmp_path / "nan" / "model.safetensors").exists()


def test_no_usable_training_audio_is_an_error_not_an_untrained_student(teacher_dir, corpus_dir, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    for wav in (corpus / "train").glob("*.wav"):
        wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    # A short run ends with the error instead of saving the untrained student...
    with pytest.raises(ValueError, match="No usable training audio in the whole run: 8 clips unreadable"):
        main(run_args(teacher_dir, corpus, tmp_path / "short", "--max_train_steps", "2"))
    assert not (tmp_path / "short" / "model.safetensors").exists()
    # ... and a long one stops early; here every clip is too short for --min_duration_in_seconds.
    monkeypatch.setattr(train_distill, "MAX_BATCHES_WITHOUT_AUDIO_IN_A_ROW", 3)
    long_run = ["--max_train_steps", "1000", "--min_duration_in_seconds", "10", "--max_duration_in_seconds", "20"]
    with pytest.raises(
        ValueError, match="No usable training audio in the last 3 batches: 0 clips unreadable .*, 12 too"
    ):
        main(run_args(teacher_dir, corpus_dir, tmp_path / "long", *long_run))


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(teacher_dir, corpus_dir, tmp_path):
    output_dir = tmp_path / "out"
    schedule = ["--checkpointing_steps", "1", "--save_total_limit", "5"]
    main(run_args(teacher_dir, corpus_dir, output_dir, "--max_train_steps", "3", *schedule))
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    first_model = (output_dir / "model.safetensors").read_bytes()
    again = run_args(teacher_dir, corpus_dir, output_dir, "--max_train_steps", "1", *schedule)
    with pytest.raises(ValueError, match="already holds a run .*--resume_from_checkpoint.*--overwrite_output_dir"):
        main(again)
    assert (output_dir / "model.safetensors").read_bytes() == first_model  # untouched
    # --overwrite_output_dir replaces the old run: none of its checkpoints can be deleted for, or resumed as, the new.
    results = main([*again, "--overwrite_output_dir"])
    assert results["steps"] == 1 and [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-1"]
    assert json.loads((output_dir / "distill_results.json").read_text())["steps"] == 1
    # 'latest' with no checkpoint to continue does not start afresh over a finished student either.
    shutil.rmtree(output_dir / "checkpoints")
    with pytest.raises(ValueError, match="already holds a run \\(distill_results.json, model.safetensors\\)"):
        main([*again, "--resume_from_checkpoint", "latest"])


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
