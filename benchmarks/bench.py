"""Speed, size and memory of the default DistilXLSR student against XLSR-53 and against transformers' Wav2Vec2Model.

All models are RANDOMLY INITIALISED STAND-INS with the real architectures (speed and memory do not depend on the
weights): the teacher is facebook/wav2vec2-large-xlsr-53's exact architecture, the student is
`DistilXLSRConfig.from_teacher_config` (2 layers, teacher layers 4,12) initialised from it, and "transformers" is the
same student exported with `to_wav2vec2()`. Timings interleave the contenders and take the median of several repeats
after a warm-up, so ratios measured in one run hold on a noisy machine.

    python benchmarks/bench.py --output_dir benchmarks                  # benchmarks/bench_results.json
    python benchmarks/bench.py --device cuda --dtype bf16 --output_dir outputs/bench-gpu
    python benchmarks/bench.py --only inference --output_dir benchmarks # bench_inference_results.json (minutes)
    python benchmarks/bench.py --only shapes --output_dir benchmarks    # bench_shapes_results.json (minutes)
    python benchmarks/bench.py --only shapes --shapes default,slim      # a subset of XLSR_SCALE_SHAPES
    python benchmarks/bench.py --only shapes --skip_bf16                # a CPU without native bf16 (AVX2 only)

The cheap-inference rows time the student as a CTC recogniser (40 outputs) on 10 s of audio: torch fp32, torch bf16
(weights cast to bfloat16), and on a CPU ONNX Runtime fp32 and int8 (export_onnx.py's graphs), interleaved with a
2048x2048 matrix product in fp32 and bf16, the machine's GEMM peak at the same thread count in the same run.

The shape rows (`--only shapes`) size and time the XLSR-53 architecture and each student shape of `XLSR_SCALE_SHAPES`
on 10 s of audio: parameters, GFLOP (FlopCounterMode), PyTorch fp32 and bf16 (weights cast) forwards of the backbone,
and ONNX Runtime fp32 and int8 of the student as a CTC recogniser, all interleaved in one run, with each student
backend's speed-up over the teacher's PyTorch fp32 time.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: distilxlsr_pt and the model files

import torch
from transformers import Wav2Vec2Config

from configuration_distilxlsr import DistilXLSRConfig
from distilxlsr_pt.audio import SAMPLING_RATE
from distilxlsr_pt.cli import warn_deprecated
from distilxlsr_pt.distillation import Teacher, distillation_forward
from distilxlsr_pt.inference import forward_gflop
from distilxlsr_pt.results import write_json, write_results
from distilxlsr_pt.stand_ins import stand_in_teacher_config
from modeling_distilxlsr import DistilXLSRForCTC, DistilXLSRModel

TEACHER_LAYERS = (4, 12)

# The student shapes of `--only shapes`: `DistilXLSRConfig.from_teacher_config` arguments for XLSR-53's architecture.
# The 384-wide ones keep the teacher's 16 positional-conv groups (16 divides 384); heads only change the with-heads size.
NARROW_BLOCKS = dict(hidden_size=384, intermediate_size=1536, num_attention_heads=6, teacher_layers=(8, 16, 24))
XLSR_SCALE_SHAPES = {
    "default": dict(num_hidden_layers=2, teacher_layers=TEACHER_LAYERS),  # the teacher's width, its conv front end
    "deep-narrow": dict(num_hidden_layers=12, **NARROW_BLOCKS),
    "deep-narrow-conv128": dict(num_hidden_layers=12, conv_dim=[128] * 7, **NARROW_BLOCKS),
    "slim": dict(num_hidden_layers=8, conv_dim=[128] * 7, **NARROW_BLOCKS),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=None, help="Write bench_results.json (bench_inference_results.json).")
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)  # deprecated: --output_dir
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast, teacher in bf16.")
    parser.add_argument("--durations", default="1,5,10,20", help="Forward audio lengths in seconds.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed repeats per measurement (median reported).")
    parser.add_argument("--step_batch_size", type=int, default=2, help="Clips per distillation step.")
    parser.add_argument("--step_seconds", type=float, default=10.0, help="Clip length in a distillation step.")
    parser.add_argument("--skip_steps", action="store_true", help="Skip the distillation step timings.")
    parser.add_argument("--skip_memory", action="store_true", help="Skip the peak memory measurements.")
    parser.add_argument("--profile", action="store_true", help="Print the student's top operators at 10 s.")
    parser.add_argument(
        "--only",
        choices=["inference", "shapes"],
        default=None,
        help="inference: run only the cheap-inference rows; shapes: only the student-shape rows.",
    )
    parser.add_argument(
        "--shapes", default=None, help="With --only shapes: comma-separated names of XLSR_SCALE_SHAPES (default all)."
    )
    parser.add_argument(
        "--skip_bf16",
        action="store_true",
        help="With --only shapes: no bf16 rows (a CPU without AVX512-BF16 or AMX runs bf16 matmuls ~100x slower).",
    )
    parser.add_argument("--_memory_of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.shapes = args.shapes.split(",") if args.shapes else list(XLSR_SCALE_SHAPES)
    unknown = [name for name in args.shapes if name not in XLSR_SCALE_SHAPES]
    if unknown:
        parser.error(f"--shapes: unknown shape(s) {unknown}; choose from {','.join(XLSR_SCALE_SHAPES)}.")
    return args


def build_models(device: torch.device, names: tuple[str, ...] = ("teacher", "student", "transformers")) -> dict:
    """The teacher (XLSR-53 architecture), our student and the same student as a transformers Wav2Vec2Model."""
    from transformers import Wav2Vec2Model

    torch.manual_seed(0)
    teacher_config = stand_in_teacher_config("xlsr53")
    models = {}
    if "teacher" in names:
        models["teacher"] = Wav2Vec2Model(teacher_config)
        student = DistilXLSRModel.from_teacher(models["teacher"], num_hidden_layers=2, teacher_layers=TEACHER_LAYERS)
    else:  # the student alone (random weights time the same): the teacher would only inflate peak memory
        student = DistilXLSRModel(DistilXLSRConfig.from_teacher_config(teacher_config, teacher_layers=TEACHER_LAYERS))
    if "transformers" in names:
        models["transformers"] = student.to_wav2vec2()
    if "student" in names:
        models["student"] = student
    return {name: models[name].eval().to(device) for name in names}


def autocast(device: torch.device, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_medians(contenders: dict[str, Callable[[], object]], repeats: int, device) -> dict[str, float]:
    """One warm-up each, then `repeats` rounds running every contender once per round, in an order rotated each round
    (so none always follows the same one); medians in seconds."""
    for fn in contenders.values():
        fn()
    names = list(contenders)
    times = {name: [] for name in names}
    for round_index in range(repeats):
        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
            times[name].append(timed(contenders[name], device))
    return {name: statistics.median(values) for name, values in times.items()}


def forward_fn(name: str, model: torch.nn.Module, audio: torch.Tensor, device, dtype) -> Callable[[], object]:
    kwargs = {"return_layer_predictions": False} if name == "student" else {}

    @torch.inference_mode()
    def run():
        with autocast(device, dtype):
            return model(audio, **kwargs)

    return run


def step_fn(variant: str, teacher_model, device, dtype, batch: torch.Tensor) -> Callable[[], object]:
    """One step of train_distill.py's own code: teacher targets, student forward, backward, AdamW step."""
    from transformers import Wav2Vec2Model

    # Each variant gets its own teacher copy (Teacher cuts and rewires it) and a fresh student.
    model = Wav2Vec2Model(teacher_model.config)
    model.load_state_dict(teacher_model.state_dict())
    student = DistilXLSRModel.from_teacher(model, num_hidden_layers=2, teacher_layers=TEACHER_LAYERS)
    student.config.apply_spec_augment = False
    share_front_end = variant == "cut_teacher_shared_front_end"
    if share_front_end:
        student.freeze_feature_encoder()
    teacher = Teacher(model, TEACHER_LAYERS, cut=variant != "full_teacher").to(device)
    if dtype == "bf16":
        teacher.to(torch.bfloat16)
    student.to(device).train()
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=2e-4)
    attention_mask = torch.ones_like(batch, dtype=torch.long)

    def run():
        with autocast(device, dtype):
            loss = distillation_forward(student, teacher, batch, attention_mask, share_front_end).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def peak_memory_mb(name: str, seconds: float, device: torch.device, dtype: str) -> float:
    """Peak memory of a 10 s forward: CUDA max allocated, or on CPU the peak RSS of a fresh process doing only that
    (weights included)."""
    if device.type == "cuda":
        models = build_models(device, (name,))
        audio = torch.randn(1, int(seconds * SAMPLING_RATE), device=device)
        torch.cuda.reset_peak_memory_stats()
        forward_fn(name, models[name], audio, device, dtype)()
        return torch.cuda.max_memory_allocated() / 2**20
    command = [sys.executable, __file__, "--_memory_of", name, "--dtype", dtype]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(completed.stdout.strip().splitlines()[-1])


