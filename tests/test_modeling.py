"""DistilXLSRConfig / DistilXLSRModel / DistilXLSRForCTC: teacher init, outputs, export and remote-code loading."""

import copy
import inspect
import json
import textwrap
import typing

import pytest
import torch
from conftest import last_json, run_fresh_python
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCTC,
    HubertConfig,
    HubertModel,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs

from configuration_distilxlsr import MAX_HIDDEN_LAYERS, DistilXLSRConfig, check_architecture
from distilxlsr_pt.stand_ins import stand_in_teacher_config
from modeling_distilxlsr import DistilXLSRFeatureEncoder, DistilXLSRForCTC, DistilXLSRModel

# The student's channels-last front end computes transformers' convolutions in another order: equal up to rounding.
CHANNELS_LAST_TOLERANCE = dict(atol=2e-5, rtol=1e-4)


@pytest.fixture(autouse=True)
def no_grad():
    """These tests compare outputs; the one that needs gradients turns them on locally."""
    with torch.no_grad():
        yield


# A deep-narrow, layer-to-layer student with a narrow front end (issue 19's shapes), beside the default one: the model
# tests run on both.
SLIM_SHAPE = dict(num_hidden_layers=3, hidden_size=16, conv_dim=8, student_layers=[1, 3])
SHAPES = pytest.mark.parametrize("shape", [{}, SLIM_SHAPE], ids=["default", "slim"])


def tiny_student(teacher_config, **overrides):
    torch.manual_seed(1)
    config = DistilXLSRConfig.from_teacher_config(teacher_config, teacher_layers=(4, 12), **overrides)
    return DistilXLSRModel(config).eval()


def test_default_config_is_the_xlsr53_student():
    config = DistilXLSRConfig()
    assert config.model_type == "distilxlsr"
    assert config.teacher_layers == [4, 12]
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1024, 2, 16)
    assert config.teacher_hidden_size == 1024 and config.prediction_head_inter_dim == 1024
    assert config.teacher_name_or_path == "facebook/wav2vec2-large-xlsr-53"
    assert config.do_stable_layer_norm and config.feat_extract_norm == "layer" and config.conv_bias


def test_from_teacher_config_mirrors_the_teacher(tiny_teacher_config):
    config = DistilXLSRConfig.from_teacher_config(tiny_teacher_config, num_hidden_layers=3, teacher_layers=(2, 6, 12))
    for field in ("hidden_size", "intermediate_size", "num_attention_heads", "conv_dim", "conv_kernel", "conv_stride"):
        assert list(getattr(config, field)) if isinstance(getattr(config, field), (list, tuple)) else True
        assert getattr(config, field) == getattr(tiny_teacher_config, field)
    assert config.num_hidden_layers == 3 and config.teacher_layers == [2, 6, 12]
    assert config.teacher_hidden_size == tiny_teacher_config.hidden_size


@pytest.mark.parametrize("bad_layers", [(0, 12), (4, 13)])
def test_from_teacher_config_rejects_layers_outside_the_teacher(tiny_teacher_config, bad_layers):
    with pytest.raises(ValueError, match="teacher_layers"):
        DistilXLSRConfig.from_teacher_config(tiny_teacher_config, teacher_layers=bad_layers)


def test_config_round_trips_through_json(tmp_path, tiny_teacher_config):
    config = DistilXLSRConfig.from_teacher_config(tiny_teacher_config, teacher_layers=(3, 9), vocab_size=40)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, DistilXLSRConfig)
    assert loaded.teacher_layers == [3, 9] and loaded.vocab_size == 40 and loaded.hidden_size == config.hidden_size


# Each bad field on a tiny student config, and the start of the error naming it. Unchecked, each one failed while the
# model was built: ZeroDivisionError, "negative dimension", "in_channels must be divisible by groups", or (100000
# layers) minutes and gigabytes of allocation.
BAD_FIELDS = [
    ({"num_attention_heads": 0}, "num_attention_heads is 0: it must be a positive integer"),
    ({"num_attention_heads": 5}, r"num_attention_heads is 5: it must divide hidden_size \(32\)"),
    ({"hidden_size": -768}, "hidden_size is -768: it must be a positive integer"),
    ({"intermediate_size": -64}, "intermediate_size is -64"),
    ({"num_conv_pos_embedding_groups": 3}, r"num_conv_pos_embedding_groups is 3: it must divide hidden_size \(32\)"),
    ({"num_hidden_layers": 100000}, f"num_hidden_layers is 100000: at most {MAX_HIDDEN_LAYERS} layers"),
    ({"conv_kernel": [10, 3, 3]}, "conv_dim, conv_kernel and conv_stride need one entry per conv layer each"),
    ({"conv_stride": [5, 2, 2, 2, 2, 2, 0]}, "conv_stride is .*: every entry must be a positive integer"),
    ({"layerdrop": 1.5}, r"layerdrop is 1.5: it must be in \[0, 1\]"),
]


