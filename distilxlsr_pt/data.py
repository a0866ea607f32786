"""One description of a dataset split (`DatasetSplit`) and the one way to load it, for every script.

A split is named the way transformers' example scripts name one: a Hub dataset or a local folder (`--dataset_name`,
with `--dataset_config_name`), or a local audiofolder (`--data_dir`: DIR/{train,validation,test}/metadata.csv, what
`stand_ins/make_demo_corpus.py` writes), plus the split and its audio and transcript columns. Audio is never decoded
by datasets here: the column is cast to `Audio(decode=False)` and decoded by `audio.load_audio`, the one decoder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Audio, Dataset, IterableDataset, load_dataset
from tqdm.auto import tqdm

from .audio import SAMPLING_RATE, load_audio
from .models import explain_loading_errors
from .text import DEFAULT_CHARS_TO_IGNORE, normalize_text

logger = logging.getLogger(__name__)


@dataclass
class DatasetSplit:
    """One split of a corpus: a Hub dataset or local folder (`name`), or a local audiofolder (`data_dir` alone), its
    config and split, its columns (`text_column` None: audio only; `audio_column` None: text only, such as a language
    model's text) and how many clips to use."""

    name: str | None = None
    config: str | None = None
    data_dir: str | None = None
    split: str = "test"
    audio_column: str | None = "audio"
    text_column: str | None = "transcription"
    max_samples: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.name is None and self.data_dir is None:
            raise ValueError("A dataset needs a name (--dataset_name) or a local audiofolder (--data_dir).")

    @property
    def path(self) -> str:
        """What `load_dataset` is given: the Hub id or folder, or "audiofolder" for `data_dir` alone."""
        return self.name or "audiofolder"

    @property
    def local(self) -> bool:
        return self.name is None or self.name == "audiofolder" or os.path.isdir(self.name)

    @property
    def short_name(self) -> str:
        return Path(self.data_dir or self.name).name if self.local else self.name

    @property
    def label(self) -> str:
        return f"{self.short_name}{'/' + self.config if self.config else ''} ({self.split})"

    def load(self, streaming: bool = False, missing_ok: bool = False) -> Dataset | IterableDataset | None:
        """The split with its audio column (if any) undecoded (`Audio(decode=False)`), columns checked, the first
        `max_samples` clips. A dataset without this split raises `ValueError`, or gives None with `missing_ok`; a Hub id
        not cached while the Hub is offline raises a one-sentence `LoadingError`."""
        try:
            with explain_loading_errors(self.path, "--dataset_name"):
                dataset = load_dataset(
                    self.path,
                    self.config,
                    data_dir=self.data_dir,
                    split=self.split,
                    cache_dir=self.cache_dir,
                    streaming=streaming,
                )
        except ValueError as error:
            if not missing_ok or "split" not in str(error).lower():
                raise
            logger.warning("%s has no split %r: %s", self.path, self.split, error)
            return None
        wanted = {column for column in (self.audio_column, self.text_column) if column}
        missing = wanted - set(dataset.column_names)
        if missing:
            raise ValueError(
                f"{self.label} has no column(s) {sorted(missing)}; its columns are {dataset.column_names}. Set "
                "--audio_column_name / --text_column_name (Common Voice: --text_column_name sentence)."
            )
        if self.max_samples is not None:
            dataset = (
                dataset.take(self.max_samples)
                if streaming
                else dataset.select(range(min(self.max_samples, len(dataset))))
            )
        return dataset.cast_column(self.audio_column, Audio(decode=False)) if self.audio_column else dataset


def load_clips(
    split: DatasetSplit,
    sampling_rate: int = SAMPLING_RATE,
    chars_to_ignore=DEFAULT_CHARS_TO_IGNORE,
) -> tuple[list[np.ndarray], list[str]]:
    """Decoded mono audio and normalised references of a split to score; clips with an empty reference are dropped
    (with a warning), unreadable audio is an error (a score must cover the whole split)."""
    dataset = split.load()
    audio, references = [], []
    for example in tqdm(dataset, desc=f"reading {split.label}"):
        reference = normalize_text(example[split.text_column], chars_to_ignore)
        if reference:
            audio.append(load_audio(example[split.audio_column], sampling_rate))
            references.append(reference)
    if len(references) < len(dataset):
        logger.warning("%s: %d clip(s) with an empty transcript not scored.", split.label, len(dataset) - len(audio))
    if not references:
        raise ValueError(f"{split.label} has no clip with a non-empty transcript.")
    return audio, references