def measure_memory_in_this_process(name: str, dtype: str) -> None:
    device = torch.device("cpu")
    model = build_models(device, (name,))[name]
    audio = torch.randn(1, 10 * SAMPLING_RATE)
    forward_fn(name, model, audio, device, dtype)()
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    print(int(status["VmHWM"].split()[0]) / 1024)


def profile_student(student, device, dtype) -> str:
    audio = torch.randn(1, 10 * SAMPLING_RATE, device=device)
    run = forward_fn("student", student, audio, device, dtype)
    run()
    with torch.profiler.profile() as profiler:
        run()
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def student_config(
    teacher_config: Wav2Vec2Config | None = None, shape: dict | None = None, **extra
) -> DistilXLSRConfig:
    """A student of `teacher_config` (default: XLSR-53's architecture) of `shape`, `from_teacher_config`'s arguments
    (default: the default student, 2 layers predicting teacher layers 4 and 12), with `extra` config fields."""
    teacher_config = teacher_config or stand_in_teacher_config("xlsr53")
    return DistilXLSRConfig.from_teacher_config(teacher_config, **(shape or XLSR_SCALE_SHAPES["default"]), **extra)


def build_ctc_student(
    vocab_size: int = 40, teacher_config: Wav2Vec2Config | None = None, shape: dict | None = None
) -> DistilXLSRForCTC:
    """A student (`student_config`: the default one unless `shape` says otherwise) with a CTC head, random weights, in
    eval mode."""
    torch.manual_seed(0)
    return DistilXLSRForCTC(student_config(teacher_config, shape, vocab_size=vocab_size, pad_token_id=0)).eval()


