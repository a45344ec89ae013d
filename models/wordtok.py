"""A word-level tokenizer for small models, built with the `tokenizers` package.

The built-in `shapes` model and the tiny test models use it instead of the 250k-piece UMT5
SentencePiece model (which would need a download). It follows T5's conventions so diffusers'
WanPipeline tokenises with it unchanged: pad=0, eos=1, unk=2, an `</s>` appended to every prompt,
lower-cased, punctuation split off.

    tok = build_word_tokenizer(["a", "red", "circle"])
    tok.save_pretrained("model/tokenizer")   # loads back with AutoTokenizer.from_pretrained
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def build_word_tokenizer(words: Iterable[str], model_max_length: int = 512):
    """Return a `PreTrainedTokenizerFast` whose vocabulary is SPECIAL_TOKENS followed by `words`."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in words:
        word = word.strip().lower()
        if not word or word in vocab:
            continue
        vocab[word] = len(vocab)

    tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )
