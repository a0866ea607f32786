"""Differential tests against s3prl 0.4.18's own distiller (DistilHuBERT) and convert_s3prl_checkpoint.py."""

import copy
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO_ROOT, run_fresh_python
from transformers import Wav2Vec2Model

import convert_s3prl_checkpoint
from distilxlsr_pt import s3prl as convert
from modeling_distilxlsr import DistilXLSRModel

TOLERANCE = 1e-4

# Tiny versions of the two s3prl students the project cares about (s3prl's DistillerConfig fields).
DISTILHUBERT_SHAPED = {  # s3prl/pretrain/distiller/config_model.yaml, with 4 predicted layers -> 3 and tiny widths
    "extractor_mode": "default",  # group-norm front end
    "extractor_conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
    "feature_grad_mult": 0.1,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "encoder_layers": 2,
    "encoder_embed_dim": 48,
    "encoder_ffn_embed_dim": 96,
    "encoder_attention_heads": 4,
    "layer_norm_first": False,  # post-LN encoder
    "final_dim": 40,
    "n_tasks": 3,
    "task_emb_type": "expand-last",
    "pred_layer_id": [4, 8, 12],
    "loss_type": "l1",
    "cosine_loss": 1.0,
}
XLSR_SHAPED = {
    **DISTILHUBERT_SHAPED,
    "extractor_mode": "layer_norm",  # layer-norm front end
    "layer_norm_first": True,  # pre-LN encoder with a final LayerNorm
    "out_layer_inter_dim": 24,
    "n_tasks": 2,
    "pred_layer_id": [4, 12],
}

FRESH_PROCESS = textwrap.dedent("""
    import sys
    import torch
    from transformers import AutoModel, Wav2Vec2FeatureExtractor
    model_dir, waves_file, out_file = sys.argv[1:]
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    results = {}
    for name, waves in torch.load(waves_file).items():
        inputs = extractor([w.numpy() for w in waves], sampling_rate=16000, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
        results[name] = {"hidden_states": out.hidden_states, "last_hidden_state": out.last_hidden_state,
                         "layer_predictions": out.layer_predictions}
    torch.save(results, out_file)
    print(type(model).__module__)
""")


def s3prl_checkpoint(path, distiller_config, seed=0):
    """A random-weight s3prl DistillerModel saved as s3prl's pre-training does (non-zero biases and norms too)."""
    model_module = pytest.importorskip("s3prl.upstream.distiller.model")
    torch.manual_seed(seed)
    model = model_module.DistillerModel(model_module.DistillerConfig(distiller_config))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    torch.save({"Config": {"distiller": distiller_config}, "Distiller": model.state_dict()}, path)
    return path


def s3prl_outputs(checkpoint, waves):
    """What s3prl's `distiller_local` upstream computes: [feat_final] + layer outputs + layer predictions."""
    expert_module = pytest.importorskip("s3prl.upstream.distiller.expert")
    expert = expert_module.UpstreamExpert(str(checkpoint)).eval()  # its default options leave it in train mode
    with torch.no_grad():
        states = expert(list(waves))
    model = expert.model.model
    layers = len(model.encoder.layers)
    last = states["hidden_states"][layers]  # the last layer's output, before a layer_norm_first final LayerNorm
    if model.config.layer_norm_first:
        last = model.encoder.layer_norm(last)
    return states["hidden_states"], last, states["pad_mask"].bool()


def run_cli(*args):
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "convert_s3prl_checkpoint.py"), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def reload_in_fresh_process(tmp_path, model_dir, waves):
    torch.save(waves, tmp_path / "waves.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    completed = run_fresh_python(
        FRESH_PROCESS, model_dir, tmp_path / "waves.pt", tmp_path / "out.pt", cwd=elsewhere,
        env={"HF_HOME": str(tmp_path / "hf_home")},
    )  # fmt: skip
    assert "transformers_modules" in completed.stdout  # the folder's remote code, not this checkout
    return torch.load(tmp_path / "out.pt")


def assert_close_on_frames(ours, theirs, frame_mask, what):
    error = (ours - theirs)[frame_mask].abs().max().item()
    assert error < TOLERANCE, f"{what}: max |ours - s3prl| = {error:.2e}"


