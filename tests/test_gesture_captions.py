"""A gesture caption never contradicts the gesture head (issue 16): `stream.captions.gesture_caption` reads which
class a caption describes and, when that is another class than the head's, shows the head's class in words and
keeps the decoder's words apart. Checked against every caption template of the gesture analog.
"""
from __future__ import annotations

import pytest

from workbench.data.gestures import make_gesture_clip
from workbench.data.readers.gesture_labels import DVS_GESTURE_CLASSES
from workbench.stream.captions import HEAD_SENTENCES, caption_class, gesture_caption


@pytest.mark.parametrize("label", range(len(DVS_GESTURE_CLASSES)))
def test_every_reference_caption_of_a_class_reads_as_that_class(label):
    for seed in (0, 1):
        for cap in make_gesture_clip(seed, label).captions:
            assert caption_class(cap) == label, cap


def test_the_head_sentences_name_their_own_class():
    assert [caption_class(s) for s in HEAD_SENTENCES] == list(range(len(DVS_GESTURE_CLASSES)))


def test_a_contradicting_caption_is_replaced_by_the_heads_class():
    shown, said = gesture_caption("someone is waving with the right hand", "Other gestures")
    assert shown == HEAD_SENTENCES[10] and said == "someone is waving with the right hand"
    shown, said = gesture_caption("a person circles the left arm counterclockwise", "Right arm cw")
    assert shown == HEAD_SENTENCES[3] and said is not None
    # agreeing captions, captions that name no gesture and clips without a head are kept as they are
    assert gesture_caption("a person waves the right hand", "Right hand wave") == ("a person waves the right hand",
                                                                                    None)
    assert gesture_caption("a red square moves left", "Air drums") == ("a red square moves left", None)
    assert gesture_caption("someone claps", None) == ("someone claps", None)
