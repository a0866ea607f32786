"""The frozen-feature probe: a linear CTC head learns to spell from features that carry the characters, and not from
features that carry nothing."""

import torch

from distilxlsr_pt.probe import WORD_DELIMITER, probe_transcripts, train_linear_ctc_probe
from distilxlsr_pt.text import build_vocabulary

TEXTS = ["ola mundo", "bom dia", "boa noite", "mundo bom", "dia a dia", "noite boa"]


def spelled_features(text: str, vocabulary: dict[str, int], width: int = 16) -> torch.Tensor:
    """Frames that hold each character's one-hot code for 3 frames, then a silent (all-zero) frame."""
    frames = []
    for char in text.replace(" ", WORD_DELIMITER):
        code = torch.zeros(width)
        code[vocabulary[char] % width] = 1.0
        frames += [code] * 3 + [torch.zeros(width)]
    return torch.stack(frames)


def test_a_linear_probe_spells_from_features_that_carry_the_characters():
    vocabulary = build_vocabulary(TEXTS, word_delimiter_token=WORD_DELIMITER)
    assert len(vocabulary) <= 16  # each character gets its own code
    features = [spelled_features(text, vocabulary) for text in TEXTS]
    probe = train_linear_ctc_probe(features, TEXTS, vocabulary, steps=300, learning_rate=5e-2)
    assert probe_transcripts(probe, features, vocabulary) == TEXTS
    silence = [torch.zeros(len(f), 16) for f in features]  # no information at all
    blind = train_linear_ctc_probe(silence, TEXTS, vocabulary, steps=300, learning_rate=5e-2)
    assert probe_transcripts(blind, silence, vocabulary) != TEXTS
