"""Shared fixtures: tiny stand-in teachers of XLSR-53's architecture family (random weights, seconds on a CPU)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
# The checkout (library, model files, top-level scripts) and the scripts of stand_ins/ and benchmarks/.
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "stand_ins"), str(REPO_ROOT / "benchmarks")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach the Hub

from distilxlsr_pt.stand_ins import stand_in_teacher_config  # noqa: E402


def run_fresh_python(
    code: str, *args, cwd: Path, project_on_path: bool = False, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run `code` (dedented) with `args` in a fresh interpreter, offline, in `cwd`, and fail the test on a non-zero
    exit. Isolated (`-I`, no PYTHONPATH: only installed packages and the files the code loads can serve, as for a user
    without this checkout) unless `project_on_path` (the checkout and the tests importable)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    env.pop("PYTHONPATH", None)
    flags = ["-I"]
    if project_on_path:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])
        flags = []
    command = [sys.executable, *flags, "-c", textwrap.dedent(code), *map(str, args)]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# A process that claims a folder as a run does (`check_output_dir(..., lock=True)`) when it reads a line, prints
# "won" or "lost: <the error>", and keeps the claim until it reads another line.
CLAIM_WHEN_TOLD = """
import sys
from distilxlsr_pt.checks import OutputDirError, check_output_dir
print("ready", flush=True)
input()
try:
    check_output_dir(sys.argv[1], ["model.safetensors"], overwrite=False, resuming=False, lock=True)
    print("won", flush=True)
except OutputDirError as error:
    print(f"lost: {error}", flush=True)
input()
"""


def start_claimant(folder: Path) -> subprocess.Popen:
    """A process running `CLAIM_WHEN_TOLD` on `folder`, ready (it has imported the library): write a line to its
    stdin to make it claim, read its answer from stdout, write another line to end it."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", CLAIM_WHEN_TOLD, str(folder)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout.readline() == "ready\n"
    return process


def tell(process: subprocess.Popen) -> None:
    process.stdin.write("\n")
    process.stdin.flush()


def last_json(result: subprocess.CompletedProcess) -> dict:
    """The JSON object a `run_fresh_python` script printed last."""
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """A tiny demo corpus (16 / 4 / 4 clips); a test module may define its own."""
    from distilxlsr_pt.demo_corpus import build_corpus

    directory = tmp_path_factory.mktemp("corpus") / "corpus"
    build_corpus(directory, num_train=16, num_validation=4, num_test=4, num_workers=2)
    return directory


@pytest.fixture
def tiny_teacher_config():
    return stand_in_teacher_config("tiny")


@pytest.fixture
def tiny_teacher(tiny_teacher_config):
    from transformers import Wav2Vec2Model

    torch.manual_seed(0)
    return Wav2Vec2Model(tiny_teacher_config).eval()


@pytest.fixture
def audio():
    """Two utterances of 1.0 s and 0.6 s of normalised noise, and the same padded into one batch."""
    generator = torch.Generator().manual_seed(0)
    long, short = torch.randn(16000, generator=generator), torch.randn(9600, generator=generator)
    batch = torch.zeros(2, 16000)
    batch[0], batch[1, :9600] = long, short
    mask = torch.zeros(2, 16000, dtype=torch.long)
    mask[0], mask[1, :9600] = 1, 1
    return long, short, batch, mask
