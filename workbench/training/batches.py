"""Training batches: frames + [<bos> prompt <sep> answer <eos>] token sequences with loss positions.

    >>> from workbench.models.tokenizer import WordTokenizer
    >>> tok = WordTokenizer(["describe", "the", "clip", "a", "red", "circle"])
    >>> ids, sep = encode_pair(tok, "describe the clip", "a red circle")
    >>> tok.decode(ids[sep + 1:]), ids[sep] == tok.sep_id
    ('a red circle', True)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workbench.data.clip import Clip
from workbench.models.tokenizer import WordTokenizer


@dataclass
class Batch:
    frames: torch.Tensor  # (B, T, C, H, W)
    modality: str
    text_ids: torch.Tensor  # (B, L) padded with <pad>
    targets: torch.Tensor  # (B, L) next token at each position
    loss_mask: torch.Tensor  # (B, L) bool: positions whose next-token prediction is trained (<sep> … last word)
    sep_index: torch.Tensor  # (B,)
    labels: torch.Tensor | None  # (B,) gesture classes
    concepts: torch.Tensor | None = None  # (B, C) multi-hot scene concepts (ShapesWorld only)

    def to(self, device: torch.device | str) -> "Batch":
        """The batch with every tensor on `device`."""
        move = lambda x: None if x is None else x.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.frames), self.modality, move(self.text_ids), move(self.targets),
                     move(self.loss_mask), move(self.sep_index), move(self.labels), move(self.concepts))


def encode_pair(tok: WordTokenizer, prompt: str, answer: str) -> tuple[list[int], int]:
    """[<bos>] prompt [<sep>] answer [<eos>] and the index of <sep>."""
    head = tok.prompt_ids(prompt)
    return head + tok.encode(answer) + [tok.eos_id], len(head) - 1


def make_batch(clips: list[Clip], tok: WordTokenizer, rng: np.random.Generator, caption_prompt: str,
               qa_prob: float = 0.2) -> Batch:
    """One batch; each clip trains on a random reference caption, or with probability qa_prob a random QA pair."""
    seqs, seps = [], []
    for c in clips:
        if c.qa and rng.random() < qa_prob:
            q, a = c.qa[int(rng.integers(len(c.qa)))]
        else:
            q, a = caption_prompt, c.captions[int(rng.integers(len(c.captions)))]
        ids, sep = encode_pair(tok, q, a)
        seqs.append(ids)
        seps.append(sep)
    length = max(map(len, seqs))
    ids = torch.full((len(clips), length), tok.pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    targets = torch.full_like(ids, tok.pad_id)
    targets[:, :-1] = ids[:, 1:]
    pos = torch.arange(length)[None]
    sep_t = torch.tensor(seps)
    loss_mask = (pos >= sep_t[:, None]) & (targets != tok.pad_id)
    labels = None
    if all(c.label is not None for c in clips):
        labels = torch.tensor([c.label for c in clips])
    concepts = None
    if all("objects" in c.meta for c in clips):
        from workbench.data.shapesworld import concept_vector
        concepts = torch.from_numpy(np.stack([concept_vector(c.meta) for c in clips]))
    frames = torch.from_numpy(np.stack([c.frames for c in clips]))
    return Batch(frames, clips[0].modality, ids, targets, loss_mask, sep_t, labels, concepts)