def weights_cast_fns(
    model: torch.nn.Module, audio: torch.Tensor, with_bf16: bool = True, **kwargs
) -> dict[str, Callable[[], object]]:
    """Forwards of `model` in fp32 and (`with_bf16`) of a copy with its weights and input cast to bfloat16."""
    fns = {"fp32": torch.inference_mode()(lambda: model(audio, **kwargs))}
    if with_bf16:
        model_bf16, audio_bf16 = copy.deepcopy(model).to(torch.bfloat16), audio.to(torch.bfloat16)
        fns["bf16"] = torch.inference_mode()(lambda: model_bf16(audio_bf16, **kwargs))
    return fns


def gemm_fn(dtype: torch.dtype, device, size: int = 2048) -> Callable[[], object]:
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    return lambda: a @ b


def onnx_fns(student: DistilXLSRForCTC, audio: torch.Tensor) -> dict[str, Callable[[], object]]:
    """ONNX Runtime fp32 and int8 runs of the student, exported and quantised as export_onnx.py does."""
    import tempfile

    from distilxlsr_pt.inference import ONNX_FILE_NAMES, ONNXModelForCTC
    from distilxlsr_pt.onnx_export import export, exportable_model, quantize_int8

    model = exportable_model(copy.deepcopy(student))
    fns = {}
    with tempfile.TemporaryDirectory() as directory:
        paths = {dtype: Path(directory) / name for dtype, name in ONNX_FILE_NAMES.items()}
        export(model, paths["fp32"], opset=18, with_attention_mask=True)
        quantize_int8(paths["fp32"], paths["int8"])
        for dtype, path in paths.items():
            onnx_model = ONNXModelForCTC(path, model.config)  # the session holds the weights: the file can go
            fns[f"onnx_{dtype}"] = lambda onnx_model=onnx_model: onnx_model(audio)
    return fns