def tiny_student_fields(teacher_config) -> dict:
    return DistilXLSRConfig.from_teacher_config(teacher_config, teacher_layers=(4, 12)).to_dict()


@pytest.mark.parametrize("bad, message", BAD_FIELDS)
def test_a_bad_config_field_is_a_value_error_naming_it(tiny_teacher_config, bad, message):
    with pytest.raises(ValueError, match=message):
        DistilXLSRConfig.from_dict({**tiny_student_fields(tiny_teacher_config), **bad})
    # transformers' own configs get the same check, for the scripts' teachers and plain CTC models
    for name, value in bad.items():
        setattr(tiny_teacher_config, name, value)
    with pytest.raises(ValueError, match=message):
        check_architecture(tiny_teacher_config)


@pytest.mark.parametrize("bad, message", BAD_FIELDS)
def test_a_saved_model_with_a_bad_config_field_fails_to_load_naming_it(tmp_path, tiny_teacher_config, bad, message):
    tiny_student(tiny_teacher_config).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **bad}))
    with pytest.raises(ValueError, match=message):
        AutoModel.from_pretrained(tmp_path)


def test_a_config_edited_after_construction_is_checked_before_the_model_is_built(tiny_teacher_config):
    config = DistilXLSRConfig.from_dict(tiny_student_fields(tiny_teacher_config))
    config.num_hidden_layers = 100000
    with pytest.raises(ValueError, match="num_hidden_layers is 100000"):
        DistilXLSRModel(config)
    with pytest.raises(StrictDataclassClassValidationError, match="num_hidden_layers is 100000"):
        config.validate()  # transformers' validation, which save_pretrained runs


@SHAPES
def test_layer_predictions_have_the_teacher_width(tiny_teacher_config, audio, shape):
    student = tiny_student(tiny_teacher_config, **shape)
    out = student(audio[2], attention_mask=audio[3])
    frames = student._get_feat_extract_output_lengths(16000)
    assert len(out.layer_predictions) == 2
    for prediction in out.layer_predictions:
        assert prediction.shape == (2, frames, tiny_teacher_config.hidden_size)
    assert out.last_hidden_state.shape == (2, frames, student.config.hidden_size)
    assert out.hidden_states is None
    assert student(audio[2], return_layer_predictions=False).layer_predictions is None


@SHAPES
def test_sdpa_is_the_default_attention_and_matches_eager(tiny_teacher_config, audio, shape):
    student = tiny_student(tiny_teacher_config, **shape)
    assert student.config._attn_implementation == "sdpa"
    sdpa = student(audio[2], attention_mask=audio[3]).last_hidden_state
    student.set_attn_implementation("eager")
    eager = student(audio[2], attention_mask=audio[3]).last_hidden_state
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1e-5)


def can_output_attentions(model_class) -> bool:
    """transformers' own model tests' check (`_test_eager_matches_sdpa_inference`): a forward without an
    `output_attentions` argument whose `**kwargs` annotation does not declare it at run time counts as unable to output
    attentions, and the eager-vs-SDPA comparison with `output_attentions=True` is skipped."""
    parameters = inspect.signature(model_class.forward).parameters
    if "output_attentions" in parameters:
        return True
    try:
        return "output_attentions" in parameters["kwargs"].annotation.__args__[0].__annotations__
    except (AttributeError, KeyError):
        return False


