"""Brazilian Portuguese transcripts: their normalisation (shared by CTC training, decoding and WER/CER scoring) and the
character vocabulary of a CTC tokenizer.

The same function prepares training targets and evaluation references, so that a recogniser is scored against text in
the form it was trained to produce: Unicode NFC, lower case, accented letters kept (á à â ã é ê í ó ô õ ú ü ç),
punctuation replaced by spaces, runs of whitespace collapsed.

    >>> normalize_text("Você já viu a cidade? Não, ainda não!")
    'você já viu a cidade não ainda não'
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

# Punctuation that never reaches the vocabulary. Each occurrence becomes a space (then spaces are collapsed), so
# "cidade?Não" gives two words and "guarda-chuva" gives "guarda chuva". The word delimiter "|" is here too.
DEFAULT_CHARS_TO_IGNORE: tuple[str, ...] = (
    ",", "?", "¿", ".", "!", "¡", "-", "‐", "–", "—", ";", ":", '"', "“", "”", "„", "'", "’", "‘", "`", "´", "%", "…",
    "«", "»", "‹", "›", "(", ")", "[", "]", "{", "}", "/", "\\", "*", "#", "&", "_", "~", "^", "=", "+", "<", ">", "|",
    "·", "•",
)  # fmt: skip


def chars_to_ignore_regex(chars_to_ignore: Iterable[str]) -> re.Pattern[str] | None:
    """A compiled character class that matches any character of `chars_to_ignore` (`None` when there are none)."""
    return _compile("".join(sorted(set("".join(chars_to_ignore)))))


@functools.lru_cache(maxsize=16)
def _compile(chars: str) -> re.Pattern[str] | None:
    return re.compile(f"[{re.escape(chars)}]") if chars else None


def normalize_text(text: str | None, chars_to_ignore: Iterable[str] | None = DEFAULT_CHARS_TO_IGNORE) -> str:
    """Normalise a Brazilian Portuguese transcript for CTC training and WER/CER scoring.

    NFC (so "ã" typed as "a" + combining tilde equals the precomposed "ã"), lower case, every character of
    `chars_to_ignore` replaced by a space, whitespace runs (tabs, no-break spaces, ...) collapsed to one space and
    stripped. Letters, accented or not, and any character not in `chars_to_ignore` (digits, "ñ", ...) are kept.
    `None` gives "".
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text).lower()
    pattern = chars_to_ignore_regex(chars_to_ignore or ())
    if pattern is not None:
        text = pattern.sub(" ", text)
    return unicodedata.normalize("NFC", " ".join(text.split()))


def build_vocabulary(
    texts: Iterable[str], word_delimiter_token: str = "|", unk_token: str = "[UNK]", pad_token: str = "[PAD]"
) -> dict[str, int]:
    """Character vocabulary of (normalised) transcripts for a `Wav2Vec2CTCTokenizer`.

    `pad_token` gets id 0 (it doubles as the CTC blank), `unk_token` 1, `word_delimiter_token` (standing for the space)
    2, then every other character of `texts` in sorted order.
    """
    characters = set()
    for text in texts:
        characters.update(text)
    characters -= {" ", word_delimiter_token, unk_token, pad_token}
    tokens = [pad_token, unk_token, word_delimiter_token, *sorted(characters)]
    return {token: index for index, token in enumerate(tokens)}


__all__ = ["DEFAULT_CHARS_TO_IGNORE", "build_vocabulary", "chars_to_ignore_regex", "normalize_text"]
