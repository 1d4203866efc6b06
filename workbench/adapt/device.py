"""The device: the pocket model (C(s, b, ρ) of TinyVLM) with LoRA adapters, captioning its stream, uploading
uncertain samples (UTS), and applying compressed weight updates from the cloud — all-or-nothing.

State lives in `state_dir`: `state.safetensors` (the current weights, with round and hash in its metadata,
written atomically after every applied update) and `queue/` (uplink payloads not yet acknowledged by the
cloud; `queue.PersistentQueue`). A device built again from the same directory continues where it stopped.

Applying a downlink (`apply_downlink`): parse + checksum (`wire.decode`), the update's base hash must be this
device's current hash, every tensor must exist here with the right shape, the decoded result must hash to the
update's `new_hash`; only then are all tensors written and the state persisted. Any failure raises
`DownlinkRejected` and leaves the weights bit-identical (tests hash before and after).

    >>> import tempfile
    >>> from workbench.methods import ucop
    >>> from workbench.models.registry import create_model
    >>> path = tempfile.mkdtemp() + "/pocket.safetensors"
    >>> _ = ucop.save_pocket(ucop.compress(create_model("tinyvlm-debug"), ucop.UCOPConfig(bits=8, rho=0.1)), path)
    >>> dev = Device(path, tempfile.mkdtemp(), DeviceConfig(adapter_rank=2))
    >>> from workbench.data.shapesworld import make_clip
    >>> obs = dev.observe(make_clip(0), round_index=0, force_upload=True)
    >>> obs.uploaded, obs.tokens_sent < obs.tokens_total, len(dev.queue)
    (True, True, 1)
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from workbench.adapt import dwc, wire
from workbench.adapt.client import CloudClient
from workbench.adapt.lora import add_adapters, trainable_names
from workbench.adapt.queue import PersistentQueue
from workbench.adapt.router import add_router, token_features
from workbench.adapt.tokens import tokens_from_clip, tokens_from_visual
from workbench.adapt.uts import UTSConfig, keep_mask, sequence_confidence, token_uncertainty
from workbench.data.clip import Clip
from workbench.errors import CheckpointError, InputError
from workbench.methods import ucop


class DownlinkRejected(InputError):
    """A weight update the device refused (corrupt, truncated, stale, inconsistent); weights unchanged."""

    def __init__(self, reason: str):
        super().__init__("downlink", reason)


@dataclass(frozen=True)
class DeviceConfig:
    """device_id; the adapters (rank, alpha, seed — the cloud builds the same); UTS; upload_rho: None = the
    device's own token set (its operator's runs), 1.0 = every patch of every frame (send-everything)."""

    device_id: str = "device-0"
    adapter_rank: int = 8
    adapter_alpha: float = 16.0
    adapter_seed: int = 0
    uts: UTSConfig = field(default_factory=UTSConfig)
    upload_rho: float | None = None


@dataclass
class Observation:
    """What the device did with one clip."""

    sample_id: str
    caption: str
    confidence: float
    uploaded: bool
    tokens_total: int  # tokens of the sample's token set
    tokens_sent: int
    payload_bytes: int
    uncertainty: torch.Tensor | None = None  # (K,) per token of the token set
    keep: torch.Tensor | None = None  # (K,) bool, sent
    tokens: object = None  # the full TokenSet (for figures)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_student(pocket_path: str | os.PathLike, rank: int, alpha: float, seed: int):
    """The pocket's runtime model with adapters and the (initial) domain router — what both the device and
    the cloud's copy start from."""
    model = ucop.load_pocket(pocket_path).model()
    add_adapters(model, rank, alpha, seed)
    add_router(model)
    return model