@SHAPES
@pytest.mark.parametrize("model_class", [DistilXLSRModel, DistilXLSRForCTC])
def test_forward_declares_transformers_kwargs_and_eager_attentions_match_sdpa(
    tiny_teacher_config, audio, model_class, shape
):
    assert typing.get_type_hints(model_class.forward)["kwargs"] == Unpack[TransformersKwargs]
    assert can_output_attentions(model_class)
    # What transformers' test then runs: eager (with its attention maps) and SDPA agree on a padded batch.
    config = DistilXLSRConfig.from_teacher_config(tiny_teacher_config, teacher_layers=(4, 12), vocab_size=9, **shape)
    torch.manual_seed(0)
    sdpa = model_class(config).eval()
    eager = copy.deepcopy(sdpa)
    eager.set_attn_implementation("eager")
    inputs = dict(attention_mask=audio[3], output_attentions=True, output_hidden_states=True)
    want, got = eager(audio[2], **inputs), sdpa(audio[2], **inputs)
    assert len(want.attentions) == config.num_hidden_layers
    assert want.attentions[0].shape[:2] == (2, config.num_attention_heads)
    frames = sdpa._get_feature_vector_attention_mask(want.hidden_states[-1].shape[1], audio[3]).bool()
    torch.testing.assert_close(got.hidden_states[-1][frames], want.hidden_states[-1][frames], atol=1e-5, rtol=1e-4)


