"""`workbench adapt`: rounds of cloud-device continual adaptation on one shifted domain, measured.

Per round r: the device captions the next `stream` clips of the domain's stream (seeds disjoint from the
held-out clips), uploads the uncertain ones (UTS; or every / a random subset for the baselines), flushes its
queue to the cloud, fetches round r's compressed update (AKD in the cloud, DWC on the wire), applies it
all-or-nothing, and is evaluated on the domain's held-out clips and on the source domain. With no cloud URL
the run starts `workbench cloud serve` itself on a free loopback port (`EmbeddedCloud`) and stops it after.

Accuracy is **CIDEr** (captions; `evaluation.py`). Bytes are serialised payload lengths (HTTP framing not
counted). `send_everything_uplink_bytes` serialises, for every streamed sample, the payload of the whole clip
(all T·N patches, uint8) — the upload without gate, token budget or drop.

If the cloud cannot be reached, a round records its error, the device keeps captioning with its current
weights and its queue (persisted), and the next round retries (the client backs off between attempts).

    >>> AdaptConfig().domain
    'night'
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from workbench.adapt import wire
from workbench.adapt.akd import AKDConfig
from workbench.adapt.client import CloudClient, CloudUnavailable, RetryPolicy
from workbench.adapt.device import Device, DeviceConfig
from workbench.adapt.dwc import CodecConfig
from workbench.adapt.evaluation import cider, eval_clips, token_captions
from workbench.adapt.tokens import tokens_from_clip
from workbench.data.shifts import DOMAINS, domain_seeds, get_shift, shifted_clip
from workbench.errors import InputError
from workbench.models.registry import weights_dir
from workbench.trace import TraceRecorder
from workbench.trace.schema import DECISIONS, TRACE_SCHEMA


@dataclass(frozen=True)
class AdaptConfig:
    """One run: domain, rounds, clips streamed per round, held-out clips (target, source), the device, the
    cloud's AKD and codec, files (None = shipped), random_quota (the random-subset baseline: upload exactly
    this many random samples in each round, drop tokens at random), seed."""

    domain: str = "night"
    rounds: int = 3
    stream: int = 12
    eval_clips: int = 24
    source_clips: int = 24
    device: DeviceConfig = field(default_factory=DeviceConfig)
    akd: AKDConfig = field(default_factory=AKDConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    pocket: str | None = None
    teacher: str | None = None
    random_quota: tuple[int, ...] | None = None
    teacher_eval: bool = True
    seed: int = 0

    def __post_init__(self):
        get_shift(self.domain)
        if self.domain == "source":
            raise InputError("--domain", f"adapt needs a shifted domain ({', '.join(DOMAINS)})")
        if not 1 <= self.rounds <= 100:
            raise InputError("--rounds", f"must be 1..100, not {self.rounds}")
        if not 1 <= self.stream <= 10_000 or not 1 <= self.eval_clips <= 500 or not 1 <= self.source_clips <= 500:
            raise InputError("--stream/--eval-clips", "out of range (stream 1..10000, eval clips 1..500)")

    def files(self) -> tuple[Path, Path]:
        from workbench.adapt.weights import POCKET_FILE, TEACHER_FILE
        return (Path(self.pocket or weights_dir() / POCKET_FILE), Path(self.teacher or weights_dir() / TEACHER_FILE))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedCloud:
    """`workbench cloud serve` in a child process on a free loopback port (a context manager)."""

    def __init__(self, pocket: Path, teacher: Path, state_dir: str | None = None, port: int | None = None,
                 token: str | None = None, threads: int = 1, max_request_bytes: int | None = None):
        self.pocket, self.teacher = pocket, teacher
        self.port = port or free_port()
        self.token = token or secrets.token_urlsafe(24)
        self._tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="wb-cloud-")
        self.state_dir = Path(state_dir or self._tmp.name)
        self.threads, self.max_request_bytes = threads, max_request_bytes
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_s: float = 120.0) -> "EmbeddedCloud":
        cmd = [sys.executable, "-c", "from workbench.cli import main; raise SystemExit(main())", "cloud", "serve",
               "--port", str(self.port), "--state", str(self.state_dir), "--pocket", str(self.pocket),
               "--teacher", str(self.teacher), "--threads", str(self.threads)]
        if self.max_request_bytes:
            cmd += ["--max-request-bytes", str(self.max_request_bytes)]
        env = {**os.environ, "WORKBENCH_CLOUD_TOKEN": self.token}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.state_dir / "cloud.log", "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        client = CloudClient(self.url, self.token, RetryPolicy(attempts=1), timeout=2.0)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the cloud exited with {self.proc.returncode}; see {self.state_dir / 'cloud.log'}")
            with contextlib.suppress(CloudUnavailable):
                client.health()
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the cloud did not come up within {wait_s:.0f} s")

    def kill(self) -> None:
        """SIGKILL (a crash, for the fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self) -> "EmbeddedCloud":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def _trace_sample(run_id: str, obs, round_index: int) -> pl.DataFrame:
    """UTS per-sample trace rows (the project's schema): the gate's confidence, per-token uncertainty and
    sent (kept) / not sent (pruned) decisions on the (frame, patch) of each run."""
    rec = TraceRecorder(run_id, obs.sample_id)
    rec.log("confidence", obs.confidence, site="uts.gate", layer=round_index)
    rec.log("uploaded", float(obs.uploaded), site="uts.gate", layer=round_index)
    if obs.uploaded and obs.keep is not None:
        ts = obs.tokens
        if obs.uncertainty is not None:
            rec.log("uncertainty", obs.uncertainty, site="uts.mc_dropout", frame=ts.t_start, token=ts.patch,
                    layer=round_index)
        code = torch.where(obs.keep, DECISIONS["kept"], DECISIONS["pruned"])
        rec.log("decision", code, site="uts.drop", frame=ts.t_start, token=ts.patch, layer=round_index)
        rec.log("bytes", obs.payload_bytes, site="uts.uplink", layer=round_index)
    return rec.to_polars()


