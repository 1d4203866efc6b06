"""`hf:NAME_OR_PATH` → an `HFVLM`, offline, with the refusals a user needs to read.

    hf:./my-llava            a folder written by save_pretrained (model + processor)
    hf:llava-hf/llava-1.5-7b-hf   a hub name, found only in the local Hugging Face cache (never downloaded)

Refused at once, with a `CheckpointError` (CLI exit status 3) saying what to do:
- a name not in the local cache (HF_HUB_OFFLINE=1 is set by `import workbench`; `local_files_only` lookups, so
  no hub retry loop): where the cache is and how to put the checkpoint there, or pass a folder;
- a folder that does not exist or holds no config.json;
- an architecture the adapters do not cover (`SUPPORTED`: model type, vision tower, decoder);
- a transformers version outside the tested range (`TESTED_TRANSFORMERS`, pinned in pyproject.toml): the
  adapters read model internals that change between releases (ENVIRONMENT.md lists what 5.1x → 5.24 renamed).

The checkpoint's own processor parts are used: its tokenizer (with its chat template) and its image processor
(PIL backend here: torchvision is never installed). Weights load in float32, eval mode; attention as the
checkpoint configures it (sdpa by default).

    >>> import tempfile
    >>> from workbench.models.hf.tiny import save
    >>> m = load_hf("hf:" + str(save("llava", tempfile.mkdtemp())))
    >>> m.cfg.family, m.cfg.grid, m.cfg.decoder_layers
    ('llava', (4, 4), 4)
    >>> load_hf("hf:some-org/not-downloaded")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.errors.CheckpointError: hf:some-org/not-downloaded: not in the local Hugging Face cache (...
"""
from __future__ import annotations

from pathlib import Path

from workbench.errors import CheckpointError

PREFIX = "hf:"
TESTED_TRANSFORMERS = ((5, 24), (5, 25))  # [lower, upper): the releases the adapters are tested on
# model_type → (vision tower model types, decoder model types) the adapters are tested on
SUPPORTED = {
    "llava": (("clip_vision_model",), ("llama",)),
    "qwen2_vl": (("qwen2_vl_vision",), ("qwen2_vl_text",)),
    "llava_onevision": (("siglip_vision_model",), ("qwen2",)),
}
TITLES = {"llava": "LLaVA-1.5 (CLIP + Llama)", "qwen2_vl": "Qwen2-VL", "llava_onevision": "LLaVA-OneVision (SigLIP + Qwen2)"}


def is_hf_name(name: str) -> bool:
    return str(name).startswith(PREFIX)


def check_transformers(version: str | None = None) -> str:
    """The installed transformers version, or a CheckpointError when it is outside the tested range.

        >>> check_transformers("5.24.0")
        '5.24.0'
        >>> check_transformers("4.57.1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.CheckpointError: transformers 4.57.1 is not supported by the Hugging Face adapters: ...
    """
    if version is None:
        import transformers
        version = transformers.__version__
    try:
        major_minor = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        major_minor = (0, 0)
    lo, hi = TESTED_TRANSFORMERS
    if not lo <= major_minor < hi:
        raise CheckpointError(f"transformers {version} is not supported by the Hugging Face adapters: they are "
                              f"tested on {lo[0]}.{lo[1]}.x (pinned in pyproject.toml; the models' internals they "
                              f"hook change between releases); install it with pip install "
                              f"'transformers>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}'")
    return version


def cache_dir() -> str:
    from huggingface_hub import constants
    return str(constants.HF_HUB_CACHE)


def resolve(spec: str) -> Path:
    """The local folder of `hf:NAME_OR_PATH` (a folder, or the snapshot of NAME in the local cache)."""
    name = spec[len(PREFIX):] if is_hf_name(spec) else spec
    name = name.strip()
    if not name:
        raise CheckpointError(f"{spec}: give a folder or a hub name after 'hf:' (e.g. hf:./my-llava)")
    path = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1  # hub names: NAME or ORG/NAME
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{spec}: {path} has no config.json; point at a folder written by "
                                  "save_pretrained (model and processor)")
        return path
    if looks_like_path or path.exists():
        raise CheckpointError(f"{spec}: no such folder {name!r}; point at a folder written by save_pretrained "
                              "(model and processor)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{spec}: not in the local Hugging Face cache ({cache_dir()}); this machine works offline "
            f"(HF_HUB_OFFLINE=1), so nothing is downloaded. On a machine with internet run "
            f"`huggingface-cli download {name}` and copy its models--{name.replace('/', '--')} folder into that "
            f"cache (or set HF_HUB_CACHE), or save the model and its processor with save_pretrained and pass the "
            f"folder: --model hf:/path/to/folder") from e


def check_architecture(spec: str, config) -> str:
    """The config's model_type when the adapters cover it (tower and decoder included), else a CheckpointError."""
    mt = getattr(config, "model_type", None)
    arch = ", ".join(getattr(config, "architectures", None) or []) or "no architectures listed"
    supported = "; ".join(f"{TITLES[k]} (model_type {k!r})" for k in SUPPORTED)
    if mt not in SUPPORTED:
        raise CheckpointError(f"{spec}: architecture {mt!r} ({arch}) is not supported; the Hugging Face adapters "
                              f"cover {supported}")
    towers, decoders = SUPPORTED[mt]
    vt = getattr(getattr(config, "vision_config", None), "model_type", None)
    dt = getattr(getattr(config, "text_config", None), "model_type", None)
    if vt not in towers or dt not in decoders:
        raise CheckpointError(f"{spec}: {TITLES[mt]} with vision tower {vt!r} and decoder {dt!r} is not supported "
                              f"(tested: towers {towers}, decoders {decoders})")
    return mt


def load_parts(path: Path):
    """The checkpoint's processor as parts: tokenizer (+ chat template) and image processor."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from workbench.models.hf.tiny import Parts
    tok = AutoTokenizer.from_pretrained(path)
    ip = AutoImageProcessor.from_pretrained(path)
    template = tok.chat_template
    if not template and (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text()
    if not template:
        raise CheckpointError(f"{path}: no chat template (tokenizer_config.json or chat_template.jinja); the "
                              "workbench writes prompts with the checkpoint's own template")
    return Parts(tok, ip, template)


def load_hf(spec: str):
    """`hf:NAME_OR_PATH` → HFVLM in eval mode (CheckpointError with a message on every refusal)."""
    import torch

    check_transformers()
    path = resolve(spec)
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.utils import logging

    from workbench.models.hf.families import FAMILIES
    from workbench.models.hf.vlm import HFVLM
    logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{spec}: config.json cannot be read ({e})") from e
    mt = check_architecture(spec, config)
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
        parts = load_parts(path)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{spec}: the checkpoint cannot be loaded ({type(e).__name__}: {e})") from e
    return HFVLM(FAMILIES[mt](model, parts), spec if is_hf_name(spec) else PREFIX + spec).eval()
