"""Stage-1 training smoke run on a tiny config: loss goes down, checkpoints load, resume is exact, the gesture
head phase (b) only touches the gesture head, the decoder phases (c, d) only the language side."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from workbench.models.config import TinyVLMConfig
from workbench.models.io import load_checkpoint, read_metadata
from workbench.training.decoder_fit import DecoderFitConfig
from workbench.training.gesture_fit import GestureFitConfig
from workbench.training.qa_fit import QAFitConfig
from workbench.training.stage1 import Stage1Config, train_stage1

TINY = TinyVLMConfig(enc_dim=32, enc_depth=1, enc_heads=2, dec_dim=32, dec_depth=1, dec_heads=2)
CFG = Stage1Config(steps=8, stop_after=None, batch_size=2, lr=3e-3, warmup=2, text_warmup_steps=2, curriculum_steps=2,
                   gesture_every=2, eval_every=4, eval_clips=2, threads=1, model=TINY,
                   gesture_fit=GestureFitConfig(clips=8, steps=6, batch_size=4, eval_clips=4),
                   decoder_fit=DecoderFitConfig(steps=4, eval_every=2, lr=3e-3, warmup=1),
                   qa_fit=QAFitConfig(fit=DecoderFitConfig(steps=2, eval_every=2, lr=1e-3, warmup=1, data_offset=100)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1") / "tiny.safetensors"
    record = train_stage1(CFG, out, resume=False, progress=False)
    return out, record


def test_smoke_run_writes_a_loadable_checkpoint_and_log(trained):
    out, record = trained
    model = load_checkpoint(out)
    info = read_metadata(out)
    assert info["steps"] == CFG.steps and "gesture_fit" in info and "decoder_fit" in info and "qa_fit" in info
    assert 0.0 <= info["gesture_fit"]["val_acc_dense"] <= 1.0
    log = [json.loads(line) for line in out.with_suffix(".log.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in log}
    assert {"train", "eval", "gesture_fit", "gesture_fit_eval", "decoder_fit", "decoder_fit_eval"} <= kinds
    assert [r["step"] for r in log if r["kind"] == "decoder_fit_eval"] == [2, 4]
    qa_eval = [r for r in log if r["kind"] == "qa_fit_eval"]
    assert [r["step"] for r in qa_eval] == [2] and "shapes_qa_dense_loss" in qa_eval[0]  # phase d validates answers
    train = [r for r in log if r["kind"] == "train"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    evals = [r for r in log if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [4, 8]
    assert evals[-1]["shapes_dense_loss"] < evals[0]["shapes_dense_loss"]  # it learns something
    assert model.cfg.gesture_classes and model.cfg.vocab


def test_resume_is_exact(tmp_path):
    """Stop after 4 of 8 steps, resume to 8 == 8 steps straight (the trunk bit for bit)."""
    cfg = replace(CFG, gesture_fit=replace(CFG.gesture_fit, steps=1))
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    train_stage1(replace(cfg, stop_after=4, cooldown=0), b, resume=False, progress=False)  # a plain interruption
    assert read_metadata(b)["steps"] == 4
    train_stage1(cfg, b, resume=True, progress=False)
    train_stage1(cfg, a, resume=False, progress=False)
    sa, sb = load_checkpoint(a).state_dict(), load_checkpoint(b).state_dict()
    trunk = [k for k in sa if not k.startswith("gesture_head.")]
    assert all(torch.equal(sa[k], sb[k]) for k in trunk)


def test_gesture_fit_touches_only_the_head(trained, tmp_path):
    out, _ = trained
    before = load_checkpoint(out).state_dict()
    from workbench.training.gesture_fit import fit_gesture_head
    model = load_checkpoint(out)
    fit_gesture_head(model, replace(CFG.gesture_fit, steps=3, seed=5), progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("gesture_head."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("gesture_head."))


def test_resume_without_optimizer_state_refuses_instead_of_restarting(trained, tmp_path):
    """The shipped checkpoint comes without its optimizer state: continuing it must not silently retrain."""
    import shutil
    from workbench.errors import CheckpointError
    out, _ = trained
    copy = tmp_path / "copy.safetensors"
    shutil.copy(out, copy)
    before = copy.read_bytes()
    with pytest.raises(CheckpointError, match="cannot resume"):
        train_stage1(replace(CFG, steps=12), copy, resume=True, progress=False)
    assert copy.read_bytes() == before


def test_worker_processes_change_nothing_but_speed(trained, tmp_path):
    """Batches built in spawned worker processes (`workers=2`) give the same checkpoint bit for bit."""
    out, _ = trained
    par = tmp_path / "par.safetensors"
    train_stage1(replace(CFG, workers=2), par, resume=False, progress=False)
    sa, sb = load_checkpoint(out).state_dict(), load_checkpoint(par).state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_decoder_fit_touches_only_the_language_side(trained):
    """Phase c: encoder (weights and running norms) and gesture head bit-identical; projector and decoder move."""
    out, _ = trained
    main = load_checkpoint(out.with_suffix(".main.safetensors")).state_dict()  # the main loop's model
    final = load_checkpoint(out).state_dict()
    frozen = [k for k in final if k.startswith("encoder.")]  # (the gesture head is phase b's: its own test)
    assert any(k.endswith("running_mean") for k in frozen)
    assert all(torch.equal(main[k], final[k]) for k in frozen)
    assert not torch.equal(main["projector.weight"], final["projector.weight"])
    assert not torch.equal(main["decoder.blocks.0.attn.qkv_proj.weight"], final["decoder.blocks.0.attn.qkv_proj.weight"])


def test_resume_after_phase_c_without_the_main_loop_copy_refuses(trained, tmp_path):
    import shutil
    from workbench.errors import CheckpointError
    out, _ = trained
    for suffix in (".safetensors", ".optim.safetensors", ".heads.safetensors"):
        shutil.copy(out.with_suffix(suffix), (tmp_path / "c").with_suffix(suffix))
    with pytest.raises(CheckpointError, match="phase c"):
        train_stage1(replace(CFG, steps=12), tmp_path / "c.safetensors", resume=True, progress=False)
