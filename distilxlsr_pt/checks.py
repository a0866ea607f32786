"""Start-of-run checks shared by the scripts: numeric options, `--data_dir` and `--output_dir`.

A run must fail in its first second, not after hours, on an impossible option value or an output folder that cannot
be written; and it must never silently overwrite, or mix its checkpoints with, a previous run in the same folder.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# A training run stops with an error after this many optimizer steps in a row with a non-finite loss or gradient
# (each one skipped, so the weights are unharmed).
MAX_NONFINITE_STEPS_IN_A_ROW = 25


class NonFiniteStreak:
    """The guard of both training loops: counts the steps skipped for a non-finite (NaN or inf) `what` ("loss or
    gradient"), and ends the run with a `RuntimeError` (giving `advice`) after `limit` in a row."""

    def __init__(self, limit: int, what: str, advice: str) -> None:
        self.limit, self.what, self.advice = limit, what, advice
        self.skipped = self.in_a_row = 0

    def record(self, finite: bool, step: int) -> None:
        """Note whether optimizer step `step` (1-based) was finite; a skipped one is logged."""
        if finite:
            self.in_a_row = 0
            return
        self.skipped += 1
        self.in_a_row += 1
        logger.warning("Step %d skipped: non-finite %s", step, self.what)
        if self.in_a_row >= self.limit:
            raise RuntimeError(
                f"{self.in_a_row} steps in a row had a non-finite (NaN or inf) {self.what}; each was skipped, so the "
                f"weights are unharmed. {self.advice}"
            )


# Rules for numeric options: a test and what the value must be.
POSITIVE = (lambda value: value > 0, "> 0")
NON_NEGATIVE = (lambda value: value >= 0, ">= 0")
PROBABILITY = (lambda value: 0 <= value <= 1, "in [0, 1]")
BETA = (lambda value: 0 <= value < 1, "in [0, 1)")
SEED = (lambda value: 0 <= value < 2**32, "in [0, 2**32)")


def numeric_option_errors(rules: dict[str, tuple[Callable[[Any], bool], str]], *arguments: Any) -> list[str]:
    """One message per option of `rules` (looked up on the `arguments` objects) that is set but non-finite or fails
    its test, e.g. "--eval_steps must be > 0, got 0"."""
    errors = []
    for name, (valid, expected) in rules.items():
        for holder in arguments:
            value = getattr(holder, name, None)
            if value is not None and not (math.isfinite(value) and valid(value)):
                errors.append(f"--{name} must be {expected}, got {value}")
    return errors


class OutputDirError(ValueError):
    """`--output_dir` cannot be written, or holds a previous run that the command does not say what to do with."""


def check_data_dir(data_dir: str | os.PathLike) -> None:
    """Fail early, and clearly, on a `--data_dir` audiofolder that is missing or whose metadata.csv lists no clip (on
    which datasets fails with an IndexError)."""
    path = Path(data_dir)
    if not path.is_dir():
        raise ValueError(f"--data_dir {path}: no such folder.")
    for metadata in (path / "metadata.csv", *sorted(path.glob("*/metadata.csv"))):
        if metadata.is_file() and not metadata.read_text(encoding="utf-8", errors="replace").partition("\n")[2].strip():
            raise ValueError(f"--data_dir {path}: {metadata} lists no clip (a header line at most).")


def check_output_dir(
    output_dir: str | os.PathLike, run_files: Sequence[str], overwrite: bool, resuming: bool
) -> list[Path]:
    """
    Create `output_dir` if needed and check that a file can be written there; then look for a previous run.

    `run_files` are regular expressions of the paths a run writes, relative to `output_dir` (`find_run_files`). When
    some are found, the command must pass `--overwrite_output_dir` (`overwrite`) or continue that run (`resuming`);
    otherwise this raises `OutputDirError` naming both flags. Returns the previous run's paths (for
    `remove_previous_run`).
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"--output_dir {path} is a file, not a folder: choose another --output_dir.")
    try:  # a real write: permission bits, read-only mounts and full disks all show up here
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OutputDirError(
            f"--output_dir {path} cannot be written ({error}): choose another --output_dir."
        ) from error
    previous = find_run_files(path, run_files)
    if previous and not overwrite and not resuming:
        names = ", ".join(str(p.relative_to(path)) for p in previous[:5]) + (", ..." if len(previous) > 5 else "")
        raise OutputDirError(
            f"--output_dir {path} already holds a run ({names}). Pass --resume_from_checkpoint latest to continue it, "
            "--overwrite_output_dir to delete it and start afresh, or choose another --output_dir."
        )
    return previous


def find_run_files(output_dir: Path, run_files: Sequence[str]) -> list[Path]:
    """The paths in `output_dir` whose relative path (with "/") a `run_files` regular expression matches in full: only
    the exact names a run writes (`checkpoint-12`, `eval_results.json`), never a user's file beside them
    (`checkpoint-12-backup`, `my_results.json`), which `--overwrite_output_dir` must not delete."""
    patterns = [re.compile(pattern) for pattern in run_files]
    found, level = [], [output_dir]
    for _ in range(max((pattern.count("/") + 1 for pattern in run_files), default=0)):  # as deep as a pattern goes
        level = [child for parent in level if parent.is_dir() for child in parent.iterdir()]
        found += [p for p in level if any(rule.fullmatch(p.relative_to(output_dir).as_posix()) for rule in patterns)]
    return sorted(found)


def remove_previous_run(paths: Sequence[Path]) -> None:
    """Delete what `check_output_dir` found (`--overwrite_output_dir`), so old checkpoints never mix with new ones."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
