"""distilxlsr_pt.audio.load_audio, the one audio decoder: 16 kHz mono float32, bad audio as AudioDecodingError."""

import numpy as np
import pytest
import soundfile

from distilxlsr_pt.audio import AudioDecodingError, load_audio


@pytest.fixture
def noise():
    return (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)


def test_16khz_mono_float_wav_comes_back_unchanged_from_a_path_bytes_or_a_datasets_value(tmp_path, noise):
    soundfile.write(tmp_path / "clip.wav", noise, 16000, subtype="FLOAT")
    data = (tmp_path / "clip.wav").read_bytes()
    for source in (tmp_path / "clip.wav", str(tmp_path / "clip.wav"), data, {"path": "clip.wav", "bytes": data}):
        array = load_audio(source)
        assert array.dtype == np.float32 and array.shape == (16000,)
        np.testing.assert_array_equal(array, noise)


def test_stereo_8khz_pcm16_is_resampled_and_mixed_to_mono(tmp_path):
    t = np.arange(8000) / 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(tmp_path / "stereo.wav", np.stack([tone, tone], axis=1), 8000, subtype="PCM_16")
    array = load_audio({"path": str(tmp_path / "stereo.wav"), "bytes": None})
    assert array.dtype == np.float32 and array.shape == (16000,)
    expected = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    inner = slice(100, -100)  # the edges feel the resampler's filter
    # FFmpeg mixes stereo down with a gain of its own; the feature extractor normalises each clip anyway.
    gain = array[inner] @ expected[inner] / (expected[inner] @ expected[inner])
    assert 0.4 < gain < 1.5
    np.testing.assert_allclose(array[inner], gain * expected[inner], atol=0.02)
    assert load_audio(tmp_path / "stereo.wav", sampling_rate=8000).shape == (8000,)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("rate", [16000, 8000])  # as stored, and through the resampler
def test_non_finite_samples_are_refused(tmp_path, noise, bad_value, rate):
    noise[1234] = bad_value
    soundfile.write(tmp_path / "bad.wav", noise, rate, subtype="FLOAT")
    with pytest.raises(AudioDecodingError, match="bad.wav.*NaN or infinite"):
        load_audio(tmp_path / "bad.wav")


def test_missing_corrupt_and_empty_audio_raise_one_error_type_naming_the_clip(tmp_path):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    for name in ("missing.wav", "corrupt.wav", "empty.wav"):
        with pytest.raises(AudioDecodingError, match=name):
            load_audio(tmp_path / name)
    with pytest.raises(AudioDecodingError, match="<bytes>"):
        load_audio(b"not audio at all")
    with pytest.raises(AudioDecodingError, match="neither a path nor bytes"):
        load_audio({"path": None, "bytes": None})
