"""The layout's rules, read from the code's own imports and definitions (so that they stay true):

- the two model files import only torch, transformers and each other (what `save_pretrained` copies for remote code);
- the library (`distilxlsr_pt/`) never imports a script, and no script imports another;
- the inference entry point imports neither accelerate, datasets nor the Trainer;
- each shared job has one definition; renamed flags still work, with a warning; no script runs a model folder's code
  unless told to.
"""

import ast
import sys
from pathlib import Path

import pytest
from conftest import last_json, run_fresh_python

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_FILES = ("configuration_distilxlsr", "modeling_distilxlsr")
LIBRARY = "distilxlsr_pt"
SCRIPT_FOLDERS = (".", "stand_ins", "benchmarks")


def scripts() -> dict[str, Path]:
    """Module name -> path of every script: the top-level .py files but the model pair, and those of the subfolders."""
    found = {}
    for folder in SCRIPT_FOLDERS:
        for path in sorted((REPO_ROOT / folder).glob("*.py")):
            if path.stem not in MODEL_FILES:
                found[path.stem] = path
    return found


def library_modules() -> dict[str, Path]:
    return {f"{LIBRARY}.{path.stem}": path for path in sorted((REPO_ROOT / LIBRARY).glob("*.py"))}


def imports(path: Path, package: str | None = None) -> set[str]:
    """Every module `path` imports, anywhere in the file (lazy imports inside functions included), relative imports
    resolved against `package`; `from x import y` gives both `x` and `x.y`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{package}.{base}" if base else package
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def top_level(name: str) -> str:
    return name.split(".")[0]


def test_the_model_files_import_only_torch_transformers_and_each_other():
    # (huggingface_hub comes with every transformers install: its `@strict` validates transformers' own configs.)
    allowed = {"torch", "transformers", "huggingface_hub", "__future__", *MODEL_FILES, *sys.stdlib_module_names}
    for name in MODEL_FILES:
        modules = imports(REPO_ROOT / f"{name}.py", package="")
        outside = {m for m in modules if top_level(m.lstrip(".")) not in allowed and m.lstrip(".") not in MODEL_FILES}
        assert not {top_level(m.lstrip(".")) for m in outside} - {""}, (name, sorted(outside))


def test_the_library_never_imports_a_script():
    script_names = set(scripts())
    assert {"train_distill", "finetune_ctc", "make_demo_corpus", "bench"} <= script_names  # the rule has teeth
    for module, path in library_modules().items():
        imported = {top_level(name) for name in imports(path, package=LIBRARY)}
        assert not imported & script_names, (module, sorted(imported & script_names))


def test_no_script_imports_another_script():
    script_names = set(scripts())
    for name, path in scripts().items():
        imported = {top_level(module) for module in imports(path)}
        assert not imported & (script_names - {name}), (name, sorted(imported & script_names))


def project_closure(module: str) -> set[str]:
    """`module` and every project module it imports, directly or through others (library and model files)."""
    paths = library_modules() | {name: REPO_ROOT / f"{name}.py" for name in MODEL_FILES}
    seen, todo, imported = set(), [module], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        package = LIBRARY if current.startswith(LIBRARY) else ""
        names = imports(paths[current], package=package)
        imported |= names
        todo += [name for name in names if name in paths]
    return imported


def test_the_inference_entry_point_imports_neither_accelerate_nor_datasets_nor_the_trainer():
    imported = project_closure(f"{LIBRARY}.inference")
    assert f"{LIBRARY}.decoding" in imported and "onnxruntime" in imported  # the closure is really followed
    assert not {name for name in imported if top_level(name) in ("accelerate", "datasets")}
    assert not {name for name in imported if name.endswith(".Trainer") or "transformers.trainer" in name}
    # The training side does import them (the test would notice if the walk stopped working).
    assert "accelerate.Accelerator" in project_closure(f"{LIBRARY}.distillation")


def test_inference_in_a_fresh_process_loads_no_dataset_or_trainer_code(tmp_path):
    """What runs when a user transcribes: datasets and transformers' Trainer stay unimported (accelerate is imported by
    transformers' own modeling code whenever it is installed, so it is not checked here)."""
    code = f"""
        import json, sys
        import numpy as np
        from test_inference import save_tiny_ctc_model, tiny_student_ctc
        from distilxlsr_pt.inference import load_recognizer
        model_dir = save_tiny_ctc_model(__import__("pathlib").Path({str(tmp_path)!r}) / "model", tiny_student_ctc())
        text = load_recognizer(model_dir)(np.zeros(16000, dtype=np.float32))["text"]
        print(json.dumps({{"text": text, "loaded": sorted(m for m in ("datasets", "transformers.trainer") if m in sys.modules)}}))
        """
    output = last_json(run_fresh_python(code, cwd=tmp_path, project_on_path=True))
    assert isinstance(output["text"], str) and output["loaded"] == []


