"""benchmarks/unit_quality.py: units that follow the speaker score 1 with the speaker and nothing with the text; units
that follow the emitted characters the reverse; blank frames never count for the characters."""

import numpy as np
import pytest
import unit_quality


def test_units_that_follow_the_speaker_or_the_characters_score_so():
    rng = np.random.default_rng(0)
    speakers = ["a", "b", "c", "d"] * 5
    spikes = [np.where(rng.random(200) < 0.4, rng.integers(0, 20, 200), -1) for _ in speakers]
    by_speaker = [np.full(200, "abcd".index(s)) for s in speakers]
    scores = unit_quality.unit_quality(by_speaker, speakers, spikes)
    assert scores["nmi_speaker"] == pytest.approx(1.0) and scores["nmi_character"] < 0.01
    # Units equal to the character where one is emitted; at blank frames, the speaker's id (which must not count).
    by_character = [np.where(s >= 0, s, 100 + u) for s, u in zip(spikes, by_speaker, strict=True)]
    scores = unit_quality.unit_quality(by_character, speakers, spikes)
    assert scores["nmi_character"] == pytest.approx(1.0) and scores["nmi_speaker"] < 0.5
    assert scores["frames"] == 4000 and scores["character_frames"] == sum(int((s >= 0).sum()) for s in spikes)
