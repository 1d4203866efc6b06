"""COCO caption metrics through pycocoevalcap (real Java tokenizer and METEOR; no mocks).

All tests share the module-level METEOR process of `workbench.eval.metrics` (one JVM for the session); only
the last test, which breaks an instance on purpose, starts a second one.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from pycocoevalcap.tokenizer import ptbtokenizer

from workbench.eval import metrics
from workbench.eval.metrics import METRICS, CaptionScores, score_captions, spice_available


def _coco(real_data: Path) -> dict[str, list[str]]:
    """image id (str) → captions in annotation order."""
    data = json.loads((real_data / "captions" / "coco_captions_val2017.json").read_text())
    caps: dict[str, list[str]] = {}
    for a in data["annotations"]:
        caps.setdefault(str(a["image_id"]), []).append(a["caption"])
    return caps


@pytest.fixture(scope="module")
def coco(real_data) -> dict[str, list[str]]:
    return _coco(real_data)


@pytest.mark.realdata
@pytest.mark.slow
def test_coco_human_leave_one_out(coco):
    hyps = {i: c[0] for i, c in coco.items()}
    refs = {i: c[1:] for i, c in coco.items()}
    t = time.perf_counter()
    s = score_captions(hyps, refs)
    elapsed = time.perf_counter() - t
    print(f"\nCOCO val2017 leave-one-out, 5,000 images: {elapsed:.1f} s; "
          f"B4 {s.bleu4:.3f} M {s.meteor:.3f} R {s.rouge_l:.3f} C {s.cider:.3f}")
    assert s.n_images == 5000 and len(s.per_image) == 5000
    assert 0.17 <= s.bleu4 <= 0.22  # measured: 0.195 (ENVIRONMENT.md)
    assert 0.22 <= s.meteor <= 0.26  # 0.242
    assert 0.45 <= s.rouge_l <= 0.50  # 0.472
    assert 0.80 <= s.cider <= 0.95  # 0.887
    assert s.bleu1 > s.bleu2 > s.bleu3 > s.bleu4
    assert all(set(v) == set(METRICS) for v in s.per_image.values())
    assert elapsed < 90, f"scoring 5,000 images took {elapsed:.0f} s"


def test_perfect_beats_shuffled_and_text_is_normalised():
    refs = {"a": ["a man is riding a brown horse on the beach"] * 4,
            "b": ["two cats are sleeping on a red sofa"] * 4,
            "c": ["a plate of pasta with tomato sauce and basil"] * 4}
    perfect = {k: v[0] for k, v in refs.items()}
    tok_dir = Path(ptbtokenizer.__file__).parent  # the tokenizer writes its temp files here
    before = sorted(p.name for p in tok_dir.iterdir())
    good = score_captions(perfect, refs)
    assert good.bleu4 == pytest.approx(1.0, abs=1e-6) and good.meteor > 0.95 and good.rouge_l == pytest.approx(1.0)
    shuffled = {k: " ".join(random.Random(0).sample(v.split(), len(v.split()))) for k, v in perfect.items()}
    bad = score_captions(shuffled, refs)
    assert bad.bleu4 < 0.5 * good.bleu4 and bad.meteor < good.meteor and bad.rouge_l < good.rouge_l
    assert bad.cider < good.cider
    # newlines / tabs / extra spaces / punctuation do not change anything (PTB tokenisation drops punctuation)
    messy = {"a": "A man is riding\na brown horse on the beach.", "b": "two cats\tare sleeping  on a red sofa",
             "c": " A plate of pasta, with tomato sauce and basil! "}
    assert score_captions(messy, refs).to_dict() == good.to_dict()
    assert sorted(p.name for p in tok_dir.iterdir()) == before  # the tokenizer's temp files are gone


@pytest.mark.realdata
def test_permuting_ids_keeps_corpus_scores(coco):
    ids = sorted(coco)[:300]
    hyps = {i: coco[i][0] for i in ids}
    refs = {i: coco[i][1:] for i in ids}
    a = score_captions(hyps, refs)
    order = ids[:]
    random.Random(1).shuffle(order)
    rename = {old: f"img{n}" for n, old in enumerate(order)}  # new names, new order
    b = score_captions({rename[i]: hyps[i] for i in order}, {rename[i]: refs[i] for i in order})
    for m in METRICS:
        assert getattr(b, m) == pytest.approx(getattr(a, m), rel=1e-9, abs=1e-12), m
    for i in ids[:20]:
        assert b.per_image[rename[i]] == pytest.approx(a.per_image[i])


@pytest.mark.parametrize("hyps,refs,msg", [
    ({"a": "a dog"}, {"b": ["a dog"]}, "same ids"),
    ({"a": "a dog", "b": "a cat"}, {"a": ["a dog"]}, "only in hypotheses"),
    ({"a": ["a dog", "a cat"]}, {"a": ["a dog"]}, "one string"),
    ({"a": "   \n"}, {"a": ["a dog"]}, "hypothesis is empty"),
    ({"a": "a dog"}, {"a": "a dog"}, "list of strings"),
    ({"a": "a dog"}, {"a": ["", " \n "]}, "non-empty reference"),
    ({"a": "a dog"}, {"a": ["a dog", 3]}, "must be a string"),
    ({}, {}, "no hypotheses"),
    ([("a", "a dog")], {"a": ["a dog"]}, "dicts"),
])
def test_invalid_input_raises_value_error(hyps, refs, msg):
    with pytest.raises(ValueError, match=msg):
        score_captions(hyps, refs)


def test_meteor_still_works_after_bad_input():
    refs = {"x": ["a red bus on a city street"], "y": ["a bowl of fruit on a table"]}
    score_captions({"x": "a red bus", "y": "fruit in a bowl"}, refs)
    meteor = metrics._meteor_instance()
    assert meteor is not None
    with pytest.raises(ValueError):
        score_captions({"x": "a red bus"}, refs)  # missing id: refused before METEOR sees it
    s = score_captions({"x": "a red bus on a street", "y": "a bowl of fruit"}, refs)
    assert metrics._meteor_instance() is meteor and 0 < s.meteor < 1  # same Java process, still answering


def test_punctuation_only_hypothesis_scores_zero():
    s = score_captions({"a": "...", "b": "a cat on a mat"}, {"a": ["a dog in a park"], "b": ["a cat on a mat"]})
    assert s.per_image["a"]["bleu1"] == pytest.approx(0.0, abs=1e-6) and s.per_image["a"]["meteor"] == 0.0
    assert s.per_image["b"]["meteor"] > 0.9


def test_spice_is_never_made_up():
    ok, status = spice_available()
    s = score_captions({"a": "a dog runs"}, {"a": ["a dog is running", "a running dog"]})
    if not ok:  # this machine: the CoreNLP jars are not installed and are never downloaded
        assert s.spice is None and status.startswith("unavailable") and "CoreNLP" in status
        assert s.spice_status == status and "spice" not in s.per_image["a"]
    else:
        assert (s.spice is not None and 0.0 <= s.spice <= 1.0) or s.spice_status.startswith("failed")
    skipped = score_captions({"a": "a dog runs"}, {"a": ["a dog is running"]}, spice=False)
    assert skipped.spice is None and skipped.spice_status.startswith("skipped")
    d = skipped.to_dict(per_image=False)
    assert "per_image" not in d and json.loads(json.dumps(d)) == d
    assert isinstance(skipped, CaptionScores)


@pytest.mark.timeout(180)
def test_meteor_recovers_after_an_internal_failure():
    """pycocoevalcap keeps METEOR's lock after an exception; the wrapper must discard that instance."""
    gts = {"x": ["a red bus on a city street"]}
    score_captions({"x": "a red bus"}, gts)
    broken = metrics._meteor_instance()
    with pytest.raises(RuntimeError, match="METEOR failed"):
        metrics._meteor_score(gts, {"x": ["two", "hypotheses"]})  # asserts inside compute_score, lock held
    assert metrics._meteor_instance() is None and broken.meteor_p.poll() is not None  # its JVM is gone
    s = score_captions({"x": "a red bus on a street"}, gts)  # would hang forever on the broken instance
    assert 0 < s.meteor < 1 and metrics._meteor_instance() is not broken
