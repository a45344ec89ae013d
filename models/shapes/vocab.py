"""Vocabulary of the built-in shapes model: the grammar's words, the character words and reserved
trigger words (for character LoRAs), in a fixed order so token ids never move.

    from reel.models.shapes.vocab import build_tokenizer
    tok = build_tokenizer()          # PreTrainedTokenizerFast, pad=0, eos=1, unk=2
"""

from __future__ import annotations

from reel.models.shapes.world import BACKGROUNDS, COLORS, DIRECTIONS, EXTRA_COLORS, EXTRA_SHAPES, SHAPES

GRAMMAR_WORDS: tuple[str, ...] = ("a", "moving", "on", "background")
# Reserved trigger words: rare tokens a LoRA can bind to a character (never in base captions).
TRIGGER_WORDS: tuple[str, ...] = ("sks", "ohwx", "zwx", "tok", "xyz")
TEXT_LEN = 32  # max_sequence_length used in training and inference


def vocabulary() -> list[str]:
    """All words, in their fixed order (token id = 3 + index)."""
    words = list(GRAMMAR_WORDS)
    words += list(COLORS) + list(SHAPES) + list(DIRECTIONS) + list(BACKGROUNDS)
    words += list(EXTRA_COLORS) + list(EXTRA_SHAPES) + list(TRIGGER_WORDS)
    return words


def build_tokenizer(model_max_length: int = 512):
    """The word-level tokenizer of the shapes model (see models/wordtok.py)."""
    from reel.models.wordtok import build_word_tokenizer

    return build_word_tokenizer(vocabulary(), model_max_length=model_max_length)