@SHAPES
def test_padded_batch_equals_utterances_alone(tiny_teacher_config, audio, shape):
    long, short, batch, mask = audio
    student = tiny_student(tiny_teacher_config, **shape)
    batched = student(batch, attention_mask=mask, output_hidden_states=True)
    for row, utterance in enumerate((long, short)):
        alone = student(utterance[None], output_hidden_states=True)
        frames = alone.last_hidden_state.shape[1]
        torch.testing.assert_close(
            batched.last_hidden_state[row, :frames], alone.last_hidden_state[0], atol=1e-5, rtol=0
        )
        for got, want in zip(batched.layer_predictions, alone.layer_predictions):
            torch.testing.assert_close(got[row, :frames], want[0], atol=1e-5, rtol=0)
        for got, want in zip(batched.hidden_states, alone.hidden_states):
            torch.testing.assert_close(got[row, :frames], want[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("wrapper", ["model", "pretraining", "ctc"])
def test_from_teacher_copies_front_end_and_first_layers(tiny_teacher_config, audio, wrapper):
    torch.manual_seed(0)
    teacher = {"model": Wav2Vec2Model, "pretraining": Wav2Vec2ForPreTraining, "ctc": Wav2Vec2ForCTC}[wrapper]
    teacher = teacher(tiny_teacher_config).eval()
    student = DistilXLSRModel.from_teacher(teacher, num_hidden_layers=2, teacher_layers=(4, 12)).eval()
    base = teacher.base_model
    want = base(audio[2], attention_mask=audio[3], output_hidden_states=True).hidden_states
    got = student(audio[2], attention_mask=audio[3], output_hidden_states=True).hidden_states
    assert len(got) == 3
    for index in range(3):
        torch.testing.assert_close(got[index], want[index], **CHANNELS_LAST_TOLERANCE)
    # The copies are copies, not shared tensors: training the student leaves the teacher alone.
    assert student.encoder.layers[0].attention.q_proj.weight.data_ptr() != (
        base.encoder.layers[0].attention.q_proj.weight.data_ptr()
    )


def test_from_teacher_works_for_hubert(audio):
    torch.manual_seed(0)
    config = HubertConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, conv_dim=[16] * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )  # fmt: skip
    teacher = HubertModel(config).eval()
    student = DistilXLSRModel.from_teacher(teacher, num_hidden_layers=2, teacher_layers=(2, 4)).eval()
    want = teacher(audio[0][None], output_hidden_states=True).hidden_states
    got = student(audio[0][None], output_hidden_states=True).hidden_states
    for index in range(3):
        torch.testing.assert_close(got[index], want[index], atol=0, rtol=0)


def test_from_teacher_copies_only_the_parts_that_fit_a_student_of_another_shape(tiny_teacher, tiny_teacher_config):
    teacher_state = tiny_teacher.state_dict()

    def copied(student) -> set[str]:  # (LayerNorms start at ones and zeros in both: equal without a copy)
        return {
            name
            for name, value in student.state_dict().items()
            if "layer_norm" not in name
            and name in teacher_state
            and value.shape == teacher_state[name].shape
            and torch.equal(value, teacher_state[name])
        }

    narrow_front_end = DistilXLSRModel.from_teacher(tiny_teacher, conv_dim=8)
    assert not any(name.startswith("feature_") for name in copied(narrow_front_end))
    layer_1 = {f"encoder.layers.1.{name}" for name, _ in tiny_teacher.encoder.layers[1].named_parameters()}
    assert {name for name in layer_1 if "layer_norm" not in name} <= copied(narrow_front_end)
    thin = DistilXLSRModel.from_teacher(tiny_teacher, num_hidden_layers=6, hidden_size=16)
    assert (thin.config.intermediate_size, thin.config.num_attention_heads) == (32, 1)  # the teacher's ratio and head
    assert {name.split(".")[0] for name in copied(thin)} == {"feature_extractor"}  # the rest is random
    assert thin.prediction_heads[0].output.out_features == tiny_teacher_config.hidden_size
    # Frames must align with the teacher's: other kernels or strides are refused.
    other_strides = dict(conv_stride=[5, 2, 2, 2, 2, 2, 4])
    with pytest.raises(ValueError, match="conv_stride is .* so that its frames align with the teacher's"):
        DistilXLSRModel.from_teacher(tiny_teacher, **other_strides)
    config = DistilXLSRConfig(**{**tiny_teacher_config.to_dict(), **other_strides, "model_type": "distilxlsr"})
    with pytest.raises(ValueError, match="`conv_stride` is .* so their frames would not align"):
        DistilXLSRModel.from_teacher(tiny_teacher, config)
    # A student of the teacher's width cannot be deeper than the teacher (its layers are the teacher's); a thin one can.
    with pytest.raises(ValueError, match="exceeds the teacher's 12 layers"):
        DistilXLSRConfig.from_teacher_config(tiny_teacher_config, num_hidden_layers=13)
    assert DistilXLSRConfig.from_teacher_config(tiny_teacher_config, num_hidden_layers=13, hidden_size=16)


def test_layer_to_layer_heads_read_their_own_layer(tiny_teacher_config, audio):
    student = tiny_student(tiny_teacher_config, **SLIM_SHAPE)
    out = student(audio[2], attention_mask=audio[3], output_hidden_states=True)
    # Head 1 reads layer 1's output; head 2 reads the last layer, after the final LayerNorm (last_hidden_state).
    torch.testing.assert_close(out.layer_predictions[0], student.prediction_heads[0](out.hidden_states[1]))
    torch.testing.assert_close(out.layer_predictions[1], student.prediction_heads[1](out.last_hidden_state))
    assert not torch.allclose(out.hidden_states[3], out.last_hidden_state)  # so the two readings differ
    # The default student puts both heads on its last layer, as before.
    default = tiny_student(tiny_teacher_config)
    out = default(audio[2], attention_mask=audio[3])
    for head, prediction in zip(default.prediction_heads, out.layer_predictions):
        torch.testing.assert_close(prediction, head(out.last_hidden_state))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(student_layers=[1]), "one student layer per teacher layer"),
        (
            dict(student_layers=[1, 4]),
            r"student_layers \[1, 4\]: layer\(s\) \[4\] do not exist: the student has only 3",
        ),
        (dict(student_layers=[0, 3]), "numbered from 1"),
    ],
)
def test_bad_student_layers_name_the_field(tiny_teacher_config, fields, message):
    with pytest.raises(ValueError, match=message):
        DistilXLSRConfig.from_teacher_config(tiny_teacher_config, num_hidden_layers=3, **fields)
    with pytest.raises(ValueError, match="layerdrop is 0.1: with student_layers"):
        DistilXLSRModel(DistilXLSRConfig.from_teacher_config(tiny_teacher_config, **SLIM_SHAPE, layerdrop=0.1))


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_channels_last_front_end_matches_transformers(tiny_teacher_config, norm):
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2FeatureEncoder

    config = stand_in_teacher_config("tiny", feat_extract_norm=norm, conv_bias=norm == "layer")
    torch.manual_seed(0)
    reference = Wav2Vec2FeatureEncoder(config)
    ours = DistilXLSRFeatureEncoder(config)
    ours.load_state_dict(reference.state_dict())
    assert ours.channels_last == (norm == "layer")
    audio = torch.randn(3, 8000)
    with torch.enable_grad():
        want, got = reference(audio), ours(audio)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, **CHANNELS_LAST_TOLERANCE)
        torch.autograd.backward(want.square().mean())
        torch.autograd.backward(got.square().mean())
    want_grads, got_grads = [p.grad for p in reference.parameters()], [p.grad for p in ours.parameters()]
    assert len(got_grads) == len(want_grads) == len(list(reference.state_dict()))
    for got_grad, want_grad in zip(got_grads, want_grads):
        torch.testing.assert_close(got_grad, want_grad, atol=1e-5, rtol=1e-3)


