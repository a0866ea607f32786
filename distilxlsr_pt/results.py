"""The one results writer: every job's numbers go to `<output_dir>/<job>_results.json`, in one layout.

The layout: a JSON object (UTF-8, two-space indent, keys in the order the job wrote them, a final newline); rates as
fractions, times in seconds unless the key says otherwise. finetune_ctc.py's files keep the Trainer's names
(`train_results.json`, `eval_results.json`, `test_results.json`, `all_results.json`), written here in this layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def results_path(output_dir: str | os.PathLike, job: str) -> Path:
    return Path(output_dir) / f"{job}_results.json"


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` in the results layout to `path` (its folder is made if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_results(output_dir: str | os.PathLike, job: str, results: dict) -> Path:
    """Write a job's results to `<output_dir>/<job>_results.json`; returns the path."""
    return write_json(results_path(output_dir, job), results)


def read_results(output_dir: str | os.PathLike, job: str) -> dict:
    return json.loads(results_path(output_dir, job).read_text(encoding="utf-8"))