class Device:
    def __init__(self, pocket_path: str | os.PathLike, state_dir: str | os.PathLike, cfg: DeviceConfig):
        self.cfg = cfg
        self.pocket_path = Path(pocket_path)
        self.pocket_sha256 = file_sha256(self.pocket_path)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.model = build_student(self.pocket_path, cfg.adapter_rank, cfg.adapter_alpha, cfg.adapter_seed)
        self.queue = PersistentQueue(self.state_dir / "queue")
        self._pocket_model = None  # the pocket's own weights, loaded when the router first sends a clip there
        self.round = -1  # last applied round
        self.update_names: list[str] = []  # fixed by `agree` / `register`
        self._restore()
        self.hash = self.weights_hash()

    # ---- state ---------------------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.model.state_dict().items()}

    def weights_hash(self) -> str:
        return wire.state_hash(self.weights())

    def _state_file(self) -> Path:
        return self.state_dir / "state.safetensors"

    def _restore(self) -> None:
        path = self._state_file()
        if not path.is_file():
            return
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            values = {k: f.get_tensor(k) for k in f.keys()}
        try:
            self.model.load_state_dict(values, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: the saved device state does not fit this pocket model ({e})") from e
        if wire.state_hash(self.weights()) != meta.get("hash"):
            raise CheckpointError(f"{path}: the saved device state fails its hash check")
        self.round = int(meta.get("round", -1))

    def _persist(self) -> None:
        path = self._state_file()
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in self.weights().items()}, str(tmp),
                  metadata={"hash": self.hash, "round": str(self.round)})
        os.replace(tmp, path)

    def registration(self, akd: dict, codec: dict, domain: str = "source") -> dict:
        """The body of the cloud registration: pocket identity, adapters, requested AKD and codec, the
        deployment's domain (the cloud picks its specialist teacher), weights hash."""
        return {"pocket_sha256": self.pocket_sha256, "adapter": {"rank": self.cfg.adapter_rank,
                "alpha": self.cfg.adapter_alpha, "seed": self.cfg.adapter_seed}, "akd": akd, "codec": codec,
                "domain": domain, "hash": self.hash, "round": self.round}

    # ---- routing (router.py) ---------------------------------------------------------------------------
    def routes_to_adapted(self, clip: Clip) -> bool:
        """Whether the router sends `clip` to the adapted weights (always, until a cloud has fitted it)."""
        r = self.model.domain_router
        if not bool(r.weight.any()):
            return bool(r.bias[0] > 0)
        return bool(r(token_features(tokens_from_clip(clip, self.model.compression.cfg.rho, self.model.cfg.patch_size))) > 0)

    def pocket_model(self):
        """The pocket's runtime model, unadapted (what a clip the router keeps on the source domain meets)."""
        if self._pocket_model is None:
            self._pocket_model = ucop.load_pocket(self.pocket_path).model().eval()
        return self._pocket_model

    def model_for(self, clip: Clip):
        return self.model if self.routes_to_adapted(clip) else self.pocket_model()

    @torch.no_grad()
    def captions(self, clips) -> tuple[dict[str, str], float]:
        """sample_id → caption of each clip through the weights the router picks; and the share of clips
        that were captioned with the adapted weights."""
        from workbench.adapt.evaluation import device_captions
        clips = list(clips)
        adapted = [self.routes_to_adapted(c) for c in clips]
        caps = device_captions(self.model, [c for c, a in zip(clips, adapted) if a])
        if not all(adapted):
            caps |= device_captions(self.pocket_model(), [c for c, a in zip(clips, adapted) if not a])
        return {c.sample_id: caps[c.sample_id] for c in clips}, sum(adapted) / max(len(clips), 1)

    # ---- uplink --------------------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, clip: Clip, round_index: int, force_upload: bool | None = None) -> Observation:
        """Caption `clip`; if the gate (or `force_upload`) says so, queue its kept tokens for upload.
        force_upload: None = the gate decides (or every sample when the gate is off), True/False = override."""
        m, u = self.model_for(clip), self.cfg.uts
        frames = torch.from_numpy(np.ascontiguousarray(clip.frames))[None]  # (1, T, C, H, W)
        vt, _ = m.compression.visual_tokens(m, frames, clip.modality, clip)
        gen = m.generate(vt)
        conf = sequence_confidence(m, vt, gen.ids[0])
        upload = (conf < u.threshold or not u.gate) if force_upload is None else force_upload
        tokens = (tokens_from_visual(clip, vt, m.cfg.patch_size) if self.cfg.upload_rho is None
                  else tokens_from_clip(clip, self.cfg.upload_rho, m.cfg.patch_size))
        obs = Observation(clip.sample_id, gen.texts[0], conf, upload, tokens.num_tokens, 0, 0, tokens=tokens)
        if not upload:
            return obs
        unc = None
        if u.drop > 0:
            unc = token_uncertainty(m, clip, tokens, u, vt.embeds[0] if u.ranking == "magnitude" else None)
            keep = keep_mask(unc, u.drop)
        else:
            keep = torch.ones(tokens.num_tokens, dtype=torch.bool)
        payload = wire.sample_payload(tokens.select(keep), {"device": self.cfg.device_id, "round": round_index,
                                                             "confidence": conf})
        self.queue.put(payload, clip.sample_id)
        obs.tokens_sent, obs.payload_bytes, obs.uncertainty, obs.keep = int(keep.sum()), len(payload), unc, keep
        return obs

    def flush(self, client: CloudClient) -> tuple[int, int]:
        """Send queued payloads oldest first; (sent, bytes). CloudUnavailable propagates with the rest queued."""
        sent = nbytes = 0
        while (item := self.queue.peek()) is not None:
            path, data, _ = item
            client.upload(self.cfg.device_id, data)
            self.queue.ack(path)
            sent, nbytes = sent + 1, nbytes + len(data)
        return sent, nbytes

    # ---- downlink ------------------------------------------------------------------------------------
    def agree(self, akd, codec) -> list[str]:
        """Fix the ordered tensor names an update may carry, for AKD config `akd` and codec `codec`."""
        kind = "full" if codec.name == "full" else akd.trainable
        self.update_names = sorted(trainable_names(self.model, kind, akd.train_stems))
        return self.update_names

    def register(self, client: CloudClient, akd, codec, domain: str = "source") -> dict:
        """Register with the cloud for AKD config `akd`, downlink codec `codec` and `domain` (idempotent)."""
        from dataclasses import asdict
        self.agree(akd, codec)
        return client.register(self.cfg.device_id, self.registration(asdict(akd), asdict(codec), domain))

    def apply_downlink(self, data: bytes) -> dict:
        """Verify and apply one downlink payload, all or nothing; returns its summary."""
        if not self.update_names:
            raise DownlinkRejected("rejected: the device is not registered with a cloud (no agreed tensors)")
        names = self.update_names
        params = dict(self.model.named_parameters())
        try:
            tensors, meta = wire.decode(data, "delta")
            new = dwc.apply_update(tensors, meta, names, {n: p.detach() for n, p in params.items()})
            layout = meta["layout"]
        except (wire.WireError, KeyError, TypeError) as e:
            raise DownlinkRejected(f"rejected: {e}") from e
        if meta.get("base_hash") != self.hash:
            raise DownlinkRejected(f"rejected: the update applies to weights {meta.get('base_hash')!r}, this "
                                   f"device has {self.hash!r}")
        if wire.state_hash({**self.weights(), **new}) != meta.get("new_hash"):
            raise DownlinkRejected("rejected: the decoded update does not produce the weights the cloud computed")
        with torch.no_grad():  # validated: from here nothing can fail half-way
            for name, v in new.items():
                params[name].copy_(v)
        self.hash, self.round = meta["new_hash"], int(meta["round"])
        self._persist()
        shapes = {n: tuple(params[n].shape) for n in names}
        return {"round": self.round, "bytes": len(data), "codec": layout["codec"], "tensors": len(new),
                "router": bool(meta.get("router")), "layers": dwc.layout_summary(layout, names, shapes)}

    def sync(self, client: CloudClient, round_index: int) -> dict:
        """Fetch, verify, apply and acknowledge round `round_index`'s update (a round already applied — its
        acknowledgement lost — is only acknowledged again)."""
        if self.round >= round_index:
            client.ack(self.cfg.device_id, round_index, self.hash)
            return {"round": self.round, "bytes": 0, "already_applied": True}
        data = client.round(self.cfg.device_id, round_index, self.hash)
        info = self.apply_downlink(data)
        client.ack(self.cfg.device_id, round_index, self.hash)
        return info