class Evaluator:
    """Held-out CIDEr of the device (through the weights its router picks per clip) on the target domain and
    the source domain; `routed` holds the last call's shares of clips captioned with the adapted weights."""

    def __init__(self, cfg: AdaptConfig):
        self.target, self.source = eval_clips(cfg.domain, cfg.eval_clips), eval_clips("source", cfg.source_clips)
        self.routed: dict[str, float] = {}

    def __call__(self, device: Device) -> tuple[float, float]:
        (tgt, t_share), (src, s_share) = device.captions(self.target), device.captions(self.source)
        self.routed = {"target_routed_adapted": t_share, "source_routed_adapted": s_share}
        return cider(tgt, self.target), cider(src, self.source)


def run_adaptation(cfg: AdaptConfig, cloud_url: str | None = None, token: str | None = None,
                   state_dir: str | None = None, progress: bool = True, on_round=None,
                   retry: RetryPolicy | None = None, threads: int = 1) -> dict:
    """Run `cfg` against the cloud at `cloud_url` (None: an embedded one) and return the record (JSON-ready
    except `trace`, a polars DataFrame in the trace schema). on_round(record, device) is called after each round
    (and once before the first with record {"round": 0}), with the device at its current weights."""
    pocket, teacher_path = cfg.files()
    for p, what in ((pocket, "pocket checkpoint"), (teacher_path, "teacher checkpoint")):
        if not p.is_file():
            raise InputError(p, f"the {what} is missing (build it with `python -m workbench.adapt.weights`)")
    with contextlib.ExitStack() as stack:
        if cloud_url is None:
            cloud = stack.enter_context(EmbeddedCloud(pocket, teacher_path, threads=threads))
            cloud_url, token = cloud.url, cloud.token
        if not token:
            raise InputError("--token-file", "a cloud URL needs the shared-secret token (--token-file or "
                                             "$WORKBENCH_CLOUD_TOKEN)")
        tmp = None if state_dir else stack.enter_context(tempfile.TemporaryDirectory(prefix="wb-device-"))
        return _run(cfg, CloudClient(cloud_url, token, retry or RetryPolicy()), pocket, teacher_path,
                    Path(state_dir or tmp), progress, on_round)


