"""Cheap inference: ONNX export (fp32 and int8) compared with PyTorch in a fresh process, the bf16 path, the
pipeline-like recogniser, and the front end's device dispatch (channels-last on CPU, transformers' Conv1d elsewhere)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import last_json, run_fresh_python
from transformers import (
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)

from configuration_distilxlsr import DistilXLSRConfig
from distilxlsr_pt.stand_ins import stand_in_teacher_config
from modeling_distilxlsr import DistilXLSRFeatureEncoder, DistilXLSRForCTC

REPO_ROOT = Path(__file__).resolve().parent.parent
VOCAB = {"[PAD]": 0, "[UNK]": 1, "|": 2, "a": 3, "b": 4, "c": 5, "d": 6, "e": 7}

pytest.importorskip("onnxruntime")


def save_tiny_ctc_model(path: Path, model) -> Path:
    """`model` and a character processor, saved like finetune_ctc.py's output folder."""
    model.save_pretrained(path)
    (path / "vocab.json").write_text(json.dumps(VOCAB), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(path / "vocab.json"), bos_token=None, eos_token=None)
    feature_extractor = Wav2Vec2FeatureExtractor(
        return_attention_mask=model.config.feat_extract_norm == "layer", do_normalize=True
    )
    Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(path)
    return path


def tiny_student_ctc() -> DistilXLSRForCTC:
    """A tiny XLSR-shaped DistilXLSR CTC model (layer-norm front end, stable layer norm), random weights."""
    torch.manual_seed(0)
    config = DistilXLSRConfig.from_teacher_config(
        stand_in_teacher_config("tiny"), num_hidden_layers=2, teacher_layers=(4, 12), vocab_size=len(VOCAB),
        pad_token_id=0, mask_time_prob=0.0,
    )  # fmt: skip
    model = DistilXLSRForCTC(config).eval()
    with torch.no_grad():  # a non-trivial weight norm, so that folding it matters
        model.distilxlsr.encoder.pos_conv_embed.conv.parametrizations.weight.original0.mul_(3.0)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny student exported with --quantize int8 in a subprocess, as a user would run the script."""
    root = tmp_path_factory.mktemp("onnx")
    model_dir = save_tiny_ctc_model(root / "student-ctc", tiny_student_ctc())
    output_dir = root / "student-ctc-onnx"
    command = [sys.executable, str(REPO_ROOT / "export_onnx.py"), "--model_name_or_path", str(model_dir)]
    command += ["--output_dir", str(output_dir), "--quantize", "int8"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, output_dir


def run_fresh(code: str, cwd: Path) -> dict:
    """Run `code` in a fresh interpreter with this checkout importable; return the JSON it prints last."""
    return last_json(run_fresh_python(code, cwd=cwd, project_on_path=True))


def test_export_writes_onnx_models_config_and_processor(exported):
    _, output_dir = exported
    for name in ("model.onnx", "model_int8.onnx", "config.json", "vocab.json", "tokenizer_config.json"):
        assert (output_dir / name).is_file(), name
    assert (output_dir / "processor_config.json").is_file() or (output_dir / "preprocessor_config.json").is_file()
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "wav2vec2" and "auto_map" not in config  # no remote code needed
    assert not list(output_dir.glob("*.safetensors"))
    import onnx

    def op_types(name):
        return {node.op_type for node in onnx.load(output_dir / name).graph.node}

    integer_products = {"MatMulInteger", "DynamicQuantizeMatMul"}
    assert not op_types("model.onnx") & integer_products
    assert op_types("model_int8.onnx") & integer_products
    assert "ConvInteger" not in op_types("model_int8.onnx")  # measured slower than fp32 Conv in ONNX Runtime


def test_onnx_logits_match_pytorch_in_a_fresh_process(exported, tmp_path):
    """fp32 within 1e-3 of PyTorch on a padded batch of two lengths; int8 close: on this model its largest difference
    measured 0.017-0.026 (three seeds) against logits of largest magnitude ~0.4, so 0.1 is the bound. Valid frames."""
    model_dir, output_dir = exported
    outputs = run_fresh(
        f"""
        import json, torch
        from transformers import AutoModelForCTC
        from distilxlsr_pt.decoding import output_frames
        from distilxlsr_pt.inference import ONNXModelForCTC
        model = AutoModelForCTC.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        generator = torch.Generator().manual_seed(3)
        input_values = torch.randn(2, 20_000, generator=generator)
        attention_mask = torch.ones(2, 20_000, dtype=torch.long)
        attention_mask[1, 11_000:] = 0
        input_values[1, 11_000:] = 0
        with torch.inference_mode():
            reference = model(input_values, attention_mask=attention_mask).logits
            alone = model(input_values[1:, :11_000]).logits
        frames = output_frames(model.config, attention_mask.sum(-1)).tolist()
        result = {{"frames": frames, "scale": reference.abs().max().item()}}
        for dtype, file_name in (("fp32", "model.onnx"), ("int8", "model_int8.onnx")):
            onnx_model = ONNXModelForCTC.from_pretrained({str(output_dir)!r}, file_name)
            logits = onnx_model(input_values, attention_mask).logits
            assert logits.shape == reference.shape, (logits.shape, reference.shape)
            result[dtype] = max((logits[i, :n] - reference[i, :n]).abs().max().item() for i, n in enumerate(frames))
            short = onnx_model(input_values[1:, :11_000]).logits  # batch of one, another length
            result[dtype + "_alone"] = (short - alone).abs().max().item()
        print(json.dumps(result))
        """,
        tmp_path,
    )
    assert outputs["frames"][0] > outputs["frames"][1] > 0
    assert outputs["fp32"] < 1e-3 and outputs["fp32_alone"] < 1e-3
    assert outputs["int8"] < 0.1 and outputs["int8_alone"] < 0.1
    assert outputs["int8"] > 1e-6  # it really is the quantised model
    assert outputs["scale"] > 0.2


def test_recognizer_transcribes_paths_and_arrays_with_each_backend(exported, tmp_path):
    """load_recognizer: torch fp32 / bf16 and onnx fp32 / int8 give text for a wav path and an array; torch fp32 and
    onnx fp32 give the same text, and the ONNX folder needs no project code to hold its processor."""
    import soundfile

    model_dir, output_dir = exported
    audio = np.random.default_rng(0).standard_normal(24_000).astype(np.float32) * 0.1
    soundfile.write(tmp_path / "clip.wav", audio, 16_000)
    outputs = run_fresh(
        f"""
        import json, numpy as np
        from distilxlsr_pt.inference import load_recognizer
        audio = np.random.default_rng(0).standard_normal(24_000).astype(np.float32) * 0.1
        result = {{}}
        for backend, dtype, path in (("torch", "fp32", {str(model_dir)!r}), ("torch", "bf16", {str(model_dir)!r}),
                                     ("onnx", "fp32", {str(output_dir)!r}), ("onnx", "int8", {str(output_dir)!r})):
            asr = load_recognizer(path, backend=backend, dtype=dtype)
            texts = asr(["clip.wav", audio[:9_000], audio], batch_size=2)
            result[backend + "_" + dtype] = [asr("clip.wav")["text"]] + [t["text"] for t in texts]
        print(json.dumps(result))
        """,
        tmp_path,
    )
    for name, texts in outputs.items():
        assert all(isinstance(text, str) for text in texts)
        # Alone or in a padded batch. Not for int8: dynamic quantisation scales activations over the whole batch, so
        # another clip in the batch can move an argmax (measured on this test's random model, 2026-12-01).
        assert texts[0] == texts[1] or name == "onnx_int8", name
    assert outputs["torch_fp32"] == outputs["onnx_fp32"]
    assert any(outputs["torch_fp32"])  # random logits: not all blank


def test_export_of_a_plain_transformers_group_norm_model(tmp_path):
    """A transformers Wav2Vec2ForCTC with wav2vec2-base's group-norm front end exports without an attention mask."""
    from distilxlsr_pt.inference import ONNXModelForCTC
    from export_onnx import main

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=[16] * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=len(VOCAB), pad_token_id=0,
        feat_extract_norm="group", do_stable_layer_norm=False,
    )  # fmt: skip
    model_dir = save_tiny_ctc_model(tmp_path / "base-ctc", Wav2Vec2ForCTC(config).eval())
    differences = main(["--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "onnx")])
    assert set(differences) == {"fp32"} and differences["fp32"] < 1e-3
    assert ONNXModelForCTC.from_pretrained(tmp_path / "onnx").input_names == {"input_values"}


def test_a_slim_student_exports_to_onnx_fp32_and_int8_matching_pytorch(tmp_path):
    """Issue 19's shape (3 layers x 16 wide, 8 conv channels; the tiny teacher is 12 x 32 with 16) as a recogniser."""
    from distilxlsr_pt.inference import ONNXModelForCTC
    from export_onnx import main

    torch.manual_seed(0)
    config = DistilXLSRConfig.from_teacher_config(
        stand_in_teacher_config("tiny"), num_hidden_layers=3, hidden_size=16, conv_dim=8, vocab_size=len(VOCAB),
        pad_token_id=0, mask_time_prob=0.0,
    )  # fmt: skip
    model = DistilXLSRForCTC(config).eval()
    model_dir = save_tiny_ctc_model(tmp_path / "slim-ctc", model)
    differences = main(
        ["--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "onnx"), "--quantize", "int8"]
    )
    assert set(differences) == {"fp32", "int8"} and differences["fp32"] < 1e-4
    audio = torch.randn(1, 16_000, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = model(audio).logits
    onnx_logits = torch.as_tensor(ONNXModelForCTC.from_pretrained(tmp_path / "onnx")(audio).logits)
    torch.testing.assert_close(onnx_logits, reference, atol=1e-4, rtol=1e-3)
    with torch.inference_mode():  # and as a plain transformers Wav2Vec2ForCTC (channels-first front end: rounding)
        torch.testing.assert_close(model.to_wav2vec2()(audio).logits, reference, atol=1e-4, rtol=1e-3)


def test_bf16_student_is_close_to_fp32():
    """The student cast to bfloat16 (channels-last front end, bf16 GEMMs) stays close to its fp32 logits."""
    model = tiny_student_ctc()
    audio = torch.randn(1, 16_000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = model(audio).logits
        logits = model.to(torch.bfloat16)(audio.to(torch.bfloat16)).logits
    assert logits.dtype == torch.bfloat16
    difference = (logits.float() - reference).abs().max().item()
    assert 1e-5 < difference < 0.05 * reference.abs().max().item()


def test_front_end_runs_channels_last_on_cpu_and_transformers_conv1d_elsewhere():
    """Both front-end paths give equal outputs on CPU; the dispatch sends non-CPU tensors (here: meta) to Conv1d."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2FeatureEncoder

    torch.manual_seed(0)
    encoder = DistilXLSRFeatureEncoder(stand_in_teacher_config("tiny")).eval()
    calls = []
    encoder.conv_layers[0].conv.register_forward_hook(lambda *args: calls.append(1))
    audio = torch.randn(2, 8_000)
    with torch.inference_mode():
        channels_last = encoder(audio)
        assert not calls  # the CPU path multiplies the weights itself
        channels_first = Wav2Vec2FeatureEncoder.forward(encoder, audio)
        assert calls
        torch.testing.assert_close(channels_last, channels_first, atol=1e-5, rtol=1e-4)
        calls.clear()
        on_meta = encoder.to("meta")(audio.to("meta"))
    assert calls and on_meta.shape == channels_last.shape


def test_compare_precisions_scores_each_precision(exported, tmp_path):
    """WER/CER at the four precisions on a tiny audiofolder; ONNX fp32 transcribes exactly as PyTorch fp32."""
    import csv

    import soundfile
    from compare_precisions import main

    model_dir, output_dir = exported
    split = tmp_path / "corpus" / "test"
    split.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(split / "metadata.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["file_name", "transcription"])
        for i, (seconds, text) in enumerate(((1.0, "Abc dé!"), (0.5, "cab"), (0.8, "bad ace"))):
            soundfile.write(split / f"{i}.wav", rng.standard_normal(int(seconds * 16000)) * 0.1, 16000)
            writer.writerow([f"{i}.wav", text])
    results = main(
        [
            "--model_name_or_path", str(model_dir), "--onnx_dir", str(output_dir), "--data_dir", str(tmp_path / "corpus"),
            "--cache_dir", str(tmp_path / "cache"), "--batch_size", "2", "--output_dir", str(tmp_path / "precisions"),
        ]
    )  # fmt: skip
    assert set(results) == {"fp32", "bf16", "onnx_fp32", "onnx_int8"}
    for result in results.values():
        assert result["cer"] > 0 and result["wer"] > 0  # random weights cannot be right
    assert results["onnx_fp32"]["cer"] == results["fp32"]["cer"]
    assert results["onnx_fp32"]["example"] == results["fp32"]["example"]
    saved = json.loads((tmp_path / "precisions" / "precision_results.json").read_text())
    assert saved["clips"] == 3 and saved["audio_s"] == pytest.approx(2.3)


def test_output_frames_is_transformers_arithmetic_for_models_without_the_method():
    """`decoding.output_frames` (used for ONNX models, which lack `_get_feat_extract_output_lengths`) gives the model's
    own frame counts: wav2vec2 with an adapter, HuBERT (whose config has no adapter field), our student."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2Model

    from distilxlsr_pt.decoding import output_frames

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=[16] * 7,
                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)  # fmt: skip
    models = [
        Wav2Vec2Model(Wav2Vec2Config(**small, add_adapter=True, output_hidden_size=32)),
        HubertModel(HubertConfig(**small)),
        tiny_student_ctc(),
    ]
    lengths = torch.tensor([400, 401, 9_000, 16_000, 24_001])
    for model in models:
        expected = model._get_feat_extract_output_lengths(lengths)
        assert torch.equal(output_frames(model.config, lengths), expected), type(model).__name__
    assert output_frames(models[0].config, lengths).tolist() != output_frames(models[2].config, lengths).tolist()


# ---------------------------------------------------------------------------------------------------------------------
# Long recordings (chunked in overlapping windows) and clips shorter than the receptive field
# ---------------------------------------------------------------------------------------------------------------------
class PositionModel:
    """A CTC "model" whose logits at each frame name the frame's position in the whole clip: it reads the (not
    normalised) input, a ramp of sample indices, at each frame's first sample. Stitched windows must then give exactly
    the unchunked ids. It records the shape of every batch it is given."""

    def __init__(self):
        self.config = Wav2Vec2Config(vocab_size=len(VOCAB), pad_token_id=0)  # XLSR-53's conv stack: 400 / 320
        self.dtype = torch.float32
        self.batches = []

    def __call__(self, input_values, attention_mask=None):
        from transformers.modeling_outputs import CausalLMOutput

        from distilxlsr_pt.decoding import output_frames, samples_per_frame

        self.batches.append(tuple(input_values.shape))
        hop = samples_per_frame(self.config)
        frames = int(output_frames(self.config, input_values.shape[1]))
        clip_frames = (input_values[:, ::hop][:, :frames] / hop).round().long()
        return CausalLMOutput(logits=torch.nn.functional.one_hot(position_ids(clip_frames), len(VOCAB)).float())


def position_ids(frames):
    """Runs of 7 frames of a letter (a..e), a blank after every run: a transcript that spells every window."""
    return torch.where(frames % 8 == 7, 0, 3 + (frames // 8) % 5)


def position_recognizer(tmp_path, **chunking):
    from distilxlsr_pt.inference import CTCRecognizer

    (tmp_path / "vocab.json").write_text(json.dumps(VOCAB), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), bos_token=None, eos_token=None)
    processor = Wav2Vec2Processor(feature_extractor=Wav2Vec2FeatureExtractor(do_normalize=False), tokenizer=tokenizer)
    return CTCRecognizer(PositionModel(), processor, **chunking)


def test_chunked_logits_are_stitched_from_every_window_exactly_once(tmp_path):
    """10 s and 3.3 s ramps in 2 s windows (0.5 s strides): every frame of the clip is there once, from a window that
    holds its whole receptive field, so ids and transcripts equal the unchunked ones; no batch holds more windows than
    clips were given, nor a window longer than 2 s (memory stays that of 2 s clips)."""
    from distilxlsr_pt.decoding import output_frames

    clips = [np.arange(n, dtype=np.float32) for n in (160_000, 52_800, 9_000)]
    chunked = position_recognizer(tmp_path, chunk_length_s=2.0, stride_length_s=0.5)
    whole = position_recognizer(tmp_path, chunk_length_s=0)
    logits = chunked.logits(clips)
    for clip, clip_logits in zip(clips, logits):
        frames = int(output_frames(whole.model.config, len(clip)))
        assert np.array_equal(clip_logits.argmax(-1), position_ids(torch.arange(frames)).numpy())
    whole_logits = whole.logits(clips)
    assert [len(x) for x in logits] == [len(x) for x in whole_logits]
    assert chunked.decode(logits) == whole.decode(whole_logits) and len(chunked.decode(logits)[0]) > 100
    assert len(chunked.model.batches) > 3  # 10 s in 2 s windows stepping 1 s: 9 windows, 3 per batch
    assert all(size <= 3 and samples <= 32_000 for size, samples in chunked.model.batches)
    assert whole.model.batches == [(3, 160_000)]


def test_chunked_student_logits_have_the_unchunked_frame_count_and_equal_them_for_a_long_chunk(tmp_path):
    """A real (tiny, random) student: chunking keeps the frame count exactly; a chunk longer than the clip (and the
    default, 30 s, for these clips) leaves the logits bit for bit as one pass gives them."""
    from distilxlsr_pt.inference import CTCRecognizer

    model = tiny_student_ctc()
    processor = Wav2Vec2Processor.from_pretrained(save_tiny_ctc_model(tmp_path / "ctc", model))
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (160_000, 33_333, 9_000)]
    whole = CTCRecognizer(model, processor, chunk_length_s=0).logits(clips)
    for chunking in ({"chunk_length_s": 2.0}, {"chunk_length_s": 3.0, "stride_length_s": 1.0}):
        chunked = CTCRecognizer(model, processor, **chunking).logits(clips)
        assert [x.shape for x in chunked] == [x.shape for x in whole], chunking
        assert not np.array_equal(chunked[0], whole[0])  # really chunked: attention saw less context
    for chunking in ({"chunk_length_s": 11.0}, {}):
        chunked = CTCRecognizer(model, processor, **chunking).logits(clips)
        assert all(np.array_equal(a, b) for a, b in zip(chunked, whole)), chunking


@pytest.mark.parametrize(
    "chunking, message",
    [
        ({"chunk_length_s": 1.0, "stride_length_s": 0.5}, "more than twice stride_length_s"),
        ({"chunk_length_s": 1.0, "stride_length_s": 0.0}, "stride_length_s must be at least 0.02 s"),
        ({"chunk_length_s": -1.0}, "must be >= 0"),
    ],
)
def test_impossible_chunk_lengths_are_refused(tmp_path, chunking, message):
    with pytest.raises(ValueError, match=message):
        position_recognizer(tmp_path, **chunking)


def test_a_clip_shorter_than_the_receptive_field_gives_empty_text_in_the_recognizer_and_the_pipeline(exported, caplog):
    """200 samples (12.5 ms, less than XLSR's 400-sample receptive field): empty text and a warning from the
    recogniser (torch and ONNX, alone and beside a longer clip) and from transformers' ASR pipeline with the student,
    instead of an IndexError; a long clip through the ONNX recogniser is chunked to the unchunked frame count."""
    from transformers import pipeline

    from distilxlsr_pt.inference import load_recognizer

    model_dir, output_dir = exported
    rng = np.random.default_rng(0)
    short, normal = rng.standard_normal(200).astype(np.float32), rng.standard_normal(16_000).astype(np.float32)
    for backend, path in (("torch", model_dir), ("onnx", output_dir)):
        asr = load_recognizer(path, backend=backend)
        caplog.clear()
        assert asr(short) == {"text": ""}, backend
        assert "shorter than the model's receptive field (400 samples)" in caplog.text
        texts = asr([short, normal, short], batch_size=3)
        assert texts[0] == texts[2] == {"text": ""} and texts[1] == asr(normal), backend
    long = rng.standard_normal(80_000).astype(np.float32)
    onnx = load_recognizer(output_dir, backend="onnx", chunk_length_s=1.0, stride_length_s=0.2)
    assert (
        onnx.logits([long])[0].shape
        == load_recognizer(output_dir, backend="onnx", chunk_length_s=0).logits([long])[0].shape
    )

    asr = pipeline("automatic-speech-recognition", model=str(model_dir))
    assert asr(short) == {"text": ""}
    model = DistilXLSRForCTC.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        assert model(torch.from_numpy(short)[None]).logits.shape == (1, 0, len(VOCAB))