def inference_results(device: torch.device, repeats: int, seconds: float = 10.0) -> dict:
    """Times of the cheap-inference rows at `seconds` of audio, interleaved with the GEMM peak, and the ratios."""
    student = build_ctc_student().to(device)
    audio = torch.randn(1, int(seconds * SAMPLING_RATE), device=device)
    contenders = {f"torch_{dtype}": fn for dtype, fn in weights_cast_fns(student, audio).items()}
    if device.type == "cpu":
        contenders |= onnx_fns(student, audio.cpu())
    contenders |= {"gemm_fp32": gemm_fn(torch.float32, device), "gemm_bf16": gemm_fn(torch.bfloat16, device)}
    student_gflop = forward_gflop(student, audio)
    load_before = os.getloadavg()[0]
    medians = interleaved_medians(contenders, repeats, device)
    gemm_gflop = 2 * 2048**3 / 1e9
    results = {
        "inference_audio_s": seconds,
        "inference_s": {name: value for name, value in medians.items() if not name.startswith("gemm")},
        "gemm_peak_gflops": {dtype: gemm_gflop / medians[f"gemm_{dtype}"] for dtype in ("fp32", "bf16")},
        "student_ctc_gflop": student_gflop,
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }
    fp32 = medians["torch_fp32"]
    results["student_fp32_gflops"] = results["student_ctc_gflop"] / fp32
    results["fp32_fraction_of_gemm_peak"] = results["student_fp32_gflops"] / results["gemm_peak_gflops"]["fp32"]
    results["bf16_speedup_vs_fp32"] = fp32 / medians["torch_bf16"]
    if "onnx_int8" in medians:
        results["onnx_fp32_speedup_vs_fp32"] = fp32 / medians["onnx_fp32"]
        results["onnx_int8_speedup_vs_fp32"] = fp32 / medians["onnx_int8"]
    return results


def shapes_results(
    device: torch.device,
    repeats: int,
    teacher_config: Wav2Vec2Config,
    shapes: dict[str, dict],
    seconds: float = 10.0,
    with_bf16: bool = True,
) -> dict:
    """Parameters, GFLOP and times on `seconds` of audio of the teacher architecture and of each student shape
    (`student_config` arguments), every backend of every model interleaved in one run, and each backend's speed-up
    over the teacher in PyTorch fp32."""
    from transformers import Wav2Vec2Model

    audio = torch.randn(1, int(seconds * SAMPLING_RATE), device=device)
    torch.manual_seed(0)
    teacher = Wav2Vec2Model(teacher_config).eval().to(device)
    teacher_row = {"parameters": sum(p.numel() for p in teacher.parameters()), "gflop": forward_gflop(teacher, audio)}
    contenders = {f"teacher/{backend}": fn for backend, fn in weights_cast_fns(teacher, audio, with_bf16).items()}
    students = {}
    for name, shape in shapes.items():
        torch.manual_seed(0)
        student = DistilXLSRModel(student_config(teacher_config, shape)).eval().to(device)
        students[name] = {
            "config_overrides": shape,
            "parameters": sum(p.numel() for n, p in student.named_parameters() if "prediction_heads" not in n),
            "parameters_with_prediction_heads": sum(p.numel() for p in student.parameters()),
            "gflop": forward_gflop(student, audio, return_layer_predictions=False),
        }
        fns = weights_cast_fns(student, audio, with_bf16, return_layer_predictions=False)
        if device.type == "cpu":
            fns |= onnx_fns(build_ctc_student(teacher_config=teacher_config, shape=shape), audio)
        contenders |= {f"{name}/{backend}": fn for backend, fn in fns.items()}
    load_before = os.getloadavg()[0]
    medians = interleaved_medians(contenders, repeats, device)
    load_after = os.getloadavg()[0]
    rows = {"teacher": teacher_row, **students}
    for contender, median in medians.items():
        name, backend = contender.rsplit("/", 1)
        rows[name].setdefault("s", {})[backend] = median
    for row in rows.values():
        row["speedup_vs_teacher_fp32"] = {
            backend: medians["teacher/fp32"] / value for backend, value in row["s"].items()
        }
    return {
        "audio_s": seconds,
        "teacher": teacher_row,
        "students": students,
        "load_average_1min": [load_before, load_after],
    }


