"""Loading models and data as every script does: a folder's own code never runs unless the user says so (the project's
own DistilXLSR folders load through the installed classes), only a CTC head is ever re-initialised, a plain
Wav2Vec2Model / HubertModel folder says that its prediction heads are new and records no invented teacher, and an
uncached Hub id while offline ends the command with one line."""

import json
import logging
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_fresh_python
from safetensors.torch import load_file, save_file
from transformers import AutoModel, HubertConfig, HubertModel, Wav2Vec2CTCTokenizer, Wav2Vec2Model, Wav2Vec2Processor

import add_ngram_lm
import evaluate_asr
import export_onnx
import finetune_ctc
import modeling_distilxlsr
import train_distill
from configuration_distilxlsr import DistilXLSRConfig
from distilxlsr_pt.models import LoadingError, default_feature_extractor, load_ctc_weights
from distilxlsr_pt.stand_ins import make_stand_in_teacher, stand_in_teacher_config
from modeling_distilxlsr import DistilXLSRForCTC, DistilXLSRModel, wav2vec2_config

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER_CODE = "import pathlib; pathlib.Path({marker!r}).write_text('the folder ran its own code')\n"


def tiny_student_config(**overrides) -> DistilXLSRConfig:
    return DistilXLSRConfig.from_teacher_config(stand_in_teacher_config("tiny"), teacher_layers=(4, 12), **overrides)


# ---------------------------------------------------------------------------------------------------------------------
# Item 2: a folder's own code runs only with --trust_remote_code
# ---------------------------------------------------------------------------------------------------------------------
def folder_with_its_own_code(root: Path, marker: Path) -> Path:
    """A model folder of a type of its own whose config, feature extractor and tokenizer all point (auto_map) to a
    module that writes `marker` as soon as it is imported."""
    folder = root / "own-code-model"
    folder.mkdir(parents=True)
    (folder / "own_code.py").write_text(
        MARKER_CODE.format(marker=str(marker))
        + "from transformers import PreTrainedConfig\n\n\nclass OwnConfig(PreTrainedConfig):\n"
        "    model_type = 'own-code-speech'\n"
    )
    classes = {name: f"own_code.Own{name.removeprefix('Auto')}" for name in ("AutoConfig", "AutoModel")}
    classes |= {"AutoModelForCTC": "own_code.OwnModel", "AutoFeatureExtractor": "own_code.OwnFeatureExtractor"}
    (folder / "config.json").write_text(json.dumps({"model_type": "own-code-speech", "auto_map": classes}))
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"feature_extractor_type": "OwnFeatureExtractor", "auto_map": classes})
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "OwnTokenizer", "auto_map": {"AutoTokenizer": ["own_code.OwnTokenizer", None]}})
    )
    return folder


@pytest.fixture
def own_code_folder(tmp_path):
    marker = tmp_path / "marker.txt"
    return folder_with_its_own_code(tmp_path, marker), marker


