"""Start-of-run checks shared by the scripts: numeric options, `--data_dir` and `--output_dir`.

A run must fail in its first second, not after hours, on an impossible option value or an output folder that cannot
be written; and it must never silently overwrite, or mix its checkpoints with, a previous run in the same folder, nor
with a run started at the same moment (the folder's lock, `OutputDirLock`, is held for the life of the run).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import filelock

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


# The lock of a run's --output_dir and the note of who holds it, inside the folder. The leading "_" keeps them out
# of the Trainer's uploads (it ignores "_*"); train_distill.py's upload ignores them by this pattern too.
RUN_LOCK_FILE = "_run.lock"
RUN_LOCK_HOLDER_FILE = "_run.lock.holder.json"
RUN_LOCK_PATTERN = "_run.lock*"


class OutputDirLock:
    """The lock of a run's `--output_dir` (a `filelock.FileLock`, released by the system when the process dies), and
    beside it a note of the holder (pid, host, command) that a second run names in its error.

    `acquire` never waits: a folder another run holds raises `OutputDirError` at once. `release` removes only the
    files this run wrote: the holder note, and the lock file when this run created it."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.lock_path = self.output_dir / RUN_LOCK_FILE
        self.holder_path = self.output_dir / RUN_LOCK_HOLDER_FILE
        self.lock = filelock.FileLock(self.lock_path, timeout=0, thread_local=False)
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)}
        self.created_lock_file = False

    def acquire(self) -> None:
        existed = self.lock_path.exists()
        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise OutputDirError(
                f"--output_dir {self.output_dir} is in use by another run ({self.describe_holder()}): wait for it to "
                "end, or choose another --output_dir."
            ) from None
        self.created_lock_file = not existed
        self.holder["started"] = time.strftime("%Y-%m-%d %H:%M:%S")
        # Written whole and then renamed, so that a run reading it never sees half a note.
        partial_path = self.holder_path.with_name(f"{self.holder_path.name}.{os.getpid()}.tmp")
        partial_path.write_text(json.dumps(self.holder) + "\n", encoding="utf-8")
        os.replace(partial_path, self.holder_path)

    def describe_holder(self, wait_s: float = 2.0) -> str:
        """ "pid 123 on host h, started ..., command: ..." from the holder's note. The holder writes its note just
        after it takes the lock, so a run that lost a race by a moment waits up to `wait_s` for the note."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                holder = json.loads(self.holder_path.read_text(encoding="utf-8"))
                return (
                    f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}, "
                    f"command: {holder['command']}"
                )
            except (OSError, ValueError, KeyError, TypeError):  # not written yet, or the holder has gone
                if time.monotonic() > deadline:
                    return f"a process that has not said which; see {self.holder_path}"
                time.sleep(0.05)

    def release(self) -> None:
        """Remove this run's files (while still holding the lock, so that no other run can find them half gone) and
        release the lock. Safe to call twice."""
        if not self.lock.is_locked:
            return
        try:
            if json.loads(self.holder_path.read_text(encoding="utf-8")).get("pid") == self.holder["pid"]:
                self.holder_path.unlink()
        except (OSError, ValueError, AttributeError):
            pass  # gone already, or not ours
        if self.created_lock_file:
            self.lock_path.unlink(missing_ok=True)  # filelock: a run waiting on the removed file does not get it
        self.lock.release(force=True)


# The locks this process holds, by folder: held until the process ends (scripts are one run per process); a second
# run into the same folder in this process (as tests do) shares the lock.
_held_locks: dict[Path, OutputDirLock] = {}


def lock_output_dir(output_dir: str | os.PathLike) -> OutputDirLock:
    """Take `output_dir`'s lock for the rest of this process (released at exit), or raise `OutputDirError` naming
    the process that holds it. The folder must exist."""
    key = Path(output_dir).resolve()
    if key not in _held_locks:
        lock = OutputDirLock(output_dir)
        lock.acquire()
        _held_locks[key] = lock
        atexit.register(lock.release)
    return _held_locks[key]


def check_output_dir(
    output_dir: str | os.PathLike,
    run_files: Sequence[str],
    overwrite: bool,
    resuming: bool,
    lock: bool = False,
) -> list[Path]:
    """
    Create `output_dir` if needed and check that a file can be written there; with `lock`, take the folder's lock
    for the life of the run (`lock_output_dir`: only one process of a multi-process run should); then look for a
    previous run.

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
    if lock:  # before looking: a run started at the same moment then finds this one's lock, not an empty folder
        lock_output_dir(path)
    previous = find_run_files(path, run_files)
    if previous and not overwrite and not resuming:
        names = ", ".join(str(p.relative_to(path)) for p in previous[:5]) + (", ..." if len(previous) > 5 else "")
        raise OutputDirError(
            f"--output_dir {path} already holds a run ({names}). Pass --resume_from_checkpoint latest to continue it, "
            "--overwrite_output_dir to delete it and start afresh, or choose another --output_dir."
        )
    return previous


def checkpoint_step(path: Path) -> int | None:
    """The step of a checkpoint folder, named `checkpoint-<step>` exactly (as transformers' `get_last_checkpoint`
    reads them); None for anything else (`checkpoint-2-backup`, `checkpoint-4.tmp`, a file)."""
    found = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(found[1]) if found and path.is_dir() else None


def check_no_checkpoint_lookalikes(output_dir: str | os.PathLike) -> None:
    """transformers' Trainer deletes the oldest `checkpoint-*` folders under `--save_total_limit`, lookalikes such as
    `checkpoint-2-backup` included: refuse to start where it would delete a folder that no run wrote."""
    lookalikes = sorted(
        p.name for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) is None
    )
    if lookalikes:
        raise OutputDirError(
            f"--output_dir {output_dir} holds {', '.join(lookalikes)}, which is not a checkpoint, but transformers' "
            "Trainer would take it for one and delete it under --save_total_limit: move it out of --output_dir, or "
            "drop --save_total_limit."
        )


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
