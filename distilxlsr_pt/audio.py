"""The one audio decoding path of every script: any file, bytes or 16 kHz array -> 16 kHz mono float32.

Decoding goes through torchcodec (FFmpeg), as datasets' `Audio` feature does: any container or codec FFmpeg reads,
resampled to `sampling_rate` and mixed down to mono. Audio that cannot serve as training data (unreadable, or holding
NaN or infinite samples, which would turn a model's weights into NaN) raises `AudioDecodingError`; the scripts skip
and count such clips.
"""

from __future__ import annotations

import os

import numpy as np

SAMPLING_RATE = 16_000


class AudioDecodingError(ValueError):
    """A clip that cannot be used: missing, unreadable or corrupt, or holding non-finite (NaN, inf) samples."""


AudioSource = dict | str | os.PathLike | bytes | np.ndarray


def load_audio(source: AudioSource, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """
    Decode `source` to a mono float32 array at `sampling_rate` Hz.

    `source` is a path, encoded bytes, a datasets `Audio(decode=False)` value (`{"path": ..., "bytes": ...}`, bytes
    preferred), or an array (NumPy, or anything `np.asarray` takes, such as a CPU tensor) of mono samples already at
    `sampling_rate`. Raises `AudioDecodingError` naming the clip when it cannot be decoded or holds non-finite
    samples, `ValueError` for an array that is not 1-D.
    """
    if not isinstance(source, (dict, str, os.PathLike, bytes)):
        array = np.asarray(source, dtype=np.float32)
        if array.ndim != 1:
            raise ValueError(f"Expected a mono 1-D array of {sampling_rate} Hz samples, got shape {array.shape}.")
        return _finite(array, "<array>")
    if isinstance(source, dict):
        name, data = source.get("path") or "<bytes>", source.get("bytes") or source.get("path")
    else:
        name, data = ("<bytes>" if isinstance(source, bytes) else os.fspath(source)), source
    if data is None:
        raise AudioDecodingError(f"{name}: neither a path nor bytes")
    if isinstance(data, (str, os.PathLike)):
        data = os.fspath(data)
        if not os.path.isfile(data):
            raise AudioDecodingError(f"{name}: no such file")
    from torchcodec.decoders import AudioDecoder  # imported here: loading FFmpeg's libraries takes a moment

    try:
        samples = AudioDecoder(data, sample_rate=sampling_rate, num_channels=1).get_all_samples()
    except Exception as error:  # torchcodec raises RuntimeError / ValueError for corrupt or unsupported audio
        raise AudioDecodingError(f"{name}: cannot decode ({error})") from error
    return _finite(samples.data[0].numpy().astype(np.float32, copy=False), name)


def _finite(array: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise AudioDecodingError(f"{name}: holds NaN or infinite samples")
    return array
