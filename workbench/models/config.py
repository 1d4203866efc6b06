"""TinyVLM configuration (one frozen dataclass; saved as JSON inside the safetensors checkpoint).

    >>> cfg = TinyVLMConfig(vocab=("a", "b"))
    >>> cfg.grid, cfg.num_patches, TinyVLMConfig.from_json(cfg.to_json()) == cfg
    (14, 196, True)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class TinyVLMConfig:
    image_size: int = 112
    patch_size: int = 8
    max_frames: int = 32
    enc_dim: int = 128
    enc_depth: int = 4
    enc_heads: int = 4
    enc_mlp_ratio: float = 4.0
    dec_dim: int = 128
    dec_depth: int = 4
    dec_heads: int = 4
    dec_mlp_ratio: float = 4.0
    vocab: tuple[str, ...] = ()  # words after the specials (see tokenizer.SPECIALS)
    gesture_classes: tuple[str, ...] = ()
    caption_prompt: str = "describe the clip"
    gesture_prompt: str = "describe the clip"
    name: str = "tinyvlm"

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TinyVLMConfig":
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        for key in ("vocab", "gesture_classes"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)