@SHAPES
def test_to_wav2vec2_reproduces_the_student(tiny_teacher_config, audio, shape):
    student = tiny_student(tiny_teacher_config, **shape)
    wav2vec2 = student.to_wav2vec2()
    assert type(wav2vec2) is Wav2Vec2Model
    want = student(audio[2], attention_mask=audio[3], output_hidden_states=True)
    got = wav2vec2(audio[2], attention_mask=audio[3], output_hidden_states=True)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, **CHANNELS_LAST_TOLERANCE)
    for got_state, want_state in zip(got.hidden_states, want.hidden_states):
        torch.testing.assert_close(got_state, want_state, **CHANNELS_LAST_TOLERANCE)


def test_ctc_loss_uses_pad_as_blank_and_ignores_minus_100(tiny_teacher_config, audio):
    torch.manual_seed(0)
    config = DistilXLSRConfig.from_teacher_config(tiny_teacher_config, vocab_size=12, pad_token_id=0)
    model = DistilXLSRForCTC(config).eval()
    labels = torch.tensor([[3, 4, 5, 6], [7, 8, -100, -100]])
    out = model(audio[2], attention_mask=audio[3], labels=labels)
    # Reference: torch's CTC loss with blank 0 on the same logits, lengths from the attention mask.
    log_probs = out.logits.log_softmax(-1).transpose(0, 1)
    lengths = model._get_feat_extract_output_lengths(audio[3].sum(-1))
    reference = torch.nn.functional.ctc_loss(
        log_probs, torch.tensor([3, 4, 5, 6, 7, 8]), lengths, torch.tensor([4, 2]), blank=0, reduction="mean"
    )
    torch.testing.assert_close(out.loss, reference)
    assert out.logits.shape[-1] == 12
    # Exported to transformers' Wav2Vec2ForCTC, logits and loss are the same.
    exported = model.to_wav2vec2()
    assert type(exported) is Wav2Vec2ForCTC
    exported_out = exported(audio[2], attention_mask=audio[3], labels=labels)
    torch.testing.assert_close(exported_out.logits, out.logits, **CHANNELS_LAST_TOLERANCE)
    torch.testing.assert_close(exported_out.loss, out.loss)
    # And back: the same weights and CTC settings in this class again.
    back = DistilXLSRForCTC.from_wav2vec2(exported)
    assert type(back) is DistilXLSRForCTC and back.config.vocab_size == 12 and back.config.pad_token_id == 0
    assert back.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())