def test_the_folder_really_runs_its_code_when_trusted(own_code_folder, tmp_path):
    """The fixture has teeth: transformers imports the folder's module (which writes the marker) once trusted."""
    folder, marker = own_code_folder
    code = """
        import sys
        from transformers import AutoConfig
        AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)
        """
    run_fresh_python(code, folder, cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    assert marker.read_text() == "the folder ran its own code"


@pytest.mark.parametrize(
    "script, argv",
    [
        (train_distill, ["--teacher_name_or_path", "{model}", "--data_dir", "{tmp}/data", "--output_dir", "{tmp}/o"]),
        (finetune_ctc, ["--model_name_or_path", "{model}", "--dataset_name", "{tmp}/data", "--output_dir", "{tmp}/o",
                        "--report_to", "none"]),
        (evaluate_asr, ["--model_name_or_path", "{model}", "--data_dir", "{tmp}/data"]),
        (add_ngram_lm, ["--model_name_or_path", "{model}", "--text_file", "{tmp}/lm.txt", "--output_dir", "{tmp}/o"]),
        (export_onnx, ["--model_name_or_path", "{model}", "--output_dir", "{tmp}/o"]),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)  # fmt: skip
def test_no_script_runs_a_folders_code_unless_told(script, argv, own_code_folder, tmp_path):
    folder, marker = own_code_folder
    (tmp_path / "lm.txt").write_text("bom dia\n")
    with pytest.raises(LoadingError, match=r"ships its own model code .* only with --trust_remote_code") as error:
        script.main([value.format(model=folder, tmp=tmp_path) for value in argv])
    assert str(folder) in str(error.value)
    assert not marker.exists()
    assert not (tmp_path / "o" / "own_code.py").exists()  # add_ngram_lm copied the folder before loading it


def test_the_projects_own_folders_load_through_the_installed_classes_not_their_copy(tmp_path):
    """A saved DistilXLSR folder carries a copy of the model code (for remote-code users); the scripts load it with
    trust_remote_code=False through this installation's classes, and the copy never runs."""
    torch.manual_seed(0)
    ctc = DistilXLSRForCTC(tiny_student_config(vocab_size=7)).eval()
    ctc.save_pretrained(tmp_path / "ctc")
    DistilXLSRModel(tiny_student_config()).save_pretrained(tmp_path / "student")
    marker = tmp_path / "marker.txt"
    for folder in (tmp_path / "ctc", tmp_path / "student"):
        for copy in ("modeling_distilxlsr.py", "configuration_distilxlsr.py"):
            assert (folder / copy).is_file()
            (folder / copy).write_text(MARKER_CODE.format(marker=str(marker)) + (folder / copy).read_text())

    loaded = load_ctc_weights(tmp_path / "ctc")
    student = AutoModel.from_pretrained(tmp_path / "student")
    assert type(loaded) is modeling_distilxlsr.DistilXLSRForCTC and type(student) is modeling_distilxlsr.DistilXLSRModel
    assert not marker.exists()
    torch.testing.assert_close(loaded.lm_head.weight, ctc.lm_head.weight, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Item 3: only the CTC head may be re-initialised
# ---------------------------------------------------------------------------------------------------------------------
def character_processor(tmp_path: Path, characters: str = "abc") -> Wav2Vec2Processor:
    vocab = {"[PAD]": 0, "[UNK]": 1, "|": 2, **{c: i + 3 for i, c in enumerate(characters)}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(
        tmp_path / "vocab.json", unk_token="[UNK]", pad_token="[PAD]", bos_token=None, eos_token=None
    )
    return Wav2Vec2Processor(feature_extractor=default_feature_extractor(), tokenizer=tokenizer)


def test_fine_tuning_refuses_encoder_weights_that_do_not_fit_their_config(tmp_path):
    folder = tmp_path / "student"
    DistilXLSRModel(tiny_student_config()).save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    name = "encoder.layers.0.feed_forward.intermediate_dense.weight"
    rows, columns = weights[name].shape
    weights[name] = torch.zeros(rows + 8, columns)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})

    model_args = finetune_ctc.ModelArguments(model_name_or_path=str(folder))
    with pytest.raises(LoadingError, match="do not fit") as error:
        finetune_ctc.load_model(model_args, character_processor(tmp_path))
    assert f"distilxlsr.{name} is [{rows + 8}, {columns}] in the checkpoint, [{rows}, {columns}]" in str(error.value)


def test_a_ctc_checkpoint_with_another_vocabulary_gets_a_new_head_and_says_so(tmp_path, caplog):
    torch.manual_seed(0)
    ctc = DistilXLSRForCTC(tiny_student_config(vocab_size=11))
    ctc.save_pretrained(tmp_path / "ctc")
    model_args = finetune_ctc.ModelArguments(model_name_or_path=str(tmp_path / "ctc"))
    with caplog.at_level(logging.WARNING, logger="distilxlsr_pt.models"):
        model = finetune_ctc.load_model(model_args, character_processor(tmp_path, "abc"))
    assert model.lm_head.out_features == 6
    assert "lm_head.weight [11, 32]" in caplog.text and "a new head for 6 tokens" in caplog.text
    want = ctc.distilxlsr.state_dict()
    for key, value in model.distilxlsr.state_dict().items():
        torch.testing.assert_close(value, want[key], atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Item 7: plain Wav2Vec2Model / HubertModel folders (lgris/distilxlsr_bp_4-12, ntu-spml/distilhubert)
# ---------------------------------------------------------------------------------------------------------------------
def plain_backbone_folder(path: Path, kind: str) -> tuple[Path, dict]:
    """A saved random `Wav2Vec2Model` or `HubertModel` (no prediction heads) of the tiny student's shape."""
    fields = wav2vec2_config(tiny_student_config()).to_dict()
    torch.manual_seed(3)
    if kind == "wav2vec2":
        model = Wav2Vec2Model(wav2vec2_config(tiny_student_config()))
    else:  # as transformers' s3prl converter writes DistilHuBERT
        fields = {k: v for k, v in fields.items() if k not in ("model_type", "architectures", "transformers_version")}
        model = HubertModel(HubertConfig(**{**fields, "feat_proj_layer_norm": False, "conv_bias": False}))
    model.save_pretrained(path)
    return path, model.state_dict()


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_a_plain_backbone_folder_loads_its_backbone_with_new_heads_said_plainly(tmp_path, kind, caplog):
    folder, backbone = plain_backbone_folder(tmp_path / kind, kind)
    with pytest.raises(ValueError, match="does not say which teacher layers .* pass teacher_layers"):
        DistilXLSRModel.from_pretrained(folder)
    with caplog.at_level(logging.WARNING, logger="modeling_distilxlsr"):
        student = DistilXLSRModel.from_pretrained(folder, teacher_layers=[3])
    assert (
        "has no prediction heads" in caplog.text and "teacher layers [3] are NEW, randomly initialised" in caplog.text
    )
    assert student.config.teacher_layers == [3] and len(student.prediction_heads) == 1
    assert student.config.teacher_name_or_path is None  # not XLSR-53, which nobody said
    loaded = student.state_dict()
    assert backbone.keys() <= loaded.keys()
    for key, value in backbone.items():
        torch.testing.assert_close(loaded[key], value, atol=0, rtol=0)


def write_noise_audiofolder(root: Path) -> Path:
    """A tiny audiofolder of 1 s noise clips (train and validation), written without TTS."""
    generator = np.random.default_rng(0)
    for split, count in (("train", 2), ("validation", 2)):
        (root / split).mkdir(parents=True)
        rows = ["file_name"]
        for i in range(count):
            samples = (generator.standard_normal(16000) * 3000).astype(np.int16)
            with wave.open(str(root / split / f"{i}.wav"), "wb") as file:
                file.setnchannels(1), file.setsampwidth(2), file.setframerate(16000)
                file.writeframes(samples.tobytes())
            rows.append(f"{i}.wav")
        (root / split / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def test_continuing_from_a_plain_folder_takes_teacher_and_layers_from_the_user(tmp_path):
    student_dir, _ = plain_backbone_folder(tmp_path / "plain", "wav2vec2")
    teacher_dir = make_stand_in_teacher(tmp_path / "teacher", size="tiny")
    corpus = write_noise_audiofolder(tmp_path / "corpus")
    common = ["--student_name_or_path", str(student_dir), "--data_dir", str(corpus), "--report_to", "none"]
    for given, missing in (([], "--teacher_name_or_path and --teacher_layers"),
                           (["--teacher_layers", "3"], "--teacher_name_or_path"),
                           (["--teacher_name_or_path", str(teacher_dir)], "--teacher_layers")):  # fmt: skip
        with pytest.raises(LoadingError, match=f"plain Wav2Vec2Config folder .* with {missing}\\.$"):
            train_distill.main([*common, *given, "--output_dir", str(tmp_path / "refused")])

    output_dir = tmp_path / "out"
    train_distill.main([
        *common, "--teacher_name_or_path", str(teacher_dir), "--teacher_layers", "3", "--output_dir", str(output_dir),
        "--max_train_steps", "1", "--per_device_train_batch_size", "2", "--max_duration_in_seconds", "1",
        "--dataloader_num_workers", "0", "--eval_steps", "1000",
    ])  # fmt: skip
    config = json.loads((output_dir / "config.json").read_text())
    assert config["teacher_layers"] == [3] and config["teacher_name_or_path"] == str(teacher_dir)
    assert config["teacher_hidden_size"] == 32

    # That student is a DistilXLSR folder: continuing from it, its own record gives the teacher and the layers.
    common[1] = str(output_dir)
    results = train_distill.main([*common, "--output_dir", str(tmp_path / "again"), "--max_train_steps", "1",
                                  "--per_device_train_batch_size", "2", "--max_duration_in_seconds", "1",
                                  "--dataloader_num_workers", "0"])  # fmt: skip
    assert results["teacher"] == str(teacher_dir) and results["teacher_layers"] == [3]


# ---------------------------------------------------------------------------------------------------------------------
# Item 12: an uncached Hub id while offline is one line, not a traceback
# ---------------------------------------------------------------------------------------------------------------------
def offline_message(name: str, flag: str) -> str:
    return (
        f"{name} (given to {flag}) is neither a local folder nor in the local Hugging Face cache, and the Hub is "
        f"offline (HF_HUB_OFFLINE=1): pass a local folder to {flag}, or run once with the Hub reachable to download it."
    )


def test_the_default_teacher_offline_is_one_line_not_a_traceback(tmp_path):
    """`python train_distill.py` as a user starts it, without the Hub and with an empty cache."""
    hf_home = tmp_path / "empty-hf-home"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub")}
    command = [sys.executable, str(REPO_ROOT / "train_distill.py"), "--dataset_name", "someone/pt-speech",
               "--output_dir", str(tmp_path / "out")]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == "train_distill.py: error: " + offline_message(
        "facebook/wav2vec2-large-xlsr-53", "--teacher_name_or_path"
    )


def test_an_uncached_model_or_dataset_id_offline_names_the_flag(tmp_path):
    """finetune_ctc.py (in this process: the tests run offline) with an empty cache: the seed's Hub id, then a local
    student with a Hub dataset."""
    student = tmp_path / "student"
    DistilXLSRModel(tiny_student_config()).save_pretrained(student)
    common = [
        "--output_dir",
        str(tmp_path / "out"),
        "--cache_dir",
        str(tmp_path / "empty-cache"),
        "--report_to",
        "none",
    ]
    for model, name, flag in (("lgris/distilxlsr_bp_4-12", "lgris/distilxlsr_bp_4-12", "--model_name_or_path"),
                              (str(student), "someone/pt-speech", "--dataset_name")):  # fmt: skip
        with pytest.raises(LoadingError) as error:
            finetune_ctc.main(["--model_name_or_path", model, "--dataset_name", "someone/pt-speech", *common])
        assert str(error.value) == offline_message(name, flag)