def _run(cfg, client, pocket, teacher_path, state_dir, progress, on_round) -> dict:
    from workbench.adapt.teacher import load_teacher
    from workbench.methods import ucop
    t_start = time.perf_counter()
    device = Device(pocket, state_dir, cfg.device)
    device.register(client, cfg.akd, cfg.codec, cfg.domain)
    evaluate = Evaluator(cfg)
    run_id = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True, default=str).encode()).hexdigest()[:12]
    record = {"domain": cfg.domain, "metric": "CIDEr", "config": json.loads(json.dumps(asdict(cfg), default=str)),
              "full_weights_bytes": ucop.analytic_bytes(device.model, ucop.UCOPConfig())["total"],
              "pocket_file_bytes": pocket.stat().st_size}
    if cfg.teacher_eval:
        teacher, rho = load_teacher(teacher_path), device.model.compression.cfg.rho
        record["teacher_accuracy"] = cider(token_captions(teacher.for_domain(cfg.domain), evaluate.target, rho),
                                           evaluate.target)
        record["teacher_source_accuracy"] = cider(token_captions(teacher.for_domain("source"), evaluate.source, rho),
                                                  evaluate.source)
        del teacher
    acc, src = evaluate(device)
    record.update(device_accuracy_before=acc, device_source_accuracy_before=src)
    rounds, traces, samples, everything = [], [], [], 0
    if on_round is not None:
        on_round({"round": 0, "accuracy_after": acc, "source_accuracy_after": src}, device)
    rng = np.random.default_rng(cfg.seed)
    bar = tqdm(range(cfg.rounds), desc=f"adapt {cfg.domain}", unit="round", disable=not progress)
    for r in bar:
        t0 = time.perf_counter()
        seeds = domain_seeds(cfg.domain, "stream", cfg.stream, offset=r * cfg.stream)
        forced = None
        if cfg.random_quota is not None:
            quota = cfg.random_quota[min(r, len(cfg.random_quota) - 1)]
            chosen = set(rng.choice(cfg.stream, size=min(quota, cfg.stream), replace=False).tolist())
            forced = [i in chosen for i in range(cfg.stream)]
        up = sent = seen = tok_total = tok_sent = 0
        for i, seed in enumerate(seeds):
            clip = shifted_clip(cfg.domain, seed)
            obs = device.observe(clip, r, None if forced is None else forced[i])
            seen += 1
            sent += obs.uploaded
            up += obs.payload_bytes
            tok_total += obs.tokens_total if obs.uploaded else 0
            tok_sent += obs.tokens_sent
            everything += len(wire.sample_payload(tokens_from_clip(clip, 1.0), {"device": cfg.device.device_id,
                                                                                 "round": r, "confidence": 1.0}))
            samples.append({"round": r, "sample_id": obs.sample_id, "confidence": obs.confidence,
                            "uploaded": bool(obs.uploaded), "tokens_total": obs.tokens_total,
                            "tokens_sent": obs.tokens_sent, "bytes": obs.payload_bytes, "caption": obs.caption})
            traces.append(_trace_sample(run_id, obs, r))
        rec = {"round": r + 1, "accuracy_before": acc, "samples_seen": seen, "samples_sent": sent,
               "uplink_bytes": up, "tokens_in_sent_samples": tok_total, "tokens_sent": tok_sent}
        try:
            device.flush(client)
            info = device.sync(client, r)
            status = client.status(cfg.device.device_id)
            rec.update(downlink_bytes=info["bytes"], layers=info.get("layers", []),
                       train=({k: status["last_train"].get(k) for k in ("samples", "train_seconds", "label_seconds",
                                                                         "loss", "ce", "kd", "router_fit")}))
        except CloudUnavailable as e:
            rec.update(downlink_bytes=0, error=str(e), queued=len(device.queue))
        acc, src = evaluate(device)
        rec.update(accuracy_after=acc, source_accuracy_after=src, seconds=time.perf_counter() - t0,
                   weights_hash=device.hash, **evaluate.routed)
        rounds.append(rec)
        bar.set_postfix(cider=f"{acc:.3f}", up_kB=f"{up / 1e3:.0f}", down_kB=f"{rec['downlink_bytes'] / 1e3:.0f}")
        if on_round is not None:
            on_round(rec, device)
    record.update(rounds=rounds, samples=samples, send_everything_uplink_bytes=everything,
                  uplink_bytes=sum(x["uplink_bytes"] for x in rounds), retries=client.retries_used,
                  seconds=time.perf_counter() - t_start,
                  trace=pl.concat(traces) if traces else pl.DataFrame(schema=TRACE_SCHEMA))
    return record