@pytest.mark.parametrize("distiller_config", [DISTILHUBERT_SHAPED, XLSR_SHAPED], ids=["distilhubert", "xlsr"])
def test_converted_s3prl_checkpoint_computes_what_s3prl_computes(tmp_path, distiller_config):
    checkpoint = s3prl_checkpoint(tmp_path / "s3prl.ckpt", distiller_config)
    run_cli("--s3prl_checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "hf"))
    generator = torch.Generator().manual_seed(1)
    waves = {
        "equal": [torch.randn(8000, generator=generator), torch.randn(8000, generator=generator)],
        "padded": [torch.randn(8000, generator=generator), torch.randn(5200, generator=generator)],
    }
    ours = reload_in_fresh_process(tmp_path, tmp_path / "hf", waves)

    layers, heads = distiller_config["encoder_layers"], len(distiller_config["pred_layer_id"])
    for name, batch in waves.items():
        hidden_states, last, frame_mask = s3prl_outputs(checkpoint, batch)
        assert frame_mask.sum(1).tolist() == ([24, 24] if name == "equal" else [24, 16])
        for layer in range(1, layers + 1):  # each transformer layer's output
            assert_close_on_frames(
                ours[name]["hidden_states"][layer], hidden_states[layer], frame_mask, f"layer {layer}"
            )
        assert_close_on_frames(ours[name]["last_hidden_state"], last, frame_mask, "encoder output")
        assert len(ours[name]["layer_predictions"]) == heads
        for head in range(heads):
            prediction = hidden_states[layers + 1 + head]
            assert_close_on_frames(ours[name]["layer_predictions"][head], prediction, frame_mask, f"head {head}")

    card = (tmp_path / "hf" / "README.md").read_text()
    assert '"feature_grad_mult": 0.1' in card  # s3prl's training-only settings are recorded, not dropped
    saved = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert saved["do_normalize"] is False and saved["return_attention_mask"] is True  # s3prl: raw audio, masked


@pytest.mark.parametrize("distiller_config", [DISTILHUBERT_SHAPED, XLSR_SHAPED], ids=["distilhubert", "xlsr"])
def test_round_trip_hf_to_s3prl_to_hf_is_exact(tmp_path, distiller_config):
    original = s3prl_checkpoint(tmp_path / "s3prl.ckpt", distiller_config)
    convert_s3prl_checkpoint.main(["--s3prl_checkpoint", str(original), "--output_dir", str(tmp_path / "hf")])
    convert_s3prl_checkpoint.main(
        ["--model_name_or_path", str(tmp_path / "hf"), "--output_s3prl_checkpoint", str(tmp_path / "back.ckpt")]
    )
    convert_s3prl_checkpoint.main(
        ["--s3prl_checkpoint", str(tmp_path / "back.ckpt"), "--output_dir", str(tmp_path / "hf2")]
    )

    first, second = DistilXLSRModel.from_pretrained(tmp_path / "hf"), DistilXLSRModel.from_pretrained(tmp_path / "hf2")
    assert first.config.to_diff_dict() == second.config.to_diff_dict()
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for key in first_state:
        assert torch.equal(first_state[key], second_state[key]), key
    # The exported checkpoint holds s3prl's tensors exactly, and s3prl's own loader computes the same numbers.
    before, after = torch.load(original), torch.load(tmp_path / "back.ckpt")
    assert before["Distiller"].keys() == after["Distiller"].keys()
    for key, tensor in before["Distiller"].items():
        assert torch.equal(tensor, after["Distiller"][key]), key
    waves = [torch.randn(6400), torch.randn(4000)]
    for expected, got in zip(s3prl_outputs(original, waves)[0], s3prl_outputs(tmp_path / "back.ckpt", waves)[0]):
        assert torch.equal(expected, got)


@pytest.mark.parametrize(
    "field, value",
    [
        ("task_emb_type", "add"),
        ("out_layer_type", "none"),
        ("attention_type", "sparse"),
        ("extractor_mode", "other"),
        ("activation_fn", "relu_squared"),
        ("extractor_dropout", 0.1),
        ("encoder_layers", 0),
        ("n_tasks", 5),
        ("new_field", 1),
    ],
)
def test_unrepresentable_s3prl_fields_are_errors_that_name_them(field, value):
    with pytest.raises(ValueError, match=field):
        convert.config_from_s3prl({**XLSR_SHAPED, field: value})


def test_config_mapping_of_the_distilhubert_layout():
    config = convert.config_from_s3prl(DISTILHUBERT_SHAPED)
    assert config.feat_extract_norm == "group" and not config.do_stable_layer_norm
    assert config.conv_bias is False and config.feat_proj_layer_norm is False
    assert (
        config.conv_dim == [32] * 7
        and config.conv_kernel == [10, 3, 3, 3, 3, 2, 2]
        and config.conv_stride == [5] + [2] * 6
    )
    assert config.teacher_layers == [4, 8, 12] and config.teacher_hidden_size == 40
    assert config.prediction_head_inter_dim == 48  # out_layer_inter_dim -1: the encoder width
    assert convert.config_to_s3prl(config)["extractor_conv_feature_layers"] == repr(
        [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
    )
    with pytest.raises(ValueError, match="extractor_conv_feature_layers"):
        convert.parse_conv_layers("[(32,10,5)] + __import__('os').getcwd()")


def test_students_s3prl_cannot_represent_are_refused_on_export(tiny_teacher_config, tmp_path):
    student = DistilXLSRModel.from_teacher(Wav2Vec2Model(tiny_teacher_config))  # conv biases, feature LayerNorm
    student.save_pretrained(tmp_path / "student")
    exported = tmp_path / "student.ckpt"
    with pytest.raises(ValueError, match="conv_bias.*hf_wav2vec2_custom"):
        convert_s3prl_checkpoint.main(
            ["--model_name_or_path", str(tmp_path / "student"), "--output_s3prl_checkpoint", str(exported)]
        )
    assert not exported.exists()
    config = copy.deepcopy(student.config)
    config.conv_bias = False
    with pytest.raises(ValueError, match="feat_proj_layer_norm"):
        convert.config_to_s3prl(config)
    config.feat_proj_layer_norm, config.student_layers = False, [1, 2]  # layer-to-layer heads: not s3prl's layout
    with pytest.raises(ValueError, match="`student_layers` is \\[1, 2\\].*predicts every teacher layer from its last"):
        convert.config_to_s3prl(config)


def test_prediction_heads_start_as_s3prl_heads_do(tiny_teacher_config):
    """PyTorch's Linear default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases (s3prl's `output_layer`
    and `SplitLinear`), not wav2vec2's N(0, 0.02) weights and zero biases."""
    torch.manual_seed(0)
    student = DistilXLSRModel.from_teacher(Wav2Vec2Model(tiny_teacher_config), prediction_head_inter_dim=96)
    for head in student.prediction_heads:
        for linear in (head.dense, head.output):
            bound = linear.in_features**-0.5
            for tensor in (linear.weight, linear.bias):
                assert tensor.abs().max() <= bound
                assert tensor.abs().max() > 0.8 * bound  # spread over the whole interval
            assert linear.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)


@pytest.mark.parametrize("stable_layer_norm", [True, False], ids=["xlsr_pre_ln", "post_ln"])
def test_teachers_last_layer_is_distilled_after_its_final_layer_norm(tiny_teacher_config, audio, stable_layer_norm):
    """s3prl (and transformers 4) hand out a stable-layer-norm teacher's last layer after the encoder's final
    LayerNorm; transformers 5's `hidden_states` hold it before. The targets follow s3prl."""
    from distilxlsr_pt.distillation import Teacher

    tiny_teacher_config.do_stable_layer_norm = stable_layer_norm
    torch.manual_seed(0)
    model = Wav2Vec2Model(tiny_teacher_config).eval()
    with torch.no_grad():
        model.encoder.layer_norm.weight.uniform_(0.5, 1.5)
        outputs = model(audio[2], attention_mask=audio[3], output_hidden_states=True)
    depth = tiny_teacher_config.num_hidden_layers
    targets = Teacher(model, [4, depth])(audio[2], attention_mask=audio[3])
    close = dict(atol=2e-5, rtol=1e-4)  # channels-last front end: rounding
    torch.testing.assert_close(targets[0], outputs.hidden_states[4], **close)
    torch.testing.assert_close(targets[1], outputs.last_hidden_state, **close)
    if stable_layer_norm:  # what transformers 5 calls the last hidden state is not what it returns after the norm
        assert not torch.allclose(outputs.hidden_states[depth], outputs.last_hidden_state, atol=0.1)


def test_optimiser_defaults_are_s3prls(tiny_teacher):
    """s3prl's distiller pre-training: gradient clipping 5.0 (config_runner.yaml), AdamW weight decay 0.01 on all but
    biases (and, in intent, norms: s3prl/optimizers.py)."""
    from distilxlsr_pt.distillation import parameter_groups
    from train_distill import parse_args

    args = parse_args(["--teacher_name_or_path", "t", "--dataset_name", "d", "--output_dir", "o"])
    assert args.max_grad_norm == 5.0 and args.weight_decay == 0.01
    student = DistilXLSRModel.from_teacher(tiny_teacher, num_hidden_layers=2, teacher_layers=(4, 12))
    student.freeze_feature_encoder()
    decay, no_decay = parameter_groups(student, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in student.named_parameters()}
    decayed, exempt = {names[id(p)] for p in decay["params"]}, {names[id(p)] for p in no_decay["params"]}
    trained = {n for n, p in student.named_parameters() if p.requires_grad}
    assert decayed | exempt == trained and not decayed & exempt  # frozen front end: in neither group
    assert all(not n.endswith("bias") and "layer_norm" not in n for n in decayed)
    assert {"encoder.layers.0.attention.q_proj.weight", "prediction_heads.0.dense.weight"} <= decayed
    assert {
        "encoder.layer_norm.weight",
        "encoder.layers.1.final_layer_norm.weight",
        "feature_projection.layer_norm.weight",
    } <= exempt