def test_freeze_feature_encoder_and_gradient_checkpointing(tiny_teacher_config, audio):
    torch.manual_seed(0)
    no_randomness = dict(
        layerdrop=0.0, mask_time_prob=0.0, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        feat_proj_dropout=0.0, final_dropout=0.0,
    )  # fmt: skip
    config = DistilXLSRConfig.from_teacher_config(tiny_teacher_config, vocab_size=12, **no_randomness)
    model = DistilXLSRForCTC(config).train()
    model.freeze_feature_encoder()
    assert not any(p.requires_grad for p in model.distilxlsr.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.distilxlsr.encoder.parameters())
    labels = torch.tensor([[3, 4, 5], [6, 7, -100]])

    def gradients():
        model.zero_grad()
        with torch.enable_grad():
            model(audio[2], attention_mask=audio[3], labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.activation_checkpointing_enable()
    checkpointed = gradients()
    assert model.distilxlsr.encoder.layers[0].gradient_checkpointing
    assert plain.keys() == checkpointed.keys() and "distilxlsr.encoder.layers.0.attention.q_proj.weight" in plain
    assert not any(name.startswith("distilxlsr.feature_extractor") for name in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4)


def test_ctc_model_loads_a_distilled_student_without_its_heads(tmp_path, tiny_teacher_config, audio):
    student = tiny_student(tiny_teacher_config)
    student.save_pretrained(tmp_path)
    ctc = AutoModelForCTC.from_pretrained(tmp_path, vocab_size=10).eval()
    assert isinstance(ctc, DistilXLSRForCTC) and ctc.distilxlsr.prediction_heads is None
    want = student(audio[2], attention_mask=audio[3]).last_hidden_state
    got = ctc.distilxlsr(audio[2], attention_mask=audio[3]).last_hidden_state
    torch.testing.assert_close(got, want, atol=0, rtol=0)


FRESH_PROCESS_CHECK = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoConfig, AutoModel, AutoModelForCTC
    assert not any("modeling_distilxlsr" in m for m in sys.modules)
    model_dir, ctc_dir, plain_dir, inputs_path = sys.argv[1:5]
    inputs = torch.load(inputs_path)
    result = {}
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    result["config_class"] = type(config).__name__
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    ctc = AutoModelForCTC.from_pretrained(ctc_dir, trust_remote_code=True).eval()
    plain = AutoModel.from_pretrained(plain_dir).eval()
    plain_ctc = AutoModelForCTC.from_pretrained(plain_dir + "-ctc").eval()
    with torch.no_grad():
        out = model(inputs["x"], attention_mask=inputs["mask"])
        result["model_class"] = type(model).__name__
        result["hidden_diff"] = (out.last_hidden_state - inputs["hidden"]).abs().max().item()
        result["prediction_diff"] = max(
            (p - w).abs().max().item() for p, w in zip(out.layer_predictions, inputs["predictions"])
        )
        result["ctc_class"] = type(ctc).__name__
        result["logits_diff"] = (ctc(inputs["x"], attention_mask=inputs["mask"]).logits - inputs["logits"]).abs().max().item()
        result["plain_class"] = type(plain).__name__
        result["plain_diff"] = (plain(inputs["x"], attention_mask=inputs["mask"]).last_hidden_state - inputs["hidden"]).abs().max().item()
        result["plain_ctc_class"] = type(plain_ctc).__name__
        result["plain_ctc_diff"] = (plain_ctc(inputs["x"], attention_mask=inputs["mask"]).logits - inputs["logits"]).abs().max().item()
        result["module_file"] = sys.modules[type(model).__module__].__file__
    print(json.dumps(result))
    """
)


def save_and_reload_in_fresh_process(tmp_path, student, ctc, x, mask):
    model_dir, ctc_dir, plain_dir = tmp_path / "student", tmp_path / "ctc", tmp_path / "plain"
    student.save_pretrained(model_dir)
    ctc.save_pretrained(ctc_dir)
    student.to_wav2vec2().save_pretrained(plain_dir)
    ctc.to_wav2vec2().save_pretrained(f"{plain_dir}-ctc")
    with torch.no_grad():
        out = student(x, attention_mask=mask)
        logits = ctc(x, attention_mask=mask).logits
    inputs = dict(x=x, mask=mask, hidden=out.last_hidden_state, predictions=out.layer_predictions, logits=logits)
    torch.save(inputs, tmp_path / "inputs.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    completed = run_fresh_python(
        FRESH_PROCESS_CHECK, model_dir, ctc_dir, plain_dir, tmp_path / "inputs.pt", cwd=elsewhere,
        env={"HF_HOME": str(tmp_path / "hf_home")},
    )  # fmt: skip
    return model_dir, last_json(completed)


@SHAPES
def test_save_pretrained_writes_remote_code_that_loads_in_a_fresh_process(tmp_path, tiny_teacher_config, audio, shape):
    student = tiny_student(tiny_teacher_config, **shape)
    torch.manual_seed(2)
    ctc = DistilXLSRForCTC(DistilXLSRConfig.from_teacher_config(tiny_teacher_config, vocab_size=9, **shape)).eval()
    model_dir, result = save_and_reload_in_fresh_process(tmp_path, student, ctc, audio[2], audio[3])

    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "modeling_distilxlsr.py").is_file() and (model_dir / "configuration_distilxlsr.py").is_file()
    saved_config = json.loads((model_dir / "config.json").read_text())
    assert saved_config["auto_map"] == {
        "AutoConfig": "configuration_distilxlsr.DistilXLSRConfig",
        "AutoModel": "modeling_distilxlsr.DistilXLSRModel",
    }
    assert result["config_class"] == "DistilXLSRConfig"
    assert result["model_class"] == "DistilXLSRModel" and result["ctc_class"] == "DistilXLSRForCTC"
    assert result["plain_class"] == "Wav2Vec2Model"
    assert "transformers_modules" in result["module_file"]  # loaded from the copied remote code, not this checkout
    assert result["hidden_diff"] == 0 and result["prediction_diff"] == 0 and result["logits_diff"] == 0
    assert result["plain_ctc_class"] == "Wav2Vec2ForCTC" and result["plain_ctc_diff"] < 1e-4
    assert result["plain_diff"] < 1e-4  # transformers' channels-first front end vs ours


def test_xlsr53_sized_student_saves_and_reloads_through_remote_code(tmp_path):
    """The real default student: XLSR-53's architecture (random weights, a stand-in), 2 layers, heads for 4 and 12."""
    config = DistilXLSRConfig.from_teacher_config(stand_in_teacher_config("xlsr53"), teacher_layers=(4, 12))
    torch.manual_seed(0)
    student = DistilXLSRModel(config).eval()
    parameters = sum(p.numel() for p in student.parameters())
    backbone = sum(p.numel() for n, p in student.named_parameters() if not n.startswith("prediction_heads"))
    print(f"XLSR-53-architecture student: {parameters:,} parameters ({backbone:,} without prediction heads)")
    assert 40_000_000 < parameters < 45_000_000
    ctc = DistilXLSRForCTC(DistilXLSRConfig.from_teacher_config(stand_in_teacher_config("xlsr53"), vocab_size=40))
    x = torch.randn(1, 16000)
    _, result = save_and_reload_in_fresh_process(tmp_path, student, ctc.eval(), x, torch.ones_like(x, dtype=torch.long))
    assert result["model_class"] == "DistilXLSRModel"
    assert result["hidden_diff"] == 0 and result["prediction_diff"] == 0 and result["logits_diff"] == 0


def test_bench_shapes_rows_size_count_and_time_each_shape_against_the_teacher(
    tmp_path, tiny_teacher_config, monkeypatch, capsys
):
    """`bench.py --only shapes` (issue 19, item 5) on a tiny teacher: sizes of the models it builds, fewer FLOPs than
    the teacher, a speed-up per backend over the teacher's fp32 time, and the JSON file; `--shapes` picks rows."""
    import bench
    from transformers import Wav2Vec2Model

    shapes = {
        "default": dict(num_hidden_layers=2, teacher_layers=(4, 12)),
        "deep-narrow-conv8": dict(
            num_hidden_layers=4,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            conv_dim=[8] * 7,
            teacher_layers=(6, 12),
        ),  # fmt: skip
        "not-asked-for": dict(num_hidden_layers=1, teacher_layers=(12,)),
    }
    monkeypatch.setattr(bench, "XLSR_SCALE_SHAPES", shapes)
    monkeypatch.setattr(bench, "stand_in_teacher_config", lambda size: tiny_teacher_config)
    args = ["--only", "shapes", "--shapes", "default,deep-narrow-conv8", "--repeats", "1", "--output_dir", tmp_path]
    results = bench.main([str(arg) for arg in args])

    assert json.loads(json.dumps(results)) == json.loads((tmp_path / "bench_shapes_results.json").read_text())
    assert results["teacher"]["parameters"] == sum(p.numel() for p in Wav2Vec2Model(tiny_teacher_config).parameters())
    assert list(results["students"]) == ["default", "deep-narrow-conv8"]
    for name, row in results["students"].items():
        config = DistilXLSRConfig.from_teacher_config(tiny_teacher_config, **shapes[name])
        assert row["parameters"] == sum(
            p.numel() for p in DistilXLSRModel(config, add_prediction_heads=False).parameters()
        )
        assert row["parameters_with_prediction_heads"] == sum(p.numel() for p in DistilXLSRModel(config).parameters())
        assert 0 < row["gflop"] < results["teacher"]["gflop"]
        speedups = row["speedup_vs_teacher_fp32"]
        assert set(speedups) == {"fp32", "bf16", "onnx_fp32", "onnx_int8"} and all(v > 0 for v in speedups.values())
        assert speedups["fp32"] == pytest.approx(results["teacher"]["s"]["fp32"] / row["s"]["fp32"])
    assert results["students"]["deep-narrow-conv8"]["gflop"] < results["students"]["default"]["gflop"]
    table = capsys.readouterr().out
    assert "| XLSR-53 (teacher) |" in table and "| deep-narrow-conv8 |" in table and "not-asked-for" not in table

    assert list(bench.weights_cast_fns(torch.nn.Identity(), torch.zeros(1), with_bf16=False)) == ["fp32"]  # --skip_bf16
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "shapes", "--shapes", "default,slimmest"])
    assert "--shapes: unknown shape(s) ['slimmest']" in capsys.readouterr().err
