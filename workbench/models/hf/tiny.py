"""Randomly initialised Hugging Face VLMs built offline from configs — tiny ones for tests, real shapes for the
benchmark — each with a real tokenizer, image processor and chat template, as transformers' own tests build them.

A folder written by `save(...)` is what a user's `save_pretrained` folder is: `config.json`, `model.safetensors`,
`generation_config.json`, `tokenizer.json`, `processor_config.json`, `chat_template.jinja`; the workbench loads it
by path (`--model hf:FOLDER`). The tokenizer is a `tokenizers` WordLevel model (whitespace words; the specials are
added tokens, so `<image><image>` splits), wrapped in `PreTrainedTokenizerFast`. Random weights stop at EOS at
once, so `generation_config.min_new_tokens` is set: generated ids can be compared. Qwen2-VL and OneVision folders
hold the processor's parts (tokenizer with its chat template, image processor; see `Parts`), as their processor
classes cannot be built without a video processor (torchvision); the loader reads parts for every family.

    >>> hf, proc = tiny_llava()
    >>> type(hf).__name__, hf.config.vision_config.image_size, type(proc).__name__
    ('LlavaForConditionalGeneration', 16, 'LlavaProcessor')

Shapes (`SHAPES`): "tiny" (tests: hidden 32, 2–4 layers, 16-px images), "real" (benchmark: CLIP ViT-L/14-336,
SigLIP-so400m-384, Qwen2-VL-2B's tower, each with a Qwen2-0.5B-shaped decoder — a Llama of that shape behind
LLaVA's CLIP; depths can be cut with `layers=` / `vision_layers=`). Nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

WORDS = [f"w{i}" for i in range(80)] + ["describe", "the", "clip", "what", "is", "moving", "color", "a", "red",
                                         "blue", "circle", "square", "video", "image", "USER:", "ASSISTANT:"]


def word_tokenizer(specials: list[str], extra: dict[str, str] | None = None):
    """A real fast tokenizer over WORDS: ids 0–3 = <unk> <s> </s> <pad>, then `specials` (added tokens), then words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    base = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {w: i for i, w in enumerate(base + specials + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>", extra_special_tokens=extra or {})
    tok.add_special_tokens({"additional_special_tokens": specials})
    return tok


LLAVA_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
                  "{% if c['type'] == 'image' %}<image>{% endif %}{% endfor %}{% for c in m['content'] %}"
                  "{% if c['type'] == 'text' %} {{ c['text'] }}{% endif %}{% endfor %} {% endif %}{% endfor %}"
                  "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {% for c in m['content'] %}"
                 "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% elif c['type'] == 'image' %}"
                 "<|vision_start|><|image_pad|><|vision_end|>{% else %} {{ c['text'] }}{% endif %}{% endfor %}"
                 " <|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")
ONEVISION_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {% for c in m['content'] %}"
                      "{% if c['type'] == 'video' %}<video>{% elif c['type'] == 'image' %}<image>{% else %}"
                      " {{ c['text'] }}{% endif %}{% endfor %} <|im_end|> {% endfor %}"
                      "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")

SHAPES = ("tiny", "real")


@dataclass
class Parts:
    """A processor as its parts: what Qwen2-VL's and OneVision's processor classes hold, built without their video
    processors (transformers' video processors need torchvision, which this project never installs)."""

    tokenizer: object
    image_processor: object
    chat_template: str

    def save_pretrained(self, folder) -> None:
        self.tokenizer.chat_template = self.chat_template
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)


def _text(kind: str, vocab: int, shape: str, layers: int | None, **kw):
    from transformers import LlamaConfig, Qwen2Config
    if shape == "tiny":
        dims = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=layers or 4, num_attention_heads=4,
                    num_key_value_heads=2)
    else:  # Qwen2-0.5B's shape (for LLaVA too, in a Llama: Vicuna-7B's decoder does not fit this machine's CPU)
        dims = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=layers or 24, num_attention_heads=14,
                    num_key_value_heads=2)
    common = dict(vocab_size=vocab, max_position_embeddings=32768, bos_token_id=1, eos_token_id=2, pad_token_id=3,
                  **dims, **kw)
    if kind == "qwen2_vl_text":  # a plain dict: Qwen2VLConfig builds its own text config (M-RoPE sections)
        return common
    return LlamaConfig(**common) if kind == "llama" else Qwen2Config(**common)


