"""What differs between the supported Hugging Face VLM families: how frames reach the tower, how tower features
become language-model tokens, and how the prompt places them. Everything else (STTF, the decoder driver, the
pipeline) is shared.

| family | tower (frames) | tower → LM tokens | video | one clip's visual block |
|---|---|---|---|---|
| LLaVA-1.5 (`llava`: CLIP + Llama) | CLIP at its size, one frame each | projector per patch (CLS dropped) | no video path: per-frame images | T·N `<image>` tokens back to back where the template puts its image |
| Qwen2-VL (`qwen2_vl`) | pairs of frames (temporal patch 2; odd T: last frame repeated) | PatchMerger over 2×2 windows | its own video path (`pixel_values_videos`, `video_grid_thw`, M-RoPE) | T/2·N/4 `<|video_pad|>` |
| LLaVA-OneVision (`llava_onevision`: SigLIP + Qwen2) | SigLIP at its size, one frame each | projector, 2×2 bilinear pooling, one newline token | its own video path (`pixel_values_videos`) | T·⌈g/2⌉² + 1 `<video>` |

The language model always gets the features through its own `forward` (`mm_encoder_outputs=`, the entry point
transformers 5 has for precomputed vision features) and computes its own positions (M-RoPE included); tokens
dropped by STTF's fusion are removed afterwards by the driver (`driver.VisualBlock.keep`), keeping positions.
transformers' video processors need torchvision (never installed here), so the video tensors are built from
the checkpoint's *image* processor (its resize / rescale; normalisation in `HFTower.normalise`, the same
float32 ops): Qwen2-VL's layout is that of its video processor (merge-window order, (C, 2, p, p) patches).

    >>> from workbench.models.hf.tiny import tiny_qwen2vl
    >>> fam = Qwen2VLFamily(*tiny_qwen2vl())
    >>> fr = fam.tower_frames(np.zeros((3, 20, 20, 3), np.uint8))  # 3 frames → 2 temporal patches (last repeated)
    >>> fr.shape, fam.lm_tokens_per_tower_frame
    (torch.Size([2, 6, 16, 16]), 4)
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from workbench.models.hf.tower import HFTower, clip_tower, qwen2vl_tower, siglip_tower


def _outputs(pooled):
    from transformers.modeling_outputs import BaseModelOutputWithPooling
    return BaseModelOutputWithPooling(pooler_output=pooled)


class Family:
    """Per-family glue. `hf` the unmodified *ForConditionalGeneration model, `parts` its processor (tokenizer,
    image_processor, chat_template)."""

    name = ""
    title = ""
    video_note = ""
    placeholder = ""  # the token the chat template writes for the visual input
    content_type = "video"

    def __init__(self, hf, parts):
        self.hf, self.parts = hf, parts
        self.tok = parts.tokenizer
        self.tower: HFTower = self._tower()

    # ---- frames -----------------------------------------------------------------------------------------------
    def _resize(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 → (T, 3, H', W') float32 in [0, 1]: the processor's resize (+ crop) and rescale."""
        out = self.parts.image_processor(list(frames), do_normalize=False, return_tensors="pt")
        return out["pixel_values"]

    def tower_frames(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 video frames → (T', C', H', W') tower frames in [0, 1], cut to whole patches (the
        patch conv never sees the rest: SigLIP-384 with 14-px patches reads 378 of 384 pixels)."""
        (gh, gw), p = self.tower.grid, self.tower.patch_size
        return self._resize(frames)[..., : gh * p, : gw * p]

    def video_frames(self, n_tower_frames: int) -> int:
        return n_tower_frames

    def _feature_layer(self, strategy: str) -> int:
        """The one vision feature layer the config reads, refused unless it is the tested strategy."""
        c = self.hf.config
        if c.vision_feature_select_strategy != strategy or not isinstance(c.vision_feature_layer, int):
            from workbench.errors import CheckpointError
            raise CheckpointError(f"{self.title} is supported with one vision feature layer and the {strategy!r} "
                                  f"strategy, not {c.vision_feature_layer!r} / {c.vision_feature_select_strategy!r}")
        return c.vision_feature_layer

    # ---- the unmodified HF path (dense features; reference inputs for tests) ----------------------------------------
    def dense(self, frames: torch.Tensor) -> torch.Tensor:
        """(T', C', H', W') → (T', N, Dv) features through the unmodified HF tower (row-major patches)."""
        raise NotImplementedError

    def hf_inputs(self, frames: torch.Tensor) -> dict:
        """Pixel inputs for the unmodified model's own `generate` (tests compare against it)."""
        raise NotImplementedError

    # ---- tower features → language-model tokens ---------------------------------------------------------------------
    def lm_features(self, grid: torch.Tensor, fresh: torch.Tensor):
        """grid (T', N, Dv) tower features, fresh (T', N) bool (a patch's run starts at that frame) →
        (mm_encoder_outputs, keep (M,) bool: LM tokens with any fresh input, in the LM's order)."""
        raise NotImplementedError

    @property
    def lm_tokens_per_tower_frame(self) -> int:
        raise NotImplementedError

    def n_visual(self, n_tower_frames: int) -> int:
        return n_tower_frames * self.lm_tokens_per_tower_frame

    # ---- the prompt ---------------------------------------------------------------------------------------------------
    def prompt_text(self, prompt: str) -> str:
        conv = [{"role": "user", "content": [{"type": self.content_type}, {"type": "text", "text": prompt}]}]
        return self.tok.apply_chat_template(conv, chat_template=self.parts.chat_template, tokenize=False,
                                            add_generation_prompt=True)

    def inputs(self, prompt: str, n_tower_frames: int) -> tuple[dict, int, int]:
        """Token inputs for `generate` with the visual block expanded: (kwargs, block start, block length)."""
        text = self.prompt_text(prompt)
        if text.count(self.placeholder) != 1:
            raise ValueError(f"the chat template must place exactly one {self.placeholder!r}; got {text!r}")
        m = self.n_visual(n_tower_frames)
        ids = self.tok(text.replace(self.placeholder, self.placeholder * m), return_tensors="pt")["input_ids"]
        vis = (ids[0] == self.tok.convert_tokens_to_ids(self.placeholder)).nonzero().squeeze(1)
        if len(vis) != m or int(vis[-1] - vis[0]) + 1 != m:
            raise ValueError(f"{self.title}: the visual tokens are not one contiguous block of {m}")
        kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        kw.update(self._extra_inputs(ids, n_tower_frames))
        return kw, int(vis[0]), m

    def _extra_inputs(self, ids: torch.Tensor, n_tower_frames: int) -> dict:
        return {}


class LlavaFamily(Family):
    name, title, placeholder, content_type = "llava", "LLaVA-1.5", "<image>", "image"
    video_note = "per-frame images (LLaVA-1.5 has no video path), their tokens back to back"

    def _tower(self):
        return clip_tower(self.hf.model.vision_tower, self._feature_layer("default"), self.parts.image_processor)

    @property
    def lm_tokens_per_tower_frame(self) -> int:
        return self.tower.num_patches

    def dense(self, frames):
        out = self.hf.model.vision_tower(self.tower.normalise(frames), output_hidden_states=True)
        return out.hidden_states[self.hf.config.vision_feature_layer][:, 1:]  # (T, 1 + N, Dv) → CLS dropped

    def hf_inputs(self, frames):
        return {"pixel_values": self.tower.normalise(frames)}

    def lm_features(self, grid, fresh):
        feats = self.hf.model.multi_modal_projector(grid)  # (T, N, D)
        return {"image": _outputs(list(feats))}, fresh.flatten()


class Qwen2VLFamily(Family):
    name, title, placeholder = "qwen2vl", "Qwen2-VL", "<|video_pad|>"
    video_note = "its video path: frame pairs as temporal patches (odd T: the last frame repeated), M-RoPE positions"

    def _tower(self):
        g = self._grid()
        return qwen2vl_tower(self.hf.model.visual, g, self.parts.image_processor)

    def _grid(self) -> tuple[int, int]:
        ip = self.parts.image_processor
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
        h, w = smart_resize(112, 112, factor=ip.patch_size * ip.merge_size, min_pixels=ip.size["shortest_edge"],
                            max_pixels=ip.size["longest_edge"])
        return h // ip.patch_size, w // ip.patch_size

    @property
    def _vcfg(self):
        return self.hf.config.vision_config

    def _resize(self, frames):
        """Each frame through the image processor (no normalisation), its patch layout undone → (T, 3, H, W)."""
        ip, v = self.parts.image_processor, self._vcfg
        p, m, tp = v.patch_size, v.spatial_merge_size, v.temporal_patch_size
        out = []
        for f in frames:
            r = ip(f, do_normalize=False, return_tensors="pt")
            _, gh, gw = r["image_grid_thw"][0].tolist()
            x = r["pixel_values"].view(gh // m, gw // m, m, m, 3, tp, p, p)[:, :, :, :, :, 0]  # one temporal copy
            out.append(x.permute(4, 0, 2, 5, 1, 3, 6).reshape(3, gh * p, gw * p))  # (C, gh/m, m, p, gw/m, m, p)
        return torch.stack(out)

    def tower_frames(self, frames):
        x = self._resize(frames)  # (T, 3, H, W)
        tp = self._vcfg.temporal_patch_size
        if x.shape[0] % tp:
            x = torch.cat([x, x[-1:].expand(tp - x.shape[0] % tp, -1, -1, -1)])
        t, c, h, w = x.shape
        return x.view(t // tp, tp, c, h, w).transpose(1, 2).reshape(t // tp, c * tp, h, w)  # channels (c, t)

    def video_frames(self, n_tower_frames):
        return n_tower_frames * self._vcfg.temporal_patch_size

    def pixel_values_videos(self, frames):
        """(T', 3·2, H, W) in [0, 1] → (T'·N, 3·2·p·p) normalised patches in the video processor's layout."""
        v, (gh, gw) = self._vcfg, self.tower.grid
        p, m, tp = v.patch_size, v.spatial_merge_size, v.temporal_patch_size
        x = self.tower.normalise(frames)
        t = x.shape[0]
        x = x.view(t, 3, tp, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 1, 2, 5, 8)
        return x.reshape(t * gh * gw, 3 * tp * p * p)

    def _thw(self, t: int) -> torch.Tensor:
        return torch.tensor([[t, *self.tower.grid]])

    def dense(self, frames):
        t = frames.shape[0]
        out = self.hf.model.visual(self.pixel_values_videos(frames), grid_thw=self._thw(t)).last_hidden_state
        return out.view(t, self.tower.num_patches, -1)[:, self.tower.merge_index]  # HF order → row-major

    def hf_inputs(self, frames):
        return {"pixel_values_videos": self.pixel_values_videos(frames), "video_grid_thw": self._thw(frames.shape[0])}

    @property
    def lm_tokens_per_tower_frame(self) -> int:
        return self.tower.num_patches // self._vcfg.spatial_merge_size ** 2

    def lm_features(self, grid, fresh):
        to_hf = torch.argsort(self.tower.merge_index)  # HF position → row-major patch
        x = grid[:, to_hf].reshape(-1, grid.shape[-1])  # (T'·N, Dv) in merge order
        feats = self.hf.model.visual.merger(x)  # (T'·N/4, D)
        keep = fresh[:, to_hf].reshape(-1, self._vcfg.spatial_merge_size ** 2).any(1)
        return {"video": _outputs((feats,))}, keep

    def _extra_inputs(self, ids, n_tower_frames):
        video = ids == self.hf.config.video_token_id
        return {"video_grid_thw": self._thw(n_tower_frames), "mm_token_type_ids": (video * 2).to(torch.int32)}


class OneVisionFamily(Family):
    name, title, placeholder = "onevision", "LLaVA-OneVision", "<video>"
    video_note = "its video path: SigLIP per frame, 2×2 bilinear pooling, one newline token after the frames"

    def _tower(self):
        return siglip_tower(self.hf.model.vision_tower, self._feature_layer("full"), self.parts.image_processor)

    def dense(self, frames):
        out = self.hf.model.vision_tower(self.tower.normalise(frames), output_hidden_states=True)
        return out.hidden_states[self.hf.config.vision_feature_layer]

    def hf_inputs(self, frames):
        return {"pixel_values_videos": self.tower.normalise(frames)[None]}

    @property
    def lm_tokens_per_tower_frame(self) -> int:
        g = self.tower.grid[0]
        return math.ceil(g / 2) ** 2

    def n_visual(self, n_tower_frames):
        return n_tower_frames * self.lm_tokens_per_tower_frame + 1  # + the newline token

    def lm_features(self, grid, fresh):
        mdl = self.hf.model
        t = grid.shape[0]
        feats = mdl.apply_pooling(mdl.multi_modal_projector(grid)).reshape(1, -1, mdl.image_newline.shape[0])
        pooled = torch.cat([feats, mdl.image_newline[None, None, :]], 1)  # (1, T·n + 1, D), as get_video_features
        hit = mdl.apply_pooling(fresh.float()[..., None])  # (T, n, 1): a pooled token sees a fresh patch
        keep = torch.cat([hit.reshape(-1) > 0, torch.ones(1, dtype=torch.bool)])
        assert keep.numel() == t * self.lm_tokens_per_tower_frame + 1
        return {"video": _outputs(pooled)}, keep


FAMILIES = {"llava": LlavaFamily, "qwen2_vl": Qwen2VLFamily, "llava_onevision": OneVisionFamily}