def shapes_markdown(results: dict) -> str:
    seconds = results["audio_s"]
    backends = {"fp32": "PyTorch fp32", "bf16": "PyTorch bf16", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8"}
    lines = [
        f"| model | parameters (with heads) | GFLOP / {seconds:g} s | " + " | ".join(backends.values()) + " |",
        "|---|---|---|" + "---|" * len(backends),
    ]
    for name, row in {"XLSR-53 (teacher)": results["teacher"], **results["students"]}.items():
        size = f"{row['parameters'] / 1e6:.1f}M"
        if "parameters_with_prediction_heads" in row:
            size += f" ({row['parameters_with_prediction_heads'] / 1e6:.1f}M)"
        times = [
            f"{row['s'][backend]:.3f} s ({row['speedup_vs_teacher_fp32'][backend]:.1f}x)"
            if backend in row["s"]
            else "-"
            for backend in backends
        ]
        lines.append(f"| {name} | {size} | {row['gflop']:.1f} | " + " | ".join(times) + " |")
    load = results["load_average_1min"]
    lines += [
        "",
        f"Times for {seconds:g} s of audio, batch 1; in brackets the speed-up over the teacher in PyTorch fp32, "
        f"measured in the same run; 1-min load average {load[0]:.1f} before, {load[1]:.1f} after.",
    ]
    return "\n".join(lines)


def inference_markdown(results: dict) -> str:
    labels = {
        "torch_fp32": "PyTorch fp32",
        "torch_bf16": "PyTorch bf16 (weights cast)",
        "onnx_fp32": "ONNX Runtime fp32",
        "onnx_int8": "ONNX Runtime int8 (dynamic)",
    }
    fp32 = results["inference_s"]["torch_fp32"]
    lines = [
        f"| student CTC, {results['inference_audio_s']:g} s of audio | time | speed-up vs PyTorch fp32 |",
        "|---|---|---|",
    ]
    for name, seconds in results["inference_s"].items():
        lines.append(f"| {labels[name]} | {seconds:.3f} s | {fp32 / seconds:.2f}x |")
    peak = results["gemm_peak_gflops"]
    lines += [
        "",
        f"Student: {results['student_ctc_gflop']:.1f} GFLOP (FlopCounterMode), {results['student_fp32_gflops']:.0f} "
        f"GFLOP/s in fp32 = {results['fp32_fraction_of_gemm_peak']:.2f} of the 2048x2048 GEMM peak measured in the "
        f"same run ({peak['fp32']:.0f} GFLOP/s fp32, {peak['bf16']:.0f} GFLOP/s bf16); 1-min load average "
        f"{results['load_average_1min'][0]:.1f} before, {results['load_average_1min'][1]:.1f} after.",
    ]
    return "\n".join(lines)


def markdown(results: dict) -> str:
    durations = results["durations_s"]
    lines = [
        f"Stand-in models (random weights, real architectures) on {results['machine']}, {results['dtype']}, "
        f"median of {results['repeats']} interleaved repeats after a warm-up.",
        "",
        "| model | parameters | " + " | ".join(f"forward {d:g} s" for d in durations) + " | peak memory (10 s) |",
        "|---|---|" + "---|" * len(durations) + "---|",
    ]
    for name, label in (
        ("teacher", "XLSR-53 (teacher)"),
        ("student", "DistilXLSR student"),
        ("transformers", "same student as transformers Wav2Vec2Model"),
    ):
        times = " | ".join(f"{results['forward_s'][name][str(d)]:.3f} s" for d in durations)
        memory = results["peak_memory_mb"].get(name)
        memory = f"{memory:,.0f} MB" if memory is not None else "-"
        lines.append(f"| {label} | {results['parameters'][name]:,} | {times} | {memory} |")
    lines += ["", "| measure | value |", "|---|---|"]
    for key in (
        "speedup_vs_teacher",
        "ratio_vs_transformers",
        "student_real_time_factor",
        "truncated_step_ratio",
        "fast_step_ratio",
    ):
        if key in results:
            lines.append(f"| `{key}` | {results[key]:.3f} |")
    for variant, seconds in results.get("step_s", {}).items():
        lines.append(f"| step time, {variant.replace('_', ' ')} | {seconds:.2f} s |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args._memory_of:
        measure_memory_in_this_process(args._memory_of, args.dtype)
        return {}
    device = torch.device(args.device)
    if args.only == "inference":
        return inference_only(args, device)
    if args.only == "shapes":
        return shapes_only(args, device)
    durations = [float(d) for d in args.durations.split(",")]
    machine = machine_name(device)
    print(f"Benchmarking stand-in models (random weights) on {machine}, {args.dtype}", flush=True)

    models = build_models(device)
    student_with_heads = sum(p.numel() for p in models["student"].parameters())
    results = {
        "note": "random-initialised stand-ins with the real architectures; speed and memory only",
        "machine": machine,
        "device": args.device,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "repeats": args.repeats,
        "durations_s": durations,
        "parameters": {
            "teacher": sum(p.numel() for p in models["teacher"].parameters()),
            "student": sum(p.numel() for n, p in models["student"].named_parameters() if "prediction_heads" not in n),
            "transformers": sum(p.numel() for p in models["transformers"].parameters()),
        },
        "student_parameters_with_prediction_heads": student_with_heads,
        "forward_s": {name: {} for name in models},
        "peak_memory_mb": {},
    }
    for seconds in durations:
        audio = torch.randn(1, int(seconds * SAMPLING_RATE), device=device)
        contenders = {name: forward_fn(name, model, audio, device, args.dtype) for name, model in models.items()}
        medians = interleaved_medians(contenders, args.repeats, device)
        for name, value in medians.items():
            results["forward_s"][name][str(seconds)] = value
        print(f"forward {seconds:g} s: " + ", ".join(f"{k} {v:.3f} s" for k, v in medians.items()), flush=True)
    at_10 = results["forward_s"]
    key = str(10.0) if str(10.0) in at_10["student"] else str(durations[-1])
    results["speedup_vs_teacher"] = at_10["teacher"][key] / at_10["student"][key]
    results["ratio_vs_transformers"] = at_10["student"][key] / at_10["transformers"][key]
    results["student_real_time_factor"] = at_10["student"][key] / float(key)

    if args.profile:
        print(profile_student(models["student"], device, args.dtype))

    if not args.skip_steps:
        batch = torch.randn(args.step_batch_size, int(args.step_seconds * SAMPLING_RATE), device=device)
        variants = ("full_teacher", "cut_teacher", "cut_teacher_shared_front_end")
        steps = {variant: step_fn(variant, models["teacher"], device, args.dtype, batch) for variant in variants}
        results["step_s"] = interleaved_medians(steps, args.repeats, device)
        print("distillation step: " + ", ".join(f"{k} {v:.2f} s" for k, v in results["step_s"].items()), flush=True)
        results["truncated_step_ratio"] = results["step_s"]["cut_teacher"] / results["step_s"]["full_teacher"]
        results["fast_step_ratio"] = (
            results["step_s"]["cut_teacher_shared_front_end"] / results["step_s"]["full_teacher"]
        )
        del steps

    if not args.skip_memory:
        del models
        for name in ("teacher", "student", "transformers"):
            results["peak_memory_mb"][name] = peak_memory_mb(name, 10.0, device, args.dtype)

    results |= inference_results(device, args.repeats)
    print()
    print(markdown(results))
    print()
    print(inference_markdown(results))
    save(results, args, "bench")
    return results


def save(results: dict, args: argparse.Namespace, job: str) -> None:
    """`<output_dir>/<job>_results.json`, and the file of the deprecated `--json`."""
    if args.output_dir:
        print(f"\nWrote {write_results(args.output_dir, job, results)}")
    if args.json:
        warn_deprecated("--json", "--output_dir")
        print(f"\nWrote {write_json(args.json, results)}")


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def only_results_header(args: argparse.Namespace, machine: str, models: str) -> dict:
    """The fields every `--only` results file starts with."""
    return {
        "note": f"random-initialised stand-in {models} with the real architecture; speed only",
        "machine": machine,
        "device": args.device,
        "torch": torch.__version__,
        "repeats": args.repeats,
    }


def inference_only(args: argparse.Namespace, device: torch.device) -> dict:
    machine = machine_name(device)
    print(f"Cheap-inference rows on {machine} (random-weight stand-in student)", flush=True)
    results = only_results_header(args, machine, "student")
    results |= inference_results(device, args.repeats)
    print(inference_markdown(results))
    save(results, args, "bench_inference")
    return results


def shapes_only(args: argparse.Namespace, device: torch.device) -> dict:
    machine = machine_name(device)
    print(
        f"Student shapes against XLSR-53 on {machine} (random-weight stand-ins): {', '.join(args.shapes)}", flush=True
    )
    results = only_results_header(args, machine, "teacher and students")
    shapes = {name: XLSR_SCALE_SHAPES[name] for name in args.shapes}
    results |= shapes_results(
        device, args.repeats, stand_in_teacher_config("xlsr53"), shapes, with_bf16=not args.skip_bf16
    )
    print(shapes_markdown(results))
    save(results, args, "bench_shapes")
    return results


if __name__ == "__main__":
    main()
