"""TinyVLM: the reference vision-language model every method in the workbench plugs into.

    frames (B, T, C, 112, 112) ──encoder (per frame)──► (B, T, 196, D_enc)
        ──► VisualTokens (dense, or compressed by a method)
        ──► projector + spatial + temporal embedding ──► hook_visual_tokens (B, M, D)
        ──► decoder over [sink | visual | <bos> prompt <sep> | caption <eos>] (one causal sequence)
        ──► lm_head (captions, answers)
    visual tokens ──► gesture_head (the same tokens the decoder receives, laid on the frame × patch grid)

The learned `sink` token at position 0 gives attention a place to rest (Xiao et al. 2023; Darcet et al. 2023,
"registers"). Without it the first visual tokens of the causal sequence become the sink, and training drives
the encoder towards constant outputs — the vision pathway collapses (observed in this project's first run).

Hook points: encoder.hook_patch_embed, encoder.blocks.{i}.hook_out, encoder.hook_out, hook_visual_tokens,
decoder.blocks.{i}.attn.hook_pattern (attention probabilities, computed only when hooked),
decoder.blocks.{i}.hook_out.

    >>> import torch
    >>> from workbench.models.config import TinyVLMConfig
from workbench.models.decoding import DecoderStats, decode_step, prefill, prefill_mask
    >>> m = TinyVLM(TinyVLMConfig(enc_dim=32, dec_dim=32, enc_depth=1, dec_depth=1, vocab=("a", "b")))
    >>> vt = m.encode_dense(torch.rand(1, 2, 3, 112, 112), "rgb")
    >>> m(vt, torch.tensor([[1, 5, 2, 6, 3]]))[0].shape
    torch.Size([1, 5, 7])
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from workbench.models.config import TinyVLMConfig
from workbench.models.decoding import DecoderStats, decode_step, prefill, prefill_mask
from workbench.models.encoder import VisionEncoder
from workbench.models.hooks import HookedModule, HookPoint
from workbench.models.layers import Block
from workbench.models.gesture_head import GridHead
from workbench.models.tokenizer import WordTokenizer
from workbench.models.visual_tokens import VisualTokens

MAX_TEXT_LEN = 64


class TextDecoder(nn.Module):
    def __init__(self, vocab_size: int, dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.tok_embed = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, x, bias=None, causal=True, caches: list[dict] | None = None) -> torch.Tensor:
        """(B, L, D) embeddings → (B, L, D) final hidden states."""
        for i, blk in enumerate(self.blocks):
            x = blk(x, bias, causal, None if caches is None else caches[i])
        return self.norm(x)


@dataclass
class Generation:
    texts: list[str]
    ids: list[list[int]]
    sep_hidden: torch.Tensor  # (B, D) hidden state at <sep> (the prompt's summary)
    gesture_logits: torch.Tensor | None  # (B, classes)
    decoder: DecoderStats | None = None  # visual-token accounting, prefill FLOPs and time
    first_logits: torch.Tensor | None = None  # (B, V) logits of the first generated token


class TinyVLM(HookedModule):
    def __init__(self, cfg: TinyVLMConfig):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = WordTokenizer(cfg.vocab)
        d = cfg.dec_dim
        self.encoder = VisionEncoder(cfg.enc_dim, cfg.enc_depth, cfg.enc_heads, cfg.enc_mlp_ratio,
                                     cfg.image_size, cfg.patch_size)
        self.projector = nn.Linear(cfg.enc_dim, d, bias=False)  # bias-free: see `visual_embeds`
        self.spatial_embed = nn.Parameter(torch.randn(cfg.num_patches, d) * 0.02)
        self.time_embed = nn.Parameter(torch.randn(cfg.max_frames, d) * 0.02)
        self.text_pos = nn.Parameter(torch.randn(MAX_TEXT_LEN, d) * 0.02)
        self.sink = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.decoder = TextDecoder(len(self.tokenizer), d, cfg.dec_depth, cfg.dec_heads, cfg.dec_mlp_ratio)
        self.gesture_head = GridHead(cfg.enc_dim, cfg.image_size // cfg.patch_size, max(len(cfg.gesture_classes), 1))
        self.hook_visual_tokens = HookPoint()
        self.compression = None  # a method attached by workbench.pipeline.attach (None = dense)
        self.apply(self._init)
        self.setup_hooks()

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    # ---- vision side -------------------------------------------------------------------------------
    def encode(self, frames: torch.Tensor, modality: str) -> torch.Tensor:
        """(B, T, C, H, W) → (B, T, N, D_enc) dense encoder tokens."""
        b, t = frames.shape[:2]
        if t > self.cfg.max_frames:
            raise ValueError(f"{t} frames exceed the model's max_frames={self.cfg.max_frames}")
        out = self.encoder(frames.flatten(0, 1), modality)  # (B·T, N, D)
        return out.view(b, t, *out.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.sink.device

    def encode_dense(self, frames: torch.Tensor, modality: str) -> VisualTokens:
        return VisualTokens.dense(self.encode(frames, modality))

    def visual_embeds(self, vt: VisualTokens) -> torch.Tensor:
        """Decoder-space visual tokens (B, M, D): projection + spatial + mean temporal embedding of the run.

        The visual tokens cannot carry a component shared by all of them: encoder features are normalised
        per modality (`VisionEncoder.finish`), the projection has no bias, and the position embeddings are
        centred. With a shared component available, Adam grows it from tiny consistent gradients until the
        content is buried and the decoder ignores vision (observed in this project's first runs).
        """
        time = self.time_embed - self.time_embed.mean(0)
        csum = torch.cat([time.new_zeros(1, time.shape[1]), time.cumsum(0)])
        run = (vt.t_end - vt.t_start + 1).to(csum.dtype)[..., None]  # (B, M, 1)
        temb = (csum[vt.t_end + 1] - csum[vt.t_start]) / run
        space = self.spatial_embed - self.spatial_embed.mean(0)
        return self.hook_visual_tokens(self.projector(vt.embeds) + space[vt.patch] + temb)

    # ---- language side -----------------------------------------------------------------------------
    def text_embeds(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if offset + ids.shape[1] > MAX_TEXT_LEN:
            raise ValueError(f"text longer than {MAX_TEXT_LEN} tokens")
        return self.decoder.tok_embed(ids) + self.text_pos[offset: offset + ids.shape[1]]

    def sequence(self, vt: VisualTokens, text_ids: torch.Tensor, visual: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder input [sink | visual | text] (B, 1 + M + Lt, D); visual tokens start at index 1."""
        sink = self.sink.expand(vt.embeds.shape[0], -1, -1)
        visual = self.visual_embeds(vt) if visual is None else visual
        return torch.cat([sink, visual, self.text_embeds(text_ids)], 1)

    def gesture_logits(self, vt: VisualTokens, visual: torch.Tensor | None = None) -> torch.Tensor:
        """(B, classes) from the visual tokens the decoder receives (`visual` is accepted for call compatibility
        and unused: the head reads the encoder-space tokens on their frame × patch grid)."""
        return self.gesture_head(vt)

    @staticmethod
    def key_bias(vt: VisualTokens, n_text: int) -> torch.Tensor:
        """(B, 1 + M + n_text) additive key bias of the whole sequence (0 for the sink and text)."""
        kb = vt.attn_key_bias()
        return torch.cat([kb.new_zeros(kb.shape[0], 1), kb, kb.new_zeros(kb.shape[0], n_text)], 1)

    @classmethod
    def _prefill_bias(cls, vt: VisualTokens, n_text: int) -> torch.Tensor:
        """(B, 1, L, L) causal mask plus the key bias."""
        return prefill_mask(cls.key_bias(vt, n_text))

    def forward(self, vt: VisualTokens, text_ids: torch.Tensor,
                visual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced pass over [sink | visual | text]: (logits (B, Lt, V), hidden (B, Lt, D)) at text
        positions. `visual` = precomputed `visual_embeds(vt)` (to share it with the gesture head)."""
        h = self.decoder(self.sequence(vt, text_ids, visual), self._prefill_bias(vt, text_ids.shape[1]),
                         causal=True)
        ht = h[:, 1 + vt.num_tokens:]
        return self.decoder.lm_head(ht), ht

    @torch.no_grad()
    def generate(self, vt: VisualTokens, prompt: str | None = None, max_new_tokens: int = 48, pruner=None,
                 count: bool = False, gesture: bool = True) -> Generation:
        """Greedy decoding with a KV cache; one shared prompt for the batch.

        pruner: a decoder-side method (`models/decoder_protocol.DecoderMethod`: SparseVLM, FastV, random) that
        prunes visual tokens once, at prefill; generation reuses the pruned caches. count=True measures the
        prefill (projector, decoder, first token's logits) with FlopCounterMode; otherwise it is timed.
        gesture=False skips the gesture head (its logits are None), e.g. for questions about RGB clips.
        """
        from workbench.eval.flops import count_flops
        tok = self.tokenizer
        prompt_ids = tok.prompt_ids(self.cfg.caption_prompt if prompt is None else prompt)
        b = vt.embeds.shape[0]
        ids = torch.tensor(prompt_ids).expand(b, -1)
        plan = pruner.plan(len(self.decoder.blocks)) if pruner is not None else None
        name = getattr(pruner, "name", "decoder")

        def run():
            visual = self.visual_embeds(vt)
            pre = prefill(self.decoder, self.sequence(vt, ids, visual), self.key_bias(vt, ids.shape[1]), vt, plan,
                          name)
            return visual, pre, self.decoder.lm_head(pre.hidden[:, -1])

        start = time.perf_counter()
        if count:
            (visual, pre, first), flops = count_flops(run)
            pre.stats.flops = flops
        else:
            visual, pre, first = run()
        pre.stats.ms = (time.perf_counter() - start) * 1e3
        pre.stats.outer_flops = 2 * vt.embeds.shape[1] * vt.embeds.shape[2] * visual.shape[2] \
            + 2 * visual.shape[2] * first.shape[1]  # projector + the first token's logits (per sample)
        caches, sep_hidden = pre.caches, pre.hidden[:, -1]
        out = torch.full((b, max_new_tokens), tok.pad_id, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        nxt = first.argmax(-1)
        room = min(max_new_tokens, MAX_TEXT_LEN - len(prompt_ids))
        for step in range(room):
            out[:, step] = torch.where(done, tok.pad_id, nxt)
            done |= nxt == tok.eos_id
            if bool(done.all()) or step == room - 1:
                break
            h = decode_step(self.decoder, self.text_embeds(nxt[:, None], len(prompt_ids) + step), caches)
            nxt = self.decoder.lm_head(h[:, -1]).argmax(-1)
        id_lists = [[int(i) for i in row if i != tok.pad_id] for row in out]
        texts = [tok.decode(r) for r in id_lists]
        logits = self.gesture_logits(vt, visual) if self.cfg.gesture_classes and gesture else None
        return Generation(texts, id_lists, sep_hidden, logits, pre.stats, first)
