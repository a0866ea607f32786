"""Brazilian Portuguese transcripts: their normalisation (shared by CTC training, decoding and WER/CER scoring) and the
character vocabulary of a CTC tokenizer.

The same function prepares training targets and evaluation references, so that a recogniser is scored against text in
the form it was trained to produce: Unicode NFC, lower case, accented letters kept (á à â ã é ê í ó ô õ ú ü ç),
punctuation, symbols and emoji replaced by spaces, invisible format characters removed, runs of whitespace collapsed.
Only letters, digits and punctuation that `chars_to_ignore` leaves reach a CTC vocabulary.

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


# Unicode categories that never reach the vocabulary, whatever `chars_to_ignore` says: symbols (emoji, currency,
# maths, modifier letters such as "^"), enclosing marks (the keycap of "1️⃣"), control characters, private-use and
# unassigned code points, lone surrogates. Each becomes a space, as punctuation does.
SYMBOL_CATEGORIES = frozenset({"Sm", "Sc", "Sk", "So", "Me", "Cc", "Co", "Cn", "Cs"})
# Invisible format characters (category Cf: soft hyphen, byte-order mark, direction marks, zero-width joiners) are
# deleted, so "compu\u00adtador" is one word; the zero-width space alone separates words ("bom\u200bdia": two).
WORD_BREAKING_FORMAT_CHARACTERS = frozenset({"\u200b"})


def _variation_selector(char: str) -> bool:  # (category Mn) picks an emoji's or a glyph's look, nothing to spell
    return "\ufe00" <= char <= "\ufe0f" or "\U000e0100" <= char <= "\U000e01ef"


class _InvisibleAndSymbols(dict):
    """`str.translate` table, filled as characters are met: a symbol gives a space, a format character or variation
    selector nothing, any other character itself."""

    def __missing__(self, codepoint: int) -> str | None:
        char = chr(codepoint)
        category = unicodedata.category(char)
        if char in WORD_BREAKING_FORMAT_CHARACTERS or category in SYMBOL_CATEGORIES:
            replacement = " "
        elif category == "Cf" or _variation_selector(char):
            replacement = None
        else:
            replacement = char
        self[codepoint] = replacement
        return replacement


_INVISIBLE_AND_SYMBOLS = _InvisibleAndSymbols()


def chars_to_ignore_regex(chars_to_ignore: Iterable[str]) -> re.Pattern[str] | None:
    """A compiled character class that matches any character of `chars_to_ignore` (`None` when there are none)."""
    return _compile("".join(sorted(set("".join(chars_to_ignore)))))


@functools.lru_cache(maxsize=16)
def _compile(chars: str) -> re.Pattern[str] | None:
    return re.compile(f"[{re.escape(chars)}]") if chars else None


def normalize_text(text: str | None, chars_to_ignore: Iterable[str] | None = DEFAULT_CHARS_TO_IGNORE) -> str:
    """Normalise a Brazilian Portuguese transcript for CTC training and WER/CER scoring.

    NFC (so "ã" typed as "a" + combining tilde equals the precomposed "ã"), lower case, every character of
    `chars_to_ignore` and every symbol (`SYMBOL_CATEGORIES`: emoji, "$", "°", "+", ...) replaced by a space,
    invisible format characters deleted (a soft hyphen joins: "compu\u00adtador" is "computador") except the
    zero-width space, which separates words ("bom\u200bdia" is "bom dia"), whitespace runs (tabs, no-break spaces,
    ...) collapsed to one space and stripped. Letters, accented or not, digits and punctuation not in
    `chars_to_ignore` are kept. `None` gives "".
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text).lower()
    pattern = chars_to_ignore_regex(chars_to_ignore or ())
    if pattern is not None:
        text = pattern.sub(" ", text)
    text = text.translate(_INVISIBLE_AND_SYMBOLS)
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


__all__ = [
    "DEFAULT_CHARS_TO_IGNORE",
    "SYMBOL_CATEGORIES",
    "WORD_BREAKING_FORMAT_CHARACTERS",
    "build_vocabulary",
    "chars_to_ignore_regex",
    "normalize_text",
]
