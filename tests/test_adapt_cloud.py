"""The cloud service and the device against it, for real: a separate `workbench cloud serve` process on
loopback, real sockets, real safetensors payloads, real faults (SIGKILL, a damaging TCP proxy).

Tiny configuration: the pocket and the teacher are built from the random-init `tinyvlm-debug` model.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch

from _wire_proxy import WireProxy
from workbench.adapt import dwc, wire
from workbench.adapt.akd import AKDConfig
from workbench.adapt.client import CloudClient, CloudRejected, CloudUnavailable, RetryPolicy
from workbench.adapt.device import Device, DeviceConfig, DownlinkRejected
from workbench.adapt.run import EmbeddedCloud, free_port
from workbench.adapt.uts import UTSConfig
from workbench.data.shifts import shifted_clip

AKD = AKDConfig(steps=2, batch=2, rank=2)
CODEC = dwc.CodecConfig("topk", density=0.2, bits=4)
FAST = RetryPolicy(attempts=3, base=0.05, cap=0.1)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tiny_adapt_files):
    return tiny_adapt_files


@pytest.fixture(scope="module")
def cloud(files, tmp_path_factory):
    with EmbeddedCloud(*files, state_dir=str(tmp_path_factory.mktemp("cloud-state")),
                       max_request_bytes=2_000_000) as c:
        yield c


def make_device(files, state, name, rank=2) -> Device:
    return Device(files[0], state, DeviceConfig(device_id=name, adapter_rank=rank, uts=UTSConfig(passes=3)))


def upload_some(dev: Device, client: CloudClient, n: int = 2, round_index: int = 0):
    for s in range(n):
        dev.observe(shifted_clip("night", 7_100_000 + s), round_index, force_upload=True)
    return dev.flush(client)


def test_auth_limits_and_malformed_requests_get_4xx_and_the_service_keeps_serving(cloud):
    url = cloud.url
    with httpx.Client(timeout=30) as h:
        assert h.get(f"{url}/v1/health").status_code == 401
        r = h.get(f"{url}/v1/health", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "token" in r.json()["error"]
        good = {"Authorization": f"Bearer {cloud.token}"}
        r = h.post(f"{url}/v1/devices/nobody/samples", headers=good, content=b"x" * 2_000_001)
        assert r.status_code == 413 and "limit" in r.json()["error"]
        r = h.post(f"{url}/v1/devices/nobody/register", headers=good, content=b"{not json")
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        r = h.post(f"{url}/v1/devices/nobody/samples", headers=good, content=b"\x00" * 100)
        assert r.status_code == 404  # unknown device, checked before the body is parsed
        r = h.post(f"{url}/v1/devices/bad..id/register", headers=good, json={})
        assert r.status_code == 400
        assert h.get(f"{url}/v1/health", headers=good).json()["ok"] is True
    with pytest.raises(CloudRejected) as e:
        CloudClient(url, "wrong", FAST).health()
    assert e.value.status == 401


def test_a_wrong_token_cannot_push_weights(cloud, files, tmp_path):
    dev = make_device(files, tmp_path, "victim")
    dev.register(CloudClient(cloud.url, cloud.token, FAST), AKD, CODEC)
    with pytest.raises(CloudRejected):
        CloudClient(cloud.url, "guess", FAST).register("victim", dev.registration({}, {}))


def test_garbage_and_pickled_uploads_are_refused(cloud, files, tmp_path):
    import pickle
    client = CloudClient(cloud.url, cloud.token, FAST)
    dev = make_device(files, tmp_path, "garbage")
    dev.register(client, AKD, CODEC)
    for body in (b"\x00" * 100, pickle.dumps({"a": 1}), b"\x10\x00\x00\x00\x00\x00\x00\x00{}"):
        with pytest.raises(CloudRejected) as e:
            client.upload("garbage", body)
        assert e.value.status == 400
    assert client.status("garbage")["samples"] == 0


def test_round_trip_applies_the_update_and_both_sides_agree(cloud, files, tmp_path):
    client = CloudClient(cloud.url, cloud.token, FAST)
    dev = make_device(files, tmp_path, "rt")
    reg = dev.register(client, AKD, CODEC)
    assert reg["hash"] == dev.hash and reg["round"] == -1
    sent, nbytes = upload_some(dev, client, 2)
    assert sent == 2 and len(dev.queue) == 0 and nbytes > 0
    before = dev.hash
    info = dev.sync(client, 0)
    assert dev.hash != before and dev.round == 0
    status = client.status("rt")
    assert status["hash"] == dev.hash and status["round"] == 0 and status["samples"] == 2
    assert info["bytes"] == status["last_train"]["downlink_bytes"]
    assert info["router"] and bool(dev.model.domain_router.weight.any())  # the cloud fitted the domain router
    assert set(status["last_train"]["router_fit"]) == {"target_routed", "source_kept"}
    # a restarted device continues from its persisted state
    again = make_device(files, tmp_path, "rt")
    assert again.hash == dev.hash and again.round == 0


def test_corrupt_truncated_and_cut_downlinks_leave_the_weights_unchanged(cloud, files, tmp_path):
    client = CloudClient(cloud.url, cloud.token, FAST)
    dev = make_device(files, tmp_path, "faults")
    dev.register(client, AKD, CODEC)
    upload_some(dev, client, 2)
    proxy = WireProxy(cloud.port)
    try:
        via = CloudClient(proxy.url, cloud.token, FAST)
        for mode, error in (("flip", DownlinkRejected), ("truncate", DownlinkRejected)):
            proxy.mode = mode
            before = {k: v.clone() for k, v in dev.weights().items()}
            h = dev.hash
            with pytest.raises(error):
                dev.sync(via, 0)
            assert dev.hash == h == dev.weights_hash()
            assert all(torch.equal(before[k], v) for k, v in dev.weights().items())
        proxy.mode = "cut"  # incomplete HTTP body: retried by the client, the retry gets through
        info = dev.sync(via, 0)
        assert proxy.damaged == 3 and info["round"] == 0 and via.retries_used >= 1
        assert client.status("faults")["hash"] == dev.hash
    finally:
        proxy.close()


def test_an_inconsistent_update_is_rejected_whole(cloud, files, tmp_path):
    """A payload with a valid checksum whose last tensor does not fit: nothing of it is applied."""
    client = CloudClient(cloud.url, cloud.token, FAST)
    dev = make_device(files, tmp_path, "half")
    dev.register(client, AKD, CODEC)
    upload_some(dev, client, 1)
    good = client.round("half", 0, dev.hash)
    tensors, meta = wire.decode(good, "delta")
    meta["layout"]["tensors"][-1][1] += 1  # the last tensor claims one more kept entry than it carries
    forged = wire.encode("delta", tensors, meta)
    before = {k: v.clone() for k, v in dev.weights().items()}
    with pytest.raises(DownlinkRejected):
        dev.apply_downlink(forged)
    assert all(torch.equal(before[k], v) for k, v in dev.weights().items())
    meta2 = wire.decode(good, "delta")[1]
    meta2["new_hash"] = "0" * 32  # decodes fine but would not give the weights the cloud computed
    with pytest.raises(DownlinkRejected, match="does not produce"):
        dev.apply_downlink(wire.encode("delta", tensors, meta2))
    assert dev.weights_hash() == dev.hash
    dev.apply_downlink(good)  # the genuine one still applies
    assert dev.round == 0


def test_zero_delta_leaves_the_weights_bit_identical(files, tmp_path):
    dev = make_device(files, tmp_path, "zero")
    names = dev.agree(AKD, CODEC)
    params = dict(dev.model.named_parameters())
    before = {k: v.clone() for k, v in dev.weights().items()}
    for codec in (dwc.CodecConfig(n) for n in ("fp32", "fp16", "nf4", "sign1", "topk")):
        blobs, layout = dwc.encode_delta({n: torch.zeros_like(params[n]) for n in names}, codec, names)
        dev.apply_downlink(wire.encode("delta", blobs, {"round": 0, "codec": codec.name, "layout": layout,
                                                        "base_hash": dev.hash, "new_hash": dev.hash}))
        assert all(torch.equal(before[k], v) for k, v in dev.weights().items())
        dev.round = -1


def test_cloud_killed_mid_round_nothing_is_lost(files, tmp_path):
    port = free_port()
    state = tmp_path / "cloud"
    slow = AKDConfig(steps=400, batch=2, rank=2, grad_frames=1)
    c = EmbeddedCloud(*files, state_dir=str(state), port=port, token="t0k3n").start()
    try:
        client = CloudClient(c.url, c.token, FAST)
        dev = make_device(files, tmp_path / "dev", "survivor")
        dev.register(client, slow, CODEC)
        upload_some(dev, client, 2)
        failure = {}

        def request_round():
            try:
                dev.sync(client, 0)
            except CloudUnavailable as e:
                failure["error"] = e
        t = threading.Thread(target=request_round)
        t.start()
        deadline = time.monotonic() + 60
        while not client.status("survivor")["training"]:
            assert time.monotonic() < deadline, "the round never started training"
            time.sleep(0.05)
        c.kill()  # SIGKILL in the middle of the round's training
        t.join(60)
        assert isinstance(failure.get("error"), CloudUnavailable)
        h = dev.hash
        # the device keeps captioning with its current weights and queues what it cannot send
        obs = dev.observe(shifted_clip("night", 7_100_050), 0, force_upload=True)
        assert obs.caption and dev.hash == h
        with pytest.raises(CloudUnavailable):
            dev.flush(client)
        assert len(dev.queue) == 1
        restarted = make_device(files, tmp_path / "dev", "survivor")  # a device restart loses nothing
        assert len(restarted.queue) == 1 and restarted.hash == h
        c2 = EmbeddedCloud(*files, state_dir=str(state), port=port, token="t0k3n").start()
        try:
            restarted.register(client, slow, CODEC)
            assert restarted.flush(client)[0] == 1 and len(restarted.queue) == 0
            assert client.status("survivor")["samples"] == 3
        finally:
            c2.stop()
    finally:
        c.stop()


def test_adapt_cli_end_to_end_tiny(files, cloud, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(cloud.token)
    args = ["adapt", "--cloud", cloud.url, "--token-file", str(token_file), "--domain", "palette", "--rounds", "2",
            "--stream", "2", "--eval-clips", "2", "--steps", "2", "--pocket", str(files[0]),
            "--teacher", str(files[1]), "--json", "--quiet", "--trace", str(tmp_path / "t.parquet")]
    cmd = [sys.executable, "-c", "from workbench.cli import main; raise SystemExit(main())", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rec = json.loads(out.stdout)
    for key in ("domain", "teacher_accuracy", "send_everything_uplink_bytes", "full_weights_bytes", "rounds"):
        assert key in rec
    assert rec["domain"] == "palette" and len(rec["rounds"]) == 2
    for r in rec["rounds"]:
        for key in ("accuracy_before", "accuracy_after", "source_accuracy_after", "uplink_bytes", "downlink_bytes",
                    "samples_seen", "samples_sent", "seconds"):
            assert key in r, key
        assert r["samples_seen"] == 2 and 0 < r["downlink_bytes"] < rec["full_weights_bytes"]
        assert r["uplink_bytes"] < rec["send_everything_uplink_bytes"]
    assert sum(s["bytes"] for s in rec["samples"]) == rec["uplink_bytes"]
    from workbench.trace import read_trace
    trace, _ = read_trace(tmp_path / "t.parquet")
    assert {"confidence", "decision"} <= set(trace["kind"])
    bad = subprocess.run([*cmd[:3], "adapt", "--cloud", f"http://127.0.0.1:{free_port()}", "--token-file",
                          str(token_file), "--pocket", str(files[0]), "--teacher", str(files[1]), "--rounds", "1",
                          "--eval-clips", "1", "--stream", "1", "--retries", "2", "--quiet"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "did not answer" in bad.stderr
