"""`HFVLM`: an unmodified Hugging Face VLM behind the workbench's model protocol (`models/protocol.py`), so
`pipeline.describe`, STTF, SparseVLM, FastV and random pruning run on it as on TinyVLM.

    clip frames (T, 3, 112, 112) ──input_frames──► tower frames at the checkpoint's size (1, T', C', H', W')
        ──encoder-side method (Dense: the HF tower itself; STTF: partial encoding in `encoder`, an HFTower)──►
        VisualTokens on the tower's patch grid ──generate──► LM features (family: projector / merger / pooling),
        the checkpoint's chat template, HF `generate` with the decoder driver's hooks (pruning, fusion drops)

`cfg` (an `HFModelCard`) is what the trace, the CLI and the app read (name, family, patch grid, tokens per
frame); `Generation.visual_tokens` is the number of visual tokens that entered the language model.

    >>> import numpy as np
    >>> from workbench.models.hf.tiny import tiny_llava
    >>> from workbench.models.hf.families import LlavaFamily
    >>> m = HFVLM(LlavaFamily(*tiny_llava()), "tiny-llava")
    >>> fr = m.input_frames(np.random.rand(2, 3, 112, 112).astype(np.float32))
    >>> fr.shape, m.cfg.grid, m.cfg.num_patches
    (torch.Size([1, 2, 3, 16, 16]), (4, 4), 16)
    >>> g = m.generate(m.encode_dense(fr, "rgb"), "describe the clip", max_new_tokens=4)
    >>> len(g.ids[0]), g.visual_tokens
    (4, 32)
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from workbench.models.hf.driver import PrunedPrefill, VisualBlock
from workbench.models.visual_tokens import VisualTokens

MAX_FRAMES = 1024  # tower frames per clip, at most (the decoder's context usually binds first)


@dataclass(frozen=True)
class HFModelCard:
    """What the workbench knows about a loaded HF model (the part of TinyVLMConfig the pipeline reads)."""

    name: str
    family: str
    architecture: str
    grid: tuple[int, int]  # the tower's patch grid per tower frame
    patch_size: int
    image_size: tuple[int, int]  # (H, W) of a tower frame
    num_patches: int  # patches per tower frame (what STTF gates)
    frames_per_step: int  # video frames per tower frame (Qwen2-VL: 2)
    lm_tokens_per_step: int  # language-model visual tokens per tower frame
    max_frames: int  # tower frames that fit in the decoder's context
    decoder_layers: int
    video: str  # how a video reaches the model
    enc_dim: int = 0  # the tower's width, depth (blocks run) and MLP ratio (for analytic FLOPs, METHODS.md §7)
    enc_depth: int = 0
    enc_mlp_ratio: float = 4.0
    caption_prompt: str = "describe the clip"
    gesture_classes: tuple = ()
    transformers: str = ""

    @property
    def max_video_frames(self) -> int:
        return self.max_frames * self.frames_per_step

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class _Decoder:
    """`model.decoder.blocks`: the decoder layers (their number is what decoder-side plans need)."""

    def __init__(self, layers):
        self.blocks = layers


class HFVLM:
    """family: a `families.Family` over the unmodified HF model and its processor parts; name: how it was
    named (hf:…)."""

    def __init__(self, family, name: str, context_margin: int = 128):
        import transformers
        self.family, self.hf = family, family.hf
        self.encoder = family.tower
        self.tokenizer = family.tok
        lm = self.hf.model.language_model
        self.lm = lm
        self.decoder = _Decoder(lm.layers)
        ctx = int(getattr(lm.config, "max_position_embeddings", 4096))
        per = family.lm_tokens_per_tower_frame
        size = tuple(int(s) for s in self._frame_size())
        self.cfg = HFModelCard(name, family.name, type(self.hf).__name__, tuple(self.encoder.grid),
                               self.encoder.patch_size, size, self.encoder.num_patches,
                               family.video_frames(1), per, max(1, min(MAX_FRAMES, (ctx - context_margin) // per)),
                               len(lm.layers), family.video_note, enc_dim=self.encoder.dim,
                               enc_depth=len(self.encoder.blocks), enc_mlp_ratio=self._mlp_ratio(),
                               transformers=transformers.__version__)
        self.compression = None

    def _mlp_ratio(self) -> float:
        fc1 = getattr(self.encoder.blocks[0].mlp, "fc1", None)
        return fc1.out_features / self.encoder.dim if fc1 is not None else 4.0

    def _frame_size(self):
        g, p = self.encoder.grid, self.encoder.patch_size
        return g[0] * p, g[1] * p

    def details(self) -> dict:
        """What the CLI's --json and the app's details say about the model."""
        c = self.cfg
        return {"model": c.name, "family": c.family, "architecture": c.architecture, "patch_grid": list(c.grid),
                "frames_per_tower_frame": c.frames_per_step, "lm_tokens_per_tower_frame": c.lm_tokens_per_step}

    def notes(self) -> list[str]:
        c = self.cfg
        return [f"{c.name}: {self.family.title}, {c.grid[0]}×{c.grid[1]} patches per tower frame, video as "
                f"{c.video}; STTF gates and partial encoding run in its own vision tower"]

    def prompt_words(self, prompt: str) -> list[str]:
        """The tokens after the visual block for this prompt (the text SparseVLM's raters are chosen from)."""
        kw, start, n = self.family.inputs(prompt, 1)
        return self.tokenizer.convert_ids_to_tokens(kw["input_ids"][0, start + n:].tolist())

    # ---- the protocol --------------------------------------------------------------------------------------------
    def eval(self) -> "HFVLM":
        self.hf.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def input_frames(self, clip) -> torch.Tensor:
        """A Clip (or frames (T, 3, H, W) in [0, 1]) → (1, T', C', H', W') tower frames (the processor's resize)."""
        frames = getattr(clip, "frames", clip)
        if getattr(clip, "modality", "rgb") != "rgb" or np.asarray(frames).shape[1] != 3:
            from workbench.errors import InputError
            raise InputError(getattr(clip, "sample_id", "clip"), "Hugging Face VLMs take RGB video; event clips "
                                                                 "run on TinyVLM (the embedded model)")
        u8 = (np.clip(np.asarray(frames, np.float32), 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
        tf = self.family.tower_frames(u8)
        if tf.shape[0] > self.cfg.max_frames:
            from workbench.errors import InputError
            raise InputError("--frames", f"{tf.shape[0] * self.cfg.frames_per_step} frames need "
                                         f"{tf.shape[0] * self.cfg.lm_tokens_per_step} visual tokens, more than "
                                         f"{self.cfg.name}'s context holds; use at most "
                                         f"{self.cfg.max_frames * self.cfg.frames_per_step} frames")
        return tf[None]

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, modality: str = "rgb") -> torch.Tensor:
        """(1, T', C', H', W') → (1, T', N, Dv), every token of every tower frame in one batch: the dense
        baseline. Its blocks are the HF tower's up to the feature layer (LLaVA's HF path also runs the unused last
        layer, not charged here); the features equal the HF tower's (`family.dense`) bit for bit (tested)."""
        return self.encoder(frames[0], modality)[None]

    def encode_dense(self, frames: torch.Tensor, modality: str = "rgb") -> VisualTokens:
        return VisualTokens.dense(self.encode(frames, modality))

    def lm_inputs(self, vt: VisualTokens, prompt: str | None):
        """VisualTokens on the tower grid → (generate kwargs, VisualBlock) for this prompt (batch 1)."""
        if vt.embeds.shape[0] != 1:
            raise ValueError("Hugging Face models run one clip at a time (batch 1)")
        t = int(vt.t_end.max()) + 1 if vt.num_tokens else 1
        grid = vt.to_grid(t, self.cfg.num_patches)[0]  # (T', N, Dv): a fused token fills its whole run
        fresh = torch.zeros(t, self.cfg.num_patches, dtype=torch.bool)
        valid = torch.ones_like(vt.patch[0], dtype=torch.bool) if vt.valid is None else vt.valid[0]
        fresh[vt.t_start[0][valid], vt.patch[0][valid]] = True  # a token's run starts here
        mm, keep = self.family.lm_features(grid, fresh)
        kw, start, n = self.family.inputs(prompt or self.cfg.caption_prompt, t)
        kw["mm_encoder_outputs"] = mm
        return kw, VisualBlock(start, n, None if bool(keep.all()) else keep)

    def _step_counts(self, block: VisualBlock, t: int) -> np.ndarray:
        """(T',) visual tokens entering the LM per tower frame (OneVision's newline counts in the last frame)."""
        keep = torch.ones(block.n, dtype=torch.bool) if block.keep is None else block.keep
        per = self.cfg.lm_tokens_per_step
        counts = keep[: t * per].reshape(t, per).sum(1).double()
        counts[-1] += keep[t * per:].sum()
        return counts.numpy()

    @torch.no_grad()
    def generate(self, vt: VisualTokens, prompt: str | None = None, max_new_tokens: int = 48, pruner=None,
                 count: bool = False, **_):
        """Greedy decoding through HF `generate` (the checkpoint's generation config, do_sample=False) with the
        decoder-side method's plan applied at prefill. count=True counts the prefill (the first model forward:
        embedding, LM, first token's logits) with FlopCounterMode."""
        from workbench.models.tinyvlm import Generation
        kw, block = self.lm_inputs(vt, prompt)
        plan = pruner.plan(len(self.lm.layers)) if pruner is not None else None
        run = PrunedPrefill(self.lm, plan, block, getattr(pruner, "name", "decoder"))
        counter = _PrefillCounter(self.hf) if count else None
        t0 = time.perf_counter()
        with run, (counter or contextlib.nullcontext()):
            out = self.hf.generate(**kw, max_new_tokens=max_new_tokens, do_sample=False, return_dict_in_generate=True,
                                   output_scores=True)
        total_ms = (time.perf_counter() - t0) * 1e3
        new = out.sequences[0, kw["input_ids"].shape[1]:].tolist()
        eos = self.hf.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        ids = [i for i in new if i not in eos and i != self.hf.generation_config.pad_token_id]
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        stats = run.stats
        stats.outer_flops = 2 * self.lm.config.hidden_size * self.lm.config.vocab_size  # the first token's logits
        if counter is not None:
            stats.flops = counter.flops
        gen = Generation([text], [ids], run.last_hidden, None, stats, out.scores[0] if out.scores else None)
        gen.visual_tokens = int(stats.n_input[0])
        t = int(vt.t_end.max()) + 1 if vt.num_tokens else 1
        gen.visual_tokens_per_step = self._step_counts(block, t)
        j = torch.arange(t * self.cfg.lm_tokens_per_step)  # LM visual tokens on the LM's own token grid per frame
        gen.lm_token_map = (j % self.cfg.lm_tokens_per_step, j // self.cfg.lm_tokens_per_step)  # (OneVision's newline: none)
        gen.sequences, gen.total_ms = out.sequences, total_ms
        gen.cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)  # per layer: pruned lengths
        return gen


class _PrefillCounter:
    """FlopCounterMode around the model's first forward inside `generate` (the prefill), via its hooks."""

    def __init__(self, model):
        self.model, self.flops, self._mode, self._handles, self._done = model, 0, None, [], False

    def __enter__(self):
        from workbench.eval.flops import _CPU_SDPA
        from torch.utils.flop_counter import FlopCounterMode

        def pre(mod, args, kwargs):
            if not self._done and self._mode is None:
                self._mode = FlopCounterMode(display=False, custom_mapping=_CPU_SDPA)
                self._mode.__enter__()

        def post(mod, args, kwargs, out):
            if self._mode is not None and not self._done:
                self._mode.__exit__(None, None, None)
                self.flops, self._done = int(self._mode.get_total_flops()), True
        self._handles = [self.model.register_forward_pre_hook(pre, with_kwargs=True),
                         self.model.register_forward_hook(post, with_kwargs=True)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        if self._mode is not None and not self._done:
            self._mode.__exit__(None, None, None)
        return False
