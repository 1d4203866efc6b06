"""Word-level tokenizer for the reference model's closed vocabulary.

    >>> tok = WordTokenizer(["a", "red", "circle"])
    >>> tok.decode(tok.encode("a red circle"))
    'a red circle'
    >>> tok.encode("a blue circle")[1] == tok.unk_id
    True
"""
from __future__ import annotations

import re
from typing import Iterable

SPECIALS = ("<pad>", "<bos>", "<sep>", "<eos>", "<unk>")


def normalise_text(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces."""
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


class WordTokenizer:
    """Maps words to ids; specials first (<pad>=0, <bos>, <sep>, <eos>, <unk>)."""

    def __init__(self, words: Iterable[str]):
        extra = sorted({w for w in words if w not in SPECIALS})
        self.vocab: list[str] = list(SPECIALS) + extra
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.sep_id, self.eos_id, self.unk_id = range(5)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in normalise_text(text).split()]

    def decode(self, ids: Iterable[int], stop_at_eos: bool = True) -> str:
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id and stop_at_eos:
                break
            if i >= len(SPECIALS):
                words.append(self.vocab[i])
            elif i == self.unk_id:
                words.append("<unk>")
        return " ".join(words)

    def prompt_ids(self, prompt: str) -> list[int]:
        """[<bos>] prompt [<sep>]: the part before the answer; the model reads the gesture head at <sep>."""
        return [self.bos_id, *self.encode(prompt), self.sep_id]
