"""Which objects of an answer are the previous round's objects."""

from lmd_bot.layout.repair import RawObject
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.planner.identity import match_ids, settle_ids

PREVIOUS = SceneLayout.model_validate(
    {
        "objects": [
            {"id": 3, "caption": "a red apple", "box": [50, 300, 90, 90]},
            {"id": 5, "caption": "a red apple", "box": [160, 300, 90, 90]},
            {"id": 7, "caption": "a blue cup", "box": [380, 240, 100, 140]},
            {"id": 8, "caption": "a grey cat", "box": [200, 40, 120, 100]},
        ]
    }
)


def raw(caption, box, oid=None):
    return RawObject(caption=caption, box=list(box), id=oid)


def test_settle_ids_keeps_known_ids_once_and_numbers_the_rest_after_all_used_ids():
    objects = [
        raw("a", (0, 0, 1, 1), 7),
        raw("b", (0, 0, 1, 1), 7),
        raw("c", (0, 0, 1, 1), 0),
        raw("d", (0, 0, 1, 1), True),
    ]
    settled = settle_ids(objects, PREVIOUS, used_ids={1, 2, 3, 12})
    assert [o.id for o in settled] == [7, 13, 14, 15]


def test_settle_ids_numbers_a_new_scene_from_one():
    settled = settle_ids([raw("a", (0, 0, 1, 1), 4), raw("b", (0, 0, 1, 1), 0)], None)
    assert [o.id for o in settled] == [1, 2]


def test_match_same_caption_nearest_box_first():
    # The two apples swap order in the answer and one moves a little: each keeps its own id.
    answer = [raw("a red apple", (170, 310, 90, 90)), raw("a red apple", (40, 300, 90, 90))]
    assert [o.id for o in match_ids(answer, PREVIOUS)] == [5, 3]


def test_match_recolour_in_place_and_renamed_head_word():
    answer = [
        raw("a green cup", (380, 240, 100, 140)),  # recoloured in place: same box
        raw("a big orange cat", (150, 20, 200, 160)),  # resized and recoloured: same head word
        raw("a dog", (300, 400, 80, 80)),  # new
    ]
    assert [o.id for o in match_ids(answer, PREVIOUS)] == [7, 8, None]


def test_match_replacement_far_away_counts_as_new_and_bad_boxes_stay_unmatched():
    answer = [raw("a fox", (10, 10, 50, 50)), RawObject(caption="a grey cat", box="nonsense")]
    assert [o.id for o in match_ids(answer, PREVIOUS)] == [None, None]
