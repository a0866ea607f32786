"""The demo's controls (issue 20): (b) is exactly the teacher-initialised student, (c) trains its conv front end; its
teachers (issue 21): the supervised stand-in by default, the self-supervised one on request, trained as shipped
when missing."""

import argparse
import json
import shutil

import pytest
import torch
from transformers import Wav2Vec2ForCTC, Wav2Vec2Model

import demo
from configuration_distilxlsr import DistilXLSRConfig
from distilxlsr_pt import demo_corpus
from distilxlsr_pt.cards import stand_in_kind
from distilxlsr_pt.demo_corpus import build_corpus
from distilxlsr_pt.models import default_feature_extractor
from distilxlsr_pt.stand_ins import (
    SELF_SUPERVISED_ARGS,
    SELF_SUPERVISED_ITERATION_1_DIR,
    SELF_SUPERVISED_ITERATION_2_ARGS,
    SELF_SUPERVISED_TEACHER_DIR,
    SELF_SUPERVISED_UNLABELLED_CLIPS,
    SHIPPED_TEACHER_DIR,
    stand_in_teacher_config,
)
from finetune_ctc import main as finetune_main
from modeling_distilxlsr import DistilXLSRForCTC, DistilXLSRModel


@pytest.fixture(scope="module")
def teacher_and_student(tmp_path_factory):
    """A tiny teacher and a 'distilled' student of it (its weights moved away from the teacher's, as training does)."""
    root = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    teacher = Wav2Vec2Model(stand_in_teacher_config("tiny")).eval()
    teacher.save_pretrained(root / "teacher")
    config = DistilXLSRConfig.from_teacher_config(teacher.config, teacher_layers=(4, 12), num_hidden_layers=2)
    student = DistilXLSRModel.from_teacher(teacher, config)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    student.save_pretrained(root / "student")
    return root, teacher, config


def backbone(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("prediction_heads")}


def test_the_teacher_initialised_control_equals_from_teacher_and_not_the_distilled_student(teacher_and_student):
    root, teacher, config = teacher_and_student
    demo.make_teacher_init_student(root / "teacher", root / "student", root / "control")
    control = backbone(DistilXLSRModel.from_pretrained(root / "control"))
    expected = backbone(DistilXLSRModel.from_teacher(teacher, config))
    distilled = backbone(DistilXLSRModel.from_pretrained(root / "student"))
    assert control.keys() == expected.keys() and len(control) > 10
    for name, value in control.items():
        torch.testing.assert_close(value, expected[name], atol=0, rtol=0, msg=name)
    assert all(not torch.equal(control[name], distilled[name]) for name in control)  # not a copy of (a)
    assert DistilXLSRConfig.from_pretrained(root / "control").num_hidden_layers == config.num_hidden_layers


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng, sox")
def test_the_scratch_baseline_trains_its_front_end_and_the_distilled_recipe_keeps_it_frozen(
    teacher_and_student, tmp_path
):
    root, _, _ = teacher_and_student
    corpus = tmp_path / "corpus"
    build_corpus(corpus, num_train=4, num_validation=2, num_test=2, num_workers=2)
    demo.make_scratch_student(root / "student", tmp_path / "scratch")
    before = DistilXLSRModel.from_pretrained(tmp_path / "scratch").feature_extractor.state_dict()
    changed = {}
    for name, extra in (("scratch", demo.SCRATCH_FLAGS), ("distilled recipe", [])):
        output_dir = tmp_path / f"ctc-{name}"
        # The demo's recipe, then the scratch flags after it (the later flag wins), as demo.finetune passes them.
        finetune_main(["--model_name_or_path", str(tmp_path / "scratch"), "--data_dir", str(corpus), "--output_dir",
                       str(output_dir), "--do_train", "--report_to", "none", "--save_strategy", "no", "--max_steps",
                       "2", "--disable_tqdm", "True", *demo.CTC_RECIPE, "--per_device_train_batch_size", "2",
                       "--mask_time_prob", "0", *extra])  # fmt: skip
        after = DistilXLSRForCTC.from_pretrained(output_dir).distilxlsr.feature_extractor.state_dict()
        changed[name] = [key for key in before if not torch.equal(before[key], after[key])]
    assert any(key.startswith("conv_layers.0.") for key in changed["scratch"])  # the first conv layer learns too
    assert len(changed["scratch"]) == len(before)  # every front-end weight got a gradient and moved
    assert changed["distilled recipe"] == []


def test_the_demo_distils_the_supervised_teacher_unless_told_self_supervised(monkeypatch):
    chosen = []
    monkeypatch.setattr(demo, "run_demo", lambda args, settings: chosen.append(args.teacher_dir))
    demo.main([])
    demo.main(["--teacher", "self-supervised"])
    demo.main(["--teacher", "self-supervised", "--teacher_dir", "elsewhere"])
    assert chosen == [str(SHIPPED_TEACHER_DIR), str(SELF_SUPERVISED_TEACHER_DIR), "elsewhere"]
    assert "SELF-SUPERVISED" in demo.stand_in_note("self-supervised") and "no transcript" in demo.labels_note(
        "self-supervised"
    )