def tiny_llava(shape: str = "tiny", layers: int | None = None, vision_layers: int | None = None):
    """LLaVA-1.5-style: CLIP tower (features of layer −2, CLS dropped) + projector + Llama. → (model, processor)."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    tok = word_tokenizer(["<image>"], {"image_token": "<image>"})
    if shape == "tiny":
        vc = CLIPVisionConfig(image_size=16, patch_size=4, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=vision_layers or 3, num_attention_heads=4, projection_dim=32)
    else:  # CLIP ViT-L/14-336
        vc = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
                              num_hidden_layers=vision_layers or 24, num_attention_heads=16, projection_dim=768,
                              hidden_act="quick_gelu")
    cfg = LlavaConfig(vision_config=vc, text_config=_text("llama", len(tok), shape, layers),
                      image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                      vision_feature_select_strategy="default")
    ip = CLIPImageProcessorPil(size={"shortest_edge": vc.image_size},
                               crop_size={"height": vc.image_size, "width": vc.image_size})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=vc.patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=LLAVA_TEMPLATE)
    return _init(LlavaForConditionalGeneration, cfg), proc


def tiny_qwen2vl(shape: str = "tiny", layers: int | None = None, vision_layers: int | None = None):
    """Qwen2-VL: its own ViT (Conv3d over 2-frame patches, 2-D RoPE, 2×2 patch merger) + M-RoPE Qwen2 decoder."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = word_tokenizer(specials, {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    if shape == "tiny":
        vis = dict(depth=vision_layers or 2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=4,
                   spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        text = _text("qwen2_vl_text", len(tok), shape, layers,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]})
        ip = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=8 * 8,
                                      max_pixels=16 * 16)
    else:  # Qwen2-VL-2B's tower (675M: depth 32, 1280 wide) + a Qwen2-0.5B-shaped decoder
        vis = dict(depth=vision_layers or 32, embed_dim=1280, hidden_size=896, num_heads=16, mlp_ratio=4,
                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        text = _text("qwen2_vl_text", len(tok), shape, layers,
                     rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
        ip = Qwen2VLImageProcessorPil(min_pixels=336 * 336, max_pixels=336 * 336)
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    cfg = Qwen2VLConfig(vision_config=vis, text_config=text, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    return _init(Qwen2VLForConditionalGeneration, cfg), Parts(tok, ip, QWEN_TEMPLATE)


def tiny_onevision(shape: str = "tiny", layers: int | None = None, vision_layers: int | None = None):
    """LLaVA-OneVision: SigLIP tower (last layer, all patches) + projector + 2×2 bilinear pooling of video frames
    + Qwen2 decoder; a video is one block of <video> tokens (frames × pooled grid + one newline token)."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers import SiglipVisionConfig
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
    tok = word_tokenizer(["<|im_start|>", "<|im_end|>", "<image>", "<video>"],
                         {"image_token": "<image>", "video_token": "<video>"})
    if shape == "tiny":
        vc = SiglipVisionConfig(image_size=16, patch_size=4, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=vision_layers or 2, num_attention_heads=4, vision_use_head=False)
    else:  # SigLIP-so400m-patch14-384
        vc = SiglipVisionConfig(image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304,
                                num_hidden_layers=vision_layers or 27, num_attention_heads=16, vision_use_head=False)
    cfg = LlavaOnevisionConfig(vision_config=vc, text_config=_text("qwen2", len(tok), shape, layers).to_dict(),
                               image_token_id=tok.convert_tokens_to_ids("<image>"),
                               video_token_id=tok.convert_tokens_to_ids("<video>"), vision_feature_layer=-1,
                               vision_feature_select_strategy="full", tie_word_embeddings=False,
                               image_grid_pinpoints=[[vc.image_size, vc.image_size]])
    ip = SiglipImageProcessorPil(size={"height": vc.image_size, "width": vc.image_size})
    return _init(LlavaOnevisionForConditionalGeneration, cfg), Parts(tok, ip, ONEVISION_TEMPLATE)


BUILDERS = {"llava": tiny_llava, "qwen2vl": tiny_qwen2vl, "onevision": tiny_onevision}


def _init(cls, cfg, seed: int = 0):
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    model.generation_config.min_new_tokens = 4  # random weights would stop at EOS at once
    model.generation_config.pad_token_id = 3
    return model


def save(family: str, folder: str | Path, shape: str = "tiny", **kw) -> Path:
    """Build `family` ("llava", "qwen2vl", "onevision") and write model + processor to `folder` (save_pretrained).

        >>> import tempfile, os
        >>> d = save("llava", tempfile.mkdtemp())
        >>> sorted(os.listdir(d))[:3]
        ['chat_template.jinja', 'config.json', 'generation_config.json']
    """
    from transformers.utils import logging
    logging.disable_progress_bar()
    model, proc = BUILDERS[family](shape, **kw)
    folder = Path(folder)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


MODEL_TYPES = {"llava": "llava", "qwen2vl": "qwen2_vl", "onevision": "llava_onevision"}


def tiny_vlm(family: str = "llava", shape: str = "tiny", **kw):
    """An `HFVLM` over a freshly built model (no folder): what tests and the benchmark run on.

        >>> tiny_vlm("qwen2vl").cfg.frames_per_step
        2
    """
    from workbench.models.hf.families import FAMILIES
    from workbench.models.hf.vlm import HFVLM
    model, proc = BUILDERS[family](shape, **kw)
    parts = proc if isinstance(proc, Parts) else Parts(proc.tokenizer, proc.image_processor, proc.chat_template)
    return HFVLM(FAMILIES[MODEL_TYPES[family]](model, parts), f"hf:{shape}-{family}").eval()
