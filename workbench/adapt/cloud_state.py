"""The cloud's persistent state and its round logic (the HTTP layer is `cloud.py`).

Under `root/devices/<id>/`: `config.json` (the registration), `committed.safetensors` (the cloud's copy of the
device's current weights, with hash and round — what the device has applied and acknowledged),
`align.safetensors` (the KD projection, cloud-only), `samples/<round>.<sample>.payload` (every verified uplink
payload, deduplicated by sample id) and `pending-<round>.payload` (a downlink sent but not yet acknowledged).
Everything is written atomically, so a cloud killed at any point restarts from the last complete state; a
round is recomputed identically (training is deterministic in its samples, seed and round index).

Round r (`downlink`): if a pending update for r exists and still applies, return it unchanged; otherwise label
every sample received so far with the teacher (replay of earlier rounds' samples included), add the cloud's own
source-domain rehearsal samples (`replay`, 0 by default: with the router the source domain keeps the pocket's
weights), train the student copy from the committed weights (`akd.train_round`), fit the domain router on the
device's uploads against the cloud's own source clips (`route`; router.py), encode ΔW with the device's codec
(the router's values ride along in fp32), and compute
the exact weights the device will hold after applying it (W + dequant(ΔŴ) — so quantisation error never
accumulates unseen: the next round's ΔW is taken against these). `ack` commits them.

    >>> CloudState.valid_id("device-1"), CloudState.valid_id("../etc")
    (True, False)
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from workbench.adapt import dwc, wire
from workbench.adapt.akd import AKDConfig, LabelledSample, label_sample, make_align, train_round
from workbench.adapt.device import build_student, file_sha256
from workbench.adapt.lora import load_tensors, trainable_names
from workbench.adapt.router import ROUTER_NAMES, fit_router, router_accuracy, token_features
from workbench.errors import InputError
from workbench.adapt.teacher import load_teacher
from workbench.adapt.tokens import tokens_from_clip
from workbench.data.shifts import domain_seeds, shifted_clip

ROUTER_NEGATIVES = 96  # source clips the router is fitted against (at least as many as the device's uploads)
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def source_upload(seed: int, rho: float):
    """A source-domain clip of the cloud's own (a ShapesWorld *teacher* seed) shaped like an upload: the device's
    token budget ρ, a seeded random quarter of the tokens removed."""
    ts = tokens_from_clip(shifted_clip("source", seed), rho)
    return ts.select(torch.rand(ts.num_tokens, generator=torch.Generator().manual_seed(seed)) >= 0.25)


class Conflict(InputError):
    """The request does not fit the cloud's state for this device (HTTP 409)."""


class UnknownDevice(InputError):
    """No device of that id is registered (HTTP 404)."""


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save(path: Path, tensors: dict, meta: dict) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={k: str(v) for k, v in meta.items()})
    os.replace(tmp, path)