def test_step_options_change_every_students_budget_and_nothing_else(monkeypatch, capsys):
    given = []
    monkeypatch.setattr(demo, "run_demo", lambda args, settings: given.append(settings))
    demo.main(["--finetune_steps", "1000"])
    demo.main(["--quick", "--distill_steps", "7"])
    full, quick = demo.SETTINGS["full"], demo.SETTINGS["quick"]
    assert (
        given[0]["distill"] == full["distill"] and full["finetune"][full["finetune"].index("--max_steps") + 1] == "300"
    )
    changed = [(a, b) for a, b in zip(full["finetune"], given[0]["finetune"], strict=True) if a != b]
    assert changed == [("300", "1000"), ("50", "166")]  # --max_steps and --eval_steps, the recipe untouched
    assert demo.steps_of(given[1], "distill") == 7 and given[1]["finetune"] == quick["finetune"]
    with pytest.raises(SystemExit):
        demo.main(["--finetune_steps", "0"])
    assert "--finetune_steps must be at least 1" in capsys.readouterr().err


def test_the_teacher_ceiling_fine_tunes_every_teacher_layer_with_the_students_recipe(
    teacher_and_student, corpus_dir, tmp_path, monkeypatch
):
    root, teacher, _ = teacher_and_student
    default_feature_extractor().save_pretrained(root / "teacher")
    monkeypatch.setattr(demo, "build_data", lambda corpus, free: {"splits": {"train": {"clips": 40}}})  # 4 labelled
    summary = demo.main(["--finetune_teacher", "--quick", "--teacher_dir", str(root / "teacher"), "--corpus_dir",
                         str(corpus_dir), "--free_speech_dir", str(corpus_dir), "--output_dir", str(tmp_path)])  # fmt: skip
    saved = json.loads((tmp_path / "teacher_finetuned.json").read_text())
    assert saved == json.loads(json.dumps(summary)) and saved["labelled_train_clips"] == 4
    assert saved["finetune_steps"] == 40 and 0 <= saved["teacher_finetuned_asr"]["test_cer"]
    recogniser = Wav2Vec2ForCTC.from_pretrained(tmp_path / "teacher-ctc-pt")
    assert recogniser.config.num_hidden_layers == 12  # the whole teacher, not a 2-layer student
    before, after = teacher.encoder.state_dict(), recogniser.wav2vec2.encoder.state_dict()
    moved = {
        name.split(".")[1]
        for name in before
        if name.startswith("layers.") and not torch.equal(before[name], after[name])
    }
    assert moved == {str(layer) for layer in range(12)}  # every layer learnt
    state = json.loads((tmp_path / "teacher-ctc-pt" / "trainer_state.json").read_text())
    assert state["global_step"] == 40 and state["train_batch_size"] == 8  # the students' recipe, --quick's steps


def test_a_missing_self_supervised_teacher_is_trained_as_the_shipped_one_was(monkeypatch, tmp_path):
    commands, built = [], []
    monkeypatch.setattr(demo, "run", lambda command, log: commands.append(command) or 1.0)
    monkeypatch.setattr(demo_corpus, "build_unlabelled_set", lambda *args, **kwargs: built.append((args, kwargs)))
    args = argparse.Namespace(teacher="self-supervised", teacher_dir=str(tmp_path / "teacher"), corpus_dir="corpus",
                              unlabelled_dir=str(tmp_path / "unlabelled"))  # fmt: skip
    demo.ensure_teacher(args, tmp_path / "teacher.log")
    assert built[0][1]["num_clips"] == SELF_SUPERVISED_UNLABELLED_CLIPS
    iteration_1, iteration_2 = commands  # no first iteration there: both are trained, the first one first
    assert iteration_1[1] == iteration_2[1] == "stand_ins/train_ssl_teacher.py"
    assert iteration_1[-len(SELF_SUPERVISED_ARGS) :] == SELF_SUPERVISED_ARGS
    assert iteration_2[-len(SELF_SUPERVISED_ITERATION_2_ARGS) :] == SELF_SUPERVISED_ITERATION_2_ARGS
    first_dir = iteration_1[iteration_1.index("--output_dir") + 1]
    assert iteration_2[iteration_2.index("--target_model_dir") + 1] == first_dir
    assert iteration_2[iteration_2.index("--init_model_dir") + 1] == first_dir
    assert iteration_2[iteration_2.index("--output_dir") + 1] == str(tmp_path / "teacher")
    # The shipped teachers were made with the same arguments (their cards give the commands).
    shipped = json.loads((SELF_SUPERVISED_TEACHER_DIR / "teacher_results.json").read_text())["commands"]
    assert len(shipped) == 2 and " ".join(SELF_SUPERVISED_ARGS) in shipped[0]
    for flag, value in zip(SELF_SUPERVISED_ITERATION_2_ARGS[::2], SELF_SUPERVISED_ITERATION_2_ARGS[1::2], strict=True):
        assert f"{flag} {value}" in shipped[1]
    assert (
        f"--target_model_dir {SELF_SUPERVISED_ITERATION_1_DIR.relative_to(SHIPPED_TEACHER_DIR.parents[1])}"
        in shipped[1]
    )
    # With the shipped first iteration there, only the second is trained, from it.
    commands.clear()
    monkeypatch.setattr(demo, "SELF_SUPERVISED_TEACHER_DIR", tmp_path / "teacher")
    demo.ensure_teacher(args, tmp_path / "teacher.log")
    assert len(commands) == 1 and commands[0][commands[0].index("--target_model_dir") + 1] == str(
        SELF_SUPERVISED_ITERATION_1_DIR
    )
    assert stand_in_kind(SELF_SUPERVISED_TEACHER_DIR) == "self-supervised"
