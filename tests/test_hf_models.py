"""Bring your own Hugging Face VLM: folders written by save_pretrained (model + a real tokenizer + processor,
built here from tiny configs) loaded back by path through the CLI in a subprocess; the refusals (a name not in
the local cache, a missing folder, an unsupported architecture, an unsupported transformers version) are one
typed error and exit status 3, fast, without a traceback.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from workbench.cli import main
from workbench.errors import CheckpointError
from workbench.models.hf.loading import check_transformers, load_hf, resolve

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folders(hf_folders):
    return hf_folders


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=300, cwd=cwd)


def test_caption_a_users_llava_folder_by_path_with_sttf_json(folders):
    p = cli("caption", "shapes:3", "--frames", "8", "--model", "hf:./my-llava", "--method", "sttf", "--tau", "0.1",
            "--json", cwd=folders["llava"].parent)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["caption"] and out["family"] == "llava" and out["patch_grid"] == [4, 4]
    assert 0 < out["tokens_computed_per_frame"] < 16 and 0 < out["tokens_per_frame"] < 16  # STTF: < 4×4 patches
    assert "Traceback" not in p.stderr


def test_caption_qwen2vl_folder_with_sparsevlm_json(folders):
    p = cli("caption", "shapes:3", "--frames", "8", "--model", f"hf:{folders['qwen2vl']}", "--method", "sparsevlm",
            "--keep", "0.25", "--json")  # the default depths (0.5, 1.5, 2.5): inside layers 0–2
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    layers = out["visual_tokens_per_layer"]
    assert out["family"] == "qwen2vl" and out["tokens_computed_per_frame"] == 8  # 16 patches per 2 frames
    assert out["tokens_per_frame"] == 2 and layers[0] == 16 and layers[-1] < layers[0]  # 4 merged tokens / 2 frames
    assert abs(out["decoder_keep"] - 0.25) < 0.1


def test_load_by_path_in_process_each_family(folders):
    for fam, folder in folders.items():
        m = load_hf(f"hf:{folder}")
        assert m.cfg.family == fam and m.cfg.name == f"hf:{folder}" and m.cfg.transformers == check_transformers()


def test_a_name_not_in_the_local_cache_fails_at_once_saying_where_to_put_it(tmp_path, capsys):
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as e:
        resolve("hf:some-org/not-downloaded-vlm")
    assert time.perf_counter() - t0 < 5  # no hub retry loop (each retry would be ~23 s)
    msg = str(e.value)
    assert "local Hugging Face cache" in msg and "huggingface-cli download some-org/not-downloaded-vlm" in msg
    assert "save_pretrained" in msg
    p = cli("caption", "shapes:1", "--model", "hf:some-org/not-downloaded-vlm")
    assert p.returncode == 3 and "not in the local Hugging Face cache" in p.stderr and "Traceback" not in p.stderr


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        resolve("hf:./no-such-model-folder")
    with pytest.raises(CheckpointError, match="no config.json"):
        resolve(f"hf:{tmp_path}")


def test_an_unsupported_architecture_is_refused(tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM
    LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(tmp_path / "text-only")
    with pytest.raises(CheckpointError, match="architecture 'llama' .*LlamaForCausalLM.* not supported"):
        load_hf(f"hf:{tmp_path / 'text-only'}")
    assert main(["caption", "shapes:1", "--model", f"hf:{tmp_path / 'text-only'}"]) == 3
    err = capsys.readouterr().err
    assert "LLaVA-1.5" in err and "Qwen2-VL" in err and "LLaVA-OneVision" in err


def test_an_unsupported_transformers_version_is_refused(folders, monkeypatch, capsys):
    import transformers
    monkeypatch.setattr(transformers, "__version__", "4.45.2")
    assert main(["caption", "shapes:1", "--model", f"hf:{folders['llava']}"]) == 3
    err = capsys.readouterr().err
    assert "transformers 4.45.2 is not supported" in err and "5.24" in err
    with pytest.raises(CheckpointError):
        check_transformers("5.30.0")


def test_hf_models_refuse_what_they_cannot_do(folders, capsys):
    assert main(["caption", "shapes:1", "--model", f"hf:{folders['onevision']}", "--fps", "8"]) == 2
    assert "stream mode runs on TinyVLM" in capsys.readouterr().err
    assert main(["caption", "gesture:1", "--model", f"hf:{folders['onevision']}"]) == 2
    assert "RGB video" in capsys.readouterr().err


def test_onevision_folder_through_the_cli_with_fastv(folders, capsys):
    assert main(["caption", "shapes:3", "--frames", "4", "--model", f"hf:{folders['onevision']}", "--method",
                 "fastv", "--keep", "0.25", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["family"] == "onevision" and out["caption"] and out["decoder_keep"] < 1
    assert out["visual_tokens_per_layer"][-1] < out["visual_tokens_per_layer"][0]


def test_eval_and_sweep_run_on_an_hf_folder(folders, tmp_path, capsys):
    model = f"hf:{folders['llava']}"
    assert main(["eval", "qa", "--model", model, "--method", "sparsevlm", "--keep", "0.25", "--seeds", "0:2",
                 "--out", str(tmp_path / "eval"), "--json"]) == 0
    capsys.readouterr()
    assert main(["sweep", "--model", model, "--methods", "sttf,fastv", "--budget", "8", "--seeds", "0:1",
                 "--frames", "4", "--workers", "0", "--repeats", "0", "--out", str(tmp_path / "sweep"), "--json"]) == 0
    recs = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"sttf", "fastv"} <= set(recs) and all(0 < recs[m]["flops_ratio"] < 1 for m in ("sttf", "fastv"))


def test_methods_that_cannot_run_on_an_hf_model_say_so_in_one_line(folders, capsys):
    for method in ("anc", "sttf+anc"):  # ANC's router and adapters are TinyVLM's
        assert main(["caption", "shapes:1", "--frames", "4", "--model", f"hf:{folders['llava']}", "--method",
                     method]) == 2
        err = capsys.readouterr().err
        assert "trained against TinyVLM" in err and "Traceback" not in err
    # the encoder-side baselines place patches on the grid: CLIP's CLS token is refused in words
    assert main(["caption", "shapes:1", "--frames", "4", "--model", f"hf:{folders['llava']}", "--method",
                 "visionzip"]) == 2
    assert "CLS" in capsys.readouterr().err


def test_a_name_in_the_local_cache_loads_through_the_cli(folders, tmp_path):
    """hf:ORG/NAME resolves to the snapshot in the local Hugging Face cache (the layout `huggingface-cli download`
    writes: models--ORG--NAME/refs/main → snapshots/<commit>/), offline."""
    import shutil
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--some-org--tiny-llava"
    shutil.copytree(folders["llava"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    p = subprocess.run([sys.executable, "-m", "workbench.cli", "caption", "shapes:3", "--frames", "4", "--model",
                        "hf:some-org/tiny-llava", "--json"], capture_output=True, text=True, timeout=300,
                       env={**ENV, "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["family"] == "llava" and out["model"] == "hf:some-org/tiny-llava" and out["caption"]


def test_llava_prompt_ids_are_the_checkpoints_own_processors(folders):
    """The visual block is expanded as the checkpoint's LlavaProcessor expands it (chat template, image token
    count). Qwen2-VL's and OneVision's processors cannot be built here: their video processors need torchvision."""
    import numpy as np
    import torch
    from transformers import AutoProcessor
    m = load_hf(f"hf:{folders['llava']}")
    proc = AutoProcessor.from_pretrained(folders["llava"])
    text = m.family.prompt_text("what is moving")
    ref = proc(images=[np.zeros((32, 32, 3), np.uint8)], text=text, return_tensors="pt")["input_ids"]
    kw, _, n = m.family.inputs("what is moving", 1)
    assert torch.equal(kw["input_ids"], ref) and n == m.cfg.num_patches