def _load(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _config(cls, raw: dict):
    known = {f.name for f in fields(cls)}
    if not isinstance(raw, dict) or set(raw) - known:
        raise InputError("registration", f"unknown {cls.__name__} fields {sorted(set(raw or {}) - known)}")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as e:
        raise InputError("registration", f"bad {cls.__name__}: {e}") from e


@dataclass
class DeviceRecord:
    device_id: str
    root: Path
    akd: AKDConfig
    codec: dwc.CodecConfig
    student: torch.nn.Module
    align: torch.nn.Module
    committed: dict[str, torch.Tensor]
    hash: str
    round: int
    names: list[str]
    domain: str = "source"
    labels: dict[str, LabelledSample] = field(default_factory=dict)
    last_train: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    training: bool = False


class CloudState:
    def __init__(self, root: str | os.PathLike, pocket: str | os.PathLike, teacher: str | os.PathLike):
        self.root = Path(root)
        (self.root / "devices").mkdir(parents=True, exist_ok=True)
        self.pocket = Path(pocket)
        self.pocket_sha256 = file_sha256(self.pocket)
        self.teacher = load_teacher(teacher)
        self.devices: dict[str, DeviceRecord] = {}
        self._replay: dict[float, list] = {}
        self._negatives: dict[float, list[torch.Tensor]] = {}
        self.train_lock = threading.Lock()  # one training at a time on this machine

    @staticmethod
    def valid_id(device_id: str) -> bool:
        return bool(_ID.match(device_id))

    # ---- registration ---------------------------------------------------------------------------------
    def _dir(self, device_id: str) -> Path:
        if not self.valid_id(device_id):
            raise InputError("device id", "must be 1–64 letters, digits, '_' or '-'")
        return self.root / "devices" / device_id

    def _build(self, device_id: str, body: dict) -> DeviceRecord:
        if body.get("pocket_sha256") != self.pocket_sha256:
            raise Conflict("registration", "the device runs another pocket checkpoint than this cloud serves")
        ad = body.get("adapter") or {}
        try:
            rank, alpha, seed = int(ad["rank"]), float(ad["alpha"]), int(ad["seed"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError("registration", f"bad adapter settings ({e})") from e
        if not 1 <= rank <= 64:
            raise InputError("registration", f"adapter rank must be 1..64, not {rank}")
        akd, codec = _config(AKDConfig, body.get("akd") or {}), _config(dwc.CodecConfig, body.get("codec") or {})
        domain = str(body.get("domain", "source"))
        if not _ID.match(domain):
            raise InputError("registration", f"bad domain {domain!r}")
        teacher = self.teacher.for_domain(domain)
        student = build_student(self.pocket, rank, alpha, seed)
        kind = "full" if codec.name == "full" else akd.trainable
        names = sorted(trainable_names(student, kind, akd.train_stems))
        committed = {k: v.detach().clone() for k, v in student.state_dict().items()}
        return DeviceRecord(device_id, self._dir(device_id), akd, codec, student, make_align(student, teacher,
                            akd.seed), committed, wire.state_hash(committed), -1, names, domain)

    def register(self, device_id: str, body: dict) -> DeviceRecord:
        """Create (or re-open after a restart) a device's record; the device's hash must match the cloud's copy."""
        rec = self.devices.get(device_id) or self._reopen(device_id)
        if rec is None:
            rec = self._build(device_id, body)
            if body.get("hash") != rec.hash:
                raise Conflict("registration", "the device's weights are not the pocket checkpoint's (unknown "
                                               "to this cloud)")
            rec.root.mkdir(parents=True, exist_ok=True)
            _atomic_bytes(rec.root / "config.json", json.dumps(body, sort_keys=True).encode())
            _save(rec.root / "committed.safetensors", rec.committed, {"hash": rec.hash, "round": rec.round})
        elif body.get("hash") != rec.hash:
            pending = self._pending(rec)
            if pending is not None and pending[1].get("new_hash") == body.get("hash"):
                self.ack(device_id, int(pending[1]["round"]), body["hash"])  # applied; the ack was lost
            else:
                raise Conflict("registration", f"the device's weights ({body.get('hash')}) differ from the "
                                               f"cloud's copy ({rec.hash})")
        self.devices[device_id] = rec
        return rec

    def _reopen(self, device_id: str) -> DeviceRecord | None:
        d = self._dir(device_id)
        if not (d / "config.json").is_file():
            return None
        rec = self._build(device_id, json.loads((d / "config.json").read_text()))
        rec.committed, meta = _load(d / "committed.safetensors")
        rec.hash, rec.round = meta["hash"], int(meta["round"])
        if (d / "align.safetensors").is_file():
            rec.align.load_state_dict(_load(d / "align.safetensors")[0])
        return rec

    def get(self, device_id: str) -> DeviceRecord:
        rec = self.devices.get(device_id) or self._reopen(device_id)
        if rec is None:
            raise UnknownDevice("device", f"{device_id!r} is not registered")
        self.devices[device_id] = rec
        return rec

    # ---- uplink ---------------------------------------------------------------------------------------
    def add_sample(self, device_id: str, data: bytes, max_bytes: int) -> dict:
        """Verify and store one uplink payload (idempotent per sample id)."""
        rec = self.get(device_id)
        ts = wire.parse_sample(data, max_bytes)
        rnd = int(ts.meta.get("round", 0))
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", ts.sample_id)[:100]
        folder = rec.root / "samples"
        folder.mkdir(exist_ok=True)
        if any(folder.glob(f"*.{safe}.payload")):
            return {"stored": False, "duplicate": True, "sample_id": ts.sample_id}
        _atomic_bytes(folder / f"{rnd:05d}.{safe}.payload", data)
        return {"stored": True, "duplicate": False, "sample_id": ts.sample_id, "tokens": ts.num_tokens}

    def samples(self, rec: DeviceRecord, up_to_round: int) -> list:
        out = []
        for p in sorted((rec.root / "samples").glob("*.payload")) if (rec.root / "samples").is_dir() else []:
            if int(p.name.split(".")[0]) <= up_to_round:
                out.append(wire.parse_sample(p.read_bytes()))
        return out

    # ---- rounds ---------------------------------------------------------------------------------------
    def _pending(self, rec: DeviceRecord) -> tuple[bytes, dict] | None:
        files = sorted(rec.root.glob("pending-*.payload"))
        if not files:
            return None
        data = files[-1].read_bytes()
        return data, wire.decode(data, "delta")[1]

    def downlink(self, device_id: str, index: int, base_hash: str) -> bytes:
        """The update of round `index` for a device whose weights hash to `base_hash`."""
        rec = self.get(device_id)
        if base_hash != rec.hash:
            raise Conflict("round", f"the device's weights ({base_hash}) are not the cloud's copy ({rec.hash}); "
                                    f"register again")
        if index <= rec.round:
            raise Conflict("round", f"round {index} is already committed (last {rec.round})")
        with rec.lock:
            pending = self._pending(rec)
            if pending is not None and int(pending[1]["round"]) == index and pending[1]["base_hash"] == rec.hash:
                return pending[0]
            with self.train_lock:
                rec.training = True
                try:
                    data = self._train(rec, index)
                finally:
                    rec.training = False
            for old in rec.root.glob("pending-*.payload"):
                old.unlink()
            _atomic_bytes(rec.root / f"pending-{index:05d}.payload", data)
            return data

    def replay(self, n: int, student) -> list[LabelledSample]:
        """The first n source-domain samples the cloud holds for rehearsal (its own data: ShapesWorld *teacher*
        seeds of the source domain), shaped like an upload — the student's token budget ρ, a random quarter of
        the tokens removed — and labelled by the source teacher (the shipped model). Cached, shared by all
        devices."""
        rho = student.compression.cfg.rho
        have = self._replay.setdefault(rho, [])
        for seed in domain_seeds("source", "teacher", max(n, 0))[len(have):]:
            have.append(label_sample(self.teacher.for_domain("source"), source_upload(seed, rho)))
        return have[: max(n, 0)]

    def router_negatives(self, n: int, rho: float) -> torch.Tensor:
        """(n, F) router features of the cloud's own source-domain clips (the rehearsal seeds, `source_upload`),
        cached."""
        have = self._negatives.setdefault(rho, [])
        for seed in domain_seeds("source", "teacher", n)[len(have):]:
            have.append(token_features(source_upload(seed, rho)))
        return torch.stack(have[:n])

    def _train(self, rec: DeviceRecord, index: int) -> bytes:
        t0 = time.perf_counter()
        samples = self.samples(rec, index)
        for ts in samples:
            if ts.sample_id not in rec.labels:
                rec.labels[ts.sample_id] = label_sample(self.teacher.for_domain(rec.domain), ts)
        labelled = [rec.labels[ts.sample_id] for ts in samples]
        labelled += self.replay(int(round(rec.akd.replay * len(labelled))), rec.student)
        t_label = time.perf_counter() - t0
        load_tensors(rec.student, {k: v for k, v in rec.committed.items()
                                   if k in dict(rec.student.named_parameters())})
        stats = train_round(rec.student, rec.align, labelled, rec.akd, index)
        params = dict(rec.student.named_parameters())
        if rec.codec.name == "full":
            delta = {n: params[n].detach().clone() for n in rec.names}
        else:
            delta = {n: params[n].detach() - rec.committed[n] for n in rec.names}
        blobs, layout = dwc.encode_delta(delta, rec.codec, rec.names)
        meta = {"round": index, "codec": rec.codec.name, "layout": layout, "base_hash": rec.hash, "router": False}
        routing = {}
        if rec.akd.route:  # the domain router: this device's uploads against the cloud's source clips
            pos = torch.stack([token_features(ts) for ts in samples])
            neg = self.router_negatives(max(ROUTER_NEGATIVES, len(samples)), rec.student.compression.cfg.rho)
            values = fit_router(pos, neg)
            blobs[dwc.ROUTER_PART] = torch.cat([values[n].reshape(-1) for n in ROUTER_NAMES])
            meta["router"] = True
            routing = router_accuracy(values, pos, neg)
        new = dwc.apply_update(blobs, meta, rec.names, rec.committed)
        meta["new_hash"] = wire.state_hash({**rec.committed, **new})
        data = wire.encode("delta", blobs, meta)
        _save(rec.root / "align.safetensors", rec.align.state_dict(), {})
        rec.last_train = {"round": index, "samples": len(labelled), "label_seconds": t_label,
                          "train_seconds": stats["seconds"], "loss": stats["loss"], "ce": stats["ce"],
                          "kd": stats["kd"], "downlink_bytes": len(data), "router_fit": routing,
                          "tensors": dwc.layout_summary(layout, rec.names,
                                                        {n: tuple(rec.committed[n].shape) for n in rec.names})}
        return data

    def ack(self, device_id: str, index: int, new_hash: str) -> dict:
        """Commit round `index` once the device reports the hash it now has."""
        rec = self.get(device_id)
        with rec.lock:
            if index <= rec.round and new_hash == rec.hash:
                return {"round": rec.round, "hash": rec.hash, "committed": False}
            pending = self._pending(rec)
            if pending is None or int(pending[1]["round"]) != index or pending[1]["new_hash"] != new_hash:
                raise Conflict("ack", f"no pending update of round {index} leads to {new_hash}")
            tensors, meta = wire.decode(pending[0], "delta")
            new = dwc.apply_update(tensors, meta, rec.names, rec.committed)
            committed = {**rec.committed, **new}
            if wire.state_hash(committed) != new_hash:
                raise Conflict("ack", "the pending update does not reproduce the acknowledged hash")
            _save(rec.root / "committed.safetensors", committed, {"hash": new_hash, "round": index})
            rec.committed, rec.hash, rec.round = committed, new_hash, index
            for old in rec.root.glob("pending-*.payload"):
                old.unlink()
            return {"round": index, "hash": new_hash, "committed": True}

    def status(self, device_id: str) -> dict:
        rec = self.get(device_id)
        n = len(list((rec.root / "samples").glob("*.payload"))) if (rec.root / "samples").is_dir() else 0
        return {"device": device_id, "round": rec.round, "hash": rec.hash, "samples": n,
                "training": rec.training, "last_train": rec.last_train}
