"""Question answering under decoder-side pruning: the QA evaluation, `workbench eval qa` and `caption --prompt`
through a real subprocess, the text-guidance measurement, and the method builder."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from workbench.data.shapesworld import make_clip, sample_scene
from workbench.data.shapesworld.render import object_patch_masks
from workbench.errors import InputError
from workbench.eval.guidance import (guidance_summary, kept_on_object, kept_overlap, on_object_shares,
                                     queried_object)
from workbench.eval.qa import QUESTION_TYPES, answers_match, qa_eval, question_type
from workbench.methods.build import MethodKnobs, build_method, method_names, split_name
from workbench.methods.random_prune import RandomPrune, RandomPruneConfig
from workbench.methods.sparsevlm import SparseVLM, SparseVLMConfig
from workbench.models.registry import create_model
from workbench.models.visual_tokens import VisualTokens

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def wb(*args):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=300)


def test_every_shapesworld_question_has_a_type():
    for seed in range(40):
        for q, a in make_clip(seed, num_frames=2).qa:
            assert question_type(q) in QUESTION_TYPES, q
            assert answers_match(a.upper() + " ", a)
    assert question_type("is it raining") == "other" and not answers_match("red", "dark red")


def test_qa_eval_counts_and_compares_with_dense():
    model = create_model("tinyvlm-debug")
    r = qa_eval(model, range(3, 5), SparseVLM(SparseVLMConfig(keep=0.6)), progress=False)
    assert r.n == sum(len(make_clip(s, num_frames=2).qa) for s in (3, 4))
    assert r.dense_accuracy is not None and 0 <= r.accuracy <= 1
    assert abs(r.decoder_keep - 0.6) < 0.01
    # recycling's clustering is counted: on this 1-layer, 32-wide model it costs about what pruning saves
    bare = qa_eval(model, range(3, 5), SparseVLM(SparseVLMConfig(keep=0.6, recycle=False)), progress=False)
    assert 0 < bare.prefill_flops_ratio < 1 and bare.prefill_flops_ratio < r.prefill_flops_ratio
    assert r.per_question["correct"].mean() == r.accuracy
    dense = qa_eval(model, range(3, 5), progress=False)
    assert dense.accuracy == dense.dense_accuracy and dense.prefill_flops_ratio == 1.0 and dense.decoder_keep == 1.0
    again = qa_eval(model, range(3, 5), SparseVLM(SparseVLMConfig(keep=0.6)), progress=False,
                    dense_rows=dense.per_question)
    assert again.per_question["answer"].to_list() == r.per_question["answer"].to_list()  # deterministic
    assert again.dense_accuracy == r.dense_accuracy


def test_eval_qa_cli_json():
    p = wb("eval", "qa", "--model", "tinyvlm-debug", "--method", "sparsevlm", "--keep", "0.6", "--seeds", "0:2",
           "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    rec = json.loads(p.stdout)
    for key in ("accuracy", "dense_accuracy", "prefill_flops_ratio", "n", "by_type", "decoder_keep"):
        assert key in rec
    assert rec["method"] == "sparsevlm" and rec["n"] == sum(len(make_clip(s, num_frames=2).qa) for s in (0, 1))
    for method in ("fastv", "dense"):
        p = wb("eval", "qa", "--model", "tinyvlm-debug", "--method", method, "--seeds", "0:1", "--json")
        assert p.returncode == 0 and json.loads(p.stdout)["method"] == method, p.stderr[-1500:]


def test_caption_answers_a_question_and_bad_knobs_exit_2():
    p = wb("caption", "shapes:3", "--model", "tinyvlm-debug", "--method", "sttf+sparsevlm", "--keep", "0.6",
           "--prompt", "what color is the star", "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    rec = json.loads(p.stdout)
    assert rec["prompt"] == "what color is the star" and rec["method"] == "sttf+sparsevlm"
    assert rec["decoder_keep"] == pytest.approx(0.6, abs=0.01) and len(rec["visual_tokens_per_layer"]) == 1
    for args, says in ((["--method", "sparsevlm", "--keep", "0.1"], "out of reach"),
                       (["--method", "sparsevlm", "--points", "0.5,1.0"], "must be a multiple of 0.5"),
                       (["--method", "fastv", "--points", "0.5"], "FastV prunes once"),
                       (["--method", "sparsevlm", "--counts", "99999"], "above the"),
                       (["--prompt", "  "], "--prompt must")):
        p = wb("caption", "shapes:3", "--model", "tinyvlm-debug", *args)
        assert p.returncode == 2 and says in p.stderr and "Traceback" not in p.stderr, (args, p.stderr[-800:])


def test_method_names_and_builder():
    assert {"sparsevlm", "fastv", "random-prune", "sttf+sparsevlm", "sttf+anc+sparsevlm"} <= set(method_names())
    assert split_name("sparsevlm") == ("dense", "sparsevlm") and split_name("sttf") == ("sttf", None)
    with pytest.raises(InputError, match="unknown method"):
        split_name("nope")
    assert split_name("tome+sparsevlm") == ("tome", "sparsevlm")
    m = build_method("random-prune", create_model("tinyvlm-debug"), MethodKnobs(keep=0.7, seed=4))
    assert isinstance(m, RandomPrune) and m.cfg.seed == 4 and m.cfg.keep == 0.7


def test_object_masks_and_on_object_share():
    scene = sample_scene(3)
    masks = object_patch_masks(scene)
    assert masks.shape == (len(scene.objects), 16, 14, 14) and masks.any((1, 2, 3)).all()
    vt = VisualTokens.dense(torch.zeros(1, 16, 196, 4))
    obj = masks[0]
    on = np.flatnonzero(obj.reshape(-1))
    share, kept, rec = kept_on_object(torch.tensor(list(on[:5]) + [3136, 3137]), vt, obj)
    assert share == 1.0 and kept == 5 and rec == 2
    q = next(q for q, _ in make_clip(3, num_frames=2).qa if question_type(q) == "color")
    assert scene.objects[queried_object(q, scene)].shape == q.split()[-1]


def test_on_object_shares_table():
    model = create_model("tinyvlm-debug")
    df = on_object_shares(model, [3, 5], {"random": RandomPrune(RandomPruneConfig(keep=0.6))})
    assert df.height >= 2 and (df["share"].is_between(0, 1)).all()
    s = guidance_summary(df)
    assert set(s.columns) >= {"method", "on_object", "area_share", "vs_area"}


def test_text_guidance_on_the_shipped_model():
    """Different questions keep different tokens, and SparseVLM keeps the queried object far above its area share
    (random keeps about the area share): measured on 8-frame val clips with 2+ objects."""
    model = create_model("tinyvlm-shapes")
    seeds = [s for s in range(1000, 1040) if len(sample_scene(s, 2).objects) >= 2][:4]
    methods = {"sparsevlm": SparseVLM(SparseVLMConfig(keep=0.22)), "random": RandomPrune(RandomPruneConfig(keep=0.22))}
    df = on_object_shares(model, seeds, methods, num_frames=8)
    first = {r["method"]: r for r in guidance_summary(df).to_dicts() if r["point"] == 0}
    assert first["sparsevlm"]["on_object"] >= 1.5 * first["sparsevlm"]["area_share"], first
    assert first["random"]["on_object"] <= 1.5 * first["random"]["area_share"], first
    # the same clip, two questions of different kinds keep different tokens at every point
    clip = make_clip(seeds[0], num_frames=8)
    overlap = kept_overlap(model, clip, methods["sparsevlm"], "how many objects are there", "what is moving")
    assert len(overlap) == 3 and min(overlap) < 0.9, overlap
