"""Multi-round revision on the Anthropic backend: the history the model sees, and object ids."""

import json

import pytest

from lmd_bot.errors import PlannerError
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.planner import PlanRound
from lmd_bot.planner.engine import MAX_HISTORY_ROUNDS
from lmd_bot.scenes.diff import describe_changes


def layout(*objects, background="A realistic photo of a living room", negative=""):
    return SceneLayout.model_validate(
        {
            "objects": [{"id": i, "caption": c, "box": list(b)} for i, c, b in objects],
            "background": background,
            "negative": negative,
        }
    )


ROUND1 = layout(
    (1, "a green sofa", (90, 220, 330, 220)),
    (2, "a grey cat", (190, 170, 120, 100)),
    (3, "a floor lamp", (436, 70, 60, 390)),
)
# Round 2 removed the lamp (id 3) and added a coffee table (id 4).
ROUND2 = layout(
    (1, "a green sofa", (90, 220, 330, 220)),
    (2, "a grey cat", (190, 170, 120, 100)),
    (4, "a low wooden coffee table", (150, 430, 210, 74)),
)
HISTORY = [
    PlanRound(instruction="a grey cat on a green sofa next to a lamp", layout=ROUND1),
    PlanRound(instruction="remove the lamp and add a coffee table", layout=ROUND2),
]


async def test_history_is_sent_in_order_with_ids(claude, fake_anthropic):
    fake_anthropic.push_layout(
        [(o.caption, o.box.as_list(), o.id) for o in ROUND2.objects], ROUND2.background, "people"
    )
    result = await claude.revise(HISTORY, "no people")
    messages = fake_anthropic.bodies[0]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == "Caption: a grey cat on a green sofa next to a lamp"
    assert messages[2]["content"] == "Edit: remove the lamp and add a coffee table"
    assert messages[4]["content"] == "Edit: no people"
    shown = json.loads(messages[3]["content"])
    assert shown["kind"] == "layout"
    assert [(o["id"], o["caption"]) for o in shown["layout"]["objects"]] == [
        (1, "a green sofa"),
        (2, "a grey cat"),
        (4, "a low wooden coffee table"),
    ]
    assert shown["layout"]["objects"][0]["box"] == {"x": 90, "y": 220, "w": 330, "h": 220}
    assert result.layout.objects == ROUND2.objects  # untouched objects come back exactly
    assert result.layout.negative == "people"


async def test_ids_are_kept_for_the_same_objects_and_fresh_for_new_ones(claude, fake_anthropic):
    fake_anthropic.push_layout(
        [
            ("a green sofa", (90, 220, 330, 220), 1),  # untouched
            ("an orange cat", (166, 150, 168, 140), 2),  # resized and recoloured: same object
            ("a bird", (20, 20, 60, 40), 0),  # new
            ("a floor lamp", (436, 70, 60, 390), 3),  # id of an object removed in round 2: new
            ("a second cat", (300, 300, 80, 80), 2),  # a second claim on id 2: new
            ("a vase", (200, 380, 40, 60), 99),  # an id the scene never had: new
        ]
    )
    result = await claude.revise(HISTORY, "make the cat bigger and orange, add a bird, a lamp, a cat, a vase")
    got = [(o.id, o.caption) for o in result.layout.objects]
    assert got == [
        (1, "a green sofa"),
        (2, "an orange cat"),
        (5, "a bird"),
        (6, "a floor lamp"),
        (7, "a second cat"),
        (8, "a vase"),
    ]
    assert result.layout.objects[0] == ROUND2.objects[0]


async def test_removing_objects_drops_their_ids(claude, fake_anthropic):
    fake_anthropic.push_layout([("a green sofa", (90, 220, 330, 220), 1)])
    result = await claude.revise(HISTORY, "remove the cat and the table")
    assert [o.id for o in result.layout.objects] == [1]


async def test_non_edit_message_gets_a_reply_and_no_layout(claude, fake_anthropic):
    fake_anthropic.push_reply("Because it is a floor lamp. Say “make the lamp shorter” to change it.")
    result = await claude.revise(HISTORY, "why is the lamp so tall?")
    assert result.layout is None and result.reply.startswith("Because it is a floor lamp")


async def test_long_history_keeps_the_first_and_latest_rounds(claude, fake_anthropic):
    rounds = [HISTORY[0]] + [PlanRound(instruction=f"edit {i}", layout=ROUND2) for i in range(1, 15)]
    fake_anthropic.push_layout([("a green sofa", (90, 220, 330, 220), 1)])
    await claude.revise(rounds, "last edit")
    users = [m["content"] for m in fake_anthropic.bodies[0]["messages"] if m["role"] == "user"]
    assert len(users) == MAX_HISTORY_ROUNDS + 1
    assert users[0] == "Caption: a grey cat on a green sofa next to a lamp"
    assert users[1:] == [f"Edit: edit {i}" for i in range(8, 15)] + ["Edit: last edit"]


async def test_revise_needs_a_history(claude, fake_anthropic):
    with pytest.raises(PlannerError) as err:
        await claude.revise([], "make it red")
    assert err.value.user_message == "There is no scene to edit yet."
    assert fake_anthropic.received == []


# A kitchen scene, and a planner that renumbers objects it was not asked to touch.
KITCHEN = layout(
    (1, "a red apple", (52, 292, 96, 92)),
    (2, "a blue cup", (382, 236, 100, 148)),
    background="A realistic photo of a kitchen table",
)
KITCHEN_HISTORY = [PlanRound(instruction="a red apple and a blue cup on a table", layout=KITCHEN)]
APPLE = ("a red apple", (52, 292, 96, 92))
CUP = ("a blue cup", (382, 236, 100, 148))
BIRD = ("a bird", (200, 40, 80, 60))
RENUMBERED = {
    "ids swapped": [(*APPLE, 2), (*CUP, 1), (*BIRD, 0)],
    "every id 0": [(*APPLE, 0), (*CUP, 0), (*BIRD, 0)],
    "a new object claims an old id": [(*BIRD, 1), (*APPLE, 1), (*CUP, 2)],
}


@pytest.mark.parametrize("answer", RENUMBERED.values(), ids=RENUMBERED.keys())
async def test_renumbered_untouched_objects_keep_their_ids_and_the_change_reads_right(
    claude, fake_anthropic, answer
):
    fake_anthropic.push_layout(answer, KITCHEN.background)
    result = await claude.revise(KITCHEN_HISTORY, "add a bird in the sky")
    ids = {o.caption: o.id for o in result.layout.objects}
    assert ids == {"a red apple": 1, "a blue cup": 2, "a bird": 3}  # the apple and cup keep their seeds
    assert describe_changes(KITCHEN, result.layout) == "added: a bird"
    assert result.notes == []


async def test_a_claimed_id_without_contrary_evidence_is_kept(claude, fake_anthropic):
    # "replace the cup with a vase and move it left": nothing but the claim says it is the cup.
    fake_anthropic.push_layout([(*APPLE, 1), ("a tall vase", (200, 200, 60, 150), 2)], KITCHEN.background)
    result = await claude.revise(KITCHEN_HISTORY, "replace the cup with a vase and move it left")
    assert [(o.id, o.caption) for o in result.layout.objects] == [(1, "a red apple"), (2, "a tall vase")]
    assert describe_changes(KITCHEN, result.layout) == "changed: a blue cup → a tall vase; moved: a tall vase"