def definitions(name: str) -> list[str]:
    """Where the project's source (scripts, library, model files) defines `name`: a function, class or assignment."""
    found = []
    for path in [*scripts().values(), *library_modules().values(), *(REPO_ROOT / f"{m}.py" for m in MODEL_FILES)]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            defined = []
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined = [node.name]
            elif isinstance(node, ast.Assign):
                defined = [target.id for target in node.targets if isinstance(target, ast.Name)]
            if name in defined:
                found.append(str(path.relative_to(REPO_ROOT)))
    return found


@pytest.mark.parametrize(
    "name, home",
    [
        ("SAMPLING_RATE", "distilxlsr_pt/audio.py"),
        ("load_audio", "distilxlsr_pt/audio.py"),
        ("normalize_text", "distilxlsr_pt/text.py"),
        ("build_vocabulary", "distilxlsr_pt/text.py"),
        ("DatasetSplit", "distilxlsr_pt/data.py"),
        ("split_list", "distilxlsr_pt/cli.py"),
        ("output_frames", "distilxlsr_pt/decoding.py"),
        ("unpadded_logits", "distilxlsr_pt/decoding.py"),
        ("greedy_decode", "distilxlsr_pt/decoding.py"),
        ("lm_transcripts", "distilxlsr_pt/decoding.py"),
        ("error_rates", "distilxlsr_pt/decoding.py"),
        ("load_ctc_model", "distilxlsr_pt/models.py"),
        ("write_card", "distilxlsr_pt/cards.py"),
        ("stand_in_kind", "distilxlsr_pt/cards.py"),
        ("write_results", "distilxlsr_pt/results.py"),
        ("check_teacher_layers", "configuration_distilxlsr.py"),
        ("MAX_NONFINITE_STEPS_IN_A_ROW", "distilxlsr_pt/checks.py"),
        ("HelpFormatter", "distilxlsr_pt/cli.py"),
    ],
)
def test_each_shared_job_has_one_definition(name, home):
    assert definitions(name) == [home]


def test_cards_are_written_only_by_the_card_writer():
    """`ModelCard(...)` / `DatasetCard(...)` are built in cards.py alone (the others load or save through it)."""
    for path in [*scripts().values(), *library_modules().values()]:
        if path.name == "cards.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("ModelCard", "DatasetCard"):
                pytest.fail(f"{path.relative_to(REPO_ROOT)}:{node.lineno} builds a card itself")


@pytest.mark.parametrize(
    "script, argv, dest, value",
    [
        ("evaluate_asr", ["--split", "validation"], "eval_split_name", "validation"),
        ("evaluate_asr", ["--max_samples", "7"], "max_eval_samples", 7),
        ("add_ngram_lm", ["--order", "3"], "lm_order", 3),
        ("add_ngram_lm", ["--tune_on", "corpus"], "eval_dataset_name", "corpus"),
        ("add_ngram_lm", ["--tune_split", "dev"], "eval_split_name", "dev"),
        ("add_ngram_lm", ["--dataset_split", "other"], "train_split_name", "other"),
    ],
)
def test_renamed_flags_still_work_for_one_release_with_a_warning(script, argv, dest, value):
    module = __import__(script)
    required = ["--model_name_or_path", "m"] + (["--output_dir", "o"] if script == "add_ngram_lm" else [])
    with pytest.warns(FutureWarning, match=f"{argv[0]} is deprecated .* use --{dest}"):
        args = module.build_parser().parse_args([*required, *argv])
    assert getattr(args, dest) == value
    assert argv[0] not in module.build_parser().format_help()  # hidden from --help


@pytest.mark.parametrize(
    "script", ["train_distill", "evaluate_asr", "add_ngram_lm", "export_onnx", "compare_precisions"]
)
def test_every_script_that_loads_models_runs_no_folder_code_unless_told(script):
    assert __import__(script).build_parser()._option_string_actions["--trust_remote_code"].default is False


def test_finetune_ctc_runs_no_folder_code_unless_told():
    import dataclasses

    import finetune_ctc

    fields = {field.name: field for field in dataclasses.fields(finetune_ctc.ModelArguments)}
    assert fields["trust_remote_code"].default is False
